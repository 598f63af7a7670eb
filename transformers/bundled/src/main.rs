//! `transformer-launcher`: the launcher's CLI with the bundled DETs registered. A binary of
//! your own gets the same CLI for its own DETs with these same few lines.

fn main() -> std::process::ExitCode {
    competing_transformers_launcher::main_with(bundled_transformers::registry())
}
