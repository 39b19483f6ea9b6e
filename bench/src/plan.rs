//! The probe set of one size: which users probe which addresses and ports,
//! as egress-check's scenario, as nmap's host lists and as the nc loop's
//! probe list (the files the old script generated, in the same layout).
//!
//! N probes are users x addresses x 2 ports x 2 families: 4 users up to 256
//! probes, 8 up to 2048, else 16; addresses 203.0.113.1.. and
//! 2001:db8:200::1.. (one of each family per address number). Odd users are
//! dropped by the firewall, even users allowed, so half the probes time out
//! and half connect.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Serialize;

use crate::error::BenchError;

/// Ports every probe set uses (the sinks listen on them).
pub const PORTS: [u16; 2] = [25, 587];
/// Users `ecb-u01` .. `ecb-u16`.
pub const MAX_USERS: u32 = 16;
/// Most addresses per family: 203.0.113.1 .. .254.
const MAX_ADDRESSES: u32 = 254;

/// Why a size cannot be laid out.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    /// Not a multiple of users x ports x families.
    #[error("size {n} is not a multiple of {per} ({users} users x 2 ports x 2 families)")]
    NotMultiple {
        /// The size.
        n: u32,
        /// Probes per address.
        per: u32,
        /// Users at that size.
        users: u32,
    },
    /// More addresses than the sink range holds.
    #[error("size {n} needs {addresses} addresses per family; at most {MAX_ADDRESSES}")]
    TooBig {
        /// The size.
        n: u32,
        /// Addresses per family it would need.
        addresses: u32,
    },
}

/// `(users, addresses per family)` for `n` probes.
pub fn shape(n: u32) -> Result<(u32, u32), ShapeError> {
    let users = match n {
        0..=256 => 4,
        257..=2048 => 8,
        _ => MAX_USERS,
    };
    let per = users * PORTS.len() as u32 * 2;
    if !n.is_multiple_of(per) {
        return Err(ShapeError::NotMultiple { n, per, users });
    }
    let addresses = n / per;
    if addresses > MAX_ADDRESSES {
        return Err(ShapeError::TooBig { n, addresses });
    }
    Ok((users, addresses))
}

/// `ecb-uNN`.
pub fn user_name(i: u32) -> String {
    format!("ecb-u{i:02}")
}

/// Whether user number `i` is dropped by the firewall (odd) or allowed.
pub fn dropped(i: u32) -> bool {
    i % 2 == 1
}

/// 203.0.113.`i`.
pub fn sink_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, u8::try_from(i).expect("at most 254"))
}

/// 2001:db8:200::`i` (hex, as the old script's `printf %x`).
pub fn sink_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x200,
        0,
        0,
        0,
        0,
        u16::try_from(i).expect("at most 254"),
    )
}

/// One user of a probe set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `ecb-uNN`.
    pub name: String,
    /// Whether the firewall drops its packets.
    pub dropped: bool,
}

impl User {
    /// `dropped` or `allowed`, as in the generated files.
    pub fn state(&self) -> &'static str {
        if self.dropped {
            "dropped"
        } else {
            "allowed"
        }
    }
}

/// One probe: a user connecting to an address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Index into [`Plan::users`].
    pub user: usize,
    /// Where to.
    pub addr: IpAddr,
    /// Which port.
    pub port: u16,
}

/// The probe set of one size.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Number of probes.
    pub n: u32,
    /// The users, `ecb-u01` first.
    pub users: Vec<User>,
    /// IPv4 sink addresses.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 sink addresses.
    pub v6: Vec<Ipv6Addr>,
    /// Every probe, interleaved by user: for each address (IPv4 first), for
    /// each port, every user in turn.
    pub probes: Vec<Probe>,
}

/// egress-check's scenario file, as serialized.
#[derive(Serialize)]
struct Scenario {
    timeout: String,
    target: Vec<Target>,
    check: Vec<Check>,
}

#[derive(Serialize)]
struct Target {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mx: Option<String>,
    ports: Vec<u16>,
}

#[derive(Serialize)]
struct Check {
    #[serde(rename = "as")]
    users: Vec<String>,
    expect: &'static str,
}

/// Renders a scenario with a comment line on top.
fn render(comment: &str, scenario: &Scenario) -> Result<String, BenchError> {
    let body = toml::to_string(scenario).map_err(BenchError::Toml)?;
    Ok(format!("# {comment}\n{body}"))
}

/// Two checks: the dropped users expect deny, the allowed ones allow.
fn checks<'a>(users: impl IntoIterator<Item = &'a User> + Clone) -> Vec<Check> {
    let names = |dropped: bool| {
        users
            .clone()
            .into_iter()
            .filter(|u| u.dropped == dropped)
            .map(|u| u.name.clone())
            .collect()
    };
    vec![
        Check {
            users: names(true),
            expect: "deny",
        },
        Check {
            users: names(false),
            expect: "allow",
        },
    ]
}

impl Plan {
    /// The probe set of `n` probes (`n` must pass [`shape`]).
    pub fn new(n: u32) -> Result<Plan, ShapeError> {
        let (users, addresses) = shape(n)?;
        let users: Vec<User> = (1..=users)
            .map(|i| User {
                name: user_name(i),
                dropped: dropped(i),
            })
            .collect();
        let v4: Vec<Ipv4Addr> = (1..=addresses).map(sink_v4).collect();
        let v6: Vec<Ipv6Addr> = (1..=addresses).map(sink_v6).collect();
        let mut probes = Vec::new();
        let all = v4
            .iter()
            .map(|&a| IpAddr::V4(a))
            .chain(v6.iter().map(|&a| IpAddr::V6(a)));
        for addr in all {
            for port in PORTS {
                for user in 0..users.len() {
                    probes.push(Probe { user, addr, port });
                }
            }
        }
        Ok(Plan {
            n,
            users,
            v4,
            v6,
            probes,
        })
    }

    /// egress-check's scenario: one target per family with every address
    /// and both ports, and the two checks.
    pub fn scenario(&self, timeout_ms: u64) -> Result<String, BenchError> {
        let list = |addrs: Vec<String>, family: &str| Target {
            name: format!("sinks-{family}"),
            address: Some(addrs),
            mx: None,
            ports: PORTS.to_vec(),
        };
        render(
            &format!(
                "ci/bench: {} probes = {} users x {} addresses x {} ports x 2 families",
                self.n,
                self.users.len(),
                self.v4.len(),
                PORTS.len()
            ),
            &Scenario {
                timeout: format!("{timeout_ms}ms"),
                target: vec![
                    list(self.v4.iter().map(ToString::to_string).collect(), "v4"),
                    list(self.v6.iter().map(ToString::to_string).collect(), "v6"),
                ],
                check: checks(&self.users),
            },
        )
    }

    /// The nc loop's probes: all of them up to `cap`, else an even spread
    /// of `cap / 2` dropped and `cap / 2` allowed ones (every k-th of each
    /// kind from the first on, as the old script's awk picked them).
    pub fn nc_sample(&self, cap: u32) -> Vec<Probe> {
        if self.n <= cap {
            return self.probes.clone();
        }
        let k = (cap / 2) as usize;
        let m = (self.n / 2) as usize;
        let step = (m / k).max(1);
        let pick = |dropped: bool| {
            self.probes
                .iter()
                .filter(move |p| self.users[p.user].dropped == dropped)
                .step_by(step)
                .take(k)
                .cloned()
        };
        pick(true).chain(pick(false)).collect()
    }

    /// Writes `users.txt` (`NAME dropped|allowed`), `v4.txt`, `v6.txt`,
    /// `scenario.toml` and `probes.txt` (`USER STATE ADDRESS PORT`) to `dir`.
    pub fn write(&self, dir: &Path, timeout_ms: u64) -> Result<(), BenchError> {
        let io_err = |path: &Path| {
            let context = format!("cannot write {}", path.display());
            move |error: io::Error| BenchError::Io { context, error }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut users = String::new();
        for u in &self.users {
            let _ = writeln!(users, "{} {}", u.name, u.state());
        }
        let lines = |addrs: &mut dyn Iterator<Item = String>| {
            addrs.fold(String::new(), |mut text, a| {
                let _ = writeln!(text, "{a}");
                text
            })
        };
        let mut probes = String::new();
        for p in &self.probes {
            let u = &self.users[p.user];
            let _ = writeln!(probes, "{} {} {} {}", u.name, u.state(), p.addr, p.port);
        }
        let files = [
            ("users.txt", users),
            (
                "v4.txt",
                lines(&mut self.v4.iter().map(ToString::to_string)),
            ),
            (
                "v6.txt",
                lines(&mut self.v6.iter().map(ToString::to_string)),
            ),
            ("scenario.toml", self.scenario(timeout_ms)?),
            ("probes.txt", probes),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            fs::write(&path, text).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

/// The DNS variant's scenario: one target per MX domain on the first port,
/// `ecb-u01` (dropped) expecting deny and `ecb-u02` (allowed) allow.
pub fn mx_scenario(domains: &[String], timeout_ms: u64) -> Result<String, BenchError> {
    let users = [
        User {
            name: user_name(1),
            dropped: dropped(1),
        },
        User {
            name: user_name(2),
            dropped: dropped(2),
        },
    ];
    render(
        &format!(
            "ci/bench: {} MX domains x 1 port x 2 families x 2 users",
            domains.len()
        ),
        &Scenario {
            timeout: format!("{timeout_ms}ms"),
            target: domains
                .iter()
                .map(|d| Target {
                    name: d.split('.').next().unwrap_or(d).to_owned(),
                    address: None,
                    mx: Some(d.clone()),
                    ports: vec![PORTS[0]],
                })
                .collect(),
            check: checks(&users),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_as_the_old_script() {
        assert_eq!(shape(128).unwrap(), (4, 8));
        assert_eq!(shape(1024).unwrap(), (8, 32));
        assert_eq!(shape(8192).unwrap(), (16, 128));
        assert!(matches!(shape(100), Err(ShapeError::NotMultiple { .. })));
        assert!(matches!(shape(64 * 255), Err(ShapeError::TooBig { .. })));
        assert_eq!(sink_v6(200).to_string(), "2001:db8:200::c8");
        assert_eq!(user_name(1), "ecb-u01");
        assert!(dropped(1) && !dropped(16));
    }

    #[test]
    fn probes_are_interleaved_by_user_and_half_dropped() {
        let plan = Plan::new(128).unwrap();
        assert_eq!(plan.probes.len(), 128);
        let users: Vec<usize> = plan.probes[..5].iter().map(|p| p.user).collect();
        assert_eq!(users, [0, 1, 2, 3, 0]);
        assert_eq!(plan.probes[4].port, 587);
        assert!(plan.probes[64].addr.is_ipv6());
        let dropped = plan
            .probes
            .iter()
            .filter(|p| plan.users[p.user].dropped)
            .count();
        assert_eq!(dropped, 64);
    }

    #[test]
    fn the_nc_sample_is_half_dropped_half_allowed() {
        let plan = Plan::new(1024).unwrap();
        let sample = plan.nc_sample(256);
        assert_eq!(sample.len(), 256);
        let dropped = sample.iter().filter(|p| plan.users[p.user].dropped).count();
        assert_eq!(dropped, 128);
        // Every fourth dropped probe from the first on.
        let all_dropped: Vec<&Probe> = plan
            .probes
            .iter()
            .filter(|p| plan.users[p.user].dropped)
            .collect();
        assert_eq!(&sample[1], all_dropped[4]);
        assert_eq!(Plan::new(128).unwrap().nc_sample(256).len(), 128);
    }

    #[test]
    fn scenarios_are_valid_toml_with_both_checks() {
        let text = Plan::new(128).unwrap().scenario(1000).unwrap();
        assert!(text.starts_with("# ci/bench: 128 probes = 4 users x 8 addresses"));
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["timeout"].as_str(), Some("1000ms"));
        assert_eq!(value["target"].as_array().unwrap().len(), 2);
        assert_eq!(
            value["target"][1]["address"][0].as_str(),
            Some("2001:db8:200::1")
        );
        let check = &value["check"][0];
        assert_eq!(check["expect"].as_str(), Some("deny"));
        assert_eq!(check["as"].as_array().unwrap().len(), 2);

        let text = mx_scenario(&["d1.bench.test".into()], 1000).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["target"][0]["mx"].as_str(), Some("d1.bench.test"));
        assert_eq!(value["target"][0]["name"].as_str(), Some("d1"));
        assert_eq!(value["check"][1]["as"][0].as_str(), Some("ecb-u02"));
    }
}
