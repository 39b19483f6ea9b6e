//! Lifecycle of the sandbox's namespace pair: unique names, creation with
//! `ip netns add`, the veth link with its dual-stack addresses and routes,
//! and deletion (after killing whatever still runs inside).
//!
//! The veth pair is created directly between the two namespaces
//! (`ip -n HOST link add eth0 type veth peer name eth0 netns INTERNET`), so it
//! never appears in the caller's namespace and its names cannot collide with
//! another sandbox's; deleting the namespaces destroys it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::SandboxError;

/// Where `ip netns add` keeps its namespace bind mounts.
pub(crate) const NETNS_DIR: &str = "/run/netns";
/// Prefix of every sandbox namespace name: `ecsb-<pid>-<n>-h` / `-i`.
pub(crate) const NAME_PREFIX: &str = "ecsb";
/// Name of the veth end in each namespace (host side and internet side).
pub(crate) const IFACE: &str = "eth0";

/// Internet end of the link (gateway of the host, DNS server address).
pub(crate) const LINK4_INTERNET: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Host end of the link.
pub(crate) const LINK4_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Prefix length of the IPv4 link (192.0.2.0/30, TEST-NET-1).
pub(crate) const LINK4_PREFIX: u8 = 30;
/// Internet end of the link, IPv6 (gateway, DNS server address).
pub(crate) const LINK6_INTERNET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xec, 0, 0, 0, 0, 1);
/// Host end of the link, IPv6.
pub(crate) const LINK6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xec, 0, 0, 0, 0, 2);
/// Prefix length of the IPv6 link (2001:db8:ec::/64, documentation range).
pub(crate) const LINK6_PREFIX: u8 = 64;
/// Sink address every A query is answered with (on the internet's `lo`).
pub(crate) const SINK4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
/// Sink address every AAAA query is answered with (on the internet's `lo`).
pub(crate) const SINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 0x25);

/// Per-process sequence number making namespace names unique.
static SEQUENCE: AtomicU32 = AtomicU32::new(0);
/// How many names to try before giving up (stale namespaces of a dead
/// process with the same pid are skipped, not reused).
const NAME_ATTEMPTS: u32 = 64;
/// How long deletion waits for killed processes to leave a namespace.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// `/run/netns/<name>`.
pub(crate) fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates a fresh pair of namespaces with unique names and returns
/// `(host, internet)`. Every namespace created is pushed onto `created`
/// before anything else can fail, so the caller can always clean up.
pub(crate) fn add_pair(created: &mut Vec<String>) -> Result<(String, String), SandboxError> {
    let pid = std::process::id();
    for _ in 0..NAME_ATTEMPTS {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let host = format!("{NAME_PREFIX}-{pid}-{n}-h");
        let internet = format!("{NAME_PREFIX}-{pid}-{n}-i");
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
    Err(SandboxError::NetnsUnsupported {
        detail: format!(
            "could not find a free namespace name after {NAME_ATTEMPTS} attempts in {NETNS_DIR}"
        ),
    })
}

/// `ip netns add NAME`; `Ok(false)` if the name is already taken.
fn add(name: &str, created: &mut Vec<String>) -> Result<bool, SandboxError> {
    let out = Command::new("ip")
        .args(["netns", "add", name])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| SandboxError::Spawn {
            program: "ip".into(),
            error,
        })?;
    if out.status.success() {
        created.push(name.to_owned());
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.contains("File exists") {
        return Ok(false);
    }
    Err(SandboxError::NetnsUnsupported {
        detail: format!("`ip netns add {name}` failed ({}): {stderr}", out.status),
    })
}

/// Brings up `lo` in both namespaces, creates the veth link, assigns the
/// addresses (IPv6 without DAD so they are usable at once), puts the sink
/// addresses on the internet's `lo`, and routes the host's default traffic
/// of both families to the internet. The internet gets no default route: it
/// only knows the link and its own addresses, so it forwards nowhere else.
pub(crate) fn configure_link(host: &str, internet: &str) -> Result<(), SandboxError> {
    let h = |args: &[&str]| ip_in(host, args);
    let i = |args: &[&str]| ip_in(internet, args);
    let cidr4 = |ip: Ipv4Addr| format!("{ip}/{LINK4_PREFIX}");
    let cidr6 = |ip: Ipv6Addr| format!("{ip}/{LINK6_PREFIX}");

    h(&["link", "set", "lo", "up"])?;
    i(&["link", "set", "lo", "up"])?;
    h(&[
        "link", "add", IFACE, "type", "veth", "peer", "name", IFACE, "netns", internet,
    ])?;

    i(&["addr", "add", &cidr4(LINK4_INTERNET), "dev", IFACE])?;
    i(&["addr", "add", &cidr6(LINK6_INTERNET), "dev", IFACE, "nodad"])?;
    i(&["addr", "add", &format!("{SINK4}/32"), "dev", "lo"])?;
    i(&["addr", "add", &format!("{SINK6}/128"), "dev", "lo"])?;
    i(&["link", "set", IFACE, "up"])?;

    h(&["addr", "add", &cidr4(LINK4_HOST), "dev", IFACE])?;
    h(&["addr", "add", &cidr6(LINK6_HOST), "dev", IFACE, "nodad"])?;
    h(&["link", "set", IFACE, "up"])?;
    h(&[
        "-4",
        "route",
        "add",
        "default",
        "via",
        &LINK4_INTERNET.to_string(),
    ])?;
    h(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        &LINK6_INTERNET.to_string(),
    ])?;
    Ok(())
}

/// `ip -n NAME ARGS...`
fn ip_in(name: &str, args: &[&str]) -> Result<String, SandboxError> {
    let mut full = vec!["-n", name];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs a short command to completion; on failure the error carries the
/// command line, exit status and the command's own output.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, SandboxError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| SandboxError::Spawn {
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
    Err(SandboxError::Command {
        command: std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        status: out.status,
        output,
    })
}

/// Pids of the processes inside namespace `name` (per `ip netns pids`),
/// excluding this process.
fn pids(name: &str) -> Result<Vec<Pid>, SandboxError> {
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
pub(crate) fn delete(name: &str) -> Result<(), SandboxError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan_uses_documentation_ranges() {
        let doc4 = |ip: Ipv4Addr| {
            let o = ip.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        };
        let doc6 = |ip: Ipv6Addr| ip.segments()[0] == 0x2001 && ip.segments()[1] == 0xdb8;
        for ip in [LINK4_INTERNET, LINK4_HOST, SINK4] {
            assert!(doc4(ip), "{ip}");
        }
        for ip in [LINK6_INTERNET, LINK6_HOST, SINK6] {
            assert!(doc6(ip), "{ip}");
        }
        // Both link ends in the same /30, neither the network nor broadcast.
        let net = |ip: Ipv4Addr| u32::from(ip) >> (32 - LINK4_PREFIX);
        assert_eq!(net(LINK4_INTERNET), net(LINK4_HOST));
        for ip in [LINK4_INTERNET, LINK4_HOST] {
            let host_bits = u32::from(ip) & ((1 << (32 - LINK4_PREFIX)) - 1);
            assert!(host_bits != 0 && host_bits != 3, "{ip}");
        }
    }

    #[test]
    fn names_fit_and_paths_are_under_run_netns() {
        // Worst case pid (2^22) and sequence number still make valid names;
        // veth names are fixed and short (IFNAMSIZ is 16 including NUL).
        let name = format!("{NAME_PREFIX}-4194304-{}-h", u32::MAX);
        assert!(name.len() < 255);
        assert!(IFACE.len() <= 15);
        assert_eq!(path_of("x"), PathBuf::from("/run/netns/x"));
    }
}
