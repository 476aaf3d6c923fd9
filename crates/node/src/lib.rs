//! Capsule POS node: composes a hub or a till from the core crates, and the `tilld` CLI.
//!
//! The desktop shell (`src-tauri`) and the headless binary both start nodes through
//! [`node::start`], so they run the same code.

mod auto;
pub mod backup;
pub mod cli;
pub mod control;
pub mod demo;
pub mod node;
pub mod pairing;
pub mod printer_net;
pub mod printing;
mod routes;
pub mod screens;
pub mod trust;

pub use node::{NodeConfig, Role, RunningNode, start};
