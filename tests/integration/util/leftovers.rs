//! Checks that a run left nothing behind: no worker still running, no process in a
//! namespace, and for `sandbox` no namespace, process or temporary directory of its own.

use std::process::Command;
use std::time::Duration;

use super::process::{run_ok, stdout, wait_for};
use super::procfs;

/// Pids of the processes that live in network namespace `ns` (`ip netns pids`).
pub fn netns_pids(ns: &str) -> Vec<String> {
    let out = run_ok(
        Command::new("ip").args(["netns", "pids", ns]),
        &format!("ip netns pids {ns}"),
    );
    stdout(&out).split_whitespace().map(String::from).collect()
}

/// Asserts that within `limit` no process is left in network namespace `ns`.
#[track_caller]
pub fn assert_namespace_empty(ns: &str, limit: Duration, context: &str) {
    assert!(
        wait_for(limit, || netns_pids(ns).is_empty()),
        "processes left in {ns} {context}: {:?}",
        netns_pids(ns)
    );
}

/// Asserts that none of `workers` (pid, start time) runs any more and that network
/// namespace `ns`, where they ran, is empty.
#[track_caller]
pub fn assert_workers_gone(ns: &str, workers: &[(u32, u64)], after: &str) {
    for &(w, started) in workers {
        assert!(
            wait_for(Duration::from_secs(3), || !procfs::running_since(
                w, started
            )),
            "worker {w} still runs after {after}: {:?}",
            procfs::stat_text(w)
        );
    }
    assert_namespace_empty(
        ns,
        Duration::from_secs(3),
        &format!("after {after} (workers were {workers:?})"),
    );
}

/// What a `sandbox` run by process `pid` could have left behind: its namespaces
/// (`ecsb-PID-*`), processes in them or working for it (`--parent PID`), and its temporary
/// directories (`egress-check-sandbox-PID-*`).
pub fn of_sandbox(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let prefix = format!("ecsb-{pid}-");
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        if line.starts_with(&prefix) {
            found.push(format!("namespace {line}"));
        }
    }
    let parent = pid.to_string();
    let in_namespace = format!("/run/netns/{prefix}");
    for other in procfs::pids() {
        let Some(args) = procfs::cmdline(other) else {
            continue;
        };
        if args.iter().any(|a| a.contains(&in_namespace))
            || args
                .windows(2)
                .any(|w| w[0] == "--parent" && w[1] == parent)
        {
            found.push(format!("process {other}: {}", args.join(" ")));
        }
    }
    let temp = std::env::temp_dir();
    for entry in std::fs::read_dir(&temp).expect("temp dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("egress-check-sandbox-{pid}-")) {
            found.push(format!("temp dir {name}"));
        }
    }
    found
}
