//! NVIDIA NVOS and SONiC ZTP: a per-device ZTP JSON whose URLs point back at this server
//! (section contents and the image), served by headers (`/nvos/ztp.json`) or by serial in the
//! path (`/nvos/{serial}/ztp.json`, what a `dynamic-url` with identifier `serial-number` asks
//! for). NVOS gets the profile's `ztp` (NVOS's section kinds), SONiC its `sonic` (SONiC's
//! plugins). Their curl does not follow redirects: there are none.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};
use utoipa::IntoParams;

use super::{
    AppState,
    device::{Device, base_or_refuse, config_served, find_device, identify, render_failed},
    reply::{Refusal, rendered},
    state::RenderedKey,
};
use crate::{
    profile::{
        identity::{Family, SentHeaders},
        render::{RenderError, section_content, ztp_json},
        snapshot::{ImageRef, SonicSnapshot, ZtpSnapshot},
        sonic,
    },
    routes::{url, ztp_family},
};

/// `GET /{nvos|sonic}/ztp.json`: the device is identified by its headers.
#[utoipa::path(get, path = "/{family}/ztp.json", tag = "nvos-sonic",
    params(("family" = String, Path, description = "`nvos` or `sonic`"), ZtpHeaders),
    responses((status = 200, description = "This switch's ZTP JSON; its URLs point back at this server", content_type = "application/json"),
        (status = 404, description = "No profile matches, or the profile has no ZTP JSON")))]
pub async fn by_headers(
    State(state): State<AppState>,
    Path(family): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    document(&state, &family, &headers, None)
}

/// `GET /{nvos|sonic}/{serial}/ztp.json`.
#[utoipa::path(get, path = "/{family}/{serial}/ztp.json", tag = "nvos-sonic",
    params(("family" = String, Path, description = "`nvos` or `sonic`"), ("serial" = String, Path, description = "Serial number of the switch"), ZtpHeaders),
    responses((status = 200, description = "The ZTP JSON of the switch with this serial number", content_type = "application/json"),
        (status = 404, description = "No profile matches, or the profile has no ZTP JSON")))]
pub async fn by_serial(
    State(state): State<AppState>,
    Path((family, serial)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    document(&state, &family, &headers, Some(&serial))
}

fn document(
    state: &AppState,
    family: &str,
    headers: &HeaderMap,
    serial: Option<&str>,
) -> Result<Response, Refusal> {
    let family = ztp_family(family).ok_or(Refusal::NotForYou("unknown ZTP family"))?;
    Ok(answer(state, family, headers, serial)?.into_response())
}

/// The ZTP JSON of the device a request comes from, with the device it was rendered for; or why
/// not (no snapshot, no matching profile, nothing for this family in it, a render error). NVOS
/// gets the profile's `ztp`, SONiC its `sonic`: never the other's. A document depends only on the
/// family, the profile, the serial number and the base URL, so it is rendered once per snapshot
/// and then served from the snapshot's cache. The router sends it as
/// [`ZtpAnswer::into_response`]; the fast path writes the same head itself, without building a
/// response (both answer here).
///
/// A SONiC switch that names no serial number (no `SERIAL-NUMBER` header, no serial in the path)
/// gets [`sonic::chain_document`]: its engine then asks `/sonic/<serial>/ztp.json` with the
/// serial from its EEPROM.
pub fn answer(
    state: &AppState,
    family: Family,
    headers: &impl SentHeaders,
    serial: Option<&str>,
) -> Result<ZtpAnswer, Refusal> {
    let asking = identify(state, headers, family, serial)?;
    if family == Family::Sonic && asking.id.serial.is_none() {
        let body = json_body(&sonic::chain_document(base_or_refuse(asking.base.as_deref())?));
        return Ok(ZtpAnswer { body, device: None });
    }
    let device = asking.find()?;
    let profile = device.profile();
    // NVOS gets `ztp`, SONiC `sonic`; neither ever gets the other's.
    let document = match family {
        Family::Sonic => profile.sonic.as_ref().map(Document::Sonic).ok_or(
            "this profile has no SONiC ZTP JSON (spec.sonic; spec.ztp is NVOS's and is not served to SONiC)",
        ),
        _ => profile.ztp.as_ref().map(Document::Nvos).ok_or("this profile has no NVOS ZTP JSON (spec.ztp)"),
    }
    .map_err(Refusal::NotForYou)?;
    let serial = device.id.serial.as_deref().ok_or(Refusal::NotForYou("no serial number"))?;
    let base = base_or_refuse(device.base.as_deref())?;
    let key = RenderedKey { family, profile: device.profile, serial, base };
    // The context (with the report token, a keyed hash) only for a document not cached yet.
    let body = device.loaded.ztp_json.get_or_render(key, || {
        let ctx = device.render_context()?;
        let image_url = |img: &ImageRef| url::image(base, &img.path);
        let snapshot = &device.loaded.snapshot;
        let json = match document {
            Document::Sonic(s) => {
                let part_url = |key: &str, part: &str| url::section_part(base, family, serial, key, part);
                sonic::document(&ctx, snapshot, s, &sonic::Urls { part: &part_url, image: &image_url })
            }
            Document::Nvos(z) => {
                let section_url = |key: &str| url::section(base, family, serial, key);
                ztp_json(&ctx, snapshot, z, &section_url, &image_url)
            }
        }
        .map_err(|e| match e {
            RenderError::MissingImage { image, .. } if ctx.pinned_install() == Some(image.as_str()) => {
                Refusal::PinnedImageNotReady
            }
            e => render_failed(&device, e),
        })?;
        Ok(json_body(&json))
    })?;
    Ok(ZtpAnswer { body, device: Some(device) })
}

/// A device's ZTP JSON (see [`answer`]).
pub struct ZtpAnswer {
    /// The document, as served.
    pub body: Bytes,
    /// Whom it was rendered for: its configuration is then served (`None`: SONiC's chain
    /// document, for a device that named no serial number yet).
    pub device: Option<Device>,
}

impl ZtpAnswer {
    pub const CONTENT_TYPE: &str = "application/json";

    /// The router's response: the document, marked as this device's configuration served.
    pub fn into_response(self) -> Response {
        let response = rendered(Self::CONTENT_TYPE, self.body);
        match &self.device {
            Some(device) => config_served(response, device),
            None => response,
        }
    }
}

/// The ZTP JSON a family gets from a profile.
#[derive(Clone, Copy)]
enum Document<'a> {
    Nvos(&'a ZtpSnapshot),
    Sonic(&'a SonicSnapshot),
}

/// A JSON document as served: pretty, with a final newline.
fn json_body(json: &serde_json::Value) -> Bytes {
    let mut body = serde_json::to_vec_pretty(json).unwrap_or_default();
    body.push(b'\n');
    Bytes::from(body)
}

/// `GET /nvos/{serial}/sections/{key}`: the commands list, startup YAML or script of one NVOS
/// section, rendered for this device.
#[utoipa::path(get, path = "/{family}/{serial}/sections/{key}", tag = "nvos-sonic",
    params(("family" = String, Path, description = "`nvos`"), ("serial" = String, Path, description = "Serial number of the switch"), ("key" = String, Path, description = "The section's key, as the ZTP JSON names it")),
    responses((status = 200, description = "The section's file (commands list, startup YAML or script), rendered for this switch", content_type = "text/plain"),
        (status = 404, description = "No such device or section")))]
pub async fn section(
    State(state): State<AppState>,
    Path((family, serial, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    if ztp_family(&family) != Some(Family::Nvos) {
        return Err(Refusal::NotForYou("no such section"));
    }
    let device = find_device(&state, &headers, Family::Nvos, Some(&serial))?;
    let ztp = device.profile().ztp.as_ref().ok_or(Refusal::NotForYou("this profile has no ZTP JSON"))?;
    let ctx = device.render_context()?;
    match section_content(&ctx, ztp, &key).map_err(|e| render_failed(&device, e))? {
        Some(body) => Ok(config_served(rendered("text/plain; charset=utf-8", body), &device)),
        None => Err(Refusal::NotForYou("no such section")),
    }
}

/// `GET /sonic/{serial}/sections/{key}/{part}`: a file a SONiC section downloads (its
/// `config_db.json`, a pre-check or plugin script, a file of a `download` section), rendered for
/// this device.
#[utoipa::path(get, path = "/{family}/{serial}/sections/{key}/{part}", tag = "nvos-sonic",
    params(("family" = String, Path, description = "`sonic`"), ("serial" = String, Path, description = "Serial number of the switch"), ("key" = String, Path, description = "The section's key, as the ZTP JSON names it"), ("part" = String, Path, description = "`config_db.json`, `install-pre-check`, `remove-pre-check`, `plugin` or `file-N`")),
    responses((status = 200, description = "The file, rendered for this switch", content_type = "text/plain"),
        (status = 404, description = "No such device, section or part"),
        (status = 500, description = "The file does not render for this switch (e.g. a config_db.json that is not a JSON object)")))]
pub async fn sonic_part(
    State(state): State<AppState>,
    Path((family, serial, key, part)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    if ztp_family(&family) != Some(Family::Sonic) {
        return Err(Refusal::NotForYou("no such section"));
    }
    let device = find_device(&state, &headers, Family::Sonic, Some(&serial))?;
    let s =
        device.profile().sonic.as_ref().ok_or(Refusal::NotForYou("this profile has no SONiC ZTP JSON"))?;
    let content_type =
        if part == sonic::part::CONFIG_DB { "application/json" } else { "text/plain; charset=utf-8" };
    let ctx = device.render_context()?;
    match sonic::part_content(&ctx, s, &key, &part).map_err(|e| render_failed(&device, e))? {
        Some(body) => Ok(config_served(rendered(content_type, body), &device)),
        None => Err(Refusal::NotForYou("no such section")),
    }
}

/// The headers NVOS and SONiC ZTP send (docs/protocols.md §3.2, §3.4).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ZtpHeaders {
    /// Serial number of the switch.
    #[param(rename = "SERIAL-NUMBER")]
    serial_number: Option<String>,
    /// Base MAC address.
    #[param(rename = "BASE-MAC-ADDRESS")]
    base_mac: Option<String>,
    /// Product name, e.g. `N5110_LD` (matches `spec.match.models`).
    #[param(rename = "PRODUCT-NAME")]
    product_name: Option<String>,
    /// Running NVOS version (NVOS only).
    #[param(rename = "NVOS-VERSION")]
    nvos_version: Option<String>,
    /// Running SONiC version (SONiC only).
    #[param(rename = "SONiC-VERSION")]
    sonic_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::DeviceRoute;

    /// The ZTP JSON route of a path, as the connection loop reads it.
    fn route_of(path: &str) -> Option<(Family, Option<&str>)> {
        match DeviceRoute::parse(path)? {
            DeviceRoute::ZtpJson { family, serial } => Some((family, serial)),
            _ => None,
        }
    }

    #[test]
    fn ztp_json_routes_are_read_from_the_path() {
        assert_eq!(route_of("/nvos/ztp.json"), Some((Family::Nvos, None)));
        assert_eq!(route_of("/sonic/ztp.json"), Some((Family::Sonic, None)));
        assert_eq!(route_of("/nvos/MT2245X01/ztp.json"), Some((Family::Nvos, Some("MT2245X01"))));
        for not_one in [
            "/cumulus/ztp.json",
            "/nvos/MT2245X01/ztp.json/more",
            "/nvos/MT2245X01/sections/01-image",
            "/nvos//ztp.json",
            "/nvos/a%2Fb/ztp.json",
            "/nvos",
            "nvos/ztp.json",
            "/",
        ] {
            assert_eq!(route_of(not_one), None, "{not_one}");
        }
    }
}
