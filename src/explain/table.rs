//! Our temporary nftables table: chains at the lowest priority on the output and prerouting
//! hooks that set `nftrace` on the run's packets only, so that the kernel reports every
//! rule those packets meet. Named `egress_check_trace_<pid>`; removed when dropped (normal
//! end, error, and the interrupts the runner turns into a normal return), and a table whose
//! pid is gone (a SIGKILLed run) is removed by the next run ([`reap_stale`]).
//!
//! Narrowing (as far as nft lets a rule match): on the way out, TCP from the probed users'
//! sockets (`meta skuid`) to the run's addresses and ports; on the way in, TCP from those
//! addresses and ports (replies have no socket owner yet at prerouting). Packets of other
//! processes that still match are traced for the second the run lasts and then discarded
//! by the 5-tuple match ([`super::decide`]), never attributed.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// Prefix of our tables' names.
pub const TABLE_PREFIX: &str = "egress_check_trace_";

/// Why an `nft` command failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error("cannot run nft: {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` failed; its own message.
    #[error("nft {args} failed: {stderr}")]
    Failed {
        /// What was asked.
        args: String,
        /// What nft said.
        stderr: String,
    },
}

/// Runs `nft ARGS` (with `input` on stdin, if given); returns its stdout.
pub fn nft(args: &[&str], input: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A failed write shows in nft's exit status and message.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the trace rules match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// uids of the probed users.
    pub uids: BTreeSet<u32>,
    /// Destination addresses.
    pub addresses: BTreeSet<IpAddr>,
    /// Destination ports.
    pub ports: BTreeSet<u16>,
}

/// The `nft -f` script that creates the table `name` for `scope`.
pub fn script(name: &str, scope: &Scope) -> String {
    let list = |items: Vec<String>| items.join(", ");
    let v4: Vec<String> = scope
        .addresses
        .iter()
        .filter(|a| a.is_ipv4())
        .map(IpAddr::to_string)
        .collect();
    let v6: Vec<String> = scope
        .addresses
        .iter()
        .filter(|a| a.is_ipv6())
        .map(IpAddr::to_string)
        .collect();
    let uids = list(scope.uids.iter().map(u32::to_string).collect());
    let ports = list(scope.ports.iter().map(u16::to_string).collect());
    let mut out = format!("table inet {name} {{\n");
    let mut outgoing = Vec::new();
    let mut incoming = Vec::new();
    if !uids.is_empty() && !ports.is_empty() {
        out.push_str(&format!(
            "  set users {{ typeof meta skuid; elements = {{ {uids} }}; }}\n\
             \x20 set ports {{ typeof tcp dport; elements = {{ {ports} }}; }}\n"
        ));
        for (set, addrs, ip) in [("dst4", &v4, "ip"), ("dst6", &v6, "ip6")] {
            if addrs.is_empty() {
                continue;
            }
            let kind = if ip == "ip" { "ip daddr" } else { "ip6 daddr" };
            out.push_str(&format!(
                "  set {set} {{ typeof {kind}; elements = {{ {} }}; }}\n",
                list(addrs.clone())
            ));
            outgoing.push(format!(
                "    meta skuid @users {ip} daddr @{set} tcp dport @ports meta nftrace set 1"
            ));
            incoming.push(format!(
                "    {ip} saddr @{set} tcp sport @ports meta nftrace set 1"
            ));
        }
    }
    // Priority INT_MIN: before every other chain on the hook, so every rule of the host's
    // own chains sees the packet with nftrace already set.
    out.push_str(
        "  chain out {\n    type filter hook output priority -2147483648; policy accept;\n",
    );
    for rule in outgoing {
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str(
        "  }\n  chain in {\n    type filter hook prerouting priority -2147483648; policy accept;\n",
    );
    for rule in incoming {
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("  }\n}\n");
    out
}

/// The table of this run; deleted when dropped.
#[derive(Debug)]
pub struct TraceTable {
    name: String,
    removed: bool,
}

impl TraceTable {
    /// Creates the table for `scope` (in the current network namespace).
    pub fn create(scope: &Scope) -> Result<TraceTable, NftError> {
        let name = format!("{TABLE_PREFIX}{}", std::process::id());
        // Ours from an earlier run with the same pid (pid reuse after a SIGKILL): replace it.
        let _ = nft(&["delete", "table", "inet", &name], None);
        let mut table = TraceTable {
            name,
            removed: false,
        };
        if let Err(err) = nft(&["-f", "-"], Some(&script(&table.name, scope))) {
            table.removed = true;
            return Err(err);
        }
        Ok(table)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the table now.
    pub fn remove(mut self) -> Result<(), NftError> {
        self.removed = true;
        nft(&["delete", "table", "inet", &self.name], None).map(|_| ())
    }
}

impl Drop for TraceTable {
    fn drop(&mut self) {
        if !self.removed {
            let _ = nft(&["delete", "table", "inet", &self.name], None);
        }
    }
}

/// Names of our tables in `nft -j list tables` output whose pid no longer runs.
pub fn stale_tables(json: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    value
        .get("nftables")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("table"))
        .filter(|t| t.get("family").and_then(|f| f.as_str()) == Some("inet"))
        .filter_map(|t| t.get("name").and_then(|n| n.as_str()))
        .filter_map(|name| {
            let pid: u32 = name.strip_prefix(TABLE_PREFIX)?.parse().ok()?;
            (!alive(pid)).then(|| name.to_owned())
        })
        .collect()
}

/// Removes tables left by runs that were killed (their pid is gone). Returns their names.
pub fn reap_stale() -> Vec<String> {
    let Ok(json) = nft(&["-j", "list", "tables"], None) else {
        return Vec::new();
    };
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    stale_tables(&json, alive)
        .into_iter()
        .filter(|name| nft(&["delete", "table", "inet", name], None).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_narrows_to_users_addresses_and_ports() {
        let scope = Scope {
            uids: [33, 979].into(),
            addresses: [
                "203.0.113.10".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ]
            .into(),
            ports: [25, 587].into(),
        };
        let s = script("egress_check_trace_42", &scope);
        assert!(s.starts_with("table inet egress_check_trace_42 {"), "{s}");
        assert!(
            s.contains("set users { typeof meta skuid; elements = { 33, 979 }; }"),
            "{s}"
        );
        assert!(s.contains("elements = { 25, 587 }"), "{s}");
        assert!(
            s.contains("set dst4 { typeof ip daddr; elements = { 203.0.113.10 }; }"),
            "{s}"
        );
        assert!(
            s.contains("set dst6 { typeof ip6 daddr; elements = { 2001:db8::1 }; }"),
            "{s}"
        );
        assert!(s.contains("meta skuid @users ip daddr @dst4 tcp dport @ports meta nftrace set 1"));
        assert!(s.contains("ip6 saddr @dst6 tcp sport @ports meta nftrace set 1"));
        assert_eq!(s.matches("priority -2147483648").count(), 2);
    }

    #[test]
    fn without_addresses_nothing_is_traced() {
        let s = script("t", &Scope::default());
        assert!(!s.contains("nftrace"), "{s}");
        assert!(!s.contains("elements = {  }"), "{s}");
    }

    #[test]
    fn only_dead_pids_tables_are_stale() {
        let json = r#"{"nftables":[{"metainfo":{}},
          {"table":{"family":"inet","name":"egress_check_trace_100","handle":1}},
          {"table":{"family":"inet","name":"egress_check_trace_200","handle":2}},
          {"table":{"family":"ip","name":"egress_check_trace_300","handle":3}},
          {"table":{"family":"inet","name":"egress_check_trace_x","handle":4}},
          {"table":{"family":"inet","name":"filter","handle":5}}]}"#;
        assert_eq!(
            stale_tables(json, |pid| pid == 200),
            vec!["egress_check_trace_100".to_string()]
        );
    }
}
