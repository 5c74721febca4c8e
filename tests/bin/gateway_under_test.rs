//! The `agora-gateway` command line, built inside the test package so that the end-to-end tests
//! can start real gateway processes (`CARGO_BIN_EXE_gateway-under-test`).

fn main() -> std::process::ExitCode {
    agora_gateway::cli::main()
}
