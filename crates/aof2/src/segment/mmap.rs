//! The one audited module that uses `unsafe`: shared memory mappings of segment files.
//!
//! Contract of a [`Mapping`]:
//! - The region `[0, published)` of a segment is immutable once published: the single writer (who
//!   holds the log's write lock, proven by `&mut ActiveRegion`) only writes above the published
//!   end, and readers only read below it. So a `&[u8]` handed out by [`Mapping::slice`] never
//!   aliases bytes that are being written.
//! - A mapping outlives every slice taken from it: readers hold an `Arc<Mapping>`.
//! - Files are never shrunk below bytes a reader can reach (sealing truncates only the unused
//!   preallocated tail, beyond the footer).
//! - Another process modifying the file behind our back breaks the first rule; the root lock
//!   (`LOCK`) is what keeps other aof2 processes out.
//! - A file mapped anywhere in the process is never reused for another segment (which would
//!   rewrite or shrink it): every mapping is registered by inode, and an evicted file is moved
//!   away for reuse only through [`rename_if_unmapped`]. This covers mappings the segment's own
//!   pin count cannot see: `Record`s of an earlier handle of the same log, or a deep verify.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::{Mutex, const_mutex};

/// Live mappings per file (device, inode) in this process.
static MAPPED: Mutex<BTreeMap<(u64, u64), usize>> = const_mutex(BTreeMap::new());

fn file_key(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Rename `from` to `to` unless a mapping of `from`'s file is alive anywhere in this process.
/// `Ok(false)`: it is mapped (or gone), nothing was renamed.
pub fn rename_if_unmapped(from: &Path, to: &Path) -> io::Result<bool> {
    let mapped = MAPPED.lock();
    let key = match std::fs::metadata(from) {
        Ok(meta) => file_key(&meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if mapped.contains_key(&key) {
        return Ok(false);
    }
    std::fs::rename(from, to)?;
    Ok(true)
}

/// A shared mapping of (a prefix of) a segment file.
#[derive(Debug)]
pub struct Mapping {
    raw: MmapRaw,
    len: usize,
    key: (u64, u64),
}

impl Mapping {
    /// Map `len` bytes of `file` (opened from `path`) read-write (shared: stores reach the page
    /// cache of the file).
    pub fn map_write(file: &File, path: &Path, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        Self::register(raw, len, file, path)
    }

    /// Map `len` bytes of `file` (opened from `path`) read-only.
    pub fn map_read(file: &File, path: &Path, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let raw = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Self::register(raw, len, file, path)
    }

    /// Count the mapping against its file, provided `path` still names that file: if it was
    /// moved away for reuse since it was opened, the mapping is refused (`NotFound`) rather than
    /// left to see the file rewritten.
    fn register(raw: MmapRaw, len: usize, file: &File, path: &Path) -> io::Result<Self> {
        let key = file_key(&file.metadata()?);
        let mut mapped = MAPPED.lock();
        let named = match std::fs::metadata(path) {
            Ok(meta) => file_key(&meta) == key,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !named {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} was moved away while being mapped", path.display()),
            ));
        }
        *mapped.entry(key).or_insert(0) += 1;
        Ok(Mapping { raw, len, key })
    }

    /// Fault every page in ahead of use (off the append path), so appends do not pay for first
    /// touch. Uses `MADV_POPULATE_WRITE` (Linux 5.14+) and falls back to reading every page.
    pub fn prefault_write(&self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: the range is exactly this mapping; MADV_POPULATE_WRITE only faults pages in and
        // does not change their contents.
        let rc = unsafe {
            libc::madvise(
                self.raw.as_mut_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc != 0 {
            self.prefault_read();
        }
    }

    /// Fault every page in for reading.
    pub fn prefault_read(&self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: as above; MADV_POPULATE_READ does not change contents.
        let rc = unsafe {
            libc::madvise(
                self.raw.as_mut_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_READ,
            )
        };
        if rc != 0 {
            let mut sum = 0u8;
            for page in (0..self.len).step_by(4096) {
                // SAFETY: `page < len`; a volatile read of a mapped byte.
                sum ^= unsafe { std::ptr::read_volatile(self.raw.as_ptr().add(page)) };
            }
            std::hint::black_box(sum);
        }
    }

    /// Bytes `[offset, offset + len)`. The caller must only ask for a published range (see the
    /// module contract); out-of-range requests return `None`.
    #[inline]
    pub fn slice(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: in bounds (checked above); the range is published and therefore immutable for
        // the lifetime of `&self` (module contract).
        Some(unsafe {
            std::slice::from_raw_parts(self.raw.as_ptr().add(offset as usize), len as usize)
        })
    }

    /// Everything from `offset` to the end of the mapping (for scans bounded by other means).
    #[inline]
    pub fn tail(&self, offset: u64) -> &[u8] {
        self.slice(offset, (self.len as u64).saturating_sub(offset))
            .unwrap_or(&[])
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let mut mapped = MAPPED.lock();
        if let Some(n) = mapped.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                mapped.remove(&self.key);
            }
        }
    }
}

/// Write access to the unpublished part of a read-write mapping. Exactly one exists per active
/// segment, owned by the log's write state, so `&mut self` proves the single-writer rule.
#[derive(Debug)]
pub struct ActiveRegion {
    mapping: std::sync::Arc<Mapping>,
}

impl ActiveRegion {
    pub fn new(mapping: std::sync::Arc<Mapping>) -> Self {
        ActiveRegion { mapping }
    }

    pub fn mapping(&self) -> &std::sync::Arc<Mapping> {
        &self.mapping
    }

    /// Mutable access to `[offset, offset + len)`, which must lie above everything published to
    /// readers. Panics if out of bounds.
    #[inline]
    pub fn region_mut(&mut self, offset: u64, len: u64) -> &mut [u8] {
        let end = offset.checked_add(len).expect("region end overflows");
        assert!(
            end <= self.mapping.len as u64,
            "region {offset}+{len} beyond mapping {}",
            self.mapping.len
        );
        // SAFETY: in bounds; the mapping is read-write (created by `map_write` for active segments);
        // no reader holds a slice of this unpublished range and `&mut self` excludes other writers.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.mapping.raw.as_mut_ptr().add(offset as usize),
                len as usize,
            )
        }
    }
}
