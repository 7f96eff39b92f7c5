//! The `magicmx` binary.

fn main() -> std::process::ExitCode {
    magicmx::cli::main()
}
