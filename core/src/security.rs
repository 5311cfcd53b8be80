//! Security groups: ordered allow/deny rules by protocol, source prefix and
//! destination port, first match wins, else the group's default.
//!
//! A listener serves one protocol on one port, so at snapshot time each
//! listener's group is reduced to the rules that can apply to it, and those
//! to a function of the client address alone: a sorted list of disjoint
//! address intervals, each with the verdict of the first rule covering it.
//! A new flow costs one binary search over those intervals, however many
//! rules and prefixes the group has; established flows never look (the
//! session is the verdict).
//!
//! Every rule, and each group's default, has a hit counter slot per worker.
//! Slots are keyed by the group's name and the rule's content (not its
//! position), so inserting or removing a rule keeps the others' counts.

use crate::config::{ConfigError, Protocol};
use crate::counters::Counter;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Hit counter slots per worker (8 bytes each). Twice the rules a
/// configuration may hold, so a whole new rule set always finds fresh
/// slots while the old one's are kept.
pub const MAX_SECURITY_COUNTERS: usize = 1 << 16;
/// Rules plus groups (each default has a counter) in one configuration.
pub const MAX_SECURITY_RULES: usize = MAX_SECURITY_COUNTERS / 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleProtocol {
    Tcp,
    Udp,
    Any,
}

impl RuleProtocol {
    pub fn name(self) -> &'static str {
        match self {
            RuleProtocol::Tcp => "tcp",
            RuleProtocol::Udp => "udp",
            RuleProtocol::Any => "any",
        }
    }

    fn covers(self, p: Protocol) -> bool {
        matches!(
            (self, p),
            (RuleProtocol::Any, _) | (RuleProtocol::Tcp, Protocol::Tcp) | (RuleProtocol::Udp, Protocol::Udp)
        )
    }
}

/// `security_groups.NAME` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityGroup {
    #[serde(default)]
    pub rules: Vec<RawSecurityRule>,
    /// What a new flow no rule matches gets (`deny` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Action>,
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityRule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<RuleProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<RawPorts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A destination port (`80`) or range (`"1000-2000"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawPorts {
    One(u32),
    Text(String),
}

/// The instance-wide part: `security:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    /// The group of every listener that names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_group: Option<String>,
}

impl RawSecurity {
    pub fn is_default(&self) -> bool {
        *self == RawSecurity::default()
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub action: Action,
    pub protocol: RuleProtocol,
    /// Client networks; `0.0.0.0/0` when the rule names none.
    pub sources: Vec<Ipv4Net>,
    /// Destination ports, inclusive.
    pub ports: (u16, u16),
    pub description: Option<String>,
}

impl Rule {
    fn applies_to(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol.covers(protocol) && (self.ports.0..=self.ports.1).contains(&port)
    }

    /// What identifies the rule's counter: everything but the description.
    fn key_text(&self) -> String {
        let mut sources: Vec<String> = self.sources.iter().map(|n| n.to_string()).collect();
        sources.sort_unstable();
        format!(
            "{} {} {}-{} {}",
            self.action.name(),
            self.protocol.name(),
            self.ports.0,
            self.ports.1,
            sources.join(",")
        )
    }

    /// The ports as written back: `80` or `1000-2000`, empty for all.
    pub fn ports_text(&self) -> String {
        match self.ports {
            (1, 65535) => String::new(),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        }
    }
}

/// A validated group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecurityGroup {
    pub name: String,
    pub rules: Vec<Rule>,
    pub default: Action,
}

fn error(file: &Path, field: String, message: String) -> ConfigError {
    ConfigError { file: file.to_owned(), field, message }
}

/// Parses `s` as a client network: a CIDR without host bits, or an address
/// (a /32).
pub fn parse_source(s: &str) -> Result<Ipv4Net, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<std::net::Ipv4Addr>() {
        return Ok(Ipv4Net::from(a));
    }
    let n = s.parse::<Ipv4Net>().map_err(|_| format!("`{s}` is not an IPv4 network (write e.g. 192.0.2.0/24)"))?;
    if n.trunc() != n {
        return Err(format!("`{s}` has host bits set; write {}", n.trunc()));
    }
    Ok(n)
}

/// Parses a destination port or range.
pub fn parse_ports(p: &RawPorts) -> Result<(u16, u16), String> {
    let one = |n: u32| match u16::try_from(n) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("{n} is not a port number (1..=65535)")),
    };
    let num = |t: &str| {
        let t = t.trim();
        t.parse::<u32>().map_err(|_| format!("`{t}` is not a port number (1..=65535)")).and_then(one)
    };
    match p {
        RawPorts::One(n) => one(*n).map(|p| (p, p)),
        RawPorts::Text(t) if t.trim().is_empty() => {
            Err("is empty; write a port (`80`) or a range (`1000-2000`)".into())
        }
        RawPorts::Text(t) => match t.split_once('-') {
            None => num(t).map(|p| (p, p)),
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("`{t}` is reversed (write {b}-{a})"));
                }
                Ok((a, b))
            }
        },
    }
}

/// Validates one rule; `field` is where it was written.
pub fn validate_rule(r: &RawSecurityRule, file: &Path, field: &str) -> Result<Rule, ConfigError> {
    let f = |k: &str| format!("{field}.{k}");
    let sources = match (&r.source, &r.sources) {
        (Some(_), Some(_)) => {
            return Err(error(file, f("sources"), "give `source` or `sources`, not both".into()));
        }
        (Some(s), None) => vec![parse_source(s).map_err(|e| error(file, f("source"), e))?],
        (None, Some(list)) => {
            if list.is_empty() {
                return Err(error(file, f("sources"), "is empty; leave it out to match every source".into()));
            }
            list.iter()
                .enumerate()
                .map(|(k, s)| parse_source(s).map_err(|e| error(file, format!("{field}.sources[{k}]"), e)))
                .collect::<Result<_, _>>()?
        }
        (None, None) => vec![Ipv4Net::default()],
    };
    let ports = match &r.ports {
        None => (1, 65535),
        Some(p) => parse_ports(p).map_err(|e| error(file, f("ports"), e))?,
    };
    if let Some(d) = &r.description {
        if d.len() > 256 || d.chars().any(char::is_control) {
            return Err(error(file, f("description"), "must be at most 256 characters, none a control".into()));
        }
    }
    Ok(Rule {
        action: r.action,
        protocol: r.protocol.unwrap_or(RuleProtocol::Any),
        sources,
        ports,
        description: r.description.clone(),
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Validates `security_groups` and `security`; returns the groups by name.
pub fn validate_groups(
    raw: &BTreeMap<String, RawSecurityGroup>,
    security: &RawSecurity,
    file: &Path,
) -> Result<BTreeMap<String, Arc<SecurityGroup>>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut total = 0usize;
    for (name, g) in raw {
        let field = format!("security_groups.{name}");
        if !valid_name(name) {
            return Err(error(
                file,
                field,
                format!("`{name}` is not a valid name (1-64 of a-z, A-Z, 0-9, `_`, `-`, `.`)"),
            ));
        }
        let rules = g
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| validate_rule(r, file, &format!("{field}.rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        total += rules.len() + 1;
        if total > MAX_SECURITY_RULES {
            return Err(error(
                file,
                "security_groups".into(),
                format!("more than {MAX_SECURITY_RULES} rules and groups in all"),
            ));
        }
        let group = SecurityGroup { name: name.clone(), rules, default: g.default.unwrap_or(Action::Deny) };
        out.insert(name.clone(), Arc::new(group));
    }
    if let Some(d) = &security.default_group {
        if !out.contains_key(d) {
            return Err(error(file, "security.default_group".into(), unknown_group(d, &out)));
        }
    }
    Ok(out)
}

/// The message for a group name that `groups` lacks.
pub fn unknown_group(name: &str, groups: &BTreeMap<String, Arc<SecurityGroup>>) -> String {
    let known: Vec<&str> = groups.keys().map(String::as_str).collect();
    if known.is_empty() {
        format!("no security group `{name}` (security_groups defines none)")
    } else {
        format!("no security group `{name}` (defined: {})", known.join(", "))
    }
}

/// What a rule's counter is known by: group, rule content (or `default`),
/// and which of equal rules in the group it is.
type CounterKey = (String, String, u32);

/// The counter keys of `g`: one per rule, then the default's.
fn counter_keys(g: &SecurityGroup) -> Vec<CounterKey> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut keys: Vec<CounterKey> = g
        .rules
        .iter()
        .map(|r| {
            let text = r.key_text();
            let n = seen.entry(text.clone()).or_default();
            *n += 1;
            (g.name.clone(), text, *n)
        })
        .collect();
    keys.push((g.name.clone(), "default".into(), 1));
    keys
}

/// Stable hit counter slots of rules across configurations (see the
/// module's documentation). A removed rule keeps its slot, so putting it
/// back resumes its count; only when fresh slots run out is the slot of a
/// removed rule given to a new one (the caller then records a baseline).
#[derive(Debug, Default, Clone)]
pub struct RuleIds {
    ids: HashMap<CounterKey, u32>,
    owner: Vec<Option<CounterKey>>,
}

impl RuleIds {
    /// Gives every rule and default of `groups` a slot; returns the slots
    /// that changed owner. Fails, changing nothing, when slots run out.
    pub fn assign(&mut self, groups: &BTreeMap<String, Arc<SecurityGroup>>) -> Result<Vec<u32>, String> {
        let mut next = self.clone();
        let live: HashSet<CounterKey> = groups.values().flat_map(|g| counter_keys(g)).collect();
        let mut recycled = Vec::new();
        let mut scan = 0usize;
        for g in groups.values() {
            for key in counter_keys(g) {
                if next.ids.contains_key(&key) {
                    continue;
                }
                let slot = if next.owner.len() < MAX_SECURITY_COUNTERS {
                    next.owner.push(None);
                    next.owner.len() - 1
                } else {
                    while scan < next.owner.len() && next.owner[scan].as_ref().is_some_and(|o| live.contains(o)) {
                        scan += 1;
                    }
                    if scan == next.owner.len() {
                        return Err(format!("no security rule counter free: {MAX_SECURITY_COUNTERS} in use"));
                    }
                    if let Some(old) = next.owner[scan].take() {
                        next.ids.remove(&old);
                    }
                    recycled.push(scan as u32);
                    scan
                };
                next.owner[slot] = Some(key.clone());
                next.ids.insert(key, slot as u32);
            }
        }
        *self = next;
        Ok(recycled)
    }

    /// The counter slots of `g`: one per rule, then the default's; `None`
    /// when `g` was not assigned.
    pub fn slots(&self, g: &SecurityGroup) -> Option<Vec<u32>> {
        counter_keys(g).iter().map(|k| self.ids.get(k).copied()).collect()
    }
}

/// A rule's verdict and the counter slot to count it on, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict(u32);

impl Verdict {
    const ALLOW: u32 = 1 << 31;

    fn new(action: Action, slot: u32) -> Verdict {
        debug_assert!(slot < Self::ALLOW);
        Verdict(slot | if action == Action::Allow { Self::ALLOW } else { 0 })
    }

    #[inline(always)]
    pub fn allows(self) -> bool {
        self.0 & Self::ALLOW != 0
    }

    /// The hit counter slot of the rule (or default) that decided.
    #[inline(always)]
    pub fn slot(self) -> usize {
        (self.0 & !Self::ALLOW) as usize
    }
}

/// A group reduced to one listener's protocol and port: the client
/// address space as sorted disjoint intervals, each with its verdict.
#[derive(Debug)]
pub struct SourceVerdicts {
    /// The group and slots it was built from, to reuse it while they hold.
    group: Arc<SecurityGroup>,
    slots: Vec<u32>,
    protocol: Protocol,
    port: u16,
    /// Interval starts, ascending; the first is 0.
    starts: Box<[u32]>,
    verdicts: Box<[Verdict]>,
}

impl SourceVerdicts {
    /// Builds the verdicts of `group` for a listener on `protocol`/`port`;
    /// `slots` from [`RuleIds::slots`].
    pub fn build(group: &Arc<SecurityGroup>, slots: Vec<u32>, protocol: Protocol, port: u16) -> SourceVerdicts {
        assert_eq!(slots.len(), group.rules.len() + 1);
        // (position, rule, entering?) for every prefix of every rule that
        // applies; intervals are [start, end + 1) in u64 so 2^32 fits.
        let mut events: Vec<(u64, u32, bool)> = Vec::new();
        for (i, r) in group.rules.iter().enumerate() {
            if !r.applies_to(protocol, port) {
                continue;
            }
            for n in &r.sources {
                let start = u64::from(u32::from(n.network()));
                let end = u64::from(u32::from(n.broadcast())) + 1;
                events.push((start, i as u32, true));
                events.push((end, i as u32, false));
            }
        }
        events.sort_unstable();
        let default = Verdict::new(group.default, slots[group.rules.len()]);
        let verdict_of = |active: &BTreeMap<u32, u32>| match active.keys().next() {
            Some(&i) => Verdict::new(group.rules[i as usize].action, slots[i as usize]),
            None => default,
        };
        let mut starts = vec![0u32];
        let mut verdicts = vec![default];
        // Rule index → prefixes of it covering the current position.
        let mut active: BTreeMap<u32, u32> = BTreeMap::new();
        let mut k = 0;
        while k < events.len() {
            let pos = events[k].0;
            while k < events.len() && events[k].0 == pos {
                let (_, rule, entering) = events[k];
                if entering {
                    *active.entry(rule).or_default() += 1;
                } else if let Some(n) = active.get_mut(&rule) {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&rule);
                    }
                }
                k += 1;
            }
            if pos > u64::from(u32::MAX) {
                break;
            }
            let v = verdict_of(&active);
            if pos == 0 {
                verdicts[0] = v;
            } else if *verdicts.last().expect("never empty") != v {
                starts.push(pos as u32);
                verdicts.push(v);
            }
        }
        SourceVerdicts {
            group: Arc::clone(group),
            slots,
            protocol,
            port,
            starts: starts.into_boxed_slice(),
            verdicts: verdicts.into_boxed_slice(),
        }
    }

    /// The verdict for a new flow from `src`.
    #[inline]
    pub fn verdict(&self, src: u32) -> Verdict {
        // starts[0] == 0, so at least one start is <= src.
        let i = self.starts.partition_point(|&s| s <= src);
        self.verdicts[i - 1]
    }

    /// The counter slots of the group's rules, then of its default.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Intervals the address space is cut into.
    pub fn intervals(&self) -> usize {
        self.starts.len()
    }

    /// Whether this was built from exactly `group`, `slots`, `protocol`
    /// and `port` (then a rebuild may keep it).
    pub fn built_from(&self, group: &SecurityGroup, slots: &[u32], protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol && self.port == port && self.slots == slots && *self.group == *group
    }
}

/// Counts the verdict on the worker's counters and says whether the flow
/// may go on.
#[inline(always)]
pub fn admit(v: &SourceVerdicts, src: u32, hits: &[Counter]) -> bool {
    let verdict = v.verdict(src);
    hits[verdict.slot()].inc();
    verdict.allows()
}

/// The naive model the compiled form must agree with: the first rule
/// that covers the flow, else the default. For tests and benchmarks.
pub fn first_match(group: &SecurityGroup, protocol: Protocol, port: u16, src: u32) -> Option<usize> {
    let ip = std::net::Ipv4Addr::from(src);
    group.rules.iter().position(|r| r.applies_to(protocol, port) && r.sources.iter().any(|n| n.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(action: Action, protocol: RuleProtocol, sources: &[&str], ports: (u16, u16)) -> Rule {
        Rule {
            action,
            protocol,
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            ports,
            description: None,
        }
    }

    fn group(rules: Vec<Rule>, default: Action) -> Arc<SecurityGroup> {
        Arc::new(SecurityGroup { name: "g".into(), rules, default })
    }

    fn build(g: &Arc<SecurityGroup>, protocol: Protocol, port: u16) -> SourceVerdicts {
        let slots = (0..=g.rules.len() as u32).map(|i| i + 100).collect();
        SourceVerdicts::build(g, slots, protocol, port)
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    #[test]
    fn first_matching_rule_decides_else_the_default() {
        let g = group(
            vec![
                rule(Action::Deny, RuleProtocol::Tcp, &["10.1.2.0/24"], (80, 80)),
                rule(Action::Allow, RuleProtocol::Any, &["10.0.0.0/8"], (1, 65535)),
                rule(Action::Deny, RuleProtocol::Udp, &["0.0.0.0/0"], (53, 53)),
                rule(Action::Allow, RuleProtocol::Tcp, &["255.255.255.255/32"], (1, 65535)),
            ],
            Action::Deny,
        );
        let v = build(&g, Protocol::Tcp, 80);
        assert_eq!(v.verdict(ip("10.1.2.3")), Verdict::new(Action::Deny, 100));
        assert_eq!(v.verdict(ip("10.1.3.3")), Verdict::new(Action::Allow, 101));
        assert_eq!(v.verdict(ip("11.0.0.1")), Verdict::new(Action::Deny, 104), "the default");
        assert_eq!(v.verdict(ip("255.255.255.255")), Verdict::new(Action::Allow, 103));
        assert_eq!(v.verdict(0), Verdict::new(Action::Deny, 104));
        // The same group on another port: the first rule does not apply.
        let v = build(&g, Protocol::Tcp, 81);
        assert_eq!(v.verdict(ip("10.1.2.3")), Verdict::new(Action::Allow, 101));
        let v = build(&g, Protocol::Udp, 53);
        assert_eq!(v.verdict(ip("10.1.2.3")), Verdict::new(Action::Allow, 101));
        assert_eq!(v.verdict(ip("192.0.2.1")), Verdict::new(Action::Deny, 102));
    }

    #[test]
    fn ports_and_sources_parse_with_clear_errors() {
        assert_eq!(parse_ports(&RawPorts::One(80)), Ok((80, 80)));
        assert_eq!(parse_ports(&RawPorts::Text("1000-2000".into())), Ok((1000, 2000)));
        assert!(parse_ports(&RawPorts::Text("2000-1000".into())).unwrap_err().contains("reversed"));
        assert!(parse_ports(&RawPorts::One(65536)).unwrap_err().contains("65536 is not a port"));
        assert!(parse_ports(&RawPorts::One(0)).is_err());
        assert!(parse_ports(&RawPorts::Text("".into())).unwrap_err().contains("empty"));
        assert!(parse_ports(&RawPorts::Text("1-65536".into())).is_err());
        assert_eq!(parse_source("192.0.2.7"), Ok("192.0.2.7/32".parse().unwrap()));
        assert!(parse_source("10.0.0.1/8").unwrap_err().contains("host bits"));
        assert!(parse_source("10.0.0.0/33").is_err());
        assert!(parse_source("fe80::/10").is_err());
    }

    #[test]
    fn counter_slots_follow_the_rule_not_its_position() {
        let a = rule(Action::Allow, RuleProtocol::Tcp, &["10.0.0.0/8"], (80, 80));
        let b = rule(Action::Deny, RuleProtocol::Any, &["0.0.0.0/0"], (1, 65535));
        let groups = |rules: Vec<Rule>| {
            let g = SecurityGroup { name: "g".into(), rules, default: Action::Deny };
            BTreeMap::from([("g".to_owned(), Arc::new(g))])
        };
        let mut ids = RuleIds::default();
        let first = groups(vec![a.clone(), b.clone()]);
        ids.assign(&first).unwrap();
        let s1 = ids.slots(&first["g"]).unwrap();
        // A new rule in front: a and b keep their slots, the new one gets another.
        let c = rule(Action::Deny, RuleProtocol::Udp, &["192.0.2.0/24"], (53, 53));
        let second = groups(vec![c, a.clone(), b]);
        assert!(ids.assign(&second).unwrap().is_empty());
        let s2 = ids.slots(&second["g"]).unwrap();
        assert_eq!((s2[1], s2[2], s2[3]), (s1[0], s1[1], s1[2]));
        assert!(!s1.contains(&s2[0]));
        // Two equal rules get two slots.
        let third = groups(vec![a.clone(), a]);
        ids.assign(&third).unwrap();
        let s3 = ids.slots(&third["g"]).unwrap();
        assert_eq!(s3[0], s1[0]);
        assert_ne!(s3[0], s3[1]);
    }

    /// When fresh slots run out, only slots of rules no longer configured
    /// are given again, and they are reported (for a counter baseline).
    #[test]
    fn exhausted_slots_recycle_only_removed_rules() {
        let groups = |name: &str, first: u32, n: u32| {
            let rules = (first..first + n)
                .map(|i| Rule {
                    action: Action::Deny,
                    protocol: RuleProtocol::Any,
                    sources: vec![Ipv4Net::new(std::net::Ipv4Addr::from(i), 32).unwrap()],
                    ports: (1, 65535),
                    description: None,
                })
                .collect();
            let g = SecurityGroup { name: name.into(), rules, default: Action::Deny };
            BTreeMap::from([(name.to_owned(), Arc::new(g))])
        };
        let half = (MAX_SECURITY_COUNTERS / 2) as u32;
        let mut ids = RuleIds::default();
        // Two rule sets of half the slots each (rules plus default) fill them.
        assert!(ids.assign(&groups("a", 0, half - 1)).unwrap().is_empty());
        let b = groups("b", half, half - 1);
        assert!(ids.assign(&b).unwrap().is_empty());
        let b_slots = ids.slots(&b["b"]).unwrap();
        // A third set: every slot it gets is one of `a`'s, reported.
        let mut c = groups("c", 2 * half, 10);
        c.extend(b.clone());
        let recycled = ids.assign(&c).unwrap();
        assert_eq!(recycled.len(), 11);
        assert!(recycled.iter().all(|s| !b_slots.contains(s)), "a live rule's slot was taken");
        assert_eq!(ids.slots(&c["c"]).unwrap(), recycled);
        assert_eq!(ids.slots(&b["b"]).unwrap(), b_slots);
        // More live rules than slots: refused, nothing changed.
        let before = ids.slots(&c["c"]);
        let mut too_many = groups("d", 3 * half, half);
        too_many.extend(b);
        assert!(ids.assign(&too_many).is_err());
        assert_eq!(ids.slots(&c["c"]), before);
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        // Few distinct networks so prefixes nest and overlap often.
        let net = (0u32..8, prop::sample::select(vec![0u8, 1, 8, 16, 24, 28, 30, 32])).prop_map(|(a, len)| {
            Ipv4Net::new(std::net::Ipv4Addr::from(a.wrapping_mul(0x2040_8103)), len).unwrap().trunc()
        });
        (
            prop::bool::ANY,
            prop::sample::select(vec![RuleProtocol::Tcp, RuleProtocol::Udp, RuleProtocol::Any]),
            prop::collection::vec(net, 1..4),
            (1u16..100, 0u16..50),
        )
            .prop_map(|(allow, protocol, sources, (lo, w))| Rule {
                action: if allow { Action::Allow } else { Action::Deny },
                protocol,
                sources,
                ports: (lo, lo.saturating_add(w)),
                description: None,
            })
    }

    proptest! {
        /// The interval map agrees with the first-match scan on every
        /// interval edge and on random addresses.
        #[test]
        fn compiled_verdicts_equal_first_match(
            rules in prop::collection::vec(arb_rule(), 0..30),
            default_allow in prop::bool::ANY,
            tcp in prop::bool::ANY,
            port in 1u16..150,
            probes in prop::collection::vec(any::<u32>(), 50),
        ) {
            let default = if default_allow { Action::Allow } else { Action::Deny };
            let g = group(rules, default);
            let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
            let v = build(&g, protocol, port);
            let mut addrs = probes;
            for r in &g.rules {
                for n in &r.sources {
                    let (s, e) = (u32::from(n.network()), u32::from(n.broadcast()));
                    addrs.extend([s, e, s.wrapping_sub(1), e.wrapping_add(1)]);
                }
            }
            for a in addrs {
                let want = match first_match(&g, protocol, port, a) {
                    Some(i) => Verdict::new(g.rules[i].action, 100 + i as u32),
                    None => Verdict::new(default, 100 + g.rules.len() as u32),
                };
                prop_assert_eq!(v.verdict(a), want, "address {}", std::net::Ipv4Addr::from(a));
            }
        }
    }
}
