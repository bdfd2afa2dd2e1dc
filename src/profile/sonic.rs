//! The SONiC ZTP JSON: what SONiC's ZTP engine runs (docs/protocols.md §3.3).
//!
//! Each section key is `NN-<plugin>` (the engine strips `NN-` to find its built-in plugin:
//! `firmware`, `configdb-json`, `connectivity-check`, `snmp`, `download`); a script of ours is
//! the section's `"plugin": {"url": …}`. Everything a section downloads is a URL on this server:
//! an image's URL, or a text part rendered for the device at
//! `/sonic/{serial}/sections/{key}/{part}` (the part names are [`part`]'s).
//!
//! A switch that asks for `/sonic/ztp.json` without saying its serial number gets
//! [`chain_document`]: a `dynamic-url` back to `/sonic/<its serial>/ztp.json`, which its engine
//! resolves from the EEPROM, so what we serve and what we parse name the device the same way.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};

use super::{
    render::{RenderContext, RenderError, render_text_named},
    snapshot::{ImageRef, Resolved, Snapshot, SonicSectionSnapshot, SonicSnapshot},
};
use crate::api::{Content, SonicSection};

/// The names of a section's parts (what it downloads).
pub mod part {
    /// `firmware.install`'s image.
    pub const INSTALL: &str = "install";
    /// `firmware.install.pre-check`'s script.
    pub const INSTALL_PRE_CHECK: &str = "install-pre-check";
    /// `firmware.remove.pre-check`'s script.
    pub const REMOVE_PRE_CHECK: &str = "remove-pre-check";
    /// `configdb-json`'s file.
    pub const CONFIG_DB: &str = "config_db.json";
    /// A plugin section's script.
    pub const PLUGIN: &str = "plugin";

    /// The `n`-th (0-based) file of a `download` section: `file-1`, `file-2`, …
    pub fn file(n: usize) -> String {
        format!("file-{}", n + 1)
    }
}

/// The key of section `index` (0-based): `01-firmware`, `02-configdb-json`, …, so lexical order
/// is list order.
pub fn section_key(index: usize, section: &SonicSection) -> String {
    format!("{:02}-{}", index + 1, section.plugin_name().unwrap_or("plugin"))
}

/// What a declared section downloads, by part name; and the section with those contents removed
/// (they are resolved into the snapshot's parts). The firmware image is an OsImage reference,
/// returned as a content with `osImageRef`.
pub fn contents(section: &SonicSection) -> (SonicSection, Vec<(String, Content)>) {
    let mut s = section.clone();
    let mut parts = Vec::new();
    let take = |name: &str, c: &mut Content| (name.to_owned(), std::mem::take(c));
    if let Some(f) = &mut s.firmware {
        if let Some(i) = &mut f.install {
            let image = Content { os_image_ref: Some(i.image.clone()), ..Default::default() };
            parts.push((part::INSTALL.to_owned(), image));
            parts.extend(i.pre_check.as_mut().map(|c| take(part::INSTALL_PRE_CHECK, c)));
        }
        parts.extend(
            f.remove.as_mut().and_then(|r| r.pre_check.as_mut()).map(|c| take(part::REMOVE_PRE_CHECK, c)),
        );
    }
    if let Some(c) = &mut s.configdb_json {
        parts.push(take(part::CONFIG_DB, &mut c.content));
    }
    if let Some(d) = &mut s.download {
        for (n, f) in d.files.iter_mut().enumerate() {
            parts.push(take(&part::file(n), &mut f.content));
        }
    }
    if let Some(p) = &mut s.plugin {
        parts.push(take(part::PLUGIN, &mut p.script));
    }
    (s, parts)
}

/// Why a resolved part cannot serve its purpose (a text where an image is needed, …); `None` when
/// it can. Checked when the snapshot is built, so such a profile is never Ready nor served.
pub fn part_problem(name: &str, resolved: &Resolved) -> Option<&'static str> {
    match (name, resolved) {
        (part::INSTALL, Resolved::Text(_)) => Some("firmware.install.image must be an OsImage"),
        (part::CONFIG_DB, Resolved::Image(_)) => Some("configdbJson.content must be text, not an OsImage"),
        (part::CONFIG_DB, Resolved::Text(t)) if !t.template => {
            json_object(&t.text).err().map(|_| "configdbJson.content is not a JSON object")
        }
        _ => None,
    }
}

fn json_object(text: &str) -> Result<(), String> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(_)) => Ok(()),
        Ok(_) => Err("a config_db.json must be a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// How the document's URLs are made: a text part of a section (`key`, `part`), and an image.
pub struct Urls<'a> {
    pub part: &'a dyn Fn(&str, &str) -> String,
    pub image: &'a dyn Fn(&ImageRef) -> String,
}

/// The SONiC ZTP JSON (`{"ztp": {"01-firmware": {…}, …}}`) for the device of `ctx`.
pub fn document(
    ctx: &RenderContext,
    snapshot: &Snapshot,
    sonic: &SonicSnapshot,
    urls: &Urls,
) -> Result<Json, RenderError> {
    let mut top = Map::new();
    for (i, s) in sonic.sections.iter().enumerate() {
        let key = section_key(i, &s.section);
        let obj = section_json(ctx, snapshot, s, &key, urls)?;
        top.insert(key, Json::Object(obj));
    }
    // SONiC's default (true) loops a profile that writes no /etc/sonic/config_db.json: ours is false.
    top.insert("restart-ztp-no-config".into(), json!(sonic.restart_ztp_no_config.unwrap_or(false)));
    if let Some(v) = sonic.restart_ztp_on_failure {
        top.insert("restart-ztp-on-failure".into(), json!(v));
    }
    if let Some(v) = sonic.config_fallback {
        top.insert("config-fallback".into(), json!(v));
    }
    Ok(json!({ "ztp": top }))
}

/// What a switch that did not say its serial number gets at `/sonic/ztp.json`: a document whose
/// `dynamic-url` makes its engine fetch `/sonic/<serial>/ztp.json` with the serial from its EEPROM.
pub fn chain_document(base: &str) -> Json {
    json!({
        "ztp": {
            "dynamic-url": {
                "source": {
                    "prefix": format!("{base}/sonic/"),
                    "identifier": "serial-number",
                    "suffix": "/ztp.json"
                }
            }
        }
    })
}

/// One section object.
fn section_json(
    ctx: &RenderContext,
    snapshot: &Snapshot,
    s: &SonicSectionSnapshot,
    key: &str,
    urls: &Urls,
) -> Result<Map<String, Json>, RenderError> {
    let d = &s.section;
    let what = format!("sonic.{key}");
    let mut obj = Map::new();
    put(&mut obj, "description", d.description.as_ref().map(|v| json!(v)));
    put(&mut obj, "ignore-result", d.ignore_result.map(Json::from));
    put(&mut obj, "halt-on-failure", d.halt_on_failure.map(Json::from));
    put(&mut obj, "reboot-on-success", d.reboot_on_success.map(Json::from));
    put(&mut obj, "reboot-on-failure", d.reboot_on_failure.map(Json::from));

    // The URL of part `name`: the image's URL (for `install`, the one the device's Switch pins,
    // if any), or this server's part route for text.
    let pinned = ctx.pinned_install();
    let url = |name: &str| -> Result<String, RenderError> {
        match s.parts.get(name) {
            Some(Resolved::Text(_)) => Ok((urls.part)(key, name)),
            Some(Resolved::Image(k)) => {
                let k = pinned.filter(|_| name == part::INSTALL).unwrap_or(k.as_str());
                snapshot.images.get(k).map(|img| (urls.image)(img)).ok_or_else(|| RenderError::MissingImage {
                    profile: ctx.profile_name(),
                    what: format!("{what}.{name}"),
                    image: k.to_owned(),
                })
            }
            None => Err(RenderError::InvalidSection {
                profile: ctx.profile_name(),
                what: what.clone(),
                reason: format!("{name} was not resolved"),
            }),
        }
    };
    let pre_check = |name: &str| -> Result<Option<Json>, RenderError> {
        Ok(match s.parts.contains_key(name) {
            true => Some(json!({ "url": url(name)? })),
            false => None,
        })
    };

    if let Some(f) = &d.firmware {
        if let Some(i) = &f.install {
            let mut install = Map::new();
            install.insert("url".into(), json!(url(part::INSTALL)?));
            // The declared version describes the profile's image, not a pinned one.
            let version = i.version.as_ref().filter(|_| pinned.is_none());
            put(&mut install, "version", version.map(|v| json!(v)));
            put(&mut install, "set-default", i.set_default.map(Json::from));
            put(&mut install, "set-next-boot", i.set_next_boot.map(Json::from));
            put(&mut install, "skip-reboot", i.skip_reboot.map(Json::from));
            put(&mut install, "pre-check", pre_check(part::INSTALL_PRE_CHECK)?);
            obj.insert("install".into(), Json::Object(install));
        }
        if let Some(r) = &f.remove {
            let mut remove = Map::new();
            remove.insert("version".into(), json!(r.version));
            put(&mut remove, "pre-check", pre_check(part::REMOVE_PRE_CHECK)?);
            obj.insert("remove".into(), Json::Object(remove));
        }
    }
    if let Some(c) = &d.configdb_json {
        obj.insert("url".into(), json!(url(part::CONFIG_DB)?));
        put(&mut obj, "clear-config", c.clear_config.map(Json::from));
        put(&mut obj, "save-config", c.save_config.map(Json::from));
        put(&mut obj, "overwrite-device-metadata", c.overwrite_device_metadata.map(Json::from));
    }
    if let Some(c) = &d.connectivity_check {
        put(&mut obj, "ping-hosts", (!c.ping_hosts.is_empty()).then(|| json!(c.ping_hosts)));
        put(&mut obj, "ping6-hosts", (!c.ping6_hosts.is_empty()).then(|| json!(c.ping6_hosts)));
        put(&mut obj, "ping-count", c.ping_count.map(Json::from));
        put(&mut obj, "retry-count", c.retry_count.map(Json::from));
        put(&mut obj, "retry-interval", c.retry_interval.map(Json::from));
        put(&mut obj, "deadline", c.deadline.map(Json::from));
        put(&mut obj, "timeout", c.timeout.map(Json::from));
    }
    if let Some(c) = &d.snmp {
        put(&mut obj, "community-ro", c.community_ro.as_ref().map(|v| json!(v)));
        put(&mut obj, "snmp-location", c.snmp_location.as_ref().map(|v| json!(v)));
        put(&mut obj, "restart-agent", c.restart_agent.map(Json::from));
    }
    if let Some(dl) = &d.download {
        let mut files = Vec::with_capacity(dl.files.len());
        for (n, f) in dl.files.iter().enumerate() {
            let mut file = Map::new();
            file.insert("url".into(), json!({"source": url(&part::file(n))?, "destination": f.destination}));
            put(&mut file, "permissions", f.permissions.as_ref().map(|v| json!(v)));
            files.push(Json::Object(file));
        }
        obj.insert("files".into(), Json::Array(files));
    }
    if let Some(p) = &d.plugin {
        let mut plugin = Map::new();
        plugin.insert("url".into(), json!(url(part::PLUGIN)?));
        put(&mut plugin, "args", p.args.as_ref().map(|v| json!(v)));
        put(&mut plugin, "shell", p.shell.map(Json::from));
        put(&mut plugin, "ignore-section-data", p.ignore_section_data.map(Json::from));
        obj.insert("plugin".into(), Json::Object(plugin));
    }
    Ok(obj)
}

fn put(obj: &mut Map<String, Json>, key: &str, value: Option<Json>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), v);
    }
}

/// The text of part `name` of the section whose key is `key`, rendered for the device of `ctx`;
/// `None` when there is no such section or part, or the part is an image (served by its image
/// URL). A `config_db.json` that does not render to a JSON object is an error.
pub fn part_content(
    ctx: &RenderContext,
    sonic: &SonicSnapshot,
    key: &str,
    name: &str,
) -> Result<Option<String>, RenderError> {
    let Some(section) = sections_by_key(sonic).remove(key) else { return Ok(None) };
    let Some(Resolved::Text(text)) = section.parts.get(name) else { return Ok(None) };
    let what = format!("sonic.{key}.{name}");
    let body = render_text_named(text, ctx, &what)?;
    if name == part::CONFIG_DB {
        json_object(&body).map_err(|reason| RenderError::InvalidSection {
            profile: ctx.profile_name(),
            what,
            reason,
        })?;
    }
    Ok(Some(body))
}

fn sections_by_key(sonic: &SonicSnapshot) -> BTreeMap<String, &SonicSectionSnapshot> {
    sonic.sections.iter().enumerate().map(|(i, s)| (section_key(i, &s.section), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{
            ObjectRef, SonicConfigDb, SonicConnectivityCheck, SonicDownload, SonicDownloadFile,
            SonicFirmware, SonicFirmwareInstall, SonicFirmwareRemove, SonicPlugin, SonicSnmp,
        },
        profile::{
            identity::{DeviceIdentity, Family},
            snapshot::{ProfileSnapshot, Text},
        },
    };

    const URL: &str = "http://10.0.0.1:8080";
    const IMAGE: &str = "net/sonic-202411";

    fn text(t: &str, template: bool) -> Resolved {
        Resolved::Text(Text { text: t.into(), template })
    }

    fn device() -> DeviceIdentity {
        DeviceIdentity { family: Family::Sonic, serial: Some("SN1".into()), ..Default::default() }
    }

    fn profile() -> ProfileSnapshot {
        ProfileSnapshot {
            namespace: "net".into(),
            name: "leaf".into(),
            hostname: Some("leaf01".into()),
            ..Default::default()
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            images: BTreeMap::from([(
                IMAGE.to_owned(),
                ImageRef { path: "sonic/202411/sonic-broadcom.bin".into(), sha256: "ab".repeat(32), size: 7 },
            )]),
            ..Default::default()
        }
    }

    fn declared() -> Vec<SonicSection> {
        let script = |t: &str| Content { inline: Some(t.into()), template: true, ..Default::default() };
        vec![
            SonicSection {
                description: Some("install SONiC".into()),
                firmware: Some(SonicFirmware {
                    install: Some(SonicFirmwareInstall {
                        image: ObjectRef { name: "sonic-202411".into() },
                        version: Some("SONiC-OS-202411.1".into()),
                        set_default: Some(true),
                        skip_reboot: Some(false),
                        pre_check: Some(script("#!/bin/sh\ntest -n '{{ serial }}'\n")),
                        ..Default::default()
                    }),
                    remove: Some(SonicFirmwareRemove {
                        version: "SONiC-OS-202305.1".into(),
                        pre_check: None,
                    }),
                }),
                ..Default::default()
            },
            SonicSection {
                connectivity_check: Some(SonicConnectivityCheck {
                    ping_hosts: vec!["192.0.2.1".into()],
                    retry_count: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            },
            SonicSection {
                snmp: Some(SonicSnmp {
                    community_ro: Some("public".into()),
                    restart_agent: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            SonicSection {
                download: Some(SonicDownload {
                    files: vec![SonicDownloadFile {
                        content: script("motd for {{ hostname }}\n"),
                        destination: "/etc/motd".into(),
                        permissions: Some("0644".into()),
                    }],
                }),
                ..Default::default()
            },
            SonicSection {
                plugin: Some(SonicPlugin {
                    name: Some("set-motd".into()),
                    script: script("#!/bin/sh\necho hi\n"),
                    args: Some("-v".into()),
                    ignore_section_data: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            SonicSection {
                halt_on_failure: Some(true),
                configdb_json: Some(SonicConfigDb {
                    content: script(r#"{"DEVICE_METADATA": {"localhost": {"hostname": "{{ hostname }}"}}}"#),
                    save_config: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]
    }

    /// The snapshot form of `declared()`: what build does, parts resolved as the resolver would.
    fn resolved(sections: &[SonicSection]) -> SonicSnapshot {
        let sections = sections
            .iter()
            .map(|s| {
                let (section, contents) = contents(s);
                let parts = contents
                    .into_iter()
                    .map(|(name, c)| {
                        let r = match (&c.os_image_ref, &c.inline) {
                            (Some(r), _) => Resolved::Image(format!("net/{}", r.name)),
                            (None, Some(t)) => text(t, c.template),
                            (None, None) => panic!("no content"),
                        };
                        (name, r)
                    })
                    .collect();
                SonicSectionSnapshot { section, parts }
            })
            .collect();
        SonicSnapshot { sections, ..Default::default() }
    }

    fn part_url(key: &str, part: &str) -> String {
        format!("{URL}/sonic/SN1/sections/{key}/{part}")
    }

    fn image_url(img: &ImageRef) -> String {
        format!("{URL}/images/{}", img.path)
    }

    const URLS: Urls = Urls { part: &part_url, image: &image_url };

    #[test]
    fn every_section_is_a_sonic_plugin_with_the_keys_it_reads() {
        let (d, p) = (device(), profile());
        let ctx =
            RenderContext { device: &d, profile: &p, switch: None, server_url: URL, report_token: None };
        let got = document(&ctx, &snapshot(), &resolved(&declared()), &URLS).expect("document");
        let expected = json!({"ztp": {
            "01-firmware": {
                "description": "install SONiC",
                "install": {
                    "url": "http://10.0.0.1:8080/images/sonic/202411/sonic-broadcom.bin",
                    "version": "SONiC-OS-202411.1",
                    "set-default": true,
                    "skip-reboot": false,
                    "pre-check": {"url": "http://10.0.0.1:8080/sonic/SN1/sections/01-firmware/install-pre-check"}
                },
                "remove": {"version": "SONiC-OS-202305.1"}
            },
            "02-connectivity-check": {"ping-hosts": ["192.0.2.1"], "retry-count": 3},
            "03-snmp": {"community-ro": "public", "restart-agent": true},
            "04-download": {"files": [{
                "url": {"source": "http://10.0.0.1:8080/sonic/SN1/sections/04-download/file-1", "destination": "/etc/motd"},
                "permissions": "0644"
            }]},
            "05-set-motd": {"plugin": {
                "url": "http://10.0.0.1:8080/sonic/SN1/sections/05-set-motd/plugin",
                "args": "-v",
                "ignore-section-data": true
            }},
            "06-configdb-json": {
                "halt-on-failure": true,
                "url": "http://10.0.0.1:8080/sonic/SN1/sections/06-configdb-json/config_db.json",
                "save-config": true
            },
            "restart-ztp-no-config": false
        }});
        assert_eq!(got, expected);
    }

    #[test]
    fn global_flags_are_the_profiles_when_set() {
        let (d, p) = (device(), profile());
        let ctx =
            RenderContext { device: &d, profile: &p, switch: None, server_url: URL, report_token: None };
        let sonic = SonicSnapshot {
            restart_ztp_no_config: Some(true),
            restart_ztp_on_failure: Some(true),
            config_fallback: Some(false),
            ..resolved(&declared()[1..2])
        };
        let got = document(&ctx, &snapshot(), &sonic, &URLS).expect("document");
        assert_eq!(got["ztp"]["restart-ztp-no-config"], json!(true));
        assert_eq!(got["ztp"]["restart-ztp-on-failure"], json!(true));
        assert_eq!(got["ztp"]["config-fallback"], json!(false));
    }

    #[test]
    fn parts_are_rendered_for_the_device() {
        let (d, p) = (device(), profile());
        let ctx =
            RenderContext { device: &d, profile: &p, switch: None, server_url: URL, report_token: None };
        let sonic = resolved(&declared());
        let get = |key: &str, part: &str| part_content(&ctx, &sonic, key, part).expect("renders");
        assert_eq!(
            get("06-configdb-json", part::CONFIG_DB).as_deref(),
            Some(r#"{"DEVICE_METADATA": {"localhost": {"hostname": "leaf01"}}}"#)
        );
        assert_eq!(
            get("01-firmware", part::INSTALL_PRE_CHECK).as_deref(),
            Some("#!/bin/sh\ntest -n 'SN1'\n")
        );
        assert_eq!(get("04-download", "file-1").as_deref(), Some("motd for leaf01\n"));
        assert_eq!(get("05-set-motd", part::PLUGIN).as_deref(), Some("#!/bin/sh\necho hi\n"));
        // The image is served by its own URL; unknown sections and parts are nothing.
        for (key, part) in [
            ("01-firmware", part::INSTALL),
            ("01-firmware", "remove-pre-check"),
            ("02-firmware", part::INSTALL_PRE_CHECK),
            ("04-download", "file-2"),
            ("07-configdb-json", part::CONFIG_DB),
            ("../etc", "passwd"),
        ] {
            assert_eq!(get(key, part), None, "{key}/{part}");
        }
    }

    #[test]
    fn a_config_db_that_is_not_a_json_object_is_an_error_never_served() {
        let (d, p) = (device(), profile());
        let ctx =
            RenderContext { device: &d, profile: &p, switch: None, server_url: URL, report_token: None };
        let mut sections = declared();
        sections[5].configdb_json.as_mut().expect("configdb").content.inline =
            Some("hostname {{ hostname }}".into());
        let e = part_content(&ctx, &resolved(&sections), "06-configdb-json", part::CONFIG_DB)
            .expect_err("not JSON");
        assert_eq!(e.what(), "sonic.06-configdb-json.config_db.json");
        assert!(e.to_string().contains("not JSON"), "{e}");

        assert_eq!(
            part_problem(part::CONFIG_DB, &text("[1, 2]", false)),
            Some("configdbJson.content is not a JSON object")
        );
        assert_eq!(part_problem(part::CONFIG_DB, &text("{}", false)), None);
        assert_eq!(
            part_problem(part::CONFIG_DB, &text("{{ anything }}", true)),
            None,
            "checked when rendered"
        );
        assert!(part_problem(part::CONFIG_DB, &Resolved::Image(IMAGE.into())).is_some());
        assert!(part_problem(part::INSTALL, &text("x", false)).is_some());
        assert_eq!(part_problem(part::INSTALL, &Resolved::Image(IMAGE.into())), None);
    }

    /// A Switch's `osImage` is what `firmware.install` installs; the profile's `version`, which
    /// described its own image, is left out.
    #[test]
    fn a_switchs_os_image_is_what_firmware_installs() {
        let (d, p) = (device(), profile());
        let mut snapshot = snapshot();
        let pinned =
            ImageRef { path: "sonic/202505/sonic-broadcom.bin".into(), sha256: "cd".repeat(32), size: 9 };
        snapshot.images.insert("net/sonic-202505".into(), pinned);
        let switch = crate::profile::snapshot::SwitchSnapshot {
            os_image: Some("net/sonic-202505".into()),
            ..Default::default()
        };
        let ctx = RenderContext {
            device: &d,
            profile: &p,
            switch: Some(&switch),
            server_url: URL,
            report_token: None,
        };
        let got = document(&ctx, &snapshot, &resolved(&declared()[..1]), &URLS).expect("document");
        let install = &got["ztp"]["01-firmware"]["install"];
        assert_eq!(install["url"], json!("http://10.0.0.1:8080/images/sonic/202505/sonic-broadcom.bin"));
        assert_eq!(install.get("version"), None, "{install}");
        assert_eq!(install["set-default"], json!(true));
        assert_eq!(
            install["pre-check"]["url"],
            json!("http://10.0.0.1:8080/sonic/SN1/sections/01-firmware/install-pre-check"),
            "text parts are the profile's"
        );
    }

    #[test]
    fn a_missing_image_names_the_section() {
        let (d, p) = (device(), profile());
        let ctx =
            RenderContext { device: &d, profile: &p, switch: None, server_url: URL, report_token: None };
        let e =
            document(&ctx, &Snapshot::default(), &resolved(&declared()[..1]), &URLS).expect_err("no image");
        assert_eq!(
            e.to_string(),
            "profile net/leaf, sonic.01-firmware.install: OsImage net/sonic-202411 is not in the snapshot"
        );
    }

    #[test]
    fn contents_are_taken_out_of_the_declared_section() {
        let (section, parts) = contents(&declared()[0]);
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [part::INSTALL, part::INSTALL_PRE_CHECK]);
        let install = section.firmware.and_then(|f| f.install).expect("install");
        assert_eq!(install.pre_check, Some(Content::default()), "inline text is kept once, in the part");
    }

    #[test]
    fn the_chain_document_asks_for_the_serial_route() {
        assert_eq!(
            chain_document("http://ztp.example.net"),
            json!({"ztp": {"dynamic-url": {"source": {
                "prefix": "http://ztp.example.net/sonic/", "identifier": "serial-number", "suffix": "/ztp.json"
            }}}})
        );
    }
}
