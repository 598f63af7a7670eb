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

/// Bars of several replicas at once (`run`'s catch-up); hidden unless [`wanted`].
pub(crate) fn group() -> MultiProgress {
    MultiProgress::with_draw_target(target())
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
