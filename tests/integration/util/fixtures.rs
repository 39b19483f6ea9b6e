//! Scenario texts written to temporary files, so that their paths and names are known.

use std::path::PathBuf;

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
