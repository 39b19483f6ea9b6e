//! Where the scenarios of `egress-check run` come from: files, directories of `*.toml` files,
//! standard input (`-`), and, when no FILE is given, the configuration directory
//! [`CONFIG_DIR`] (what `egress-check.service` runs).
//!
//! A directory runs every `*.toml` in it in byte order of the names (the C locale's `ls`), so
//! an admin orders policies with prefixes like `10-mail.toml`, as in other `.d` directories.
//! Names starting with a dot are skipped, like a shell's `*.toml` would: editors and dpkg
//! leave such files behind (`.x.toml.swp`); `x.toml.dpkg-dist` does not end in `.toml`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::scenario::{self, Scenario, ScenarioError, MAX_SCENARIO_BYTES};

/// The configuration directory: `run` without FILE runs its scenarios.
pub const CONFIG_DIR: &str = "/etc/egress-check";
/// The FILE argument that means standard input.
pub const STDIN_ARG: &str = "-";
/// The name standard input goes by in error locations (`<stdin>:3:7: ...`).
pub const STDIN_NAME: &str = "<stdin>";
/// Where the Debian package puts an example scenario; named in the empty-directory message.
const EXAMPLES_DIR: &str = "/usr/share/doc/egress-check/examples";

/// One scenario to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file (named, or found in a directory).
    File(PathBuf),
    /// Standard input.
    Stdin,
}

/// Why the scenarios of a run could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A directory (given, or the configuration directory) holds no `*.toml`.
    #[error(
        "{}: no scenario to run: put scenario files named *.toml in this directory, each with \
         the [[target]]s and [[check]]s of one policy (format: `man egress-check-run`; the \
         package ships an example in {EXAMPLES_DIR}/)",
        dir.display()
    )]
    EmptyDirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// No FILE was given and the configuration directory does not exist.
    #[error(
        "no FILE given and {CONFIG_DIR} does not exist: create it and put scenario files named \
         *.toml in it (format: `man egress-check-run`), or name a scenario FILE"
    )]
    NoConfigDirectory,
    /// A directory could not be listed.
    #[error("{}: cannot list scenario directory: {error}", dir.display())]
    List {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// `-` was given twice: standard input can be read only once.
    #[error("`-` (standard input) is given more than once; it can be read only once")]
    StdinTwice,
    /// Standard input could not be read.
    #[error("{STDIN_NAME}: cannot read scenario: {error}")]
    ReadStdin {
        /// The OS error.
        error: std::io::Error,
    },
    /// Standard input holds more than [`MAX_SCENARIO_BYTES`].
    #[error("{STDIN_NAME}: scenario is larger than the limit of {MAX_SCENARIO_BYTES} bytes")]
    StdinTooLarge,
    /// A scenario was found but is not valid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// The sources named by `run`'s FILE arguments, in order; no argument means [`CONFIG_DIR`].
pub fn expand(args: &[PathBuf]) -> Result<Vec<Source>, SourceError> {
    if args.is_empty() {
        return match std::fs::metadata(CONFIG_DIR) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(SourceError::NoConfigDirectory)
            }
            _ => directory(Path::new(CONFIG_DIR)),
        };
    }
    let mut sources = Vec::new();
    for arg in args {
        if arg.as_os_str() == STDIN_ARG {
            if sources.contains(&Source::Stdin) {
                return Err(SourceError::StdinTwice);
            }
            sources.push(Source::Stdin);
        } else if std::fs::metadata(arg).is_ok_and(|m| m.is_dir()) {
            sources.extend(directory(arg)?);
        } else {
            // Anything else is read as a file: a missing one gets the loader's message.
            sources.push(Source::File(arg.clone()));
        }
    }
    Ok(sources)
}

/// The `*.toml` files of a directory, in byte order of their names.
fn directory(dir: &Path) -> Result<Vec<Source>, SourceError> {
    let list_error = |error| SourceError::List {
        dir: dir.to_path_buf(),
        error,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let name = entry.map_err(list_error)?.file_name();
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(b".toml") {
            continue;
        }
        let path = dir.join(&name);
        // A subdirectory named `x.toml` is not a scenario; a dangling symlink is kept, so
        // that loading it fails loudly instead of a policy silently not running.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        names.push(name);
    }
    if names.is_empty() {
        return Err(SourceError::EmptyDirectory {
            dir: dir.to_path_buf(),
        });
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| Source::File(dir.join(name)))
        .collect())
}

/// Loads one source.
pub fn load(source: &Source) -> Result<Scenario, SourceError> {
    match source {
        Source::File(path) => Ok(scenario::load(path)?),
        Source::Stdin => {
            let mut bytes = Vec::new();
            // One byte over the limit is enough to know it is too large without reading an
            // endless pipe to its end.
            std::io::stdin()
                .lock()
                .take(MAX_SCENARIO_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|error| SourceError::ReadStdin { error })?;
            if bytes.len() > MAX_SCENARIO_BYTES {
                return Err(SourceError::StdinTooLarge);
            }
            Ok(scenario::parse_bytes(STDIN_NAME, bytes)?)
        }
    }
}

/// Expands `run`'s FILE arguments and loads every scenario, stopping at the first error.
pub fn load_all(args: &[PathBuf]) -> Result<Vec<Scenario>, SourceError> {
    expand(args)?.iter().map(load).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), "").unwrap();
    }

    #[test]
    fn directory_lists_toml_files_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.toml",
            "10-a.toml",
            "2-a.toml",
            "B.toml",
            ".hidden.toml",
            "x.toml.dpkg-dist",
            "notes.txt",
        ] {
            touch(dir.path(), name);
        }
        std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
        let names: Vec<String> = directory(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| match s {
                Source::File(p) => p.file_name().unwrap().to_string_lossy().into_owned(),
                Source::Stdin => unreachable!(),
            })
            .collect();
        assert_eq!(names, ["10-a.toml", "2-a.toml", "B.toml", "b.toml"]);
    }

    #[test]
    fn empty_directory_is_named_with_what_to_put_there() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "README");
        let err = expand(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, SourceError::EmptyDirectory { .. }));
        let text = err.to_string();
        assert!(
            text.starts_with(&dir.path().display().to_string()),
            "{text}"
        );
        assert!(text.contains("*.toml"), "{text}");
    }

    #[test]
    fn arguments_keep_their_order_and_stdin_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a.toml");
        let file = PathBuf::from("/nonexistent/z.toml");
        let sources = expand(&[file.clone(), PathBuf::from("-"), dir.path().to_path_buf()]);
        assert_eq!(
            sources.unwrap(),
            [
                Source::File(file),
                Source::Stdin,
                Source::File(dir.path().join("a.toml"))
            ]
        );
        let twice = expand(&[PathBuf::from("-"), PathBuf::from("-")]);
        assert!(matches!(twice, Err(SourceError::StdinTwice)));
    }
}
