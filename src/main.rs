//! `tilld`: the headless Capsule POS node (hub or till); all logic lives in `capsule-node`.

fn main() -> std::process::ExitCode {
    capsule_node::cli::main()
}
