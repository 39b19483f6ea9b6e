//! The `egress-check` command: parses the command line, maps errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use egress_check::cli::SandboxArgs;
use egress_check::cli::{Cli, Command, CommonArgs, Format, ResolveFormat};
use egress_check::output::PreparedOutputs;
use egress_check::report::Report;
use egress_check::runner::Interruption;
use egress_check::runner::RunSettings;
use egress_check::scenario::{self, AdHocTargets, Scenario};
use egress_check::{netns, output, plan, resolve, runner, sandbox, source, worker};

/// Exit code for usage, scenario and privilege errors (nothing was probed).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The worker must start before any runtime or thread exists: it changes identity.
    // Internal subcommands must start before any runtime or thread exists: the worker
    // changes identity, the simulated internet changes network namespace.
    match cli.command {
        Some(Command::ProbeAs(args)) => return ExitCode::from(worker::worker_main(args) as u8),
        Some(Command::SandboxInternet(args)) => {
            return match sandbox::internet_main(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("egress-check: simulated internet: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {}
    }
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("egress-check: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs a command; `Err` is a usage, scenario or privilege error (exit 2).
fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Some(Command::Run(args)) => {
            let scenarios = source::load_all(&args.files)?;
            run(scenarios, args.user.as_deref(), &args.common)
        }
        Some(Command::Resolve(args)) => {
            let resolv_conf = match &args.netns {
                Some(name) => netns::enter(name)?,
                None => None,
            };
            let domains = args
                .domains
                .iter()
                .map(|d| scenario::normalize_domain(d).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let source = match (args.nameserver, resolv_conf) {
                (Some(addr), _) => resolve::NameserverSource::Server(addr),
                (None, Some(text)) => resolve::NameserverSource::ResolvConf(text),
                (None, None) => resolve::NameserverSource::System,
            };
            runtime()?.block_on(show_resolution(&domains, &source, args.format))
        }
        Some(Command::Sandbox(args)) => run_sandbox(args),
        Some(Command::ProbeAs(_) | Command::SandboxInternet(_)) => unreachable!("handled in main"),
        None => {
            let ad_hoc = cli.ad_hoc;
            let Some(user) = ad_hoc.user.clone() else {
                anyhow::bail!(
                    "nothing to do: give a subcommand (`run FILE`, `resolve DOMAIN`) or \
                     `--as USER` for an ad hoc check; see `egress-check --help`"
                );
            };
            let targets = AdHocTargets {
                mx: ad_hoc.mx,
                hosts: ad_hoc.host,
                addresses: ad_hoc.addr,
                ports: ad_hoc.port,
            };
            let scenario = if targets.is_empty() {
                scenario::default_scenario_for(&user)?
            } else {
                targets
                    .into_scenario(&user, ad_hoc.expect.into())
                    .map_err(anyhow::Error::msg)?
            };
            run(vec![scenario], None, &ad_hoc.common)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the parent only waits on DNS and workers, and a single thread keeps the
    // network namespace entered at start valid for everything it does.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(
    scenarios: Vec<Scenario>,
    only_user: Option<&str>,
    common: &CommonArgs,
) -> anyhow::Result<u8> {
    let assignments = plan::assignments(&scenarios, only_user, common.timeout)?;
    plan::ensure_privileges(&assignments)?;
    let outputs = PreparedOutputs::prepare(&common.output, common.format)?;
    worker::raise_fd_limit();
    let netns_resolv_conf = match &common.netns {
        Some(name) => netns::enter(name)?,
        None => None,
    };
    let settings = RunSettings {
        nameserver: common.nameserver,
        netns_resolv_conf,
        deadline: common.deadline,
    };
    let result = runtime()?.block_on(runner::execute(&scenarios, &assignments, &settings));
    emit(&result.report, result.interruption, common.format, outputs)
}

/// Prints the report, writes the `--output` files unless interrupted, and returns the exit
/// code; `Err` (exit 2) when an `--output` file could not be written.
fn emit(
    report: &Report,
    interruption: Option<Interruption>,
    format: Format,
    outputs: PreparedOutputs,
) -> anyhow::Result<u8> {
    let signal_code = interruption.and_then(|i| i.exit_code());
    if signal_code.is_some() {
        // Interrupted: what finished goes to stderr for the person at the terminal; a
        // machine-readable format still gets its (partial, marked) document on stdout.
        eprint!("{}", report.to_human(use_color(&std::io::stderr())));
    }
    match format {
        Format::Human if signal_code.is_some() => {}
        _ => print!(
            "{}",
            output::render(report, format, use_color(&std::io::stdout()))
        ),
    }
    match signal_code {
        // Interrupted: the previous reports stay, the outputs are dropped unwritten.
        Some(code) => Ok(code as u8),
        None => {
            outputs.commit(report)?;
            Ok(report.exit_code() as u8)
        }
    }
}

/// `egress-check sandbox`: the scenario, run unchanged inside a throwaway host namespace
/// whose simulated internet answers every name it uses.
fn run_sandbox(args: SandboxArgs) -> anyhow::Result<u8> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let scenarios = args
        .files
        .iter()
        .map(|f| scenario::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    let assignments = plan::assignments(&scenarios, args.user.as_deref(), args.timeout)?;
    plan::ensure_privileges(&assignments)?;
    let outputs = PreparedOutputs::prepare(&args.output, args.format)?;
    worker::raise_fd_limit();
    if assignments
        .iter()
        .any(|a| matches!(a.target.kind, scenario::TargetKind::Addresses(_)))
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
        (signal_hook::consts::SIGINT, 130),
        (signal_hook::consts::SIGTERM, 143),
    ] {
        signal_hook::flag::register_usize(signal, Arc::clone(&signalled), code)
            .context("installing signal handlers")?;
    }
    let home = std::fs::File::open("/proc/self/ns/net").context("opening /proc/self/ns/net")?;
    let sandbox = sandbox::Sandbox::create(&options)?;
    let early = signalled.load(Ordering::SeqCst);
    let code = if early != 0 {
        eprintln!("egress-check: interrupted while building the sandbox; nothing was probed");
        Ok(early as u8)
    } else {
        netns::enter_path(sandbox.host_netns_path())
            .with_context(|| {
                format!(
                    "entering the sandbox namespace {}",
                    sandbox.host_netns_name()
                )
            })
            .and_then(|()| {
                let settings = RunSettings {
                    nameserver: Some(sandbox.nameserver()),
                    netns_resolv_conf: None,
                    deadline: args.deadline,
                };
                let result =
                    runtime()?.block_on(runner::execute(&scenarios, &assignments, &settings));
                emit(&result.report, result.interruption, args.format, outputs)
            })
    };
    // Back home before tearing down, so that nothing of ours keeps the sandbox alive.
    let _ = nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET);
    sandbox.teardown()?;
    code
}

fn use_color(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn show_resolution(
    domains: &[String],
    source: &resolve::NameserverSource,
    format: ResolveFormat,
) -> anyhow::Result<u8> {
    use resolve::{Addresses, Resolution};
    use scenario::TargetKind;

    let resolver = resolve::Resolver::new(source).map_err(anyhow::Error::msg)?;
    let kinds: Vec<TargetKind> = domains.iter().cloned().map(TargetKind::Mx).collect();
    let resolutions = resolver.resolve_all(&kinds).await;
    let mut complete = true;
    let mut json = Vec::new();
    let mut text = String::new();
    let addresses_json = |a: &Addresses| match a {
        Addresses::Found(list) => serde_json::json!({ "addresses": list }),
        Addresses::None => serde_json::json!({ "addresses": [] }),
        Addresses::Failed(f) => serde_json::json!({ "addresses": [], "error": f.to_string() }),
    };
    for (domain, kind) in domains.iter().zip(&kinds) {
        text.push_str(&format!("{domain}\n"));
        match &resolutions[kind] {
            Resolution::Failed(failure) => {
                complete = false;
                text.push_str(&format!("  error: {failure}\n"));
                json.push(serde_json::json!({ "domain": domain, "status": "failed", "error": failure.to_string() }));
            }
            Resolution::NullMx => {
                text.push_str("  null MX (RFC 7505): accepts no mail\n");
                json.push(serde_json::json!({ "domain": domain, "status": "null-mx" }));
            }
            Resolution::Exchanges {
                implicit_mx,
                exchanges,
            } => {
                let mut list = Vec::new();
                for ex in exchanges {
                    let name = ex.name.clone().unwrap_or_default();
                    match (implicit_mx, ex.preference) {
                        (true, _) => {
                            text.push_str(&format!("  no MX; implicit MX (RFC 5321 5.1): {name}\n"))
                        }
                        (false, Some(pref)) => text.push_str(&format!("  MX {pref} {name}\n")),
                        (false, None) => text.push_str(&format!("  {name}\n")),
                    }
                    for family in scenario::Family::ALL {
                        let label = family.record_type();
                        match ex.addresses(family) {
                            Addresses::Found(addrs) => {
                                for a in addrs {
                                    text.push_str(&format!("    {label:<4} {a}\n"));
                                }
                            }
                            Addresses::None => text.push_str(&format!(
                                "    {label:<4} (none: {family} would be inconclusive)\n"
                            )),
                            Addresses::Failed(f) => {
                                complete = false;
                                text.push_str(&format!("    {label:<4} error: {f}\n"));
                            }
                        }
                    }
                    list.push(serde_json::json!({
                        "exchange": name,
                        "preference": ex.preference,
                        "ipv4": addresses_json(&ex.ipv4),
                        "ipv6": addresses_json(&ex.ipv6),
                    }));
                }
                json.push(serde_json::json!({
                    "domain": domain,
                    "status": "ok",
                    "implicit_mx": implicit_mx,
                    "exchanges": list,
                }));
            }
        }
    }
    match format {
        ResolveFormat::Human => print!("{text}"),
        ResolveFormat::Json => println!("{}", serde_json::to_string_pretty(&json)?),
    }
    Ok(if complete { 0 } else { 3 })
}
