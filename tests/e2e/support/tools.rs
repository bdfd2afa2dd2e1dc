//! The real server binaries, built from Go modules by `scripts/build-test-tools` and cached
//! outside the repository (`~/.cache/ztp-operator/bin` or `$ZTP_TOOLS_DIR`).

use std::{path::PathBuf, process::Command, sync::OnceLock};

pub struct Tools {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub minio: PathBuf,
    pub helm: PathBuf,
    /// kstatus's health of an object (sigs.k8s.io/cli-utils, built from `tests/e2e/kstatus-check`).
    pub kstatus_check: PathBuf,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Locates the binaries, building them first when they are missing. Fails loudly (never skips):
/// a machine that cannot build them cannot run the e2e suite.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = repo_root().join("scripts/build-test-tools");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}): kube-apiserver, etcd, minio, helm and kstatus-check are needed for the e2e tests",
            script.display(),
            out.status
        );
        let dir =
            PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim());
        let tools = Tools {
            kube_apiserver: dir.join("kube-apiserver"),
            etcd: dir.join("etcd"),
            minio: dir.join("minio"),
            helm: dir.join("helm"),
            kstatus_check: dir.join("kstatus-check"),
        };
        for p in [&tools.kube_apiserver, &tools.etcd, &tools.minio, &tools.helm, &tools.kstatus_check] {
            assert!(p.exists(), "{} is missing after {}", p.display(), script.display());
        }
        tools
    })
}

/// The version a binary was built from: the cached file is named `<tool>-<version>`.
pub fn built_version(binary: &std::path::Path) -> String {
    std::fs::read_link(binary)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| binary.display().to_string())
}
