//! Measuring a tool's processes, as the old script did with bash's `time`,
//! GNU time and a /proc poller:
//!
//! - wall time: from just before the first process is started until the
//!   last one has been reaped;
//! - CPU time: user + system of the reaped children
//!   (`getrusage(RUSAGE_CHILDREN)` after minus before), which includes every
//!   descendant those children reaped (egress-check's workers, say);
//! - memory of the tree: every 20 ms a poller walks this process's
//!   descendants (`/proc/PID/task/TID/children`) and sums the VmHWM (peak RSS
//!   so far, `/proc/PID/status`) and the Pss (`/proc/PID/smaps_rollup`) of
//!   the live ones; the largest sums seen are reported, and the largest
//!   VmHWM of a single process (`max1`). The summed VmHWM bounds the true
//!   peak of the tree's summed RSS from above without adding up processes
//!   that never lived at the same time; it counts pages shared between
//!   processes (the binary's text) once per process, which is why Pss, which
//!   splits shared pages among their users, is shown too. The first sample
//!   is taken 10 ms in; a run that ends before it is reported as not
//!   sampled (its memory figures are 0).
//!
//! Kernel memory for sockets is not in any process's RSS or Pss, and is
//! reported apart (`kernel_kib`): each poll also reads the slab caches of TCP
//! sockets and what every socket drags along (`TCP`, `TCPv6`, their request
//! and TIME_WAIT socks, `sock_inode_cache`, the `filp` and `dentry` of the
//! socket's file are shared caches and left out) from `/proc/slabinfo`, and
//! the TCP buffer pages of `/proc/net/sockstat` (`TCP: ... mem`, global);
//! the largest sum seen less the sum before the run. It is the whole
//! machine's: the other engineers' builds move it a little.
//!
//! `max1` comes from /proc rather than from `ru_maxrss`, unlike GNU time's
//! `%M` in the old script: a child's `ru_maxrss` includes the memory it had
//! before it exec'd, and a child of the bench starts as a copy of the bench
//! (a few MiB of lab threads that are not the tool's).
//!
//! The bench process itself is never counted (its lab threads serve the
//! simulated internet), and while measuring it starts and reaps no process
//! but the measured ones, so its descendants are exactly the measured tree
//! and its reaped children's CPU time is the tree's. The processes are
//! started directly (no wrapper shell, no GNU time), so nothing needs to be
//! left out of the memory sums.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;
use procfs::process::Process;

use crate::error::BenchError;

/// How often the memory of the tree is sampled.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What one measured run cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Launch to exit.
    pub wall: Duration,
    /// User + system time of the whole tree.
    pub cpu: Duration,
    /// Peak of the summed VmHWM of the live processes.
    pub rss_kib: u64,
    /// Peak of the summed Pss of the live processes.
    pub pss_kib: u64,
    /// The largest VmHWM of a single process.
    pub max1_kib: u64,
    /// Peak kernel memory of TCP sockets, less what it was before the run.
    pub kernel_kib: u64,
    /// Whether any poll saw the tree alive (a run shorter than a poll
    /// interval may end unseen: its memory figures are then 0).
    pub sampled: bool,
}

/// Starts and reaps the measured processes.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Started and not reaped yet, by pid.
    live: Vec<Child>,
}

/// A process started by a [`Tracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started(u32);

impl Tracker {
    /// Starts `cmd`. Reap it with [`Tracker::wait`].
    pub fn spawn(&mut self, cmd: &mut Command) -> Result<Started, BenchError> {
        let child = cmd.spawn().map_err(|error| BenchError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            error,
        })?;
        let started = Started(child.id());
        self.live.push(child);
        Ok(started)
    }

    /// Waits for a process started by [`Tracker::spawn`].
    pub fn wait(&mut self, started: Started) -> Result<ExitStatus, BenchError> {
        let at = self
            .live
            .iter()
            .position(|c| c.id() == started.0)
            .expect("waiting for a process this tracker started and has not reaped");
        let mut child = self.live.swap_remove(at);
        child.wait().map_err(|error| BenchError::Io {
            context: format!("waiting for process {}", started.0),
            error,
        })
    }

    /// [`Tracker::spawn`], then [`Tracker::wait`].
    pub fn run(&mut self, cmd: &mut Command) -> Result<ExitStatus, BenchError> {
        let started = self.spawn(cmd)?;
        self.wait(started)
    }

    /// Kills and reaps whatever is still running (after an error half-way).
    fn reap_all(&mut self) {
        for mut child in std::mem::take(&mut self.live) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The exit code a shell would show: the status, or 128 + the signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn duration(tv: TimeVal) -> Duration {
    let secs = u64::try_from(tv.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// User + system time of every child this process has reaped so far
/// (each including the descendants it reaped).
fn children_cpu() -> Result<Duration, BenchError> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).map_err(|error| BenchError::Sys {
        context: "getrusage(RUSAGE_CHILDREN)".into(),
        error,
    })?;
    Ok(duration(usage.user_time()) + duration(usage.system_time()))
}

/// Runs `body`, which starts and reaps the measured processes through the
/// [`Tracker`], and measures them. If `body` fails, whatever it left running
/// is killed and reaped before the error is returned.
pub fn measure<T>(
    body: impl FnOnce(&mut Tracker) -> Result<T, BenchError>,
) -> Result<(Measurement, T), BenchError> {
    let done = AtomicBool::new(false);
    let kernel_before = kernel_socket_kib();
    std::thread::scope(|scope| {
        let poller = scope.spawn(|| poll(&done));
        let mut tracker = Tracker::default();
        let cpu_before = children_cpu();
        let start = Instant::now();
        let result = body(&mut tracker);
        let wall = start.elapsed();
        tracker.reap_all();
        let cpu_after = children_cpu();
        done.store(true, Ordering::Relaxed);
        let peaks = poller
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let value = result?;
        Ok((
            Measurement {
                wall,
                cpu: cpu_after?.saturating_sub(cpu_before?),
                rss_kib: peaks.hwm_sum,
                pss_kib: peaks.pss_sum,
                max1_kib: peaks.hwm_max,
                kernel_kib: peaks.kernel_kib.saturating_sub(kernel_before),
                sampled: peaks.processes > 0,
            },
            value,
        ))
    })
}

/// Memory of the tree, KiB: at one poll, or the largest over all polls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Peaks {
    /// Sum of VmHWM over the live processes.
    hwm_sum: u64,
    /// Sum of Pss over the live processes.
    pss_sum: u64,
    /// Largest VmHWM of one process.
    hwm_max: u64,
    /// Processes counted (the most at one poll).
    processes: usize,
    /// [`kernel_socket_kib`].
    kernel_kib: u64,
}

/// Samples the tree until `done`; returns the largest figures seen. The
/// first sample is taken half an interval in, not at once (when nothing has
/// been started yet), so that a run of 10-20 ms is still seen.
fn poll(done: &AtomicBool) -> Peaks {
    let me = i32::try_from(std::process::id()).expect("pids fit in i32");
    let my_exe = std::env::current_exe().ok();
    let mut peak = Peaks::default();
    std::thread::sleep(POLL_INTERVAL / 2);
    while !done.load(Ordering::Relaxed) {
        let now = tree_memory(me, my_exe.as_deref());
        peak = Peaks {
            hwm_sum: peak.hwm_sum.max(now.hwm_sum),
            pss_sum: peak.pss_sum.max(now.pss_sum),
            hwm_max: peak.hwm_max.max(now.hwm_max),
            processes: peak.processes.max(now.processes),
            kernel_kib: peak.kernel_kib.max(kernel_socket_kib()),
        };
        std::thread::sleep(POLL_INTERVAL);
    }
    peak
}

/// Slab caches of TCP sockets (see the module documentation).
const SOCKET_SLABS: [&str; 7] = [
    "TCP",
    "TCPv6",
    "request_sock_TCP",
    "request_sock_TCPv6",
    "tw_sock_TCP",
    "tw_sock_TCPv6",
    "sock_inode_cache",
];

/// Kernel memory of TCP sockets now, KiB: their slab caches and TCP's
/// buffer pages (0 where a file cannot be read).
fn kernel_socket_kib() -> u64 {
    let slabs = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    (slab_bytes(&slabs, &SOCKET_SLABS) + tcp_mem_pages(&sockstat) * 4096) / 1024
}

/// Bytes of the `names` caches in `/proc/slabinfo` (`name active num
/// objsize ...`): allocated objects times their size.
fn slab_bytes(text: &str, names: &[&str]) -> u64 {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            if !names.contains(&name) {
                return None;
            }
            let _active: u64 = fields.next()?.parse().ok()?;
            let num: u64 = fields.next()?.parse().ok()?;
            let size: u64 = fields.next()?.parse().ok()?;
            Some(num * size)
        })
        .sum()
}

/// `mem` of the `TCP:` line of `/proc/net/sockstat`, in pages.
fn tcp_mem_pages(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|rest| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields
                .windows(2)
                .find(|w| w[0] == "mem")
                .and_then(|w| w[1].parse().ok())
        })
        .unwrap_or(0)
}

/// VmHWM and Pss of the live descendants of `root`. Processes that end
/// while being read count as far as they were read. A child still running
/// `root_exe` has not exec'd its program yet: it is a copy of `root` (with
/// posix_spawn, `root`'s very memory), not the tool, and is left out.
fn tree_memory(root: i32, root_exe: Option<&std::path::Path>) -> Peaks {
    let mut stack = vec![root];
    let mut peaks = Peaks::default();
    while let Some(pid) = stack.pop() {
        let Ok(process) = Process::new(pid) else {
            continue;
        };
        if let Ok(tasks) = process.tasks() {
            for task in tasks.flatten() {
                if let Ok(children) = task.children() {
                    stack.extend(children.into_iter().filter_map(|c| i32::try_from(c).ok()));
                }
            }
        }
        if pid == root || (root_exe.is_some() && process.exe().ok().as_deref() == root_exe) {
            continue;
        }
        if let Ok(status) = process.status() {
            let hwm = status.vmhwm.unwrap_or(0);
            peaks.processes += 1;
            peaks.hwm_sum += hwm;
            peaks.hwm_max = peaks.hwm_max.max(hwm);
        }
        if let Ok(rollup) = process.smaps_rollup() {
            // procfs gives bytes; the file says kB.
            peaks.pss_sum += rollup
                .memory_map_rollup
                .0
                .iter()
                .filter_map(|m| m.extension.map.get("Pss"))
                .sum::<u64>()
                / 1024;
        }
    }
    peaks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_of_a_child_tree_are_measured() {
        // A shell that waits for a busy child: the child's CPU time reaches
        // us through the shell's wait, and both are counted in memory.
        let (m, code) = measure(|t| {
            let status = t.run(Command::new("sh").args([
                "-c",
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done & wait; sleep 0.1",
            ]))?;
            Ok(exit_code(&status))
        })
        .unwrap();
        assert_eq!(code, 0);
        assert!(m.wall >= Duration::from_millis(100), "{m:?}");
        assert!(m.cpu > Duration::ZERO, "{m:?}");
        assert!(m.max1_kib > 0 && m.rss_kib >= m.max1_kib, "{m:?}");
        assert!(m.pss_kib > 0 && m.sampled, "{m:?}");
    }

    #[test]
    fn kernel_socket_memory_is_parsed() {
        let slabs = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> ...\n\
            TCPv6 40 50 2560 12 8 : tunables 0 0 0\n\
            TCP 10 20 2432 13 8 : tunables 0 0 0\n\
            kmalloc-64 999 999 64 64 1 : tunables 0 0 0\n";
        assert_eq!(slab_bytes(slabs, &SOCKET_SLABS), 50 * 2560 + 20 * 2432);
        let sockstat =
            "sockets: used 200\nTCP: inuse 5 orphan 0 tw 1 alloc 9 mem 3\nUDP: inuse 1 mem 7\n";
        assert_eq!(tcp_mem_pages(sockstat), 3);
        assert_eq!(tcp_mem_pages(""), 0);
    }

    #[test]
    fn exit_codes_and_errors() {
        let (_, code) = measure(|t| {
            Ok(exit_code(
                &t.run(Command::new("sh").args(["-c", "exit 3"]))?,
            ))
        })
        .unwrap();
        assert_eq!(code, 3);
        let (_, code) = measure(|t| {
            Ok(exit_code(
                &t.run(Command::new("sh").args(["-c", "kill -TERM $$"]))?,
            ))
        })
        .unwrap();
        assert_eq!(code, 128 + 15);
        let err = measure(|t| t.run(&mut Command::new("/nonexistent/tool")).map(drop)).unwrap_err();
        assert!(matches!(err, BenchError::Spawn { .. }), "{err}");
        // A process left running by a failing body is killed and reaped.
        let started = std::cell::Cell::new(None);
        let err = measure(|t| {
            started.set(Some(t.spawn(Command::new("sleep").arg("30"))?));
            Err::<(), _>(BenchError::Interrupted(2))
        })
        .unwrap_err();
        assert!(matches!(err, BenchError::Interrupted(2)));
        let Started(pid) = started.get().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
        assert_eq!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH)
        );
    }
}
