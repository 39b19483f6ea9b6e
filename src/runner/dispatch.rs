//! From planned probes to worker requests, and from worker results back to planned probes.
//!
//! Each user's distinct (address, port, timeout) is tried once by that user's worker, and
//! its outcome fans out to every planned probe that asked for it (two checks of one user
//! towards the same MX host must not race each other on the firewall). Pure functions: no
//! process, socket or clock.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use crate::plan::{Destination, PlannedProbe};
use crate::probe::{Attempt, Observed};
use crate::worker::WorkerProbe;

/// The work of a run, by user, and how results map back onto planned probes.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Per user (login name), the attempts its worker makes; ids index `fan_out`.
    pub requests: BTreeMap<String, Vec<WorkerProbe>>,
    /// For each request id, the indices of the planned probes it answers.
    fan_out: Vec<Vec<usize>>,
}

impl Dispatch {
    /// Groups `probes` into one request list per user, each distinct attempt once.
    pub fn new(probes: &[PlannedProbe]) -> Dispatch {
        let mut requests: BTreeMap<String, Vec<WorkerProbe>> = BTreeMap::new();
        let mut ids: HashMap<(&str, SocketAddr, u64), usize> = HashMap::new();
        let mut fan_out: Vec<Vec<usize>> = Vec::new();
        for (index, p) in probes.iter().enumerate() {
            let Some(addr) = p.connect_to() else { continue };
            let timeout_ms = u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX);
            let id = *ids
                .entry((&p.spec.user, addr, timeout_ms))
                .or_insert_with(|| {
                    let id = fan_out.len();
                    fan_out.push(Vec::new());
                    requests
                        .entry(p.spec.user.clone())
                        .or_default()
                        .push(WorkerProbe {
                            id,
                            addr,
                            timeout_ms,
                        });
                    id
                });
            fan_out[id].push(index);
        }
        Dispatch { requests, fan_out }
    }

    /// Number of distinct attempts (request ids).
    pub fn attempts(&self) -> usize {
        self.fan_out.len()
    }

    /// One attempt per planned probe, in the probes' order: the worker's result where there
    /// is one (`results[id]`), `no-address` with its reason for probes without a
    /// destination, and `error` with `missing(probe)` as the detail for attempts that never
    /// reported (interrupted, or the worker failed): never a pass that was not observed.
    pub fn fan_out(
        &self,
        probes: &[PlannedProbe],
        results: Vec<Option<Attempt>>,
        missing: impl Fn(&PlannedProbe) -> String,
    ) -> Vec<Attempt> {
        let mut attempts: Vec<Option<Attempt>> = probes
            .iter()
            .map(|p| match &p.destination {
                Destination::None(why) => Some(Attempt {
                    observed: Observed::NoAddress,
                    elapsed: Duration::ZERO,
                    detail: Some(why.clone()),
                    local: None,
                }),
                Destination::Address(_) => None,
            })
            .collect();
        for (id, result) in results.into_iter().enumerate() {
            // Moved to the last probe it answers, cloned for the others: a sweep's 131,070
            // results are not held twice.
            if let Some((&last, others)) = self.fan_out.get(id).and_then(|f| f.split_last()) {
                for &index in others {
                    attempts[index] = result.clone();
                }
                attempts[last] = result;
            }
        }
        attempts
            .into_iter()
            .zip(probes)
            .map(|(attempt, probe)| {
                attempt.unwrap_or_else(|| Attempt {
                    observed: Observed::Error,
                    elapsed: Duration::ZERO,
                    detail: Some(missing(probe)),
                    local: None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Scope;
    use crate::plan::{Endpoint, ProbeSpec};
    use crate::vocab::{Expectation, Family};
    use std::net::IpAddr;

    fn probe(user: &str, destination: Destination, port: u16, target: &str) -> PlannedProbe {
        PlannedProbe {
            spec: ProbeSpec {
                user: user.into(),
                uid: 1000,
                target: target.into(),
                domain: None,
                exchange: Some("mx.d.test".into()),
                preference: Some(10),
                family: Family::Ipv4,
                port,
                expect: Expectation::Deny,
            },
            timeout: Duration::from_secs(1),
            destination,
            note: None,
        }
    }

    fn addr(text: &str) -> Destination {
        Destination::Address(Endpoint::new(text.parse::<IpAddr>().unwrap()))
    }

    fn attempt(observed: Observed) -> Attempt {
        Attempt {
            observed,
            elapsed: Duration::from_millis(5),
            detail: None,
            local: None,
        }
    }

    #[test]
    fn same_user_and_endpoint_is_tried_once_and_fans_out() {
        let probes = vec![
            probe("a", addr("203.0.113.10"), 25, "t1"),
            probe("a", addr("203.0.113.10"), 25, "t2"),
            probe("b", addr("203.0.113.10"), 25, "t1"),
            probe("a", addr("203.0.113.10"), 587, "t1"),
            probe("a", Destination::None("no AAAA".into()), 25, "t1"),
        ];
        let d = Dispatch::new(&probes);
        assert_eq!(d.attempts(), 3);
        assert_eq!(d.requests["a"].len(), 2);
        assert_eq!(d.requests["b"].len(), 1);
        let a25 = d.requests["a"]
            .iter()
            .find(|w| w.addr.port() == 25)
            .unwrap()
            .id;
        let mut results = vec![None; d.attempts()];
        results[a25] = Some(attempt(Observed::Connected));
        let attempts = d.fan_out(&probes, results, |_| "interrupted".into());
        assert_eq!(attempts.len(), probes.len());
        assert_eq!(attempts[0].observed, Observed::Connected);
        assert_eq!(attempts[1].observed, Observed::Connected);
        // b and port 587 never reported: error with the reason, never a pass.
        assert_eq!(attempts[2].observed, Observed::Error);
        assert_eq!(attempts[2].detail.as_deref(), Some("interrupted"));
        assert_eq!(attempts[3].observed, Observed::Error);
        assert_eq!(attempts[4].observed, Observed::NoAddress);
        assert_eq!(attempts[4].detail.as_deref(), Some("no AAAA"));
    }

    #[test]
    fn a_link_local_destination_reaches_the_worker_with_its_interface() {
        let mut endpoint = Endpoint::new("fe80::2".parse().unwrap());
        endpoint.scope = Some(Scope {
            interface: "eth0".into(),
            index: 7,
        });
        let probes = vec![
            probe("a", Destination::Address(endpoint), 25, "t"),
            probe("a", addr("fe80::2"), 25, "t"),
        ];
        let d = Dispatch::new(&probes);
        // Same address on another (or no) interface is another destination.
        assert_eq!(d.attempts(), 2);
        let sent = &d.requests["a"][0];
        // The request travels to the worker as JSON: the scope must survive it.
        let json = serde_json::to_string(sent).unwrap();
        let back: WorkerProbe = serde_json::from_str(&json).unwrap();
        let std::net::SocketAddr::V6(v6) = back.addr else {
            panic!("{json}")
        };
        assert_eq!(v6.scope_id(), 7, "{json}");
    }

    #[test]
    fn different_timeouts_are_different_attempts() {
        let mut slow = probe("a", addr("2001:db8::10"), 25, "t");
        slow.timeout = Duration::from_secs(5);
        let probes = vec![probe("a", addr("2001:db8::10"), 25, "t"), slow];
        assert_eq!(Dispatch::new(&probes).attempts(), 2);
    }

    #[test]
    fn results_with_unknown_ids_are_ignored() {
        let probes = vec![probe("a", addr("203.0.113.10"), 25, "t")];
        let d = Dispatch::new(&probes);
        let attempts = d.fan_out(
            &probes,
            vec![
                Some(attempt(Observed::Timeout)),
                Some(attempt(Observed::Connected)),
            ],
            |_| "x".into(),
        );
        assert_eq!(attempts[0].observed, Observed::Timeout);
    }
}
