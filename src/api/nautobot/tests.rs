use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;
use crate::api::validate::validate_against;

fn crd() -> Value {
    serde_json::to_value(NautobotSource::crd()).unwrap()
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// A NautobotSource document with `spec`, for the validator.
fn doc(spec: Value) -> Value {
    json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "NautobotSource",
        "metadata": {"name": "dc1", "namespace": "ztp"}, "spec": spec,
    })
}

fn minimal() -> Value {
    json!({"url": "https://nautobot.example.net", "tokenSecretRef": {"name": "nautobot", "key": "token"}})
}

/// Errors of the apiserver-like validator, as text ("" when valid).
fn errors(spec: Value) -> String {
    match validate_against(&NautobotSource::crd(), &doc(spec)) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn with(path: &[&str], value: Value) -> Value {
    let mut spec = minimal();
    let mut at = &mut spec;
    for (i, p) in path.iter().enumerate() {
        if i + 1 == path.len() {
            at[*p] = value.clone();
        } else {
            if at.get(*p).is_none() {
                at[*p] = json!({});
            }
            at = &mut at[*p];
        }
    }
    spec
}

#[test]
fn a_minimal_source_round_trips_with_its_defaults() {
    let yaml = "url: https://nautobot.example.net\ntokenSecretRef: {name: nautobot, key: token}\n";
    let spec: NautobotSourceSpec = yaml_serde::from_str(yaml).unwrap();
    assert_eq!(spec.interval_seconds, DEFAULT_INTERVAL_SECONDS);
    assert_eq!(spec.prune, PrunePolicy::Orphan);
    assert_eq!(spec.filter, NautobotFilter::default());
    assert_eq!(spec.switches.mac.interface.as_deref(), Some("eth0"));
    assert!(spec.switches.config_context && spec.images.enabled);
    assert_eq!(spec.images.select, ImageSelect::Intended);
    let back = serde_json::to_value(&spec).unwrap();
    assert_eq!(serde_json::from_value::<NautobotSourceSpec>(back.clone()).unwrap(), spec);
    assert_eq!(back["switches"], json!({"mac": {"interface": "eth0"}, "configContext": true}));
    assert_eq!(back["images"], json!({"enabled": true, "select": "Intended"}));
    assert_eq!(errors(minimal()), "");
    assert_eq!(errors(back), "");
}

#[test]
fn a_full_source_is_valid_and_round_trips() {
    let spec = json!({
        "url": "http://127.0.0.1:8080/",
        "tokenSecretRef": {"name": "nautobot", "key": "token"},
        "caBundleRef": {"name": "ca", "key": "ca.crt"},
        "filter": {"locations": ["dc1"], "roles": ["leaf", "spine"], "statuses": ["Active"],
                   "tags": ["ztp"], "platforms": ["sonic"]},
        "intervalSeconds": 300,
        "prune": "Delete",
        "switches": {"mac": {"customField": "base_mac"}, "configContext": false, "customFields": ["rack_unit"],
                     "profileCustomField": "ztp_profile",
                     "profiles": [{"role": "leaf", "profile": "leaf"}, {"platform": "sonic", "profile": "sonic"}]},
        "images": {"enabled": true, "select": "All", "platforms": {"nvidia-cumulus": "cumulus-linux"}},
    });
    assert_eq!(errors(spec.clone()), "");
    let typed: NautobotSourceSpec = serde_json::from_value(spec.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), spec);
}

#[test]
fn the_schema_states_the_defaults_and_bounds() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(spec["intervalSeconds"]["default"], json!(DEFAULT_INTERVAL_SECONDS));
    assert_eq!(spec["intervalSeconds"]["minimum"].as_f64(), Some(f64::from(MIN_INTERVAL_SECONDS)));
    assert_eq!(spec["intervalSeconds"]["maximum"].as_f64(), Some(f64::from(MAX_INTERVAL_SECONDS)));
    assert_eq!(spec["prune"]["default"], json!("Orphan"));
    assert_eq!(spec["switches"]["properties"]["mac"]["default"], json!({"interface": "eth0"}));
    assert_eq!(spec["switches"]["properties"]["configContext"]["default"], json!(true));
    assert_eq!(spec["images"]["properties"]["enabled"]["default"], json!(true));
    assert_eq!(spec["images"]["properties"]["select"]["default"], json!("Intended"));
    assert_eq!(spec["filter"]["properties"]["tags"]["maxItems"], json!(64));
    let required: Vec<&str> =
        s["properties"]["spec"]["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, ["tokenSecretRef", "url"]);
    let status = &s["properties"]["status"]["properties"];
    let n = |v: &Value| v.as_u64().map(|n| n as usize);
    assert_eq!(n(&status["skippedDevices"]["maxItems"]), Some(MAX_SKIPPED));
    assert_eq!(n(&status["skippedImages"]["maxItems"]), Some(MAX_SKIPPED));
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], json!("map"));
}

#[test]
fn the_cel_rules_are_in_the_schema() {
    let mut rules = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "x-kubernetes-validations" {
                        out.extend(
                            x.as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap().to_owned()),
                        );
                    } else {
                        walk(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&schema(), &mut rules);
    for want in [
        "self.matches('^https?://",
        "has(self.interface) != has(self.customField)",
        "has(self.role) ||",
        "self.all(k,",
    ] {
        assert!(rules.iter().any(|r| r.starts_with(want)), "{want} not in {rules:?}");
    }
}

#[test]
fn the_cel_rules_refuse_what_they_should() {
    let cases = [
        (with(&["url"], json!("ftp://nautobot.example.net")), "url must be"),
        (with(&["url"], json!("https://nautobot.example.net/?q=1")), "url must be"),
        (with(&["url"], json!("https://user:pw@nautobot.example.net")), "url must be"),
        (with(&["switches", "mac"], json!({})), "exactly one of interface or customField"),
        (with(&["switches", "mac"], json!({"interface": "eth0", "customField": "mac"})), "exactly one"),
        (with(&["switches", "profiles"], json!([{"profile": "leaf"}])), "must name a role, a platform"),
        (
            with(&["images", "platforms"], json!({"sonic": "../x"})),
            "store platform must be a safe path segment",
        ),
        (with(&["intervalSeconds"], json!(5)), "intervalSeconds"),
        (with(&["prune"], json!("Keep")), "prune"),
        (with(&["filter", "roles"], json!([""])), "roles"),
    ];
    for (spec, want) in cases {
        let e = errors(spec.clone());
        assert!(e.contains(want), "{spec}: {e:?} lacks {want:?}");
    }
    assert_eq!(errors(with(&["url"], json!("https://nautobot.example.net:8443/nautobot"))), "");
    assert_eq!(errors(with(&["images", "platforms"], json!({"nvidia-cumulus": "cumulus-linux"}))), "");
}

#[test]
fn kubectl_get_shows_the_source_columns() {
    let crd = crd();
    let cols: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["URL", "Ready", "Switches", "Images", "Last Sync", "Age"]);
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["nbs"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["ztp"]));
    assert_eq!(crd["spec"]["scope"], json!("Namespaced"));
}

#[test]
fn the_skipped_lists_are_bounded_and_counted() {
    let one = |i: usize| SkippedObject {
        name: format!("sw-{i}"),
        reason: SkipReason::NoSerial,
        message: "the device has no serial number".into(),
    };
    let (count, kept) = bounded_skips((0..MAX_SKIPPED + 7).map(one));
    assert_eq!(count, (MAX_SKIPPED + 7) as i64);
    assert_eq!(kept.len(), MAX_SKIPPED);
    assert_eq!(kept[0].name, "sw-0");
    let status = NautobotSourceStatus { skipped: Some(count), skipped_devices: kept, ..Default::default() };
    let v = serde_json::to_value(&status).unwrap();
    assert_eq!(v["skippedDevices"][0]["reason"], json!("NoSerial"));
    assert_eq!(serde_json::from_value::<NautobotSourceStatus>(v).unwrap(), status);
    assert_eq!(serde_json::to_value(NautobotSourceStatus::default()).unwrap(), json!({}));
}

#[test]
fn skip_reasons_serialise_as_their_names() {
    use SkipReason::*;
    for r in [
        NoSerial,
        BadSerial,
        DuplicateSerial,
        NoMac,
        BadMac,
        Invalid,
        AmbiguousImage,
        ImageSkipped,
        NotSha256,
        BadChecksum,
        NoDownloadUrl,
        BadPath,
        DuplicatePath,
        Unresolved,
    ] {
        assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
    }
}
