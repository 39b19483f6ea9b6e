//! Throwaway network sandboxes for `egress-check sandbox`.
//!
//! A [`Sandbox`] is a fresh pair of network namespaces: the *host* under test
//! and a simulated *internet*, joined by a veth pair with IPv4 and IPv6
//! addresses and default routes from the host to the internet. Firewall
//! rules are loaded into the host namespace only. The internet namespace runs
//! a child process (this same executable, hidden subcommand
//! `__sandbox-internet`, see [`internet_main`]) that answers every DNS query
//! and accepts TCP connections on the scenario's ports.
//!
//! Address plan (documentation ranges only):
//!
//! | what                              | IPv4                | IPv6                  |
//! |-----------------------------------|---------------------|-----------------------|
//! | link, internet end (gateway, DNS) | 192.0.2.1/30        | 2001:db8:ec::1/64     |
//! | link, host end (`eth0`)           | 192.0.2.2/30        | 2001:db8:ec::2/64     |
//! | sink (internet's `lo`)            | 198.51.100.25/32    | 2001:db8:25::25/128   |
//!
//! DNS answers: `MX` for any name `N` → `mx.N`; `A` → 198.51.100.25; `AAAA`
//! → 2001:db8:25::25 (either family can be switched off, giving NODATA).
//! The sinks listen on both sink addresses, on every port of
//! [`SandboxOptions::ports`], greet with
//! `220 sandbox.invalid ESMTP egress-check sandbox\r\n` and close.
//!
//! Teardown (explicit [`Sandbox::teardown`], or best effort on drop, which
//! also covers errors half-way through [`Sandbox::create`] and panics):
//! stop the internet process, kill anything left in either namespace,
//! `ip netns del` both (which destroys the veth pair), remove the temp dir.

mod dns;
mod internet;
mod netns;
mod sink;

use std::collections::BTreeSet;
use std::fs::{DirBuilder, File};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use internet::{internet_main, InternetArgs, SUBCOMMAND as INTERNET_SUBCOMMAND};

/// How long the internet process may take to bind its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `iptables-restore`, `ip6tables-restore` or `nft -f` may take.
const LOADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `--setup` script may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Grace period between SIGTERM and SIGKILL for the internet process.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long `iptables-restore`/`ip6tables-restore` wait for the xtables lock
/// (only the legacy backend uses it; two sandboxes may load at once).
const XTABLES_WAIT: &str = "--wait=30";

/// What a sandbox must provide.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// TCP ports the sinks listen on (both sink addresses).
    pub ports: BTreeSet<u16>,
    /// Answer `A` queries (with the IPv4 sink); `false` gives NODATA (`--no-a`).
    pub answer_a: bool,
    /// Answer `AAAA` queries (with the IPv6 sink); `false` gives NODATA (`--no-aaaa`).
    pub answer_aaaa: bool,
    /// Rules to load into the host namespace, in this order.
    pub rules: Vec<RuleSource>,
}

/// One source of firewall configuration for the host namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// An `iptables-save` style file, fed to `iptables-restore` on stdin.
    Iptables(PathBuf),
    /// An `ip6tables-save` style file, fed to `ip6tables-restore` on stdin.
    Ip6tables(PathBuf),
    /// An nftables ruleset, loaded with `nft -f FILE`.
    Nft(PathBuf),
    /// An executable run inside the host namespace
    /// (`ip netns exec HOST SCRIPT`) with these variables set:
    /// `EGRESS_SANDBOX_NETNS` (host namespace name), `EGRESS_SANDBOX_IFACE`
    /// (`eth0`), `EGRESS_SANDBOX_GATEWAY4`/`_GATEWAY6` (internet end of the
    /// link, also the DNS server), `EGRESS_SANDBOX_SINK4`/`_SINK6`.
    Setup(PathBuf),
}

impl RuleSource {
    fn path(&self) -> &Path {
        match self {
            Self::Iptables(p) | Self::Ip6tables(p) | Self::Nft(p) | Self::Setup(p) => p,
        }
    }
}

/// Everything that can go wrong creating, using or tearing down a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Namespaces and firewall rules need root.
    #[error(
        "the sandbox must run as root (effective uid is {euid}): it creates network \
         namespaces and loads firewall rules"
    )]
    NotRoot {
        /// The effective uid we run with.
        euid: u32,
    },
    /// The kernel or the environment (a container without CAP_SYS_ADMIN,
    /// say) does not allow creating network namespaces.
    #[error("network namespaces are not available here: {detail}")]
    NetnsUnsupported {
        /// What failed, with the tool's own message.
        detail: String,
    },
    /// A program could not be started at all (not installed?).
    #[error("cannot run `{program}`: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it could not be started.
        error: io::Error,
    },
    /// A plumbing command (`ip ...`) failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr (and stdout).
        output: String,
    },
    /// A rules file or setup script given by the user cannot be read.
    #[error("cannot read {}: {error}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// `iptables-restore`, `ip6tables-restore` or `nft` rejected a file; the
    /// output is the loader's own, which names the offending line.
    #[error("{loader} rejected {} ({status}):\n{}", .path.display(), or_none(.output))]
    RulesLoad {
        /// `iptables-restore`, `ip6tables-restore` or `nft`.
        loader: &'static str,
        /// The rules file.
        path: PathBuf,
        /// The loader's exit status.
        status: ExitStatus,
        /// The loader's stderr and stdout.
        output: String,
    },
    /// The setup script exited unsuccessfully.
    #[error("setup script {} failed ({status}); its output:\n{}", .path.display(), or_none(.output))]
    SetupScript {
        /// The script.
        path: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// Its stdout and stderr, interleaved.
        output: String,
    },
    /// A rules loader or setup script did not finish in time (it was killed).
    #[error("{what} did not finish within {}s and was killed; its output:\n{}", .timeout.as_secs(), or_none(.output))]
    Timeout {
        /// What was running.
        what: String,
        /// The limit.
        timeout: Duration,
        /// Output up to the kill.
        output: String,
    },
    /// The simulated internet process failed to start or to get ready.
    #[error("the simulated internet did not start: {detail}")]
    Internet {
        /// What happened, with the process's own error output.
        detail: String,
    },
    /// Local I/O (temp dir, log files) failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        error: io::Error,
    },
    /// Teardown left something behind; each entry says what.
    #[error("sandbox teardown incomplete: {}", .problems.join("; "))]
    Teardown {
        /// What could not be removed, and why.
        problems: Vec<String>,
    },
}

fn or_none(output: &str) -> &str {
    if output.trim().is_empty() {
        "(no output)"
    } else {
        output
    }
}

/// A live sandbox: two namespaces, the veth link between them, the internet
/// process and a private temp dir. Torn down by [`Sandbox::teardown`] or,
/// best effort, on drop.
pub struct Sandbox {
    host_name: String,
    host_path: PathBuf,
    /// Namespaces created so far, deleted on teardown (host first).
    namespaces: Vec<String>,
    internet: Option<InternetProcess>,
    temp_dir: Option<PathBuf>,
}

impl Sandbox {
    /// Creates namespaces + veth + addresses + routes, starts the internet
    /// process, waits until it is ready, then loads `opts.rules` into the host
    /// namespace in order. On any error everything created so far is torn
    /// down before returning. Blocking; needs root.
    pub fn create(opts: &SandboxOptions) -> Result<Sandbox, SandboxError> {
        preflight()?;
        for rule in &opts.rules {
            check_readable(rule)?;
        }

        // From here on, dropping `sandbox` undoes whatever was done.
        let mut sandbox = Sandbox {
            host_name: String::new(),
            host_path: PathBuf::new(),
            namespaces: Vec::new(),
            internet: None,
            temp_dir: None,
        };
        let temp_dir = make_temp_dir()?;
        sandbox.temp_dir = Some(temp_dir.clone());

        let (host, internet) = netns::add_pair(&mut sandbox.namespaces)?;
        sandbox.host_path = netns::path_of(&host);
        sandbox.host_name = host.clone();
        netns::configure_link(&host, &internet)?;

        sandbox.internet = Some(InternetProcess::start(&internet, opts, &temp_dir)?);

        for (index, rule) in opts.rules.iter().enumerate() {
            load_rule(&host, rule, &temp_dir.join(format!("rules-{index}.log")))?;
        }
        Ok(sandbox)
    }

    /// Path of the host namespace to `setns` into: `/run/netns/<name>`.
    pub fn host_netns_path(&self) -> &Path {
        &self.host_path
    }

    /// Name of the host namespace (for `ip netns exec NAME ...`).
    pub fn host_netns_name(&self) -> &str {
        &self.host_name
    }

    /// The DNS server the host namespace should use: `192.0.2.1:53` (the
    /// internet end of the link; it also listens on `[2001:db8:ec::1]:53`).
    pub fn nameserver(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(netns::LINK4_INTERNET), 53)
    }

    /// Tears everything down and reports what could not be removed.
    /// Dropping a `Sandbox` does the same, best effort, warning on stderr.
    pub fn teardown(mut self) -> Result<(), SandboxError> {
        self.teardown_inner()
    }

    /// Idempotent: every resource is taken out of `self` as it is released.
    fn teardown_inner(&mut self) -> Result<(), SandboxError> {
        let mut problems = Vec::new();
        if let Some(internet) = self.internet.take() {
            if let Err(e) = internet.stop() {
                problems.push(e);
            }
        }
        for name in std::mem::take(&mut self.namespaces) {
            if let Err(e) = netns::delete(&name) {
                problems.push(format!("namespace {name}: {e}"));
            }
        }
        if let Some(dir) = self.temp_dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    problems.push(format!("temp dir {}: {e}", dir.display()));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Teardown { problems })
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            // Not eprintln!: a panic here, during unwinding, would abort.
            let _ = writeln!(io::stderr(), "warning: {e}");
        }
    }
}

/// Root and kernel support, checked before touching anything.
fn preflight() -> Result<(), SandboxError> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(SandboxError::NotRoot {
            euid: euid.as_raw(),
        });
    }
    if let Err(e) = std::fs::metadata("/proc/self/ns/net") {
        return Err(SandboxError::NetnsUnsupported {
            detail: format!("/proc/self/ns/net: {e} (kernel without CONFIG_NET_NS?)"),
        });
    }
    Ok(())
}

fn check_readable(rule: &RuleSource) -> Result<(), SandboxError> {
    let path = rule.path();
    let unreadable = |error| SandboxError::Unreadable {
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.is_dir() {
        return Err(unreadable(io::Error::other("is a directory")));
    }
    if matches!(rule, RuleSource::Setup(_)) {
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(unreadable(io::Error::other(
                "not executable (chmod +x it, and give it a #! line)",
            )));
        }
    } else {
        File::open(path).map_err(unreadable)?;
    }
    Ok(())
}

/// A private (0700) directory for logs, unique per sandbox.
fn make_temp_dir() -> Result<PathBuf, SandboxError> {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("egress-check-sandbox-{}-{n}", std::process::id()));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(SandboxError::Io {
                    context: format!("cannot create temp dir {}", dir.display()),
                    error,
                })
            }
        }
    }
}

/// Loads one rule source into the host namespace; the loader's stdout and
/// stderr go to `log` and into the error.
fn load_rule(host: &str, rule: &RuleSource, log: &Path) -> Result<(), SandboxError> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host]);
    let (loader, timeout) = match rule {
        RuleSource::Iptables(path) | RuleSource::Ip6tables(path) => {
            let loader = if matches!(rule, RuleSource::Iptables(_)) {
                "iptables-restore"
            } else {
                "ip6tables-restore"
            };
            let file = File::open(path).map_err(|error| SandboxError::Unreadable {
                path: path.clone(),
                error,
            })?;
            cmd.args([loader, XTABLES_WAIT]).stdin(file);
            (loader, LOADER_TIMEOUT)
        }
        RuleSource::Nft(path) => {
            // By path, so that nft's messages name the file and line.
            cmd.arg("nft").arg("-f").arg(path).stdin(Stdio::null());
            ("nft", LOADER_TIMEOUT)
        }
        RuleSource::Setup(path) => {
            // Absolute, or `ip netns exec` would search $PATH for it.
            let script = std::path::absolute(path).map_err(|error| SandboxError::Unreadable {
                path: path.clone(),
                error,
            })?;
            cmd.arg(script)
                .stdin(Stdio::null())
                .env("EGRESS_SANDBOX_NETNS", host)
                .env("EGRESS_SANDBOX_IFACE", netns::IFACE)
                .env("EGRESS_SANDBOX_GATEWAY4", netns::LINK4_INTERNET.to_string())
                .env("EGRESS_SANDBOX_GATEWAY6", netns::LINK6_INTERNET.to_string())
                .env("EGRESS_SANDBOX_SINK4", netns::SINK4.to_string())
                .env("EGRESS_SANDBOX_SINK6", netns::SINK6.to_string());
            ("setup script", SETUP_TIMEOUT)
        }
    };
    let what = format!("{loader} {}", rule.path().display());
    let (status, output) = run_logged(&mut cmd, &what, timeout, log)?;
    if status.success() {
        return Ok(());
    }
    Err(match rule {
        RuleSource::Setup(path) => SandboxError::SetupScript {
            path: path.clone(),
            status,
            output,
        },
        _ => SandboxError::RulesLoad {
            loader,
            path: rule.path().to_owned(),
            status,
            output,
        },
    })
}

/// Runs `cmd` with stdout and stderr both appended to `log` (interleaved in
/// the order written, and no pipe that could fill up), killing it after
/// `timeout`. Returns its status and output.
fn run_logged(
    cmd: &mut Command,
    what: &str,
    timeout: Duration,
    log: &Path,
) -> Result<(ExitStatus, String), SandboxError> {
    let io_err = |context: String| move |error| SandboxError::Io { context, error };
    let out = File::create(log).map_err(io_err(format!("cannot create {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_err(format!("cannot duplicate {}", log.display())))?;
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|error| SandboxError::Spawn {
            program: "ip".into(),
            error,
        })?;
    let status =
        wait_timeout(&mut child, timeout).map_err(io_err(format!("waiting for {what}")))?;
    let output = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_owned())
        .unwrap_or_default();
    match status {
        Some(status) => Ok((status, output)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(SandboxError::Timeout {
                what: what.to_owned(),
                timeout,
                output,
            })
        }
    }
}

/// `child.wait()` with a limit; `Ok(None)` if it is still running then.
fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The running `__sandbox-internet` child.
struct InternetProcess {
    child: Child,
    /// Closing this (EOF on the child's stdin) tells the child to exit.
    stdin: Option<ChildStdin>,
    /// The thread that spawned the child; see [`InternetProcess::start`].
    keeper: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    log: PathBuf,
}

impl InternetProcess {
    /// Spawns `/proc/self/exe __sandbox-internet ...` and waits for `ready`.
    ///
    /// The child is spawned from a dedicated "keeper" thread that lives until
    /// teardown, because `PR_SET_PDEATHSIG` fires when the *thread* that
    /// forked the child exits: spawning from a short-lived thread (a tokio
    /// blocking-pool thread, say) would kill the internet early. The child
    /// also exits on EOF of its stdin, whose write end only we hold, and runs
    /// in its own process group so a terminal's Ctrl-C reaches only us and
    /// we tear down in order.
    fn start(
        internet_ns: &str,
        opts: &SandboxOptions,
        temp_dir: &Path,
    ) -> Result<Self, SandboxError> {
        let log = temp_dir.join("internet.log");
        let stderr = File::create(&log).map_err(|error| SandboxError::Io {
            context: format!("cannot create {}", log.display()),
            error,
        })?;
        let args = internet_args(internet_ns, opts);
        let (child_tx, child_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let keeper = std::thread::Builder::new()
            .name("sandbox-keeper".into())
            .spawn(move || {
                let spawned = spawn_internet(&args, stderr);
                let ok = spawned.is_ok();
                let _ = child_tx.send(spawned);
                if ok {
                    // Until the Sandbox drops the sender.
                    let _ = stop_rx.recv();
                }
            })
            .map_err(|error| SandboxError::Io {
                context: "cannot start the sandbox keeper thread".into(),
                error,
            })?;
        let spawned = child_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the sandbox keeper thread died")));
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let _ = keeper.join();
                return Err(SandboxError::Spawn {
                    program: "/proc/self/exe".into(),
                    error,
                });
            }
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut process = InternetProcess {
            child,
            stdin,
            keeper: Some((stop_tx, keeper)),
            log,
        };
        if let Err(detail) = wait_ready(stdout) {
            // If it failed on its own it exits right away: get its status.
            let status = wait_timeout(&mut process.child, Duration::from_millis(500))
                .ok()
                .flatten()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            let _ = process.stop_quietly();
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            return Err(SandboxError::Internet {
                detail: format!("{detail}{status}\n{}", or_none(log.trim_end())),
            });
        }
        Ok(process)
    }

    /// Closes stdin, sends SIGTERM, waits [`STOP_GRACE`], then SIGKILLs;
    /// reaps the child and ends the keeper thread. Returns what went wrong.
    fn stop(mut self) -> Result<(), String> {
        self.stop_quietly()
    }

    fn stop_quietly(&mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let result = match self.child.try_wait() {
            Ok(Some(_)) => Ok(()),
            _ => {
                // Still ours (not reaped), so the pid cannot have been reused.
                if let Ok(pid) = i32::try_from(self.child.id()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                match wait_timeout(&mut self.child, STOP_GRACE) {
                    Ok(Some(_)) => Ok(()),
                    _ => {
                        let _ = self.child.kill();
                        self.child
                            .wait()
                            .map(drop)
                            .map_err(|e| format!("internet process {}: {e}", self.child.id()))
                    }
                }
            }
        };
        if let Some((stop, keeper)) = self.keeper.take() {
            drop(stop);
            let _ = keeper.join();
        }
        result
    }
}

/// The `__sandbox-internet` arguments for `opts`.
fn internet_args(internet_ns: &str, opts: &SandboxOptions) -> Vec<String> {
    let mut args = vec![
        internet::SUBCOMMAND.to_owned(),
        "--netns".into(),
        netns::path_of(internet_ns).display().to_string(),
        "--dns-listen".into(),
        netns::LINK4_INTERNET.to_string(),
        "--dns-listen".into(),
        netns::LINK6_INTERNET.to_string(),
        "--sink".into(),
        netns::SINK4.to_string(),
        "--sink".into(),
        netns::SINK6.to_string(),
    ];
    if opts.answer_a {
        args.extend(["--answer-a".into(), netns::SINK4.to_string()]);
    }
    if opts.answer_aaaa {
        args.extend(["--answer-aaaa".into(), netns::SINK6.to_string()]);
    }
    for port in &opts.ports {
        args.extend(["--port".into(), port.to_string()]);
    }
    args
}

/// Forks and execs the internet process (runs on the keeper thread).
fn spawn_internet(args: &[String], stderr: File) -> io::Result<Child> {
    let parent = nix::unistd::getpid();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("egress-check")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0);
    // SAFETY: the closure only makes async-signal-safe system calls
    // (prctl, getppid) and builds an io::Error from a raw errno (no
    // allocation).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Waits for the `ready` line on the child's stdout, up to [`READY_TIMEOUT`].
fn wait_ready(stdout: Option<std::process::ChildStdout>) -> Result<(), String> {
    let stdout = stdout.ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    // Detached: it ends at the child's exit or at its `ready` line.
    std::thread::spawn(move || {
        let mut line = String::new();
        let result = match BufReader::new(stdout).read_line(&mut line) {
            Ok(0) => Err("it exited before getting ready".to_owned()),
            Ok(_) if line.trim_end() == internet::READY_LINE => Ok(()),
            Ok(_) => Err(format!("unexpected output {:?}", line.trim_end())),
            Err(e) => Err(format!("cannot read its stdout: {e}")),
        };
        let _ = tx.send(result);
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(result) => result,
        Err(_) => Err(format!("not ready after {}s", READY_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internet_args_follow_options() {
        let opts = SandboxOptions {
            ports: [587, 25].into_iter().collect(),
            answer_a: true,
            answer_aaaa: false,
            rules: vec![],
        };
        let args = internet_args("ecsb-1-0-i", &opts);
        assert_eq!(args[0], "__sandbox-internet");
        let joined = args.join(" ");
        assert!(joined.contains("--netns /run/netns/ecsb-1-0-i"), "{joined}");
        assert!(joined.contains("--answer-a 198.51.100.25"), "{joined}");
        assert!(!joined.contains("--answer-aaaa"), "{joined}");
        assert!(joined.ends_with("--port 25 --port 587"), "{joined}");
    }

    #[test]
    fn rule_errors_quote_the_loader_output() {
        let status = Command::new("false").status().unwrap();
        let err = SandboxError::RulesLoad {
            loader: "iptables-restore",
            path: "rules.v4".into(),
            status,
            output: "Error occurred at line: 2".into(),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("iptables-restore rejected rules.v4 (exit status: 1)"),
            "{msg}"
        );
        assert!(msg.contains("line: 2"), "{msg}");
        let err = SandboxError::SetupScript {
            path: "setup.sh".into(),
            status,
            output: String::new(),
        };
        assert!(err.to_string().ends_with("(no output)"), "{err}");
    }

    #[test]
    fn unreadable_rules_are_reported_before_anything_is_created() {
        let err = check_readable(&RuleSource::Nft("/nonexistent/rules.nft".into())).unwrap_err();
        assert!(matches!(err, SandboxError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/rules.nft"), "{err}");
        let err = check_readable(&RuleSource::Setup("/".into())).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        let script = tempfile::NamedTempFile::new().unwrap(); // mode 0600
        let err = check_readable(&RuleSource::Setup(script.path().into())).unwrap_err();
        assert!(err.to_string().contains("not executable"), "{err}");
        assert!(check_readable(&RuleSource::Iptables(script.path().into())).is_ok());
    }
}
