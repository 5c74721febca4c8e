//! `agora-gateway`: see `cli.rs`.

fn main() -> std::process::ExitCode {
    agora_gateway::cli::main()
}
