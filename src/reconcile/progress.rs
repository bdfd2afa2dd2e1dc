//! Sizes and progress for humans: `status.progressText` (the `Progress` column of `kubectl get
//! osimages`) and log lines. Pure formatting.

/// `512 B`, `3.4 MiB`, `312 MiB`, `1.0 GiB`: binary units, one decimal below 10, none above.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    // Rounding may carry into the next unit (1023.96 KiB shows as `1.0 MiB`, not `1024 KiB`).
    if value.round() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 { format!("{value:.1} {}", UNITS[unit]) } else { format!("{value:.0} {}", UNITS[unit]) }
}

/// Whole percent of `done` out of `total`, rounded down (so 100% means complete), at most 100.
pub fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    ((u128::from(done) * 100 / u128::from(total)) as u64).min(100)
}

/// `312 MiB / 1.0 GiB (30%)` while a fetch runs; `312 MiB` when the source announced no size.
pub fn progress_text(done: u64, total: Option<u64>) -> String {
    match total {
        Some(total) => format!("{} / {} ({}%)", human_bytes(done), human_bytes(total), percent(done, total)),
        None => human_bytes(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 * 1024), "10 KiB");
        assert_eq!(human_bytes(312 * 1024 * 1024 + 100), "312 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB", "rounding carries into the next unit");
        assert_eq!(human_bytes(u64::MAX), "16 EiB");
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(0, 10), 0);
        assert_eq!(percent(3, 10), 30);
        assert_eq!(percent(999, 1000), 99, "rounded down: 100% only when complete");
        assert_eq!(percent(1000, 1000), 100);
        assert_eq!(percent(2000, 1000), 100);
        assert_eq!(percent(5, 0), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn progress() {
        assert_eq!(progress_text(312 * 1024 * 1024, Some(1 << 30)), "312 MiB / 1.0 GiB (30%)");
        assert_eq!(progress_text(0, Some(1 << 30)), "0 B / 1.0 GiB (0%)");
        assert_eq!(progress_text(5 * 1024 * 1024, None), "5.0 MiB");
    }
}
