//! The `keepsync` binary.

fn main() -> std::process::ExitCode {
    keepsync::cli::main()
}
