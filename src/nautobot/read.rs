//! Reading a source's inventory from Nautobot: a **full read** (every selected device with its
//! rendered config context, their MAC interfaces, and the platforms, roles, device types, software
//! versions and image files), and an **incremental read** that asks Nautobot's change log what
//! changed since the last read and reads only that again.
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

/// Reads everything the source selects. Returns the inventory and the mark to read changes from.
pub async fn full(nb: &Nautobot, spec: &NautobotSourceSpec) -> Result<(Inventory, Mark), NautobotError> {
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
