//! What `/proc` says about processes: who they are (credentials, capabilities), what they
//! hold (descriptors, environment, working directory), how much memory they use, which are
//! `egress-check` workers, and whether a given process still runs.
//!
//! Processes come and go while a test looks at them, so every reader returns `None` or an
//! empty value for a process that is gone instead of failing.

use std::collections::HashMap;
use std::path::PathBuf;

/// The worker subcommand, as it appears in a worker's command line.
const WORKER_ARG: &str = "__probe-as";

/// Pids of every process.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The arguments of `pid` (lossily UTF-8); empty for a zombie, `None` when it is gone.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether the command line `args` is an `egress-check` worker's (`__probe-as USER ...`).
pub fn is_worker(args: &[String]) -> bool {
    args.iter().any(|a| a == WORKER_ARG)
}

/// Processes (not zombies) whose command line is `... __probe-as USER --parent PARENT`.
pub fn workers_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    pids()
        .into_iter()
        .filter(|&pid| {
            // A zombie's cmdline is empty, so it never matches.
            cmdline(pid).is_some_and(|args| {
                is_worker(&args)
                    && args
                        .windows(2)
                        .any(|w| w[0] == "--parent" && w[1] == parent)
            })
        })
        .collect()
}

/// The executable of `pid` (`/proc/PID/exe`).
pub fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The fields of `/proc/PID/stat` after the command name (state first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(String::from).collect())
}

/// `/proc/PID/stat` as text, for messages.
pub fn stat_text(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// When process `pid` started (clock ticks after boot), to tell it from a later one that
/// reuses the pid.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether the process `pid` that started at `started` still exists and is not a zombie.
pub fn running_since(pid: u32, started: u64) -> bool {
    stat_fields(pid).is_some_and(|f| {
        f.get(19).and_then(|t| t.parse::<u64>().ok()) == Some(started)
            && !matches!(f.first().map(String::as_str), Some("Z" | "X" | "x"))
    })
}

/// Fields of `/proc/PID/status` as text, by name (empty when the process is gone).
pub fn status(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// A `status` field given in kB (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(status: &HashMap<String, String>, key: &str) -> Option<u64> {
    status.get(key)?.split_whitespace().next()?.parse().ok()
}

/// `pid` and every process below it (through each thread's `children`).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let pid = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// The open descriptors of `pid`: (number, what it points to).
pub fn fds(pid: u32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let target = std::fs::read_link(e.path())
                        .map_or_else(|e| format!("? {e}"), |t| t.display().to_string());
                    (e.file_name().to_string_lossy().into_owned(), target)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many descriptors `pid` has open (0 when it is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The soft "Max open files" limit of `pid`, as `/proc/PID/limits` shows it.
pub fn nofile_soft_limit(pid: u32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    Some(line.split_whitespace().nth(3).unwrap_or("?").to_string())
}

/// The environment of `pid`, raw (`NAME=VALUE` entries separated by NUL bytes).
pub fn environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

/// The working directory of `pid`.
pub fn cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Where descriptor `fd` of `pid` points.
pub fn fd_target(pid: u32, fd: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()
}
