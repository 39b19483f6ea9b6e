//! Verdicts: what an observed outcome means for an expectation.
//!
//! The rule that shapes this module: a deny is only a pass when the connection was
//! actively stopped. Anything that could not prove a deny is inconclusive, never a pass.

use serde::Serialize;

use crate::probe::Observed;
use crate::scenario::Expectation;

/// The judgement of one probe against its expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The expectation did not hold. Ordered first so failures sort to the top.
    Fail,
    /// Nothing could be proven either way.
    Inconclusive,
    /// The expectation held.
    Pass,
}

impl Verdict {
    /// Upper-case label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Pass => "pass",
        }
    }
}

/// Judges one observed outcome against an expectation.
pub fn judge(expect: Expectation, observed: Observed) -> Verdict {
    use Observed::*;
    match (expect, observed) {
        (_, Error | NoAddress) => Verdict::Inconclusive,
        (Expectation::Allow, Connected) => Verdict::Pass,
        (Expectation::Allow, Refused | Unreachable | Timeout) => Verdict::Fail,
        (Expectation::Deny, Connected) => Verdict::Fail,
        (Expectation::Deny, Refused | Unreachable | Timeout) => Verdict::Pass,
    }
}

/// True when the outcome means the connection was blocked (or could not be made) on the way.
pub fn is_blocked(observed: Observed) -> bool {
    matches!(
        observed,
        Observed::Refused | Observed::Unreachable | Observed::Timeout
    )
}

/// Which exit code a run with these counts ends with: 0 all passed, 1 a failure, 3 inconclusive.
pub fn exit_code(failed: usize, inconclusive: usize) -> i32 {
    if failed > 0 {
        1
    } else if inconclusive > 0 {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observed::*;

    #[test]
    fn verdict_table() {
        let table = [
            (Connected, Verdict::Pass, Verdict::Fail),
            (Refused, Verdict::Fail, Verdict::Pass),
            (Unreachable, Verdict::Fail, Verdict::Pass),
            (Timeout, Verdict::Fail, Verdict::Pass),
            (Error, Verdict::Inconclusive, Verdict::Inconclusive),
            (NoAddress, Verdict::Inconclusive, Verdict::Inconclusive),
        ];
        for (observed, allow, deny) in table {
            assert_eq!(judge(Expectation::Allow, observed), allow, "{observed:?}");
            assert_eq!(judge(Expectation::Deny, observed), deny, "{observed:?}");
        }
    }

    #[test]
    fn nothing_unproven_passes() {
        for expect in [Expectation::Allow, Expectation::Deny] {
            for observed in [Error, NoAddress] {
                assert_ne!(judge(expect, observed), Verdict::Pass);
            }
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(0, 0), 0);
        assert_eq!(exit_code(1, 0), 1);
        assert_eq!(exit_code(1, 5), 1);
        assert_eq!(exit_code(0, 5), 3);
    }

    #[test]
    fn failures_sort_first() {
        let mut v = vec![Verdict::Pass, Verdict::Inconclusive, Verdict::Fail];
        v.sort();
        assert_eq!(v, vec![Verdict::Fail, Verdict::Inconclusive, Verdict::Pass]);
    }
}
