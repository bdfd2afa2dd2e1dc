//! Who is asking: the device identity read from the HTTP headers each switch family sends.
//!
//! Every family identifies itself differently (docs/protocols.md §1.6, §2.3, §3.2, §3.4, §4):
//!
//! | family | serial | MAC | model | version |
//! |---|---|---|---|---|
//! | ONIE | `ONIE-SERIAL-NUMBER` | `ONIE-ETH-ADDR` | `ONIE-MACHINE` (+ arch, rev) | `ONIE-VERSION` |
//! | NVOS | `SERIAL-NUMBER` | `BASE-MAC-ADDRESS` | `PRODUCT-NAME` | `NVOS-VERSION` |
//! | SONiC | `SERIAL-NUMBER` | `BASE-MAC-ADDRESS` | `PRODUCT-NAME` | `SONiC-VERSION` |
//! | Cumulus | `CUMULUS-SERIAL` | `CUMULUS-BASE-MAC` | `CUMULUS-PRODUCTNAME` | `CUMULUS-VERSION` |
//! | RtBrick CTRLD | `ONIE-SERIAL-NUMBER` | – | – | – (plus `CONTAINER-NAME`, `ELEMENT-NAME`, `HOST-NAME`) |
//!
//! [`DeviceIdentity::from_headers`] reads all of them into one shape. Header names are
//! case-insensitive (the `http` crate stores them lower-cased); values are trimmed, empty values
//! count as absent and values that are not UTF-8 are ignored. MAC addresses are normalised with
//! [`normalize_mac`] (ONIE sends lower case, Cumulus and NVOS upper case).

use axum::http::{HeaderMap, HeaderName};

/// The headers of one request, as the device sent them: what reading its identity needs. The
/// router's handlers have a [`HeaderMap`]; the connection loop's fast path reads the head it
/// parsed ([`crate::serve`]), without building one (a map of owned names and values cost a tenth
/// of a ZTP JSON answer, and more for a switch's dozen headers).
pub trait SentHeaders {
    /// Each header's name (in any case) and value, in the order sent (a [`HeaderMap`] gives the
    /// values of one name together, in the order they came).
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])>
    where
        Self: Sized;

    /// The first value of header `name` (its name in lower case).
    fn first(&self, name: &str) -> Option<&[u8]>;
}

impl SentHeaders for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }

    fn first(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

/// A header value as `HeaderValue::to_str` reads it: text when it is visible ASCII (tabs
/// included), else none.
pub fn header_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Whether header name `name` (any case) starts with `prefix` (lower case).
fn starts_with_ignoring_case(name: &[u8], prefix: &str) -> bool {
    name.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The switch software family a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Family {
    /// ONIE image discovery (NOS install or ONIE self-update).
    Onie,
    /// NVIDIA NVOS ZTP.
    Nvos,
    /// SONiC ZTP.
    Sonic,
    /// Cumulus Linux ZTP.
    Cumulus,
    /// RtBrick RBFS CTRLD fetching its configuration files.
    RtBrick,
    /// Not known (yet): detect from the headers.
    #[default]
    Unknown,
}

impl Family {
    /// Lower-case name, for logs and templates: `onie`, `nvos`, `sonic`, `cumulus`, `rtbrick`,
    /// `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Onie => "onie",
            Family::Nvos => "nvos",
            Family::Sonic => "sonic",
            Family::Cumulus => "cumulus",
            Family::RtBrick => "rtbrick",
            Family::Unknown => "unknown",
        }
    }

    /// Guesses the family from the headers alone (docs/protocols.md §8). RtBrick's CTRLD is recognised
    /// first (it sends `ONIE-SERIAL-NUMBER` too, plus `CONTAINER-NAME` / `ELEMENT-NAME`), then
    /// Cumulus (`CUMULUS-*`), NVOS (`NVOS-VERSION`, `NVUE-VERSION` or an `NVOS…` User-Agent),
    /// SONiC (`SONiC-VERSION` or a `SONiC…` User-Agent) and ONIE (`ONIE-*` or an `onie/…`
    /// User-Agent). Header *names* decide, even with empty values: ONIE always sends all its
    /// headers, some empty.
    pub fn detect(headers: &impl SentHeaders) -> Family {
        IdentityHeaders::read(headers).family()
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity headers as switches spell them (what `ztpctl device` sends, and what the docs
/// and logs show). The server reads them case-insensitively by the [`HeaderName`]s below; a test
/// keeps each pair equal.
pub mod names {
    pub const ONIE_SERIAL_NUMBER: &str = "ONIE-SERIAL-NUMBER";
    pub const ONIE_ETH_ADDR: &str = "ONIE-ETH-ADDR";
    pub const ONIE_VENDOR_ID: &str = "ONIE-VENDOR-ID";
    pub const ONIE_MACHINE: &str = "ONIE-MACHINE";
    pub const ONIE_MACHINE_REV: &str = "ONIE-MACHINE-REV";
    pub const ONIE_ARCH: &str = "ONIE-ARCH";
    pub const ONIE_OPERATION: &str = "ONIE-OPERATION";
    pub const ONIE_VERSION: &str = "ONIE-VERSION";
    pub const SERIAL_NUMBER: &str = "SERIAL-NUMBER";
    pub const PRODUCT_NAME: &str = "PRODUCT-NAME";
    pub const BASE_MAC_ADDRESS: &str = "BASE-MAC-ADDRESS";
    pub const NVOS_VERSION: &str = "NVOS-VERSION";
    pub const NVUE_VERSION: &str = "NVUE-VERSION";
    pub const SONIC_VERSION: &str = "SONiC-VERSION";
    pub const CUMULUS_SERIAL: &str = "CUMULUS-SERIAL";
    pub const CUMULUS_BASE_MAC: &str = "CUMULUS-BASE-MAC";
    pub const CUMULUS_PRODUCTNAME: &str = "CUMULUS-PRODUCTNAME";
    pub const CUMULUS_VERSION: &str = "CUMULUS-VERSION";
    pub const CUMULUS_BUILD: &str = "CUMULUS-BUILD";
    pub const CONTAINER_NAME: &str = "CONTAINER-NAME";
    pub const ELEMENT_NAME: &str = "ELEMENT-NAME";
    pub const HOST_NAME: &str = "HOST-NAME";
}

// Header names in lower case, checked when compiled (`from_static` refuses an invalid one): the
// names [`IdentityHeaders::read`] compares the sent ones with, ignoring case.
pub static H_ONIE_SERIAL: HeaderName = HeaderName::from_static("onie-serial-number");
static H_ONIE_ETH_ADDR: HeaderName = HeaderName::from_static("onie-eth-addr");
static H_ONIE_VENDOR_ID: HeaderName = HeaderName::from_static("onie-vendor-id");
static H_ONIE_MACHINE: HeaderName = HeaderName::from_static("onie-machine");
static H_ONIE_MACHINE_REV: HeaderName = HeaderName::from_static("onie-machine-rev");
static H_ONIE_ARCH: HeaderName = HeaderName::from_static("onie-arch");
static H_ONIE_OPERATION: HeaderName = HeaderName::from_static("onie-operation");
static H_ONIE_VERSION: HeaderName = HeaderName::from_static("onie-version");
static H_SERIAL: HeaderName = HeaderName::from_static("serial-number");
static H_PRODUCT_NAME: HeaderName = HeaderName::from_static("product-name");
static H_BASE_MAC: HeaderName = HeaderName::from_static("base-mac-address");
static H_NVOS_VERSION: HeaderName = HeaderName::from_static("nvos-version");
static H_NVUE_VERSION: HeaderName = HeaderName::from_static("nvue-version");
static H_SONIC_VERSION: HeaderName = HeaderName::from_static("sonic-version");
static H_CUMULUS_SERIAL: HeaderName = HeaderName::from_static("cumulus-serial");
static H_CUMULUS_BASE_MAC: HeaderName = HeaderName::from_static("cumulus-base-mac");
static H_CUMULUS_PRODUCTNAME: HeaderName = HeaderName::from_static("cumulus-productname");
static H_CUMULUS_VERSION: HeaderName = HeaderName::from_static("cumulus-version");
static H_CUMULUS_BUILD: HeaderName = HeaderName::from_static("cumulus-build");
static H_CONTAINER_NAME: HeaderName = HeaderName::from_static("container-name");
static H_ELEMENT_NAME: HeaderName = HeaderName::from_static("element-name");
static H_HOST_NAME: HeaderName = HeaderName::from_static("host-name");

/// Each identity header's position in [`IDENTITY_HEADERS`] (read by position: finding a name's
/// slot by searching the table, a dozen times per request, cost a tenth of an answer). A test
/// keeps each at its header.
mod slot {
    pub(super) const ONIE_SERIAL: usize = 0;
    pub(super) const ONIE_ETH_ADDR: usize = 1;
    pub(super) const ONIE_VENDOR_ID: usize = 2;
    pub(super) const ONIE_MACHINE: usize = 3;
    pub(super) const ONIE_MACHINE_REV: usize = 4;
    pub(super) const ONIE_ARCH: usize = 5;
    pub(super) const ONIE_OPERATION: usize = 6;
    pub(super) const ONIE_VERSION: usize = 7;
    pub(super) const SERIAL: usize = 8;
    pub(super) const PRODUCT_NAME: usize = 9;
    pub(super) const BASE_MAC: usize = 10;
    pub(super) const NVOS_VERSION: usize = 11;
    pub(super) const NVUE_VERSION: usize = 12;
    pub(super) const SONIC_VERSION: usize = 13;
    pub(super) const CUMULUS_SERIAL: usize = 14;
    pub(super) const CUMULUS_BASE_MAC: usize = 15;
    pub(super) const CUMULUS_PRODUCTNAME: usize = 16;
    pub(super) const CUMULUS_VERSION: usize = 17;
    pub(super) const CUMULUS_BUILD: usize = 18;
    pub(super) const CONTAINER_NAME: usize = 19;
    pub(super) const ELEMENT_NAME: usize = 20;
    pub(super) const HOST_NAME: usize = 21;
}

/// Which headers carry one fact, per family.
struct Sources {
    onie: &'static [usize],
    nvos_sonic: &'static [usize],
    cumulus: &'static [usize],
}

impl Sources {
    /// The header groups, the requesting family's own first, then the others (a device is
    /// identified even when the route's family hint is wrong, e.g. a SONiC box on an ONIE path).
    fn ordered(&self, family: Family) -> [&'static [usize]; 3] {
        match family {
            Family::Cumulus => [self.cumulus, self.onie, self.nvos_sonic],
            Family::Nvos | Family::Sonic => [self.nvos_sonic, self.onie, self.cumulus],
            Family::Onie | Family::RtBrick | Family::Unknown => [self.onie, self.nvos_sonic, self.cumulus],
        }
    }

    /// The first present value, in family order.
    fn first<'h>(&self, headers: &IdentityHeaders<'h>, family: Family) -> Option<&'h str> {
        self.ordered(family).iter().flat_map(|group| group.iter()).find_map(|&slot| headers.get(slot))
    }
}

const SERIAL: Sources =
    Sources { onie: &[slot::ONIE_SERIAL], nvos_sonic: &[slot::SERIAL], cumulus: &[slot::CUMULUS_SERIAL] };
const MAC: Sources = Sources {
    onie: &[slot::ONIE_ETH_ADDR],
    nvos_sonic: &[slot::BASE_MAC],
    cumulus: &[slot::CUMULUS_BASE_MAC],
};
const OS_VERSION: Sources = Sources {
    onie: &[slot::ONIE_VERSION],
    nvos_sonic: &[slot::NVOS_VERSION, slot::SONIC_VERSION],
    cumulus: &[slot::CUMULUS_VERSION, slot::CUMULUS_BUILD],
};

/// Every header a device identity is read from, with the name an error message shows.
static IDENTITY_HEADERS: [(&HeaderName, &str); 22] = [
    (&H_ONIE_SERIAL, "header ONIE-SERIAL-NUMBER"),
    (&H_ONIE_ETH_ADDR, "header ONIE-ETH-ADDR"),
    (&H_ONIE_VENDOR_ID, "header ONIE-VENDOR-ID"),
    (&H_ONIE_MACHINE, "header ONIE-MACHINE"),
    (&H_ONIE_MACHINE_REV, "header ONIE-MACHINE-REV"),
    (&H_ONIE_ARCH, "header ONIE-ARCH"),
    (&H_ONIE_OPERATION, "header ONIE-OPERATION"),
    (&H_ONIE_VERSION, "header ONIE-VERSION"),
    (&H_SERIAL, "header SERIAL-NUMBER"),
    (&H_PRODUCT_NAME, "header PRODUCT-NAME"),
    (&H_BASE_MAC, "header BASE-MAC-ADDRESS"),
    (&H_NVOS_VERSION, "header NVOS-VERSION"),
    (&H_NVUE_VERSION, "header NVUE-VERSION"),
    (&H_SONIC_VERSION, "header SONiC-VERSION"),
    (&H_CUMULUS_SERIAL, "header CUMULUS-SERIAL"),
    (&H_CUMULUS_BASE_MAC, "header CUMULUS-BASE-MAC"),
    (&H_CUMULUS_PRODUCTNAME, "header CUMULUS-PRODUCTNAME"),
    (&H_CUMULUS_VERSION, "header CUMULUS-VERSION"),
    (&H_CUMULUS_BUILD, "header CUMULUS-BUILD"),
    (&H_CONTAINER_NAME, "header CONTAINER-NAME"),
    (&H_ELEMENT_NAME, "header ELEMENT-NAME"),
    (&H_HOST_NAME, "header HOST-NAME"),
];

/// The headers a device names itself by (those [`check_identity_headers`] bounds).
pub(crate) fn identity_header_names() -> impl Iterator<Item = &'static HeaderName> {
    IDENTITY_HEADERS.iter().map(|(name, _)| *name)
}

/// Checks that no identity header is longer than a path segment may be
/// ([`validate_length`](crate::api::validate_length): [`MAX_SEGMENT_LEN`] characters once
/// trimmed). A device names itself by these values: they key the rendered-document cache, the
/// activity record and the log line, so an anonymous client must not make them as large as it
/// likes. The error names the header and the limit (the server answers it with 400).
///
/// [`MAX_SEGMENT_LEN`]: crate::api::names::MAX_SEGMENT_LEN
pub fn check_identity_headers(headers: &impl SentHeaders) -> Result<(), crate::api::SegmentError> {
    IdentityHeaders::read(headers).check()
}

/// The identity headers of one request, read in one pass over the headers it sent (a switch
/// sends a handful; probing the map for each of the 22 names, twice per request, cost more than
/// answering it). Per identity header: whether it was sent at all (even empty: the family is
/// detected by names), its first usable value (UTF-8, not empty once trimmed, not longer than a
/// path segment) and whether any of its values is too long.
pub struct IdentityHeaders<'h> {
    sent: u32,
    values: [Option<&'h str>; IDENTITY_HEADERS.len()],
    /// The first value too long, of the first such header in table order.
    too_long: Option<(usize, crate::api::SegmentError)>,
    user_agent: Option<&'h str>,
    cumulus_prefix: bool,
    onie_prefix: bool,
}

impl<'h> IdentityHeaders<'h> {
    pub fn read(headers: &'h impl SentHeaders) -> Self {
        let mut read = IdentityHeaders {
            sent: 0,
            values: [None; IDENTITY_HEADERS.len()],
            too_long: None,
            user_agent: None,
            cumulus_prefix: false,
            onie_prefix: false,
        };
        for (name, value) in headers.each() {
            read.cumulus_prefix |= starts_with_ignoring_case(name, "cumulus-");
            read.onie_prefix |= starts_with_ignoring_case(name, "onie-");
            // Lengths first: most names are not the same length as a given identity header's.
            let slot = IDENTITY_HEADERS.iter().position(|(h, _)| {
                let h = h.as_str().as_bytes();
                h.len() == name.len() && h.eq_ignore_ascii_case(name)
            });
            if let Some(slot) = slot {
                read.sent |= 1 << slot;
            } else if !name.eq_ignore_ascii_case(b"user-agent") {
                continue;
            }
            // Not UTF-8: never read, so its length does not matter either.
            let Ok(text) = std::str::from_utf8(value).map(str::trim) else { continue };
            let fits = crate::api::validate_length(slot.map_or("header", |s| IDENTITY_HEADERS[s].1), text);
            let usable = (!text.is_empty() && fits.is_ok()).then_some(text);
            let Some(slot) = slot else {
                read.user_agent = read.user_agent.or(usable);
                continue;
            };
            read.values[slot] = read.values[slot].or(usable);
            if let Err(e) = fits
                && read.too_long.as_ref().is_none_or(|(first, _)| slot < *first)
            {
                read.too_long = Some((slot, e));
            }
        }
        read
    }

    /// Whether the identity header at `slot` (of [`slot`]) was sent, even empty.
    fn sent(&self, slot: usize) -> bool {
        slot < 32 && self.sent & (1 << slot) != 0
    }

    /// The first usable value of the identity header at `slot` (of [`slot`]).
    fn get(&self, slot: usize) -> Option<&'h str> {
        self.values.get(slot).copied().flatten()
    }

    /// [`check_identity_headers`]: the first identity header (in table order) with a value
    /// longer than a path segment may be.
    pub fn check(&self) -> Result<(), crate::api::SegmentError> {
        match &self.too_long {
            Some((_, e)) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// [`Family::detect`].
    pub fn family(&self) -> Family {
        let ua = self.user_agent.unwrap_or_default();
        let ua_starts = |p: &str| ua.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p));
        if self.sent(slot::ONIE_SERIAL) && (self.sent(slot::CONTAINER_NAME) || self.sent(slot::ELEMENT_NAME))
        {
            Family::RtBrick
        } else if self.cumulus_prefix || ua_starts("CumulusLinux-") || ua_starts("CumulusRMP-") {
            Family::Cumulus
        } else if self.sent(slot::NVOS_VERSION) || self.sent(slot::NVUE_VERSION) || ua_starts("NVOS") {
            Family::Nvos
        } else if self.sent(slot::SONIC_VERSION) || ua_starts("SONiC") {
            Family::Sonic
        } else if self.onie_prefix || ua_starts("onie/") {
            Family::Onie
        } else {
            Family::Unknown
        }
    }
}

/// Everything a device said about itself. Built by [`DeviceIdentity::from_headers`]; also
/// constructible by hand (tests, a serial from the request path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The family: the route's hint, or detected from the headers.
    pub family: Family,
    /// Serial number, exactly as sent (trimmed).
    pub serial: Option<String>,
    /// Base / management MAC, normalised by [`normalize_mac`] (`aa:bb:cc:dd:ee:ff`); absent when
    /// the device sent none or something that is not a MAC.
    pub mac: Option<String>,
    /// Every model-like string the device sent, most specific first, without duplicates: for
    /// ONIE the platform `<arch>-<machine>-r<rev>` (when all three are sent) then the machine;
    /// for NVOS / SONiC `PRODUCT-NAME`; for Cumulus `CUMULUS-PRODUCTNAME`. The requesting
    /// family's strings come first.
    pub models: Vec<String>,
    /// `ONIE-OPERATION`: `os-install` or `onie-update`.
    pub onie_operation: Option<String>,
    /// `ONIE-ARCH`, e.g. `x86_64`.
    pub onie_arch: Option<String>,
    /// `ONIE-MACHINE`, e.g. `accton_as7712_32x`.
    pub onie_machine: Option<String>,
    /// `ONIE-MACHINE-REV`, without the `r`, e.g. `0`.
    pub onie_machine_rev: Option<String>,
    /// `ONIE-VENDOR-ID`: the vendor's IANA enterprise number.
    pub onie_vendor_id: Option<String>,
    /// The running software's version: `ONIE-VERSION`, `NVOS-VERSION`, `SONiC-VERSION` or
    /// `CUMULUS-VERSION` (`CUMULUS-BUILD` on old releases).
    pub os_version: Option<String>,
    /// RtBrick `CONTAINER-NAME`.
    pub container_name: Option<String>,
    /// RtBrick `ELEMENT-NAME`.
    pub element_name: Option<String>,
    /// RtBrick `HOST-NAME`.
    pub host_name: Option<String>,
}

impl DeviceIdentity {
    /// The identity a Switch declares for its device: its serial number, MAC address (normalised;
    /// dropped when it is not one) and model. What a profile match of a Switch whose device has
    /// not asked yet goes by.
    pub fn declared(serial: &str, mac: Option<&str>, model: Option<&str>) -> Self {
        DeviceIdentity {
            serial: Some(serial.to_owned()),
            mac: mac.and_then(normalize_mac),
            models: model.map(str::to_owned).into_iter().collect(),
            ..Default::default()
        }
    }

    /// Reads the identity from request headers. `hint` is the family the route implies; with
    /// [`Family::Unknown`] the family is detected from the headers ([`Family::detect`]). Facts are
    /// read from every family's headers, the hinted family's first, so a device is recognised
    /// whatever route it uses.
    pub fn from_headers(headers: &impl SentHeaders, hint: Family) -> Self {
        Self::from_read(&IdentityHeaders::read(headers), hint)
    }

    /// [`DeviceIdentity::from_headers`] of headers already read.
    pub fn from_read(headers: &IdentityHeaders<'_>, hint: Family) -> Self {
        let family = if hint == Family::Unknown { headers.family() } else { hint };
        let get = |slot: usize| headers.get(slot).map(str::to_owned);

        let onie_arch = get(slot::ONIE_ARCH);
        let onie_machine = get(slot::ONIE_MACHINE);
        let onie_machine_rev = get(slot::ONIE_MACHINE_REV);

        // Model strings per group, most specific first.
        let mut onie_models = Vec::new();
        if let (Some(arch), Some(machine), Some(rev)) = (&onie_arch, &onie_machine, &onie_machine_rev) {
            onie_models.push(format!("{arch}-{machine}-r{rev}"));
        }
        onie_models.extend(onie_machine.clone());
        let nvos_sonic_models: Vec<String> = get(slot::PRODUCT_NAME).into_iter().collect();
        let cumulus_models: Vec<String> = get(slot::CUMULUS_PRODUCTNAME).into_iter().collect();
        let groups = match family {
            Family::Cumulus => [cumulus_models, onie_models, nvos_sonic_models],
            Family::Nvos | Family::Sonic => [nvos_sonic_models, onie_models, cumulus_models],
            Family::Onie | Family::RtBrick | Family::Unknown => {
                [onie_models, nvos_sonic_models, cumulus_models]
            }
        };
        let mut models: Vec<String> = Vec::new();
        for m in groups.into_iter().flatten() {
            if !models.contains(&m) {
                models.push(m);
            }
        }

        DeviceIdentity {
            family,
            serial: SERIAL.first(headers, family).map(str::to_owned),
            mac: MAC
                .ordered(family)
                .iter()
                .flat_map(|group| group.iter())
                .filter_map(|&slot| headers.get(slot))
                .find_map(normalize_mac),
            models,
            onie_operation: get(slot::ONIE_OPERATION),
            onie_arch,
            onie_machine,
            onie_machine_rev,
            onie_vendor_id: get(slot::ONIE_VENDOR_ID),
            os_version: OS_VERSION.first(headers, family).map(str::to_owned),
            container_name: get(slot::CONTAINER_NAME),
            element_name: get(slot::ELEMENT_NAME),
            host_name: get(slot::HOST_NAME),
        }
    }

    /// The first (most specific) model, if any.
    pub fn model(&self) -> Option<&str> {
        self.models.first().map(String::as_str)
    }

    /// The ONIE platform string `<arch>-<machine>-r<rev>`, when all three parts were sent.
    pub fn onie_platform(&self) -> Option<String> {
        match (&self.onie_arch, &self.onie_machine, &self.onie_machine_rev) {
            (Some(arch), Some(machine), Some(rev)) => Some(format!("{arch}-{machine}-r{rev}")),
            _ => None,
        }
    }
}

/// Normalises a MAC address to lower-case, colon-separated pairs (`aa:bb:cc:dd:ee:ff`).
///
/// Accepted (any case, surrounding whitespace ignored): six pairs separated by `:` or by `-`
/// (one separator throughout), Cisco-style three groups of four separated by `.`, and twelve bare
/// hex digits. Anything else gives `None`.
pub fn normalize_mac(s: &str) -> Option<String> {
    let s = s.trim();
    let hex: Vec<u8> = match s.len() {
        12 => s.bytes().collect(),
        14 => {
            // aabb.ccdd.eeff
            let groups: Vec<&str> = s.split('.').collect();
            if groups.len() != 3 || groups.iter().any(|g| g.len() != 4) {
                return None;
            }
            groups.concat().into_bytes()
        }
        17 => {
            let sep = *s.as_bytes().get(2)?;
            if sep != b':' && sep != b'-' {
                return None;
            }
            let pairs: Vec<&str> = s.split(char::from(sep)).collect();
            if pairs.len() != 6 || pairs.iter().any(|p| p.len() != 2) {
                return None;
            }
            pairs.concat().into_bytes()
        }
        _ => return None,
    };
    if hex.len() != 12 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = String::with_capacity(17);
    for (i, pair) in hex.chunks(2).enumerate() {
        if i > 0 {
            out.push(':');
        }
        for &b in pair {
            out.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// The names switches send are the names the server reads, and the 400 for a long value
    /// names the header as switches spell it.
    #[test]
    fn header_names_as_sent_are_the_names_read() {
        let pairs: [(&str, &HeaderName, usize); 22] = [
            (names::ONIE_SERIAL_NUMBER, &H_ONIE_SERIAL, slot::ONIE_SERIAL),
            (names::ONIE_ETH_ADDR, &H_ONIE_ETH_ADDR, slot::ONIE_ETH_ADDR),
            (names::ONIE_VENDOR_ID, &H_ONIE_VENDOR_ID, slot::ONIE_VENDOR_ID),
            (names::ONIE_MACHINE, &H_ONIE_MACHINE, slot::ONIE_MACHINE),
            (names::ONIE_MACHINE_REV, &H_ONIE_MACHINE_REV, slot::ONIE_MACHINE_REV),
            (names::ONIE_ARCH, &H_ONIE_ARCH, slot::ONIE_ARCH),
            (names::ONIE_OPERATION, &H_ONIE_OPERATION, slot::ONIE_OPERATION),
            (names::ONIE_VERSION, &H_ONIE_VERSION, slot::ONIE_VERSION),
            (names::SERIAL_NUMBER, &H_SERIAL, slot::SERIAL),
            (names::PRODUCT_NAME, &H_PRODUCT_NAME, slot::PRODUCT_NAME),
            (names::BASE_MAC_ADDRESS, &H_BASE_MAC, slot::BASE_MAC),
            (names::NVOS_VERSION, &H_NVOS_VERSION, slot::NVOS_VERSION),
            (names::NVUE_VERSION, &H_NVUE_VERSION, slot::NVUE_VERSION),
            (names::SONIC_VERSION, &H_SONIC_VERSION, slot::SONIC_VERSION),
            (names::CUMULUS_SERIAL, &H_CUMULUS_SERIAL, slot::CUMULUS_SERIAL),
            (names::CUMULUS_BASE_MAC, &H_CUMULUS_BASE_MAC, slot::CUMULUS_BASE_MAC),
            (names::CUMULUS_PRODUCTNAME, &H_CUMULUS_PRODUCTNAME, slot::CUMULUS_PRODUCTNAME),
            (names::CUMULUS_VERSION, &H_CUMULUS_VERSION, slot::CUMULUS_VERSION),
            (names::CUMULUS_BUILD, &H_CUMULUS_BUILD, slot::CUMULUS_BUILD),
            (names::CONTAINER_NAME, &H_CONTAINER_NAME, slot::CONTAINER_NAME),
            (names::ELEMENT_NAME, &H_ELEMENT_NAME, slot::ELEMENT_NAME),
            (names::HOST_NAME, &H_HOST_NAME, slot::HOST_NAME),
        ];
        for (sent, read, slot) in pairs {
            assert_eq!(sent.to_ascii_lowercase(), read.as_str(), "{sent}");
            assert!(std::ptr::eq(IDENTITY_HEADERS[slot].0, read), "{sent} is at its slot");
            assert!(
                IDENTITY_HEADERS.iter().any(|(n, what)| *n == read && *what == format!("header {sent}")),
                "{sent}"
            );
        }
    }

    /// Header text is what `HeaderValue::to_str` accepts.
    #[test]
    fn header_text_is_what_header_values_give_as_text() {
        for value in [&b"curl/8.0"[..], b"a\tb", b"", b"caf\xc3\xa9", b"\x80", b"a\x7fb", b"a\x01b"] {
            let text = HeaderValue::from_bytes(value).ok().and_then(|v| v.to_str().ok().map(str::to_owned));
            assert_eq!(header_text(value).map(str::to_owned), text, "{value:?}");
        }
    }

    /// Builds a header map from (name, value) pairs, names in whatever case they are given.
    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            let name = HeaderName::from_bytes(k.as_bytes()).expect("test header name");
            h.append(name, HeaderValue::from_str(v).expect("test header value"));
        }
        h
    }

    fn onie_headers() -> HeaderMap {
        headers(&[
            ("User-Agent", "onie/1.0 (Linux-4.9.95; BusyBox-v1.25.1)"),
            ("ONIE-SERIAL-NUMBER", "XYZ123004"),
            ("ONIE-ETH-ADDR", "08:9e:01:62:d1:93"),
            ("ONIE-VENDOR-ID", "12345"),
            ("ONIE-MACHINE", "accton_as7712_32x"),
            ("ONIE-MACHINE-REV", "0"),
            ("ONIE-ARCH", "x86_64"),
            ("ONIE-SECURITY-KEY", ""),
            ("ONIE-OPERATION", "os-install"),
            ("ONIE-VERSION", "2021.11"),
        ])
    }

    #[test]
    fn identity_headers_are_bounded_like_path_segments() {
        let max = crate::api::names::MAX_SEGMENT_LEN;
        let ok = headers(&[("SERIAL-NUMBER", &"S".repeat(max)), ("PRODUCT-NAME", "N5110_LD")]);
        assert_eq!(check_identity_headers(&ok), Ok(()));
        assert_eq!(DeviceIdentity::from_headers(&ok, Family::Nvos).serial.map(|s| s.len()), Some(max));
        for header in IDENTITY_HEADERS.iter().map(|(n, _)| n.as_str()) {
            let long = headers(&[(header, &"x".repeat(max + 1))]);
            let err = check_identity_headers(&long).expect_err(header);
            let text = err.to_string();
            assert!(text.to_lowercase().starts_with(&format!("header {header}")), "{text}");
            assert!(text.contains(&format!("at most {max}")), "{text}");
            let id = DeviceIdentity::from_headers(&long, Family::Unknown);
            assert_eq!(
                (id.serial, id.models, id.os_version, id.host_name),
                (None, vec![], None, None),
                "{header}"
            );
        }
        // Surrounding whitespace is not counted, as it is not kept.
        let padded = headers(&[("SERIAL-NUMBER", &format!("  {}  ", "S".repeat(max)))]);
        assert_eq!(check_identity_headers(&padded), Ok(()));
    }

    /// Read in one pass, the headers give the answers a lookup per name gave: the first usable
    /// value of a header sent twice, a too-long second value refused even after a good first,
    /// the first too-long header in table order named whatever order they came in, and an
    /// empty header counting for the family but not as a value.
    #[test]
    fn one_pass_over_the_headers_reads_what_lookups_by_name_read() {
        let max = crate::api::names::MAX_SEGMENT_LEN;
        let long = "x".repeat(max + 1);
        let mut twice = headers(&[("SERIAL-NUMBER", "  "), ("PRODUCT-NAME", "N5110_LD")]);
        twice.append("serial-number", HeaderValue::from_static("SN-2"));
        twice.append("serial-number", HeaderValue::from_static("SN-3"));
        let id = DeviceIdentity::from_headers(&twice, Family::Nvos);
        assert_eq!((id.serial.as_deref(), id.models), (Some("SN-2"), vec!["N5110_LD".to_owned()]));
        twice.append("serial-number", HeaderValue::from_str(&long).expect("value"));
        let err = check_identity_headers(&twice).expect_err("a too-long later value");
        assert!(err.to_string().starts_with("header SERIAL-NUMBER"), "{err}");
        let both = headers(&[("HOST-NAME", &long), ("ONIE-SERIAL-NUMBER", &format!("{long}x"))]);
        let err = check_identity_headers(&both).expect_err("two too long");
        assert!(err.to_string().starts_with("header ONIE-SERIAL-NUMBER is 130 characters"), "{err}");
        let empty = headers(&[("NVOS-VERSION", "")]);
        assert_eq!(Family::detect(&empty), Family::Nvos);
        assert_eq!(DeviceIdentity::from_headers(&empty, Family::Unknown).os_version, None);
    }

    #[test]
    fn every_identity_header_is_read_into_its_own_slot() {
        for (slot, (name, _)) in IDENTITY_HEADERS.iter().enumerate() {
            let mut sent = HeaderMap::new();
            sent.insert(*name, HeaderValue::from_static("value-1"));
            let read = IdentityHeaders::read(&sent);
            assert!(read.sent(slot), "{name}");
            assert_eq!(read.get(slot), Some("value-1"), "{name}");
            let mut others = (0..IDENTITY_HEADERS.len()).filter(|&other| other != slot);
            assert!(others.all(|other| !read.sent(other) && read.get(other).is_none()), "{name}");
        }
    }

    #[test]
    fn family_names() {
        let all = [
            (Family::Onie, "onie"),
            (Family::Nvos, "nvos"),
            (Family::Sonic, "sonic"),
            (Family::Cumulus, "cumulus"),
            (Family::RtBrick, "rtbrick"),
            (Family::Unknown, "unknown"),
        ];
        for (f, s) in all {
            assert_eq!(f.as_str(), s);
            assert_eq!(f.to_string(), s);
        }
    }

    #[test]
    fn onie_identity() {
        let id = DeviceIdentity::from_headers(&onie_headers(), Family::Unknown);
        assert_eq!(id.family, Family::Onie);
        assert_eq!(id.serial.as_deref(), Some("XYZ123004"));
        assert_eq!(id.mac.as_deref(), Some("08:9e:01:62:d1:93"));
        assert_eq!(id.models, vec!["x86_64-accton_as7712_32x-r0".to_owned(), "accton_as7712_32x".to_owned()]);
        assert_eq!(id.model(), Some("x86_64-accton_as7712_32x-r0"));
        assert_eq!(id.onie_platform().as_deref(), Some("x86_64-accton_as7712_32x-r0"));
        assert_eq!(id.onie_operation.as_deref(), Some("os-install"));
        assert_eq!(id.onie_arch.as_deref(), Some("x86_64"));
        assert_eq!(id.onie_machine.as_deref(), Some("accton_as7712_32x"));
        assert_eq!(id.onie_machine_rev.as_deref(), Some("0"));
        assert_eq!(id.onie_vendor_id.as_deref(), Some("12345"));
        assert_eq!(id.os_version.as_deref(), Some("2021.11"));
        assert_eq!(id.container_name, None);
    }

    #[test]
    fn onie_without_all_platform_parts_has_only_the_machine() {
        let h =
            headers(&[("ONIE-SERIAL-NUMBER", "S1"), ("ONIE-MACHINE", "mlnx_x86"), ("ONIE-ARCH", "x86_64")]);
        let id = DeviceIdentity::from_headers(&h, Family::Onie);
        assert_eq!(id.models, vec!["mlnx_x86".to_owned()]);
        assert_eq!(id.onie_platform(), None);
    }

    #[test]
    fn nvos_identity() {
        let h = headers(&[
            ("User-Agent", "NVOS-ZTP/0.1"),
            ("PRODUCT-NAME", "N5110_LD"),
            ("SERIAL-NUMBER", "MT1234X56789"),
            ("BASE-MAC-ADDRESS", "12:34:56:AB:CD:EF"),
            ("NVOS-VERSION", "nvos-25.02.2002"),
            ("NVUE-VERSION", "2.1.0.0-nvos"),
        ]);
        let id = DeviceIdentity::from_headers(&h, Family::Unknown);
        assert_eq!(id.family, Family::Nvos);
        assert_eq!(id.serial.as_deref(), Some("MT1234X56789"));
        assert_eq!(id.mac.as_deref(), Some("12:34:56:ab:cd:ef"));
        assert_eq!(id.models, vec!["N5110_LD".to_owned()]);
        assert_eq!(id.os_version.as_deref(), Some("nvos-25.02.2002"));

        // The User-Agent alone is enough.
        let ua_only = headers(&[("user-agent", "NVOS-ZTP/0.1"), ("serial-number", "S")]);
        assert_eq!(Family::detect(&ua_only), Family::Nvos);
    }

    #[test]
    fn sonic_identity_with_curl_user_agent() {
        let h = headers(&[
            ("User-Agent", "curl/7.64.0"),
            ("PRODUCT-NAME", "E1031"),
            ("SERIAL-NUMBER", "E1031B2F035A17GD020"),
            ("BASE-MAC-ADDRESS", "00:E0:EC:38:50:FB"),
            ("SONiC-VERSION", "SONiC.201811.0-20190315.181511"),
        ]);
        let id = DeviceIdentity::from_headers(&h, Family::Unknown);
        assert_eq!(id.family, Family::Sonic);
        assert_eq!(id.serial.as_deref(), Some("E1031B2F035A17GD020"));
        assert_eq!(id.mac.as_deref(), Some("00:e0:ec:38:50:fb"));
        assert_eq!(id.models, vec!["E1031".to_owned()]);
        assert_eq!(id.os_version.as_deref(), Some("SONiC.201811.0-20190315.181511"));

        let ua_only = headers(&[("User-Agent", "SONiC-ZTP/0.1"), ("SERIAL-NUMBER", "S")]);
        assert_eq!(Family::detect(&ua_only), Family::Sonic);
    }

    #[test]
    fn cumulus_identity() {
        let h = headers(&[
            ("User-Agent", "CumulusLinux-AutoProvision/0.4"),
            ("CUMULUS-ARCH", "x86_64"),
            ("CUMULUS-BUILD", "5.1.0"),
            ("CUMULUS-MANUFACTURER", "odm"),
            ("CUMULUS-PRODUCTNAME", "switch_model"),
            ("CUMULUS-SERIAL", "XYZ123004"),
            ("CUMULUS-BASE-MAC", "44:38:39:FF:40:94"),
            ("CUMULUS-MGMT-MAC", "44:38:39:FF:00:00"),
            ("CUMULUS-VERSION", "5.1.0"),
            ("CUMULUS-PROV-COUNT", "0"),
            ("CUMULUS-PROV-MAX", "32"),
        ]);
        let id = DeviceIdentity::from_headers(&h, Family::Unknown);
        assert_eq!(id.family, Family::Cumulus);
        assert_eq!(id.serial.as_deref(), Some("XYZ123004"));
        assert_eq!(id.mac.as_deref(), Some("44:38:39:ff:40:94"));
        assert_eq!(id.models, vec!["switch_model".to_owned()]);
        assert_eq!(id.os_version.as_deref(), Some("5.1.0"));

        // CL 3.x sends CUMULUS-BUILD, used when CUMULUS-VERSION is missing.
        let old = headers(&[("CUMULUS-SERIAL", "S"), ("CUMULUS-BUILD", "3.7.3-5c6829a-201309251712-final")]);
        let id = DeviceIdentity::from_headers(&old, Family::Unknown);
        assert_eq!(id.family, Family::Cumulus);
        assert_eq!(id.os_version.as_deref(), Some("3.7.3-5c6829a-201309251712-final"));
    }

    #[test]
    fn rtbrick_identity() {
        let h = headers(&[
            ("ONIE-SERIAL-NUMBER", "RB1234"),
            ("CONTAINER-NAME", "rtbrick"),
            ("ELEMENT-NAME", "leaf01"),
            ("HOST-NAME", "leaf01.lab"),
        ]);
        let id = DeviceIdentity::from_headers(&h, Family::Unknown);
        assert_eq!(id.family, Family::RtBrick);
        assert_eq!(id.serial.as_deref(), Some("RB1234"));
        assert_eq!(id.container_name.as_deref(), Some("rtbrick"));
        assert_eq!(id.element_name.as_deref(), Some("leaf01"));
        assert_eq!(id.host_name.as_deref(), Some("leaf01.lab"));
        assert!(id.models.is_empty());

        // Without the ONIE serial it is not CTRLD.
        let h = headers(&[("CONTAINER-NAME", "rtbrick")]);
        assert_eq!(Family::detect(&h), Family::Unknown);
    }

    #[test]
    fn hint_wins_over_detection() {
        let id = DeviceIdentity::from_headers(&onie_headers(), Family::RtBrick);
        assert_eq!(id.family, Family::RtBrick);
        assert_eq!(id.serial.as_deref(), Some("XYZ123004"));
    }

    #[test]
    fn the_hinted_familys_headers_come_first() {
        let h = headers(&[
            ("SERIAL-NUMBER", "NVOS-SERIAL"),
            ("PRODUCT-NAME", "sn2410"),
            ("ONIE-SERIAL-NUMBER", "ONIE-SERIAL"),
            ("ONIE-MACHINE", "mlnx_sn2410"),
        ]);
        let sonic = DeviceIdentity::from_headers(&h, Family::Sonic);
        assert_eq!(sonic.serial.as_deref(), Some("NVOS-SERIAL"));
        assert_eq!(sonic.models, vec!["sn2410".to_owned(), "mlnx_sn2410".to_owned()]);
        let onie = DeviceIdentity::from_headers(&h, Family::Onie);
        assert_eq!(onie.serial.as_deref(), Some("ONIE-SERIAL"));
        assert_eq!(onie.models, vec!["mlnx_sn2410".to_owned(), "sn2410".to_owned()]);
    }

    #[test]
    fn values_are_trimmed_and_empty_or_non_utf8_values_are_absent() {
        let mut h = headers(&[
            ("ONIE-SERIAL-NUMBER", "  XYZ  "),
            ("ONIE-MACHINE", "   "),
            ("ONIE-OPERATION", ""),
            ("ONIE-ETH-ADDR", "not a mac"),
        ]);
        h.insert(
            "onie-vendor-id",
            HeaderValue::from_bytes(b"\xff\xfe").expect("opaque bytes are a valid value"),
        );
        let id = DeviceIdentity::from_headers(&h, Family::Unknown);
        assert_eq!(id.family, Family::Onie);
        assert_eq!(id.serial.as_deref(), Some("XYZ"));
        assert_eq!(id.onie_machine, None);
        assert!(id.models.is_empty());
        assert_eq!(id.onie_operation, None);
        assert_eq!(id.onie_vendor_id, None);
        assert_eq!(id.mac, None);
    }

    #[test]
    fn utf8_values_beyond_ascii_are_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            "host-name",
            HeaderValue::from_bytes("läb".as_bytes()).expect("utf-8 bytes are a valid value"),
        );
        let id = DeviceIdentity::from_headers(&h, Family::RtBrick);
        assert_eq!(id.host_name.as_deref(), Some("läb"));
    }

    #[test]
    fn a_repeated_header_uses_its_first_non_empty_value() {
        let h = headers(&[("SERIAL-NUMBER", ""), ("SERIAL-NUMBER", "S2"), ("SERIAL-NUMBER", "S3")]);
        assert_eq!(DeviceIdentity::from_headers(&h, Family::Sonic).serial.as_deref(), Some("S2"));
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let h = headers(&[("onie-serial-number", "a"), ("Onie-Eth-Addr", "AA-BB-CC-DD-EE-FF")]);
        let id = DeviceIdentity::from_headers(&h, Family::Unknown);
        assert_eq!(id.family, Family::Onie);
        assert_eq!(id.serial.as_deref(), Some("a"));
        assert_eq!(id.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    }

    #[test]
    fn an_invalid_mac_falls_back_to_the_next_header() {
        let h = headers(&[("ONIE-ETH-ADDR", "garbage"), ("BASE-MAC-ADDRESS", "0C:42:A1:00:00:01")]);
        assert_eq!(DeviceIdentity::from_headers(&h, Family::Onie).mac.as_deref(), Some("0c:42:a1:00:00:01"));
    }

    #[test]
    fn nothing_known_is_unknown() {
        let id = DeviceIdentity::from_headers(&headers(&[("User-Agent", "curl/8.0")]), Family::Unknown);
        assert_eq!(id, DeviceIdentity::default());
        assert_eq!(DeviceIdentity::from_headers(&HeaderMap::new(), Family::Unknown).family, Family::Unknown);
    }

    #[test]
    fn macs_are_normalised() {
        for ok in [
            "aa:bb:cc:dd:ee:ff",
            "AA:BB:CC:DD:EE:FF",
            "aa-bb-cc-dd-ee-ff",
            "AA-BB-CC-DD-EE-FF",
            "aabb.ccdd.eeff",
            "AABB.CCDD.EEFF",
            "aabbccddeeff",
            "AaBbCcDdEeFf",
            " aa:bb:cc:dd:ee:ff\t",
        ] {
            assert_eq!(normalize_mac(ok).as_deref(), Some("aa:bb:cc:dd:ee:ff"), "{ok:?}");
        }
        assert_eq!(normalize_mac("08:9E:01:62:D1:93").as_deref(), Some("08:9e:01:62:d1:93"));
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb-cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:fg",
            "aabbccddeefg",
            "aabbccddeef",
            "aabb.ccdd.eef",
            "aab.bccdd.eeff",
            "aa.bb.cc.dd.ee.ff",
            "aa bb cc dd ee ff",
            "a:bb:cc:dd:ee:fff",
            "aa::bb:cc:dd:ee:f",
            "+a:bb:cc:dd:ee:ff",
            "ａａ:bb:cc:dd:ee",
            "aabbccddeeff\u{e9}",
        ] {
            assert_eq!(normalize_mac(bad), None, "{bad:?}");
        }
    }
}
