//! Standing in a process's cgroup v2: where the unified hierarchy is mounted, whether a
//! cgroup can take another process, and moving the calling process into it.
//!
//! Why the cgroup matters: nftables `socket cgroupv2` matches the cgroup of the socket
//! (set when the socket is created, from its creator's cgroup), and the BPF programs that
//! systemd's `IPAddressDeny=` attaches with `BPF_CGROUP_INET_EGRESS` run for the sockets of
//! that cgroup and its descendants. A worker that probes from anywhere else sees neither.
//!
//! The cgroup v2 path of `/proc/PID/cgroup` is relative to the reader's cgroup namespace
//! root; the mount found in `/proc/self/mountinfo` says where that root (or a subtree of
//! it) is in the file system: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified`
//! on hybrid ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Why a cgroup cannot be joined.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 file system is mounted here.
    #[error("no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo): the process's cgroup `{cgroup}` cannot be joined, so `socket cgroupv2` rules and cgroup BPF filters would not apply to the probes")]
    NotMounted {
        /// The cgroup asked for.
        cgroup: String,
    },
    /// The cgroup is not below the mounted part of the hierarchy.
    #[error("cgroup `{cgroup}` is not visible under the cgroup2 mount at {mount} (it mounts `{root}` of the hierarchy)")]
    NotVisible {
        /// The cgroup asked for.
        cgroup: String,
        /// The mount point.
        mount: PathBuf,
        /// The hierarchy path the mount shows.
        root: String,
    },
    /// The cgroup cannot take another process; why.
    #[error("cgroup `{cgroup}` ({dir}) cannot take another process: {reason}")]
    Refused {
        /// The cgroup.
        cgroup: String,
        /// Its directory.
        dir: PathBuf,
        /// Why.
        reason: Refusal,
    },
    /// After the move, `/proc/self/cgroup` shows another cgroup.
    #[error("after joining cgroup `{expected}`, this process is in `{actual}`")]
    Verify {
        /// Where it should be.
        expected: String,
        /// Where it is.
        actual: String,
    },
    /// Reading the mount table or a cgroup file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why a cgroup refuses a process: from its `cgroup.type` and `pids.*` files before the
/// move, or from the errno of the write to `cgroup.procs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `pids.max` reached.
    #[error("its pids.max ({max}) is reached ({current} processes and threads)")]
    PidsMax {
        /// `pids.max`.
        max: u64,
        /// `pids.current`.
        current: u64,
    },
    /// EAGAIN from the write: the pids limit of it or an ancestor.
    #[error(
        "the kernel refused with EAGAIN: the pids limit of this cgroup or an ancestor is reached"
    )]
    PidsLimit,
    /// A threaded cgroup takes threads, not processes.
    #[error("it is a threaded cgroup (cgroup.type `threaded`): it takes threads, not processes")]
    Threaded,
    /// An invalid domain cannot hold processes.
    #[error("its cgroup.type is `domain invalid` (a domain below a threaded subtree): it cannot hold processes")]
    DomainInvalid,
    /// EBUSY: it has controllers enabled for its children (the no-internal-process rule).
    #[error("the kernel refused with EBUSY: the cgroup enables controllers for its children, so only its leaves may hold processes")]
    InternalProcess,
    /// EOPNOTSUPP: the kernel refuses processes in it (a threaded cgroup).
    #[error("the kernel refused with EOPNOTSUPP: it does not take processes (threaded)")]
    NotSupported,
    /// ENOENT/ENODEV: it was removed (the unit stopped).
    #[error("it no longer exists (removed meanwhile; the service stopped?)")]
    Gone,
    /// Another errno.
    #[error("writing cgroup.procs failed: {0}")]
    Other(Errno),
}

/// Maps the errno of a write to `cgroup.procs` (kernel/cgroup/cgroup.c) to its meaning.
pub fn refusal_of(errno: Errno) -> Refusal {
    match errno {
        Errno::EAGAIN => Refusal::PidsLimit,
        Errno::EBUSY => Refusal::InternalProcess,
        Errno::EOPNOTSUPP => Refusal::NotSupported,
        Errno::ENOENT | Errno::ENODEV => Refusal::Gone,
        other => Refusal::Other(other),
    }
}

/// Judges a cgroup by its `cgroup.type` and `pids.max`/`pids.current` texts (`None` when
/// the file is absent: no pids controller on v2, or a kernel without `cgroup.type`).
pub fn refusal_from_files(
    cgroup_type: Option<&str>,
    pids_max: Option<&str>,
    pids_current: Option<&str>,
) -> Option<Refusal> {
    match cgroup_type.map(str::trim) {
        Some("threaded") => return Some(Refusal::Threaded),
        Some("domain invalid") => return Some(Refusal::DomainInvalid),
        _ => {}
    }
    let max = pids_max
        .map(str::trim)
        .and_then(|m| m.parse::<u64>().ok())?;
    let current = pids_current.and_then(|c| c.trim().parse::<u64>().ok())?;
    (current >= max).then_some(Refusal::PidsMax { max, current })
}

/// A cgroup2 mount: where it is, and which hierarchy path it shows there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount point.
    pub point: PathBuf,
    /// The hierarchy path mounted there (`/` unless a subtree was bind-mounted).
    pub root: String,
}

impl Mount {
    /// The directory of `cgroup` (a `/proc/PID/cgroup` path) under this mount, if visible.
    pub fn dir_of(&self, cgroup: &str) -> Option<PathBuf> {
        let below = if self.root == "/" {
            cgroup
        } else {
            let rest = cgroup.strip_prefix(self.root.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        let below = below.trim_start_matches('/');
        if below.split('/').any(|c| c == ".." || c == ".") {
            return None;
        }
        Some(if below.is_empty() {
            self.point.clone()
        } else {
            self.point.join(below)
        })
    }
}

/// Unescapes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 mounts of a `/proc/self/mountinfo` text, shortest mount point first.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = text
        .lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let fields: Vec<&str> = left.split_whitespace().collect();
            Some(Mount {
                root: unescape(fields.get(3)?),
                point: PathBuf::from(unescape(fields.get(4)?)),
            })
        })
        .collect();
    mounts.sort_by_key(|m| m.point.as_os_str().len());
    mounts
}

/// The directory of `cgroup` in this mount namespace's cgroup2 mounts.
pub fn locate(cgroup: &str) -> Result<PathBuf, CgroupError> {
    let path = PathBuf::from("/proc/self/mountinfo");
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.clone(),
        source,
    })?;
    let mounts = parse_mountinfo(&text);
    let Some(first) = mounts.first() else {
        return Err(CgroupError::NotMounted {
            cgroup: cgroup.to_string(),
        });
    };
    mounts
        .iter()
        .find_map(|m| m.dir_of(cgroup))
        .ok_or_else(|| CgroupError::NotVisible {
            cgroup: cgroup.to_string(),
            mount: first.point.clone(),
            root: first.root.clone(),
        })
}

fn read_optional(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// Checks, before anything is probed, that `cgroup` exists and can take another process;
/// returns its directory.
pub fn check(cgroup: &str) -> Result<PathBuf, CgroupError> {
    let dir = locate(cgroup)?;
    let refused = |reason| CgroupError::Refused {
        cgroup: cgroup.to_string(),
        dir: dir.clone(),
        reason,
    };
    if !dir.join("cgroup.procs").exists() {
        return Err(refused(Refusal::Gone));
    }
    if let Some(reason) = refusal_from_files(
        read_optional(&dir, "cgroup.type").as_deref(),
        read_optional(&dir, "pids.max").as_deref(),
        read_optional(&dir, "pids.current").as_deref(),
    ) {
        return Err(refused(reason));
    }
    Ok(dir)
}

/// Moves the calling process (all its threads: it must be single-threaded anyway) into
/// `cgroup`, then verifies with `/proc/self/cgroup`.
pub fn join(cgroup: &str) -> Result<(), CgroupError> {
    let dir = locate(cgroup)?;
    let refused = |reason| CgroupError::Refused {
        cgroup: cgroup.to_string(),
        dir: dir.clone(),
        reason,
    };
    let procs = dir.join("cgroup.procs");
    // "0" is the writer itself (cgroup-v2.rst); one write(2) of the whole text.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .and_then(|mut f| f.write_all(b"0"));
    if let Err(error) = written {
        let errno = Errno::from_raw(error.raw_os_error().unwrap_or(nix::libc::EIO));
        return Err(refused(refusal_of(errno)));
    }
    let path = PathBuf::from("/proc/self/cgroup");
    let text = std::fs::read_to_string(&path).map_err(|source| CgroupError::Read {
        path: path.clone(),
        source,
    })?;
    let actual = super::procfs::parse_cgroup(&text)
        .unified
        .unwrap_or_default();
    if actual != cgroup {
        return Err(CgroupError::Verify {
            expected: cgroup.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";

    #[test]
    fn hybrid_and_unified_mounts() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(
            mounts,
            vec![Mount {
                point: "/sys/fs/cgroup/unified".into(),
                root: "/".into()
            }]
        );
        assert_eq!(
            mounts[0].dir_of("/system.slice/php.service"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/php.service"
            ))
        );
        assert_eq!(
            mounts[0].dir_of("/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = parse_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            unified[0].dir_of("/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/a/b"))
        );
    }

    #[test]
    fn a_subtree_mount_shows_only_its_subtree() {
        let m = parse_mountinfo("50 23 0:26 /ctr /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            m[0].dir_of("/ctr/app"),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(m[0].dir_of("/ctrl"), None);
        assert_eq!(m[0].dir_of("/other"), None);
        assert_eq!(m[0].dir_of("/ctr/../x"), None);
    }

    #[test]
    fn escaped_mount_points() {
        let m = parse_mountinfo("50 23 0:26 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n");
        assert_eq!(m[0].point, PathBuf::from("/mnt/cg two"));
    }

    #[test]
    fn files_say_why_a_cgroup_refuses() {
        assert_eq!(
            refusal_from_files(Some("threaded\n"), None, None),
            Some(Refusal::Threaded)
        );
        assert_eq!(
            refusal_from_files(Some("domain invalid\n"), Some("max\n"), Some("1\n")),
            Some(Refusal::DomainInvalid)
        );
        assert_eq!(
            refusal_from_files(Some("domain\n"), Some("4\n"), Some("4\n")),
            Some(Refusal::PidsMax { max: 4, current: 4 })
        );
        assert_eq!(
            refusal_from_files(Some("domain\n"), Some("max\n"), Some("4\n")),
            None
        );
        assert_eq!(
            refusal_from_files(Some("domain threaded\n"), Some("5\n"), Some("4\n")),
            None
        );
        assert_eq!(refusal_from_files(None, None, None), None);
    }

    #[test]
    fn errnos_of_the_move() {
        assert_eq!(refusal_of(Errno::EAGAIN), Refusal::PidsLimit);
        assert_eq!(refusal_of(Errno::EBUSY), Refusal::InternalProcess);
        assert_eq!(refusal_of(Errno::EOPNOTSUPP), Refusal::NotSupported);
        assert_eq!(refusal_of(Errno::ENOENT), Refusal::Gone);
        assert_eq!(refusal_of(Errno::EACCES), Refusal::Other(Errno::EACCES));
    }

    #[test]
    fn this_hosts_cgroup2_is_found() {
        // Every supported host mounts cgroup2 somewhere (unified or hybrid layout).
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts = parse_mountinfo(&text);
        assert!(!mounts.is_empty(), "{text}");
        assert!(locate("/").unwrap().join("cgroup.procs").exists());
    }
}
