fn main() {
    std::process::exit(segrs::cli::main());
}
