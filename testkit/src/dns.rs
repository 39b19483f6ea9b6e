//! DNS faults for the lab's DNS server, as [`DnsLayer`]s: what the zone
//! would answer is replaced by an answer the test chooses.

use std::sync::Arc;
use std::time::Duration;

use egress_check::lab::{DnsAction, DnsLayer, RecordType};

/// SERVFAIL for chosen names and every name under them; the rest is
/// answered from the zone.
#[derive(Debug, Clone)]
pub struct ServFail {
    /// Lower case, no trailing dot.
    names: Vec<String>,
}

impl ServFail {
    /// Fails `names` (e.g. `servfail.test`) and their subdomains.
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> ServFail {
        ServFail {
            names: names
                .into_iter()
                .map(|n| n.as_ref().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.names.iter().any(|n| {
            name == n
                || name
                    .strip_suffix(n.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
    }
}

impl DnsLayer for ServFail {
    fn decide(&self, name: &str, _qtype: RecordType) -> DnsAction {
        if self.covers(name) {
            DnsAction::ServFail
        } else {
            DnsAction::Answer
        }
    }
}

/// Every answer after a fixed delay: a slow nameserver, or a round-trip
/// time added in front of every query (the benchmark's `--dns-rtt`).
#[derive(Debug, Clone, Copy)]
pub struct Delay(pub Duration);

impl DnsLayer for Delay {
    fn decide(&self, _name: &str, _qtype: RecordType) -> DnsAction {
        DnsAction::Delay(self.0)
    }
}

/// Several layers in order: the first that does not say
/// [`DnsAction::Answer`] decides.
#[derive(Clone, Default)]
pub struct Stack(pub Vec<Arc<dyn DnsLayer>>);

impl DnsLayer for Stack {
    fn decide(&self, name: &str, qtype: RecordType) -> DnsAction {
        self.0
            .iter()
            .map(|layer| layer.decide(name, qtype))
            .find(|action| *action != DnsAction::Answer)
            .unwrap_or(DnsAction::Answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servfail_covers_the_names_and_below_only() {
        let layer = ServFail::new(["ServFail.Test."]);
        for name in ["servfail.test", "mx.servfail.test", "a.b.servfail.test"] {
            assert_eq!(
                layer.decide(name, RecordType::MX),
                DnsAction::ServFail,
                "{name}"
            );
        }
        for name in ["xservfail.test", "dual.test", "test", "servfail.test.org"] {
            assert_eq!(
                layer.decide(name, RecordType::A),
                DnsAction::Answer,
                "{name}"
            );
        }
    }

    #[test]
    fn delay_delays_everything_and_stack_takes_the_first_decision() {
        let d = Duration::from_millis(100);
        assert_eq!(
            Delay(d).decide("x.test", RecordType::A),
            DnsAction::Delay(d)
        );
        let stack = Stack(vec![
            Arc::new(ServFail::new(["servfail.test"])),
            Arc::new(Delay(d)),
        ]);
        assert_eq!(
            stack.decide("servfail.test", RecordType::A),
            DnsAction::ServFail
        );
        assert_eq!(
            stack.decide("dual.test", RecordType::A),
            DnsAction::Delay(d)
        );
        assert_eq!(
            Stack::default().decide("dual.test", RecordType::A),
            DnsAction::Answer
        );
    }
}
