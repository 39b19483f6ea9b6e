//! systemd units: finding a unit's main process (`MainPID`) and what systemd restricts for it
//! that the worker cannot reproduce (`RestrictAddressFamilies=`), through `systemctl show`.
//!
//! `systemctl show` is systemd's stable, scriptable interface to the same D-Bus properties
//! (one `Key=Value` line per property asked for), and needs no D-Bus client library here.
//! Whether systemd runs at all is decided the way `sd_booted(3)` does (`/run/systemd/system`
//! exists), never from an error message.

use std::path::Path;
use std::process::Command;

use crate::vocab::Family;

/// Why a unit cannot be probed as.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// systemd is not the init system here.
    #[error("`unit:{unit}`: this host does not run systemd (no /run/systemd/system), so there is no unit to stand in; use `pid:PID` of the service's process instead")]
    NoSystemd {
        /// The unit.
        unit: String,
    },
    /// `systemctl` could not be run or failed.
    #[error("`unit:{unit}`: systemctl show failed: {why}")]
    Systemctl {
        /// The unit.
        unit: String,
        /// What happened (its stderr or the OS error).
        why: String,
    },
    /// The unit is unknown to systemd.
    #[error("`unit:{unit}`: no such unit (LoadState={load_state}); list units with `systemctl list-units --type=service`")]
    NotFound {
        /// The unit.
        unit: String,
        /// Its load state.
        load_state: String,
    },
    /// The unit has no running main process.
    #[error("`unit:{unit}` is not running (ActiveState={active_state}, MainPID={main_pid}): start it, or probe as its user")]
    NotRunning {
        /// The unit.
        unit: String,
        /// Its active state.
        active_state: String,
        /// Its main pid (0: none).
        main_pid: i32,
    },
    /// `systemctl show` printed something unexpected.
    #[error("`unit:{unit}`: cannot parse `systemctl show` output: {what}")]
    Format {
        /// The unit.
        unit: String,
        /// What is wrong.
        what: String,
    },
}

/// The properties of a unit that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInfo {
    /// The unit's canonical name (`Id`).
    pub id: String,
    /// The main process.
    pub main_pid: i32,
    /// The unit's control group, as systemd names it.
    pub control_group: Option<String>,
    /// `RestrictAddressFamilies=`.
    pub families: AddressFamilies,
}

/// A unit's `RestrictAddressFamilies=`, as `systemctl show` prints it: empty (no
/// restriction), an allow list (`AF_INET AF_UNIX`) or a deny list (`~AF_INET6`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AddressFamilies {
    /// No restriction.
    #[default]
    Any,
    /// Only these.
    Allow(Vec<String>),
    /// All but these.
    Deny(Vec<String>),
}

impl AddressFamilies {
    /// Parses the property's value.
    pub fn parse(value: &str) -> AddressFamilies {
        let value = value.trim();
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let names: Vec<String> = list.split_whitespace().map(str::to_string).collect();
        match (deny, names.is_empty()) {
            (false, true) => AddressFamilies::Any,
            (true, _) => AddressFamilies::Deny(names),
            (false, false) => AddressFamilies::Allow(names),
        }
    }

    /// True when sockets of `family` may be created (seccomp fails `socket(2)` otherwise:
    /// the kernel denies it before any firewall sees a packet).
    pub fn permits(&self, family: Family) -> bool {
        let name = match family {
            Family::Ipv4 => "AF_INET",
            Family::Ipv6 => "AF_INET6",
        };
        match self {
            AddressFamilies::Any => true,
            AddressFamilies::Allow(list) => list.iter().any(|f| f == name),
            AddressFamilies::Deny(list) => !list.iter().any(|f| f == name),
        }
    }
}

/// The properties asked of `systemctl show`.
pub const PROPERTIES: &str =
    "Id,LoadState,ActiveState,MainPID,ControlGroup,RestrictAddressFamilies";

/// Parses `systemctl show --property=PROPERTIES UNIT` output.
pub fn parse_show(unit: &str, text: &str) -> Result<UnitInfo, UnitError> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
    };
    let format = |what: &str| UnitError::Format {
        unit: unit.to_string(),
        what: what.to_string(),
    };
    let load_state = value("LoadState").ok_or_else(|| format("no LoadState"))?;
    if load_state != "loaded" {
        return Err(UnitError::NotFound {
            unit: unit.to_string(),
            load_state,
        });
    }
    let active_state = value("ActiveState").ok_or_else(|| format("no ActiveState"))?;
    let main_pid: i32 = value("MainPID")
        .ok_or_else(|| format("no MainPID"))?
        .trim()
        .parse()
        .map_err(|_| format("MainPID is not a number"))?;
    if main_pid <= 0
        || !matches!(
            active_state.as_str(),
            "active" | "reloading" | "deactivating"
        )
    {
        return Err(UnitError::NotRunning {
            unit: unit.to_string(),
            active_state,
            main_pid,
        });
    }
    Ok(UnitInfo {
        id: value("Id").unwrap_or_else(|| unit.to_string()),
        main_pid,
        control_group: value("ControlGroup").filter(|c| !c.is_empty()),
        families: AddressFamilies::parse(&value("RestrictAddressFamilies").unwrap_or_default()),
    })
}

/// True when systemd is the init system (`sd_booted(3)`).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Asks systemd about `unit`.
pub fn show(unit: &str) -> Result<UnitInfo, UnitError> {
    if !booted() {
        return Err(UnitError::NoSystemd {
            unit: unit.to_string(),
        });
    }
    let output = Command::new("systemctl")
        .arg("show")
        .arg(format!("--property={PROPERTIES}"))
        .arg("--")
        .arg(unit)
        .output()
        .map_err(|e| UnitError::Systemctl {
            unit: unit.to_string(),
            why: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(UnitError::Systemctl {
            unit: unit.to_string(),
            why: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    parse_show(unit, &String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "Id=php8.2-fpm.service\nLoadState=loaded\nActiveState=active\n\
        MainPID=812\nControlGroup=/system.slice/php8.2-fpm.service\n\
        RestrictAddressFamilies=AF_INET AF_UNIX\n";

    #[test]
    fn a_running_unit() {
        let info = parse_show("php8.2-fpm", RUNNING).unwrap();
        assert_eq!(info.id, "php8.2-fpm.service");
        assert_eq!(info.main_pid, 812);
        assert_eq!(
            info.control_group.as_deref(),
            Some("/system.slice/php8.2-fpm.service")
        );
        assert!(info.families.permits(Family::Ipv4));
        assert!(!info.families.permits(Family::Ipv6));
    }

    #[test]
    fn stopped_and_unknown_units() {
        let stopped = "Id=x.service\nLoadState=loaded\nActiveState=inactive\nMainPID=0\nControlGroup=\nRestrictAddressFamilies=\n";
        assert!(matches!(
            parse_show("x.service", stopped),
            Err(UnitError::NotRunning { main_pid: 0, .. })
        ));
        let unknown = "Id=nope.service\nLoadState=not-found\nActiveState=inactive\nMainPID=0\n";
        let err = parse_show("nope.service", unknown).unwrap_err();
        assert!(matches!(err, UnitError::NotFound { .. }));
        assert!(err.to_string().contains("`unit:nope.service`"));
        assert!(matches!(
            parse_show("x", "LoadState=loaded\nActiveState=active\nMainPID=abc\n"),
            Err(UnitError::Format { .. })
        ));
    }

    #[test]
    fn address_family_lists() {
        assert_eq!(AddressFamilies::parse(""), AddressFamilies::Any);
        let deny = AddressFamilies::parse("~AF_INET6 AF_PACKET");
        assert!(deny.permits(Family::Ipv4));
        assert!(!deny.permits(Family::Ipv6));
        // An allow list that names neither: no TCP at all.
        let unix_only = AddressFamilies::parse("AF_UNIX");
        assert!(!unix_only.permits(Family::Ipv4) && !unix_only.permits(Family::Ipv6));
        // "~" alone denies nothing.
        assert!(AddressFamilies::parse("~").permits(Family::Ipv6));
    }

    #[test]
    fn no_systemd_is_said_without_asking_systemctl() {
        if booted() {
            return; // A systemd host: `show` asks systemctl; covered by parse_show.
        }
        let err = show("php8.2-fpm.service").unwrap_err();
        assert!(matches!(err, UnitError::NoSystemd { .. }), "{err}");
    }
}
