//! The blocking file operations of uploads, which the upload actor runs on blocking threads
//! (never on an async worker): a session's open file, its writes and checkpoints, creating,
//! locking, cutting back and removing files.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::direct::{self, DirectWriter};
use crate::digest::Hasher;

/// A file being written, shared by the blocking tasks of one upload session.
#[derive(Debug, Default)]
pub struct OpenFile {
    /// The file, once opened.
    pub file: Option<File>,
    /// The offset the session started writing at.
    pub base: u64,
    /// Bytes written since `base`.
    pub written: u64,
    /// The upload's final size (tus).
    pub size: u64,
    /// The offset the database records (tus): `base`, then each checkpoint's end.
    pub durable: u64,
    /// The expiry the last checkpoint recorded with `durable` (tus), if any did.
    pub durable_expiry: Option<chrono::NaiveDateTime>,
    /// Set when the session ended: a write still queued must not touch the file any more.
    pub closed: bool,
    /// The staging buffer of a file written with direct I/O (`POST /upload`); tus files,
    /// appended at any offset, are written through the page cache.
    pub writer: Option<DirectWriter>,
    /// The SHA-256 of the file's first `base + written` bytes, fed as they are written
    /// (tus, when the session starts at 0 or from a kept state: `upload::digests`).
    pub digest: Option<Box<Hasher>>,
    /// A tus PATCH's registration as the holder of its upload's lock. Declared after `file`,
    /// so it is dropped (and waiters told) only once the file, and its lock, are closed.
    pub hold: Option<crate::upload::handover::Hold>,
}

/// One session's file, behind a mutex only its own (sequential) blocking tasks take.
pub type SharedFile = Arc<Mutex<OpenFile>>;

/// Locks a session's file; a poisoned lock (a panicking write) is an I/O error, not a panic.
pub fn lock(file: &SharedFile) -> io::Result<std::sync::MutexGuard<'_, OpenFile>> {
    file.lock()
        .map_err(|_| io::Error::other("upload file lock poisoned"))
}

/// Appends `chunks` to the session's file; the new total written.
pub fn write_chunks(shared: &SharedFile, chunks: &[Bytes]) -> io::Result<u64> {
    let mut open = lock(shared)?;
    if open.closed {
        return Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the upload session has ended",
        ));
    }
    let OpenFile {
        file,
        base,
        written,
        writer,
        digest,
        ..
    } = &mut *open;
    let file = file
        .as_mut()
        .ok_or_else(|| io::Error::other("upload file not open"))?;
    let start = *base + *written;
    for chunk in chunks {
        match writer {
            Some(writer) => writer.append(file, chunk)?,
            None => file.write_all(chunk)?,
        }
        *written += chunk.len() as u64;
        if let Some(digest) = digest.as_mut() {
            digest.update(chunk);
        }
    }
    if !writer.as_ref().is_some_and(DirectWriter::is_direct) {
        start_writeback(file, start, *base + *written - start);
    }
    Ok(*written)
}

/// A running tus PATCH's checkpoint: once `every` bytes past the recorded offset are
/// written, fsyncs them and answers the span to record (recorded offset → bytes written).
/// The last bytes of an upload are never a checkpoint: the session's end completes it.
pub fn sync_checkpoint(shared: &SharedFile, every: u64) -> io::Result<Option<(u64, u64)>> {
    let open = lock(shared)?;
    let end = open.base + open.written;
    if open.closed || end - open.durable < every || end >= open.size {
        return Ok(None);
    }
    if let Some(handle) = open.file.as_ref() {
        handle.sync_data()?;
    }
    Ok(Some((open.durable, end)))
}

/// Ends a session's writes: what a direct writer still stages goes to the file, which is
/// then exactly as long as the bytes written. Answers the file, ready to be persisted.
pub fn finish_writes(open: &mut OpenFile) -> io::Result<File> {
    open.closed = true;
    let mut file = open
        .file
        .take()
        .ok_or_else(|| io::Error::other("upload file not open"))?;
    if let Some(mut writer) = open.writer.take() {
        writer.finish(&mut file)?;
    }
    Ok(file)
}

/// Starts writing a just-written range back to disk without waiting for it, so the disk works
/// while the rest of the upload arrives and the final fsync has little left to wait for.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open (borrowed from `file`) for the whole call, and
    // sync_file_range only reads its integer arguments. A failure only means the final
    // fsync does all the work, so its result is ignored.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Creates a new, empty file (never one that exists). Its directory is made again if it is
/// gone: an operator may empty the upload directory while the server runs.
pub fn create_new(path: &Path) -> io::Result<File> {
    in_own_dir(path, || {
        OpenOptions::new().write(true).create_new(true).open(path)
    })
}

/// [`create_new`] for a file written once, sequentially: with a staging buffer of
/// `capacity` bytes and direct I/O where the filesystem allows it.
pub fn create_new_direct(path: &Path, capacity: usize) -> io::Result<(File, DirectWriter)> {
    let (file, direct) = in_own_dir(path, || direct::create_new(path))?;
    Ok((file, DirectWriter::new(capacity, direct)))
}

/// Runs `open`, making `path`'s directory again first when it is gone.
fn in_own_dir<T>(path: &Path, open: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// Opens a tus file for reading and writing under an exclusive lock, or `Ok(None)` when
/// another writer (in this process or another one sharing the directory) holds it. The lock
/// lasts as long as the returned file; the caller cuts off what lies past the durable
/// offset ([`rewind`]).
pub fn open_locked(path: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Cuts a file back to `offset` and positions writes there.
pub fn rewind(file: &mut File, offset: u64) -> io::Result<()> {
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok(())
}

/// Removes a file; one that is already gone is fine.
pub fn remove_quietly(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UploadId;
    use crate::upload::store::Store;

    #[test]
    fn a_file_is_created_even_after_its_directory_was_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("up")).unwrap();
        std::fs::remove_dir_all(dir.path().join("up")).unwrap();
        let id = UploadId::new();
        create_new(&store.temp_path(&id)).unwrap();
        create_new(&store.tus_path(&id)).unwrap();
        assert!(
            create_new(&store.tus_path(&id)).is_err(),
            "never an existing file"
        );
    }

    #[test]
    fn a_second_lock_on_a_tus_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        create_new(&path).unwrap();
        let first = open_locked(&path).unwrap();
        assert!(first.is_some());
        assert!(open_locked(&path).unwrap().is_none());
        drop(first);
        assert!(open_locked(&path).unwrap().is_some());
    }
}
