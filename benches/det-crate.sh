#!/usr/bin/env bash
# What a DET author pays before the first test runs: a 30-line DET (the README's greeter) in a
# crate of its own, depending on the core by path, built and tested from a cold target dir.
# Prints the number of crates compiled and the wall time. Downloads are not timed: they are
# fetched first (cargo fetch), as a second project on the same machine would find them.
#
# Usage: benches/det-crate.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "greeter"
version = "0.1.0"
edition = "2021"

[dependencies]
competing-transformers = { path = "$ROOT/crates/core" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
TOML
cat > "$dir/src/lib.rs" <<'RUST'
use competing_transformers::{EventSourceKey, Input, Outputs, Transform, TransformError};

#[derive(Default)]
pub struct Greeter {
    greeted: u64,
}

#[derive(serde::Deserialize)]
struct Hello {
    name: String,
}

impl Transform for Greeter {
    fn name(&self) -> &str {
        "greeter"
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec!["hellos".parse().unwrap()]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        let hello: Hello = input.json()?;
        self.greeted += 1;
        out.emit_json(&serde_json::json!({ "reply": format!("hi {}", hello.name), "n": self.greeted }));
        Ok(())
    }
}

#[test]
fn greets() {
    use competing_transformers::{replica::run_to_end, Event, MemoryLog};
    let log = MemoryLog::new();
    let hellos: EventSourceKey = "hellos".parse().unwrap();
    log.publish(&hellos, vec![Event::json(hellos.clone(), 0, &serde_json::json!({"name": "ada"}))]);
    run_to_end(&log, Greeter::default());
    assert_eq!(log.canonical(&"greeter".parse().unwrap()).len(), 1);
}
RUST
cp "$ROOT/Cargo.lock" "$dir/"
cd "$dir"
cargo fetch --quiet
start_ns=$(date +%s%N)
cargo test > test.log 2> build.log || { cat build.log test.log >&2; exit 1; }
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
crates=$(grep -c '^ *Compiling' build.log)
printf 'det-crate: first `cargo test` of a DET crate: %s crates compiled in %d.%d s on %s cores\n' \
  "$crates" $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100)) "$(nproc)"
