//! What stops the benchmark. Missed targets and wrong probe results are not
//! errors: they are reported in the output.

use std::io;
use std::path::PathBuf;

use egress_check::lab::{LabError, ZoneError};
use egress_check_testkit::TestkitError;
use nix::errno::Errno;

/// Everything that keeps the benchmark from running to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Creating, using or tearing down the lab.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// The bench's zone could not be built (a bug here).
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// Creating the bench users.
    #[error(transparent)]
    Testkit(#[from] TestkitError),
    /// Local I/O failed.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        error: io::Error,
    },
    /// A system call failed.
    #[error("{context}: {error}")]
    Sys {
        /// What was being done.
        context: String,
        /// The error.
        error: Errno,
    },
    /// A program could not be started.
    #[error("cannot run `{program}`: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: io::Error,
    },
    /// Programs the chosen tools need are not installed.
    #[error("missing programs: {} (install them with `ci/deps {}`)", .programs.join(", "), .packages.join(" "))]
    MissingPrograms {
        /// The programs not found on `PATH`.
        programs: Vec<&'static str>,
        /// The Debian packages that provide them.
        packages: Vec<&'static str>,
    },
    /// The egress-check binary is missing or not executable.
    #[error("{} is not an executable file{hint}", .path.display())]
    Binary {
        /// The path.
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
    },
    /// The lab was built, but the sinks cannot be reached from the host.
    #[error("lab smoke test failed: cannot connect to {addr} from the host namespace: {error}")]
    SmokeTest {
        /// The sink address tried last.
        addr: std::net::SocketAddr,
        /// The last connect error.
        error: io::Error,
    },
    /// A scenario could not be serialized (a bug here).
    #[error("cannot write a scenario: {0}")]
    Toml(toml::ser::Error),
    /// SIGINT or SIGTERM arrived; the lab is removed on the way out.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
}
