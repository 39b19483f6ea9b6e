//! The tools, run on the same probes as the old script ran them, and the
//! checks that their results are right (dropped users' probes time out,
//! allowed users' connect):
//!
//! - `egress-check run SCENARIO --format json --timeout T --netns HOST`;
//! - nmap: one `setpriv --reuid=U --regid=U --init-groups --reset-env nmap
//!   [-6] -sT -Pn -n ... -iL - -oG -` per user and family, all at once, in the
//!   host namespace, each reading its family's host list on stdin;
//! - nc: `setpriv --reuid=U --regid=U --init-groups nc -z -w T ADDR PORT`
//!   per probe, one after the other, in the host namespace (capped at
//!   `--nc-cap` probes, larger sizes extrapolated);
//! - DNS: `egress-check resolve` of the 200 MX domains without and with the
//!   added round-trip time, and `egress-check run` over them.
//!
//! egress-check enters the namespace itself (`--netns`); nmap and nc are
//! started from a thread inside it, as the old script started them from a
//! shell under `ip netns exec`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::BenchError;
use crate::lab::{domains, in_netns, BenchLab, DNS_DOMAINS};
use crate::measure::{exit_code, measure, Measurement, Tracker};
use crate::options::{Options, Sweep};
use crate::plan::{dropped, mx_scenario, sink_v4, sink_v6, user_name, Plan, PORTS};
use crate::report::{secs, Results, Row, Size};
use crate::signals;

/// A program a tool needs, and the Debian package that has it.
pub struct Program {
    /// Looked up on `PATH`.
    pub name: &'static str,
    /// For `ci/deps`.
    pub package: &'static str,
}

/// What every run needs: the lab's plumbing and the users.
pub const ALWAYS: &[Program] = &[
    Program {
        name: "ip",
        package: "iproute2",
    },
    Program {
        name: "iptables-restore",
        package: "iptables",
    },
    Program {
        name: "ip6tables-restore",
        package: "iptables",
    },
    Program {
        name: "useradd",
        package: "passwd",
    },
];
/// What nmap and nc need besides themselves.
pub const SETPRIV: Program = Program {
    name: "setpriv",
    package: "util-linux",
};
/// nmap.
pub const NMAP: Program = Program {
    name: "nmap",
    package: "nmap",
};
/// nc (OpenBSD's: `-z` and `-w` as used here).
pub const NC: Program = Program {
    name: "nc",
    package: "netcat-openbsd",
};

/// One run's figures and whether its results were right.
struct Run {
    m: Measurement,
    verdict: String,
}

/// The bench in progress: the lab, where files go, and what was measured.
pub struct Bench<'a> {
    options: &'a Options,
    /// The lab the next measurements run in: the sizes' or the sweeps'
    /// ([`crate::lab::Sinks`]).
    pub lab: &'a BenchLab,
    bin: &'a Path,
    work: &'a Path,
    /// The rows so far.
    pub results: Results,
    /// Wrong results and other trouble, reported at the end.
    pub warnings: Vec<String>,
    /// nmap's flags at the last size it ran, for the report.
    pub nmap_flags: Option<String>,
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> BenchError {
    move |error| BenchError::Io { context, error }
}

fn create(path: &Path) -> Result<File, BenchError> {
    File::create(path).map_err(io_err(format!("cannot create {}", path.display())))
}

fn open(path: &Path) -> Result<File, BenchError> {
    File::open(path).map_err(io_err(format!("cannot open {}", path.display())))
}

/// `PATH` with `.err` appended to the file name.
fn err_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".err");
    PathBuf::from(name)
}

/// The first 300 bytes of a file, for a verdict.
fn head(path: &Path) -> String {
    let text = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&text[..text.len().min(300)]).into_owned()
}

/// The nmap flags for a timeout of `timeout_ms` and `n` probes per process:
/// connect scan, no ping, no DNS, no retransmission, every unanswered probe
/// waits exactly the timeout (RTT timeouts pinned), as many connects in
/// flight as there are probes in the run (nmap caps it by its descriptor
/// limit), all hosts in one group, no scan delay.
pub fn nmap_flags(timeout_ms: u64, n: u32) -> Vec<String> {
    nmap_flags_for(
        timeout_ms,
        n,
        &PORTS.map(|p| p.to_string()).join(","),
        timeout_ms * 10 + 10000,
    )
}

/// [`nmap_flags`] for the port list `ports` (`1-65535` for a sweep: `-p-`)
/// and a host timeout of `host_timeout_ms` (a sweep of dropped ports takes
/// nmap a minute or more: the default line's 20 s would end it unfinished,
/// with no port reported).
pub fn nmap_flags_for(timeout_ms: u64, n: u32, ports: &str, host_timeout_ms: u64) -> Vec<String> {
    let t = format!("{timeout_ms}ms");
    [
        "-sT",
        "-Pn",
        "-n",
        "-p",
        ports,
        "--max-retries",
        "0",
        "--initial-rtt-timeout",
        &t,
        "--min-rtt-timeout",
        &t,
        "--max-rtt-timeout",
        &t,
        "--min-parallelism",
        &n.to_string(),
        "--min-hostgroup",
        "256",
        "--max-scan-delay",
        "0",
        "--host-timeout",
        &format!("{host_timeout_ms}ms"),
    ]
    .map(String::from)
    .to_vec()
}

/// `setpriv` arguments that run the rest as `user` (uid, gid, groups).
fn as_user(user: &str) -> [String; 3] {
    [
        format!("--reuid={user}"),
        format!("--regid={user}"),
        "--init-groups".into(),
    ]
}

impl<'a> Bench<'a> {
    /// A bench writing to `work`.
    pub fn new(options: &'a Options, lab: &'a BenchLab, bin: &'a Path, work: &'a Path) -> Self {
        Bench {
            options,
            lab,
            bin,
            work,
            results: Results::default(),
            warnings: Vec::new(),
            nmap_flags: None,
        }
    }

    fn warn(&mut self, text: String) {
        crate::log(&format!("WARNING: {text}"));
        self.warnings.push(text);
    }

    fn timeout_arg(&self) -> String {
        format!("{}ms", self.options.timeout)
    }

    fn record(&mut self, row: Row) {
        crate::log(&format!(
            "  -> {} probes={} wall={} s cpu={} s rss={} KiB pss={} KiB ({})",
            row.tool,
            row.probes,
            secs(row.wall),
            secs(row.cpu),
            row.rss,
            row.pss,
            row.note
        ));
        self.results.push(row);
    }

    /// Runs `once` `--repeat` times and records the run with the median
    /// wall time. `once` measures one run and says whether it was right.
    fn repeated(
        &mut self,
        tool: &str,
        size: Size,
        probes: u32,
        once: impl FnMut(&Self) -> Result<Run, BenchError>,
    ) -> Result<(), BenchError> {
        self.repeated_n(tool, size, probes, self.options.repeat, once)
    }

    /// [`Bench::repeated`], `repeat` times.
    fn repeated_n(
        &mut self,
        tool: &str,
        size: Size,
        probes: u32,
        repeat: u32,
        mut once: impl FnMut(&Self) -> Result<Run, BenchError>,
    ) -> Result<(), BenchError> {
        let mut runs = Vec::new();
        for r in 1..=repeat {
            signals::check()?;
            let run = once(self)?;
            if run.verdict != "ok" {
                self.warn(format!(
                    "{tool} at {probes} probes, run {r}: {}",
                    run.verdict
                ));
            }
            crate::log(&format!(
                "  {tool} run {r}/{repeat}: wall {} s, cpu {} s, rss {} KiB, pss {} KiB, {}",
                secs(run.m.wall.as_secs_f64()),
                secs(run.m.cpu.as_secs_f64()),
                run.m.rss_kib,
                run.m.pss_kib,
                run.verdict
            ));
            runs.push(run);
        }
        let walls = runs
            .iter()
            .map(|r| secs(r.m.wall.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("/");
        let mut order: Vec<&Run> = runs.iter().collect();
        order.sort_by_key(|r| r.m.wall);
        let median = order[order.len().div_ceil(2) - 1];
        self.record(Row {
            tool: tool.into(),
            size,
            probes,
            ran: probes,
            wall: median.m.wall.as_secs_f64(),
            cpu: median.m.cpu.as_secs_f64(),
            rss: median.m.rss_kib,
            pss: median.m.pss_kib,
            max1: median.m.max1_kib,
            kernel: median.m.kernel_kib,
            note: format!(
                "median of {repeat} (walls {walls}){}; {}",
                if median.m.sampled {
                    ""
                } else {
                    ", memory not sampled (ended before the first poll)"
                },
                median.verdict
            ),
        });
        Ok(())
    }

    /// Runs the egress-check binary with `args`, stdout to `out`, stderr to
    /// `out.err`, and measures it; returns the run and its exit code.
    fn measure_bin(&self, args: &[&str], out: &Path) -> Result<(Measurement, i32), BenchError> {
        let stdout = create(out)?;
        let stderr = create(&err_path(out))?;
        let mut cmd = Command::new(self.bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        measure(|t: &mut Tracker| Ok(exit_code(&t.run(&mut cmd)?)))
    }

    /// egress-check on the probe set.
    pub fn egress_check(&mut self, plan: &Plan) -> Result<(), BenchError> {
        let dir = self.work.join(plan.n.to_string());
        let scenario = dir.join("scenario.toml");
        let out = dir.join("ec.json");
        crate::log(&format!("egress-check, {} probes", plan.n));
        self.repeated("egress-check", Size::Probes(plan.n), plan.n, |b| {
            let (m, code) = b.measure_bin(
                &[
                    "run",
                    &scenario.to_string_lossy(),
                    "--format",
                    "json",
                    "--timeout",
                    &b.timeout_arg(),
                    "--netns",
                    b.lab.host_name(),
                ],
                &out,
            )?;
            Ok(Run {
                m,
                verdict: check_ec(plan, &out, code),
            })
        })
    }

    /// nmap, one process per user and family, all at once.
    pub fn nmap(&mut self, plan: &Plan) -> Result<(), BenchError> {
        let dir = self.work.join(plan.n.to_string());
        let nmap_dir = dir.join("nmap");
        fs::create_dir_all(&nmap_dir)
            .map_err(io_err(format!("cannot create {}", nmap_dir.display())))?;
        // Each nmap process gets one user's share of one family.
        let per_run = plan.n / plan.users.len() as u32 / 2;
        let flags = nmap_flags(self.options.timeout, per_run);
        self.nmap_flags = Some(flags.join(" "));
        crate::log(&format!(
            "nmap, {} probes ({} processes)",
            plan.n,
            plan.users.len() * 2
        ));
        self.repeated("nmap", Size::Probes(plan.n), plan.n, |b| {
            let errors = nmap_dir.join("errors");
            let mut commands = Vec::new();
            for user in &plan.users {
                for family in ["v4", "v6"] {
                    let mut cmd = Command::new("setpriv");
                    cmd.args(as_user(&user.name)).arg("--reset-env").arg("nmap");
                    if family == "v6" {
                        cmd.arg("-6");
                    }
                    let append = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&errors)
                        .map_err(io_err(format!("cannot open {}", errors.display())))?;
                    cmd.args(&flags)
                        .args(["-iL", "-", "-oG", "-"])
                        .stdin(open(&dir.join(format!("{family}.txt")))?)
                        .stdout(create(
                            &nmap_dir.join(format!("{}.{family}.gnmap", user.name)),
                        )?)
                        .stderr(append);
                    commands.push(cmd);
                }
            }
            let (m, code) = in_netns(b.lab.host_ns(), || measure_all(&mut commands))?;
            Ok(Run {
                m,
                verdict: check_nmap(plan, &nmap_dir, code),
            })
        })
    }

    /// The nc loop: one probe after the other, each as its user; above
    /// `--nc-cap` a sample, with wall and CPU time scaled up.
    pub fn nc(&mut self, plan: &Plan) -> Result<(), BenchError> {
        let dir = self.work.join(plan.n.to_string());
        let wait_s = nc_wait_s(self.options.timeout);
        let sample = plan.nc_sample(self.options.nc_cap);
        let ran = u32::try_from(sample.len()).expect("at most --nc-cap");
        let listing: String = sample
            .iter()
            .map(|p| {
                let u = &plan.users[p.user];
                format!("{} {} {} {}\n", u.name, u.state(), p.addr, p.port)
            })
            .collect();
        let probes_file = dir.join("nc-probes.txt");
        fs::write(&probes_file, listing)
            .map_err(io_err(format!("cannot write {}", probes_file.display())))?;
        crate::log(&format!(
            "nc loop, {} probes (running {ran}; about {} s)",
            plan.n,
            u64::from(ran / 2) * wait_s
        ));
        let out_path = dir.join("nc.out");
        let mut out = create(&out_path)?;
        let (m, good) = in_netns(self.lab.host_ns(), || {
            measure(|t| {
                let mut good = 0;
                for p in &sample {
                    signals::check()?;
                    let user = &plan.users[p.user];
                    let status = t.run(
                        Command::new("setpriv")
                            .args(as_user(&user.name))
                            .args(["nc", "-z", "-w", &wait_s.to_string()])
                            .arg(p.addr.to_string())
                            .arg(p.port.to_string())
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null()),
                    )?;
                    let connected = exit_code(&status) == 0;
                    if connected != user.dropped {
                        good += 1;
                    }
                    let outcome = if connected { "connected" } else { "failed" };
                    writeln!(out, "{} {} {outcome}", user.name, user.state())
                        .map_err(io_err(format!("cannot write {}", out_path.display())))?;
                }
                Ok(good)
            })
        })?;
        let mut verdict = "ok".to_owned();
        if good != sample.len() {
            verdict = format!("WRONG: {good} of {ran} probes as expected");
            self.warn(format!("nc at {} probes: {verdict}", plan.n));
        }
        let (mut wall, mut cpu) = (m.wall.as_secs_f64(), m.cpu.as_secs_f64());
        let mut note = "measured".to_owned();
        if !self.options.timeout.is_multiple_of(1000) {
            note += &format!(" with -w {wait_s} (nc knows only whole seconds)");
        }
        if ran < plan.n {
            let scale = f64::from(plan.n) / f64::from(ran);
            note = format!("extrapolated from {ran} probes (wall {} s)", secs(wall));
            wall *= scale;
            cpu *= scale;
        }
        self.record(Row {
            tool: "nc".into(),
            size: Size::Probes(plan.n),
            probes: plan.n,
            ran,
            wall,
            cpu,
            rss: m.rss_kib,
            pss: m.pss_kib,
            max1: m.max1_kib,
            kernel: m.kernel_kib,
            note: format!("{note}; {verdict}"),
        });
        Ok(())
    }

    /// Warns if the sinks' listen queues overflowed so far.
    pub fn check_sink(&mut self) -> Result<(), BenchError> {
        let trouble = self.lab.queue_trouble()?;
        if !trouble.is_empty() {
            let counters = trouble
                .iter()
                .map(|(name, value)| format!("TcpExt{name}={value}"))
                .collect::<Vec<_>>()
                .join(" ");
            self.warn(format!(
                "the sink's listen queues overflowed (so far): {counters}"
            ));
        }
        Ok(())
    }

    /// The DNS variant: resolve without and with the round-trip time, then a
    /// run over the MX domains.
    pub fn dns(&mut self) -> Result<(), BenchError> {
        let dir = self.work.join("dns");
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let domains = domains();
        let nameserver = self.lab.nameserver().to_string();
        let resolve = |b: &Self, out: &Path| -> Result<Run, BenchError> {
            let mut args = vec!["resolve"];
            args.extend(domains.iter().map(String::as_str));
            args.extend([
                "--format",
                "json",
                "--nameserver",
                &nameserver,
                "--netns",
                b.lab.host_name(),
            ]);
            let (m, code) = b.measure_bin(&args, out)?;
            Ok(Run {
                m,
                verdict: check_resolve(out, code),
            })
        };

        let result = (|| {
            crate::log(&format!(
                "dns: egress-check resolve of {DNS_DOMAINS} MX domains (resolver RTT ~0)"
            ));
            self.lab.set_dns_rtt(false);
            let out = dir.join("resolve0.json");
            self.repeated("egress-check-resolve-rtt0", Size::Dns, DNS_DOMAINS, |b| {
                resolve(b, &out)
            })?;

            crate::log(&format!(
                "dns: egress-check resolve of {DNS_DOMAINS} MX domains (resolver RTT {} ms)",
                self.options.dns_rtt
            ));
            self.lab.set_dns_rtt(true);
            let out = dir.join("resolve.json");
            self.repeated("egress-check-resolve", Size::Dns, DNS_DOMAINS, |b| {
                resolve(b, &out)
            })?;

            let scenario = dir.join("mx.toml");
            fs::write(&scenario, mx_scenario(&domains, self.options.timeout)?)
                .map_err(io_err(format!("cannot write {}", scenario.display())))?;
            crate::log(&format!(
                "dns: egress-check run over the {DNS_DOMAINS} MX domains ({} probes)",
                DNS_DOMAINS * 4
            ));
            let out = dir.join("mx.json");
            self.repeated("egress-check-mx", Size::Dns, DNS_DOMAINS * 4, |b| {
                let (m, code) = b.measure_bin(
                    &[
                        "run",
                        &scenario.to_string_lossy(),
                        "--format",
                        "json",
                        "--timeout",
                        &b.timeout_arg(),
                        "--nameserver",
                        &nameserver,
                        "--netns",
                        b.lab.host_name(),
                    ],
                    &out,
                )?;
                Ok(Run {
                    m,
                    verdict: check_mx(&out, code),
                })
            })
        })();
        self.lab.set_dns_rtt(false);
        result
    }
}

/// The users of `sweep`: the first dropped (odd) or allowed (even) ones.
fn sweep_users(sweep: Sweep) -> Vec<String> {
    (1..)
        .filter(|&i| dropped(i) == sweep.dropped())
        .take(sweep.users() as usize)
        .map(user_name)
        .collect()
}

/// egress-check's scenario for `sweep`: every port of the first sink
/// address of each family.
fn sweep_scenario(sweep: Sweep, timeout_ms: u64) -> String {
    let users = sweep_users(sweep)
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "# ci/bench: {}: {} users x 65535 ports x 2 families\n\
         timeout = \"{timeout_ms}ms\"\n\n\
         [[target]]\nname = \"sweep\"\naddress = [\"{}\", \"{}\"]\nports = [\"1-65535\"]\n\n\
         [[check]]\nas = [{users}]\nexpect = \"{}\"\n",
        sweep.name(),
        sweep.users(),
        sink_v4(1),
        sink_v6(1),
        if sweep.dropped() { "deny" } else { "allow" }
    )
}

impl Bench<'_> {
    /// egress-check on `sweep`, with the human (range) report on stdout, as
    /// a person running it would, and the compact JSON report for the check.
    pub fn egress_check_sweep(&mut self, sweep: Sweep) -> Result<(), BenchError> {
        let dir = self.work.join(sweep.name());
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let scenario = dir.join("scenario.toml");
        fs::write(&scenario, sweep_scenario(sweep, self.options.timeout))
            .map_err(io_err(format!("cannot write {}", scenario.display())))?;
        let (human, json) = (dir.join("ec.txt"), dir.join("ec.json"));
        let output = format!("json-compact={}", json.display());
        crate::log(&format!(
            "egress-check, {} ({} probes)",
            sweep.name(),
            sweep.probes()
        ));
        self.repeated("egress-check", Size::Sweep(sweep), sweep.probes(), |b| {
            let _ = fs::remove_file(&json);
            let (m, code) = b.measure_bin(
                &[
                    "run",
                    &scenario.to_string_lossy(),
                    "--output",
                    &output,
                    "--timeout",
                    &b.timeout_arg(),
                    "--netns",
                    b.lab.host_name(),
                ],
                &human,
            )?;
            Ok(Run {
                m,
                verdict: check_sweep(sweep, &json, code),
            })
        })
    }

    /// nmap `-sT -p-` on `sweep`'s address, one process per family, both at
    /// once, as its (one) user; run once.
    pub fn nmap_sweep(&mut self, sweep: Sweep) -> Result<(), BenchError> {
        let dir = self.work.join(sweep.name()).join("nmap");
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let user = sweep_users(sweep).remove(0);
        let flags = nmap_flags_for(self.options.timeout, 65_535, "1-65535", 900_000);
        crate::log(&format!(
            "nmap, {} (2 processes, -p 1-65535 = -p-; about a minute)",
            sweep.name()
        ));
        self.repeated_n("nmap", Size::Sweep(sweep), sweep.probes(), 1, |b| {
            let mut commands = Vec::new();
            for (family, addr) in [
                ("v4", sink_v4(1).to_string()),
                ("v6", sink_v6(1).to_string()),
            ] {
                let mut cmd = Command::new("setpriv");
                cmd.args(as_user(&user)).arg("--reset-env").arg("nmap");
                if family == "v6" {
                    cmd.arg("-6");
                }
                cmd.args(&flags)
                    .args(["-oG", "-", &addr])
                    .stdin(Stdio::null())
                    .stdout(create(&dir.join(format!("{family}.gnmap")))?)
                    .stderr(create(&dir.join(format!("{family}.err")))?);
                commands.push(cmd);
            }
            let (m, code) = in_netns(b.lab.host_ns(), || measure_all(&mut commands))?;
            let mut counts = (0, 0, 0);
            for family in ["v4", "v6"] {
                let text =
                    fs::read_to_string(dir.join(format!("{family}.gnmap"))).unwrap_or_default();
                let (o, f, x) = gnmap_states(&text);
                counts = (counts.0 + o, counts.1 + f, counts.2 + x);
            }
            // The sweep lab's sinks answer on every port.
            let want = if sweep.dropped() {
                (0, 131_070, 0)
            } else {
                (131_070, 0, 0)
            };
            let verdict = if counts == want && code == 0 {
                "ok".into()
            } else {
                format!(
                    "WRONG: open {} filtered {} other {} (want {want:?}), exit {code}",
                    counts.0, counts.1, counts.2
                )
            };
            Ok(Run { m, verdict })
        })
    }
}

/// The sweep's compact report: every probe once, dropped users' all timed
/// out, allowed users' all connected (the sweep lab answers on every port),
/// all passed; nothing inconclusive. Kernel limits the run reported
/// (`limits`) are named.
fn check_sweep(sweep: Sweep, report: &Path, code: i32) -> String {
    let Some(json) = read_json(report) else {
        return format!(
            "report is not JSON (exit {code}): {}",
            head(&err_path(report))
        );
    };
    let mut by_observed = std::collections::BTreeMap::<String, u64>::new();
    for r in json["probe_ranges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        *by_observed
            .entry(r["observed"].as_str().unwrap_or("?").to_owned())
            .or_default() += r["probes"].as_u64().unwrap_or(0);
    }
    let n = u64::from(sweep.probes());
    let observed = if sweep.dropped() {
        "timeout"
    } else {
        "connected"
    };
    let want: std::collections::BTreeMap<String, u64> = [(observed.to_owned(), n)].into();
    let want_code = 0;
    let limits = json["limits"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|l| !l.is_empty())
        .map(|l| format!(" (limited by {l})"))
        .unwrap_or_default();
    if by_observed == want && code == want_code && json["inconclusive"] == 0 {
        format!("ok{limits}")
    } else {
        format!(
            "WRONG: {by_observed:?} (want {want:?}), inconclusive {}, exit {code} (want {want_code}){limits}",
            json["inconclusive"]
        )
    }
}

/// nc's `-w`: the timeout rounded up to whole seconds.
pub fn nc_wait_s(timeout_ms: u64) -> u64 {
    timeout_ms.div_ceil(1000)
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// egress-check's report has every probe, the dropped users' timed out, the
/// allowed users' connected, and all passed.
fn check_ec(plan: &Plan, report: &Path, code: i32) -> String {
    let Some(json) = read_json(report) else {
        return format!(
            "report is not JSON (exit {code}): {}",
            head(&err_path(report))
        );
    };
    let dropped_users: Vec<&str> = plan
        .users
        .iter()
        .filter(|u| u.dropped)
        .map(|u| u.name.as_str())
        .collect();
    let probes = json["probes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let (mut timeout, mut connected) = (0, 0);
    for p in probes {
        let is_dropped = p["user"]
            .as_str()
            .is_some_and(|u| dropped_users.contains(&u));
        match (is_dropped, p["observed"].as_str()) {
            (true, Some("timeout")) => timeout += 1,
            (false, Some("connected")) => connected += 1,
            _ => {}
        }
    }
    let n = probes.len();
    let half = plan.n as usize / 2;
    if n != plan.n as usize || timeout != half || connected != half || code != 0 {
        format!(
            "WRONG: {n} probes (want {}), {timeout} timeout + {connected} connected (want {half} each), passed {} failed {} inconclusive {}, exit {code}",
            plan.n, json["passed"], json["failed"], json["inconclusive"]
        )
    } else {
        "ok".into()
    }
}

/// Port states in nmap's grepable output: `(open, filtered, other)`.
fn gnmap_states(text: &str) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for line in text.lines() {
        // Ports in a state nmap left out of the list, counted: "Ignored
        // State: filtered (65535)" (a sweep of a dropped user).
        if let Some((_, ignored)) = line.split_once("Ignored State: ") {
            let mut words = ignored.split_whitespace();
            if let (Some(state), Some(n)) = (words.next(), words.next()) {
                let n: usize = n
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .parse()
                    .unwrap_or(0);
                match state {
                    "open" => counts.0 += n,
                    "filtered" => counts.1 += n,
                    _ => counts.2 += n,
                }
            }
        }
        let Some((_, ports)) = line.split_once("Ports: ") else {
            continue;
        };
        // Fields are tab separated; ports within the field by ", ".
        let ports = ports.split('\t').next().unwrap_or("");
        for port in ports.split(", ") {
            let mut fields = port.split('/');
            let (state, proto) = (fields.nth(1), fields.next());
            match (state, proto) {
                (Some("open"), Some("tcp")) => counts.0 += 1,
                (Some("filtered"), Some("tcp")) => counts.1 += 1,
                (Some(_), Some("tcp")) => counts.2 += 1,
                _ => {}
            }
        }
    }
    counts
}

/// The dropped users' ports all filtered, the allowed users' open.
fn check_nmap(plan: &Plan, nmap_dir: &Path, code: i32) -> String {
    let (mut open, mut filtered, mut other) = (0, 0, 0);
    let mut bad = String::new();
    for user in &plan.users {
        let mut counts = (0, 0, 0);
        for family in ["v4", "v6"] {
            let text = fs::read_to_string(nmap_dir.join(format!("{}.{family}.gnmap", user.name)))
                .unwrap_or_default();
            let (o, f, x) = gnmap_states(&text);
            counts = (counts.0 + o, counts.1 + f, counts.2 + x);
        }
        open += counts.0;
        filtered += counts.1;
        other += counts.2;
        if user.dropped && counts.0 != 0 {
            bad += &format!(" {}:open={}", user.name, counts.0);
        }
        if !user.dropped && counts.1 != 0 {
            bad += &format!(" {}:filtered={}", user.name, counts.1);
        }
    }
    let half = plan.n as usize / 2;
    if open != half || filtered != half || code != 0 || !bad.is_empty() {
        format!("WRONG: {open} open + {filtered} filtered + {other} other (want {half} + {half}), exit {code}{bad}")
    } else {
        "ok".into()
    }
}

/// How many addresses are listed under the `addresses` keys anywhere in
/// `value` (jq's `[.. | objects | select(has("addresses")) | .addresses[]]`).
fn count_addresses(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            let here = match map.get("addresses") {
                Some(Value::Array(list)) => list.len(),
                Some(Value::Object(map)) => map.len(),
                _ => 0,
            };
            here + map.values().map(count_addresses).sum::<usize>()
        }
        Value::Array(list) => list.iter().map(count_addresses).sum(),
        _ => 0,
    }
}

/// Every domain resolved to its exchange's two addresses.
fn check_resolve(out: &Path, code: i32) -> String {
    let good = read_json(out)
        .and_then(|json| {
            json.as_array().map(|domains| {
                domains
                    .iter()
                    .filter(|d| !matches!(d["status"].as_str(), Some("failed" | "null-mx")))
                    .filter(|d| count_addresses(d) == 2)
                    .count()
            })
        })
        .map_or(-1, |n| i64::try_from(n).unwrap_or(-1));
    if good == i64::from(DNS_DOMAINS) && code == 0 {
        "ok".into()
    } else {
        format!(
            "WRONG: {good} of {DNS_DOMAINS} domains resolved to 2 addresses, exit {code}: {}",
            head(&err_path(out))
        )
    }
}

/// The MX run: `ecb-u01`'s probes timed out, `ecb-u02`'s connected.
fn check_mx(report: &Path, code: i32) -> String {
    let (n, timeout, connected) = read_json(report)
        .and_then(|json| {
            let probes = json["probes"].as_array()?.clone();
            let count = |user: &str, observed: &str| {
                probes
                    .iter()
                    .filter(|p| p["user"] == user && p["observed"] == observed)
                    .count() as i64
            };
            Some((
                probes.len() as i64,
                count(&user_name(1), "timeout"),
                count(&user_name(2), "connected"),
            ))
        })
        .unwrap_or((-1, -1, -1));
    let want = i64::from(DNS_DOMAINS) * 2;
    if n == 2 * want && timeout == want && connected == want && code == 0 {
        "ok".into()
    } else {
        format!(
            "WRONG: {n} probes (want {}), {timeout} timeout + {connected} connected (want {want} each), exit {code}: {}",
            2 * want,
            head(&err_path(report))
        )
    }
}

/// Starts every command of `commands` at once (nmap, one per family) and measures them
/// together until the last ends; the exit code is the first non-zero one.
fn measure_all(commands: &mut [Command]) -> Result<(Measurement, i32), BenchError> {
    measure(|t| {
        let mut pids = Vec::new();
        for cmd in commands.iter_mut() {
            pids.push(t.spawn(cmd)?);
        }
        let mut code = 0;
        for pid in pids {
            let c = exit_code(&t.wait(pid)?);
            if code == 0 {
                code = c;
            }
        }
        Ok(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmap_flags_as_the_old_script_built_them() {
        assert_eq!(
            nmap_flags(1000, 256).join(" "),
            "-sT -Pn -n -p 25,587 --max-retries 0 --initial-rtt-timeout 1000ms \
             --min-rtt-timeout 1000ms --max-rtt-timeout 1000ms --min-parallelism 256 \
             --min-hostgroup 256 --max-scan-delay 0 --host-timeout 20000ms"
        );
        assert_eq!(nc_wait_s(1000), 1);
        assert_eq!(nc_wait_s(1500), 2);
        assert_eq!(nc_wait_s(250), 1);
    }

    #[test]
    fn gnmap_port_states_are_counted() {
        let text = "# Nmap 7.93 scan initiated\n\
            Host: 203.0.113.1 ()\tStatus: Up\n\
            Host: 203.0.113.1 ()\tPorts: 25/open/tcp//smtp///, 587/filtered/tcp//submission///\n\
            Host: 2001:db8:200::2 ()\tPorts: 25/closed/tcp//smtp///\tIgnored State: filtered (1)\n";
        assert_eq!(gnmap_states(text), (1, 2, 1));
    }

    #[test]
    fn addresses_are_counted_anywhere() {
        let json: Value = serde_json::from_str(
            r#"{"status":"ok","exchanges":[{"addresses":["a","b"]},{"x":{"addresses":["c"]}}]}"#,
        )
        .unwrap();
        assert_eq!(count_addresses(&json), 3);
    }
}
