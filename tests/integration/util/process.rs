//! Running processes for the tests: command lines written as one line, rendering their
//! output for assertion messages, exit codes, commands that must succeed, children whose
//! output is drained while they run, and polling for a condition.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Renders a process's exit status and output for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The words of a command line, split on whitespace: for rules and arguments written as one
/// line (`"-A OUTPUT -p tcp --dport 25 -j DROP"`), where no word has a space in it.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(out.status.success(), "{what} failed\n{}", describe(&out));
    out
}

/// Exit code of a finished process (panics if it was killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal\n{}", describe(out)))
}

/// Asserts that the run `out` succeeded (exit 0) and that its stdout names every one of
/// `needles`; returns that stdout.
#[track_caller]
pub fn assert_ok_naming<S: AsRef<str>>(
    out: &Output,
    needles: impl IntoIterator<Item = S>,
) -> String {
    assert_eq!(code(out), 0, "{}", describe(out));
    let text = stdout(out);
    for needle in needles {
        let needle = needle.as_ref();
        assert!(text.contains(needle), "{needle} missing\n{}", describe(out));
    }
    text
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A started child whose stdout and stderr are drained by threads (so it never blocks on a
/// full pipe), with a bounded wait.
pub struct Running {
    child: Child,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("piped")));
        let err = drain(Box::new(child.stderr.take().expect("piped")));
        Running { child, out, err }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit`; on expiry kills the child and returns `Err` with its output.
    pub fn wait(mut self, limit: Duration) -> Result<Output, Output> {
        let start = Instant::now();
        let finished = loop {
            match self.child.try_wait().expect("try_wait") {
                Some(_) => break true,
                None if start.elapsed() > limit => break false,
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        if !finished {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("wait");
        let out = Output {
            status,
            stdout: self.out.join().expect("stdout reader"),
            stderr: self.err.join().expect("stderr reader"),
        };
        if finished {
            Ok(out)
        } else {
            Err(out)
        }
    }
}
