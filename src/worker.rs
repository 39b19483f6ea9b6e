//! The per-user probe worker.
//!
//! Each user's probes run in a re-exec of this binary (`egress-check __probe-as USER`). The
//! worker starts single-threaded with no runtime, cleans up what it inherited, becomes the
//! user for good, then builds a tokio runtime, fences itself ([`crate::fence`]: Landlock
//! with no filesystem access, a seccomp allowlist), and only then reads its probes and
//! connects. A worker its fence killed (SIGSYS) is [`WorkerError::Fenced`]. The parent sends the
//! probe list as JSON on stdin, consecutive ports as one [`WorkerRun`]; the worker answers one JSON line per finished probe on
//! stdout, so whatever finished is known even if the run is interrupted.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::identity;
use crate::probe::Attempt;

/// The hidden subcommand that starts a worker.
pub const WORKER_SUBCOMMAND: &str = "__probe-as";

/// Largest number of connection attempts a worker keeps in flight: a sweep of more is
/// spread over several workers ([`probes_per_worker`]), which also spreads it over the
/// cores, since a worker is single-threaded.
const MAX_IN_FLIGHT: u64 = 16384;
/// Descriptors a worker keeps free for stdio and the runtime.
const RESERVED_FDS: u64 = 32;
/// Largest request a worker accepts on stdin.
const MAX_REQUEST_BYTES: u64 = 256 * 1024 * 1024;

/// Arguments of the hidden worker subcommand.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The user to become (login name, or a uid that has a passwd entry).
    pub user: String,
    /// Pid of the parent; the worker refuses to run once that parent is gone.
    #[arg(long)]
    pub parent: Option<i32>,
    /// Print the identity the worker ended up with (JSON) instead of probing.
    #[arg(long)]
    pub diagnose: bool,
    /// Stand in this process instead of `user`'s login: the parent's snapshot of it
    /// ([`crate::service::ServiceIdentity`], JSON), whose namespace, cgroup and credentials
    /// the worker takes.
    #[arg(long)]
    pub process: Option<String>,
    /// Read each connection's local address (`--explain` matches trace events by it).
    #[arg(long)]
    pub local_addresses: bool,
    /// At most this many connects in flight (the parent's share of the conntrack budget,
    /// [`crate::runner::kernel::conntrack_budget`]); else as many as descriptors allow.
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Hidden test hook ([`crate::fence::TestFault`]): passed on by the parent only when its
    /// own hidden `--test-worker-fault` option was given.
    #[arg(long, hide = true, value_enum)]
    pub test_fault: Option<crate::fence::TestFault>,
}

/// The parent's hidden test hook, set once from its command line before any worker starts.
static TEST_FAULT: std::sync::OnceLock<crate::fence::TestFault> = std::sync::OnceLock::new();

/// Makes every worker of this run commit `fault` once fenced (hidden test hook).
pub fn set_test_fault(fault: crate::fence::TestFault) {
    let _ = TEST_FAULT.set(fault);
}

/// What `__probe-as --diagnose` (and `__resolve-as --diagnose`) prints: the identity, and
/// the fence a probing worker (or the resolver) gets.
#[derive(Debug, Serialize)]
struct Diagnosis {
    #[serde(flatten)]
    identity: identity::Snapshot,
    /// Landlock's status once put up.
    landlock: crate::fence::LandlockReport,
    /// What opening a file (`/etc/passwd`) gives once Landlock is up: `EACCES` when it holds.
    landlock_open_file: String,
    /// The kernel's `Seccomp:` mode once the filter is installed (`filter`).
    seccomp: String,
    /// How many system calls the filter allows.
    seccomp_allowed_calls: usize,
}

/// One connection attempt asked of a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerProbe {
    /// Identifies the result; chosen by the parent.
    pub id: usize,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Per-attempt timeout in milliseconds.
    pub timeout_ms: u64,
}

/// Consecutive [`WorkerProbe`]s as they cross the pipe to the worker: ids `id ..
/// id + count` to the ports `addr.port() .. addr.port() + count` of one address, with one
/// timeout. A sweep's 16,384 probes per worker are a handful of runs, not 16,384 objects:
/// the request is a few hundred bytes instead of a megabyte in the parent and the worker,
/// and the worker makes its attempts from the runs as it goes, never holding the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRun {
    /// The first probe's id.
    pub id: usize,
    /// The first probe's destination (the others differ only in the port).
    pub addr: SocketAddr,
    /// How many probes (at least 1).
    pub count: u16,
    /// Per-attempt timeout in milliseconds.
    pub timeout_ms: u64,
}

impl WorkerRun {
    /// Whether `next` continues this run: next id, next port, same address and timeout.
    fn extends_to(&self, next: &WorkerProbe) -> bool {
        let i = usize::from(self.count);
        self.timeout_ms == next.timeout_ms
            && self.id.checked_add(i) == Some(next.id)
            && u16::try_from(usize::from(self.addr.port()) + i).ok() == Some(next.addr.port())
            && self.count < u16::MAX
            && same_but_port(self.addr, next.addr)
    }

    /// The probes of this run, in order.
    pub fn probes(self) -> impl Iterator<Item = WorkerProbe> {
        (0..self.count).filter_map(move |i| {
            let port = self.addr.port().checked_add(i)?;
            let mut addr = self.addr;
            addr.set_port(port);
            Some(WorkerProbe {
                id: self.id + usize::from(i),
                addr,
                timeout_ms: self.timeout_ms,
            })
        })
    }
}

/// Whether two socket addresses differ at most in their port (IPv6 scope and flow info
/// included).
fn same_but_port(a: SocketAddr, b: SocketAddr) -> bool {
    match (a, b) {
        (SocketAddr::V4(a), SocketAddr::V4(b)) => a.ip() == b.ip(),
        (SocketAddr::V6(a), SocketAddr::V6(b)) => {
            a.ip() == b.ip() && a.scope_id() == b.scope_id() && a.flowinfo() == b.flowinfo()
        }
        _ => false,
    }
}

/// `probes` as [`WorkerRun`]s, in order: [`WorkerRun::probes`] of the runs, one after the
/// other, are exactly `probes`.
pub fn runs(probes: &[WorkerProbe]) -> Vec<WorkerRun> {
    let mut runs: Vec<WorkerRun> = Vec::new();
    for p in probes {
        match runs.last_mut() {
            Some(run) if run.extends_to(p) => run.count += 1,
            _ => runs.push(WorkerRun {
                id: p.id,
                addr: p.addr,
                count: 1,
                timeout_ms: p.timeout_ms,
            }),
        }
    }
    runs
}

/// What a worker reports for one probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    /// The probe's id.
    pub id: usize,
    /// What happened.
    pub attempt: Attempt,
}

/// Entry point of the worker process; returns its exit code.
pub fn worker_main(args: WorkerArgs) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("egress-check worker: {err:#}");
            2
        }
    }
}

fn run(args: WorkerArgs) -> anyhow::Result<()> {
    sanitize_inherited_state()?;
    let fd_limit = match &args.process {
        Some(json) => {
            let target: crate::service::ServiceIdentity =
                serde_json::from_str(json).context("decoding --process")?;
            let fd_limit = raise_fd_limit();
            // Namespace, cgroup, then credentials: see crate::service for the order.
            crate::service::take(&target)?;
            fd_limit
        }
        None => {
            let account = identity::lookup(&args.user)?;
            // Raised while still privileged: only root may lift the hard limit.
            let fd_limit = raise_fd_limit();
            identity::become_user(&account)?;
            fd_limit
        }
    };
    crate::child::die_with_parent(args.parent)?;
    if args.diagnose {
        return diagnose(crate::fence::Role::Worker);
    }

    let in_flight = (fd_limit
        .saturating_sub(RESERVED_FDS)
        .clamp(1, MAX_IN_FLIGHT) as usize)
        .min(args.in_flight.unwrap_or(usize::MAX).max(1));
    // The epoll instance exists before the fence, so the allowlist needs none of the calls
    // that make one.
    let mut connector = crate::connector::Connector::new(in_flight, args.local_addresses)
        .context("creating the epoll instance")?;
    crate::fence::landlock(crate::fence::Role::Worker)?;
    crate::fence::seccomp(crate::fence::Role::Worker)?;
    if let Some(fault) = args.test_fault {
        crate::fence::commit_fault(fault);
    }

    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES)
        .read_to_end(&mut input)
        .context("reading the probe list")?;
    let runs: Vec<WorkerRun> = serde_json::from_slice(&input).context("decoding the probe list")?;
    drop(input);
    probe_all(&mut connector, runs)
}

/// `--diagnose`: the identity as the drop left it, then the same fence a probing worker (or,
/// with [`crate::fence::Role::Resolver`], the resolver process) puts up, each layer shown
/// by the kernel's behaviour rather than by our own word.
pub(crate) fn diagnose(role: crate::fence::Role) -> anyhow::Result<()> {
    let identity = identity::snapshot();
    // Opened before the fence: afterwards no file can be opened.
    let mut status =
        std::fs::File::open("/proc/self/status").context("opening /proc/self/status")?;
    let landlock = crate::fence::landlock(role)?;
    let landlock_open_file = match std::fs::File::open("/etc/passwd") {
        Ok(_) => "ok".to_string(),
        Err(err) => err.raw_os_error().map_or_else(
            || err.to_string(),
            |code| format!("{:?}", nix::errno::Errno::from_raw(code)),
        ),
    };
    let seccomp_allowed_calls = crate::fence::seccomp(role)?;
    let diagnosis = Diagnosis {
        identity,
        landlock,
        landlock_open_file,
        seccomp: crate::fence::seccomp_mode(&mut status),
        seccomp_allowed_calls,
    };
    println!("{}", serde_json::to_string(&diagnosis)?);
    Ok(())
}

/// Closes every inherited descriptor above stderr, and resets cwd, umask and environment,
/// so the user's process holds nothing of root's.
pub(crate) fn sanitize_inherited_state() -> anyhow::Result<()> {
    // SAFETY: close_range only closes descriptors; nothing in this single-threaded process
    // holds one above 2 yet.
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        // Kernels before 5.9 lack close_range: close one by one.
        let max = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        for fd in 3..max.min(65536) as i32 {
            // SAFETY: as above; closing a descriptor that is not open is harmless.
            unsafe { nix::libc::close(fd) };
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::env::set_current_dir("/").context("chdir /")?;
    for (key, _) in std::env::vars_os() {
        // The process is single-threaded here, so changing the environment is sound.
        std::env::remove_var(key);
    }
    Ok(())
}

/// Raises the soft descriptor limit as far as allowed; returns the resulting soft limit.
pub fn raise_fd_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let wanted = hard.max(MAX_IN_FLIGHT + RESERVED_FDS);
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return wanted;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Makes every attempt of `runs` and writes one result line each to stdout. Results that
/// finished together are written with one flush: a sweep's thousands of simultaneous
/// timeouts are one write, not one each; nothing finished waits unwritten while the loop
/// sleeps.
fn probe_all(
    connector: &mut crate::connector::Connector,
    runs: Vec<WorkerRun>,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let out = std::cell::RefCell::new(std::io::BufWriter::with_capacity(64 * 1024, stdout.lock()));
    let requests =
        runs.into_iter()
            .flat_map(WorkerRun::probes)
            .map(|p| crate::connector::Request {
                id: p.id,
                addr: p.addr,
                timeout: Duration::from_millis(p.timeout_ms),
            });
    connector.run(
        requests,
        |id, attempt| -> anyhow::Result<()> {
            let mut out = out.borrow_mut();
            serde_json::to_writer(&mut *out, &WorkerResult { id, attempt })?;
            out.write_all(b"\n")?;
            Ok(())
        },
        || Ok(out.borrow_mut().flush()?),
    )
}

/// How many probes one worker is given: as many as it can keep in flight at once with the
/// descriptors it will have (the hard limit, which a root worker raises its soft limit to),
/// so that no probe of a worker waits for another's timeout. A user with more probes gets
/// several workers. The second value is true when the descriptor limit, not
/// `MAX_IN_FLIGHT`, set the figure (a run that is slower than it could be says so).
pub fn probes_per_worker() -> (usize, bool) {
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
    let usable = hard.saturating_sub(RESERVED_FDS).max(1);
    (usable.min(MAX_IN_FLIGHT) as usize, usable < MAX_IN_FLIGHT)
}

/// `probes` cut into shards of nearly equal size (a sweep of 65,537 probes is two shards of
/// 32,769 and 32,768, not 65,536 and 1), in order; together they are `probes`, each exactly
/// once. As many shards as it takes to keep `per_worker` in flight in each, but no more
/// than the machine's cores or what `MAX_IN_FLIGHT` alone would need, whichever is more:
/// under a low descriptor limit a hundred small workers would cost more memory than the
/// time they save, so each worker then runs its shard in waves (slower, and said so).
pub fn shards(probes: &[WorkerProbe], per_worker: usize, cores: usize) -> Vec<&[WorkerProbe]> {
    if probes.is_empty() {
        return Vec::new();
    }
    let wanted = probes.len().div_ceil(per_worker.max(1));
    let cap = probes
        .len()
        .div_ceil(MAX_IN_FLIGHT as usize)
        .max(cores.max(1));
    let count = wanted.min(cap);
    let size = probes.len().div_ceil(count);
    probes.chunks(size).collect()
}

/// The cores this process may run on (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// How many workers the parent may run at once: each holds three pipes (and the parent
/// keeps a few descriptors of its own), so the descriptor limit bounds it.
pub fn concurrent_worker_limit() -> usize {
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    (soft.saturating_sub(RESERVED_FDS) / 4).clamp(1, 4096) as usize
}

/// Why a worker did not deliver all its results.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The process could not be started.
    #[error("cannot start the worker for `{user}`: {source}")]
    Spawn {
        /// The user.
        user: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The probe list could not be encoded.
    #[error("cannot encode the probe list: {0}")]
    Encode(#[source] serde_json::Error),
    /// The worker wrote something that is not a result line.
    #[error("bad worker output `{line}`: {source}")]
    Protocol {
        /// The line as received.
        line: String,
        /// Why it does not decode.
        source: serde_json::Error,
    },
    /// Waiting for the process failed.
    #[error("waiting for the worker of `{user}`: {source}")]
    Wait {
        /// The user.
        user: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The worker made a system call outside its seccomp allowlist and the kernel killed it.
    #[error("the worker for `{user}` was killed by its seccomp filter (SIGSYS): it made a system call outside the probe allowlist")]
    Fenced {
        /// The user.
        user: String,
    },
    /// The worker exited unsuccessfully; what it said on stderr, or its exit status.
    #[error("{}", if diagnostics.is_empty() { format!("worker for `{user}` ended with {status}") } else { diagnostics.clone() })]
    Failed {
        /// The user.
        user: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its stderr, trimmed (at most 64 KiB).
        diagnostics: String,
    },
}

/// Says, for `-v`, that the worker of `user` started and which identity it takes (the
/// worker verifies exactly this before it connects, and fails otherwise).
fn log_start(user: &str, pid: Option<u32>, probes: usize) {
    let pid = pid.map_or_else(|| "?".to_string(), |p| p.to_string());
    match crate::identity::lookup(user) {
        Ok(account) => {
            let groups = crate::identity::expected_groups(&account)
                .map(|g| {
                    g.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|errno| format!("unknown ({errno})"));
            tracing::debug!(
                "worker for {user} started: pid {pid}, becomes uid {} gid {} groups {groups}, \
                 {}",
                account.uid,
                account.gid,
                crate::vocab::counted(probes, "probe", "probes")
            );
        }
        Err(error) => tracing::debug!("worker for {user} started: pid {pid} ({error})"),
    }
}

/// Runs a worker as `user` for `probes`, forwarding each result to `results` as it arrives.
///
/// The worker is killed when the returned future is dropped (interrupt, deadline).
pub async fn run_as(
    user: &str,
    probes: &[WorkerProbe],
    results: mpsc::UnboundedSender<WorkerResult>,
) -> Result<(), WorkerError> {
    run_worker(user, None, &runs(probes), WorkerOptions::default(), results).await
}

/// How the parent asks a worker to probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerOptions {
    /// At most this many connects in flight (the worker's share of the conntrack budget).
    pub in_flight: Option<usize>,
    /// Report each connection's local address (for `--explain`).
    pub local_addresses: bool,
}

/// [`run_as`] for the probes of `runs` ([`runs`]), standing in the process `service` (a
/// `pid:`/`unit:` identity) when given.
pub async fn run_worker(
    user: &str,
    service: Option<&crate::service::ServiceIdentity>,
    runs: &[WorkerRun],
    options: WorkerOptions,
    results: mpsc::UnboundedSender<WorkerResult>,
) -> Result<(), WorkerError> {
    let mut command = tokio::process::Command::new("/proc/self/exe");
    command.arg(WORKER_SUBCOMMAND).arg(user);
    if let Some(n) = options.in_flight {
        command.arg("--in-flight").arg(n.to_string());
    }
    if options.local_addresses {
        command.arg("--local-addresses");
    }
    if let Some(service) = service {
        command
            .arg("--process")
            .arg(serde_json::to_string(service).map_err(WorkerError::Encode)?);
    }
    let mut child = crate::child::spawn(&mut command, TEST_FAULT.get()).map_err(|source| {
        WorkerError::Spawn {
            user: user.to_string(),
            source,
        }
    })?;

    if tracing::enabled!(tracing::Level::DEBUG) {
        let probes = runs.iter().map(|r| usize::from(r.count)).sum();
        log_start(user, child.id(), probes);
    }
    // Only -v names each probe's address: a sweep's worker would otherwise hold a map of
    // 16,384 entries for nothing.
    let addr_of: std::collections::HashMap<usize, SocketAddr> =
        if tracing::enabled!(tracing::Level::DEBUG) {
            runs.iter()
                .flat_map(|r| r.probes())
                .map(|p| (p.id, p.addr))
                .collect()
        } else {
            std::collections::HashMap::new()
        };

    let request = serde_json::to_vec(runs).map_err(WorkerError::Encode)?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    let feed = crate::child::feed(stdin, request);
    let collect = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut protocol_error = None;
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<WorkerResult>(&line) {
                Ok(result) => {
                    let attempt = &result.attempt;
                    tracing::debug!(
                        "probe as {user}: {} {} after {} ms{}",
                        addr_of
                            .get(&result.id)
                            .map_or_else(|| format!("#{}", result.id), ToString::to_string),
                        attempt.observed.as_str(),
                        attempt.elapsed.as_millis(),
                        attempt
                            .detail
                            .as_ref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    );
                    let _ = results.send(result);
                }
                Err(source) => protocol_error = Some(WorkerError::Protocol { line, source }),
            }
        }
        protocol_error
    };
    let diagnostics = crate::child::diagnostics(&mut stderr, 64 * 1024);
    let ((), protocol_error, diagnostics) = tokio::join!(feed, collect, diagnostics);
    let status = child.wait().await.map_err(|source| WorkerError::Wait {
        user: user.to_string(),
        source,
    })?;
    tracing::debug!("worker for {user} ended: {status}");
    if let Some(error) = protocol_error {
        return Err(error);
    }
    if crate::child::fenced(&status) {
        return Err(WorkerError::Fenced {
            user: user.to_string(),
        });
    }
    if !status.success() {
        return Err(WorkerError::Failed {
            user: user.to_string(),
            status,
            diagnostics: diagnostics.trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(n: usize) -> Vec<WorkerProbe> {
        (0..n)
            .map(|id| WorkerProbe {
                id,
                addr: "192.0.2.1:25".parse().unwrap(),
                timeout_ms: 1000,
            })
            .collect()
    }

    /// The runs, expanded again.
    fn expand(runs: &[WorkerRun]) -> Vec<WorkerProbe> {
        runs.iter().flat_map(|r| r.probes()).collect()
    }

    fn same(a: &[WorkerProbe], b: &[WorkerProbe]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| a.id == b.id && a.addr == b.addr && a.timeout_ms == b.timeout_ms)
    }

    #[test]
    fn a_sweep_is_one_run_per_address_and_expands_to_every_probe_once() {
        let mut list = Vec::new();
        for (base, ip) in [(0, "203.0.113.1"), (65_535, "[2001:db8::1]")] {
            for port in 1..=65_535u16 {
                list.push(WorkerProbe {
                    id: base + usize::from(port) - 1,
                    addr: format!("{ip}:{port}").parse().unwrap(),
                    timeout_ms: 1000,
                });
            }
        }
        let runs = runs(&list);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[1].count, 65_535);
        assert!(same(&expand(&runs), &list));
        let json = serde_json::to_string(&runs).unwrap();
        assert!(json.len() < 200, "{json}");
        let back: Vec<WorkerRun> = serde_json::from_str(&json).unwrap();
        assert!(same(&expand(&back), &list));
    }

    #[test]
    fn runs_break_wherever_anything_but_the_next_port_and_id_changes() {
        let p = |id: usize, addr: &str, timeout_ms: u64| WorkerProbe {
            id,
            addr: addr.parse().unwrap(),
            timeout_ms,
        };
        let list = vec![
            p(0, "192.0.2.1:65534", 1000),
            p(1, "192.0.2.1:65535", 1000),
            // The port wraps: a new run.
            p(2, "192.0.2.1:1", 1000),
            // Another address.
            p(3, "192.0.2.2:2", 1000),
            // Another timeout.
            p(4, "192.0.2.2:3", 2000),
            // An id gap.
            p(6, "192.0.2.2:4", 2000),
            // A port gap, then the same port again.
            p(7, "192.0.2.2:6", 2000),
            p(8, "192.0.2.2:6", 2000),
            // Another IPv6 scope.
            p(9, "[fe80::1%1]:25", 1000),
            p(10, "[fe80::1%2]:26", 1000),
            p(11, "[fe80::1%2]:27", 1000),
        ];
        let runs = runs(&list);
        assert_eq!(
            runs.iter().map(|r| r.count).collect::<Vec<_>>(),
            [2, 1, 1, 1, 1, 1, 1, 1, 2]
        );
        assert!(same(&expand(&runs), &list));
    }

    proptest::proptest! {
        #[test]
        fn runs_expand_to_exactly_the_probes(
            raw in proptest::collection::vec((0usize..4, 0u16..6, 0u8..3, 0u8..2, 0u8..2), 0..60)
        ) {
            // Ids mostly consecutive, ports mostly consecutive, a few addresses and timeouts.
            let mut id = 0;
            let list: Vec<WorkerProbe> = raw
                .iter()
                .map(|&(gap, port, host, v6, timeout)| {
                    id += usize::from(gap == 0) * 2 + 1;
                    let ip = if v6 == 1 { format!("[2001:db8::{host}]") } else { format!("192.0.2.{host}") };
                    WorkerProbe {
                        id,
                        addr: format!("{ip}:{}", 65_530 + port).parse().unwrap(),
                        timeout_ms: 1000 + u64::from(timeout),
                    }
                })
                .collect();
            let runs = runs(&list);
            proptest::prop_assert!(same(&expand(&runs), &list));
        }
    }

    #[test]
    fn shards_cover_every_probe_once() {
        for (n, per, cores, expected) in [
            (0, 10, 2, vec![]),
            (1, 10, 2, vec![1]),
            (10, 10, 2, vec![10]),
            (11, 10, 2, vec![6, 5]),
            (8192, 16_384, 2, vec![8192]),
            (
                131_070,
                16_384,
                2,
                vec![
                    16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 16_382,
                ],
            ),
            // A low descriptor limit: 8 workers (what 16,384 in flight needs), in waves.
            (
                131_070,
                992,
                2,
                vec![
                    16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 16_384, 16_382,
                ],
            ),
            // 2,500 probes with 224 in flight: as many workers as cores.
            (2500, 224, 2, vec![1250, 1250]),
            (2500, 224, 4, vec![625, 625, 625, 625]),
        ] {
            let list = probes(n);
            let got = shards(&list, per, cores);
            assert_eq!(
                got.iter().map(|s| s.len()).collect::<Vec<_>>(),
                expected,
                "{n} {per} {cores}"
            );
            let ids: Vec<usize> = got.iter().flat_map(|s| s.iter().map(|p| p.id)).collect();
            assert_eq!(ids, (0..n).collect::<Vec<_>>());
        }
    }
}
