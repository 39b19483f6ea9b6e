//! The probing stage of a run: resolve the plan's names, hand each user's attempts to that
//! user's worker process, collect the results, and cope with interruptions, so that every
//! planned probe comes back with exactly one [`Attempt`].
//!
//! - [`dispatch`]: pure: probes to worker requests and results back to probes;
//! - [`interrupt`]: signals and `--deadline`, and what an interruption leaves;
//! - this module: the async orchestration.

pub mod dispatch;
pub mod interrupt;
pub mod kernel;
pub mod vantage;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

pub use dispatch::Dispatch;
pub use interrupt::{Interruption, Interrupts};

use crate::address::HostInterfaces;
use crate::explain::{Explain, Explanation, Tracer};
use crate::plan::{Assignment, NameserverChoice, PlannedProbe};
use crate::probe::Attempt;

use crate::worker::{self, WorkerError, WorkerResult};

/// Settings of a run that do not come from scenario files.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// How nameservers are chosen.
    pub nameservers: NameserverChoice,
    /// `--deadline`.
    pub deadline: Option<Duration>,
    /// The interfaces of the namespace the probes run in: what "this host" is when DNS
    /// answers and literal addresses are classified.
    pub host: HostInterfaces,
    /// `--explain`: trace the probes' packets ([`crate::explain`]); checked by
    /// [`crate::explain::preflight`] before the run.
    pub explain: Explain,
    /// Namespaces whose kernel counters are watched besides the probes' own and the
    /// `pid:`/`unit:` identities' ([`kernel`]): the sandbox's internet, where its sinks'
    /// accept queues are.
    pub watch: Vec<kernel::Watched>,
}

/// What [`execute`] hands to the verdict stage: the exact probes and, in the same order,
/// what each observed.
#[derive(Debug)]
pub struct Executed {
    /// Every planned probe, once.
    pub probes: Vec<PlannedProbe>,
    /// `attempts[i]` is what `probes[i]` observed.
    pub attempts: Vec<Attempt>,
    /// Set when the run was cut short.
    pub interruption: Option<Interruption>,
    /// With `--explain`: `explanations[i]` says what decided `probes[i]` (`None` when
    /// nothing was sent); `None` without `--explain` or when nothing was probed.
    pub explanations: Option<Vec<Option<Explanation>>>,
    /// Set when a kernel counter that means dropped SYNs moved while the workers ran
    /// ([`kernel`]): why no timeout of this run proves anything.
    pub kernel_limited: Option<String>,
    /// Limits the run planned around (the conntrack table, the descriptor limit), in
    /// words, for the run's information: why it may have been slower than it could be.
    pub limits: Vec<String>,
}

/// Resolves and probes. Assignments must have passed [`crate::plan::ensure_privileges`] and
/// [`crate::plan::check_literals`].
pub async fn execute(assignments: &[Assignment], settings: &RunSettings) -> Executed {
    let mut interrupts = Interrupts::new();
    let deadline = settings.deadline.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);

    let stopped = |interruption| {
        let (probes, attempts) = interrupt::during_resolution(assignments, interruption);
        Executed {
            probes,
            attempts,
            interruption: Some(interruption),
            explanations: None,
            kernel_limited: None,
            limits: Vec::new(),
        }
    };
    // Each identity resolves from where its probes run (crate::service identities in
    // their process's network namespace).
    let probes = tokio::select! {
        p = vantage::resolve_and_expand(assignments, &settings.nameservers, &settings.host) => p,
        sig = interrupts.recv() => return stopped(Interruption::Signal(sig)),
        () = &mut until_deadline => return stopped(Interruption::Deadline),
    };
    let services: HashMap<&str, &crate::service::ServiceIdentity> = assignments
        .iter()
        .filter_map(|a| a.service.as_deref().map(|s| (s.key.as_str(), s)))
        .collect();

    // Tracing starts before the first worker, once the exact addresses are known; it ends
    // below, on every path out of this function (its table also goes when dropped).
    let traced = settings.explain.traces(probes.len());
    if let (false, Explain::UpTo(max)) = (traced, settings.explain) {
        eprintln!(
            "egress-check: no explanations for this run: {} probes, more than the {max} \
             traced by default (--explain traces them anyway, slowly)",
            probes.len()
        );
    }
    let tracer = traced.then(|| Tracer::start(&probes));
    let mut dispatch = Dispatch::new(&probes);
    let watched = watched_namespaces(&probes, &services, &settings.watch);
    let counters_before = kernel::Snapshot::take(&watched);
    let (tx, mut rx) = mpsc::unbounded_channel::<WorkerResult>();
    // A user's probes beyond what one worker can keep in flight go to more workers of the
    // same user: the shards partition the list, so each probe is still asked exactly once.
    let (per_worker, fd_limited) = worker::probes_per_worker();
    let cores = worker::cores();
    let mut limits = Vec::new();
    // Each shard goes to its worker as runs of consecutive ports ([`worker::WorkerRun`]):
    // a sweep's list of 131,070 requests (6 MB) is not kept while the workers run.
    let requests = std::mem::take(&mut dispatch.requests);
    let shards: Vec<(String, Vec<worker::WorkerRun>)> = requests
        .iter()
        .flat_map(|(user, requests)| {
            let shards = worker::shards(requests, per_worker, cores);
            if fd_limited && requests.len() > per_worker {
                let text = format!(
                    "the descriptor limit (RLIMIT_NOFILE): at most {per_worker} connects in \
                     flight per worker; `{user}`'s {} probes ran in {} workers, in waves",
                    requests.len(),
                    shards.len()
                );
                eprintln!("egress-check: limited by {text}: slower than the run could be");
                limits.push(text);
            }
            shards
                .into_iter()
                .map(move |shard| (user.clone(), worker::runs(shard)))
        })
        .collect();
    drop(requests);
    // Planning freed more than it keeps (the probes' growth, the sort, the request list);
    // hand it back before the workers start, when the run's memory is at its peak.
    release_freed_memory();
    // The conntrack table is one per namespace, bounded by one global maximum: a full table
    // drops SYNs, which read as timeouts. Cap the connects in flight across all workers so
    // that it cannot fill (the counters above stay the backstop: entries outlive their
    // connects, and other processes use the table too).
    let in_flight_cap = kernel::conntrack_budget().and_then(|budget| {
        tracing::debug!("planning around {}", budget.describe());
        let total = dispatch.attempts();
        if total <= budget.in_flight() {
            return None;
        }
        let cap = (budget.in_flight() / shards.len().max(1)).max(1);
        let text = format!(
            "{}; {total} probes, so at most {cap} in flight in each of {} workers, in waves",
            budget.describe(),
            shards.len()
        );
        eprintln!("egress-check: limited by {text}: slower than the run could be");
        limits.push(text);
        Some(cap)
    });
    let worker_futures: Vec<_> = shards
        .into_iter()
        .map(|(user, shard)| {
            let tx = tx.clone();
            let service = services.get(user.as_str()).copied();
            async move {
                let options = worker::WorkerOptions {
                    in_flight: in_flight_cap,
                    local_addresses: traced,
                };
                let outcome = worker::run_worker(&user, service, &shard, options, tx).await;
                (user, outcome)
            }
        })
        .collect();
    let workers = futures::stream::iter(worker_futures)
        .buffer_unordered(worker::concurrent_worker_limit())
        .collect::<Vec<_>>();
    drop(tx);
    let mut results = dispatch::Results::new(dispatch.attempts());
    let mut record = |result: WorkerResult| results.record(result.id, result.attempt);
    let mut worker_errors: HashMap<String, WorkerError> = HashMap::new();
    let interruption = {
        tokio::pin!(workers);
        loop {
            tokio::select! {
                Some(result) = rx.recv() => record(result),
                outcomes = &mut workers => {
                    for (user, outcome) in outcomes {
                        if let Err(error) = outcome {
                            eprintln!("egress-check: probing as `{user}` failed: {error}");
                            // Several workers of one user: the first error names the cause.
                            worker_errors.entry(user).or_insert(error);
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
        record(result);
    }
    let kernel_limited = kernel::Snapshot::take(&watched).moved_since(&counters_before);

    let attempts = dispatch.fan_out(&probes, results, |p| {
        interrupt::missing_reason(interruption, worker_errors.get(&*p.spec.user))
    });
    let explanations = tracer.map(|t| t.finish(&probes, &attempts));
    Executed {
        probes,
        attempts,
        interruption,
        explanations,
        kernel_limited,
        limits,
    }
}

/// Every namespace whose counters can say a SYN of this run was dropped: the probes' own
/// (its listen queues only when a probe goes to a local destination), each `pid:`/`unit:`
/// identity's, and the caller's `extra` (the sandbox's internet).
fn watched_namespaces(
    probes: &[PlannedProbe],
    services: &HashMap<&str, &crate::service::ServiceIdentity>,
    extra: &[kernel::Watched],
) -> Vec<kernel::Watched> {
    let local = probes.iter().any(PlannedProbe::is_local);
    let mut watched = vec![kernel::Watched::current("probes' network namespace", local)];
    let mut services: Vec<_> = services.values().collect();
    services.sort_by_key(|s| s.key.as_str());
    for service in services {
        if let (Some(netns), true) = (&service.netns_file, service.netns.foreign) {
            watched.push(kernel::Watched {
                label: format!("network namespace of `{}`", service.key),
                netns: Some(std::sync::Arc::clone(netns)),
                listeners: local,
            });
        }
    }
    watched.extend(extra.iter().cloned());
    watched
}

/// Returns the allocator's free memory to the kernel. glibc keeps freed heap memory mapped
/// (and counted in the process's RSS and PSS) for reuse; a sweep's planning frees tens of
/// megabytes that the rest of the run never needs again in one piece.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes its arena locks and
    // touches no memory that is in use.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
