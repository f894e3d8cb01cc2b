//! The upload directory: where each file lives, and how a finished one is put in place.
//!
//! Layout under `TROUPE_UPLOAD_DIR`: `{id}` is a complete file, `.tmp/{id}.part` a
//! `POST /upload` being written, `tus/{id}` an unfinished tus upload. Names are always the
//! canonical form of a UUID, never anything a client sent. `.tmp` and `tus` live in the same
//! directory tree, so the final `rename` is atomic on one filesystem.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::ids::UploadId;

/// A `.tmp` file older than this at start-up is left over from a crash; younger ones may
/// belong to another replica sharing the directory.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// The upload directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    dir_sync: Arc<DirSync>,
}

/// Group commit for the upload directory's fsync: every rename needs a directory fsync that
/// starts after it, and one fsync serves all renames done before it started, so concurrent
/// uploads share one instead of queueing one each behind the journal.
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<DirSyncState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct DirSyncState {
    /// Tickets handed out: one per rename waiting to be durable.
    requested: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// Whether a thread is running an fsync now.
    running: bool,
}

impl DirSync {
    /// Returns once an fsync of `dir` that started after this call has succeeded.
    fn sync(&self, dir: &Path) -> io::Result<()> {
        let poisoned = || io::Error::other("directory sync lock poisoned");
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        state.requested += 1;
        let ticket = state.requested;
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.running {
                state = self.done.wait(state).map_err(|_| poisoned())?;
                continue;
            }
            // Everything requested so far was renamed before this fsync starts.
            let covers = state.requested;
            state.running = true;
            drop(state);
            let result = File::open(dir).and_then(|d| d.sync_all());
            state = self.state.lock().map_err(|_| poisoned())?;
            state.running = false;
            if result.is_ok() {
                state.synced = state.synced.max(covers);
            }
            self.done.notify_all();
            result?;
        }
    }
}

impl Store {
    /// Creates the directory tree if missing and removes stale temp files.
    pub fn open(root: &Path) -> io::Result<Self> {
        let store = Self {
            root: root.to_path_buf(),
            dir_sync: Arc::default(),
        };
        std::fs::create_dir_all(store.temp_dir())?;
        std::fs::create_dir_all(store.tus_dir())?;
        store.remove_stale_temps();
        Ok(store)
    }

    fn temp_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }

    fn tus_dir(&self) -> PathBuf {
        self.root.join("tus")
    }

    /// Where a complete upload lives.
    pub fn file_path(&self, id: &UploadId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Where a `POST /upload` is written until it is complete.
    pub fn temp_path(&self, id: &UploadId) -> PathBuf {
        self.temp_dir().join(format!("{id}.part"))
    }

    /// Where an unfinished tus upload lives.
    pub fn tus_path(&self, id: &UploadId) -> PathBuf {
        self.tus_dir().join(id.to_string())
    }

    fn remove_stale_temps(&self) {
        let Ok(entries) = std::fs::read_dir(self.temp_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() > STALE_TEMP_AGE);
            if stale {
                log::warn!("removing a stale partial upload: {:?}", entry.file_name());
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Moves a finished file into place durably: its bytes first, then the rename, then the
    /// directory entry.
    pub fn persist(&self, file: &File, from: &Path, id: &UploadId) -> io::Result<()> {
        file.sync_all()?;
        std::fs::rename(from, self.file_path(id))?;
        self.dir_sync.sync(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_directory_syncs_all_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        store.dir_sync.sync(&store.root).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = store.dir_sync.state.lock().unwrap();
        assert_eq!(state.requested, 40);
        assert_eq!(state.synced, 40);
        assert!(!state.running);
    }
}
