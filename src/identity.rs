//! Users: looking them up, and becoming one of them exactly and irreversibly.
//!
//! The drop follows what a login does (`initgroups`, then the gid, then the uid), sets all
//! three of real/effective/saved ids so there is no way back, sets `no_new_privs`, and then
//! verifies the result instead of trusting it. std's `Command::uid/gid` is not used: it
//! clears the supplementary groups, and owner rules with `--suppl-groups` would then see a
//! different identity than the user's real processes have.

use std::collections::BTreeSet;
use std::ffi::CString;

use nix::errno::Errno;
use nix::unistd::{self, Gid, Uid, User};
use serde::Serialize;

/// A local account as the passwd database knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group id.
    pub gid: Gid,
}

/// Why an identity could not be looked up or taken.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No passwd entry by that name.
    #[error(
        "no such user `{0}` (not in the passwd database; check the name with `getent passwd {0}`)"
    )]
    UnknownUser(String),
    /// A numeric uid without a passwd entry: its groups cannot be known.
    #[error("uid {0} has no passwd entry; egress-check needs one to derive the user's groups exactly as a login would (create the user, or name an existing one)")]
    UnknownUid(u32),
    /// The name service failed.
    #[error("cannot look up user `{name}`: {errno}")]
    Lookup {
        /// The name asked for.
        name: String,
        /// The error from the name service.
        errno: Errno,
    },
    /// Switching users needs privileges this process lacks.
    #[error("probing as `{user}` needs root (or CAP_SETUID and CAP_SETGID), and egress-check runs as `{current}`: run it with sudo{}", alternative.as_ref().map(|a| format!(", or {a}")).unwrap_or_default())]
    NotPrivileged {
        /// The user asked for.
        user: String,
        /// Who we are.
        current: String,
        /// What would work without privileges, when something would (set by the mode,
        /// which knows: [`IdentityError::with_alternative`]).
        alternative: Option<String>,
    },
    /// A system call of the drop failed.
    #[error("cannot become `{user}`: {step} failed: {errno}")]
    Switch {
        /// The user.
        user: String,
        /// The failing step.
        step: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// The drop seemed to work but the resulting identity is not the expected one.
    #[error("identity of `{user}` did not verify: {problem}")]
    Verify {
        /// The user.
        user: String,
        /// What was wrong.
        problem: String,
    },
}

impl IdentityError {
    /// Adds what the user could do instead to a [`IdentityError::NotPrivileged`]; other
    /// errors are returned as they are. Only the mode knows what would work: an ad hoc check
    /// can always probe as oneself, a scenario only when it has checks of that user.
    pub fn with_alternative(self, alternative: Option<String>) -> IdentityError {
        match self {
            IdentityError::NotPrivileged { user, current, .. } => IdentityError::NotPrivileged {
                user,
                current,
                alternative,
            },
            other => other,
        }
    }
}

/// Looks up `spec`, a login name or (when it has a passwd entry) a numeric uid.
pub fn lookup(spec: &str) -> Result<Account, IdentityError> {
    let lookup_error = |errno| IdentityError::Lookup {
        name: spec.to_string(),
        errno,
    };
    if let Some(user) = User::from_name(spec).map_err(lookup_error)? {
        return Ok(account_of(user));
    }
    if let Ok(uid) = spec.parse::<u32>() {
        return match User::from_uid(Uid::from_raw(uid)).map_err(lookup_error)? {
            Some(user) => Ok(account_of(user)),
            None => Err(IdentityError::UnknownUid(uid)),
        };
    }
    Err(IdentityError::UnknownUser(spec.to_string()))
}

fn account_of(user: User) -> Account {
    Account {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
    }
}

/// The name of the user this process runs as (or its uid when it has no name).
pub fn current_user_name() -> String {
    let uid = unistd::geteuid();
    User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// Checks, before anything is probed, that this process may become `account`.
pub fn ensure_can_become(account: &Account) -> Result<(), IdentityError> {
    if account.uid == unistd::geteuid() || has_setid_capabilities() {
        return Ok(());
    }
    Err(IdentityError::NotPrivileged {
        user: account.name.clone(),
        current: current_user_name(),
        alternative: None,
    })
}

/// True when the effective capability set holds both CAP_SETUID and CAP_SETGID.
fn has_setid_capabilities() -> bool {
    const CAP_SETGID: u32 = 6;
    const CAP_SETUID: u32 = 7;
    match capability_sets() {
        Some(caps) => {
            caps.effective & (1 << CAP_SETGID) != 0 && caps.effective & (1 << CAP_SETUID) != 0
        }
        None => unistd::geteuid().is_root(),
    }
}

/// The capability sets of this process, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CapabilitySets {
    /// CapEff.
    pub effective: u64,
    /// CapPrm.
    pub permitted: u64,
    /// CapInh.
    pub inheritable: u64,
    /// CapAmb.
    pub ambient: u64,
    /// CapBnd.
    pub bounding: u64,
}

/// Reads this process's capability sets; `None` when `/proc` is not readable.
pub fn capability_sets() -> Option<CapabilitySets> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(CapabilitySets {
        effective: field("CapEff:")?,
        permitted: field("CapPrm:")?,
        inheritable: field("CapInh:")?,
        ambient: field("CapAmb:")?,
        bounding: field("CapBnd:")?,
    })
}

/// Irreversibly becomes `account`: supplementary groups from the group database, then the
/// gid, then the uid (real, effective and saved), then `no_new_privs`; then verifies.
///
/// Must be called while the process is single-threaded (before any runtime exists), because
/// the set*id calls of glibc only apply to all threads through a signal dance we avoid.
pub fn become_user(account: &Account) -> Result<(), IdentityError> {
    let switch = |step, errno| IdentityError::Switch {
        user: account.name.clone(),
        step,
        errno,
    };
    let already_that_user = unistd::getuid() == account.uid
        && unistd::geteuid() == account.uid
        && !account.uid.is_root();
    if !already_that_user {
        let name = CString::new(account.name.as_str()).map_err(|_| IdentityError::Verify {
            user: account.name.clone(),
            problem: "name contains a NUL byte".to_string(),
        })?;
        if !account.uid.is_root() {
            drop_bounding_set();
        }
        unistd::initgroups(&name, account.gid).map_err(|e| switch("initgroups", e))?;
        unistd::setresgid(account.gid, account.gid, account.gid)
            .map_err(|e| switch("setresgid", e))?;
        unistd::setresuid(account.uid, account.uid, account.uid)
            .map_err(|e| switch("setresuid", e))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| switch("prctl(PR_SET_NO_NEW_PRIVS)", e))?;
    // Probing as yourself keeps the groups of your session (they may be newer than the
    // database); a switched identity must match the database exactly.
    verify(account, !already_that_user)
}

/// Empties the capability bounding set, so that nothing run later could regain a capability.
///
/// Best effort: it needs CAP_SETPCAP, which a restricted root may lack. That loses nothing
/// essential: with `no_new_privs` set and a non-root uid, no exec can gain capabilities.
pub fn drop_bounding_set() {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(63);
    for cap in 0..=last {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        unsafe {
            nix::libc::prctl(
                nix::libc::PR_CAPBSET_DROP,
                cap as nix::libc::c_ulong,
                0,
                0,
                0,
            )
        };
    }
}

/// Checks that this process is exactly `account` and cannot get back; with `check_groups`,
/// also that its groups are exactly those of the group database.
pub fn verify(account: &Account, check_groups: bool) -> Result<(), IdentityError> {
    let problem = |problem: String| IdentityError::Verify {
        user: account.name.clone(),
        problem,
    };
    let uids = unistd::getresuid().map_err(|e| problem(format!("getresuid: {e}")))?;
    if [uids.real, uids.effective, uids.saved] != [account.uid; 3] {
        return Err(problem(format!(
            "uids are {}/{}/{}, expected {} for all three",
            uids.real, uids.effective, uids.saved, account.uid
        )));
    }
    let gids = unistd::getresgid().map_err(|e| problem(format!("getresgid: {e}")))?;
    if [gids.real, gids.effective, gids.saved] != [account.gid; 3] {
        return Err(problem(format!(
            "gids are {}/{}/{}, expected {} for all three",
            gids.real, gids.effective, gids.saved, account.gid
        )));
    }
    let expected = expected_groups(account).map_err(|e| problem(format!("getgrouplist: {e}")))?;
    let actual: BTreeSet<u32> = unistd::getgroups()
        .map_err(|e| problem(format!("getgroups: {e}")))?
        .into_iter()
        .map(Gid::as_raw)
        .chain(std::iter::once(account.gid.as_raw()))
        .collect();
    if check_groups && actual != expected {
        return Err(problem(format!(
            "groups are {actual:?}, the group database says {expected:?}"
        )));
    }
    if !nix::sys::prctl::get_no_new_privs().unwrap_or(false) {
        return Err(problem("no_new_privs is not set".to_string()));
    }
    if !account.uid.is_root() {
        if let Some(caps) = capability_sets() {
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

/// The groups a login of `account` gets: the primary gid plus the group database's list.
pub fn expected_groups(account: &Account) -> Result<BTreeSet<u32>, Errno> {
    let name = CString::new(account.name.as_str()).map_err(|_| Errno::EINVAL)?;
    Ok(unistd::getgrouplist(&name, account.gid)?
        .into_iter()
        .map(Gid::as_raw)
        .chain(std::iter::once(account.gid.as_raw()))
        .collect())
}

/// What a process can observe about its own identity; the `__probe-as --diagnose` output.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Real, effective and saved uid.
    pub uids: [u32; 3],
    /// Real, effective and saved gid.
    pub gids: [u32; 3],
    /// Supplementary groups, sorted.
    pub groups: Vec<u32>,
    /// The `no_new_privs` flag.
    pub no_new_privs: bool,
    /// Capability sets, when readable.
    pub capabilities: Option<CapabilitySets>,
    /// Open descriptors with what they point to.
    pub open_fds: Vec<String>,
    /// The environment as `KEY=VALUE`.
    pub environment: Vec<String>,
    /// Attempts to regain root and their results (`ok` would be a hole).
    pub regain_root: Vec<String>,
}

/// Takes a [`Snapshot`] of this process, then tries to regain root and records how that failed.
pub fn snapshot() -> Snapshot {
    let uids = unistd::getresuid().map_or([u32::MAX; 3], |r| {
        [r.real.as_raw(), r.effective.as_raw(), r.saved.as_raw()]
    });
    let gids = unistd::getresgid().map_or([u32::MAX; 3], |r| {
        [r.real.as_raw(), r.effective.as_raw(), r.saved.as_raw()]
    });
    let mut groups: Vec<u32> = unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            let mut fds: Vec<(u32, String)> = dir
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let fd: u32 = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path())
                        .map_or_else(|_| "?".to_string(), |p| p.display().to_string());
                    Some((fd, target))
                })
                .collect();
            fds.sort();
            fds.into_iter()
                .map(|(fd, t)| format!("{fd} -> {t}"))
                .collect()
        })
        .unwrap_or_default();
    let environment = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    let attempt = |what: &str, result: nix::Result<()>| match result {
        Ok(()) => format!("{what}: ok"),
        Err(e) => format!("{what}: {e:?}"),
    };
    let root = Uid::from_raw(0);
    let regain_root = vec![
        attempt("setuid(0)", unistd::setuid(root)),
        attempt("seteuid(0)", unistd::seteuid(root)),
        attempt("setresuid(0,0,0)", unistd::setresuid(root, root, root)),
        attempt("setgid(0)", unistd::setgid(Gid::from_raw(0))),
        attempt("setgroups([0])", unistd::setgroups(&[Gid::from_raw(0)])),
    ];
    Snapshot {
        uids,
        gids,
        groups,
        no_new_privs: nix::sys::prctl::get_no_new_privs().unwrap_or(false),
        capabilities: capability_sets(),
        open_fds,
        environment,
        regain_root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_uid() {
        let by_name = lookup("root").unwrap();
        assert_eq!(by_name.uid, Uid::from_raw(0));
        assert_eq!(lookup("0").unwrap(), by_name);
    }

    #[test]
    fn unknown_users_are_named() {
        let err = lookup("no-such-user-egress-check").unwrap_err();
        assert!(err.to_string().contains("`no-such-user-egress-check`"));
        let err = lookup("4000000123").unwrap_err();
        assert!(matches!(err, IdentityError::UnknownUid(4000000123)));
    }

    #[test]
    fn self_is_always_allowed() {
        let me = lookup(&unistd::geteuid().to_string()).unwrap();
        ensure_can_become(&me).unwrap();
    }

    #[test]
    fn expected_groups_include_the_primary_group() {
        let root = lookup("root").unwrap();
        assert!(expected_groups(&root).unwrap().contains(&0));
    }
}
