//! Files the tests run the binary on: the shipped ones in `scenarios/` (what users run and
//! `ci/demo` proves), the test fixtures in `tests/fixtures/`, and scenario texts written to
//! temporary files.
//!
//! Tests use the files themselves, never inline copies, so that a change to a shipped
//! scenario or ruleset is tested as shipped.

use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Full path of `scenarios/NAME`, as a string for command lines.
pub fn shipped(name: &str) -> String {
    existing(root().join("scenarios").join(name))
}

/// Full path of `tests/fixtures/NAME`, as a string for command lines.
pub fn fixture(name: &str) -> String {
    existing(root().join("tests").join("fixtures").join(name))
}

/// The text of `tests/fixtures/NAME`.
pub fn fixture_text(name: &str) -> String {
    let path = fixture(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `path` as a string; panics when there is no such file (a misspelt name would otherwise
/// show up as the binary's "cannot read" error, exit 2, which some tests expect).
fn existing(path: PathBuf) -> String {
    assert!(path.is_file(), "no such fixture file: {}", path.display());
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
        .to_string()
}

/// A scenario file in a temporary directory of its own (removed on drop), so that its file
/// name is known exactly, e.g. for `bad.toml:3:9` in error messages.
pub struct ScenarioFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ScenarioFile {
    /// Writes `text` to a new temporary file called `file_name`.
    pub fn new(file_name: &str, text: &str) -> ScenarioFile {
        let dir = tempfile::Builder::new()
            .prefix("egress-check-scenario")
            .tempdir()
            .expect("create temporary directory");
        let path = dir.path().join(file_name);
        std::fs::write(&path, text).expect("write scenario");
        ScenarioFile { _dir: dir, path }
    }

    /// The file's full path, as a string for command lines.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("temporary paths are UTF-8")
    }
}

/// Writes `text` to a temporary `scenario.toml`.
pub fn scenario(text: &str) -> ScenarioFile {
    ScenarioFile::new("scenario.toml", text)
}
