//! Helpers shared by the integration tests, one module per job.
//!
//! - [`lab`]: the namespace lab (the test kit's `TestLab`) the binary runs in, its fault
//!   injection, and the story's firewall and ad hoc checks on the lab's names;
//! - [`report`]: the `--format json` report, parsed against the documented schema;
//! - [`fixtures`]: scenario files (shipped, fixtures, temporary);
//! - [`users`]: passwd lookups, and running the binary as another user;
//! - [`process`]: running processes, writing their command lines, checking their output;
//! - [`procfs`]: what `/proc` says about processes (workers, credentials, memory, fds);
//! - [`leftovers`]: checks that a run left no namespace, process or temporary directory.

pub mod fixtures;
pub mod lab;
pub mod leftovers;
pub mod process;
pub mod procfs;
pub mod report;
pub mod users;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_egress-check");
