//! The one path every probing mode shares, from a plan to an exit code, and the process-wide
//! settings of the command (logging, colour, the runtime): what `main.rs` calls once it has
//! parsed the command line and chosen a mode. Kept out of `main.rs` so that main only parses,
//! dispatches and maps errors to exit codes.

use std::io::IsTerminal;
use std::net::SocketAddr;

use anyhow::Context;

use crate::address::HostInterfaces;
use crate::cli::{CommonArgs, DisplayOptions, Format, ProbeOptions, SandboxArgs};
use crate::explain::Explain;
use crate::output::{self, PreparedOutputs};
use crate::plan::{self, Assignment, NameserverChoice};
use crate::report;
use crate::run_info::RunInfo;
use crate::runner::{self, RunSettings};
use crate::sandbox::{self, RuleSource, SandboxOptions};
use crate::scenario::{Scenario, TargetKind};
use crate::{dns_process, exit_codes, explain, identity, netns, resolve, verdict, worker};

/// Diagnostics go to stderr through `tracing`, never into stdout's reports: `-q` keeps
/// errors only, the default warnings, `-v` adds this crate's debug events (resolver
/// answers, workers, probe timings), `-vv` its trace events and the libraries' (hickory's)
/// debug events.
pub fn init_logging(display: &DisplayOptions) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let (own, others) = match (display.quiet, display.verbose) {
        (true, _) => (LevelFilter::ERROR, LevelFilter::ERROR),
        (false, 0) => (LevelFilter::WARN, LevelFilter::WARN),
        (false, 1) => (LevelFilter::DEBUG, LevelFilter::WARN),
        (false, _) => (LevelFilter::TRACE, LevelFilter::DEBUG),
    };
    let filter = Targets::new()
        .with_default(others)
        .with_target("egress_check", own);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(use_color(&std::io::stderr()))
        .without_time()
        .with_target(false);
    // Only fails when a subscriber is already set, which nothing else here does.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// What a run has settled before anything is sent.
pub struct Prepared {
    /// The plan, every user looked up and becomable.
    pub assignments: Vec<Assignment>,
    /// The `--output` files, their directories checked writable.
    pub outputs: PreparedOutputs,
}

/// Before anything is sent: the plan (every user looked up), the privileges to become
/// them, the `--output` files' directories, and descriptors for the workers.
/// `alternative` says what would work without privileges, for the message when they are
/// missing (`None`: nothing would).
pub fn prepare(
    scenarios: &[Scenario],
    only_user: Option<&str>,
    options: &ProbeOptions,
    alternative: impl FnOnce() -> Option<String>,
) -> anyhow::Result<Prepared> {
    let assignments = plan::assignments(scenarios, only_user, options.timeout)?;
    plan::ensure_privileges(&assignments).map_err(|e| e.with_alternative(alternative()))?;
    let outputs = PreparedOutputs::prepare(&options.output, options.format)?;
    worker::raise_fd_limit();
    if let Some(fault) = options.test_worker_fault {
        worker::set_test_fault(fault);
    }
    if let Some(fault) = options.test_resolver_fault {
        dns_process::set_test_fault(fault);
    }
    choose_resolver(options.resolve_as.as_deref())?;
    Ok(Prepared {
        assignments,
        outputs,
    })
}

/// `--resolve-as USER` (`run`, the ad hoc form, `sandbox`, `resolve`): checked like every
/// identity of a plan (known, and becomable by this process) before anything is resolved.
pub fn choose_resolver(resolve_as: Option<&str>) -> anyhow::Result<()> {
    if let Some(user) = resolve_as {
        let account = identity::lookup(user)?;
        identity::ensure_can_become(&account)?;
        dns_process::set_resolve_as(account.name);
    }
    Ok(())
}

/// `run` and the ad hoc form, after [`prepare`]: enter the host (`--netns`), check
/// `--explain` there, then [`probe_and_report`].
pub fn from_host(
    prepared: Prepared,
    common: &CommonArgs,
    display: &DisplayOptions,
) -> anyhow::Result<u8> {
    let nameservers = enter_host(common)?;
    let explain = explain_requested(common)?;
    probe_and_report(
        prepared,
        nameservers,
        &common.probe,
        display,
        explain,
        Vec::new(),
    )
}

/// Enters `--netns` if given; returns how nameservers are chosen there.
fn enter_host(common: &CommonArgs) -> anyhow::Result<NameserverChoice> {
    let netns_resolv_conf = match &common.host.netns {
        Some(name) => enter_netns(name)?,
        None => None,
    };
    Ok(NameserverChoice {
        server: common.host.nameserver,
        netns_resolv_conf,
    })
}

/// Enters the named namespace as `ip netns exec NAME` would set a program up there: its
/// `/etc/netns/NAME/resolv.conf` (returned) and `/etc/netns/NAME/hosts` (the resolver's
/// hosts file from now on) replace the system's where they exist.
pub fn enter_netns(name: &str) -> anyhow::Result<Option<String>> {
    let resolv_conf = netns::enter(name)?;
    if let Some(hosts) = netns::hosts_file(name) {
        resolve::use_hosts_file(hosts);
    }
    Ok(resolv_conf)
}

/// `--explain`, checked in the namespace that will be probed: exit 2 before anything is
/// probed when tracing cannot work there.
fn explain_requested(common: &CommonArgs) -> anyhow::Result<Explain> {
    if common.explain {
        explain::preflight()?;
        Ok(Explain::On)
    } else {
        Ok(Explain::Off)
    }
}

/// The path every probing mode shares from a plan to an exit code: resolve and probe
/// ([`runner`]), judge ([`verdict`]), print ([`report`]) and write the `--output` files
/// ([`output`]).
pub fn probe_and_report(
    prepared: Prepared,
    nameservers: NameserverChoice,
    options: &ProbeOptions,
    display: &DisplayOptions,
    explain: Explain,
    watch: Vec<runner::kernel::Watched>,
) -> anyhow::Result<u8> {
    let Prepared {
        assignments,
        outputs,
    } = prepared;
    let assignments = &assignments[..];
    // "This host" is the namespace the probes run in, entered by now; literal addresses are
    // checked against it before anything is sent.
    let host = HostInterfaces::current()?;
    plan::check_literals(assignments, &host)?;
    let lookups = plan::lookups(assignments, &nameservers);
    let mut run = RunInfo::begin(lookups.iter().map(|(source, _)| source));
    let resolves_names = assignments
        .iter()
        .any(|a| !matches!(a.target.kind, TargetKind::Addresses(_)));
    if resolves_names {
        run.resolved_as = Some(dns_process::resolver_user());
    }
    let settings = RunSettings {
        nameservers,
        deadline: options.deadline,
        host,
        explain,
        watch,
    };
    let executed = runtime()?.block_on(runner::execute(assignments, &settings));
    let mut judgement = verdict::judge_run(
        executed.probes,
        executed.attempts,
        executed.interruption.map(|i| i.describe()),
    );
    if let Some(reason) = &executed.kernel_limited {
        judgement.mark_kernel_limited(reason);
    }
    if let Some(explanations) = executed.explanations {
        judgement.attach_explanations(explanations);
    }
    judgement.identities = plan::services(assignments);
    run.limits = executed.limits;
    judgement.run = Some(run.finish());
    let signal_code = executed.interruption.and_then(|i| i.exit_code());
    if signal_code.is_some() {
        // Interrupted: what finished goes to stderr for the person at the terminal; a
        // machine-readable format still gets its (partial, marked) document on stdout.
        eprint!(
            "{}",
            report::to_human(&judgement, use_color(&std::io::stderr()))
        );
    }
    let format = match options.format {
        Format::Json if options.compact => Format::JsonCompact,
        format => format,
    };
    match format {
        Format::Human if signal_code.is_some() => {}
        Format::Human if display.quiet => print!(
            "{}",
            report::to_human_quiet(&judgement, use_color(&std::io::stdout()))
        ),
        format => print!(
            "{}",
            output::render(&judgement, format, use_color(&std::io::stdout()))
        ),
    }
    match signal_code {
        // Interrupted: the previous reports stay; the outputs are dropped unwritten.
        Some(code) => Ok(code),
        None => {
            // A report that cannot be written is exit 2: a timer's reader must not keep
            // reading a stale file while the run looked fine.
            outputs.commit(&judgement)?;
            Ok(judgement.exit_code())
        }
    }
}

/// One thread: the parent only waits on DNS and workers, and a single thread keeps the
/// network namespace entered at start valid for everything it does.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Whether the human report on `stream` is coloured: `--color`, and for `auto` what
/// anstream's own choice weighs (NO_COLOR, then CLICOLOR_FORCE, CLICOLOR=0, a terminal
/// whose TERM supports colour), except that `CI` does not override `TERM=dumb`: a dumb
/// terminal gets no escapes, wherever it runs.
pub fn use_color(stream: &impl IsTerminal) -> bool {
    use anstream::ColorChoice;
    match ColorChoice::global() {
        ColorChoice::Always | ColorChoice::AlwaysAnsi => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            let clicolor = anstyle_query::clicolor();
            if anstyle_query::no_color() {
                false
            } else if anstyle_query::clicolor_force() {
                true
            } else if clicolor == Some(false) {
                false
            } else {
                stream.is_terminal()
                    && (anstyle_query::term_supports_color() || clicolor == Some(true))
            }
        }
    }
}

/// The nameservers a sandboxed run of `assignments` will ask, so that the simulated
/// internet answers each where it is asked: `--nameserver`, else each scenario's
/// `nameserver`, and `/etc/resolv.conf`'s for the scenarios without one (the sandbox host
/// shares this host's files, so its resolver reads the same resolv.conf).
pub fn sandbox_nameservers(
    explicit: Option<SocketAddr>,
    assignments: &[Assignment],
) -> Vec<SocketAddr> {
    if let Some(server) = explicit {
        return vec![server];
    }
    let mut servers = Vec::new();
    let mut system = false;
    for a in assignments {
        if matches!(a.target.kind, TargetKind::Addresses(_)) {
            continue; // nothing to resolve
        }
        match a.nameserver {
            Some(server) if !servers.contains(&server) => servers.push(server),
            Some(_) => {}
            None => system = true,
        }
    }
    if system {
        for server in crate::resolve::system_nameservers() {
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
    }
    servers
}

/// The sandbox the scenarios of `args` need: every port their targets use, the rules given,
/// the host's interface name and addresses, and every nameserver the run will ask.
pub fn sandbox_options(args: &SandboxArgs, assignments: &[Assignment]) -> SandboxOptions {
    let mut rules = Vec::new();
    rules.extend(args.iptables.iter().cloned().map(RuleSource::Iptables));
    rules.extend(args.ip6tables.iter().cloned().map(RuleSource::Ip6tables));
    rules.extend(args.nft.iter().cloned().map(RuleSource::Nft));
    rules.extend(args.setup.iter().cloned().map(RuleSource::Setup));
    SandboxOptions {
        ports: assignments
            .iter()
            .flat_map(|a| a.target.ports.iter().copied())
            .collect(),
        answer_a: !args.no_a,
        answer_aaaa: !args.no_aaaa,
        rules,
        uplink: Some(args.uplink.clone()),
        host_addrs: args.host_addr.iter().fold(Vec::new(), |mut unique, addr| {
            if !unique.contains(addr) {
                unique.push(*addr);
            }
            unique
        }),
        nameservers: sandbox_nameservers(args.nameserver, assignments),
    }
}

/// Whether the sandbox explains, checked inside it: on by default (a sandbox is root's
/// throwaway namespace, so tracing is possible unless the kernel lacks nf_tables; then say
/// so and go on), up to [`explain::DEFAULT_MAX_PROBES`] probes (beyond, tracing loses
/// events and costs more than the run); `--explain` insists, `--no-explain` declines.
pub fn sandbox_explain(args: &SandboxArgs) -> anyhow::Result<Explain> {
    if args.no_explain {
        return Ok(Explain::Off);
    }
    Ok(match explain::preflight() {
        Ok(()) if args.explain => Explain::On,
        Ok(()) => Explain::UpTo(explain::DEFAULT_MAX_PROBES),
        Err(err) if args.explain => return Err(err.into()),
        Err(err) => {
            eprintln!("egress-check: warning: running without explanations: {err}");
            Explain::Off
        }
    })
}

/// Builds a sandbox, runs `body` inside its host namespace with the internet's namespace
/// (whose kernel counters the run watches: [`runner::kernel`]), and tears the sandbox down
/// whatever happened.
///
/// From the start a SIGINT/SIGTERM must not kill the process before the namespaces are gone:
/// a flag defers it while the sandbox is being built (a signal then ends the run with its
/// exit code, nothing probed); during `body` the runner handles it.
pub fn in_sandbox(
    options: &SandboxOptions,
    body: impl FnOnce(Vec<runner::kernel::Watched>) -> anyhow::Result<u8>,
) -> anyhow::Result<u8> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let signalled = Arc::new(AtomicUsize::new(0));
    for (signal, code) in [
        (signal_hook::consts::SIGINT, exit_codes::SIGINT),
        (signal_hook::consts::SIGTERM, exit_codes::SIGTERM),
    ] {
        signal_hook::flag::register_usize(signal, Arc::clone(&signalled), code.into())
            .context("installing signal handlers")?;
    }
    let home = std::fs::File::open("/proc/self/ns/net").context("opening /proc/self/ns/net")?;
    let sandbox = sandbox::create(options)?;
    let early = signalled.load(Ordering::SeqCst);
    let code = if early != 0 {
        eprintln!("egress-check: interrupted while building the sandbox; nothing was probed");
        Ok(u8::try_from(early).unwrap_or(exit_codes::SIGINT))
    } else {
        netns::enter_path(sandbox.host_netns_path())
            .with_context(|| {
                format!(
                    "entering the sandbox namespace {}",
                    sandbox.host_netns_name()
                )
            })
            .and_then(|()| {
                let internet = runner::kernel::Watched::at(
                    "sandbox's internet namespace",
                    sandbox.internet_netns_path(),
                    true,
                )
                .with_context(|| {
                    format!(
                        "opening the sandbox's internet namespace {}",
                        sandbox.internet_netns_name()
                    )
                })?;
                body(vec![internet])
            })
    };
    // Back home before tearing down, so that nothing of ours keeps the sandbox alive.
    let _ = nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET);
    sandbox.teardown()?;
    code
}
