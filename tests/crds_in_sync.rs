//! `crds/` holds exactly what the code generates (`ztp-operator crds`). Regenerate with
//! `cargo run -- crds > crds/ztp.netops.dev.yaml`.

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/ztp.netops.dev.yaml");
    let checked_in =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let generated = ztp_operator::api::crds_yaml().expect("render CRDs");
    assert!(
        checked_in == generated,
        "crds/ztp.netops.dev.yaml is out of date; run `cargo run -- crds > crds/ztp.netops.dev.yaml`"
    );
}

#[test]
fn the_binary_prints_the_same_crds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ztp-operator"))
        .arg("crds")
        .output()
        .expect("run ztp-operator crds");
    assert!(out.status.success(), "ztp-operator crds failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf-8"),
        ztp_operator::api::crds_yaml().expect("render")
    );
}
