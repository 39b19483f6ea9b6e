//! Exit codes of `egress-check`: one place that names them, one function that derives a
//! run's code. Scripts and CI jobs rely on these numbers; they are a contract.

/// Every check passed.
pub const PASSED: u8 = 0;
/// At least one check failed (an expectation did not hold).
pub const FAILED: u8 = 1;
/// Usage, scenario or privilege error: nothing was probed.
pub const USAGE: u8 = 2;
/// None failed, but at least one probe proved nothing (DNS failure, no address, error).
pub const INCONCLUSIVE: u8 = 3;
/// Offset added to the number of the signal that stopped a run (SIGINT -> 130).
pub const SIGNAL_BASE: u8 = 128;
/// Interrupted by SIGINT.
pub const SIGINT: u8 = SIGNAL_BASE + 2;
/// Terminated by SIGTERM.
pub const SIGTERM: u8 = SIGNAL_BASE + 15;

/// The text `--help` shows about exit codes, on the ad hoc form and every subcommand that
/// probes (all of them can be interrupted, so 130/143 are theirs too).
pub const HELP: &str = "Exit codes: 0 every check passed; 1 at least one failed; 3 none failed \
                        but at least one was inconclusive; 2 usage, scenario or privilege error \
                        (nothing was probed), or an --output file that could not be written; \
                        130/143 interrupted by SIGINT/SIGTERM (partial report).";

/// The text `resolve --help` shows about exit codes: it probes nothing, so it neither fails
/// a check nor handles signals (an interrupted `resolve` dies of the signal and prints
/// nothing).
pub const RESOLVE_HELP: &str = "Exit codes: 0 every name resolved; 2 usage error (nothing was \
                                looked up); 3 at least one lookup failed.";

/// The code of a run that finished (or hit its deadline), from its counts.
pub fn of_counts(failed: usize, inconclusive: usize) -> u8 {
    if failed > 0 {
        FAILED
    } else if inconclusive > 0 {
        INCONCLUSIVE
    } else {
        PASSED
    }
}

/// The code of a run stopped by `signal`.
pub fn of_signal(signal: i32) -> u8 {
    SIGNAL_BASE.saturating_add(u8::try_from(signal).unwrap_or(u8::MAX - SIGNAL_BASE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(of_counts(0, 0), PASSED);
        assert_eq!(of_counts(1, 0), FAILED);
        assert_eq!(of_counts(1, 5), FAILED);
        assert_eq!(of_counts(0, 5), INCONCLUSIVE);
    }

    #[test]
    fn signals() {
        assert_eq!(of_signal(nix::libc::SIGINT), SIGINT);
        assert_eq!(of_signal(nix::libc::SIGTERM), SIGTERM);
    }
}
