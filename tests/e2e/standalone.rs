//! `ztp-operator standalone`, the real binary: the folder is re-read when it changes, a removed
//! OsImage is cleaned up per its deletionPolicy, and a full disk ends in a clear status with
//! nothing left behind.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use ztp_operator::hash::Sha256Digest;

use crate::support::{
    self, binaries, procs, random_bytes,
    source::{Behavior, SourceServer},
};

fn image_yaml(name: &str, version: &str, url: &str, sha: &str) -> String {
    format!(
        "apiVersion: ztp.netops.dev/v1alpha1\nkind: OsImage\nmetadata: {{name: {name}}}\nspec:\n  platform: lab\n  version: \"{version}\"\n  source: {{url: {{url: \"{url}\"}}}}\n  sha256: {sha}\n"
    )
}

fn status_of(data: &Path, name: &str) -> Option<Value> {
    let bytes = std::fs::read(data.join(".status/osimages.json")).ok()?;
    let all: Value = serde_json::from_slice(&bytes).ok()?;
    all.get(format!("default/{name}")).cloned()
}

fn phase(data: &Path, name: &str) -> Option<String> {
    status_of(data, name)?.get("phase")?.as_str().map(str::to_owned)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "not {what} within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn standalone_follows_the_folder() {
    let _guard = support::guard("standalone-follow");
    let (a, b) = (random_bytes(300_000, 11), random_bytes(200_000, 12));
    let (sha_a, sha_b) = (Sha256Digest::of(&a).to_string(), Sha256Digest::of(&b).to_string());
    let src =
        SourceServer::start(vec![("/a.bin", a.clone(), Behavior::Serve), ("/b.bin", b, Behavior::Serve)])
            .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(m.join("a.yaml"), image_yaml("a", "1", &src.url_of("/a.bin"), &sha_a)).expect("write");

    let log_dir = &support::run().log_dir;
    let mut proc = binaries::standalone(&m, &data, &[], log_dir.join("standalone-follow.log"));
    wait_until("a Ready", || phase(&data, "a").as_deref() == Some("Ready")).await;
    assert_eq!(std::fs::read(data.join("lab/1/a.bin")).expect("stored a"), a.as_ref());

    // A new file appears: it is picked up.
    std::fs::write(m.join("b.yaml"), image_yaml("b", "2", &src.url_of("/b.bin"), &sha_b)).expect("write");
    wait_until("b Ready", || phase(&data, "b").as_deref() == Some("Ready")).await;

    // A file goes away: its image is removed from the store (deletionPolicy defaults to Delete).
    std::fs::remove_file(m.join("a.yaml")).expect("rm");
    wait_until("a cleaned up", || !data.join("lab/1/a.bin").exists() && status_of(&data, "a").is_none())
        .await;
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(data.join("manifest.json")).expect("manifest")).expect("json");
    let paths: Vec<&str> =
        manifest["images"].as_array().expect("images").iter().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(paths, ["lab/2/b.bin"]);

    proc.assert_running();
    let log = procs::tail(&proc.log, 50);
    assert!(log.contains("osimage default/a: Ready"), "one line per transition:\n{log}");
    let _ = proc.child.kill();
    let _ = proc.child.wait();
}

/// Unmounts on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn standalone_full_disk_keeps_nothing_and_says_why() {
    let _guard = support::guard("standalone-full");
    let body = random_bytes(6 * 1024 * 1024, 13);
    let sha = Sha256Digest::of(&body).to_string();
    let src = SourceServer::start(vec![("/big.bin", body, Behavior::Serve)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::create_dir_all(&data).expect("mkdir");
    // A 2 MiB filesystem as the store: the 6 MiB image cannot fit. (Needs root, as CI has.)
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&data)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mounting a small tmpfs needs root (CI runs as root)");
    let _unmount = Tmpfs(data.clone());
    std::fs::write(m.join("big.yaml"), image_yaml("big", "1", &src.url_of("/big.bin"), &sha)).expect("write");

    // tokio's Command: the source server runs on this test's runtime and must keep serving.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztp-operator"))
        .args(["standalone", "--once", "--fetch-max-attempts=2", "--fetch-backoff-seconds=0.1"])
        .arg(format!("--manifests={}", m.display()))
        .arg(format!("--data={}", data.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run standalone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let status = status_of(&data, "big").expect("status recorded");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(message.contains("gave up after 2 attempts"), "{message}");
    assert!(!data.join("lab/1/big.bin").exists(), "no partial file under the final name");
    let leftovers: Vec<_> =
        std::fs::read_dir(data.join(".tmp")).expect("tmp").flatten().map(|e| e.file_name()).collect();
    assert!(leftovers.is_empty(), "temporary data removed: {leftovers:?}");
    assert!(
        !data.join("manifest.json").exists()
            || !String::from_utf8_lossy(&std::fs::read(data.join("manifest.json")).expect("read"))
                .contains("big.bin")
    );
}

/// The README's first command: the lab folder works offline, from wherever the repo is.
#[tokio::test]
async fn standalone_lab_folder_works_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztp-operator"))
        .args(["standalone", "--once"])
        .arg(format!("--manifests={}", lab.display()))
        .arg(format!("--data={}", dir.path().display()))
        .output()
        .await
        .expect("run standalone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("osimage default/lab-nos: Ready"), "{stdout}");
    let stored = std::fs::read(dir.path().join("lab-nos/1.0.0/lab-nos-installer.bin")).expect("stored image");
    assert_eq!(stored, std::fs::read(lab.join("images/lab-nos-installer.bin")).expect("source"));
}

/// `examples/lab` served by the real binary: every profile in it resolves (Ready), and each family
/// gets its answer when it asks with exactly the headers its switches send (docs/protocols.md) —
/// the requests examples/README.md shows — with URLs that name the address the device reached.
#[tokio::test]
async fn lab_profiles_answer_each_family() {
    use reqwest::{Client, StatusCode, redirect::Policy};

    use crate::{
        support::lab::{headers, onie_headers},
        support::sonic_engine,
    };

    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let profiles: Vec<String> = ztp_operator::manifests::read_switch_profiles(&lab)
        .expect("lab profiles parse")
        .iter()
        .map(|p| p.metadata.name.clone().expect("named"))
        .collect();
    for family in ["lab-onie", "lab-nvos", "lab-sonic", "lab-cumulus", "lab-rtbrick", "lab-default"] {
        assert!(profiles.iter().any(|p| p == family), "examples/lab lost the {family} profile: {profiles:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = procs::free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Every address, and no --external-url: URLs come from the Host each device reached.
    let listen = [format!("--listen=0.0.0.0:{port}")];
    let mut proc =
        binaries::standalone(&lab, &dir.path().join("data"), &listen, dir.path().join("standalone.log"));
    // The last line printed about each profile says Ready (it is "not ready" until the images are).
    let last_word = |log: &str, what: &str| -> Option<String> {
        let prefix = format!("{what}: ");
        log.lines().rev().find_map(|l| l.strip_prefix(&prefix)).map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.assert_running();
        let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
        let images_ready = ["lab-nos", "lab-onie-updater"].iter().all(|i| {
            last_word(&log, &format!("osimage default/{i}")).is_some_and(|w| w.starts_with("Ready"))
        });
        let profiles_ready = profiles
            .iter()
            .all(|p| last_word(&log, &format!("switchprofile default/{p}")).as_deref() == Some("Ready"));
        // The server polls the store: wait until it loaded the last snapshot published.
        let published = log.lines().rev().find_map(|l| {
            l.strip_prefix("snapshot ").and_then(|r| r.split_once(" published")).map(|(v, _)| v.to_owned())
        });
        let loaded = published
            .is_some_and(|v| log.lines().any(|l| l.contains("snapshot loaded") && l.contains(v.as_str())));
        if images_ready && profiles_ready && loaded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lab not Ready and loaded within 60 s:\n{}",
            procs::tail(&proc.log, 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A switch never gets a redirect: do not follow one.
    let client = Client::builder().redirect(Policy::none()).build().expect("client");
    let get = async |path: &str, h: reqwest::header::HeaderMap| {
        let r = client.get(format!("{base}{path}")).headers(h).send().await.expect("request");
        let status = r.status();
        (status, r.bytes().await.expect("body").to_vec())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get("/readyz", Default::default()).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "/readyz never 200:\n{}", procs::tail(&proc.log, 40));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let installer = std::fs::read(lab.join("images/lab-nos-installer.bin")).expect("lab installer");
    let updater = std::fs::read(lab.join("images/lab-onie-updater")).expect("lab updater");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // ONIE, by serial: the installer for os-install, the updater for onie-update.
    let onie = |serial: &str, operation: &str| {
        let mut h = onie_headers(serial, "0c:42:a1:00:00:01", operation);
        h.insert("ONIE-MACHINE", "lab_switch".parse().expect("value"));
        h
    };
    let (s, body) = get("/onie-installer-x86_64-lab_switch-r0", onie("LAB-ONIE-0001", "os-install")).await;
    assert_eq!((s, body == installer), (StatusCode::OK, true), "ONIE os-install");
    let (s, body) = get("/onie-updater-x86_64-lab_switch-r0.bin", onie("LAB-ONIE-0001", "onie-update")).await;
    assert_eq!((s, body == updater), (StatusCode::OK, true), "ONIE onie-update");
    // The model default answers the README's example (any serial of the lab model).
    let (s, body) = get("/onie-installer", onie("SOME-OTHER-SERIAL", "os-install")).await;
    assert_eq!((s, body == installer), (StatusCode::OK, true), "ONIE via the model default");

    // NVOS: the ZTP JSON by headers, its image URL and its commands, rendered for the device.
    let nvos = headers(&[
        ("User-Agent", "NVOS-ZTP/0.1"),
        ("SERIAL-NUMBER", "LAB-NVOS-0001"),
        ("PRODUCT-NAME", "LAB-SWITCH"),
        ("BASE-MAC-ADDRESS", "0C:42:A1:00:00:02"),
        ("NVOS-VERSION", "nvos-25.02.2002"),
        ("NVUE-VERSION", "2.5.0-nvos"),
    ]);
    let (s, body) = get("/nvos/ztp.json", nvos.clone()).await;
    assert_eq!(s, StatusCode::OK, "NVOS ztp.json: {}", text(&body));
    let json: Value = serde_json::from_slice(&body).expect("NVOS ZTP JSON");
    let image_url = json["ztp"]["01-image"]["install"]["url"].as_str().expect("image url").to_owned();
    assert_eq!(image_url, format!("{base}/images/lab-nos/1.0.0/lab-nos-installer.bin"));
    let commands = json["ztp"]["02-commands-list"]["url"].as_str().expect("commands url");
    let (s, body) = get(commands.strip_prefix(base.as_str()).expect("our URL"), nvos).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text(&body).contains("nv set system hostname lab-nvos01"), "{}", text(&body));
    let (s, body) = get("/images/lab-nos/1.0.0/lab-nos-installer.bin", Default::default()).await;
    assert_eq!((s, body == installer), (StatusCode::OK, true), "the image the ZTP JSON names");

    // SONiC: the ZTP engine's curl headers; sections its own engine runs (SONiC plugins), every
    // URL answering it, its config_db.json rendered for it, and a script that calls back.
    let sonic = headers(&[
        ("User-Agent", "SONiC-ZTP/0.1"),
        ("PRODUCT-NAME", "LAB-SWITCH"),
        ("SERIAL-NUMBER", "LAB-SONIC-0001"),
        ("BASE-MAC-ADDRESS", "0C:42:A1:00:00:03"),
        ("SONiC-VERSION", "SONiC.202411"),
    ]);
    let (s, body) = get("/sonic/ztp.json", sonic.clone()).await;
    assert_eq!(s, StatusCode::OK, "SONiC ztp.json: {}", text(&body));
    let json: Value = serde_json::from_slice(&body).expect("SONiC ZTP JSON");
    let downloads = sonic_engine::plan(&json).unwrap_or_else(|e| panic!("SONiC would fail: {e}\n{json:#}"));
    assert!(sonic_engine::ends_configured(&json), "SONiC would start ZTP over: {json:#}");
    let mut fetched = Vec::new();
    for d in &downloads {
        let (s, body) =
            get(d.url.strip_prefix(base.as_str()).expect("our URL, as the switch reached us"), sonic.clone())
                .await;
        assert_eq!(s, StatusCode::OK, "{d:?}");
        fetched.push((d.what, body));
    }
    let whats: Vec<&str> = fetched.iter().map(|(w, _)| *w).collect();
    assert_eq!(whats, ["image", "config_db.json", "plugin"]);
    assert_eq!(fetched[0].1, installer);
    let config: Value = serde_json::from_slice(&fetched[1].1).expect("config_db.json is JSON");
    assert_eq!(config["DEVICE_METADATA"]["localhost"]["hostname"], "lab-sonic01");
    let script = text(&fetched[2].1);
    assert!(script.contains(&format!("{base}/v1/devices/LAB-SONIC-0001/provisioned")), "{script}");
    // Listening on 0.0.0.0 without --external-url, URLs name the address the switch reached.
    let mut elsewhere = sonic.clone();
    elsewhere.insert("Host", format!("ztp.lab.internal:{port}").parse().expect("value"));
    let (_, body) = get("/sonic/ztp.json", elsewhere).await;
    let json: Value = serde_json::from_slice(&body).expect("SONiC ZTP JSON");
    let image = json["ztp"]["01-firmware"]["install"]["url"].as_str().expect("image url");
    assert_eq!(image, format!("http://ztp.lab.internal:{port}/images/lab-nos/1.0.0/lab-nos-installer.bin"));

    // Cumulus: the marker, LF only, rendered for the device.
    let cumulus = headers(&[
        ("User-Agent", "CumulusLinux-AutoProvision/0.4"),
        ("CUMULUS-ARCH", "x86_64"),
        ("CUMULUS-BUILD", "5.14.0"),
        ("CUMULUS-MANUFACTURER", "odm"),
        ("CUMULUS-PRODUCTNAME", "LAB-SWITCH"),
        ("CUMULUS-SERIAL", "LAB-CUMULUS-0001"),
        ("CUMULUS-BASE-MAC", "0C:42:A1:00:00:04"),
        ("CUMULUS-MGMT-MAC", "0C:42:A1:00:00:05"),
        ("CUMULUS-VERSION", "5.14.0"),
        ("CUMULUS-PROV-COUNT", "0"),
        ("CUMULUS-PROV-MAX", "32"),
    ]);
    let (s, body) = get("/cumulus/ztp.sh", cumulus).await;
    assert_eq!(s, StatusCode::OK);
    let script = text(&body);
    assert!(script.contains("CUMULUS-AUTOPROVISIONING") && !script.contains('\r'), "{script:?}");
    assert!(script.contains("nv set system hostname lab-cumulus01"), "{script}");

    // RtBrick: ONIE gets the image at /ztp/image, then CTRLD its files (ConfigMap, Secret); a file
    // the profile does not list is 404, which CTRLD skips.
    let (s, body) = get("/ztp/image", onie("LAB-RTBRICK-0001", "os-install")).await;
    assert_eq!((s, body == installer), (StatusCode::OK, true), "RtBrick /ztp/image");
    let ctrld = headers(&[
        ("ONIE-SERIAL-NUMBER", "LAB-RTBRICK-0001"),
        ("CONTAINER-NAME", "rtbrick"),
        ("ELEMENT-NAME", "lab-rtbrick01"),
        ("HOST-NAME", "lab-rtbrick01"),
    ]);
    let config = async |name: &str| get(&format!("/ztp/config/{name}"), ctrld.clone()).await;
    let (s, body) = config("startup").await;
    assert_eq!(s, StatusCode::OK);
    let startup: Value = serde_json::from_slice(&body).expect("startup JSON");
    assert_eq!(startup["ietf-restconf:data"]["rtbrick-config:system"]["hostname"], "lab-rtbrick01");
    let (s, body) = config("element").await;
    assert_eq!(s, StatusCode::OK);
    let element: Value = serde_json::from_slice(&body).expect("element JSON");
    assert_eq!(
        (&element["element_name"], &element["container_name"]),
        (&serde_json::json!("lab-rtbrick01"), &serde_json::json!("rtbrick"))
    );
    let (s, body) = config("accessjwks").await;
    assert_eq!((s, text(&body)), (StatusCode::OK, r#"{"keys": []}"#.to_owned()), "from the Secret");
    let (s, body) = config("ctrld").await;
    assert!(s == StatusCode::OK && text(&body).contains("\"ztp\""), "ctrld: {s} {}", text(&body));
    assert_eq!(config("ctrldrbac").await.0, StatusCode::NOT_FOUND);

    // An unknown device of an unknown model gets nothing.
    let mut stranger = onie("NOBODY", "os-install");
    stranger.insert("ONIE-MACHINE", "celestica_e1031".parse().expect("value"));
    assert_eq!(get("/onie-installer", stranger).await.0, StatusCode::NOT_FOUND);

    proc.assert_running();
    let _ = proc.child.kill();
    let _ = proc.child.wait();
}

/// Copies `examples/lab` (manifests and images) into `dir`, so a test can add files beside them.
fn lab_copy(dir: &Path) -> PathBuf {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let m = dir.join("manifests");
    std::fs::create_dir_all(m.join("images")).expect("mkdir");
    for f in
        ["osimages.yaml", "switchprofiles.yaml", "images/lab-nos-installer.bin", "images/lab-onie-updater"]
    {
        std::fs::copy(lab.join(f), m.join(f)).expect("copy lab file");
    }
    m
}

/// `standalone --once` over `manifests` into `data`, with a deadline (a run that never ends is
/// the failure some of these tests look for).
async fn once(manifests: &Path, data: &Path) -> (Option<i32>, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztp-operator"))
        .args(["standalone", "--once"])
        .arg(format!("--manifests={}", manifests.display()))
        .arg(format!("--data={}", data.display()))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("standalone --once did not end within 60 s")
        .expect("run standalone");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// The last line `out` printed about SwitchProfile `default/{name}`.
fn last_profile_line(out: &str, name: &str) -> String {
    out.lines()
        .rfind(|l| l.starts_with(&format!("switchprofile default/{name}: ")))
        .unwrap_or_else(|| panic!("no line about {name}:\n{out}"))
        .to_owned()
}

/// A file that does not parse, and one nested 100,000 levels deep, are skipped and reported; the
/// rest of the folder starts (before: the bad file stopped standalone from starting, and the deep
/// one cost minutes of CPU).
#[tokio::test]
async fn standalone_skips_bad_files_and_reports_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = lab_copy(dir.path());
    std::fs::write(m.join("broken.yaml"), "apiVersion: v1\nkind: OsImage\nspec: [unclosed\n").expect("write");
    std::fs::write(m.join("deep.yaml"), "[".repeat(100_000)).expect("write");
    let (code, out) = once(&m, &dir.path().join("data")).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("osimage default/lab-nos: Ready"), "{out}");
    let skipped: Vec<&str> = out.lines().filter(|l| l.starts_with("skipping")).collect();
    assert!(skipped.iter().any(|l| l.contains("broken.yaml")), "{out}");
    assert!(
        skipped.iter().any(|l| l.contains("deep.yaml") && l.contains("nested more than 128 levels")),
        "{out}"
    );
}

/// `--once` ends with an error naming the file when the status cannot be written (before: it
/// retried for ever).
#[tokio::test]
async fn standalone_once_fails_when_status_cannot_be_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = lab_copy(dir.path());
    let data = dir.path().join("data");
    // A directory where the status file's temporary copy goes: no write can succeed, even as root.
    std::fs::create_dir_all(data.join(".status/osimages.json.tmp")).expect("mkdir");
    let (code, out) = once(&m, &data).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("osimages.json"), "{out}");
}

/// Manifests the CRD would refuse (both `url` and `s3`, an upper-case sha256, an unknown
/// apiVersion, a reserved platform name, a misspelt field) are skipped and reported with the
/// apiserver's words, each file on its own; the lab folder beside them is still served (before:
/// all five were taken as they were).
#[tokio::test]
async fn standalone_refuses_what_the_crd_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = lab_copy(dir.path());
    let good = image_yaml("x", "1", "file:///nonexistent/x.bin", &"0".repeat(64));
    let cases = [
        (
            "both-sources.yaml",
            good.replace("source: {url:", "source: {s3: {bucket: b, key: k}, url:"),
            "source must set exactly one of url or s3",
        ),
        (
            "upper-sha.yaml",
            good.replace(&"0".repeat(64), &"A".repeat(64)),
            "sha256 must be 64 lowercase hexadecimal digits",
        ),
        (
            "beta.yaml",
            good.replace("v1alpha1", "v1beta1"),
            "no kind \"OsImage\" is served in version \"ztp.netops.dev/v1beta1\"",
        ),
        (
            "reserved.yaml",
            good.replace("platform: lab", "platform: Manifest.JSON"),
            "spec.platform: Invalid value: \"Manifest.JSON\": platform is reserved",
        ),
        (
            "typo.yaml",
            good.replace("platform: lab", "platform: lab\n  platfrom: lab"),
            "unknown field \"spec.platfrom\"",
        ),
    ];
    for (file, yaml, _) in &cases {
        assert_ne!(yaml, &good, "{file}: the case changes the manifest");
        std::fs::write(m.join(file), yaml).expect("write");
    }
    let (code, out) = once(&m, &dir.path().join("data")).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("osimage default/lab-nos: Ready"), "{out}");
    let skipped: Vec<&str> = out.lines().filter(|l| l.starts_with("skipping")).collect();
    for (file, _, message) in &cases {
        assert!(skipped.iter().any(|l| l.contains(file) && l.contains(message)), "{file}: {message}\n{out}");
    }
    assert!(!out.contains("osimage default/x"), "a refused image was reconciled:\n{out}");
}

/// Standalone classifies a profile's problems as the controller's conditions do: an unknown
/// template variable is found by the trial render and printed as Stalled / TemplateError naming
/// the template; a profile that waits for a missing object is Reconciling.
#[tokio::test]
async fn standalone_prints_the_profiles_health_as_the_controller_classifies_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = lab_copy(dir.path());
    let profiles = r#"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: bad-template}
spec:
  match: {serialNumbers: ["SN-BAD-TPL"]}
  files:
    startup: {inline: "site {{ variables.sitee }}\n", template: true}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: waits}
spec:
  match: {serialNumbers: ["SN-WAITS"]}
  onie: {installImage: {name: not-there-yet}}
"#;
    std::fs::write(m.join("health.yaml"), profiles).expect("write");
    let (code, out) = once(&m, &dir.path().join("data")).await;
    assert_eq!(code, Some(0), "{out}");
    let line = |name: &str| last_profile_line(&out, name);
    let bad = line("bad-template");
    assert!(bad.contains(": not ready (Stalled, TemplateError): files.startup: undefined value"), "{bad}");
    assert!(bad.contains("`variables.sitee` is undefined"), "{bad}");
    let waits = line("waits");
    assert!(
        waits.ends_with(
            ": not ready (Reconciling, WaitingForReference): onie.installImage: OsImage default/not-there-yet not found"
        ),
        "{waits}"
    );
}

/// Standalone runs the controller's profile pipeline: of two profiles claiming one serial, the
/// older claim (by name, as standalone profiles have no creation time) is Ready and told of the
/// other; the newer one is `not ready (Stalled, Conflict)`. Both statuses are in
/// `{data}/.status/switchprofiles.json`, with the conditions the controller would set.
#[tokio::test]
async fn standalone_reports_a_conflict_for_two_profiles_claiming_one_serial() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = lab_copy(dir.path());
    let profiles = r#"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: claim-a}
spec:
  match: {serialNumbers: ["SN-TWICE"]}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: claim-b}
spec:
  match: {serialNumbers: ["SN-TWICE"]}
"#;
    std::fs::write(m.join("twice.yaml"), profiles).expect("write");
    let data = dir.path().join("data");
    let (code, out) = once(&m, &data).await;
    assert_eq!(code, Some(0), "{out}");
    let line = |name: &str| last_profile_line(&out, name);
    let lost = "serial SN-TWICE is also claimed by default/claim-a, which wins: it is the older claim and serves the device";
    assert_eq!(
        line("claim-b"),
        format!("switchprofile default/claim-b: not ready (Stalled, Conflict): {lost}")
    );
    assert_eq!(
        line("claim-a"),
        "switchprofile default/claim-a: Ready (conflict: serial SN-TWICE is also claimed by default/claim-b (newer); this profile wins)"
    );
    let file: Value = serde_json::from_slice(
        &std::fs::read(data.join(".status/switchprofiles.json")).expect("status file"),
    )
    .expect("json");
    let condition = |name: &str, type_: &str| {
        file[format!("default/{name}")]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .map(|c| (c["status"].as_str().map(str::to_owned), c["reason"].as_str().map(str::to_owned)))
    };
    let some = |s: &str, r: &str| Some((Some(s.to_owned()), Some(r.to_owned())));
    assert_eq!(condition("claim-b", "Ready"), some("False", "Conflict"), "{file}");
    assert_eq!(condition("claim-b", "Stalled"), some("True", "Conflict"), "{file}");
    assert_eq!(condition("claim-a", "Ready"), some("True", "Resolved"), "{file}");
    assert_eq!(condition("claim-a", "Conflict"), some("True", "DuplicateMatch"), "{file}");
    assert_eq!(condition("lab-onie", "Ready"), some("True", "Resolved"), "{file}");
}

/// Standalone's equivalent of the controller's finalizer: an OsImage whose YAML goes away while a
/// SwitchProfile in the folder still references it is kept, stored and served (its status says
/// `Terminating`/`InUse` naming the profile), and cleaned up once the profile goes too.
#[tokio::test]
async fn standalone_keeps_serving_a_removed_image_that_a_profile_uses() {
    let _guard = support::guard("standalone-in-use");
    let body = random_bytes(150_000, 13);
    let sha = Sha256Digest::of(&body).to_string();
    let src = SourceServer::start(vec![("/a.bin", body.clone(), Behavior::Serve)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(m.join("a.yaml"), image_yaml("a", "1", &src.url_of("/a.bin"), &sha)).expect("write");
    let profile = "apiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\nmetadata: {name: leaf}\nspec:\n  match: {serialNumbers: [SN-LEAF]}\n  onie: {installImage: {name: a}}\n";
    std::fs::write(m.join("leaf.yaml"), profile).expect("write");
    let log_dir = &support::run().log_dir;
    let port = procs::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let flags = [format!("--listen=127.0.0.1:{port}"), format!("--external-url={base}")];
    let mut proc = binaries::standalone(&m, &data, &flags, log_dir.join("standalone-in-use.log"));
    let install = || async {
        let r = reqwest::Client::new()
            .get(format!("{base}/onie-installer"))
            .headers(crate::support::lab::onie_headers("SN-LEAF", "0c:42:a1:00:00:0c", "os-install"))
            .send()
            .await
            .ok()?;
        (r.status() == reqwest::StatusCode::OK).then_some(r.bytes().await.ok()?)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while install().await.is_none() {
        assert!(Instant::now() < deadline, "never served:\n{}", procs::tail(&proc.log, 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    std::fs::remove_file(m.join("a.yaml")).expect("rm");
    let held = |data: &Path| {
        status_of(data, "a").and_then(|s| {
            s["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Terminating" && c["reason"] == "InUse")
                .cloned()
        })
    };
    wait_until("a held", || held(&data).is_some()).await;
    let message = held(&data).and_then(|c| c["message"].as_str().map(str::to_owned)).unwrap_or_default();
    assert!(message.contains("still used by SwitchProfile default/leaf"), "{message}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(install().await.as_deref(), Some(body.as_ref()), "the switch still gets the image");
    assert!(data.join("lab/1/a.bin").exists(), "kept in the store");

    std::fs::remove_file(m.join("leaf.yaml")).expect("rm");
    wait_until("a cleaned up", || !data.join("lab/1/a.bin").exists() && status_of(&data, "a").is_none())
        .await;
    proc.assert_running();
    let log = procs::tail(&proc.log, 50);
    assert!(log.contains("osimage default/a: removed from the manifests, but deletion waits"), "{log}");
    let _ = proc.child.kill();
    let _ = proc.child.wait();
}

/// Standalone honours `Switch` documents as the controller does: a Switch pinning the lab's NVOS
/// profile gives a device of another serial that profile with the Switch's own hostname (asked of
/// the real server over standalone's store), a Switch lacking the variable its model's profile
/// needs is named on its own line while the profile stays Ready, and a profile without `match` is
/// for pinned switches only.
#[tokio::test]
async fn standalone_honours_switch_pins_and_values() {
    use reqwest::StatusCode;

    use crate::support::lab::nvos_headers;

    let dir = tempfile::tempdir().expect("tempdir");
    let m = lab_copy(dir.path());
    let switches = r#"
apiVersion: ztp.netops.dev/v1alpha1
kind: Switch
metadata: {name: bench-1}
spec: {serialNumber: BENCH-0001, profile: lab-nvos, hostname: bench-1}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: per-model}
spec:
  match: {models: ["N5110_LD"]}
  files:
    loopback: {inline: "{{ variables.loopback }}\n", template: true}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: Switch
metadata: {name: leaf-1}
spec: {serialNumber: LEAF-0001, model: N5110_LD, variables: {loopback: 10.0.0.1/32}}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: Switch
metadata: {name: leaf-2}
spec: {serialNumber: LEAF-0002, model: N5110_LD, hostname: leaf-2}
"#;
    std::fs::write(m.join("switches.yaml"), switches).expect("write");
    let data = dir.path().join("data");
    let (code, out) = once(&m, &data).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(last_profile_line(&out, "per-model").ends_with(": Ready"), "{out}");
    let told: Vec<&str> = out.lines().filter(|l| l.starts_with("switch default/")).collect();
    assert_eq!(told.len(), 1, "{out}");
    assert!(
        told[0]
            .starts_with("switch default/leaf-2: profile default/per-model: files.loopback: undefined value"),
        "{}",
        told[0]
    );

    let (_server, base) =
        binaries::serve("standalone-switches-serve", &[format!("--store-dir={}", data.display())], &[]).await;
    let c = reqwest::Client::new();
    let r =
        c.get(format!("{base}/nvos/ztp.json")).headers(nvos_headers("BENCH-0001")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "pinned: the NVOS profile, though its serial is not listed");
    let r = c.get(format!("{base}/nvos/BENCH-0001/sections/02-commands-list")).send().await.expect("get");
    assert_eq!(r.text().await.expect("body"), "nv set system hostname bench-1\nnv config apply -y\n");
    let r =
        c.get(format!("{base}/nvos/ztp.json")).headers(nvos_headers("LEAF-0001")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "per-model has no ZTP JSON: the pin is only bench-1's");
    // The model's profile with each Switch's values (RtBrick's named files; its headers too).
    let file = async |serial: &str| {
        let r = c.get(format!("{base}/ztp/config/loopback")).headers(nvos_headers(serial)).send().await;
        let r = r.expect("get");
        (r.status(), r.text().await.expect("body"))
    };
    assert_eq!(file("LEAF-0001").await, (StatusCode::OK, "10.0.0.1/32\n".to_owned()));
    let (status, body) = file("LEAF-0002").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.contains("variables.loopback"), "{body}");
}

/// The Switches of `data` as `ztpctl switches` prints them, and `ztpctl switch SERIAL`'s text.
fn ztpctl(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ztpctl")).args(args).output().expect("run ztpctl");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// Standalone keeps one Switch per device as the cluster does, in `{data}/.status/switches.json`:
/// a device that asks is discovered and its Switch follows its ZTP JSON, the stage its script
/// reports with the report key standalone generated, and its callback, to `Provisioned`;
/// `ztpctl switches` and `ztpctl switch SERIAL` print it; a Switch declared in the folder shows
/// before its device asks, and put on hold there its device gets 403; a restart resumes the
/// history.
#[tokio::test]
async fn standalone_keeps_switches_and_ztpctl_prints_them() {
    use reqwest::StatusCode;

    use crate::support::lab::nvos_headers;

    let dir = tempfile::tempdir().expect("tempdir");
    let m = lab_copy(dir.path());
    let data = dir.path().join("data");
    let d = data.display().to_string();
    let switches = "apiVersion: ztp.netops.dev/v1alpha1\nkind: Switch\nmetadata: {name: racked}\nspec: {serialNumber: LAB-RACKED-1, model: lab_switch}\n";
    std::fs::write(m.join("switches.yaml"), switches).expect("write");
    let admin = "switches-admin-token-0123456789";
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, format!("ci:{admin}\n")).expect("write");
    let start = |log: &str| {
        let port = procs::free_port();
        let flags = [
            format!("--listen=127.0.0.1:{port}"),
            "--activity-flush-seconds=0.2".to_owned(),
            format!("--admin-token-file={}", tokens.display()),
        ];
        (binaries::standalone(&m, &data, &flags, dir.path().join(log)), format!("http://127.0.0.1:{port}"))
    };
    let (mut proc, base) = start("standalone-switches-1.log");
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.assert_running();
        let r = c.get(format!("{base}/nvos/ztp.json")).headers(nvos_headers("LAB-NVOS-0001")).send().await;
        if r.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "no NVOS answer within 60 s:\n{}", procs::tail(&proc.log, 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The stage a script reports, with the token of the key standalone generated.
    let key = ztp_operator::switch::token::ReportKey::load(&data.join(".status/report-key"))
        .expect("generated key");
    let report = |token: String| {
        c.post(format!("{base}/v1/devices/LAB-NVOS-0001/report"))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(r#"{"stage": "config-applied"}"#)
            .send()
    };
    assert_eq!(report("0".repeat(64)).await.expect("post").status(), StatusCode::FORBIDDEN);
    assert_eq!(report(key.token("LAB-NVOS-0001")).await.expect("post").status(), StatusCode::NO_CONTENT);
    let r = c.post(format!("{base}/v1/devices/LAB-NVOS-0001/provisioned")).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let table = || ztpctl(&["switches", "--data", &d]);
    let row = |text: &str, serial: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.contains(serial))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, text) = table();
        let nvos = row(&text, "LAB-NVOS-0001");
        if ok && nvos.get(6).is_some_and(|p| p == "Provisioned") {
            let name = ztp_operator::switch::name::for_serial("LAB-NVOS-0001");
            assert_eq!(nvos[..4], ["default", name.as_str(), "LAB-NVOS-0001", "-"], "{text}");
            assert_eq!((nvos[4].as_str(), nvos[7].as_str()), ("N5110_LD", "127.0.0.1"), "{text}");
            assert_eq!(nvos[5], "lab-nvos", "{text}");
            // Declared in the folder: shown before its device asks, by the profile its model matches.
            let racked = row(&text, "LAB-RACKED-1");
            assert_eq!(racked[..2], ["default", "racked"], "{text}");
            assert_eq!((racked[5].as_str(), racked[6].as_str()), ("lab-default", "Discovered"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Provisioned within 30 s:\n{text}\n{}",
            procs::tail(&proc.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, text) = ztpctl(&["switch", "LAB-NVOS-0001", "--data", &d]);
    assert!(ok, "{text}");
    assert!(text.contains("  attempt 1 (Discovered): Provisioned"), "{text}");
    assert!(text.lines().any(|l| l.ends_with(" config-applied ok")), "{text}");
    assert!(text.contains("  profile: default/lab-nvos (by Serial)"), "{text}");
    let (ok, text) = ztpctl(&["switch", "NOBODY", "--data", &d]);
    assert!(!ok && text.contains("no Switch with serial number NOBODY"), "{text}");
    // The same from the server (`GET /v1/switches`), to an admin.
    let (ok, served) = ztpctl(&["--server", &base, "--token", admin, "switches"]);
    assert!(ok, "{served}");
    assert_eq!(served, table().1, "the server lists what the folder holds");
    let (ok, text) = ztpctl(&["--server", &base, "--token", admin, "switch", "LAB-NVOS-0001"]);
    assert!(ok && text.contains("  attempt 1 (Discovered): Provisioned"), "{text}");
    let (ok, text) = ztpctl(&["--server", &base, "--token", admin, "switch", "NOBODY"]);
    assert!(!ok && text.contains("no Switch has serial number \"NOBODY\""), "{text}");
    let (ok, text) = ztpctl(&["--server", &base, "switches"]);
    assert!(!ok && text.contains("403"), "no token, no list: {text}");

    // On hold in the folder: the device gets 403 once standalone has read it again.
    let held = switches.to_owned()
        + "---\napiVersion: ztp.netops.dev/v1alpha1\nkind: Switch\nmetadata: {name: nvos}\nspec: {serialNumber: LAB-NVOS-0001, hold: true}\n";
    std::fs::write(m.join("switches.yaml"), held).expect("write");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .get(format!("{base}/nvos/ztp.json"))
            .headers(nvos_headers("LAB-NVOS-0001"))
            .send()
            .await
            .expect("get");
        if r.status() == StatusCode::FORBIDDEN {
            break;
        }
        assert!(Instant::now() < deadline, "never held within 30 s: {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A restart resumes the fleet: the history is still there, the hold too.
    drop(proc);
    let (mut proc, _base) = start("standalone-switches-2.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.assert_running();
        let (_, text) = ztpctl(&["switch", "LAB-NVOS-0001", "--data", &d]);
        if text.contains("  phase: Held") {
            assert!(text.contains("  attempt 1 (Discovered): Provisioned"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "not Held after the restart within 30 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
