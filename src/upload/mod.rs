//! Uploads on disk: where each file lives, and the blocking file operations `UploadActor`
//! runs on blocking threads (never on an async worker).
//!
//! Layout under `TROUPE_UPLOAD_DIR`: `{id}` is a complete file, `.tmp/{id}.part` a
//! `POST /upload` being written, `tus/{id}` an unfinished tus upload. Names are always the
//! canonical form of a UUID, never anything a client sent. `.tmp` and `tus` live in the same
//! directory tree, so the final `rename` is atomic on one filesystem.

pub mod direct;
pub mod multipart;
pub mod pace;
pub mod tus;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use uuid::Uuid;

use direct::DirectWriter;

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
    pub fn file_path(&self, id: &Uuid) -> PathBuf {
        self.root.join(id.hyphenated().to_string())
    }

    /// Where a `POST /upload` is written until it is complete.
    pub fn temp_path(&self, id: &Uuid) -> PathBuf {
        self.temp_dir().join(format!("{}.part", id.hyphenated()))
    }

    /// Where an unfinished tus upload lives.
    pub fn tus_path(&self, id: &Uuid) -> PathBuf {
        self.tus_dir().join(id.hyphenated().to_string())
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
    pub fn persist(&self, file: &File, from: &Path, id: &Uuid) -> io::Result<()> {
        file.sync_all()?;
        std::fs::rename(from, self.file_path(id))?;
        self.dir_sync.sync(&self.root)
    }
}

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
    /// Set when the session ended: a write still queued must not touch the file any more.
    pub closed: bool,
    /// The staging buffer of a file written with direct I/O (`POST /upload`); tus files,
    /// appended at any offset, are written through the page cache.
    pub writer: Option<DirectWriter>,
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

/// Lowers the calling thread's scheduling priority (Linux: nice is per thread), once per
/// thread: bulk upload work (writes, digests) then yields the CPU to request handling, so
/// `/ping` and friends keep their latency while uploads run.
pub fn lower_thread_priority() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    DONE.with(|done| {
        if !done.replace(true) {
            lower_priority_now();
        }
    });
}

#[cfg(target_os = "linux")]
fn lower_priority_now() {
    // SAFETY: gettid and setpriority take and return plain integers and touch no memory of
    // ours; a failure leaves the priority as it was, which is harmless.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BULK_NICE);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority_now() {}

/// The nice value of threads doing bulk upload work.
const BULK_NICE: libc::c_int = 10;

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

/// Opens a tus file for appending at `offset` under an exclusive lock, or `Ok(None)` when
/// another writer (in this process or another one sharing the directory) holds it. Bytes
/// past `offset` are not durable (the database's offset says so) and are cut off.
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

/// Longest file name kept, in bytes.
pub const MAX_FILENAME_BYTES: usize = 255;

/// The client's file name reduced to something safe to store and show: the last path
/// component (either slash), without control or bidi-override characters, trimmed, at most
/// 255 bytes; `upload` when nothing is left. Never used as a path.
pub fn sanitize_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .collect();
    let mut name = cleaned.trim().to_owned();
    if name.len() > MAX_FILENAME_BYTES {
        let mut cut = MAX_FILENAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return "upload".into();
    }
    name
}

/// Characters that reorder displayed text (`evil\u{202e}fdp.exe` shows as `evilexe.pdf`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// An ASCII-only form of a sanitised name for the plain `filename=` parameter (the UTF-8
/// original goes in `filename*`).
pub fn ascii_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_filenames_become_plain_names() {
        for (raw, want) in [
            ("../../etc/passwd", "passwd"),
            ("a/b", "b"),
            ("..\\x", "x"),
            ("C:\\Windows\\system32\\cmd.exe", "cmd.exe"),
            ("nul\0byte.txt", "nulbyte.txt"),
            ("line\r\nbreak\t.txt", "linebreak.txt"),
            ("..", "upload"),
            ("../", "upload"),
            ("", "upload"),
            ("   ", "upload"),
            ("evil\u{202e}fdp.exe", "evilfdp.exe"),
            ("résumé.pdf", "résumé.pdf"),
        ] {
            assert_eq!(sanitize_filename(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        let name = sanitize_filename(&"é".repeat(300));
        assert!(name.len() <= MAX_FILENAME_BYTES);
        assert!(name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn ascii_fallback_has_no_quotes_or_non_ascii() {
        assert_eq!(ascii_filename("a\"b\\c é.txt"), "a_b_c _.txt");
    }

    #[test]
    fn a_file_is_created_even_after_its_directory_was_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("up")).unwrap();
        std::fs::remove_dir_all(dir.path().join("up")).unwrap();
        let id = Uuid::new_v4();
        create_new(&store.temp_path(&id)).unwrap();
        create_new(&store.tus_path(&id)).unwrap();
        assert!(
            create_new(&store.tus_path(&id)).is_err(),
            "never an existing file"
        );
    }

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
