//! Hostile and malformed input: the scenario parser and the command line never panic, and
//! every bad input is exit 2 with a precise message. None of these need root or a network.

use std::io::Write;

use assert_cmd::Command;
use clap::Parser;
use egress_check::cli::Cli;
use egress_check::scenario::{self, ScenarioError};
use proptest::prelude::*;

fn bin() -> Command {
    Command::cargo_bin("egress-check").expect("binary is built")
}

fn scenario_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(bytes).expect("write scenario");
    file
}

/// Runs `egress-check run FILE` on `bytes`; asserts exit 2 and returns stderr.
fn run_rejected(bytes: &[u8]) -> String {
    let file = scenario_file(bytes);
    let output = bin().arg("run").arg(file.path()).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout for a usage error"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    stderr
}

const VALID: &str = "[[target]]\nname = \"t\"\nmx = \"dual.test\"\n\n[[check]]\nas = [\"root\"]\nexpect = \"deny\"\n";

#[test]
fn bad_scenarios_are_exit_2_with_file_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "mx = \"dual.test\"",
            "mx = \"dual.test\"\nports = [0]",
            ":4:10: port 0 is out of range",
        ),
        (
            "mx = \"dual.test\"",
            "mx = \"dual.test\"\nports = [65536]",
            ":4:10: port 65536 is out of range",
        ),
        (
            "mx = \"dual.test\"",
            "mx = \"dual.test\"\nports = []",
            ":4:9: `ports` list is empty",
        ),
        ("name = \"t\"", "name = \"t\"\nname = \"u\"", ":3:1:"),
        (
            "expect = \"deny\"",
            "expect = \"deny\"\nto = [\"nope\"]",
            ":8:7: no target is named `nope`",
        ),
        ("as = [\"root\"]", "as = []", ":6:6: `as` list is empty"),
        ("expect = \"deny\"", "expect = \"deny\"\nbogus = 1", ":8:1:"),
        ("mx = \"dual.test\"", "mx = [[[[[\"x\"]]]]]", ":3:6:"),
    ];
    for (needle, replacement, expected) in cases {
        let text = VALID.replace(needle, replacement);
        let stderr = run_rejected(text.as_bytes());
        assert!(stderr.contains(expected), "{replacement:?}: {stderr}");
    }
}

#[test]
fn duplicate_target_names_are_rejected() {
    let text = format!("{VALID}\n[[target]]\nname = \"t\"\nmx = \"other.test\"\n");
    let stderr = run_rejected(text.as_bytes());
    assert!(
        stderr.contains(":9:1: target name `t` is used twice"),
        "{stderr}"
    );
}

#[test]
fn invalid_utf8_is_located() {
    let mut bytes = b"# ok\n[[target]]\nname = \"".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"\"\n");
    let stderr = run_rejected(&bytes);
    assert!(
        stderr.contains(":3:9: scenario is not valid UTF-8"),
        "{stderr}"
    );
}

#[test]
fn huge_files_are_refused_before_parsing() {
    let mut text = VALID.to_string();
    while text.len() <= scenario::MAX_SCENARIO_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let stderr = run_rejected(text.as_bytes());
    assert!(stderr.contains("the limit is"), "{stderr}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [1_000, 100_000] {
        let text = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let stderr = run_rejected(text.as_bytes());
        assert!(stderr.contains(":1:"), "depth {depth}: {stderr}");
        let text = format!("x = {}1{}\n", "{a = ".repeat(depth), "}".repeat(depth));
        run_rejected(text.as_bytes());
    }
}

#[test]
fn missing_file_and_unknown_user_are_named() {
    let output = bin()
        .args(["run", "/nonexistent/scenario.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/scenario.toml: cannot read scenario"),
        "{stderr}"
    );

    let text = VALID.replace("\"root\"", "\"no-such-user-ec\"");
    let stderr = run_rejected(text.as_bytes());
    assert!(
        stderr.contains(":6:7: no such user `no-such-user-ec`"),
        "{stderr}"
    );
}

#[test]
fn numeric_uid_without_passwd_entry_is_refused() {
    let output = bin()
        .args(["--as", "3999999999", "--addr", "192.0.2.1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("uid 3999999999 has no passwd entry"),
        "{stderr}"
    );
}

#[test]
fn bad_command_lines_are_exit_2() {
    for args in [
        &["--as", "root", "--port", "0"][..],
        &["--as", "root", "--port", "65536"],
        &["--as", "root", "--timeout", "0s"],
        &["--as", "root", "--expect", "perhaps"],
        &["--as", "root", "--addr", "999.1.1.1"],
        &["--as", "root", "--mx", "bad..name"],
        &["--bogus"],
        &[],
        &["run"],
        &["resolve"],
    ] {
        let output = bin().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

fn scenario_vocabulary() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "mx",
        "host",
        "address",
        "ports",
        "families",
        "as",
        "to",
        "expect",
        "timeout",
        "nameserver",
        "bogus",
    ]);
    let value = prop::sample::select(vec![
        "\"t\"",
        "\"dual.test\"",
        "[25]",
        "[0]",
        "[65536]",
        "[-1]",
        "[]",
        "[\"ipv4\"]",
        "[\"ipv6\", \"ipv4\"]",
        "[\"ipv9\"]",
        "\"deny\"",
        "\"allow\"",
        "\"maybe\"",
        "[\"root\"]",
        "[\"t\"]",
        "[\"u\"]",
        "\"1s\"",
        "\"0s\"",
        "\"192.0.2.1\"",
        "[\"192.0.2.1\"]",
        "1",
        "true",
        "{}",
        "[[]]",
        "\"\"",
    ]);
    let header = prop::sample::select(vec!["[[target]]", "[[check]]", "[target]", "[check]", ""]);
    prop::collection::vec((header, prop::collection::vec((key, value), 0..5)), 0..6).prop_map(
        |sections| {
            let mut text = String::new();
            for (header, pairs) in sections {
                text.push_str(header);
                text.push('\n');
                for (k, v) in pairs {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        if let Err(err) = scenario::parse("p.toml", &text) {
            prop_assert!(err.to_string().starts_with("p.toml:"));
        }
    }

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let file = scenario_file(&bytes);
        match scenario::load(file.path()) {
            Ok(_) => {}
            Err(ScenarioError::NotUtf8 { .. } | ScenarioError::Invalid { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
    }

    #[test]
    fn structured_scenarios_parse_or_fail_precisely(text in scenario_vocabulary()) {
        match scenario::parse("p.toml", &text) {
            Ok(s) => {
                prop_assert!(!s.targets.is_empty() && !s.checks.is_empty());
                for t in &s.targets {
                    prop_assert!(!t.ports.is_empty() && t.ports.iter().all(|&p| p != 0));
                    prop_assert!(!t.families.is_empty());
                }
                for c in &s.checks {
                    prop_assert!(!c.users.is_empty());
                    prop_assert!(c.targets.iter().all(|&i| i < s.targets.len()));
                }
            }
            Err(err) => {
                let text = err.to_string();
                let mut parts = text.splitn(4, ':');
                prop_assert_eq!(parts.next(), Some("p.toml"));
                prop_assert!(parts.next().unwrap_or("").parse::<usize>().is_ok(), "{}", text);
                prop_assert!(parts.next().unwrap_or("").parse::<usize>().is_ok(), "{}", text);
            }
        }
    }

    #[test]
    fn command_line_never_panics(args in prop::collection::vec(
        prop::sample::select(vec![
            "run", "resolve", "--as", "root", "--mx", "--host", "--addr", "--port", "0", "25",
            "65536", "--expect", "allow", "deny", "--format", "json", "junit", "--timeout", "1s",
            "--deadline", "--nameserver", "192.0.2.1:53", "x.toml", "--netns", "--", "-",
            "\u{fffd}", "",
        ]),
        0..8,
    )) {
        let _ = Cli::try_parse_from(std::iter::once("egress-check").chain(args.iter().copied()));
    }
}
