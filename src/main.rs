//! The `egress-check` command: parse the command line, dispatch to one function per mode,
//! map errors to exit codes ([`egress_check::exit_codes`]). Everything else lives in the
//! library; see its map in `lib.rs`.

use std::process::ExitCode;

use egress_check::address::HostInterfaces;
use egress_check::app::{
    choose_resolver, enter_netns, from_host, in_sandbox, init_logging, prepare, probe_and_report,
    runtime, sandbox_explain, sandbox_options,
};
use egress_check::cli::{
    self, AdHocArgs, Cli, Command, DisplayOptions, ResolveArgs, ResolveFormat, RunArgs, SandboxArgs,
};
use egress_check::plan::{self, NameserverChoice};
use egress_check::report::ResolveReport;
use egress_check::resolve;
use egress_check::scenario::{self, AdHocTargets, TargetKind};
use egress_check::{dns_process, exit_codes, identity, lab, source, vocab, worker};

fn main() -> ExitCode {
    let cli = cli::parse(std::env::args_os()).unwrap_or_else(|err| err.exit());
    anstream::ColorChoice::write_global(cli.display.color.choice());
    // The worker must start before any runtime or thread exists: it changes identity.
    if let Some(Command::ProbeAs(args)) = cli.command {
        return ExitCode::from(worker::worker_main(args) as u8);
    }
    // The sandbox's internet as well: it drops to nobody once bound.
    if let Some(Command::ServeInternet(args)) = cli.command {
        return ExitCode::from(lab::internet_main(args) as u8);
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

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let display = &cli.display;
    match cli.command {
        Some(Command::Run(args)) => run(args, display),
        Some(Command::Resolve(args)) => resolve_names(args),
        Some(Command::Sandbox(args)) => sandbox(args, display),
        None => ad_hoc(cli.ad_hoc, display),
        Some(Command::ProbeAs(_))
        | Some(Command::ResolveAs(_))
        | Some(Command::ServeInternet(_)) => {
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
    from_host(prepared, &args.common, display)
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
    from_host(prepared, &args.common, display)
}

/// `egress-check sandbox SCENARIO...`: the scenarios run unchanged inside a throwaway host
/// namespace, behind the given rules, whose simulated internet answers every name.
fn sandbox(args: SandboxArgs, display: &DisplayOptions) -> anyhow::Result<u8> {
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
    let options = sandbox_options(&args, assignments);
    in_sandbox(&options, |watch| {
        // Resolved as on the host (`--nameserver`, the scenario's, resolv.conf's), and
        // answered by the simulated internet wherever it is asked.
        let nameservers = NameserverChoice {
            server: args.nameserver,
            netns_resolv_conf: None,
        };
        let explain = sandbox_explain(&args)?;
        probe_and_report(prepared, nameservers, &args.probe, display, explain, watch)
    })
}

/// `egress-check resolve DOMAIN...`: what would be probed; connects nowhere, needs no root.
fn resolve_names(args: ResolveArgs) -> anyhow::Result<u8> {
    choose_resolver(args.resolve_as.as_deref())?;
    let resolv_conf = match &args.netns {
        Some(name) => enter_netns(name)?,
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
    )
    .resolved_as(&dns_process::resolver_user(), args.resolve_as.is_some());
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
