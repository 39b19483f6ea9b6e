//! Named network namespaces, the iproute2 convention: `/run/netns/NAME`, with per-namespace
//! files under `/etc/netns/NAME/` that `ip netns exec` mounts over `/etc`. Entering one
//! (`--netns`) is here; the lab's throwaway pairs are created and deleted by `lab::pair`.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// No such namespace.
    #[error("network namespace `{name}` not found ({path}); list them with `ip netns list`, create one with `ip netns add {name}`")]
    NotFound {
        /// The name given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The namespace file exists but could not be entered.
    #[error("cannot enter network namespace `{name}`: {error} (entering a namespace needs root or CAP_SYS_ADMIN)")]
    Enter {
        /// The name given.
        name: String,
        /// The OS error.
        error: std::io::Error,
    },
}

/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Where `ip netns exec NAME` finds files to bind-mount over `/etc`.
pub const NETNS_ETC: &str = "/etc/netns";

/// `/run/netns/<name>`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Moves the calling thread into the named namespace; returns the content of
/// `/etc/netns/NAME/resolv.conf` when that file exists, as `ip netns exec` would use it.
///
/// Call it before any other thread exists: threads started earlier stay where they were.
pub fn enter(name: &str) -> Result<Option<String>, NetnsError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(NetnsError::NotFound {
            name: name.to_string(),
            path: PathBuf::from(NETNS_DIR).join(name),
        });
    }
    let path = Path::new(NETNS_DIR).join(name);
    enter_path(&path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => NetnsError::NotFound {
            name: name.to_string(),
            path: path.clone(),
        },
        _ => NetnsError::Enter {
            name: name.to_string(),
            error: err,
        },
    })?;
    let resolv_conf = Path::new(NETNS_ETC).join(name).join("resolv.conf");
    Ok(std::fs::read_to_string(resolv_conf).ok())
}

/// `/etc/netns/NAME/hosts` when that file exists: what `ip netns exec NAME` bind-mounts
/// over `/etc/hosts`, so what a program run there would read.
pub fn hosts_file(name: &str) -> Option<PathBuf> {
    let path = Path::new(NETNS_ETC).join(name).join("hosts");
    path.is_file().then_some(path)
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_path(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_named() {
        let err = enter("egress-check-no-such-ns").unwrap_err();
        assert!(err
            .to_string()
            .contains("`egress-check-no-such-ns` not found"));
        assert!(enter("../etc").is_err());
    }
}
