//! From planned probes to worker requests, and from worker results back to planned probes.
//!
//! Each user's distinct (address, port, timeout) is tried once by that user's worker, and
//! its outcome fans out to every planned probe that asked for it (two checks of one user
//! towards the same MX host must not race each other on the firewall). Pure functions: no
//! process, socket or clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::plan::{Destination, PlannedProbe};
use crate::probe::{Attempt, Observed};
use crate::worker::WorkerProbe;

/// `id_of` for a planned probe without a destination.
const NO_ID: usize = usize::MAX;

/// The work of a run, by user, and how results map back onto planned probes.
///
/// Compact on purpose: a sweep has 131,070 planned probes, and this is held while the
/// workers run. Per probe it keeps one request and one id (no per-probe list of the probes
/// an attempt answers, no hash table).
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Per user (login name), the attempts its worker makes; ids index `shared`.
    pub requests: BTreeMap<String, Vec<WorkerProbe>>,
    /// For each planned probe, the id of the request that answers it ([`NO_ID`] without a
    /// destination).
    id_of: Vec<usize>,
    /// For each request id, whether more than one planned probe shares it (its result is
    /// then cloned for each, else moved).
    shared: Vec<bool>,
}

/// What makes two planned probes one attempt: the same user, destination and timeout.
fn attempt_key(p: &PlannedProbe) -> Option<(&str, SocketAddr, u64)> {
    let addr = p.connect_to()?;
    let timeout_ms = u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX);
    Some((p.spec.user.as_str(), addr, timeout_ms))
}

impl Dispatch {
    /// Groups `probes` into one request list per user, each distinct attempt once, ids in
    /// the order of the probes that first ask for them.
    pub fn new(probes: &[PlannedProbe]) -> Dispatch {
        // Equal attempts found by sorting indices, not by a hash table keyed by attempt
        // (17 MB at 131,070 probes): `first[i]` is the smallest index of a probe that makes
        // the same attempt as probe `i`.
        let mut order: Vec<usize> = (0..probes.len())
            .filter(|&i| probes[i].connect_to().is_some())
            .collect();
        order.sort_unstable_by(|&a, &b| {
            attempt_key(&probes[a])
                .cmp(&attempt_key(&probes[b]))
                .then(a.cmp(&b))
        });
        let mut first: Vec<usize> = (0..probes.len()).collect();
        for group in order.chunk_by(|&a, &b| attempt_key(&probes[a]) == attempt_key(&probes[b])) {
            if let Some((&head, rest)) = group.split_first() {
                for &i in rest {
                    first[i] = head;
                }
            }
        }
        drop(order);
        // In probe order, `first` becomes `id_of` in place: a probe that comes first gets a
        // new id; any other one takes the id its first probe got (an earlier index, so
        // already assigned).
        let mut id_of = first;
        let mut requests: BTreeMap<String, Vec<WorkerProbe>> = BTreeMap::new();
        let mut shared: Vec<bool> = Vec::new();
        for (index, p) in probes.iter().enumerate() {
            let Some((_, addr, timeout_ms)) = attempt_key(p) else {
                id_of[index] = NO_ID;
                continue;
            };
            let head = id_of[index];
            if head == index {
                let id = shared.len();
                shared.push(false);
                requests
                    .entry(p.spec.user.clone())
                    .or_default()
                    .push(WorkerProbe {
                        id,
                        addr,
                        timeout_ms,
                    });
                id_of[index] = id;
            } else {
                let id = id_of[head];
                shared[id] = true;
                id_of[index] = id;
            }
        }
        Dispatch {
            requests,
            id_of,
            shared,
        }
    }

    /// Number of distinct attempts (request ids).
    pub fn attempts(&self) -> usize {
        self.shared.len()
    }

    /// One attempt per planned probe, in the probes' order: the worker's result where there
    /// is one (`results[id]`), `no-address` with its reason for probes without a
    /// destination, and `error` with `missing(probe)` as the detail for attempts that never
    /// reported (interrupted, or the worker failed): never a pass that was not observed.
    pub fn fan_out(
        &self,
        probes: &[PlannedProbe],
        mut results: Vec<Option<Attempt>>,
        missing: impl Fn(&PlannedProbe) -> String,
    ) -> Vec<Attempt> {
        let unanswered = |probe: &PlannedProbe| Attempt {
            observed: Observed::Error,
            elapsed: Duration::ZERO,
            detail: Some(missing(probe)),
            local: None,
        };
        let one_to_one = self.id_of.len() == probes.len()
            && results.len() == probes.len()
            && self.id_of.iter().enumerate().all(|(i, &id)| i == id);
        if one_to_one {
            // The usual case (every probe its own attempt, ids in probe order): the results
            // become the attempts in place, so a sweep's 131,070 are not held twice.
            return results
                .into_iter()
                .enumerate()
                .map(|(i, result)| result.unwrap_or_else(|| unanswered(&probes[i])))
                .collect();
        }
        probes
            .iter()
            .enumerate()
            .map(|(index, p)| {
                if let Destination::None(why) = &p.destination {
                    return Attempt {
                        observed: Observed::NoAddress,
                        elapsed: Duration::ZERO,
                        detail: Some(why.clone()),
                        local: None,
                    };
                }
                let id = self.id_of.get(index).copied().unwrap_or(NO_ID);
                let result = match (self.shared.get(id), results.get_mut(id)) {
                    // Moved to a probe that is the only one asking, cloned for shared ones.
                    (Some(false), Some(slot)) => slot.take(),
                    (Some(true), Some(slot)) => slot.clone(),
                    _ => None,
                };
                result.unwrap_or_else(|| unanswered(p))
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

    proptest::proptest! {
        /// Against the obvious model: each distinct (user, destination, timeout) asked
        /// exactly once, and every probe gets exactly its attempt's result.
        #[test]
        fn every_attempt_is_asked_once_and_answers_all_its_probes(
            raw in proptest::collection::vec((0u8..3, 0u8..4, 0u16..3, 0u8..2, 0u8..2), 0..40),
            answered in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let probes: Vec<PlannedProbe> = raw
                .iter()
                .map(|&(user, host, port, slow, none)| {
                    let destination = if none == 1 && host == 0 {
                        Destination::None("no AAAA".into())
                    } else {
                        addr(&format!("203.0.113.{host}"))
                    };
                    let mut p = probe(&format!("u{user}"), destination, 25 + port, "t");
                    p.timeout = Duration::from_secs(1 + u64::from(slow));
                    p
                })
                .collect();
            let d = Dispatch::new(&probes);
            let keys: std::collections::BTreeSet<_> = probes.iter().filter_map(attempt_key).collect();
            proptest::prop_assert_eq!(d.attempts(), keys.len());
            let mut asked: Vec<usize> = d.requests.values().flatten().map(|w| w.id).collect();
            asked.sort_unstable();
            proptest::prop_assert_eq!(asked, (0..keys.len()).collect::<Vec<_>>());
            // Each result names its request by its elapsed time.
            let mut results = vec![None; d.attempts()];
            let mut by_key = std::collections::HashMap::new();
            for (user, list) in &d.requests {
                for w in list {
                    if answered[w.id % answered.len()] {
                        let mut a = attempt(Observed::Timeout);
                        a.elapsed = Duration::from_millis(w.id as u64);
                        results[w.id] = Some(a);
                    }
                    by_key.insert((user.as_str(), w.addr, w.timeout_ms), w.id);
                }
            }
            let attempts = d.fan_out(&probes, results, |_| "missing".into());
            proptest::prop_assert_eq!(attempts.len(), probes.len());
            for (p, a) in probes.iter().zip(&attempts) {
                match attempt_key(p) {
                    None => proptest::prop_assert_eq!(a.observed, Observed::NoAddress),
                    Some(key) => {
                        let id = by_key[&key];
                        if answered[id % answered.len()] {
                            proptest::prop_assert_eq!(a.elapsed, Duration::from_millis(id as u64));
                        } else {
                            proptest::prop_assert_eq!(a.observed, Observed::Error);
                        }
                    }
                }
            }
        }
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
