//! Lifecycle of a lab's namespace pair (named namespaces as iproute2 keeps them, see
//! [`crate::netns`]): unique names, creation with
//! `ip netns add`, the veth link with its dual-stack addresses and routes,
//! local addresses and AnyIP routes in the internet, and deletion (after
//! killing whatever still runs inside).
//!
//! Names are `PREFIX-PID-N-h` (host) and `PREFIX-PID-N-i` (internet), so the
//! creating process can be told from the name and labs of dead processes can
//! be reaped ([`reap_stale`]).
//!
//! The veth pair is created directly between the two namespaces
//! (`ip -n HOST link add eth0 type veth peer name eth0 netns INTERNET`), so it
//! never appears in the caller's namespace and its names cannot collide with
//! another lab's; deleting the namespaces destroys it.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{LabError, Link};
use crate::netns::{path_of, NETNS_DIR, NETNS_ETC};
/// Name of the veth end in each namespace (host side and internet side).
pub const IFACE: &str = "eth0";
/// MAC address of the host end of the link, and of the internet end: fixed
/// (locally administered), since each lab's link is a segment of its own, so
/// that each end can know the other's without neighbour discovery.
const HOST_MAC: &str = "02:ec:00:00:00:02";
/// See [`HOST_MAC`].
const INTERNET_MAC: &str = "02:ec:00:00:00:01";
/// Suffix of the host namespace's name.
const HOST_SUFFIX: &str = "h";
/// Suffix of the internet namespace's name.
const INTERNET_SUFFIX: &str = "i";

/// Per-process sequence number making namespace names unique.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);
/// How many names to try before giving up (stale namespaces of a dead
/// process with the same pid are skipped, not reused).
const NAME_ATTEMPTS: u32 = 64;
/// How long deletion waits for killed processes to leave a namespace.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Whether `prefix` makes valid, short namespace names: 1-8 characters of
/// `[a-z0-9]`.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    (1..=8).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Creates a fresh pair of namespaces with unique names and returns
/// `(host, internet)`. Every namespace created is pushed onto `created`
/// before anything else can fail, so the caller can always clean up.
pub(crate) fn add_pair(
    prefix: &str,
    created: &mut Vec<String>,
) -> Result<(String, String), LabError> {
    let pid = std::process::id();
    for _ in 0..NAME_ATTEMPTS {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let host = format!("{prefix}-{pid}-{n}-{HOST_SUFFIX}");
        let internet = format!("{prefix}-{pid}-{n}-{INTERNET_SUFFIX}");
        if path_of(&host).exists() || path_of(&internet).exists() {
            continue; // left over by an earlier process with the same pid
        }
        if !add(&host, created)? {
            continue;
        }
        if !add(&internet, created)? {
            // Lost a race for this name: drop the half and try the next one.
            let _ = delete(&host);
            created.retain(|c| c != &host);
            continue;
        }
        return Ok((host, internet));
    }
    Err(LabError::NetnsUnsupported {
        detail: format!(
            "could not find a free namespace name after {NAME_ATTEMPTS} attempts in {NETNS_DIR}"
        ),
    })
}

/// `ip netns add NAME`; `Ok(false)` if someone else created that name first.
fn add(name: &str, created: &mut Vec<String>) -> Result<bool, LabError> {
    match run("ip", &["netns", "add", name]) {
        Ok(_) => {
            created.push(name.to_owned());
            Ok(true)
        }
        // The name was free a moment ago; if it exists now, another process won the race.
        Err(_) if path_of(name).exists() => Ok(false),
        Err(LabError::Command {
            command,
            status,
            output,
        }) => Err(LabError::NetnsUnsupported {
            detail: format!("`{command}` failed ({status}): {output}"),
        }),
        Err(other) => Err(other),
    }
}

/// Brings up `lo` in both namespaces, creates the veth link (its host end
/// named `uplink`), assigns the addresses (IPv6 without DAD so they are
/// usable at once), and routes the host's default traffic of both families
/// to the internet. The internet gets no default route: it only knows the
/// link and its own addresses, so it forwards nowhere else.
///
/// `host_addrs` are the host's own addresses besides the link's: each goes on
/// the uplink as a host address (/32, /128), the first of each family becomes
/// the preferred source (`src`) of that family's default route, so the
/// probes' connections leave from it (as from a host whose public address is
/// on its uplink), and the internet routes each back over the link.
pub(crate) fn configure_link(
    host: &str,
    internet: &str,
    link: &Link,
    uplink: &str,
    host_addrs: &[IpAddr],
) -> Result<(), LabError> {
    let h = |args: &[&str]| ip_in(host, args);
    let i = |args: &[&str]| ip_in(internet, args);
    let cidr = |ip: IpAddr, prefix: u8| format!("{ip}/{prefix}");

    h(&["link", "set", "lo", "up"])?;
    i(&["link", "set", "lo", "up"])?;
    h(&[
        "link",
        "add",
        uplink,
        "address",
        HOST_MAC,
        "type",
        "veth",
        "peer",
        "name",
        IFACE,
        "address",
        INTERNET_MAC,
        "netns",
        internet,
    ])?;
    // Permanent IPv6 neighbours at both ends. Without them, the internet's
    // reply to a host address that is not on the link (`--host-addr`,
    // routed via the link address) needs neighbour discovery of the link
    // address, and the internet solicits from its link-local address, which
    // is tentative (DAD) for about a second after the link comes up: the
    // first connections time out. (Replies to the link address itself never
    // wait: the host's own solicitation, sent from that address, taught it.)
    i(&[
        "-6",
        "neigh",
        "replace",
        &link.host6.to_string(),
        "lladdr",
        HOST_MAC,
        "dev",
        IFACE,
        "nud",
        "permanent",
    ])?;
    h(&[
        "-6",
        "neigh",
        "replace",
        &link.internet6.to_string(),
        "lladdr",
        INTERNET_MAC,
        "dev",
        uplink,
        "nud",
        "permanent",
    ])?;

    i(&[
        "addr",
        "add",
        &cidr(link.internet4.into(), link.prefix4),
        "dev",
        IFACE,
    ])?;
    i(&[
        "addr",
        "add",
        &cidr(link.internet6.into(), link.prefix6),
        "dev",
        IFACE,
        "nodad",
    ])?;
    i(&["link", "set", IFACE, "up"])?;

    h(&[
        "addr",
        "add",
        &cidr(link.host4.into(), link.prefix4),
        "dev",
        uplink,
    ])?;
    h(&[
        "addr",
        "add",
        &cidr(link.host6.into(), link.prefix6),
        "dev",
        uplink,
        "nodad",
    ])?;
    for &addr in host_addrs {
        let (len, via) = match addr {
            IpAddr::V4(_) => (32, IpAddr::from(link.host4)),
            IpAddr::V6(_) => (128, IpAddr::from(link.host6)),
        };
        let cidr = cidr(addr, len);
        let mut add = vec!["addr", "add", &cidr, "dev", uplink];
        if addr.is_ipv6() {
            add.push("nodad"); // usable at once, as the link's own
        }
        h(&add)?;
        i(&["route", "add", &cidr, "via", &via.to_string()])?;
    }
    h(&["link", "set", uplink, "up"])?;
    for (family, gateway) in [
        ("-4", IpAddr::from(link.internet4)),
        ("-6", IpAddr::from(link.internet6)),
    ] {
        let gateway = gateway.to_string();
        let mut route = vec![family, "route", "add", "default", "via", &gateway];
        let src = host_addrs
            .iter()
            .find(|a| a.is_ipv4() == (family == "-4"))
            .map(ToString::to_string);
        if let Some(src) = &src {
            route.extend(["src", src]);
        }
        h(&route)?;
    }
    Ok(())
}

/// Puts `addr` on the internet's `lo` as a host address (/32 or /128).
pub(crate) fn add_local_address(internet: &str, addr: IpAddr) -> Result<(), LabError> {
    match addr {
        IpAddr::V4(_) => ip_in(
            internet,
            &["addr", "add", &format!("{addr}/32"), "dev", "lo"],
        ),
        // Loopback does no DAD, but say so: the address must be usable at once.
        IpAddr::V6(_) => ip_in(
            internet,
            &["addr", "add", &format!("{addr}/128"), "dev", "lo", "nodad"],
        ),
    }
    .map(drop)
}

/// `ip route add local NET/LEN dev lo` in the internet: the kernel then
/// treats every address of the range as its own (AnyIP), so a socket bound
/// to the wildcard address answers on all of them.
pub(crate) fn add_anyip_route(internet: &str, net: IpAddr, len: u8) -> Result<(), LabError> {
    let family = if net.is_ipv4() { "-4" } else { "-6" };
    ip_in(
        internet,
        &[
            family,
            "route",
            "add",
            "local",
            &format!("{net}/{len}"),
            "dev",
            "lo",
        ],
    )
    .map(drop)
}

/// `ip -n NAME ARGS...`
fn ip_in(name: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = vec!["-n", name];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs a short command to completion; on failure the error carries the
/// command line, exit status and the command's own output.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| LabError::Spawn {
            program: program.into(),
            error,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !stdout.trim().is_empty() {
        if !output.is_empty() {
            output.push('\n');
        }
        output.push_str(stdout.trim());
    }
    Err(LabError::Command {
        command: std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        status: out.status,
        output,
    })
}

/// Pids of the processes inside namespace `name` (per `ip netns pids`),
/// excluding this process (whose main thread may be inside, as the sandbox's
/// is while it runs the scenario).
fn pids(name: &str) -> Result<Vec<Pid>, LabError> {
    let me = std::process::id();
    Ok(run("ip", &["netns", "pids", name])?
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|&p| p != me)
        .filter_map(|p| i32::try_from(p).ok().map(Pid::from_raw))
        .collect())
}

/// Kills every process still inside namespace `name` (a setup script's
/// daemon, say), then `ip netns del`s it. Deleting a namespace that is
/// already gone succeeds, so this is idempotent.
pub(crate) fn delete(name: &str) -> Result<(), LabError> {
    if !path_of(name).exists() {
        return Ok(());
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let left = pids(name)?;
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in left {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match run("ip", &["netns", "del", name]) {
        Ok(_) => Ok(()),
        Err(_) if !path_of(name).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pid in a lab namespace name `PREFIX-PID-N-h` / `PREFIX-PID-N-i`.
fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u32>().ok()?;
    let suffix = parts.next()?;
    (parts.next().is_none() && (suffix == HOST_SUFFIX || suffix == INTERNET_SUFFIX)).then_some(pid)
}

/// Deletes the namespaces (and their `/etc/netns` directories) of labs with
/// this prefix whose creating process no longer runs: what a SIGKILLed
/// process left behind. Returns the names removed.
pub fn reap_stale(prefix: &str) -> Result<Vec<String>, LabError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(LabError::Io {
                context: format!("cannot list {NETNS_DIR}"),
                error,
            })
        }
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(prefix, &name) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        delete(&name)?;
        remove_etc_dir(&name)?;
        reaped.push(name);
    }
    Ok(reaped)
}

/// Removes `/etc/netns/<name>` if it exists.
pub(crate) fn remove_etc_dir(name: &str) -> Result<(), LabError> {
    let dir = Path::new(NETNS_ETC).join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(LabError::Io {
            context: format!("cannot remove {}", dir.display()),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_paths_are_under_run_netns() {
        // Worst case prefix, pid (2^22) and sequence number still make valid names;
        // veth names are fixed and short (IFNAMSIZ is 16 including NUL).
        let name = format!("abcdefgh-4194304-{}-h", u32::MAX);
        assert!(name.len() < 255);
        assert!(IFACE.len() <= 15);
        assert_eq!(path_of("x"), std::path::PathBuf::from("/run/netns/x"));
    }

    #[test]
    fn prefixes_are_short_and_plain() {
        for ok in ["ecsb", "ect", "ecb", "a1"] {
            assert!(valid_prefix(ok), "{ok}");
        }
        for bad in ["", "ECT", "e-c", "e/c", "toolongprefix", "e c"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn owner_pid_reads_only_lab_names_of_the_prefix() {
        assert_eq!(owner_pid("ect", "ect-123-4-h"), Some(123));
        assert_eq!(owner_pid("ect", "ect-123-4-i"), Some(123));
        assert_eq!(owner_pid("ect", "ecsb-123-4-h"), None);
        assert_eq!(owner_pid("ec", "ect-123-4-h"), None);
        assert_eq!(owner_pid("ect", "ect-123-4-x"), None);
        assert_eq!(owner_pid("ect", "ect-123-4-h-extra"), None);
        assert_eq!(owner_pid("ect", "ect-abc-4-h"), None);
        assert_eq!(owner_pid("ect", "ect-123-h"), None);
    }
}
