//! The standalone binary serving a lab folder (profiles of every family, two images), and the
//! headers each switch family sends (docs/protocols.md). Needs no cluster and no S3: it starts
//! neither.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode, header::HeaderMap};
use ztp_operator::hash::Sha256Digest;

use super::{procs, random_bytes, run};

/// The real binary serving the lab folder (standalone), with its images.
pub(crate) struct Lab {
    _dir: tempfile::TempDir,
    pub(crate) manifests: std::path::PathBuf,
    pub(crate) base: String,
    pub(crate) proc: procs::Proc,
    pub(crate) install: Vec<u8>,
    pub(crate) update: Vec<u8>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

/// The lab's SwitchProfiles: a model default, `leaf07` with every family, an NVOS-only one.
pub(crate) const PROFILES: &str = r##"
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: as7712-default}
spec:
  match: {models: ["accton_as7712_32x"]}
  hostname: default-leaf
  onie:
    installImage: {name: nos}
    updateImage: {name: onie-update}
  files:
    startup: {inline: '{"host": "{{ hostname }}", "serial": "{{ serial }}", "element": "{{ element_name }}"}', template: true}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: leaf07}
spec:
  match: {serialNumbers: ["SN-LEAF07"], macAddresses: ["0C:42:A1:00:00:07"]}
  hostname: leaf07
  variables: {ntp: 192.0.2.1}
  onie:
    installImage: {name: nos}
  ztp:
    restartZtpNoConfig: false
    sections:
      - kind: image
        content: {osImageRef: {name: nos}}
      - kind: commands-list
        clearConfig: true
        content: {inline: "nv set system hostname {{ hostname }}\nnv set service ntp default server {{ variables.ntp }}\n", template: true}
      - kind: connectivity-check
        pingHosts: ["192.0.2.1"]
        ignoreResult: true
  sonic:
    sections:
      - firmware: {install: {image: {name: nos}, version: "SONiC-OS-1"}}
      - configdbJson:
          content: {inline: '{"DEVICE_METADATA": {"localhost": {"hostname": "{{ hostname }}"}}}', template: true}
      - plugin:
          name: report
          ignoreSectionData: true
          script: {inline: "#!/bin/sh\ncurl -fsS -X POST {{ server_url }}/v1/devices/{{ serial }}/provisioned\n", template: true}
  cumulus:
    script: {inline: "#!/bin/bash\r\n# CUMULUS-AUTOPROVISIONING\r\necho {{ hostname }}\r\n", template: true}
---
apiVersion: ztp.netops.dev/v1alpha1
kind: SwitchProfile
metadata: {name: nvos-only}
spec:
  match: {serialNumbers: ["SN-NVOS-ONLY"]}
  ztp:
    sections:
      - kind: connectivity-check
        pingHosts: ["192.0.2.1"]
"##;

pub(crate) async fn lab(test: &str) -> Lab {
    lab_with(test, &[]).await
}

/// [`lab`] with extra environment variables for the server (its flags' `ZTP_…` variables).
pub(crate) async fn lab_with(test: &str, env_vars: &[(&str, &str)]) -> Lab {
    let dir = tempfile::tempdir().expect("tempdir");
    let (manifests, data) = (dir.path().join("m"), dir.path().join("d"));
    std::fs::create_dir_all(manifests.join("images")).expect("mkdir");
    // Larger than loopback socket buffers, so an unread download really holds its permit.
    let install = random_bytes(24 * 1024 * 1024 + 1, 21).to_vec();
    let update = random_bytes(512 * 1024, 22).to_vec();
    std::fs::write(manifests.join("images/nos.bin"), &install).expect("write");
    std::fs::write(manifests.join("images/onie-updater"), &update).expect("write");
    let image = |name: &str, platform: &str, file: &str, bytes: &[u8], firmware: bool| {
        format!(
            "---\napiVersion: ztp.netops.dev/v1alpha1\nkind: OsImage\nmetadata: {{name: {name}}}\nspec:\n  platform: {platform}\n  version: \"1\"\n  firmwareImage: {firmware}\n  source: {{url: {{url: \"file://./images/{file}\"}}}}\n  sha256: {}\n",
            Sha256Digest::of(bytes)
        )
    };
    let images = image("nos", "nos", "nos.bin", &install, true)
        + &image("onie-update", "onie", "onie-updater", &update, true);
    std::fs::write(manifests.join("images.yaml"), images).expect("write");
    std::fs::write(manifests.join("profiles.yaml"), PROFILES).expect("write");

    let port = procs::free_port();
    let log_dir = &run().log_dir;
    let base = format!("http://127.0.0.1:{port}");
    let proc = procs::spawn(
        "ztp-operator",
        Path::new(env!("CARGO_BIN_EXE_ztp-operator")),
        &[
            "standalone".into(),
            format!("--manifests={}", manifests.display()),
            format!("--data={}", data.display()),
            format!("--listen=127.0.0.1:{port}"),
            format!("--external-url={base}"),
            "--poll-seconds=0.2".into(),
            "--max-downloads=2".into(),
        ],
        env_vars,
        log_dir.join(format!("{test}.log")),
    );
    let mut lab = Lab { _dir: dir, manifests, base, proc, install, update };
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        lab.proc.assert_running();
        let ready = client
            .get(format!("{}/readyz", lab.base))
            .send()
            .await
            .map(|r| r.status() == StatusCode::OK)
            .unwrap_or(false);
        // Ready once a snapshot with both images is in: leaf07's image section resolves.
        let json = client.get(format!("{}/nvos/SN-LEAF07/ztp.json", lab.base)).send().await;
        if ready && json.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(Instant::now() < deadline, "server not ready:\n{}", procs::tail(&lab.proc.log, 30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lab
}

pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    h
}

/// The headers an NVIDIA NVOS switch (an N5110_LD) with this serial number sends.
pub(crate) fn nvos_headers(serial: &str) -> HeaderMap {
    headers(&[
        ("User-Agent", "NVOS-ZTP/0.1"),
        ("PRODUCT-NAME", "N5110_LD"),
        ("SERIAL-NUMBER", serial),
        ("BASE-MAC-ADDRESS", "0C:42:A1:00:00:0A"),
        ("NVOS-VERSION", "nvos-25.02.2002"),
        ("NVUE-VERSION", "2.5.0-nvos"),
    ])
}

/// What ONIE's busybox wget sends (docs/protocols.md §1.6): ONIE's own User-Agent (`wget -U`),
/// the ONIE-* headers.
pub(crate) fn onie_headers(serial: &str, mac: &str, operation: &str) -> HeaderMap {
    headers(&[
        ("User-Agent", "onie/1.0 (Linux-5.4.86-2024.11; BusyBox-v1.25.1)"),
        ("ONIE-SERIAL-NUMBER", serial),
        ("ONIE-ETH-ADDR", mac),
        ("ONIE-VENDOR-ID", "259"),
        ("ONIE-MACHINE", "accton_as7712_32x"),
        ("ONIE-MACHINE-REV", "0"),
        ("ONIE-ARCH", "x86_64"),
        ("ONIE-SECURITY-KEY", "d2f6a8c1"),
        ("ONIE-OPERATION", operation),
        ("ONIE-VERSION", "2024.11"),
    ])
}
