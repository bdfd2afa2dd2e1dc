//! What a switch of each family asks first, for `ztpctl device` (a dry run against the server):
//! the entry URL the DHCP reservations of [`crate::dhcp`] point it at, and exactly the headers
//! that family sends (docs/protocols.md §1.6 ONIE, §2.3 Cumulus, §3.2 SONiC, §3.4 NVOS, §4 RtBrick).
//! Pure: the HTTP client lives in the binary.

use crate::{
    profile::identity::{Family, names, normalize_mac},
    routes::url,
};

/// The RtBrick CTRLD configuration files, in the order CTRLD asks for them (seed 002).
pub const RTBRICK_FILES: [&str; 6] = ["ctrld", "element", "ctrldrbac", "startup", "tls", "accessjwks"];

/// Who the simulated device is.
#[derive(Debug, Clone, Default)]
pub struct Device {
    pub serial: String,
    /// Any MAC notation; sent lower case by ONIE, upper case by the others.
    pub mac: Option<String>,
    /// ONIE machine (`accton_as7712_32x`), `PRODUCT-NAME` or `CUMULUS-PRODUCTNAME`.
    pub model: Option<String>,
    /// `ONIE-OPERATION`: `os-install` or `onie-update`.
    pub onie_operation: String,
}

/// Whether the answer is something to show (a ZTP JSON, a script, a config file) or an image
/// (asked with `HEAD`: size and ETag, never the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Body,
    Image,
}

/// One request the device would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRequest {
    /// `GET` or `HEAD`.
    pub method: &'static str,
    pub url: String,
    /// In the order the device sends them; empty values are sent (ONIE sends every header).
    pub headers: Vec<(&'static str, String)>,
    pub expect: Expect,
    /// A 404 is a normal answer (RtBrick: CTRLD skips a missing file).
    pub not_found_ok: bool,
}

/// Why the device cannot be simulated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DryRunError {
    #[error("{0:?} is not a MAC address (six hex pairs)")]
    Mac(String),
    #[error("serial number: {0}")]
    Serial(#[from] crate::api::names::SegmentError),
    #[error("a dry run is of one family: onie, nvos, sonic, cumulus or rtbrick")]
    NoFamily,
}

/// The identity headers `family` sends for `device`.
pub fn headers(family: Family, device: &Device) -> Result<Vec<(&'static str, String)>, DryRunError> {
    let mac = match &device.mac {
        Some(m) => Some(normalize_mac(m).ok_or_else(|| DryRunError::Mac(m.clone()))?),
        None => None,
    };
    let lower = mac.clone().unwrap_or_default();
    let upper = lower.to_ascii_uppercase();
    let model = device.model.clone().unwrap_or_default();
    let serial = device.serial.clone();
    let mut h: Vec<(&'static str, String)> = Vec::new();
    match family {
        Family::Onie => {
            h.push(("User-Agent", "onie/1.0 (Linux-5.10.0 2024.11; BusyBox-v1.25.1)".into()));
            h.push((names::ONIE_SERIAL_NUMBER, serial));
            h.push((names::ONIE_ETH_ADDR, lower));
            h.push((names::ONIE_VENDOR_ID, String::new()));
            h.push((names::ONIE_MACHINE, model));
            h.push((names::ONIE_MACHINE_REV, "0".into()));
            h.push((names::ONIE_ARCH, "x86_64".into()));
            h.push(("ONIE-SECURITY-KEY", String::new()));
            h.push((names::ONIE_OPERATION, device.onie_operation.clone()));
            h.push((names::ONIE_VERSION, "2024.11".into()));
        }
        Family::Nvos | Family::Sonic => {
            let ua = if family == Family::Nvos { "NVOS-ZTP/0.1" } else { "SONiC-ZTP/0.1" };
            h.push(("User-Agent", ua.into()));
            // Each omitted when the EEPROM has no value (§3.2).
            if !model.is_empty() {
                h.push((names::PRODUCT_NAME, model));
            }
            h.push((names::SERIAL_NUMBER, serial));
            if mac.is_some() {
                h.push((names::BASE_MAC_ADDRESS, upper));
            }
        }
        Family::Cumulus => {
            h.push(("User-Agent", "CumulusLinux-AutoProvision/0.4".into()));
            h.push(("CUMULUS-ARCH", "x86_64".into()));
            h.push((names::CUMULUS_BASE_MAC, upper.clone()));
            h.push(("CUMULUS-MGMT-MAC", upper));
            h.push((names::CUMULUS_PRODUCTNAME, model));
            h.push((names::CUMULUS_SERIAL, serial));
            h.push(("CUMULUS-PROV-COUNT", "0".into()));
            h.push(("CUMULUS-PROV-MAX", "32".into()));
        }
        Family::RtBrick => {
            h.push((names::ONIE_SERIAL_NUMBER, serial.clone()));
            // Not one of CTRLD's own headers: sent only when asked, so a model default matches.
            if !model.is_empty() {
                h.push((names::ONIE_MACHINE, model));
            }
            h.push((names::CONTAINER_NAME, "rtbrick".into()));
            h.push((names::ELEMENT_NAME, serial.clone()));
            h.push((names::HOST_NAME, serial));
        }
        Family::Unknown => return Err(DryRunError::NoFamily),
    }
    Ok(h)
}

/// The requests of the dry run: the family's entry URL (what DHCP points it at), or for RtBrick
/// every CTRLD configuration file. `server` has no trailing `/`.
pub fn requests(family: Family, device: &Device, server: &str) -> Result<Vec<DryRequest>, DryRunError> {
    crate::api::names::validate_segment("serial number", &device.serial)?;
    let headers = headers(family, device)?;
    let serial = &device.serial;
    let one = |method, url: String, expect| {
        vec![DryRequest { method, url, headers: headers.clone(), expect, not_found_ok: false }]
    };
    Ok(match family {
        Family::Onie => one("HEAD", url::onie(server), Expect::Image),
        Family::Nvos | Family::Sonic => one("GET", url::ztp_json(server, family, Some(serial)), Expect::Body),
        Family::Cumulus => one("GET", url::cumulus(server, Some(serial)), Expect::Body),
        Family::Unknown => return Err(DryRunError::NoFamily),
        Family::RtBrick => RTBRICK_FILES
            .iter()
            .map(|f| DryRequest {
                method: "GET",
                url: url::rtbrick_config(server, f),
                headers: headers.clone(),
                expect: Expect::Body,
                not_found_ok: true,
            })
            .collect(),
    })
}

/// The image URLs a ZTP JSON installs (`ztp.<section>.install.url`), in section order: the dry
/// run asks them with `HEAD`.
pub fn image_urls(ztp_json: &serde_json::Value) -> Vec<String> {
    let Some(ztp) = ztp_json.get("ztp").and_then(|z| z.as_object()) else { return Vec::new() };
    let mut keys: Vec<&String> = ztp.keys().collect();
    keys.sort();
    keys.into_iter().filter_map(|k| ztp[k].get("install")?.get("url")?.as_str().map(str::to_owned)).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;
    use crate::profile::identity::DeviceIdentity;

    fn header_map(h: &[(&'static str, String)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            let name = HeaderName::from_bytes(k.as_bytes()).expect("name");
            m.append(name, HeaderValue::from_str(v).expect("value"));
        }
        m
    }

    /// The server reads back exactly who we pretend to be, and detects the family from the
    /// headers alone.
    #[test]
    fn the_server_recognises_each_simulated_family() {
        let device = Device {
            serial: "SN-LEAF07".into(),
            mac: Some("0C-42-A1-00-00-07".into()),
            model: Some("accton_as7712_32x".into()),
            onie_operation: "os-install".into(),
        };
        for (family, want) in [
            (Family::Onie, Family::Onie),
            (Family::Nvos, Family::Nvos),
            (Family::Sonic, Family::Sonic),
            (Family::Cumulus, Family::Cumulus),
            (Family::RtBrick, Family::RtBrick),
        ] {
            let h = header_map(&headers(family, &device).expect("headers"));
            let id = DeviceIdentity::from_headers(&h, Family::Unknown);
            assert_eq!(id.family, want);
            assert_eq!(id.serial.as_deref(), Some("SN-LEAF07"), "{want}");
            assert_eq!(id.models.last().map(String::as_str), Some("accton_as7712_32x"), "{want}");
            if family != Family::RtBrick {
                assert_eq!(id.mac.as_deref(), Some("0c:42:a1:00:00:07"), "{want}");
            }
        }
        let onie = headers(Family::Onie, &device).expect("headers");
        assert!(onie.contains(&("ONIE-ETH-ADDR", "0c:42:a1:00:00:07".into())));
        let cumulus = headers(Family::Cumulus, &device).expect("headers");
        assert!(cumulus.contains(&("CUMULUS-BASE-MAC", "0C:42:A1:00:00:07".into())));
    }

    #[test]
    fn entry_urls_match_the_dhcp_options() {
        let device = Device { serial: "S1".into(), onie_operation: "os-install".into(), ..Device::default() };
        let url = |f| requests(f, &device, "http://z").expect("requests")[0].url.clone();
        assert_eq!(url(Family::Onie), "http://z/onie");
        assert_eq!(url(Family::Nvos), "http://z/nvos/S1/ztp.json");
        assert_eq!(url(Family::Sonic), "http://z/sonic/S1/ztp.json");
        assert_eq!(url(Family::Cumulus), "http://z/cumulus/S1/ztp.sh");
        let rt = requests(Family::RtBrick, &device, "http://z").expect("requests");
        assert_eq!(rt.len(), RTBRICK_FILES.len());
        assert!(rt.iter().all(|r| r.not_found_ok && r.url.starts_with("http://z/ztp/config/")));
        assert_eq!(requests(Family::Onie, &device, "http://z").expect("onie")[0].method, "HEAD");
        let bad = Device { serial: "../x".into(), ..device.clone() };
        assert!(matches!(requests(Family::Nvos, &bad, "http://z"), Err(DryRunError::Serial(_))));
        let bad = Device { mac: Some("nope".into()), ..device };
        assert_eq!(requests(Family::Nvos, &bad, "http://z"), Err(DryRunError::Mac("nope".into())));
    }

    #[test]
    fn image_urls_in_section_order() {
        let json = serde_json::json!({"ztp": {
            "02-image": {"install": {"url": "http://z/b"}},
            "01-image": {"install": {"url": "http://z/a"}},
            "03-commands-list": {"url": "http://z/c"},
            "restart-ztp-no-config": false,
        }});
        assert_eq!(image_urls(&json), ["http://z/a", "http://z/b"]);
        assert!(image_urls(&serde_json::json!([])).is_empty());
    }
}
