//! Monitoring and fleets (issue 11), with the real parts: `promtool` on the textfile and
//! the alert rules, the JSON Schema and a JUnit parser on real reports, a real Prometheus
//! and node_exporter that must ring the family-split alert and resolve it, and a real
//! `ansible-playbook` over two inventory hosts that are two lab namespaces.
//!
//! The tools come from Debian packages (`ci/deps` and `.ci/run` install them: prometheus,
//! prometheus-node-exporter, ansible-core, python3-jsonschema, python3-junitparser); a
//! missing one fails the test naming the package, it never skips.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::fixtures::{fixture, shipped};
use crate::util::lab::{ensure_lab_users, Lab};
use crate::util::process::{code, describe, stdout};
use crate::util::users::ensure_story_users;
use crate::util::BIN;

/// The repository's root (the alert rules, the schema, the Ansible role).
fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `program`'s path, or a failure naming the Debian package that has it.
fn tool(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return path;
        }
    }
    panic!("`{program}` is not installed: apt-get install {package} (ci/deps does)");
}

/// Debian's Python, which has python3-jsonschema and python3-junitparser (not a pyenv
/// shim that may come first in PATH).
fn python() -> PathBuf {
    tool("python3", "python3")
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}\n{}", describe(&out));
    out
}

/// `promtool check metrics` on a textfile.
fn promtool_check_metrics(text: &str) {
    let mut child = Command::new(tool("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics:\n{}\n{text}",
        describe(&out)
    );
}

/// The sandbox's users (the story's, the lab's); false when the user opted out of
/// namespace tests.
fn story_users() -> bool {
    if !ensure_lab_users() {
        return false;
    }
    ensure_story_users();
    true
}

/// `egress-check sandbox scenarios/story.toml` behind one of the story's rulesets.
fn story_sandbox(rules: &[&str], extra: &[&str]) -> Output {
    let story = shipped("story.toml");
    let mut args: Vec<String> = vec!["sandbox".into(), story, "--timeout".into(), "1s".into()];
    args.extend(rules.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("run egress-check sandbox")
}

fn leaking_rules() -> Vec<String> {
    vec!["--iptables".into(), shipped("story-ipv4-only.rules")]
}

fn fixed_rules() -> Vec<String> {
    vec!["--nft".into(), shipped("story-fixed.nft")]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let dir = repo("contrib/prometheus");
    run_ok(Command::new(&promtool).current_dir(&dir).args([
        "check",
        "rules",
        "egress-check.rules.yml",
    ]));
    let out = run_ok(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "egress-check.rules.test.yml",
    ]));
    assert!(stdout(&out).contains("SUCCESS"), "{}", describe(&out));
}

/// The story leaking and fixed, every report format of both runs: the textfile passes
/// `promtool check metrics`, both JSON reports validate against `schema/report.schema.json`,
/// and JUnit (read by junitparser) has the same test identities in both runs while the
/// outcomes differ.
#[test]
fn reports_follow_the_schema_and_junit_identities_are_stable() {
    if !story_users() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let outputs = |run: &str| {
        vec![
            "--format".to_string(),
            "prometheus".to_string(),
            "--output".to_string(),
            format!("json={}", file(&format!("{run}.json"))),
            "--output".to_string(),
            format!("junit={}", file(&format!("{run}.xml"))),
        ]
    };
    let leak = story_sandbox(&strs(&leaking_rules()), &strs(&outputs("leak")));
    assert_eq!(code(&leak), 1, "{}", describe(&leak));
    let metrics = stdout(&leak);
    promtool_check_metrics(&metrics);
    for split in ["mx.gmail.com", "mx.outlook.com"] {
        let line = format!(
            "egress_check_family_split{{user=\"www-data\",exchange=\"{split}\",port=\"25\",leaking=\"ipv6\"}} 1\n"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert!(metrics.contains("egress_check_last_run_exit_code 1\n"));
    let fixed = story_sandbox(&strs(&fixed_rules()), &strs(&outputs("fixed")));
    assert_eq!(code(&fixed), 0, "{}", describe(&fixed));
    promtool_check_metrics(&stdout(&fixed));
    assert!(!stdout(&fixed).contains("egress_check_family_split{"));

    // One Python process checks all four files with the real libraries and prints what it
    // read; the assertions stay here.
    let script = r#"
import json, sys
import jsonschema
from junitparser import JUnitXml, Failure, Error
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
result = {}
for run in sys.argv[3:]:
    doc = json.load(open(f"{sys.argv[2]}/{run}.json"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    cases = []
    suites = []
    for suite in JUnitXml.fromfile(f"{sys.argv[2]}/{run}.xml"):
        suites.append({"name": suite.name, "hostname": suite.hostname,
                       "timestamp": suite.timestamp})
        for case in suite:
            kinds = [type(r).__name__ for r in case.result]
            messages = [r.message for r in case.result]
            cases.append({"id": [suite.name, case.classname, case.name], "kinds": kinds,
                          "messages": messages})
    result[run] = {"schema_errors": errors, "host": doc["host"], "cases": cases,
                   "suites": suites}
print(json.dumps(result))
"#;
    let out = run_ok(Command::new(python()).args([
        "-c",
        script,
        &repo("schema/report.schema.json"),
        &dir.path().display().to_string(),
        "leak",
        "fixed",
    ]));
    let read: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    let ids = |run: &str| -> BTreeSet<String> {
        read[run]["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .map(|c| c["id"].to_string())
            .collect()
    };
    for run in ["leak", "fixed"] {
        assert_eq!(read[run]["schema_errors"], Value::Array(vec![]), "{read:#}");
        let host = read[run]["host"].as_str().expect("host");
        assert!(!host.is_empty(), "{read:#}");
        for suite in read[run]["suites"].as_array().expect("suites") {
            assert_eq!(suite["hostname"].as_str(), Some(host), "{read:#}");
            assert!(suite["timestamp"].as_str().is_some(), "{read:#}");
        }
        // Unique identities: one case per user, target, exchange, family, port, expectation.
        assert_eq!(
            ids(run).len(),
            read[run]["cases"].as_array().unwrap().len(),
            "{read:#}"
        );
    }
    // The story: 2 users x 2 targets x 2 families, one exchange each.
    assert_eq!(ids("leak").len(), 8, "{read:#}");
    assert_eq!(ids("leak"), ids("fixed"), "{read:#}");
    let failures = |run: &str| -> Vec<Value> {
        read[run]["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kinds"].to_string().contains("Failure"))
            .cloned()
            .collect()
    };
    assert!(failures("fixed").is_empty(), "{read:#}");
    let leaking = failures("leak");
    assert_eq!(leaking.len(), 2, "{read:#}");
    for case in leaking {
        let message = case["messages"][0].as_str().unwrap_or_default();
        assert!(
            case["id"][2]
                .as_str()
                .unwrap()
                .contains("IPv6 port 25 expect deny")
                && message.contains("[2001:db8:25::25]:25 connected (fail)"),
            "{case}"
        );
    }
}

/// A child process started by a test, killed (by its pid) when dropped.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, cmd: &mut Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { name, child, log }
    }

    fn log(&self) -> String {
        format!(
            "--- {} log:\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0: the body ends with the connection); `None`
/// while nothing listens.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

/// The active alerts (pending or firing) Prometheus reports: (name, state, labels).
fn alerts(port: u16) -> Option<Vec<(String, String, Value)>> {
    let body = http_get(port, "/api/v1/alerts")?;
    let doc: Value = serde_json::from_str(&body).ok()?;
    Some(
        doc["data"]["alerts"]
            .as_array()?
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["state"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect(),
    )
}

/// Polls until `cond` holds on the active alerts, or fails with both logs.
fn until_alerts(
    port: u16,
    limit: Duration,
    what: &str,
    logs: &[&Daemon],
    cond: impl Fn(&[(String, String, Value)]) -> bool,
) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        if let Some(active) = alerts(port) {
            if cond(&active) {
                return;
            }
            last = Some(active);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let logs: Vec<String> = logs.iter().map(|d| d.log()).collect();
    panic!(
        "{what}: not within {limit:?}; last alerts: {last:#?}\n{}",
        logs.join("\n")
    );
}

/// The pager rings: the story's IPv4-only ruleset, its textfile read by a real
/// node_exporter scraped by a real Prometheus with the shipped rules, fires the family
/// split alert for www-data over IPv6; the fixed ruleset resolves it.
#[test]
fn family_split_alert_fires_in_prometheus_and_resolves_with_the_fix() {
    if !story_users() {
        return;
    }
    let prometheus = tool("prometheus", "prometheus");
    let node_exporter = tool("prometheus-node-exporter", "prometheus-node-exporter");
    let dir = tempfile::tempdir().expect("temp dir");
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).expect("textfile dir");
    let prom_file = textfiles.join("egress-check.prom");
    let output = format!("prometheus={}", prom_file.display());

    let leak = story_sandbox(&strs(&leaking_rules()), &["--output", &output]);
    assert_eq!(code(&leak), 1, "{}", describe(&leak));

    let exporter_port = free_port();
    let exporter = Daemon::start(
        "node_exporter",
        Command::new(node_exporter).args([
            &format!("--web.listen-address=127.0.0.1:{exporter_port}"),
            "--collector.disable-defaults",
            "--collector.textfile",
            &format!("--collector.textfile.directory={}", textfiles.display()),
        ]),
        dir.path().join("node_exporter.log"),
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n",
            repo("contrib/prometheus/egress-check.rules.yml")
        ),
    )
    .expect("prometheus.yml");
    let prom_port = free_port();
    let server = Daemon::start(
        "prometheus",
        Command::new(prometheus).args([
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ]),
        dir.path().join("prometheus.log"),
    );
    let split_for = |active: &[(String, String, Value)], exchange: &str| {
        active.iter().any(|(name, state, labels)| {
            name == "EgressCheckFamilySplit"
                && state == "firing"
                && labels["user"] == "www-data"
                && labels["leaking"] == "ipv6"
                && labels["exchange"] == exchange
                && labels["severity"] == "critical"
        })
    };
    until_alerts(
        prom_port,
        Duration::from_secs(60),
        "family split alert firing for www-data over IPv6",
        &[&exporter, &server],
        |active| {
            split_for(active, "mx.gmail.com")
                && split_for(active, "mx.outlook.com")
                && active
                    .iter()
                    .any(|(n, s, _)| n == "EgressCheckExpectationFailed" && s == "firing")
                // Nothing was inconclusive, and the run is fresh.
                && !active
                    .iter()
                    .any(|(n, _, _)| n == "EgressCheckInconclusive" || n == "EgressCheckStale")
        },
    );

    let fixed = story_sandbox(&strs(&fixed_rules()), &["--output", &output]);
    assert_eq!(code(&fixed), 0, "{}", describe(&fixed));
    until_alerts(
        prom_port,
        Duration::from_secs(30),
        "every alert resolved after the fix",
        &[&exporter, &server],
        |active| active.is_empty(),
    );
}

/// The fleet path: `contrib/ansible` over two inventory hosts that are two lab namespaces
/// (connection local, `--netns` from a host variable, a configuration directory each), one
/// behind IPv4-only rules, one fixed. The play fails on exactly the leaking host, naming
/// the split, collects both reports, and enables the timer by its symlink.
#[test]
fn ansible_play_fails_on_exactly_the_leaking_host_and_collects_both_reports() {
    let playbook = tool("ansible-playbook", "ansible-core");
    let (Some(leaky), Some(fixed)) = (Lab::up(), Lab::up()) else {
        return;
    };
    // The MTA's user may send mail; nobody else. IPv4 only on one host, both on the other.
    let allow = [
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "--dport",
        "25",
        "-m",
        "owner",
        "--uid-owner",
        "ec-postfix",
        "-j",
        "ACCEPT",
    ];
    let drop = ["-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "DROP"];
    leaky.iptables(&allow);
    leaky.iptables(&drop);
    fixed.ip46tables(&allow);
    fixed.ip46tables(&drop);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let host_vars = |name: &str, lab: &Lab| {
        format!(
            "    {name}:\n      egress_check_netns: {}\n      egress_check_config_dir: {root}/{name}/etc\n      \
             egress_check_report_dir: {root}/{name}/var\n      egress_check_textfile_dir: {root}/{name}/textfile\n      \
             egress_check_systemd_dir: {root}/{name}/systemd\n",
            lab.host_ns(),
            root = root.display()
        )
    };
    let inventory = root.join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {python}\n    \
             egress_check_command: {BIN}\n    egress_check_scenarios: [{story}]\n    \
             egress_check_enable_timer: true\n    egress_check_fetch_dir: {root}/reports\n  hosts:\n{}{}",
            host_vars("leaky", &leaky),
            host_vars("fixed", &fixed),
            python = python().display(),
            story = fixture("lab/story.toml"),
            root = root.display(),
        ),
    )
    .expect("inventory");
    let out = Command::new(playbook)
        .args(["-i", &inventory.display().to_string()])
        .arg(repo("contrib/ansible/egress-check.yml"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_LOCAL_TEMP", root.join("ansible-tmp"))
        .env("ANSIBLE_REMOTE_TEMP", root.join("ansible-tmp"))
        .env("ANSIBLE_HOME", root.join("ansible-home"))
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run ansible-playbook");
    let text = stdout(&out);
    // ansible-playbook: 2 when a host failed.
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let recap = |host: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with("PLAY RECAP"))
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("no recap for {host}\n{}", describe(&out)))
            .to_string()
    };
    assert!(recap("leaky").contains("failed=1"), "{}", describe(&out));
    assert!(recap("fixed").contains("failed=0"), "{}", describe(&out));
    assert!(
        text.contains(
            "LEAK: www-data reaches mx1.dual.test port 25 over ipv6 while ipv4 is blocked"
        ),
        "{}",
        describe(&out)
    );
    for (host, failed) in [("leaky", true), ("fixed", false)] {
        let report = root.join("reports").join(format!("{host}.json"));
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(&report)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", report.display(), describe(&out))),
        )
        .expect("fetched JSON report");
        assert_eq!(
            doc["failed"].as_u64().unwrap() > 0,
            failed,
            "{host}: {doc:#}"
        );
        assert_eq!(doc["inconclusive"], 0, "{host}: {doc:#}");
        let timer = root
            .join(host)
            .join("systemd/timers.target.wants/egress-check.timer");
        assert_eq!(
            std::fs::read_link(&timer).ok(),
            Some(PathBuf::from("/usr/lib/systemd/system/egress-check.timer")),
            "{}",
            timer.display()
        );
        let metrics = std::fs::read_to_string(root.join(host).join("textfile/egress-check.prom"))
            .expect("the post-deploy run's textfile");
        promtool_check_metrics(&metrics);
    }
}

/// node_exporter's textfile directory missing: exit 2 naming it, before anything is built
/// or probed.
#[test]
fn a_missing_textfile_directory_is_exit_2_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("node-exporter");
    let out = Command::new(BIN)
        .args(["--as", "root", "--addr", "192.0.2.1", "--output"])
        .arg(format!(
            "prometheus={}/egress-check.prom",
            missing.display()
        ))
        .output()
        .expect("run egress-check");
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("directory {} does not exist", missing.display())),
        "{}",
        describe(&out)
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(!missing.exists());
}

/// A run interrupted by SIGINT replaces no textfile: the previous metrics stay whole, so
/// their run timestamp ages and the stale alert fires if runs keep failing; no temporary
/// file is left next to it for node_exporter to trip over.
#[test]
fn an_interrupted_run_leaves_the_previous_textfile_intact() {
    if !story_users() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let prom_file = dir.path().join("egress-check.prom");
    let previous = "# previous run\negress_check_last_run_exit_code 0\n";
    std::fs::write(&prom_file, previous).expect("previous textfile");
    // www-data's IPv4 probes are dropped: they wait out the 5 s timeout, so the run is
    // still probing when the signal comes.
    let mut args = vec!["sandbox".to_string(), shipped("story.toml")];
    args.extend(leaking_rules());
    args.extend([
        "--timeout".to_string(),
        "5s".to_string(),
        "--no-explain".to_string(),
        "--output".to_string(),
        format!("prometheus={}", prom_file.display()),
    ]);
    let child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start egress-check sandbox");
    std::thread::sleep(Duration::from_millis(2500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("wait for egress-check");
    assert_eq!(code(&out), 130, "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(&prom_file).expect("textfile"),
        previous
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["egress-check.prom"]);
}
