//! Progress on long work, for a person watching: catch-up, and the scans of `tail`,
//! `status`, `export` and redrive. Drawn on stderr only when it is a terminal (never in a
//! pipe, a log collector or a test); stdout, what scripts read, is never touched.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a spinner redraws by itself while the work it watches gives no news.
const TICK_EVERY_MS: u64 = 120;

/// Whether bars are drawn: stderr is a terminal and its log lines are not JSON
/// (`--log-format json` sets `LOG_FORMAT=json` for the whole process).
pub(crate) fn wanted() -> bool {
    std::env::var("LOG_FORMAT").map_or(true, |format| format != "json") && std::io::stderr().is_terminal()
}

fn target() -> ProgressDrawTarget {
    if wanted() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar over log offsets up to `end`, labelled `what`; hidden unless [`wanted`].
pub(crate) fn offsets(what: &str, end: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(end), target());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] offset {pos}/{len} ({percent}%, {per_sec}, eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A spinner with the time spent, for work whose end is not known; hidden unless [`wanted`].
pub(crate) fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(TICK_EVERY_MS));
    bar
}

/// A running count with its rate, for work whose size is not known (lines from stdin);
/// hidden unless [`wanted`].
pub(crate) fn counter(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {pos} ({per_sec}, {elapsed})").expect("a valid template"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(TICK_EVERY_MS));
    bar
}

/// The one group every multi-bar display draws in, so log lines can step around it.
static GROUP: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();

/// Bars of several replicas at once (`run`'s catch-up); hidden unless [`wanted`].
pub(crate) fn group() -> MultiProgress {
    GROUP.get_or_init(|| MultiProgress::with_draw_target(target())).clone()
}

/// Log lines' way to stderr: bars drawn meanwhile are lifted off while a line is written, so
/// lines and bars do not overwrite each other.
pub(crate) struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        match GROUP.get() {
            Some(group) => group.suspend(|| std::io::stderr().write(buffer)),
            None => std::io::stderr().write(buffer),
        }
    }

    fn write_all(&mut self, buffer: &[u8]) -> std::io::Result<()> {
        match GROUP.get() {
            Some(group) => group.suspend(|| std::io::stderr().write_all(buffer)),
            None => std::io::stderr().write_all(buffer),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_drawn_off_a_terminal() {
        // Tests run with stderr captured or piped: not a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(!wanted());
            assert!(offsets("reading", 10).is_hidden());
            assert!(spinner("reading").is_hidden());
        }
    }
}
