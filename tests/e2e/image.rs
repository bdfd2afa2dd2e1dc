//! The product's container image, as `scripts/build-image` writes it (here from this test build's
//! binaries): its config and labels read back by skopeo, its name as containerd imports it, its
//! base unpacked by umoci, and both binaries run inside it by runc as user 65532 on a read-only
//! root filesystem, which only works when the base's glibc and libgcc are complete.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
};

use serde_json::{Value, json};

use crate::support::{
    image::{IMAGE_REF, product_image},
    procs::{must, succeeded},
    unique,
};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs ARGS in the unpacked bundle with runc, with the image's user and a read-only root;
/// returns stdout.
fn run_in_image(bundle: &Path, state: &Path, args: &[&str]) -> String {
    let config_path = bundle.join("config.json");
    let mut config = json_of(&std::fs::read_to_string(&config_path).expect("read config.json"));
    config["process"]["args"] = json!(args);
    config["process"]["terminal"] = json!(false);
    config["root"]["readonly"] = json!(true);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).expect("config.json"))
        .expect("write config.json");

    let id = format!("ztp-image-{:x}", unique());
    let runc = || {
        let mut c = Command::new("runc");
        c.arg("--root").arg(state);
        c
    };
    let out = runc().args(["run", "--bundle"]).arg(bundle).arg(&id).output().expect("run runc");
    let _ = runc().args(["delete", "--force", &id]).output();
    succeeded(&format!("runc run {args:?} in the image"), out)
}

#[test]
fn product_image_runs_both_binaries_as_nonroot_on_a_read_only_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the image test runs containers with runc and unpacks images with their owners: run it as root"
    );
    let image = product_image();
    let archive = format!("oci-archive:{}", image.archive.display());
    let version = env!("CARGO_PKG_VERSION");

    // The config, as a registry or a runtime reads it.
    let config = json_of(&must(Command::new("skopeo").args(["inspect", "--config", &archive])));
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "config: {c}");
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/ztp-operator"]), "config: {c}");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "ztp-operator", "labels: {labels}");
    assert_eq!(labels["org.opencontainers.image.version"], version, "labels: {labels}");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0", "labels: {labels}");
    assert_eq!(labels["org.opencontainers.image.source"], "https://github.com/netops/ztp-operator");
    let head = must(Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"]));
    let revision = labels["org.opencontainers.image.revision"].as_str().unwrap_or_default();
    assert!(
        revision == head.trim() || revision == format!("{}-dirty", head.trim()),
        "revision label {revision:?}, HEAD {head:?}"
    );
    // Two layers: the Debian base, then the binaries.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(2), "{config}");
    let manifest = json_of(&must(Command::new("skopeo").args(["inspect", "--raw", &archive])));
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2), "{manifest}");

    // The name containerd (`ctr images import`) and podman give the image: the full reference.
    let index = json_of(&must(Command::new("tar").arg("-xOf").arg(&image.archive).arg("index.json")));
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(annotations["io.containerd.image.name"], IMAGE_REF, "index.json: {index}");
    assert_eq!(annotations["org.opencontainers.image.ref.name"], IMAGE_REF, "index.json: {index}");

    // Unpacked as a runtime would: the files the binaries and the chart rely on.
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).expect("layout dir");
    must(Command::new("tar").arg("-xf").arg(&image.archive).arg("-C").arg(&layout));
    let bundle = dir.path().join("bundle");
    must(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{IMAGE_REF}", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let roots = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("TLS roots at /etc/ssl/certs/ca-certificates.crt");
    let certificates = roots.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(certificates >= 100, "only {certificates} certificates in the CA bundle");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd");
    assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")), "passwd:\n{passwd}");
    assert!(rootfs.join("usr/share/zoneinfo/Europe/Berlin").is_file(), "tzdata is missing");
    let home = std::fs::metadata(rootfs.join("home/nonroot")).expect("/home/nonroot");
    assert_eq!((home.uid(), home.gid()), (65532, 65532), "/home/nonroot's owner");
    let tmp = std::fs::metadata(rootfs.join("tmp")).expect("/tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777, "/tmp's mode");
    assert!(!rootfs.join("bin/sh").exists(), "the image has a shell");
    for binary in ["ztp-operator", "ztpctl"] {
        let meta = std::fs::metadata(rootfs.join("usr/local/bin").join(binary)).expect(binary);
        assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o755), "{binary}: owner and mode");
    }

    // The runtime spec umoci derives from the image: user 65532, the entrypoint.
    let spec = json_of(&std::fs::read_to_string(bundle.join("config.json")).expect("config.json"));
    assert_eq!(spec["process"]["user"]["uid"], 65532, "spec: {}", spec["process"]);
    assert_eq!(spec["process"]["user"]["gid"], 65532, "spec: {}", spec["process"]);
    assert_eq!(spec["process"]["args"][0], "/usr/local/bin/ztp-operator", "spec: {}", spec["process"]);

    // Both binaries start inside it: the dynamic loader finds glibc and libgcc_s in the base.
    let state = dir.path().join("runc");
    let out = run_in_image(&bundle, &state, &["/usr/local/bin/ztp-operator", "--version"]);
    assert_eq!(out.trim(), format!("ztp-operator {version}"));
    let out = run_in_image(&bundle, &state, &["/usr/local/bin/ztpctl", "--version"]);
    assert_eq!(out.trim(), format!("ztpctl {version}"));

    // Reproducible: the same commit and binaries give the same bytes.
    let again = dir.path().join("again.tar");
    must(
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image"))
            .arg("--binaries")
            .arg(Path::new(env!("CARGO_BIN_EXE_ztp-operator")).parent().expect("bin dir"))
            .args(["--ref", IMAGE_REF, "--out"])
            .arg(&again),
    );
    let first = std::fs::read(&image.archive).expect("read the image");
    assert!(
        first == std::fs::read(&again).expect("read the rebuilt image"),
        "a rebuild gave different bytes"
    );
}
