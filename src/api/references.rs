//! What a SwitchProfile's spec references in its own namespace: ConfigMaps, Secrets, OsImages.
//! One typed walk of the spec, for every reader: the snapshot loop's triggers (which ConfigMap or
//! Secret events matter), the OsImage controller and standalone (which images a profile holds).
//!
//! The spec, every section union and [`Content`] are destructured without `..`: a field added
//! to any of them does not compile until this walk says whether it references something.

use std::collections::BTreeSet;

use super::{
    content::{Content, ObjectRef},
    sonic::{SonicFirmware, SonicFirmwareInstall, SonicFirmwareRemove, SonicSection, SonicSpec},
    switchprofile::{CumulusSpec, OnieSpec, SwitchProfileSpec, ZtpSpec},
};

/// The objects, by name, that a spec references in the profile's namespace.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    pub os_images: BTreeSet<String>,
}

impl References {
    fn content(&mut self, c: &Content) {
        let Content { inline: _, config_map_key_ref, secret_key_ref, os_image_ref, template: _ } = c;
        self.config_maps.extend(config_map_key_ref.iter().map(|r| r.name.clone()));
        self.secrets.extend(secret_key_ref.iter().map(|r| r.name.clone()));
        self.image(os_image_ref.as_ref());
    }

    fn image(&mut self, r: Option<&ObjectRef>) {
        self.os_images.extend(r.map(|r| r.name.clone()));
    }

    fn sonic_section(&mut self, s: &SonicSection) {
        let SonicSection {
            description: _,
            ignore_result: _,
            halt_on_failure: _,
            reboot_on_success: _,
            reboot_on_failure: _,
            firmware,
            configdb_json,
            connectivity_check: _,
            snmp: _,
            download,
            plugin,
        } = s;
        if let Some(SonicFirmware { install, remove }) = firmware {
            if let Some(SonicFirmwareInstall { image, pre_check, .. }) = install {
                self.image(Some(image));
                pre_check.iter().for_each(|c| self.content(c));
            }
            if let Some(SonicFirmwareRemove { version: _, pre_check }) = remove {
                pre_check.iter().for_each(|c| self.content(c));
            }
        }
        configdb_json.iter().for_each(|c| self.content(&c.content));
        download.iter().flat_map(|d| &d.files).for_each(|f| self.content(&f.content));
        plugin.iter().for_each(|p| self.content(&p.script));
    }
}

impl SwitchProfileSpec {
    /// Every ConfigMap, Secret and OsImage this spec references (in the profile's namespace):
    /// `onie.installImage`/`updateImage`, every content's `configMapKeyRef`, `secretKeyRef` and
    /// `osImageRef` (ZTP and SONiC sections, the Cumulus script, files), a SONiC firmware
    /// section's `install.image`.
    pub fn references(&self) -> References {
        let SwitchProfileSpec { selector: _, hostname: _, variables: _, onie, ztp, sonic, cumulus, files } =
            self;
        let mut refs = References::default();
        if let Some(OnieSpec { install_image, update_image }) = onie {
            refs.image(install_image.as_ref());
            refs.image(update_image.as_ref());
        }
        if let Some(ZtpSpec { sections, .. }) = ztp {
            sections.iter().filter_map(|s| s.content.as_ref()).for_each(|c| refs.content(c));
        }
        if let Some(SonicSpec { sections, .. }) = sonic {
            sections.iter().for_each(|s| refs.sonic_section(s));
        }
        if let Some(CumulusSpec { script }) = cumulus {
            refs.content(script);
        }
        files.values().for_each(|c| refs.content(c));
        refs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> SwitchProfileSpec {
        serde_json::from_value(v).expect("spec")
    }

    fn names(s: &BTreeSet<String>) -> Vec<&str> {
        s.iter().map(String::as_str).collect()
    }

    #[test]
    fn every_reference_a_spec_can_make_is_found_by_kind() {
        let cm = |name: &str| serde_json::json!({"configMapKeyRef": {"name": name, "key": "k"}});
        let secret = |name: &str| serde_json::json!({"secretKeyRef": {"name": name, "key": "k"}});
        let image = |name: &str| serde_json::json!({"osImageRef": {"name": name}});
        let refs = spec(serde_json::json!({
            "match": {"models": ["m"]},
            "variables": {"image": "not a reference", "configMapKeyRef": "nor this"},
            "onie": {"installImage": {"name": "onie-nos"}, "updateImage": {"name": "onie-updater"}},
            "ztp": {"sections": [
                {"kind": "image", "content": image("ztp-image")},
                {"kind": "commands-list", "content": cm("ztp-cm")},
                {"kind": "startup-file", "content": secret("ztp-secret")},
                {"kind": "provisioning-script", "content": {"inline": "x"}}
            ]},
            "sonic": {"sections": [
                {"firmware": {
                    "install": {"image": {"name": "sonic-firmware"}, "preCheck": cm("install-check")},
                    "remove": {"version": "v", "preCheck": secret("remove-check")}
                }},
                {"configdbJson": {"content": cm("configdb")}},
                {"download": {"files": [
                    {"content": image("download-image"), "destination": "/a"},
                    {"content": secret("download-secret"), "destination": "/b"}
                ]}},
                {"plugin": {"script": cm("plugin")}},
                {"snmp": {"communityRo": "public"}}
            ]},
            "cumulus": {"script": secret("cumulus")},
            "files": {"a": cm("file-cm"), "b": secret("file-secret"), "c": image("file-image"), "d": {"inline": "x"}}
        }))
        .references();
        assert_eq!(names(&refs.config_maps), ["configdb", "file-cm", "install-check", "plugin", "ztp-cm"]);
        assert_eq!(
            names(&refs.secrets),
            ["cumulus", "download-secret", "file-secret", "remove-check", "ztp-secret"]
        );
        assert_eq!(
            names(&refs.os_images),
            ["download-image", "file-image", "onie-nos", "onie-updater", "sonic-firmware", "ztp-image"]
        );
        assert_eq!(spec(serde_json::json!({"match": {"models": ["m"]}})).references(), References::default());
    }
}
