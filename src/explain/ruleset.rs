//! What the trace's table, chain and handle numbers mean: the ruleset as `nft` lists it.
//!
//! Structure (chains' hooks and policies, which chains are base chains) comes from
//! `nft -j -a list ruleset`, whose JSON is stable. The rule's text comes from
//! `nft -a list ruleset`: the JSON form of a rule is a tree of expressions, and the admin
//! wrote, and will search for, the text. Both are keyed by (family, table, chain, handle).

use std::collections::HashMap;

use serde_json::Value;

/// Key of a chain: (family, table, chain), as nft names them (`ip`, `filter`, `OUTPUT`).
pub type ChainKey = (String, String, String);

/// A chain of the ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// The hook of a base chain (`output`, `input`, `prerouting`, ...); `None` otherwise.
    pub hook: Option<String>,
    /// The policy of a base chain (`accept`, `drop`).
    pub policy: Option<String>,
    /// The priority of a base chain.
    pub prio: Option<i64>,
}

/// The ruleset: chains, and the text of each rule by handle.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    /// Every chain.
    pub chains: HashMap<ChainKey, Chain>,
    /// Rule text by (chain, handle), as `nft -a list ruleset` prints it, counters elided.
    pub rules: HashMap<(ChainKey, u64), String>,
    /// Handles of each chain's rules, in the chain's order.
    pub order: HashMap<ChainKey, Vec<u64>>,
    /// The `iptables-save` form of rules that iptables-nft made, by (chain, handle).
    pub iptables: HashMap<(ChainKey, u64), String>,
}

/// The `nft` name of a netfilter family number (`nfgen_family`).
pub fn family_name(family: u8) -> String {
    match family {
        1 => "inet".into(),
        2 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        10 => "ip6".into(),
        other => format!("family{other}"),
    }
}

impl Ruleset {
    /// Reads the JSON listing (`nft -j -a list ruleset`) and the text listing
    /// (`nft -a list ruleset`).
    pub fn parse(json: &str, text: &str) -> Result<Ruleset, serde_json::Error> {
        let value: Value = serde_json::from_str(json)?;
        let mut ruleset = Ruleset::default();
        let items = value
            .get("nftables")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for item in items {
            let Some(chain) = item.get("chain") else {
                continue;
            };
            let field = |name: &str| chain.get(name).and_then(Value::as_str).map(str::to_owned);
            let (Some(family), Some(table), Some(name)) =
                (field("family"), field("table"), field("name"))
            else {
                continue;
            };
            ruleset.chains.insert(
                (family, table, name),
                Chain {
                    hook: field("hook"),
                    policy: field("policy"),
                    prio: chain.get("prio").and_then(Value::as_i64),
                },
            );
        }
        (ruleset.rules, ruleset.order) = rule_texts(text);
        Ok(ruleset)
    }

    /// Adds the `iptables-save` form of the rules of `family` (`ip` or `ip6`) from the output
    /// of `iptables-nft-save`/`ip6tables-nft-save`. A chain's `-A` lines are matched to its
    /// rules by position, and only when both have the same number of rules (the same chain,
    /// read moments apart): otherwise nothing is added rather than a wrong line.
    pub fn add_iptables_save(&mut self, family: &str, save: &str) {
        let mut table = String::new();
        let mut lines: HashMap<ChainKey, Vec<String>> = HashMap::new();
        for line in save.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = name.trim().to_owned();
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let chain = rest.split_whitespace().next().unwrap_or_default();
                lines
                    .entry((family.to_owned(), table.clone(), chain.to_owned()))
                    .or_default()
                    .push(line.trim_end().to_owned());
            }
        }
        for (key, save_lines) in lines {
            let Some(handles) = self.order.get(&key) else {
                continue;
            };
            if handles.len() != save_lines.len() {
                continue;
            }
            for (handle, line) in handles.iter().zip(save_lines) {
                self.iptables.insert((key.clone(), *handle), line);
            }
        }
    }

    /// The `iptables-save` form of a rule, if known.
    pub fn iptables_form(
        &self,
        family: &str,
        table: &str,
        chain: &str,
        handle: u64,
    ) -> Option<&str> {
        self.iptables
            .get(&((family.into(), table.into(), chain.into()), handle))
            .map(String::as_str)
    }

    /// The text of a rule, if listed.
    pub fn rule(&self, family: &str, table: &str, chain: &str, handle: u64) -> Option<&str> {
        self.rules
            .get(&((family.into(), table.into(), chain.into()), handle))
            .map(String::as_str)
    }

    /// A chain, if listed.
    pub fn chain(&self, family: &str, table: &str, chain: &str) -> Option<&Chain> {
        self.chains
            .get(&(family.to_owned(), table.to_owned(), chain.to_owned()))
    }
}

/// Rule lines of `nft -a list ruleset`: inside `table F T {` and `chain C {`, each line
/// that ends in `# handle N`.
#[allow(clippy::type_complexity)]
fn rule_texts(
    text: &str,
) -> (
    HashMap<(ChainKey, u64), String>,
    HashMap<ChainKey, Vec<u64>>,
) {
    let mut rules = HashMap::new();
    let mut order: HashMap<ChainKey, Vec<u64>> = HashMap::new();
    let mut table: Option<(String, String)> = None;
    let mut chain: Option<String> = None;
    let mut depth = 0usize;
    for line in text.lines() {
        let trimmed = line.trim();
        let code = strip_handle(trimmed).0;
        let opens = braces(code, '{');
        let closes = braces(code, '}');
        if depth == 0 {
            if let Some(rest) = trimmed.strip_prefix("table ") {
                let mut words = rest.split_whitespace();
                if let (Some(f), Some(t)) = (words.next(), words.next()) {
                    table = Some((f.to_owned(), t.to_owned()));
                }
            }
        } else if depth == 1 {
            chain = trimmed
                .strip_prefix("chain ")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
        } else if depth == 2 {
            if let (Some((family, tname)), Some(cname), (code, Some(handle))) =
                (&table, &chain, strip_handle(trimmed))
            {
                if opens == closes {
                    let key = (family.clone(), tname.clone(), cname.clone());
                    order.entry(key.clone()).or_default().push(handle);
                    rules.insert((key, handle), elide_counters(code));
                }
            }
        }
        depth = (depth + opens).saturating_sub(closes);
        if depth < 2 && closes > opens {
            chain = None;
        }
    }
    (rules, order)
}

/// Splits `... # handle N` into the code and N.
fn strip_handle(line: &str) -> (&str, Option<u64>) {
    match line.rsplit_once(" # handle ") {
        Some((code, handle)) => match handle.trim().parse() {
            Ok(n) => (code.trim_end(), Some(n)),
            Err(_) => (line, None),
        },
        None => match line.strip_prefix("# handle ") {
            Some(_) => ("", None),
            None => (line, None),
        },
    }
}

/// Counts `brace` outside double-quoted strings (comments may hold braces).
fn braces(code: &str, brace: char) -> usize {
    let mut quoted = false;
    code.chars()
        .filter(|&c| {
            if c == '"' {
                quoted = !quoted;
            }
            !quoted && c == brace
        })
        .count()
}

/// `counter packets 12 bytes 720` becomes `counter`: the numbers change with every packet,
/// and the rule is the same rule.
pub fn elide_counters(code: &str) -> String {
    let words: Vec<&str> = code.split(' ').collect();
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter"
            && words.get(i + 1) == Some(&"packets")
            && words.get(i + 3) == Some(&"bytes")
            && words.get(i + 2).is_some_and(|w| w.parse::<u64>().is_ok())
            && words.get(i + 4).is_some_and(|w| w.parse::<u64>().is_ok())
        {
            out.push("counter");
            i += 5;
        } else {
            out.push(words[i]);
            i += 1;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"table ip filter { # handle 1
	chain OUTPUT { # handle 1
		type filter hook output priority filter; policy accept;
		ip daddr 203.0.113.10 tcp dport 25 skuid != 979 counter packets 3 bytes 180 drop # handle 2
		jump smtp # handle 4
	}

	chain smtp { # handle 3
		meta l4proto tcp comment "a { brace" reject with tcp reset # handle 5
	}
}
table inet fw { # handle 2
	set allowed { # handle 1
		type ipv4_addr
		elements = { 192.0.2.1, 192.0.2.2 }
	}

	chain out { # handle 2
		type filter hook output priority 0; policy drop;
		ip daddr @allowed accept # handle 3
	}
}
# Warning: table ip filter is managed by iptables-nft, do not touch!
"#;

    const JSON: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "ip", "name": "filter", "handle": 1}},
 {"chain": {"family": "ip", "table": "filter", "name": "OUTPUT", "handle": 1, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
 {"chain": {"family": "ip", "table": "filter", "name": "smtp", "handle": 3}},
 {"rule": {"family": "ip", "table": "filter", "chain": "OUTPUT", "handle": 2, "expr": []}},
 {"chain": {"family": "inet", "table": "fw", "name": "out", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}]}"#;

    #[test]
    fn rules_by_handle_with_counters_elided() {
        let r = Ruleset::parse(JSON, TEXT).unwrap();
        assert_eq!(
            r.rule("ip", "filter", "OUTPUT", 2),
            Some("ip daddr 203.0.113.10 tcp dport 25 skuid != 979 counter drop")
        );
        assert_eq!(r.rule("ip", "filter", "OUTPUT", 4), Some("jump smtp"));
        assert_eq!(
            r.rule("ip", "filter", "smtp", 5),
            Some(r#"meta l4proto tcp comment "a { brace" reject with tcp reset"#)
        );
        assert_eq!(
            r.rule("inet", "fw", "out", 3),
            Some("ip daddr @allowed accept")
        );
        // Set declarations are not rules.
        assert_eq!(r.rules.len(), 4, "{:?}", r.rules);
    }

    #[test]
    fn chains_with_hooks_and_policies() {
        let r = Ruleset::parse(JSON, TEXT).unwrap();
        let out = r.chain("ip", "filter", "OUTPUT").unwrap();
        assert_eq!(out.hook.as_deref(), Some("output"));
        assert_eq!(out.policy.as_deref(), Some("accept"));
        assert_eq!(r.chain("ip", "filter", "smtp").unwrap().hook, None);
        assert_eq!(
            r.chain("inet", "fw", "out").unwrap().policy.as_deref(),
            Some("drop")
        );
    }

    #[test]
    fn iptables_save_lines_by_position_only_when_counts_agree() {
        let mut r = Ruleset::parse(JSON, TEXT).unwrap();
        r.add_iptables_save(
            "ip",
            "*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 203.0.113.10/32 -j DROP\n\
             -A OUTPUT -j smtp\n-A smtp -j REJECT\n-A smtp -j DROP\nCOMMIT\n",
        );
        assert_eq!(
            r.iptables_form("ip", "filter", "OUTPUT", 2),
            Some("-A OUTPUT -d 203.0.113.10/32 -j DROP")
        );
        assert_eq!(
            r.iptables_form("ip", "filter", "OUTPUT", 4),
            Some("-A OUTPUT -j smtp")
        );
        // smtp has one rule in nft and two -A lines: not matched.
        assert_eq!(r.iptables_form("ip", "filter", "smtp", 5), None);
    }

    #[test]
    fn counters_only_elided_when_they_are_counters() {
        assert_eq!(
            elide_counters("counter packets 1 bytes 2 accept"),
            "counter accept"
        );
        assert_eq!(
            elide_counters("counter name foo accept"),
            "counter name foo accept"
        );
    }
}
