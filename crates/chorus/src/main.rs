use std::process::ExitCode;

fn main() -> ExitCode {
    // One TLS crypto provider for every client library (see docs/decisions.md, "Crates and their traps").
    let _ = rustls::crypto::ring::default_provider().install_default();
    chorus::cli::main()
}
