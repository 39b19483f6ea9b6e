//! Helpers shared by the integration tests, one module per job.
//!
//! - [`lab`]: the namespace lab (`ci/lab`) the binary runs in, and its fault injection;
//! - [`report`]: the `--format json` report, parsed against the documented schema;
//! - [`fixtures`]: scenario files (shipped, fixtures, temporary);
//! - [`users`]: passwd lookups, and running the binary as another user;
//! - [`process`]: running processes and rendering their output;

pub mod fixtures;
pub mod lab;
pub mod process;
pub mod report;
pub mod users;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_egress-check");
