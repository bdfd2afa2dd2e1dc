//! A NautobotSource in standalone's folder, against a real Nautobot 3.2.7 (`scripts/nautobot`):
//! the same Switches and OsImages as in a cluster (a hand-made one in the folder is a clash, the
//! pinned images fetched and verified), the token from the environment or from a Secret in the
//! folder (a wrong one: Stalled, nothing lost), a change in Nautobot at the next poll, a device
//! deleted with `prune: Delete`, Nautobot down keeping everything, and a restart with Nautobot
//! down still serving what the mirror holds.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use serde_json::Value;
use ztp_operator::{nautobot::image_name, switch::name::for_serial};

use crate::support::{
    self, binaries,
    forward::{Forwarder, Options},
    nautobot::SonicFleet,
    pki::Pki,
    procs,
};

const SOURCE: &str = "apiVersion: ztp.netops.dev/v1alpha1
kind: NautobotSource
metadata: {name: dc1}
spec:
  url: URL
  tokenSecretRef: {name: nautobot, key: token}
  intervalSeconds: 10
  prune: Delete
  switches:
    profiles:
      - {role: spine, profile: spines}
      - {role: leaf, profile: leafs}
";

fn mirror(data: &Path) -> Value {
    let bytes = std::fs::read(data.join(".status/nautobot/default.dc1.json")).expect("the mirror file");
    serde_json::from_slice(&bytes).expect("mirror JSON")
}

fn image_phase(data: &Path, name: &str) -> Option<String> {
    let all: Value = serde_json::from_slice(&std::fs::read(data.join(".status/osimages.json")).ok()?).ok()?;
    all.get(format!("default/{name}"))?.get("phase")?.as_str().map(str::to_owned)
}

/// `standalone --once` on the folder, with `env`.
async fn once(m: &Path, data: &Path, env: &[(&str, &str)]) -> (Output, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ztp-operator"));
    cmd.args(["standalone", "--once"])
        .arg(format!("--manifests={}", m.display()))
        .arg(format!("--data={}", data.display()))
        .env_remove("NAUTOBOT_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run standalone");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

fn secret_yaml(token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: nautobot}}\nstringData: {{token: \"{token}\"}}\n"
    )
}

async fn wait_until(what: &str, log: &Path, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < deadline, "not {what} within 90 s:\n{}", procs::tail(log, 40));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn standalone_follows_a_nautobot_source_as_the_controller_does() {
    let _guard = support::guard("standalone-nautobot");
    // Eight devices: sw-00002 and sw-00006 are SONiC, with 4.0.1 (sonic-a.bin) and 4.0.2 (sonic-b.bin).
    let SonicFleet { nb, src: _src, a, b } = SonicFleet::start("standalone", 8, 91).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (m, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&m).expect("mkdir");
    std::fs::write(m.join("source.yaml"), SOURCE.replace("URL", &nb.url)).expect("write source");
    // A Switch made by hand for sw-00005's serial: the source must leave it alone.
    let hand = for_serial("SN00005");
    std::fs::write(
        m.join("hand.yaml"),
        format!("apiVersion: ztp.netops.dev/v1alpha1\nkind: Switch\nmetadata: {{name: {hand}}}\nspec: {{serialNumber: SN00005, hostname: by-hand}}\n"),
    )
    .expect("write hand-made Switch");

    // 1. One sync with the token from the environment: seven Switches (the eighth clashes), the
    //    pinned OsImages fetched and verified, the whole run Ready.
    let (out, text) = once(&m, &data, &[("NAUTOBOT_TOKEN", &nb.token)]).await;
    assert!(out.status.success(), "{text}");
    assert!(text.contains("nautobotsource default/dc1: Ready: 7 Switches and "), "{text}");
    assert!(text.contains("from 8 devices in Nautobot"), "{text}");
    assert!(text.contains(&hand) && text.contains("made by hand"), "the clash is said: {text}");
    let first = mirror(&data);
    let switches = first["switches"].as_object().expect("switches");
    assert_eq!(switches.len(), 7, "{first:#}");
    assert!(!switches.contains_key(&hand), "the hand-made Switch is the folder's");
    let sw1 = &switches[&for_serial("SN00001")];
    assert_eq!(sw1["metadata"]["labels"]["ztp.netops.dev/nautobot-source"], "dc1");
    assert_eq!(sw1["spec"]["hostname"], "sw-00001");
    assert_eq!(sw1["spec"]["macAddress"], "02:5a:00:00:00:01");
    assert_eq!(sw1["spec"]["profile"], "leafs");
    let pinned =
        switches[&for_serial("SN00002")]["spec"]["osImage"].as_str().expect("SONiC pinned").to_owned();
    assert!(first["images"].get(&pinned).is_some(), "the pinned OsImage is the source's: {first:#}");
    assert_eq!(image_phase(&data, &pinned).as_deref(), Some("Ready"), "{text}");
    let (version, file, other_version, other_file, body) =
        if pinned == image_name("sonic", "4.0.1", "sonic-a.bin") {
            ("4.0.1", "sonic-a.bin", "4.0.2", "sonic-b.bin", &a)
        } else {
            ("4.0.2", "sonic-b.bin", "4.0.1", "sonic-a.bin", &b)
        };
    let stored = data.join(format!("sonic/{version}/{file}"));
    assert_eq!(std::fs::read(&stored).expect("stored image"), body.as_ref());

    // 2. A Secret in the folder is the token (before the environment's): a wrong one is Stalled
    //    with Nautobot's words, the run fails, and nothing is lost.
    std::fs::write(m.join("secret.yaml"), secret_yaml("0123456789abcdef0123456789abcdef01234567"))
        .expect("write Secret");
    let (out, text) = once(&m, &data, &[("NAUTOBOT_TOKEN", &nb.token)]).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("nautobotsource default/dc1: not ready (Stalled, NautobotError)"), "{text}");
    assert!(text.contains("refused the token"), "{text}");
    assert_eq!(mirror(&data)["switches"], first["switches"], "the mirror kept its objects");
    assert!(stored.exists(), "the stored image stays");
    std::fs::write(m.join("secret.yaml"), secret_yaml(&nb.token)).expect("write Secret");

    // 3. Running: changes in Nautobot (a MAC, a role, intended software) arrive at the next poll;
    //    a device that lost its MAC is skipped and said, its Switch kept as it was; a deleted
    //    device's Switch goes (`prune: Delete`), and so does an OsImage no device is pinned to.
    let log = support::run().log_dir.join("standalone-nautobot.log");
    let mut proc = binaries::standalone(&m, &data, &[], log.clone());
    wait_until("the first poll", &log, || {
        procs::tail(&log, 200).contains("nautobotsource default/dc1: Ready")
    })
    .await;
    nb.fleet(&["set-mac", "sw-00003", "02:5a:00:aa:bb:cc"]).await;
    nb.fleet(&["set-software", "sw-00002", other_version]).await;
    nb.fleet(&["set-software", "sw-00006", other_version]).await;
    nb.fleet(&["delete", "sw-00004"]).await;
    nb.fleet(&["set-role", "sw-00001", "spine"]).await;
    nb.fleet(&["set-mac", "sw-00007", ""]).await;
    let repinned = image_name("sonic", other_version, other_file);
    // Every change, the cleared MAC last: a poll between two of the changes sees only the first.
    wait_until("the changes followed", &log, || {
        let now = mirror(&data);
        now["switches"][for_serial("SN00003")]["spec"]["macAddress"] == "02:5a:00:aa:bb:cc"
            && now["switches"][for_serial("SN00002")]["spec"]["osImage"] == repinned.as_str()
            && now["switches"].get(for_serial("SN00004")).is_none()
            && now["switches"][for_serial("SN00001")]["spec"]["profile"] == "spines"
            && now["status"]["skipped"] == 1
    })
    .await;
    let now = mirror(&data);
    assert_eq!(now["status"]["skipped"], 1, "{:#}", now["status"]);
    assert_eq!(now["status"]["skippedDevices"][0]["name"], "sw-00007");
    assert_eq!(now["status"]["skippedDevices"][0]["reason"], "NoMac");
    assert_eq!(
        now["switches"][for_serial("SN00007")],
        first["switches"][for_serial("SN00007")],
        "a skipped device's Switch stays as it was"
    );
    assert!(procs::tail(&log, 200).contains("1 skipped: sw-00007 (NoMac)"), "{}", procs::tail(&log, 40));
    wait_until("the new pin's image Ready", &log, || {
        image_phase(&data, &repinned).as_deref() == Some("Ready")
    })
    .await;
    assert_eq!(
        std::fs::read(data.join(format!("sonic/{other_version}/{other_file}"))).expect("stored"),
        if other_file == "sonic-a.bin" { a.as_ref() } else { b.as_ref() }
    );
    // Nothing is pinned to the first image now: with `prune: Delete` its OsImage goes, and its
    // file with it (its deletionPolicy, Delete by default).
    wait_until("the unpinned image removed", &log, || {
        !stored.exists() && image_phase(&data, &pinned).is_none()
    })
    .await;

    // 4. Nautobot down: Stalled, and everything stays as it was.
    let before = mirror(&data);
    nb.stop_web().await;
    wait_until("Stalled while Nautobot is down", &log, || {
        procs::tail(&log, 200).contains("nautobotsource default/dc1: not ready (Stalled, NautobotError)")
    })
    .await;
    assert!(procs::tail(&log, 200).contains("cannot reach Nautobot"), "{}", procs::tail(&log, 40));
    assert_eq!(mirror(&data)["switches"], before["switches"]);
    assert_eq!(image_phase(&data, &repinned).as_deref(), Some("Ready"));
    proc.assert_running();
    let _ = proc.child.kill();
    let _ = proc.child.wait();

    // 5. A restart with Nautobot still down: the mirror's objects are there, their image still
    //    stored and Ready; the run says the source is not ready.
    let (out, text) = once(&m, &data, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("nautobotsource default/dc1: not ready (Stalled, NautobotError)"), "{text}");
    assert_eq!(image_phase(&data, &repinned).as_deref(), Some("Ready"), "{text}");
    assert!(data.join(format!("sonic/{other_version}/{other_file}")).exists());
    assert_eq!(mirror(&data)["switches"], before["switches"]);
}

/// A ConfigMap document of the folder holding `pem` under `ca.crt`.
fn ca_yaml(pem: &str) -> String {
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: nautobot-ca}}\ndata:\n  ca.crt: |\n{indented}"
    )
}

/// Nautobot over HTTPS in standalone (a TLS-terminating forwarder in front of it, its certificate
/// from a test CA): the folder's CA ConfigMap holding another CA fails the run with the source
/// Stalled, saying the certificate is not trusted and which ConfigMap the CA comes from, and
/// nothing mirrored; the right CA in it syncs the Switches.
#[tokio::test]
async fn standalone_says_a_wrong_ca_for_nautobot_and_syncs_with_the_right_one() {
    let _guard = support::guard("standalone-nautobot-ca");
    let SonicFleet { nb, src: _src, .. } = SonicFleet::start("standalone-ca", 4, 93).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (right, wrong) = (dir.path().join("right-ca"), dir.path().join("wrong-ca"));
    std::fs::create_dir_all(&right).and_then(|()| std::fs::create_dir_all(&wrong)).expect("mkdir");
    let (right, wrong) = (Pki::new(&right, "nautobot-test-ca"), Pki::new(&wrong, "another-ca"));
    let tls = right.serving("nautobot", &["localhost"], &[Ipv4Addr::LOCALHOST]);
    let fwd = Forwarder::start(&nb.url, Options { tls: Some(tls), ..Default::default() }).await;

    let (m, data) = (dir.path().join("manifests"), dir.path().join("data"));
    std::fs::create_dir_all(&m).expect("mkdir");
    let source = SOURCE.replace("URL", &fwd.url).replace(
        "  tokenSecretRef: {name: nautobot, key: token}\n",
        "  tokenSecretRef: {name: nautobot, key: token}\n  caBundleRef: {name: nautobot-ca, key: ca.crt}\n",
    );
    std::fs::write(m.join("source.yaml"), source).expect("write source");
    std::fs::write(m.join("ca.yaml"), ca_yaml(&wrong.ca_pem)).expect("write ConfigMap");
    let (out, text) = once(&m, &data, &[("NAUTOBOT_TOKEN", &nb.token)]).await;
    assert_eq!(out.status.code(), Some(1), "{text}");
    let said = format!(
        "nautobotsource default/dc1: not ready (Stalled, NautobotError): Nautobot's TLS certificate at {}/api/",
        fwd.url
    );
    assert!(text.contains(&said), "{text}");
    assert!(text.contains("is not trusted: it is not signed by a CA this client trusts"), "{text}");
    assert!(text.contains("caBundleRef names (ConfigMap nautobot-ca, key ca.crt)"), "{text}");
    let mirrored = std::fs::read(data.join(".status/nautobot/default.dc1.json")).ok();
    let switches =
        mirrored.and_then(|b| serde_json::from_slice::<Value>(&b).ok()).map(|v| v["switches"].clone());
    assert!(switches.as_ref().is_none_or(|s| s.as_object().is_none_or(|o| o.is_empty())), "{switches:?}");
    assert!(fwd.requests().is_empty(), "no request got through TLS: {:?}", fwd.requests());

    std::fs::write(m.join("ca.yaml"), ca_yaml(&right.ca_pem)).expect("write ConfigMap");
    let (out, text) = once(&m, &data, &[("NAUTOBOT_TOKEN", &nb.token)]).await;
    assert!(out.status.success(), "{text}");
    assert!(text.contains("nautobotsource default/dc1: Ready: 4 Switches and "), "{text}");
    assert_eq!(mirror(&data)["switches"].as_object().map(|o| o.len()), Some(4));
}
