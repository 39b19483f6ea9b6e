//! The integration tests: one test binary (as ripgrep and hickory-dns do), so the helpers in
//! [`util`] are compiled once and shared, and every test runs the real `egress-check` binary.
//!
//! Tests that need root or network namespaces fail (never skip) when they cannot run;
//! outside CI, `EGRESS_CHECK_SKIP_NETNS=1` skips them knowingly (see [`util::lab`]).

mod cli_conventions;
mod conventions;
mod edges;
mod explain;
mod fault_matrix;
mod hardening;
mod hostile_input;
mod monitoring;
mod netns_core;
mod private_checkout;
mod robustness;
mod sandbox;
mod service;
mod sweep;
mod util;
