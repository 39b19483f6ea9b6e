//! Interruptions: SIGINT/SIGTERM and `--deadline`, and what each leaves in the report.
//!
//! A run that is cut short still reports every planned probe exactly once: what finished,
//! as observed; what did not, as `error` (inconclusive) with the reason.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::address::HostInterfaces;
use crate::exit_codes;
use crate::plan::{Assignment, PlannedProbe};
use crate::probe::{Attempt, Observed};
use crate::resolve::{expand, DnsFailure, FailureKind, Resolution};
use crate::scenario::TargetKind;
use crate::worker::WorkerError;

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// SIGINT or SIGTERM (the signal number).
    Signal(i32),
    /// `--deadline` passed.
    Deadline,
}

impl Interruption {
    /// The process exit code for it: 128 + signal; a deadline is judged like any run.
    pub fn exit_code(self) -> Option<u8> {
        match self {
            Interruption::Signal(sig) => Some(exit_codes::of_signal(sig)),
            Interruption::Deadline => None,
        }
    }

    /// How the report says it.
    pub fn describe(self) -> String {
        match self {
            Interruption::Signal(sig) if sig == nix::libc::SIGINT => "interrupted (SIGINT)".into(),
            Interruption::Signal(sig) if sig == nix::libc::SIGTERM => "terminated (SIGTERM)".into(),
            Interruption::Signal(sig) => format!("stopped by signal {sig}"),
            Interruption::Deadline => "the run's --deadline passed".into(),
        }
    }
}

/// Why a planned probe has no result: the interruption if there was one, else its worker's
/// failure.
pub fn missing_reason(
    interruption: Option<Interruption>,
    worker_error: Option<&WorkerError>,
) -> String {
    match (interruption, worker_error) {
        (Some(i), _) => format!("not finished: {}", i.describe()),
        (None, Some(error)) => format!("worker failed: {error}"),
        (None, None) => "the worker reported no result".to_string(),
    }
}

/// What an interruption during DNS resolution leaves: for every assignment, one probe per
/// family and port, none tried, each `error` with the reason.
pub fn during_resolution(
    assignments: &[Assignment],
    interruption: Interruption,
) -> (Vec<PlannedProbe>, Vec<Attempt>) {
    let reason = format!(
        "not finished: {} during DNS resolution",
        interruption.describe()
    );
    // Every resolution here is a failure: no address is classified, so no interfaces are
    // needed.
    let nothing_classified = HostInterfaces::new(Vec::new());
    let probes = expand(assignments, &nothing_classified, |a| {
        Resolution::Failed(DnsFailure {
            name: match &a.target.kind {
                TargetKind::Mx(n) | TargetKind::Host(n) => n.clone(),
                TargetKind::Addresses(_) => a.target.name.clone(),
            },
            record: "-",
            kind: FailureKind::Other(reason.clone()),
            nameserver: None,
        })
    });
    let attempts = probes
        .iter()
        .map(|_| Attempt {
            observed: Observed::Error,
            elapsed: std::time::Duration::ZERO,
            detail: Some(reason.clone()),
            local: None,
        })
        .collect();
    (probes, attempts)
}

/// SIGINT and SIGTERM as a stream of signal numbers.
pub struct Interrupts {
    int: Option<Signal>,
    term: Option<Signal>,
}

impl Interrupts {
    /// Starts listening (from now on the signals no longer kill the process).
    pub fn new() -> Interrupts {
        Interrupts {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next signal's number.
    pub async fn recv(&mut self) -> i32 {
        let int = async {
            match &mut self.int {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let term = async {
            match &mut self.term {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => nix::libc::SIGINT,
            _ = term => nix::libc::SIGTERM,
        }
    }
}

impl Default for Interrupts {
    fn default() -> Self {
        Interrupts::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::assignment;
    use crate::vocab::Family;

    #[test]
    fn an_interruption_during_dns_leaves_every_probe_inconclusive() {
        let assignment = assignment(
            TargetKind::Mx("d.test".into()),
            Family::ALL.to_vec(),
            vec![25, 587],
        );
        let (probes, attempts) =
            during_resolution(&[assignment], Interruption::Signal(nix::libc::SIGINT));
        assert_eq!(probes.len(), 4);
        assert_eq!(attempts.len(), 4);
        for a in &attempts {
            assert_eq!(a.observed, Observed::Error);
            assert_eq!(
                a.detail.as_deref(),
                Some("not finished: interrupted (SIGINT) during DNS resolution")
            );
        }
    }

    #[test]
    fn reasons_and_codes() {
        assert_eq!(
            Interruption::Signal(nix::libc::SIGTERM).exit_code(),
            Some(exit_codes::SIGTERM)
        );
        assert_eq!(Interruption::Deadline.exit_code(), None);
        assert_eq!(
            missing_reason(Some(Interruption::Deadline), None),
            "not finished: the run's --deadline passed"
        );
        assert_eq!(missing_reason(None, None), "the worker reported no result");
    }
}
