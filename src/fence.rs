//! The fence a worker (and the resolver process, [`crate::dns_process`], and the sandbox's
//! simulated internet, [`crate::lab::internet_process`]) puts around itself once it is the user and before its first probe:
//! Landlock with no filesystem access (where the kernel has it), then a seccomp allowlist of
//! the system calls the probe loop needs, whose default action kills the process.
//!
//! Why both: the identity drop ([`crate::identity`]) bounds what the worker *may* do to what
//! the user may; the fence bounds what it *can* do to connecting TCP sockets and writing
//! results, so that a bug in the probe loop (or in what it links) cannot be turned into
//! reading the user's files, talking to local daemons over Unix sockets, or signalling other
//! processes. A call outside the allowlist kills the worker with SIGSYS; the parent reports
//! its unfinished probes as inconclusive naming that cause ([`crate::worker::WorkerError`]),
//! never as a pass.
//!
//! The filter is installed after the runtime exists (its epoll and eventfd descriptors and
//! signal pipe are made then), so the allowlist holds only what the loop itself does:
//! memory, time, futexes, epoll, stdio, and TCP sockets of the two Internet families.

use std::collections::BTreeMap;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, Ruleset, RulesetAttr,
    RulesetStatus, Scope, ABI,
};
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Serialize;

/// Which process is fenced: what it needs beyond the common allowlist differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A probe worker: TCP connects only.
    Worker,
    /// The resolver process: UDP and TCP queries to nameservers (UDP sockets are bound to a
    /// random port, and answers are received with recvfrom/recvmsg).
    Resolver,
    /// The sandbox's simulated internet ([`crate::lab`]), a server whose sockets are all
    /// bound before the fence: it accepts, reads and writes, and makes no socket, binds
    /// nothing and connects nowhere (Landlock handles TCP bind and connect too, allowing
    /// neither).
    Internet,
}

/// Why the fence could not be put up; the worker then refuses to probe.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Landlock is in the kernel but refused the ruleset.
    #[error("cannot restrict the worker with Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The seccomp filter could not be built (a bug) or installed.
    #[error("cannot install the worker's seccomp filter: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// The filter's rules do not compile (a bug in [`filter`]).
    #[error("the worker's seccomp filter does not compile: {0}")]
    Filter(#[from] seccompiler::BackendError),
    /// This architecture has no filter here.
    #[error("no seccomp filter for this architecture ({0})")]
    Architecture(&'static str),
}

/// What Landlock did, as `--diagnose` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockReport {
    /// `enforced`, `partially-enforced`, `not-enforced`.
    pub status: &'static str,
    /// Why it is not (fully) enforced, or the ABI it is enforced with.
    pub detail: String,
}

/// Puts up Landlock: no filesystem access at all, no `bind(2)` of TCP ports (a worker), no signals to
/// or abstract Unix sockets of processes outside the worker. Best effort as to the kernel's
/// features (an older kernel enforces what it knows), an error only when Landlock exists
/// and refuses.
///
/// Connecting is not handled: that is what the worker is for, to any port.
pub fn landlock(role: Role) -> Result<LandlockReport, FenceError> {
    // The newest ABI this crate knows; the crate keeps what the running kernel has.
    let abi = ABI::V6;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?;
    match role {
        Role::Worker => ruleset = ruleset.handle_access(AccessNet::BindTcp)?,
        Role::Internet => ruleset = ruleset.handle_access(AccessNet::from_all(abi))?,
        Role::Resolver => {}
    }
    let status = ruleset
        .scope(Scope::from_all(abi))?
        .create()?
        .restrict_self()?;
    let detail = match status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => match kernel_abi {
            Some(kernel) => format!("kernel ABI {kernel}, used as {effective_abi:?}"),
            None => format!("kernel ABI {}", effective_abi as i32),
        },
        LandlockStatus::NotEnabled => "Landlock is built into the kernel but not enabled \
             (add `landlock` to the lsm= boot parameter)"
            .to_string(),
        LandlockStatus::NotImplemented => "the kernel has no Landlock".to_string(),
    };
    Ok(LandlockReport {
        status: match status.ruleset {
            RulesetStatus::FullyEnforced => "enforced",
            RulesetStatus::PartiallyEnforced => "partially-enforced",
            RulesetStatus::NotEnforced => "not-enforced",
        },
        detail,
    })
}

/// System calls every fenced process may make, whatever their arguments.
fn always_allowed() -> Vec<i64> {
    let mut calls = vec![
        // stdio and the runtime's descriptors
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_lseek,
        // the runtime's reactor
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        // sockets once made (`connect` only for the roles that connect: see `allowed`)
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_shutdown,
        // the probe's second descriptor of its socket (F_DUPFD_CLOEXEC)
        libc::SYS_fcntl,
        // memory
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        // time and waiting
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_restart_syscall,
        // signals the kernel delivers (the runtime's handlers, stack overflow guard)
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        // std's hash seeds, thread ids, the end
        libc::SYS_getrandom,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_epoll_wait, libc::SYS_nanosleep, libc::SYS_poll]);
    calls
}

/// The arch this build's filter is compiled for.
fn target_arch() -> Result<TargetArch, FenceError> {
    #[cfg(target_arch = "x86_64")]
    return Ok(TargetArch::x86_64);
    #[cfg(target_arch = "aarch64")]
    return Ok(TargetArch::aarch64);
    #[cfg(target_arch = "riscv64")]
    return Ok(TargetArch::riscv64);
    #[allow(unreachable_code)]
    Err(FenceError::Architecture(std::env::consts::ARCH))
}

/// What the resolver needs beyond [`always_allowed`].
fn resolver_calls() -> Vec<i64> {
    vec![
        libc::SYS_bind,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendmmsg,
        libc::SYS_recvmmsg,
        libc::SYS_ioctl,
    ]
}

/// What the simulated internet needs beyond [`always_allowed`]: accepting connections on
/// its listeners, and the DNS server's datagrams (tokio's `recv_from`/`send_to`, and
/// std's `recv`/`send` on streams, which glibc makes recvfrom/sendto).
fn internet_calls() -> Vec<i64> {
    let mut calls = vec![
        libc::SYS_accept4,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.push(libc::SYS_accept);
    calls
}

fn allowed(role: Role) -> Vec<i64> {
    let mut calls = always_allowed();
    match role {
        // The probes' connects; the resolver's to its nameservers (TCP, and UDP sockets
        // that hickory connects).
        Role::Worker => calls.push(libc::SYS_connect),
        Role::Resolver => {
            calls.push(libc::SYS_connect);
            calls.extend(resolver_calls())
        }
        // The internet only answers: a compromised server must not reach anywhere, UDP
        // included (Landlock's TCP rule cannot stop a UDP connect).
        Role::Internet => calls.extend(internet_calls()),
    }
    calls
}

/// The filter of `role`: its allowlist, plus (for a worker or the resolver) `socket(2)` for
/// `AF_INET` and `AF_INET6` only; anything else kills the process. The internet makes no
/// socket once fenced.
pub fn filter(role: Role) -> Result<BpfProgram, FenceError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed(role)
        .into_iter()
        .map(|call| (call, Vec::new()))
        .collect();
    let family = |domain: libc::c_int| -> Result<SeccompRule, seccompiler::Error> {
        Ok(SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            domain as u64,
        )?])?)
    };
    if role != Role::Internet {
        rules.insert(
            libc::SYS_socket,
            vec![family(libc::AF_INET)?, family(libc::AF_INET6)?],
        );
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        target_arch()?,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the [`filter`] of `role` on this (single-threaded) process; returns how many
/// system calls it allows. Needs `no_new_privs`, which the identity drop has set.
pub fn seccomp(role: Role) -> Result<usize, FenceError> {
    let program = filter(role)?;
    seccompiler::apply_filter(&program)?;
    Ok(allowed(role).len() + usize::from(role != Role::Internet))
}

/// The kernel's word on this process's seccomp mode: the `Seccomp:` line of a
/// `/proc/self/status` opened before the fence (0 none, 1 strict, 2 filter).
pub fn seccomp_mode(status: &mut std::fs::File) -> String {
    use std::io::{Read, Seek};
    // Plain reads: `read_to_string` on a File asks statx(2) for a size hint first, which
    // the filter does not allow.
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    if status.rewind().is_err() {
        return "unknown".to_string();
    }
    loop {
        match status.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(_) => return "unknown".to_string(),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    match text
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
    {
        Some("0") => "disabled".to_string(),
        Some("1") => "strict".to_string(),
        Some("2") => "filter".to_string(),
        other => format!("unknown ({other:?})"),
    }
}

/// Hidden test hook: a fault a worker commits on purpose once fenced, so that tests can
/// prove how the parent reports a worker its fence killed. Only reachable through a hidden
/// command-line option (never a scenario file or the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFault {
    /// Opens a Unix socket: outside the allowlist.
    ForbiddenCall,
}

/// Commits `fault`.
pub fn commit_fault(fault: TestFault) {
    match fault {
        TestFault::ForbiddenCall => {
            // SAFETY: socket(2) takes integers only; the filter kills the process here.
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_filter_compiles() {
        for role in [Role::Worker, Role::Resolver, Role::Internet] {
            let program = filter(role).unwrap();
            assert!(program.len() > allowed(role).len());
        }
    }

    #[test]
    fn only_the_roles_that_connect_may_connect() {
        assert!(allowed(Role::Worker).contains(&libc::SYS_connect));
        assert!(allowed(Role::Resolver).contains(&libc::SYS_connect));
        assert!(!allowed(Role::Internet).contains(&libc::SYS_connect));
    }
}
