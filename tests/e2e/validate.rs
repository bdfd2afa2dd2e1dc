//! The shared validator (`ztp_operator::api::validate`, what standalone and `ztpctl` check
//! manifests with) against the real apiserver: a table of manifests, valid ones and every kind of
//! invalid one, each sent to the apiserver (dry run, field validation `Strict` as `kubectl apply`
//! uses by default) and to the validator. Same verdict for every case, and where both refuse for
//! a CEL rule, the same message.

use serde_json::{Value, json};
use ztp_operator::api::validate;

use crate::support;

const SHA: &str = "7c0a9f3b5e4d2c1a0f9e8d7c6b5a49382716f5e4d3c2b1a0f9e8d7c6b5a49382";

fn image(spec: Value) -> Value {
    json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage", "metadata": {"name": "img"}, "spec": spec})
}

fn profile(spec: Value) -> Value {
    json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": "prof"}, "spec": spec})
}

fn good_image() -> Value {
    json!({"platform": "cumulus-linux", "version": "5.14.0", "source": {"url": {"url": "http://h/c.bin"}}, "sha256": SHA})
}

fn with(mut v: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a parent");
    let target = if parent.is_empty() { &mut v } else { v.pointer_mut(parent).expect("parent exists") };
    target[key] = value;
    v
}

fn sonic(section: Value) -> Value {
    profile(json!({"match": {"models": ["x"]}, "sonic": {"sections": [section]}}))
}

fn ztp(section: Value) -> Value {
    profile(json!({"match": {"models": ["x"]}, "ztp": {"sections": [section]}}))
}

/// (what, manifest, message both must give when refused: "" when accepted).
fn table() -> Vec<(String, Value, &'static str)> {
    let mut t: Vec<(String, Value, &'static str)> = vec![
        ("good image".into(), image(good_image()), ""),
        (
            "good s3 image".into(),
            image(with(good_image(), "/source", json!({"s3": {"bucket": "b", "key": "k/x.bin"}}))),
            "",
        ),
        (
            "url and s3".into(),
            image(with(good_image(), "/source/s3", json!({"bucket": "b", "key": "k"}))),
            "source must set exactly one of url or s3",
        ),
        (
            "no source".into(),
            image(with(good_image(), "/source", json!({}))),
            "source must set exactly one of url or s3",
        ),
        (
            "upper-case sha256".into(),
            image(with(good_image(), "/sha256", json!(SHA.to_uppercase()))),
            "sha256 must be 64 lowercase hexadecimal digits",
        ),
        ("short sha256".into(), image(with(good_image(), "/sha256", json!("abc"))), ""),
        (
            "ftp url".into(),
            image(with(good_image(), "/source/url/url", json!("ftp://h/x"))),
            "url must start with http://, https:// or file://",
        ),
        ("unknown spec field".into(), image(with(good_image(), "/platfrom", json!("x"))), ""),
        ("unknown source field".into(), image(with(good_image(), "/source/url/proxy", json!("x"))), ""),
        ("unknown deletion policy".into(), image(with(good_image(), "/deletionPolicy", json!("Keep"))), ""),
        ("integer version".into(), image(with(good_image(), "/version", json!(5))), ""),
        (
            "missing sha256".into(),
            image(json!({"platform": "p", "version": "1", "source": {"url": {"url": "http://h/x"}}})),
            "",
        ),
        ("null filename".into(), image(with(good_image(), "/filename", Value::Null)), ""),
        (
            "traversal platform".into(),
            image(with(good_image(), "/platform", json!("../etc"))),
            "platform must be a safe path segment",
        ),
        ("bad name".into(), with(image(good_image()), "/metadata/name", json!("Not_A_Name")), ""),
        (
            "unknown version".into(),
            with(image(good_image()), "/apiVersion", json!("ztp.netops.dev/v1beta1")),
            "",
        ),
        ("unknown kind".into(), with(image(good_image()), "/kind", json!("OSImage")), ""),
        ("unknown top-level field".into(), with(image(good_image()), "/spce", json!({})), ""),
        ("good profile".into(), profile(json!({"match": {"models": ["x"]}, "hostname": "leaf01"})), ""),
        (
            "empty match".into(),
            profile(json!({"match": {}})),
            "match needs at least one of serialNumbers, macAddresses or models",
        ),
        (
            "empty serial list".into(),
            profile(json!({"match": {"serialNumbers": []}})),
            "match needs at least one of serialNumbers, macAddresses or models",
        ),
        (
            "bad mac".into(),
            profile(json!({"match": {"macAddresses": ["0c:42:a1:00:00"]}})),
            "MAC addresses must be six hex pairs",
        ),
        (
            "bad serial".into(),
            profile(json!({"match": {"serialNumbers": ["../MT1"]}})),
            "serial numbers must be a safe path segment",
        ),
        (
            "bad file name".into(),
            profile(json!({"match": {"models": ["x"]}, "files": {"../startup": {"inline": "x"}}})),
            "file names must be a safe path segment",
        ),
        (
            "two contents".into(),
            profile(
                json!({"match": {"models": ["x"]}, "files": {"s": {"inline": "x", "configMapKeyRef": {"name": "c", "key": "k"}}}}),
            ),
            "exactly one of inline, configMapKeyRef, secretKeyRef or osImageRef must be set",
        ),
        (
            "image template".into(),
            profile(
                json!({"match": {"models": ["x"]}, "files": {"s": {"osImageRef": {"name": "n"}, "template": true}}}),
            ),
            "an osImageRef cannot be a template",
        ),
        ("unknown profile field".into(), profile(json!({"match": {"models": ["x"], "model": "y"}})), ""),
        (
            "commands-list without content".into(),
            ztp(json!({"kind": "commands-list"})),
            "commands-list, startup-file and provisioning-script sections need content",
        ),
        (
            "image section without ref".into(),
            ztp(json!({"kind": "image", "content": {"inline": "x"}})),
            "an image section needs content.osImageRef (install) or uninstall: true",
        ),
        ("good image section".into(), ztp(json!({"kind": "image", "uninstall": true})), ""),
        (
            "two sonic plugins".into(),
            sonic(json!({"snmp": {"communityRo": "x"}, "connectivityCheck": {"pingHosts": ["a"]}})),
            "a SONiC section sets exactly one of",
        ),
        ("empty sonic section".into(), sonic(json!({})), "a SONiC section sets exactly one of"),
        ("empty snmp".into(), sonic(json!({"snmp": {}})), "snmp needs communityRo or snmpLocation"),
        (
            "empty connectivity check".into(),
            sonic(json!({"connectivityCheck": {"pingHosts": []}})),
            "connectivityCheck needs pingHosts or ping6Hosts",
        ),
        ("empty firmware".into(), sonic(json!({"firmware": {}})), "firmware needs install, remove or both"),
        (
            "config db from an image".into(),
            sonic(json!({"configdbJson": {"content": {"osImageRef": {"name": "n"}}}})),
            "configdbJson.content is a config_db.json text, not an osImageRef",
        ),
        ("good sonic snmp".into(), sonic(json!({"snmp": {"snmpLocation": "x"}})), ""),
    ];
    for field in ["platform", "version", "filename"] {
        for name in [
            "manifest.json",
            "MANIFEST.JSON",
            "Manifest.json",
            "ztp-snapshots",
            "ZTP-Snapshots",
            ".tmp",
            ".STATUS",
            ".manifest.lock",
        ] {
            t.push((
                format!("{field} {name}"),
                image(with(good_image(), &format!("/{field}"), json!(name))),
                "is reserved for the store's own use",
            ));
        }
        t.push((
            format!("{field} manifest.json.d"),
            image(with(good_image(), &format!("/{field}"), json!("manifest.json.d"))),
            "",
        ));
    }
    t
}

/// The apiserver's verdict: `Ok` or its message. Dry run, `fieldValidation=Strict`, at the URL the
/// manifest's own apiVersion and kind lead to (as `kubectl` would find it).
async fn apiserver(client: &kube::Client, ns: &str, doc: &Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let plural = format!("{}s", doc["kind"].as_str().unwrap_or_default().to_lowercase());
    let url = format!("/apis/{api_version}/namespaces/{ns}/{plural}?dryRun=All&fieldValidation=Strict");
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(doc).expect("json"))
        .expect("request");
    match client.request_text(req).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(format!("{} {}: {}", s.code, s.reason, s.message)),
        Err(e) => Err(format!("transport: {e}")),
    }
}

#[tokio::test]
async fn the_validator_and_the_apiserver_give_the_same_verdict() {
    let t = support::kube_test("validate-diff").await;
    let table = table();
    let mut disagree = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (what, doc, message) in &table {
        let server = apiserver(&t.client, &t.namespace, doc).await;
        let ours = validate::validate(doc).map_err(|e| e.to_string());
        assert!(!matches!(&server, Err(m) if m.starts_with("transport")), "{what}: {server:?}");
        if server.is_ok() != ours.is_ok() {
            disagree.push(format!("{what}: apiserver {server:?}, validator {ours:?}"));
            continue;
        }
        if server.is_ok() {
            accepted += 1;
        } else {
            refused += 1;
        }
        if !message.is_empty() {
            for verdict in [&server, &ours] {
                assert!(
                    matches!(verdict, Err(m) if m.contains(message)),
                    "{what}: {verdict:?} lacks {message:?}"
                );
            }
        }
        eprintln!("{what}: apiserver {server:?}\n    validator {ours:?}");
    }
    assert!(
        disagree.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagree.len(),
        table.len(),
        disagree.join("\n")
    );
    assert!(accepted >= 8 && refused >= 50, "{accepted} accepted, {refused} refused");
}
