//! What `/proc/PID` says about a running process, parsed from the kernel's text formats:
//! `stat` (start time, state, kernel-thread flag), `status` (credentials, groups, seccomp,
//! capabilities) and `cgroup` (the v2 path, the v1 `net_cls` path).
//!
//! The parsers are pure functions over the text, so the formats are unit-tested without a
//! process; [`read`] does the I/O. A process is identified by its pid *and* its start time:
//! pids are reused, and a process that exited and was replaced must not lend its pid to a
//! stranger's identity.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `PF_KTHREAD` in the `flags` field of `/proc/PID/stat` (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// No such process (or it exited and was reaped).
    #[error("no process with pid {0} (it does not exist, or it has exited)")]
    NoSuchProcess(i32),
    /// The process is a zombie: it has exited and holds no namespace or cgroup any more.
    #[error("process {0} has exited (it is a zombie, waiting to be reaped): it has no namespace or cgroup left to stand in")]
    Zombie(i32),
    /// A kernel thread: it has no user credentials, no sockets of its own to firewall.
    #[error("pid {pid} is the kernel thread `{comm}`: it has no user identity, namespaces or cgroup of a service to probe from")]
    KernelThread {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// A `/proc` file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected format.
    #[error("cannot parse {path}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was missing or malformed.
        what: &'static str,
    },
}

/// The fields of `/proc/PID/stat` that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (`comm`, at most 15 bytes, may contain spaces and parentheses).
    pub comm: String,
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// The `flags` word.
    pub flags: u64,
    /// Start time in clock ticks since boot: with the pid, it identifies the process.
    pub start_time: u64,
}

impl Stat {
    /// True for a kernel thread.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may itself contain
/// `)` and spaces, so the fields after it are found from the *last* `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the comm, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        comm,
        state: field(3)?.chars().next()?,
        flags: field(9)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// A process's credentials exactly as the kernel holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Real, effective, saved uid.
    pub uids: [u32; 3],
    /// Real, effective, saved gid.
    pub gids: [u32; 3],
    /// Supplementary groups, sorted, without duplicates.
    pub groups: Vec<u32>,
}

impl Credentials {
    /// True when any of the three uids is root: such a process can be root whenever it
    /// likes, so a worker standing in for it may too.
    pub fn is_root(&self) -> bool {
        self.uids.contains(&0)
    }

    /// The effective uid: the one owner rules (`meta skuid`, `-m owner --uid-owner`) see.
    pub fn uid(&self) -> u32 {
        self.uids[1]
    }

    /// The effective gid.
    pub fn gid(&self) -> u32 {
        self.gids[1]
    }
}

/// The fields of `/proc/PID/status` that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `Uid:`, `Gid:` (the fourth, filesystem, id is not used by the network stack) and
    /// `Groups:`.
    pub credentials: Credentials,
    /// `Seccomp:` 0 none, 1 strict, 2 filter.
    pub seccomp: u8,
    /// `CapEff:`.
    pub cap_effective: u64,
}

/// Parses `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<Status> {
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
    };
    let ids = |key: &str| -> Option<[u32; 3]> {
        let values: Vec<u32> = line(key)?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        Some([*values.first()?, *values.get(1)?, *values.get(2)?])
    };
    let mut groups: Vec<u32> = line("Groups")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    groups.sort_unstable();
    groups.dedup();
    Some(Status {
        credentials: Credentials {
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            groups,
        },
        // Kernels built without CONFIG_SECCOMP have no such line: no filter is possible.
        seccomp: line("Seccomp").map_or(Some(0), |v| v.trim().parse().ok())?,
        cap_effective: u64::from_str_radix(line("CapEff")?.trim(), 16).ok()?,
    })
}

/// The cgroup memberships of `/proc/PID/cgroup` that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cgroups {
    /// The cgroup v2 path (the `0::` line), relative to the reader's cgroup namespace root.
    pub unified: Option<String>,
    /// The v1 `net_cls` cgroup, when one is mounted.
    pub net_cls: Option<String>,
}

/// Parses `/proc/PID/cgroup` (`ID:CONTROLLERS:PATH` lines; `0::PATH` is cgroup v2).
pub fn parse_cgroup(text: &str) -> Cgroups {
    let mut out = Cgroups::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            out.unified = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "net_cls") {
            out.net_cls = Some(path.to_string());
        }
    }
    out
}

/// Reads `/proc/PID/FILE`, mapping a vanished process to [`ProcError::NoSuchProcess`].
pub fn read(pid: i32, file: &str) -> Result<String, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::read_to_string(&path).map_err(|source| match source.kind() {
        // ESRCH: the process exited while the file was open.
        std::io::ErrorKind::NotFound => ProcError::NoSuchProcess(pid),
        _ if source.raw_os_error() == Some(nix::libc::ESRCH) => ProcError::NoSuchProcess(pid),
        _ => ProcError::Read { path, source },
    })
}

/// Reads and parses `/proc/PID/stat`.
pub fn stat(pid: i32) -> Result<Stat, ProcError> {
    parse_stat(&read(pid, "stat")?).ok_or_else(|| ProcError::Format {
        path: format!("/proc/{pid}/stat").into(),
        what: "comm, state, flags and starttime fields",
    })
}

/// Reads and parses `/proc/PID/status`.
pub fn status(pid: i32) -> Result<Status, ProcError> {
    parse_status(&read(pid, "status")?).ok_or_else(|| ProcError::Format {
        path: format!("/proc/{pid}/status").into(),
        what: "Uid, Gid, Groups and CapEff lines",
    })
}

/// Checks that `pid` is still the process that started at `start_time` and is alive (not
/// a zombie): the pid was not reused.
pub fn still_the_same(pid: i32, start_time: u64) -> Result<(), ProcError> {
    let stat = stat(pid)?;
    if stat.start_time != start_time {
        return Err(ProcError::NoSuchProcess(pid));
    }
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(ProcError::Zombie(pid));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_survives_a_hostile_comm() {
        // comm may contain spaces and ')': the fields follow the last ')'.
        let text = "812 (php) fpm: (x)) S 1 812 812 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 200 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.comm, "php) fpm: (x)");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.flags, 4194560);
        assert_eq!(stat.start_time, 12345);
        assert!(!stat.is_kernel_thread());
    }

    #[test]
    fn kernel_threads_are_recognised_by_their_flag() {
        let text =
            "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0 18446744073709551615";
        assert!(parse_stat(text).unwrap().is_kernel_thread());
    }

    #[test]
    fn status_gives_exact_credentials() {
        let text = "Name:\tphp-fpm\nUid:\t33\t33\t0\t33\nGid:\t33\t34\t33\t33\nGroups:\t44 33 4 \n\
                    Seccomp:\t2\nCapEff:\t0000000000000400\n";
        let status = parse_status(text).unwrap();
        assert_eq!(status.credentials.uids, [33, 33, 0]);
        assert_eq!(status.credentials.gids, [33, 34, 33]);
        assert_eq!(status.credentials.groups, vec![4, 33, 44]);
        assert!(
            status.credentials.is_root(),
            "saved uid 0 is a way back to root"
        );
        assert_eq!(status.credentials.uid(), 33);
        assert_eq!(status.credentials.gid(), 34);
        assert_eq!(status.seccomp, 2);
        assert_eq!(status.cap_effective, 0x400);
    }

    #[test]
    fn empty_groups_and_no_seccomp_line() {
        let text = "Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t\nCapEff:\t0\n";
        let status = parse_status(text).unwrap();
        assert!(status.credentials.groups.is_empty());
        assert_eq!(status.seccomp, 0);
        assert!(parse_status("Uid:\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\nCapEff:\t0\n").is_none());
    }

    #[test]
    fn cgroup_lines() {
        let hybrid = "9:name=systemd:/system.slice/php.service\n3:net_cls,net_prio:/mail\n\
                      4:memory:/x\n0::/system.slice/php.service\n";
        let c = parse_cgroup(hybrid);
        assert_eq!(c.unified.as_deref(), Some("/system.slice/php.service"));
        assert_eq!(c.net_cls.as_deref(), Some("/mail"));
        // A cgroup path may contain ':'.
        let c = parse_cgroup("0::/a:b/c\n");
        assert_eq!(c.unified.as_deref(), Some("/a:b/c"));
        assert_eq!(parse_cgroup("1:cpu:/\n"), Cgroups::default());
    }

    #[test]
    fn this_process_reads() {
        let me = std::process::id() as i32;
        let stat = stat(me).unwrap();
        still_the_same(me, stat.start_time).unwrap();
        assert!(still_the_same(me, stat.start_time + 1).is_err());
        status(me).unwrap();
        assert!(matches!(
            stat_of_nothing(),
            Err(ProcError::NoSuchProcess(_))
        ));
    }

    fn stat_of_nothing() -> Result<Stat, ProcError> {
        // pid_max is at most 2^22: this pid cannot exist.
        stat(i32::MAX)
    }
}
