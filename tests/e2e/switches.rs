//! Switches, end to end: two replicas of the real `serve` binary with `--switches`, running as a
//! ServiceAccount allowed only the Switch verbs the server needs (a token from the TokenRequest
//! API), answer devices that send their family's exact headers against a real apiserver. A
//! matched device gets a Switch whose phase and conditions follow its ONIE install, its NVOS ZTP
//! JSON, the stage its section's script reports with the device's token (a forged or missing
//! token records nothing) and its `provisioned` callback across both replicas (one restarted
//! mid-attempt), in one attempt history; a ZTP JSON after the close opens a new attempt, a failure reported there makes the
//! Switch `Failed` and `Stalled`, and starting over again clears it; a hand-made Switch is written by its serial, whatever its
//! name; made-up serials create at most `--max-unmatched` Switches; `--discover matched` creates
//! none for strangers.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use reqwest::StatusCode;
use serde_json::json;
use ztp_operator::{
    api::{
        AttemptResult, AttemptTrigger, ConditionType, MatchedBy, Switch, SwitchCounts, SwitchPhase,
        SwitchProfile, conditions::find_condition,
    },
    switch::{k8s::DISCOVERED_BY, name},
};

use crate::support::{
    self,
    controller::{image_lab, wait_for},
    lab::{nvos_headers as nvos, onie_headers},
    reporting::{identity_with, serve_with},
    store::{Backend, TestStore},
};

/// A section that reports its stage with the device's URL and token, as a script would.
const REPORTING_SCRIPT: &str = "curl -H 'Authorization: Bearer {{ report_token }}' -d '{\"stage\": \"config-applied\"}' {{ report_url }}\n";

/// The token a rendered [`REPORTING_SCRIPT`] carries.
fn token_in(script: &str) -> &str {
    script.split("Bearer ").nth(1).and_then(|rest| rest.split('\'').next()).expect("a token in the script")
}

/// The Switch carrying `serial`, once `cond` holds for it (30 s at most).
async fn wait_switch(api: &Api<Switch>, serial: &str, what: &str, cond: impl Fn(&Switch) -> bool) -> Switch {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = api.list(&ListParams::default()).await.expect("list switches");
        let found = all.items.into_iter().find(|s| s.spec.serial_number == serial);
        if let Some(s) = &found
            && cond(s)
        {
            return found.expect("found");
        }
        assert!(Instant::now() < deadline, "Switch {serial} not {what} within 30 s: {found:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(s: &Switch) -> Option<SwitchPhase> {
    s.status.as_ref()?.phase
}

fn condition(s: &Switch, t: ConditionType) -> Option<String> {
    s.status.as_ref().and_then(|st| find_condition(&st.conditions, t)).map(|c| c.status.clone())
}

fn stages(s: &Switch, attempt: usize) -> Vec<String> {
    s.status
        .as_ref()
        .map_or(vec![], |st| st.attempts[attempt].stages.iter().map(|x| x.name.clone()).collect())
}

#[tokio::test]
async fn devices_become_switches_that_follow_their_lifecycle() {
    let t = support::kube_test("switches").await;
    let store = TestStore::new(Backend::Fs, "switches").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "leaf"},
        "spec": {
            "match": {"serialNumbers": ["MT2245X01234"]},
            "onie": {"installImage": {"name": "nos"}},
            "ztp": {"sections": [{"kind": "commands-list", "content": {"template": true, "inline": REPORTING_SCRIPT}}]},
        },
    });
    let switches: Api<Switch> = Api::namespaced(t.client.clone(), &t.namespace);
    // A Switch made by hand, by its own name, for a device no profile matches.
    let racked: Switch = serde_json::from_value(json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "Switch", "metadata": {"name": "spine-1"},
        "spec": {"serialNumber": "SPINE0001", "hostname": "spine-1"},
    }))
    .expect("switch");
    switches.create(&PostParams::default(), &racked).await.expect("create Switch");
    let lab = image_lab(&t, &store, 200_000, 43, profile).await;

    // What the chart's servers may do: Switches, and (`--report-status`) profile status and Events.
    let rules = json!([
        {"apiGroups": ["ztp.netops.dev"], "resources": ["switches"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": ["ztp.netops.dev"], "resources": ["switches/status", "switchprofiles/status"], "verbs": ["patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]);
    let kubeconfig = identity_with(&t, dir.path(), rules).await;
    let narrow = support::controlplane::client_from(&kubeconfig).await;
    let denied = Api::<Secret>::namespaced(narrow.clone(), &t.namespace).list(&ListParams::default()).await;
    assert!(matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403), "{denied:?}");
    let ns = format!("--switch-namespace={}", t.namespace);
    let discover_ns = format!("--discover-namespace={}", t.namespace);
    let key = dir.path().join("report-key");
    // The key as users make it: `ztp-operator report-key`.
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_ztp-operator")).arg("report-key").output();
    let made = made.expect("run ztp-operator report-key");
    assert!(made.status.success() && made.stdout.len() == 65, "{made:?}");
    std::fs::write(&key, &made.stdout).expect("report key");
    let key_flag = format!("--report-key-file={}", key.display());
    let flags = [
        "--switches",
        "--report-status",
        "--public-listing",
        "--discover=all",
        "--max-unmatched=3",
        &ns,
        &discover_ns,
        &key_flag,
    ];
    let a = serve_with(&store, &kubeconfig, "switches-a.log", 1, &flags).await;
    let b = serve_with(&store, &kubeconfig, "switches-b.log", 1, &flags).await;
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    // A Switch made by hand shows what it is before its device asks: no profile matches it.
    let s = wait_switch(&switches, "SPINE0001", "written before its device asks", |s| {
        phase(s) == Some(SwitchPhase::Unmatched) && s.status.as_ref().is_some_and(|st| st.last_seen.is_none())
    })
    .await;
    assert_eq!(s.status.as_ref().and_then(|st| st.observed_generation), s.metadata.generation);

    // The ONIE install from replica a: discovered, installing.
    let r = c
        .get(format!("{}/onie-installer", a.base))
        .headers(onie_headers("MT2245X01234", "0c:42:a1:00:00:0a", "os-install"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").len(), lab.body.len());
    let s =
        wait_switch(&switches, "MT2245X01234", "Installing", |s| phase(s) == Some(SwitchPhase::Installing))
            .await;
    assert_eq!(s.metadata.name.as_deref(), Some(name::for_serial("MT2245X01234").as_str()));
    assert_eq!(
        s.metadata.labels.as_ref().and_then(|l| l.get(DISCOVERED_BY.0)).map(String::as_str),
        Some(DISCOVERED_BY.1)
    );
    let st = s.status.as_ref().expect("status");
    let matched = st.matched_profile.as_ref().expect("matched");
    assert_eq!((matched.name.as_str(), matched.by), ("leaf", MatchedBy::Serial));
    let device = st.device.as_ref().expect("device facts");
    assert_eq!(device.family.as_deref(), Some("onie"));
    assert_eq!(device.model.as_deref(), Some("x86_64-accton_as7712_32x-r0"));
    assert_eq!(device.os_version.as_deref(), Some("2024.11"));
    assert_eq!(device.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(condition(&s, ConditionType::Reconciling).as_deref(), Some("True"));
    assert_eq!(condition(&s, ConditionType::Ready).as_deref(), Some("False"));

    // Its NVOS ZTP JSON from replica b, then the callback to replica a: one history.
    let r =
        c.get(format!("{}/nvos/ztp.json", b.base)).headers(nvos("MT2245X01234")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    wait_switch(&switches, "MT2245X01234", "Configuring", |s| phase(s) == Some(SwitchPhase::Configuring))
        .await;
    // Replica b restarts mid-attempt (what it wrote is in the Switch; it keeps nothing else): the
    // attempt goes on from the restarted one, one history, no stage lost or doubled (below).
    drop(b);
    let b = serve_with(&store, &kubeconfig, "switches-b-restarted.log", 1, &flags).await;
    // Its section carries its report URL and token; a report with that token is recorded, one
    // with a forged token or none is refused and leaves nothing.
    let section = format!("{}/nvos/MT2245X01234/sections/01-commands-list", b.base);
    let script = c.get(&section).headers(nvos("MT2245X01234")).send().await.expect("get");
    let script = script.text().await.expect("text");
    let report_url = format!("{}/v1/devices/MT2245X01234/report", b.base);
    assert!(script.ends_with(&format!("{report_url}\n")), "{script}");
    let token = token_in(&script).to_owned();
    let forged = r#"{"stage": "forged"}"#;
    let r = c.post(&report_url).bearer_auth("0".repeat(64)).body(forged).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c.post(&report_url).body(forged).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no token");
    let applied = r#"{"stage": "config-applied"}"#;
    let r = c.post(&report_url).bearer_auth(&token).body(applied).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_switch(&switches, "MT2245X01234", "showing the report", |s| {
        stages(s, 0).contains(&"config-applied".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // stored times have whole seconds
    let r = c.post(format!("{}/v1/devices/MT2245X01234/provisioned", a.base)).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let s =
        wait_switch(&switches, "MT2245X01234", "Provisioned", |s| phase(s) == Some(SwitchPhase::Provisioned))
            .await;
    assert_eq!(condition(&s, ConditionType::Ready).as_deref(), Some("True"));
    assert_eq!(condition(&s, ConditionType::Reconciling), None);
    let st = s.status.as_ref().expect("status");
    assert_eq!(st.attempts.len(), 1, "{:#?}", st.attempts);
    assert_eq!(
        (st.attempts[0].trigger, st.attempts[0].result),
        (AttemptTrigger::Discovered, Some(AttemptResult::Provisioned))
    );
    assert_eq!(stages(&s, 0), ["ImageServed", "ConfigServed", "config-applied", "Provisioned"]);
    assert_eq!(st.device.as_ref().and_then(|d| d.family.as_deref()), Some("nvos"), "what it said last");
    // The controller counts the profile's Switches; the servers write no device summary.
    let profiles: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    let provisioned = SwitchCounts { total: 1, provisioned: 1, ..Default::default() };
    let p = wait_for(&profiles, "leaf", "counting one Provisioned Switch", |p| {
        p.status.as_ref().and_then(|s| s.switches.as_ref()) == Some(&provisioned)
    })
    .await;
    let status = p.status.as_ref().expect("status");
    assert!(status.devices.is_none(), "{status:?}");
    assert!(find_condition(&status.conditions, ConditionType::Ready).is_some(), "the pipeline's fields kept");
    // Each replica lists the Switches it follows (`ztpctl switches --server`), as of its last flush.
    for base in [&a.base, &b.base] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = c.get(format!("{base}/v1/switches/MT2245X01234")).send().await.expect("get");
            let listed: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.expect("body")).unwrap_or_default();
            if listed["status"]["phase"] == "Provisioned" {
                break;
            }
            assert!(Instant::now() < deadline, "{base} does not list it Provisioned: {listed}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A section after the close is no new attempt; its ZTP JSON again is.
    let r = c
        .get(format!("{}/nvos/MT2245X01234/sections/01-commands-list", b.base))
        .headers(nvos("MT2245X01234"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let r =
        c.get(format!("{}/nvos/ztp.json", a.base)).headers(nvos("MT2245X01234")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let s = wait_switch(&switches, "MT2245X01234", "started over", |s| {
        phase(s) == Some(SwitchPhase::Configuring)
    })
    .await;
    let st = s.status.as_ref().expect("status");
    assert_eq!(st.attempts.len(), 2);
    assert_eq!((st.attempts[0].trigger, st.attempts[0].result), (AttemptTrigger::Restarted, None));
    assert_eq!(stages(&s, 0), ["ConfigServed"]);
    assert_eq!(
        stages(&s, 1),
        ["ImageServed", "ConfigServed", "config-applied", "Provisioned"],
        "the closed attempt is kept as it was"
    );
    // A failure reported in the new attempt: Failed, and Stalled with the device's reason.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let failed = r#"{"stage": "config-apply", "result": "failed", "message": "nv config apply: exit 1"}"#;
    let r = c.post(&report_url).bearer_auth(&token).body(failed).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let s = wait_switch(&switches, "MT2245X01234", "Failed", |s| phase(s) == Some(SwitchPhase::Failed)).await;
    let conditions = &s.status.as_ref().expect("status").conditions;
    let stalled = find_condition(conditions, ConditionType::Stalled).expect("Stalled");
    let why = &stalled.message;
    assert!(why.contains("stage config-apply failed") && why.ends_with(": nv config apply: exit 1"), "{why}");
    assert_eq!(condition(&s, ConditionType::Ready).as_deref(), Some("False"));
    // Current figures: the Switch left Provisioned for Failed.
    let failed = SwitchCounts { total: 1, failed: 1, ..Default::default() };
    wait_for(&profiles, "leaf", "counting one Failed Switch", |p| {
        p.status.as_ref().and_then(|s| s.switches.as_ref()) == Some(&failed)
    })
    .await;

    // A re-provision opens a new attempt at once, without the device; Failed is over.
    let name = name::for_serial("MT2245X01234");
    let again = json!({"spec": {"reprovision": "rma-4711"}});
    switches.patch(&name, &PatchParams::default(), &Patch::Merge(again)).await.expect("reprovision");
    let s = wait_switch(&switches, "MT2245X01234", "re-provisioned", |s| {
        s.status.as_ref().is_some_and(|st| st.attempts[0].trigger == AttemptTrigger::Reprovision)
    })
    .await;
    let st = s.status.as_ref().expect("status");
    assert_eq!(st.attempts[0].reprovision.as_deref(), Some("rma-4711"));
    assert_eq!(st.attempts[1].result, Some(AttemptResult::Failed), "a closed attempt keeps its result");
    assert_eq!(phase(&s), Some(SwitchPhase::Discovered));
    assert_eq!(condition(&s, ConditionType::Stalled), None);
    assert_eq!(condition(&s, ConditionType::Reconciling).as_deref(), Some("True"));

    // On hold: 403 on its routes (once the servers' watch has it), phase Held; released: served.
    let hold = |on: bool| json!({"spec": {"hold": on}});
    switches.patch(&name, &PatchParams::default(), &Patch::Merge(hold(true))).await.expect("hold");
    let ztp_json = format!("{}/nvos/ztp.json", a.base);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(&ztp_json).headers(nvos("MT2245X01234")).send().await.expect("get");
        if r.status() == StatusCode::FORBIDDEN {
            assert!(r.text().await.expect("text").contains("on hold"));
            break;
        }
        assert!(Instant::now() < deadline, "still served while on hold: {}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = wait_switch(&switches, "MT2245X01234", "Held", |s| phase(s) == Some(SwitchPhase::Held)).await;
    assert_eq!(
        (condition(&s, ConditionType::Stalled), condition(&s, ConditionType::Reconciling)),
        (None, None)
    );
    switches.patch(&name, &PatchParams::default(), &Patch::Merge(hold(false))).await.expect("release");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get(&ztp_json).headers(nvos("MT2245X01234")).send().await.expect("get").status() != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "not served again after the hold");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The hand-made Switch is found by its serial: written, not duplicated; nothing matches it.
    let r = c.get(format!("{}/nvos/ztp.json", a.base)).headers(nvos("SPINE0001")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let s = wait_switch(&switches, "SPINE0001", "seen", |s| {
        s.status.as_ref().is_some_and(|st| st.last_seen.is_some())
    })
    .await;
    assert_eq!(phase(&s), Some(SwitchPhase::Unmatched));
    assert_eq!(s.metadata.name.as_deref(), Some("spine-1"));
    assert_eq!(condition(&s, ConditionType::Stalled).as_deref(), Some("True"));
    let stalled = find_condition(&s.status.as_ref().expect("status").conditions, ConditionType::Stalled)
        .expect("Stalled");
    assert!(
        stalled.message.contains("SPINE0001") && stalled.message.contains("0c:42:a1:00:00:0a"),
        "{}",
        stalled.message
    );

    // Made-up serials: at most three discovered Unmatched Switches at a time, the newest kept.
    for i in 1..=6 {
        let serial = format!("ZZ-{i}");
        let r = c.get(format!("{}/nvos/ztp.json", a.base)).headers(nvos(&serial)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        wait_switch(&switches, &serial, "Unmatched", |s| phase(s) == Some(SwitchPhase::Unmatched)).await;
    }
    let all = switches.list(&ListParams::default()).await.expect("list").items;
    let strangers: Vec<&str> = all
        .iter()
        .filter(|s| s.spec.serial_number.starts_with("ZZ-"))
        .map(|s| s.spec.serial_number.as_str())
        .collect();
    assert!(strangers.len() <= 3 && strangers.contains(&"ZZ-6"), "{strangers:?}");
    assert!(
        all.iter().any(|s| s.metadata.name.as_deref() == Some("spine-1")),
        "a hand-made Switch is never recycled"
    );
    drop((a, b));

    // `--discover matched`: a stranger gets no Switch; a matched device still does.
    let m = serve_with(
        &store,
        &kubeconfig,
        "switches-matched.log",
        1,
        &["--switches", "--discover=matched", &ns, &discover_ns],
    )
    .await;
    let r = c.get(format!("{}/nvos/ztp.json", m.base)).headers(nvos("STRANGER-1")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Flushed every second: the callback's flush comes after the stranger's.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r =
        c.get(format!("{}/nvos/ztp.json", m.base)).headers(nvos("MT2245X01234")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    wait_switch(&switches, "MT2245X01234", "starting over after its failure", |s| {
        phase(s) == Some(SwitchPhase::Configuring)
    })
    .await;
    let all = switches.list(&ListParams::default()).await.expect("list").items;
    assert!(!all.iter().any(|s| s.spec.serial_number == "STRANGER-1"), "a stranger was discovered");
}

/// What a server that writes Switches needs in a test's namespace: a report key, and an identity
/// allowed only Switches (as the chart's servers are); the flags that give them to `serve`.
struct SwitchWriter {
    key: ztp_operator::switch::token::ReportKey,
    kubeconfig: std::path::PathBuf,
    /// `--switch-namespace=…`
    ns_flag: String,
    /// `--report-key-file=…`
    key_flag: String,
}

async fn switch_writer(t: &support::KubeTest, dir: &std::path::Path) -> SwitchWriter {
    let key_text = "switch-writer-report-key-0123456789abcdef0123";
    let key_file = dir.join("report-key");
    std::fs::write(&key_file, key_text).expect("key");
    let key = ztp_operator::switch::token::ReportKey::from_bytes("test", key_text.as_bytes()).expect("key");
    let rules = json!([
        {"apiGroups": ["ztp.netops.dev"], "resources": ["switches"], "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": ["ztp.netops.dev"], "resources": ["switches/status"], "verbs": ["patch"]},
    ]);
    SwitchWriter {
        key,
        kubeconfig: identity_with(t, dir, rules).await,
        ns_flag: format!("--switch-namespace={}", t.namespace),
        key_flag: format!("--report-key-file={}", key_file.display()),
    }
}

/// Every string in `v` (a ZTP JSON) that ends with `suffix`.
fn urls_ending(v: &serde_json::Value, suffix: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.ends_with(suffix) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| urls_ending(v, suffix, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| urls_ending(v, suffix, out)),
        _ => {}
    }
}

/// SONiC, Cumulus and RtBrick (ONIE and NVOS are above) each go from their first document to
/// `Provisioned`, asked with exactly what that family's client sends (`ztp_operator::dryrun`):
/// the document their client runs carries the device's own `report_url` / `report_token`, the
/// stage reported with it lands in the attempt, and the Switch says which family asked.
#[tokio::test]
async fn every_family_reports_its_way_to_provisioned() {
    use ztp_operator::{
        dryrun::{Device, requests},
        profile::identity::Family,
    };

    let t = support::kube_test("switch-families").await;
    let store = TestStore::new(Backend::Fs, "switch-families").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let report = "curl -fsS -H 'Authorization: Bearer {{ report_token }}' -d '{\"stage\": \"config-applied\"}' {{ report_url }}";
    let profile = json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "fleet"},
        "spec": {
            "match": {"serialNumbers": ["SONIC-01", "CUMULUS-01", "RTBRICK-01"]},
            "sonic": {"sections": [{"plugin": {"name": "report", "ignoreSectionData": true,
                "script": {"template": true, "inline": format!("#!/bin/bash\n{report}\n")}}}]},
            "cumulus": {"script": {"template": true,
                "inline": format!("#!/bin/bash\n# CUMULUS-AUTOPROVISIONING\n{report}\nexit 0\n")}},
            "files": {"startup": {"template": true,
                "inline": "{\"report\": \"{{ report_url }}\", \"token\": \"{{ report_token }}\"}"}},
        },
    });
    let _lab = image_lab(&t, &store, 50_000, 45, profile).await;
    let w = switch_writer(&t, dir.path()).await;
    let (key, kubeconfig) = (&w.key, &w.kubeconfig);
    let server =
        serve_with(&store, kubeconfig, "switch-families.log", 1, &["--switches", &w.ns_flag, &w.key_flag])
            .await;
    let switches: Api<Switch> = Api::namespaced(t.client.clone(), &t.namespace);
    let c = reqwest::Client::new();
    let get = |url: String, headers: &[(&'static str, String)]| {
        let mut r = c.get(url);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        async move {
            let r = r.send().await.expect("get");
            (r.status(), r.text().await.expect("body"))
        }
    };

    for (family, serial) in
        [(Family::Sonic, "SONIC-01"), (Family::Cumulus, "CUMULUS-01"), (Family::RtBrick, "RTBRICK-01")]
    {
        let device = Device { serial: serial.into(), mac: None, model: None, onie_operation: String::new() };
        let first = requests(family, &device, &server.base).expect("requests");
        // The document the family's client runs, with this device's token in it.
        let (status, text) = match family {
            Family::Sonic => {
                let (status, doc) = get(first[0].url.clone(), &first[0].headers).await;
                assert_eq!(status, StatusCode::OK, "{doc}");
                let mut plugins = Vec::new();
                urls_ending(&serde_json::from_str(&doc).expect("ZTP JSON"), "/plugin", &mut plugins);
                assert_eq!(plugins.len(), 1, "{doc}");
                get(plugins[0].clone(), &first[0].headers).await
            }
            Family::RtBrick => {
                let startup = first.iter().find(|r| r.url.ends_with("/ztp/config/startup")).expect("startup");
                get(startup.url.clone(), &startup.headers).await
            }
            _ => get(first[0].url.clone(), &first[0].headers).await,
        };
        assert_eq!(status, StatusCode::OK, "{family:?}: {text}");
        let token = key.token(serial);
        assert!(text.contains(&token), "{family:?}: its own token: {text}");
        assert!(text.contains(&format!("/v1/devices/{serial}/report")), "{family:?}: {text}");
        let report_url = format!("{}/v1/devices/{serial}/report", server.base);
        for body in [r#"{"stage": "config-applied"}"#, r#"{"stage": "provisioned"}"#] {
            let r = c.post(&report_url).bearer_auth(&token).body(body).send().await.expect("post");
            assert_eq!(r.status(), StatusCode::NO_CONTENT, "{family:?}");
        }
        let s = wait_switch(&switches, serial, "Provisioned", |s| phase(s) == Some(SwitchPhase::Provisioned))
            .await;
        let st = s.status.as_ref().expect("status");
        assert_eq!(condition(&s, ConditionType::Ready).as_deref(), Some("True"), "{family:?}");
        assert_eq!(stages(&s, 0), ["ConfigServed", "config-applied", "Provisioned"], "{family:?}");
        let asked = st.device.as_ref().and_then(|d| d.family.clone());
        assert_eq!(asked.as_deref(), Some(family.as_str()), "{family:?}");
        assert_eq!(
            st.matched_profile.as_ref().map(|m| (m.name.as_str(), m.by)),
            Some(("fleet", MatchedBy::Serial))
        );
    }
}

/// The boot storm of `bench/switches.sh` (ignored by `cargo test`; figures, not a pass/fail
/// timing): `ZTP_STORM_DEVICES` (2,000) simulated NVOS devices, `ZTP_STORM_CONCURRENCY` (64) at a
/// time, each asking its ZTP JSON, a HEAD of its image, reporting three stages and `provisioned`,
/// first against a server without `--switches`, then against one with it; prints the Switches
/// created, the writes the apiserver saw per second (a watch counts them), the time until every
/// Switch shows `Provisioned` after the storm's last request, the servers' peak RSS and the
/// device request p99 of both runs.
#[tokio::test]
#[ignore = "a benchmark: bench/switches.sh runs it"]
async fn boot_storm() {
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::{WatchStreamExt, watcher};

    let devices: usize = std::env::var("ZTP_STORM_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let concurrency: usize =
        std::env::var("ZTP_STORM_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let rate = std::env::var("ZTP_STORM_WRITES_PER_SECOND").unwrap_or_else(|_| "50".into());
    // Devices arrive evenly over this many seconds ("within a few minutes"); 0: all at once,
    // as fast as `concurrency` allows.
    let seconds: f64 = std::env::var("ZTP_STORM_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(120.0);
    let spacing = Duration::from_secs_f64(seconds / devices.max(1) as f64);
    let flush: f64 = 1.0; // the servers' --activity-flush-seconds (serve_with)
    let t = support::kube_test("storm").await;
    let store = TestStore::new(Backend::Fs, "storm").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "n5110"},
        "spec": {
            "match": {"models": ["N5110_LD"]},
            "ztp": {"sections": [
                {"kind": "image", "content": {"osImageRef": {"name": "nos"}}},
                {"kind": "commands-list", "content": {"template": true, "inline": REPORTING_SCRIPT}},
            ]},
        },
    });
    let _lab = image_lab(&t, &store, 100_000, 44, profile).await;
    let SwitchWriter { key, kubeconfig, ns_flag: ns, key_flag } = switch_writer(&t, dir.path()).await;
    let rate_flag = format!("--switch-writes-per-second={rate}");
    // Every simulated device comes from 127.0.0.1: no per-source cap on discovery here.
    let per_source = "--discover-per-source-per-minute=1000000";
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client");

    // One storm: every device's requests, bounded concurrency; each request's latency.
    let storm = |base: String, prefix: &'static str| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let started = Instant::now();
            let latencies: Vec<Vec<Duration>> = futures::stream::iter(0..devices)
                .map(|i| {
                    let (client, base) = (client.clone(), base.clone());
                    let serial = format!("{prefix}{i:05}");
                    let token = key.token(&serial);
                    let arrives = started + spacing * i as u32;
                    async move {
                        tokio::time::sleep_until(arrives.into()).await;
                        let mut took = Vec::new();
                        let timed = |r: reqwest::RequestBuilder| async {
                            let at = Instant::now();
                            let r = r.send().await.expect("request");
                            let status = r.status();
                            r.bytes().await.expect("body");
                            (status, at.elapsed())
                        };
                        let (s, d) =
                            timed(client.get(format!("{base}/nvos/ztp.json")).headers(nvos(&serial))).await;
                        assert_eq!(s, StatusCode::OK);
                        took.push(d);
                        let (s, d) =
                            timed(client.head(format!("{base}/images/nos/1/nos.bin")).headers(nvos(&serial)))
                                .await;
                        assert_eq!(s, StatusCode::OK);
                        took.push(d);
                        for stage in ["image-installed", "config-applied", "checks-passed", "provisioned"] {
                            let url = format!("{base}/v1/devices/{serial}/report");
                            let body = format!("{{\"stage\": \"{stage}\"}}");
                            let (s, d) = timed(client.post(url).bearer_auth(&token).body(body)).await;
                            assert_eq!(s, StatusCode::NO_CONTENT);
                            took.push(d);
                        }
                        took
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            let mut all: Vec<Duration> = latencies.into_iter().flatten().collect();
            all.sort();
            let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
            (started.elapsed(), all.len(), p99)
        }
    };
    let rss_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
    };

    // CPU seconds (user + system) a process has used, from /proc (clock ticks of 1/100 s).
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<f64> = after_name.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect();
        (fields.get(11).copied().unwrap_or(0.0) + fields.get(12).copied().unwrap_or(0.0)) / 100.0
    };
    // The control plane sharing the machine: every kube-apiserver and etcd process.
    let control_plane = || -> f64 {
        let procs = std::fs::read_dir("/proc").map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        procs
            .iter()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                matches!(comm.trim(), "kube-apiserver" | "etcd")
            })
            .map(cpu)
            .sum()
    };

    // Without Switches.
    let plain = serve_with(&store, &kubeconfig, "storm-plain.log", 1, &[&key_flag]).await;
    let (plain_server_cpu, plain_cp_cpu) = (cpu(plain.proc.child.id()), control_plane());
    let (plain_wall, plain_n, plain_p99) = storm(plain.base.clone(), "PLAIN").await;
    let plain_server_cpu = cpu(plain.proc.child.id()) - plain_server_cpu;
    let plain_cp_cpu = control_plane() - plain_cp_cpu;
    let plain_rss = rss_kib(plain.proc.child.id());
    drop(plain);

    // With Switches, every write counted by a watch.
    let switches: Api<Switch> = Api::namespaced(t.client.clone(), &t.namespace);
    let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let counted = writes.clone();
    let watch = tokio::spawn(
        watcher(switches.clone(), watcher::Config::default()).touched_objects().try_for_each(move |_| {
            counted.lock().expect("lock").push(Instant::now());
            futures::future::ready(Ok(()))
        }),
    );
    let with = serve_with(
        &store,
        &kubeconfig,
        "storm-switches.log",
        1,
        &["--switches", &ns, &key_flag, &rate_flag, per_source],
    )
    .await;
    let (server_cpu, cp_cpu) = (cpu(with.proc.child.id()), control_plane());
    let (wall, n, p99) = storm(with.base.clone(), "STORM").await;
    let last_request = Instant::now();
    let server_cpu = cpu(with.proc.child.id()) - server_cpu;
    let cp_cpu = control_plane() - cp_cpu;
    let deadline = last_request + Duration::from_secs(600);
    let (created, provisioned) = loop {
        // The apiserver is busy with the writes: a dropped connection is asked again.
        let all = match switches.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                eprintln!("storm: listing Switches: {e}; again");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let created = all.iter().filter(|s| s.spec.serial_number.starts_with("STORM")).count();
        let done = all.iter().filter(|s| phase(s) == Some(SwitchPhase::Provisioned)).count();
        if done >= devices || Instant::now() > deadline {
            break (created, done);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settled = last_request.elapsed();
    let rss = rss_kib(with.proc.child.id());
    drop(with);
    watch.abort();
    let writes = writes.lock().expect("lock").clone();
    let span = match (writes.first(), writes.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64().max(1.0),
        _ => 1.0,
    };
    let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
    if let Some(first) = writes.first() {
        for w in &writes {
            *per_second.entry(w.duration_since(*first).as_secs()).or_default() += 1;
        }
    }
    let peak = per_second.values().max().copied().unwrap_or(0);
    println!(
        "storm: {devices} devices arriving over {seconds} s, {concurrency} at a time, {n} requests with Switches ({plain_n} without)"
    );
    println!("storm: Switches created {created} (want {devices}); Provisioned {provisioned}");
    println!(
        "storm: apiserver writes {} in {span:.1} s: {:.0}/s mean, {peak}/s peak (--switch-writes-per-second={rate})",
        writes.len(),
        writes.len() as f64 / span
    );
    println!(
        "storm: every Switch Provisioned {:.1} s after the last request ({:.1} flush intervals of {flush} s)",
        settled.as_secs_f64(),
        settled.as_secs_f64() / flush
    );
    println!("storm: server peak RSS {} MiB with Switches, {} MiB without", rss / 1024, plain_rss / 1024);
    println!(
        "storm: CPU during the storm: server {server_cpu:.1} s with Switches, {plain_server_cpu:.1} s without; kube-apiserver + etcd {cp_cpu:.1} s with, {plain_cp_cpu:.1} s without"
    );
    println!(
        "storm: device request p99 {:.1} ms with Switches, {:.1} ms without ({:.2}x); storm wall {:.1} s vs {:.1} s",
        p99.as_secs_f64() * 1e3,
        plain_p99.as_secs_f64() * 1e3,
        p99.as_secs_f64() / plain_p99.as_secs_f64(),
        wall.as_secs_f64(),
        plain_wall.as_secs_f64()
    );
    assert_eq!(created, devices, "every device got its Switch");
    assert_eq!(provisioned, devices, "every Switch reached Provisioned");
}
