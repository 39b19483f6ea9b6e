//! The command line. The names here are a contract used by scripts: keep them.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::address::Literal;
use crate::exit_codes;
use crate::output::OutputSpec;
use crate::vocab::{parse_nameserver, parse_timeout, Expectation, PortError, PortRange};
use crate::worker::WorkerArgs;

/// Proves, end to end, what this host's egress firewall lets each local user reach:
/// real TCP connects, as the real users, over IPv4 and IPv6.
///
/// Ad hoc: egress-check --as www-data [--mx gmail.com] [--port 25] [--expect deny]
#[derive(Debug, Parser)]
#[command(
    name = "egress-check",
    version,
    args_conflicts_with_subcommands = true,
    after_help = exit_codes::HELP
)]
pub struct Cli {
    /// What to do; without a subcommand, the ad hoc check of `--as USER`.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The ad hoc check.
    #[command(flatten)]
    pub ad_hoc: AdHocArgs,
    /// How much is said, and in colour or not: every mode.
    #[command(flatten)]
    pub display: DisplayOptions,
}

/// How much is said, and how: options of every mode, accepted before or after the
/// subcommand.
#[derive(Debug, Args, Clone)]
pub struct DisplayOptions {
    /// Colour in the human report: auto (on a terminal, unless NO_COLOR is set or
    /// TERM=dumb; CLICOLOR_FORCE forces it), always, never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,
    /// Say more on stderr: the resolver's answers and the nameserver that gave them, each
    /// worker's start and identity, each probe's timing; twice: also the libraries' own.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Say less: the human report shows failures, inconclusives and the summary only
    /// (warnings and errors still go to stderr).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// Colour when writing to a terminal that supports it (NO_COLOR, CLICOLOR_FORCE and
    /// TERM=dumb honoured).
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

impl ColorWhen {
    /// The choice as anstream takes it.
    pub fn choice(self) -> anstream::ColorChoice {
        match self {
            ColorWhen::Auto => anstream::ColorChoice::Auto,
            ColorWhen::Always => anstream::ColorChoice::Always,
            ColorWhen::Never => anstream::ColorChoice::Never,
        }
    }
}

/// Parses the command line (`args` with the program name first).
///
/// `egress-check --as USER run FILE` is what a user who knows the ad hoc form types; it
/// means `run --as USER FILE` (and likewise for `sandbox`), so it is accepted as that, and
/// so are `-v`, `-q` and `--color` before any subcommand. Anything else that mixes the ad
/// hoc options with a subcommand stays clap's usage error.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    Cli::try_parse_from(&args).or_else(|err| {
        if err.kind() != clap::error::ErrorKind::ArgumentConflict {
            return Err(err);
        }
        hoist_before_subcommand(&args)
            .and_then(|moved| Cli::try_parse_from(moved).ok())
            .ok_or(err)
    })
}

/// `[prog, OPTIONS..., SUBCOMMAND, rest...]` as `[prog, SUBCOMMAND, OPTIONS..., rest...]`
/// when every leading option is one the subcommand also takes (`--as` for `run` and
/// `sandbox`; `-v`, `-q`, `--color` for all); `None` for any other shape. clap parses the
/// result again, so a wrong guess here is still refused there.
fn hoist_before_subcommand(args: &[OsString]) -> Option<Vec<OsString>> {
    let mut moved: Vec<OsString> = Vec::new();
    let mut i = 1;
    loop {
        let word = args.get(i)?.to_str()?;
        let takes_value = matches!(word, "--as" | "--color");
        let is_flag = word.starts_with("--as=")
            || word.starts_with("--color=")
            || matches!(word, "--verbose" | "--quiet")
            || (word.len() > 1
                && word.starts_with('-')
                && !word.starts_with("--")
                && word[1..].chars().all(|c| c == 'v' || c == 'q'));
        if takes_value {
            moved.extend([args[i].clone(), args.get(i + 1)?.clone()]);
            i += 2;
        } else if is_flag {
            moved.push(args[i].clone());
            i += 1;
        } else {
            break;
        }
    }
    let subcommand = args.get(i)?;
    if moved.is_empty()
        || !["run", "sandbox", "resolve"]
            .iter()
            .any(|s| subcommand == s)
    {
        return None;
    }
    let mut out = vec![args[0].clone(), subcommand.clone()];
    out.extend(moved);
    out.extend(args[i + 1..].iter().cloned());
    Some(out)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one or more scenario files.
    #[command(after_help = exit_codes::HELP)]
    Run(RunArgs),
    /// Print what would be probed for mail domains (MX, A, AAAA); connects nowhere, needs no root.
    #[command(after_help = exit_codes::RESOLVE_HELP)]
    Resolve(ResolveArgs),
    /// Prove a firewall ruleset before it ships: load it into a throwaway network namespace
    /// joined to a simulated internet that answers the scenario's names (DNS at whatever
    /// address the run asks) on every TCP port, and run the scenario.
    #[command(after_help = exit_codes::HELP)]
    Sandbox(SandboxArgs),
    /// Internal: the per-user probe worker (see [`crate::worker`]).
    #[command(name = crate::worker::WORKER_SUBCOMMAND, hide = true)]
    ProbeAs(WorkerArgs),
    /// Internal: the resolver process (see [`crate::dns_process`]).
    #[command(name = crate::dns_process::RESOLVER_SUBCOMMAND, hide = true)]
    ResolveAs(crate::dns_process::ResolverArgs),
    /// Internal: the sandbox's simulated internet (see [`crate::lab::internet_process`]).
    #[command(name = crate::lab::INTERNET_SUBCOMMAND, hide = true)]
    ServeInternet(crate::lab::InternetArgs),
}

/// How probes are made and reported: options of every mode that probes.
#[derive(Debug, Args, Clone)]
pub struct ProbeOptions {
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// With `--format json`: the compact document (`--format json-compact`).
    #[arg(long)]
    pub compact: bool,
    /// Per connect attempt, e.g. `500ms`, `2s` [default: the scenario's, else 3s].
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Bound on the whole run; probes still pending then are inconclusive.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub deadline: Option<Duration>,
    /// Also write the report to FILE, replaced atomically, in FORMAT (human, json, json-compact, junit, prometheus;
    /// default: --format's); repeatable. An interrupted run replaces no file.
    #[arg(long, value_name = "[FORMAT=]FILE")]
    pub output: Vec<OutputSpec>,
    /// Hidden test hook: every worker commits this fault once fenced
    /// ([`crate::fence::TestFault`]); never read from a scenario or the environment.
    #[arg(long, hide = true, value_enum, value_name = "FAULT")]
    pub test_worker_fault: Option<crate::fence::TestFault>,
    /// Hidden test hook: the resolver process misbehaves so
    /// ([`crate::dns_process::ResolverFault`]); never read from a scenario or the environment.
    #[arg(long, hide = true, value_enum, value_name = "FAULT")]
    pub test_resolver_fault: Option<crate::dns_process::ResolverFault>,
    /// Resolve names as this user (a separate process, fenced like the workers) instead of
    /// `nobody`, where the firewall lets only some users query DNS.
    #[arg(long, value_name = "USER")]
    pub resolve_as: Option<String>,
}

/// Where names are resolved and probes start from: this host, or one of its namespaces.
#[derive(Debug, Args, Clone)]
pub struct HostOptions {
    /// DNS server to use instead of the scenario's and /etc/resolv.conf's (IP or IP:PORT).
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver)]
    pub nameserver: Option<SocketAddr>,
    /// Enter this network namespace (/run/netns/NAME) before resolving and probing; its
    /// /etc/netns/NAME/resolv.conf and hosts replace the system's, as under `ip netns exec`.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
}

/// Options shared by `run` and the ad hoc form.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// How probes are made and reported.
    #[command(flatten)]
    pub probe: ProbeOptions,
    /// Where they start from.
    #[command(flatten)]
    pub host: HostOptions,
    /// Name the firewall rule that decided each probe (nftables tracing; needs root).
    #[arg(long)]
    pub explain: bool,
}

/// `egress-check run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario files (TOML); a directory runs its *.toml files in lexical order; `-` reads
    /// one scenario from standard input [default: /etc/egress-check].
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Only run the checks of this user.
    #[arg(long = "as", value_name = "USER")]
    pub user: Option<String>,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `egress-check sandbox`.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Scenario files (TOML), run unchanged: their names resolve to the simulated internet.
    #[arg(required = true, value_name = "SCENARIO")]
    pub files: Vec<PathBuf>,
    /// iptables-restore file to load into the host namespace (repeatable).
    #[arg(long, value_name = "FILE")]
    pub iptables: Vec<PathBuf>,
    /// ip6tables-restore file to load into the host namespace (repeatable).
    #[arg(long, value_name = "FILE")]
    pub ip6tables: Vec<PathBuf>,
    /// nftables ruleset to load with `nft -f` into the host namespace (repeatable).
    #[arg(long, value_name = "FILE")]
    pub nft: Vec<PathBuf>,
    /// Executable run inside the host namespace, after the rule files (ferm, ufw, a shell script).
    #[arg(long, value_name = "SCRIPT")]
    pub setup: Vec<PathBuf>,
    /// The simulated DNS answers no A records (every IPv4 probe becomes no-address).
    #[arg(long)]
    pub no_a: bool,
    /// The simulated DNS answers no AAAA records (every IPv6 probe becomes no-address).
    #[arg(long)]
    pub no_aaaa: bool,
    /// DNS server to ask instead of the scenario's and /etc/resolv.conf's (IP or IP:PORT).
    /// Whichever the run asks, the simulated internet answers it at that address, so the
    /// ruleset's DNS rules decide as on the host (`udp dport 53 ip daddr != 9.9.9.9 drop`);
    /// a loopback resolver (127.0.0.53, systemd-resolved's stub) is answered inside the
    /// sandbox host.
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver)]
    pub nameserver: Option<SocketAddr>,
    /// Name of the sandbox host's network interface to the simulated internet, as the
    /// ruleset names it (`-o ens3`, `oifname "ens3"`).
    #[arg(long, value_name = "NAME", default_value = "eth0", value_parser = crate::sandbox::parse_uplink)]
    pub uplink: String,
    /// An address of the sandbox host itself, as the ruleset names it (`-s 203.0.113.5`,
    /// `ip saddr`): put on the uplink, the first of each family the source of the probes'
    /// connections (repeatable; IPv4 and IPv6).
    #[arg(long = "host-addr", value_name = "IP", value_parser = crate::sandbox::parse_host_addr)]
    pub host_addr: Vec<IpAddr>,
    /// Only run the checks of this user.
    #[arg(long = "as", value_name = "USER")]
    pub user: Option<String>,
    /// Do not name the rule that decided each probe (on by default in the sandbox, for runs
    /// of up to 4096 probes).
    #[arg(long, conflicts_with = "explain")]
    pub no_explain: bool,
    /// Name the rule that decided each probe however many probes the run has (by default
    /// the sandbox traces runs of up to 4096 probes: beyond, tracing loses events).
    #[arg(long)]
    pub explain: bool,
    /// How probes are made and reported.
    #[command(flatten)]
    pub probe: ProbeOptions,
}

/// The ad hoc form: `egress-check --as USER [targets]`.
#[derive(Debug, Args)]
pub struct AdHocArgs {
    /// Probe as this user (login name), or where a process or service stands: `pid:PID`,
    /// `unit:NAME`, `unit:NAME/USER`.
    #[arg(long = "as", value_name = "USER")]
    pub user: Option<String>,
    /// A mail domain whose MX hosts to probe (repeatable).
    #[arg(long, value_name = "DOMAIN")]
    pub mx: Vec<String>,
    /// A host name to probe (repeatable).
    #[arg(long, value_name = "NAME")]
    pub host: Vec<String>,
    /// An address to probe (repeatable); IPv6 link-local with its interface: fe80::1%eth0.
    #[arg(long = "addr", value_name = "IP", value_parser = clap::value_parser!(Literal))]
    pub addr: Vec<Literal>,
    /// The --addr targets may be loopback or this host's own addresses (such probes do not
    /// cross the egress path and are never a pass).
    #[arg(long, requires = "addr")]
    pub local: bool,
    /// A port or inclusive port range to probe (repeatable; `--port 1-1024`, `--port 1-65535`)
    /// [default: 25].
    #[arg(long, value_name = "N|A-B", value_parser = parse_port_range)]
    pub port: Vec<PortRange>,
    /// What should happen.
    #[arg(long, value_enum, default_value_t = Expectation::Deny)]
    pub expect: Expectation,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `egress-check resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Mail domains.
    #[arg(required = true, value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// DNS server to use instead of /etc/resolv.conf (IP or IP:PORT).
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_nameserver)]
    pub nameserver: Option<SocketAddr>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ResolveFormat::Human)]
    pub format: ResolveFormat,
    /// Enter this network namespace (/run/netns/NAME) first; its /etc/netns/NAME/resolv.conf
    /// and hosts replace the system's, as under `ip netns exec`.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Resolve as this user (a separate process, fenced like the workers) instead of
    /// `nobody`, where the firewall lets only some users query DNS.
    #[arg(long, value_name = "USER")]
    pub resolve_as: Option<String>,
}

/// `--port N` or `--port A-B`.
fn parse_port_range(text: &str) -> Result<PortRange, PortError> {
    text.parse()
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people; colour as --color says.
    Human,
    /// One JSON document on stdout, one object per probe (the contract).
    Json,
    /// One JSON document on stdout for big runs (sweeps): probes that differ only in their
    /// port are one entry of `probe_ranges` (`"ports": "1-24,26-65535"`); same as
    /// `--format json --compact`.
    JsonCompact,
    /// JUnit XML on stdout, one test case per user, target, exchange, family, port and
    /// expectation (for CI test reporters).
    Junit,
    /// Prometheus text exposition format 0.0.4, for node_exporter's textfile collector
    /// (with `--output prometheus=FILE` into its directory).
    Prometheus,
}

/// Output formats of `resolve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResolveFormat {
    /// For people.
    Human,
    /// One JSON document on stdout.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("egress-check").chain(args.iter().copied()))
    }

    #[test]
    fn contract_names_parse() {
        let cli = parse(&[
            "run",
            "a.toml",
            "b.toml",
            "--as",
            "www-data",
            "--format",
            "json",
            "--nameserver",
            "192.0.2.53:5353",
            "--timeout",
            "500ms",
        ])
        .unwrap();
        let Some(Command::Run(run)) = cli.command else {
            panic!()
        };
        assert_eq!(run.files.len(), 2);
        assert_eq!(run.user.as_deref(), Some("www-data"));
        assert_eq!(run.common.probe.timeout, Some(Duration::from_millis(500)));

        let cli = parse(&[
            "--as",
            "www-data",
            "--mx",
            "gmail.com",
            "--port",
            "25",
            "--port",
            "587",
            "--expect",
            "allow",
            "--addr",
            "2001:db8::1",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.ad_hoc.port,
            vec!["25".parse().unwrap(), "587".parse().unwrap()]
        );
        assert_eq!(cli.ad_hoc.expect, Expectation::Allow);
        let ranged = parse(&["--as", "x", "--port", "1-1024"]).unwrap();
        assert_eq!(ranged.ad_hoc.port[0].ports().count(), 1024);

        let cli = parse(&["resolve", "gmail.com", "outlook.com"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Resolve(_))));
    }

    #[test]
    fn every_help_lists_its_exit_codes() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let help = |cmd: &mut clap::Command| cmd.render_long_help().to_string();
        assert!(help(&mut cli).contains(exit_codes::HELP));
        for name in ["run", "sandbox"] {
            let text = help(cli.find_subcommand_mut(name).unwrap());
            assert!(text.contains("130/143"), "{name}: {text}");
            assert!(text.contains("3 none failed"), "{name}: {text}");
        }
        let text = help(cli.find_subcommand_mut("resolve").unwrap());
        assert!(text.contains(exit_codes::RESOLVE_HELP), "{text}");
    }

    #[test]
    fn as_before_a_subcommand_is_the_subcommands() {
        let argv = |args: &[&str]| {
            std::iter::once("egress-check")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect::<Vec<_>>()
        };
        for args in [
            &["--as", "nobody", "run", "x.toml", "--format", "json"][..],
            &["--as=nobody", "run", "x.toml", "--format", "json"],
        ] {
            let Some(Command::Run(run)) = super::parse(argv(args)).unwrap().command else {
                panic!("{args:?}")
            };
            assert_eq!(run.user.as_deref(), Some("nobody"));
            assert_eq!(run.files, [PathBuf::from("x.toml")]);
            assert_eq!(run.common.probe.format, Format::Json);
        }
        let Some(Command::Sandbox(sandbox)) =
            super::parse(argv(&["--as", "nobody", "sandbox", "x.toml"]))
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(sandbox.user.as_deref(), Some("nobody"));
        let Some(Command::Resolve(_)) =
            super::parse(argv(&["-vv", "--color", "never", "resolve", "a.test"]))
                .map(|c| c.command)
                .unwrap_or(None)
        else {
            panic!("display options before resolve")
        };
        // Other mixtures stay usage errors.
        for args in [
            &["--as", "nobody", "--mx", "a.test", "run", "x.toml"][..],
            &["--as", "nobody", "resolve", "a.test"],
        ] {
            assert_eq!(
                super::parse(argv(args)).unwrap_err().exit_code(),
                2,
                "{args:?}"
            );
        }
    }

    #[test]
    fn verbosity_counts_and_quiet_excludes_it() {
        let cli = parse(&["run", "x.toml", "-vv"]).unwrap();
        assert_eq!(cli.display.verbose, 2);
        let cli = super::parse(
            ["egress-check", "-q", "resolve", "a.test"]
                .into_iter()
                .map(OsString::from),
        )
        .unwrap();
        assert!(cli.display.quiet);
        assert_eq!(parse(&["run", "-q", "-v"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--as", "x", "--port", "0"][..],
            &["--as", "x", "--port", "65536"],
            &["--as", "x", "--port", "1-65536"],
            &["--as", "x", "--port", "1024-1"],
            &["--as", "x", "--port", "-"],
            &["--as", "x", "--timeout", "soon"],
            &["--as", "x", "--expect", "maybe"],
            &["--as", "x", "--addr", "1.2.3"],
            &["run", "x.toml", "--nameserver", "dns.example"],
            &["run", "x.toml", "--output", "jsn=x.json"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
