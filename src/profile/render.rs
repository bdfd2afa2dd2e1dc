//! Rendering what a device receives from its profile: templates (minijinja), the NVOS / SONiC
//! ZTP JSON, ZTP section contents and the Cumulus script.
//!
//! Templates see the device, its profile and its Switch (when the snapshot has one for it):
//!
//! | variable | value |
//! |---|---|
//! | `serial`, `mac`, `model` | the device's serial, normalised MAC, most specific model |
//! | `models` | every model string the device sent, most specific first |
//! | `family` | `onie`, `nvos`, `sonic`, `cumulus`, `rtbrick` or `unknown` |
//! | `hostname` | the Switch's `hostname`, else the profile's |
//! | `variables` | the profile's `variables` map with the Switch's merged over it (`variables.site`) |
//! | `server_url` | this server's base URL, as the device reached it |
//! | `report_url` | where the device's scripts report their stages (`POST`; none without a serial) |
//! | `report_token` | the device's report token (`Authorization: Bearer …`; none without a serial, or on a server without `--report-key-file`) |
//! | `onie` | `operation`, `arch`, `machine`, `machine_rev`, `vendor_id`, `platform` |
//! | `container_name`, `element_name`, `host_name` | RtBrick CTRLD's headers |
//! | `os_version` | the version the device runs |
//!
//! Rendering is strict: using a variable that does not exist (`{{ hostnme }}`,
//! `{{ variables.missing }}`) is an error naming it. A fact the device did not send (or a
//! profile without `hostname`) is `none`: it can be tested (`{% if mac %}`) or replaced
//! (`{{ mac or "unknown" }}`, `{{ mac | default("unknown", true) }}`), but printing it is an
//! error rather than the text `none` in a switch's configuration. Nothing is HTML- or
//! JSON-escaped, whatever the file name, and the template's final newline is kept.

use std::sync::LazyLock;

use minijinja::{
    AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value, context, syntax::SyntaxConfig,
};
use serde_json::{Map, Value as Json, json};

use super::{
    identity::DeviceIdentity,
    snapshot::{
        ImageRef, ProfileSnapshot, Resolved, Snapshot, SwitchSnapshot, Text, ZtpSectionSnapshot, ZtpSnapshot,
    },
};
use crate::api::ZtpSectionKind;

/// The marker every Cumulus ZTP script must contain (the switch refuses a script without it).
pub const CUMULUS_MARKER: &str = "CUMULUS-AUTOPROVISIONING";

/// What a template is rendered for: one device, its profile, and the server's base URL.
#[derive(Debug, Clone)]
pub struct RenderContext<'a> {
    pub device: &'a DeviceIdentity,
    pub profile: &'a ProfileSnapshot,
    /// The device's Switch, when it gives the device values of its own.
    pub switch: Option<&'a SwitchSnapshot>,
    /// This server's base URL as the device reached it, without a trailing `/`.
    pub server_url: &'a str,
    /// The device's report token (`crate::switch::token`), when the server has a report key and
    /// the device a serial.
    pub report_token: Option<String>,
}

impl RenderContext<'_> {
    /// `namespace/name` of the profile.
    pub fn profile_name(&self) -> String {
        format!("{}/{}", self.profile.namespace, self.profile.name)
    }

    /// The OsImage (a key into the snapshot's images) the device's Switch pins as its install
    /// image (`spec.osImage`): an NVOS `image` section or a SONiC `firmware.install` installs it
    /// instead of the profile's.
    pub fn pinned_install(&self) -> Option<&str> {
        self.switch.and_then(|s| s.os_image.as_deref())
    }

    /// `hostname`: the Switch's, else the profile's.
    fn hostname(&self) -> Option<&str> {
        self.switch.and_then(|s| s.hostname.as_deref()).or(self.profile.hostname.as_deref())
    }

    /// `variables`: the profile's, with the Switch's merged over them.
    fn variables(&self) -> Value {
        match self.switch.filter(|s| !s.variables.is_empty()) {
            None => Value::from(&self.profile.variables),
            Some(s) => {
                let mut merged = self.profile.variables.clone();
                merged.extend(s.variables.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::from(merged)
            }
        }
    }
}

/// Rendering failed. Every variant names the profile (`namespace/name`; empty when not known,
/// as for [`check_template`]) and what was being rendered (`files.startup`,
/// `ztp.02-commands-list`, `cumulus.script`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template does not parse, or failed while rendering (undefined variable, unknown
    /// filter, printing `none`, …). `message` is minijinja's, with template name and line.
    #[error("{}: {message}", place(.profile, .what))]
    Template { profile: String, what: String, message: String, line: Option<usize> },
    /// A section refers to an OsImage that is not in the snapshot.
    #[error("{}: OsImage {image} is not in the snapshot", place(.profile, .what))]
    MissingImage { profile: String, what: String, image: String },
    /// A section lacks what its kind needs (e.g. content for a commands-list).
    #[error("{}: {reason}", place(.profile, .what))]
    InvalidSection { profile: String, what: String, reason: String },
    /// The rendered Cumulus script lacks [`CUMULUS_MARKER`].
    #[error("{}: the script does not contain the marker {CUMULUS_MARKER}", place(.profile, .what))]
    MissingMarker { profile: String, what: String },
}

/// `profile ns/name, what` (or just `what` when the profile is not known).
fn place(profile: &str, what: &str) -> String {
    if profile.is_empty() { what.to_owned() } else { format!("profile {profile}, {what}") }
}

impl RenderError {
    /// `namespace/name` of the profile (empty when not known).
    pub fn profile(&self) -> &str {
        match self {
            RenderError::Template { profile, .. }
            | RenderError::MissingImage { profile, .. }
            | RenderError::InvalidSection { profile, .. }
            | RenderError::MissingMarker { profile, .. } => profile,
        }
    }

    /// What was being rendered, e.g. `files.startup`.
    pub fn what(&self) -> &str {
        match self {
            RenderError::Template { what, .. }
            | RenderError::MissingImage { what, .. }
            | RenderError::InvalidSection { what, .. }
            | RenderError::MissingMarker { what, .. } => what,
        }
    }

    /// The template line the error is on, when it is a template error with a known line.
    pub fn line(&self) -> Option<usize> {
        match self {
            RenderError::Template { line, .. } => *line,
            _ => None,
        }
    }

    /// The same error attributed to profile `ns_name` (`namespace/name`).
    pub fn with_profile(mut self, ns_name: impl Into<String>) -> Self {
        let ns_name = ns_name.into();
        match &mut self {
            RenderError::Template { profile, .. }
            | RenderError::MissingImage { profile, .. }
            | RenderError::InvalidSection { profile, .. }
            | RenderError::MissingMarker { profile, .. } => *profile = ns_name,
        }
        self
    }

    fn template(profile: &str, what: &str, e: &minijinja::Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        RenderError::Template { profile: profile.to_owned(), what: what.to_owned(), message, line: e.line() }
    }
}

/// The one template environment: strict undefined, no auto-escaping, the template's trailing
/// newline kept, debug info on (so an undefined-variable error names the variable), and `none`
/// refused when printed.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_debug(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // A configuration file keeps its last newline (Jinja drops it by default).
    let syntax = SyntaxConfig::builder().keep_trailing_newline(true).build();
    env.set_syntax(syntax.expect("the default delimiters are valid"));
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "cannot print none (a value this device did not send or the profile does not set); \
                 test it with {% if … %} or give a fallback with `or` / default(…, true)",
            ));
        }
        minijinja::escape_formatter(out, state, value)
    });
    env
});

/// The template variables for `ctx` (see the module documentation).
fn template_context(ctx: &RenderContext) -> Value {
    let d = ctx.device;
    context! {
        serial => d.serial.as_deref(),
        mac => d.mac.as_deref(),
        model => d.model(),
        models => d.models.clone(),
        family => d.family.as_str(),
        hostname => ctx.hostname(),
        variables => ctx.variables(),
        server_url => ctx.server_url,
        report_url => d.serial.as_deref().map(|serial| crate::routes::url::report(ctx.server_url, serial)),
        report_token => ctx.report_token.as_deref(),
        onie => context! {
            operation => d.onie_operation.as_deref(),
            arch => d.onie_arch.as_deref(),
            machine => d.onie_machine.as_deref(),
            machine_rev => d.onie_machine_rev.as_deref(),
            vendor_id => d.onie_vendor_id.as_deref(),
            platform => d.onie_platform(),
        },
        container_name => d.container_name.as_deref(),
        element_name => d.element_name.as_deref(),
        host_name => d.host_name.as_deref(),
        os_version => d.os_version.as_deref(),
    }
}

/// Renders `text` for the device of `ctx`: the text unchanged unless it is a template. Errors
/// name the content as `template`; use [`render_text_named`] to name it precisely.
pub fn render_text(text: &Text, ctx: &RenderContext) -> Result<String, RenderError> {
    render_text_named(text, ctx, "template")
}

/// Like [`render_text`], naming the content `what` (e.g. `files.startup`) in errors and in the
/// template's name (`… (in files.startup:3)`).
pub fn render_text_named(text: &Text, ctx: &RenderContext, what: &str) -> Result<String, RenderError> {
    if !text.template {
        return Ok(text.text.clone());
    }
    let env: &Environment<'_> = &ENV;
    env.render_named_str(what, &text.text, template_context(ctx))
        .map_err(|e| RenderError::template(&ctx.profile_name(), what, &e))
}

/// Checks that `text`, if it is a template, parses (syntax only: undefined variables show only
/// when rendering for a device). The error's profile is empty; the caller knows it
/// ([`RenderError::with_profile`]).
pub fn check_template(text: &Text, what: &str) -> Result<(), RenderError> {
    if !text.template {
        return Ok(());
    }
    let env: &Environment<'_> = &ENV;
    env.template_from_named_str(what, &text.text).map(drop).map_err(|e| RenderError::template("", what, &e))
}

/// The NVOS name of a section kind: `image`, `commands-list`, `startup-file`,
/// `connectivity-check`, `provisioning-script`.
pub fn section_kind_name(kind: ZtpSectionKind) -> &'static str {
    match kind {
        ZtpSectionKind::Image => "image",
        ZtpSectionKind::CommandsList => "commands-list",
        ZtpSectionKind::StartupFile => "startup-file",
        ZtpSectionKind::ConnectivityCheck => "connectivity-check",
        ZtpSectionKind::ProvisioningScript => "provisioning-script",
    }
}

/// The key of section `index` (0-based) in the ZTP JSON: `01-image`, `02-commands-list`, …; the
/// switch runs sections in lexical order of their keys, which is list order.
pub fn section_key(index: usize, kind: ZtpSectionKind) -> String {
    format!("{:02}-{}", index + 1, section_kind_name(kind))
}

/// Looks up an OsImage of the snapshot for section `what`.
fn image<'s>(
    snapshot: &'s Snapshot,
    ctx: &RenderContext,
    what: &str,
    key: &str,
) -> Result<&'s ImageRef, RenderError> {
    snapshot.images.get(key).ok_or_else(|| RenderError::MissingImage {
        profile: ctx.profile_name(),
        what: what.to_owned(),
        image: key.to_owned(),
    })
}

/// The NVOS / SONiC ZTP JSON (`{"ztp": {"01-image": {…}, …}}`) for the device of `ctx`.
///
/// Section keys come from [`section_key`]; inside sections the NVOS key names are used and only
/// options that are set are emitted. Text content (commands, startup YAML, scripts) is referred
/// to by `section_url(key)` (this server renders it per device when fetched); an image by
/// `image_url(image)`, the image being `snapshot.images[key]`.
pub fn ztp_json(
    ctx: &RenderContext,
    snapshot: &Snapshot,
    ztp: &ZtpSnapshot,
    section_url: &dyn Fn(&str) -> String,
    image_url: &dyn Fn(&ImageRef) -> String,
) -> Result<Json, RenderError> {
    let mut top = Map::new();
    for (i, s) in ztp.sections.iter().enumerate() {
        let key = section_key(i, s.kind());
        let what = format!("ztp.{key}");
        let obj = section_json(ctx, snapshot, s, &key, &what, section_url, image_url)?;
        top.insert(key, Json::Object(obj));
    }
    if let Some(v) = ztp.restart_ztp_no_config {
        top.insert("restart-ztp-no-config".into(), json!(v));
    }
    if let Some(v) = ztp.restart_ztp_on_failure {
        top.insert("restart-ztp-on-failure".into(), json!(v));
    }
    Ok(json!({ "ztp": top }))
}

/// One section object of the ZTP JSON.
fn section_json(
    ctx: &RenderContext,
    snapshot: &Snapshot,
    s: &ZtpSectionSnapshot,
    key: &str,
    what: &str,
    section_url: &dyn Fn(&str) -> String,
    image_url: &dyn Fn(&ImageRef) -> String,
) -> Result<Map<String, Json>, RenderError> {
    let d = &s.section;
    let mut obj = Map::new();
    let mut put = |k: &str, v: Option<Json>| {
        if let Some(v) = v {
            obj.insert(k.to_owned(), v);
        }
    };
    put("description", d.description.as_ref().map(|v| json!(v)));
    put("ignore-result", d.ignore_result.map(Json::from));
    put("halt-on-failure", d.halt_on_failure.map(Json::from));
    put("restart-ztp-on-failure", d.restart_ztp_on_failure.map(Json::from));
    let invalid = |reason: &str| RenderError::InvalidSection {
        profile: ctx.profile_name(),
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    // The URL of a section's downloadable content: this server's section route for text, the
    // image's URL for an OsImage.
    let content_url = || -> Result<Json, RenderError> {
        match &s.resolved {
            Some(Resolved::Text(_)) => Ok(json!(section_url(key))),
            Some(Resolved::Image(k)) => Ok(json!(image_url(image(snapshot, ctx, what, k)?))),
            None => Err(invalid("the section has no content")),
        }
    };
    match d.kind {
        ZtpSectionKind::Image => {
            match &s.resolved {
                Some(Resolved::Image(k)) => {
                    let img = image(snapshot, ctx, what, ctx.pinned_install().unwrap_or(k))?;
                    let mut install = Map::new();
                    install.insert("url".into(), json!(image_url(img)));
                    if let Some(v) = d.skip_reboot {
                        install.insert("skip-reboot".into(), json!(v));
                    }
                    put("install", Some(Json::Object(install)));
                }
                Some(Resolved::Text(_)) => {
                    return Err(invalid("an image section needs an OsImage, not text"));
                }
                None if d.uninstall != Some(true) => {
                    return Err(invalid("an image section needs an OsImage or uninstall: true"));
                }
                None => {}
            }
            put("uninstall", d.uninstall.map(Json::from));
        }
        ZtpSectionKind::CommandsList | ZtpSectionKind::StartupFile => {
            put("url", Some(content_url()?));
            put("clear-config", d.clear_config.map(Json::from));
            put("save-config", d.save_config.map(Json::from));
        }
        ZtpSectionKind::ProvisioningScript => {
            put("url", Some(content_url()?));
            put("timeout", d.timeout.map(Json::from));
        }
        ZtpSectionKind::ConnectivityCheck => {
            put("ping-hosts", (!d.ping_hosts.is_empty()).then(|| json!(d.ping_hosts)));
            put("ping6-hosts", (!d.ping6_hosts.is_empty()).then(|| json!(d.ping6_hosts)));
            put("ping-count", d.ping_count.map(Json::from));
            put("retry-count", d.retry_count.map(Json::from));
            put("retry-interval", d.retry_interval.map(Json::from));
            put("deadline", d.deadline.map(Json::from));
            put("timeout", d.timeout.map(Json::from));
        }
    }
    Ok(obj)
}

/// The rendered content of the section whose key ([`section_key`]) is `key`, e.g.
/// `02-commands-list`; `None` when there is no such section or its content is not text (an image
/// is served from the store).
pub fn section_content(
    ctx: &RenderContext,
    ztp: &ZtpSnapshot,
    key: &str,
) -> Result<Option<String>, RenderError> {
    let found = ztp.sections.iter().enumerate().find(|(i, s)| section_key(*i, s.kind()) == key);
    match found {
        Some((_, ZtpSectionSnapshot { resolved: Some(Resolved::Text(text)), .. })) => {
            render_text_named(text, ctx, &format!("ztp.{key}")).map(Some)
        }
        _ => Ok(None),
    }
}

/// The Cumulus ZTP script for the device of `ctx`: rendered, with CRLF and lone CR line endings
/// turned into LF (Cumulus runs it with a shell that chokes on CR), and checked for
/// [`CUMULUS_MARKER`].
pub fn cumulus_script(text: &Text, ctx: &RenderContext) -> Result<String, RenderError> {
    let what = "cumulus.script";
    let rendered = render_text_named(text, ctx, what)?;
    let script =
        if has_crlf(&rendered) { rendered.replace("\r\n", "\n").replace('\r', "\n") } else { rendered };
    if !script.contains(CUMULUS_MARKER) {
        return Err(RenderError::MissingMarker { profile: ctx.profile_name(), what: what.to_owned() });
    }
    Ok(script)
}

/// True when `s` has a carriage return (CRLF or a lone CR line ending): what
/// [`cumulus_script`] rewrites to LF.
pub fn has_crlf(s: &str) -> bool {
    s.contains('\r')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        api::ZtpSection,
        profile::identity::{DeviceIdentity, Family},
    };

    fn device() -> DeviceIdentity {
        DeviceIdentity {
            family: Family::Onie,
            serial: Some("XYZ123004".into()),
            mac: Some("08:9e:01:62:d1:93".into()),
            models: vec!["x86_64-accton_as7712_32x-r0".into(), "accton_as7712_32x".into()],
            onie_operation: Some("os-install".into()),
            onie_arch: Some("x86_64".into()),
            onie_machine: Some("accton_as7712_32x".into()),
            onie_machine_rev: Some("0".into()),
            onie_vendor_id: Some("259".into()),
            os_version: Some("2021.11".into()),
            ..Default::default()
        }
    }

    fn profile() -> ProfileSnapshot {
        ProfileSnapshot {
            namespace: "net".into(),
            name: "leaf".into(),
            hostname: Some("leaf01".into()),
            variables: BTreeMap::from([("site".into(), "par1".into()), ("vlan".into(), "42".into())]),
            ..Default::default()
        }
    }

    fn template(s: &str) -> Text {
        Text { text: s.into(), template: true }
    }

    const URL: &str = "http://10.0.0.1:8080";

    fn ctx<'a>(device: &'a DeviceIdentity, profile: &'a ProfileSnapshot) -> RenderContext<'a> {
        RenderContext { device, profile, switch: None, server_url: URL, report_token: None }
    }

    #[test]
    fn plain_text_is_returned_unchanged() {
        let (d, p) = (device(), profile());
        let t = Text { text: "hostname {{ nope }}\r\n{% broken".into(), template: false };
        assert_eq!(render_text(&t, &ctx(&d, &p)).expect("plain text"), t.text);
        assert_eq!(check_template(&t, "files.x"), Ok(()));
    }

    #[test]
    fn every_variable_is_available() {
        let (d, p) = (device(), profile());
        let t = template(
            "{{ serial }} {{ mac }} {{ model }} {{ models | join(',') }} {{ family }} {{ hostname }} \
             {{ variables.site }}/{{ variables['vlan'] }} {{ server_url }} \
             {{ onie.operation }} {{ onie.arch }} {{ onie.machine }} {{ onie.machine_rev }} {{ onie.vendor_id }} \
             {{ onie.platform }} {{ os_version }}",
        );
        assert_eq!(
            render_text(&t, &ctx(&d, &p)).expect("renders"),
            "XYZ123004 08:9e:01:62:d1:93 x86_64-accton_as7712_32x-r0 \
             x86_64-accton_as7712_32x-r0,accton_as7712_32x onie leaf01 par1/42 http://10.0.0.1:8080 \
             os-install x86_64 accton_as7712_32x 0 259 x86_64-accton_as7712_32x-r0 2021.11"
        );

        let rtbrick = DeviceIdentity {
            family: Family::RtBrick,
            serial: Some("RB1".into()),
            container_name: Some("rtbrick".into()),
            element_name: Some("leaf01".into()),
            host_name: Some("leaf01.lab".into()),
            ..Default::default()
        };
        let t = template("{{ family }} {{ container_name }} {{ element_name }} {{ host_name }}");
        assert_eq!(
            render_text(&t, &ctx(&rtbrick, &p)).expect("renders"),
            "rtbrick rtbrick leaf01 leaf01.lab"
        );
    }

    #[test]
    fn a_switchs_hostname_and_variables_win_over_its_profiles() {
        let (d, p) = (device(), profile());
        let t = template("{{ hostname }} {{ variables.site }} {{ variables.vlan }} {{ variables.loopback }}");
        let sw = SwitchSnapshot {
            hostname: Some("leaf17".into()),
            variables: BTreeMap::from([("vlan".into(), "7".into()), ("loopback".into(), "10.0.0.17".into())]),
            ..Default::default()
        };
        let with = RenderContext { switch: Some(&sw), ..ctx(&d, &p) };
        assert_eq!(render_text(&t, &with).expect("renders"), "leaf17 par1 7 10.0.0.17");
        // Without the Switch, the profile's values: `loopback` is undefined, an error naming it.
        let e = render_text(&t, &ctx(&d, &p)).expect_err("no loopback");
        assert!(e.to_string().contains("`variables.loopback` is undefined"), "{e}");
        // A Switch with variables only keeps the profile's hostname.
        let vars_only = SwitchSnapshot { hostname: None, ..sw.clone() };
        let with = RenderContext { switch: Some(&vars_only), ..ctx(&d, &p) };
        assert_eq!(render_text(&t, &with).expect("renders"), "leaf01 par1 7 10.0.0.17");
    }

    #[test]
    fn nothing_is_escaped() {
        let d = device();
        let mut p = profile();
        p.variables.insert("motd".into(), "<b>\"hi\" & 'bye'</b>".into());
        let t = template("{{ variables.motd }}");
        for what in ["files.index.html", "files.x.json", "files.x.yaml", "files.x.xml"] {
            assert_eq!(
                render_text_named(&t, &ctx(&d, &p), what).expect("renders"),
                "<b>\"hi\" & 'bye'</b>",
                "{what}"
            );
        }
    }

    #[test]
    fn an_undefined_variable_is_an_error_naming_it_and_the_profile() {
        let (d, p) = (device(), profile());
        let t = template("hostname {{ hostname }}\nsite {{ variables.sitee }}\n");
        let e = render_text_named(&t, &ctx(&d, &p), "files.startup").expect_err("undefined");
        assert_eq!(e.profile(), "net/leaf");
        assert_eq!(e.what(), "files.startup");
        assert_eq!(e.line(), Some(2));
        let msg = e.to_string();
        assert!(msg.starts_with("profile net/leaf, files.startup: undefined value"), "{msg}");
        assert!(msg.contains("`variables.sitee` is undefined"), "{msg}");
        assert!(msg.contains("(in files.startup:2)"), "{msg}");

        let e = render_text(&template("{{ hostnme }}"), &ctx(&d, &p)).expect_err("undefined");
        let msg = e.to_string();
        assert!(msg.contains("`hostnme` is undefined"), "{msg}");
        assert!(msg.contains("net/leaf"), "{msg}");

        // Strict: even testing an undefined variable fails; `is defined` works.
        assert!(render_text(&template("{% if nope %}x{% endif %}"), &ctx(&d, &p)).is_err());
        let t = template("{% if nope is defined %}x{% else %}y{% endif %}");
        assert_eq!(render_text(&t, &ctx(&d, &p)).expect("is defined"), "y");
    }

    #[test]
    fn absent_facts_are_none_testable_but_not_printable() {
        let d = DeviceIdentity { family: Family::Sonic, serial: Some("S1".into()), ..Default::default() };
        let p = ProfileSnapshot { namespace: "net".into(), name: "bare".into(), ..Default::default() };
        let c = ctx(&d, &p);
        let t = template(
            "{% if mac %}{{ mac }}{% else %}no-mac{% endif %} {{ hostname or serial }} {{ model | default('generic', true) }}",
        );
        assert_eq!(render_text(&t, &c).expect("guarded"), "no-mac S1 generic");

        let e = render_text_named(&template("ok\nhostname {{ hostname }}"), &c, "files.startup")
            .expect_err("none");
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("cannot print none"), "{e}");
        assert!(e.to_string().contains("profile net/bare, files.startup"), "{e}");
    }

    #[test]
    fn check_template_reports_syntax_errors_with_line() {
        assert_eq!(check_template(&template("a {{ serial }}\n{% if mac %}x{% endif %}"), "files.a"), Ok(()));
        // Undefined variables are only known per device.
        assert_eq!(check_template(&template("{{ whatever }}"), "files.a"), Ok(()));

        let e =
            check_template(&template("line one\n{% if mac %}\nno end"), "files.startup").expect_err("syntax");
        assert_eq!(e.profile(), "");
        assert_eq!(e.what(), "files.startup");
        assert!(e.line().is_some());
        let msg = e.to_string();
        assert!(msg.starts_with("files.startup: syntax error"), "{msg}");
        assert!(msg.contains("(in files.startup:"), "{msg}");

        let e = check_template(&template("a\nb {{ serial "), "ztp.sections[1]").expect_err("syntax");
        assert_eq!(e.line(), Some(2));
        let e = e.with_profile("net/leaf");
        assert!(e.to_string().starts_with("profile net/leaf, ztp.sections[1]: syntax error"), "{e}");
    }

    fn section(kind: ZtpSectionKind) -> ZtpSection {
        ZtpSection {
            kind,
            content: None,
            description: None,
            ignore_result: None,
            halt_on_failure: None,
            restart_ztp_on_failure: None,
            clear_config: None,
            save_config: None,
            skip_reboot: None,
            uninstall: None,
            ping_hosts: vec![],
            ping6_hosts: vec![],
            ping_count: None,
            retry_count: None,
            retry_interval: None,
            deadline: None,
            timeout: None,
        }
    }

    fn five_sections() -> (Snapshot, ZtpSnapshot) {
        let image_key = "net/nvos-25.02";
        let snapshot = Snapshot {
            format: 1,
            images: BTreeMap::from([(
                image_key.to_owned(),
                ImageRef {
                    path: "nvos/25.02.2002/nvos-amd64-25.02.2002.bin".into(),
                    sha256: "ab".repeat(32),
                    size: 42,
                },
            )]),
            ..Default::default()
        };
        let ztp = ZtpSnapshot {
            sections: vec![
                ZtpSectionSnapshot {
                    section: ZtpSection {
                        description: Some("install NVOS".into()),
                        skip_reboot: Some(false),
                        uninstall: Some(true),
                        halt_on_failure: Some(true),
                        ..section(ZtpSectionKind::Image)
                    },
                    resolved: Some(Resolved::Image(image_key.into())),
                },
                ZtpSectionSnapshot {
                    section: ZtpSection { clear_config: Some(true), ..section(ZtpSectionKind::CommandsList) },
                    resolved: Some(Resolved::Text(template(
                        "nv set system hostname {{ hostname }}\nnv config apply -y\n",
                    ))),
                },
                ZtpSectionSnapshot {
                    section: ZtpSection {
                        clear_config: Some(false),
                        save_config: Some(true),
                        ..section(ZtpSectionKind::StartupFile)
                    },
                    resolved: Some(Resolved::Text(Text { text: "- set: {}\n".into(), template: false })),
                },
                ZtpSectionSnapshot {
                    section: ZtpSection {
                        ping_hosts: vec!["198.51.100.5".into(), "localhost".into()],
                        ping6_hosts: vec!["2001:db8::5".into()],
                        ping_count: Some(10),
                        retry_count: Some(3),
                        retry_interval: Some(5),
                        deadline: Some(30),
                        timeout: Some(2),
                        ignore_result: Some(true),
                        ..section(ZtpSectionKind::ConnectivityCheck)
                    },
                    resolved: None,
                },
                ZtpSectionSnapshot {
                    section: ZtpSection {
                        timeout: Some(300),
                        restart_ztp_on_failure: Some(false),
                        ..section(ZtpSectionKind::ProvisioningScript)
                    },
                    resolved: Some(Resolved::Text(template("#!/bin/sh\necho {{ serial }}\n"))),
                },
            ],
            restart_ztp_no_config: Some(true),
            restart_ztp_on_failure: Some(false),
        };
        (snapshot, ztp)
    }

    fn section_url(key: &str) -> String {
        format!("{URL}/ztp/XYZ123004/{key}")
    }

    fn image_url(img: &ImageRef) -> String {
        format!("{URL}/images/{}", img.path)
    }

    #[test]
    fn full_ztp_json() {
        let (d, p) = (device(), profile());
        let (snapshot, ztp) = five_sections();
        let got = ztp_json(&ctx(&d, &p), &snapshot, &ztp, &section_url, &image_url).expect("ztp json");
        let expected = json!({
            "ztp": {
                "01-image": {
                    "description": "install NVOS",
                    "halt-on-failure": true,
                    "install": {
                        "url": "http://10.0.0.1:8080/images/nvos/25.02.2002/nvos-amd64-25.02.2002.bin",
                        "skip-reboot": false
                    },
                    "uninstall": true
                },
                "02-commands-list": {
                    "url": "http://10.0.0.1:8080/ztp/XYZ123004/02-commands-list",
                    "clear-config": true
                },
                "03-startup-file": {
                    "url": "http://10.0.0.1:8080/ztp/XYZ123004/03-startup-file",
                    "clear-config": false,
                    "save-config": true
                },
                "04-connectivity-check": {
                    "ignore-result": true,
                    "ping-hosts": ["198.51.100.5", "localhost"],
                    "ping6-hosts": ["2001:db8::5"],
                    "ping-count": 10,
                    "retry-count": 3,
                    "retry-interval": 5,
                    "deadline": 30,
                    "timeout": 2
                },
                "05-provisioning-script": {
                    "url": "http://10.0.0.1:8080/ztp/XYZ123004/05-provisioning-script",
                    "timeout": 300,
                    "restart-ztp-on-failure": false
                },
                "restart-ztp-no-config": true,
                "restart-ztp-on-failure": false
            }
        });
        assert_eq!(got, expected);

        // Lexical order of the section keys is list order.
        let obj = got["ztp"].as_object().expect("object");
        let mut keys: Vec<&String> = obj.keys().filter(|k| k.as_bytes()[0].is_ascii_digit()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "01-image",
                "02-commands-list",
                "03-startup-file",
                "04-connectivity-check",
                "05-provisioning-script"
            ]
        );
    }

    #[test]
    fn minimal_ztp_json_emits_only_what_is_set() {
        let (d, p) = (device(), profile());
        let ztp = ZtpSnapshot {
            sections: vec![
                ZtpSectionSnapshot {
                    section: ZtpSection { uninstall: Some(true), ..section(ZtpSectionKind::Image) },
                    resolved: None,
                },
                ZtpSectionSnapshot { section: section(ZtpSectionKind::ConnectivityCheck), resolved: None },
            ],
            ..Default::default()
        };
        let got = ztp_json(&ctx(&d, &p), &Snapshot::default(), &ztp, &section_url, &image_url).expect("json");
        assert_eq!(got, json!({"ztp": {"01-image": {"uninstall": true}, "02-connectivity-check": {}}}));
        assert_eq!(
            ztp_json(&ctx(&d, &p), &Snapshot::default(), &ZtpSnapshot::default(), &section_url, &image_url)
                .expect("json"),
            json!({"ztp": {}})
        );
    }

    #[test]
    fn a_provisioning_script_from_an_image_points_at_the_image() {
        let (d, p) = (device(), profile());
        let (snapshot, _) = five_sections();
        let ztp = ZtpSnapshot {
            sections: vec![ZtpSectionSnapshot {
                section: section(ZtpSectionKind::ProvisioningScript),
                resolved: Some(Resolved::Image("net/nvos-25.02".into())),
            }],
            ..Default::default()
        };
        let got = ztp_json(&ctx(&d, &p), &snapshot, &ztp, &section_url, &image_url).expect("json");
        assert_eq!(
            got["ztp"]["01-provisioning-script"]["url"],
            json!("http://10.0.0.1:8080/images/nvos/25.02.2002/nvos-amd64-25.02.2002.bin")
        );
    }

    /// A Switch's `osImage` replaces the image of the profile's image section (and only that:
    /// a provisioning script from an image keeps its own); one not in the snapshot is an error
    /// naming it, never the profile's image instead.
    #[test]
    fn a_switchs_os_image_is_what_the_image_section_installs() {
        let (d, p) = (device(), profile());
        let (mut snapshot, mut ztp) = five_sections();
        let pinned =
            ImageRef { path: "nvos/25.05/nvos-amd64-25.05.bin".into(), sha256: "cd".repeat(32), size: 9 };
        snapshot.images.insert("net/nvos-25.05".into(), pinned);
        ztp.sections.push(ZtpSectionSnapshot {
            section: section(ZtpSectionKind::ProvisioningScript),
            resolved: Some(Resolved::Image("net/nvos-25.02".into())),
        });
        let switch = SwitchSnapshot { os_image: Some("net/nvos-25.05".into()), ..Default::default() };
        let c = RenderContext { switch: Some(&switch), ..ctx(&d, &p) };
        let got = ztp_json(&c, &snapshot, &ztp, &section_url, &image_url).expect("json");
        assert_eq!(
            got["ztp"]["01-image"]["install"]["url"],
            json!("http://10.0.0.1:8080/images/nvos/25.05/nvos-amd64-25.05.bin")
        );
        assert_eq!(
            got["ztp"]["06-provisioning-script"]["url"],
            json!("http://10.0.0.1:8080/images/nvos/25.02.2002/nvos-amd64-25.02.2002.bin")
        );
        let unpinned = ztp_json(&ctx(&d, &p), &snapshot, &ztp, &section_url, &image_url).expect("json");
        assert_eq!(
            unpinned["ztp"]["01-image"]["install"]["url"],
            json!("http://10.0.0.1:8080/images/nvos/25.02.2002/nvos-amd64-25.02.2002.bin")
        );
        let not_ready = SwitchSnapshot { os_image: Some("net/nvos-26".into()), ..Default::default() };
        let c = RenderContext { switch: Some(&not_ready), ..ctx(&d, &p) };
        let e = ztp_json(&c, &snapshot, &ztp, &section_url, &image_url).expect_err("not in the snapshot");
        assert!(matches!(&e, RenderError::MissingImage { image, .. } if image == "net/nvos-26"), "{e:?}");
    }

    #[test]
    fn ztp_json_errors() {
        let (d, p) = (device(), profile());
        let c = ctx(&d, &p);
        let one = |s: ZtpSectionSnapshot| ZtpSnapshot { sections: vec![s], ..Default::default() };

        let missing = one(ZtpSectionSnapshot {
            section: section(ZtpSectionKind::Image),
            resolved: Some(Resolved::Image("net/gone".into())),
        });
        let e = ztp_json(&c, &Snapshot::default(), &missing, &section_url, &image_url)
            .expect_err("missing image");
        assert_eq!(
            e,
            RenderError::MissingImage {
                profile: "net/leaf".into(),
                what: "ztp.01-image".into(),
                image: "net/gone".into()
            }
        );
        assert_eq!(e.to_string(), "profile net/leaf, ztp.01-image: OsImage net/gone is not in the snapshot");

        let no_content =
            one(ZtpSectionSnapshot { section: section(ZtpSectionKind::CommandsList), resolved: None });
        let e = ztp_json(&c, &Snapshot::default(), &no_content, &section_url, &image_url)
            .expect_err("no content");
        assert!(matches!(e, RenderError::InvalidSection { .. }), "{e:?}");
        assert_eq!(e.what(), "ztp.01-commands-list");

        let empty_image = one(ZtpSectionSnapshot { section: section(ZtpSectionKind::Image), resolved: None });
        assert!(ztp_json(&c, &Snapshot::default(), &empty_image, &section_url, &image_url).is_err());

        let text_image = one(ZtpSectionSnapshot {
            section: section(ZtpSectionKind::Image),
            resolved: Some(Resolved::Text(template("x"))),
        });
        assert!(ztp_json(&c, &Snapshot::default(), &text_image, &section_url, &image_url).is_err());
    }

    #[test]
    fn section_contents() {
        let (d, p) = (device(), profile());
        let c = ctx(&d, &p);
        let (_, ztp) = five_sections();
        assert_eq!(
            section_content(&c, &ztp, "02-commands-list").expect("renders").as_deref(),
            Some("nv set system hostname leaf01\nnv config apply -y\n")
        );
        assert_eq!(
            section_content(&c, &ztp, "03-startup-file").expect("plain").as_deref(),
            Some("- set: {}\n")
        );
        assert_eq!(
            section_content(&c, &ztp, "05-provisioning-script").expect("renders").as_deref(),
            Some("#!/bin/sh\necho XYZ123004\n")
        );
        // Images, sections without content, wrong numbers or kinds, unknown keys: nothing.
        for key in ["01-image", "04-connectivity-check", "02-startup-file", "06-commands-list", "", "../etc"]
        {
            assert_eq!(section_content(&c, &ztp, key).expect("no error"), None, "{key}");
        }

        let mut broken = ztp.clone();
        broken.sections[1].resolved = Some(Resolved::Text(template("{{ nope }}")));
        let e = section_content(&c, &broken, "02-commands-list").expect_err("undefined");
        assert_eq!(e.what(), "ztp.02-commands-list");
        assert!(e.to_string().contains("`nope` is undefined"), "{e}");
    }

    #[test]
    fn section_keys() {
        assert_eq!(section_key(0, ZtpSectionKind::Image), "01-image");
        assert_eq!(section_key(1, ZtpSectionKind::CommandsList), "02-commands-list");
        assert_eq!(section_key(2, ZtpSectionKind::StartupFile), "03-startup-file");
        assert_eq!(section_key(3, ZtpSectionKind::ConnectivityCheck), "04-connectivity-check");
        assert_eq!(section_key(63, ZtpSectionKind::ProvisioningScript), "64-provisioning-script");
        // The names agree with the CRD's serde names.
        for k in [
            ZtpSectionKind::Image,
            ZtpSectionKind::CommandsList,
            ZtpSectionKind::StartupFile,
            ZtpSectionKind::ConnectivityCheck,
            ZtpSectionKind::ProvisioningScript,
        ] {
            assert_eq!(serde_json::to_value(k).expect("serialises"), json!(section_kind_name(k)));
        }
    }

    #[test]
    fn cumulus_script_is_rendered_with_lf_endings() {
        let (d, p) = (device(), profile());
        let c = ctx(&d, &p);
        let t = template(
            "#!/bin/bash\r\n# CUMULUS-AUTOPROVISIONING\r\nhostnamectl set-hostname {{ hostname }}\rcurl {{ server_url }}/done\r\n",
        );
        let script = cumulus_script(&t, &c).expect("script");
        assert_eq!(
            script,
            "#!/bin/bash\n# CUMULUS-AUTOPROVISIONING\nhostnamectl set-hostname leaf01\ncurl http://10.0.0.1:8080/done\n"
        );
        assert!(!has_crlf(&script));

        // CRs coming from a variable are normalised too.
        let mut p2 = profile();
        p2.variables.insert("extra".into(), "a\r\nb".into());
        let t = template("# CUMULUS-AUTOPROVISIONING\n{{ variables.extra }}\n");
        assert_eq!(cumulus_script(&t, &ctx(&d, &p2)).expect("script"), "# CUMULUS-AUTOPROVISIONING\na\nb\n");

        let plain = Text { text: "#!/bin/sh\n# CUMULUS-AUTOPROVISIONING\nexit 0\n".into(), template: false };
        assert_eq!(cumulus_script(&plain, &c).expect("script"), plain.text);
    }

    #[test]
    fn cumulus_script_without_marker_is_an_error() {
        let (d, p) = (device(), profile());
        let t = Text { text: "#!/bin/bash\necho hi\n".into(), template: false };
        let e = cumulus_script(&t, &ctx(&d, &p)).expect_err("no marker");
        assert_eq!(
            e,
            RenderError::MissingMarker { profile: "net/leaf".into(), what: "cumulus.script".into() }
        );
        assert_eq!(
            e.to_string(),
            "profile net/leaf, cumulus.script: the script does not contain the marker CUMULUS-AUTOPROVISIONING"
        );
        // The marker may come from the template's output.
        let mut p2 = profile();
        p2.variables.insert("marker".into(), "CUMULUS-AUTOPROVISIONING".into());
        let t = template("# {{ variables.marker }}\n");
        assert!(cumulus_script(&t, &ctx(&d, &p2)).is_ok());
        // A template error is reported as such.
        let e = cumulus_script(&template("# CUMULUS-AUTOPROVISIONING {{ nope }}"), &ctx(&d, &p))
            .expect_err("undefined");
        assert!(matches!(e, RenderError::Template { .. }), "{e:?}");
    }

    #[test]
    fn crlf_detection() {
        assert!(has_crlf("a\r\nb"));
        assert!(has_crlf("a\rb"));
        assert!(!has_crlf("a\nb"));
        assert!(!has_crlf(""));
    }

    /// Every template text of the shipped example profiles (inline in a profile, or a ConfigMap
    /// value a profile uses as a template) renders for a sample device of its profile, on a
    /// server with a report key and on one without; with one, the scripts carry the token.
    #[test]
    fn the_example_templates_render_with_and_without_a_report_key() {
        fn inline_templates(v: &Json, out: &mut Vec<String>) {
            match v {
                Json::Object(m) => {
                    if m.get("template") == Some(&Json::Bool(true))
                        && let Some(Json::String(t)) = m.get("inline")
                    {
                        out.push(t.clone());
                    }
                    m.values().for_each(|v| inline_templates(v, out));
                }
                Json::Array(a) => a.iter().for_each(|v| inline_templates(v, out)),
                _ => {}
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/switchprofiles");
        let mut rendered = 0;
        for entry in std::fs::read_dir(dir).expect("examples") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            let docs = crate::manifests::parse_documents(&text).expect("YAML");
            let config_maps: Vec<&Json> =
                docs.iter().map(|(_, d)| d).filter(|d| d["kind"] == "ConfigMap").collect();
            for (_, doc) in docs.iter().filter(|(_, d)| d["kind"] == "SwitchProfile") {
                let spec = &doc["spec"];
                let profile: ProfileSnapshot = serde_json::from_value(json!({
                    "namespace": "default", "name": doc["metadata"]["name"],
                    "serialNumbers": spec["match"].get("serialNumbers").cloned().unwrap_or(json!([])),
                    "models": spec["match"].get("models").cloned().unwrap_or(json!([])),
                    "hostname": spec.get("hostname"), "variables": spec.get("variables").cloned().unwrap_or(json!({})),
                }))
                .expect("a profile snapshot");
                let mut templates = Vec::new();
                inline_templates(spec, &mut templates);
                for cm in &config_maps {
                    let used = spec.to_string().contains(&format!("\"name\":{}", cm["metadata"]["name"]));
                    if used {
                        templates.extend(
                            cm["data"]
                                .as_object()
                                .into_iter()
                                .flatten()
                                .filter_map(|(_, v)| v.as_str().map(str::to_owned)),
                        );
                    }
                }
                let device = super::super::trial::sample_device(&profile, None, Family::Cumulus);
                for template in templates {
                    for token in [Some("tok-123".to_owned()), None] {
                        let ctx = RenderContext {
                            device: &device,
                            profile: &profile,
                            switch: None,
                            server_url: URL,
                            report_token: token.clone(),
                        };
                        let text = Text { text: template.clone(), template: true };
                        let out = render_text_named(&text, &ctx, "example")
                            .unwrap_or_else(|e| panic!("{}: {e}\n{template}", path.display()));
                        if token.is_some() && template.contains("report_token") {
                            assert!(out.contains("Bearer tok-123") && out.contains("/report"), "{out}");
                        }
                        rendered += 1;
                    }
                }
            }
        }
        assert!(rendered >= 12, "{rendered} renders");
    }
}
