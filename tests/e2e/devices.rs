//! The device-facing server, through the real binary (`standalone --listen`), with clients that
//! send exactly what each switch family sends (docs/protocols.md): ONIE's busybox wget with the
//! `ONIE-*` headers walking the name waterfall, NVOS / SONiC curl with `SERIAL-NUMBER` & co and no
//! redirect following, Cumulus with `CUMULUS-*` headers, RtBrick's CTRLD.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode, header::HeaderMap, redirect::Policy};
use ztp_operator::hash::Sha256Digest;

use crate::support::{
    self,
    lab::{Lab, PROFILES, headers, lab, onie_headers},
    procs, random_bytes,
};

/// The default-name waterfall, most specific first (docs/protocols.md §1.4).
const WATERFALL: [&str; 6] = [
    "onie-installer-x86_64-accton_as7712_32x-r0",
    "onie-installer-x86_64-accton_as7712_32x",
    "onie-installer-accton_as7712_32x",
    "onie-installer-x86_64-bcm",
    "onie-installer-x86_64",
    "onie-installer",
];

#[tokio::test]
async fn onie_walks_the_waterfall_and_gets_the_right_image() {
    let lab = lab("devices-onie").await;
    let wget = Client::builder().redirect(Policy::none()).build().expect("client");
    // Any name of the waterfall answers (with and without .bin), for the serial's profile. (The
    // least specific first: after a full download ONIE asks a *later* name only when the
    // installer failed, and that one is refused for the rest of the pass — see below.)
    for name in [format!("{}.bin", WATERFALL[5]), WATERFALL[0].to_owned()] {
        let r = wget
            .get(format!("{}/{name}", lab.base))
            .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(r.content_length(), Some(lab.install.len() as u64));
        assert_eq!(r.bytes().await.expect("body").as_ref(), lab.install.as_slice());
    }
    // onie-update gets the updater from the model default, never the installer.
    let r = wget
        .get(format!("{}/onie-updater-x86_64-accton_as7712_32x-r0", lab.base))
        .headers(onie_headers("SN-OTHER", "0c:42:a1:00:00:99", "onie-update"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), lab.update.as_slice());
    // leaf07's own profile has no update image: the model default's (per-item fallback), never
    // its installer.
    let r = wget
        .get(format!("{}/onie-updater", lab.base))
        .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "onie-update"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), lab.update.as_slice());
    // A name and an operation that disagree get nothing.
    let r = wget
        .get(format!("{}/onie-installer", lab.base))
        .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "onie-update"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // An unknown device walks the whole waterfall and gets 404 for every name.
    let mut unknown = onie_headers("SN-NOBODY", "0c:42:a1:00:00:98", "os-install");
    unknown.insert("ONIE-MACHINE", "celestica_e1031".parse().expect("value"));
    for name in WATERFALL {
        let r = wget.get(format!("{}/{name}", lab.base)).headers(unknown.clone()).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{name}");
    }
    // The MAC identifies too, whatever its case (Cumulus sends upper case, ONIE lower).
    let r = wget
        .get(format!("{}/onie", lab.base))
        .headers(onie_headers("SN-UNLISTED", "0c:42:a1:00:00:07", "os-install"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Every URL ONIE asks in one discovery pass, in its order (docs/protocols.md §1.3, §1.4): options
/// 125 and 114 (`/onie`, when `fixed`), then the 12 default names, each bare and with `.bin`.
fn discovery_pass(fixed: bool, prefix: &str) -> Vec<String> {
    let mut urls = if fixed { vec!["onie".to_owned(), "onie".to_owned()] } else { vec![] };
    for name in WATERFALL {
        let name = name.replacen("onie-installer", prefix, 1);
        urls.push(format!("{name}.bin"));
        urls.insert(urls.len() - 1, name);
    }
    urls
}

/// Replays one pass of ONIE's discovery whose installer always fails (exits non-zero), as ONIE
/// does: on to the next candidate after each download. Returns the body bytes served and the
/// statuses.
async fn replay_pass(lab: &Lab, urls: &[String], headers: &HeaderMap) -> (usize, Vec<(String, u16)>) {
    // busybox wget: one connection per request, no redirects, no Range.
    let wget = Client::builder().redirect(Policy::none()).pool_max_idle_per_host(0).build().expect("client");
    let (mut bytes, mut statuses) = (0, Vec::new());
    for url in urls {
        let r = wget.get(format!("{}/{url}", lab.base)).headers(headers.clone()).send().await.expect("get");
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("body");
        if status == 200 {
            bytes += body.len();
        } else {
            assert_eq!(status, 404, "{url}");
        }
        statuses.push((url.clone(), status));
    }
    (bytes, statuses)
}

/// A broken installer costs a switch one download per discovery pass, not one per name: ONIE
/// asking for its next candidate right after a full download means the installer failed, and the
/// same bytes are not sent again in that pass; the next pass gets them again (a repaired image
/// must still install).
#[tokio::test]
async fn a_failing_installer_is_downloaded_once_per_discovery_pass() {
    let lab = lab("devices-failing-installer").await;
    let leaf07 = onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install");
    // Partial discovery (port 80): the 12 names, the first answers.
    let names = discovery_pass(false, "onie-installer");
    assert_eq!(names.len(), 12);
    for pass in 1..=2 {
        let (bytes, statuses) = replay_pass(&lab, &names, &leaf07).await;
        assert_eq!(bytes, lab.install.len(), "pass {pass}: {statuses:?}");
        assert_eq!(statuses[0].1, 200, "pass {pass}: the most specific name");
        assert!(statuses[1..].iter().all(|(_, s)| *s == 404), "pass {pass}: {statuses:?}");
    }
    // The refusal says why.
    let r = Client::new()
        .get(format!("{}/onie-installer", lab.base))
        .headers(leaf07.clone())
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.expect("text").contains("not sending the same image again"));
    // A HEAD or a range (not ONIE's wget) is never refused.
    let r = Client::new()
        .get(format!("{}/onie-installer", lab.base))
        .headers(leaf07.clone())
        .header("Range", "bytes=0-9")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);

    // Options 125 and 114 both `/onie`, then the names: one download in the pass; the next pass
    // (after ONIE's 20 s sleep, past the window) gets it again at `/onie`.
    let other = onie_headers("SN-OTHER", "0c:42:a1:00:00:99", "os-install");
    let urls = discovery_pass(true, "onie-installer");
    let (bytes, statuses) = replay_pass(&lab, &urls, &other).await;
    assert_eq!(bytes, lab.install.len(), "{statuses:?}");
    assert_eq!(statuses[0], ("onie".to_owned(), 200));
    tokio::time::sleep(ztp_operator::serve::onie_pass::SAME_PASS_WINDOW).await;
    let (bytes, statuses) = replay_pass(&lab, &urls[..1], &other).await;
    assert_eq!((bytes, statuses[0].1), (lab.install.len(), 200));

    // An updater too (update mode), from the model default.
    let update = onie_headers("SN-OTHER", "0c:42:a1:00:00:99", "onie-update");
    let (bytes, statuses) = replay_pass(&lab, &discovery_pass(false, "onie-updater"), &update).await;
    assert_eq!(bytes, lab.update.len(), "{statuses:?}");

    // One warning per refusal, naming the device and the image.
    let log = std::fs::read_to_string(&lab.proc.log).unwrap_or_default();
    let warned =
        log.lines().filter(|l| l.contains("InstallerFailed") && l.contains("serial SN-LEAF07")).count();
    assert_eq!(warned, 11 + 11 + 1, "{}", procs::tail(&lab.proc.log, 40));
    assert!(log.lines().any(|l| l.contains("InstallerFailed") && l.contains("nos/1/nos.bin")));
}

/// Update mode with ONIE's exact headers: a serial profile that names only an installer does not
/// block the firmware update its model default gives (each ONIE image falls back on its own).
#[tokio::test]
async fn a_serial_profile_without_an_updater_gets_the_model_defaults() {
    let lab = lab("devices-update-fallback").await;
    let update = onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "onie-update");
    let (bytes, statuses) = replay_pass(&lab, &discovery_pass(true, "onie-updater"), &update).await;
    assert_eq!(statuses[0], ("onie".to_owned(), 200), "{statuses:?}");
    assert_eq!(bytes, lab.update.len());
    // Its own installer still wins for os-install (the serial's, here the same OsImage `nos`).
    let install = onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install");
    let (bytes, _) = replay_pass(&lab, &discovery_pass(false, "onie-installer")[..1], &install).await;
    assert_eq!(bytes, lab.install.len());
}

#[tokio::test]
async fn images_stream_with_range_head_and_etag() {
    let lab = lab("devices-range").await;
    let c = Client::new();
    let url = format!("{}/images/nos/1/nos.bin", lab.base);
    let sha = Sha256Digest::of(&lab.install).to_string();
    let head = c.head(&url).send().await.expect("head");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], lab.install.len().to_string().as_str());
    assert_eq!(head.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    assert!(head.headers().contains_key("cache-control"));
    let part = c.get(&url).header("Range", "bytes=100-199").send().await.expect("range");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], format!("bytes 100-199/{}", lab.install.len()).as_str());
    assert_eq!(part.bytes().await.expect("body").as_ref(), &lab.install[100..200]);
    let past =
        c.get(&url).header("Range", format!("bytes={}-", lab.install.len())).send().await.expect("416");
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // The firmware routes of the reference service.
    let sum: serde_json::Value = c
        .get(format!("{}/v1/firmware/nos/1/checksum", lab.base))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .expect("body");
    assert_eq!(sum["checksum"], sha);
    let fw = c.get(format!("{}/v1/firmware/nos/1", lab.base)).send().await.expect("get");
    assert_eq!(fw.bytes().await.expect("body").len(), lab.install.len());
    // Snapshots are never served as images.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lab.manifests.parent().expect("dir").join("d/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let snapshot_path = manifest["images"]
        .as_array()
        .expect("images")
        .iter()
        .find_map(|e| e["path"].as_str().filter(|p| p.starts_with("ztp-snapshots/")))
        .expect("a snapshot entry");
    let r = c.get(format!("{}/images/{snapshot_path}", lab.base)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admission_limit_answers_503_with_retry_after() {
    let lab = lab("devices-admission").await;
    let url = format!("{}/images/nos/1/nos.bin", lab.base);
    // Two slow readers hold the two permits (--max-downloads=2): open bodies not yet read.
    let c = Client::new();
    let held = vec![c.get(&url).send().await.expect("first"), c.get(&url).send().await.expect("second")];
    let third = c.get(&url).send().await.expect("third");
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers().contains_key("retry-after"));
    let metrics =
        c.get(format!("{}/metrics", lab.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("ztp_downloads_active 2"), "{metrics}");
    assert!(metrics.contains("ztp_downloads_limit 2"), "{metrics}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(&url).send().await.expect("again");
        if r.status() == StatusCode::OK {
            assert_eq!(r.bytes().await.expect("body").len(), lab.install.len());
            break;
        }
        assert!(Instant::now() < deadline, "permits not released after the clients left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nvos_sonic_cumulus_and_rtbrick_get_their_files() {
    let lab = lab("devices-families").await;
    let curl = Client::builder().redirect(Policy::none()).build().expect("client");
    // NVOS (seed 001): User-Agent NVOS-ZTP/0.1 and the identity headers.
    let nvos = headers(&[
        ("User-Agent", "NVOS-ZTP/0.1"),
        ("PRODUCT-NAME", "N5110_LD"),
        ("SERIAL-NUMBER", "SN-LEAF07"),
        ("BASE-MAC-ADDRESS", "0C:42:A1:00:00:07"),
        ("NVOS-VERSION", "nvos-25.02.2002"),
        ("NVUE-VERSION", "2.5.0-nvos"),
    ]);
    let r = curl.get(format!("{}/nvos/ztp.json", lab.base)).headers(nvos.clone()).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    let ztp = json["ztp"].as_object().expect("top-level ztp");
    let keys: Vec<&String> =
        ztp.keys().filter(|k| k.contains('-') && k.as_bytes()[0].is_ascii_digit()).collect();
    assert_eq!(keys, ["01-image", "02-commands-list", "03-connectivity-check"]);
    assert_eq!(json["ztp"]["01-image"]["install"]["url"], format!("{}/images/nos/1/nos.bin", lab.base));
    assert_eq!(json["ztp"]["03-connectivity-check"]["ping-hosts"], serde_json::json!(["192.0.2.1"]));
    assert_eq!(json["ztp"]["03-connectivity-check"]["ignore-result"], true);
    let commands_url = json["ztp"]["02-commands-list"]["url"].as_str().expect("url").to_owned();
    let commands =
        curl.get(&commands_url).headers(nvos.clone()).send().await.expect("get").text().await.expect("text");
    assert_eq!(commands, "nv set system hostname leaf07\nnv set service ntp default server 192.0.2.1\n");
    // The image URL inside the JSON downloads the verified image.
    let img =
        curl.get(json["ztp"]["01-image"]["install"]["url"].as_str().expect("url")).send().await.expect("get");
    assert_eq!(img.bytes().await.expect("body").as_ref(), lab.install.as_slice());
    // SONiC by serial in the path (dynamic-url with identifier serial-number), curl's UA.
    let sonic =
        headers(&[("User-Agent", "curl/7.88.1"), ("SONiC-VERSION", "SONiC.202411"), ("PRODUCT-NAME", "x")]);
    let r = curl
        .get(format!("{}/sonic/SN-LEAF07/ztp.json", lab.base))
        .headers(sonic.clone())
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let r =
        curl.get(format!("{}/sonic/SN-NOBODY/ztp.json", lab.base)).headers(sonic).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Cumulus: CRLF in the profile, LF on the wire, the marker present.
    let cumulus = headers(&[
        ("User-Agent", "CumulusLinux-AutoProvision/0.4"),
        ("CUMULUS-ARCH", "x86_64"),
        ("CUMULUS-BASE-MAC", "0C:42:A1:00:00:07"),
        ("CUMULUS-PRODUCTNAME", "MSN2410"),
        ("CUMULUS-SERIAL", "SN-LEAF07"),
        ("CUMULUS-VERSION", "5.13.0"),
    ]);
    let r = curl.get(format!("{}/cumulus/ztp.sh", lab.base)).headers(cumulus).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let script = r.text().await.expect("text");
    assert!(script.contains("CUMULUS-AUTOPROVISIONING") && !script.contains('\r'), "{script:?}");
    assert!(script.contains("echo leaf07"));

    // RtBrick CTRLD: per-serial config, headers available to templates; a missing file is 404.
    let ctrld = headers(&[
        ("ONIE-SERIAL-NUMBER", "SN-SPINE"),
        ("ONIE-MACHINE", "accton_as7712_32x"),
        ("CONTAINER-NAME", "rtbrick"),
        ("ELEMENT-NAME", "spine01"),
        ("HOST-NAME", "spine01"),
    ]);
    let r = curl
        .get(format!("{}/ztp/config/startup", lab.base))
        .headers(ctrld.clone())
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let startup: serde_json::Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(
        startup,
        serde_json::json!({"host": "default-leaf", "serial": "SN-SPINE", "element": "spine01"})
    );
    let r =
        curl.get(format!("{}/ztp/config/ctrld", lab.base)).headers(ctrld.clone()).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = curl
        .post(format!("{}/ztp/message", lab.base))
        .headers(ctrld)
        .body("done")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // A script's callback, then the per-family counters on /metrics.
    let r = curl.post(format!("{}/v1/devices/SN-LEAF07/provisioned", lab.base)).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = curl.post(format!("{}/v1/devices/..%2Fx/provisioned", lab.base)).send().await.expect("post");
    assert!(r.status().is_client_error());
    let metrics =
        curl.get(format!("{}/metrics", lab.base)).send().await.expect("get").text().await.expect("text");
    for line in [
        "ztp_device_requests_total{family=\"nvos\",code=\"2xx\"}",
        "ztp_device_requests_total{family=\"cumulus\",code=\"2xx\"} 1",
        "ztp_device_requests_total{family=\"sonic\",code=\"4xx\"} 1",
        "ztp_devices_provisioned_total 1",
        "ztp_snapshot_profiles 3",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

/// A SONiC switch gets sections its own ZTP engine runs (support::sonic_engine): every section
/// resolves to a SONiC plugin, every URL it downloads answers its curl, the config_db.json is JSON
/// rendered for it, and the run ends configured. A profile with only NVOS's `ztp` is never served
/// to SONiC. The device is who its headers say, whatever a `dynamic-url` put in the path, and a
/// switch that names no serial is sent to its serial's URL by a `dynamic-url`.
#[tokio::test]
async fn a_sonic_switch_runs_what_it_is_served() {
    use crate::support::sonic_engine;

    let lab = lab("devices-sonic").await;
    let curl = Client::builder().redirect(Policy::none()).build().expect("client");
    // What sonic-ztp's downloader sends (its curl -A and -H), as the EEPROM says.
    let sonic = headers(&[
        ("User-Agent", "SONiC-ZTP/0.1"),
        ("PRODUCT-NAME", "N5110_LD"),
        ("SERIAL-NUMBER", "SN-LEAF07"),
        ("BASE-MAC-ADDRESS", "0C:42:A1:00:00:07"),
        ("SONiC-VERSION", "SONiC.202411.1"),
    ]);
    let get_json = async |path: &str, h: HeaderMap| {
        let r = curl.get(format!("{}{path}", lab.base)).headers(h).send().await.expect("get");
        let status = r.status();
        let body = r.bytes().await.expect("body");
        assert_eq!(status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<serde_json::Value>(&body).expect("json")
    };
    let doc = get_json("/sonic/ztp.json", sonic.clone()).await;
    let downloads = sonic_engine::plan(&doc).unwrap_or_else(|e| panic!("SONiC would fail: {e}\n{doc:#}"));
    assert!(sonic_engine::ends_configured(&doc), "ZTP would start over: {doc:#}");
    let whats: Vec<&str> = downloads.iter().map(|d| d.what).collect();
    assert_eq!(whats, ["image", "config_db.json", "plugin"]);
    for d in &downloads {
        assert!(d.url.starts_with(&format!("{}/", lab.base)), "{d:?}");
        let r = curl.get(&d.url).headers(sonic.clone()).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{d:?}");
        let body = r.bytes().await.expect("body");
        match d.what {
            "image" => assert_eq!(body.as_ref(), lab.install.as_slice()),
            "config_db.json" => {
                let cfg: serde_json::Value = serde_json::from_slice(&body).expect("config_db.json is JSON");
                assert_eq!(cfg["DEVICE_METADATA"]["localhost"]["hostname"], "leaf07");
            }
            _ => {
                let script = String::from_utf8_lossy(&body);
                assert!(
                    script.contains(&format!("{}/v1/devices/SN-LEAF07/provisioned", lab.base)),
                    "{script}"
                );
            }
        }
    }
    assert_eq!(doc["ztp"]["01-firmware"]["install"]["version"], "SONiC-OS-1");

    // NVOS's sections are never served to SONiC.
    let mut nvos_only = sonic.clone();
    nvos_only.insert("SERIAL-NUMBER", "SN-NVOS-ONLY".parse().expect("value"));
    nvos_only.remove("BASE-MAC-ADDRESS");
    let r = curl
        .get(format!("{}/sonic/ztp.json", lab.base))
        .headers(nvos_only.clone())
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.expect("text").contains("spec.sonic"));
    nvos_only.insert("NVOS-VERSION", "nvos-25.02.2002".parse().expect("value"));
    let r = curl.get(format!("{}/nvos/ztp.json", lab.base)).headers(nvos_only).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "NVOS still gets it");

    // A dynamic-url built from the product name: still SN-LEAF07's document, URLs and all.
    let by_product = get_json("/sonic/N5110_LD/ztp.json", sonic.clone()).await;
    assert_eq!(by_product, doc, "the SERIAL-NUMBER header names the device, not the path");

    // No serial said: a dynamic-url to the serial route, as SONiC's engine resolves it.
    let anonymous = headers(&[("User-Agent", "SONiC-ZTP/0.1")]);
    let chain = get_json("/sonic/ztp.json", anonymous.clone()).await;
    let source = &chain["ztp"]["dynamic-url"]["source"];
    assert_eq!(source["identifier"], "serial-number", "{chain:#}");
    let url = format!(
        "{}SN-LEAF07{}",
        source["prefix"].as_str().expect("prefix"),
        source["suffix"].as_str().expect("suffix")
    );
    let r = curl.get(&url).headers(anonymous).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    let resolved: serde_json::Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(resolved, doc);

    // The log names one device, SN-LEAF07, for all of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&lab.proc.log).unwrap_or_default();
        let line = log
            .lines()
            .find(|l| l.contains("device request") && l.contains("path=\"/sonic/N5110_LD/ztp.json\""));
        if let Some(line) = line {
            assert!(line.contains("serial=\"SN-LEAF07\""), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no log line:\n{}", procs::tail(&lab.proc.log, 30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn hostile_paths_never_leave_the_store() {
    let lab = lab("devices-traversal").await;
    let c = Client::builder().redirect(Policy::none()).build().expect("client");
    for path in [
        "/images/../../etc/passwd",
        "/images/nos/1/..%2F..%2F..%2Fetc%2Fpasswd",
        "/images/nos/%2e%2e/nos.bin",
        "/images/..%2f..%2f/x/y",
        "/nvos/..%2F..%2Fetc/ztp.json",
        "/nvos/SN-LEAF07/sections/..%2F..%2Fmanifest.json",
        "/cumulus/..%2F/ztp.sh",
        "/ztp/config/..%2F..%2Fmanifest.json",
        "/ztp/images/..%2Fmanifest.json",
        "/v1/firmware/..%2F..%2F/x",
        "/v1/firmware/nos/..%2F..%2F/checksum",
        "/manifest.json",
        "/.manifest.lock",
    ] {
        let r = c
            .get(format!("{}{path}", lab.base))
            .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install"))
            .send()
            .await
            .expect("get");
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        let body = r.text().await.unwrap_or_default();
        assert!(!body.contains("root:") && !body.contains("\"images\""), "{path} leaked: {body}");
    }
}

#[tokio::test]
async fn a_profile_change_is_served_within_seconds() {
    let lab = lab("devices-swap").await;
    let c = Client::new();
    let url = format!("{}/nvos/SN-LEAF07/sections/02-commands-list", lab.base);
    assert!(c.get(&url).send().await.expect("get").text().await.expect("text").contains("leaf07"));
    std::fs::write(
        lab.manifests.join("profiles.yaml"),
        PROFILES.replace("hostname: leaf07", "hostname: leaf07-renamed"),
    )
    .expect("write");
    let started = Instant::now();
    loop {
        let body = c.get(&url).send().await.expect("get").text().await.expect("text");
        if body.contains("leaf07-renamed") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "new snapshot not served after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The controller side on the real apiserver: SwitchProfiles are rendered into a snapshot in the
/// store, with each profile's status saying what is missing or whom it collides with, and
/// Secrets never leave the controller except inside that snapshot.
#[tokio::test]
async fn controller_renders_profiles_and_reports_their_status() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    use ztp_operator::api::{SwitchProfile, conditions::find_condition};

    use crate::support::{
        controller::{is_ready, osimage, start_controller, wait_for},
        store::{Backend, TestStore},
    };

    let t = support::kube_test("devices-controller").await;
    let store = TestStore::new(Backend::Fs, "devices-controller").await;
    let body = random_bytes(100_000, 31);
    let src = crate::support::source::SourceServer::start(vec![(
        "/nos.bin",
        body.clone(),
        crate::support::source::Behavior::Serve,
    )])
    .await;
    let images: Api<ztp_operator::api::OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    images
        .create(
            &PostParams::default(),
            &osimage(
                "nos",
                "nos",
                "1",
                &src.url_of("/nos.bin"),
                &Sha256Digest::of(&body).to_string(),
                serde_json::json!({}),
            ),
        )
        .await
        .expect("create image");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jwks"}, "stringData": {"jwks.json": "{\"keys\": []}"}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(t.client.clone(), &t.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let profile = |name: &str, serial: &str, extra: serde_json::Value| -> SwitchProfile {
        let mut spec = serde_json::json!({"match": {"serialNumbers": [serial]}, "onie": {"installImage": {"name": "nos"}}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(serde_json::json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": name}, "spec": spec}))
            .expect("profile")
    };
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    profiles
        .create(&PostParams::default(), &profile("a-spine", "SN-1", serde_json::json!({"files": {"accessjwks": {"secretKeyRef": {"name": "jwks", "key": "jwks.json"}}}})))
        .await
        .expect("create");
    profiles
        .create(&PostParams::default(), &profile("b-dup", "SN-1", serde_json::json!({})))
        .await
        .expect("create");
    profiles
        .create(
            &PostParams::default(),
            &profile(
                "c-missing",
                "SN-3",
                serde_json::json!({"files": {"ctrld": {"configMapKeyRef": {"name": "absent", "key": "x"}}}}),
            ),
        )
        .await
        .expect("create");
    // A template that cannot compile is the profile's condition now, not a 500 when the switch boots.
    profiles
        .create(
            &PostParams::default(),
            &profile(
                "d-broken-template",
                "SN-4",
                serde_json::json!({"files": {"startup": {"inline": "hostname {{ hostname }}\n{% if mac %}\nno end", "template": true}}}),
            ),
        )
        .await
        .expect("create");
    let _c = start_controller(&t, &store);
    wait_for(&images, "nos", "Ready", is_ready).await;

    let cond = |p: &SwitchProfile, t: ztp_operator::api::ConditionType| {
        p.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, t))
            .map(|c| (c.status.clone(), c.message.clone()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = profiles.get("a-spine").await.expect("get");
        let b = profiles.get("b-dup").await.expect("get");
        let c = profiles.get("c-missing").await.expect("get");
        let d = profiles.get("d-broken-template").await.expect("get");
        let ready = cond(&a, ztp_operator::api::ConditionType::Ready).is_some_and(|(s, _)| s == "True")
            && cond(&b, ztp_operator::api::ConditionType::Conflict).is_some()
            && cond(&c, ztp_operator::api::ConditionType::Ready).is_some_and(|(s, _)| s == "False")
            && cond(&d, ztp_operator::api::ConditionType::Ready).is_some_and(|(s, _)| s == "False");
        if ready {
            let (_, msg) = cond(&b, ztp_operator::api::ConditionType::Conflict).expect("conflict");
            assert!(
                msg.contains(&format!("SN-1 is also claimed by {}/a-spine, which wins", t.namespace)),
                "{msg}"
            );
            let (_, msg) = cond(&a, ztp_operator::api::ConditionType::Conflict).expect("winner's conflict");
            assert!(msg.contains("this profile wins"), "{msg}");
            let (_, msg) = cond(&c, ztp_operator::api::ConditionType::Ready).expect("ready");
            assert!(
                msg.contains(&format!("files.ctrld: ConfigMap {}/absent not found", t.namespace)),
                "{msg}"
            );
            let (_, msg) = cond(&d, ztp_operator::api::ConditionType::Ready).expect("ready");
            assert!(msg.contains("files.startup: syntax error"), "{msg}");
            assert_eq!(a.status.as_ref().and_then(|s| s.match_summary.as_deref()), Some("1 serial"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "profile statuses not as expected: {:?} {:?} {:?} {:?}",
            a.status,
            b.status,
            c.status,
            d.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The snapshot in the store carries the resolved Secret for the server; it is current.
    let manifest = store.store.manifest().await.expect("manifest");
    let entry = ztp_operator::profile::publish::current_entry(&manifest).expect("a current snapshot");
    let snapshot = ztp_operator::profile::publish::load(&store.store, entry).await.expect("load");
    let a = snapshot.profiles.iter().find(|p| p.name == "a-spine").expect("a-spine");
    assert!(
        matches!(a.files.get("accessjwks"), Some(ztp_operator::profile::snapshot::Resolved::Text(t)) if t.text == "{\"keys\": []}")
    );
    assert_eq!(
        snapshot.images.get(&format!("{}/nos", t.namespace)).map(|i| i.path.as_str()),
        Some("nos/1/nos.bin")
    );

    // Changing the Secret re-renders: a new snapshot with the new content becomes current.
    let patch = serde_json::json!({"stringData": {"jwks.json": "{\"keys\": [1]}"}});
    Api::<Secret>::namespaced(t.client.clone(), &t.namespace)
        .patch("jwks", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("patch secret");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let manifest = store.store.manifest().await.expect("manifest");
        let entry = ztp_operator::profile::publish::current_entry(&manifest).expect("current").clone();
        let snapshot = ztp_operator::profile::publish::load(&store.store, &entry).await.expect("load");
        let a = snapshot.profiles.iter().find(|p| p.name == "a-spine").expect("a-spine");
        if matches!(a.files.get("accessjwks"), Some(ztp_operator::profile::snapshot::Resolved::Text(t)) if t.text == "{\"keys\": [1]}")
        {
            break;
        }
        assert!(Instant::now() < deadline, "a Secret change did not re-render the snapshot");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One log line per device request, naming the device and its family even when only the route
/// says who it is (a SONiC switch fetching its per-serial ZTP JSON sends no identity headers of
/// ours), whichever path answered (the sendfile fast path for the ONIE download); and the metrics
/// count it under that family.
#[tokio::test]
async fn every_device_request_is_logged_once_with_its_serial_and_family() {
    let lab = lab("devices-log-line").await;
    let c = Client::new();
    let get = |path: &str| c.get(format!("{}{path}", lab.base));
    let sonic = get("/sonic/SN-LEAF07/ztp.json").send().await.expect("get");
    assert_eq!(sonic.status(), StatusCode::OK);
    let cumulus = get("/cumulus/SN-LEAF07/ztp.sh").send().await.expect("get");
    assert_eq!(cumulus.status(), StatusCode::OK);
    let onie = get("/onie")
        .headers(onie_headers("SN-LEAF07", "0c:42:a1:00:00:07", "os-install"))
        .header("Range", "bytes=0-9")
        .send()
        .await
        .expect("get");
    assert_eq!(onie.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(onie.bytes().await.expect("body").as_ref(), &lab.install[..10]);

    let expected = [
        ("/sonic/SN-LEAF07/ztp.json", "sonic", "200"),
        ("/cumulus/SN-LEAF07/ztp.sh", "cumulus", "200"),
        ("/onie", "onie", "206"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&lab.proc.log).unwrap_or_default();
        let lines = |path: &str| {
            log.lines()
                .filter(|l| l.contains("device request") && l.contains(&format!("path=\"{path}\"")))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let all_there = expected.iter().all(|(path, ..)| !lines(path).is_empty());
        if all_there {
            for (path, family, status) in expected {
                let found = lines(path);
                assert_eq!(found.len(), 1, "one line for {path}: {found:#?}");
                for field in
                    ["serial=\"SN-LEAF07\"", &format!("family=\"{family}\""), &format!("status={status}")]
                {
                    assert!(found[0].contains(field), "{field} in {}", found[0]);
                }
                assert!(!found[0].contains('\u{1b}'), "no colour codes in a log file: {:?}", found[0]);
            }
            break;
        }
        assert!(Instant::now() < deadline, "device lines missing:\n{}", procs::tail(&lab.proc.log, 30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = get("/metrics").send().await.expect("get").text().await.expect("text");
    for family in ["sonic", "cumulus"] {
        let line = format!("ztp_device_requests_total{{family=\"{family}\",code=\"2xx\"}} 1");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
}
