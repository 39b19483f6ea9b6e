//! Command line options, with the old `ci/bench`'s names, defaults and
//! checks: a size that cannot be laid out as users x addresses x ports x
//! families is refused before anything is built.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::plan::{shape, ShapeError};

/// What `--help` says below the summary.
const LONG_ABOUT: &str = "\
Times egress-check against nmap and a loop of nc on the same probe set, in a \
throw-away namespace lab with a simulated internet (egress_check::lab::Lab): \
every address of 203.0.113.0/24 and 2001:db8:200::/64 answers on TCP 25 and \
587, users ecb-u01..ecb-u16 (created once, kept) probe it, and the host \
namespace's iptables and ip6tables DROP the odd users' packets (their probes \
time out) and let the even ones through (theirs connect). A DNS server in the \
lab answers dN.bench.test MX mx.dN.bench.test (A + AAAA), with --dns-rtt \
added to every answer while the DNS round trip is measured.

Measured per tool and size: wall time (launch to exit), CPU time (user + \
system of the process tree: the rusage of the reaped children, which \
includes their reaped descendants) and memory: /proc is polled every 20 ms, \
and the VmHWM (peak RSS so far) and Pss of the tree's live processes are \
summed; the largest sums are reported, and the largest single process \
(max1_kib). Targets are measured, not asserted.

On stdout: a table, one line per tool and size \
`bench tool=NAME probes=N timeout_s=T wall_s=W cpu_s=C rss_kib=R`, and which \
targets were met. Exit status 0 unless the bench itself could not run (2), \
130 or 143 when interrupted (the lab is removed first). Needs root.";

/// The options.
#[derive(Debug, Parser)]
#[command(
    name = "egress-check-bench",
    version,
    about = "Times egress-check against nmap and a loop of nc in a namespace lab",
    long_about = LONG_ABOUT
)]
pub struct Options {
    /// Per-connect timeout for every tool, e.g. 1s, 1.5s, 500ms, or plain
    /// seconds (nc rounds up to whole seconds, the only unit its -w knows)
    #[arg(long, default_value = "1s", value_parser = parse_positive_ms, value_name = "DURATION")]
    pub timeout: u64,
    /// Probe counts (users x addresses x ports x families), comma separated;
    /// each must be a multiple of 4 x users (users: 4 up to 256 probes, 8 up
    /// to 2048, else 16; 2 ports; both families), at most 254 addresses per
    /// family
    #[arg(long, value_delimiter = ',', default_value = "128,1024,8192", value_parser = parse_size, value_name = "LIST")]
    pub sizes: Vec<u32>,
    /// Sweeps to run after the sizes, comma separated: every port (1-65535)
    /// of one sink address per family, by 1 user (131,070 probes) or 4
    /// users (524,280): `drop` / `drop4` as users the firewall DROPs,
    /// `allow` / `allow4` as users it lets through (in a lab of their own
    /// whose sinks answer on every port, so every probe connects). nmap
    /// (`-sT -p-`, one per family, run once: a minute each) only at the
    /// 1-user sweeps
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub sweeps: Vec<Sweep>,
    /// Tools to run, comma separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "egress-check,nmap,nc,dns",
        value_name = "LIST"
    )]
    pub tools: Vec<Tool>,
    /// Runs of egress-check, nmap and dns per size; the run with the median
    /// wall time is reported (nc runs once)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub repeat: u32,
    /// Largest number of probes the nc loop really runs per size; above it a
    /// sample of N (half dropped, half allowed) is run and wall and CPU time
    /// are scaled up, marked "extrapolated" (positive, even)
    #[arg(long, default_value_t = 256, value_parser = parse_nc_cap, value_name = "N")]
    pub nc_cap: u32,
    /// Round-trip time added in front of every answer of the lab's DNS
    /// server while the DNS round trip is measured
    #[arg(long, default_value = "100ms", value_parser = parse_positive_ms, value_name = "DURATION")]
    pub dns_rtt: u64,
    /// egress-check binary [default: egress-check next to this program, i.e.
    /// target/release/egress-check, which ci/bench builds]
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Keep generated scenarios, reports and logs in DIR (written there
    /// directly instead of in a temporary directory)
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

impl Options {
    /// Whether `tool` is among `--tools`.
    pub fn has(&self, tool: Tool) -> bool {
        self.tools.contains(&tool)
    }
}

/// A tool `--tools` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tool {
    /// `egress-check run`.
    EgressCheck,
    /// One `nmap -sT` per user and family, all at once.
    Nmap,
    /// One `nc -z` per probe, one after the other.
    Nc,
    /// `egress-check resolve` and a run over MX domains.
    Dns,
}

/// A sweep `--sweeps` can name: every port of one sink address per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Sweep {
    /// One user whose packets the firewall drops: every probe times out.
    Drop,
    /// One user the firewall lets through: every port connects.
    Allow,
    /// Four users dropped (524,280 probes).
    #[value(name = "drop4")]
    Drop4,
    /// Four users let through (524,280 probes).
    #[value(name = "allow4")]
    Allow4,
}

impl Sweep {
    /// Users sweeping.
    pub fn users(self) -> u32 {
        match self {
            Sweep::Drop | Sweep::Allow => 1,
            Sweep::Drop4 | Sweep::Allow4 => 4,
        }
    }

    /// Whether the firewall drops the sweeping users' packets.
    pub fn dropped(self) -> bool {
        matches!(self, Sweep::Drop | Sweep::Drop4)
    }

    /// Probes: users x 65,535 ports x 2 families.
    pub fn probes(self) -> u32 {
        self.users() * 65_535 * 2
    }

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Sweep::Drop => "sweep-drop",
            Sweep::Allow => "sweep-allow",
            Sweep::Drop4 => "sweep-drop4",
            Sweep::Allow4 => "sweep-allow4",
        }
    }
}

/// A rejected option value.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// Not a duration this parser knows.
    #[error("bad duration '{0}' (use e.g. 1s, 1.5s or 500ms)")]
    Duration(String),
    /// Zero where something positive is needed.
    #[error("must be positive")]
    Zero,
    /// Not a positive integer.
    #[error("bad number '{0}'")]
    Number(String),
    /// A size that cannot be laid out.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// An odd `--nc-cap`.
    #[error("must be a positive even integer")]
    Odd,
}

/// "1s", "1.5s", "250ms" or plain seconds, in whole milliseconds
/// (fractions of a millisecond are dropped, as the old script did).
pub fn parse_duration_ms(text: &str) -> Result<u64, OptionError> {
    let bad = || OptionError::Duration(text.to_owned());
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000.0)
    } else {
        (text, 1000.0)
    };
    // Digits with at most one decimal point: no signs, exponents, inf or NaN.
    let plain = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.');
    if !plain {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let ms = (value * scale).floor();
    if ms > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(ms as u64)
}

fn parse_positive_ms(text: &str) -> Result<u64, OptionError> {
    match parse_duration_ms(text)? {
        0 => Err(OptionError::Zero),
        ms => Ok(ms),
    }
}

fn parse_count(text: &str) -> Result<u32, OptionError> {
    match text.parse::<u32>() {
        Ok(0) => Err(OptionError::Zero),
        Ok(n) if !text.starts_with('+') => Ok(n),
        _ => Err(OptionError::Number(text.to_owned())),
    }
}

fn parse_size(text: &str) -> Result<u32, OptionError> {
    let n = parse_count(text)?;
    shape(n)?;
    Ok(n)
}

fn parse_nc_cap(text: &str) -> Result<u32, OptionError> {
    match parse_count(text)? {
        n if n % 2 == 0 => Ok(n),
        _ => Err(OptionError::Odd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_the_old_script_read_them() {
        assert_eq!(parse_duration_ms("1s").unwrap(), 1000);
        assert_eq!(parse_duration_ms("1.5s").unwrap(), 1500);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("2").unwrap(), 2000);
        assert_eq!(parse_duration_ms("0.0015").unwrap(), 1);
        for bad in [
            "", "s", "ms", "-1s", "1e3ms", "1.s", ".5s", "1..2s", "inf", "1m",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
        assert!(matches!(parse_positive_ms("0ms"), Err(OptionError::Zero)));
    }

    #[test]
    fn sizes_and_caps_are_checked() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(matches!(parse_size("100"), Err(OptionError::Shape(_))));
        assert!(matches!(parse_size("0"), Err(OptionError::Zero)));
        assert!(parse_size("+128").is_err());
        assert_eq!(parse_nc_cap("256").unwrap(), 256);
        assert!(matches!(parse_nc_cap("7"), Err(OptionError::Odd)));
    }

    #[test]
    fn defaults_are_the_old_scripts() {
        let o = Options::try_parse_from(["egress-check-bench"]).unwrap();
        assert_eq!(o.timeout, 1000);
        assert_eq!(o.sizes, [128, 1024, 8192]);
        assert_eq!(
            o.tools,
            [Tool::EgressCheck, Tool::Nmap, Tool::Nc, Tool::Dns]
        );
        assert_eq!((o.repeat, o.nc_cap, o.dns_rtt), (3, 256, 100));
        let o = Options::try_parse_from([
            "egress-check-bench",
            "--sizes",
            "1024,8192",
            "--tools",
            "egress-check,nmap",
            "--timeout",
            "500ms",
        ])
        .unwrap();
        assert_eq!(o.sizes, [1024, 8192]);
        assert!(o.has(Tool::Nmap) && !o.has(Tool::Dns));
        assert!(o.sweeps.is_empty());
        let o = Options::try_parse_from(["egress-check-bench", "--sweeps", "drop,allow4"]).unwrap();
        assert_eq!(o.sweeps, [Sweep::Drop, Sweep::Allow4]);
        assert_eq!(
            (Sweep::Drop.probes(), Sweep::Allow4.probes()),
            (131_070, 524_280)
        );
        assert!(Options::try_parse_from(["egress-check-bench", "--tools", "ping"]).is_err());
        assert!(Options::try_parse_from(["egress-check-bench", "--repeat", "0"]).is_err());
    }
}
