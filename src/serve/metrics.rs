//! Prometheus metrics of the device server, in the text exposition format at `/metrics`:
//! requests by family and status class, bytes by family, downloads in flight and refused,
//! provisioned callbacks, and the loaded snapshot's size. Plain atomics: no locks on the hot path.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::profile::identity::Family;

const FAMILIES: [Family; 6] =
    [Family::Onie, Family::Nvos, Family::Sonic, Family::Cumulus, Family::RtBrick, Family::Unknown];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn family_index(f: Family) -> usize {
    FAMILIES.iter().position(|x| *x == f).unwrap_or(FAMILIES.len() - 1)
}

/// Counters of the device server.
#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; 5]; 6],
    bytes: [AtomicU64; 6],
    provisioned: AtomicU64,
}

impl Metrics {
    /// Records one device request.
    pub fn request(&self, family: Family, status: u16, bytes: u64) {
        let f = family_index(family);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[f][class].fetch_add(1, Ordering::Relaxed);
        self.bytes[f].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records a `provisioned` callback.
    pub fn provisioned(&self) {
        self.provisioned.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition. `active` / `limit` are the download gauges, `profiles` the snapshot's.
    pub fn render(&self, active: usize, limit: usize, profiles: Option<usize>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ztp_device_requests_total Device requests by family and status class.");
        let _ = writeln!(out, "# TYPE ztp_device_requests_total counter");
        for (fi, f) in FAMILIES.iter().enumerate() {
            for (ci, c) in CLASSES.iter().enumerate() {
                let n = self.requests[fi][ci].load(Ordering::Relaxed);
                let _ =
                    writeln!(out, "ztp_device_requests_total{{family=\"{}\",code=\"{c}\"}} {n}", f.as_str());
            }
        }
        let _ = writeln!(
            out,
            "# HELP ztp_device_response_bytes_total Response bytes announced to devices, by family."
        );
        let _ = writeln!(out, "# TYPE ztp_device_response_bytes_total counter");
        for (fi, f) in FAMILIES.iter().enumerate() {
            let _ = writeln!(
                out,
                "ztp_device_response_bytes_total{{family=\"{}\"}} {}",
                f.as_str(),
                self.bytes[fi].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP ztp_downloads_active Image downloads in flight.");
        let _ = writeln!(out, "# TYPE ztp_downloads_active gauge");
        let _ = writeln!(out, "ztp_downloads_active {active}");
        let _ = writeln!(out, "# HELP ztp_downloads_limit Image downloads admitted at once (more get 503).");
        let _ = writeln!(out, "# TYPE ztp_downloads_limit gauge");
        let _ = writeln!(out, "ztp_downloads_limit {limit}");
        let _ = writeln!(out, "# HELP ztp_devices_provisioned_total Provisioned callbacks received.");
        let _ = writeln!(out, "# TYPE ztp_devices_provisioned_total counter");
        let _ = writeln!(out, "ztp_devices_provisioned_total {}", self.provisioned.load(Ordering::Relaxed));
        if let Some(p) = profiles {
            let _ = writeln!(out, "# HELP ztp_snapshot_profiles Profiles in the loaded device snapshot.");
            let _ = writeln!(out, "# TYPE ztp_snapshot_profiles gauge");
            let _ = writeln!(out, "ztp_snapshot_profiles {p}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_family_and_class() {
        let m = Metrics::default();
        m.request(Family::Onie, 200, 1000);
        m.request(Family::Onie, 404, 0);
        m.request(Family::Cumulus, 503, 10);
        m.provisioned();
        let text = m.render(3, 512, Some(7));
        assert!(text.contains("ztp_device_requests_total{family=\"onie\",code=\"2xx\"} 1"), "{text}");
        assert!(text.contains("ztp_device_requests_total{family=\"onie\",code=\"4xx\"} 1"));
        assert!(text.contains("ztp_device_requests_total{family=\"cumulus\",code=\"5xx\"} 1"));
        assert!(text.contains("ztp_device_response_bytes_total{family=\"onie\"} 1000"));
        assert!(text.contains("ztp_downloads_active 3"));
        assert!(text.contains("ztp_devices_provisioned_total 1"));
        assert!(text.contains("ztp_snapshot_profiles 7"));
    }
}
