//! Hardening (issue 15): the worker's fence (Landlock and a seccomp allowlist) and what a
//! worker the fence killed leaves in the report; `--output` files that a planted link cannot
//! turn against root.
//!
//! The identity checks of `__probe-as --diagnose` live in `robustness` (which also checks
//! the fence fields there for every lab user); this module proves the fence *acts*: a call
//! outside the allowlist kills the worker, and the run says so instead of passing.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::lab::{ensure_lab_users, port25_as, Lab};
use crate::util::process::{code, describe, stderr, stdout, words};
use crate::util::BIN;

/// `__probe-as USER --diagnose`, parsed.
fn diagnose(user: &str) -> Value {
    diagnose_as("__probe-as", user)
}

/// `SUBCOMMAND USER --diagnose` (a worker's or the resolver's), parsed.
fn diagnose_as(subcommand: &str, user: &str) -> Value {
    let out = Command::new(BIN)
        .args([subcommand, user, "--diagnose"])
        .stdin(Stdio::null())
        .output()
        .expect("run egress-check");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out)))
}

/// The diagnosis shows both layers as the kernel enforces them: the `Seccomp:` line of
/// `/proc/self/status` says `filter`, and once Landlock is up opening `/etc/passwd` (world
/// readable) fails with EACCES. A kernel without Landlock fails this test: nothing here
/// would prove the layer then.
#[test]
fn diagnose_shows_the_fence_enforced_by_the_kernel() {
    if !ensure_lab_users() {
        return;
    }
    for user in ["www-data", "ec-suppl", "nobody"] {
        let d = diagnose(user);
        assert_eq!(d["seccomp"], "filter", "seccomp mode as {user}: {d}");
        assert!(
            d["seccomp_allowed_calls"].as_u64().is_some_and(|n| n > 0),
            "{d}"
        );
        assert_eq!(
            d["landlock"]["status"], "enforced",
            "Landlock as {user} (a kernel without it cannot prove this layer): {d}"
        );
        assert_eq!(
            d["landlock_open_file"], "EACCES",
            "a world-readable file must be out of reach once Landlock is up, as {user}: {d}"
        );
    }
}

/// A worker that makes a system call outside its allowlist (the hidden test hook makes it
/// open a Unix socket once fenced) is killed by the kernel; every probe it owed is `error`,
/// inconclusive, naming the seccomp filter, and the run exits 3. The same check without the
/// hook connects and passes: the fence itself does not get in the probe's way.
#[test]
fn a_forbidden_call_kills_the_worker_and_its_probes_are_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    let allow = words("--expect allow --timeout 5s");

    let (out, report) = lab.run_json(&port25_as("ec-postfix", &allow));
    assert_eq!(code(&out), 0, "control run\n{}", describe(&out));
    report.expect_probes("ec-postfix", "ipv4", 1, &["connected"], "pass");

    let mut faulty = allow.clone();
    faulty.extend(["--test-worker-fault", "forbidden-call"]);
    let (out, report) = lab.run_json(&port25_as("ec-postfix", &faulty));
    assert_eq!(code(&out), 3, "{}", describe(&out));
    report.expect_probes("ec-postfix", "ipv4", 1, &["error"], "inconclusive");
    for p in &report.probes {
        let detail = p.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("seccomp filter (SIGSYS)"),
            "the detail must name the cause: {p:#?}"
        );
    }
    assert!(
        stderr(&out).contains("seccomp filter"),
        "stderr names it too\n{}",
        describe(&out)
    );
}

/// The test hook is not advertised: no help text lists it.
#[test]
fn the_test_hook_is_hidden() {
    for args in [&["--help"][..], &["run", "--help"][..]] {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert_eq!(code(&out), 0, "{}", describe(&out));
        assert!(
            !stdout(&out).contains("test-worker-fault"),
            "{}",
            describe(&out)
        );
    }
}

/// Runs `program args` as `nobody` (setpriv, no groups); panics unless it succeeds.
fn as_nobody(program: &str, args: &[&str]) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        .arg(program)
        .args(args)
        .output()
        .expect("run setpriv");
    assert_eq!(
        code(&out),
        0,
        "as nobody: {program} {args:?}\n{}",
        describe(&out)
    );
}

/// `--output` into a sticky, world-writable directory (like `/tmp`) where another user
/// (`nobody`) planted symlinks at the report's name and at the temporary names it can
/// guess, pointing at a file only root may write: the run replaces the link at the final
/// name with a root-owned regular file holding the report, never writes through a link,
/// leaves the guessed links as they were, and a second run over a private (0600) report
/// keeps it private.
#[test]
fn output_into_a_shared_directory_cannot_be_turned_against_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(lab) = Lab::up() else { return };
    let base = tempfile::Builder::new()
        .prefix("egress-check-hardening.")
        .tempdir()
        .expect("temporary directory");
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let victim = base.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("write victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let report = shared.join("last.json");
    let victim_text = victim.display().to_string();
    let mut planted = vec![report.clone()];
    for guess in [".last.json.tmp", ".last.json..tmp", "last.json.tmp"] {
        planted.push(shared.join(guess));
    }
    for link in &planted {
        as_nobody("ln", &["-s", &victim_text, &link.display().to_string()]);
    }

    let output = format!("json={}", report.display());
    let allow = ["--expect", "allow", "--timeout", "5s", "--output", &output];
    let out = lab.run(&port25_as("ec-postfix", &allow));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read victim"),
        "precious\n",
        "the planted link was followed"
    );
    let meta = std::fs::symlink_metadata(&report).expect("stat report");
    assert!(
        meta.file_type().is_file(),
        "a regular file replaces the link: {meta:?}"
    );
    assert_eq!(meta.uid(), 0, "owned by root");
    let text = std::fs::read_to_string(&report).expect("read report");
    let json: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(json["passed"], 1, "{text}");
    for link in &planted[1..] {
        let meta = std::fs::symlink_metadata(link).expect("planted link");
        assert!(
            meta.file_type().is_symlink(),
            "{} was replaced",
            link.display()
        );
    }
    let entries = std::fs::read_dir(&shared).expect("list").count();
    assert_eq!(entries, planted.len(), "no temporary file is left behind");

    // A private report stays private when it is replaced.
    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = lab.run(&port25_as("ec-postfix", &allow));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let mode = std::fs::metadata(&report).expect("stat").mode() & 0o7777;
    assert_eq!(
        mode & !0o600,
        0,
        "the replaced report is {mode:o}, wider than 0600"
    );
}

/// The ad hoc check as ec-postfix of port 25 on the lab's MX domain (names to resolve),
/// allowed, followed by `more`.
fn mx_as_postfix<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--as", "ec-postfix", "--mx", "dual.test", "--port", "25"];
    args.extend(["--expect", "allow", "--timeout", "3s"]);
    args.extend_from_slice(more);
    args
}

/// A resolver process that dies, hangs, sends garbage or too much, or breaks its fence
/// (the hidden test hook makes it): the run finishes within its deadline, exit 3, every
/// probe inconclusive naming the resolver's failure; the same check without the hook
/// resolves through the resolver process and passes.
#[test]
fn a_misbehaving_resolver_leaves_its_names_inconclusive() {
    let Some(lab) = Lab::up() else { return };
    let (out, report) = lab.run_json(&mx_as_postfix(&[]));
    assert_eq!(code(&out), 0, "control run\n{}", describe(&out));
    assert!(
        report.passed > 0 && report.inconclusive == 0,
        "{}",
        describe(&out)
    );

    let cases = [
        ("die", "failed (exit status: 2)"),
        ("hang", "not finished: the run's --deadline passed"),
        ("garbage", "sent a malformed answer: does not decode"),
        ("oversized", "answered more than"),
        ("forbidden-call", "killed by its seccomp filter (SIGSYS)"),
    ];
    for (fault, why) in cases {
        let started = std::time::Instant::now();
        let (out, report) = lab.run_json(&mx_as_postfix(&[
            "--deadline",
            "4s",
            "--test-resolver-fault",
            fault,
        ]));
        let took = started.elapsed();
        assert_eq!(code(&out), 3, "{fault}\n{}", describe(&out));
        assert!(
            took < std::time::Duration::from_secs(15),
            "{fault}: the run took {took:?}, past its deadline"
        );
        assert!(!report.probes.is_empty(), "{fault}\n{}", describe(&out));
        for p in &report.probes {
            assert_eq!(p.verdict, "inconclusive", "{fault}: {p:#?}");
            let detail = p.detail.as_deref().unwrap_or_default();
            assert!(detail.contains(why), "{fault}: expected {why:?} in {p:#?}");
        }
    }
}

/// The socket inodes of `pid`'s descriptors.
fn socket_inodes(pid: u32) -> Vec<String> {
    crate::util::procfs::fds(pid)
        .into_iter()
        .filter_map(|(_, target)| {
            target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect()
}

/// The inodes of the UDP and TCP sockets of `pid`'s network namespace.
fn inet_socket_inodes(pid: u32) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["udp", "udp6", "tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.push(inode.to_string());
            }
        }
    }
    inodes
}

/// The root parent opens no network socket during a run: with a nameserver that never
/// answers (slow DNS, seconds of waiting), the parent's descriptors, sampled all along,
/// never include a socket that its namespace's UDP/TCP tables list, while the resolver
/// process's do (which proves the sampling sees DNS sockets at all); and whenever the
/// resolver holds a socket, the kernel shows it as nobody (all four uids), `no_new_privs`,
/// seccomp filter mode, no capabilities.
#[test]
fn the_root_parent_opens_no_network_socket() {
    let Some(lab) = Lab::up() else { return };
    // A nameserver that reads queries and never answers, in the lab's host namespace.
    let mut slow = lab
        .command("/usr/bin/python3")
        .args([
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('127.0.0.1', 5353))\n\
             print('ready', flush=True)\n\
             time.sleep(120)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the slow nameserver");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(slow.stdout.take().expect("piped")),
        &mut ready,
    )
    .expect("the slow nameserver starts");
    assert_eq!(ready.trim(), "ready");
    let mut child = lab
        .run_command(&mx_as_postfix(&[
            "--format",
            "json",
            "--nameserver",
            "127.0.0.1:5353",
        ]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start egress-check");
    let mut parent_sockets_seen = Vec::new();
    let mut resolver_sockets = 0;
    let mut resolver_status = Vec::new();
    let mut parent_seen = false;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        for pid in crate::util::procfs::descendants(child.id()) {
            let Some(args) = crate::util::procfs::cmdline(pid) else {
                continue;
            };
            seen.insert(args.join(" "));
            let is_ours = args
                .first()
                .is_some_and(|a| a.ends_with("egress-check") || a == "/proc/self/exe");
            if !is_ours {
                continue;
            }
            let inet = inet_socket_inodes(pid);
            let sockets: Vec<String> = socket_inodes(pid)
                .into_iter()
                .filter(|i| inet.contains(i))
                .collect();
            if args.iter().any(|a| a == "__resolve-as") {
                if !sockets.is_empty() {
                    // It opens sockets only once dropped and fenced: check it as the kernel
                    // sees it now.
                    let st = crate::util::procfs::status(pid);
                    if !st.is_empty() {
                        resolver_status.push(st);
                    }
                }
                resolver_sockets += sockets.len();
            } else if !args.iter().any(|a| a.starts_with("__")) {
                parent_seen = true;
                parent_sockets_seen.extend(sockets);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = child.wait().expect("wait");
    let _ = slow.kill();
    let _ = slow.wait();
    assert!(
        parent_seen,
        "the parent was never sampled (status {status}); processes seen: {seen:#?}"
    );
    assert!(
        resolver_sockets > 0,
        "control: the resolver process's DNS sockets must be seen (status {status})"
    );
    let nobody = crate::util::users::uid_of("nobody").to_string();
    assert!(
        !resolver_status.is_empty(),
        "the resolver was never sampled with a socket"
    );
    for st in &resolver_status {
        let field = |k: &str| st.get(k).map(String::as_str).unwrap_or("?");
        let ids: Vec<&str> = field("Uid").split_whitespace().collect();
        assert_eq!(
            ids,
            vec![nobody.as_str(); 4],
            "the resolver runs as nobody: {st:?}"
        );
        assert_eq!(field("NoNewPrivs"), "1", "{st:?}");
        assert_eq!(
            field("Seccomp"),
            "2",
            "the resolver is fenced before its first socket: {st:?}"
        );
        assert_eq!(field("CapEff"), "0000000000000000", "{st:?}");
        assert_eq!(field("CapPrm"), "0000000000000000", "{st:?}");
    }
    assert!(
        parent_sockets_seen.is_empty(),
        "the root parent held UDP/TCP sockets: {parent_sockets_seen:?}"
    );
    assert_eq!(status.code(), Some(3), "DNS dropped: inconclusive");
}

// ---------------------------------------------------------------------------------------
// The differential self-check
// ---------------------------------------------------------------------------------------

/// The oracle: connects to every `ADDR,PORT` argument at once (one thread each) and prints
/// one line `ADDR,PORT connected|not` each; run as the user by `setpriv --init-groups`, so
/// it shares nothing with egress-check but the kernel.
const ORACLE: &str = r#"
import socket, sys, threading
out = {}
def probe(t):
    addr, port = t.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((addr, int(port)))
        out[t] = "connected"
    except ConnectionResetError:
        out[t] = "connected"
    except OSError:
        out[t] = "not"
    finally:
        s.close()
threads = [threading.Thread(target=probe, args=(t,)) for t in sys.argv[1:]]
for th in threads: th.start()
for th in threads: th.join()
for t in sys.argv[1:]: print(t, out[t])
"#;

/// Deterministic pseudo-random numbers (xorshift64*): the seed printed reproduces a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const DIFF_USERS: [&str; 5] = ["ec-postfix", "ec-web", "ec-suppl", "www-data", "ec-nologin"];
const DIFF_V4: [&str; 2] = ["203.0.113.10", "203.0.113.11"];
const DIFF_V6: [&str; 2] = ["2001:db8:200::10", "2001:db8:200::11"];
/// 25 and 587 answer on every sink; nobody listens on 26.
const DIFF_PORTS: [u16; 3] = [25, 587, 26];

/// One random rule, for one family, in iptables (`-A OUTPUT ...`) or nft (`inet` table)
/// syntax.
#[derive(Debug, Clone)]
struct DiffRule {
    owner: Option<(bool, String, bool)>, // (is uid, name, suppl-groups)
    port: Option<u16>,
    dest: Option<String>,
    target: &'static str, // ACCEPT, DROP, REJECT-RST, REJECT-ICMP
}

impl DiffRule {
    fn random(rng: &mut Rng, groups: &[&str], v6: bool) -> DiffRule {
        let owner = match rng.below(3) {
            0 => None,
            1 => Some((true, rng.pick(&DIFF_USERS).to_string(), false)),
            _ => Some((false, rng.pick(groups).to_string(), rng.below(2) == 0)),
        };
        let port = (rng.below(2) == 0).then(|| *rng.pick(&DIFF_PORTS));
        let dests: &[&str] = if v6 { &DIFF_V6 } else { &DIFF_V4 };
        let dest = (rng.below(3) == 0).then(|| rng.pick(dests).to_string());
        let target = *rng.pick(&["ACCEPT", "DROP", "REJECT-RST", "REJECT-ICMP"]);
        DiffRule {
            owner,
            port,
            dest,
            target,
        }
    }

    fn iptables(&self, v6: bool) -> String {
        let mut r = "-A OUTPUT -p tcp".to_string();
        if let Some(d) = &self.dest {
            r.push_str(&format!(" -d {d}"));
        }
        if let Some(p) = self.port {
            r.push_str(&format!(" --dport {p}"));
        }
        if let Some((uid, name, suppl)) = &self.owner {
            if *uid {
                r.push_str(&format!(" -m owner --uid-owner {name}"));
            } else {
                r.push_str(&format!(" -m owner --gid-owner {name}"));
                if *suppl {
                    r.push_str(" --suppl-groups");
                }
            }
        }
        r.push_str(match (self.target, v6) {
            ("ACCEPT", _) => " -j ACCEPT",
            ("DROP", _) => " -j DROP",
            ("REJECT-RST", _) => " -j REJECT --reject-with tcp-reset",
            (_, false) => " -j REJECT --reject-with icmp-port-unreachable",
            (_, true) => " -j REJECT --reject-with icmp6-port-unreachable",
        });
        r
    }

    /// nft has no supplementary-group match: such a rule matches the primary gid only, in
    /// nft as in its meaning here (`suppl` is ignored for nft policies).
    fn nft(&self, v6: bool) -> String {
        let mut r = if v6 {
            "meta nfproto ipv6 ".to_string()
        } else {
            "meta nfproto ipv4 ".to_string()
        };
        r.push_str("meta l4proto tcp ");
        if let Some(d) = &self.dest {
            r.push_str(&format!("{} daddr {d} ", if v6 { "ip6" } else { "ip" }));
        }
        if let Some(p) = self.port {
            r.push_str(&format!("tcp dport {p} "));
        }
        if let Some((uid, name, _)) = &self.owner {
            r.push_str(&format!(
                "meta {} \"{name}\" ",
                if *uid { "skuid" } else { "skgid" }
            ));
        }
        r.push_str(match self.target {
            "ACCEPT" => "accept",
            "DROP" => "drop",
            "REJECT-RST" => "reject with tcp reset",
            _ => "reject",
        });
        r
    }
}

/// A random policy: for each family, rules and a chain policy, in one backend.
#[derive(Debug, Clone)]
struct DiffPolicy {
    nft: bool,
    v4: (Vec<DiffRule>, bool),
    v6: (Vec<DiffRule>, bool),
}

impl DiffPolicy {
    fn random(rng: &mut Rng, groups: &[&str]) -> DiffPolicy {
        let family = |v6: bool, rng: &mut Rng| {
            let n = 1 + rng.below(5);
            let rules = (0..n).map(|_| DiffRule::random(rng, groups, v6)).collect();
            (rules, rng.below(3) == 0)
        };
        let nft = rng.below(2) == 0;
        let v4 = family(false, rng);
        let v6 = family(true, rng);
        DiffPolicy { nft, v4, v6 }
    }

    fn text(&self) -> String {
        if self.nft {
            let mut t = "table inet egress_diff {\n  chain output {\n    type filter hook output priority 0;".to_string();
            t.push_str(" policy accept;\n");
            for (v6, (rules, policy_drop)) in [(false, &self.v4), (true, &self.v6)] {
                for r in rules {
                    t.push_str(&format!("    {}\n", r.nft(v6)));
                }
                if *policy_drop {
                    // A chain policy per family: nft's inet chain has one, so the family's
                    // default is its last rule.
                    t.push_str(&format!(
                        "    meta nfproto {} meta l4proto tcp drop\n",
                        if v6 { "ipv6" } else { "ipv4" }
                    ));
                }
            }
            t.push_str("  }\n}\n");
            t
        } else {
            let mut t = String::new();
            for (name, v6, (rules, policy_drop)) in
                [("iptables", false, &self.v4), ("ip6tables", true, &self.v6)]
            {
                t.push_str(&format!(
                    "{name} -P OUTPUT {}\n",
                    if *policy_drop { "DROP" } else { "ACCEPT" }
                ));
                for r in rules {
                    t.push_str(&format!("{name} {}\n", r.iptables(v6)));
                }
            }
            t
        }
    }

    fn apply(&self, lab: &Lab) {
        if self.nft {
            lab.nft_file(&self.text());
        } else {
            for line in self.text().lines() {
                let args: Vec<&str> = line.split_whitespace().collect();
                lab.exec(args[0], &args[1..]);
            }
        }
    }

    fn clear(&self, lab: &Lab) {
        if self.nft {
            lab.exec("nft", &["delete", "table", "inet", "egress_diff"]);
        } else {
            for tool in ["iptables", "ip6tables"] {
                lab.exec(tool, &["-F", "OUTPUT"]);
                lab.exec(tool, &["-P", "OUTPUT", "ACCEPT"]);
            }
        }
    }
}

/// What the oracle observes as `user`: `connected` or `not` per `ADDR,PORT`.
fn oracle(lab: &Lab, user: &str, targets: &[String]) -> std::collections::BTreeMap<String, bool> {
    let out = lab
        .command("setpriv")
        .args([
            "--reuid",
            user,
            "--regid",
            &crate::util::users::id_numbers("-g", user)[0].to_string(),
        ])
        .args(["--init-groups", "--", "/usr/bin/python3", "-c", ORACLE])
        .args(targets)
        .stdin(Stdio::null())
        .output()
        .expect("run the oracle");
    assert_eq!(code(&out), 0, "oracle as {user}\n{}", describe(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, o)| (t.to_string(), o == "connected"))
        .collect()
}

/// egress-check's observations as `user` of every address and port.
fn observed(lab: &Lab, user: &str) -> std::collections::BTreeMap<String, bool> {
    // As long as the oracle's: on a loaded machine (the whole suite runs at once) a first
    // IPv6 connect can take more than a second, and a timing difference is not a firewall
    // disagreement.
    let mut args = vec!["--as", user, "--expect", "allow", "--timeout", "3s"];
    for a in DIFF_V4.iter().chain(&DIFF_V6) {
        args.extend(["--addr", a]);
    }
    let ports: Vec<String> = DIFF_PORTS.iter().map(u16::to_string).collect();
    for p in &ports {
        args.extend(["--port", p]);
    }
    let (out, report) = lab.run_json(&args);
    assert!(matches!(code(&out), 0 | 1), "{}", describe(&out));
    report
        .probes
        .iter()
        .map(|p| {
            let addr = p.address.clone().unwrap_or_default();
            (format!("{addr},{}", p.port), p.observed == "connected")
        })
        .collect()
}

/// Whether egress-check and the oracle disagree on `user -> target` under `policy`.
fn disagree(lab: &Lab, policy: &DiffPolicy, user: &str, target: &str) -> bool {
    policy.apply(lab);
    let ours = observed(lab, user).get(target).copied();
    let theirs = oracle(lab, user, &[target.to_string()])
        .get(target)
        .copied();
    policy.clear(lab);
    ours != theirs
}

/// The policy with every rule removed whose removal keeps the disagreement on
/// `user -> target` (one pass per family, then the chain policies).
fn minimize(lab: &Lab, policy: &DiffPolicy, user: &str, target: &str) -> DiffPolicy {
    let mut best = policy.clone();
    for v6 in [false, true] {
        let mut i = 0;
        loop {
            let rules = if v6 { &best.v6.0 } else { &best.v4.0 };
            if i >= rules.len() {
                break;
            }
            let mut candidate = best.clone();
            if v6 {
                candidate.v6.0.remove(i);
            } else {
                candidate.v4.0.remove(i);
            }
            if disagree(lab, &candidate, user, target) {
                best = candidate;
            } else {
                i += 1;
            }
        }
        let mut candidate = best.clone();
        if v6 {
            candidate.v6.1 = false;
        } else {
            candidate.v4.1 = false;
        }
        if disagree(lab, &candidate, user, target) {
            best = candidate;
        }
    }
    best
}

/// Rounds of random policies (the seed is printed; `EGRESS_CHECK_DIFF_SEED` and
/// `EGRESS_CHECK_DIFF_ROUNDS` reproduce or lengthen a run, see `ci/differential`): in each,
/// every lab user's connections to two IPv4 and two IPv6 sinks on three ports are observed by
/// egress-check and by the oracle; connected or not must agree for every probe. A
/// disagreement prints the seed, the round, the ruleset, the probes, and a minimal ruleset
/// that still shows the first one.
#[test]
fn differential_self_check_agrees_with_an_independent_oracle() {
    let Some(lab) = Lab::up() else { return };
    let seed: u64 = std::env::var("EGRESS_CHECK_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let rounds: usize = std::env::var("EGRESS_CHECK_DIFF_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    eprintln!("differential self-check: seed {seed}, {rounds} rounds");
    let groups = [
        "ec-postfix",
        "ec-web",
        "ec-mailers",
        "www-data",
        "ec-nologin",
    ];
    let targets: Vec<String> = DIFF_V4
        .iter()
        .chain(&DIFF_V6)
        .flat_map(|a| DIFF_PORTS.iter().map(move |p| format!("{a},{p}")))
        .collect();
    let mut rng = Rng(seed);
    let mut probes = 0;
    let mut connected = 0;
    for round in 0..rounds {
        let policy = DiffPolicy::random(&mut rng, &groups);
        policy.apply(&lab);
        let mut disagreements = Vec::new();
        let mut first_disagreement = None;
        // Users in parallel: each observation waits out its drops once.
        let seen: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = DIFF_USERS
                .iter()
                .map(|user| {
                    let (lab, targets) = (&lab, &targets);
                    scope.spawn(move || (*user, observed(lab, user), oracle(lab, user, targets)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an observation panicked"))
                .collect()
        });
        for (user, ours, theirs) in seen {
            assert_eq!(ours.len(), targets.len(), "as {user}: {ours:?}");
            for t in &targets {
                probes += 1;
                let (a, b) = (ours.get(t).copied(), theirs.get(t).copied());
                if a == Some(true) {
                    connected += 1;
                }
                if a != b {
                    first_disagreement.get_or_insert((user, t.clone()));
                    disagreements.push(format!("{user} -> {t}: egress-check {a:?}, oracle {b:?}"));
                }
            }
        }
        policy.clear(&lab);
        if let Some((user, target)) = first_disagreement {
            let minimal = minimize(&lab, &policy, user, &target);
            panic!(
                "seed {seed}, round {round}: egress-check and the oracle disagree:\n{}\n\
                 ruleset:\n{}\nminimal ruleset for {user} -> {target}:\n{}",
                disagreements.join("\n"),
                policy.text(),
                minimal.text()
            );
        }
    }
    eprintln!("differential self-check: {probes} probes, {connected} connected, 0 disagreements");
    assert!(probes >= 200 || rounds < 4, "{probes} probes");
    assert!(
        connected > 0 && connected < probes,
        "both outcomes must occur: {connected}/{probes}"
    );
}

/// `--resolve-as USER`: where the firewall lets only some users query DNS, the resolver runs
/// as the user given and meets that user's rules. With DNS rejected for ec-web only, the
/// default resolver (nobody) resolves and the check passes; resolving as ec-web leaves the
/// probes inconclusive (exit 3); the JSON report names who resolved each time.
#[test]
fn resolve_as_names_the_identity_and_meets_its_firewall() {
    let Some(lab) = Lab::up() else { return };
    lab.iptables(&words(
        "-A OUTPUT -p udp --dport 53 -m owner --uid-owner ec-web -j REJECT",
    ));
    lab.iptables(&words(
        "-A OUTPUT -p tcp --dport 53 -m owner --uid-owner ec-web -j REJECT --reject-with tcp-reset",
    ));
    let resolved_as = |out: &std::process::Output| -> Value {
        let json: Value = serde_json::from_str(&stdout(out))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(out)));
        json["resolved_as"].clone()
    };

    let (out, report) = lab.run_json(&mx_as_postfix(&[]));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(report.passed > 0, "{}", describe(&out));
    assert_eq!(resolved_as(&out), "nobody", "{}", describe(&out));

    let (out, report) = lab.run_json(&mx_as_postfix(&["--resolve-as", "ec-web"]));
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(!report.probes.is_empty());
    for p in &report.probes {
        assert_eq!(p.verdict, "inconclusive", "{p:#?}");
        let detail = p.detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains("resolving as `ec-web`"),
            "the reason names who resolved: {p:#?}"
        );
    }
    assert_eq!(resolved_as(&out), "ec-web", "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------
// Soak
// ---------------------------------------------------------------------------------------

/// Waits for `child` and returns its exit code (or 128 + signal) and its peak RSS in KiB,
/// from the kernel's own accounting of that process (`wait4`'s `ru_maxrss`).
fn wait_with_peak_rss(child: std::process::Child) -> (i32, i64) {
    let pid = child.id() as nix::libc::pid_t;
    let mut status: nix::libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for (the Child is forgotten below so
    // that nothing else reaps it); both pointers are to live locals.
    let rc = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child);
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if nix::libc::WIFEXITED(status) {
        nix::libc::WEXITSTATUS(status)
    } else {
        128 + nix::libc::WTERMSIG(status)
    };
    (code, usage.ru_maxrss)
}

/// What the system holds that a run might leave behind: processes in the lab's host
/// namespace, network namespaces, the host namespace's nftables tables, zombies whose
/// parent is this test process.
fn system_state(lab: &Lab) -> (Vec<String>, Vec<String>, String, Vec<u32>) {
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .lines()
    .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
    .filter(|n| n.starts_with(lab.name()))
    .collect();
    let tables = stdout(&lab.exec("nft", &["list", "tables"]));
    let me = std::process::id().to_string();
    let zombies = crate::util::procfs::pids()
        .into_iter()
        .filter(|&pid| {
            let st = crate::util::procfs::status(pid);
            st.get("State").is_some_and(|s| s.starts_with('Z'))
                && st.get("PPid").is_some_and(|p| *p == me)
        })
        .collect();
    (
        crate::util::leftovers::netns_pids(&lab.host_ns()),
        ns,
        tables,
        zombies,
    )
}

/// Consecutive runs mixing outcomes (pass, fail, DNS through the resolver process,
/// `--explain`, `--output`), every tenth of them interrupted by SIGINT or SIGTERM in turn,
/// leave nothing behind (processes in the namespace, namespaces, nftables tables, zombies,
/// temporary files next to the report, open connections in conntrack), and the peak RSS of the last tenth is not above the
/// first tenth's (with 20% and 2 MiB of slack). CI runs 40; `ci/soak` runs 500.
#[test]
fn soak_runs_leave_nothing_behind_and_do_not_grow() {
    let Some(lab) = Lab::up() else { return };
    let runs: usize = std::env::var("EGRESS_CHECK_SOAK_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let every = (runs / 10).max(2);
    // A conntrack match makes the kernel track the namespace's connections, so that a
    // connection left open would show as an ESTABLISHED entry.
    lab.ip46tables(&words(
        "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    ));
    for rule in crate::util::lab::STORY_RULES {
        lab.iptables(&words(rule));
        lab.ip6tables(&words(rule));
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = format!("json={}", dir.path().join("last.json").display());
    let before = system_state(&lab);
    let mut peaks = Vec::with_capacity(runs);
    for run in 0..runs {
        let interrupt = run % every == every - 1;
        let mut args: Vec<&str> = match (interrupt, run % 4) {
            // A run still waiting on a dropped connect when the signal comes.
            (true, _) => port25_as("www-data", &["--timeout", "5s"]),
            (false, 0) => port25_as("ec-postfix", &["--expect", "allow", "--timeout", "2s"]),
            (false, 1) => port25_as("www-data", &["--expect", "allow", "--timeout", "300ms"]),
            (false, 2) => mx_as_postfix(&[]),
            (false, _) => port25_as("ec-postfix", &["--expect", "allow", "--explain"]),
        };
        args.extend(["--output", &output, "--format", "json"]);
        let mut command = lab.command(BIN);
        command
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("start egress-check");
        if interrupt {
            std::thread::sleep(std::time::Duration::from_millis(700));
            let signal = if (run / every).is_multiple_of(2) {
                nix::sys::signal::Signal::SIGINT
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)
                .expect("signal the run");
            let (code, peak) = wait_with_peak_rss(child);
            assert_eq!(code, 128 + signal as i32, "run {run} ({signal:?})");
            peaks.push(peak);
        } else {
            let (code, peak) = wait_with_peak_rss(child);
            assert!(matches!(code, 0 | 1), "run {run}: exit {code} ({args:?})");
            peaks.push(peak);
        }
        assert_eq!(
            system_state(&lab),
            before,
            "run {run} ({args:?}) left something behind"
        );
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| n == "last.json"),
            "run {run}: temporary files left: {names:?}"
        );
    }
    // Conntrack: our connections were tracked (the check sees them), and none is still
    // open: entries of closed connections only wait out their kernel timeouts.
    let conntrack = stdout(&lab.exec("cat", &["/proc/net/nf_conntrack"]));
    let ours: Vec<&str> = conntrack
        .lines()
        .filter(|l| l.contains(" tcp ") && l.contains("dport=25 "))
        .collect();
    assert!(
        !ours.is_empty(),
        "control: conntrack must list the runs' connections"
    );
    let open: Vec<&&str> = ours
        .iter()
        .filter(|l| l.contains(" ESTABLISHED "))
        .collect();
    assert!(open.is_empty(), "connections left open: {open:#?}");

    let tenth = (runs / 10).max(1);
    let mean = |s: &[i64]| s.iter().sum::<i64>() / s.len() as i64;
    let (first, last) = (mean(&peaks[..tenth]), mean(&peaks[runs - tenth..]));
    eprintln!("soak: {runs} runs, peak RSS first tenth {first} KiB, last tenth {last} KiB");
    assert!(
        last <= first + first / 5 + 2048,
        "peak RSS grew from {first} KiB to {last} KiB over {runs} runs: {peaks:?}"
    );
}

/// The resolver's fence allows what a resolver does beyond UDP: a truncated UDP answer
/// makes it ask again over TCP, and that answer (NXDOMAIN) arrives, instead of the fence
/// killing the resolver.
#[test]
fn the_fenced_resolver_falls_back_to_tcp() {
    let Some(lab) = Lab::up() else { return };
    let script = crate::util::fixtures::fixture("hardening/truncating_dns.py");
    let mut server = lab
        .command("/usr/bin/python3")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the truncating nameserver");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("piped")),
        &mut ready,
    )
    .expect("the nameserver starts");
    assert_eq!(ready.trim(), "ready");
    let out = lab.run(&["resolve", "--nameserver", "127.0.0.1:5355", "dual.test"]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        stdout(&out).contains("NXDOMAIN"),
        "the answer over TCP must arrive\n{}",
        describe(&out)
    );
}

// ---------------------------------------------------------------------------------------
// The sandbox's simulated internet, the resolver's `--diagnose`, `resolve --resolve-as`
// ---------------------------------------------------------------------------------------

/// The inodes of the sockets bound to local `port` (UDP or TCP, both families) in `pid`'s
/// network namespace.
fn inodes_on_port(pid: u32, port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["udp", "udp6", "tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st ... inode (10th field)
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                if let Some(inode) = fields.get(9) {
                    inodes.push(inode.to_string());
                }
            }
        }
    }
    inodes
}

/// The sockets of `pid` bound to local `port`.
fn sockets_on_port(pid: u32, port: u16) -> Vec<String> {
    let bound = inodes_on_port(pid, port);
    socket_inodes(pid)
        .into_iter()
        .filter(|i| bound.contains(i))
        .collect()
}

/// Runs `tests/fixtures/hardening/dns_query.py` against both ends of the sandbox link from
/// the host namespace of the sandbox of process `parent`, as nobody.
fn sandbox_dns_query(parent: u32) -> std::process::Output {
    let names = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let host = String::from_utf8_lossy(&names.stdout)
        .split_whitespace()
        .find(|n| n.starts_with(&format!("ecsb-{parent}-")) && n.ends_with("-h"))
        .map(str::to_string)
        .expect("the sandbox's host namespace");
    Command::new("ip")
        .args(["netns", "exec", &host, "setpriv"])
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "--",
        ])
        // The script's text, not its path: nobody need not be able to read the checkout.
        .args([
            "/usr/bin/python3",
            "-c",
            &crate::util::fixtures::fixture_text("hardening/dns_query.py"),
        ])
        .args(["192.0.2.1", "2001:db8:ec::1"])
        .output()
        .expect("run the DNS query")
}

/// `egress-check sandbox` serves its simulated internet from a separate process that is not
/// root once it serves: during a run, the process holding the internet's DNS sockets (port
/// 53) and sinks (port 25), found through its descriptors' inodes in its namespace's
/// `/proc/PID/net` tables, is not the root parent, runs as nobody (all uids and gids,
/// nobody's groups), has no capability (effective, permitted, bounding), `no_new_privs` and
/// a seccomp filter; and the sandbox still works: every probe is conclusive (the story's
/// IPv4-only ruleset leaks over IPv6: exit 1), DNS over TCP answers too (the probes' resolver
/// only uses UDP), and nothing is left behind.
#[test]
fn the_sandbox_internet_serves_as_nobody_fenced() {
    if !ensure_lab_users() {
        return;
    }
    crate::util::users::ensure_story_users();
    let story = crate::util::fixtures::shipped("story.toml");
    let rules = crate::util::fixtures::shipped("story-ipv4-only.rules");
    // www-data's IPv4 probes are dropped: they wait out their 3 s timeout, time to sample.
    let child = Command::new(BIN)
        .args(["sandbox", &story, "--iptables", &rules])
        // Not this host's resolv.conf: a loopback resolver there (127.0.0.53) would be
        // served by a second internet process, in the sandbox host.
        .args(["--nameserver", "9.9.9.9"])
        .args(["--timeout", "3s", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start egress-check sandbox");
    let parent = child.id();
    let mut child = child;
    let mut servers = std::collections::BTreeMap::new();
    let mut parent_held = Vec::new();
    let mut asked = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        let family = crate::util::procfs::descendants(parent);
        // Workers start only once the sandbox is built, its internet ready (bound, dropped,
        // fenced): before that the internet process is root by design, while it binds.
        let ready = family.iter().any(|&pid| {
            crate::util::procfs::cmdline(pid).is_some_and(|a| a.iter().any(|a| a == "__probe-as"))
        });
        for pid in family {
            // Read before the sockets: a status taken while they are held describes the
            // process holding them (not one that has begun to exit).
            let status = crate::util::procfs::status(pid);
            let args = crate::util::procfs::cmdline(pid).unwrap_or_default();
            let dns = sockets_on_port(pid, 53);
            if dns.is_empty() {
                continue;
            }
            if pid == parent {
                parent_held.extend(dns);
                continue;
            }
            // The sandbox's sinks: one transparent listener per family on port 9, to which
            // the internet's TPROXY rule hands every port.
            let sinks = sockets_on_port(pid, 9);
            if ready && !status.is_empty() && !args.is_empty() {
                servers.entry(pid).or_insert_with(Vec::new).push((
                    status,
                    args,
                    dns.len(),
                    sinks.len(),
                ));
            }
        }
        if asked.is_none() && !servers.is_empty() {
            // Once it serves, both transports from the sandbox's host namespace, as nobody
            // (the sandbox's rules concern port 25 only).
            asked = Some(sandbox_dns_query(parent));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait for egress-check");
    let asked = asked.expect("the internet was seen serving");
    assert_eq!(
        code(&asked),
        0,
        "DNS over TCP and UDP\n{}",
        describe(&asked)
    );
    assert_eq!(
        stdout(&asked).matches(" 1\n").count(),
        4,
        "an answer per question\n{}",
        describe(&asked)
    );
    assert!(
        parent_held.is_empty(),
        "the root parent held the internet's DNS sockets: {parent_held:?}"
    );
    assert_eq!(
        servers.len(),
        1,
        "exactly one process serves the internet: {servers:#?}\n{}",
        describe(&out)
    );
    for (pid, samples) in &servers {
        // UDP and TCP on both link addresses; the two transparent sinks. (The most seen: a
        // sample taken as the process closes its sockets at the end sees fewer.)
        let dns = samples.iter().map(|s| s.2).max().unwrap_or(0);
        let sinks = samples.iter().map(|s| s.3).max().unwrap_or(0);
        assert!(
            dns >= 4 && sinks >= 2,
            "{pid}: {dns} DNS, {sinks} sink sockets"
        );
    }
    let samples = servers
        .iter()
        .flat_map(|(pid, samples)| samples.iter().map(move |s| (pid, s)));
    for (pid, (st, args, _, _)) in samples {
        assert!(
            args.iter().any(|a| a == "__serve-internet"),
            "{pid}: {args:?}"
        );
        assert_serves_as_nobody_fenced(*pid, st);
    }
    assert_eq!(
        code(&out),
        1,
        "the story leaks over IPv6\n{}",
        describe(&out)
    );
    let report = crate::util::report::Report::parse(&out);
    assert!(!report.probes.is_empty(), "{}", describe(&out));
    assert_eq!(report.inconclusive, 0, "{}", describe(&out));
    let left = crate::util::leftovers::of_sandbox(parent);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// What every internet process shows once it serves (`st`: its `/proc/PID/status`): all
/// uids, gids and groups of nobody, every capability set empty, `no_new_privs`, a seccomp
/// filter, one thread.
fn assert_serves_as_nobody_fenced(pid: u32, st: &std::collections::HashMap<String, String>) {
    let nobody = crate::util::users::uid_of("nobody").to_string();
    let nobody_gid = crate::util::users::id_numbers("-g", "nobody")[0].to_string();
    let mut nobody_groups: Vec<String> = crate::util::users::id_numbers("-G", "nobody")
        .into_iter()
        .map(|g| g.to_string())
        .collect();
    nobody_groups.sort();
    let field = |k: &str| st.get(k).map(String::as_str).unwrap_or("?");
    let ids = |k: &str| field(k).split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        ids("Uid"),
        vec![nobody.as_str(); 4],
        "{pid} runs as nobody: {st:?}"
    );
    assert_eq!(ids("Gid"), vec![nobody_gid.as_str(); 4], "{pid}: {st:?}");
    let mut groups: Vec<String> = ids("Groups").into_iter().map(str::to_string).collect();
    groups.sort();
    assert_eq!(groups, nobody_groups, "{pid}: nobody's groups only: {st:?}");
    for caps in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(field(caps), "0000000000000000", "{pid} {caps}: {st:?}");
    }
    assert_eq!(field("NoNewPrivs"), "1", "{pid}: {st:?}");
    assert_eq!(
        field("Seccomp"),
        "2",
        "{pid} fenced before it serves: {st:?}"
    );
    assert_eq!(field("Threads"), "1", "{pid}: {st:?}");
}

/// A loopback resolver of the sandbox host (`127.0.0.53`, systemd-resolved's stub) is
/// answered inside the host namespace by a second internet process: it too runs as
/// `nobody`, without capabilities, with `no_new_privs` and its seccomp filter, and the run
/// resolves through it (no probe inconclusive).
#[test]
fn a_loopback_resolver_is_served_by_a_fenced_nobody_process() {
    if !ensure_lab_users() {
        return;
    }
    crate::util::users::ensure_story_users();
    let story = crate::util::fixtures::shipped("story.toml");
    let rules = crate::util::fixtures::shipped("story-ipv4-only.rules");
    // www-data's IPv4 probes wait out their 3 s timeout: time to sample.
    let mut child = Command::new(BIN)
        .args(["sandbox", &story, "--iptables", &rules])
        .args([
            "--nameserver",
            "127.0.0.53",
            "--timeout",
            "3s",
            "--format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start egress-check sandbox");
    let parent = child.id();
    let mut servers = std::collections::BTreeMap::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        let family = crate::util::procfs::descendants(parent);
        // Once workers exist the sandbox is built: every internet process has bound,
        // dropped and fenced itself (before that it is root by design, while binding).
        let ready = family.iter().any(|&pid| {
            crate::util::procfs::cmdline(pid).is_some_and(|a| crate::util::procfs::is_worker(&a))
        });
        for pid in family.into_iter().filter(|_| ready) {
            let args = crate::util::procfs::cmdline(pid).unwrap_or_default();
            if args.iter().any(|a| a == "__serve-internet") {
                let status = crate::util::procfs::status(pid);
                if !status.is_empty() {
                    servers.insert(pid, status);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait for egress-check");
    assert_eq!(
        servers.len(),
        2,
        "the internet and the host's loopback resolver: {servers:#?}\n{}",
        describe(&out)
    );
    for (pid, st) in &servers {
        assert_serves_as_nobody_fenced(*pid, st);
    }
    assert_eq!(
        code(&out),
        1,
        "the story leaks over IPv6\n{}",
        describe(&out)
    );
    let report = crate::util::report::Report::parse(&out);
    assert!(!report.probes.is_empty(), "{}", describe(&out));
    assert_eq!(
        report.inconclusive,
        0,
        "resolved through 127.0.0.53\n{}",
        describe(&out)
    );
    let left = crate::util::leftovers::of_sandbox(parent);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// `__resolve-as USER --diagnose`, parsed.
fn diagnose_resolver(user: &str) -> Value {
    diagnose_as("__resolve-as", user)
}

/// The resolver process's `--diagnose` shows what it resolves with: the user's uids and
/// gids, no capabilities, `no_new_privs`, and its fence as the kernel enforces it (seccomp
/// `filter`, Landlock enforced: a world-readable file cannot be opened), for the default
/// `nobody` and a `--resolve-as` user alike.
#[test]
fn the_resolver_diagnoses_its_identity_and_fence() {
    if !ensure_lab_users() {
        return;
    }
    for user in ["nobody", "ec-web"] {
        let d = diagnose_resolver(user);
        let uid = crate::util::users::uid_of(user);
        let gid = u64::from(crate::util::users::id_numbers("-g", user)[0]);
        assert_eq!(d["uids"], serde_json::json!([uid, uid, uid]), "{user}: {d}");
        assert_eq!(d["gids"], serde_json::json!([gid, gid, gid]), "{user}: {d}");
        assert_eq!(d["no_new_privs"], true, "{user}: {d}");
        for set in ["effective", "permitted", "ambient", "inheritable"] {
            assert_eq!(d["capabilities"][set], 0, "{user}: {set}: {d}");
        }
        assert_eq!(d["seccomp"], "filter", "{user}: {d}");
        assert_eq!(
            d["landlock"]["status"], "enforced",
            "Landlock as {user} (a kernel without it cannot prove this layer): {d}"
        );
        assert_eq!(d["landlock_open_file"], "EACCES", "{user}: {d}");
        for attempt in d["regain_root"].as_array().expect("regain_root") {
            assert!(
                !attempt.as_str().unwrap_or_default().ends_with(": ok"),
                "{user}: {d}"
            );
        }
    }
}

/// `resolve --resolve-as USER`, as `run --resolve-as`: checked before anything is resolved
/// (an unknown user is exit 2 naming it), the resolver runs as that user and meets its
/// firewall (DNS rejected for ec-web: exit 3, the error says who resolved), and the JSON
/// report names who resolved each domain (`nobody` by default), the human one the chosen
/// user.
#[test]
fn resolve_takes_resolve_as() {
    let Some(lab) = Lab::up() else { return };
    let ns = crate::util::lab::LAB_DNS_V4;
    let resolve = |more: &[&str]| {
        let mut args = vec!["resolve", "--nameserver", ns, "dual.test"];
        args.extend_from_slice(more);
        lab.run(&args)
    };
    let resolved_as = |out: &std::process::Output| -> Vec<Value> {
        let json: Value = serde_json::from_str(&stdout(out))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(out)));
        json.as_array()
            .expect("an array")
            .iter()
            .map(|d| d["resolved_as"].clone())
            .collect()
    };

    let out = resolve(&["--resolve-as", "no-such-user-ec"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("no-such-user-ec"),
        "{}",
        describe(&out)
    );

    let out = resolve(&["--format", "json"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(resolved_as(&out), ["nobody"], "{}", describe(&out));

    lab.iptables(&words(
        "-A OUTPUT -p udp --dport 53 -m owner --uid-owner ec-web -j REJECT",
    ));
    lab.iptables(&words(
        "-A OUTPUT -p tcp --dport 53 -m owner --uid-owner ec-web -j REJECT --reject-with tcp-reset",
    ));
    let out = resolve(&["--format", "json"]);
    assert_eq!(code(&out), 0, "nobody still resolves\n{}", describe(&out));

    let out = resolve(&["--resolve-as", "ec-web", "--format", "json"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert_eq!(resolved_as(&out), ["ec-web"], "{}", describe(&out));
    assert!(
        stdout(&out).contains("resolving as `ec-web`"),
        "the error names who resolved\n{}",
        describe(&out)
    );

    let out = resolve(&["--resolve-as", "ec-web"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        stdout(&out).starts_with("resolved as `ec-web`"),
        "{}",
        describe(&out)
    );
}

/// The internet process takes its configuration as untrusted input: missing, malformed,
/// oversized or naming a namespace that does not exist, it answers one readiness line
/// saying why it cannot start (never a panic) and exits 2; the sandbox would report that
/// line. Its subcommand is not advertised.
#[test]
fn the_internet_process_refuses_bad_configurations() {
    let valid = r#"{"dns_listen":[],"zone":{"catch-all":{"a":null,"aaaa":null}},"sinks":[],"mode":"listed","ports":[25],"internet_namespace":true}"#;
    let oversized = " ".repeat(2 * 1024 * 1024);
    let cases: [(&str, String, &str); 5] = [
        ("empty", String::new(), "cut short or larger"),
        ("oversized", oversized, "cut short or larger"),
        (
            "not JSON",
            "{\"dns_listen\": \u{0}\n".to_string(),
            "invalid internet configuration",
        ),
        (
            "unknown field",
            valid.replace("\"ports\"", "\"extra\":1,\"ports\"") + "\n",
            "unknown field",
        ),
        (
            "no such namespace",
            format!("{valid}\n"),
            "/run/netns/ec-no-such-ns",
        ),
    ];
    for (what, input, why) in cases {
        let mut child = Command::new(BIN)
            .args(["__serve-internet", "/run/netns/ec-no-such-ns"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start egress-check");
        let mut stdin = child.stdin.take().expect("piped");
        // The process stops reading past its bound: the rest of the write may fail.
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, input.as_bytes());
        });
        let out = child.wait_with_output().expect("wait");
        let _ = writer.join();
        assert_eq!(code(&out), 2, "{what}\n{}", describe(&out));
        let line: Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{what}: not one JSON line ({e})\n{}", describe(&out)));
        let reason = line["failed"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{what}: {line}");
    }
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(
        !stdout(&out).contains("__serve-internet"),
        "{}",
        describe(&out)
    );
}
