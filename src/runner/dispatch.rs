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

/// `id_of` for a planned probe without a destination.
const NO_ID: usize = usize::MAX;

/// The work of a run, by user, and how results map back onto planned probes.
///
/// Compact on purpose: a sweep has 131,070 planned probes, and this is held while the
/// workers run. Per probe it keeps one request and one id (no per-probe list of the probes
/// an attempt answers, no hash table).
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Per user (login name), the attempts its worker makes; ids are `0..attempts()`.
    pub requests: BTreeMap<String, Vec<WorkerProbe>>,
    /// For each planned probe, the id of the request that answers it ([`NO_ID`] without a
    /// destination).
    id_of: Vec<usize>,
    /// How many requests (distinct attempts).
    attempts: usize,
}

/// What makes two planned probes one attempt: the same user, destination and timeout.
fn attempt_key(p: &PlannedProbe) -> Option<(&str, SocketAddr, u64)> {
    let addr = p.connect_to()?;
    let timeout_ms = u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX);
    Some((p.spec.user.as_ref(), addr, timeout_ms))
}

/// The workers' results by request id, as they arrive, kept compact: 16 bytes per attempt
/// (an [`Attempt`] is 80, plus its detail text) and each distinct detail once. A sweep's
/// 131,070 results are held while its workers run, when the run's memory peaks; the
/// details are mostly the same few texts ("no answer within 1s").
#[derive(Debug, Clone, Default)]
pub struct Results {
    slots: Vec<Slot>,
    /// Distinct details; `Slot::detail` is an index + 1 (0: none).
    details: Vec<String>,
    detail_ids: HashMap<String, u32>,
    /// Local addresses (asked only by `--explain`), by id.
    locals: HashMap<usize, SocketAddr>,
}

/// One result: its observed outcome (0: none yet, else [`OBSERVED`] index + 1), how long it
/// took and its detail.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    elapsed_ns: u64,
    detail: u32,
    observed: u8,
}

/// Every outcome, in the order [`Slot::observed`] counts them.
const OBSERVED: [Observed; 6] = [
    Observed::Connected,
    Observed::Refused,
    Observed::Unreachable,
    Observed::Timeout,
    Observed::Error,
    Observed::NoAddress,
];

impl Results {
    /// Room for `attempts` results, none reported yet.
    pub fn new(attempts: usize) -> Results {
        Results {
            slots: vec![Slot::default(); attempts],
            ..Results::default()
        }
    }

    /// Keeps `attempt` as the result of request `id`; an unknown id is ignored.
    pub fn record(&mut self, id: usize, attempt: Attempt) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        let Some(observed) = OBSERVED.iter().position(|&o| o == attempt.observed) else {
            return;
        };
        let detail = match attempt.detail {
            None => 0,
            Some(text) => match self.detail_ids.get(&text) {
                Some(&index) => index,
                None => match u32::try_from(self.details.len() + 1) {
                    Ok(index) => {
                        self.details.push(text.clone());
                        self.detail_ids.insert(text, index);
                        index
                    }
                    // More distinct details than a u32 counts cannot come from one run's
                    // memory; refuse rather than mislabel.
                    Err(_) => return,
                },
            },
        };
        *slot = Slot {
            elapsed_ns: u64::try_from(attempt.elapsed.as_nanos()).unwrap_or(u64::MAX),
            detail,
            observed: u8::try_from(observed + 1).unwrap_or(0),
        };
        match attempt.local {
            Some(local) => self.locals.insert(id, local),
            None => self.locals.remove(&id),
        };
    }

    /// The result of request `id`, if it reported.
    pub fn get(&self, id: usize) -> Option<Attempt> {
        let slot = self.slots.get(id)?;
        let observed = *OBSERVED.get(usize::from(slot.observed).checked_sub(1)?)?;
        Some(Attempt {
            observed,
            elapsed: Duration::from_nanos(slot.elapsed_ns),
            detail: usize::try_from(slot.detail)
                .ok()
                .and_then(|d| d.checked_sub(1))
                .and_then(|d| self.details.get(d))
                .cloned(),
            local: self.locals.get(&id).copied(),
        })
    }
}

impl From<Vec<Option<Attempt>>> for Results {
    /// `results[id]`, as [`Results::record`] would have kept them.
    fn from(results: Vec<Option<Attempt>>) -> Results {
        let mut kept = Results::new(results.len());
        for (id, result) in results.into_iter().enumerate() {
            if let Some(attempt) = result {
                kept.record(id, attempt);
            }
        }
        kept
    }
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
        let mut attempts = 0;
        for (index, p) in probes.iter().enumerate() {
            let Some((_, addr, timeout_ms)) = attempt_key(p) else {
                id_of[index] = NO_ID;
                continue;
            };
            let head = id_of[index];
            if head == index {
                let id = attempts;
                attempts += 1;
                requests
                    .entry(p.spec.user.to_string())
                    .or_default()
                    .push(WorkerProbe {
                        id,
                        addr,
                        timeout_ms,
                    });
                id_of[index] = id;
            } else {
                id_of[index] = id_of[head];
            }
        }
        Dispatch {
            requests,
            id_of,
            attempts,
        }
    }

    /// Number of distinct attempts (request ids).
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// One attempt per planned probe, in the probes' order: the worker's result where there
    /// is one (`results[id]`), `no-address` with its reason for probes without a
    /// destination, and `error` with `missing(probe)` as the detail for attempts that never
    /// reported (interrupted, or the worker failed): never a pass that was not observed.
    pub fn fan_out(
        &self,
        probes: &[PlannedProbe],
        results: impl Into<Results>,
        missing: impl Fn(&PlannedProbe) -> String,
    ) -> Vec<Attempt> {
        let results = results.into();
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
                results.get(id).unwrap_or_else(|| Attempt {
                    observed: Observed::Error,
                    elapsed: Duration::ZERO,
                    detail: Some(missing(p)),
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
    fn results_are_kept_exactly_and_details_once() {
        let mut results = Results::new(4);
        let timeout = |ms: u64| Attempt {
            observed: Observed::Timeout,
            elapsed: Duration::from_nanos(ms * 1_000_000 + 7),
            detail: Some("no answer within 1s".into()),
            local: None,
        };
        results.record(0, timeout(1000));
        results.record(2, timeout(1001));
        let local = Attempt {
            observed: Observed::Connected,
            elapsed: Duration::from_micros(250),
            detail: None,
            local: Some("192.0.2.2:40000".parse().unwrap()),
        };
        results.record(3, local.clone());
        results.record(9, timeout(5));
        assert_eq!(results.details.len(), 1);
        assert_eq!(results.get(0), Some(timeout(1000)));
        assert_eq!(results.get(1), None);
        assert_eq!(results.get(2), Some(timeout(1001)));
        assert_eq!(results.get(3), Some(local));
        assert_eq!(results.get(9), None);
        for observed in OBSERVED {
            let mut one = Results::new(1);
            one.record(0, attempt(observed));
            assert_eq!(one.get(0), Some(attempt(observed)));
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
