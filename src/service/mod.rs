//! Probing as a service really runs: `pid:PID`, `unit:NAME` and `unit:NAME/USER` identities.
//!
//! A service's egress is decided by more than its uid: `socket cgroupv2` rules and cgroup
//! BPF filters (systemd's `IPAddressDeny=`) match its cgroup, `PrivateNetwork=` units and
//! containers live in another network namespace, and a running process may hold other
//! groups than the passwd database says. For such an identity:
//!
//! - the **parent**, while planning ([`Subject::parse`], [`ServiceIdentity::of_subject`]),
//!   reads the process once (`/proc/PID/{stat,status,cgroup,ns,attr}`; for units,
//!   `systemctl show` first, [`systemd`]), checks that its cgroup can take another process
//!   ([`cgroup::check`]; refusal is exit 2), and lists what a worker cannot reproduce;
//!   the snapshot is what the report names and what the worker takes, so both agree;
//! - the **worker** ([`take`]), single-threaded and before any runtime, takes in this order:
//!   the process's network namespace (first, while still root: `setns` needs
//!   CAP_SYS_ADMIN), its cgroup v2 (then, also as root: writing `cgroup.procs` needs write
//!   access to it), then its exact credentials (last: after them nothing privileged is
//!   possible), `no_new_privs`, and the verification. Between the steps it checks the pid
//!   still names the same process (pid and start time), so a reused pid never lends a
//!   stranger's namespace or cgroup;
//! - DNS for such an identity is resolved by the run's resolver in the process's network
//!   namespace, with its `/etc/resolv.conf` seen through `/proc/PID/root`
//!   ([`crate::runner`]).
//!
//! Once the worker holds the namespace and is in the cgroup, the probes run to the end even
//! if the process exits; if it is gone before that, the worker fails and the probes are
//! inconclusive with the reason.

pub mod cgroup;
pub mod procfs;
pub mod systemd;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use nix::unistd::{self, Gid, Uid, User};
use serde::{Deserialize, Serialize};

use crate::identity::{self, Account};
use crate::vocab::Family;
use cgroup::CgroupError;
use procfs::{Credentials, ProcError};
use systemd::{AddressFamilies, UnitError};

/// Who a check runs as: the forms of `--as` and of a scenario's `as = [...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A login name or a uid with a passwd entry: the login identity ([`identity`]).
    User(String),
    /// `pid:PID`: a running process.
    Pid(i32),
    /// `unit:NAME` or `unit:NAME/USER`: a systemd unit's main process (or, with USER, the
    /// unit's cgroup and namespaces with USER's login identity).
    Unit {
        /// The unit.
        unit: String,
        /// USER, when given.
        user: Option<String>,
    },
}

/// Why an identity cannot be stood in.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `pid:` without a positive number.
    #[error("`{0}`: a pid is a positive number, as in `pid:812`")]
    BadPid(String),
    /// `unit:` with an empty unit or user.
    #[error(
        "`{0}`: expected `unit:NAME` or `unit:NAME/USER`, as in `unit:postfix.service/postfix`"
    )]
    BadUnit(String),
    /// The process cannot be read or is no service process.
    #[error("`{subject}`: {error}")]
    Process {
        /// The identity as given.
        subject: String,
        /// What is wrong.
        error: ProcError,
    },
    /// The unit cannot be found or is not running.
    #[error(transparent)]
    Unit(#[from] UnitError),
    /// The `/USER` of `unit:NAME/USER`.
    #[error("`{subject}`: {error}")]
    User {
        /// The identity as given.
        subject: String,
        /// What is wrong.
        error: identity::IdentityError,
    },
    /// The process's cgroup cannot take the worker.
    #[error("`{subject}`: {error}; the probes would not run where the service runs, so nothing is probed")]
    Cgroup {
        /// The identity as given.
        subject: String,
        /// What is wrong.
        error: CgroupError,
    },
    /// Standing in a process needs root.
    #[error("probing as `{subject}` needs root (entering its network namespace and cgroup, taking its credentials); egress-check runs as `{current}`")]
    NotPrivileged {
        /// The identity as given.
        subject: String,
        /// Who we are.
        current: String,
    },
    /// The process's network namespace cannot be opened or entered.
    #[error("`{subject}`: cannot {step} its network namespace: {source}")]
    Netns {
        /// The identity as given.
        subject: String,
        /// open or enter.
        step: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A credential system call failed.
    #[error("`{subject}`: cannot take its credentials: {step} failed: {errno}")]
    Switch {
        /// The identity as given.
        subject: String,
        /// The failing step.
        step: &'static str,
        /// Its errno.
        errno: nix::errno::Errno,
    },
    /// The worker's identity is not the process's.
    #[error("`{subject}`: identity did not verify: {problem}")]
    Verify {
        /// The identity as given.
        subject: String,
        /// What was wrong.
        problem: String,
    },
}

impl Subject {
    /// Parses `--as`/`as = [...]`: `pid:PID`, `unit:NAME[/USER]`, else a user. User names
    /// cannot contain `:` and unit names cannot contain `/`, so the forms are unambiguous.
    pub fn parse(spec: &str) -> Result<Subject, ServiceError> {
        if let Some(pid) = spec.strip_prefix("pid:") {
            return match pid.parse::<i32>() {
                Ok(pid) if pid > 0 => Ok(Subject::Pid(pid)),
                _ => Err(ServiceError::BadPid(spec.to_string())),
            };
        }
        if let Some(rest) = spec.strip_prefix("unit:") {
            let (unit, user) = match rest.split_once('/') {
                Some((unit, user)) => (unit, Some(user)),
                None => (rest, None),
            };
            if unit.is_empty() || user.is_some_and(|u| u.is_empty() || u.contains('/')) {
                return Err(ServiceError::BadUnit(spec.to_string()));
            }
            return Ok(Subject::Unit {
                unit: unit.to_string(),
                user: user.map(str::to_string),
            });
        }
        Ok(Subject::User(spec.to_string()))
    }
}

/// A running process's network namespace, as the parent saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetnsInfo {
    /// Its inode (`net:[INODE]`).
    pub inode: u64,
    /// True when it is not the namespace egress-check runs in.
    pub foreign: bool,
}

/// An identity standing where a process stands: read once by the parent, reported in every
/// format, and sent to the worker (as JSON) to take.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceIdentity {
    /// The identity as given (`pid:812`, `unit:php8.2-fpm.service`,
    /// `unit:postfix.service/postfix`): the report's `user`.
    pub key: String,
    /// The unit's canonical name, for `unit:` identities.
    pub unit: Option<String>,
    /// The process stood in.
    pub pid: i32,
    /// Its start time (clock ticks since boot): with the pid, identifies it.
    pub start_time: u64,
    /// Its command name.
    pub comm: String,
    /// The credentials the worker takes: the process's exactly, or USER's login identity
    /// for `unit:NAME/USER`.
    pub credentials: Credentials,
    /// The name of the effective uid, when it has one.
    pub user_name: Option<String>,
    /// For `unit:NAME/USER`: USER, whose login identity is taken.
    pub login: Option<String>,
    /// Its cgroup v2 path (`None`: no cgroup v2 line, nothing to join).
    pub cgroup: Option<String>,
    /// Its network namespace.
    pub netns: NetnsInfo,
    /// Families the service cannot open sockets of at all (`RestrictAddressFamilies=`).
    pub families_denied: Vec<Family>,
    /// What the worker cannot reproduce, one sentence each.
    pub not_reproduced: Vec<String>,
    /// The process's `/etc/resolv.conf` (through `/proc/PID/root`), for its DNS.
    #[serde(skip)]
    pub resolv_conf: Option<String>,
    /// Its network namespace, held open from planning on, for DNS in it.
    #[serde(skip)]
    pub netns_file: Option<Arc<File>>,
}

impl ServiceIdentity {
    /// Reads the identity of `subject` (not [`Subject::User`]), as the plan needs it.
    pub fn of_subject(spec: &str, subject: &Subject) -> Result<ServiceIdentity, ServiceError> {
        let process_error = |error| ServiceError::Process {
            subject: spec.to_string(),
            error,
        };
        let (pid, unit) = match subject {
            Subject::User(_) => unreachable!("users are looked up by identity::lookup"),
            Subject::Pid(pid) => (*pid, None),
            Subject::Unit { unit, .. } => {
                let info = systemd::show(unit)?;
                (info.main_pid, Some(info))
            }
        };
        let stat = procfs::stat(pid).map_err(process_error)?;
        if stat.is_kernel_thread() {
            return Err(process_error(ProcError::KernelThread {
                pid,
                comm: stat.comm,
            }));
        }
        procfs::still_the_same(pid, stat.start_time).map_err(process_error)?;
        let status = procfs::status(pid).map_err(process_error)?;
        let cgroups = procfs::parse_cgroup(&procfs::read(pid, "cgroup").map_err(process_error)?);
        let netns_file =
            File::open(format!("/proc/{pid}/ns/net")).map_err(|source| ServiceError::Netns {
                subject: spec.to_string(),
                step: "open",
                source,
            })?;
        // The namespace file was opened from this pid: it is this process's only if the pid
        // still names the same process afterwards.
        procfs::still_the_same(pid, stat.start_time).map_err(process_error)?;
        let inode_of = |path: &str| std::fs::metadata(path).map(|m| m.ino()).ok();
        let netns_inode = netns_file.metadata().map(|m| m.ino()).unwrap_or(0);
        let foreign = inode_of("/proc/self/ns/net") != Some(netns_inode);

        let (credentials, login) = match subject {
            Subject::Unit {
                user: Some(user), ..
            } => {
                let account = identity::lookup(user).map_err(|error| ServiceError::User {
                    subject: spec.to_string(),
                    error,
                })?;
                (login_credentials(&account, spec)?, Some(account.name))
            }
            _ => (status.credentials.clone(), None),
        };
        if let Some(cgroup) = &cgroups.unified {
            cgroup::check(cgroup).map_err(|error| ServiceError::Cgroup {
                subject: spec.to_string(),
                error,
            })?;
        }

        let mut not_reproduced = Vec::new();
        let families = unit
            .as_ref()
            .map(|u| u.families.clone())
            .unwrap_or_default();
        let families_denied: Vec<Family> = [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter(|f| !families.permits(*f))
            .collect();
        match status.seccomp {
            0 => {}
            1 => not_reproduced.push(
                "seccomp strict mode (Seccomp: 1): the process can make no socket at all; the probes run without it".to_string(),
            ),
            _ => not_reproduced.push(format!(
                "a seccomp filter (Seccomp: 2; systemd's RestrictAddressFamilies= and SystemCallFilter= are seccomp): the probes run without it{}",
                match &families {
                    AddressFamilies::Any => String::new(),
                    _ => format!("; RestrictAddressFamilies={} is applied to the report", describe_families(&families)),
                }
            )),
        }
        if cgroups.unified.is_none() {
            not_reproduced.push(
                "its cgroup v2 membership (no `0::` line in /proc/PID/cgroup): `socket cgroupv2` rules and cgroup BPF filters are not reproduced".to_string(),
            );
        }
        if let Some(path) = cgroups.net_cls.as_deref().filter(|p| *p != "/") {
            not_reproduced.push(format!(
                "its cgroup v1 net_cls cgroup `{path}`: classid rules (`-m cgroup --cgroup`, `meta cgroup`) are not reproduced"
            ));
        }
        if let Some(label) = lsm_label(pid).filter(|l| Some(l) != lsm_label_self().as_ref()) {
            not_reproduced.push(format!(
                "its LSM label `{label}` (AppArmor/SELinux): network mediation by the profile is not reproduced"
            ));
        }
        if inode_of(&format!("/proc/{pid}/ns/mnt")) != inode_of("/proc/self/ns/mnt") {
            not_reproduced.push(
                "its mount namespace: the probes see this host's files; only its resolv.conf is read from its root".to_string(),
            );
        }
        if inode_of(&format!("/proc/{pid}/ns/user")) != inode_of("/proc/self/ns/user") {
            not_reproduced.push(
                "its user namespace: its credentials are taken as this namespace sees them"
                    .to_string(),
            );
        }
        if status.cap_effective != 0 && !credentials.is_root() {
            not_reproduced.push(format!(
                "its capabilities (CapEff {:#x}): the probes run without any",
                status.cap_effective
            ));
        }
        let resolv_conf = std::fs::read_to_string(format!("/proc/{pid}/root/etc/resolv.conf")).ok();
        Ok(ServiceIdentity {
            key: spec.to_string(),
            unit: unit.map(|u| u.id),
            pid,
            start_time: stat.start_time,
            comm: stat.comm,
            user_name: User::from_uid(Uid::from_raw(credentials.uid()))
                .ok()
                .flatten()
                .map(|u| u.name),
            credentials,
            login,
            cgroup: cgroups.unified,
            netns: NetnsInfo {
                inode: netns_inode,
                foreign,
            },
            families_denied,
            not_reproduced,
            resolv_conf,
            netns_file: Some(Arc::new(netns_file)),
        })
    }

    /// The account the plan and report use: named by the identity as given, with the
    /// effective uid and gid that owner rules see.
    pub fn account(&self) -> Account {
        Account {
            name: self.key.clone(),
            uid: Uid::from_raw(self.credentials.uid()),
            gid: Gid::from_raw(self.credentials.gid()),
        }
    }

    /// How reports name it: `unit:php8.2-fpm.service (pid 812, uid 33 www-data)`.
    pub fn describe(&self) -> String {
        let uid = self.credentials.uid();
        let user = match (&self.login, &self.user_name) {
            (Some(login), _) => format!("uid {uid} {login}, login identity"),
            (None, Some(name)) => format!("uid {uid} {name}"),
            (None, None) => format!("uid {uid}"),
        };
        format!("{} (pid {}, {user})", self.key, self.pid)
    }
}

fn describe_families(families: &AddressFamilies) -> String {
    match families {
        AddressFamilies::Any => String::new(),
        AddressFamilies::Allow(list) => list.join(" "),
        AddressFamilies::Deny(list) => format!("~{}", list.join(" ")),
    }
}

/// USER's login identity as exact credentials: uid and gid for all three, the group
/// database's groups.
fn login_credentials(account: &Account, spec: &str) -> Result<Credentials, ServiceError> {
    let groups = identity::expected_groups(account).map_err(|errno| ServiceError::Switch {
        subject: spec.to_string(),
        step: "getgrouplist",
        errno,
    })?;
    Ok(Credentials {
        uids: [account.uid.as_raw(); 3],
        gids: [account.gid.as_raw(); 3],
        groups: groups.into_iter().collect(),
    })
}

fn lsm_label(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/attr/current")).ok()?;
    let label = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!label.is_empty() && label != "unconfined").then(|| label.to_string())
}

fn lsm_label_self() -> Option<String> {
    lsm_label(std::process::id() as i32)
}

/// Checks, before anything is probed, that this process may stand in `identity`.
pub fn ensure_privileged(identity: &ServiceIdentity) -> Result<(), ServiceError> {
    if unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(ServiceError::NotPrivileged {
        subject: identity.key.clone(),
        current: identity::current_user_name(),
    })
}

/// Worker side: takes `target`'s network namespace, cgroup and credentials, in that order,
/// then sets `no_new_privs` and verifies. Must run single-threaded, before any runtime.
pub fn take(target: &ServiceIdentity) -> Result<(), ServiceError> {
    let subject = || target.key.clone();
    let gone = |error| ServiceError::Process {
        subject: subject(),
        error,
    };
    procfs::still_the_same(target.pid, target.start_time).map_err(gone)?;
    let netns = File::open(format!("/proc/{}/ns/net", target.pid)).map_err(|source| {
        ServiceError::Netns {
            subject: subject(),
            step: "open",
            source,
        }
    })?;
    procfs::still_the_same(target.pid, target.start_time).map_err(gone)?;
    nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        ServiceError::Netns {
            subject: subject(),
            step: "enter",
            source: errno.into(),
        }
    })?;
    drop(netns);
    if let Some(cgroup) = &target.cgroup {
        // The plan's cgroup must still be the process's: it may have been moved meanwhile.
        let now = procfs::parse_cgroup(&procfs::read(target.pid, "cgroup").map_err(gone)?);
        if now.unified.as_deref() != Some(cgroup.as_str()) {
            return Err(ServiceError::Verify {
                subject: subject(),
                problem: format!(
                    "the process moved from cgroup `{cgroup}` to `{}` since the run was planned",
                    now.unified.unwrap_or_default()
                ),
            });
        }
        cgroup::join(cgroup).map_err(|error| ServiceError::Cgroup {
            subject: subject(),
            error,
        })?;
    }
    // Namespace and cgroup are held now: the probes may run to the end even if the process
    // exits. Checked once more so that a process gone during the steps is reported.
    procfs::still_the_same(target.pid, target.start_time).map_err(gone)?;
    become_exactly(target)
}

/// Takes `target.credentials` exactly (groups, then gids, then uids), sets `no_new_privs`,
/// and verifies; for a target that is not root, also that there is no way back.
fn become_exactly(target: &ServiceIdentity) -> Result<(), ServiceError> {
    let creds = &target.credentials;
    let switch = |step, errno| ServiceError::Switch {
        subject: target.key.clone(),
        step,
        errno,
    };
    let gid = |g: u32| Gid::from_raw(g);
    let uid = |u: u32| Uid::from_raw(u);
    if !creds.is_root() {
        identity::drop_bounding_set();
    }
    let groups: Vec<Gid> = creds.groups.iter().copied().map(gid).collect();
    unistd::setgroups(&groups).map_err(|e| switch("setgroups", e))?;
    unistd::setresgid(gid(creds.gids[0]), gid(creds.gids[1]), gid(creds.gids[2]))
        .map_err(|e| switch("setresgid", e))?;
    unistd::setresuid(uid(creds.uids[0]), uid(creds.uids[1]), uid(creds.uids[2]))
        .map_err(|e| switch("setresuid", e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| switch("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    verify_exactly(target)
}

fn verify_exactly(target: &ServiceIdentity) -> Result<(), ServiceError> {
    let creds = &target.credentials;
    let problem = |problem: String| ServiceError::Verify {
        subject: target.key.clone(),
        problem,
    };
    let uids = unistd::getresuid().map_err(|e| problem(format!("getresuid: {e}")))?;
    let uids = [uids.real, uids.effective, uids.saved].map(Uid::as_raw);
    if uids != creds.uids {
        return Err(problem(format!(
            "uids are {uids:?}, expected {:?}",
            creds.uids
        )));
    }
    let gids = unistd::getresgid().map_err(|e| problem(format!("getresgid: {e}")))?;
    let gids = [gids.real, gids.effective, gids.saved].map(Gid::as_raw);
    if gids != creds.gids {
        return Err(problem(format!(
            "gids are {gids:?}, expected {:?}",
            creds.gids
        )));
    }
    let groups: BTreeSet<u32> = unistd::getgroups()
        .map_err(|e| problem(format!("getgroups: {e}")))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    let expected: BTreeSet<u32> = creds.groups.iter().copied().collect();
    if groups != expected {
        return Err(problem(format!(
            "groups are {groups:?}, the process has {expected:?}"
        )));
    }
    if !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
        return Err(problem("no_new_privs is not set".to_string()));
    }
    if !creds.is_root() {
        if let Some(caps) = identity::capability_sets() {
            if caps.effective | caps.permitted | caps.ambient != 0 {
                return Err(problem(format!("capabilities remain: {caps:?}")));
            }
        }
        if unistd::setuid(Uid::from_raw(0)).is_ok() || unistd::setgid(Gid::from_raw(0)).is_ok() {
            return Err(problem("could become root again".to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_of_as() {
        assert_eq!(
            Subject::parse("www-data").unwrap(),
            Subject::User("www-data".into())
        );
        assert_eq!(Subject::parse("33").unwrap(), Subject::User("33".into()));
        assert_eq!(Subject::parse("pid:812").unwrap(), Subject::Pid(812));
        assert_eq!(
            Subject::parse("unit:php8.2-fpm.service").unwrap(),
            Subject::Unit {
                unit: "php8.2-fpm.service".into(),
                user: None
            }
        );
        assert_eq!(
            Subject::parse("unit:postfix.service/postfix").unwrap(),
            Subject::Unit {
                unit: "postfix.service".into(),
                user: Some("postfix".into())
            }
        );
        for bad in ["pid:abc", "pid:", "pid:0", "pid:-1", "pid:1.5"] {
            assert!(
                matches!(Subject::parse(bad), Err(ServiceError::BadPid(_))),
                "{bad}"
            );
        }
        for bad in ["unit:", "unit:/postfix", "unit:x.service/", "unit:a/b/c"] {
            assert!(
                matches!(Subject::parse(bad), Err(ServiceError::BadUnit(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_kernel_thread_is_refused() {
        // kthreadd is pid 2 in the initial pid namespace; in a container it may not exist.
        let Ok(stat) = procfs::stat(2) else { return };
        if !stat.is_kernel_thread() {
            return;
        }
        let err = ServiceIdentity::of_subject("pid:2", &Subject::Pid(2)).unwrap_err();
        assert!(
            matches!(
                err,
                ServiceError::Process {
                    error: ProcError::KernelThread { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn this_process_as_a_service() {
        let me = std::process::id() as i32;
        let spec = format!("pid:{me}");
        let id = ServiceIdentity::of_subject(&spec, &Subject::Pid(me)).unwrap();
        assert_eq!(id.pid, me);
        assert!(!id.netns.foreign);
        assert_eq!(id.credentials.uid(), unistd::geteuid().as_raw());
        assert!(id
            .describe()
            .starts_with(&format!("pid:{me} (pid {me}, uid ")));
        assert_eq!(id.account().name, spec);
        // The worker's copy travels as JSON.
        let back: ServiceIdentity =
            serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
        assert_eq!(back.credentials, id.credentials);
        assert_eq!(back.cgroup, id.cgroup);
    }
}
