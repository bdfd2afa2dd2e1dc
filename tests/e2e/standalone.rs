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

use crate::{
    pipeline::random_bytes,
    support::{
        self, procs,
        source::{Behavior, SourceServer},
    },
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
    let _guard = support::kube_test("standalone-follow").await;
    let (a, b) = (random_bytes(300_000, 11), random_bytes(200_000, 12));
    let (sha_a, sha_b) = (Sha256Digest::of(&a).to_string(), Sha256Digest::of(&b).to_string());
    let src =
        SourceServer::start(vec![("/a.bin", a.clone(), Behavior::Serve), ("/b.bin", b, Behavior::Serve)])
            .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (m, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(m.join("a.yaml"), image_yaml("a", "1", &src.url_of("/a.bin"), &sha_a)).expect("write");

    let env = support::env().await;
    let mut proc = procs::spawn(
        "ztp-operator",
        Path::new(env!("CARGO_BIN_EXE_ztp-operator")),
        &[
            "standalone".into(),
            format!("--manifests={}", m.display()),
            format!("--data={}", data.display()),
            "--poll-seconds=0.2".into(),
        ],
        &[],
        env.log_dir.join("standalone-follow.log"),
    );
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
    let _guard = support::kube_test("standalone-full").await;
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
