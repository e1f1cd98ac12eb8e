//! The `segrs` binary: the command line over the `segrs` library.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
