//! The dry run's text, on the captured fleet (`tests/fixtures/nautobot/`, see the mapping's
//! tests): six Switches, two OsImages.

use super::*;
use crate::api::{OsImage, SkipReason, Switch, SwitchSpec, nautobot::SOURCE_LABEL, validate};
use crate::nautobot::desired;

use crate::nautobot::map::tests::{fleet, source as spec};

fn fleet_desired() -> Desired {
    desired(&fleet(), &spec())
}

#[test]
fn the_summary_counts_and_lists_every_switch_and_image() {
    let d = fleet_desired();
    let text = summary(&d, 6, 9);
    assert!(
        text.starts_with(
            "Read 6 devices from Nautobot: would declare 6 Switches and 2 OsImages; skipped 0 devices and 0 image files.\n"
        ),
        "{text}"
    );
    assert!(text.contains("\nSwitches (6):\nNAME "), "{text}");
    assert!(text.contains("\nOsImages (2):\nNAME "), "{text}");
    for (name, sw) in &d.switches {
        let s = &sw.spec;
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells[..5],
            [
                name.as_str(),
                &s.serial_number,
                s.hostname.as_deref().unwrap_or("-"),
                s.model.as_deref().unwrap_or("-"),
                s.mac_address.as_deref().unwrap_or("-")
            ],
            "{line}"
        );
        assert_eq!(cells[5], "-", "no profile rule: {line}");
        assert_eq!(cells[6], s.os_image.as_deref().unwrap_or("-"), "{line}");
    }
    for (name, image) in &d.images {
        let s = &image.spec;
        let path = format!("{}/{}/{}", s.platform, s.version, s.filename.as_deref().unwrap_or_default());
        let url = s.source.url.as_ref().map(|u| u.url.as_str()).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert_eq!(line.split_whitespace().collect::<Vec<_>>(), [name.as_str(), &path, url], "{line}");
    }
    // Columns line up: every cell of a column starts at the header's offset.
    let header = text.lines().find(|l| l.starts_with("NAME ") && l.contains("OSIMAGE")).expect("header");
    let mac_at = header.find("MAC").expect("MAC");
    for name in d.switches.keys() {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).expect("line");
        assert!(line[mac_at..].starts_with("02:5a:00:00:00:0"), "{line}");
    }
    assert!(text.contains("\nSkipped devices (0):\n\nSkipped image files (0):\n"), "{text}");
    assert!(text.ends_with("\n9 requests to Nautobot.\n"), "{text}");
}

#[test]
fn the_summary_says_why_each_device_and_image_file_is_skipped() {
    let mut d = Desired::default();
    d.skipped.push(Skipped {
        id: "d7".into(),
        name: "sw-00007".into(),
        reason: SkipReason::NoSerial,
        message: "the device has no serial number: give it one in Nautobot".into(),
    });
    d.skipped_images.push(Skipped {
        id: "f3".into(),
        name: "sonic - 4.0.0 - sonic.bin".into(),
        reason: SkipReason::NotSha256,
        message: "checksum algorithm md5 is not sha256: give the file a sha256 checksum in Nautobot".into(),
    });
    let text = summary(&d, 1, 1);
    assert!(text.starts_with("Read 1 device from Nautobot: would declare 0 Switches and 0 OsImages; skipped 1 device and 1 image file.\n"), "{text}");
    assert!(text.contains("\nSwitches (0):\n\nOsImages (0):\n"), "{text}");
    assert!(
        text.contains("\nSkipped devices (1):\n  sw-00007 [NoSerial]: the device has no serial number: give it one in Nautobot\n"),
        "{text}"
    );
    assert!(
        text.contains("\nSkipped image files (1):\n  sonic - 4.0.0 - sonic.bin [NotSha256]: checksum algorithm md5 is not sha256"),
        "{text}"
    );
    assert!(text.ends_with("\n1 request to Nautobot.\n"), "{text}");
}

#[test]
fn the_yaml_stream_is_the_objects_the_apiserver_takes() {
    let d = fleet_desired();
    let text = yaml(&d, "dc1", "fabric").expect("yaml");
    let docs = crate::manifests::parse_documents(&text).expect("YAML");
    assert_eq!(docs.len(), 8);
    assert_eq!(text.matches("---\n").count(), 8);
    for (_, doc) in &docs {
        validate::validate(doc).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
        assert_eq!(doc["apiVersion"], "ztp.netops.dev/v1alpha1");
        assert_eq!(doc["metadata"]["namespace"], "dc1");
        assert_eq!(doc["metadata"]["labels"][SOURCE_LABEL], "fabric");
        assert!(doc.get("status").is_none(), "{doc:#}");
    }
    let switches: Vec<Switch> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Switch")
        .map(|(_, d)| serde_json::from_value(d.clone()).expect("a Switch"))
        .collect();
    let specs: Vec<&SwitchSpec> = switches.iter().map(|s| &s.spec).collect();
    let want: Vec<&SwitchSpec> = d.switches.values().map(|s| &s.spec).collect();
    assert_eq!(specs, want);
    let images: Vec<OsImage> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "OsImage")
        .map(|(_, d)| serde_json::from_value(d.clone()).expect("an OsImage"))
        .collect();
    assert_eq!(
        images.iter().map(|i| &i.spec).collect::<Vec<_>>(),
        d.images.values().map(|i| &i.spec).collect::<Vec<_>>()
    );
    // Every pinned image is declared beside the Switch.
    for s in &specs {
        if let Some(image) = &s.os_image {
            assert!(images.iter().any(|i| i.metadata.name.as_ref() == Some(image)), "{image}");
        }
    }
    assert_eq!(yaml(&Desired::default(), "dc1", "x").expect("yaml"), "");
}

#[test]
fn a_source_file_gives_its_spec_checked_as_the_apiserver_would() {
    let text = "kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n---\napiVersion: ztp.netops.dev/v1alpha1\nkind: NautobotSource\nmetadata: {name: fabric, namespace: dc1}\nspec:\n  url: https://nautobot.example.net\n  tokenSecretRef: {name: nautobot, key: token}\n  filter: {roles: [leaf]}\n  switches: {profiles: [{role: leaf, profile: leafs}]}\n";
    let source = source_from_yaml(text).expect("source");
    assert_eq!(source.metadata.name.as_deref(), Some("fabric"));
    assert_eq!(source.spec.filter.roles, ["leaf"]);
    assert_eq!(source.spec.switches.profiles[0].profile, "leafs");

    let bad = text.replace("url: https://nautobot.example.net", "url: ftp://nautobot");
    let e = source_from_yaml(&bad).expect_err("an ftp URL");
    assert!(matches!(e, CheckError::Invalid { document: 2, .. }), "{e}");
    assert!(e.to_string().contains("url"), "{e}");
    assert!(matches!(source_from_yaml("kind: ConfigMap\n"), Err(CheckError::NoSource)));
    assert!(matches!(source_from_yaml("a: [\n"), Err(CheckError::Yaml(_))));
}
