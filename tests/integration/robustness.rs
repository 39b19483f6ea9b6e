//! Robustness tests: the privilege drop as the worker reports it and as the kernel shows it,
//! users without a login shell or without a passwd entry, running without root, 10,000
//! probes in bounded descriptors and memory, SIGINT/SIGTERM/SIGKILL mid-run, and
//! `--deadline`.
//!
//! Like `netns_core`, these run the real binary as root; every probe goes only into a
//! namespace lab of the test's own (the test kit's `TestLab`), never out of the machine.
//! Missing prerequisites fail the tests; the only opt-out is `EGRESS_CHECK_SKIP_NETNS=1`
//! (refused under `CI=true`).
//!
//! The scale tests print their measurements (wall time, peak memory, descriptors):
//! `cargo test --test integration ten_thousand -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::fixtures::{fixture, fixture_text, scenario};
use crate::util::lab::{ensure_lab_users, port25_as, Lab};
use crate::util::leftovers::{assert_namespace_empty, assert_workers_gone};
use crate::util::process::{code, describe, stderr, stdout, wait_for, words, Running};
use crate::util::procfs::{self, running_since, start_time, workers_of};
use crate::util::report::Report;
use crate::util::users::{binary_for_other_users, id_numbers, uid_of, unused_uid};
use crate::util::BIN;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Adds a counting-only rule (no target) for TCP to port 25 in the host namespace's OUTPUT
/// chain for both families, so that [`port25_packets`] can tell whether anything was sent.
fn count_port25(lab: &Lab) {
    lab.ip46tables(&["-I", "OUTPUT", "1", "-p", "tcp", "--dport", "25"]);
}

/// Packets counted by the rule of [`count_port25`] (IPv4 + IPv6).
fn port25_packets(lab: &Lab) -> u64 {
    ["iptables", "ip6tables"]
        .iter()
        .map(|tool| {
            let out = lab.exec(tool, &["-w", "-n", "-v", "-x", "-L", "OUTPUT", "1"]);
            // `-L CHAIN N` prints just that rule: "pkts bytes target prot ...".
            let text = stdout(&out);
            text.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{tool} -L OUTPUT 1: unexpected output {text:?}"))
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// 1. The privilege drop, as the worker sees it
// ---------------------------------------------------------------------------------------

/// Environment the tests give the root process; none of it may reach the worker. The
/// preload path does not exist: the loader only warns.
const HOSTILE_ENV: [(&str, &str); 4] = [
    ("SECRET", "1"),
    ("LD_PRELOAD", "/nonexistent/egress-check-test/libpreload.so"),
    ("LD_LIBRARY_PATH", "/nonexistent/egress-check-test"),
    ("EGRESS_CHECK_TEST_TOKEN", "s3cr3t-token"),
];

/// Checks a `__probe-as USER --diagnose` snapshot against the passwd and group databases.
#[track_caller]
fn assert_dropped_to(user: &str, out: &Output, how: &str) {
    let ctx = format!("__probe-as {user} --diagnose ({how})\n{}", describe(out));
    assert_eq!(code(out), 0, "{ctx}");
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON line expected: {ctx}");
    let snap: Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {ctx}"));
    let numbers = |key: &str| -> Vec<u32> {
        snap[key]
            .as_array()
            .unwrap_or_else(|| panic!("`{key}` is not an array: {ctx}"))
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or_else(|| panic!("`{key}` has a non-id {v}: {ctx}"))
            })
            .collect()
    };

    let uid = id_numbers("-u", user)[0];
    let gid = id_numbers("-g", user)[0];
    let groups: BTreeSet<u32> = id_numbers("-G", user).into_iter().collect();
    assert_eq!(
        numbers("uids"),
        vec![uid; 3],
        "real/effective/saved uid: {ctx}"
    );
    assert_eq!(
        numbers("gids"),
        vec![gid; 3],
        "real/effective/saved gid: {ctx}"
    );
    let actual: BTreeSet<u32> = numbers("groups").into_iter().collect();
    assert_eq!(
        actual, groups,
        "groups must be those of `id -G {user}`: {ctx}"
    );

    assert_eq!(
        snap["no_new_privs"],
        Value::Bool(true),
        "no_new_privs: {ctx}"
    );
    let caps = &snap["capabilities"];
    for set in ["effective", "permitted", "inheritable", "ambient"] {
        assert_eq!(
            caps[set].as_u64(),
            Some(0),
            "capability set `{set}` must be present and empty: {ctx}"
        );
    }

    // The fence a probing worker puts up after the drop (src/fence.rs), as the kernel
    // enforces it; tests/integration/hardening.rs proves it kills a forbidden call.
    assert_eq!(snap["seccomp"], "filter", "seccomp mode: {ctx}");
    assert_eq!(snap["landlock"]["status"], "enforced", "Landlock: {ctx}");
    assert_eq!(snap["landlock_open_file"], "EACCES", "Landlock: {ctx}");

    let env = snap["environment"]
        .as_array()
        .unwrap_or_else(|| panic!("`environment` is not an array: {ctx}"));
    assert!(env.is_empty(), "the environment must be empty: {ctx}");

    let attempts: Vec<&str> = snap["regain_root"]
        .as_array()
        .unwrap_or_else(|| panic!("`regain_root` is not an array: {ctx}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("{v}: {ctx}")))
        .collect();
    assert!(
        attempts.iter().any(|a| a.starts_with("setuid(0)"))
            && attempts.iter().any(|a| a.starts_with("setgid(0)")),
        "setuid(0) and setgid(0) must have been attempted: {ctx}"
    );
    for a in &attempts {
        assert!(
            a.ends_with(": EPERM"),
            "every attempt to regain root must fail with EPERM, got {a:?}: {ctx}"
        );
    }

    // Descriptors: 0, 1 and 2, plus at most the directory used to list /proc/self/fd.
    let mut extra = Vec::new();
    let mut std_fds = BTreeSet::new();
    for entry in snap["open_fds"]
        .as_array()
        .unwrap_or_else(|| panic!("`open_fds` is not an array: {ctx}"))
    {
        let entry = entry.as_str().unwrap_or_else(|| panic!("{entry}: {ctx}"));
        let (fd, target) = entry
            .split_once(" -> ")
            .unwrap_or_else(|| panic!("open_fds entry {entry:?}: {ctx}"));
        let fd: u32 = fd
            .parse()
            .unwrap_or_else(|_| panic!("open_fds entry {entry:?}: {ctx}"));
        assert!(
            !target.contains("shadow"),
            "a descriptor of /etc/shadow leaked into the worker ({entry}): {ctx}"
        );
        if fd <= 2 {
            std_fds.insert(fd);
        } else {
            extra.push((fd, target.to_string()));
        }
    }
    assert_eq!(
        std_fds,
        BTreeSet::from([0, 1, 2]),
        "stdin, stdout, stderr: {ctx}"
    );
    let is_fd_dir = |t: &str| {
        t == "/proc/self/fd"
            || t.strip_prefix("/proc/")
                .and_then(|r| r.strip_suffix("/fd"))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    };
    assert!(
        extra.len() <= 1 && extra.iter().all(|(_, t)| is_fd_dir(t)),
        "descriptors besides 0-2 (only the /proc/self/fd listing is allowed): {extra:?}: {ctx}"
    );
}

/// Test 1: as root, `__probe-as USER --diagnose` shows the worker exactly as the user: the
/// three uids and gids of `id -u/-g`, the groups of `id -G` (supplementary ones included),
/// `no_new_privs`, no capabilities, an empty environment although the parent had secrets and
/// `LD_PRELOAD` in it, only descriptors 0-2 although the parent leaked `/etc/shadow` on
/// descriptors without close-on-exec, and every attempt to regain root failing with EPERM.
#[test]
fn diagnose_shows_a_complete_irreversible_drop() {
    if !ensure_lab_users() {
        return;
    }
    // The leak is real: a descriptor opened by the shell survives its exec.
    let control = Command::new("bash")
        .args(["-c", "exec 7</etc/shadow; exec readlink /proc/self/fd/7"])
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert_eq!(
        stdout(&control).trim(),
        "/etc/shadow",
        "control: fd 7 must be inherited\n{}",
        describe(&control)
    );

    for user in ["www-data", "ec-suppl", "ec-nologin", "ec-postfix"] {
        let out = Command::new(BIN)
            .args(["__probe-as", user, "--diagnose"])
            .envs(HOSTILE_ENV)
            .stdin(Stdio::null())
            .output()
            .expect("run egress-check");
        assert_dropped_to(user, &out, "hostile environment");

        let out = Command::new("bash")
            .args([
                "-c",
                r#"exec 7</etc/shadow 9</etc/shadow 200</etc/shadow; exec "$0" __probe-as "$1" --diagnose"#,
                BIN,
                user,
            ])
            .envs(HOSTILE_ENV)
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        assert_dropped_to(user, &out, "fds 7, 9 and 200 leaked by the parent");
        assert!(
            !stdout(&out).contains("7 -> "),
            "fd 7 must not be open in the worker\n{}",
            describe(&out)
        );
    }

    // ec-suppl's supplementary group is really there (what `--suppl-groups` rules see).
    let mailers = Command::new("getent")
        .args(["group", "ec-mailers"])
        .output()
        .expect("getent group");
    let mailers_gid: u32 = stdout(&mailers)
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("getent group ec-mailers\n{}", describe(&mailers)));
    assert!(id_numbers("-G", "ec-suppl").contains(&mailers_gid));
    assert_ne!(id_numbers("-g", "ec-suppl")[0], mailers_gid);
}

/// Test 1b: the same, seen from outside and during a real run. The parent is started with a
/// leaked `/etc/shadow` descriptor and secrets in its environment; while its worker (as
/// ec-suppl) waits on a dropped connect, the kernel's view of the worker (`/proc/PID`) shows
/// all four uids and gids of the user, the groups of `id -G`, `NoNewPrivs`, no capability in
/// any set, `/` as working directory, an empty environment, and no descriptor of a file.
#[test]
fn running_worker_holds_nothing_of_root() {
    let Some(lab) = Lab::up() else { return };
    hang_and_reset(&lab);
    let file = scenario(&fixture_text(HANGING).replace("ec-web", "ec-suppl"));
    let uid = id_numbers("-u", "ec-suppl")[0].to_string();
    let gid = id_numbers("-g", "ec-suppl")[0].to_string();
    let groups: BTreeSet<u32> = id_numbers("-G", "ec-suppl").into_iter().collect();

    let running = Running::spawn(
        Command::new("bash")
            .args([
                "-c",
                r#"exec 7</etc/shadow 9</etc/shadow; exec ip netns exec "$0" "$1" run "$2""#,
                &lab.host_ns(),
                BIN,
                file.path(),
            ])
            .envs(HOSTILE_ENV),
    );
    let pid = running.pid();
    let mut worker = None;
    let dropped = wait_for(Duration::from_secs(30), || {
        worker = workers_of(pid).first().copied();
        worker.is_some_and(|w| {
            let s = procfs::status(w);
            s.get("Uid")
                .is_some_and(|u| u.split_whitespace().all(|x| x == uid))
                && s.get("NoNewPrivs").is_some_and(|n| n == "1")
        })
    });
    // Once the drop is done the worker connects; give it a moment to get there.
    std::thread::sleep(Duration::from_millis(500));
    let snapshot = worker.filter(|_| dropped).map(|w| {
        let fds = procfs::fds(w);
        (
            w,
            procfs::status(w),
            procfs::environ(w),
            procfs::cwd(w),
            fds,
        )
    });
    // The parent's own view, for the record: it did inherit the leak.
    let parent_leak = procfs::fd_target(pid, 7);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let out = running
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|out| panic!("no exit after SIGTERM\n{}", describe(&out)));
    let Some((w, status, environ, cwd, fds)) = snapshot else {
        panic!(
            "no worker of {pid} dropped to ec-suppl within 30 s\n{}",
            describe(&out)
        );
    };
    assert_eq!(
        parent_leak.as_deref(),
        Some(Path::new("/etc/shadow")),
        "control: the parent inherited the leaked descriptor"
    );
    let ctx = format!("worker {w}: {status:#?}\nfds: {fds:?}");
    for (key, want) in [("Uid", &uid), ("Gid", &gid)] {
        let ids: Vec<&str> = status[key].split_whitespace().collect();
        assert_eq!(
            ids,
            vec![want.as_str(); 4],
            "{key}: real, effective, saved, fs: {ctx}"
        );
    }
    let actual: BTreeSet<u32> = status["Groups"]
        .split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect();
    assert_eq!(actual, groups, "groups of `id -G ec-suppl`: {ctx}");
    assert_eq!(status["NoNewPrivs"], "1", "{ctx}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            u64::from_str_radix(&status[cap], 16).ok(),
            Some(0),
            "{cap}: {ctx}"
        );
    }
    assert!(
        environ.is_empty(),
        "the worker's environment: {:?}",
        String::from_utf8_lossy(&environ)
    );
    assert_eq!(cwd.as_deref(), Some(Path::new("/")), "working directory");
    for (fd, target) in &fds {
        let fd: u32 = fd.parse().expect("fd number");
        let file = target.starts_with('/') && !(fd <= 2 && target == "/dev/null");
        assert!(
            !file && !target.contains("shadow"),
            "fd {fd} -> {target}: the worker holds a file: {ctx}"
        );
    }
    assert!(
        fds.iter().any(|(_, t)| t.starts_with("socket:")),
        "the worker was caught while connecting: {ctx}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. and 3. Users without a login shell, numeric uids
// ---------------------------------------------------------------------------------------

/// Test 2: a user whose shell is nologin can probe: no shell is involved.
#[test]
fn user_without_login_shell_can_probe() {
    let Some(lab) = Lab::up() else { return };
    let passwd = Command::new("getent")
        .args(["passwd", "ec-nologin"])
        .output()
        .expect("getent");
    assert!(
        stdout(&passwd).trim_end().ends_with(":/usr/sbin/nologin"),
        "ec-nologin must have nologin as its shell\n{}",
        describe(&passwd)
    );
    let (out, report) = lab.run_json(&port25_as(
        "ec-nologin",
        &["--expect", "allow", "--timeout", "5s"],
    ));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    report.expect_probes("ec-nologin", "ipv4", 1, &["connected"], "pass");
    assert_eq!(report.probes.len(), 1, "{:#?}", report.probes);
    let p = &report.probes[0];
    assert_eq!(p.uid, uid_of("ec-nologin"), "{p:#?}");
    assert_eq!(p.address.as_deref(), Some("203.0.113.10"), "{p:#?}");
    assert_eq!(p.port, 25, "{p:#?}");
}

/// Test 3: a numeric uid without a passwd entry is refused (exit 2, the message names the uid
/// and the passwd database, nothing is sent), from the command line and from a scenario; a
/// numeric uid with an entry is that user.
#[test]
fn numeric_uid_needs_a_passwd_entry() {
    let Some(lab) = Lab::up() else { return };
    count_port25(&lab);
    let uid = unused_uid().to_string();

    let out = lab.run(&port25_as(&uid, &["--timeout", "1s", "--format", "json"]));
    assert_eq!(code(&out), 2, "--as {uid}\n{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&uid) && err.contains("passwd"),
        "the message must name uid {uid} and the passwd database\n{}",
        describe(&out)
    );
    assert!(
        stdout(&out).trim().is_empty(),
        "no report on a refused run\n{}",
        describe(&out)
    );

    let file = scenario(&format!(
        "timeout = \"1s\"\n\n[[target]]\nname = \"sink\"\naddress = [\"203.0.113.10\"]\n\n\
         [[check]]\nas = [\"{uid}\"]\nexpect = \"deny\"\n"
    ));
    let out = lab.run(&["run", file.path(), "--format", "json"]);
    assert_eq!(code(&out), 2, "as = [\"{uid}\"]\n{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&uid) && err.contains("passwd") && err.contains("scenario.toml:"),
        "the message must name uid {uid}, the passwd database and where the scenario names \
         it\n{}",
        describe(&out)
    );
    assert_eq!(port25_packets(&lab), 0, "nothing may be sent on exit 2");

    let www = uid_of("www-data").to_string();
    let (out, report) = lab.run_json(&port25_as(&www, &["--expect", "allow", "--timeout", "5s"]));
    assert_eq!(code(&out), 0, "--as {www}\n{}", describe(&out));
    assert_eq!(report.probes.len(), 1, "{:#?}", report.probes);
    let p = &report.probes[0];
    assert_eq!(p.user, "www-data", "--as {www} is www-data: {p:#?}");
    assert_eq!(p.uid.to_string(), www, "{p:#?}");
    assert_eq!(p.observed, "connected", "{p:#?}");
    assert!(port25_packets(&lab) > 0, "the probe as {www} was sent");
}

// ---------------------------------------------------------------------------------------
// 4. Without root
// ---------------------------------------------------------------------------------------

/// Runs `bin ARGS` as `user` (setpriv: uid, gid and the user's groups; no capabilities) in
/// the lab's host namespace.
fn run_unprivileged(lab: &Lab, user: &str, bin: &Path, args: &[&str]) -> Output {
    let uid = uid_of(user);
    let gid = id_numbers("-g", user)[0];
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=10", "120", "ip", "netns", "exec"])
        .arg(lab.host_ns())
        .args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--init-groups",
        ])
        .arg(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    let out = cmd.output().expect("run setpriv");
    assert!(
        !matches!(out.status.code(), Some(124) | Some(137)),
        "egress-check {args:?} as {user} hung\n{}",
        describe(&out)
    );
    out
}

/// Test 4: without root, probing as another user is exit 2 with a message that root (or
/// CAP_SETUID) is needed, and nothing is sent; probing as yourself works.
#[test]
fn without_root_only_yourself_can_be_probed() {
    let Some(lab) = Lab::up() else { return };
    count_port25(&lab);
    // A copy www-data can execute wherever the checkout is.
    let shared = binary_for_other_users();
    let bin = shared.path();

    let out = run_unprivileged(
        &lab,
        "www-data",
        bin,
        &port25_as("ec-web", &["--timeout", "1s"]),
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("root") && err.contains("CAP_SETUID") && err.contains("ec-web"),
        "the message must say that probing as ec-web needs root or CAP_SETUID\n{}",
        describe(&out)
    );
    assert!(stdout(&out).trim().is_empty(), "{}", describe(&out));
    assert_eq!(port25_packets(&lab), 0, "nothing may be sent on exit 2");

    let allow = words("--expect allow --timeout 5s --format json");
    let out = run_unprivileged(&lab, "www-data", bin, &port25_as("www-data", &allow));
    assert_eq!(code(&out), 0, "probing as yourself\n{}", describe(&out));
    let report = Report::parse(&out);
    report.expect_probes("www-data", "ipv4", 1, &["connected"], "pass");
    assert_eq!(report.probes.len(), 1, "{:#?}", report.probes);
    assert_eq!(report.probes[0].uid, uid_of("www-data"));
    assert!(port25_packets(&lab) > 0, "the probe as www-data was sent");
}

// ---------------------------------------------------------------------------------------
// 5. Scale
// ---------------------------------------------------------------------------------------

/// Peak memory of a process tree, sampled from /proc.
#[derive(Debug, Default)]
struct TreePeak {
    /// Largest sum of VmRSS over the tree's egress-check processes at one sample.
    max_sum_rss_kib: u64,
    /// Sum over those processes of the largest VmHWM each showed (an upper bound).
    sum_hwm_kib: u64,
    /// Largest number of open descriptors seen in the parent, and in any one worker.
    parent_max_fds: usize,
    worker_max_fds: usize,
    /// "Max open files" soft limits seen, by role.
    limits: BTreeSet<String>,
    /// Distinct egress-check processes seen.
    processes: usize,
}

/// Samples the egress-check processes below `root` every 10 ms until stopped.
struct TreeWatch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<TreePeak>,
}

impl TreeWatch {
    fn start(root: u32) -> TreeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let exe = std::fs::canonicalize(BIN).expect("canonical path of the binary");
        let handle = std::thread::spawn(move || {
            let mut peak = TreePeak::default();
            let mut hwm: HashMap<u32, u64> = HashMap::new();
            // Descriptors and limits are costlier to read: every 50 ms only.
            let mut next_fd_sample = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let mut sum = 0;
                let sample_fds = Instant::now() >= next_fd_sample;
                if sample_fds {
                    next_fd_sample = Instant::now() + Duration::from_millis(50);
                }
                for pid in procfs::descendants(root) {
                    if procfs::exe(pid).as_ref() != Some(&exe) {
                        continue;
                    }
                    let status = procfs::status(pid);
                    if status.is_empty() {
                        continue;
                    }
                    sum += procfs::status_kib(&status, "VmRSS").unwrap_or(0);
                    let h = hwm.entry(pid).or_default();
                    *h = (*h).max(procfs::status_kib(&status, "VmHWM").unwrap_or(0));
                    if sample_fds {
                        let is_worker = procfs::cmdline(pid).is_some_and(|a| procfs::is_worker(&a));
                        let fds = procfs::fd_count(pid);
                        let role = if is_worker { "worker" } else { "parent" };
                        if is_worker {
                            peak.worker_max_fds = peak.worker_max_fds.max(fds);
                        } else {
                            peak.parent_max_fds = peak.parent_max_fds.max(fds);
                        }
                        if let Some(soft) = procfs::nofile_soft_limit(pid) {
                            peak.limits.insert(format!("{role} {soft}"));
                        }
                    }
                }
                peak.max_sum_rss_kib = peak.max_sum_rss_kib.max(sum);
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.sum_hwm_kib = hwm.values().sum();
            peak.processes = hwm.len();
            peak
        });
        TreeWatch { stop, handle }
    }

    fn finish(self) -> TreePeak {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("watcher thread")
    }
}

/// A memory cgroup of our own below this process's (v2 `memory.peak`, else v1
/// `memory.max_usage_in_bytes`), removed on drop. `None` when neither can be used.
struct MemoryCgroup {
    dir: PathBuf,
    peak_file: &'static str,
}

impl MemoryCgroup {
    /// Creates the cgroup and checks that a process can be moved into it.
    fn create() -> Option<MemoryCgroup> {
        let cgroup = MemoryCgroup::create_unchecked()?;
        let attached = Command::new("sh")
            .args(["-c", r#"echo "$$" >"$0""#])
            .arg(cgroup.procs())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        attached.then_some(cgroup)
    }

    fn create_unchecked() -> Option<MemoryCgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SRC SUPER
        let mount_of = |fstype: &str, option: Option<&str>| {
            mounts.lines().find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let mut r = right.split_whitespace();
                let (fs, _src, sup) = (r.next()?, r.next()?, r.next().unwrap_or(""));
                let left: Vec<&str> = left.split_whitespace().collect();
                let ok = fs == fstype
                    && left.get(3) == Some(&"/")
                    && option.is_none_or(|o| sup.split(',').any(|s| s == o));
                ok.then(|| PathBuf::from(left[4]))
            })
        };
        let unique = format!(
            "egress-check-robustness-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        // cgroup v2, when the memory controller is enabled for our children.
        if let (Some(mount), Some(path)) = (
            mount_of("cgroup2", None),
            own.lines().find_map(|l| l.strip_prefix("0::")),
        ) {
            let parent = mount.join(path.trim_start_matches('/'));
            let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
            if enabled {
                let dir = parent.join(&unique);
                if std::fs::create_dir(&dir).is_ok() {
                    if dir.join("memory.peak").exists() {
                        return Some(MemoryCgroup {
                            dir,
                            peak_file: "memory.peak",
                        });
                    }
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        // cgroup v1 memory controller.
        let path = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        })?;
        let parent = mount_of("cgroup", Some("memory"))?.join(path.trim_start_matches('/'));
        let dir = parent.join(&unique);
        std::fs::create_dir(&dir).ok()?;
        if dir.join("memory.max_usage_in_bytes").exists() {
            return Some(MemoryCgroup {
                dir,
                peak_file: "memory.max_usage_in_bytes",
            });
        }
        let _ = std::fs::remove_dir(&dir);
        None
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    fn peak_bytes(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(self.peak_file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Exited members may take a moment to leave.
        wait_for(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok()
        });
    }
}

const SCALE_USERS: [&str; 4] = ["ec-web", "ec-postfix", "ec-suppl", "www-data"];
const SCALE_ADDRESSES: [&str; 5] = [
    "203.0.113.10",
    "203.0.113.11",
    "203.0.113.12",
    "2001:db8:200::10",
    "2001:db8:200::11",
];
const SCALE_PORTS: u16 = 500;
const MIB: u64 = 1024 * 1024;
/// Generous (measured: under 100 MiB in a debug build): trips on a gross leak, about 45 KiB
/// or more per probe, not on noise.
const MEMORY_BOUND: u64 = 512 * MIB;

/// Runs 10,000 probes (4 users x 5 addresses x ports 1-500) with the parent started under
/// `prlimit --nofile=NOFILE`, and checks that every planned (user, address, port) is
/// reported exactly once with the right outcome (port 25 connects, every other port is
/// reset by the host's firewall), that no probe is an `error` (EMFILE or otherwise), and
/// that the peak memory of the parent and its workers stays below [`MEMORY_BOUND`].
fn ten_thousand_probes(nofile: &str) {
    let Some(lab) = Lab::up() else { return };
    // SYNs to the sinks on any port but the lab's SMTP ports are reset at once by the host.
    // `--syn`: the reset itself (a TCP packet to our ephemeral port) must not match.
    for (tool, sinks) in [
        ("iptables", "203.0.113.0/24"),
        ("ip6tables", "2001:db8:200::/64"),
    ] {
        lab.exec(
            tool,
            &words(&format!(
                "-A OUTPUT -p tcp --syn -d {sinks} -m multiport ! --dports 25,587 \
                 -j REJECT --reject-with tcp-reset"
            )),
        );
    }
    let quoted = |items: &[&str]| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let closed_ports = (1..=SCALE_PORTS)
        .filter(|&p| p != 25)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let file = scenario(&format!(
        r#"
timeout = "10s"

[[target]]
name = "closed"
address = [{addrs}]
ports = [{closed_ports}]

[[target]]
name = "smtp"
address = [{addrs}]
ports = [25]

[[check]]
as = [{users}]
to = ["closed"]
expect = "deny"

[[check]]
as = [{users}]
to = ["smtp"]
expect = "allow"
"#,
        addrs = quoted(&SCALE_ADDRESSES),
        users = quoted(&SCALE_USERS),
    ));
    let planned = SCALE_USERS.len() * SCALE_ADDRESSES.len() * SCALE_PORTS as usize;
    assert_eq!(planned, 10_000);

    let cgroup = MemoryCgroup::create();
    let mut cmd = match &cgroup {
        Some(cg) => {
            let mut c = Command::new("sh");
            c.args(["-c", r#"echo "$$" >"$0" && exec "$@""#])
                .arg(cg.procs());
            c
        }
        None => Command::new("env"),
    };
    cmd.args(["timeout", "--kill-after=10", "300"])
        .args(["prlimit", &format!("--nofile={nofile}")])
        .args(["ip", "netns", "exec", &lab.host_ns(), BIN])
        .args(["run", file.path(), "--format", "json"])
        .env("NO_COLOR", "1");
    let start = Instant::now();
    let running = Running::spawn(&mut cmd);
    let watch = TreeWatch::start(running.pid());
    let out = running
        .wait(Duration::from_secs(320))
        .unwrap_or_else(|out| panic!("the run did not finish\n{}", describe(&out)));
    let wall = start.elapsed();
    let tree = watch.finish();
    let cgroup_peak = cgroup.as_ref().and_then(MemoryCgroup::peak_bytes);

    eprintln!(
        "10,000 probes, parent under --nofile={nofile}: wall {wall:.2?}; peak RSS sum \
         (sampled) {:.1} MiB, sum of per-process VmHWM {:.1} MiB over {} processes; cgroup \
         peak {}; max fds: parent {}, one worker {}; nofile soft limits seen: {:?}",
        tree.max_sum_rss_kib as f64 / 1024.0,
        tree.sum_hwm_kib as f64 / 1024.0,
        tree.processes,
        match (&cgroup, cgroup_peak) {
            (Some(cg), Some(b)) => format!("{:.1} MiB ({})", b as f64 / MIB as f64, cg.peak_file),
            _ => "unavailable".to_string(),
        },
        tree.parent_max_fds,
        tree.worker_max_fds,
        tree.limits,
    );

    let short = |out: &Output| {
        let mut o = out.clone();
        o.stdout.truncate(4000);
        describe(&o)
    };
    let err = stderr(&out);
    assert!(
        !err.contains("EMFILE") && !err.contains("Too many open files"),
        "descriptors ran out\n{}",
        short(&out)
    );
    assert_eq!(code(&out), 0, "{}", short(&out));
    let report = Report::parse(&out);
    assert_eq!(report.probes.len(), planned, "every planned probe, once");

    let mut seen: BTreeMap<(String, String, u64), usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for p in &report.probes {
        let addr = p.address.clone().unwrap_or_default();
        *seen.entry((p.user.clone(), addr, p.port)).or_default() += 1;
        let detail = p.detail.as_deref().unwrap_or("");
        assert!(
            !detail.contains("EMFILE") && !detail.contains("ENFILE"),
            "descriptors ran out: {p:#?}"
        );
        let want = if p.port == 25 { "connected" } else { "refused" };
        if p.observed != want || p.verdict != "pass" {
            wrong.push(p);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} probes with an unexpected outcome (port 25 must connect, others be refused), \
         e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    let expected: BTreeSet<(String, String, u64)> = SCALE_USERS
        .iter()
        .flat_map(|u| {
            SCALE_ADDRESSES.iter().flat_map(move |a| {
                (1..=u64::from(SCALE_PORTS)).map(move |p| (u.to_string(), a.to_string(), p))
            })
        })
        .collect();
    let duplicates: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(
        duplicates.is_empty(),
        "reported more than once: {duplicates:?}"
    );
    let keys: BTreeSet<_> = seen.into_keys().collect();
    assert_eq!(
        keys.difference(&expected).take(5).collect::<Vec<_>>(),
        Vec::<&(String, String, u64)>::new(),
        "probes that were not planned"
    );
    assert_eq!(
        expected.difference(&keys).take(5).collect::<Vec<_>>(),
        Vec::<&(String, String, u64)>::new(),
        "planned probes missing"
    );
    assert_eq!(
        (report.passed, report.failed, report.inconclusive),
        (planned as u64, 0, 0)
    );

    // The parent starts under the low soft limit and raises it to the hard limit itself;
    // when soft = hard it cannot, and must still finish.
    let mut limit = nofile.split(':');
    let soft = limit.next().unwrap_or_default();
    if limit.next().is_some_and(|hard| hard == soft) {
        assert!(
            tree.limits.contains(&format!("parent {soft}")),
            "the parent must have run with the limit {soft}: {tree:?}"
        );
    }
    assert!(
        tree.processes > SCALE_USERS.len(),
        "the watcher must have seen the parent and the workers: {tree:?}"
    );
    let sampled = tree.sum_hwm_kib.max(tree.max_sum_rss_kib) * 1024;
    assert!(
        sampled < MEMORY_BOUND,
        "parent + workers used {:.1} MiB (bound {} MiB): {tree:?}",
        sampled as f64 / MIB as f64,
        MEMORY_BOUND / MIB
    );
    if let Some(bytes) = cgroup_peak {
        assert!(
            bytes < MEMORY_BOUND,
            "the run's cgroup peaked at {:.1} MiB (bound {} MiB)",
            bytes as f64 / MIB as f64,
            MEMORY_BOUND / MIB
        );
    }
}

/// Test 5a: 10,000 probes with the parent's soft descriptor limit at 256 (the hard limit
/// as inherited, so the workers may raise theirs): complete, exact, bounded.
#[test]
fn ten_thousand_probes_under_a_low_soft_fd_limit() {
    ten_thousand_probes("256:");
}

/// Test 5b: the same with soft *and* hard limit 256, which a worker can only raise with
/// CAP_SYS_RESOURCE: it must then keep its connects in flight within its limit, never hit
/// EMFILE, and still report everything.
#[test]
fn ten_thousand_probes_under_a_hard_fd_limit_of_256() {
    ten_thousand_probes("256:256");
}

// ---------------------------------------------------------------------------------------
// 6. and 7. Interruption
// ---------------------------------------------------------------------------------------

/// Rules in the host: 203.0.113.10 / 2001:db8:200::10 port 25 hang (DROP), 203.0.113.11 /
/// 2001:db8:200::11 port 25 are reset at once.
fn hang_and_reset(lab: &Lab) {
    for (tool, hang, fast) in [
        ("iptables", "203.0.113.10", "203.0.113.11"),
        ("ip6tables", "2001:db8:200::10", "2001:db8:200::11"),
    ] {
        let base = ["-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-d"];
        let mut drop = base.to_vec();
        drop.extend([hang, "-j", "DROP"]);
        lab.exec(tool, &drop);
        let mut reset = base.to_vec();
        reset.extend([fast, "-j", "REJECT", "--reject-with", "tcp-reset"]);
        lab.exec(tool, &reset);
    }
}

/// Probes that hang for 20 s, and probes that finish at once, as ec-web (with the rules of
/// [`hang_and_reset`]).
const HANGING: &str = "lab/hanging.toml";

/// The line of the human report that shows `endpoint`.
fn report_line<'a>(text: &'a str, endpoint: &str) -> &'a str {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(endpoint)).collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one report line must show {endpoint}:\n{text}"
    );
    lines[0]
}

/// Starts a hanging run, sends `signal` to the parent once its worker runs, and checks the
/// exit code, the partial report on stderr and that no worker survives.
/// Starts `egress-check run HANGING --format json` in the lab's host namespace and waits until
/// its workers exist; returns the run, its pid, and its workers with their start times.
fn start_hanging_run(lab: &Lab) -> (Running, u32, Vec<(u32, u64)>) {
    hang_and_reset(lab);
    let file = fixture(HANGING);
    // No wrapper: `ip netns exec` execs the binary, so this pid is egress-check's.
    let running = Running::spawn(
        Command::new("ip")
            .args(["netns", "exec", &lab.host_ns(), BIN])
            .args(["run", &file, "--format", "json"])
            .env("NO_COLOR", "1"),
    );
    let pid = running.pid();
    let exe = std::fs::canonicalize(BIN).unwrap();
    let started = wait_for(Duration::from_secs(30), || {
        procfs::exe(pid) == Some(exe.clone()) && !workers_of(pid).is_empty()
    });
    if !started {
        let out = running.wait(Duration::ZERO);
        panic!(
            "no worker of {pid} appeared\n{}",
            describe(out.as_ref().unwrap_or_else(|o| o))
        );
    }
    let workers: Vec<(u32, u64)> = workers_of(pid)
        .into_iter()
        .filter_map(|w| Some((w, start_time(w)?)))
        .collect();
    (running, pid, workers)
}

fn interrupt_run(signal: nix::sys::signal::Signal, reason: &str) {
    let Some(lab) = Lab::up() else { return };
    let (running, pid, workers) = start_hanging_run(&lab);
    // Give the fast probes time to finish; the hanging ones have 19 s left.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !workers.is_empty() && workers.iter().all(|&(w, t)| running_since(w, t)),
        "the workers must still run before the signal: {workers:?}"
    );

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
    let signalled = Instant::now();
    let out = running
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|out| panic!("no exit within 10 s of {signal}\n{}", describe(&out)));
    let took = signalled.elapsed();
    let expected_code = 128 + signal as i32;
    assert_eq!(code(&out), expected_code, "{}", describe(&out));
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} after {signal}"
    );

    let err = stderr(&out);
    assert!(
        err.contains("INTERRUPTED") && err.contains(reason),
        "stderr must have the partial report, saying INTERRUPTED and {reason:?}\n{}",
        describe(&out)
    );
    for fast in ["203.0.113.11:25", "[2001:db8:200::11]:25"] {
        let line = report_line(&err, fast);
        assert!(
            line.contains("refused") && line.trim_start().starts_with("pass"),
            "the probe of {fast} finished before the signal and must be reported as such: \
             {line:?}\n{}",
            describe(&out)
        );
    }
    for hung in ["203.0.113.10:25", "[2001:db8:200::10]:25"] {
        let line = report_line(&err, hung);
        assert!(
            line.contains("error") && line.contains("not finished") && line.contains(reason),
            "the pending probe of {hung} must be reported as not finished: {line:?}\n{}",
            describe(&out)
        );
        assert!(
            !line.trim_start().starts_with("pass"),
            "a probe cut short never passes: {line:?}"
        );
    }

    assert!(
        wait_for(Duration::from_secs(2), || workers_of(pid).is_empty()),
        "workers of {pid} survived the {signal}: {:?}",
        workers_of(pid)
    );
    assert_workers_gone(&lab.host_ns(), &workers, &format!("the {signal}"));
}

/// Test 6a: SIGINT mid-run: exit 130 within seconds, the partial report on stderr with the
/// finished probes and the pending ones as not finished, and no worker left behind.
#[test]
fn sigint_reports_what_finished_and_leaves_no_worker() {
    interrupt_run(nix::sys::signal::Signal::SIGINT, "SIGINT");
}

/// Test 6b: the same for SIGTERM, exit 143.
#[test]
fn sigterm_reports_what_finished_and_leaves_no_worker() {
    interrupt_run(nix::sys::signal::Signal::SIGTERM, "SIGTERM");
}

/// Test 6c: SIGKILL cannot be handled, so the workers must go by themselves: they die with
/// their parent (parent-death signal) instead of probing on as orphans.
#[test]
fn sigkill_of_the_parent_takes_its_workers_along() {
    let Some(lab) = Lab::up() else { return };
    let (running, pid, workers) = start_hanging_run(&lab);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        workers.iter().all(|&(w, t)| running_since(w, t)),
        "the worker of {pid} went away early"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let out = running
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|out| panic!("no exit after SIGKILL\n{}", describe(&out)));
    assert_eq!(out.status.code(), None, "{}", describe(&out));
    assert_workers_gone(
        &lab.host_ns(),
        &workers,
        &format!("SIGKILL of the parent {pid}"),
    );
}

/// Test 7: `--deadline 2s` with probes that would hang for 20 s: the run ends after about
/// 2 s; the pending probes are `error`, inconclusive, and say the deadline passed; the
/// finished ones keep their result; the exit code is 3 (never 0), the JSON report says it
/// was cut short, and no worker is left behind.
#[test]
fn deadline_makes_pending_probes_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    hang_and_reset(&lab);
    let file = fixture(HANGING);

    let start = Instant::now();
    let (out, report) = lab.run_json(&["run", &file, "--deadline", "2s"]);
    let took = start.elapsed();
    eprintln!("--deadline 2s run took {took:?}");
    assert_eq!(
        code(&out),
        3,
        "pending probes are inconclusive\n{}",
        describe(&out)
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
        "the run must end at the deadline, took {took:?}\n{}",
        describe(&out)
    );
    assert_eq!(report.probes.len(), 4, "{:#?}", report.probes);
    for p in &report.probes {
        let addr = p.address.as_deref().unwrap_or_default();
        if addr.ends_with(".11") || addr.ends_with("::11") {
            assert_eq!(
                (p.observed.as_str(), p.verdict.as_str()),
                ("refused", "pass"),
                "{p:#?}"
            );
        } else {
            assert_eq!(
                (p.observed.as_str(), p.verdict.as_str()),
                ("error", "inconclusive"),
                "a probe pending at the deadline: {p:#?}"
            );
            assert!(
                p.detail.as_deref().is_some_and(|d| d.contains("deadline")),
                "the detail must name the deadline: {p:#?}"
            );
        }
    }
    assert_eq!(
        (report.passed, report.failed, report.inconclusive),
        (2, 0, 2)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        doc["interrupted"]
            .as_str()
            .is_some_and(|s| s.contains("deadline")),
        "`interrupted` must say the deadline passed: {}",
        doc["interrupted"]
    );
    assert_namespace_empty(&lab.host_ns(), Duration::from_secs(2), "after the run");
}
