//! `crds/` holds exactly what the code generates (`ztp-operator crds`). Regenerate with
//! `cargo run -- crds > crds/ztp.netops.dev.yaml` (and the same into `charts/ztp-operator/crds/`).

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

#[test]
fn the_helm_chart_ships_the_same_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart = root.join("charts/ztp-operator/crds/ztp.netops.dev.yaml");
    let in_chart =
        std::fs::read_to_string(&chart).unwrap_or_else(|e| panic!("read {}: {e}", chart.display()));
    assert!(
        in_chart == ztp_operator::api::crds_yaml().expect("render CRDs"),
        "{} is out of date; run `cargo run -- crds > {}`",
        chart.display(),
        chart.display()
    );
    let others: Vec<_> = std::fs::read_dir(root.join("charts/ztp-operator/crds"))
        .expect("read the chart's crds/")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "ztp.netops.dev.yaml")
        .collect();
    assert!(others.is_empty(), "unexpected files in the chart's crds/: {others:?}");
}
