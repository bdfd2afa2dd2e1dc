//! New Switches per source address per minute (`--discover-per-source-per-minute`): identity over
//! plain HTTP is self-asserted, so one address making up serials creates at most this many
//! Switches a minute. A fixed window per address, opened by its first creation; windows older than
//! a minute are forgotten. Pure: the caller passes the time.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);

/// Creations per source address in its current minute.
#[derive(Debug, Clone)]
pub struct PerSource {
    per_minute: u32,
    windows: HashMap<IpAddr, (Instant, u32)>,
}

impl PerSource {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: HashMap::new() }
    }

    /// Counts a creation from `ip` at `now`; false (nothing counted) when it already made its
    /// share this minute.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        let (_, count) = self.windows.entry(ip).or_insert((now, 0));
        if *count >= self.per_minute {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_share_a_minute_and_others_are_not_affected() {
        let mut limit = PerSource::new(3);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().expect("ip"), "192.0.2.2".parse().expect("ip"));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!((0..3).all(|i| limit.allow(a, at(i))));
        assert!(!limit.allow(a, at(10)), "the fourth within the minute");
        assert!(limit.allow(b, at(10)), "another source has its own share");
        assert!(!limit.allow(a, at(59)));
        assert!(limit.allow(a, at(60)), "a new minute from the window's start");
        assert!(PerSource::new(0).allow(a, t0).eq(&false), "0 allows nothing");
    }
}
