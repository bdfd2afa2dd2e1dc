//! The mapping rules, on responses captured from a real Nautobot 3.2.7 (`scripts/nautobot load
//! --devices 6 --images 2`, plus an md5 image file and a tag; `tests/fixtures/nautobot/`), changed
//! object by object for each rule.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::api::nautobot::{MacSource, ProfileRule};
use crate::nautobot::model::{Page, Ref};

fn results<T: DeserializeOwned>(json: &str) -> Vec<T> {
    serde_json::from_str::<Page<T>>(json).expect("a captured page").results
}

/// The captured fleet: sw-00001..6 (serials SN00001..6, MAC 02:5A:00:00:00:0N on eth0), platforms
/// round-robin nvidia-cumulus, sonic, nvidia-nvos, onie; software nvidia-cumulus 5.0.0 (one sha256
/// file, default) on 1 and 5, sonic 4.0.0 (a sha256 default file and an md5 one) on 2 and 6; none on
/// 3 and 4. sw-00001 lists its version's file as its own.
pub(crate) fn fleet() -> Inventory {
    let mut inv = Inventory::default();
    inv.add_devices(results(include_str!("../../../tests/fixtures/nautobot/devices.json")));
    inv.add_interfaces(results(include_str!("../../../tests/fixtures/nautobot/interfaces.json")));
    inv.add_platforms(results(include_str!("../../../tests/fixtures/nautobot/platforms.json")));
    inv.add_roles(results(include_str!("../../../tests/fixtures/nautobot/roles.json")));
    inv.add_device_types(results(include_str!("../../../tests/fixtures/nautobot/device-types.json")));
    inv.add_software_versions(results(include_str!(
        "../../../tests/fixtures/nautobot/software-versions.json"
    )));
    inv.add_image_files(results(include_str!("../../../tests/fixtures/nautobot/software-image-files.json")));
    inv
}

pub(crate) fn source() -> NautobotSourceSpec {
    serde_json::from_value(
        json!({"url": "http://127.0.0.1:8080", "tokenSecretRef": {"name": "nb", "key": "token"}}),
    )
    .unwrap()
}

fn device<'a>(inv: &'a mut Inventory, name: &str) -> &'a mut Device {
    inv.devices.values_mut().find(|d| d.name.as_deref() == Some(name)).expect(name)
}

fn device_id(inv: &Inventory, name: &str) -> String {
    inv.devices.values().find(|d| d.name.as_deref() == Some(name)).expect(name).id.clone()
}

fn file<'a>(inv: &'a mut Inventory, name: &str) -> &'a mut SoftwareImageFile {
    inv.image_files.values_mut().find(|f| f.image_file_name == name).expect(name)
}

fn switch<'a>(d: &'a Desired, serial: &str) -> &'a SwitchSpec {
    &d.switches.get(&for_serial(serial)).unwrap_or_else(|| panic!("no Switch for {serial}: {d:#?}")).spec
}

fn skipped<'a>(d: &'a Desired, name: &str) -> &'a Skipped {
    d.skipped
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} not skipped: {:#?}", d.skipped))
}

const CUMULUS_FILE: &str = "cumulus-linux-5.0.0-mlx-amd64.bin";
const SONIC_FILE: &str = "sonic-broadcom-4.0.0.bin";

#[test]
fn the_captured_fleet_makes_six_switches_and_the_two_intended_images() {
    let d = desired(&fleet(), &source());
    assert!(d.skipped.is_empty() && d.skipped_images.is_empty(), "{d:#?}");
    assert_eq!(d.switches.len(), 6);
    for n in 1..=6 {
        let serial = format!("SN0000{n}");
        let (name, sw) = d.switches.iter().find(|(_, s)| s.spec.serial_number == serial).unwrap();
        assert_eq!(name, &for_serial(&serial), "the name discovery gives the serial");
        assert_eq!(sw.device_name.as_deref(), Some(format!("sw-0000{n}").as_str()));
        assert_eq!(sw.spec.hostname.as_deref(), Some(format!("sw-0000{n}").as_str()));
        assert_eq!(sw.spec.mac_address.as_deref(), Some(format!("02:5a:00:00:00:0{n}").as_str()));
        assert_eq!(sw.spec.profile, None, "no rules, no profile field");
        assert_eq!(
            sw.spec.variables,
            BTreeMap::from([("ztp".to_owned(), r#"{"ntp_servers":["127.0.0.1"],"role":"leaf"}"#.to_owned())])
        );
        assert!(!sw.spec.hold && sw.spec.reprovision.is_none());
    }
    let cumulus = image_name("nvidia-cumulus", "5.0.0", CUMULUS_FILE);
    let sonic = image_name("sonic", "4.0.0", SONIC_FILE);
    assert_eq!(switch(&d, "SN00001").model.as_deref(), Some("SN2410"));
    assert_eq!(switch(&d, "SN00002").model.as_deref(), Some("AS7326-56X"));
    assert_eq!(switch(&d, "SN00001").os_image.as_deref(), Some(cumulus.as_str()), "its own file");
    assert_eq!(switch(&d, "SN00005").os_image.as_deref(), Some(cumulus.as_str()), "the only file");
    assert_eq!(
        switch(&d, "SN00002").os_image.as_deref(),
        Some(sonic.as_str()),
        "the default over the md5 one"
    );
    assert_eq!(switch(&d, "SN00003").os_image, None, "no intended software, no pin");

    assert_eq!(d.images.keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![cumulus.clone(), sonic.clone()];
        v.sort();
        v
    });
    let img = &d.images[&cumulus].spec;
    assert_eq!((img.platform.as_str(), img.version.as_str()), ("nvidia-cumulus", "5.0.0"));
    assert_eq!(img.filename.as_deref(), Some(CUMULUS_FILE));
    assert_eq!(img.source.url.as_ref().unwrap().url, format!("http://127.0.0.1:99/{CUMULUS_FILE}"));
    assert_eq!(img.sha256, "21a29a6c7e1fe2d4aa604134c01574aa535c837adc0937841a1140a0aae77ff3");
    assert!(img.firmware_image && img.source.s3.is_none());
}

#[test]
fn image_names_are_labels_one_per_store_path() {
    let a = image_name("nvidia-cumulus", "5.0.0", CUMULUS_FILE);
    assert!(crate::switch::name::is_label(&a), "{a}");
    assert!(a.starts_with("nvidia-cumulus-5-0-0-cumulus-linux-"), "{a}");
    assert_ne!(image_name("a-b", "c", "d"), image_name("a", "b-c", "d"));
    assert_eq!(a, image_name("nvidia-cumulus", "5.0.0", CUMULUS_FILE), "stable");
}

#[test]
fn selecting_all_images_reports_the_md5_file_and_keeps_to_the_filter_platforms() {
    let mut spec = source();
    spec.images.select = ImageSelect::All;
    let d = desired(&fleet(), &spec);
    assert_eq!(d.images.len(), 2);
    assert_eq!(d.skipped_images.len(), 1);
    let s = &d.skipped_images[0];
    assert_eq!((s.name.as_str(), s.reason), ("sonic - 4.0.0 - extra-md5.bin", SkipReason::NotSha256));
    assert_eq!(
        s.message,
        "checksum algorithm md5 is not sha256: give the file a sha256 checksum in Nautobot"
    );

    spec.filter.platforms = vec!["nvidia-cumulus".into()];
    let d = desired(&fleet(), &spec);
    assert_eq!(d.images.values().map(|i| i.spec.platform.as_str()).collect::<Vec<_>>(), ["nvidia-cumulus"]);
    assert!(d.skipped_images.is_empty());
}

#[test]
fn platforms_map_to_store_platforms_and_pins_follow() {
    let mut spec = source();
    spec.images.platforms.insert("nvidia-cumulus".into(), "cumulus-linux".into());
    let d = desired(&fleet(), &spec);
    let name = image_name("cumulus-linux", "5.0.0", CUMULUS_FILE);
    assert_eq!(d.images[&name].spec.platform, "cumulus-linux");
    assert_eq!(switch(&d, "SN00001").os_image.as_deref(), Some(name.as_str()));

    spec.images.platforms.insert("sonic".into(), "manifest.json".into());
    let d = desired(&fleet(), &spec);
    let s = skipped(&d, "sw-00002");
    assert_eq!(s.reason, SkipReason::ImageSkipped);
    assert!(s.message.contains("map platform sonic to a store platform"), "{}", s.message);
    assert_eq!(d.skipped_images.iter().map(|s| s.reason).collect::<Vec<_>>(), [SkipReason::BadPath]);
}

#[test]
fn a_device_without_a_serial_is_skipped() {
    let mut inv = fleet();
    device(&mut inv, "sw-00003").serial = Some(String::new());
    device(&mut inv, "sw-00004").serial = Some("  ".into());
    device(&mut inv, "sw-00005").serial = None;
    let d = desired(&inv, &source());
    assert_eq!(d.switches.len(), 3);
    for n in ["sw-00003", "sw-00004", "sw-00005"] {
        let s = skipped(&d, n);
        assert_eq!(s.reason, SkipReason::NoSerial);
        assert_eq!(s.id, device_id(&inv, n));
    }
    assert_eq!(skipped(&d, "sw-00003").message, "the device has no serial number: give it one in Nautobot");
}

#[test]
fn a_device_without_a_name_is_reported_by_its_id_and_gets_no_hostname() {
    let mut inv = fleet();
    let id = device_id(&inv, "sw-00003");
    let dev = device(&mut inv, "sw-00003");
    dev.name = None;
    dev.serial = None;
    let d = desired(&inv, &source());
    assert_eq!(d.skipped[0].name, id);
    let mut inv = fleet();
    device(&mut inv, "sw-00003").name = None;
    assert_eq!(switch(&desired(&inv, &source()), "SN00003").hostname, None);
}

#[test]
fn a_shared_serial_skips_every_device_that_has_it() {
    let mut inv = fleet();
    device(&mut inv, "sw-00002").serial = Some("SN00001".into());
    device(&mut inv, "sw-00003").serial = Some("SN00001".into());
    let d = desired(&inv, &source());
    assert_eq!(d.switches.len(), 3);
    assert!(!d.switches.contains_key(&for_serial("SN00001")));
    for (n, others) in [("sw-00001", "sw-00002, sw-00003"), ("sw-00002", "sw-00001, sw-00003")] {
        let s = skipped(&d, n);
        assert_eq!(s.reason, SkipReason::DuplicateSerial);
        assert!(s.message.contains(&format!("also on device(s) {others}")), "{n}: {}", s.message);
    }
    assert_eq!(d.skipped.len(), 3);
}

#[test]
fn a_serial_a_switch_cannot_have_is_skipped() {
    let mut inv = fleet();
    device(&mut inv, "sw-00001").serial = Some("SN 1".into());
    device(&mut inv, "sw-00002").serial = Some("S".repeat(129));
    let d = desired(&inv, &source());
    assert_eq!(skipped(&d, "sw-00001").reason, SkipReason::BadSerial);
    assert!(skipped(&d, "sw-00001").message.contains("contains ' '"), "{}", skipped(&d, "sw-00001").message);
    assert_eq!(skipped(&d, "sw-00002").reason, SkipReason::BadSerial);
}

#[test]
fn a_missing_or_invalid_mac_skips_the_device() {
    let mut inv = fleet();
    let id3 = device_id(&inv, "sw-00003");
    let id4 = device_id(&inv, "sw-00004");
    let id5 = device_id(&inv, "sw-00005");
    inv.interfaces.remove(&(id3, "eth0".to_owned()));
    inv.interfaces.get_mut(&(id4, "eth0".to_owned())).unwrap().mac_address = None;
    inv.interfaces.get_mut(&(id5, "eth0".to_owned())).unwrap().mac_address = Some("02:5A:00:00:00".into());
    let d = desired(&inv, &source());
    assert_eq!(d.switches.len(), 3);
    let s = skipped(&d, "sw-00003");
    assert_eq!(
        (s.reason, s.message.as_str()),
        (SkipReason::NoMac, "the device has no interface eth0: add it, with its MAC address")
    );
    let s = skipped(&d, "sw-00004");
    assert_eq!(
        (s.reason, s.message.as_str()),
        (SkipReason::NoMac, "interface eth0 has no MAC address: set it in Nautobot")
    );
    let s = skipped(&d, "sw-00005");
    assert_eq!(s.reason, SkipReason::BadMac);
    assert!(s.message.contains("interface eth0 holds \"02:5A:00:00:00\""), "{}", s.message);
}

#[test]
fn the_mac_may_come_from_another_interface_or_a_custom_field() {
    let mut spec = source();
    spec.switches.mac = MacSource { interface: Some("mgmt0".into()), custom_field: None };
    let d = desired(&fleet(), &spec);
    assert_eq!(d.skipped.len(), 6);
    assert!(
        d.skipped.iter().all(|s| s.reason == SkipReason::NoMac && s.message.contains("no interface mgmt0"))
    );

    spec.switches.mac = MacSource { interface: None, custom_field: Some("base_mac".into()) };
    let mut inv = fleet();
    device(&mut inv, "sw-00001").custom_fields.insert("base_mac".into(), json!("0C42.A100.0001"));
    device(&mut inv, "sw-00002").custom_fields.insert("base_mac".into(), json!("0C-42-A1-00-00-02"));
    device(&mut inv, "sw-00003").custom_fields.insert("base_mac".into(), Value::Null);
    device(&mut inv, "sw-00004").custom_fields.insert("base_mac".into(), json!(42));
    device(&mut inv, "sw-00005").custom_fields.insert("base_mac".into(), json!("nope"));
    let d = desired(&inv, &spec);
    assert_eq!(switch(&d, "SN00001").mac_address.as_deref(), Some("0c:42:a1:00:00:01"));
    assert_eq!(switch(&d, "SN00002").mac_address.as_deref(), Some("0c:42:a1:00:00:02"));
    assert_eq!(skipped(&d, "sw-00003").reason, SkipReason::NoMac);
    assert_eq!(skipped(&d, "sw-00004").reason, SkipReason::BadMac);
    assert_eq!(skipped(&d, "sw-00005").reason, SkipReason::BadMac);
    assert_eq!(
        skipped(&d, "sw-00006").message,
        "custom field base_mac is empty: set the device's MAC address there"
    );
}

#[test]
fn the_first_matching_profile_rule_wins_and_the_profile_field_wins_over_rules() {
    let mut spec = source();
    let rule = |role: Option<&str>, platform: Option<&str>, profile: &str| ProfileRule {
        role: role.map(Into::into),
        platform: platform.map(Into::into),
        profile: profile.into(),
    };
    spec.switches.profiles = vec![
        rule(Some("spine"), None, "spine"),
        rule(Some("leaf"), Some("sonic"), "sonic-leaf"),
        rule(None, Some("nvidia-nvos"), "nvos"),
        rule(Some("leaf"), None, "leaf"),
    ];
    let mut inv = fleet();
    let spine = inv.roles.values().find(|r| r.name == "spine").unwrap().id.clone();
    device(&mut inv, "sw-00006").role = Some(Ref { id: spine });
    let d = desired(&inv, &spec);
    let profile = |serial: &str| switch(&d, serial).profile.clone();
    assert_eq!(profile("SN00001").as_deref(), Some("leaf"));
    assert_eq!(profile("SN00002").as_deref(), Some("sonic-leaf"));
    assert_eq!(profile("SN00003").as_deref(), Some("nvos"));
    assert_eq!(profile("SN00006").as_deref(), Some("spine"), "sonic, but a spine: the first rule");

    spec.switches.profile_custom_field = Some("ztp_profile".into());
    let d = desired(&inv, &spec);
    assert_eq!(switch(&d, "SN00002").profile.as_deref(), Some("default"));

    spec.switches.profiles.truncate(1);
    spec.switches.profile_custom_field = None;
    let d = desired(&inv, &spec);
    assert_eq!(switch(&d, "SN00001").profile, None, "no rule matches: the profiles' own match decide");
}

#[test]
fn variables_come_from_the_config_context_and_the_chosen_custom_fields() {
    let mut spec = source();
    spec.switches.custom_fields =
        vec!["ztp_profile".into(), "rack_unit".into(), "ztp".into(), "unset".into()];
    let mut inv = fleet();
    let dev = device(&mut inv, "sw-00001");
    dev.custom_fields.insert("rack_unit".into(), json!(12));
    dev.custom_fields.insert("ztp".into(), json!("from the custom field"));
    dev.custom_fields.insert("unset".into(), Value::Null);
    dev.config_context.as_mut().unwrap().insert("site".into(), json!("dc1"));
    dev.config_context.as_mut().unwrap().insert("empty".into(), json!(""));
    let d = desired(&inv, &spec);
    let vars = &switch(&d, "SN00001").variables;
    let want: BTreeMap<String, String> =
        [("ztp_profile", "default"), ("rack_unit", "12"), ("ztp", "from the custom field"), ("site", "dc1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(vars, &want);

    spec.switches.config_context = false;
    spec.switches.custom_fields.clear();
    let d = desired(&inv, &spec);
    assert!(switch(&d, "SN00001").variables.is_empty());
}

#[test]
fn values_a_switch_cannot_take_skip_the_device() {
    let mut inv = fleet();
    let ctx = device(&mut inv, "sw-00001").config_context.as_mut().unwrap();
    for i in 0..MAX_VARIABLES {
        ctx.insert(format!("k{i}"), json!("v"));
    }
    device(&mut inv, "sw-00002").name = Some("h".repeat(MAX_HOSTNAME + 1));
    let d = desired(&inv, &source());
    assert_eq!(skipped(&d, "sw-00001").reason, SkipReason::Invalid);
    assert!(skipped(&d, "sw-00001").message.contains("257 variables"), "{}", skipped(&d, "sw-00001").message);
    assert_eq!(d.skipped[1].reason, SkipReason::Invalid);
    assert_eq!(d.switches.len(), 4);
}

#[test]
fn a_device_s_own_image_file_wins_and_an_unusable_one_skips_it() {
    let mut inv = fleet();
    let md5 = file(&mut inv, "extra-md5.bin").id.clone();
    device(&mut inv, "sw-00002").software_image_files = vec![Ref { id: md5 }];
    let d = desired(&inv, &source());
    let s = skipped(&d, "sw-00002");
    assert_eq!(s.reason, SkipReason::ImageSkipped);
    assert_eq!(
        s.message,
        "its intended software's image file sonic - 4.0.0 - extra-md5.bin is skipped: checksum algorithm md5 is not \
         sha256: give the file a sha256 checksum in Nautobot"
    );
    assert_eq!(d.skipped_images.len(), 1, "the file a device would be pinned to is reported");
    assert_eq!(d.skipped_images[0].reason, SkipReason::NotSha256);
    assert!(d.switches.contains_key(&for_serial("SN00006")), "sw-00006 keeps the version's default");

    // Fixed in Nautobot: the device gets its own file.
    let f = file(&mut inv, "extra-md5.bin");
    f.hashing_algorithm = Some("SHA256".into());
    f.image_file_checksum = Some("AB".repeat(32));
    let d = desired(&inv, &source());
    let name = image_name("sonic", "4.0.0", "extra-md5.bin");
    assert_eq!(switch(&d, "SN00002").os_image.as_deref(), Some(name.as_str()));
    assert_eq!(d.images[&name].spec.sha256, "ab".repeat(32), "lower-cased");
    assert!(!d.images[&name].spec.firmware_image, "not the version's default, nor its only file");
    assert_eq!(d.images.len(), 3);
}

#[test]
fn several_files_and_no_default_is_ambiguous_and_no_file_is_no_pin() {
    let mut inv = fleet();
    file(&mut inv, SONIC_FILE).default_image = false;
    let d = desired(&inv, &source());
    for n in ["sw-00002", "sw-00006"] {
        let s = skipped(&d, n);
        assert_eq!(s.reason, SkipReason::AmbiguousImage);
        assert!(
            s.message.contains("sonic 4.0.0 has image files extra-md5.bin, sonic-broadcom-4.0.0.bin"),
            "{}",
            s.message
        );
    }

    let mut inv = fleet();
    inv.image_files.retain(|_, f| f.image_file_name != CUMULUS_FILE);
    let d = desired(&inv, &source());
    assert_eq!(switch(&d, "SN00001").os_image, None, "a version without files pins nothing");

    let mut inv = fleet();
    inv.software_versions.clear();
    let d = desired(&inv, &source());
    assert_eq!(skipped(&d, "sw-00001").reason, SkipReason::Unresolved);
    assert!(d.switches.contains_key(&for_serial("SN00003")), "no intended software: not affected");
}

#[test]
fn images_disabled_make_no_images_and_no_pins() {
    let mut spec = source();
    spec.images.enabled = false;
    let mut inv = fleet();
    file(&mut inv, CUMULUS_FILE).hashing_algorithm = Some("md5".into());
    let d = desired(&inv, &spec);
    assert!(d.images.is_empty() && d.skipped_images.is_empty() && d.skipped.is_empty());
    assert!(d.switches.values().all(|s| s.spec.os_image.is_none()));
}

#[test]
fn image_files_nautobot_accepts_but_a_store_cannot_are_skipped() {
    let mut spec = source();
    spec.images.select = ImageSelect::All;
    type Case = (fn(&mut SoftwareImageFile), SkipReason, &'static str);
    let cases: [Case; 7] = [
        (|f| f.hashing_algorithm = Some(String::new()), SkipReason::NotSha256, "has no checksum algorithm"),
        (
            |f| f.image_file_checksum = Some("abc".into()),
            SkipReason::BadChecksum,
            "is not 64 hexadecimal digits",
        ),
        (|f| f.image_file_checksum = Some("g".repeat(64)), SkipReason::BadChecksum, "is not 64 hexadecimal"),
        (|f| f.download_url = Some(String::new()), SkipReason::NoDownloadUrl, "has no download URL"),
        (|f| f.download_url = None, SkipReason::NoDownloadUrl, "has no download URL"),
        (
            |f| f.download_url = Some("ftp://h/x.bin".into()),
            SkipReason::NoDownloadUrl,
            "is not an http:// or https://",
        ),
        (|f| f.image_file_name = "a b.bin".into(), SkipReason::BadPath, "filename \"a b.bin\" contains ' '"),
    ];
    for (change, reason, message) in cases {
        let mut inv = fleet();
        let f = file(&mut inv, CUMULUS_FILE);
        let id = f.id.clone();
        change(f);
        let d = desired(&inv, &spec);
        let s = d.skipped_images.iter().find(|s| s.id == id);
        let s = s.unwrap_or_else(|| panic!("{reason:?}: {:#?}", d.skipped_images));
        assert_eq!(s.reason, reason, "{s:?}");
        assert!(s.message.contains(message), "{reason:?}: {}", s.message);
        assert_eq!(skipped(&d, "sw-00001").reason, SkipReason::ImageSkipped, "its devices are skipped too");
        assert_eq!(d.images.len(), 1, "the sonic image stays");
    }
}

#[test]
fn two_files_on_one_store_path_are_both_skipped() {
    let mut inv = fleet();
    let onie = inv.platforms.values().find(|p| p.name == "onie").unwrap().id.clone();
    let sonic_version = inv.software_versions.values().find(|v| v.version == "4.0.0").unwrap().clone();
    let mut other = sonic_version.clone();
    other.id = "00000000-0000-0000-0000-00000000000a".into();
    other.platform = Some(Ref { id: onie });
    let mut twin = file(&mut inv, SONIC_FILE).clone();
    twin.id = "00000000-0000-0000-0000-00000000000b".into();
    twin.software_version = Some(Ref { id: other.id.clone() });
    inv.add_software_versions([other]);
    inv.add_image_files([twin]);
    let mut spec = source();
    spec.images.select = ImageSelect::All;
    spec.images.platforms.insert("onie".into(), "sonic".into());
    let d = desired(&inv, &spec);
    let dups: Vec<&Skipped> =
        d.skipped_images.iter().filter(|s| s.reason == SkipReason::DuplicatePath).collect();
    assert_eq!(dups.len(), 2, "{:#?}", d.skipped_images);
    assert!(dups[0].message.contains("sonic/4.0.0/sonic-broadcom-4.0.0.bin"), "{}", dups[0].message);
    assert_eq!(skipped(&d, "sw-00002").reason, SkipReason::ImageSkipped);
}

#[test]
fn the_device_query_repeats_a_parameter_per_value_with_nautobot_s_names() {
    assert!(device_query(&NautobotFilter::default()).is_empty());
    let filter = NautobotFilter {
        locations: vec!["dc1".into(), "dc2".into()],
        roles: vec!["leaf".into()],
        statuses: vec!["Active".into(), "Planned".into()],
        tags: vec!["ztp".into()],
        platforms: vec!["sonic".into()],
    };
    let q = device_query(&filter);
    let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        q,
        [
            ("location", "dc1"),
            ("location", "dc2"),
            ("role", "leaf"),
            ("status", "Active"),
            ("status", "Planned"),
            ("tags", "ztp"),
            ("platform", "sonic"),
        ]
    );
    assert_eq!(DEVICE_READ_PARAMS, [("include", "config_context"), ("exclude_m2m", "false")]);
}

#[test]
fn skips_become_status_entries() {
    let mut inv = fleet();
    device(&mut inv, "sw-00001").serial = None;
    let d = desired(&inv, &source());
    let (count, list) = crate::api::nautobot::bounded_skips(d.skipped.iter().map(Skipped::to_status));
    assert_eq!(count, 1);
    assert_eq!(
        serde_json::to_value(&list).unwrap(),
        json!([{
            "name": "sw-00001", "reason": "NoSerial", "message": "the device has no serial number: give it one in Nautobot"
        }])
    );
}

#[test]
fn the_mapping_is_deterministic() {
    assert_eq!(desired(&fleet(), &source()), desired(&fleet(), &source()));
}
