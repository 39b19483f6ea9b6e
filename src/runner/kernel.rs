//! Kernel limits that can turn into outcomes: when the conntrack table is full (or an entry
//! cannot be inserted), the kernel drops the SYN, and a dropped SYN reads as `timeout`,
//! which is a pass of a deny. The runner reads the counters of the namespace the probes run
//! in before and after the workers ([`Counters::read`]); when one moved, every timeout of
//! the run is inconclusive, with the counters named ([`Counters::moved_since`]).
//!
//! Which probe lost its SYN cannot be known, so all timeouts are marked: a sweep retried
//! under the limit proves them, a pass that may be the kernel's never does.

use std::fmt::Write as _;

/// The counters read, summed over CPUs; `None` where the file or the field is absent
/// (no conntrack loaded: nothing of it can drop a SYN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `/proc/net/stat/nf_conntrack` `insert_failed`.
    pub insert_failed: Option<u64>,
    /// `/proc/net/stat/nf_conntrack` `drop`.
    pub drop: Option<u64>,
    /// `/proc/net/stat/nf_conntrack` `early_drop`.
    pub early_drop: Option<u64>,
}

impl Counters {
    /// The counters of the network namespace this thread is in.
    pub fn read() -> Counters {
        let text = std::fs::read_to_string("/proc/net/stat/nf_conntrack").unwrap_or_default();
        Counters::parse_conntrack(&text)
    }

    /// Parses `/proc/net/stat/nf_conntrack`: a header of field names, then one line of hex
    /// values per CPU, summed.
    pub fn parse_conntrack(text: &str) -> Counters {
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Counters::default();
        };
        let names: Vec<&str> = header.split_whitespace().collect();
        let column = |name: &str| names.iter().position(|n| *n == name);
        let rows: Vec<Vec<u64>> = lines
            .map(|l| {
                l.split_whitespace()
                    .map(|v| u64::from_str_radix(v, 16).unwrap_or(0))
                    .collect()
            })
            .collect();
        let sum = |name: &str| {
            let i = column(name)?;
            Some(
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .fold(0u64, |a, &v| a.saturating_add(v)),
            )
        };
        Counters {
            insert_failed: sum("insert_failed"),
            drop: sum("drop"),
            early_drop: sum("early_drop"),
        }
    }

    /// Says which counters grew since `before` ("conntrack drop +12"), or `None`.
    pub fn moved_since(&self, before: &Counters) -> Option<String> {
        let mut moved = String::new();
        for (name, b, a) in [
            ("insert_failed", before.insert_failed, self.insert_failed),
            ("drop", before.drop, self.drop),
            ("early_drop", before.early_drop, self.early_drop),
        ] {
            if let (Some(b), Some(a)) = (b, a) {
                if a > b {
                    if !moved.is_empty() {
                        moved.push_str(", ");
                    }
                    let _ = write!(moved, "conntrack {name} +{}", a - b);
                }
            }
        }
        (!moved.is_empty()).then(|| {
            format!(
                "a kernel limit may have dropped SYNs during the run ({moved} in the probes' \
                 network namespace, /proc/net/stat/nf_conntrack): a timeout proves nothing; \
                 run again with fewer probes or a larger net.netfilter.nf_conntrack_max"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000
00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn counters_are_summed_over_cpus_and_compared() {
        let before = Counters::parse_conntrack(BEFORE);
        assert_eq!(before.insert_failed, Some(1));
        assert_eq!(before.drop, Some(2));
        assert_eq!(before.early_drop, Some(0));
        assert_eq!(before.moved_since(&before), None);
        let after = Counters::parse_conntrack(
            &BEFORE.replace("00000000 00000002 00000000", "0000001a 00000002 00000000"),
        );
        let note = after.moved_since(&before).unwrap();
        assert!(note.contains("conntrack insert_failed +26"), "{note}");
        // No conntrack module: nothing to compare, nothing moved.
        assert_eq!(Counters::parse_conntrack(""), Counters::default());
        assert_eq!(Counters::default().moved_since(&before), None);
    }
}
