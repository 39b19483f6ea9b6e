//! The `egress-check` command: parse the command line, dispatch to one function per mode,
//! map errors to exit codes ([`egress_check::exit_codes`]). Everything else lives in the
//! library; see its map in `lib.rs`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;

use egress_check::address::HostInterfaces;
use egress_check::cli::{
    self, AdHocArgs, Cli, Command, CommonArgs, DisplayOptions, Format, ProbeOptions, ResolveArgs,
    ResolveFormat, RunArgs, SandboxArgs,
};
use egress_check::output::{self, PreparedOutputs};
use egress_check::plan::{self, Assignment, NameserverChoice};
use egress_check::report::{self, ResolveReport};
use egress_check::resolve;
use egress_check::run_info::RunInfo;
use egress_check::runner::{self, RunSettings};
use egress_check::scenario::{self, AdHocTargets, Scenario, TargetKind};
use egress_check::{
    dns_process, exit_codes, explain, identity, lab, netns, sandbox, source, verdict, vocab, worker,
};

fn main() -> ExitCode {
    let cli = cli::parse(std::env::args_os()).unwrap_or_else(|err| err.exit());
    anstream::ColorChoice::write_global(cli.display.color.choice());
    // The worker must start before any runtime or thread exists: it changes identity.
    if let Some(Command::ProbeAs(args)) = cli.command {
        return ExitCode::from(worker::worker_main(args) as u8);
    }
    init_logging(&cli.display);
    // The resolver process too: it drops to its user before any thread exists. Its log
    // (the parent passes its -v/-q on) goes to its stderr, which the parent forwards.
    if let Some(Command::ResolveAs(args)) = cli.command {
        return ExitCode::from(dns_process::resolver_main(args) as u8);
    }
    // The one place errors become exit codes: anything that stops a mode before it has a
    // report is a usage, scenario or privilege error, and nothing was probed.
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("egress-check: {err:#}");
            ExitCode::from(exit_codes::USAGE)
        }
    }
}

/// Diagnostics go to stderr through `tracing`, never into stdout's reports: `-q` keeps
/// errors only, the default warnings, `-v` adds this crate's debug events (resolver
/// answers, workers, probe timings), `-vv` its trace events and the libraries' (hickory's)
/// debug events.
fn init_logging(display: &DisplayOptions) {
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

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let display = &cli.display;
    match cli.command {
        Some(Command::Run(args)) => run(args, display),
        Some(Command::Resolve(args)) => resolve_names(args),
        Some(Command::Sandbox(args)) => sandbox(args, display),
        None => ad_hoc(cli.ad_hoc, display),
        Some(Command::ProbeAs(_)) | Some(Command::ResolveAs(_)) => {
            unreachable!("handled in main")
        }
    }
}

/// `egress-check run FILE...`: the scenarios' checks, from this host (or `--netns`).
fn run(args: RunArgs, display: &DisplayOptions) -> anyhow::Result<u8> {
    let scenarios = source::load_all(&args.files)?;
    // Without privileges, `--as yourself` only helps when the scenarios check you.
    let own_checks = || {
        let me = identity::current_user_name();
        plan::assignments(&scenarios, Some(&me), None)
            .is_ok()
            .then(|| format!("run only your own checks with `--as {me}`"))
    };
    let prepared = prepare(
        &scenarios,
        args.user.as_deref(),
        &args.common.probe,
        own_checks,
    )?;
    let nameservers = enter_host(&args.common)?;
    let explain = explain_requested(&args.common)?;
    probe_and_report(prepared, nameservers, &args.common.probe, display, explain)
}

/// `egress-check --as USER [targets]`: one user, the command line's targets (or the
/// built-in scenario), from this host.
fn ad_hoc(args: AdHocArgs, display: &DisplayOptions) -> anyhow::Result<u8> {
    let Some(user) = args.user else {
        anyhow::bail!(
            "nothing to do: give a subcommand (`run FILE`, `resolve DOMAIN`) or \
             `--as USER` for an ad hoc check; see `egress-check --help`"
        );
    };
    let targets = AdHocTargets {
        mx: args.mx,
        hosts: args.host,
        addresses: args.addr,
        ports: args.port,
        local: args.local,
    };
    let scenario = if targets.is_empty() {
        scenario::default_scenario_for(&user)?
    } else {
        targets.into_scenario(&user, args.expect)?
    };
    // An ad hoc check can always probe as the user running it.
    let as_yourself = || {
        Some(format!(
            "probe as yourself with `--as {}`",
            identity::current_user_name()
        ))
    };
    let prepared = prepare(
        std::slice::from_ref(&scenario),
        None,
        &args.common.probe,
        as_yourself,
    )?;
    let nameservers = enter_host(&args.common)?;
    let explain = explain_requested(&args.common)?;
    probe_and_report(prepared, nameservers, &args.common.probe, display, explain)
}

/// `egress-check sandbox SCENARIO...`: the scenarios run unchanged inside a throwaway host
/// namespace, behind the given rules, whose simulated internet answers every name.
fn sandbox(args: SandboxArgs, display: &DisplayOptions) -> anyhow::Result<u8> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    // Before anything else: whatever the scenario says, a sandbox without root is nothing.
    lab::preflight()?;
    let scenarios = source::load_all(&args.files)?;
    let prepared = prepare(&scenarios, args.user.as_deref(), &args.probe, || None)?;
    let assignments = &prepared.assignments;
    // A process's worker enters that process's namespace: its probes would leave the
    // sandbox for the real network.
    if let Some(service) = assignments.iter().find_map(|a| a.service.as_ref()) {
        anyhow::bail!(
            "`{}`: the sandbox runs checks as users only; a process or unit stands in its own \
             network namespace, outside the sandbox (use `run --as {}` on the host instead)",
            service.key,
            service.key
        );
    }
    if assignments
        .iter()
        .any(|a| matches!(a.target.kind, TargetKind::Addresses(_)))
    {
        eprintln!(
            "egress-check: warning: the sandbox simulates names only; targets given as literal \
             addresses are not served by it, so their denies cannot be witnessed"
        );
    }
    let mut rules = Vec::new();
    rules.extend(args.iptables.into_iter().map(sandbox::RuleSource::Iptables));
    rules.extend(
        args.ip6tables
            .into_iter()
            .map(sandbox::RuleSource::Ip6tables),
    );
    rules.extend(args.nft.into_iter().map(sandbox::RuleSource::Nft));
    rules.extend(args.setup.into_iter().map(sandbox::RuleSource::Setup));
    let options = sandbox::SandboxOptions {
        ports: assignments
            .iter()
            .flat_map(|a| a.target.ports.iter().copied())
            .collect(),
        answer_a: !args.no_a,
        answer_aaaa: !args.no_aaaa,
        rules,
    };

    // From here on a SIGINT/SIGTERM must not kill us before the namespaces are gone: the
    // flag defers it while the sandbox is being built; the runner handles it during the run.
    let signalled = Arc::new(AtomicUsize::new(0));
    for (signal, code) in [
        (signal_hook::consts::SIGINT, exit_codes::SIGINT),
        (signal_hook::consts::SIGTERM, exit_codes::SIGTERM),
    ] {
        signal_hook::flag::register_usize(signal, Arc::clone(&signalled), code.into())
            .context("installing signal handlers")?;
    }
    let home = std::fs::File::open("/proc/self/ns/net").context("opening /proc/self/ns/net")?;
    let sandbox = sandbox::create(&options)?;
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
                let nameservers = NameserverChoice {
                    server: Some(sandbox.nameserver()),
                    netns_resolv_conf: None,
                };
                // On by default here: a sandbox is root's throwaway namespace, so tracing is
                // always possible unless the kernel lacks nf_tables; then say so and go on.
                let explain = !args.no_explain
                    && match explain::preflight() {
                        Ok(()) => true,
                        Err(err) => {
                            eprintln!("egress-check: warning: running without explanations: {err}");
                            false
                        }
                    };
                probe_and_report(prepared, nameservers, &args.probe, display, explain)
            })
    };
    // Back home before tearing down, so that nothing of ours keeps the sandbox alive.
    let _ = nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET);
    sandbox.teardown()?;
    code
}

/// `egress-check resolve DOMAIN...`: what would be probed; connects nowhere, needs no root.
fn resolve_names(args: ResolveArgs) -> anyhow::Result<u8> {
    let resolv_conf = match &args.netns {
        Some(name) => netns::enter(name)?,
        None => None,
    };
    let domains = args
        .domains
        .iter()
        .map(|d| vocab::normalize_domain(d))
        .collect::<Result<Vec<_>, _>>()?;
    let source = match (args.nameserver, resolv_conf) {
        (Some(addr), _) => plan::NameserverSource::Server(addr),
        (None, Some(text)) => plan::NameserverSource::ResolvConf(text),
        (None, None) => plan::NameserverSource::System,
    };
    let kinds: Vec<TargetKind> = domains.iter().cloned().map(TargetKind::Mx).collect();
    // In a resolver process (dropped to nobody when run as root, fenced), as a run does:
    // this process parses nothing from the network.
    let mut resolutions = runtime()?.block_on(dns_process::resolve_groups(vec![(
        source.clone(),
        kinds.clone(),
    )]));
    let resolutions: std::collections::HashMap<TargetKind, _> = kinds
        .iter()
        .map(|k| {
            let r = resolutions
                .remove(&(source.clone(), k.clone()))
                .unwrap_or_else(|| resolve::without_resolver(k, "not resolved"));
            (k.clone(), r)
        })
        .collect();
    let report = ResolveReport::new(
        domains
            .iter()
            .zip(&kinds)
            .map(|(domain, kind)| (domain.as_str(), &resolutions[kind])),
        &HostInterfaces::current()?,
    );
    match args.format {
        ResolveFormat::Human => print!("{}", report.to_human()),
        ResolveFormat::Json => println!("{}", report.to_json()),
    }
    Ok(if report.complete() {
        exit_codes::PASSED
    } else {
        exit_codes::INCONCLUSIVE
    })
}

/// What a run has settled before anything is sent.
struct Prepared {
    /// The plan, every user looked up and becomable.
    assignments: Vec<Assignment>,
    /// The `--output` files, their directories checked writable.
    outputs: PreparedOutputs,
}

/// Before anything is sent: the plan (every user looked up), the privileges to become
/// them, the `--output` files' directories, and descriptors for the workers.
/// `alternative` says what would work without privileges, for the message when they are
/// missing (`None`: nothing would).
fn prepare(
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
    if let Some(user) = &options.resolve_as {
        // Checked like every identity of the plan: known, and becomable by this process.
        let account = identity::lookup(user)?;
        identity::ensure_can_become(&account)?;
        dns_process::set_resolve_as(account.name);
    }
    Ok(Prepared {
        assignments,
        outputs,
    })
}

/// Enters `--netns` if given; returns how nameservers are chosen there.
fn enter_host(common: &CommonArgs) -> anyhow::Result<NameserverChoice> {
    let netns_resolv_conf = match &common.host.netns {
        Some(name) => netns::enter(name)?,
        None => None,
    };
    Ok(NameserverChoice {
        server: common.host.nameserver,
        netns_resolv_conf,
    })
}

/// `--explain`, checked in the namespace that will be probed: exit 2 before anything is
/// probed when tracing cannot work there.
fn explain_requested(common: &CommonArgs) -> anyhow::Result<bool> {
    if common.explain {
        explain::preflight()?;
    }
    Ok(common.explain)
}

/// The path every probing mode shares from a plan to an exit code: resolve and probe
/// ([`runner`]), judge ([`verdict`]), print ([`report`]) and write the `--output` files
/// ([`output`]).
fn probe_and_report(
    prepared: Prepared,
    nameservers: NameserverChoice,
    options: &ProbeOptions,
    display: &DisplayOptions,
    explain: bool,
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
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Whether the human report on `stream` is coloured: `--color`, and for `auto` what
/// anstream's own choice weighs (NO_COLOR, then CLICOLOR_FORCE, CLICOLOR=0, a terminal
/// whose TERM supports colour), except that `CI` does not override `TERM=dumb`: a dumb
/// terminal gets no escapes, wherever it runs.
fn use_color(stream: &impl IsTerminal) -> bool {
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
