//! `lbctl security-group`: the groups with their rules' hit counts, and
//! rule edits applied to the configuration like every other change.

use super::{err, Runtime};
use crate::stats;
use lbcore::config::raw::RawConfig;
use lbcore::security::{Action, RawSecurityGroup, RawSecurityRule};
use lbproto::{ErrorCode, ErrorReply, SecurityGroupInfo, SecurityRuleInfo, SecurityRuleSpec};

/// A group's hit counts: (rule position or `default`, action, hits).
pub type GroupHits = (String, Vec<(String, &'static str, u64)>);

impl Runtime {
    /// Every group's rules' hit counts, for the metrics endpoint.
    pub fn security_rule_hits(&self) -> Vec<GroupHits> {
        let plane = self.plane.lock();
        let hits = |slot: u32| stats::security_rule_hits(&self.counters, slot, &plane.baselines);
        let mut out = Vec::new();
        for g in plane.config.forwarding.security_groups.values() {
            let Some(slots) = plane.ids.security.slots(g) else { continue };
            let mut rules: Vec<_> = g
                .rules
                .iter()
                .zip(&slots)
                .enumerate()
                .map(|(i, (r, s))| (i.to_string(), r.action.name(), hits(*s)))
                .collect();
            rules.push(("default".into(), g.default.name(), hits(slots[g.rules.len()])));
            out.push((g.name.clone(), rules));
        }
        out
    }

    /// Every group (without rules), or the group `name` with its rules.
    pub(super) fn security_groups(&self, name: Option<&str>) -> Result<Vec<SecurityGroupInfo>, ErrorReply> {
        let plane = self.plane.lock();
        let fwd = &plane.config.forwarding;
        if let Some(n) = name {
            if !fwd.security_groups.contains_key(n) {
                return Err(err(ErrorCode::NotFound, format!("no security group `{n}`")));
            }
        }
        let hits = |slot: u32| stats::security_rule_hits(&self.counters, slot, &plane.baselines);
        let mut out = Vec::new();
        for g in fwd.security_groups.values().filter(|g| name.is_none_or(|n| g.name == n)) {
            let Some(slots) = plane.ids.security.slots(g) else {
                return Err(err(ErrorCode::Internal, format!("security group `{}` has no counters", g.name)));
            };
            let rules = if name.is_some() {
                g.rules
                    .iter()
                    .zip(&slots)
                    .enumerate()
                    .map(|(i, (r, slot))| SecurityRuleInfo {
                        index: i as u32,
                        action: r.action.name().into(),
                        protocol: r.protocol.name().into(),
                        sources: r.sources.iter().map(|n| n.to_string()).collect(),
                        ports: r.ports_text(),
                        description: r.description.clone(),
                        hits: hits(*slot),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            out.push(SecurityGroupInfo {
                name: g.name.clone(),
                default: g.default.name().into(),
                default_hits: hits(slots[g.rules.len()]),
                rule_count: g.rules.len(),
                listeners: fwd
                    .listeners
                    .iter()
                    .filter(|l| l.security_group.as_deref() == Some(g.name.as_str()))
                    .map(|l| l.name.clone())
                    .collect(),
                rules,
            });
        }
        Ok(out)
    }
}

fn group<'a>(raw: &'a mut RawConfig, name: &str) -> Result<&'a mut RawSecurityGroup, ErrorReply> {
    raw.security_groups.get_mut(name).ok_or_else(|| err(ErrorCode::NotFound, format!("no security group `{name}`")))
}

/// Decodes `spec` exactly as a file's rule, so values get the same errors.
fn raw_rule(spec: &SecurityRuleSpec) -> Result<RawSecurityRule, ErrorReply> {
    serde_json::to_value(spec)
        .and_then(serde_json::from_value)
        .map_err(|e| err(ErrorCode::Invalid, format!("rule: {e}")))
}

fn index_in(g: &RawSecurityGroup, name: &str, index: u32) -> Result<usize, ErrorReply> {
    let i = index as usize;
    if i >= g.rules.len() {
        return Err(err(
            ErrorCode::NotFound,
            format!("security group `{name}` has no rule {index} ({} rules)", g.rules.len()),
        ));
    }
    Ok(i)
}

pub(super) fn add_rule(
    raw: &mut RawConfig,
    name: &str,
    spec: &SecurityRuleSpec,
    position: Option<u32>,
) -> Result<String, ErrorReply> {
    let rule = raw_rule(spec)?;
    let g = group(raw, name)?;
    let at = position.map_or(g.rules.len(), |p| p as usize);
    if at > g.rules.len() {
        return Err(err(
            ErrorCode::Invalid,
            format!("position {at} is past the end of `{name}` ({} rules)", g.rules.len()),
        ));
    }
    g.rules.insert(at, rule);
    Ok(format!("security group {name}: rule {at} added"))
}

pub(super) fn del_rule(raw: &mut RawConfig, name: &str, index: u32) -> Result<String, ErrorReply> {
    let g = group(raw, name)?;
    let i = index_in(g, name, index)?;
    g.rules.remove(i);
    Ok(format!("security group {name}: rule {i} removed"))
}

pub(super) fn replace_rule(
    raw: &mut RawConfig,
    name: &str,
    index: u32,
    spec: &SecurityRuleSpec,
) -> Result<String, ErrorReply> {
    let rule = raw_rule(spec)?;
    let g = group(raw, name)?;
    let i = index_in(g, name, index)?;
    g.rules[i] = rule;
    Ok(format!("security group {name}: rule {i} replaced"))
}

pub(super) fn set_default(raw: &mut RawConfig, name: &str, action: &str) -> Result<String, ErrorReply> {
    let action = match action {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        a => return Err(err(ErrorCode::Invalid, format!("`{a}` is not an action (allow or deny)"))),
    };
    raw.security_groups.entry(name.to_owned()).or_default().default = Some(action);
    Ok(format!("security group {name}: default {}", action.name()))
}

/// Removes group `name`. A group still named by a listener or by
/// `security.default_group` is refused here, with who names it, rather
/// than left to the validation's error about the reference.
pub(super) fn delete(raw: &mut RawConfig, name: &str) -> Result<String, ErrorReply> {
    if !raw.security_groups.contains_key(name) {
        return Err(err(ErrorCode::NotFound, format!("no security group `{name}`")));
    }
    let mut users: Vec<String> = raw
        .listeners
        .iter()
        .filter(|l| l.security_group.as_deref() == Some(name))
        .map(|l| format!("listener `{}`", l.name))
        .collect();
    if raw.security.default_group.as_deref() == Some(name) {
        users.push("security.default_group".to_owned());
    }
    if !users.is_empty() {
        return Err(err(ErrorCode::Invalid, format!("security group `{name}` is in use by {}", users.join(", "))));
    }
    raw.security_groups.remove(name);
    Ok(format!("security group {name}: deleted"))
}
