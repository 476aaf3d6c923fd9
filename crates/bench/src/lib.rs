//! Capsule POS benchmark support: the seeded restaurant rush ([`workload`]) that the benchmark
//! binary and the end-to-end stream tests both drive.

pub mod workload;
