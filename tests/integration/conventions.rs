//! The CLI conventions users expect (issue 10): exit codes in every `--help`, counts in the
//! right number, messages that only suggest what works, names validated alike everywhere,
//! DNS errors that name the nameserver, `--color`, `-v`/`-q`, and `host` targets resolved as
//! the system resolves them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::fixtures::{scenario, ScenarioFile};
use crate::util::lab::{Lab, LAB_DNS_V4};
use crate::util::process::{code, describe, stderr, stdout};
use crate::util::report::Report;
use crate::util::users::binary_for_other_users;
use crate::util::BIN;

/// Runs the binary here (no lab), as the current user, without standard input.
fn run_here(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"))
}

#[test]
fn help_lists_every_exit_code_on_every_mode_that_returns_it() {
    for args in [&["--help"][..], &["run", "--help"], &["sandbox", "--help"]] {
        let out = run_here(args);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let help = stdout(&out);
        for code in [
            "0 every check passed",
            "1 at least one failed",
            "3 none failed",
            "2 usage",
        ] {
            assert!(help.contains(code), "{args:?} lacks {code:?}\n{help}");
        }
        assert!(help.contains("130/143"), "{args:?}\n{help}");
    }
    let out = run_here(&["resolve", "--help"]);
    let help = stdout(&out);
    assert!(
        help.contains("0 every name resolved") && help.contains("3 at least one lookup failed"),
        "{help}"
    );
}

#[test]
fn counts_of_one_are_singular() {
    let Some(lab) = Lab::up() else { return };
    // One deny that nothing witnesses: the closed port of a sink refuses it.
    let out = lab.run(&[
        "--as",
        "ec-web",
        "--addr",
        "203.0.113.10",
        "--port",
        "26",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("note: 1 passing deny was not witnessed"),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains("0 failed, 0 inconclusive, 1 passed (1 probe); 1 deny not witnessed"),
        "{}",
        describe(&out)
    );
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn names_are_validated_alike_everywhere_before_anything_is_looked_up() {
    // `--nameserver` points nowhere: a name that got as far as DNS would time out (exit 3).
    for args in [
        &["resolve", "--nameserver", "192.0.2.1", "--", "-x"][..],
        &["resolve", "--nameserver", "192.0.2.1", "bad domain"],
        &["resolve", "--nameserver", "192.0.2.1", "x-.test"],
        &["--as", "root", "--nameserver", "192.0.2.1", "--mx=-x"],
        &["--as", "root", "--nameserver", "192.0.2.1", "--host=-x"],
    ] {
        let started = std::time::Instant::now();
        let out = run_here(args);
        assert_eq!(code(&out), 2, "{args:?}\n{}", describe(&out));
        assert!(
            stderr(&out).contains("is not a valid domain name"),
            "{args:?}\n{}",
            describe(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}\n{}", describe(&out));
        assert!(started.elapsed().as_secs() < 1, "{args:?}: not at once");
    }
    let file = scenario(
        "[[target]]\nname = \"t\"\nhost = \"-x\"\n\n[[check]]\nas = [\"root\"]\nexpect = \"deny\"\n",
    );
    let out = run_here(&["run", file.path()]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(":3:") && err.contains("not a valid domain name"),
        "{}",
        describe(&out)
    );
}

/// A scenario of the lab's users against `dual.test`, in a directory every user can read.
fn lab_users_scenario() -> ScenarioFile {
    let file = scenario(
        "timeout = \"1s\"\n\n\
         [[target]]\nname = \"mail\"\nmx = \"dual.test\"\n\n\
         [[check]]\nas = [\"ec-postfix\"]\nexpect = \"allow\"\n\n\
         [[check]]\nas = [\"ec-web\"]\nexpect = \"deny\"\n",
    );
    let dir = Path::new(file.path()).parent().expect("a directory");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    file
}

#[test]
fn the_non_root_hint_only_suggests_what_works() {
    let Some(lab) = Lab::up() else { return };
    let file = lab_users_scenario();

    // `nobody` has no check in the scenario: `--as nobody` would not help, so it is not said.
    let out = lab.run_as("nobody", &["run", file.path()]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("needs root"), "{}", describe(&out));
    assert!(!err.contains("--as"), "{}", describe(&out));

    // `ec-web` has: the hint names it, and following it probes.
    let out = lab.run_as("ec-web", &["run", file.path()]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("run only your own checks with `--as ec-web`"),
        "{}",
        describe(&out)
    );
    let out = lab.run_as("ec-web", &["run", file.path(), "--as", "ec-web"]);
    assert_eq!(
        code(&out),
        1,
        "ec-web reaches the sinks: a failed deny\n{}",
        describe(&out)
    );
    assert!(stdout(&out).contains("ec-web"), "{}", describe(&out));

    // Ad hoc, probing as oneself always works.
    let adhoc = ["--addr", "203.0.113.10", "--port", "26", "--timeout", "1s"];
    let out = lab.run_as("nobody", &[&["--as", "ec-web"][..], &adhoc].concat());
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).contains("probe as yourself with `--as nobody`"),
        "{}",
        describe(&out)
    );
    let out = lab.run_as("nobody", &[&["--as", "nobody"][..], &adhoc].concat());
    assert_eq!(code(&out), 0, "{}", describe(&out));
}

#[test]
fn sandbox_without_root_says_so_first() {
    let shared = binary_for_other_users();
    let file = lab_users_scenario();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(shared.path())
        .args(["sandbox", file.path()])
        .stdin(Stdio::null())
        .output()
        .expect("run runuser");
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(
        stderr(&out).starts_with("egress-check: sandbox needs root"),
        "{}",
        describe(&out)
    );
}

#[test]
fn as_before_run_is_run_as() {
    let Some(lab) = Lab::up() else { return };
    let file = lab_users_scenario();
    let out = lab.run(&["--as", "ec-web", "run", file.path(), "--format", "json"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let report = Report::parse(&out);
    assert!(!report.probes.is_empty(), "{}", describe(&out));
    assert!(
        report.probes.iter().all(|p| p.user == "ec-web"),
        "only ec-web's checks\n{}",
        describe(&out)
    );
    // `--as` and the subcommand's own options in any order after it, as `run --as` takes them.
    let out = lab.run(&["--as=ec-postfix", "run", "--timeout", "1s", file.path()]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(!stdout(&out).contains("ec-web"), "{}", describe(&out));
}

#[test]
fn dns_errors_name_the_nameserver_that_answered_or_timed_out() {
    let Some(lab) = Lab::up() else { return };
    let out = lab.run(&["resolve", "--nameserver", LAB_DNS_V4, "nx.test"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("NXDOMAIN from {LAB_DNS_V4}")),
        "{}",
        describe(&out)
    );
    // Nobody listens there: the lookup times out, and the message says where it waited.
    let out = lab.run(&["resolve", "--nameserver", "198.51.100.99:5353", "dual.test"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        stdout(&out).contains("timed out waiting for 198.51.100.99:5353"),
        "{}",
        describe(&out)
    );
    // In a probe's detail too, with the system's resolver (the namespace's resolv.conf).
    let (out, report) = lab.run_json(&["--as", "ec-web", "--mx", "servfail.test"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        report.probes.iter().all(|p| p
            .detail
            .as_deref()
            .unwrap_or("")
            .contains(&format!("SERVFAIL from {LAB_DNS_V4}"))),
        "{}",
        describe(&out)
    );
}

/// Runs the ad hoc check of a closed sink port (a passing deny) in the lab, with `env`
/// (NO_COLOR, CLICOLOR_FORCE, TERM cleared first) and `args` added; returns its output.
fn colored_run(lab: &Lab, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = lab.command(BIN);
    cmd.args(["--as", "ec-web", "--addr", "203.0.113.10", "--port", "26"])
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = cmd.output().expect("run egress-check");
    assert_eq!(code(&out), 0, "{}", describe(&out));
    out
}

/// Whether the text has an ANSI escape.
fn painted(text: &[u8]) -> bool {
    text.contains(&0x1b)
}

#[test]
fn color_follows_the_flag_and_the_environment() {
    let Some(lab) = Lab::up() else { return };
    // (environment, arguments, coloured?) with stdout a pipe.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], bool);
    let cases: &[Case] = &[
        (&[], &[], false),
        (&[], &["--color", "always"], true),
        (&[("NO_COLOR", "1")], &["--color=always"], true),
        (&[("CLICOLOR_FORCE", "1")], &[], true),
        (&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], &[], false),
        (&[("CLICOLOR_FORCE", "1")], &["--color", "never"], false),
        (&[], &["--color", "always", "--format", "json"], false),
    ];
    for (env, args, expected) in cases {
        let out = colored_run(&lab, env, args);
        assert_eq!(
            painted(&out.stdout),
            *expected,
            "{env:?} {args:?}\n{}",
            describe(&out)
        );
    }
    // `--output` files are never coloured.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.txt");
    let spec = format!("human={}", file.display());
    let out = colored_run(&lab, &[], &["--color", "always", "--output", &spec]);
    assert!(painted(&out.stdout), "{}", describe(&out));
    assert!(!painted(&std::fs::read(&file).expect("the report file")));

    // On a terminal (script(1) gives the run one): colour, unless TERM=dumb or NO_COLOR.
    for (env, expected) in [
        ("TERM=xterm", true),
        ("TERM=dumb", false),
        ("NO_COLOR=1", false),
    ] {
        let line = format!(
            "env -u NO_COLOR -u CLICOLOR_FORCE TERM=xterm {env} {BIN} --as ec-web --addr \
             203.0.113.10 --port 26"
        );
        let out = lab
            .command("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .expect("run script");
        assert_eq!(code(&out), 0, "{}", describe(&out));
        assert_eq!(painted(&out.stdout), expected, "{env}\n{}", describe(&out));
    }
}

#[test]
fn verbose_says_what_the_resolver_workers_and_probes_did_on_stderr() {
    let Some(lab) = Lab::up() else { return };
    let (out, report) = lab.run_json(&[
        "-v",
        "--as",
        "ec-web",
        "--mx",
        "dual.test",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(!report.probes.is_empty(), "the report on stdout is intact");
    let err = stderr(&out);
    let uid = crate::util::users::uid_of("ec-web");
    for expected in [
        // The resolver's answers, with the nameserver that gave them.
        format!("DNS server {LAB_DNS_V4}"),
        "answered MX dual.test: 10 mx1.dual.test, 20 mx2.dual.test".to_string(),
        "answered AAAA mx1.dual.test along with the MX answer: 2001:db8:200::10".to_string(),
        // The worker's start and identity.
        "worker for ec-web started: pid ".to_string(),
        format!("becomes uid {uid} gid "),
        // Each probe's timing.
        "probe as ec-web: 203.0.113.10:25 connected after ".to_string(),
        "probe as ec-web: [2001:db8:200::11]:25 connected after ".to_string(),
    ] {
        assert!(
            err.contains(&expected),
            "{expected:?} missing\n{}",
            describe(&out)
        );
    }
    // Without -v, nothing of it.
    let (out, _) = lab.run_json(&["--as", "ec-web", "--mx", "dual.test", "--timeout", "1s"]);
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn quiet_shows_failures_inconclusives_and_the_summary_only() {
    let Some(lab) = Lab::up() else { return };
    let file = scenario(
        "timeout = \"1s\"\n\n\
         [[target]]\nname = \"mail\"\nmx = \"dual.test\"\n\n\
         [[target]]\nname = \"gone\"\nmx = \"nx.test\"\n\n\
         [[check]]\nas = [\"ec-postfix\"]\nto = [\"mail\"]\nexpect = \"allow\"\n\n\
         [[check]]\nas = [\"ec-web\"]\nexpect = \"deny\"\n",
    );
    let out = lab.run(&["run", file.path(), "-q"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("FAIL"), "{}", describe(&out));
    assert!(text.contains("INCONCLUSIVE"), "{}", describe(&out));
    assert!(text.contains("summary: "), "{}", describe(&out));
    assert!(!text.contains("pass "), "{}", describe(&out));
    assert!(!text.contains("ec-postfix"), "{}", describe(&out));
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
    // Machine-readable formats are whole whatever -q says.
    let (_, report) = lab.run_json(&["-q", "run", file.path()]);
    assert!(report.probes.iter().any(|p| p.user == "ec-postfix"));
}

#[test]
fn host_targets_resolve_as_the_system_does_with_etc_hosts() {
    let Some(lab) = Lab::up() else { return };
    // `ip netns exec` bind-mounts /etc/netns/HOST/hosts over /etc/hosts: the lab host's own
    // hosts file (removed with the lab).
    std::fs::write(
        format!("/etc/netns/{}/hosts", lab.host_ns()),
        "127.0.0.1 localhost\n\
         203.0.113.12 relay relay.corp.example  # the admin's relay, only here\n\
         127.0.0.1 localrelay\n\
         203.0.113.99 mx1.dual.test\n",
    )
    .expect("write the lab's hosts file");

    let json = |args: &[&str]| {
        let mut all = vec!["--as", "ec-web", "--port", "25", "--timeout", "1s"];
        all.extend(args);
        lab.run_json(&all)
    };
    // A relay named only in /etc/hosts (a single label: no DNS would know it).
    let (out, report) = json(&["--host", "relay"]);
    let v4 = report.of("ec-web", "ipv4");
    assert_eq!(v4.len(), 1, "{}", describe(&out));
    assert_eq!(
        v4[0].address.as_deref(),
        Some("203.0.113.12"),
        "{}",
        describe(&out)
    );
    let v6 = report.of("ec-web", "ipv6");
    assert_eq!(v6[0].observed, "no-address", "{}", describe(&out));

    // A local answer from /etc/hosts is named as coming from there, and not probed.
    let (out, report) = json(&["--host", "localrelay"]);
    let v4 = report.of("ec-web", "ipv4");
    assert_eq!(v4[0].observed, "no-address", "{}", describe(&out));
    assert!(
        v4[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .starts_with("/etc/hosts answered A 127.0.0.1 for localrelay:"),
        "{}",
        describe(&out)
    );

    // Names /etc/hosts does not have go to DNS; MX lookups and their exchanges stay DNS.
    let (out, report) = json(&["--host", "host.test", "--mx", "dual.test"]);
    let addresses: Vec<&str> = report
        .probes
        .iter()
        .filter_map(|p| p.address.as_deref())
        .collect();
    for expected in ["203.0.113.10", "2001:db8:200::10", "203.0.113.11"] {
        assert!(
            addresses.contains(&expected),
            "{expected}\n{}",
            describe(&out)
        );
    }
    assert!(!addresses.contains(&"203.0.113.99"), "{}", describe(&out));

    // An explicit nameserver is asked alone: what that server says is the question.
    let (out, report) = json(&["--host", "relay", "--nameserver", LAB_DNS_V4]);
    assert!(
        report
            .probes
            .iter()
            .all(|p| p.address.as_deref() != Some("203.0.113.12")),
        "{}",
        describe(&out)
    );
    // `--netns HOST` from outside reads the namespace's hosts file as `ip netns exec` does,
    // and names it by its real path.
    let hosts = format!("/etc/netns/{}/hosts", lab.host_ns());
    let out = Command::new(BIN)
        .args([
            "--as",
            "ec-web",
            "--port",
            "25",
            "--timeout",
            "1s",
            "--format",
            "json",
        ])
        .args([
            "--host",
            "relay",
            "--host",
            "localrelay",
            "--netns",
            &lab.host_ns(),
        ])
        .output()
        .expect("run with --netns");
    let report = Report::parse(&out);
    let relay: Vec<_> = report
        .probes
        .iter()
        .filter(|p| p.family == "ipv4" && p.target == "relay")
        .collect();
    assert_eq!(relay.len(), 1, "{}", describe(&out));
    assert_eq!(
        relay[0].address.as_deref(),
        Some("203.0.113.12"),
        "{}",
        describe(&out)
    );
    let local = report
        .probes
        .iter()
        .find(|p| p.family == "ipv4" && p.target == "localrelay")
        .unwrap_or_else(|| panic!("no probe of localrelay\n{}", describe(&out)));
    let want = format!("{hosts} answered A 127.0.0.1 for localrelay:");
    assert!(
        local.detail.as_deref().unwrap_or("").starts_with(&want),
        "{want}\n{}",
        describe(&out)
    );
}
