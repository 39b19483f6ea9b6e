//! Where names are resolved: every identity resolves its targets from where its probes will
//! run. Login identities share the run's namespace (this thread's, after `--netns`);
//! each `pid:`/`unit:` identity ([`crate::service`]) resolves in its process's network
//! namespace, with its resolv.conf, by the same resolver process
//! ([`crate::dns_process::resolve_groups`]), started from a thread of its own that entered
//! that namespace: `setns` moves only the calling thread, and a child process starts in the
//! namespace of the thread that forks it. The interfaces that say
//! what "this host" is are read in that namespace too.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::address::{HostInterfaces, InterfacesError};
use crate::plan::{self, Assignment, Destination, NameserverChoice, PlannedProbe};
use crate::resolve::{self, expand, Resolutions};
use crate::service::ServiceIdentity;

/// Why names could not be resolved in a process's namespace.
#[derive(Debug, thiserror::Error)]
pub enum VantageError {
    /// `setns` failed.
    #[error("cannot enter the network namespace of `{key}`: {errno}")]
    Enter {
        /// The identity.
        key: String,
        /// The OS error.
        errno: nix::errno::Errno,
    },
    /// Its interfaces could not be listed.
    #[error("cannot list the interfaces of the network namespace of `{key}`: {error}")]
    Interfaces {
        /// The identity.
        key: String,
        /// The error.
        error: InterfacesError,
    },
    /// No runtime for its resolver.
    #[error("cannot start a resolver in the network namespace of `{key}`: {error}")]
    Runtime {
        /// The identity.
        key: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The resolving thread ended without an answer.
    #[error("the resolver thread for `{key}` ended without an answer")]
    Lost {
        /// The identity.
        key: String,
    },
}

/// The assignments of one vantage point, by index into the run's assignments.
struct Group {
    service: Option<Arc<ServiceIdentity>>,
    assignments: Vec<Assignment>,
}

fn groups(assignments: &[Assignment]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for a in assignments {
        let key = a.service.as_ref().map(|s| s.key.as_str());
        match out
            .iter_mut()
            .find(|g| g.service.as_ref().map(|s| s.key.as_str()) == key)
        {
            Some(group) => group.assignments.push(a.clone()),
            None => out.push(Group {
                service: a.service.clone(),
                assignments: vec![a.clone()],
            }),
        }
    }
    out
}

/// Resolves in `netns` on a thread of its own; the answer arrives on the returned channel.
fn resolve_in(
    key: String,
    netns: Arc<File>,
    lookups: Vec<(plan::NameserverSource, Vec<crate::scenario::TargetKind>)>,
) -> oneshot::Receiver<Result<(Resolutions, HostInterfaces), VantageError>> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let work = || {
            nix::sched::setns(&*netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
                VantageError::Enter {
                    key: key.clone(),
                    errno,
                }
            })?;
            let host = HostInterfaces::current().map_err(|error| VantageError::Interfaces {
                key: key.clone(),
                error,
            })?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| VantageError::Runtime {
                    key: key.clone(),
                    error,
                })?;
            Ok((
                runtime.block_on(crate::dns_process::resolve_groups(lookups)),
                host,
            ))
        };
        let _ = tx.send(work());
    });
    rx
}

/// Resolves every assignment's targets from its vantage point and expands them into the
/// run's probes. `choice` and `host` are the run's own (login identities).
pub async fn resolve_and_expand(
    assignments: &[Assignment],
    choice: &NameserverChoice,
    host: &HostInterfaces,
) -> Vec<PlannedProbe> {
    let groups = groups(assignments);
    let mut pending = Vec::new();
    for group in &groups {
        let future = async {
            match &group.service {
                None => {
                    let lookups = plan::lookups(&group.assignments, choice);
                    let resolutions = crate::dns_process::resolve_groups(lookups).await;
                    (choice.clone(), Ok((resolutions, host.clone())))
                }
                Some(service) => {
                    // Its resolv.conf, unless --nameserver (or the scenario's) overrides.
                    let choice = NameserverChoice {
                        server: choice.server,
                        netns_resolv_conf: service.resolv_conf.clone(),
                    };
                    let lookups = plan::lookups(&group.assignments, &choice);
                    let answer = match &service.netns_file {
                        Some(netns) => resolve_in(service.key.clone(), Arc::clone(netns), lookups)
                            .await
                            .unwrap_or_else(|_| {
                                Err(VantageError::Lost {
                                    key: service.key.clone(),
                                })
                            }),
                        None => Err(VantageError::Lost {
                            key: service.key.clone(),
                        }),
                    };
                    (choice, answer)
                }
            }
        };
        pending.push(future);
    }
    let answers = futures::future::join_all(pending).await;
    let mut probes = Vec::new();
    for (group, (choice, answer)) in groups.iter().zip(answers) {
        match answer {
            Ok((resolutions, host)) => {
                let mut expanded = expand(&group.assignments, &host, |a| {
                    resolutions[&(choice.source_for(a), a.target.kind.clone())].clone()
                });
                if let Some(service) = &group.service {
                    deny_restricted_families(&mut expanded, service);
                }
                if probes.is_empty() {
                    // Moved, not copied: a sweep's 131,070 planned probes (30 MB) are not
                    // held twice while they are appended.
                    probes = expanded;
                } else {
                    probes.extend(expanded);
                }
            }
            Err(error) => {
                // Nothing is known about that namespace: no probe of the group is made.
                let empty = HostInterfaces::new(Vec::new());
                let why = format!("{error}; not probed");
                probes.extend(
                    expand(&group.assignments, &empty, |a| {
                        resolve::without_resolver(&a.target.kind, &why)
                    })
                    .into_iter()
                    .map(|mut p| {
                        p.destination = Destination::None(why.clone());
                        p
                    }),
                );
            }
        }
    }
    probes
}

/// A unit whose `RestrictAddressFamilies=` lacks a family cannot open such sockets at all:
/// its seccomp filter fails `socket(2)` before any firewall rule is consulted. The worker runs
/// without that filter, so connecting would report the firewall for a socket the service can
/// never have; such probes are not made, and say why (inconclusive: the filter itself is
/// systemd's configuration, not something this run observed).
fn deny_restricted_families(probes: &mut [PlannedProbe], service: &ServiceIdentity) {
    let families: HashMap<_, _> = service.families_denied.iter().map(|f| (*f, ())).collect();
    for p in probes {
        if families.contains_key(&p.spec.family) {
            p.destination = Destination::None(format!(
                "the service cannot open {} sockets at all: `{}` has RestrictAddressFamilies= without {}, \
                 a deny systemd's seccomp filter enforces before the firewall; not probed",
                p.spec.family,
                service.unit.as_deref().unwrap_or(&service.key),
                match p.spec.family {
                    crate::vocab::Family::Ipv4 => "AF_INET",
                    crate::vocab::Family::Ipv6 => "AF_INET6",
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Endpoint, ProbeSpec};
    use crate::service::procfs::Credentials;
    use crate::service::NetnsInfo;
    use crate::vocab::{Expectation, Family};
    use std::time::Duration;

    fn unit_without_ipv6() -> ServiceIdentity {
        ServiceIdentity {
            key: "unit:php.service".into(),
            unit: Some("php.service".into()),
            pid: 812,
            start_time: 1,
            comm: "php-fpm".into(),
            credentials: Credentials {
                uids: [33; 3],
                gids: [33; 3],
                groups: vec![],
            },
            user_name: Some("www-data".into()),
            login: None,
            cgroup: Some("/system.slice/php.service".into()),
            netns: NetnsInfo {
                inode: 1,
                foreign: false,
            },
            families_denied: vec![Family::Ipv6],
            not_reproduced: vec![],
            resolv_conf: None,
            netns_file: None,
        }
    }

    fn probe(family: Family, ip: &str) -> PlannedProbe {
        PlannedProbe {
            spec: ProbeSpec {
                user: "unit:php.service".into(),
                uid: 33,
                target: "t".into(),
                domain: None,
                exchange: None,
                preference: None,
                family,
                port: 25,
                expect: Expectation::Deny,
            },
            timeout: Duration::from_secs(1),
            destination: Destination::Address(Endpoint::new(ip.parse().unwrap())),
            note: None,
        }
    }

    #[test]
    fn a_family_the_unit_cannot_open_is_not_probed_and_says_why() {
        let mut probes = vec![
            probe(Family::Ipv4, "203.0.113.10"),
            probe(Family::Ipv6, "2001:db8::10"),
        ];
        deny_restricted_families(&mut probes, &unit_without_ipv6());
        assert!(probes[0].connect_to().is_some());
        let Destination::None(why) = &probes[1].destination else {
            panic!("{:?}", probes[1].destination)
        };
        assert!(why.contains("cannot open IPv6 sockets at all"), "{why}");
        assert!(
            why.contains("AF_INET6") && why.contains("php.service"),
            "{why}"
        );
    }

    #[test]
    fn a_lost_namespace_probes_nothing() {
        // No namespace file: nothing is known about where the probes would run.
        let mut a = crate::plan::tests::assignment(
            crate::scenario::TargetKind::Host("h.test".into()),
            vec![Family::Ipv4],
            vec![25],
        );
        a.service = Some(Arc::new(unit_without_ipv6()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let probes = runtime.block_on(resolve_and_expand(
            &[a],
            &NameserverChoice::default(),
            &HostInterfaces::new(Vec::new()),
        ));
        assert_eq!(probes.len(), 1);
        assert!(probes[0].connect_to().is_none(), "{probes:?}");
    }
}
