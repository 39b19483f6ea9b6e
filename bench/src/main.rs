//! `egress-check-bench` (run by `ci/bench`): times egress-check against nmap
//! and a loop of nc on the same probe set, in a throw-away namespace lab
//! with a simulated internet, and prints a table, one
//! `bench tool=NAME probes=N timeout_s=T wall_s=W cpu_s=C rss_kib=R` line
//! per tool and size, and which targets were met (measured, not asserted).
//!
//! - [`options`]: the command line (the old script's options);
//! - [`plan`]: the probe set of one size and its files;
//! - [`lab`]: the lab ([`egress_check::lab::Lab`]), its firewall and zone;
//! - [`measure`]: wall, CPU and memory of a process tree;
//! - [`tools`]: egress-check, nmap, nc and the DNS variant, and their checks;
//! - [`report`]: the output;
//! - [`signals`]: SIGINT and SIGTERM, which end the bench cleanly.
//!
//! Progress goes to stderr, the report to stdout. Exit status 0 unless the
//! bench itself could not run (2), or 128 + the signal when interrupted.

mod error;
mod lab;
mod measure;
mod options;
mod plan;
mod report;
mod signals;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::error::BenchError;
use crate::lab::{BenchLab, Sinks, DNS_DOMAINS};
use crate::options::{Options, Tool};
use crate::plan::{user_name, Plan, MAX_USERS};
use crate::report::Context;
use crate::tools::{Bench, Program, ALWAYS, NC, NMAP, SETPRIV};

/// Progress on stderr.
pub fn log(text: &str) {
    eprintln!("egress-check-bench: {text}");
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(BenchError::Interrupted(signal)) = e.downcast_ref::<BenchError>() {
                log(&format!(
                    "interrupted (signal {signal}); the lab is removed"
                ));
                return ExitCode::from(u8::try_from(128 + signal).unwrap_or(130));
            }
            eprintln!("egress-check-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether `name` is an executable file in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Every program the chosen tools need is installed.
fn check_programs(options: &Options) -> Result<(), BenchError> {
    let mut needed: Vec<&Program> = ALWAYS.iter().collect();
    if options.has(Tool::Nmap) || options.has(Tool::Nc) {
        needed.push(&SETPRIV);
    }
    if options.has(Tool::Nmap) {
        needed.push(&NMAP);
    }
    if options.has(Tool::Nc) {
        needed.push(&NC);
    }
    let missing: Vec<&&Program> = needed.iter().filter(|p| !on_path(p.name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&'static str> = missing.iter().map(|p| p.package).collect();
    packages.dedup();
    Err(BenchError::MissingPrograms {
        programs: missing.iter().map(|p| p.name).collect(),
        packages,
    })
}

/// `--bin`, or egress-check next to this program (ci/bench builds both into
/// the same target directory).
fn binary(options: &Options) -> Result<PathBuf, BenchError> {
    let (path, hint) = match &options.bin {
        Some(path) => (path.clone(), ""),
        None => {
            let me = std::env::current_exe().map_err(|error| BenchError::Io {
                context: "cannot find this program's path".into(),
                error,
            })?;
            (
                me.with_file_name("egress-check"),
                " (build it with `cargo build --release`, run ci/bench, or pass --bin)",
            )
        }
    };
    let executable = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if !executable {
        return Err(BenchError::Binary { path, hint });
    }
    std::fs::canonicalize(&path).map_err(|error| BenchError::Io {
        context: format!("cannot resolve {}", path.display()),
        error,
    })
}

/// Lifts the soft descriptor limit to the hard one, for every tool alike
/// (nmap sizes its parallelism by it; egress-check's workers raise their
/// own). Best effort, as the old script's `ulimit -n`.
fn raise_fd_limit() {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Where generated files go: `--keep DIR`, or a temporary directory removed
/// at the end.
enum Work {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Work {
    fn new(keep: Option<&Path>) -> Result<Work, BenchError> {
        match keep {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|error| BenchError::Io {
                    context: format!("cannot create {}", dir.display()),
                    error,
                })?;
                Ok(Work::Kept(dir.to_owned()))
            }
            None => tempfile::Builder::new()
                .prefix("ecb.")
                .tempdir()
                .map(Work::Temp)
                .map_err(|error| BenchError::Io {
                    context: "cannot create a temporary directory".into(),
                    error,
                }),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Work::Kept(dir) => dir,
            Work::Temp(dir) => dir.path(),
        }
    }
}

fn run(options: &Options) -> anyhow::Result<()> {
    signals::install()?;
    egress_check::lab::preflight()?;
    check_programs(options)?;
    let bin = binary(options)?;
    let users: Vec<String> = (1..=MAX_USERS).map(user_name).collect();
    egress_check_testkit::users::ensure_nologin(&users).context("creating the bench users")?;
    raise_fd_limit();
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let work = Work::new(options.keep.as_deref())?;
    let timeout = options.timeout;

    let dns_rtt = std::time::Duration::from_millis(options.dns_rtt);
    let lab = BenchLab::up(work.path(), dns_rtt, Sinks::AnyIp)?;
    // Built only when the sizes are done, so that it costs their figures nothing.
    let mut sweep_lab: Option<BenchLab> = None;
    let mut bench = Bench::new(options, &lab, &bin, work.path());
    for &n in &options.sizes {
        signals::check()?;
        let plan = Plan::new(n)?;
        plan.write(&work.path().join(n.to_string()), timeout)?;
        log(&format!(
            "size {n}: {} users (half dropped) x {} addresses x {} ports x 2 families",
            plan.users.len(),
            plan.v4.len(),
            plan::PORTS.len()
        ));
        if options.has(Tool::EgressCheck) {
            bench.egress_check(&plan)?;
        }
        if options.has(Tool::Nmap) {
            bench.nmap(&plan)?;
        }
        if options.has(Tool::Nc) {
            bench.nc(&plan)?;
        }
        bench.check_sink()?;
    }
    if !options.sweeps.is_empty() {
        let dir = work.path().join("sweep-lab");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        bench.lab = sweep_lab.insert(BenchLab::up(&dir, dns_rtt, Sinks::AnyPort)?);
    }
    for &sweep in &options.sweeps {
        signals::check()?;
        if options.has(Tool::EgressCheck) {
            bench.egress_check_sweep(sweep)?;
        }
        if options.has(Tool::Nmap) && sweep.users() == 1 {
            bench.nmap_sweep(sweep)?;
        }
        bench.check_sink()?;
    }
    bench.lab = &lab;
    if options.has(Tool::Dns) {
        bench.dns()?;
    }
    let cx = Context {
        timeout_ms: timeout,
        dns_rtt_ms: options.dns_rtt,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        loadavg,
        binary: bin.display().to_string(),
        nmap_flags: bench.nmap_flags.clone(),
        nc_wait_s: options
            .has(Tool::Nc)
            .then(|| tools::nc_wait_s(options.timeout)),
        dns_domains: DNS_DOMAINS,
        sizes: options.sizes.clone(),
    };
    print!("{}", bench.results.render(&cx, &bench.warnings));
    drop(bench);
    if let Some(sweep_lab) = sweep_lab {
        sweep_lab.teardown()?;
    }
    lab.teardown()?;
    if let Work::Kept(dir) = &work {
        log(&format!("kept files in {}", dir.display()));
    }
    Ok(())
}
