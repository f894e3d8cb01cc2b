//! The process's own figures, read from `/proc` when scraped (Linux only; elsewhere none).

/// Resident memory in bytes: `/proc/self/statm`'s second field, in pages.
#[cfg(target_os = "linux")]
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0)?)
}

/// Open file descriptors: the entries of `/proc/self/fd` (the one that lists them included,
/// as Prometheus' own clients count).
#[cfg(target_os = "linux")]
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count() as u64)
}

#[cfg(not(target_os = "linux"))]
pub fn resident_bytes() -> Option<u64> {
    None
}

#[cfg(not(target_os = "linux"))]
pub fn open_fds() -> Option<u64> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_has_memory_and_files() {
        assert!(resident_bytes().unwrap() > 1 << 20);
        // At least stdin, stdout, stderr and the directory being listed.
        assert!(open_fds().unwrap() >= 4);
    }
}
