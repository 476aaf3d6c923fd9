//! `tilld`: the headless Capsule POS node (hub or till); all logic lives in `capsule-node`.

/// mimalloc: see the workspace Cargo.toml for why.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    capsule_node::cli::main()
}
