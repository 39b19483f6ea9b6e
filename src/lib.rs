//! egress-check proves, end to end, what a Linux host's egress firewall lets each local
//! user reach, over IPv4 and IPv6.
//!
//! # The map
//!
//! Data flows one way; each stage imports only the stages before it:
//!
//! | stage | module | in | out |
//! |---|---|---|---|
//! | 1 | [`scenario`] | TOML file (or the command line) | [`scenario::Scenario`] |
//! | 2 | [`plan`] | scenarios | [`plan::Assignment`]s (users looked up), lookups by nameserver |
//! | 3 | [`resolve`] (in a resolver process: [`dns_process`]) | the plan's names | [`resolve::Resolution`]s, then the exact [`plan::PlannedProbe`]s ([`resolve::expand`]) |
//! | 4 | [`runner`] with [`worker`], [`connector`] and [`probe`] | planned probes | one [`probe::Attempt`] per probe |
//! | 5 | [`verdict`] | probes + attempts | [`verdict::Judgement`] |
//! | 6 | [`report`] | judgement | human, JSON, JUnit, Prometheus textfile text |
//!
//! Beside the flow: [`vocab`] (words every stage uses: [`vocab::Family`],
//! [`vocab::Expectation`], value parsers), [`address`] (where an address leads: whether a
//! connection to it can leave the host, and its family on the wire), [`identity`] (accounts and the privilege drop), [`fence`] (the
//! Landlock and seccomp fence every child sets after its drop: workers, the resolver, the
//! sandbox's internet), [`child`] (the parent's side of the fenced child processes, and
//! the child's tie to its parent),
//! [`netns`] (entering a namespace), [`service`] (`pid:`/`unit:` identities: standing in
//! a process's network namespace, cgroup and credentials), [`exit_codes`], [`cli`] (the command line),
//! [`source`] (which files a run reads its scenarios from), [`run_info`] (host, start,
//! duration, version and nameservers of a run, for reports merged across hosts), [`output`] (reports written to
//! files, atomically), [`lab`] (throwaway namespaces with a simulated internet, served by a thread or, for the
//! sandbox, a process of its own that drops to `nobody`),
//! [`sandbox`] (the lab as `egress-check sandbox` builds it), and [`explain`] (`--explain`:
//! nftables tracing names the rule that decided each probe; the runner starts and
//! finishes it, the report prints it, verdicts never depend on it).
//! `main.rs` only parses, dispatches to one function per mode and maps errors to exit codes;
//! [`app`] is the one path the probing modes share from a plan to an exit code.
//!
//! # Glossary of the types that cross stages
//!
//! - **Target** ([`scenario::Target`]): something to connect to, by MX domain, host name
//!   or literal addresses ([`scenario::TargetKind`]), with ports and families.
//! - **Assignment** ([`plan::Assignment`]): one user, one target, one expectation, with the
//!   timeout and the scenario's nameserver. Made before DNS.
//! - **ServiceIdentity** ([`service::ServiceIdentity`]): a `pid:`/`unit:` identity, the process
//!   read once (credentials, cgroup, network namespace, what cannot be reproduced); carried
//!   by its assignments, taken by its worker, listed in the report's `identities`.
//! - **Exchange** ([`resolve::Exchange`]): a host that will be connected to, with its A and
//!   AAAA answers and the nameserver that gave them: an MX exchange, or a `host` target.
//!   Literal addresses resolve to themselves ([`resolve::Resolution::Literals`]).
//! - **PlannedProbe** ([`plan::PlannedProbe`]): one exact connection attempt to make (user,
//!   address or the reason there is none, port, family, expectation). Made after DNS.
//! - **Endpoint** ([`plan::Endpoint`]): where a planned probe connects: the address on the
//!   wire, its interface for IPv6 link-local, the record it came from when that differs,
//!   and whether it is local (an opted-in loopback or own address, never a pass).
//! - **Class** ([`address::Class`]): what an address is as a destination (ordinary, or
//!   unspecified, loopback, the host's own, link-local, multicast, broadcast).
//! - **WorkerProbe** ([`worker::WorkerProbe`]): one distinct attempt sent to a user's worker;
//!   several planned probes can share it ([`runner::Dispatch`]).
//! - **Attempt** ([`probe::Attempt`]): what one connect observed ([`probe::Observed`]), how
//!   long it took, and the OS error.
//! - **ProbeRecord** ([`verdict::ProbeRecord`]): a planned probe with its attempt and verdict:
//!   one entry of the report.
//! - **Judgement** ([`verdict::Judgement`]): the run judged: records, counts, family splits,
//!   witnesses; what every report format renders.

pub mod address;
pub mod app;
pub mod child;
pub mod cli;
pub mod connector;
pub mod dns_process;
pub mod exit_codes;
pub mod explain;
pub mod fence;
pub mod identity;
pub mod lab;
pub mod netns;
pub mod output;
pub mod plan;
pub mod probe;
pub mod report;
pub mod resolve;
pub mod run_info;
pub mod runner;
pub mod sandbox;
pub mod scenario;
pub mod service;
pub mod source;
pub mod verdict;
pub mod vocab;
pub mod worker;
