//! The CRDs on a real apiserver: they install and become Established, the shipped examples are
//! accepted, every CEL rule rejects its bad case with a readable message, and the status
//! subresource and printer columns behave as `kubectl` users expect.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use ztp_operator::api::{OsImage, Switch, SwitchProfile};

use crate::support;

const SHA: &str = "7c0a9f3b5e4d2c1a0f9e8d7c6b5a49382716f5e4d3c2b1a0f9e8d7c6b5a49382";

fn osimage(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage", "metadata": {"name": name}, "spec": spec})
}

fn profile(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "SwitchProfile", "metadata": {"name": name}, "spec": spec})
}

fn good_image_spec() -> Value {
    json!({
        "platform": "cumulus-linux",
        "version": "5.14.0",
        "source": {"url": {"url": "http://images.example.net/cumulus-linux-5.14.0-mlx-amd64.bin"}},
        "sha256": SHA,
    })
}

/// Creates `obj` and returns the apiserver's rejection (status 422 expected).
async fn rejected<K>(api: &Api<K>, obj: Value) -> String
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).expect("test object deserialises");
    match api.create(&PostParams::default(), &obj).await {
        Ok(o) => panic!("apiserver accepted an invalid object: {o:?}"),
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "expected 422 Invalid, got {s:?}");
            s.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn crds_are_established_with_status_and_columns() {
    let t = support::kube_test("crd-installed").await;
    let crds: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    for (name, columns, short) in [
        (
            "osimages.ztp.netops.dev",
            vec!["Platform", "Version", "Phase", "Progress", "Size", "Age", "Message"],
            "osi",
        ),
        (
            "switchprofiles.ztp.netops.dev",
            vec![
                "Match",
                "Ready",
                "Reason",
                "Switches",
                "Provisioned",
                "Failed",
                "Devices",
                "Age",
                "Message",
            ],
            "swp",
        ),
        (
            "switches.ztp.netops.dev",
            vec!["Serial", "Hostname", "Model", "Profile", "Phase", "IP", "Last Seen", "Age"],
            "sw",
        ),
        (
            "nautobotsources.ztp.netops.dev",
            vec!["URL", "Ready", "Switches", "Images", "Last Sync", "Age"],
            "nbs",
        ),
    ] {
        let crd = crds.get(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Established"))
            .map(|c| c.status.clone());
        assert_eq!(established.as_deref(), Some("True"), "{name} Established");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert!(
            crd.spec.names.short_names.as_ref().is_some_and(|s| s.iter().any(|n| n == short)),
            "{name} short name"
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{name} status subresource"
        );
        let got: Vec<_> = v.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(got, columns, "{name} printer columns");
    }
}

/// Every YAML document under `examples/` (lab included: it uses only OsImage, SwitchProfile,
/// ConfigMap and Secret) is accepted by the real apiserver with a server-side dry run, so the
/// examples never drift from the CRD schema and its CEL rules; nothing is persisted.
#[tokio::test]
async fn shipped_examples_are_accepted() {
    use kube::{
        api::{DynamicObject, GroupVersionKind},
        discovery::pinned_kind,
    };

    let t = support::kube_test("crd-examples").await;
    let docs = example_documents();
    let dry_run = PostParams { dry_run: true, field_manager: None };
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for doc in &docs {
        let where_ = format!("{} document {}", doc.file.display(), doc.index + 1);
        let api_version =
            doc.value["apiVersion"].as_str().unwrap_or_else(|| panic!("{where_}: no apiVersion"));
        let kind = doc.value["kind"].as_str().unwrap_or_else(|| panic!("{where_}: no kind"));
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let (resource, _) = pinned_kind(&t.client, &GroupVersionKind::gvk(group, version, kind))
            .await
            .unwrap_or_else(|e| panic!("{where_}: the apiserver does not serve {api_version} {kind}: {e}"));
        let obj: DynamicObject = serde_json::from_value(doc.value.clone())
            .unwrap_or_else(|e| panic!("{where_}: not a Kubernetes object: {e}"));
        let api: Api<DynamicObject> = Api::namespaced_with(t.client.clone(), &t.namespace, &resource);
        match api.create(&dry_run, &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) => panic!(
                "{where_} ({kind} {}) rejected by the apiserver ({} {}): {}",
                obj.name_any(),
                s.code,
                s.reason,
                s.message
            ),
            Err(e) => panic!("{where_} ({kind} {}): {e}", obj.name_any()),
        }
        *kinds.entry(kind.to_owned()).or_default() += 1;
    }
    // Dry run means dry: nothing was stored.
    let stored = Api::<OsImage>::namespaced(t.client.clone(), &t.namespace)
        .list(&Default::default())
        .await
        .expect("list OsImages");
    assert!(stored.items.is_empty(), "a dry run stored {} OsImages", stored.items.len());
    for (kind, at_least) in [("OsImage", 7), ("SwitchProfile", 16), ("ConfigMap", 5), ("Secret", 5)] {
        let n = kinds.get(kind).copied().unwrap_or(0);
        assert!(
            n >= at_least,
            "expected at least {at_least} {kind} documents under examples/, found {n}: {kinds:?}"
        );
    }
}

/// The examples are a set a user can apply as it is: every OsImage, ConfigMap (and key) and
/// Secret (and key) a document refers to is declared in the same set (`examples/lab/` on its
/// own, everything else together); each switch family has a serial-specific profile and a model
/// default; and every file starts with a comment saying what it is.
#[test]
fn examples_are_complete_and_commented() {
    let docs = example_documents();
    let mut files: Vec<&std::path::Path> = docs.iter().map(|d| d.file.as_path()).collect();
    files.dedup();
    for f in files {
        let text = std::fs::read_to_string(f).expect("read example");
        assert!(text.starts_with('#'), "{} must start with a comment saying what it does", f.display());
    }
    for lab in [true, false] {
        let set: Vec<&ExampleDoc> = docs.iter().filter(|d| d.is_lab() == lab).collect();
        let declared = |kind: &str, name: &str| -> Option<&Value> {
            set.iter()
                .find(|d| d.value["kind"] == kind && d.value["metadata"]["name"] == name)
                .map(|d| &d.value)
        };
        for doc in &set {
            let mut refs = Vec::new();
            collect_refs(&doc.value["spec"], &mut refs);
            for (kind, name, key) in refs {
                let Some(target) = declared(kind, &name) else {
                    panic!(
                        "{}: {kind} {name} is referenced but not declared under examples/",
                        doc.file.display()
                    )
                };
                if let Some(key) = key {
                    let has = |field: &str| target.get(field).and_then(|d| d.get(&key)).is_some();
                    assert!(
                        has("data") || has("stringData"),
                        "{}: {kind} {name} has no key {key}",
                        doc.file.display()
                    );
                }
            }
        }
    }
    let profiles: Vec<&Value> = docs
        .iter()
        .filter(|d| !d.is_lab() && d.value["kind"] == "SwitchProfile")
        .map(|d| &d.value["spec"])
        .collect();
    for family in ["onie", "ztp", "cumulus", "files"] {
        let of_family: Vec<&&Value> = profiles.iter().filter(|p| p.get(family).is_some()).collect();
        let by_serial = of_family.iter().any(|p| p["match"].get("serialNumbers").is_some());
        let default = of_family.iter().any(|p| {
            p["match"].get("models").is_some()
                && p["match"].get("serialNumbers").is_none()
                && p["match"].get("macAddresses").is_none()
        });
        assert!(
            by_serial && default,
            "examples/switchprofiles: {family} needs a serial-specific profile and a model default"
        );
    }
}

/// (kind, name, key) of every reference inside `v`.
fn collect_refs(v: &Value, out: &mut Vec<(&'static str, String, Option<String>)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let kind = match k.as_str() {
                    "osImageRef" => Some("OsImage"),
                    "configMapKeyRef" | "caBundleRef" => Some("ConfigMap"),
                    "secretKeyRef" | "headersSecretRef" | "credentialsSecretRef" | "tokenSecretRef" => {
                        Some("Secret")
                    }
                    _ => None,
                };
                // A Switch names its install image by name alone.
                if let ("osImage", Some(name)) = (k.as_str(), v.as_str()) {
                    out.push(("OsImage", name.to_owned(), None));
                    continue;
                }
                match (kind, v["name"].as_str()) {
                    (Some(kind), Some(name)) => {
                        out.push((kind, name.to_owned(), v["key"].as_str().map(str::to_owned)))
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

pub(crate) struct ExampleDoc {
    pub(crate) file: std::path::PathBuf,
    pub(crate) index: usize,
    pub(crate) value: Value,
}

impl ExampleDoc {
    fn is_lab(&self) -> bool {
        let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
        self.file.starts_with(lab)
    }
}

/// Every non-empty YAML document under `examples/`, in file order.
pub(crate) fn example_documents() -> Vec<ExampleDoc> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read examples").flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read example");
        for (index, doc) in yaml_serde::Deserializer::from_str(&text).enumerate() {
            let value: Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !value.is_null() {
                docs.push(ExampleDoc { file: f.clone(), index, value });
            }
        }
    }
    docs
}

#[tokio::test]
async fn osimage_cel_rules_reject_bad_input() {
    let t = support::kube_test("crd-osimage-cel").await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);

    let mut bad_sha = good_image_spec();
    bad_sha["sha256"] = json!("7C0A9F3B5E4D2C1A0F9E8D7C6B5A49382716F5E4D3C2B1A0F9E8D7C6B5A49382");
    let msg = rejected(&api, osimage("bad-sha", bad_sha)).await;
    assert!(msg.contains("sha256 must be 64 lowercase hexadecimal digits"), "{msg}");

    let mut two_sources = good_image_spec();
    two_sources["source"]["s3"] = json!({"bucket": "images", "key": "x.bin"});
    let msg = rejected(&api, osimage("two-sources", two_sources)).await;
    assert!(msg.contains("source must set exactly one of url or s3"), "{msg}");

    let mut no_source = good_image_spec();
    no_source["source"] = json!({});
    let msg = rejected(&api, osimage("no-source", no_source)).await;
    assert!(msg.contains("source must set exactly one of url or s3"), "{msg}");

    for (field, value) in
        [("platform", "../etc"), ("version", "5.14/../.."), ("filename", ".."), ("platform", "a\u{7}b")]
    {
        let mut spec = good_image_spec();
        spec[field] = json!(value);
        let msg = rejected(&api, osimage("hostile-name", spec)).await;
        assert!(msg.contains(&format!("{field} must be a safe path segment")), "{field}={value:?}: {msg}");
    }

    let mut bad_scheme = good_image_spec();
    bad_scheme["source"]["url"]["url"] = json!("ftp://images.example.net/x.bin");
    let msg = rejected(&api, osimage("bad-scheme", bad_scheme)).await;
    assert!(msg.contains("url must start with http://, https:// or file://"), "{msg}");

    // And the good one is accepted, with defaults filled in by the schema-less serde defaults.
    let ok: OsImage = serde_json::from_value(osimage("good", good_image_spec())).expect("parse");
    let created = api.create(&PostParams::default(), &ok).await.expect("valid OsImage accepted");
    assert!(created.spec.firmware_image);
}

#[tokio::test]
async fn switchprofile_cel_rules_reject_bad_input() {
    let t = support::kube_test("crd-profile-cel").await;
    let api: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);

    // `match` written but empty is a mistake; left out, the profile is for pinned Switches only.
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        &t.namespace,
        &kube::api::ApiResource::erase::<SwitchProfile>(&()),
    );
    let msg = rejected(&raw, profile("empty-match", json!({"match": {}, "hostname": "leaf01"}))).await;
    assert!(msg.contains("match needs at least one of serialNumbers, macAddresses or models"), "{msg}");
    let pinned_only: SwitchProfile =
        serde_json::from_value(profile("pinned-only", json!({"hostname": "leaf01"}))).expect("profile");
    api.create(&PostParams::default(), &pinned_only).await.expect("a profile without match is accepted");

    let msg =
        rejected(&api, profile("bad-mac", json!({"match": {"macAddresses": ["0c:42:a1:00:00"]}}))).await;
    assert!(msg.contains("MAC addresses must be six hex pairs"), "{msg}");

    let msg = rejected(&api, profile("bad-serial", json!({"match": {"serialNumbers": ["../MT1234"]}}))).await;
    assert!(msg.contains("serial numbers must be a safe path segment"), "{msg}");

    let msg = rejected(
        &api,
        profile("bad-file", json!({"match": {"models": ["x"]}, "files": {"../startup": {"inline": "x"}}})),
    )
    .await;
    assert!(msg.contains("file names must be a safe path segment"), "{msg}");

    let msg = rejected(
        &api,
        profile(
            "two-contents",
            json!({"match": {"models": ["x"]}, "files": {"startup": {"inline": "x", "configMapKeyRef": {"name": "c", "key": "k"}}}}),
        ),
    )
    .await;
    assert!(
        msg.contains("exactly one of inline, configMapKeyRef, secretKeyRef or osImageRef must be set"),
        "{msg}"
    );

    let msg = rejected(
        &api,
        profile(
            "image-template",
            json!({"match": {"models": ["x"]}, "files": {"img": {"osImageRef": {"name": "nvos"}, "template": true}}}),
        ),
    )
    .await;
    assert!(msg.contains("an osImageRef cannot be a template"), "{msg}");

    let msg = rejected(
        &api,
        profile(
            "no-content",
            json!({"match": {"models": ["x"]}, "ztp": {"sections": [{"kind": "commands-list"}]}}),
        ),
    )
    .await;
    assert!(
        msg.contains("commands-list, startup-file and provisioning-script sections need content"),
        "{msg}"
    );

    let msg = rejected(
        &api,
        profile("image-no-ref", json!({"match": {"models": ["x"]}, "ztp": {"sections": [{"kind": "image", "content": {"inline": "x"}}]}})),
    )
    .await;
    assert!(msg.contains("an image section needs content.osImageRef (install) or uninstall: true"), "{msg}");
}

/// `spec.sonic` takes SONiC's plugins only: an NVOS kind there (sent as raw JSON, as `kubectl
/// apply` would: our own types refuse to build it), two plugins in one section, and each plugin's
/// required keys are refused by the apiserver with a message that says what to do.
#[tokio::test]
async fn sonic_sections_are_sonics_plugins_or_refused() {
    let t = support::kube_test("crd-sonic-cel").await;
    let api: Api<SwitchProfile> = Api::namespaced(t.client.clone(), &t.namespace);
    let sonic = |sections: Value| json!({"match": {"models": ["x"]}, "sonic": {"sections": sections}});

    let ar = kube::discovery::ApiResource::erase::<SwitchProfile>(&());
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(t.client.clone(), &t.namespace, &ar);
    let nvos_kind = profile(
        "nvos-kind",
        sonic(json!([{"kind": "image", "content": {"osImageRef": {"name": "sonic-202411"}}}])),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(nvos_kind).expect("dynamic object");
    let msg = match raw.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) if s.code == 422 => s.message,
        other => panic!("an NVOS section under sonic was not refused: {other:?}"),
    };
    assert!(msg.contains("a SONiC section sets exactly one of firmware, configdbJson"), "{msg}");
    assert!(msg.contains("those are NVOS sections, in spec.ztp"), "{msg}");

    let two =
        sonic(json!([{"snmp": {"communityRo": "x"}, "connectivityCheck": {"pingHosts": ["192.0.2.1"]}}]));
    let msg = rejected(&api, profile("two-plugins", two)).await;
    assert!(msg.contains("a SONiC section sets exactly one of"), "{msg}");

    for (name, section, expected) in [
        ("empty-firmware", json!({"firmware": {}}), "firmware needs install, remove or both"),
        ("empty-snmp", json!({"snmp": {}}), "snmp needs communityRo or snmpLocation"),
        (
            "no-hosts",
            json!({"connectivityCheck": {"retryCount": 3}}),
            "connectivityCheck needs pingHosts or ping6Hosts",
        ),
        (
            "image-config",
            json!({"configdbJson": {"content": {"osImageRef": {"name": "sonic-202411"}}}}),
            "configdbJson.content is a config_db.json text, not an osImageRef",
        ),
        (
            "bad-mode",
            json!({"download": {"files": [{"destination": "/etc/motd", "permissions": "999", "content": {"inline": "x"}}]}}),
            "permissions",
        ),
        (
            "relative",
            json!({"download": {"files": [{"destination": "etc/motd", "content": {"inline": "x"}}]}}),
            "destination",
        ),
        ("bad-name", json!({"plugin": {"name": "Set Motd", "script": {"inline": "#!/bin/sh\n"}}}), "name"),
    ] {
        let msg = rejected(&api, profile(name, sonic(json!([section])))).await;
        assert!(msg.contains(expected), "{name}: {msg}");
    }
}

#[tokio::test]
async fn status_is_a_subresource_and_columns_render() {
    let t = support::kube_test("crd-status").await;
    let api: Api<OsImage> = Api::namespaced(t.client.clone(), &t.namespace);
    let obj: OsImage = serde_json::from_value(osimage("cumulus", good_image_spec())).expect("parse");
    api.create(&PostParams::default(), &obj).await.expect("create");

    let status = json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage",
        "status": {
            "observedGeneration": 1, "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Verified", "message": "stored",
                            "lastTransitionTime": "2026-11-23T00:00:00Z", "observedGeneration": 1}],
            "artifact": {"path": "cumulus-linux/5.14.0/cumulus-linux-5.14.0-mlx-amd64.bin", "sha256": SHA, "size": 1048576},
            "progressText": "1.0 MiB"
        }
    });
    api.patch_status("cumulus", &PatchParams::apply("ztp-e2e").force(), &Patch::Apply(&status))
        .await
        .expect("patch status");

    // Writes to the main resource cannot change status.
    let sneaky = json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}});
    api.patch("cumulus", &PatchParams::default(), &Patch::Merge(&sneaky)).await.expect("merge patch");
    let got = api.get("cumulus").await.expect("get");
    assert_eq!(got.status.as_ref().and_then(|s| s.phase), Some(ztp_operator::api::OsImagePhase::Ready));
    assert_eq!(got.labels().get("x").map(String::as_str), Some("y"));

    let table =
        table(&t.client, &format!("/apis/ztp.netops.dev/v1alpha1/namespaces/{}/osimages", t.namespace)).await;
    let names: Vec<_> =
        table["columnDefinitions"].as_array().expect("columns").iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, ["Name", "Platform", "Version", "Phase", "Progress", "Size", "Age", "Message"]);
    let wide: Vec<_> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) > 0)
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(wide, ["Size", "Message"], "the byte count only in -o wide: Progress shows the size");
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "cumulus");
    assert_eq!(cells[1], "cumulus-linux");
    assert_eq!(cells[2], "5.14.0");
    assert_eq!(cells[3], "Ready");
    assert_eq!(cells[4], "1.0 MiB");
    assert_eq!(cells[5], 1048576);
}

/// A Switch's serial cannot change (CEL transition rule `self == oldSelf`, which only a real
/// apiserver evaluates), a bad MAC is refused, and the fleet columns render its status as the
/// device server will write it.
#[tokio::test]
async fn switch_serial_is_immutable_and_columns_render() {
    let t = support::kube_test("crd-switch").await;
    let api: Api<Switch> = Api::namespaced(t.client.clone(), &t.namespace);
    let switch = |name: &str, spec: Value| json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "Switch", "metadata": {"name": name}, "spec": spec});
    let msg =
        rejected(&api, switch("bad-mac", json!({"serialNumber": "SN1", "macAddress": "0c:42:a1"}))).await;
    assert!(msg.contains("macAddress must be six hex pairs"), "{msg}");
    let msg = rejected(&api, switch("bad-serial", json!({"serialNumber": "../SN1"}))).await;
    assert!(msg.contains("serialNumber must be a safe path segment"), "{msg}");

    let leaf: Switch = serde_json::from_value(switch(
        "leaf-17",
        json!({"serialNumber": "MT2245X01234", "hostname": "leaf-17", "variables": {"loopback": "10.0.0.17"}}),
    ))
    .expect("parse");
    api.create(&PostParams::default(), &leaf).await.expect("create");
    let change = json!({"spec": {"serialNumber": "MT2245X09999"}});
    match api.patch("leaf-17", &PatchParams::default(), &Patch::Merge(&change)).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(s.message.contains("serialNumber is immutable"), "{}", s.message);
        }
        other => panic!("the serial changed: {other:?}"),
    }
    let hold = json!({"spec": {"hold": true, "reprovision": "rma-4711"}});
    api.patch("leaf-17", &PatchParams::default(), &Patch::Merge(&hold)).await.expect("other fields change");

    let status = json!({
        "apiVersion": "ztp.netops.dev/v1alpha1", "kind": "Switch",
        "status": {
            "observedGeneration": 2, "phase": "Held",
            "matchedProfile": {"name": "leaf", "namespace": t.namespace, "by": "Serial"},
            "device": {"family": "nvos", "model": "MSN2410", "address": "192.0.2.17"},
            "lastSeen": "2026-11-30T10:00:00Z",
            "attempts": [{"started": "2026-11-30T09:58:00Z", "trigger": "Discovered",
                          "stages": [{"name": "ConfigServed", "time": "2026-11-30T09:58:00Z"}]}]
        }
    });
    api.patch_status("leaf-17", &PatchParams::apply("ztp-e2e").force(), &Patch::Apply(&status))
        .await
        .expect("patch status");
    let table =
        table(&t.client, &format!("/apis/ztp.netops.dev/v1alpha1/namespaces/{}/switches", t.namespace)).await;
    let cells = table["rows"][0]["cells"].as_array().expect("cells");
    let shown = ["leaf-17", "MT2245X01234", "leaf-17", "MSN2410", "leaf", "Held", "192.0.2.17"];
    assert_eq!(cells[..7], shown.map(|c| json!(c)), "{cells:?}");
}

/// What `kubectl get` asks for: the server-side Table rendering with the printer columns.
async fn table(client: &Client, path: &str) -> Value {
    let req = http::Request::get(path)
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("request");
    client.request::<Value>(req).await.expect("table")
}
