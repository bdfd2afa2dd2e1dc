//! Reading a source's inventory from Nautobot: a **full read** (every selected device with its
//! rendered config context, their MAC interfaces, and the platforms, roles, device types, software
//! versions and image files), and an **incremental read** that asks Nautobot's change log what
//! changed since the last read and reads only that again.
//!
//! The full read is **one GraphQL query** ([`full_query`]): it asks only for the fields the
//! objects are read for, aliased to their REST names, so its answer parses into the same
//! [`super::model`] types; measured against the REST read ([`full_rest`], kept as the reference
//! `bench/nautobot.sh reads` compares with) it costs Nautobot ~9× less CPU and time and ~5.6× fewer
//! bytes (`docs/nautobot.md`). The incremental read stays on REST: the change log is where
//! deletions and MAC changes show, and a quiet poll is one request.
//!
//! A no-change poll is one request (the change log since the mark, empty). Changed devices are
//! read again by id (with the source's filter, so a device that left it is gone), their MAC
//! interfaces by device; a changed platform, role, device type, software version or image file
//! re-reads that (small) list. A change that may alter which devices are selected or what their
//! config context renders to (a config context, location, status, tag, custom field) makes the
//! next read a full one, as does a mark the change log no longer reaches.
//!
//! The mark is Nautobot's own clock: the newest change-log entry's time when a read starts (a
//! change made during the read is read again next time: reads are idempotent). Every read is all
//! or nothing: an error leaves the caller's inventory as it was.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{
    client::{Nautobot, NautobotError},
    map::{DEVICE_READ_PARAMS, Inventory, device_query, keep_what_is_read},
    model::{Device, DeviceType, Interface, Platform, Role, SoftwareImageFile, SoftwareVersion},
};
use crate::api::nautobot::NautobotSourceSpec;

const DEVICES: &str = "/api/dcim/devices/";
const INTERFACES: &str = "/api/dcim/interfaces/";
const PLATFORMS: &str = "/api/dcim/platforms/";
const ROLES: &str = "/api/extras/roles/";
const DEVICE_TYPES: &str = "/api/dcim/device-types/";
const SOFTWARE_VERSIONS: &str = "/api/dcim/software-versions/";
const IMAGE_FILES: &str = "/api/dcim/software-image-files/";
const CHANGES: &str = "/api/extras/object-changes/";
/// Ids per request when reading objects again by id (`id=…&id=…`: the URL stays short).
const IDS_PER_REQUEST: usize = 50;

/// Where the next incremental read starts: the time of the newest change-log entry seen, and the
/// ids of the entries at that very time (they are not news again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    /// Nautobot's ISO 8601 time (microseconds); empty: the change log was empty.
    pub time: String,
    pub seen: BTreeSet<String>,
}

/// One change-log entry, as much of it as the reader needs.
#[derive(Debug, Clone, Deserialize)]
struct Change {
    id: String,
    time: String,
    changed_object_type: String,
    #[serde(default)]
    changed_object_id: Option<String>,
    #[serde(default)]
    related_object_id: Option<String>,
}

/// What an incremental read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// No change since the mark.
    Nothing,
    /// Changes read into the inventory: how many change-log entries.
    Applied(usize),
    /// A change only a full read can follow (e.g. a config context, a location): why.
    NeedsFull(String),
}

/// A device as the full read keeps it: the fields [`Device`] reads, under their REST names
/// (`custom_fields` is the stored custom field data; the rendered `config_context`).
const GQL_DEVICE: &str = "id name serial role { id } platform { id } device_type { id } \
     software_version { id } software_image_files { id } custom_fields: _custom_field_data config_context";
const GQL_INTERFACE: &str = "id name device { id } mac_address mgmt_only";
const GQL_SMALL_LISTS: &str = "platforms { id name network_driver manufacturer { id } } \
     roles { id name } device_types { id model manufacturer { id } }";
const GQL_SOFTWARE: &str = "software_versions { id version alias platform { id } status { id } last_updated } \
     software_image_files { id image_file_name image_file_checksum hashing_algorithm image_file_size \
     download_url default_image software_version { id } status { id } last_updated }";

/// The full read's GraphQL query for `spec`. The newest change-log entry comes first (Nautobot
/// resolves fields in order: a change made while the lists are read is read again next time). The
/// filter's lists are the `devices` arguments of the same names as REST's query parameters
/// ([`device_query`]): Nautobot builds them from the same filter set, so they select the same
/// devices (a location takes those under it, `tags` asks for every tag, a name or an id). Values
/// are JSON strings, which GraphQL reads as its own.
pub fn full_query(spec: &NautobotSourceSpec) -> String {
    let mut args: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in device_query(&spec.filter) {
        args.entry(name).or_default().push(serde_json::Value::String(value).to_string());
    }
    let args: Vec<String> =
        args.into_iter().map(|(name, values)| format!("{name}: [{}]", values.join(", "))).collect();
    let devices = match args.is_empty() {
        true => "devices".to_owned(),
        false => format!("devices({})", args.join(", ")),
    };
    let mut q = format!("{{ object_changes(limit: 1) {{ id time }} {devices} {{ {GQL_DEVICE} }} ");
    if let Some(name) = &spec.switches.mac.interface {
        let name = serde_json::Value::String(name.clone());
        q.push_str(&format!("interfaces(name: [{name}]) {{ {GQL_INTERFACE} }} "));
    }
    q.push_str(GQL_SMALL_LISTS);
    if spec.images.enabled {
        q.push(' ');
        q.push_str(GQL_SOFTWARE);
    }
    q.push_str(" }");
    q
}

/// The answer to [`full_query`]. Every list asked for must be there (`{}` is not an empty
/// inventory); those not asked for are `None`.
#[derive(Debug, Deserialize)]
struct FullAnswer {
    object_changes: Vec<Newest>,
    devices: Vec<Device>,
    #[serde(default)]
    interfaces: Option<Vec<Interface>>,
    platforms: Vec<Platform>,
    roles: Vec<Role>,
    device_types: Vec<DeviceType>,
    #[serde(default)]
    software_versions: Option<Vec<SoftwareVersion>>,
    #[serde(default)]
    software_image_files: Option<Vec<SoftwareImageFile>>,
}

/// A change-log entry as the full read's query asks for it.
#[derive(Debug, Deserialize)]
struct Newest {
    id: String,
    time: String,
}

/// Reads everything the source selects: one GraphQL query ([`full_query`]). Returns the inventory
/// and the mark to read changes from. Any error, `errors` in the answer included, is the read's:
/// nothing of the answer is used.
pub async fn full(nb: &Nautobot, spec: &NautobotSourceSpec) -> Result<(Inventory, Mark), NautobotError> {
    let answer: FullAnswer = nb.graphql(&full_query(spec)).await?;
    inventory_of(answer, spec)
        .map_err(|message| NautobotError::Malformed { url: format!("{}/api/graphql/", nb.base()), message })
}

/// The inventory and the mark of a full read's answer; `Err` when a list asked for is missing.
fn inventory_of(answer: FullAnswer, spec: &NautobotSourceSpec) -> Result<(Inventory, Mark), String> {
    let missing = |list: &str| format!("GraphQL: the answer has no {list}");
    let interfaces = match (&spec.switches.mac.interface, answer.interfaces) {
        (None, _) => Vec::new(),
        (Some(_), Some(interfaces)) => interfaces,
        (Some(_), None) => return Err(missing("interfaces")),
    };
    let (versions, files) = match (spec.images.enabled, answer.software_versions, answer.software_image_files)
    {
        (false, _, _) => (Vec::new(), Vec::new()),
        (true, Some(versions), Some(files)) => (versions, files),
        (true, _, _) => return Err(missing("software versions or image files")),
    };
    let mark = match answer.object_changes.into_iter().next() {
        Some(c) => Mark { time: rest_time(&c.time), seen: BTreeSet::from([c.id]) },
        None => Mark::default(),
    };
    let mut inv = Inventory::default();
    inv.add_devices(answer.devices.into_iter().map(|mut d| {
        keep_what_is_read(&mut d, spec);
        d
    }));
    // Only the selected devices' interfaces are kept.
    let selected: BTreeSet<String> = inv.devices.keys().cloned().collect();
    inv.add_interfaces(
        interfaces.into_iter().filter(|i| i.device.as_ref().is_some_and(|d| selected.contains(&d.id))),
    );
    inv.add_platforms(answer.platforms);
    inv.add_roles(answer.roles);
    inv.add_device_types(answer.device_types);
    inv.add_software_versions(versions);
    inv.add_image_files(files);
    Ok((inv, mark))
}

/// A time as the REST API writes it: GraphQL writes UTC as `+00:00`, REST as `Z` (the mark is
/// compared with the REST change log's times).
fn rest_time(time: &str) -> String {
    match time.strip_suffix("+00:00") {
        Some(t) => format!("{t}Z"),
        None => time.to_owned(),
    }
}

/// [`full`] through the REST API: the newest change-log entry, then the lists (1,000 a page, in
/// parallel; 16 requests for 5,000 devices). What the GraphQL read replaced, kept as the reference
/// `bench/nautobot.sh reads` measures it against.
pub async fn full_rest(nb: &Nautobot, spec: &NautobotSourceSpec) -> Result<(Inventory, Mark), NautobotError> {
    // First: a change made while the lists are read is then read again.
    let mark = newest_change(nb).await?;
    let mut devices_query = device_query(&spec.filter);
    devices_query.extend(DEVICE_READ_PARAMS.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let interfaces_query: Vec<(&str, String)> =
        spec.switches.mac.interface.iter().map(|name| ("name", name.clone())).collect();
    let images = spec.images.enabled;
    let (devices, interfaces, platforms, roles, device_types, versions, files) = futures::try_join!(
        nb.list::<Device>(DEVICES, &devices_query),
        async {
            match interfaces_query.is_empty() {
                true => Ok(Vec::new()),
                false => nb.list::<Interface>(INTERFACES, &interfaces_query).await,
            }
        },
        nb.list::<Platform>(PLATFORMS, &[]),
        nb.list::<Role>(ROLES, &[]),
        nb.list::<DeviceType>(DEVICE_TYPES, &[]),
        optional(images, nb.list::<SoftwareVersion>(SOFTWARE_VERSIONS, &[])),
        optional(images, nb.list::<SoftwareImageFile>(IMAGE_FILES, &[])),
    )?;
    let mut inv = Inventory::default();
    inv.add_devices(devices.into_iter().map(|mut d| {
        keep_what_is_read(&mut d, spec);
        d
    }));
    // Only the selected devices' interfaces are kept.
    let selected: BTreeSet<String> = inv.devices.keys().cloned().collect();
    inv.add_interfaces(
        interfaces.into_iter().filter(|i| i.device.as_ref().is_some_and(|d| selected.contains(&d.id))),
    );
    inv.add_platforms(platforms);
    inv.add_roles(roles);
    inv.add_device_types(device_types);
    inv.add_software_versions(versions);
    inv.add_image_files(files);
    Ok((inv, mark))
}

/// Reads what changed since `mark` into `inv` and moves `mark`; on an error neither changes.
pub async fn changes(
    nb: &Nautobot,
    spec: &NautobotSourceSpec,
    inv: &mut Inventory,
    mark: &mut Mark,
) -> Result<Delta, NautobotError> {
    if mark.time.is_empty() {
        // The log was empty at the last read: anything in it now is news.
        if newest_change(nb).await?.time.is_empty() {
            return Ok(Delta::Nothing);
        }
        return Ok(Delta::NeedsFull("the change log had no entry to start from".into()));
    }
    let log: Vec<Change> = nb.list(CHANGES, &[("time__gte", mark.time.clone())]).await?;
    let news: Vec<&Change> = log.iter().filter(|c| !mark.seen.contains(&c.id)).collect();
    if news.is_empty() {
        return Ok(Delta::Nothing);
    }
    let plan = match plan(&news) {
        Ok(plan) => plan,
        Err(why) => return Ok(Delta::NeedsFull(why)),
    };
    // Everything is read first, then put into the inventory: an error leaves it as it was
    // without a copy of it (5,000 devices are ~13 MiB).
    let fetched = fetch(nb, spec, &plan, inv).await?;
    fetched.apply_to(inv);
    *mark = mark_of(&log, mark);
    Ok(Delta::Applied(news.len()))
}

/// What a batch of changes asks to read again.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    devices: BTreeSet<String>,
    /// Devices whose interfaces changed.
    interfaces_of: BTreeSet<String>,
    platforms: bool,
    roles: bool,
    device_types: bool,
    software: bool,
}

/// Sorts changes by what they make read again; `Err(why)` when only a full read can follow one.
fn plan(news: &[&Change]) -> Result<Plan, String> {
    let mut p = Plan::default();
    for c in news {
        let id = c.changed_object_id.clone();
        match c.changed_object_type.as_str() {
            "dcim.device" => p.devices.extend(id),
            "dcim.interface" => p.interfaces_of.extend(c.related_object_id.clone()),
            "dcim.platform" => p.platforms = true,
            "extras.role" => p.roles = true,
            "dcim.devicetype" => p.device_types = true,
            "dcim.softwareversion" | "dcim.softwareimagefile" => p.software = true,
            // Which devices are selected, or what their config context renders to.
            t @ ("extras.configcontext"
            | "extras.configcontextschema"
            | "extras.customfield"
            | "extras.status"
            | "extras.tag"
            | "dcim.location"
            | "dcim.locationtype"
            | "dcim.manufacturer") => return Err(format!("a {t} changed")),
            // Circuits, IP addresses, cables, users, jobs, …: nothing a Switch or OsImage holds.
            _ => {}
        }
    }
    Ok(p)
}

/// What an incremental read read again, not yet in the inventory.
#[derive(Debug, Default)]
struct Fetched {
    /// Devices read again by id: `None` when not found (deleted, or no longer selected by the
    /// filter).
    devices: BTreeMap<String, Option<Device>>,
    /// Devices whose interfaces were read again (theirs are replaced), and those read.
    interfaces_of: BTreeSet<String>,
    interfaces: Vec<Interface>,
    platforms: Option<Vec<Platform>>,
    roles: Option<Vec<Role>>,
    device_types: Option<Vec<DeviceType>>,
    software: Option<(Vec<SoftwareVersion>, Vec<SoftwareImageFile>)>,
}

impl Fetched {
    /// Puts what was read into `inv` (no I/O: it cannot fail half-way).
    fn apply_to(self, inv: &mut Inventory) {
        for (id, device) in self.devices {
            match device {
                Some(d) => drop(inv.devices.insert(id, d)),
                None => {
                    inv.devices.remove(&id);
                    inv.interfaces.retain(|(device, _), _| *device != id);
                }
            }
        }
        if !self.interfaces_of.is_empty() {
            inv.interfaces.retain(|(device, _), _| !self.interfaces_of.contains(device));
            inv.add_interfaces(self.interfaces);
        }
        if let Some(platforms) = self.platforms {
            inv.platforms.clear();
            inv.add_platforms(platforms);
        }
        if let Some(roles) = self.roles {
            inv.roles.clear();
            inv.add_roles(roles);
        }
        if let Some(types) = self.device_types {
            inv.device_types.clear();
            inv.add_device_types(types);
        }
        if let Some((versions, files)) = self.software {
            inv.software_versions.clear();
            inv.image_files.clear();
            inv.add_software_versions(versions);
            inv.add_image_files(files);
        }
    }
}

/// Reads what `plan` names (`inv` as it is now, to know which devices are selected).
async fn fetch(
    nb: &Nautobot,
    spec: &NautobotSourceSpec,
    plan: &Plan,
    inv: &Inventory,
) -> Result<Fetched, NautobotError> {
    let mut out = Fetched::default();
    let mut query = device_query(&spec.filter);
    query.extend(DEVICE_READ_PARAMS.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let ids: Vec<&String> = plan.devices.iter().collect();
    for batch in ids.chunks(IDS_PER_REQUEST) {
        let mut q = query.clone();
        q.extend(batch.iter().map(|id| ("id", (*id).clone())));
        let mut found: BTreeMap<String, Device> = (nb.list::<Device>(DEVICES, &q).await?.into_iter())
            .map(|mut d| {
                keep_what_is_read(&mut d, spec);
                (d.id.clone(), d)
            })
            .collect();
        for id in batch {
            // Not found: deleted, or no longer selected by the filter.
            out.devices.insert((*id).clone(), found.remove(*id));
        }
    }
    // Selected once the devices read are in.
    let selected = |id: &String| match out.devices.get(id) {
        Some(d) => d.is_some(),
        None => inv.devices.contains_key(id),
    };
    // A device newly selected needs its interfaces too.
    let mut interfaces_of: BTreeSet<&String> = plan.interfaces_of.iter().collect();
    interfaces_of.extend(plan.devices.iter());
    interfaces_of.retain(|id| selected(id));
    if let Some(name) = &spec.switches.mac.interface {
        let ids: Vec<&String> = interfaces_of.into_iter().collect();
        for batch in ids.chunks(IDS_PER_REQUEST) {
            let mut q = vec![("name", name.clone())];
            q.extend(batch.iter().map(|id| ("device_id", (*id).clone())));
            out.interfaces.extend(nb.list::<Interface>(INTERFACES, &q).await?);
            out.interfaces_of.extend(batch.iter().map(|id| (*id).clone()));
        }
    }
    if plan.platforms {
        out.platforms = Some(nb.list(PLATFORMS, &[]).await?);
    }
    if plan.roles {
        out.roles = Some(nb.list(ROLES, &[]).await?);
    }
    if plan.device_types {
        out.device_types = Some(nb.list(DEVICE_TYPES, &[]).await?);
    }
    if plan.software && spec.images.enabled {
        out.software = Some(futures::try_join!(
            nb.list::<SoftwareVersion>(SOFTWARE_VERSIONS, &[]),
            nb.list::<SoftwareImageFile>(IMAGE_FILES, &[]),
        )?);
    }
    Ok(out)
}

/// The newest change-log entry (the log lists newest first) as a mark.
async fn newest_change(nb: &Nautobot) -> Result<Mark, NautobotError> {
    let newest: Vec<Change> = nb.first(CHANGES, 1, &[]).await?;
    Ok(mark_of(&newest, &Mark::default()))
}

/// The mark after reading `log`: its newest time and the entries at that time; `before` when
/// `log` is empty.
fn mark_of(log: &[Change], before: &Mark) -> Mark {
    let Some(time) = log.iter().map(|c| c.time.as_str()).max() else { return before.clone() };
    let seen = log.iter().filter(|c| c.time == time).map(|c| c.id.clone()).collect();
    Mark { time: time.to_owned(), seen }
}

/// `list` when `wanted`, else nothing (without a request).
async fn optional<T>(
    wanted: bool,
    list: impl Future<Output = Result<Vec<T>, NautobotError>>,
) -> Result<Vec<T>, NautobotError> {
    if wanted { list.await } else { Ok(Vec::new()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, time: &str, kind: &str, object: &str, related: Option<&str>) -> Change {
        Change {
            id: id.into(),
            time: time.into(),
            changed_object_type: kind.into(),
            changed_object_id: Some(object.into()),
            related_object_id: related.map(Into::into),
        }
    }

    #[test]
    fn changes_are_sorted_by_what_they_make_read_again() {
        let log = [
            change("1", "t1", "dcim.device", "d1", None),
            change("2", "t1", "dcim.interface", "i1", Some("d2")),
            change("3", "t2", "dcim.softwareimagefile", "f1", None),
            change("4", "t2", "ipam.ipaddress", "ip1", None),
            change("5", "t3", "dcim.device", "d3", None),
        ];
        let news: Vec<&Change> = log.iter().collect();
        let p = plan(&news).expect("incremental");
        assert_eq!(p.devices, BTreeSet::from(["d1".to_owned(), "d3".to_owned()]));
        assert_eq!(p.interfaces_of, BTreeSet::from(["d2".to_owned()]));
        assert!(p.software && !p.platforms && !p.roles && !p.device_types);
        let context = change("6", "t3", "extras.configcontext", "c1", None);
        assert_eq!(plan(&[&context]), Err("a extras.configcontext changed".to_owned()));
    }

    fn spec_of(extra: serde_json::Value) -> NautobotSourceSpec {
        let mut spec = serde_json::json!({"url": "https://nb", "tokenSecretRef": {"name": "n", "key": "t"}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(spec).expect("spec")
    }

    #[test]
    fn the_full_query_carries_the_filter_as_rests_parameters() {
        let spec = spec_of(serde_json::json!({"filter": {
            "locations": ["DC 1", "dc\"2"], "roles": ["leaf"], "statuses": ["Active"],
            "tags": ["ztp", "fabric"], "platforms": ["sonic"],
        }}));
        let q = full_query(&spec);
        assert!(
            q.starts_with(
                r#"{ object_changes(limit: 1) { id time } devices(location: ["DC 1", "dc\"2"], platform: ["sonic"], role: ["leaf"], status: ["Active"], tags: ["ztp", "fabric"]) { id name serial "#
            ),
            "{q}"
        );
        // Each filter list is REST's query parameter of the same name, value for value.
        let rest: BTreeSet<(&str, String)> = device_query(&spec.filter).into_iter().collect();
        assert_eq!(rest.len(), 7);
        for (name, value) in &rest {
            assert!(q.contains(&format!("{name}: [")) && q.contains(&format!("{value:?}")), "{name} {value}");
        }
        // The default spec: every device, the `eth0` interfaces, the software lists.
        let q = full_query(&spec_of(serde_json::json!({})));
        assert!(q.contains("} devices { id name") && q.contains(r#"interfaces(name: ["eth0"]) { "#), "{q}");
        assert!(
            q.contains("software_image_files { id image_file_name") && q.ends_with("last_updated } }"),
            "{q}"
        );
        assert_eq!(q.matches('{').count(), q.matches('}').count(), "{q}");
        // No MAC interface, no images: not asked for.
        let q = full_query(&spec_of(serde_json::json!({
            "switches": {"mac": {"customField": "mac"}}, "images": {"enabled": false},
        })));
        assert!(!q.contains("interfaces(") && !q.contains("software_versions"), "{q}");
    }

    #[test]
    fn a_full_answer_parses_into_the_inventory_and_mark() {
        let spec = spec_of(serde_json::json!({}));
        let body = serde_json::json!({"data": {
            "object_changes": [{"id": "c9", "time": "2026-12-01T06:00:00.123456+00:00"}],
            "devices": [{
                "id": "d1", "name": "sw-1", "serial": "SN1", "role": {"id": "r1"}, "platform": {"id": "p1"},
                "device_type": {"id": "t1"}, "software_version": null, "software_image_files": [],
                "custom_fields": {"ztp_profile": "leafs"}, "config_context": {"ztp": {}},
            }],
            "interfaces": [
                {"id": "i1", "name": "eth0", "device": {"id": "d1"}, "mac_address": "02:5A:00:00:00:01", "mgmt_only": true},
                {"id": "i2", "name": "eth0", "device": {"id": "not-selected"}, "mac_address": null, "mgmt_only": true},
            ],
            "platforms": [{"id": "p1", "name": "SONiC", "network_driver": "sonic", "manufacturer": null}],
            "roles": [{"id": "r1", "name": "leaf"}],
            "device_types": [{"id": "t1", "model": "SN2410", "manufacturer": {"id": "m1"}}],
            "software_versions": [],
            "software_image_files": [],
        }});
        let answer: FullAnswer = serde_json::from_value(body["data"].clone()).expect("answer");
        let (inv, mark) = inventory_of(answer, &spec).expect("inventory");
        assert_eq!(mark.time, "2026-12-01T06:00:00.123456Z", "REST's form of the time");
        assert_eq!(mark.seen, BTreeSet::from(["c9".to_owned()]));
        assert_eq!(inv.devices.len(), 1);
        assert_eq!(inv.interfaces.len(), 1, "only the selected devices' interfaces");
        assert_eq!((inv.platforms.len(), inv.roles.len(), inv.device_types.len()), (1, 1, 1));
        // An empty change log: an empty mark. A list asked for and missing: an error.
        let mut data = body["data"].clone();
        data["object_changes"] = serde_json::json!([]);
        let answer: FullAnswer = serde_json::from_value(data.clone()).expect("answer");
        assert_eq!(inventory_of(answer, &spec).expect("inventory").1, Mark::default());
        data.as_object_mut().map(|o| o.remove("interfaces"));
        let answer: FullAnswer = serde_json::from_value(data).expect("answer");
        assert!(inventory_of(answer, &spec).is_err_and(|e| e.contains("no interfaces")));
        let mut data = body["data"].clone();
        data.as_object_mut().map(|o| o.remove("devices"));
        assert!(serde_json::from_value::<FullAnswer>(data).is_err(), "no devices list: no inventory");
    }

    #[test]
    fn the_mark_is_the_newest_time_and_the_entries_at_it() {
        let log = [
            change("1", "2026-11-30T10:00:00.000001Z", "dcim.device", "d1", None),
            change("2", "2026-11-30T10:00:00.000002Z", "dcim.device", "d2", None),
            change("3", "2026-11-30T10:00:00.000002Z", "dcim.device", "d3", None),
        ];
        let m = mark_of(&log, &Mark::default());
        assert_eq!(m.time, "2026-11-30T10:00:00.000002Z");
        assert_eq!(m.seen, BTreeSet::from(["2".to_owned(), "3".to_owned()]));
        assert_eq!(mark_of(&[], &m), m, "an empty log keeps the mark");
    }
}
