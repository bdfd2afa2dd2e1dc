//! Switches as text, for `ztpctl switches` (the fleet table, the columns of `kubectl get sw`) and
//! `ztpctl switch SERIAL` (one switch with its attempt history). Pure: the callers read the
//! Switches (standalone's `{data}/.status/switches.json`).

use std::fmt::Write as _;

use crate::api::{Switch, SwitchPhase};

/// `-` for what is not known.
fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Enum values as the API spells them (`Provisioned`, `Serial`, …).
fn spelled(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "?".into())
}

/// The fleet table: one line per Switch, aligned, header first.
pub fn table(switches: &[&Switch]) -> String {
    let mut rows = vec![
        ["NAMESPACE", "NAME", "SERIAL", "HOSTNAME", "MODEL", "PROFILE", "PHASE", "IP", "LAST SEEN"]
            .map(str::to_owned),
    ];
    for s in switches {
        let st = s.status.as_ref();
        let device = st.and_then(|st| st.device.as_ref());
        rows.push([
            or_dash(s.metadata.namespace.as_ref()),
            or_dash(s.metadata.name.as_ref()),
            s.spec.serial_number.clone(),
            or_dash(s.spec.hostname.as_ref()),
            or_dash(device.and_then(|d| d.model.as_ref()).or(s.spec.model.as_ref())),
            or_dash(st.and_then(|st| st.matched_profile.as_ref()).map(|m| m.name.clone())),
            or_dash(st.and_then(|st| st.phase).map(SwitchPhase::as_str)),
            or_dash(device.and_then(|d| d.address.as_ref())),
            or_dash(st.and_then(|st| st.last_seen.as_ref()).map(|t| t.0)),
        ]);
    }
    let widths: Vec<usize> =
        (0..9).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

/// One Switch: what it is, what it matched, what its device said, and each attempt with its
/// stages, newest first.
pub fn describe(s: &Switch) -> String {
    let mut out = String::new();
    let st = s.status.clone().unwrap_or_default();
    let name = format!("{}/{}", or_dash(s.metadata.namespace.as_ref()), or_dash(s.metadata.name.as_ref()));
    let _ = writeln!(out, "Switch {name}  serial {}", s.spec.serial_number);
    let _ = writeln!(out, "  phase: {}", or_dash(st.phase.map(SwitchPhase::as_str)));
    for c in &st.conditions {
        let _ = writeln!(out, "  condition {}={} {}: {}", c.type_, c.status, c.reason, c.message);
    }
    if let Some(m) = &st.matched_profile {
        let _ =
            writeln!(out, "  profile: {}/{} (by {})", or_dash(m.namespace.as_ref()), m.name, spelled(&m.by));
    }
    for (what, v) in [
        ("hostname", &s.spec.hostname),
        ("pinned profile", &s.spec.profile),
        ("install image", &s.spec.os_image),
        ("reprovision", &s.spec.reprovision),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "  {what}: {v}");
        }
    }
    if s.spec.hold {
        let _ = writeln!(out, "  on hold: gets nothing");
    }
    if let Some(d) = &st.device {
        let facts = [
            ("family", &d.family),
            ("model", &d.model),
            ("mac", &d.mac),
            ("os", &d.os_version),
            ("ip", &d.address),
        ];
        let said: Vec<String> =
            facts.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}"))).collect();
        let _ = writeln!(out, "  device: {}", said.join(", "));
    }
    let _ = writeln!(out, "  last seen: {}", or_dash(st.last_seen.as_ref().map(|t| t.0)));
    for (i, a) in st.attempts.iter().enumerate() {
        let result = a.result.as_ref().map_or_else(|| "in progress".to_owned(), spelled);
        let ended = a.ended.as_ref().map(|t| format!(" to {}", t.0)).unwrap_or_default();
        let _ = writeln!(
            out,
            "  attempt {} ({}): {result}, from {}{ended}",
            st.attempts.len() - i,
            spelled(&a.trigger),
            a.started.0
        );
        for stage in &a.stages {
            let result = stage.result.as_ref().map(|r| format!(" {}", spelled(r))).unwrap_or_default();
            let message = stage.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
            let _ = writeln!(out, "    {} {}{result}{message}", stage.time.0, stage.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{
        Attempt, AttemptResult, AttemptTrigger, DeviceFacts, MatchedBy, MatchedProfile, StageRecord,
        SwitchPhase, SwitchSpec, SwitchStatus,
    };

    fn at(s: &str) -> Time {
        Time(s.parse().expect("time"))
    }

    fn provisioned() -> Switch {
        let mut s = Switch::new(
            "leaf-1",
            SwitchSpec { hostname: Some("leaf-1".into()), ..SwitchSpec::for_serial("MT01") },
        );
        s.metadata.namespace = Some("net".into());
        s.status = Some(SwitchStatus {
            phase: Some(SwitchPhase::Provisioned),
            matched_profile: Some(MatchedProfile {
                name: "sn2410".into(),
                namespace: Some("net".into()),
                by: MatchedBy::Model,
            }),
            device: Some(DeviceFacts {
                model: Some("MSN2410".into()),
                address: Some("192.0.2.7".into()),
                ..Default::default()
            }),
            last_seen: Some(at("2026-11-30T10:00:05Z")),
            attempts: vec![Attempt {
                started: at("2026-11-30T10:00:00Z"),
                ended: Some(at("2026-11-30T10:00:05Z")),
                result: Some(AttemptResult::Provisioned),
                trigger: AttemptTrigger::Discovered,
                reprovision: None,
                stages: vec![
                    StageRecord {
                        name: "ConfigServed".into(),
                        time: at("2026-11-30T10:00:00Z"),
                        result: None,
                        message: None,
                    },
                    StageRecord {
                        name: "Provisioned".into(),
                        time: at("2026-11-30T10:00:05Z"),
                        result: None,
                        message: None,
                    },
                ],
            }],
            ..Default::default()
        });
        s
    }

    #[test]
    fn the_table_has_kubectls_columns_aligned_and_dashes_for_the_unknown() {
        let p = provisioned();
        let mut fresh = Switch::new("sn-x", SwitchSpec::for_serial("X"));
        fresh.metadata.namespace = Some("default".into());
        let text = table(&[&p, &fresh]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            cells[0],
            ["NAMESPACE", "NAME", "SERIAL", "HOSTNAME", "MODEL", "PROFILE", "PHASE", "IP", "LAST", "SEEN"]
        );
        assert_eq!(
            cells[1],
            [
                "net",
                "leaf-1",
                "MT01",
                "leaf-1",
                "MSN2410",
                "sn2410",
                "Provisioned",
                "192.0.2.7",
                "2026-11-30T10:00:05Z"
            ]
        );
        assert_eq!(cells[2], ["default", "sn-x", "X", "-", "-", "-", "-", "-", "-"]);
        // Aligned: every column starts at the header's offset.
        let offset = |l: &str, cell: &str| l.find(cell).expect("cell");
        assert_eq!(offset(lines[0], "PHASE"), offset(lines[1], "Provisioned"));
    }

    #[test]
    fn describe_shows_the_match_the_device_and_each_attempts_stages() {
        let text = describe(&provisioned());
        for line in [
            "Switch net/leaf-1  serial MT01",
            "  phase: Provisioned",
            "  profile: net/sn2410 (by Model)",
            "  hostname: leaf-1",
            "  device: model MSN2410, ip 192.0.2.7",
            "  attempt 1 (Discovered): Provisioned, from 2026-11-30T10:00:00Z to 2026-11-30T10:00:05Z",
            "    2026-11-30T10:00:05Z Provisioned",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }
}
