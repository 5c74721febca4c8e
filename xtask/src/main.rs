//! Project automation: `cargo xtask regen [--check]`, `cargo xtask bench [--quick]`, and
//! `cargo xtask adding-an-operation` (the README's walkthrough, end to end).

mod bench;
mod regen;
mod walkthrough;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "agora-gateway project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Regenerate `generated/src/generated.rs` from `openapi/agora-console.yaml`.
    Regen {
        /// Fail, with a diff, if the committed file differs from what the spec generates.
        #[arg(long)]
        check: bool,
    },
    /// Measure the gateway (release build) beside a sandbox, nginx and Redis; print the table.
    Bench {
        /// Short runs (under a minute after the build).
        #[arg(long)]
        quick: bool,
        /// Only the hit scenario, in interleaved rounds against this other gateway binary (a
        /// release build of an earlier commit): throughput and p99 of each, and their ratio.
        #[arg(long, value_name = "BINARY")]
        compare: Option<PathBuf>,
        /// Rounds of each, interleaved, with --compare.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// With --compare: this build traces every request and exports its spans
        /// (`telemetry.otlp_endpoint`, to an OTLP sink in the bench; `sample_ratio = 1.0`).
        #[arg(long, requires = "compare")]
        traced: bool,
    },
    /// The README's "Adding an operation", end to end in a copy of the workspace: a made-up
    /// operation added to the spec, regenerated, built, and proxied to a stand-in upstream.
    AddingAnOperation,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Regen { check } => regen::run(&workspace_root(), check),
        Command::Bench { quick, compare, rounds, traced } => {
            bench::run(&workspace_root(), quick, compare.map(|binary| (binary, traced)), rounds)
        }
        Command::AddingAnOperation => walkthrough::run(&workspace_root()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().expect("xtask sits inside the workspace").to_path_buf()
}

/// Where cargo builds for the workspace at `root`: `CARGO_TARGET_DIR` when set (relative to the
/// root when relative), `target/` otherwise — so the bench and the walkthrough find what they
/// built.
fn target_dir(root: &std::path::Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}
