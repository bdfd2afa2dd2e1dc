//! `ztpctl nautobot check` against a real Nautobot 3.2.7 (`scripts/nautobot`, six devices and two
//! software versions), through the built binary: the summary names every Switch and OsImage, the
//! YAML stream reads back as Switch and OsImage objects the apiserver's checks take, a wrong token
//! or an unknown filter value is a clear error and a non-zero exit, and `ztpctl dhcp` turns the
//! YAML (beside a SwitchProfile) into host blocks for the Switches' MACs.

use std::path::Path;

use ztp_operator::api::{OsImage, Switch, nautobot::SOURCE_LABEL, validate};

use crate::support::nautobot::Nautobot;

/// Runs `ztpctl ARGS` with neither the server's nor Nautobot's variables set: (success, stdout,
/// stderr).
async fn ztpctl(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztpctl"))
        .args(args)
        .env_remove("ZTP_SERVER")
        .env_remove("ZTP_TOKEN")
        .env_remove("NAUTOBOT_URL")
        .env_remove("NAUTOBOT_TOKEN")
        .output()
        .await
        .expect("run ztpctl");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A NautobotSource pinning every leaf to profile `leafs`, with `roles` as its filter.
fn source(url: &str, roles: &str) -> String {
    format!(
        "apiVersion: ztp.netops.dev/v1alpha1\nkind: NautobotSource\nmetadata: {{name: fabric, namespace: dc1}}\nspec:\n  url: {url}\n  tokenSecretRef: {{name: nautobot, key: token}}\n  filter: {{roles: [{roles}]}}\n  switches: {{profiles: [{{role: leaf, profile: leafs}}]}}\n"
    )
}

const PROFILE: &str = "apiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\nmetadata: {name: leafs, namespace: dc1}\nspec:\n  onie: {installImage: {name: nos}}\n  cumulus: {script: {inline: \"# CUMULUS-AUTOPROVISIONING\"}}\n";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[tokio::test]
async fn nautobot_check_prints_the_mapping_and_feeds_dhcp() {
    let nb = Nautobot::start("check").await;
    let loaded = nb.load(&["--devices", "6", "--images", "2"]).await;
    assert_eq!(loaded["devices"], 6, "{loaded}");
    let dir = tempfile::tempdir().expect("tempdir");

    // The summary: counts, a line per Switch and OsImage, nothing skipped, the requests.
    let (ok, out, err) = ztpctl(&["nautobot", "check", "--url", &nb.url, "--token", &nb.token]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("Read 6 devices from Nautobot: would declare 6 Switches and "), "{out}");
    for n in 1..=6 {
        let line = out
            .lines()
            .find(|l| l.contains(&format!(" SN0000{n} ")))
            .unwrap_or_else(|| panic!("no Switch line for SN0000{n}:\n{out}"));
        assert!(
            line.contains(&format!("sw-0000{n}")) && line.contains(&format!("02:5a:00:00:00:0{n}")),
            "{line}"
        );
    }
    let images = out.split("\nOsImages (").nth(1).expect("an OsImages section");
    assert!(!images.starts_with("0)"), "{out}");
    assert!(out.contains("\nSkipped devices (0):\n"), "{out}");
    // The full read: one GraphQL query.
    assert!(out.trim_end().ends_with("1 request to Nautobot."), "{out}");

    // The YAML, with a source file's mapping: Switches pinned to `leafs`, in its namespace.
    let source_file = dir.path().join("source.yaml");
    write(&source_file, &source("http://nautobot.invalid", "leaf"));
    let (ok, yaml, err) = ztpctl(&[
        "nautobot",
        "check",
        "--url",
        &nb.url,
        "--token",
        &nb.token,
        "--source",
        &source_file.to_string_lossy(),
        "--output",
        "yaml",
    ])
    .await;
    assert!(ok, "{err}");
    let docs = ztp_operator::manifests::parse_documents(&yaml).expect("a YAML stream");
    let mut switches = Vec::new();
    let mut os_images = Vec::new();
    for (_, doc) in docs {
        validate::validate(&doc).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
        assert_eq!(doc["metadata"]["labels"][SOURCE_LABEL], "fabric", "{doc:#}");
        match doc["kind"].as_str() {
            Some("Switch") => switches.push(serde_json::from_value::<Switch>(doc).expect("a Switch")),
            Some("OsImage") => os_images.push(serde_json::from_value::<OsImage>(doc).expect("an OsImage")),
            other => panic!("kind {other:?}"),
        }
    }
    assert_eq!(switches.len(), 6, "{yaml}");
    assert!(!os_images.is_empty(), "{yaml}");
    for s in &switches {
        assert_eq!(s.metadata.namespace.as_deref(), Some("dc1"));
        assert_eq!(s.spec.profile.as_deref(), Some("leafs"), "{s:?}");
        if let Some(image) = &s.spec.os_image {
            assert!(
                os_images.iter().any(|i| i.metadata.name.as_ref() == Some(image)),
                "{image} not declared"
            );
        }
    }

    // Into `ztpctl dhcp`, beside the profile they pin: a host per Switch MAC, with its hostname.
    let folder = dir.path().join("dhcp");
    std::fs::create_dir(&folder).expect("mkdir");
    write(&folder.join("switches.yaml"), &yaml);
    write(&folder.join("profile.yaml"), PROFILE);
    let (ok, isc, err) = ztpctl(&[
        "dhcp",
        "--format",
        "isc",
        "--profiles",
        &folder.to_string_lossy(),
        "--server-url",
        "http://ztp.example.net:8080",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(isc.contains("from 1 SwitchProfiles and 6 Switches in"), "{isc}");
    for s in &switches {
        let mac = s.spec.mac_address.as_deref().expect("a MAC");
        let at = isc
            .find(&format!("  hardware ethernet {mac};\n"))
            .unwrap_or_else(|| panic!("no host for {mac}:\n{isc}"));
        let block = &isc[at..isc[at..].find('}').map_or(isc.len(), |e| at + e)];
        let serial = &s.spec.serial_number;
        let hostname = s.spec.hostname.as_deref().expect("a hostname");
        assert!(block.contains(&format!("option host-name \"{hostname}\";")), "{block}");
        assert!(block.contains("option default-url \"http://ztp.example.net:8080/onie\";"), "{block}");
        assert!(
            block.contains(&format!(
                "option cumulus-provision-url \"http://ztp.example.net:8080/cumulus/{serial}/ztp.sh\";"
            )),
            "{block}"
        );
    }

    // A wrong token: refused, said so, non-zero.
    let (ok, _, err) = ztpctl(&[
        "nautobot",
        "check",
        "--url",
        &nb.url,
        "--token",
        "0123456789abcdef0123456789abcdef01234567",
    ])
    .await;
    assert!(!ok);
    assert!(err.starts_with("error: Nautobot refused the token") && err.contains("--token"), "{err}");
    // A role Nautobot does not know: its words (a GraphQL error in an HTTP 200), non-zero.
    write(&source_file, &source(&nb.url, "no-such-role"));
    let (ok, _, err) =
        ztpctl(&["nautobot", "check", "--token", &nb.token, "--source", &source_file.to_string_lossy()])
            .await;
    assert!(!ok);
    assert!(err.contains("Select a valid choice") && err.contains("no-such-role"), "{err}");
}
