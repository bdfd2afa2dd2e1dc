//! `ztpctl dhcp` and `ztpctl device` through the real binary: the generated Kea JSON and ISC
//! configuration parsed back (and checked by `kea-dhcp4 -t` / `dhcpd -t` when installed:
//! Debian `kea-dhcp4-server`, `isc-dhcp-server`), and the dry run of each family against the real
//! server serving the lab of `devices.rs`, at the very URLs the DHCP reservations give.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::lab::lab;

/// Runs `ztpctl ARGS`: (success, stdout, stderr).
async fn ztpctl(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztpctl"))
        .args(args)
        .env_remove("ZTP_SERVER")
        .env_remove("ZTP_TOKEN")
        .output()
        .await
        .expect("run ztpctl");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A validator binary from PATH or the sbin directories Debian installs daemons in.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `BINARY ARGS… FILE` must succeed; skipped (with a message) when the daemon is not installed.
async fn validate_with(name: &str, args: &[&str], file: &Path) {
    let Some(bin) = find_binary(name) else {
        eprintln!(
            "e2e: {name} not installed: generated config not checked by the real daemon (apt-get install isc-dhcp-server kea-dhcp4-server)"
        );
        return;
    };
    let out = tokio::process::Command::new(&bin).args(args).arg(file).output().await.expect("run validator");
    assert!(
        out.status.success(),
        "{name} rejects {}:\n{}\n{}\n--- file:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

const PROFILES_A: &str = r##"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: spine01, namespace: dc1}
spec:
  match: {serialNumbers: ["RB2301A0042"], macAddresses: ["0C-42-A1-00-00-42"]}
  onie: {installImage: {name: rbfs}}
  files: {startup: {inline: "{}"}}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: OsImage
metadata: {name: rbfs}
spec: {platform: rbfs, version: "1", source: {url: {url: "http://x/y"}}, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
"##;

const PROFILES_B: &str = r##"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: leafs}
spec:
  match: {serialNumbers: ["SN-A", "SN-B"], models: ["N5110_LD"]}
  onie: {installImage: {name: nos}}
  ztp: {sections: [{kind: connectivity-check, pingHosts: ["192.0.2.1"]}]}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: leaf09}
spec:
  match: {macAddresses: ["0c:42:a1:00:00:09"]}
  cumulus: {script: {inline: "# CUMULUS-AUTOPROVISIONING"}}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: default}
spec:
  match: {models: ["MSN2410"]}
  cumulus: {script: {inline: "# CUMULUS-AUTOPROVISIONING"}}
"##;

/// Option code → data of one Kea reservation.
fn kea_options(host: &Value) -> Vec<(u64, String)> {
    host["option-data"]
        .as_array()
        .expect("option-data")
        .iter()
        .map(|o| (o["code"].as_u64().expect("code"), o["data"].as_str().expect("data").to_owned()))
        .collect()
}

fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[tokio::test]
async fn ztpctl_dhcp_writes_kea_and_isc_reservations_the_daemons_accept() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
    std::fs::write(dir.path().join("a.yaml"), PROFILES_A).expect("write");
    std::fs::write(dir.path().join("sub/b.yml"), PROFILES_B).expect("write");
    std::fs::write(dir.path().join("README.txt"), "not yaml: ignored").expect("write");
    let folder = dir.path().to_str().expect("utf-8 path");
    let s = "http://ztp.test:8080";

    // Kea: parse the JSON back; every device with its options; definitions for 210 and 239.
    let (ok, out, err) = ztpctl(&["dhcp", "--format", "kea", "--profiles", folder, "--server-url", s]).await;
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out).expect("Kea JSON");
    let hosts = doc["Dhcp4"]["reservations"].as_array().expect("reservations");
    let by = |key: &str, id: &str| {
        hosts.iter().find(|h| h[key] == id).unwrap_or_else(|| panic!("no {key} {id} in {out}"))
    };
    let spine = by("hw-address", "0c:42:a1:00:00:42");
    assert_eq!(kea_options(spine), [(114, format!("{s}/onie")), (210, s.to_owned())]);
    assert_eq!(spine["user-context"]["switchprofile"], "dc1/spine01");
    let leaf09 = by("hw-address", "0c:42:a1:00:00:09");
    assert_eq!(kea_options(leaf09), [(239, format!("{s}/cumulus/ztp.sh"))]);
    for serial in ["SN-A", "SN-B"] {
        let onie = by("client-id", &hex(&[b"\0", serial.as_bytes()].concat()));
        assert_eq!(kea_options(onie), [(114, format!("{s}/onie"))]);
        let nvos = by("client-id", &hex(format!("NVOS##N5110_LD##{serial}").as_bytes()));
        assert_eq!(kea_options(nvos), [(67, format!("{s}/nvos/{serial}/ztp.json"))]);
    }
    assert_eq!(hosts.len(), 6, "{out}");
    // ONIE asks option 114 in install and update mode: always `/onie`, and no 125 besides it.
    for host in hosts {
        for (code, value) in kea_options(host) {
            assert_ne!(code, 125, "{out}");
            assert!(code != 114 || value == format!("{s}/onie"), "{out}");
        }
    }
    let defs = doc["Dhcp4"]["option-def"].as_array().expect("option-def");
    let mut codes: Vec<u64> = defs.iter().map(|d| d["code"].as_u64().expect("code")).collect();
    codes.sort();
    assert_eq!(codes, [210, 239]);
    // The model-only profile is reported, not reserved.
    assert!(err.contains("default/default: matches models only"), "{err}");
    let kea_file = dir.path().join("kea-dhcp4.json");
    std::fs::write(&kea_file, &out).expect("write");
    validate_with("kea-dhcp4", &["-t"], &kea_file).await;

    // ISC: same hosts, in the same order, as host blocks; the definitions before them.
    let (ok, isc, err) =
        ztpctl(&["dhcp", "--format", "isc", "--profiles", folder, "--server-url", &format!("{s}/")]).await;
    assert!(ok, "{err}");
    let names: Vec<&str> = isc.lines().filter_map(|l| l.strip_prefix("host ")?.strip_suffix(" {")).collect();
    let kea_names: Vec<&str> =
        hosts.iter().map(|h| h["user-context"]["ztp-host"].as_str().expect("ztp-host")).collect();
    assert_eq!(names, kea_names);
    for line in [
        "option cumulus-provision-url code 239 = text;",
        "option loader-pathprefix code 210 = text;",
        "  hardware ethernet 0c:42:a1:00:00:42;",
        "  option cumulus-provision-url \"http://ztp.test:8080/cumulus/ztp.sh\";",
        "  option dhcp-client-identifier 00:53:4e:2d:41;",
        "  option bootfile-name \"http://ztp.test:8080/nvos/SN-B/ztp.json\";",
    ] {
        assert!(isc.lines().any(|l| l == line), "{line:?} missing from:\n{isc}");
    }
    assert!(isc.find("code 239").expect("def") < isc.find("\nhost ").expect("host"));
    let isc_file = dir.path().join("dhcpd.conf");
    std::fs::write(&isc_file, &isc).expect("write");
    validate_with("dhcpd", &["-t", "-cf"], &isc_file).await;

    // One file, the examples users copy: accepted, spine01 reserved by its MAC.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/switchprofiles/rtbrick.yaml");
    let (ok, out, err) = ztpctl(&["--server", s, "dhcp", "--format", "isc", "--profiles", examples]).await;
    assert!(ok, "{err}");
    assert!(out.contains("hardware ethernet 0c:42:a1:00:00:42;") && out.contains(&format!("\"{s}/onie\"")));

    // Broken input: a typed error, nothing on stdout.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\nmetadata: {name: bad}\nspec: {match: {macAddresses: [\"0c:42\"]}, onie: {}}\n",
    )
    .expect("write");
    let (ok, out, err) = ztpctl(&["dhcp", "--format", "kea", "--profiles", folder, "--server-url", s]).await;
    assert!(!ok && out.is_empty(), "{out}");
    // Refused by the CRD's own rule, as `kubectl apply` would refuse it.
    assert!(err.contains("\"bad\"") && err.contains("MAC addresses must be six hex pairs"), "{err}");
    let (ok, _, err) =
        ztpctl(&["dhcp", "--format", "kea", "--profiles", examples, "--server-url", "ztp"]).await;
    assert!(!ok && err.contains("must start with http://"), "{err}");
    let (ok, _, err) = ztpctl(&["dhcp", "--format", "kea", "--profiles", "/nonexistent/x.yaml"]).await;
    assert!(!ok && err.contains("/nonexistent/x.yaml"), "{err}");
}

#[tokio::test]
async fn ztpctl_device_dry_runs_each_family_at_the_dhcp_urls() {
    let lab = lab("ztpctl-device").await;
    let manifests = lab.manifests.to_str().expect("utf-8 path");
    let base = lab.base.as_str();

    // The URL the reservation gives leaf07 for option 67 is the one the dry run asks.
    let (ok, out, err) =
        ztpctl(&["--server", base, "dhcp", "--format", "kea", "--profiles", manifests]).await;
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out).expect("Kea JSON");
    let leaf07 = doc["Dhcp4"]["reservations"]
        .as_array()
        .expect("reservations")
        .iter()
        .find(|h| h["hw-address"] == "0c:42:a1:00:00:07")
        .expect("leaf07 reserved by MAC")
        .clone();
    let option = |code: u64| {
        kea_options(&leaf07).into_iter().find(|(c, _)| *c == code).map(|(_, d)| d).expect("option")
    };

    // NVOS: the ZTP JSON, then its image by HEAD (size and ETag, no bytes).
    let (ok, out, err) = ztpctl(&[
        "--server",
        base,
        "device",
        "--serial",
        "SN-LEAF07",
        "--mac",
        "0c:42:a1:00:00:07",
        "--family",
        "nvos",
    ])
    .await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.lines().next(), Some(format!("GET {}", option(67)).as_str()), "{out}");
    assert!(out.contains("> User-Agent: NVOS-ZTP/0.1\n> SERIAL-NUMBER: SN-LEAF07\n"), "{out}");
    assert!(out.contains("> BASE-MAC-ADDRESS: 0C:42:A1:00:00:07"), "{out}");
    assert!(out.contains("< 200 OK") && out.contains("\"01-image\""), "{out}");
    let image = format!("HEAD {base}/images/nos/1/nos.bin");
    let head = &out[out.find(&image).unwrap_or_else(|| panic!("{image} missing:\n{out}"))..];
    let sha = ztp_operator::hash::Sha256Digest::of(&lab.install).to_string();
    assert!(head.contains(&format!("< size: {}  etag: \"{sha}\"", lab.install.len())), "{head}");

    // Cumulus at option 239's URL: the script, LF only.
    let (ok, out, err) = ztpctl(&[
        "--server",
        base,
        "device",
        "--serial",
        "SN-LEAF07",
        "--mac",
        "0c:42:a1:00:00:07",
        "--family",
        "cumulus",
    ])
    .await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.lines().next(), Some(format!("GET {}", option(239)).as_str()), "{out}");
    assert!(out.contains("CUMULUS-AUTOPROVISIONING") && out.contains("echo leaf07") && !out.contains('\r'));

    // ONIE at option 114's URL: HEAD of the installer, chosen by the model default for an
    // unknown serial; the right size, never the bytes.
    let onie = |serial: &'static str, operation: &'static str| {
        let args = [
            "--server",
            base,
            "device",
            "--serial",
            serial,
            "--model",
            "accton_as7712_32x",
            "--family",
            "onie",
            "--operation",
            operation,
        ];
        async move { ztpctl(&args).await }
    };
    let (ok, out, err) = onie("SN-OTHER", "os-install").await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(out.lines().next(), Some(format!("HEAD {}", option(114)).as_str()), "{out}");
    assert!(out.contains("> ONIE-SERIAL-NUMBER: SN-OTHER\n") && out.contains("> ONIE-OPERATION: os-install"));
    assert!(out.contains(&format!("< size: {}  etag: \"{sha}\"", lab.install.len())), "{out}");
    assert!(out.len() < 4096, "the image itself was printed");
    // leaf07's profile has no updater: its model default's (per-item fallback).
    let (ok, out, err) = onie("SN-LEAF07", "onie-update").await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(&format!("< size: {}  etag:", lab.update.len())), "{out}");
    // A device no profile claims: the dry run says the device would fail, and exits non-zero.
    let stranger = [
        "--server",
        base,
        "device",
        "--serial",
        "SN-NOBODY",
        "--family",
        "onie",
        "--operation",
        "onie-update",
    ];
    let (ok, out, err) = ztpctl(&stranger).await;
    assert!(!ok && out.contains("< 404 Not Found"), "{out}");
    assert!(err.contains("the device would fail: HEAD") && err.contains("404"), "{err}");

    // RtBrick: every CTRLD file; a missing one is a normal 404, the startup config rendered.
    let rtbrick = ["--server", base, "device", "--serial", "SN-SPINE", "--family", "rtbrick"];
    let (ok, out, err) = ztpctl(&[&rtbrick[..], &["--model", "accton_as7712_32x"]].concat()).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!("GET {base}/ztp/config/ctrld\n")) && out.contains("< 404 Not Found"),
        "{out}"
    );
    assert!(
        out.contains(r#"{"host": "default-leaf", "serial": "SN-SPINE", "element": "SN-SPINE"}"#),
        "{out}"
    );
    // Without the model no profile matches: every file 404, and the dry run says so.
    let (ok, _, err) = ztpctl(&rtbrick).await;
    assert!(!ok && err.contains("nothing answered"), "{err}");

    // SONiC for a serial nobody claims: 404, non-zero exit.
    let (ok, out, _) =
        ztpctl(&["--server", base, "device", "--serial", "SN-NOBODY", "--family", "sonic"]).await;
    assert!(!ok && out.contains("< 404 Not Found"), "{out}");
}
