//! The product's container image, built by `scripts/build-image` from the binaries this test build
//! already compiled (debug info stripped by the script), so the suite does not pay a second,
//! release, compile. Built once per test binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The name the image is built under (what a test imports it as).
pub const IMAGE_REF: &str = "localhost/ztp-operator:e2e";

pub struct Image {
    /// The OCI archive (`ctr images import`, `umoci unpack`, `skopeo inspect oci-archive:…`).
    pub archive: PathBuf,
    /// Its full name inside the archive.
    pub reference: &'static str,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the image on first use. Fails loudly (never skips) when the script or a tool it
/// needs (umoci, jq, apt) is missing.
pub fn product_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let operator = Path::new(env!("CARGO_BIN_EXE_ztp-operator"));
        let ztpctl = Path::new(env!("CARGO_BIN_EXE_ztpctl"));
        let binaries = operator.parent().expect("the binaries' directory");
        assert_eq!(
            ztpctl.parent(),
            Some(binaries),
            "cargo put ztp-operator and ztpctl in different directories"
        );
        let archive = repo_root().join("target/oci/e2e/ztp-operator-e2e.tar");
        let script = repo_root().join("scripts/build-image");
        let started = std::time::Instant::now();
        let status = Command::new("bash")
            .arg(&script)
            .arg("--binaries")
            .arg(binaries)
            .args(["--ref", IMAGE_REF, "--out"])
            .arg(&archive)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(status.success(), "{} failed ({status}): see its output above", script.display());
        let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "e2e: image {IMAGE_REF} built in {:.1} s: {} ({:.1} MB)",
            started.elapsed().as_secs_f64(),
            archive.display(),
            size as f64 / 1e6
        );
        Image { archive, reference: IMAGE_REF }
    })
}
