//! A device request resolved to its profile: who is asking (its headers, and the serial number
//! its route names), which profile answers it, and what its answer did for the device's activity
//! ([`crate::activity`]): configuration served, image served, provisioned.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};

use super::{AppState, reply::Refusal, state::Loaded};
use crate::{
    activity::{DeviceOutcome, RenderFailure, Stage},
    api::validate_segment,
    profile::{
        identity::{DeviceIdentity, Family, IdentityHeaders, SentHeaders},
        render::RenderContext,
        snapshot::{ImageRef, ProfileSnapshot},
    },
    switch::token::ReportKey,
};

/// A device request resolved to its profile.
pub struct Device {
    pub loaded: Arc<Loaded>,
    /// Boxed: a request's device moves from finding to answering to logging, and the identity
    /// (a dozen fields) is most of its size.
    pub id: Box<DeviceIdentity>,
    pub profile: usize,
    /// The device's Switch (position in the snapshot's `switches`), when it has one there.
    pub switch: Option<usize>,
    /// This server's base URL as the device reached it (`server_url`); `None` when it cannot be
    /// told (see [`BaseUrl`](super::state::BaseUrl)).
    pub base: Option<String>,
    /// The server's report key (`--report-key-file`), for the `report_token` of templates.
    pub report_key: Option<Arc<ReportKey>>,
}

impl Device {
    pub fn profile(&self) -> &ProfileSnapshot {
        &self.loaded.snapshot.profiles[self.profile]
    }

    /// The install image the device's Switch pins (`spec.osImage`): `None` when it pins none,
    /// `Some(None)` while that OsImage is not in the snapshot (not Ready: the device gets no
    /// install image, never its profile's instead).
    pub fn pinned_install(&self) -> Option<Option<&ImageRef>> {
        let key = self.switch.and_then(|i| self.loaded.snapshot.switches[i].os_image.as_ref())?;
        Some(self.loaded.snapshot.images.get(key))
    }

    /// What reaching `stage` means for this device's activity (borrowed from the device: a
    /// response extension takes [`DeviceOutcome::into_owned`]).
    pub fn outcome(&self, stage: Stage) -> DeviceOutcome<'_> {
        let p = self.profile();
        DeviceOutcome {
            namespace: p.namespace.as_str().into(),
            profile: p.name.as_str().into(),
            serial: self.id.serial.as_deref().map(Into::into),
            mac: self.id.mac.as_deref().map(Into::into),
            stage,
        }
    }

    /// What templates see for this device (refused without a base URL).
    pub fn render_context(&self) -> Result<RenderContext<'_>, Refusal> {
        let server_url = base_or_refuse(self.base.as_deref())?;
        let report_token = self.report_key.as_ref().zip(self.id.serial.as_deref()).map(|(k, s)| k.token(s));
        let switch = self.switch.map(|i| &self.loaded.snapshot.switches[i]);
        Ok(RenderContext { device: &self.id, profile: self.profile(), switch, server_url, report_token })
    }
}

/// The base URL, or the refusal that says why there is none.
pub fn base_or_refuse(base: Option<&str>) -> Result<&str, Refusal> {
    base.ok_or(Refusal::NoBaseUrl)
}

/// Who is asking, before any profile is looked up: the device's identity, the loaded snapshot and
/// the base URL its answer's URLs start with.
pub struct Asking {
    pub loaded: Arc<Loaded>,
    pub id: Box<DeviceIdentity>,
    pub base: Option<String>,
    pub report_key: Option<Arc<ReportKey>>,
}

/// Identifies the device: from its headers (400 when one is longer than a path segment may be:
/// [`crate::profile::identity::check_identity_headers`]), and from the serial number in the path (where the
/// route has one) only when no header names one — a `dynamic-url` may build that segment from
/// the product name or host name, never a reason to take the device for another.
pub fn identify(
    state: &AppState,
    headers: &impl SentHeaders,
    family: Family,
    path_serial: Option<&str>,
) -> Result<Asking, Refusal> {
    let loaded = state.server.loaded().ok_or(Refusal::NoSnapshot)?;
    let read = IdentityHeaders::read(headers);
    read.check().map_err(Refusal::BadIdentity)?;
    let mut id = Box::new(DeviceIdentity::from_read(&read, family));
    if let Some(serial) = path_serial {
        if validate_segment("serial number", serial).is_err() {
            return Err(Refusal::NotForYou("not a serial number"));
        }
        id.serial.get_or_insert_with(|| serial.to_owned());
    }
    refuse_held(state, id.serial.as_deref())?;
    let report_key = state.reports.key.clone();
    Ok(Asking { loaded, id, base: state.server.base_url.for_request(headers), report_key })
}

impl Asking {
    /// The device's profile.
    pub fn find(self) -> Result<Device, Refusal> {
        let Asking { loaded, id, base, report_key } = self;
        let switch = loaded.index.switch_of(&id);
        match loaded.index.lookup(&id) {
            Some(m) => Ok(Device { profile: m.profile, switch, loaded, id, base, report_key }),
            None if switch.is_some_and(|s| loaded.snapshot.switches[s].profile.is_some()) => {
                Err(Refusal::NotForYou("its Switch pins a profile that is not ready"))
            }
            None => Err(Refusal::NotForYou("no profile matches this device")),
        }
    }
}

/// [`Refusal::Held`] for a serial whose Switch is on hold.
pub fn refuse_held(state: &AppState, serial: Option<&str>) -> Result<(), Refusal> {
    match serial {
        Some(serial) if state.switches.held.contains(serial) => Err(Refusal::Held),
        _ => Ok(()),
    }
}

/// [`identify`], then [`Asking::find`].
pub fn find_device(
    state: &AppState,
    headers: &HeaderMap,
    family: Family,
    path_serial: Option<&str>,
) -> Result<Device, Refusal> {
    identify(state, headers, family, path_serial)?.find()
}

/// Who sent a device request, for its log line and metrics: the identity its headers carry, with
/// the family the route names, and the serial number the route names where it has one
/// (`/{nvos|sonic}/{serial}/…`, `/cumulus/{serial}/ztp.sh`, `/ztp/…` for RtBrick,
/// `/v1/devices/{serial}/provisioned`) when no header gives one — the same rule as [`identify`],
/// so a device is logged as what it was answered as. A path serial that is not a valid name is
/// ignored.
pub fn request_identity(headers: &impl SentHeaders, path: &str) -> DeviceIdentity {
    let (family, serial) = crate::routes::named_by_path(path);
    let mut id = DeviceIdentity::from_headers(headers, family);
    if let Some(serial) = serial.filter(|s| validate_segment("serial number", s).is_ok()) {
        id.serial.get_or_insert_with(|| serial.to_owned());
    }
    id
}

/// A template failed for this device: the 500 with the reason (the profile's condition already
/// carries syntax errors; this is an undefined variable for this particular device), carrying a
/// [`RenderFailure`] for the request-log middleware (a Warning Event on the profile).
pub fn render_failed(device: &Device, e: impl std::fmt::Display) -> Refusal {
    let p = device.profile();
    tracing::warn!(profile = %format!("{}/{}", p.namespace, p.name), serial = device.id.serial.as_deref().unwrap_or("-"), error = %e, "render failed");
    Refusal::Render(Box::new(RenderFailure {
        namespace: p.namespace.clone(),
        profile: p.name.clone(),
        serial: device.id.serial.clone(),
        mac: device.id.mac.clone(),
        error: e.to_string(),
    }))
}

/// Marks a configuration response: recorded when it succeeded.
pub fn config_served(mut response: Response, device: &Device) -> Response {
    if response.status().is_success() {
        response.extensions_mut().insert(device.outcome(Stage::ConfigServed).into_owned());
    }
    response
}

/// Marks an image response: recorded for a 200 or 206 to a GET (a HEAD downloads nothing).
pub fn image_served(mut response: Response, device: &Device, method: &Method) -> Response {
    let status = response.status();
    if *method != Method::HEAD && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
        response.extensions_mut().insert(device.outcome(Stage::ImageServed).into_owned());
    }
    response
}

/// The device a request without a route-specific identity comes from (an image by path), when
/// its headers match a profile; refused when they name a device on hold.
pub fn device_by_headers(state: &AppState, headers: &HeaderMap) -> Result<Option<Device>, Refusal> {
    match find_device(state, headers, Family::Unknown, None) {
        Ok(device) => Ok(Some(device)),
        Err(Refusal::Held) => Err(Refusal::Held),
        Err(_) => Ok(None),
    }
}

/// `POST /v1/devices/{serial}/provisioned`: the callback a ZTP script makes when it is done. The
/// profile is found through the loaded snapshot's index by the serial in the path (or by the MAC
/// or model headers the callback sends); a device no profile matches gets 404. Unauthenticated
/// unless the server runs with `--require-report-token` (then it needs the device's report token,
/// as `POST /v1/devices/{serial}/report` always does).
#[utoipa::path(post, path = "/v1/devices/{serial}/provisioned", tag = "devices",
    params(("serial" = String, Path, description = "Serial number of the switch")),
    responses((status = 204, description = "Recorded: the profile's `status.devices` shows the device as provisioned"),
        (status = 403, description = "With --require-report-token: no token, or not this device's", body = String, content_type = "text/plain"),
        (status = 404, description = "No profile matches this device")))]
pub async fn provisioned(
    State(state): State<AppState>,
    Path(serial): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    if validate_segment("serial number", &serial).is_err() {
        return Err(Refusal::NotForYou("not a serial number"));
    }
    refuse_held(&state, Some(&serial))?;
    state.reports.check_callback(&serial, &headers)?;
    let device = find_device(&state, &headers, Family::Unknown, Some(&serial))?;
    state.metrics.provisioned();
    let p = device.profile();
    tracing::info!(target: "ztp_operator::device", serial = %serial, profile = %format!("{}/{}", p.namespace, p.name), "device provisioned");
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.extensions_mut().insert(device.outcome(Stage::Provisioned).into_owned());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    fn who(h: &[(&str, &str)], path: &str) -> (Family, Option<String>) {
        let id = request_identity(&headers(h), path);
        (id.family, id.serial)
    }

    #[test]
    fn per_serial_routes_name_the_device_without_headers() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(who(&[], "/nvos/MT2245X01/ztp.json"), (Family::Nvos, s("MT2245X01")));
        assert_eq!(who(&[], "/sonic/ABC123/sections/startup"), (Family::Sonic, s("ABC123")));
        assert_eq!(who(&[], "/cumulus/CU42/ztp.sh"), (Family::Cumulus, s("CU42")));
        assert_eq!(who(&[], "/v1/devices/DEV9/provisioned"), (Family::Unknown, s("DEV9")));
        assert_eq!(who(&[("CONTAINER-NAME", "rbfs")], "/ztp/config/startup").0, Family::RtBrick);
    }

    #[test]
    fn headers_identify_the_device_and_a_path_segment_never_overrides_them() {
        let onie = [("ONIE-SERIAL-NUMBER", "ON1"), ("ONIE-OPERATION", "os-install")];
        assert_eq!(who(&onie, "/onie-installer-x86_64"), (Family::Onie, Some("ON1".into())));
        let nvos = [("SERIAL-NUMBER", "HDR"), ("NVOS-VERSION", "25.02")];
        assert_eq!(who(&nvos, "/nvos/ztp.json"), (Family::Nvos, Some("HDR".into())));
        // A dynamic-url built from the product name: the device is still its header's serial.
        assert_eq!(who(&nvos, "/nvos/SN2201/ztp.json"), (Family::Nvos, Some("HDR".into())));
        let sonic = [("SERIAL-NUMBER", "SN-REAL"), ("PRODUCT-NAME", "7726-32X-O-AC-F")];
        assert_eq!(who(&sonic, "/sonic/7726-32X-O-AC-F/ztp.json"), (Family::Sonic, Some("SN-REAL".into())));
        assert_eq!(who(&sonic, "/sonic/leaf11/sections/01-firmware/plugin").1, Some("SN-REAL".into()));
    }

    #[test]
    fn a_hostile_path_serial_is_not_logged_as_one() {
        assert_eq!(who(&[], "/nvos/../ztp.json"), (Family::Nvos, None));
        assert_eq!(who(&[], "/cumulus/a%2Fb/ztp.sh").1, None);
        assert_eq!(who(&[], "/images/p/v/f").0, Family::Unknown);
    }
}
