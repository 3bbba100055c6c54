//! Free space on the file system of a directory, so the spool never fills it: `statvfs`
//! on Unix; on Windows not asked (laptop disks are large; a full disk still shows as a
//! refused write, and rounds are then held in memory).

use std::path::Path;

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn a_directory_has_some_free_space() {
        let d = tempfile::tempdir().unwrap();
        assert!(super::free_bytes(d.path()).is_some_and(|b| b > 0));
        assert_eq!(super::free_bytes(&d.path().join("missing")), None);
    }
}
