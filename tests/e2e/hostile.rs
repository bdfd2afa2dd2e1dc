//! The server's own edges against an anonymous, hostile client, on the real binary (standalone
//! mode over `examples/lab`, whose model-default profile answers any serial number of the lab
//! model): what a device names itself by is bounded, and so is what the server keeps about it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode, header::HeaderMap};

use crate::support::{binaries, lab::headers, procs};

/// `standalone` over a copy-free `examples/lab`, listening on a free port.
pub(crate) struct Lab {
    pub proc: procs::Proc,
    pub base: String,
    pub data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts standalone over `examples/lab` and waits until an NVOS switch of the lab model gets
/// its ZTP JSON (images stored, snapshot loaded).
pub(crate) async fn start_lab(name: &str) -> Lab {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = procs::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = [format!("--listen=127.0.0.1:{port}")];
    let mut proc = binaries::standalone(&lab, &data, &listen, dir.path().join(format!("{name}.log")));
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.assert_running();
        let r = client.get(format!("{base}/nvos/ztp.json")).headers(nvos("LAB-NVOS-READY")).send().await;
        if r.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "lab not serving within 60 s:\n{}", procs::tail(&proc.log, 40));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Lab { proc, base, data, _dir: dir }
}

/// The headers of an NVOS switch of the lab model with this serial number.
pub(crate) fn nvos(serial: &str) -> HeaderMap {
    headers(&[
        ("User-Agent", "NVOS-ZTP/0.1"),
        ("SERIAL-NUMBER", serial),
        ("PRODUCT-NAME", "LAB-SWITCH"),
        ("NVOS-VERSION", "nvos-25.02.2002"),
    ])
}

/// Resident memory of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Over-long identity headers get a 400 naming the header and the limit; hundreds of them, and
/// thousands of distinct valid serial numbers on the model default, leave memory and the activity
/// file bounded. (Before: 300 serials of 100 kB took a server from 16 to 88 MiB, and the status
/// file to 4 MB.)
#[tokio::test]
async fn device_identities_cannot_grow_the_server() {
    let mut lab = start_lab("hostile-identity").await;
    let client = Client::new();
    let url = format!("{}/nvos/ztp.json", lab.base);

    let long = "S".repeat(100 * 1024);
    let r = client.get(&url).headers(nvos(&long)).send().await.expect("request");
    let status = r.status();
    let body = r.text().await.expect("body");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("SERIAL-NUMBER") && body.contains("at most 128"), "{body}");
    let mut model = nvos("LAB-NVOS-7");
    model.insert("PRODUCT-NAME", "M".repeat(129).parse().expect("value"));
    let r = client.get(&url).headers(model).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "PRODUCT-NAME is bounded too");
    // Exactly at the limit is a serial number like any other.
    let r = client.get(&url).headers(nvos(&"S".repeat(128))).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);

    let pid = lab.proc.child.id();
    let before = rss_kib(pid);
    for i in 0..300 {
        let serial = format!("{i:06}{}", "x".repeat(100 * 1024));
        let r = client.get(&url).headers(nvos(&serial)).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    for i in 0..3_000 {
        let serial = format!("{i:06}{}", "y".repeat(120));
        let r = client.get(&url).headers(nvos(&serial)).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Let the activity flush write its record.
    tokio::time::sleep(Duration::from_secs(6)).await;
    lab.proc.assert_running();
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!("RSS {before} KiB -> {after} KiB (+{grown} KiB)");
    assert!(grown < 24 * 1024, "RSS grew by {grown} KiB (from {before} KiB)");
    let activity = std::fs::metadata(lab.data.join(".status/switchprofiles.json")).expect("activity file");
    assert!(activity.len() < 64 * 1024, "activity file is {} bytes", activity.len());
    let _ = lab.proc.child.kill();
    let _ = lab.proc.child.wait();
}

/// Temporary files a killed process left in a directory store's `.tmp/` are removed when `serve`
/// starts (and periodically after); one still held by a live writer of another process (its
/// `flock`), and a fresh one, are kept.
#[tokio::test]
async fn serve_sweeps_stale_temporaries_but_not_live_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let tmp = store.join(".tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let make = |name: &str, old: bool| {
        let f = std::fs::File::create(tmp.join(name)).expect("create");
        f.set_len(1024 * 1024).expect("size");
        if old {
            f.set_modified(hour_ago).expect("mtime");
        }
        f
    };
    // Killed mid-fetch (the old name format too), killed mid-manifest-write.
    make("nos.bin.4242-1700000000000000000-0.part", true);
    make("nos.bin.~1x0123456789abcdef~3.part", true);
    make("manifest.json.~7x0123456789abcdef~9", true);
    // Another process's upload, stalled for an hour but still open and locked.
    let live = make("upload.bin.~9x0123456789abcdef~1.part", true);
    live.try_lock().expect("lock");
    // Being written right now.
    make("fetch.bin.~8x0123456789abcdef~2.part", false);

    let port = procs::free_port();
    let mut proc = procs::spawn(
        "ztp-operator",
        Path::new(env!("CARGO_BIN_EXE_ztp-operator")),
        &[
            "serve".into(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--external-url=http://127.0.0.1:{port}"),
            format!("--store-dir={}", store.display()),
        ],
        &[("RUST_LOG", "info")],
        dir.path().join("serve-sweep.log"),
    );
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&tmp)
            .expect("tmp")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while names().len() > 2 {
        proc.assert_running();
        assert!(
            Instant::now() < deadline,
            "stale files still there: {:?}\n{}",
            names(),
            procs::tail(&proc.log, 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(names(), ["fetch.bin.~8x0123456789abcdef~2.part", "upload.bin.~9x0123456789abcdef~1.part"]);
    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
    assert!(log.contains("removed temporary files"), "{log}");
    drop(live);
    let _ = proc.child.kill();
    let _ = proc.child.wait();
}

/// `POST /ztp/message` is anonymous: what it logs stays on one log line (before: a body with a
/// newline wrote a line of the client's choosing into the server's log).
#[tokio::test]
async fn a_device_message_cannot_forge_log_lines() {
    let mut lab = start_lab("hostile-message").await;
    let r = Client::new()
        .post(format!("{}/ztp/message", lab.base))
        .header("ONIE-SERIAL-NUMBER", "LAB-RTB-0001")
        .header("CONTAINER-NAME", "rbfs")
        .body("step 3 done\nFORGED-LINE level=ERROR admin logged in\r\x1b[2J")
        .send()
        .await
        .expect("message");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&lab.proc.log).unwrap_or_default();
        if log.contains("step 3 done") {
            break log;
        }
        assert!(Instant::now() < deadline, "no device message logged:\n{}", procs::tail(&lab.proc.log, 20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line = log.lines().find(|l| l.contains("step 3 done")).expect("the message line");
    assert!(line.contains(r"step 3 done\nFORGED-LINE") && line.contains(r"\u{1b}[2J"), "{line}");
    assert!(!log.lines().any(|l| l.starts_with("FORGED-LINE")), "a forged line:\n{log}");
    let _ = lab.proc.child.kill();
    let _ = lab.proc.child.wait();
}
