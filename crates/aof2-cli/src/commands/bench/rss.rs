//! Peak resident set size of this process, from `/proc/self/status`.
//!
//! Contract: [`peak_rss_bytes`] is `VmHWM` in bytes, 0 where it is unavailable (not Linux, no
//! procfs). [`reset_peak_rss`] lowers the high-water mark to the current RSS (Linux 4.0+), so
//! that memory touched by the warm-up and already returned does not count; it does nothing where
//! unsupported. Mapped segment pages count: RSS includes file-backed pages of the mappings.

/// `VmHWM` of this process, bytes (0 if unavailable).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_vm_hwm(&status))
        .unwrap_or(0)
}

/// Reset the peak to the current RSS (best effort).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

/// The `VmHWM:   1234 kB` line of a status file, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut words = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\taof2\nVmPeak:\t  999 kB\nVmHWM:\t    1494408 kB\nVmRSS:\t 12 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1494408 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t12 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\tlots kB\n"), None);
    }

    #[test]
    fn own_peak_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            reset_peak_rss();
            assert!(peak_rss_bytes() > 0);
        }
    }
}
