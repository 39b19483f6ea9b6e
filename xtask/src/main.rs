//! Build-time tasks of egress-check, run with `cargo run -p xtask -- TASK`.
//!
//! `gen-assets DIR` writes what the Debian package installs besides the binary and is
//! generated from the clap definition, so that it cannot drift from the real command line:
//!
//! - `DIR/man/egress-check.1` and `DIR/man/egress-check-SUBCOMMAND.1` for every public
//!   subcommand (clap_mangen), each with EXIT STATUS and FILES sections;
//! - `DIR/completions/{egress-check.bash,_egress-check,egress-check.fish}` (clap_complete).
//!
//! An xtask rather than a `build.rs`: a build script cannot link the library whose `cli`
//! module it would document (that module uses the scenario parser and the sandbox), it would
//! run on every build of every developer for files only the package needs, and it could only
//! write into `OUT_DIR`, a hashed path cargo-deb's assets cannot name.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

use egress_check::cli::Cli;

/// Build-time tasks of egress-check.
#[derive(Debug, Parser)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Generate the man pages and shell completions into DIR (created if missing).
    GenAssets {
        /// Output directory, e.g. target/assets.
        dir: PathBuf,
    },
}

/// The binary's name, as installed and as completed by the shells.
const BIN: &str = "egress-check";

fn main() -> anyhow::Result<()> {
    match Xtask::parse().task {
        Task::GenAssets { dir } => gen_assets(&dir),
    }
}

fn gen_assets(dir: &Path) -> anyhow::Result<()> {
    let cmd = without_hidden_subcommands(&Cli::command());

    let man_dir = dir.join("man");
    fs::create_dir_all(&man_dir).with_context(|| format!("creating {}", man_dir.display()))?;
    write_man_page(
        &man_dir,
        &cmd,
        Some(TOP_LEVEL_DESCRIPTION),
        top_level_sections(&cmd),
    )?;
    for sub in cmd.get_subcommands() {
        write_man_page(&man_dir, sub, None, subcommand_sections(sub.get_name()))?;
    }

    let completion_dir = dir.join("completions");
    fs::create_dir_all(&completion_dir)
        .with_context(|| format!("creating {}", completion_dir.display()))?;
    for (shell, file) in [
        (Shell::Bash, "egress-check.bash"),
        (Shell::Zsh, "_egress-check"),
        (Shell::Fish, "egress-check.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), BIN, &mut text);
        let path = completion_dir.join(file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The command without its hidden subcommands (the per-user worker, the sandbox's simulated
/// internet): clap_mangen leaves them out, but clap_complete would offer them, and they are
/// an implementation detail, not something to type. `cmd` must not be built yet (building
/// adds `--help` and `--version`, which the copy would then have twice).
///
/// The copy is returned built: that fills in each subcommand's display name
/// (`egress-check-run`) and bin name (`egress-check run`), which the man pages use for their
/// names and synopses.
fn without_hidden_subcommands(cmd: &clap::Command) -> clap::Command {
    let mut public = clap::Command::new(cmd.get_name().to_owned())
        .bin_name(BIN)
        .disable_help_subcommand(true)
        // As on `Cli`: `egress-check run --as x` is run's option, not the ad hoc form's.
        .args_conflicts_with_subcommands(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(version) = cmd.get_version() {
        public = public.version(version.to_owned());
    }
    if let Some(about) = cmd.get_about() {
        public = public.about(about.clone());
    }
    public.build();
    public
}

/// DESCRIPTION of egress-check(1): the `about` text is already the NAME line. (The
/// top-level `after_help`, exit codes and the ad hoc form, is what EXIT STATUS and EXAMPLES
/// below say in full, so it is not rendered.)
const TOP_LEVEL_DESCRIPTION: &[&str] = &[
    "egress-check proves, end to end, what this host's egress firewall lets each local user reach. It resolves mail domains to their MX hosts and every MX host to both A and AAAA, becomes each user exactly as a login would (groups, gid, uid, no way back), attempts real TCP connections over each address family, and says which expectation held and which did not. A family split (blocked over IPv4, open over IPv6) is the first line of the report.",
    "Without a subcommand it runs an ad hoc check as the user given with --as: by default port 25 to the MX hosts of large mail providers, expecting deny; --mx, --host, --addr, --port and --expect change that. egress-check run runs scenario files, by default every *.toml in /etc/egress-check/.",
    "Probing as other users needs root (or CAP_SETUID and CAP_SETGID); probing as yourself does not. The probes run in this process's network namespace, cgroup and seccomp filter: run it where the users it speaks for run, not in a network-restricted sandbox.",
];

/// The version of the egress-check package (the library's, not this xtask's).
fn egress_check_version() -> String {
    Cli::command().get_version().unwrap_or_default().to_owned()
}

/// A man page section that clap does not know about.
struct Section {
    title: &'static str,
    /// Paragraphs; a `(term, text)` entry becomes a tagged paragraph.
    body: Vec<Entry>,
}

enum Entry {
    Text(Cow<'static, str>),
    Tagged(&'static str, &'static str),
}

fn text(text: &'static str) -> Entry {
    Entry::Text(Cow::Borrowed(text))
}

/// Exit codes shared by `run`, `sandbox` and the ad hoc form.
const RUN_EXIT_CODES: &[(&str, &str)] = &[
    ("0", "Every check passed."),
    ("1", "At least one check failed."),
    ("2", "Usage, scenario or privilege error: nothing was probed. Also when an --output file could not be written after the run (the report on standard output is complete)."),
    ("3", "No check failed, but at least one was inconclusive (no address, DNS failure, or not finished by --deadline)."),
    ("130", "Interrupted by SIGINT; what finished is reported on standard error, no --output file is replaced."),
    ("143", "Terminated by SIGTERM; as for 130."),
];

const RESOLVE_EXIT_CODES: &[(&str, &str)] = &[
    ("0", "Every domain resolved."),
    ("2", "Usage error (a malformed domain, an unknown option)."),
    ("3", "At least one lookup failed (the output names it)."),
];

fn exit_status(codes: &[(&'static str, &'static str)]) -> Section {
    Section {
        title: "EXIT STATUS",
        body: codes.iter().map(|(c, t)| Entry::Tagged(c, t)).collect(),
    }
}

const FILE_CONFIG_DIR: Entry = Entry::Tagged(
    "/etc/egress-check/*.toml",
    "Scenario files run, in lexical order, by egress-check run without FILE and by egress-check.service.",
);
const FILE_LAST_JSON: Entry = Entry::Tagged(
    "/var/lib/egress-check/last.json",
    "The JSON report of the last run of egress-check.service (written with --output).",
);
const FILE_UNITS: Entry = Entry::Tagged(
    "/usr/lib/systemd/system/egress-check.service, egress-check.timer",
    "Run the configuration directory's scenarios every 15 minutes once enabled with systemctl enable --now egress-check.timer.",
);
const FILE_EXAMPLES: Entry = Entry::Tagged(
    "/usr/share/doc/egress-check/examples/",
    "An example scenario to copy into /etc/egress-check/ and adapt.",
);
const FILE_RESOLV_CONF: Entry = Entry::Tagged(
    "/etc/resolv.conf",
    "The system resolver's nameservers, unless --nameserver or the scenario's nameserver is given.",
);
const FILE_HOSTS: Entry = Entry::Tagged(
    "/etc/hosts",
    "Consulted first for host targets (not for MX lookups), unless --nameserver or the scenario's nameserver is given.",
);
const FILE_NETNS: Entry = Entry::Tagged(
    "/run/netns/NAME, /etc/netns/NAME/resolv.conf",
    "The network namespace entered with --netns NAME, and its resolver configuration (as ip netns exec uses it).",
);
const FILE_PASSWD: Entry = Entry::Tagged(
    "/etc/passwd, /etc/group",
    "The users probed as, and their groups (or whatever NSS source the host uses).",
);

fn top_level_sections(cmd: &clap::Command) -> Vec<Section> {
    // The SEE ALSO list names the generated pages, so it is built, not written out.
    let mut see_also: String = cmd
        .get_subcommands()
        .map(|s| format!("{BIN}-{}(1), ", s.get_name()))
        .collect();
    see_also.push_str("systemd.timer(5)");
    vec![
        exit_status(RUN_EXIT_CODES),
        Section {
            title: "EXAMPLES",
            body: vec![
                Entry::Tagged("egress-check --as www-data", "Can www-data open SMTP connections to gmail, outlook and yahoo MX hosts, over IPv4 or IPv6? (It should not.)"),
                Entry::Tagged("egress-check --as postfix --mx example.org --port 25 --port 587 --expect allow", "Can the MTA reach example.org's exchanges on both ports, over both families?"),
                Entry::Tagged("egress-check run", "Run every scenario in /etc/egress-check/."),
                Entry::Tagged("egress-check run policy.toml --output json=/var/lib/egress-check/last.json", "Run one scenario; print the human report, and replace last.json with the JSON report."),
            ],
        },
        Section {
            title: "ENVIRONMENT",
            body: vec![
                Entry::Tagged(
                    "NO_COLOR",
                    "When set and not empty, the human report has no colour with --color auto (the default).",
                ),
                Entry::Tagged(
                    "CLICOLOR_FORCE",
                    "When set and not 0, the human report has colour with --color auto even when standard output is not a terminal (NO_COLOR wins).",
                ),
                Entry::Tagged(
                    "TERM",
                    "dumb: no colour with --color auto, even on a terminal.",
                ),
            ],
        },
        Section {
            title: "FILES",
            body: vec![
                FILE_CONFIG_DIR,
                FILE_EXAMPLES,
                FILE_LAST_JSON,
                FILE_UNITS,
                FILE_RESOLV_CONF,
                FILE_HOSTS,
                FILE_NETNS,
                FILE_PASSWD,
            ],
        },
        Section {
            title: "SEE ALSO",
            body: vec![Entry::Text(Cow::Owned(see_also))],
        },
    ]
}

fn subcommand_sections(name: &str) -> Vec<Section> {
    let see_also = Section {
        title: "SEE ALSO",
        body: vec![text("egress-check(1)")],
    };
    match name {
        "run" => vec![
            Section {
                title: "SCENARIO FILES",
                body: vec![
                    text("TOML; unknown keys are errors, and every error names file:line:column (<stdin>:line:column for -). A scenario lists targets and checks:"),
                    Entry::Tagged("timeout = \"2s\"", "Optional, per connect attempt."),
                    Entry::Tagged("nameserver = \"192.0.2.53\"", "Optional DNS server, else the system resolver."),
                    Entry::Tagged("[[target]]", "name = \"gmail\" (referenced by checks); exactly one of mx = DOMAIN (every MX exchange, each over A and AAAA), host = NAME, address = [IP, ...]; ports = [25] (optional, default [25]); families = [\"ipv4\", \"ipv6\"] (optional, default both)."),
                    Entry::Tagged("[[check]]", "as = [\"www-data\"] (users, each with a passwd entry); to = [\"gmail\"] (optional, default all targets); expect = \"allow\" or \"deny\"."),
                    text("A directory FILE, and the configuration directory when no FILE is given, runs every *.toml file in it in byte order of the names; names starting with a dot are skipped. An empty directory is exit status 2."),
                ],
            },
            Section {
                title: "OUTPUT FILES",
                body: vec![text("--output [FORMAT=]FILE writes the run's report in FORMAT (human, json, junit or prometheus; default: --format's) to FILE, in addition to standard output. FILE is replaced atomically: the report is written to a temporary file in FILE's directory, synced, and renamed over FILE, so a reader sees the previous report or the new one, never a part. The temporary file is created before anything is probed, so a missing or read-only directory is exit status 2 at once. An interrupted run replaces no file.")],
            },
            exit_status(RUN_EXIT_CODES),
            Section {
                title: "FILES",
                body: vec![FILE_CONFIG_DIR, FILE_EXAMPLES, FILE_LAST_JSON, FILE_RESOLV_CONF, FILE_NETNS, FILE_PASSWD],
            },
            see_also,
        ],
        "resolve" => vec![
            exit_status(RESOLVE_EXIT_CODES),
            Section {
                title: "FILES",
                body: vec![FILE_RESOLV_CONF, FILE_NETNS],
            },
            see_also,
        ],
        "sandbox" => vec![
            exit_status(RUN_EXIT_CODES),
            Section {
                title: "FILES",
                body: vec![
                    Entry::Tagged(
                        "/run/netns/",
                        "The sandbox's throwaway network namespaces are created here, with unique names, and removed afterwards.",
                    ),
                    Entry::Tagged(
                        "/etc/resolv.conf",
                        "The nameservers the sandboxed run asks, unless --nameserver or the scenario's nameserver is given; the simulated internet answers DNS at whatever address they have (a loopback one inside the sandbox host).",
                    ),
                    FILE_PASSWD,
                ],
            },
            see_also,
        ],
        _ => vec![see_also],
    }
}

/// Renders clap_mangen's sections, then ours before VERSION (the conventional order puts
/// EXIT STATUS and FILES after the options). `description` replaces clap's (its `about`).
fn write_man_page(
    dir: &Path,
    cmd: &clap::Command,
    description: Option<&[&str]>,
    sections: Vec<Section>,
) -> anyhow::Result<()> {
    // Subcommands have no version of their own: every footer names the package's.
    let man = Man::new(cmd.clone())
        .manual("egress-check manual")
        .source(format!("egress-check {}", egress_check_version()));
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    let mut roff = Roff::default();
    match description {
        Some(paragraphs) => {
            roff.control("SH", ["DESCRIPTION"]);
            for paragraph in paragraphs {
                roff.control("PP", []);
                roff.text([roman(*paragraph)]);
            }
            roff.to_writer(&mut out)?;
            roff = Roff::default();
        }
        None => man.render_description_section(&mut out)?,
    }
    man.render_options_section(&mut out)?;
    if cmd.get_subcommands().next().is_some() {
        man.render_subcommands_section(&mut out)?;
    }
    for section in sections {
        roff.control("SH", [section.title]);
        for entry in section.body {
            match entry {
                Entry::Text(text) => {
                    roff.control("PP", []);
                    roff.text([roman(text)]);
                }
                Entry::Tagged(term, text) => {
                    roff.control("TP", []);
                    roff.text([bold(term)]);
                    roff.text([roman(text)]);
                }
            }
        }
    }
    roff.to_writer(&mut out)?;
    // Subcommands carry no version of their own; their pages' footers show it.
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
}
