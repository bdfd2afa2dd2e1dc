//! ONIE's discovery pass, and not feeding a failing installer to a switch again within one pass.
//!
//! ONIE tries candidates in a fixed order (docs/protocols.md §1.3): the URLs of DHCP option 125
//! (sub-option 1 or 2) and 114 — here the fixed URL `/onie` —, then for each HTTP server the 12
//! default names, most specific first (`onie-installer-<arch>-<machine>-r<rev>`, its `.bin` twin,
//! … `onie-installer`, `onie-installer.bin`), then option 67 as a URL. An installer that
//! downloads and exits non-zero makes ONIE go on to the next candidate; when every candidate
//! failed it sleeps 20 s and starts again. This server answers every name of the waterfall with
//! the same image, so a broken 1 GB installer would cost a switch 12 GB (and more) per pass.
//!
//! The rule (one place, [`Passes::refuse`], asked by [`super::choose`] for the router and the
//! sendfile fast path alike): once a device got a **full `200`** of an image from an ONIE route,
//! a plain `GET` (no `Range`) from the same device (serial, else MAC, else source address) for
//! the **same bytes** (image path and SHA-256) on a **later candidate** of the pass — a less
//! specific name, the `.bin` twin, or `/onie` again (options 125 and 114 both naming it) — less
//! than [`SAME_PASS_WINDOW`] after that download ended, is answered `404` with
//! [`REFUSED_BODY`] and a warning naming the device and the image. ONIE then moves on to its
//! next candidate (each `404` costs a few hundred bytes) and, after its 20 s sleep, starts a new
//! pass: a request for the same or a more specific candidate (the pass starting again), or any
//! request after the window, gets the image again, so a repaired image (or a switch whose
//! installer failed for a passing reason) still installs. A different image (a new version, or
//! the other operation) is never refused.
//!
//! Memory is bounded: a device is remembered only for the window, in two generations of a hash
//! map that rotate every window (and early, when [`MAX_DEVICES`] devices finished a download in
//! one window): at most `2 × MAX_DEVICES` entries whatever the boot storm. The lock is taken once
//! before a download and once after it ends, never while bytes flow.

use std::{
    collections::HashMap,
    mem,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, Method, header};

use crate::profile::{
    identity::{DeviceIdentity, normalize_mac},
    snapshot::ImageRef,
};

/// How long after a full download a later candidate from the same device counts as the same
/// discovery pass. Well below ONIE's 20 s sleep between passes, so a new pass is never taken for
/// the old one; above the time a typical broken installer takes to fail (it checks the platform
/// or its payload and exits).
pub const SAME_PASS_WINDOW: Duration = Duration::from_secs(10);

/// Devices remembered per generation (two generations at most).
pub const MAX_DEVICES: usize = 65_536;

/// The body of the refusal (ONIE's wget only sees the status; people and logs see this).
pub const REFUSED_BODY: &str = "this device downloaded this installer in full seconds ago and is now asking for \
its next discovery candidate, so the installer failed: not sending the same image again in this discovery \
pass (the next pass gets it)";

/// Where an ONIE request stands in its discovery pass: `/onie` (options 125 and 114) first,
/// then the default names, most specific first, each bare then with `.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Candidate(u8);

impl Candidate {
    /// The fixed URL `/onie`.
    pub const FIXED: Candidate = Candidate(0);

    /// The rank of a waterfall name for this device (`None` for a name that is not one of its
    /// 12: another platform's name, which ONIE never asks).
    pub fn of_name(name: &str, id: &DeviceIdentity) -> Option<Candidate> {
        let rest = name.strip_prefix("onie-installer").or_else(|| name.strip_prefix("onie-updater"))?;
        let (rest, bin) = match rest.strip_suffix(".bin") {
            Some(r) => (r, 1),
            None => (rest, 0),
        };
        let arch = id.onie_arch.as_deref().unwrap_or("");
        let machine = id.onie_machine.as_deref().unwrap_or("");
        let rev = id.onie_machine_rev.as_deref().unwrap_or("");
        let level = if rest.is_empty() {
            5
        } else if !arch.is_empty() && !machine.is_empty() && rest == format!("-{arch}-{machine}-r{rev}") {
            0
        } else if !arch.is_empty() && !machine.is_empty() && rest == format!("-{arch}-{machine}") {
            1
        } else if !machine.is_empty() && rest == format!("-{machine}") {
            2
        } else if !arch.is_empty() && rest == format!("-{arch}") {
            4
        } else if !arch.is_empty()
            && rest
                .strip_prefix('-')
                .and_then(|r| r.strip_prefix(arch))
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|silicon| !silicon.is_empty() && !silicon.contains(['_', '-']))
        {
            3 // `<arch>-<switch silicon vendor>` (`bcm`, `mlnx`, …: one word, unlike a machine)
        } else {
            return None;
        };
        Some(Candidate(1 + level * 2 + bin))
    }

    /// Whether asking for `self` after `served` got the image is ONIE going on within its pass
    /// (a later candidate, or `/onie` again), rather than starting a new one.
    pub fn follows(self, served: Candidate) -> bool {
        self > served || (self == Candidate::FIXED && served == Candidate::FIXED)
    }
}

/// A download that, once complete, is remembered for [`Passes`]: taken by [`super::choose`] for
/// a plain `GET` on an ONIE route, handed to [`Passes::served`] by whichever path sent the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    device: String,
    candidate: Candidate,
}

/// Who a request comes from, for [`Passes`]: the serial, else the MAC, else the source address.
pub fn device_key(id: &DeviceIdentity, source: Option<IpAddr>) -> Option<String> {
    if let Some(serial) = id.serial.as_deref().filter(|s| !s.is_empty()) {
        return Some(format!("serial {serial}"));
    }
    if let Some(mac) = id.mac.as_deref().and_then(normalize_mac) {
        return Some(format!("mac {mac}"));
    }
    source.map(|ip| format!("address {}", ip.to_canonical()))
}

/// Whether a request is one ONIE's wget makes for an installer: a `GET` without `Range` or a
/// condition (HEAD, ranges and conditional requests are other clients, never refused nor
/// remembered).
pub fn is_plain_get(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && ![header::RANGE, header::IF_NONE_MATCH, header::IF_RANGE, header::IF_MODIFIED_SINCE]
            .iter()
            .any(|h| headers.contains_key(h))
}

/// What a device last downloaded in full.
#[derive(Debug, Clone)]
struct Served {
    candidate: Candidate,
    path: String,
    sha256: String,
    ended: Instant,
}

#[derive(Debug)]
struct Generations {
    current: HashMap<String, Served>,
    previous: HashMap<String, Served>,
    started: Instant,
}

/// The refusal of a request, for the log line and the device's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `serial …`, `mac …` or `address …`.
    pub device: String,
    /// The image's store path.
    pub image: String,
    pub sha256: String,
    /// Seconds since the full download ended.
    pub after: Duration,
}

/// The warning for a refusal, written once by the path that sends the `404` (the router: the
/// sendfile fast path never answers a refusal itself).
///
/// This is also the hook for the coming `Switch` resource: a refusal is the server's evidence
/// that the device's installer failed, to be recorded there as a `Failed` attempt with reason
/// `InstallerFailed` (the [`Refused`] rides on the response as an extension until then).
pub fn log_refused(r: &Refused) {
    tracing::warn!(
        target: "ztp_operator::device",
        device = r.device.as_str(),
        image = r.image.as_str(),
        sha256 = r.sha256.as_str(),
        seconds_after = r.after.as_secs_f64(),
        reason = INSTALLER_FAILED,
        "ONIE asked for its next candidate right after downloading this installer in full: the installer \
         failed; not sending it again in this discovery pass"
    );
}

/// The reason a `Switch`'s failed attempt will carry.
pub const INSTALLER_FAILED: &str = "InstallerFailed";

/// Recent full ONIE downloads per device (see the module documentation).
#[derive(Debug)]
pub struct Passes {
    window: Duration,
    max_devices: usize,
    state: Mutex<Generations>,
}

impl Default for Passes {
    fn default() -> Self {
        Self::new(SAME_PASS_WINDOW, MAX_DEVICES)
    }
}

impl Passes {
    pub fn new(window: Duration, max_devices: usize) -> Self {
        let state =
            Generations { current: HashMap::new(), previous: HashMap::new(), started: Instant::now() };
        Self { window, max_devices: max_devices.max(1), state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops what is older than the window: the previous generation once the current one is a
    /// window old (both after two windows).
    fn rotate(&self, g: &mut Generations, now: Instant) {
        let age = now.saturating_duration_since(g.started);
        if age >= self.window * 2 {
            g.current.clear();
            g.previous.clear();
            g.started = now;
        } else if age >= self.window {
            g.previous = mem::take(&mut g.current);
            g.started = now;
        }
    }

    /// A ticket for a plain GET by `device` on `candidate` (None: nothing to remember), or the
    /// refusal when this is a later candidate of the pass in which the device already got
    /// `image` in full.
    pub fn check(
        &self,
        device: Option<String>,
        candidate: Option<Candidate>,
        image: &ImageRef,
        now: Instant,
    ) -> Result<Option<Ticket>, Refused> {
        let (Some(device), Some(candidate)) = (device, candidate) else { return Ok(None) };
        if let Some(after) = self.refuse(&device, candidate, image, now) {
            return Err(Refused { device, image: image.path.clone(), sha256: image.sha256.clone(), after });
        }
        Ok(Some(Ticket { device, candidate }))
    }

    /// How long ago `device` finished downloading `image` when asking for `candidate` now is ONIE
    /// going on within the same pass after that installer failed; None: serve it.
    pub fn refuse(
        &self,
        device: &str,
        candidate: Candidate,
        image: &ImageRef,
        now: Instant,
    ) -> Option<Duration> {
        let mut g = self.lock();
        self.rotate(&mut g, now);
        let served = g.current.get(device).or_else(|| g.previous.get(device))?;
        let after = now.saturating_duration_since(served.ended);
        let same_bytes = served.path == image.path && served.sha256 == image.sha256;
        (same_bytes && after < self.window && candidate.follows(served.candidate)).then_some(after)
    }

    /// `ticket`'s download of `image` ended with the whole body sent.
    pub fn served(&self, ticket: &Ticket, image: &ImageRef, now: Instant) {
        let mut g = self.lock();
        self.rotate(&mut g, now);
        if g.current.len() >= self.max_devices && !g.current.contains_key(&ticket.device) {
            g.previous = mem::take(&mut g.current);
            g.started = now;
        }
        let served = Served {
            candidate: ticket.candidate,
            path: image.path.clone(),
            sha256: image.sha256.clone(),
            ended: now,
        };
        g.previous.remove(&ticket.device);
        g.current.insert(ticket.device.clone(), served);
    }

    /// Devices remembered (both generations).
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }

    /// True when no device is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::profile::identity::Family;

    fn id() -> DeviceIdentity {
        DeviceIdentity {
            family: Family::Onie,
            serial: Some("SN1".into()),
            onie_arch: Some("x86_64".into()),
            onie_machine: Some("accton_as7712_32x".into()),
            onie_machine_rev: Some("0".into()),
            ..Default::default()
        }
    }

    /// The sample switch's default-name waterfall (x86_64, `accton_as7712_32x`, rev 0), most
    /// specific first (docs/protocols.md §1.4); the handler tests walk it too.
    pub(crate) const NAMES: [&str; 6] = [
        "onie-installer-x86_64-accton_as7712_32x-r0",
        "onie-installer-x86_64-accton_as7712_32x",
        "onie-installer-accton_as7712_32x",
        "onie-installer-x86_64-bcm",
        "onie-installer-x86_64",
        "onie-installer",
    ];

    fn image(path: &str, sha: &str) -> ImageRef {
        ImageRef { path: path.into(), sha256: sha.into(), size: 1 }
    }

    #[test]
    fn the_waterfall_is_ranked_as_onie_walks_it() {
        let mut ranks = vec![Candidate::FIXED];
        for name in NAMES {
            for n in [name.to_owned(), format!("{name}.bin")] {
                ranks.push(Candidate::of_name(&n, &id()).unwrap_or_else(|| panic!("{n}")));
            }
        }
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert_eq!(
            Candidate::of_name("onie-updater-x86_64-accton_as7712_32x-r0", &id()),
            Candidate::of_name(NAMES[0], &id())
        );
        // Another platform's names are none of this device's.
        assert_eq!(Candidate::of_name("onie-installer-x86_64-mlnx_x86-r0", &id()), None);
        assert_eq!(Candidate::of_name("onie-installer-arm64", &id()), None);
        assert_eq!(Candidate::of_name("onie-installer-x86_64-accton_as7712_32x-r1", &id()), None);
    }

    #[test]
    fn a_later_candidate_of_the_same_pass_is_refused_and_the_next_pass_served() {
        let passes = Passes::default();
        let (img, t0) = (image("nos/1/nos.bin", "aa"), Instant::now());
        let rank = |n: &str| Candidate::of_name(n, &id());
        let key = Some("serial SN1".to_owned());
        let ticket = passes.check(key.clone(), rank(NAMES[0]), &img, t0).expect("served").expect("ticket");
        passes.served(&ticket, &img, t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Every later name within the window: refused.
        for n in [format!("{}.bin", NAMES[0]), NAMES[1].into(), NAMES[5].into(), format!("{}.bin", NAMES[5])]
        {
            let refused = passes.check(key.clone(), rank(&n), &img, at(2)).expect_err(&n);
            assert_eq!((refused.image.as_str(), refused.after), ("nos/1/nos.bin", Duration::from_secs(2)));
        }
        // The pass starting again (the most specific name), after the window, another device,
        // other bytes: served.
        assert!(passes.check(key.clone(), rank(NAMES[0]), &img, at(2)).is_ok());
        assert!(passes.check(key.clone(), rank(NAMES[5]), &img, at(10)).is_ok());
        assert!(passes.check(Some("serial SN2".into()), rank(NAMES[5]), &img, at(2)).is_ok());
        assert!(passes.check(key.clone(), rank(NAMES[5]), &image("nos/2/nos.bin", "aa"), at(2)).is_ok());
        assert!(passes.check(key.clone(), rank(NAMES[5]), &image("nos/1/nos.bin", "bb"), at(2)).is_ok());
        // No device key or an unknown name: nothing to decide.
        assert_eq!(passes.check(None, rank(NAMES[5]), &img, at(2)), Ok(None));
        assert_eq!(passes.check(key.clone(), None, &img, at(2)), Ok(None));
    }

    #[test]
    fn the_fixed_url_again_within_the_window_is_the_same_pass() {
        let passes = Passes::default();
        let (img, t0) = (image("nos/1/nos.bin", "aa"), Instant::now());
        let key = Some("mac 0c:42:a1:00:00:07".to_owned());
        let ticket =
            passes.check(key.clone(), Some(Candidate::FIXED), &img, t0).expect("ok").expect("ticket");
        passes.served(&ticket, &img, t0);
        // 125 then 114 (both `/onie`), then the names: refused.
        let later = t0 + Duration::from_millis(300);
        assert!(passes.check(key.clone(), Some(Candidate::FIXED), &img, later).is_err());
        assert!(passes.check(key.clone(), Candidate::of_name("onie-installer", &id()), &img, later).is_err());
        // ONIE's next pass comes after its 20 s sleep.
        assert!(passes.check(key, Some(Candidate::FIXED), &img, t0 + Duration::from_secs(21)).is_ok());
    }

    #[test]
    fn memory_stays_bounded_in_a_boot_storm() {
        let passes = Passes::new(SAME_PASS_WINDOW, 1000);
        let (img, t0) = (image("nos/1/nos.bin", "aa"), Instant::now());
        for i in 0..100_000 {
            let ticket = Ticket { device: format!("serial S{i}"), candidate: Candidate::FIXED };
            passes.served(&ticket, &img, t0 + Duration::from_micros(i));
        }
        assert!(passes.len() <= 2000, "{}", passes.len());
        // The newest are still remembered; everything is forgotten two windows after the last
        // download.
        let last = t0 + Duration::from_micros(99_999);
        let late = t0 + Duration::from_millis(200);
        assert!(passes.refuse("serial S99999", Candidate::FIXED, &img, late).is_some());
        let ticket = Ticket { device: "serial X".into(), candidate: Candidate::FIXED };
        passes.served(&ticket, &img, last + SAME_PASS_WINDOW * 2);
        assert_eq!(passes.len(), 1);
    }
}
