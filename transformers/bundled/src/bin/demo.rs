//! `demo`: three racing replicas of the matching engine, one killed mid-way, against a broker.
//! `scripts/demo.sh` starts a broker if none runs and calls this.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bundled_transformers::demo::DemoArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime ({error})");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bundled_transformers::demo::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}
