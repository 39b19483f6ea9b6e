//! The run: scenario -> plan -> resolve -> probe -> verdict -> report, with interruption
//! (signals, deadline) handled so that every planned probe is reported exactly once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::plan::{self, Assignment, PlannedProbe};
use crate::probe::Observed;
use crate::report::Report;
use crate::resolve::{DnsFailure, FailureKind, NameserverSource, Resolution, Resolver};
use crate::scenario::{Scenario, TargetKind};
use crate::worker::{self, WorkerProbe, WorkerResult};

/// Settings of a run that do not come from scenario files.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// `--nameserver`: overrides everything else.
    pub nameserver: Option<std::net::SocketAddr>,
    /// resolv.conf of the entered namespace, used instead of /etc/resolv.conf.
    pub netns_resolv_conf: Option<String>,
    /// `--deadline`.
    pub deadline: Option<Duration>,
}

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// SIGINT or SIGTERM (the signal number).
    Signal(i32),
    /// `--deadline` passed.
    Deadline,
}

impl Interruption {
    /// The process exit code for it: 128 + signal; deadlines are judged like any run.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Interruption::Signal(sig) => Some(128 + sig),
            Interruption::Deadline => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Interruption::Signal(sig) if sig == nix::libc::SIGINT => "interrupted (SIGINT)".into(),
            Interruption::Signal(sig) if sig == nix::libc::SIGTERM => "terminated (SIGTERM)".into(),
            Interruption::Signal(sig) => format!("stopped by signal {sig}"),
            Interruption::Deadline => "the run's --deadline passed".into(),
        }
    }
}

/// The result of [`execute`].
pub struct RunResult {
    /// The report (complete, or partial when interrupted).
    pub report: Report,
    /// Set when the run was cut short.
    pub interruption: Option<Interruption>,
}

fn nameserver_source(scenario: &Scenario, settings: &RunSettings) -> NameserverSource {
    if let Some(addr) = settings.nameserver.or(scenario.nameserver) {
        NameserverSource::Server(addr)
    } else if let Some(text) = &settings.netns_resolv_conf {
        NameserverSource::ResolvConf(text.clone())
    } else {
        NameserverSource::System
    }
}

/// Resolves every target of the assignments, each distinct name once per nameserver source.
async fn resolve(
    scenarios: &[Scenario],
    assignments: &[Assignment],
    settings: &RunSettings,
) -> HashMap<(NameserverSource, TargetKind), Resolution> {
    let mut groups: Vec<(NameserverSource, Vec<TargetKind>)> = Vec::new();
    for a in assignments {
        let source = nameserver_source(&scenarios[a.scenario], settings);
        let index = match groups.iter().position(|(s, _)| *s == source) {
            Some(index) => index,
            None => {
                groups.push((source, Vec::new()));
                groups.len() - 1
            }
        };
        let kinds = &mut groups[index].1;
        if !kinds.contains(&a.target.kind) {
            kinds.push(a.target.kind.clone());
        }
    }
    let lookups = groups.into_iter().map(|(source, kinds)| async move {
        let needs_dns = kinds.iter().any(|k| !matches!(k, TargetKind::Addresses(_)));
        // Literal addresses need no resolver, so a host without resolv.conf can still probe them.
        let resolver = needs_dns.then(|| Resolver::new(&source));
        let resolutions: HashMap<TargetKind, Resolution> = match resolver {
            Some(Ok(resolver)) => resolver.resolve_all(&kinds).await,
            Some(Err(message)) => kinds
                .iter()
                .map(|k| (k.clone(), without_resolver(k, &message)))
                .collect(),
            None => kinds
                .iter()
                .map(|k| (k.clone(), without_resolver(k, "no resolver")))
                .collect(),
        };
        resolutions
            .into_iter()
            .map(|(k, r)| ((source.clone(), k), r))
            .collect::<Vec<_>>()
    });
    join_all(lookups).await.into_iter().flatten().collect()
}

/// The resolution of a target when no resolver is used: literal addresses as they are, names
/// failed with `message`.
fn without_resolver(kind: &TargetKind, message: &str) -> Resolution {
    match kind {
        TargetKind::Addresses(list) => Resolution::Exchanges {
            implicit_mx: false,
            exchanges: vec![crate::resolve::literal_exchange(list)],
        },
        TargetKind::Mx(name) | TargetKind::Host(name) => Resolution::Failed(DnsFailure {
            name: name.clone(),
            record: if matches!(kind, TargetKind::Mx(_)) {
                "MX"
            } else {
                "A/AAAA"
            },
            kind: FailureKind::Other(message.to_string()),
        }),
    }
}

/// Resolves, probes and judges. Assignments must have passed [`plan::ensure_privileges`].
pub async fn execute(
    scenarios: &[Scenario],
    assignments: &[Assignment],
    settings: &RunSettings,
) -> RunResult {
    let mut interrupts = Interrupts::new();
    let deadline = settings.deadline.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);

    let resolutions = tokio::select! {
        r = resolve(scenarios, assignments, settings) => r,
        sig = interrupts.recv() => return interrupted_before_probing(assignments, Interruption::Signal(sig)),
        () = &mut until_deadline => return interrupted_before_probing(assignments, Interruption::Deadline),
    };
    let mut planned = plan::expand(assignments, |a| {
        resolutions[&(
            nameserver_source(&scenarios[a.scenario], settings),
            a.target.kind.clone(),
        )]
            .clone()
    });

    // One worker per user; within it, each distinct (address, port, timeout) is tried once
    // and its outcome fans out to every planned probe that asked for it.
    let mut work: BTreeMap<String, Vec<WorkerProbe>> = BTreeMap::new();
    let mut ids: HashMap<(String, std::net::SocketAddr, u64), usize> = HashMap::new();
    let mut fan_out: Vec<Vec<usize>> = Vec::new();
    for (index, p) in planned.iter().enumerate() {
        let Some(addr) = p.connect_to else { continue };
        let timeout_ms = p.timeout.as_millis() as u64;
        let key = (p.record.user.clone(), addr, timeout_ms);
        let id = *ids.entry(key).or_insert_with(|| {
            fan_out.push(Vec::new());
            work.entry(p.record.user.clone())
                .or_default()
                .push(WorkerProbe {
                    id: fan_out.len() - 1,
                    addr,
                    timeout_ms,
                });
            fan_out.len() - 1
        });
        fan_out[id].push(index);
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<WorkerResult>();
    let worker_futures: Vec<_> = work
        .iter()
        .map(|(user, probes)| {
            let tx = tx.clone();
            async move { (user.clone(), worker::run_as(user, probes, tx).await) }
        })
        .collect();
    let workers = futures::stream::iter(worker_futures)
        .buffer_unordered(worker::concurrent_worker_limit())
        .collect::<Vec<_>>();
    drop(tx);
    let mut results: Vec<Option<WorkerResult>> = vec![None; fan_out.len()];
    let mut worker_errors: HashMap<String, String> = HashMap::new();
    let interruption = {
        tokio::pin!(workers);
        loop {
            tokio::select! {
                Some(result) = rx.recv() => {
                    let id = result.id;
                    if id < results.len() {
                        results[id] = Some(result);
                    }
                }
                outcomes = &mut workers => {
                    for (user, outcome) in outcomes {
                        if let Err(message) = outcome {
                            eprintln!("egress-check: probing as `{user}` failed: {message}");
                            worker_errors.insert(user, message);
                        }
                    }
                    break None;
                }
                sig = interrupts.recv() => break Some(Interruption::Signal(sig)),
                () = &mut until_deadline => break Some(Interruption::Deadline),
            }
        }
        // Leaving this block drops the workers' futures, which kills their processes.
    };
    while let Ok(result) = rx.try_recv() {
        let id = result.id;
        if id < results.len() {
            results[id] = Some(result);
        }
    }

    for (id, result) in results.into_iter().enumerate() {
        for &index in &fan_out[id] {
            let probe = &mut planned[index];
            match &result {
                Some(r) => {
                    probe.record.observed = r.attempt.observed;
                    probe.record.elapsed_ms = r.attempt.elapsed.as_millis() as u64;
                    probe.record.detail = match (&r.attempt.detail, &probe.record.detail) {
                        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                        (a, b) => a.clone().or_else(|| b.clone()),
                    };
                }
                None => {
                    probe.record.observed = Observed::Error;
                    probe.record.detail = Some(
                        match (interruption, worker_errors.get(&probe.record.user)) {
                            (Some(i), _) => format!("not finished: {}", i.describe()),
                            (None, Some(message)) => format!("worker failed: {message}"),
                            (None, None) => "the worker reported no result".to_string(),
                        },
                    );
                }
            }
        }
    }
    RunResult {
        report: Report::build(
            planned
                .into_iter()
                .map(|p: PlannedProbe| p.record)
                .collect(),
            interruption.map(Interruption::describe),
        ),
        interruption,
    }
}

fn interrupted_before_probing(assignments: &[Assignment], interruption: Interruption) -> RunResult {
    let reason = format!(
        "not finished: {} during DNS resolution",
        interruption.describe()
    );
    let planned = plan::expand(assignments, |a| {
        Resolution::Failed(DnsFailure {
            name: match &a.target.kind {
                TargetKind::Mx(n) | TargetKind::Host(n) => n.clone(),
                TargetKind::Addresses(_) => a.target.name.clone(),
            },
            record: "-",
            kind: FailureKind::Other(reason.clone()),
        })
    });
    RunResult {
        report: Report::build(
            planned
                .into_iter()
                .map(|p| {
                    let mut record = p.record;
                    record.observed = Observed::Error;
                    record.detail = Some(reason.clone());
                    record
                })
                .collect(),
            Some(interruption.describe()),
        ),
        interruption: Some(interruption),
    }
}

/// SIGINT and SIGTERM as a stream of signal numbers.
struct Interrupts {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Interrupts {
        Interrupts {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn recv(&mut self) -> i32 {
        let int = async {
            match &mut self.int {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let term = async {
            match &mut self.term {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => nix::libc::SIGINT,
            _ = term => nix::libc::SIGTERM,
        }
    }
}
