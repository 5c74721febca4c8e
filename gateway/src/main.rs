//! `agora-gateway`: see `cli/mod.rs`.

/// mimalloc: the hot path allocates small, short-lived buffers across threads, where it beats the
/// system allocator (glibc's malloc was a tenth of the profile of cached reads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agora_gateway::cli::main()
}
