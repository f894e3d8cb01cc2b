//! Direct I/O for `POST /upload`: the file's bytes go from one aligned staging buffer
//! straight to the disk (`O_DIRECT`), bypassing the page cache.
//!
//! A buffered write copies every byte into freshly allocated page-cache pages and a kernel
//! thread later writes them back: at hundreds of MiB/s that copy and write-back cost more CPU
//! than the SHA-256 of the same bytes, on the cores that also serve requests. With direct
//! I/O the only copy is ours (network chunks into the staging buffer), the disk reads the
//! buffer itself, and the final fsync has only the metadata left to flush.
//!
//! Direct I/O wants the buffer, the file offset and the length aligned to the device's block
//! size; 4 KiB satisfies every block size up to it. Whole blocks are written as the buffer
//! fills; the last, partial block is written padded and the file is then cut to its length.
//! Where the filesystem refuses direct I/O (tmpfs, some network filesystems), the file is
//! opened, or switched to, buffered and the same code path writes through the page cache.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The alignment direct I/O needs for buffers, offsets and lengths.
pub const ALIGN: usize = 4096;

/// One aligned block of the staging buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

const _: () = assert!(std::mem::size_of::<Block>() == ALIGN);

/// A file written sequentially from an aligned staging buffer.
pub struct DirectWriter {
    /// The staging buffer, allocated by the first append: a file whose client has sent
    /// nothing yet costs no memory.
    blocks: Vec<Block>,
    /// Blocks the staging buffer holds once allocated.
    block_count: usize,
    /// Bytes staged at the front of `blocks`.
    filled: usize,
    /// Bytes written to the file so far (always whole blocks until [`Self::finish`]).
    flushed: u64,
    /// Whether the file is open with `O_DIRECT` (false after a fallback).
    direct: bool,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter")
            .field("capacity", &self.capacity())
            .field("filled", &self.filled)
            .field("flushed", &self.flushed)
            .field("direct", &self.direct)
            .finish()
    }
}

impl DirectWriter {
    /// A writer staging up to `capacity` bytes (rounded up to whole blocks) for a file
    /// opened by [`create_new`]; `direct` is what `create_new` answered.
    pub fn new(capacity: usize, direct: bool) -> Self {
        Self {
            blocks: Vec::new(),
            block_count: capacity.div_ceil(ALIGN).max(1),
            filled: 0,
            flushed: 0,
            direct,
        }
    }

    fn capacity(&self) -> usize {
        self.block_count * ALIGN
    }

    fn buffer(&mut self) -> &mut [u8] {
        if self.blocks.is_empty() {
            self.blocks = vec![Block([0; ALIGN]); self.block_count];
        }
        let len = self.capacity();
        // SAFETY: `Block` is `repr(C)` over a byte array with no padding (size == ALIGN,
        // checked above), so `len` bytes starting at the first block are the blocks' own
        // initialised bytes; the slice borrows `self` mutably, so nothing else aliases it.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), len) }
    }

    /// Whether the file is written with direct I/O.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Appends `data`, writing every block the staging buffer fills.
    pub fn append(&mut self, file: &mut File, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let start = self.filled;
            let take = data.len().min(self.capacity() - start);
            self.buffer()[start..start + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == self.capacity() {
                self.write_staged(file, self.filled)?;
            }
        }
        Ok(())
    }

    /// Writes what is still staged (its last block padded) and cuts the file to the bytes
    /// appended; the file's length is then exactly that. Call once, before syncing the file.
    pub fn finish(&mut self, file: &mut File) -> io::Result<u64> {
        let len = self.flushed + self.filled as u64;
        if self.filled > 0 {
            let padded = self.filled.next_multiple_of(ALIGN);
            let filled = self.filled;
            self.buffer()[filled..padded].fill(0);
            self.write_staged(file, padded)?;
        }
        file.set_len(len)?;
        self.flushed = len;
        Ok(len)
    }

    /// Writes the first `len` staged bytes (a multiple of [`ALIGN`]) and empties the buffer.
    fn write_staged(&mut self, file: &mut File, len: usize) -> io::Result<()> {
        let direct = self.direct;
        let result = file.write_all(&self.buffer()[..len]);
        match result {
            // The filesystem took the open flag but refuses this write: go on buffered.
            Err(e)
                if direct
                    && e.raw_os_error() == Some(libc::EINVAL)
                    && self.at_flushed_end(file) =>
            {
                self.direct = false;
                set_direct(file, false)?;
                file.write_all(&self.buffer()[..len])?;
            }
            other => other?,
        }
        self.flushed += len as u64;
        self.filled = 0;
        Ok(())
    }

    /// Whether the file's position is still where the flushed bytes end: a direct write
    /// that failed part-way moved it, and then the error stands rather than leave a gap.
    fn at_flushed_end(&self, file: &mut File) -> bool {
        use std::io::Seek as _;
        matches!(file.stream_position(), Ok(at) if at == self.flushed)
    }
}

/// Creates a new, empty file for sequential writing, with direct I/O where the filesystem
/// allows it; answers the file and whether it is direct.
pub fn create_new(path: &Path) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let direct = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match direct {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    Ok((file, false))
}

#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` keeps open for the whole call, with integer
    // arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, _on: bool) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn write_in_pieces(dir: &Path, data: &[u8], piece: usize, capacity: usize) -> (bool, Vec<u8>) {
        let path = dir.join(format!("f-{piece}-{capacity}-{}", data.len()));
        let (mut file, direct) = create_new(&path).unwrap();
        let mut writer = DirectWriter::new(capacity, direct);
        for part in data.chunks(piece.max(1)) {
            writer.append(&mut file, part).unwrap();
        }
        assert_eq!(writer.finish(&mut file).unwrap(), data.len() as u64);
        file.sync_all().unwrap();
        (writer.is_direct(), std::fs::read(&path).unwrap())
    }

    #[test]
    fn bytes_round_trip_whatever_the_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 17, 300_001] {
            let data = noise(len, len as u64 + 7);
            for (piece, capacity) in [(1000, ALIGN), (ALIGN, 2 * ALIGN), (65_536, 1 << 20), (7, 1)]
            {
                if piece == 7 && len > 20_000 {
                    continue;
                }
                let (_, back) = write_in_pieces(dir.path(), &data, piece, capacity);
                assert!(
                    back == data,
                    "len {len}, piece {piece}, capacity {capacity}"
                );
            }
        }
    }

    #[test]
    fn an_existing_file_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        std::fs::write(&path, b"keep").unwrap();
        let err = create_new(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_switched_to_buffered_mid_way_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switched");
        let (mut file, direct) = create_new(&path).unwrap();
        let mut writer = DirectWriter::new(ALIGN, direct);
        let data = noise(5 * ALIGN + 99, 3);
        writer.append(&mut file, &data[..2 * ALIGN]).unwrap();
        set_direct(&file, false).unwrap();
        writer.direct = false;
        writer.append(&mut file, &data[2 * ALIGN..]).unwrap();
        writer.finish(&mut file).unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }
}
