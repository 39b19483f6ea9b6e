//! Name resolution out of root: the root parent parses no byte from the network.
//!
//! The parent re-executes itself (`egress-check __resolve-as USER`, by default `nobody`) in
//! the namespace the names must be resolved from: a child inherits the network namespace
//! of the thread that forks it, so a `pid:`/`unit:` identity's resolver is started from the
//! thread that entered that identity's namespace ([`crate::runner::vantage`]). The child
//! drops to the user exactly as a worker does ([`crate::identity::become_user`]), reads the
//! request on stdin and its resolv.conf, fences itself ([`crate::fence`], role
//! [`Role::Resolver`]) and only then opens sockets and asks the nameservers. It answers one
//! JSON document on stdout in [`wire`] types.
//!
//! The parent treats that answer like any other input: at most [`MAX_ANSWER_BYTES`],
//! strictly decoded, every list and string bounded, every answer matched to a name it asked
//! for. A resolver that dies, hangs past [`RESOLVER_LIMIT`], sends garbage or too much
//! leaves every name it owed failed with the reason: inconclusive probes, never a crash or
//! a pass.

pub mod wire;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;

use crate::fence::Role;
use crate::identity;
use crate::plan::NameserverSource;
use crate::resolve::{self, Addresses, DnsFailure, FailureKind, Resolution, Resolutions};
use crate::scenario::TargetKind;

/// The hidden subcommand that starts the resolver process.
pub const RESOLVER_SUBCOMMAND: &str = "__resolve-as";

/// Who resolves unless `--resolve-as` says otherwise.
pub const DEFAULT_RESOLVER_USER: &str = "nobody";

/// Largest answer the parent reads: far above any honest answer (a name's exchanges and
/// addresses are a few hundred bytes), far below what could hurt.
pub const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

/// Most of the resolver's stderr (its `-v` log, or why it failed) the parent reads.
const MAX_LOG_BYTES: u64 = 1024 * 1024;

/// Largest request the resolver reads.
const MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;

/// How long the parent waits for the resolver process. Each query is bounded by the
/// resolver itself (seconds), and an MX target needs two rounds; a process still silent
/// after this is hung.
pub const RESOLVER_LIMIT: Duration = Duration::from_secs(30);

/// Arguments of the hidden resolver subcommand.
#[derive(clap::Args, Debug)]
pub struct ResolverArgs {
    /// The user to become.
    pub user: String,
    /// Pid of the parent; the resolver refuses to run once that parent is gone.
    #[arg(long)]
    pub parent: Option<i32>,
    /// Print the identity the resolver ended up with and its fence (JSON, as the worker's
    /// `--diagnose`) instead of resolving: what the privilege tests check.
    #[arg(long)]
    pub diagnose: bool,
    /// The hosts file to read instead of /etc/hosts (the parent's choice,
    /// [`resolve::hosts_path`]: `--netns NAME` with an `/etc/netns/NAME/hosts`).
    #[arg(long, value_name = "PATH")]
    pub hosts_file: Option<std::path::PathBuf>,
    /// Hidden test hook: misbehave on purpose once fenced.
    #[arg(long, hide = true, value_enum)]
    pub test_fault: Option<ResolverFault>,
}

/// Ways the resolver misbehaves on purpose (hidden test hook, reachable only through a
/// hidden command-line option of the parent, never a scenario file or the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResolverFault {
    /// Exits with a failure before answering.
    Die,
    /// Never answers.
    Hang,
    /// Answers bytes that are not an answer.
    Garbage,
    /// Answers more than [`MAX_ANSWER_BYTES`].
    Oversized,
    /// Makes a system call outside its allowlist.
    ForbiddenCall,
}

/// Entry point of the resolver process; returns its exit code.
pub fn resolver_main(args: ResolverArgs) -> i32 {
    match child(args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("egress-check resolver: {err:#}");
            2
        }
    }
}

fn child(args: ResolverArgs) -> anyhow::Result<()> {
    crate::worker::sanitize_inherited_state()?;
    let account = identity::lookup(&args.user)?;
    identity::become_user(&account)?;
    crate::child::die_with_parent(args.parent)?;
    if args.diagnose {
        return crate::worker::diagnose(Role::Resolver);
    }
    if let Some(path) = args.hosts_file {
        resolve::use_hosts_file(path);
    }
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_REQUEST_BYTES)
        .read_to_end(&mut input)
        .context("reading the request")?;
    let request: wire::Request = serde_json::from_slice(&input).context("decoding the request")?;
    drop(input);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Reads resolv.conf (the system's) while files can still be opened.
    let prepared = resolve::prepare_groups(request.groups());
    crate::fence::landlock(Role::Resolver)?;
    crate::fence::seccomp(Role::Resolver)?;

    let mut out = std::io::stdout().lock();
    match args.test_fault {
        Some(ResolverFault::Die) => bail!("test fault: dying before answering"),
        Some(ResolverFault::Hang) => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Some(ResolverFault::Garbage) => {
            out.write_all(b"{\"answers\": [{\"source\": 0, \"name\": \x00\xff garbage")?;
            return Ok(());
        }
        Some(ResolverFault::Oversized) => {
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..(MAX_ANSWER_BYTES / chunk.len() as u64 + 2) {
                if out.write_all(&chunk).is_err() {
                    break;
                }
            }
            return Ok(());
        }
        Some(ResolverFault::ForbiddenCall) => {
            crate::fence::commit_fault(crate::fence::TestFault::ForbiddenCall)
        }
        None => {}
    }
    let resolutions = runtime.block_on(resolve::resolve_prepared(prepared));
    serde_json::to_writer(&mut out, &wire::Answer::new(&request, &resolutions))?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// The parent's hidden test hook, set once from its command line before any resolver starts.
static TEST_FAULT: std::sync::OnceLock<ResolverFault> = std::sync::OnceLock::new();

/// Makes every resolver process of this run misbehave (hidden test hook).
pub fn set_test_fault(fault: ResolverFault) {
    let _ = TEST_FAULT.set(fault);
}

/// Who resolves in this run, set once from `--resolve-as` before the run.
static RESOLVE_AS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets who resolves (`--resolve-as`).
pub fn set_resolve_as(user: String) {
    let _ = RESOLVE_AS.set(user);
}

/// Who the resolver process runs as: `--resolve-as`, else `nobody` when this process may
/// switch users, else this process's own user (an unprivileged run probing as itself).
pub fn resolver_user() -> String {
    if let Some(user) = RESOLVE_AS.get() {
        return user.clone();
    }
    match identity::lookup(DEFAULT_RESOLVER_USER) {
        Ok(nobody) if identity::ensure_can_become(&nobody).is_ok() => {
            DEFAULT_RESOLVER_USER.to_string()
        }
        _ => identity::current_user_name(),
    }
}

/// Why the resolver process gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ResolverProcessError {
    /// It could not be started.
    #[error("cannot start the resolver process as `{user}`: {source}")]
    Spawn {
        /// Its user.
        user: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It did not finish in time.
    #[error("the resolver process (as `{user}`) did not answer within {}", humantime::format_duration(*limit))]
    Hung {
        /// Its user.
        user: String,
        /// How long it was given.
        limit: Duration,
    },
    /// Its answer was larger than allowed.
    #[error("the resolver process (as `{user}`) answered more than {max} bytes")]
    Oversized {
        /// Its user.
        user: String,
        /// The bound.
        max: u64,
    },
    /// Its fence killed it.
    #[error("the resolver process (as `{user}`) was killed by its seccomp filter (SIGSYS)")]
    Fenced {
        /// Its user.
        user: String,
    },
    /// It failed.
    #[error("the resolver process (as `{user}`) failed ({status}){}", if diagnostics.is_empty() { String::new() } else { format!(": {diagnostics}") })]
    Failed {
        /// Its user.
        user: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its stderr, trimmed.
        diagnostics: String,
    },
    /// Its answer does not decode or does not match the request.
    #[error("the resolver process (as `{user}`) sent a malformed answer: {problem}")]
    Malformed {
        /// Its user.
        user: String,
        /// What is wrong.
        problem: wire::WireError,
    },
    /// Reading or waiting failed.
    #[error("talking to the resolver process (as `{user}`): {source}")]
    Io {
        /// Its user.
        user: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Resolves `groups` as [`resolve::resolve_groups`] does, but in a resolver process started
/// from the calling thread's network namespace. Literal addresses are answered here (no
/// DNS). Whatever goes wrong fails the names, with the reason.
pub async fn resolve_groups(groups: Vec<(NameserverSource, Vec<TargetKind>)>) -> Resolutions {
    let mut out: Resolutions = HashMap::new();
    let mut names: Vec<(NameserverSource, Vec<TargetKind>)> = Vec::new();
    for (source, kinds) in groups {
        let (literal, named): (Vec<TargetKind>, Vec<TargetKind>) = kinds
            .into_iter()
            .partition(|k| matches!(k, TargetKind::Addresses(_)));
        for kind in literal {
            let resolution = resolve::without_resolver(&kind, "no resolver");
            out.insert((source.clone(), kind), resolution);
        }
        if !named.is_empty() {
            names.push((source, named));
        }
    }
    if names.is_empty() {
        return out;
    }
    let user = resolver_user();
    match ask(&user, &names).await {
        Ok(mut answers) => {
            if RESOLVE_AS.get().is_some() {
                for resolution in answers.values_mut() {
                    name_the_identity(resolution, &user);
                }
            }
            out.extend(answers)
        }
        Err(error) => {
            let why = error.to_string();
            for (source, kinds) in names {
                for kind in kinds {
                    let resolution = resolve::without_resolver(&kind, &why);
                    out.insert((source.clone(), kind), resolution);
                }
            }
        }
    }
    out
}

/// With `--resolve-as`, a lookup that got no answer may be the firewall blocking DNS for
/// that user: its reason says who asked. (An NXDOMAIN, SERVFAIL or REFUSED is a server's
/// answer, so the query was not blocked: those stay as they are.)
fn name_the_identity(resolution: &mut Resolution, user: &str) {
    let rename = |failure: &mut DnsFailure| {
        let reason = match &failure.kind {
            FailureKind::Timeout => format!(
                "timed out {}resolving as `{user}` (nameserver unreachable or too slow, or DNS \
                 blocked for `{user}` by the firewall)",
                failure
                    .nameserver
                    .as_ref()
                    .map_or_else(String::new, |ns| format!("waiting for {ns} "))
            ),
            FailureKind::BlockedByHost { server, error } => format!(
                "DNS query to {server} blocked by this host's firewall ({error}) (resolving as \
                 `{user}`)"
            ),
            FailureKind::NoAnswer { servers } => {
                format!("no answer from {servers} (resolving as `{user}`)")
            }
            FailureKind::Other(text) => format!("{text} (resolving as `{user}`)"),
            _ => return,
        };
        failure.kind = FailureKind::Other(reason);
    };
    match resolution {
        Resolution::Failed(failure) => rename(failure),
        Resolution::Exchanges { exchanges, .. } => {
            for exchange in exchanges {
                for addresses in [&mut exchange.ipv4, &mut exchange.ipv6] {
                    if let Addresses::Failed(failure) = addresses {
                        rename(failure);
                    }
                }
            }
        }
        Resolution::NullMx | Resolution::Literals(_) => {}
    }
}

async fn ask(
    user: &str,
    groups: &[(NameserverSource, Vec<TargetKind>)],
) -> Result<Resolutions, ResolverProcessError> {
    let request = wire::Request::new(groups);
    let io = |source| ResolverProcessError::Io {
        user: user.to_string(),
        source,
    };
    let mut command = tokio::process::Command::new("/proc/self/exe");
    command.arg(RESOLVER_SUBCOMMAND).arg(user);
    let hosts = resolve::hosts_path();
    if hosts != std::path::Path::new(resolve::HOSTS_FILE) {
        command.arg("--hosts-file").arg(hosts);
    }
    // The parent's verbosity, so that `-v` still shows the resolver's answers.
    let level = tracing::level_filters::LevelFilter::current();
    if level >= tracing::level_filters::LevelFilter::TRACE {
        command.arg("-vv");
    } else if level >= tracing::level_filters::LevelFilter::DEBUG {
        command.arg("-v");
    } else if level <= tracing::level_filters::LevelFilter::ERROR {
        command.arg("-q");
    }
    let mut child = crate::child::spawn(&mut command, TEST_FAULT.get()).map_err(|source| {
        ResolverProcessError::Spawn {
            user: user.to_string(),
            source,
        }
    })?;
    let body = serde_json::to_vec(&request).expect("a request always encodes");
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let feed = crate::child::feed(stdin, body);
    let collect = async {
        let mut answer = Vec::new();
        stdout
            .take(MAX_ANSWER_BYTES + 1)
            .read_to_end(&mut answer)
            .await
            .map(|_| answer)
    };
    let diagnostics = crate::child::diagnostics(&mut stderr, MAX_LOG_BYTES);
    let everything = async {
        let ((), answer, diagnostics) = tokio::join!(feed, collect, diagnostics);
        (answer, diagnostics)
    };
    let Ok((answer, diagnostics)) = tokio::time::timeout(RESOLVER_LIMIT, everything).await else {
        // Dropping the child kills it.
        return Err(ResolverProcessError::Hung {
            user: user.to_string(),
            limit: RESOLVER_LIMIT,
        });
    };
    let answer = answer.map_err(io)?;
    if answer.len() as u64 > MAX_ANSWER_BYTES {
        return Err(ResolverProcessError::Oversized {
            user: user.to_string(),
            max: MAX_ANSWER_BYTES,
        });
    }
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .map_err(|_| ResolverProcessError::Hung {
            user: user.to_string(),
            limit: RESOLVER_LIMIT,
        })?
        .map_err(io)?;
    if crate::child::fenced(&status) {
        return Err(ResolverProcessError::Fenced {
            user: user.to_string(),
        });
    }
    if !status.success() {
        return Err(ResolverProcessError::Failed {
            user: user.to_string(),
            status,
            diagnostics: diagnostics.trim().to_string(),
        });
    }
    // Its log (with -v), forwarded as text it cannot use to drive the terminal.
    let log: String = diagnostics
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect();
    eprint!("{log}");
    request
        .accept(&answer)
        .map_err(|problem| ResolverProcessError::Malformed {
            user: user.to_string(),
            problem,
        })
}
