//! The device URL space, in one place and without HTTP machinery: what each path a switch asks
//! for means ([`DeviceRoute::parse`], the one parser of device paths: for the connection loop's
//! fast path, the image chooser and request logging), and how each is written ([`url`], for ZTP
//! JSON, DHCP reservations, `ztpctl device` and OsImage status). The axum router in
//! `serve::router` declares the same templates; [`TEMPLATES`] lists them and a test here pins each
//! to a sample path and what it parses to.
//!
//! | route | answers |
//! |---|---|
//! | `/onie`, `/{onie-installer…\|onie-updater…}` | ONIE: the install or update image |
//! | `/{nvos\|sonic}/ztp.json`, `/{nvos\|sonic}/{serial}/ztp.json` | NVOS / SONiC ZTP JSON |
//! | `/nvos/{serial}/sections/{key}`, `/sonic/{serial}/sections/{key}/{part}` | what a ZTP JSON points at |
//! | `/cumulus/ztp.sh`, `/cumulus/{serial}/ztp.sh` | the Cumulus ZTP script |
//! | `/ztp/image`, `/ztp/images/{file}`, `/ztp/config/{name}`, `/ztp/message` | RtBrick CTRLD |
//! | `/images/{platform}/{version}/{filename}` | an image by its store path |
//! | `/v1/firmware/{platform}/{version}[/checksum]` | a directory's firmware image (reference API) |
//! | `/v1/devices/{serial}/provisioned` | the callback of a finished ZTP script |
//! | `/v1/devices/{serial}/report` | a stage a script reports, with the device's report token |

use crate::profile::identity::Family;

/// The device route templates, as the router declares them (axum's `{name}` captures).
pub const TEMPLATES: &[&str] = &[
    "/onie",
    "/{name}",
    "/ztp/image",
    "/ztp/images/{file}",
    "/ztp/config/{name}",
    "/ztp/message",
    "/{family}/ztp.json",
    "/{family}/{serial}/ztp.json",
    "/{family}/{serial}/sections/{key}",
    "/{family}/{serial}/sections/{key}/{part}",
    "/cumulus/ztp.sh",
    "/cumulus/{serial}/ztp.sh",
    "/images/{platform}/{version}/{filename}",
    "/v1/firmware/{platform}/{version}",
    "/v1/firmware/{platform}/{version}/checksum",
    "/v1/devices/{serial}/provisioned",
    "/v1/devices/{serial}/report",
];

/// A path of each template, in [`TEMPLATES`] order: what the parser and the router are tested
/// with.
#[cfg(test)]
pub(crate) const SAMPLE_PATHS: [&str; 17] = [
    "/onie",
    "/onie-installer-x86_64-accton_as7712_32x-r0",
    "/ztp/image",
    "/ztp/images/rbfs.img",
    "/ztp/config/startup",
    "/ztp/message",
    "/sonic/ztp.json",
    "/nvos/MT2245X01/ztp.json",
    "/nvos/SN1/sections/01-image",
    "/sonic/SN1/sections/02-fw/plugin",
    "/cumulus/ztp.sh",
    "/cumulus/CU42/ztp.sh",
    "/images/sonic/4.1/sonic.bin",
    "/v1/firmware/sonic/4.1",
    "/v1/firmware/sonic/4.1/checksum",
    "/v1/devices/DEV9/provisioned",
    "/v1/devices/DEV9/report",
];

/// A device route, read from a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRoute<'a> {
    /// `/onie`: ONIE's fixed URL (DHCP option 114).
    Onie,
    /// `/{name}`: a name of ONIE's discovery waterfall, and the operation it names.
    OnieName(&'a str, Operation),
    /// `/{nvos|sonic}/ztp.json` (the device named by its headers) or `/{nvos|sonic}/{serial}/ztp.json`.
    ZtpJson { family: Family, serial: Option<&'a str> },
    /// `/{nvos|sonic}/{serial}/sections/{key}`: an NVOS section.
    ZtpSection { family: Family, serial: &'a str, key: &'a str },
    /// `/{nvos|sonic}/{serial}/sections/{key}/{part}`: a file of a SONiC section.
    SonicPart { family: Family, serial: &'a str, key: &'a str, part: &'a str },
    /// `/cumulus/ztp.sh` or `/cumulus/{serial}/ztp.sh`.
    Cumulus { serial: Option<&'a str> },
    /// `/ztp/image`: RtBrick's image, chosen like ONIE's.
    RtBrickImage,
    /// `/ztp/images/{file}`: one of the device's images by file name.
    RtBrickImageFile(&'a str),
    /// `/ztp/config/{name}`: a CTRLD configuration file.
    RtBrickConfig(&'a str),
    /// `/ztp/message`: CTRLD's status message.
    RtBrickMessage,
    /// `/images/{platform}/{version}/{filename}`.
    Image { platform: &'a str, version: &'a str, filename: &'a str },
    /// `/v1/firmware/{platform}/{version}`.
    Firmware { platform: &'a str, version: &'a str },
    /// `/v1/firmware/{platform}/{version}/checksum`.
    FirmwareChecksum { platform: &'a str, version: &'a str },
    /// `/v1/devices/{serial}/provisioned`.
    Provisioned { serial: &'a str },
    /// `/v1/devices/{serial}/report`.
    Report { serial: &'a str },
}

impl<'a> DeviceRoute<'a> {
    /// The route of a request path as it came off the wire (no query string). `None` for anything
    /// else, and for paths with percent-escapes, empty segments or a trailing slash: the router
    /// (which decodes escapes) answers those.
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        // One pass over the bytes (`split` and `contains` searched the path four times over, a
        // twentieth of a ZTP JSON answer): no escapes, at most six non-empty segments.
        let mut segments = [""; 6];
        let (mut count, mut start) = (0, 0);
        let bytes = rest.as_bytes();
        for i in 0..=bytes.len() {
            match bytes.get(i) {
                Some(b'%') => return None,
                Some(b'/') | None => {
                    // Cut at a `/` (ASCII) or the end: always a character boundary.
                    let segment = rest.get(start..i).filter(|s| !s.is_empty())?;
                    *segments.get_mut(count)? = segment;
                    (count, start) = (count + 1, i + 1);
                }
                Some(_) => {}
            }
        }
        use DeviceRoute::*;
        // Routes with a fixed first segment first: the router prefers them to `/{family}/…`.
        Some(match segments[..count] {
            ["onie"] => Onie,
            [name] => OnieName(name, operation_of_name(name)?),
            ["ztp", "image"] => RtBrickImage,
            ["ztp", "images", file] => RtBrickImageFile(file),
            ["ztp", "config", name] => RtBrickConfig(name),
            ["ztp", "message"] => RtBrickMessage,
            ["cumulus", "ztp.sh"] => Cumulus { serial: None },
            ["cumulus", serial, "ztp.sh"] => Cumulus { serial: Some(serial) },
            ["images", platform, version, filename] => Image { platform, version, filename },
            ["v1", "firmware", platform, version] => Firmware { platform, version },
            ["v1", "firmware", platform, version, "checksum"] => FirmwareChecksum { platform, version },
            ["v1", "devices", serial, "provisioned"] => Provisioned { serial },
            ["v1", "devices", serial, "report"] => Report { serial },
            [family, "ztp.json"] => ZtpJson { family: ztp_family(family)?, serial: None },
            [family, serial, "ztp.json"] => ZtpJson { family: ztp_family(family)?, serial: Some(serial) },
            [family, serial, "sections", key] => ZtpSection { family: ztp_family(family)?, serial, key },
            [family, serial, "sections", key, part] => {
                SonicPart { family: ztp_family(family)?, serial, key, part }
            }
            _ => return None,
        })
    }

    /// The family the path names (`/nvos/…`, `/sonic/…`, `/cumulus/…`, RtBrick's `/ztp/…`); `None`
    /// for the routes any family may ask (ONIE's names, images, firmware, the callback), where the
    /// headers tell.
    pub fn family(&self) -> Option<Family> {
        use DeviceRoute::*;
        match *self {
            ZtpJson { family, .. } | ZtpSection { family, .. } | SonicPart { family, .. } => Some(family),
            Cumulus { .. } => Some(Family::Cumulus),
            RtBrickImage | RtBrickImageFile(_) | RtBrickConfig(_) | RtBrickMessage => Some(Family::RtBrick),
            Onie
            | OnieName(..)
            | Image { .. }
            | Firmware { .. }
            | FirmwareChecksum { .. }
            | Provisioned { .. }
            | Report { .. } => None,
        }
    }

    /// Whether this is the request a switch makes when it starts provisioning (again): its ZTP
    /// JSON, its Cumulus script, an ONIE installer or updater, RtBrick's image. After a closed
    /// attempt it opens a new one ([`crate::switch::lifecycle`]); a section, a file or an image by
    /// path is part of the attempt under way.
    pub fn starts_provisioning(&self) -> bool {
        use DeviceRoute::*;
        matches!(self, Onie | OnieName(..) | ZtpJson { .. } | Cumulus { .. } | RtBrickImage)
    }

    /// The serial number the path names, where it has one.
    pub fn serial(&self) -> Option<&'a str> {
        use DeviceRoute::*;
        match *self {
            ZtpJson { serial, .. } | Cumulus { serial } => serial,
            ZtpSection { serial, .. }
            | SonicPart { serial, .. }
            | Provisioned { serial }
            | Report { serial } => Some(serial),
            _ => None,
        }
    }
}

/// `nvos` or `sonic`: the families whose ZTP JSON routes start with their name.
pub fn ztp_family(segment: &str) -> Option<Family> {
    match segment {
        "nvos" => Some(Family::Nvos),
        "sonic" => Some(Family::Sonic),
        _ => None,
    }
}

/// The family and serial number a device request names by its path alone, for its log line:
/// [`DeviceRoute::family`] and [`DeviceRoute::serial`] of a route; for any other path (one the
/// router decodes, or none at all) only the family its first segment names.
pub fn named_by_path(path: &str) -> (Family, Option<&str>) {
    if let Some(route) = DeviceRoute::parse(path) {
        return (route.family().unwrap_or_default(), route.serial());
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    let family = match first {
        "cumulus" => Family::Cumulus,
        "ztp" => Family::RtBrick,
        other => ztp_family(other).unwrap_or_default(),
    };
    (family, None)
}

/// The URLs of device routes, as switches are told them: `base` is the server's base URL
/// without a trailing `/`.
pub mod url {
    use super::Family;

    /// ONIE's fixed URL (DHCP option 114).
    pub fn onie(base: &str) -> String {
        format!("{base}/onie")
    }

    /// A ZTP JSON: by serial, or (no serial) for a device its headers name.
    pub fn ztp_json(base: &str, family: Family, serial: Option<&str>) -> String {
        match serial {
            Some(serial) => format!("{base}/{family}/{serial}/ztp.json"),
            None => format!("{base}/{family}/ztp.json"),
        }
    }

    /// An NVOS section.
    pub fn section(base: &str, family: Family, serial: &str, key: &str) -> String {
        format!("{base}/{family}/{serial}/sections/{key}")
    }

    /// A file of a SONiC section.
    pub fn section_part(base: &str, family: Family, serial: &str, key: &str, part: &str) -> String {
        format!("{base}/{family}/{serial}/sections/{key}/{part}")
    }

    /// The Cumulus ZTP script: by serial, or for a device its headers name.
    pub fn cumulus(base: &str, serial: Option<&str>) -> String {
        match serial {
            Some(serial) => format!("{base}/cumulus/{serial}/ztp.sh"),
            None => format!("{base}/cumulus/ztp.sh"),
        }
    }

    /// An RtBrick CTRLD configuration file.
    pub fn rtbrick_config(base: &str, name: &str) -> String {
        format!("{base}/ztp/config/{name}")
    }

    /// An image by its store path (`{platform}/{version}/{filename}`).
    pub fn image(base: &str, path: &str) -> String {
        format!("{base}/images/{path}")
    }

    /// Where a device's scripts report their stages.
    pub fn report(base: &str, serial: &str) -> String {
        format!("{base}/v1/devices/{serial}/report")
    }
}

/// What ONIE is asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Install,
    Update,
}

/// `onie-installer…` / `onie-updater…` names of the waterfall (with or without `.bin`).
pub fn operation_of_name(name: &str) -> Option<Operation> {
    let (op, rest) = if let Some(rest) = name.strip_prefix("onie-installer") {
        (Operation::Install, rest)
    } else if let Some(rest) = name.strip_prefix("onie-updater") {
        (Operation::Update, rest)
    } else {
        return None;
    };
    let rest = rest.strip_suffix(".bin").unwrap_or(rest);
    let ok = rest.is_empty()
        || (rest.len() > 1
            && rest.starts_with('-')
            && rest[1..].chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')));
    ok.then_some(op)
}

/// The operation an `ONIE-OPERATION` header value names.
pub fn operation_of_header(value: Option<&str>) -> Option<Operation> {
    match value? {
        "os-install" => Some(Operation::Install),
        "onie-update" => Some(Operation::Update),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template the router declares, with a sample path and what it parses to.
    #[test]
    fn every_route_template_parses_from_a_sample_path() {
        use DeviceRoute::*;
        let (nvos, sonic) = (Family::Nvos, Family::Sonic);
        let expected: [DeviceRoute<'_>; 17] = [
            Onie,
            OnieName("onie-installer-x86_64-accton_as7712_32x-r0", Operation::Install),
            RtBrickImage,
            RtBrickImageFile("rbfs.img"),
            RtBrickConfig("startup"),
            RtBrickMessage,
            ZtpJson { family: sonic, serial: None },
            ZtpJson { family: nvos, serial: Some("MT2245X01") },
            ZtpSection { family: nvos, serial: "SN1", key: "01-image" },
            SonicPart { family: sonic, serial: "SN1", key: "02-fw", part: "plugin" },
            Cumulus { serial: None },
            Cumulus { serial: Some("CU42") },
            Image { platform: "sonic", version: "4.1", filename: "sonic.bin" },
            Firmware { platform: "sonic", version: "4.1" },
            FirmwareChecksum { platform: "sonic", version: "4.1" },
            Provisioned { serial: "DEV9" },
            Report { serial: "DEV9" },
        ];
        assert_eq!(TEMPLATES.len(), expected.len(), "one sample per template");
        for ((template, path), want) in TEMPLATES.iter().zip(SAMPLE_PATHS).zip(expected) {
            assert_eq!(DeviceRoute::parse(path), Some(want), "{template}: {path}");
            // The sample is an instance of its template: same segments, `{…}` anything.
            let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
            assert_eq!(t.len(), p.len(), "{template}: {path}");
            assert!(t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p), "{template}: {path}");
        }
    }

    #[test]
    fn the_first_requests_of_each_family_start_provisioning() {
        let starts: Vec<&str> = SAMPLE_PATHS
            .iter()
            .copied()
            .filter(|p| DeviceRoute::parse(p).unwrap().starts_provisioning())
            .collect();
        assert_eq!(
            starts,
            [
                "/onie",
                "/onie-installer-x86_64-accton_as7712_32x-r0",
                "/ztp/image",
                "/sonic/ztp.json",
                "/nvos/MT2245X01/ztp.json",
                "/cumulus/ztp.sh",
                "/cumulus/CU42/ztp.sh",
            ]
        );
    }

    #[test]
    fn what_is_not_a_device_route_is_left_to_the_router() {
        for path in [
            "/",
            "/healthz",
            "/index.html",
            "/onie/",
            "/onie-installer-%2e",
            "/images/sonic/4.1/",
            "/images/sonic//sonic.bin",
            "/images/sonic/4.1/sonic.bin/x",
            "/images/%2e%2e/4.1/sonic.bin",
            "/cumulus/ztp.json",
            "/cumulus/a%2Fb/ztp.sh",
            "/nvos/MT2245X01/ztp.json/more",
            "/nvos//ztp.json",
            "/nvos",
            "/other/SN1/ztp.json",
            "/v1/files/a/b/c",
            "/v1/devices/SN1",
            "nvos/ztp.json",
            "/a/b/c/d/e/f/g",
        ] {
            assert_eq!(DeviceRoute::parse(path), None, "{path}");
        }
    }

    #[test]
    fn the_path_names_the_family_and_serial_it_has() {
        assert_eq!(
            named_by_path("/sonic/leaf11/sections/01-firmware/plugin"),
            (Family::Sonic, Some("leaf11"))
        );
        assert_eq!(named_by_path("/cumulus/a%2Fb/ztp.sh"), (Family::Cumulus, None));
        assert_eq!(named_by_path("/ztp/config/startup"), (Family::RtBrick, None));
        assert_eq!(named_by_path("/onie-installer"), (Family::Unknown, None));
        assert_eq!(named_by_path("/v1/devices/DEV9/provisioned"), (Family::Unknown, Some("DEV9")));
        assert_eq!(named_by_path("/nvos/../ztp.json"), (Family::Nvos, Some("..")));
    }

    #[test]
    fn urls_are_what_the_routes_parse() {
        let base = "http://ztp.example.net:8080";
        let strip = |u: &str| u.strip_prefix(base).map(str::to_owned).expect("starts with the base");
        let cases = [
            (url::onie(base), DeviceRoute::Onie),
            (
                url::ztp_json(base, Family::Nvos, Some("SN1")),
                DeviceRoute::ZtpJson { family: Family::Nvos, serial: Some("SN1") },
            ),
            (
                url::ztp_json(base, Family::Sonic, None),
                DeviceRoute::ZtpJson { family: Family::Sonic, serial: None },
            ),
            (
                url::section(base, Family::Nvos, "SN1", "k"),
                DeviceRoute::ZtpSection { family: Family::Nvos, serial: "SN1", key: "k" },
            ),
            (
                url::section_part(base, Family::Sonic, "SN1", "k", "plugin"),
                DeviceRoute::SonicPart { family: Family::Sonic, serial: "SN1", key: "k", part: "plugin" },
            ),
            (url::cumulus(base, Some("CU1")), DeviceRoute::Cumulus { serial: Some("CU1") }),
            (url::cumulus(base, None), DeviceRoute::Cumulus { serial: None }),
            (url::rtbrick_config(base, "ctrld"), DeviceRoute::RtBrickConfig("ctrld")),
            (
                url::image(base, "nos/1.0/nos.bin"),
                DeviceRoute::Image { platform: "nos", version: "1.0", filename: "nos.bin" },
            ),
            (url::report(base, "SN1"), DeviceRoute::Report { serial: "SN1" }),
        ];
        for (url, want) in &cases {
            let path = strip(url);
            assert_eq!(DeviceRoute::parse(&path), Some(*want), "{url}");
        }
    }

    #[test]
    fn waterfall_names() {
        for n in [
            "onie-installer-x86_64-accton_as7712_32x-r0",
            "onie-installer-x86_64-accton_as7712_32x-r0.bin",
            "onie-installer-x86_64-accton_as7712_32x",
            "onie-installer-accton_as7712_32x",
            "onie-installer-x86_64-bcm",
            "onie-installer-x86_64",
            "onie-installer",
            "onie-installer.bin",
        ] {
            assert_eq!(operation_of_name(n), Some(Operation::Install), "{n}");
        }
        assert_eq!(operation_of_name("onie-updater-x86_64-mlnx_x86-r0"), Some(Operation::Update));
        assert_eq!(operation_of_name("onie-updater"), Some(Operation::Update));
        for n in
            ["index.html", "onie-installerX", "onie-installer-", "onie-installer-a/b", "onie-installer-%2e"]
        {
            assert_eq!(operation_of_name(n), None, "{n}");
        }
    }
}
