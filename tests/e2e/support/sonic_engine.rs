//! What SONiC's ZTP engine does with a ZTP JSON before it runs anything (docs/protocols.md §3.3),
//! so a test can check that what we serve is what a SONiC switch runs, not what we assume:
//! sections in lexical order of their keys; each resolved to a plugin — its `plugin` object
//! (`dynamic-url` > `url` > `name`), or a built-in named after the key without its `NN-` prefix
//! — or FAILED ("Unable to find or download requested plugin"); each built-in's required keys;
//! and every URL it would download, to be fetched with its curl (no redirects, `-f`).

use serde_json::Value;

/// The plugins a stock SONiC image ships.
pub const BUILTIN_PLUGINS: [&str; 7] =
    ["firmware", "configdb-json", "connectivity-check", "snmp", "graphservice", "download", "test-plugin"];

/// Keys under `ztp` that are not sections.
const GLOBAL_KEYS: [&str; 13] = [
    "status",
    "timestamp",
    "ztp-json-version",
    "ztp-json-source",
    "restart-ztp-on-failure",
    "restart-ztp-no-config",
    "config-fallback",
    "url",
    "dynamic-url",
    "ignore-result",
    "reboot-on-success",
    "reboot-on-failure",
    "halt-on-failure",
];

/// One download the engine would make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// The section key.
    pub section: String,
    /// What it is: `plugin`, `image`, `pre-check`, `config_db.json`, `file`.
    pub what: &'static str,
    pub url: String,
}

/// The downloads the engine would make for `doc`, in order; or why a section would FAIL without
/// running (its message names the section).
pub fn plan(doc: &Value) -> Result<Vec<Download>, String> {
    let ztp = doc.get("ztp").and_then(Value::as_object).ok_or("the document has no top-level ztp object")?;
    let mut keys: Vec<&String> = ztp.keys().filter(|k| !GLOBAL_KEYS.contains(&k.as_str())).collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let section = ztp[key].as_object().ok_or_else(|| format!("section {key} is not an object"))?;
        let mut dl = |what: &'static str, url: String| {
            out.push(Download { section: key.clone(), what, url });
        };
        let builtin = match section.get("plugin") {
            Some(Value::Object(p)) => match p.get("dynamic-url").or_else(|| p.get("url")) {
                Some(u) => {
                    dl("plugin", url_of(u).ok_or_else(|| format!("section {key}: plugin URL unreadable"))?);
                    None
                }
                None => p.get("name").and_then(Value::as_str).map(str::to_owned),
            },
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => return Err(format!("section {key}: plugin is neither a name nor an object")),
            None => Some(strip_number(key).to_owned()),
        };
        let Some(name) = builtin else { continue };
        if !BUILTIN_PLUGINS.contains(&name.as_str()) {
            return Err(format!("section {key}: Unable to find or download requested plugin ({name})"));
        }
        let need_url = |v: Option<&Value>, what: &str| -> Result<String, String> {
            v.and_then(url_of)
                .ok_or_else(|| format!("section {key} ({name}): {what} needs url or dynamic-url"))
        };
        match name.as_str() {
            "firmware" => {
                let (install, remove) = (section.get("install"), section.get("remove"));
                if install.is_none() && remove.is_none() && section.get("upgrade-docker").is_none() {
                    return Err(format!("section {key}: firmware needs install, remove or upgrade-docker"));
                }
                if let Some(r) = remove {
                    if r.get("version").and_then(Value::as_str).is_none() {
                        return Err(format!("section {key}: firmware.remove needs a version"));
                    }
                    if let Some(p) = r.get("pre-check") {
                        dl("pre-check", need_url(p.get("url").or(p.get("dynamic-url")), "remove.pre-check")?);
                    }
                }
                if let Some(i) = install {
                    if let Some(p) = i.get("pre-check") {
                        dl(
                            "pre-check",
                            need_url(p.get("url").or(p.get("dynamic-url")), "install.pre-check")?,
                        );
                    }
                    dl("image", need_url(i.get("dynamic-url").or(i.get("url")), "install")?);
                }
            }
            "configdb-json" => dl(
                "config_db.json",
                need_url(section.get("dynamic-url").or(section.get("url")), "configdb-json")?,
            ),
            "connectivity-check"
                if section.get("ping-hosts").is_none() && section.get("ping6-hosts").is_none() =>
            {
                return Err(format!("section {key}: connectivity-check needs ping-hosts or ping6-hosts"));
            }
            "snmp" if section.get("community-ro").is_none() && section.get("snmp-location").is_none() => {
                return Err(format!("section {key}: snmp needs community-ro or snmp-location"));
            }
            "download" => {
                let files = section
                    .get("files")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("section {key}: download needs files"))?;
                for f in files {
                    dl("file", need_url(f.get("dynamic-url").or(f.get("url")), "a download file")?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether the run leaves the switch configured, or at least does not start ZTP over forever:
/// `restart-ztp-no-config` is false, or a `configdb-json` section writes `/etc/sonic/config_db.json`
/// (its `clear-config` defaults to true).
pub fn ends_configured(doc: &Value) -> bool {
    let ztp = &doc["ztp"];
    if ztp.get("restart-ztp-no-config") == Some(&Value::Bool(false)) {
        return true;
    }
    ztp.as_object().is_some_and(|o| {
        o.iter().any(|(k, s)| {
            strip_number(k) == "configdb-json" && s.get("clear-config") != Some(&Value::Bool(false))
        })
    })
}

/// A `url` object's source: a string, or `{"source": …}`. A `dynamic-url` is not resolved here.
fn url_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("source").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The key without a leading `NN-`.
fn strip_number(key: &str) -> &str {
    match key.split_once('-') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => key,
    }
}

#[test]
fn the_engine_model_refuses_nvos_sections_and_finds_sonics() {
    let nvos = serde_json::json!({"ztp": {
        "01-image": {"install": {"url": "http://s/i.bin"}},
        "02-provisioning-script": {"url": "http://s/p.sh"}
    }});
    let e = plan(&nvos).expect_err("NVOS kinds");
    assert!(e.contains("01-image") && e.contains("Unable to find"), "{e}");
    let sonic = serde_json::json!({"ztp": {
        "02-configdb-json": {"url": "http://s/c.json"},
        "01-firmware": {"install": {"url": "http://s/i.bin", "pre-check": {"url": "http://s/pc"}}},
        "03-report": {"plugin": {"url": "http://s/r.sh"}},
        "04-snmp": {"community-ro": "x"},
        "restart-ztp-no-config": true
    }});
    let urls: Vec<String> = plan(&sonic).expect("runs").into_iter().map(|d| d.url).collect();
    assert_eq!(urls, ["http://s/pc", "http://s/i.bin", "http://s/c.json", "http://s/r.sh"]);
    assert!(ends_configured(&sonic));
    assert!(!ends_configured(&serde_json::json!({"ztp": {"01-snmp": {"community-ro": "x"}}})));
    assert!(plan(&serde_json::json!({"ztp": {"01-snmp": {}}})).is_err());
}
