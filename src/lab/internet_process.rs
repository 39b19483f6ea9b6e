//! Where the simulated internet runs: a thread of the calling process ([`Serving::Thread`])
//! or a separate process that drops its privileges once its sockets are bound
//! ([`Serving::Process`]). Both run the same serving code (`internet::setup`).
//!
//! Why a process: the internet's DNS server and sinks parse whatever the host namespace
//! sends them (DNS questions decoded by hickory-server, bytes on the sinks). `egress-check
//! sandbox` runs as root; served from a thread of that process, a bug in that parsing would
//! run with every capability. The process keeps privileges only as long as binding needs
//! them (port 53 and the sinks' ports below 1024, `/proc/sys/net` of the internet namespace,
//! socket options such as `IP_TRANSPARENT` that need CAP_NET_ADMIN, checked by the kernel
//! when they are set, never again afterwards), then becomes `nobody` with the verified drop
//! of the workers ([`crate::identity::become_user`]: groups, gid, uid, no capabilities,
//! `no_new_privs`), fences itself ([`crate::fence`], role [`Role::Internet`]: no files, no
//! new sockets, no binding or connecting) and only then answers anybody.
//!
//! The test kit and the benchmark keep the thread: their labs carry code (fault
//! layers, [`super::DnsLayer`]) and add sinks at run time ([`super::Lab::add_sink`]), neither of which can
//! cross to another process, and they are test support, not something root runs in
//! production.
//!
//! The process is `egress-check __serve-internet NETNS --parent PID`
//! ([`INTERNET_SUBCOMMAND`]), started by the parent from its own binary:
//! - stdin: one line of JSON, the [`Config`] (at most [`MAX_CONFIG_BYTES`], strictly decoded,
//!   the zone rebuilt with the same checks as in the parent), then nothing until the parent
//!   closes it or dies: that end of file stops the process (and `PR_SET_PDEATHSIG` kills it
//!   if the parent dies without closing);
//! - stdout: one line of JSON, [`Readiness`]: ready, or why not;
//! - stderr: the parent's, for what goes wrong after readiness.
//!
//! Teardown closes stdin and waits a little, then kills and reaps the process; dropping the
//! parent's handle kills and reaps it too, so an error half-way through building the lab
//! leaves nothing running.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hickory_server::proto::rr::RData;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::internet::{self, Control, Mode, Services};
use super::thread::{NetnsThread, ThreadError};
use super::zone::{Records, Zone, ZoneError};
use crate::fence::Role;
use crate::identity;

/// The hidden subcommand that starts the internet process. Hidden because only the
/// sandbox starts it, with a configuration on stdin; it exists so that the simulated
/// internet's parsing of network input never runs as root (see the module docs).
pub const INTERNET_SUBCOMMAND: &str = "__serve-internet";

/// Who the internet process becomes once its sockets are bound.
pub const INTERNET_USER: &str = "nobody";

/// Largest configuration the internet process reads: far above a real lab's (a zone of a
/// few hundred records, a handful of sinks and ports), far below what could hurt.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Most addresses (DNS listeners plus sinks) a configuration may name.
const MAX_ADDRESSES: usize = 4096;

/// Largest readiness message the parent reads.
const MAX_READY_BYTES: u64 = 64 * 1024;

/// How long the parent waits for the internet process to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long teardown waits for the process to end on its own after closing its stdin.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Which backend serves a lab's internet; see the module docs for why there are two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// A thread of the calling process that enters the internet namespace
    /// ([`NetnsThread`]); keeps the caller's privileges; supports [`super::DnsLayer`]s and
    /// [`super::Lab::add_sink`]. The test kit and the benchmark use it.
    Thread,
    /// A separate process started from this binary (its path), which binds, drops to
    /// [`INTERNET_USER`], fences itself and serves. No [`super::DnsLayer`], no sinks added later.
    /// `egress-check sandbox` uses it.
    Process(PathBuf),
}

/// Arguments of the hidden internet subcommand.
#[derive(clap::Args, Debug)]
pub struct InternetArgs {
    /// The internet's network namespace (`/run/netns/NAME`).
    pub netns: PathBuf,
    /// Pid of the parent; the process refuses to serve once that parent is gone.
    #[arg(long)]
    pub parent: Option<i32>,
}

/// Why the internet could not be started in (or stopped from) a separate process.
#[derive(Debug, thiserror::Error)]
pub enum InternetProcessError {
    /// A [`super::DnsLayer`] is code of this process: it cannot be sent to another.
    #[error(
        "the lab's DNS layer cannot be sent to a separate internet process \
         (serve such a lab from a thread: Serving::Thread)"
    )]
    LayerNotSendable,
    /// The zone holds a record the configuration cannot carry.
    #[error("record `{owner}` ({kind}) cannot be sent to the internet process")]
    UnsupportedRecord {
        /// Its owner name.
        owner: String,
        /// Its type.
        kind: String,
    },
    /// The configuration is larger than [`MAX_CONFIG_BYTES`].
    #[error("the internet's configuration is {size} bytes, more than {max}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// The configuration does not decode or describes no valid internet.
    #[error("invalid internet configuration: {detail}")]
    InvalidConfig {
        /// What is wrong.
        detail: String,
    },
    /// A zone record was rejected when the zone was rebuilt.
    #[error("invalid internet configuration: {0}")]
    Zone(#[from] ZoneError),
    /// The process could not be started.
    #[error("cannot start the internet process ({program}): {source}")]
    Spawn {
        /// The binary.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// Talking to the process failed.
    #[error("talking to the internet process: {context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// It said it could not start, and why.
    #[error("the internet process could not start: {reason}")]
    Refused {
        /// Its own words.
        reason: String,
    },
    /// It ended before saying it was ready.
    #[error("the internet process ended before it was ready ({status})")]
    Died {
        /// How it ended.
        status: ExitStatus,
    },
    /// It said nothing in time.
    #[error("the internet process was not ready within {}s (killed)", .0.as_secs())]
    NotReady(Duration),
    /// Its readiness message is not one.
    #[error("the internet process sent a malformed readiness message: {0}")]
    Malformed(String),
    /// It ended badly, or had to be killed, at teardown. Ended badly before it was asked
    /// to stop, it died during the run (its fence's SIGSYS, say): the run's timeouts may be
    /// its doing, so the sandbox's teardown fails loudly (exit 2).
    #[error("the internet process {}", if *.killed { format!("did not stop when asked and was killed ({status})") } else { format!("died during the run ({status}): probes that timed out may not have reached it") })]
    Stopped {
        /// How it ended.
        status: ExitStatus,
        /// Whether teardown had to kill it.
        killed: bool,
    },
    /// The thread backend failed.
    #[error(transparent)]
    Thread(#[from] ThreadError),
}

/// What the parent sends the internet process: the internet's services without code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the DNS server listens (UDP and TCP).
    pub dns_listen: Vec<SocketAddr>,
    /// What the DNS server answers.
    pub zone: ZoneConfig,
    /// Sink addresses (used when `mode` is listed).
    pub sinks: Vec<IpAddr>,
    /// How the sinks listen.
    pub mode: Mode,
    /// TCP ports the sinks listen on (not with any-port sinks).
    pub ports: BTreeSet<u16>,
    /// The namespace is the internet's (forwarding off, `somaxconn` raised), not the
    /// host's (the DNS server alone on a loopback resolver's address).
    pub internet_namespace: bool,
}

/// A [`Zone`] as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum ZoneConfig {
    /// [`Zone::CatchAll`].
    CatchAll {
        /// The `A` answer, if any.
        a: Option<Ipv4Addr>,
        /// The `AAAA` answer, if any.
        aaaa: Option<Ipv6Addr>,
    },
    /// [`Zone::Records`]: origins and records, rebuilt with the [`Records`] adders.
    Records {
        /// The origins.
        origins: Vec<String>,
        /// The records.
        records: Vec<RecordConfig>,
    },
}

/// One record of a [`ZoneConfig::Records`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum RecordConfig {
    /// `owner MX preference exchange` (exchange `.`: a null MX).
    Mx {
        /// Owner name.
        owner: String,
        /// Preference.
        preference: u16,
        /// Exchange.
        exchange: String,
    },
    /// `owner A addr`.
    A {
        /// Owner name.
        owner: String,
        /// Address.
        addr: Ipv4Addr,
    },
    /// `owner AAAA addr`.
    Aaaa {
        /// Owner name.
        owner: String,
        /// Address.
        addr: Ipv6Addr,
    },
    /// `owner CNAME target`.
    Cname {
        /// Owner name.
        owner: String,
        /// Target name.
        target: String,
    },
}

impl Config {
    /// The configuration of `services`; fails for what cannot cross (a [`super::DnsLayer`]).
    pub(crate) fn of(services: &Services) -> Result<Config, InternetProcessError> {
        if services.layer.is_some() {
            return Err(InternetProcessError::LayerNotSendable);
        }
        let zone = match &*services.zone {
            Zone::CatchAll { a, aaaa } => ZoneConfig::CatchAll { a: *a, aaaa: *aaaa },
            Zone::Records(records) => ZoneConfig::Records {
                origins: records.origin_names().collect(),
                records: records
                    .records()
                    .map(|(owner, data)| record_config(owner, data))
                    .collect::<Result<_, _>>()?,
            },
        };
        Ok(Config {
            dns_listen: services.dns_listen.clone(),
            zone,
            sinks: services.sinks.clone(),
            mode: services.mode,
            ports: services.ports.clone(),
            internet_namespace: services.internet_namespace,
        })
    }

    /// Decodes one message, as the internet process receives it: bounded, strict, checked.
    pub fn decode(bytes: &[u8]) -> Result<Config, InternetProcessError> {
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(InternetProcessError::TooLarge {
                size: bytes.len() as u64,
                max: MAX_CONFIG_BYTES,
            });
        }
        let config: Config =
            serde_json::from_slice(bytes).map_err(|e| InternetProcessError::InvalidConfig {
                detail: e.to_string(),
            })?;
        if config.dns_listen.len() + config.sinks.len() > MAX_ADDRESSES {
            return Err(InternetProcessError::InvalidConfig {
                detail: format!("more than {MAX_ADDRESSES} addresses"),
            });
        }
        if config.ports.contains(&0) || config.dns_listen.iter().any(|a| a.port() == 0) {
            return Err(InternetProcessError::InvalidConfig {
                detail: "port 0 is not a sink or DNS port".to_string(),
            });
        }
        Ok(config)
    }

    /// The services to run; the zone is rebuilt with [`Records`]' own checks.
    pub(crate) fn into_services(self) -> Result<Services, InternetProcessError> {
        let zone = match self.zone {
            ZoneConfig::CatchAll { a, aaaa } => Zone::CatchAll { a, aaaa },
            ZoneConfig::Records { origins, records } => {
                let mut zone = Records::new(origins.iter().map(String::as_str))?;
                for record in records {
                    match record {
                        RecordConfig::Mx {
                            owner,
                            preference,
                            exchange,
                        } => zone.mx(&owner, preference, &exchange)?,
                        RecordConfig::A { owner, addr } => zone.a(&owner, addr)?,
                        RecordConfig::Aaaa { owner, addr } => zone.aaaa(&owner, addr)?,
                        RecordConfig::Cname { owner, target } => zone.cname(&owner, &target)?,
                    };
                }
                Zone::Records(zone)
            }
        };
        Ok(Services {
            dns_listen: self.dns_listen,
            zone: Arc::new(zone),
            layer: None,
            sinks: self.sinks,
            mode: self.mode,
            ports: self.ports,
            internet_namespace: self.internet_namespace,
        })
    }
}

fn record_config(owner: String, data: &RData) -> Result<RecordConfig, InternetProcessError> {
    Ok(match data {
        RData::MX(mx) => RecordConfig::Mx {
            owner,
            preference: mx.preference,
            exchange: mx.exchange.to_ascii(),
        },
        RData::A(a) => RecordConfig::A { owner, addr: a.0 },
        RData::AAAA(aaaa) => RecordConfig::Aaaa {
            owner,
            addr: aaaa.0,
        },
        RData::CNAME(cname) => RecordConfig::Cname {
            owner,
            target: cname.0.to_ascii(),
        },
        other => {
            return Err(InternetProcessError::UnsupportedRecord {
                owner,
                kind: other.record_type().to_string(),
            })
        }
    })
}

/// What the internet process says once, on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Readiness {
    /// Every socket is bound, the process is `nobody` and fenced, and it serves.
    Ready,
    /// It could not start, and why.
    Failed {
        /// The error, as text.
        reason: String,
    },
}

/// A lab's running internet, whichever backend serves it.
pub(crate) enum Running {
    Thread(NetnsThread),
    Process(InternetProcess),
}

impl Running {
    /// Stops it: everything it served is closed once this returns.
    pub(crate) fn stop(self) -> Result<(), InternetProcessError> {
        match self {
            Running::Thread(thread) => Ok(thread.stop()?),
            Running::Process(process) => process.stop(),
        }
    }
}

/// Starts `services` in the namespace at `netns` with `serving`; returns once every socket
/// is bound (and, for a process, once it has dropped its privileges). Only the thread
/// takes runtime requests ([`Control`]).
pub(crate) fn start(
    serving: &Serving,
    netns: &Path,
    services: Services,
) -> Result<(Running, Option<UnboundedSender<Control>>), InternetProcessError> {
    match serving {
        Serving::Thread => {
            let (thread, control) = internet::start(netns, services)?;
            Ok((Running::Thread(thread), Some(control)))
        }
        Serving::Process(program) => Ok((
            Running::Process(InternetProcess::start(program, netns, services)?),
            None,
        )),
    }
}

/// The parent's handle on the internet process; dropping it kills and reaps the process.
pub(crate) struct InternetProcess {
    child: Option<Child>,
    /// Held open while the process should serve: its end of file stops it.
    stdin: Option<ChildStdin>,
}

impl InternetProcess {
    /// Starts `program __serve-internet NETNS`, sends it the configuration of `services`
    /// and waits until it is ready (or fails, dies or says nothing in time).
    fn start(
        program: &Path,
        netns: &Path,
        services: Services,
    ) -> Result<InternetProcess, InternetProcessError> {
        let config = Config::of(&services)?;
        let mut body =
            serde_json::to_vec(&config).map_err(|e| InternetProcessError::InvalidConfig {
                detail: e.to_string(),
            })?;
        if body.len() as u64 > MAX_CONFIG_BYTES {
            return Err(InternetProcessError::TooLarge {
                size: body.len() as u64,
                max: MAX_CONFIG_BYTES,
            });
        }
        body.push(b'\n');
        let child = Command::new(program)
            .arg(INTERNET_SUBCOMMAND)
            .arg(netns)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a terminal's Ctrl-C reaches only the parent, which
            // tears the lab down in order.
            .process_group(0)
            .spawn()
            .map_err(|source| InternetProcessError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        // From here on, dropping `process` kills and reaps the child.
        let mut process = InternetProcess {
            child: Some(child),
            stdin: None,
        };
        let child = process.child.as_mut().expect("just set");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");

        // std has no timeouts on pipes: a short-lived thread sends the configuration (a
        // child that never reads it must not block us once the pipe is full) and reads the
        // readiness line. Killing the child on timeout closes both pipes, which ends it.
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("internet-ready".to_string())
            .spawn(move || {
                if let Err(e) = stdin.write_all(&body).and_then(|()| stdin.flush()) {
                    let _ = tx.send(Err(("sending the configuration", e)));
                    return;
                }
                let mut line = Vec::new();
                let read = BufReader::new(stdout.take(MAX_READY_BYTES))
                    .read_until(b'\n', &mut line)
                    .map(|_| (stdin, line))
                    .map_err(|e| ("reading its readiness", e));
                let _ = tx.send(read);
            })
            .map_err(|source| InternetProcessError::Io {
                context: "starting a thread to wait for readiness",
                source,
            })?;
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok((stdin, line))) => {
                process.stdin = Some(stdin);
                line
            }
            Ok(Err((context, source))) => {
                // A child that died early closes its pipes; its exit status says more.
                return Err(match process.exited_by(Duration::from_secs(1)) {
                    Some(status) => InternetProcessError::Died { status },
                    None => InternetProcessError::Io { context, source },
                });
            }
            Err(_) => return Err(InternetProcessError::NotReady(READY_TIMEOUT)),
        };
        if line.is_empty() {
            return Err(match process.exited_by(Duration::from_secs(1)) {
                Some(status) => InternetProcessError::Died { status },
                None => InternetProcessError::Malformed("it closed its stdout".to_string()),
            });
        }
        match serde_json::from_slice::<Readiness>(&line) {
            Ok(Readiness::Ready) => Ok(process),
            Ok(Readiness::Failed { reason }) => Err(InternetProcessError::Refused {
                // Its words, as text that cannot drive the terminal.
                reason: reason
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect(),
            }),
            Err(e) => Err(InternetProcessError::Malformed(e.to_string())),
        }
    }

    /// Waits up to `limit` for the child to end; its status if it did.
    fn exited_by(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if start.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// Closes its stdin (it stops on that end of file), waits up to [`STOP_TIMEOUT`], then
    /// kills it; reaped either way.
    fn stop(mut self) -> Result<(), InternetProcessError> {
        drop(self.stdin.take());
        if let Some(status) = self.exited_by(STOP_TIMEOUT) {
            return if status.success() {
                Ok(())
            } else {
                Err(InternetProcessError::Stopped {
                    status,
                    killed: false,
                })
            };
        }
        match self.kill_and_reap() {
            Some(status) => Err(InternetProcessError::Stopped {
                status,
                killed: true,
            }),
            None => Ok(()),
        }
    }

    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for InternetProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.kill_and_reap();
    }
}

/// Entry point of the internet process; returns its exit code. Must run before any other
/// thread exists: it changes identity.
pub fn internet_main(args: InternetArgs) -> i32 {
    let mut ready = false;
    let result = child(args, &mut ready);
    match result {
        Ok(()) => 0,
        Err(err) => {
            let reason = format!("{err:#}");
            if !ready {
                let message = serde_json::to_string(&Readiness::Failed {
                    reason: reason.clone(),
                })
                .unwrap_or_default();
                let _ = writeln!(io::stdout(), "{message}");
            }
            let _ = writeln!(io::stderr(), "egress-check internet: {reason}");
            2
        }
    }
}

fn child(args: InternetArgs, ready: &mut bool) -> anyhow::Result<()> {
    crate::worker::sanitize_inherited_state()?;
    let mut line = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_CONFIG_BYTES + 1)
        .read_until(b'\n', &mut line)
        .context("reading the configuration")?;
    if line.last() != Some(&b'\n') {
        bail!("the configuration is missing, cut short or larger than {MAX_CONFIG_BYTES} bytes");
    }
    line.pop();
    let services = Config::decode(&line)?.into_services()?;
    drop(line);

    // Single-threaded: setns moves the calling thread, here the whole process.
    let netns = File::open(&args.netns)
        .with_context(|| format!("opening network namespace {}", args.netns.display()))?;
    nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {}", args.netns.display()))?;
    drop(netns);
    // A current-thread runtime starts no thread: the identity drop below stays sound.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Its sender is kept for as long as the process serves: the serving future ends when
    // it is dropped. Nobody sends on it (no runtime requests cross to a process).
    let (_control, control_rx) = unbounded_channel();
    let serve = runtime
        .block_on(internet::setup(services, control_rx))
        .context("binding")?;
    // Watched for end of file once serving: dup'ed and made non-blocking now, while fcntl
    // and dup are still allowed, and registered with the runtime's reactor.
    let stdin = {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stdin")?;
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).context("F_GETFL")?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).context("F_SETFL")?;
        let _entered = runtime.enter();
        // SAFETY: the File owns the descriptor, which stays open and the same for as long
        // as the AsyncFd (which owns the File) lives.
        unsafe { AsyncFd::register(File::from(fd)) }
            .map_err(io::Error::from)
            .context("watching stdin")?
    };

    ensure_single_threaded()?;
    let account = identity::lookup(INTERNET_USER)?;
    identity::become_user(&account)?;
    crate::child::die_with_parent(args.parent)?;
    crate::fence::landlock(Role::Internet)?;
    crate::fence::seccomp(Role::Internet)?;

    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, &Readiness::Ready)?;
    out.write_all(b"\n")?;
    out.flush()?;
    drop(out);
    *ready = true;
    runtime.block_on(async {
        tokio::select! {
            () = serve => {}
            () = end_of_file(stdin) => {}
        }
    });
    Ok(())
}

/// The identity drop applies to the calling thread only unless glibc signals the others:
/// refuse to drop with more than one.
fn ensure_single_threaded() -> anyhow::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .context("reading /proc/self/task")?
        .count();
    if threads != 1 {
        bail!("{threads} threads before the identity drop, expected 1");
    }
    Ok(())
}

/// Returns once `stdin` reads end of file (the parent closed it or died) or fails.
async fn end_of_file(stdin: AsyncFd<File>) {
    let mut buf = [0u8; 256];
    loop {
        let Ok(mut guard) = stdin.readable().await else {
            return;
        };
        match guard.try_io(|fd| fd.get_ref().read(&mut buf)) {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // Nothing more is expected; whatever comes is ignored.
            Ok(Ok(_)) => {}
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services(zone: Zone) -> Services {
        Services {
            dns_listen: vec!["192.0.2.1:53".parse().unwrap()],
            zone: Arc::new(zone),
            layer: None,
            sinks: vec!["198.51.100.25".parse().unwrap()],
            mode: Mode::AnyPort,
            ports: [25, 587].into(),
            internet_namespace: true,
        }
    }

    fn roundtrip(services: &Services) -> Config {
        let config = Config::of(services).unwrap();
        let bytes = serde_json::to_vec(&config).unwrap();
        let decoded = Config::decode(&bytes).unwrap();
        assert_eq!(decoded, config);
        decoded
    }

    #[test]
    fn a_catch_all_zone_crosses_unchanged() {
        let zone = Zone::CatchAll {
            a: Some("198.51.100.25".parse().unwrap()),
            aaaa: None,
        };
        let config = roundtrip(&services(zone));
        let back = config.into_services().unwrap();
        assert!(matches!(
            *back.zone,
            Zone::CatchAll {
                a: Some(_),
                aaaa: None
            }
        ));
        assert_eq!(back.ports, [25, 587].into());
        assert_eq!(back.mode, Mode::AnyPort);
        assert!(back.internet_namespace);
    }

    #[test]
    fn records_cross_and_are_rebuilt() {
        let mut records = Records::new(["test"]).unwrap();
        records
            .mx("dual.test", 10, "mx1.dual.test")
            .unwrap()
            .null_mx("null.test")
            .unwrap()
            .a("mx1.dual.test", "203.0.113.10".parse().unwrap())
            .unwrap()
            .aaaa("mx1.dual.test", "2001:db8:200::10".parse().unwrap())
            .unwrap()
            .cname("alias.test", "mx1.dual.test")
            .unwrap();
        let config = roundtrip(&services(records.into()));
        let ZoneConfig::Records { records, .. } = &config.zone else {
            panic!("{config:?}")
        };
        assert_eq!(records.len(), 5, "{records:?}");
        let back = Config::of(&config.clone().into_services().unwrap()).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn a_layer_cannot_cross() {
        struct Layer;
        impl super::super::DnsLayer for Layer {
            fn decide(
                &self,
                _: &str,
                _: hickory_server::proto::rr::RecordType,
            ) -> super::super::DnsAction {
                super::super::DnsAction::Answer
            }
        }
        let mut s = services(Zone::CatchAll {
            a: None,
            aaaa: None,
        });
        s.layer = Some(Arc::new(Layer));
        assert!(matches!(
            Config::of(&s),
            Err(InternetProcessError::LayerNotSendable)
        ));
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        let too_big = vec![b' '; MAX_CONFIG_BYTES as usize + 1];
        assert!(matches!(
            Config::decode(&too_big),
            Err(InternetProcessError::TooLarge { .. })
        ));
        for bad in [
            &b"{"[..],
            b"\x00\xff",
            br#"{"dns_listen":[],"zone":{"catch-all":{"a":null,"aaaa":null}},"sinks":[],"mode":"listed","ports":[25],"internet_namespace":true,"extra":1}"#,
            br#"{"dns_listen":[],"zone":{"catch-all":{"a":null,"aaaa":null}},"sinks":[],"mode":"listed","ports":[0],"internet_namespace":true}"#,
            br#"{"dns_listen":["127.0.0.53:0"],"zone":{"catch-all":{"a":null,"aaaa":null}},"sinks":[],"mode":"listed","ports":[],"internet_namespace":false}"#,
            br#"{"dns_listen":[],"zone":{"catch-all":{"a":null,"aaaa":null}},"sinks":[],"mode":"every-port","ports":[],"internet_namespace":true}"#,
        ] {
            assert!(
                matches!(
                    Config::decode(bad),
                    Err(InternetProcessError::InvalidConfig { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Records are checked again on the way in.
        let outside = Config {
            dns_listen: vec![],
            zone: ZoneConfig::Records {
                origins: vec!["test".into()],
                records: vec![RecordConfig::A {
                    owner: "elsewhere.example".into(),
                    addr: Ipv4Addr::LOCALHOST,
                }],
            },
            sinks: vec![],
            mode: Mode::Listed,
            ports: BTreeSet::new(),
            internet_namespace: true,
        };
        assert!(matches!(
            outside.into_services(),
            Err(InternetProcessError::Zone(_))
        ));
    }

    #[test]
    fn readiness_is_strict() {
        assert_eq!(
            serde_json::from_str::<Readiness>("\"ready\"").unwrap(),
            Readiness::Ready
        );
        assert!(serde_json::from_str::<Readiness>("\"maybe\"").is_err());
    }
}
