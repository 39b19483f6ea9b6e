//! `--output [FORMAT=]FILE`: one run's report written to files, each in its own format, so
//! that one run feeds several consumers (a JSON file for a dashboard, JUnit for CI, and the
//! human report on stdout for the journal).
//!
//! Every file is replaced atomically: the report is written to a temporary file in the same
//! directory, fsynced and renamed over FILE, so a reader sees the previous report or the new
//! one, never half of one. [`PreparedOutputs::prepare`] checks each directory *before*
//! anything is probed, by creating (and removing) a temporary file there: a directory that
//! is missing or not writable is a usage error then, not a lost report after the run. The
//! temporary file that is renamed is only created once the report exists, so that a run
//! killed outright (SIGKILL, OOM) leaves none behind. An interrupted run never calls
//! [`PreparedOutputs::commit`], and the previous reports stay in place.
//!
//! Root writes these files, often into directories other users can write (`/tmp`), so
//! nothing planted there can redirect the write: the temporary file is created with
//! `O_CREAT|O_EXCL` (tempfile), which never follows a link at its name and retries under a
//! new random name when one is taken; `rename(2)` replaces whatever is at FILE (a planted
//! symlink included) instead of following it; and the new file's permissions are never
//! wider than those of the regular file it replaces ([`mode_for`]).
//!
//! [`render`] is the one place a report becomes bytes, for stdout and files alike; a new
//! format (Prometheus textfile, issue 11) is a new [`Format`] variant and one arm there.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ValueEnum;

use crate::cli::Format;
use crate::report;
use crate::verdict::Judgement;

/// Permissions of a written report before the umask: readable by all, like a file created
/// by `>`, because its readers (dashboards, node_exporter's textfile collector) run as
/// other users; the umask (0022 in the systemd unit) narrows it.
const REPORT_MODE: u32 = 0o666;

/// The text of `report` in `format`, exactly as printed on stdout.
pub fn render(judgement: &Judgement, format: Format, color: bool) -> String {
    match format {
        Format::Human => report::to_human(judgement, color),
        Format::Json => format!("{}\n", report::to_json(judgement)),
        Format::JsonCompact => format!("{}\n", report::to_json_compact(judgement)),
        Format::Junit => format!("{}\n", report::to_junit(judgement)),
        Format::Prometheus => report::prometheus::to_prometheus(judgement),
    }
}

/// One `--output` argument: `[FORMAT=]FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The format, if given; else `--format`'s.
    pub format: Option<Format>,
    /// The file to replace.
    pub path: PathBuf,
}

/// Why an `--output` argument is malformed.
#[derive(Debug, thiserror::Error)]
pub enum OutputSpecError {
    /// Nothing after `FORMAT=` (or nothing at all).
    #[error("no file name; expected [FORMAT=]FILE")]
    NoFile,
    /// `word=...` where `word` is not a format: most likely a typo, not a file name.
    #[error(
        "unknown report format `{given}` (expected one of: {known}); for a file whose name \
         contains `=`, write ./{given}={rest}"
    )]
    UnknownFormat {
        /// What was written before `=`.
        given: String,
        /// What came after it.
        rest: String,
        /// The formats there are.
        known: String,
    },
}

impl FromStr for OutputSpec {
    type Err = OutputSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (format, file) = match text.split_once('=') {
            // A path like `./a=b` or `/x/a=b` has a `/` before its `=`; a bare word is
            // meant as a format.
            Some((word, rest)) if !word.contains('/') => {
                match <Format as ValueEnum>::from_str(word, true) {
                    Ok(format) => (Some(format), rest),
                    Err(_) => {
                        return Err(OutputSpecError::UnknownFormat {
                            given: word.to_string(),
                            rest: rest.to_string(),
                            known: Format::value_variants()
                                .iter()
                                .filter_map(|f| f.to_possible_value())
                                .map(|v| v.get_name().to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
            _ => (None, text),
        };
        if file.is_empty() {
            return Err(OutputSpecError::NoFile);
        }
        Ok(OutputSpec {
            format,
            path: PathBuf::from(file),
        })
    }
}

/// Why a report file cannot be, or was not, written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// FILE's directory does not exist.
    #[error("--output {}: directory {} does not exist", path.display(), dir.display())]
    NoDirectory {
        /// FILE as given.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// FILE's directory does not take new files (permissions, read-only file system...).
    #[error("--output {}: cannot create a file in {}: {error}", path.display(), dir.display())]
    NotWritable {
        /// FILE as given.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// FILE names a directory.
    #[error("--output {}: is a directory, not a file", path.display())]
    IsDirectory {
        /// FILE as given.
        path: PathBuf,
    },
    /// The same FILE twice: the second rename would silently win.
    #[error("--output {}: the same file is given twice", path.display())]
    Duplicate {
        /// FILE as given.
        path: PathBuf,
    },
    /// Writing, syncing or renaming failed after the run; FILE is unchanged.
    #[error("--output {}: report not written (the previous file is unchanged): {error}", path.display())]
    Write {
        /// FILE as given.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The rename happened but the directory could not be synced: a crash now could lose it.
    #[error("--output {}: report written but its directory not synced: {error}", path.display())]
    SyncDirectory {
        /// FILE as given.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

/// One `--output` file waiting for the report.
#[derive(Debug)]
struct Pending {
    path: PathBuf,
    dir: PathBuf,
    format: Format,
}

/// The `--output` files of a run, checked and ready to be written; dropping it writes
/// nothing.
#[derive(Debug, Default)]
pub struct PreparedOutputs {
    pending: Vec<Pending>,
}

impl PreparedOutputs {
    /// Checks every FILE's directory by creating a temporary file there now, before the
    /// run, so that a missing or read-only directory fails before anything is probed.
    /// FILE without `FORMAT=` gets `default_format` (`--format`).
    pub fn prepare(specs: &[OutputSpec], default_format: Format) -> Result<Self, OutputError> {
        let mut pending: Vec<Pending> = Vec::new();
        for spec in specs {
            let path = spec.path.clone();
            if pending.iter().any(|p| p.path == path) {
                return Err(OutputError::Duplicate { path });
            }
            if path.is_dir() {
                return Err(OutputError::IsDirectory { path });
            }
            let Some(name) = path.file_name() else {
                return Err(OutputError::IsDirectory { path });
            };
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(OutputError::NoDirectory { path, dir });
            }
            // Creating a file is the only reliable test: access(2) says nothing about
            // read-only mounts for root, ACLs, or a full quota.
            drop(
                temp_file(&dir, name, REPORT_MODE).map_err(|error| OutputError::NotWritable {
                    path: path.clone(),
                    dir: dir.clone(),
                    error,
                })?,
            );
            pending.push(Pending {
                path,
                dir,
                format: spec.format.unwrap_or(default_format),
            });
        }
        Ok(PreparedOutputs { pending })
    }

    /// Writes the report into every file. Each file is independent: a failure to write
    /// one does not keep the others from being replaced.
    pub fn commit(self, report: &Judgement) -> Result<(), CommitError> {
        let failures: Vec<OutputError> = self
            .pending
            .into_iter()
            .filter_map(|pending| pending.commit(report).err())
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CommitError { failures })
        }
    }
}

/// The `--output` files that could not be written after a run (at least one).
#[derive(Debug, thiserror::Error)]
#[error("{}", failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct CommitError {
    /// One error per file not written.
    pub failures: Vec<OutputError>,
}

/// The permissions of a new report at `path` (before the umask): those of the regular file
/// it replaces, without execute or special bits, so that replacing a private report does
/// not publish it; `0o666` (`REPORT_MODE`) when there is none. A symlink (or anything else) at
/// `path` is not followed and says nothing: it is replaced.
pub fn mode_for(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => meta.permissions().mode() & REPORT_MODE,
        _ => REPORT_MODE,
    }
}

/// A new temporary file next to FILE (named `name` in `dir`), created exclusively with
/// `mode` (narrowed by the umask); dropped, it is removed.
fn temp_file(dir: &Path, name: &OsStr, mode: u32) -> std::io::Result<tempfile::NamedTempFile> {
    temp_file_with(dir, name, mode, TEMP_RANDOM_BYTES)
}

/// Random characters in a temporary file's name (tempfile's default).
const TEMP_RANDOM_BYTES: usize = 6;

/// [`temp_file`] with `random` random characters in the name (tests plant links at a name
/// they can know with 0).
fn temp_file_with(
    dir: &Path,
    name: &OsStr,
    mode: u32,
    random: usize,
) -> std::io::Result<tempfile::NamedTempFile> {
    // A dot name, so that consumers' `*.json` globs do not pick up a report being written.
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .rand_bytes(random)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .tempfile_in(dir)
}

impl Pending {
    fn commit(self, report: &Judgement) -> Result<(), OutputError> {
        let text = render(report, self.format, false);
        let name = self.path.file_name().unwrap_or_default();
        let write = || -> std::io::Result<tempfile::NamedTempFile> {
            let mut temp = temp_file(&self.dir, name, mode_for(&self.path))?;
            temp.write_all(text.as_bytes())?;
            // Data on disk before the rename makes it visible: else a crash could leave an
            // empty file under the final name.
            temp.as_file().sync_all()?;
            Ok(temp)
        };
        // On any failure the temporary file is dropped, which removes it.
        let temp = match write() {
            Ok(temp) => temp,
            Err(error) => {
                return Err(OutputError::Write {
                    path: self.path,
                    error,
                })
            }
        };
        if let Err(err) = temp.persist(&self.path) {
            return Err(OutputError::Write {
                path: self.path,
                error: err.error,
            });
        }
        sync_dir(&self.dir).map_err(|error| OutputError::SyncDirectory {
            path: self.path,
            error,
        })
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<OutputSpec, OutputSpecError> {
        text.parse()
    }

    #[test]
    fn format_prefix_is_optional() {
        let s = spec("json=/var/lib/egress-check/last.json").unwrap();
        assert_eq!(s.format, Some(Format::Json));
        assert_eq!(s.path, Path::new("/var/lib/egress-check/last.json"));
        let s = spec("report.xml").unwrap();
        assert_eq!((s.format, s.path), (None, PathBuf::from("report.xml")));
        let s = spec("JUNIT=r.xml").unwrap();
        assert_eq!(s.format, Some(Format::Junit));
        // A `/` before the `=` makes it a path.
        let s = spec("./a=b.json").unwrap();
        assert_eq!((s.format, s.path), (None, PathBuf::from("./a=b.json")));
    }

    #[test]
    fn malformed_specs_are_refused() {
        assert!(matches!(spec(""), Err(OutputSpecError::NoFile)));
        assert!(matches!(spec("json="), Err(OutputSpecError::NoFile)));
        let err = spec("jsn=x.json").unwrap_err();
        assert!(matches!(err, OutputSpecError::UnknownFormat { .. }));
        let text = err.to_string();
        assert!(
            text.contains("human, json, json-compact, junit, prometheus"),
            "{text}"
        );
        assert!(text.contains("./jsn=x.json"), "{text}");
    }

    fn report() -> Judgement {
        crate::verdict::judge_run(Vec::new(), Vec::new(), None)
    }

    #[test]
    fn commit_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.json");
        std::fs::write(&path, "old").unwrap();
        let specs = [spec(&format!("json={}", path.display())).unwrap()];
        let outputs = PreparedOutputs::prepare(&specs, Format::Human).unwrap();
        // Until the commit the previous report is intact, and no temporary file waits.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        outputs.commit(&report()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            render(&report(), Format::Json, false)
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropping_prepared_outputs_keeps_the_previous_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.json");
        std::fs::write(&path, "old").unwrap();
        let specs = [spec(&path.display().to_string()).unwrap()];
        drop(PreparedOutputs::prepare(&specs, Format::Json).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_is_reported_and_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let kept = dir.path().join("kept.json");
        let specs = [
            spec(&gone.join("last.json").display().to_string()).unwrap(),
            spec(&kept.display().to_string()).unwrap(),
        ];
        let outputs = PreparedOutputs::prepare(&specs, Format::Json).unwrap();
        std::fs::remove_dir(&gone).unwrap();
        let err = outputs.commit(&report()).unwrap_err();
        assert!(
            matches!(err.failures[..], [OutputError::Write { .. }]),
            "{err}"
        );
        assert!(kept.exists());
    }

    #[test]
    fn a_report_is_never_wider_than_the_file_it_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.json");
        assert_eq!(mode_for(&path), REPORT_MODE, "no file: the default");
        std::fs::write(&path, "old").unwrap();
        for (mode, expected) in [(0o600, 0o600), (0o640, 0o640), (0o755, 0o644)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(mode_for(&path), expected, "{mode:o}");
        }
        // A link is not followed, whatever it points to.
        let private = dir.path().join("private");
        std::fs::write(&private, "").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert_eq!(mode_for(&link), REPORT_MODE);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let specs = [spec(&format!("json={}", path.display())).unwrap()];
        PreparedOutputs::prepare(&specs, Format::Human)
            .unwrap()
            .commit(&report())
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & !0o600, 0, "the new report is {mode:o}");
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // With no random part the name is known: `.last.json..tmp`.
        let planted = dir.path().join(".last.json..tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let err = temp_file_with(dir.path(), OsStr::new("last.json"), REPORT_MODE, 0)
            .expect_err("an exclusive create must refuse the planted name");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn unusable_destinations_fail_at_prepare() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope").join("x.json");
        let err = PreparedOutputs::prepare(
            &[spec(&missing.display().to_string()).unwrap()],
            Format::Json,
        )
        .unwrap_err();
        assert!(matches!(err, OutputError::NoDirectory { .. }), "{err}");
        let err = PreparedOutputs::prepare(
            &[spec(&dir.path().display().to_string()).unwrap()],
            Format::Json,
        )
        .unwrap_err();
        assert!(matches!(err, OutputError::IsDirectory { .. }), "{err}");
        let file = dir.path().join("a.json").display().to_string();
        let twice = [spec(&file).unwrap(), spec(&format!("json={file}")).unwrap()];
        let err = PreparedOutputs::prepare(&twice, Format::Json).unwrap_err();
        assert!(matches!(err, OutputError::Duplicate { .. }), "{err}");
    }
}
