//! The results and what is printed on stdout: the table, one
//! `bench tool=...` line per result, and the targets (measured, not
//! asserted), in the old script's format.

use std::fmt::Write as _;

use crate::options::Sweep;

/// Which size a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// A probe set of this many probes.
    Probes(u32),
    /// The DNS variant.
    Dns,
    /// A sweep of every port ([`Sweep`]).
    Sweep(Sweep),
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `egress-check`, `nmap`, `nc`, `egress-check-resolve`...
    pub tool: String,
    /// The size it was measured at.
    pub size: Size,
    /// Probes (or domains) it stands for.
    pub probes: u32,
    /// Probes really run (fewer for nc above `--nc-cap`).
    pub ran: u32,
    /// Seconds (extrapolated for nc above the cap).
    pub wall: f64,
    /// Seconds (extrapolated likewise).
    pub cpu: f64,
    /// KiB.
    pub rss: u64,
    /// KiB.
    pub pss: u64,
    /// KiB.
    pub max1: u64,
    /// KiB: kernel memory of TCP sockets (slabs and buffers), apart.
    pub kernel: u64,
    /// How it was obtained, and whether its results were right.
    pub note: String,
}

/// Seconds with three decimals, as everywhere in the output.
pub fn secs(value: f64) -> String {
    format!("{value:.3}")
}

/// What the report needs to know besides the rows.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--timeout`, ms.
    pub timeout_ms: u64,
    /// `--dns-rtt`, ms.
    pub dns_rtt_ms: u64,
    /// CPUs available.
    pub cpus: usize,
    /// `/proc/loadavg`'s first three fields when the bench started.
    pub loadavg: String,
    /// The egress-check binary.
    pub binary: String,
    /// nmap's flags (per user and family), if nmap ran.
    pub nmap_flags: Option<String>,
    /// nc's `-w`, if the nc loop ran.
    pub nc_wait_s: Option<u64>,
    /// Domains resolved by the DNS variant.
    pub dns_domains: u32,
    /// Sizes asked for, in order.
    pub sizes: Vec<u32>,
}

/// The recorded rows.
#[derive(Debug, Default)]
pub struct Results {
    rows: Vec<Row>,
}

impl Results {
    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The row of `tool` at `size`.
    pub fn get(&self, tool: &str, size: Size) -> Option<&Row> {
        self.rows.iter().find(|r| r.tool == tool && r.size == size)
    }

    /// The whole stdout report.
    pub fn render(&self, cx: &Context, warnings: &[String]) -> String {
        let t = cx.timeout_ms as f64 / 1000.0;
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "egress-check bench: timeout {} s, {} CPUs, load average at start {}",
            secs(t),
            cx.cpus,
            cx.loadavg
        );
        let _ = writeln!(out, "binary: {}", cx.binary);
        if let Some(flags) = &cx.nmap_flags {
            let _ = writeln!(
                out,
                "nmap (per user and family, as the user, all at once): nmap [-6] {flags} -iL HOSTS"
            );
        }
        if let Some(w) = cx.nc_wait_s {
            let _ = writeln!(
                out,
                "nc (one after the other, as the user): setpriv --reuid=U --regid=U --init-groups nc -z -w {w} ADDR PORT"
            );
        }
        let _ = writeln!(out);
        let line = |out: &mut String, f: [&str; 12]| {
            let _ = writeln!(
                out,
                "{:<25} {:>6} {:>5} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}  {}",
                f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11]
            );
        };
        line(
            &mut out,
            [
                "tool", "probes", "ran", "wall_s", "cpu_s", "us/pr", "wall/T", "rss_kib",
                "pss_kib", "max1_kib", "kern_kib", "note",
            ],
        );
        for r in &self.rows {
            line(
                &mut out,
                [
                    &size_label(&r.tool, r.size),
                    &r.probes.to_string(),
                    &r.ran.to_string(),
                    &secs(r.wall),
                    &secs(r.cpu),
                    &format!("{:.1}", per_probe_us(r)),
                    &secs(r.wall / t),
                    &r.rss.to_string(),
                    &r.pss.to_string(),
                    &r.max1.to_string(),
                    &r.kernel.to_string(),
                    &r.note,
                ],
            );
        }
        out += "rss_kib: peak over 20 ms polls of the summed peak RSS (VmHWM) of the live processes of the tree;\n";
        out += "pss_kib: the same for Pss (shared pages split among their users: the memory really used);\n";
        out += "max1_kib: the largest single process (its VmHWM, polled likewise).  ran: probes really run (nc above --nc-cap).\n";
        out += "us/pr: CPU microseconds per probe.  kern_kib: peak kernel memory of TCP sockets (slabs + buffers, whole machine) less before the run.\n";
        let _ = writeln!(out);
        for r in &self.rows {
            let _ = writeln!(
                out,
                "bench tool={} probes={} timeout_s={} wall_s={} cpu_s={} rss_kib={}",
                size_label(&r.tool, r.size),
                r.probes,
                secs(t),
                secs(r.wall),
                secs(r.cpu),
                r.rss
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "targets (measured, not asserted):");
        for (met, text) in self.targets(cx) {
            let _ = writeln!(out, "  {:<4} {text}", if met { "met" } else { "MISS" });
        }
        if !warnings.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "warnings:");
            for w in warnings {
                let _ = writeln!(out, "  {w}");
            }
        }
        out
    }

    /// Each target that has its figures: whether it was met, and the line.
    fn targets(&self, cx: &Context) -> Vec<(bool, String)> {
        let t = cx.timeout_ms as f64 / 1000.0;
        let wall = |tool: &str, size: Size| self.get(tool, size).map(|r| r.wall);
        let mut out = Vec::new();
        for (n, factor, slack) in [(1024, 1.2, 0.2), (8192, 1.5, 0.5)] {
            if let Some(w) = wall("egress-check", Size::Probes(n)) {
                let limit = factor * t + slack;
                let (met, cmp) = if w <= limit {
                    (true, "<=")
                } else {
                    (false, ">")
                };
                out.push((
                    met,
                    format!(
                        "egress-check wall at {n} probes {} s {cmp} {factor} x timeout + {slack} = {} s",
                        secs(w),
                        secs(limit)
                    ),
                ));
            }
        }
        for &n in &cx.sizes {
            let size = Size::Probes(n);
            if let (Some(w), Some(nm)) = (wall("egress-check", size), wall("nmap", size)) {
                let (w_s, nm_s) = (secs(w), secs(nm));
                out.push(if w < nm {
                    (
                        true,
                        format!(
                            "egress-check faster than nmap at {n} probes ({w_s} s vs {nm_s} s)"
                        ),
                    )
                } else {
                    (
                        false,
                        format!(
                            "egress-check not faster than nmap at {n} probes ({w_s} s vs {nm_s} s)"
                        ),
                    )
                });
            }
        }
        if let Some(r) = self.get("egress-check", Size::Probes(8192)) {
            let (met, cmp) = if r.rss < 65536 {
                (true, "<")
            } else {
                (false, ">=")
            };
            out.push((
                met,
                format!(
                    "egress-check peak RSS at 8192 probes {} KiB {cmp} 64 MiB (PSS {} KiB)",
                    r.rss, r.pss
                ),
            ));
        }
        for sweep in [Sweep::Drop, Sweep::Allow, Sweep::Drop4, Sweep::Allow4] {
            let Some(r) = self.get("egress-check", Size::Sweep(sweep)) else {
                continue;
            };
            let name = sweep.name();
            let limit = match sweep {
                Sweep::Drop => Some((t + 1.0, "timeout + 1.0 s")),
                Sweep::Allow => Some((1.5, "1.5 s")),
                // 4 users: a figure, not a target.
                Sweep::Drop4 | Sweep::Allow4 => None,
            };
            if let Some((limit, what)) = limit {
                out.push(compare(
                    r.wall <= limit,
                    format!("egress-check wall at {name} {} s", secs(r.wall)),
                    format!("{what} = {} s", secs(limit)),
                ));
            }
            if matches!(sweep, Sweep::Drop | Sweep::Allow) {
                out.push(compare(
                    per_probe_us(r) <= 15.0,
                    format!("egress-check CPU at {name} {:.1} us/probe", per_probe_us(r)),
                    "15 us/probe".into(),
                ));
                out.push(compare(
                    r.pss < 65536,
                    format!("egress-check peak PSS at {name} {} KiB", r.pss),
                    format!("64 MiB (kernel socket memory apart: {} KiB)", r.kernel),
                ));
                if let Some(nm) = wall("nmap", Size::Sweep(sweep)) {
                    out.push(compare(
                        r.wall * 5.0 <= nm,
                        format!(
                            "egress-check at {name} {} s, {:.1}x faster than nmap's {} s: 5x",
                            secs(r.wall),
                            nm / r.wall,
                            secs(nm)
                        ),
                        String::new(),
                    ));
                }
            }
        }
        if let (Some(w), Some(w0)) = (
            wall("egress-check-resolve", Size::Dns),
            wall("egress-check-resolve-rtt0", Size::Dns),
        ) {
            // One round trip plus overhead: the overhead is the same resolve
            // without the delay; 25 ms of slack for noise.
            let rtt = cx.dns_rtt_ms as f64 / 1000.0;
            let limit = w0 + rtt + 0.025;
            let rounds = (w - w0) / rtt;
            let (met, cmp) = if w <= limit {
                (true, "<=")
            } else {
                (false, ">")
            };
            out.push((
                met,
                format!(
                    "resolve of {} MX domains {} s {cmp} RTT {} ms + overhead {} s (+25 ms) = {} s: {} round trips",
                    cx.dns_domains,
                    secs(w),
                    cx.dns_rtt_ms,
                    secs(w0),
                    secs(limit),
                    secs(rounds)
                ),
            ));
        }
        out
    }
}

/// The tool's name, with the sweep's for sweep rows (`egress-check@sweep-drop`).
fn size_label(tool: &str, size: Size) -> String {
    match size {
        Size::Sweep(sweep) => format!("{tool}@{}", sweep.name()),
        _ => tool.to_string(),
    }
}

/// CPU microseconds per probe of a row.
fn per_probe_us(r: &Row) -> f64 {
    r.cpu * 1e6 / f64::from(r.probes.max(1))
}

/// A target line: "WHAT <= LIMIT" when met, "WHAT > LIMIT" when missed (an
/// empty `limit` leaves the comparison to `what`).
fn compare(met: bool, what: String, limit: String) -> (bool, String) {
    if limit.is_empty() {
        return (met, what);
    }
    (
        met,
        format!("{what} {} {limit}", if met { "<=" } else { ">" }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tool: &str, size: Size, wall: f64, rss: u64) -> Row {
        Row {
            tool: tool.into(),
            size,
            probes: match size {
                Size::Probes(n) => n,
                Size::Dns => 200,
                Size::Sweep(sweep) => sweep.probes(),
            },
            ran: 0,
            wall,
            cpu: 0.056,
            rss,
            pss: 8634,
            max1: 6328,
            kernel: 0,
            note: "median of 3 (walls 1.042/1.026/1.025); ok".into(),
        }
    }

    #[test]
    fn the_report_has_the_old_format() {
        let mut results = Results::default();
        results.push(Row {
            ran: 1024,
            ..row("egress-check", Size::Probes(1024), 1.026, 43832)
        });
        results.push(row("nmap", Size::Probes(1024), 1.232, 218256));
        results.push(row("egress-check", Size::Probes(8192), 2.5, 102316));
        results.push(row("egress-check-resolve-rtt0", Size::Dns, 0.02, 1));
        results.push(row("egress-check-resolve", Size::Dns, 0.121, 1));
        let cx = Context {
            timeout_ms: 1000,
            dns_rtt_ms: 100,
            cpus: 2,
            loadavg: "1.68 0.79 0.31".into(),
            binary: "/b".into(),
            nmap_flags: Some("-sT".into()),
            nc_wait_s: None,
            dns_domains: 200,
            sizes: vec![1024, 8192],
        };
        let text = results.render(&cx, &["w1".into()]);
        assert!(text.contains(
            "egress-check bench: timeout 1.000 s, 2 CPUs, load average at start 1.68 0.79 0.31\n"
        ));
        assert!(text.contains(
            "egress-check                1024  1024    1.026   0.056    54.7   1.026    43832     8634     6328        0  median of 3 (walls 1.042/1.026/1.025); ok\n"
        ), "{text}");
        assert!(text.contains(
            "bench tool=nmap probes=1024 timeout_s=1.000 wall_s=1.232 cpu_s=0.056 rss_kib=218256\n"
        ));
        assert!(text.contains(
            "  met  egress-check wall at 1024 probes 1.026 s <= 1.2 x timeout + 0.2 = 1.400 s\n"
        ));
        assert!(text.contains(
            "  MISS egress-check wall at 8192 probes 2.500 s > 1.5 x timeout + 0.5 = 2.000 s\n"
        ));
        assert!(text.contains(
            "  met  egress-check faster than nmap at 1024 probes (1.026 s vs 1.232 s)\n"
        ));
        assert!(text.contains(
            "  MISS egress-check peak RSS at 8192 probes 102316 KiB >= 64 MiB (PSS 8634 KiB)\n"
        ));
        assert!(text.contains("  met  resolve of 200 MX domains 0.121 s <= RTT 100 ms + overhead 0.020 s (+25 ms) = 0.145 s: 1.010 round trips\n"), "{text}");
        assert!(text.ends_with("warnings:\n  w1\n"));

        let mut results = Results::default();
        results.push(row("egress-check", Size::Sweep(Sweep::Drop), 1.9, 1));
        results.push(row("nmap", Size::Sweep(Sweep::Drop), 65.0, 1));
        let text = results.render(&cx, &[]);
        assert!(
            text.contains(
                "  met  egress-check wall at sweep-drop 1.900 s <= timeout + 1.0 s = 2.000 s\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  met  egress-check CPU at sweep-drop 0.4 us/probe <= 15 us/probe\n"),
            "{text}"
        );
        assert!(text.contains("  met  egress-check at sweep-drop 1.900 s, 34.2x faster than nmap's 65.000 s: 5x\n"), "{text}");
        assert!(
            text.contains("bench tool=egress-check@sweep-drop probes=131070 "),
            "{text}"
        );
    }
}
