//! `listeners[].limits`, `listeners[].protection` and the top-level
//! `limits` (table sizes): their YAML shape and their validation.

use super::{VResult, Validator};
use crate::admission::{Limits, Protection, SourceLimits, Thresholds, VipProtection};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Source table entries per worker unless `limits.source_entries` says.
pub const DEFAULT_SOURCE_ENTRIES: u64 = 65536;
const MIN_SOURCE_ENTRIES: u64 = 64;
const MAX_SOURCE_ENTRIES: u64 = 1 << 24;
/// Largest rate any limit takes (per second).
const MAX_RATE: u64 = 1_000_000_000;
/// Largest bits-per-second threshold (10 Tbit/s).
const MAX_BITS: u64 = 10_000_000_000_000;
const DEFAULT_HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGlobalLimits {
    /// Entries of each worker's per-source table (a power of two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_entries: Option<u64>,
}

impl RawGlobalLimits {
    pub fn is_default(&self) -> bool {
        *self == RawGlobalLimits::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_source: Option<RawSourceLimits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSourceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_connections_per_second: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProtection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<RawThresholds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blackhole: Option<RawThresholds>,
    /// How long a state lasts after the traffic fell below it (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// `vips[]`: protection of a VIP as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub address: String,
    pub protection: RawProtection,
}

/// The most VIPs with protection (their counters are sized at start).
pub const MAX_PROTECTED_VIPS: usize = 64;

impl Validator<'_> {
    pub(super) fn vips(&self, raw: &[RawVip], listeners: &[super::ListenerConfig]) -> VResult<Vec<VipProtection>> {
        if raw.len() > MAX_PROTECTED_VIPS {
            return self.err("vips", format!("{} VIPs, at most {MAX_PROTECTED_VIPS}", raw.len()));
        }
        let mut out: Vec<VipProtection> = Vec::with_capacity(raw.len());
        for (i, v) in raw.iter().enumerate() {
            let field = format!("vips[{i}].address");
            let Ok(address) = v.address.parse::<std::net::Ipv4Addr>() else {
                return self.err(field, format!("{:?} is not an IPv4 address", v.address));
            };
            if !listeners.iter().any(|l| l.vip == address) {
                return self.err(field, format!("{address} is no listener's VIP"));
            }
            if out.iter().any(|o| o.address == address) {
                return self.err(field, format!("{address} is listed twice"));
            }
            let protection = self.protection_at(&format!("vips[{i}].protection"), Some(&v.protection))?;
            out.push(VipProtection { address, protection: protection.expect("given") });
        }
        Ok(out)
    }

    pub(super) fn source_entries(&self, raw: &RawGlobalLimits) -> VResult<usize> {
        let n = raw.source_entries.unwrap_or(DEFAULT_SOURCE_ENTRIES);
        if !(MIN_SOURCE_ENTRIES..=MAX_SOURCE_ENTRIES).contains(&n) || !n.is_power_of_two() {
            return self.err(
                "limits.source_entries",
                format!("{n} must be a power of two from {MIN_SOURCE_ENTRIES} to {MAX_SOURCE_ENTRIES}"),
            );
        }
        Ok(n as usize)
    }

    fn rate(&self, field: String, v: Option<u64>, max: u64) -> VResult<Option<u64>> {
        match v {
            Some(0) => self.err(field, "0 would drop everything; leave the key out for no limit"),
            Some(x) if x > max => self.err(field, format!("{x} is more than the maximum of {max}")),
            other => Ok(other),
        }
    }

    fn rate32(&self, field: String, v: Option<u64>) -> VResult<Option<u32>> {
        Ok(self.rate(field, v, MAX_RATE)?.map(|x| x as u32))
    }

    pub(super) fn limits(&self, i: usize, raw: Option<&RawLimits>) -> VResult<Limits> {
        let Some(raw) = raw else { return Ok(Limits::default()) };
        let f = |k: &str| format!("listeners[{i}].limits.{k}");
        let s = raw.per_source.clone().unwrap_or_default();
        Ok(Limits {
            new_connections_per_second: self.rate32(f("new_connections_per_second"), raw.new_connections_per_second)?,
            packets_per_second: self.rate32(f("packets_per_second"), raw.packets_per_second)?,
            per_source: SourceLimits {
                new_connections_per_second: self
                    .rate32(f("per_source.new_connections_per_second"), s.new_connections_per_second)?,
                packets_per_second: self.rate32(f("per_source.packets_per_second"), s.packets_per_second)?,
                max_sessions: self.rate32(f("per_source.max_sessions"), s.max_sessions)?,
            },
        })
    }

    fn thresholds(&self, field: String, raw: &RawThresholds) -> VResult<Thresholds> {
        let f = |k: &str| format!("{field}.{k}");
        let t = Thresholds {
            packets_per_second: self.rate(f("packets_per_second"), raw.packets_per_second, MAX_RATE)?,
            bits_per_second: self.rate(f("bits_per_second"), raw.bits_per_second, MAX_BITS)?,
            new_connections_per_second: self.rate(
                f("new_connections_per_second"),
                raw.new_connections_per_second,
                MAX_RATE,
            )?,
        };
        if t == Thresholds::default() {
            return self
                .err(field, "names no threshold (packets_per_second, bits_per_second, new_connections_per_second)");
        }
        Ok(t)
    }

    pub(super) fn protection(&self, i: usize, raw: Option<&RawProtection>) -> VResult<Option<Protection>> {
        self.protection_at(&format!("listeners[{i}].protection"), raw)
    }

    fn protection_at(&self, field: &str, raw: Option<&RawProtection>) -> VResult<Option<Protection>> {
        let Some(raw) = raw else { return Ok(None) };
        let f = |k: &str| format!("{field}.{k}");
        let scrub = raw.scrub.as_ref().map(|t| self.thresholds(f("scrub"), t)).transpose()?;
        let blackhole = raw.blackhole.as_ref().map(|t| self.thresholds(f("blackhole"), t)).transpose()?;
        if scrub.is_none() && blackhole.is_none() {
            return self.err(f("scrub"), "protection needs `scrub`, `blackhole` or both");
        }
        if let (Some(s), Some(b)) = (scrub, blackhole) {
            // A blackhole below the scrub level would never let scrubbing
            // happen on that measure.
            for (name, s, b) in [
                ("packets_per_second", s.packets_per_second, b.packets_per_second),
                ("bits_per_second", s.bits_per_second, b.bits_per_second),
                ("new_connections_per_second", s.new_connections_per_second, b.new_connections_per_second),
            ] {
                if let (Some(s), Some(b)) = (s, b) {
                    if b < s {
                        return self.err(
                            f(&format!("blackhole.{name}")),
                            format!("{b} is below scrub.{name} ({s}): blackholing must be the higher level"),
                        );
                    }
                }
            }
        }
        let hold = self.duration(&f("hold"), raw.hold.as_ref(), DEFAULT_HOLD, Duration::from_secs(1))?;
        Ok(Some(Protection { scrub, blackhole, hold_ms: hold.as_millis() as u32 }))
    }
}

#[cfg(test)]
mod tests {
    use crate::admission::{Limits, Protection, SourceLimits, Thresholds};
    use crate::config::{parse, Config, ConfigError};
    use std::path::Path;

    const BASE: &str = r#"
eal: ["--no-pci"]
ports:
  - {name: ext, device: net_ring0, address: 10.0.0.1/24, exception: off}
listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    backends: [{address: 10.0.0.11, port: 8080}]
"#;

    fn with(extra: &str) -> Result<Config, ConfigError> {
        let yaml = BASE.replacen("    backends:", &format!("{extra}    backends:"), 1);
        parse(&yaml, Path::new("/etc/lbd/l.yaml"))
    }

    fn err(extra: &str) -> ConfigError {
        with(extra).expect_err(extra)
    }

    #[test]
    fn limits_and_protection_are_read() {
        let c = with(
            "    limits: {new_connections_per_second: 100, per_source: {max_sessions: 4, packets_per_second: 50}}\n    \
             protection: {scrub: {packets_per_second: 1000}, blackhole: {packets_per_second: 5000, bits_per_second: 1000000}, hold: 10s}\n",
        )
        .unwrap();
        let l = &c.forwarding.listeners[0];
        assert_eq!(
            l.limits,
            Limits {
                new_connections_per_second: Some(100),
                packets_per_second: None,
                per_source: SourceLimits {
                    new_connections_per_second: None,
                    packets_per_second: Some(50),
                    max_sessions: Some(4)
                },
            }
        );
        assert_eq!(
            l.protection,
            Some(Protection {
                scrub: Some(Thresholds { packets_per_second: Some(1000), ..Thresholds::default() }),
                blackhole: Some(Thresholds {
                    packets_per_second: Some(5000),
                    bits_per_second: Some(1_000_000),
                    new_connections_per_second: None
                }),
                hold_ms: 10_000,
            })
        );
        let plain = with("").unwrap();
        assert!(plain.forwarding.listeners[0].limits.is_none());
        assert_eq!(plain.forwarding.listeners[0].protection, None);
        assert_eq!(plain.startup.source_entries, 65536);
    }

    #[test]
    fn bad_limits_name_the_field() {
        let e = err("    limits: {packets_per_second: 0}\n");
        assert_eq!(e.field, "listeners[0].limits.packets_per_second");
        assert!(e.message.contains("leave the key out"), "{e}");
        let e = err("    limits: {per_source: {max_sessions: 2000000000}}\n");
        assert_eq!(e.field, "listeners[0].limits.per_source.max_sessions");
        let e = err("    limits: {per_source: {max_session: 2}}\n");
        assert!(e.message.contains("max_session"), "unknown keys are errors: {e}");
        let e = err("    protection: {hold: 10s}\n");
        assert_eq!(e.field, "listeners[0].protection.scrub");
        let e = err("    protection: {scrub: {}}\n");
        assert_eq!(e.field, "listeners[0].protection.scrub");
        let e = err("    protection: {scrub: {packets_per_second: 100}, blackhole: {packets_per_second: 50}}\n");
        assert_eq!(e.field, "listeners[0].protection.blackhole.packets_per_second");
        let e = err("    protection: {blackhole: {packets_per_second: 50}, hold: 10ms}\n");
        assert_eq!(e.field, "listeners[0].protection.hold");
        assert!(e.to_string().contains("/etc/lbd/l.yaml"), "{e}");
    }

    #[test]
    fn source_entries_is_a_startup_setting() {
        let yaml = format!("{BASE}limits: {{source_entries: 1024}}\n");
        let c = parse(&yaml, Path::new("l.yaml")).unwrap();
        assert_eq!(c.startup.source_entries, 1024);
        let base = parse(BASE, Path::new("l.yaml")).unwrap();
        assert_eq!(base.startup.changed_fields(&c.startup), vec!["limits.source_entries"]);
        for bad in ["1000", "32", "33554432"] {
            let e = parse(&format!("{BASE}limits: {{source_entries: {bad}}}\n"), Path::new("l.yaml")).unwrap_err();
            assert_eq!(e.field, "limits.source_entries", "{bad}");
        }
    }

    #[test]
    fn vip_protection_is_read_and_checked() {
        let vips = |v: &str| parse(&format!("{BASE}vips:\n{v}"), Path::new("/etc/lbd/l.yaml"));
        let c = vips("  - {address: 10.0.0.100, protection: {blackhole: {bits_per_second: 1000000}, hold: 30s}}\n")
            .unwrap();
        assert_eq!(c.forwarding.vips.len(), 1);
        assert_eq!(c.forwarding.vips[0].address, std::net::Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(
            c.forwarding.vips[0].protection,
            Protection {
                scrub: None,
                blackhole: Some(Thresholds { bits_per_second: Some(1_000_000), ..Thresholds::default() }),
                hold_ms: 30_000,
            }
        );
        assert!(parse(BASE, Path::new("l.yaml")).unwrap().forwarding.vips.is_empty());
        let e = vips("  - {address: 10.0.0.101, protection: {blackhole: {packets_per_second: 5}}}\n").unwrap_err();
        assert_eq!(e.field, "vips[0].address");
        assert!(e.message.contains("no listener's VIP"), "{e}");
        assert!(e.to_string().contains("/etc/lbd/l.yaml"), "{e}");
        let e = vips("  - {address: web, protection: {blackhole: {packets_per_second: 5}}}\n").unwrap_err();
        assert_eq!(e.field, "vips[0].address");
        let e = vips(
            "  - {address: 10.0.0.100, protection: {blackhole: {packets_per_second: 5}}}\n  \
             - {address: 10.0.0.100, protection: {blackhole: {packets_per_second: 9}}}\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "vips[1].address");
        let e = vips("  - {address: 10.0.0.100, protection: {hold: 10s}}\n").unwrap_err();
        assert_eq!(e.field, "vips[0].protection.scrub");
        let e = vips("  - {address: 10.0.0.100, protection: {scrub: {packets_per_second: 100}, blackhole: {packets_per_second: 50}}}\n")
            .unwrap_err();
        assert_eq!(e.field, "vips[0].protection.blackhole.packets_per_second");
        let e = vips("  - {address: 10.0.0.100, protection: {blackhole: {packets_per_second: 0}}}\n").unwrap_err();
        assert_eq!(e.field, "vips[0].protection.blackhole.packets_per_second");
        let e = vips("  - {address: 10.0.0.100, protection: {blackhole: {packets_per_second: 5}}, port: 80}\n")
            .unwrap_err();
        assert!(e.message.contains("port"), "unknown keys are errors: {e}");
    }
}
