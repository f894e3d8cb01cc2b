//! A 4 MiB filesystem for the full-disk tests (tmpfs; needs root, skipped elsewhere).

use std::path::Path;

use crate::helpers::{spawn_app_with, Backend, TestApp};

/// A small filesystem of its own, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts a `size` tmpfs under `dir`; `None` where this process may not mount (not root).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let at = dir.join("small-disk");
        std::fs::create_dir_all(&at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .is_ok_and(|o| o.status.success());
        mounted.then_some(Self(at))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

/// The app with its uploads on a 4 MiB filesystem of their own. Fields drop in order: the
/// app stops, then the disk is unmounted, then its directory goes.
pub struct SmallDiskApp {
    pub app: TestApp,
    pub uploads: std::path::PathBuf,
    _disk: SmallDisk,
    _dir: tempfile::TempDir,
}

/// [`SmallDiskApp`], or `None` (said in one line) where this process may not mount.
pub async fn app_on_small_disk() -> Option<SmallDiskApp> {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path(), "4m") else {
        super::skip(
            "a full-disk test needs root",
            "mounting a small tmpfs needs root",
        );
        return None;
    };
    let uploads = disk.0.join("uploads");
    let app = spawn_app_with(
        Backend::Sqlite,
        &[("TROUPE_UPLOAD_DIR", uploads.to_str().unwrap())],
    )
    .await
    .unwrap();
    Some(SmallDiskApp {
        app,
        uploads,
        _disk: disk,
        _dir: dir,
    })
}
