//! DHCP host reservations that point each switch of a set of SwitchProfiles at this server
//! (`ztpctl dhcp`). Pure: profiles in, a [`Plan`] out, rendered as ISC dhcpd ([`isc`]) or Kea
//! ([`kea`]) configuration.
//!
//! Per family the profile serves (docs/protocols.md §1.3, §2.2, §3.1, §3.4, §4, §9):
//!
//! | profile has | family | DHCPv4 option | value |
//! |---|---|---|---|
//! | `onie` | ONIE | 114 `default-url` | `{server}/onie` |
//! | `ztp` | NVOS / SONiC | 67 `bootfile-name` | `{server}/{nvos\|sonic}/{serial}/ztp.json` (`…/ztp.json` without a serial) |
//! | `cumulus` | Cumulus Linux | 239 `cumulus-provision-url` (defined) | `{server}/cumulus/{serial}/ztp.sh` (`/cumulus/ztp.sh` without a serial) |
//! | `files` | RtBrick CTRLD | 210 `loader-pathprefix` (defined) | `{server}` (CTRLD asks `{base}/ztp/config/…`) |
//!
//! ONIE gets `{server}/onie` and never a file name: ONIE reads 114 (and 125's sub-options) in
//! install and update mode alike, and the server picks installer or updater by
//! `ONIE-OPERATION`. Option 125 (enterprise 42623) is not emitted: on top of 114 it would make
//! ONIE ask `/onie` twice per discovery pass. Written by hand, both its sub-options 1 and 2 must
//! be `{server}/onie` as well.
//!
//! A host is identified by its MAC address when the profile lists MACs, otherwise by the client
//! identifier each family builds from its serial (option 61):
//!
//! - ONIE (and RtBrick, whose example configs use the same): `0x00` + the serial (§1.2, §4);
//!   this host carries 114 and 210.
//! - SONiC: `SONiC##<product-name>##<serial>`; NVOS: `NVOS##<product-name>##<serial>` (§3.1, §3.4),
//!   one host per model the profile lists (the product name is part of the identifier); it
//!   carries 67. Without models the device cannot be reserved this way (a [`Note`]). Newer NVOS
//!   builds append `##<interface>`: those need a MAC.
//! - Cumulus sends no serial-based identifier (§2.2): a Cumulus device needs a MAC (a [`Note`]).
//!
//! Which MAC belongs to which serial: when a profile lists exactly one serial, every MAC it lists
//! is that device's and its hosts use the per-serial URLs. Otherwise MAC hosts use the
//! by-headers URLs (`/nvos/ztp.json`, `/cumulus/ztp.sh`; the device sends its serial in the
//! headers) and each serial gets its client-identifier hosts. Model-only profiles reserve
//! nothing (a [`Note`]). DHCPv6 (option 59) needs the device's DUID, which no profile records: not
//! generated.
//!
//! Switches ([`plan_with_switches`]): a Switch with a `macAddress` gets a host of its own, by that
//! MAC, with the options of the profile its device gets (the one it pins, else the one its
//! serial, MAC or model matches: [`crate::profile::index`], as the server decides), the per-serial
//! URLs of its serial, and its `hostname` (ISC `host-name`, Kea `hostname`). Its host goes before
//! the profiles': a profile listing the same MAC is noted and skipped. A Switch without a MAC, or
//! whose profile is missing or matches nothing, is a [`Note`].

pub mod isc;
pub mod kea;

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{
    api::{Switch, SwitchProfile, SwitchProfileSpec, names::validate_segment},
    profile::{
        identity::{DeviceIdentity, Family, normalize_mac},
        index::DeviceIndex,
        snapshot::{ProfileSnapshot, Snapshot, SwitchSnapshot},
    },
    routes::url,
};

/// The client-identifier prefix of a ZTP JSON family: `NVOS` or `SONiC`.
fn client_id_prefix(family: Family) -> &'static str {
    match family {
        Family::Sonic => "SONiC",
        _ => "NVOS",
    }
}

/// What to generate for.
#[derive(Debug, Clone)]
pub struct Options {
    /// This server's base URL as the switches reach it, e.g. `http://ztp.example.net:8080`.
    pub server_url: String,
    /// NVOS or SONiC paths and client identifiers for profiles that have both `ztp` and `sonic`.
    pub ztp_family: Family,
}

/// Why no configuration can be generated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    /// The server URL is not usable as a DHCP option value.
    #[error(
        "server URL {0:?} must start with http:// or https:// and contain no whitespace, quotes or backslashes"
    )]
    ServerUrl(String),
    /// A MAC address in a profile is not a MAC address.
    #[error("SwitchProfile {profile}: {mac:?} is not a MAC address (six hex pairs)")]
    Mac { profile: String, mac: String },
    /// A serial number that cannot be a URL path segment.
    #[error("SwitchProfile {profile}: {source}")]
    Serial { profile: String, source: crate::api::names::SegmentError },
    /// A Switch's MAC address is not a MAC address.
    #[error("Switch {switch}: {mac:?} is not a MAC address (six hex pairs)")]
    SwitchMac { switch: String, mac: String },
    /// A Switch's serial number cannot be a URL path segment.
    #[error("Switch {switch}: {source}")]
    SwitchSerial { switch: String, source: crate::api::names::SegmentError },
    /// Not a family whose ZTP JSON paths and client identifiers the reservations can carry.
    #[error("ZTP family {0}: only nvos or sonic")]
    ZtpFamily(Family),
}

/// A standard or defined DHCPv4 option, by code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptionKind {
    /// 67 `bootfile-name` (NVOS / SONiC ZTP JSON URL). Standard in ISC and Kea.
    BootfileName,
    /// 114 `default-url` (ONIE's URL in install and update mode: always `{server}/onie`).
    /// Standard in ISC and Kea (Kea: RFC 8910's captive-portal definition, a string as well).
    DefaultUrl,
    /// 210 `loader-pathprefix` (RFC 5071; RtBrick CTRLD base URL). Defined: ISC dhcpd before
    /// 4.4 and Kea do not know it.
    PathPrefix,
    /// 239 `cumulus-provision-url` (Cumulus ZTP script URL). Site-specific code: always defined.
    CumulusProvisionUrl,
}

impl OptionKind {
    /// The option code.
    pub fn code(self) -> u8 {
        match self {
            OptionKind::BootfileName => 67,
            OptionKind::DefaultUrl => 114,
            OptionKind::PathPrefix => 210,
            OptionKind::CumulusProvisionUrl => 239,
        }
    }

    /// The name ISC dhcpd uses (and the one defined when [`OptionKind::needs_definition`]).
    pub fn isc_name(self) -> &'static str {
        match self {
            OptionKind::BootfileName => "bootfile-name",
            OptionKind::DefaultUrl => "default-url",
            OptionKind::PathPrefix => "loader-pathprefix",
            OptionKind::CumulusProvisionUrl => "cumulus-provision-url",
        }
    }

    /// Whether the configuration must define the option (text / string type) before using it.
    pub fn needs_definition(self) -> bool {
        matches!(self, OptionKind::PathPrefix | OptionKind::CumulusProvisionUrl)
    }
}

/// One option value on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOption {
    pub kind: OptionKind,
    /// Text (a URL).
    pub value: String,
}

/// How the DHCP server recognises the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostId {
    /// Hardware address, normalised `aa:bb:cc:dd:ee:ff`.
    Mac(String),
    /// Option 61 client identifier, raw bytes.
    ClientId(Vec<u8>),
}

impl HostId {
    /// Colon-separated lower-case hex: the MAC itself, or the client identifier's bytes.
    pub fn hex(&self) -> String {
        match self {
            HostId::Mac(m) => m.clone(),
            HostId::ClientId(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        }
    }
}

/// One host reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// A unique name made of `a-z 0-9 -` (an ISC identifier, a Kea hostname-free label).
    pub name: String,
    /// `namespace/name` of the profile.
    pub profile: String,
    /// `namespace/name` of the Switch whose host this is; `None` for a profile's host.
    pub switch: Option<String>,
    /// The serial, when known for this host.
    pub serial: Option<String>,
    /// The host name to give the device (a Switch's `hostname`).
    pub hostname: Option<String>,
    pub id: HostId,
    /// Sorted by code.
    pub options: Vec<HostOption>,
}

impl Reservation {
    /// Who declared this host, for notes: `Switch namespace/name`, or the profile's
    /// `namespace/name`.
    pub fn owner(&self) -> String {
        match &self.switch {
            Some(s) => format!("Switch {s}"),
            None => self.profile.clone(),
        }
    }
}

/// Something that could not be reserved, or a caveat; printed on stderr and as a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note(pub String);

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The reservations (the Switches' hosts by Switch namespace/name, then the profiles' by
/// profile, then name) and the notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub reservations: Vec<Reservation>,
    pub notes: Vec<Note>,
}

impl Plan {
    /// The options used by any host, each once, by code.
    pub fn used_options(&self) -> Vec<OptionKind> {
        let mut kinds: Vec<OptionKind> =
            self.reservations.iter().flat_map(|r| r.options.iter().map(|o| o.kind)).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Checks and normalises the server URL (no trailing `/`). Option values are text: whitespace
/// makes SONiC reject the URL (§3.1), quotes and backslashes would need escaping everywhere.
pub fn server_url(url: &str) -> Result<String, DhcpError> {
    let trimmed = url.trim_end_matches('/');
    let scheme_ok = trimmed.starts_with("http://") || trimmed.starts_with("https://");
    let host_ok = trimmed.split_once("://").is_some_and(|(_, rest)| !rest.is_empty());
    let chars_ok = !trimmed.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\');
    if scheme_ok && host_ok && chars_ok {
        Ok(trimmed.to_owned())
    } else {
        Err(DhcpError::ServerUrl(url.to_owned()))
    }
}

/// `a-z 0-9 -` only, runs of anything else collapsed to one `-`.
fn label(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// The host reservations for `profiles`, pointing at `options.server_url`.
pub fn plan(profiles: &[SwitchProfile], options: &Options) -> Result<Plan, DhcpError> {
    plan_with_switches(profiles, &[], options)
}

/// The host reservations for `switches` (those with a MAC address) and `profiles`, pointing at
/// `options.server_url`: a Switch's host first, then the profiles' as [`plan`] makes them.
pub fn plan_with_switches(
    profiles: &[SwitchProfile],
    switches: &[Switch],
    options: &Options,
) -> Result<Plan, DhcpError> {
    let server = server_url(&options.server_url)?;
    if !matches!(options.ztp_family, Family::Nvos | Family::Sonic) {
        return Err(DhcpError::ZtpFamily(options.ztp_family));
    }
    let mut plan = Plan::default();
    if server.starts_with("https://") {
        plan.notes.push(Note(
            "the server URL is https: stock ONIE cannot fetch https (docs/protocols.md §1.7); give an http --server-url for ONIE".into(),
        ));
    }
    let mut sorted: Vec<&SwitchProfile> = profiles.iter().collect();
    let key = |p: &SwitchProfile| {
        (
            p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            p.metadata.name.clone().unwrap_or_default(),
        )
    };
    sorted.sort_by_key(|p| key(p));
    switch_hosts(switches, &sorted, &server, options.ztp_family, &mut plan)?;
    for p in sorted {
        let (ns, name) = key(p);
        profile_hosts(p, &format!("{ns}/{name}"), &server, options.ztp_family, &mut plan)?;
    }
    // One host per identifier: the first profile by namespace/name wins, as when serving.
    let mut owners = std::collections::HashMap::<HostId, String>::new();
    let mut kept = Vec::new();
    for r in std::mem::take(&mut plan.reservations) {
        match owners.get(&r.id) {
            Some(first) => plan.notes.push(Note(format!(
                "{}: {} is also claimed by {first}, which wins (as the server decides): skipped",
                r.owner(),
                r.id.hex()
            ))),
            None => {
                owners.insert(r.id.clone(), r.owner());
                kept.push(r);
            }
        }
    }
    plan.reservations = kept;
    // Unique names: a second host of the same name (e.g. one MAC in two profiles) gets `-2`, ….
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for r in &mut plan.reservations {
        let n = seen.entry(r.name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            r.name = format!("{}-{n}", r.name);
        }
    }
    Ok(plan)
}

/// The families a profile serves, and so the options its hosts carry.
#[derive(Debug, Clone, Copy)]
struct Serves {
    /// `onie`: option 114.
    onie: bool,
    /// `ztp` or `sonic`: option 67, with `ztp_family`'s paths.
    ztp: bool,
    /// NVOS for a profile with only `ztp`, SONiC with only `sonic`, else the option's.
    ztp_family: Family,
    /// `files`: option 210.
    rtbrick: bool,
    /// `cumulus`: option 239.
    cumulus: bool,
}

impl Serves {
    fn of(spec: &SwitchProfileSpec, ztp_family: Family) -> Self {
        Serves {
            onie: spec.onie.is_some(),
            ztp: spec.ztp.is_some() || spec.sonic.is_some(),
            ztp_family: match (spec.ztp.is_some(), spec.sonic.is_some()) {
                (true, false) => Family::Nvos,
                (false, true) => Family::Sonic,
                _ => ztp_family,
            },
            rtbrick: !spec.files.is_empty(),
            cumulus: spec.cumulus.is_some(),
        }
    }

    fn any(&self) -> bool {
        self.onie || self.ztp || self.cumulus || self.rtbrick
    }

    /// Every option these families need, for a host whose serial is `serial`, by code.
    fn options(&self, server: &str, serial: Option<&str>) -> Vec<HostOption> {
        let mut o = Vec::new();
        if self.ztp {
            let value = url::ztp_json(server, self.ztp_family, serial);
            o.push(HostOption { kind: OptionKind::BootfileName, value });
        }
        if self.onie {
            o.push(HostOption { kind: OptionKind::DefaultUrl, value: url::onie(server) });
        }
        if self.rtbrick {
            o.push(HostOption { kind: OptionKind::PathPrefix, value: server.to_owned() });
        }
        if self.cumulus {
            o.push(HostOption { kind: OptionKind::CumulusProvisionUrl, value: url::cumulus(server, serial) });
        }
        o
    }
}

/// Whether `name` can go into option 12 as it is: dot-separated labels of `A-Z a-z 0-9 -`.
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The hosts of the Switches that declare a MAC address, each with the options of the profile
/// its device gets (`profiles` sorted by namespace/name, as the index takes them in standalone).
fn switch_hosts(
    switches: &[Switch],
    profiles: &[&SwitchProfile],
    server: &str,
    ztp_family: Family,
    plan: &mut Plan,
) -> Result<(), DhcpError> {
    if switches.is_empty() {
        return Ok(());
    }
    let ns_name = |m: &ObjectMeta| {
        (m.namespace.clone().unwrap_or_else(|| "default".into()), m.name.clone().unwrap_or_default())
    };
    let mut sorted: Vec<&Switch> = switches.iter().collect();
    sorted.sort_by_key(|s| ns_name(&s.metadata));
    // The keys the server matches by, as its snapshot holds them: one index, one rule.
    let snapshot = Snapshot {
        profiles: profiles
            .iter()
            .map(|p| {
                let (namespace, name) = ns_name(&p.metadata);
                let m = &p.spec.selector;
                ProfileSnapshot {
                    namespace,
                    name,
                    serial_numbers: m.serial_numbers.clone(),
                    mac_addresses: m.mac_addresses.iter().filter_map(|m| normalize_mac(m)).collect(),
                    models: m.models.clone(),
                    ..Default::default()
                }
            })
            .collect(),
        switches: sorted
            .iter()
            .map(|s| {
                let (namespace, name) = ns_name(&s.metadata);
                SwitchSnapshot {
                    namespace,
                    name,
                    serial_number: s.spec.serial_number.clone(),
                    mac_address: s.spec.mac_address.as_deref().and_then(normalize_mac),
                    model: s.spec.model.clone(),
                    profile: s.spec.profile.clone(),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    };
    let index = DeviceIndex::build(&snapshot);
    for sw in sorted {
        let (ns, name) = ns_name(&sw.metadata);
        let switch = format!("{ns}/{name}");
        let spec = &sw.spec;
        validate_segment("serial number", &spec.serial_number)
            .map_err(|source| DhcpError::SwitchSerial { switch: switch.clone(), source })?;
        let Some(raw) = &spec.mac_address else {
            plan.notes.push(Note(format!(
                "Switch {switch}: no macAddress; a profile listing serial {} reserves it by client identifier: skipped",
                spec.serial_number
            )));
            continue;
        };
        let mac = normalize_mac(raw)
            .ok_or_else(|| DhcpError::SwitchMac { switch: switch.clone(), mac: raw.clone() })?;
        let id = DeviceIdentity::declared(&spec.serial_number, Some(&mac), spec.model.as_deref());
        let Some(m) = index.lookup(&id) else {
            let why = match &spec.profile {
                Some(p) => format!("its pinned SwitchProfile {ns}/{p} is not among the profiles read"),
                None => "no SwitchProfile matches its serial, MAC or model".to_owned(),
            };
            plan.notes.push(Note(format!("Switch {switch}: {why}: skipped")));
            continue;
        };
        let p = profiles[m.profile];
        let profile = {
            let (pns, pname) = ns_name(&p.metadata);
            format!("{pns}/{pname}")
        };
        let serves = Serves::of(&p.spec, ztp_family);
        if !serves.any() {
            plan.notes.push(Note(format!(
                "Switch {switch}: its SwitchProfile {profile} serves no family (no onie, ztp, sonic, cumulus or files): skipped"
            )));
            continue;
        }
        let hostname = match &spec.hostname {
            Some(h) if is_host_name(h) => Some(h.clone()),
            Some(h) => {
                plan.notes.push(Note(format!(
                    "Switch {switch}: hostname {h:?} is not a DNS host name: left out of its host"
                )));
                None
            }
            None => None,
        };
        plan.reservations.push(Reservation {
            name: format!("{}-{}", label(&format!("ztp-switch-{switch}")), mac.replace(':', "")),
            profile,
            switch: Some(switch),
            serial: Some(spec.serial_number.clone()),
            hostname,
            id: HostId::Mac(mac),
            options: serves.options(server, Some(&spec.serial_number)),
        });
    }
    Ok(())
}

fn profile_hosts(
    p: &SwitchProfile,
    profile: &str,
    server: &str,
    ztp_family: Family,
    plan: &mut Plan,
) -> Result<(), DhcpError> {
    let spec = &p.spec;
    let m = &spec.selector;
    for serial in &m.serial_numbers {
        validate_segment("serial number", serial)
            .map_err(|source| DhcpError::Serial { profile: profile.to_owned(), source })?;
    }
    let mut macs = Vec::new();
    for mac in &m.mac_addresses {
        let normal = normalize_mac(mac)
            .ok_or_else(|| DhcpError::Mac { profile: profile.to_owned(), mac: mac.clone() })?;
        if !macs.contains(&normal) {
            macs.push(normal);
        }
    }
    let serves = Serves::of(spec, ztp_family);
    if !serves.any() {
        plan.notes.push(Note(format!(
            "{profile}: serves no family (no onie, ztp, sonic, cumulus or files): skipped"
        )));
        return Ok(());
    }
    let Serves {
        onie: serves_onie,
        ztp: serves_ztp,
        ztp_family,
        rtbrick: serves_rtbrick,
        cumulus: serves_cumulus,
    } = serves;
    if m.serial_numbers.is_empty() && macs.is_empty() {
        plan.notes.push(Note(format!(
            "{profile}: matches models only ({}); a model cannot be reserved in DHCP: skipped",
            m.models.join(", ")
        )));
        return Ok(());
    }

    // Every option this profile's families need, for a host whose serial is `serial`.
    let all_options = |serial: Option<&str>| serves.options(server, serial);
    let push = |plan: &mut Plan, name: String, serial: Option<&str>, id: HostId, options: Vec<HostOption>| {
        plan.reservations.push(Reservation {
            name,
            profile: profile.to_owned(),
            switch: None,
            serial: serial.map(str::to_owned),
            hostname: None,
            id,
            options,
        });
    };
    let base = label(&format!("ztp-{profile}"));

    // One serial: the MACs are that device's.
    let mac_serial = match m.serial_numbers.as_slice() {
        [one] if !macs.is_empty() => Some(one.as_str()),
        _ => None,
    };
    for mac in &macs {
        let name = format!("{base}-{}", mac.replace(':', ""));
        push(plan, name, mac_serial, HostId::Mac(mac.clone()), all_options(mac_serial));
    }
    if mac_serial.is_some() {
        return Ok(());
    }
    for serial in &m.serial_numbers {
        let serial_label = label(serial);
        if serves_onie || serves_rtbrick {
            let options: Vec<HostOption> = all_options(Some(serial))
                .into_iter()
                .filter(|o| matches!(o.kind, OptionKind::DefaultUrl | OptionKind::PathPrefix))
                .collect();
            let mut id = vec![0u8];
            id.extend_from_slice(serial.as_bytes());
            push(plan, format!("{base}-{serial_label}-onie"), Some(serial), HostId::ClientId(id), options);
        }
        if serves_ztp {
            if m.models.is_empty() {
                plan.notes.push(Note(format!(
                    "{profile}: {} identifies itself as {}##<product-name>##{serial}; list its model (product name) or MAC to reserve it",
                    ztp_family.as_str(),
                    client_id_prefix(ztp_family)
                )));
            }
            for model in &m.models {
                let id = format!("{}##{model}##{serial}", client_id_prefix(ztp_family));
                let options: Vec<HostOption> = all_options(Some(serial))
                    .into_iter()
                    .filter(|o| o.kind == OptionKind::BootfileName)
                    .collect();
                let name = format!("{base}-{serial_label}-{}-{}", ztp_family.as_str(), label(model));
                push(plan, name, Some(serial), HostId::ClientId(id.into_bytes()), options);
            }
        }
        if serves_cumulus {
            plan.notes.push(Note(format!(
                "{profile}: Cumulus Linux sends no client identifier built from the serial ({serial}); list its MAC to reserve option 239"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Profiles from YAML, as users write them.
    pub(crate) fn profiles(yaml: &str) -> Vec<SwitchProfile> {
        yaml_serde::Deserializer::from_str(yaml)
            .map(|doc| {
                let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
                serde_json::from_value(v).expect("profile")
            })
            .collect()
    }

    pub(crate) const PROFILES: &str = r##"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: spine01, namespace: dc1}
spec:
  match: {serialNumbers: ["RB2301A0042"], macAddresses: ["0C-42-A1-00-00-42"]}
  onie: {installImage: {name: rbfs}}
  files: {startup: {inline: "{}"}}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: leaf07}
spec:
  match: {serialNumbers: ["SN-LEAF07"], macAddresses: ["0c:42:a1:00:00:07"]}
  onie: {installImage: {name: nos}}
  ztp: {sections: [{kind: connectivity-check, pingHosts: ["192.0.2.1"]}]}
  cumulus: {script: {inline: "# CUMULUS-AUTOPROVISIONING"}}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: leafs}
spec:
  match: {serialNumbers: ["SN-A", "SN-B"], models: ["N5110_LD"]}
  onie: {installImage: {name: nos}}
  ztp: {sections: [{kind: connectivity-check, pingHosts: ["192.0.2.1"]}]}
  cumulus: {script: {inline: "# CUMULUS-AUTOPROVISIONING"}}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: default}
spec:
  match: {models: ["MSN2410"]}
  cumulus: {script: {inline: "# CUMULUS-AUTOPROVISIONING"}}
"##;

    pub(crate) fn options() -> Options {
        Options { server_url: "http://ztp.example.net:8080/".into(), ztp_family: Family::Nvos }
    }

    fn find<'a>(plan: &'a Plan, id: &HostId) -> &'a Reservation {
        plan.reservations
            .iter()
            .find(|r| &r.id == id)
            .unwrap_or_else(|| panic!("no host {id:?} in {plan:#?}"))
    }

    fn values(r: &Reservation) -> Vec<(u8, &str)> {
        r.options.iter().map(|o| (o.kind.code(), o.value.as_str())).collect()
    }

    #[test]
    fn only_a_ztp_json_family_names_the_ztp_paths() {
        let refused = plan(&[], &Options { ztp_family: Family::Cumulus, ..options() });
        assert_eq!(refused, Err(DhcpError::ZtpFamily(Family::Cumulus)));
    }

    #[test]
    fn a_mac_and_one_serial_make_one_host_with_every_family() {
        let plan = plan(&profiles(PROFILES), &options()).expect("plan");
        let s = "http://ztp.example.net:8080";
        let leaf07 = find(&plan, &HostId::Mac("0c:42:a1:00:00:07".into()));
        assert_eq!(
            values(leaf07),
            [
                (67, format!("{s}/nvos/SN-LEAF07/ztp.json").as_str()),
                (114, format!("{s}/onie").as_str()),
                (239, format!("{s}/cumulus/SN-LEAF07/ztp.sh").as_str()),
            ]
        );
        let spine = find(&plan, &HostId::Mac("0c:42:a1:00:00:42".into()));
        assert_eq!(values(spine), [(114, format!("{s}/onie").as_str()), (210, s)]);
        assert_eq!(spine.profile, "dc1/spine01");
        // Identified by MAC: no client-id host for those serials.
        assert!(
            !plan
                .reservations
                .iter()
                .any(|r| r.serial.as_deref() == Some("SN-LEAF07") && matches!(r.id, HostId::ClientId(_)))
        );
    }

    /// ONIE asks the same URL in install and update mode: it must be `/onie` (the server picks by
    /// `ONIE-OPERATION`), never a file name, and 125 is not emitted besides 114.
    #[test]
    fn every_onie_host_gets_the_fixed_url_for_both_modes_and_no_125() {
        let plan = plan(&profiles(PROFILES), &options()).expect("plan");
        let onie_hosts: Vec<&Reservation> = plan
            .reservations
            .iter()
            .filter(|r| r.options.iter().any(|o| o.kind == OptionKind::DefaultUrl))
            .collect();
        assert!(onie_hosts.len() >= 3, "{plan:#?}");
        for host in onie_hosts {
            for (code, value) in values(host) {
                assert_ne!(code, 125, "{host:?}");
                if code == 114 {
                    assert_eq!(value, "http://ztp.example.net:8080/onie", "{host:?}");
                }
            }
        }
    }

    #[test]
    fn serials_without_mac_get_the_client_ids_of_protocols_md() {
        let plan = plan(&profiles(PROFILES), &options()).expect("plan");
        let s = "http://ztp.example.net:8080";
        for serial in ["SN-A", "SN-B"] {
            let onie = find(&plan, &HostId::ClientId([b"\0", serial.as_bytes()].concat()));
            assert_eq!(values(onie), [(114, format!("{s}/onie").as_str())]);
            let nvos = find(&plan, &HostId::ClientId(format!("NVOS##N5110_LD##{serial}").into_bytes()));
            assert_eq!(values(nvos), [(67, format!("{s}/nvos/{serial}/ztp.json").as_str())]);
        }
        // Cumulus cannot be reserved by serial; the model-only profile not at all.
        let notes: Vec<String> = plan.notes.iter().map(|n| n.0.clone()).collect();
        assert!(notes.iter().any(|n| n.contains("default/leafs") && n.contains("SN-A") && n.contains("MAC")));
        assert!(
            notes.iter().any(|n| n.contains("default/default") && n.contains("models only")),
            "{notes:?}"
        );
        assert_eq!(plan.reservations.len(), 2 + 4);
    }

    #[test]
    fn sonic_paths_and_client_ids() {
        // A profile with only `sonic` is SONiC's, one with only `ztp` NVOS's, whatever the flag
        // says; the flag decides for a profile with both.
        let yaml = r##"
kind: SwitchProfile
metadata: {name: s}
spec:
  match: {serialNumbers: ["SN-S"], models: ["AS7726"]}
  sonic: {sections: [{connectivityCheck: {pingHosts: ["192.0.2.1"]}}]}
---
kind: SwitchProfile
metadata: {name: n}
spec:
  match: {serialNumbers: ["SN-N"], models: ["N5110_LD"]}
  ztp: {sections: [{kind: connectivity-check}]}
---
kind: SwitchProfile
metadata: {name: both}
spec:
  match: {serialNumbers: ["SN-B"], models: ["X1"]}
  ztp: {sections: [{kind: connectivity-check}]}
  sonic: {sections: [{connectivityCheck: {pingHosts: ["192.0.2.1"]}}]}
"##;
        let url = |fam: &str, serial: &str| format!("http://ztp.example.net:8080/{fam}/{serial}/ztp.json");
        for (flag, both) in [(Family::Nvos, "NVOS##X1##SN-B"), (Family::Sonic, "SONiC##X1##SN-B")] {
            let plan = plan(&profiles(yaml), &Options { ztp_family: flag, ..options() }).expect("plan");
            let r = find(&plan, &HostId::ClientId(b"SONiC##AS7726##SN-S".to_vec()));
            assert_eq!(values(r), [(67, url("sonic", "SN-S").as_str())]);
            let r = find(&plan, &HostId::ClientId(b"NVOS##N5110_LD##SN-N".to_vec()));
            assert_eq!(values(r), [(67, url("nvos", "SN-N").as_str())]);
            let r = find(&plan, &HostId::ClientId(both.as_bytes().to_vec()));
            assert_eq!(values(r), [(67, url(flag.as_str(), "SN-B").as_str())]);
        }
    }

    #[test]
    fn several_serials_and_macs_use_the_header_urls() {
        let yaml = r##"
kind: SwitchProfile
metadata: {name: pair}
spec:
  match: {serialNumbers: ["S1", "S2"], macAddresses: ["0c:42:a1:00:00:01", "0c42.a100.0002"]}
  ztp: {sections: [{kind: connectivity-check}]}
  cumulus: {script: {inline: "# CUMULUS-AUTOPROVISIONING"}}
"##;
        let plan = plan(&profiles(yaml), &options()).expect("plan");
        let mac = find(&plan, &HostId::Mac("0c:42:a1:00:00:02".into()));
        assert_eq!(mac.serial, None);
        assert_eq!(
            values(mac),
            [
                (67, "http://ztp.example.net:8080/nvos/ztp.json"),
                (239, "http://ztp.example.net:8080/cumulus/ztp.sh")
            ]
        );
        // No model: the NVOS client id cannot be built, said so.
        assert!(plan.notes.iter().any(|n| n.0.contains("NVOS##<product-name>##S1")), "{:?}", plan.notes);
    }

    #[test]
    fn names_are_unique_labels_and_order_is_deterministic() {
        let mut ps = profiles(PROFILES);
        let a = plan(&ps, &options()).expect("plan");
        ps.reverse();
        let b = plan(&ps, &options()).expect("plan");
        assert_eq!(a, b);
        let mut names: Vec<&str> = a.reservations.iter().map(|r| r.name.as_str()).collect();
        assert!(
            names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        );
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn a_mac_claimed_twice_goes_to_the_first_profile() {
        let yaml = "kind: SwitchProfile\nmetadata: {name: b}\nspec: {match: {macAddresses: [\"0c:42:a1:00:00:09\"]}, onie: {}}\n---\nkind: SwitchProfile\nmetadata: {name: a}\nspec: {match: {macAddresses: [\"0C:42:A1:00:00:09\"]}, cumulus: {script: {inline: x}}}\n";
        let plan = plan(&profiles(yaml), &options()).expect("plan");
        assert_eq!(plan.reservations.len(), 1);
        assert_eq!(plan.reservations[0].profile, "default/a");
        assert_eq!(plan.reservations[0].options[0].kind, OptionKind::CumulusProvisionUrl);
        assert!(
            plan.notes
                .iter()
                .any(|n| n.0.starts_with("default/b: 0c:42:a1:00:00:09 is also claimed by default/a"))
        );
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let bad_mac = profiles(
            "kind: SwitchProfile\nmetadata: {name: x}\nspec: {match: {macAddresses: [\"zz\"]}, onie: {}}\n",
        );
        assert!(matches!(plan(&bad_mac, &options()), Err(DhcpError::Mac { .. })));
        let bad_serial = profiles(
            "kind: SwitchProfile\nmetadata: {name: x}\nspec: {match: {serialNumbers: [\"a/b\"]}, onie: {}}\n",
        );
        assert!(matches!(plan(&bad_serial, &options()), Err(DhcpError::Serial { .. })));
        for url in ["ztp.example.net", "http://", "http://a b", "http://a\"b", "ftp://x"] {
            let o = Options { server_url: url.into(), ..options() };
            assert_eq!(plan(&[], &o), Err(DhcpError::ServerUrl(url.into())), "{url}");
        }
    }

    /// Switches from YAML, as `ztpctl nautobot check --output yaml` prints them.
    fn switches(yaml: &str) -> Vec<Switch> {
        yaml_serde::Deserializer::from_str(yaml)
            .map(|doc| {
                let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
                serde_json::from_value(v).expect("switch")
            })
            .collect()
    }

    const SWITCHES: &str = r##"
kind: Switch
metadata: {name: sn-a, namespace: default}
spec: {serialNumber: SN-A, macAddress: "02:5A:00:00:00:0A", hostname: leaf-a}
---
kind: Switch
metadata: {name: pinned, namespace: dc1}
spec: {serialNumber: SN-P, macAddress: "02:5a:00:00:00:0b", model: MSN2410, profile: spine01, hostname: "not a name"}
---
kind: Switch
metadata: {name: by-model}
spec: {serialNumber: SN-M, macAddress: "02:5a:00:00:00:0c", model: MSN2410}
---
kind: Switch
metadata: {name: no-mac}
spec: {serialNumber: SN-X, model: MSN2410}
---
kind: Switch
metadata: {name: nothing}
spec: {serialNumber: SN-N, macAddress: "02:5a:00:00:00:0d", model: OTHER}
---
kind: Switch
metadata: {name: lost-pin}
spec: {serialNumber: SN-L, macAddress: "02:5a:00:00:00:0e", profile: gone}
"##;

    #[test]
    fn a_switch_with_a_mac_gets_its_profiles_options_its_serials_urls_and_its_hostname() {
        let plan = plan_with_switches(&profiles(PROFILES), &switches(SWITCHES), &options()).expect("plan");
        let s = "http://ztp.example.net:8080";
        // By serial: SN-A is default/leafs's (onie, ztp, cumulus), with SN-A's own URLs.
        let a = find(&plan, &HostId::Mac("02:5a:00:00:00:0a".into()));
        assert_eq!(
            values(a),
            [
                (67, format!("{s}/nvos/SN-A/ztp.json").as_str()),
                (114, format!("{s}/onie").as_str()),
                (239, format!("{s}/cumulus/SN-A/ztp.sh").as_str()),
            ]
        );
        assert_eq!(
            (a.switch.as_deref(), a.profile.as_str(), a.serial.as_deref(), a.hostname.as_deref()),
            (Some("default/sn-a"), "default/leafs", Some("SN-A"), Some("leaf-a"))
        );
        // Pinned: the pin wins over its model's profile; a hostname DHCP cannot carry is left out.
        let p = find(&plan, &HostId::Mac("02:5a:00:00:00:0b".into()));
        assert_eq!((p.profile.as_str(), p.hostname.as_deref()), ("dc1/spine01", None));
        assert_eq!(values(p), [(114, format!("{s}/onie").as_str()), (210, s)]);
        // By model.
        let m = find(&plan, &HostId::Mac("02:5a:00:00:00:0c".into()));
        assert_eq!(m.profile, "default/default");
        assert_eq!(values(m), [(239, format!("{s}/cumulus/SN-M/ztp.sh").as_str())]);
        // No MAC, no profile, a missing pin: notes, no host.
        let notes: Vec<&str> = plan.notes.iter().map(|n| n.0.as_str()).collect();
        for (switch, why) in [
            ("default/no-mac", "no macAddress"),
            ("default/nothing", "no SwitchProfile matches"),
            ("default/lost-pin", "pinned SwitchProfile default/gone is not among"),
            ("dc1/pinned", "is not a DNS host name"),
        ] {
            assert!(
                notes.iter().any(|n| n.starts_with(&format!("Switch {switch}: ")) && n.contains(why)),
                "{switch}: {notes:?}"
            );
        }
        assert_eq!(plan.reservations.iter().filter(|r| r.switch.is_some()).count(), 3);
        // The profiles' hosts are all still there.
        let alone = super::plan(&profiles(PROFILES), &options()).expect("plan");
        for r in &alone.reservations {
            assert!(plan.reservations.contains(r), "{r:?}");
        }
    }

    #[test]
    fn a_switch_wins_a_mac_a_profile_also_lists() {
        let yaml = "kind: Switch\nmetadata: {name: leaf07}\nspec: {serialNumber: SN-LEAF07, macAddress: \"0c:42:a1:00:00:07\", hostname: leaf07}\n";
        let plan = plan_with_switches(&profiles(PROFILES), &switches(yaml), &options()).expect("plan");
        let hosts: Vec<&Reservation> =
            plan.reservations.iter().filter(|r| r.id == HostId::Mac("0c:42:a1:00:00:07".into())).collect();
        assert_eq!(hosts.len(), 1, "{hosts:?}");
        assert_eq!(hosts[0].switch.as_deref(), Some("default/leaf07"));
        assert_eq!(hosts[0].profile, "default/leaf07");
        assert!(
            plan.notes.iter().any(|n| n
                .0
                .starts_with("default/leaf07: 0c:42:a1:00:00:07 is also claimed by Switch default/leaf07")),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn switch_hosts_render_their_hostname_and_switch() {
        let plan = plan_with_switches(&profiles(PROFILES), &switches(SWITCHES), &options()).expect("plan");
        let a = find(&plan, &HostId::Mac("02:5a:00:00:00:0a".into()));
        let text = isc::render(&plan, "s", "test");
        let block = &text[text.find(&format!("host {} {{", a.name)).expect("host block")..];
        assert!(
            block.starts_with(&format!(
                "host {} {{\n  hardware ethernet 02:5a:00:00:00:0a;\n  option host-name \"leaf-a\";\n  option bootfile-name",
                a.name
            )),
            "{block}"
        );
        assert!(
            text.contains("# Switch default/sn-a (SwitchProfile default/leafs), serial SN-A\n"),
            "{text}"
        );
        let doc = kea::render(&plan, "s", "test");
        let host = doc["Dhcp4"]["reservations"]
            .as_array()
            .expect("reservations")
            .iter()
            .find(|h| h["hw-address"] == "02:5a:00:00:00:0a")
            .expect("the Switch's host");
        assert_eq!(host["hostname"], "leaf-a");
        assert_eq!(host["user-context"]["switch"], "default/sn-a");
        assert_eq!(host["user-context"]["switchprofile"], "default/leafs");
    }

    #[test]
    fn a_switchs_bad_mac_is_a_typed_error() {
        let bad = switches("kind: Switch\nmetadata: {name: x}\nspec: {serialNumber: S, macAddress: zz}\n");
        assert!(matches!(plan_with_switches(&[], &bad, &options()), Err(DhcpError::SwitchMac { .. })));
    }
}
