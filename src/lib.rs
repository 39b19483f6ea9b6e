//! egress-check proves, end to end, what a Linux host's egress firewall lets each local
//! user reach, over IPv4 and IPv6.
//!
//! The data flows through small modules: [`scenario`] -> [`plan`] -> [`resolve`] ->
//! [`probe`] (in per-user [`worker`] processes) -> [`verdict`] -> [`report`]; [`runner`]
//! drives a run and [`cli`] is the command line. [`source`] finds a run's scenario files
//! and [`output`] writes its reports to files.

pub mod cli;
pub mod identity;
pub mod netns;
pub mod output;
pub mod plan;
pub mod probe;
pub mod report;
pub mod resolve;
pub mod runner;
pub mod sandbox;
pub mod scenario;
pub mod source;
pub mod verdict;
pub mod worker;
