use serde_json::json;

use super::*;

/// A passing and a failing `self` for every distinct CEL rule of our CRDs, by rule text. A new
/// rule without samples here fails `every_rule_in_our_crds_is_evaluated`.
fn samples(rule: &str) -> Option<(Value, Value)> {
    let seg_fail = json!("../x");
    Some(match rule {
        r if r.starts_with("!(has(self.osImageRef) && has(self.template)") => {
            (json!({"inline": "x", "template": true}), json!({"osImageRef": {"name": "a"}, "template": true}))
        }
        r if r.starts_with("!(self.kind in ['commands-list'") => {
            (json!({"kind": "commands-list", "content": {"inline": "x"}}), json!({"kind": "commands-list"}))
        }
        "!has(self.content.osImageRef)" => {
            (json!({"content": {"inline": "x"}}), json!({"content": {"osImageRef": {"name": "a"}}}))
        }
        r if r.starts_with("[has(self.firmware)") => (json!({"snmp": {"communityRo": "x"}}), json!({})),
        r if r.starts_with("[has(self.inline)") => {
            (json!({"inline": "x"}), json!({"inline": "x", "secretKeyRef": {"name": "s", "key": "k"}}))
        }
        r if r.starts_with("(has(self.pingHosts)") => (json!({"pingHosts": ["a"]}), json!({"pingHosts": []})),
        r if r.starts_with("(has(self.serialNumbers)") => {
            (json!({"models": ["x"]}), json!({"serialNumbers": []}))
        }
        "has(self.communityRo) || has(self.snmpLocation)" => (json!({"snmpLocation": "x"}), json!({})),
        "has(self.install) || has(self.remove)" => (json!({"remove": {}}), json!({})),
        "has(self.url) != has(self.s3)" => (json!({"s3": {}}), json!({"url": {}, "s3": {}})),
        "has(self.interface) != has(self.customField)" => {
            (json!({"interface": "eth0"}), json!({"interface": "eth0", "customField": "mac"}))
        }
        "has(self.role) || has(self.platform)" => {
            (json!({"role": "leaf", "profile": "p"}), json!({"profile": "p"}))
        }
        r if r.starts_with("self.matches('^https?://") => {
            (json!("https://nautobot.example.net/x"), json!("https://user@nautobot.example.net"))
        }
        r if r.starts_with("self.all(k, self[k].size() <= 128") => {
            (json!({"nvidia-cumulus": "cumulus-linux"}), json!({"sonic": "../x"}))
        }
        r if r.starts_with("self.all(m, m.matches(") => (
            json!(["0c:42:a1:00:00:01", "0C-42-A1-00-00-02"]),
            json!(["0c:42:a1:00:00:01", "0c42.a100.0001"]),
        ),
        r if r.starts_with("self.matches('^[0-9A-Fa-f]{2}") => {
            (json!("0C-42-A1-00-00-02"), json!("0c42.a100.0001"))
        }
        r if r.starts_with("self.all(x, x.size() <= 128") => {
            (json!(["a.bin", "b"]), json!(["a.bin", seg_fail]))
        }
        r if r.starts_with("self.kind != 'image'") => (
            json!({"kind": "image", "uninstall": true}),
            json!({"kind": "image", "content": {"inline": "x"}}),
        ),
        "self.matches('^[0-9a-f]{64}$')" => (json!("0a".repeat(32)), json!("0A".repeat(32))),
        r if r.starts_with("self.size() <= 128") => (json!("5.14.0"), seg_fail),
        r if r.starts_with("self.startsWith('http://')") => (json!("file:///x"), json!("ftp://h/x")),
        r if r.starts_with("!(self.lowerAscii() in [") => {
            (json!("manifest.json.bak"), json!("Manifest.JSON"))
        }
        _ => return None,
    })
}

#[test]
fn every_rule_in_our_crds_is_evaluated_with_a_failing_and_a_passing_sample() {
    let rules = all_rules();
    assert!(rules.len() >= 25, "{} rules found", rules.len());
    for (kind, path, rule) in &rules {
        if is_transition_rule(rule) {
            // Only immutability, which a create (or a manifest read once) cannot break.
            assert_eq!(rule.rule, "self == oldSelf", "{kind} {path}: transition rules are not evaluated");
            assert_eq!(evaluate(rule, &json!("anything"), path), None);
            continue;
        }
        let (pass, fail) =
            samples(&rule.rule).unwrap_or_else(|| panic!("no samples for {kind} {path}: {}", rule.rule));
        assert_eq!(evaluate(rule, &pass, path), None, "{kind} {path}: {} on {pass}", rule.rule);
        let e = evaluate(rule, &fail, path)
            .unwrap_or_else(|| panic!("{kind} {path}: {} held on {fail}", rule.rule));
        let message = rule.message.clone().unwrap_or_default();
        assert!(e.message.ends_with(&message) && !message.is_empty(), "{kind} {path}: {e}");
    }
}

/// Every schema keyword our CRDs use is one the validator checks (or a documentation keyword):
/// a keyword added to a CRD later cannot be silently ignored.
#[test]
fn the_validator_knows_every_keyword_our_crds_use() {
    const CHECKED: &[&str] = &[
        "type",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "pattern",
        "format",
        "nullable",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
    ];
    const DOCS: &[&str] = &["description", "title", "default"];
    fn walk(s: &Value, out: &mut HashSet<String>) {
        let Some(map) = s.as_object() else { return };
        out.extend(map.keys().cloned());
        for p in map.get("properties").and_then(Value::as_object).into_iter().flat_map(|p| p.values()) {
            walk(p, out);
        }
        for k in ["items", "additionalProperties"] {
            if let Some(v) = map.get(k) {
                walk(v, out);
            }
        }
    }
    let mut used = HashSet::new();
    for s in kinds().by_kind.values() {
        walk(&serde_json::to_value(s).expect("schema serializes"), &mut used);
    }
    let unknown: Vec<_> =
        used.iter().filter(|k| !CHECKED.contains(&k.as_str()) && !DOCS.contains(&k.as_str())).collect();
    assert!(unknown.is_empty(), "keywords the validator does not check: {unknown:?}");
    let formats: HashSet<String> = {
        let text = serde_json::to_string(&kinds().by_kind).expect("serializes");
        let re = regex::Regex::new(r#""format":"([^"]*)""#).expect("regex");
        re.captures_iter(&text).map(|c| c[1].to_owned()).collect()
    };
    assert!(formats.iter().all(|f| ["int32", "int64", "date-time"].contains(&f.as_str())), "{formats:?}");
}

fn image(spec: Value) -> Value {
    json!({"apiVersion": "ztp.netops.dev/v1alpha1", "kind": "OsImage", "metadata": {"name": "a"}, "spec": spec})
}

fn good_spec() -> Value {
    json!({"platform": "nvos", "version": "1.0", "sha256": "0".repeat(64), "source": {"url": {"url": "http://h/x.bin"}}})
}

fn messages(doc: &Value) -> Vec<String> {
    match validate(doc) {
        Ok(()) => vec![],
        Err(e @ Invalid::UnknownKind { .. }) => vec![e.to_string()],
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn what_the_crd_refuses_is_refused() {
    assert_eq!(messages(&image(good_spec())), Vec::<String>::new());
    let mut both = good_spec();
    both["source"]["s3"] = json!({"bucket": "b", "key": "k"});
    assert_eq!(
        messages(&image(both)),
        ["spec.source: Invalid value: \"object\": source must set exactly one of url or s3"]
    );
    let mut upper = good_spec();
    upper["sha256"] = json!("A".repeat(64));
    assert_eq!(messages(&image(upper)).len(), 1);
    let mut other = image(good_spec());
    other["apiVersion"] = json!("ztp.netops.dev/v1beta1");
    assert!(
        messages(&other)[0]
            .starts_with("no kind \"OsImage\" is served in version \"ztp.netops.dev/v1beta1\"")
    );
    let mut unknown = good_spec();
    unknown["platfrom"] = json!("x");
    assert_eq!(messages(&image(unknown)), ["unknown field \"spec.platfrom\""]);
    let mut missing = good_spec();
    missing.as_object_mut().map(|m| m.remove("sha256"));
    assert_eq!(messages(&image(missing)), ["spec.sha256: Required value"]);
    let mut policy = good_spec();
    policy["deletionPolicy"] = json!("Keep");
    assert_eq!(
        messages(&image(policy)),
        ["spec.deletionPolicy: Unsupported value: \"Keep\": supported values: \"Delete\", \"Retain\""]
    );
    let mut typed = good_spec();
    typed["version"] = json!(1);
    assert_eq!(messages(&image(typed)).len(), 1);
    let mut nameless = image(good_spec());
    nameless["metadata"] = json!({"name": "Not_A_Name"});
    assert_eq!(messages(&nameless).len(), 1);
}

#[test]
fn reserved_names_are_refused_in_every_segment_in_any_case() {
    for field in ["platform", "version", "filename"] {
        for name in [
            "manifest.json",
            "MANIFEST.json",
            "Manifest.Json",
            "ztp-snapshots",
            "ZTP-Snapshots",
            ".tmp",
            ".STATUS",
            ".manifest.lock",
        ] {
            let mut spec = good_spec();
            spec[field] = json!(name);
            let m = messages(&image(spec));
            assert!(
                !m.is_empty() && m.iter().all(|m| m.starts_with(&format!("spec.{field}: "))),
                "{field}={name}: {m:?}"
            );
        }
        let mut spec = good_spec();
        spec[field] = json!("manifest.json.d");
        assert_eq!(messages(&image(spec)), Vec::<String>::new());
    }
}

#[test]
fn every_example_manifest_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for dir in ["lab", "osimages", "switchprofiles"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for doc in yaml_serde::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
                if is_ours(&v) {
                    seen += 1;
                    assert_eq!(validate(&v), Ok(()), "{}", path.display());
                }
            }
        }
    }
    assert!(seen >= 10, "{seen} objects");
}
