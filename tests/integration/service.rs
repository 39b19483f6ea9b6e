//! Probing as a service really runs (`pid:PID`, `unit:NAME`): the kernel features that make a
//! service's egress differ from its user's, each reproduced in the lab and checked against
//! `--as USER` in the same run where that makes sense.
//!
//! - nftables `socket cgroupv2` rules follow the cgroup, not the uid;
//! - a cgroup BPF egress filter (what systemd's `IPAddressDeny=` attaches) applies to `pid:`
//!   of a process in the cgroup and not to its user outside it;
//! - a process in another network namespace is probed through that namespace's firewall and
//!   resolver;
//! - `pid:` takes the process's credentials (a dropped supplementary group), not the
//!   database's;
//! - bad identities are exit 2; a process gone before its worker starts leaves inconclusive
//!   probes and nothing hangs.
//!
//! Stand-in processes are `sleep` started in the lab's host namespace with `nsenter --net`
//! (not `ip netns exec`, which remounts /sys and would hide the cgroup mounts), and the
//! binary runs in the root mount namespace for the same reason; `--netns` enters the lab
//! for the login identities it is compared with. Each test makes its own cgroup and removes
//! it (with its processes) when dropped, also when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::fixtures::scenario;
use crate::util::lab::Lab;
use crate::util::process::{code, describe, stderr, wait_for};
use crate::util::report::Report;
use crate::util::BIN;

/// The lab's sinks (TCP 25 and 587 listen) used here.
const SINK_V4: &str = "203.0.113.10";
const SINK_V6: &str = "2001:db8:200::10";

/// Where cgroup2 is mounted here (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
fn cgroup2_root() -> PathBuf {
    egress_check::service::cgroup::locate("/").expect("a cgroup2 mount")
}

/// A cgroup v2 of this test, removed with its processes when dropped.
struct TestCgroup {
    /// The cgroup path as `/proc/PID/cgroup` shows it (`/ec-svc-...`).
    path: String,
    dir: PathBuf,
}

impl TestCgroup {
    fn new(tag: &str) -> TestCgroup {
        let name = format!("ec-svc-{tag}-{}", std::process::id());
        let dir = cgroup2_root().join(&name);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup {
            path: format!("/{name}"),
            dir,
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        // rmdir fails while the killed processes are still exiting.
        wait_for(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
        });
    }
}

/// A stand-in service process (`sleep`), killed when dropped.
struct Standin {
    child: Child,
}

impl Standin {
    /// Starts `sleep` as `setpriv_args` (e.g. `--reuid=33 --regid=33 --init-groups`) in the
    /// network namespace `netns`, inside `cgroup` when given, after `prelude` (shell run
    /// first, as root, in the same process).
    fn start(
        netns: &str,
        cgroup: Option<&TestCgroup>,
        setpriv_args: &str,
        prelude: &str,
    ) -> Standin {
        let join = cgroup
            .map(|c| format!("echo $$ > {}/cgroup.procs && ", c.dir.display()))
            .unwrap_or_default();
        let script = format!(
            "{prelude}{join}exec nsenter --net=/run/netns/{netns} setpriv {setpriv_args} sleep 300"
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the stand-in");
        let pid = child.id();
        // Ready once the exec chain has reached sleep (same pid throughout).
        let ready = wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
        });
        assert!(ready, "the stand-in `{script}` did not start");
        Standin { child }
    }

    /// A www-data process (uid and gid 33, with its groups) in the network namespace
    /// `netns`, inside `cgroup`.
    fn www_data_in(netns: &str, cgroup: &TestCgroup) -> Standin {
        Standin::start(
            netns,
            Some(cgroup),
            "--reuid=33 --regid=33 --init-groups",
            "",
        )
    }

    /// A www-data process in the network namespace `netns` and in a private mount namespace
    /// whose /etc/resolv.conf says `resolv_conf`; the file is returned, to keep while the
    /// stand-in runs.
    fn www_data_resolving(netns: &str, resolv_conf: &str) -> (Standin, tempfile::NamedTempFile) {
        let conf = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(conf.path(), resolv_conf).unwrap();
        // unshare -m then exec sh: the stand-in keeps the private mount namespace in which
        // its /etc/resolv.conf is `conf`.
        let prelude = format!(
            "exec unshare -m sh -c 'mount --make-rprivate / && mount --bind {} /etc/resolv.conf && \
             exec nsenter --net=/run/netns/{netns} setpriv --reuid=33 --regid=33 --init-groups sleep 300' #",
            conf.path().display(),
        );
        (Standin::start(netns, None, "", &prelude), conf)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spec(&self) -> String {
        format!("pid:{}", self.pid())
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary as root in the root mount namespace (cgroup mounts visible), bounded.
fn run(args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .args(["--kill-after=10", "120", BIN])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run egress-check");
    assert_ne!(code(&out), 124, "egress-check hung\n{}", describe(&out));
    out
}

/// Whether this runs as root, which the test needs; under `CI=true` it must.
fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "needs root");
    false
}

/// `out` is a usage error (exit 2) whose message says `message`.
fn assert_usage_error(out: &Output, message: &str) {
    assert_eq!(code(out), 2, "{}", describe(out));
    assert!(stderr(out).contains(message), "{}", describe(out));
}

fn run_json(args: &[&str]) -> (Output, Report, Value) {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = run(&all);
    let report = Report::parse(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    (out, report, doc)
}

/// Runs the checks of `users` (all expected to `expect`) in the lab's host namespace, as
/// JSON; some fail (exit 1).
fn run_failing(lab: &Lab, users: &[&str], expect: &str) -> (Report, Value) {
    let file = scenario_for(users, expect);
    let (out, report, doc) = run_json(&["run", file.path(), "--netns", &lab.host_ns()]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    (report, doc)
}

/// The report's `identities[]` entry of `key`.
fn identity<'a>(doc: &'a Value, key: &str) -> &'a Value {
    doc["identities"]
        .as_array()
        .expect("identities[]")
        .iter()
        .find(|i| i["key"] == key)
        .unwrap_or_else(|| panic!("no identity {key} in {doc}"))
}

/// A scenario: `as` each of `users`, to the lab's dual-stack sink on port 25, `expect`.
fn scenario_for(users: &[&str], expect: &str) -> crate::util::fixtures::ScenarioFile {
    let list = users
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    scenario(&format!(
        "timeout = \"1s\"\n[[target]]\nname = \"sink\"\naddress = [\"{SINK_V4}\", \"{SINK_V6}\"]\n\
         ports = [25]\n[[check]]\nas = [{list}]\nexpect = \"{expect}\"\n"
    ))
}

/// Loads `ruleset` into the lab's host namespace as the issue describes for hybrid hosts:
/// from a private mount namespace where the unified hierarchy is bind-mounted on
/// `/sys/fs/cgroup` when it is not already there (nft resolves cgroupv2 paths under it).
fn nft_with_cgroups(lab: &Lab, ruleset: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ruleset).unwrap();
    let root = cgroup2_root();
    let bind = if root == std::path::Path::new("/sys/fs/cgroup") {
        String::new()
    } else {
        format!("mount --bind {} /sys/fs/cgroup && ", root.display())
    };
    let script = format!(
        "mount --make-rprivate / && {bind}nsenter --net=/run/netns/{} nft -f {}",
        lab.host_ns(),
        file.path().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "nft -f failed\n{}", describe(&out));
}

/// nftables `socket cgroupv2`: port 25 is allowed over IPv6 only from the test cgroup.
/// `www-data` (outside it) is dropped over both families; `pid:` of a www-data process in
/// the cgroup connects over IPv6, exactly as the kernel decides for the real process.
#[test]
fn nft_socket_cgroupv2_rules_follow_the_process() {
    let Some(lab) = Lab::up() else { return };
    let cgroup = TestCgroup::new("nft");
    let standin = Standin::www_data_in(&lab.host_ns(), &cgroup);
    // Level 1: the test cgroup is a child of the hierarchy's root. The path is what nft
    // resolves under /sys/fs/cgroup (here from the bind mount of the hybrid layout, so the
    // plain name works).
    let name = cgroup.path.trim_start_matches('/');
    nft_with_cgroups(
        &lab,
        &format!(
            "table inet ec_svc {{\n chain out {{\n  type filter hook output priority 0;\n  \
             tcp dport 25 meta nfproto ipv6 socket cgroupv2 level 1 \"{name}\" accept\n  \
             tcp dport 25 drop\n }}\n}}\n"
        ),
    );
    let spec = standin.spec();
    let file = scenario_for(&["www-data", &spec], "allow");
    let (out, report, doc) = run_json(&["run", file.path(), "--netns", &lab.host_ns()]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    report.expect_probes("www-data", "ipv4", 1, &["timeout"], "fail");
    report.expect_probes("www-data", "ipv6", 1, &["timeout"], "fail");
    report.expect_probes(&spec, "ipv4", 1, &["timeout"], "fail");
    report.expect_probes(&spec, "ipv6", 1, &["connected"], "pass");
    let id = identity(&doc, &spec);
    assert_eq!(id["cgroup"], cgroup.path.as_str(), "{id}");
    assert_eq!(
        id["credentials"]["uids"],
        serde_json::json!([33, 33, 33]),
        "{id}"
    );
    assert_eq!(id["netns"]["foreign"], true, "{id}");
    // The human report names the identity with its process and user.
    let human = run(&["run", file.path(), "--netns", &lab.host_ns()]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&format!("{spec} (pid {}, uid 33 www-data)", standin.pid())),
        "{text}"
    );
}

/// Loads the two-instruction `cgroup_skb` program `r0 = 0; exit` (drop every packet) and
/// attaches it to `cgroup` for `BPF_CGROUP_INET_EGRESS`: what systemd's `IPAddressDeny=any`
/// amounts to. Detached by the kernel when the cgroup is removed.
fn attach_drop_all_egress(cgroup: &TestCgroup) {
    use nix::libc;
    use std::os::fd::AsRawFd;

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
    const BPF_CGROUP_INET_EGRESS: u32 = 1;
    /// bpf(2) `cmd` with `attr`.
    ///
    /// # Safety
    /// Whatever `attr` points to must be alive for the call, and `cmd` must write nothing
    /// into our memory.
    unsafe fn bpf(cmd: libc::c_long, attr: &[u8; 128]) -> libc::c_long {
        // SAFETY: `attr` is 128 bytes, as passed; the rest is the caller's.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len() as u32) }
    }
    // struct bpf_insn: code, dst_reg:4|src_reg:4, off, imm.
    #[repr(C)]
    struct Insn {
        code: u8,
        regs: u8,
        off: i16,
        imm: i32,
    }
    let program = [
        // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0 (drop).
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: 0,
        },
        // BPF_JMP | BPF_EXIT.
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD part: prog_type@0, insn_cnt@4, insns@8, license@16,
    // ..., expected_attach_type@68; the rest must be zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_SKB.to_ne_bytes());
    attr[4..8].copy_from_slice(&(program.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(program.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[68..72].copy_from_slice(&BPF_CGROUP_INET_EGRESS.to_ne_bytes());
    // SAFETY: bpf(2) reads `attr` (128 bytes, as passed) and the instructions and license
    // it points to, all alive for the call; it writes nothing into our memory here.
    let prog = unsafe { bpf(BPF_PROG_LOAD, &attr) };
    assert!(
        prog >= 0,
        "BPF_PROG_LOAD: {}",
        std::io::Error::last_os_error()
    );
    let dir = std::fs::File::open(&cgroup.dir).expect("open the cgroup directory");
    // BPF_PROG_ATTACH: target_fd@0, attach_bpf_fd@4, attach_type@8.
    let mut attach = [0u8; 128];
    attach[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
    attach[4..8].copy_from_slice(&(prog as u32).to_ne_bytes());
    attach[8..12].copy_from_slice(&BPF_CGROUP_INET_EGRESS.to_ne_bytes());
    // SAFETY: as above; both descriptors are open for the call.
    let rc = unsafe { bpf(BPF_PROG_ATTACH, &attach) };
    let error = std::io::Error::last_os_error();
    // SAFETY: `prog` is the descriptor bpf(2) returned to us; the attachment keeps its own
    // reference to the program.
    unsafe { libc::close(prog as i32) };
    assert_eq!(rc, 0, "BPF_PROG_ATTACH: {error}");
}

/// A cgroup BPF egress filter: probes as `pid:` of a process in the filtered cgroup are
/// denied; probes as the same user outside it are not.
#[test]
fn cgroup_bpf_egress_filter_applies_to_the_process_only() {
    let Some(lab) = Lab::up() else { return };
    let cgroup = TestCgroup::new("bpf");
    let standin = Standin::www_data_in(&lab.host_ns(), &cgroup);
    attach_drop_all_egress(&cgroup);
    let spec = standin.spec();
    let (report, _) = run_failing(&lab, &["www-data", &spec], "deny");
    report.expect_probes("www-data", "ipv4", 1, &["connected"], "fail");
    report.expect_probes("www-data", "ipv6", 1, &["connected"], "fail");
    // The filter drops the SYN; tcp_connect ignores a local transmit error other than
    // ECONNREFUSED and retransmits (dropped again), so connect() times out rather than
    // failing with EPERM (seen on 6.18). Either is the kernel's deny.
    report.expect_probes(&spec, "ipv4", 1, &["timeout", "unreachable"], "pass");
    report.expect_probes(&spec, "ipv6", 1, &["timeout", "unreachable"], "pass");
    // Witnessed: www-data's connections show the sink was up.
    assert!(report.of(&spec, "ipv4")[0].witnessed == Some(true));
}

/// A process in another network namespace, with its own resolv.conf (private mount
/// namespace): probes as `pid:` go out through that namespace's firewall (IPv4 dropped
/// there) and its resolver (the lab's DNS, unknown to the root namespace).
#[test]
fn a_process_in_another_namespace_probes_through_its_firewall_and_resolver() {
    let Some(lab) = Lab::up() else { return };
    lab.iptables(&["-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "DROP"]);
    let (standin, _conf) = Standin::www_data_resolving(
        &lab.host_ns(),
        &format!("nameserver {}\n", crate::util::lab::LAB_DNS_V4),
    );
    let spec = standin.spec();
    // From the root namespace, without --netns or --nameserver.
    let (out, report, doc) = run_json(&[
        "--as",
        &spec,
        "--mx",
        "dual.test",
        "--port",
        "25",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    report.expect_probes(&spec, "ipv4", 2, &["timeout"], "pass");
    report.expect_probes(&spec, "ipv6", 2, &["connected"], "fail");
    let id = identity(&doc, &spec);
    assert_eq!(id["netns"]["foreign"], true, "{id}");
    let not_reproduced = id["not_reproduced"].to_string();
    assert!(not_reproduced.contains("mount namespace"), "{id}");
}

/// Credentials come from the process: ec-suppl's passwd entry gives it the supplementary
/// group ec-mailers, which a `--gid-owner --suppl-groups` rule accepts; a process of ec-suppl
/// that dropped it (`setpriv --clear-groups`) is rejected. The name follows the database,
/// `pid:` follows the process.
#[test]
fn pid_takes_the_process_credentials_not_the_database() {
    let Some(lab) = Lab::up() else { return };
    let rule = |tail: &[&str]| {
        let mut r = vec!["-A", "OUTPUT", "-p", "tcp", "--dport", "25"];
        r.extend_from_slice(tail);
        lab.ip46tables(&r);
    };
    rule(&[
        "-m",
        "owner",
        "--gid-owner",
        "ec-mailers",
        "--suppl-groups",
        "-j",
        "ACCEPT",
    ]);
    rule(&["-j", "REJECT", "--reject-with", "tcp-reset"]);
    let standin = Standin::start(
        &lab.host_ns(),
        None,
        "--reuid=ec-suppl --regid=ec-suppl --clear-groups",
        "",
    );
    let spec = standin.spec();
    let (report, doc) = run_failing(&lab, &["ec-suppl", &spec], "allow");
    report.expect_probes("ec-suppl", "ipv4", 1, &["connected"], "pass");
    report.expect_probes("ec-suppl", "ipv6", 1, &["connected"], "pass");
    report.expect_probes(&spec, "ipv4", 1, &["refused"], "fail");
    report.expect_probes(&spec, "ipv6", 1, &["refused"], "fail");
    assert_eq!(
        identity(&doc, &spec)["credentials"]["groups"],
        serde_json::json!([])
    );
}

/// Identities that cannot be stood in stop the run before anything is probed (exit 2),
/// with a message naming them.
#[test]
fn bad_identities_are_usage_errors() {
    if !is_root() {
        return;
    }
    let cases: [(&str, &str); 5] = [
        ("pid:abc", "a pid is a positive number"),
        ("pid:0", "a pid is a positive number"),
        ("pid:2147483647", "no process with pid 2147483647"),
        ("pid:2", "kernel thread"),
        ("unit:php8.2-fpm.service", "does not run systemd"),
    ];
    for (spec, message) in cases {
        if spec == "unit:php8.2-fpm.service" && std::path::Path::new("/run/systemd/system").is_dir()
        {
            continue; // A systemd host: the unit question is systemd's.
        }
        let out = run(&["--as", spec, "--addr", SINK_V4, "--port", "25"]);
        assert_eq!(code(&out), 2, "{spec}\n{}", describe(&out));
        assert!(
            stderr(&out).contains(message) && stderr(&out).contains(spec),
            "{spec}: expected {message:?}\n{}",
            describe(&out)
        );
    }
}

/// The sandbox refuses `pid:`: its worker would enter the process's namespace, outside the
/// sandbox, and probe the real network.
#[test]
fn the_sandbox_refuses_process_identities() {
    if !is_root() {
        return;
    }
    let me = format!("pid:{}", std::process::id());
    let file = scenario(&format!(
        "[[target]]\nname = \"t\"\nmx = \"dual.test\"\n[[check]]\nas = [\"{me}\"]\nexpect = \"deny\"\n"
    ));
    let out = run(&["sandbox", file.path()]);
    assert_usage_error(&out, "the sandbox runs checks as users only");
}

/// A threaded cgroup takes threads, not processes: a process whose main thread sits in one
/// cannot be stood in (exit 2, saying why), never probed from elsewhere.
#[test]
fn a_cgroup_that_cannot_take_the_worker_is_a_usage_error() {
    if !is_root() {
        return;
    }
    let domain = TestCgroup::new("thr");
    let threaded_dir = domain.dir.join("t");
    std::fs::create_dir(&threaded_dir).unwrap();
    std::fs::write(threaded_dir.join("cgroup.type"), "threaded").unwrap();
    let mut sleeper = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && echo $$ > {}/cgroup.threads && exec sleep 300",
                domain.dir.display(),
                threaded_dir.display()
            ),
        ])
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    let in_threaded = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains("/t\n"))
    });
    let out = run(&[
        "--as",
        &format!("pid:{pid}"),
        "--addr",
        SINK_V4,
        "--port",
        "25",
    ]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = wait_for(Duration::from_secs(5), || {
        std::fs::remove_dir(&threaded_dir).is_ok()
    });
    assert!(in_threaded, "the sleeper never reached the threaded cgroup");
    assert_usage_error(&out, "threaded");
}

/// A process that exits after the run was planned but before its worker took its namespace
/// and cgroup: its probes are inconclusive with the reason, nothing hangs. The process's own
/// resolver is a silent address, so the run spends seconds in DNS; the process is killed
/// meanwhile.
#[test]
fn a_process_gone_before_its_worker_leaves_inconclusive_probes() {
    let Some(lab) = Lab::up() else { return };
    // 198.51.100.250 is on the simulated internet's link and answers nothing.
    let (mut standin, _conf) = Standin::www_data_resolving(
        &lab.host_ns(),
        "nameserver 198.51.100.250\noptions timeout:3 attempts:1\n",
    );
    let spec = standin.spec();
    let file = scenario(&format!(
        "timeout = \"1s\"\n[[target]]\nname = \"sink\"\naddress = [\"{SINK_V4}\"]\n\
         [[target]]\nname = \"named\"\nhost = \"host.test\"\n\
         [[check]]\nas = [\"{spec}\"]\nexpect = \"deny\"\n"
    ));
    let runner = std::thread::spawn({
        let path = file.path().to_string();
        move || run_json(&["run", &path])
    });
    std::thread::sleep(Duration::from_millis(800));
    let _ = standin.child.kill();
    let _ = standin.child.wait();
    let (out, report, _) = runner.join().unwrap();
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let literal = report
        .of(&spec, "ipv4")
        .into_iter()
        .find(|p| p.address.as_deref() == Some(SINK_V4))
        .unwrap_or_else(|| panic!("no probe of {SINK_V4}\n{}", describe(&out)))
        .clone();
    assert_eq!(literal.observed, "error", "{literal:?}");
    let detail = literal.detail.unwrap_or_default();
    assert!(
        detail.contains("exited") || detail.contains("no process"),
        "{detail}"
    );
}
