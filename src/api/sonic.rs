//! The SONiC ZTP JSON of a SwitchProfile (`spec.sonic`): sections that SONiC's own ZTP engine
//! runs. SONiC runs every section through a plugin named after the section (after its `NN-`
//! prefix) or through the section's `plugin` object; it ships `firmware`, `configdb-json`,
//! `connectivity-check`, `snmp`, `graphservice` and `download` (docs/protocols.md §3.3). NVIDIA
//! NVOS's section kinds (`image`, `commands-list`, `startup-file`, `provisioning-script`) are not
//! among them: they live in `spec.ztp`, which is served to NVOS only.
//!
//! A section is a union: exactly one of its plugin fields is set, and that field's name is the
//! plugin the switch runs (`01-firmware`, `02-configdb-json`, …).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::content::{Content, ObjectRef};

/// The SONiC ZTP JSON. Sections are emitted in list order as `01-<plugin>`, `02-<plugin>`, …, so
/// the switch (which runs them in lexical order of their keys) runs them in the order written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SonicSpec {
    /// The sections, in execution order.
    #[schemars(length(min = 1, max = 64))]
    pub sections: Vec<SonicSection>,
    /// `restart-ztp-no-config`: start ZTP again when no `/etc/sonic/config_db.json` exists once
    /// every section ran. Default here: false. (SONiC's own default is true, which makes a
    /// profile without a `configdbJson` section that writes the startup configuration run ZTP
    /// again forever.) A `configdbJson` section with `clearConfig` (its default) writes
    /// `/etc/sonic/config_db.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_no_config: Option<bool>,
    /// `restart-ztp-on-failure`: start ZTP again (after SONiC's `restart-ztp-interval`, 300 s by
    /// default) when a section failed. SONiC's default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_ztp_on_failure: Option<bool>,
    /// `config-fallback`: when ZTP fails, load the factory default configuration instead of
    /// leaving the switch without one. SONiC's default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_fallback: Option<bool>,
}

/// One SONiC section: the keys every section has, and exactly one plugin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.firmware), has(self.configdbJson), has(self.connectivityCheck), has(self.snmp), has(self.download), has(self.plugin)].filter(x, x).size() == 1"
).message("a SONiC section sets exactly one of firmware, configdbJson, connectivityCheck, snmp, download or plugin (SONiC has no image, commands-list, startup-file or provisioning-script plugin: those are NVOS sections, in spec.ztp)"))]
pub struct SonicSection {
    /// `description`: free text, shown by `show ztp status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// `ignore-result`: count the section as successful even when it fails (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_result: Option<bool>,
    /// `halt-on-failure`: stop ZTP when this section fails (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_on_failure: Option<bool>,
    /// `reboot-on-success`: reboot the switch when the section succeeds (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_on_success: Option<bool>,
    /// `reboot-on-failure`: reboot the switch when the section fails (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_on_failure: Option<bool>,

    /// Install (and/or remove) a SONiC image with `sonic-installer` (plugin `firmware`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<SonicFirmware>,
    /// Load a `config_db.json` (plugin `configdb-json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configdb_json: Option<SonicConfigDb>,
    /// Ping hosts until they answer (plugin `connectivity-check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity_check: Option<SonicConnectivityCheck>,
    /// Set the SNMP read-only community and location in `/etc/sonic/snmp.yml` (plugin `snmp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snmp: Option<SonicSnmp>,
    /// Download files to paths on the switch (plugin `download`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download: Option<SonicDownload>,
    /// Run a script served by this server as the section's plugin (`"plugin": {"url": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<SonicPlugin>,
}

/// The `firmware` plugin: `install` and/or `remove` (remove runs first).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.install) || has(self.remove)")
    .message("firmware needs install, remove or both"))]
pub struct SonicFirmware {
    /// `install`: download the image from this server and install it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<SonicFirmwareInstall>,
    /// `remove`: remove an installed image by version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<SonicFirmwareRemove>,
}

/// `firmware.install`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SonicFirmwareInstall {
    /// The OsImage to install (same namespace). The switch gets this server's URL of the verified
    /// image; SONiC's firmware plugin checks no hash itself.
    pub image: ObjectRef,
    /// `version`: the image's version as `sonic-installer binary-version` prints it (e.g.
    /// `SONiC-OS-202411.1`). With it the switch skips the download when that version is
    /// already installed (ZTP runs again after the install's reboot) and refuses an image of
    /// another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub version: Option<String>,
    /// `set-default`: boot the new image from now on, and reboot into it (SONiC's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_default: Option<bool>,
    /// `set-next-boot`: boot the new image once, at the next reboot (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_next_boot: Option<bool>,
    /// `skip-reboot`: do not reboot after installing (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reboot: Option<bool>,
    /// `pre-check`: a script (served by this server, rendered for the device) run before the
    /// install; a non-zero exit skips the install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_check: Option<Content>,
}

/// `firmware.remove`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SonicFirmwareRemove {
    /// `version`: the installed image to remove, as `sonic-installer list` names it.
    #[schemars(length(min = 1, max = 256))]
    pub version: String,
    /// `pre-check`: a script run before the removal; a non-zero exit skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_check: Option<Content>,
}

/// The `configdb-json` plugin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.content.osImageRef)")
    .message("configdbJson.content is a config_db.json text, not an osImageRef"))]
pub struct SonicConfigDb {
    /// The `config_db.json` (a JSON object; usually a template rendered per device). Served by
    /// this server; a rendering that is not a JSON object is an error, never served.
    pub content: Content,
    /// `clear-config`: `config reload` with this file and write it to
    /// `/etc/sonic/config_db.json` (SONiC's default: true); false: `config load` it on top of
    /// the running configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_config: Option<bool>,
    /// `save-config`: `config save` afterwards (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_config: Option<bool>,
    /// `overwrite-device-metadata`: take `DEVICE_METADATA` (platform, hwsku, MAC) from the file
    /// instead of the running switch (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite_device_metadata: Option<bool>,
}

/// The `connectivity-check` plugin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.pingHosts) && size(self.pingHosts) > 0) || (has(self.ping6Hosts) && size(self.ping6Hosts) > 0)"
).message("connectivityCheck needs pingHosts or ping6Hosts"))]
pub struct SonicConnectivityCheck {
    /// `ping-hosts`: IPv4 hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub ping_hosts: Vec<String>,
    /// `ping6-hosts`: IPv6 hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub ping6_hosts: Vec<String>,
    /// `ping-count`: pings per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub ping_count: Option<i32>,
    /// `retry-count`: attempts before the section fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub retry_count: Option<i32>,
    /// `retry-interval`: seconds between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub retry_interval: Option<i32>,
    /// `deadline`: seconds one ping run may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub deadline: Option<i32>,
    /// `timeout`: seconds to wait for each reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub timeout: Option<i32>,
}

/// The `snmp` plugin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.communityRo) || has(self.snmpLocation)")
    .message("snmp needs communityRo or snmpLocation"))]
pub struct SonicSnmp {
    /// `community-ro`: the read-only community.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub community_ro: Option<String>,
    /// `snmp-location`: the location string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub snmp_location: Option<String>,
    /// `restart-agent`: restart the SNMP agent afterwards (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_agent: Option<bool>,
}

/// The `download` plugin: files from this server to paths on the switch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SonicDownload {
    /// `files`, in order.
    #[schemars(length(min = 1, max = 64))]
    pub files: Vec<SonicDownloadFile>,
}

/// One file of a `download` section.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SonicDownloadFile {
    /// What to download: text (rendered for the device) or an OsImage (its verified bytes).
    pub content: Content,
    /// `destination`: the absolute path on the switch (directories are created).
    #[schemars(length(min = 2, max = 1024), pattern(r"^/"))]
    pub destination: String,
    /// `permissions`: the file's mode, as `chmod` takes it: octal, e.g. `0755`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 4), pattern(r"^[0-7]{3,4}$"))]
    pub permissions: Option<String>,
}

/// A section whose plugin is a script served by this server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SonicPlugin {
    /// The section's name after its `NN-` prefix (`show ztp status` shows it): lower-case
    /// letters, digits and `-`, e.g. `set-motd`. Default `plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: Option<String>,
    /// The plugin: a script with a shebang (rendered for the device), or an OsImage. The switch
    /// runs it with the section's JSON file as its argument (see `ignoreSectionData`); exit 0
    /// marks the section SUCCESS.
    pub script: Content,
    /// `args`: arguments passed to the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub args: Option<String>,
    /// `shell`: run the plugin through a shell (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    /// `ignore-section-data`: do not pass the section's JSON file to the plugin (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_section_data: Option<bool>,
}

impl SonicSection {
    /// The plugin this section runs: `firmware`, `configdb-json`, `connectivity-check`, `snmp`,
    /// `download`, or the plugin section's name (default `plugin`). `None` when no plugin field
    /// is set (the CRD's rule refuses that).
    pub fn plugin_name(&self) -> Option<&str> {
        let s = self;
        if s.firmware.is_some() {
            Some("firmware")
        } else if s.configdb_json.is_some() {
            Some("configdb-json")
        } else if s.connectivity_check.is_some() {
            Some("connectivity-check")
        } else if s.snmp.is_some() {
            Some("snmp")
        } else if s.download.is_some() {
            Some("download")
        } else {
            s.plugin.as_ref().map(|p| p.name.as_deref().unwrap_or("plugin"))
        }
    }

    /// How many plugin fields are set (exactly one is valid).
    pub fn plugins_set(&self) -> usize {
        let s = self;
        [
            s.firmware.is_some(),
            s.configdb_json.is_some(),
            s.connectivity_check.is_some(),
            s.snmp.is_some(),
            s.download.is_some(),
            s.plugin.is_some(),
        ]
        .into_iter()
        .filter(|x| *x)
        .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_sonics() {
        let firmware = SonicSection { firmware: Some(SonicFirmware::default()), ..Default::default() };
        assert_eq!(firmware.plugin_name(), Some("firmware"));
        let cfg = SonicSection { configdb_json: Some(SonicConfigDb::default()), ..Default::default() };
        assert_eq!(cfg.plugin_name(), Some("configdb-json"));
        let ping = SonicSection {
            connectivity_check: Some(SonicConnectivityCheck::default()),
            ..Default::default()
        };
        assert_eq!(ping.plugin_name(), Some("connectivity-check"));
        let plugin = SonicSection { plugin: Some(SonicPlugin::default()), ..Default::default() };
        assert_eq!(plugin.plugin_name(), Some("plugin"));
        let named = SonicSection {
            plugin: Some(SonicPlugin { name: Some("set-motd".into()), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(named.plugin_name(), Some("set-motd"));
        assert_eq!(SonicSection::default().plugin_name(), None);
        assert_eq!(SonicSection::default().plugins_set(), 0);
        assert_eq!(SonicSection { snmp: Some(SonicSnmp::default()), ..firmware }.plugins_set(), 2);
    }

    #[test]
    fn an_nvos_kind_in_a_sonic_section_is_refused_when_parsed() {
        let e = serde_json::from_value::<SonicSection>(serde_json::json!({"kind": "image"}))
            .expect_err("NVOS kind");
        assert!(e.to_string().contains("unknown field `kind`"), "{e}");
    }
}
