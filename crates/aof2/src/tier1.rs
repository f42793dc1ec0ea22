//! Tier 1 ("warm") files: a sealed segment compressed with zstd in independently decodable
//! frames. Layout in `docs/format.md` ("Tier 1 file"), encoding in [`crate::format::tier1`].
//!
//! Contract:
//! - [`write_tier1`] checks every record frame of the sealed segment it is given (CRC and dense
//!   sequence) before compressing it, so a damaged segment is never re-checksummed into a
//!   healthy-looking Tier 1 file. It writes `<id:016x>.t1.tmp`, fdatasyncs it, renames it to
//!   `<id:016x>.t1` and fsyncs the directory: once it returns, the file is durable and complete.
//! - [`Tier1File::open`] reads only the header, the footers and the frame index (three small
//!   `pread`s, never a frame) and checks them against each other and against what the manifest
//!   recorded (footer CRC and file length).
//! - [`Tier1File::read_frame`] reads and decompresses one frame and checks its CRC; nothing
//!   leaves this module unchecked.
//! - [`Tier1File::rebuild_segment`] writes the original sealed segment back, byte for byte.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak, mpsc};

use parking_lot::Mutex;

use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe;

use crate::error::{Error, IoContext, Result};
use crate::format::segment::{FrameError, SegmentFooter, SegmentHeader, decode_frame, peek_frame};
use crate::format::tier1::{
    FrameEntry, TIER1_FRAMES_OFFSET, Tier1Footer, Tier1Header, decode_frame_index,
    encode_frame_index,
};
use crate::format::{FormatError, crc32c};
use crate::limits::{
    FRAME_HEADER_BYTES, INDEX_ENTRY_BYTES, MAX_TIER1_FRAME_BYTES, MIN_TIER1_FRAME_BYTES,
    SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES, TIER1_FOOTER_BYTES, TIER1_FRAME_ENTRY_BYTES,
    TIER1_HEADER_BYTES, TIER1_OPEN_FILES,
};
use crate::segment::{SealedMeta, segment_file_name};

/// Buffer of the writer: large enough that frames reach the file in few system calls.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// File name of the Tier 1 file of segment `id`.
pub fn tier1_file_name(id: u64) -> String {
    format!("{id:016x}.t1")
}

/// File name of the Tier 1 file of segment `id` while it is being written.
pub fn tier1_tmp_name(id: u64) -> String {
    format!("{id:016x}.t1.tmp")
}

/// What a written Tier 1 file holds; the manifest records `footer_crc` and `file_len` as its
/// identity, as it does for sealed segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier1Meta {
    pub segment_id: u64,
    pub base_seq: u64,
    pub record_count: u64,
    /// Length of the Tier 1 file, bytes.
    pub file_len: u64,
    /// The CRC stored in the Tier 1 footer.
    pub footer_crc: u32,
    /// Number of zstd frames.
    pub frames: u32,
    /// Record frame bytes compressed (`records_end - 128` of the original segment).
    pub uncompressed_bytes: u64,
    /// The zstd level used, after clamping (0 is recorded as zstd's default, 3).
    pub level: i32,
}

/// The zstd level actually used for `level`: clamped to what zstd supports, 0 (zstd's "default")
/// spelled out so the header says which level was used.
fn effective_level(level: i32) -> i32 {
    let range = zstd::compression_level_range();
    match level.clamp(*range.start(), *range.end()) {
        0 => zstd::DEFAULT_COMPRESSION_LEVEL,
        l => l,
    }
}

/// Compress the sealed segment `segment_bytes` (the whole file, described by `sealed`) into
/// `<dir>/<id:016x>.t1` and make it durable.
///
/// Frames hold whole record frames: a frame is closed when the next record would take it past
/// `frame_target` bytes (clamped to `MIN_TIER1_FRAME_BYTES..=MAX_TIER1_FRAME_BYTES`); a record
/// larger than that is a frame of its own. `level` is clamped to zstd's range (negative levels
/// are zstd's fast levels). `compressor` is reused across calls to save its allocations; its
/// parameters are reset, so every frame is a standalone zstd frame that a default decompressor
/// reads (no dictionary, no long-distance window).
pub fn write_tier1(
    dir: &Path,
    segment_bytes: &[u8],
    sealed: &SealedMeta,
    log_id: u128,
    level: i32,
    frame_target: usize,
    compressor: &mut Compressor<'static>,
) -> Result<Tier1Meta> {
    let footer = &sealed.footer;
    let id = footer.segment_id;
    check_source(segment_bytes, sealed, log_id)?;
    let level = effective_level(level);
    let frame_target = frame_target.clamp(MIN_TIER1_FRAME_BYTES, MAX_TIER1_FRAME_BYTES);
    let mut setup = || -> io::Result<()> {
        compressor
            .context_mut()
            .reset(zstd_safe::ResetDirective::SessionAndParameters)
            .map_err(|code| io::Error::other(zstd_safe::get_error_name(code)))?;
        compressor.set_compression_level(level)?;
        compressor.set_parameter(zstd_safe::CParameter::ContentSizeFlag(true))?;
        // The index carries a CRC-32C of every frame's decompressed bytes.
        compressor.set_parameter(zstd_safe::CParameter::ChecksumFlag(false))
    };
    setup().context(|| format!("set up zstd level {level}"))?;

    let tmp = dir.join(tier1_tmp_name(id));
    let path = dir.join(tier1_file_name(id));
    let header = Tier1Header {
        log_id,
        segment_id: id,
        base_seq: footer.base_seq,
        record_count: footer.record_count,
        level,
        frame_target_bytes: frame_target as u32,
    };
    let written = write_tier1_file(&tmp, segment_bytes, sealed, &header, compressor);
    let (t1_footer, encoded_footer) = match written {
        Ok(done) => done,
        Err(e) => {
            // Best effort: a leftover temp file is never read, only overwritten next time.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            format!("rename {} to {}", tmp.display(), path.display()),
            e,
        ));
    }
    crate::sys::sync_dir(dir)?;
    Ok(Tier1Meta {
        segment_id: id,
        base_seq: footer.base_seq,
        record_count: footer.record_count,
        file_len: t1_footer.file_len(),
        footer_crc: Tier1Footer::stored_crc(&encoded_footer),
        frames: t1_footer.frame_count,
        uncompressed_bytes: t1_footer.uncompressed_records_bytes,
        level,
    })
}

/// The most bytes [`write_tier1`] can write for the sealed segment `sealed` with `frame_target`:
/// what a compression reserves in the Tier 1 budget before it starts. Incompressible records
/// make a Tier 1 file a little larger than its segment, so the segment's length is no bound.
///
/// The file is the segment with its records area replaced by zstd frames, plus a Tier 1 header
/// (64) and footer (64) and a 32-byte index entry per frame. zstd never writes more than
/// `compress_bound(n) = n + n/256 + (128 KiB - n)/2048` (the last term only below 128 KiB, so
/// at most 64) for `n` bytes, so the frames take at most `records + records/256 + 65` bytes per
/// frame. Frames hold whole records, at least one each, and two neighbours together exceed the
/// target (a frame closes only when the next record would take it past), which bounds their
/// count.
pub fn max_tier1_file_len(sealed: &SealedMeta, frame_target: usize) -> u64 {
    let footer = &sealed.footer;
    let records = footer.records_end.saturating_sub(SEGMENT_HEADER_BYTES);
    let target = frame_target.clamp(MIN_TIER1_FRAME_BYTES, MAX_TIER1_FRAME_BYTES) as u64;
    let frames = footer
        .record_count
        .min(records.saturating_mul(2) / target + 1);
    let per_frame = 65 + TIER1_FRAME_ENTRY_BYTES;
    sealed
        .file_len
        .saturating_add(TIER1_HEADER_BYTES + TIER1_FOOTER_BYTES)
        .saturating_add(records / 256)
        .saturating_add(frames.saturating_mul(per_frame))
}

/// Check that `segment_bytes` is the sealed segment `sealed` describes: length, header, footer.
/// (Record frames are checked one by one as they are cut into zstd frames.)
fn check_source(segment_bytes: &[u8], sealed: &SealedMeta, log_id: u128) -> Result<()> {
    let footer = &sealed.footer;
    let name = segment_file_name(footer.segment_id);
    let corrupt =
        |offset: u64, detail: String| Error::corruption(format!("{name} offset {offset}"), detail);
    let len = segment_bytes.len() as u64;
    if len != sealed.file_len
        || footer.records_end < SEGMENT_HEADER_BYTES
        || footer.records_end > len
        || footer.file_len() != len
    {
        return Err(corrupt(
            0,
            format!(
                "segment of {len} bytes, sealed meta says {} (footer: {})",
                sealed.file_len,
                footer.file_len()
            ),
        ));
    }
    let header = SegmentHeader::decode(segment_bytes)
        .map_err(|e| corrupt(0, format!("segment header: {e}")))?;
    let at = len - SEGMENT_FOOTER_BYTES;
    let raw: &[u8; SEGMENT_FOOTER_BYTES as usize] =
        segment_bytes[at as usize..].try_into().expect("96 bytes");
    let stored =
        SegmentFooter::decode(raw).map_err(|e| corrupt(at, format!("segment footer: {e}")))?;
    if stored != *footer
        || SegmentFooter::stored_crc(raw) != sealed.footer_crc
        || header.segment_id != footer.segment_id
        || header.base_seq != footer.base_seq
        || header.log_id != log_id
        || footer.log_id != log_id
    {
        return Err(corrupt(
            at,
            "segment header, footer and sealed meta disagree".to_string(),
        ));
    }
    let index = &segment_bytes[footer.records_end as usize..at as usize];
    if crc32c(index) != footer.index_crc {
        return Err(corrupt(
            footer.records_end,
            "sparse index checksum mismatch".to_string(),
        ));
    }
    Ok(())
}

/// Walk whole record frames of `records` (the records area, starting at segment offset 128)
/// from `start`, holding sequences from `seq`, until the next one would take the frame past
/// `target` bytes. Returns the end of the frame and its record count. Lengths and sequences are
/// checked here; checksums by [`check_frames`].
fn cut_frame(
    records: &[u8],
    start: usize,
    seq: u64,
    target: usize,
    segment_id: u64,
) -> Result<(usize, u32)> {
    let mut end = start;
    let mut count = 0u32;
    while end < records.len() {
        let rest = &records[end..];
        let expected = seq + count as u64;
        let corrupt = |detail: String| frame_corruption(segment_id, end, detail);
        if rest.len() < FRAME_HEADER_BYTES as usize {
            return Err(corrupt(format!("frame of seq {expected} is truncated")));
        }
        let header = peek_frame(rest);
        let frame_len = FRAME_HEADER_BYTES as usize + header.len as usize;
        if count > 0 && end - start + frame_len > target {
            break;
        }
        if frame_len > rest.len() {
            return Err(corrupt(format!("frame of seq {expected} is truncated")));
        }
        if header.seq != expected {
            return Err(corrupt(format!(
                "expected seq {expected}, found {}",
                header.seq
            )));
        }
        end += frame_len;
        count += 1;
    }
    Ok((end, count))
}

/// Check the checksum of every record frame in `records[start..end]`, cut by [`cut_frame`]
/// (whole frames of sequences from `seq`).
fn check_frames(records: &[u8], start: usize, end: usize, seq: u64, segment_id: u64) -> Result<()> {
    let mut at = start;
    let mut seq = seq;
    while at < end {
        let header = decode_frame(&records[at..end]).map_err(|e| {
            let detail = match e {
                FrameError::Truncated => format!("frame of seq {seq} is truncated"),
                FrameError::Checksum => format!("frame of seq {seq} fails its checksum"),
            };
            frame_corruption(segment_id, at, detail)
        })?;
        at += FRAME_HEADER_BYTES as usize + header.len as usize;
        seq += 1;
    }
    Ok(())
}

/// A damaged record frame at `at` in the records area of segment `segment_id`.
fn frame_corruption(segment_id: u64, at: usize, detail: String) -> Error {
    let offset = SEGMENT_HEADER_BYTES + at as u64;
    Error::corruption(
        format!("{} offset {offset}", segment_file_name(segment_id)),
        detail,
    )
}

/// Write the whole Tier 1 file to `tmp` and fdatasync it. Returns the footer written.
fn write_tier1_file(
    tmp: &Path,
    segment_bytes: &[u8],
    sealed: &SealedMeta,
    header: &Tier1Header,
    compressor: &mut Compressor<'static>,
) -> Result<(Tier1Footer, [u8; TIER1_FOOTER_BYTES as usize])> {
    let footer = &sealed.footer;
    let id = footer.segment_id;
    let tmp_name = tmp.display();
    let file = File::create(tmp).context(|| format!("create {tmp_name}"))?;
    let mut write = Out {
        inner: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
        name: &tmp_name,
    };
    write.all(&header.encode())?;
    write.all(&segment_bytes[..SEGMENT_HEADER_BYTES as usize])?;

    // Only the logical records area is compressed: from the first frame to `records_end`.
    let records = &segment_bytes[SEGMENT_HEADER_BYTES as usize..footer.records_end as usize];
    let target = header.frame_target_bytes as usize;
    let mut entries: Vec<FrameEntry> = Vec::with_capacity(records.len() / target + 1);
    let mut offset = TIER1_FRAMES_OFFSET;
    let mut seq = footer.base_seq;
    // Compressed frames go to a writer thread through a few recycled buffers. It checks the
    // records' checksums, computes the frame's, copies the frame into the page cache (slow where
    // fresh pages must first be faulted in from the host) and starts its writeback, while this
    // thread compresses the next frames, as zstd's own CLI overlaps its I/O. The buffers are
    // reused, so only they are ever faulted in; nothing is published before both threads are done.
    let buffers = (PIPELINE_BYTES / target).max(4);
    let (full_tx, full_rx) = mpsc::sync_channel::<FrameJob>(buffers);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    FRAME_BUFFERS.with_borrow_mut(|pool| {
        for _ in 0..buffers {
            let buffer = pool.pop().unwrap_or_default();
            empty_tx.send(buffer).expect("receiver alive");
        }
    });
    let (checked, compressed) = std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("aof2-tier1-write".into())
            .spawn_scoped(scope, || -> Result<Vec<u32>> {
                // Owned here, so a writer that fails unblocks a compressor waiting for a buffer.
                let empty_tx = empty_tx;
                let mut crcs = Vec::new();
                let mut written_back = 0u64;
                let mut end = TIER1_FRAMES_OFFSET;
                for job in full_rx {
                    check_frames(records, job.start, job.end, job.seq, id)?;
                    crcs.push(crc32c(&records[job.start..job.end]));
                    write.all(&job.buffer)?;
                    end += job.buffer.len() as u64;
                    if end - written_back >= WRITE_BEHIND_BYTES {
                        // Start writing back what is done while the next frames compress, so
                        // the final fdatasync waits for the last few MiB only. FADV_DONTNEED on
                        // dirty pages starts their writeback and keeps them cached.
                        let file = write.flush_and_file()?;
                        let _ = rustix::fs::fadvise(
                            file,
                            written_back,
                            std::num::NonZeroU64::new(end - written_back),
                            rustix::fs::Advice::DontNeed,
                        );
                        written_back = end;
                    }
                    // The compressor may have stopped early (an error): then nobody takes it.
                    let _ = empty_tx.send(job.buffer);
                }
                Ok(crcs)
            });
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                let error = Error::io(format!("start the writer thread of {tmp_name}"), e);
                return (Err(error), Ok(()));
            }
        };
        let compressed = (|| -> Result<()> {
            let mut start = 0usize;
            while start < records.len() {
                let (end, count) = cut_frame(records, start, seq, target, id)?;
                let chunk = &records[start..end];
                let too_large = || {
                    Error::InvalidConfig(format!(
                        "segment {id}: a frame of {} bytes does not fit the Tier 1 format's u32 lengths",
                        chunk.len()
                    ))
                };
                let uncompressed_len = u32::try_from(chunk.len()).map_err(|_| too_large())?;
                // No buffer comes back only when the writer failed: its error is reported.
                let Ok(mut buffer) = empty_rx.recv() else {
                    return Ok(());
                };
                buffer.clear();
                buffer.reserve(zstd_safe::compress_bound(chunk.len()));
                let n = compressor
                    .compress_to_buffer(chunk, &mut buffer)
                    .context(|| format!("zstd-compress {} bytes of segment {id}", chunk.len()))?;
                let compressed_len = u32::try_from(n).map_err(|_| too_large())?;
                let job = FrameJob {
                    buffer,
                    start,
                    end,
                    seq,
                };
                if full_tx.send(job).is_err() {
                    return Ok(());
                }
                entries.push(FrameEntry {
                    base_seq: seq,
                    compressed_offset: offset,
                    record_count: count,
                    compressed_len,
                    uncompressed_len,
                    uncompressed_crc: 0, // filled in from the writer's checksums
                });
                offset += n as u64;
                seq += count as u64;
                start = end;
            }
            Ok(())
        })();
        drop(full_tx);
        let checked = writer
            .join()
            .expect("the Tier 1 writer thread does not panic");
        (checked, compressed)
    });
    // Keep the buffers for this thread's next segment.
    FRAME_BUFFERS.with_borrow_mut(|pool| pool.extend(empty_rx.try_iter()));
    // A writer error stops the compressor early: report it rather than the short output.
    let crcs = checked?;
    compressed?;
    if crcs.len() != entries.len() {
        return Err(Error::io(
            format!("write {tmp_name}"),
            io::Error::other("the writer thread stopped early"),
        ));
    }
    for (entry, crc) in entries.iter_mut().zip(crcs) {
        entry.uncompressed_crc = crc;
    }
    if seq - footer.base_seq != footer.record_count {
        return Err(Error::corruption(
            format!("{} offset {}", segment_file_name(id), footer.records_end),
            format!(
                "{} records before records end, footer says {}",
                seq - footer.base_seq,
                footer.record_count
            ),
        ));
    }

    let index = encode_frame_index(&entries);
    write.all(&index)?;
    let tail = &segment_bytes[footer.records_end as usize..];
    write.all(tail)?;
    let t1_footer = Tier1Footer {
        frame_count: u32::try_from(entries.len()).expect("frames are at least 32 bytes each"),
        seg_tail_offset: offset + index.len() as u64,
        seg_tail_len: u32::try_from(tail.len()).expect("a sealed segment's index fits u32"),
        index_crc: crc32c(&index),
        uncompressed_records_bytes: records.len() as u64,
        base_seq: footer.base_seq,
        record_count: footer.record_count,
    };
    let encoded = t1_footer.encode();
    write.all(&encoded)?;
    let file = write
        .inner
        .into_inner()
        .map_err(|e| Error::io(format!("write {tmp_name}"), e.into_error()))?;
    crate::sys::retry_transient(|| file.sync_data()).context(|| format!("fdatasync {tmp_name}"))?;
    Ok((t1_footer, encoded))
}

/// Buffered output of a Tier 1 file, with errors naming the file.
struct Out<'a> {
    inner: BufWriter<File>,
    name: &'a (dyn std::fmt::Display + Sync),
}

impl Out<'_> {
    fn all(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner
            .write_all(bytes)
            .context(|| format!("write {}", self.name))
    }

    fn flush_and_file(&mut self) -> Result<&File> {
        self.inner
            .flush()
            .context(|| format!("write {}", self.name))?;
        Ok(self.inner.get_ref())
    }
}

/// A compressed frame on its way to the writer thread, with the records it holds.
struct FrameJob {
    buffer: Vec<u8>,
    /// The frame's records: `records[start..end]`, sequences from `seq`.
    start: usize,
    end: usize,
    seq: u64,
}

/// Frame bytes in flight between the compressor and the writer thread of a Tier 1 file (in
/// buffers of one frame each, at least 4): enough to ride out a writer that stalls while the
/// page cache starts a writeback.
const PIPELINE_BYTES: usize = 8 << 20;

/// Compressed bytes written between two write-behind hints.
const WRITE_BEHIND_BYTES: u64 = 4 << 20;

thread_local! {
    /// One zstd decompression context per thread, reused across frames (creating one costs
    /// about as much as decompressing a small frame).
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    /// Compressed-frame buffers of a compressing thread, reused from segment to segment (fresh
    /// memory is slow to fault in on some virtual machines).
    static FRAME_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Decompress one zstd frame into a buffer of exactly `capacity` bytes (never more: a damaged
/// frame that claims more fails instead of allocating).
fn decompress(compressed: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decompressor::new()?);
        }
        let decompressor = slot.as_mut().expect("decompressor just created");
        let mut out = Vec::with_capacity(capacity);
        decompressor.decompress_to_buffer(compressed, &mut out)?;
        Ok(out)
    })
}

/// Positioned reads of a Tier 1 file that is not a local file (its copy in Tier 2).
pub(crate) trait RangeRead: Send + Sync + std::fmt::Debug {
    fn len(&self) -> u64;
    /// Fill `buf` from `offset`; failing (not short) when the bytes are not there.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

/// Where a Tier 1 file's bytes come from.
#[derive(Debug)]
enum Source {
    Local(Arc<LocalFile>),
    Remote(Arc<dyn RangeRead>),
}

impl Source {
    fn read_exact(&self, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
        match self {
            Source::Local(local) => read_exact(&*local.handle()?, path, buf, offset),
            Source::Remote(remote) => remote.read_at(offset, buf),
        }
    }
}

/// A local Tier 1 file whose descriptor is opened on demand and cached; at most
/// [`open_files_limit`] cached descriptors exist in the process ([`OPEN_FILES`]). Reopening
/// checks that the path still holds the file that was checked at open (same length, same footer
/// bytes; an inode number alone is reused at once after a delete): a file released or replaced
/// meanwhile reads as `NotFound`, never as another file's bytes.
#[derive(Debug)]
struct LocalFile {
    path: PathBuf,
    /// Length and footer bytes of the file checked at open.
    checked: std::sync::OnceLock<(u64, [u8; TIER1_FOOTER_BYTES as usize])>,
    fd: Mutex<Option<Arc<File>>>,
}

/// Every cached Tier 1 descriptor of the process, oldest first.
struct OpenFiles {
    queue: VecDeque<Weak<LocalFile>>,
    /// Cached descriptors (entries of `queue` whose file is alive and whose `fd` is set).
    open: usize,
}

static OPEN_FILES: Mutex<OpenFiles> = Mutex::new(OpenFiles {
    queue: VecDeque::new(),
    open: 0,
});

impl LocalFile {
    fn open(path: &Path) -> Result<Arc<LocalFile>> {
        let file = File::open(path).context(|| format!("open {}", path.display()))?;
        let local = Arc::new(LocalFile {
            path: path.to_path_buf(),
            checked: std::sync::OnceLock::new(),
            fd: Mutex::new(Some(Arc::new(file))),
        });
        local.cached();
        Ok(local)
    }

    /// The descriptor, opened again if the cache closed it.
    fn handle(self: &Arc<Self>) -> Result<Arc<File>> {
        let file = {
            let mut fd = self.fd.lock();
            if let Some(file) = fd.as_ref() {
                return Ok(file.clone());
            }
            let file =
                File::open(&self.path).context(|| format!("open {}", self.path.display()))?;
            if let Some((len, footer)) = self.checked.get() {
                let now = file
                    .metadata()
                    .context(|| format!("stat {}", self.path.display()))?
                    .len();
                let mut tail = [0u8; TIER1_FOOTER_BYTES as usize];
                if now != *len
                    || file
                        .read_exact_at(&mut tail, len - TIER1_FOOTER_BYTES)
                        .is_err()
                    || tail != *footer
                {
                    return Err(Error::NotFound(format!(
                        "{} was replaced after it was checked",
                        self.path.display()
                    )));
                }
            }
            let file = Arc::new(file);
            *fd = Some(file.clone());
            file
        };
        self.cached();
        Ok(file)
    }

    /// Count this file's new descriptor and close the oldest others past the limit. Called
    /// without `fd` held (the lock order is `OPEN_FILES`, then a file's `fd`).
    fn cached(self: &Arc<Self>) {
        let mut open = OPEN_FILES.lock();
        open.open += 1;
        open.queue.push_back(Arc::downgrade(self));
        while open.open > open_files_limit() {
            let Some(oldest) = open.queue.pop_front() else {
                break;
            };
            let Some(file) = oldest.upgrade() else {
                continue;
            };
            if Arc::ptr_eq(&file, self) {
                open.queue.push_back(oldest);
                break;
            }
            // Readers that hold the descriptor keep it until they finish. With `fd` empty, the
            // `Drop` of a last handle released here does not take `OPEN_FILES` again.
            if file.fd.lock().take().is_some() {
                open.open -= 1;
            }
        }
        if open.queue.len() > 2 * open_files_limit() {
            open.queue.retain(|w| w.strong_count() > 0);
        }
    }
}

/// Cached Tier 1 descriptors at most: [`TIER1_OPEN_FILES`], or a quarter of the process's
/// soft limit of open files if that is lower (at least 4).
fn open_files_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        usize::try_from(soft / 4)
            .unwrap_or(usize::MAX)
            .clamp(4, TIER1_OPEN_FILES)
    })
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.fd.get_mut().take().is_some() {
            OPEN_FILES.lock().open -= 1;
        }
    }
}

/// An open, checked Tier 1 file. Reads use `pread` (or ranged GETs for a copy in Tier 2), so one
/// handle serves many threads.
#[derive(Debug)]
pub struct Tier1File {
    path: PathBuf,
    file: Source,
    file_len: u64,
    header: Tier1Header,
    footer: Tier1Footer,
    segment_footer: SegmentFooter,
    frames: Vec<FrameEntry>,
}

/// Map a decoder's refusal at `offset` of `path` to the public error.
fn format_error(path: &Path, offset: u64, what: &str, e: FormatError) -> Error {
    crate::error::format_error(path, offset, "Tier 1 file", what, e)
}

fn read_exact(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corruption(
                format!("{} offset {offset}", path.display()),
                format!("file ends within the {} bytes read here", buf.len()),
            )
        } else {
            Error::io(format!("read {}", path.display()), e)
        }
    })
}

impl Tier1File {
    /// Open `path` and check it against the manifest's `expected_footer_crc` and `expected_len`:
    /// header, footer, segment header and footer copies and the frame index must all be intact
    /// and agree. Frames are not read.
    pub fn open(path: &Path, expected_footer_crc: u32, expected_len: u64) -> Result<Tier1File> {
        let file = LocalFile::open(path)?;
        Self::open_source(Source::Local(file), path, expected_footer_crc, expected_len)
    }

    /// Open a Tier 1 file read through `remote` (its copy in Tier 2), checked like a local one;
    /// `name` names it in errors.
    pub(crate) fn open_remote(
        remote: Arc<dyn RangeRead>,
        name: &Path,
        expected_footer_crc: u32,
        expected_len: u64,
    ) -> Result<Tier1File> {
        Self::open_source(
            Source::Remote(remote),
            name,
            expected_footer_crc,
            expected_len,
        )
    }

    fn open_source(
        file: Source,
        path: &Path,
        expected_footer_crc: u32,
        expected_len: u64,
    ) -> Result<Tier1File> {
        let corrupt = |offset: u64, detail: String| {
            Error::corruption(format!("{} offset {offset}", path.display()), detail)
        };
        let len = match &file {
            Source::Local(f) => f
                .handle()?
                .metadata()
                .context(|| format!("stat {}", path.display()))?
                .len(),
            Source::Remote(r) => r.len(),
        };
        if len != expected_len {
            return Err(Error::corruption(
                path.display().to_string(),
                format!("file is {len} bytes, manifest says {expected_len}"),
            ));
        }
        const HEAD: usize = (TIER1_HEADER_BYTES + SEGMENT_HEADER_BYTES) as usize;
        const TAIL: usize = (SEGMENT_FOOTER_BYTES + TIER1_FOOTER_BYTES) as usize;
        if len < (HEAD + TAIL) as u64 {
            return Err(Error::corruption(
                path.display().to_string(),
                format!("file of {len} bytes is too short for a Tier 1 file"),
            ));
        }

        let mut head = [0u8; HEAD];
        file.read_exact(path, &mut head, 0)?;
        let header =
            Tier1Header::decode(&head).map_err(|e| format_error(path, 0, "tier 1 header", e))?;
        let segment_header = SegmentHeader::decode(&head[TIER1_HEADER_BYTES as usize..])
            .map_err(|e| format_error(path, TIER1_HEADER_BYTES, "segment header copy", e))?;

        let tail_at = len - TAIL as u64;
        let footer_at = len - TIER1_FOOTER_BYTES;
        let mut tail = [0u8; TAIL];
        file.read_exact(path, &mut tail, tail_at)?;
        let raw_footer: &[u8; TIER1_FOOTER_BYTES as usize] = tail[SEGMENT_FOOTER_BYTES as usize..]
            .try_into()
            .expect("64 bytes");
        let footer = Tier1Footer::decode(raw_footer)
            .map_err(|e| format_error(path, footer_at, "tier 1 footer", e))?;
        let footer_crc = Tier1Footer::stored_crc(raw_footer);
        if footer_crc != expected_footer_crc {
            return Err(corrupt(
                footer_at,
                format!("footer CRC {footer_crc:#010x}, manifest says {expected_footer_crc:#010x}"),
            ));
        }
        if footer.file_len() != len {
            return Err(corrupt(
                footer_at,
                format!(
                    "footer describes a {}-byte file, file is {len} bytes",
                    footer.file_len()
                ),
            ));
        }
        footer
            .check_header(&header)
            .map_err(|e| corrupt(0, format!("tier 1 header and footer disagree: {e}")))?;
        if segment_header.log_id != header.log_id
            || segment_header.segment_id != header.segment_id
            || segment_header.base_seq != header.base_seq
        {
            return Err(corrupt(
                TIER1_HEADER_BYTES,
                "segment header copy does not match the tier 1 header".into(),
            ));
        }
        let segment_footer = SegmentFooter::decode(&tail[..SEGMENT_FOOTER_BYTES as usize])
            .map_err(|e| format_error(path, tail_at, "segment footer copy", e))?;
        let tail_len =
            segment_footer.index_entries as u64 * INDEX_ENTRY_BYTES + SEGMENT_FOOTER_BYTES;
        if segment_footer.log_id != header.log_id
            || segment_footer.segment_id != header.segment_id
            || segment_footer.base_seq != footer.base_seq
            || segment_footer.record_count != footer.record_count
            || segment_footer.records_end.checked_sub(SEGMENT_HEADER_BYTES)
                != Some(footer.uncompressed_records_bytes)
            || tail_len != footer.seg_tail_len as u64
        {
            return Err(corrupt(
                tail_at,
                "segment footer copy does not match the tier 1 footer".into(),
            ));
        }

        let index_at = footer.index_offset();
        let mut index = vec![0u8; footer.index_len() as usize];
        file.read_exact(path, &mut index, index_at)?;
        let frames = decode_frame_index(&index, &footer)
            .map_err(|e| corrupt(index_at, format!("frame index: {e}")))?;
        if let Source::Local(local) = &file {
            let _ = local.checked.set((len, *raw_footer));
        }
        Ok(Tier1File {
            path: path.to_path_buf(),
            file,
            file_len: len,
            header,
            footer,
            segment_footer,
            frames,
        })
    }

    #[allow(
        dead_code,
        reason = "Tier 1 API; the tier coordinator does not use it yet"
    )]
    pub fn header(&self) -> &Tier1Header {
        &self.header
    }

    #[allow(
        dead_code,
        reason = "Tier 1 API; the tier coordinator does not use it yet"
    )]
    pub fn footer(&self) -> &Tier1Footer {
        &self.footer
    }

    /// Whether the bytes come from Tier 2 (each read is a request).
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.file, Source::Remote(_))
    }

    /// The original segment's footer (from the raw copy, checked at open).
    pub fn segment_footer(&self) -> &SegmentFooter {
        &self.segment_footer
    }

    /// The frame index, in sequence order.
    pub fn frames(&self) -> &[FrameEntry] {
        &self.frames
    }

    /// The frame holding `seq`, if this file holds it.
    #[allow(
        dead_code,
        reason = "Tier 1 API; the tier coordinator does not use it yet"
    )]
    pub fn frame_for_seq(&self, seq: u64) -> Option<usize> {
        let i = self.frames.partition_point(|f| f.base_seq <= seq);
        let candidate = i.checked_sub(1)?;
        (seq < self.frames[candidate].end_seq()).then_some(candidate)
    }

    fn corruption(&self, offset: u64, detail: String) -> Error {
        Error::corruption(format!("{} offset {offset}", self.path.display()), detail)
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.file_len)
        {
            return Err(
                self.corruption(offset, format!("{len} bytes run past the end of the file"))
            );
        }
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact(&self.path, &mut buf, offset)?;
        Ok(buf)
    }

    /// Read and decompress frame `i`: whole record frames of the original segment, back to back.
    /// One `pread`; the length and CRC of the decompressed bytes are checked.
    pub fn read_frame(&self, i: usize) -> Result<Vec<u8>> {
        let entry = self.frames.get(i).ok_or_else(|| {
            Error::NotFound(format!(
                "frame {i} of {} ({} frames)",
                self.path.display(),
                self.frames.len()
            ))
        })?;
        let at = entry.compressed_offset;
        let compressed = self.read_range(at, entry.compressed_len as u64)?;
        let path = self.path.display();
        let decompressed =
            decompress(&compressed, entry.uncompressed_len as usize).map_err(|e| {
                self.corruption(at, format!("frame {i} of {path} does not decompress: {e}"))
            })?;
        if zstd_safe::find_frame_compressed_size(&compressed) != Ok(compressed.len())
            || decompressed.len() != entry.uncompressed_len as usize
        {
            return Err(self.corruption(
                at,
                format!(
                    "frame {i} of {path} is not one zstd frame of {} bytes",
                    entry.uncompressed_len
                ),
            ));
        }
        if crc32c(&decompressed) != entry.uncompressed_crc {
            return Err(self.corruption(
                at,
                format!("frame {i} of {path} fails its checksum after decompression"),
            ));
        }
        Ok(decompressed)
    }

    /// The raw copy of the original segment header (128 bytes), checked.
    pub fn segment_header_bytes(&self) -> Result<Vec<u8>> {
        let bytes = self.read_range(TIER1_HEADER_BYTES, SEGMENT_HEADER_BYTES)?;
        let header = SegmentHeader::decode(&bytes)
            .map_err(|e| format_error(&self.path, TIER1_HEADER_BYTES, "segment header copy", e))?;
        if header.segment_id != self.header.segment_id
            || header.base_seq != self.header.base_seq
            || header.log_id != self.header.log_id
        {
            return Err(self.corruption(
                TIER1_HEADER_BYTES,
                "segment header copy changed since open".into(),
            ));
        }
        Ok(bytes)
    }

    /// The raw copy of the original segment's sparse index and footer, checked (the index
    /// against the CRC in the footer).
    pub fn segment_tail_bytes(&self) -> Result<Vec<u8>> {
        let at = self.footer.seg_tail_offset;
        let bytes = self.read_range(at, self.footer.seg_tail_len as u64)?;
        let (index, raw_footer) = bytes.split_at(bytes.len() - SEGMENT_FOOTER_BYTES as usize);
        let footer = SegmentFooter::decode(raw_footer).map_err(|e| {
            format_error(
                &self.path,
                at + index.len() as u64,
                "segment footer copy",
                e,
            )
        })?;
        if footer != self.segment_footer {
            return Err(self.corruption(
                at + index.len() as u64,
                "segment footer copy changed since open".into(),
            ));
        }
        if crc32c(index) != footer.index_crc {
            return Err(self.corruption(at, "sparse index copy fails its checksum".into()));
        }
        Ok(bytes)
    }

    /// Deep check: decompress every frame, check its CRC, then every record frame in it (CRC,
    /// dense sequence, epochs never decreasing), and the segment header and tail copies. Returns
    /// the number of records checked.
    pub fn verify(&self) -> Result<u64> {
        self.segment_header_bytes()?;
        self.segment_tail_bytes()?;
        let mut checked = 0u64;
        let mut epoch = 0u32;
        let mut segment_offset = SEGMENT_HEADER_BYTES;
        for (i, entry) in self.frames.iter().enumerate() {
            let bytes = self.read_frame(i)?;
            let mut pos = 0usize;
            let mut seq = entry.base_seq;
            while pos < bytes.len() {
                let record_at = segment_offset + pos as u64;
                let bad = |detail: String| {
                    self.corruption(
                        entry.compressed_offset,
                        format!("frame {i}, record frame at segment offset {record_at}: {detail}"),
                    )
                };
                let header = decode_frame(&bytes[pos..]).map_err(|e| {
                    bad(match e {
                        FrameError::Truncated => "truncated".to_string(),
                        FrameError::Checksum => "fails its checksum".to_string(),
                    })
                })?;
                if header.seq != seq {
                    return Err(bad(format!("expected seq {seq}, found {}", header.seq)));
                }
                if header.epoch < epoch {
                    return Err(bad(format!("epoch {} after epoch {epoch}", header.epoch)));
                }
                epoch = header.epoch;
                pos += FRAME_HEADER_BYTES as usize + header.len as usize;
                seq += 1;
            }
            if seq != entry.end_seq() {
                return Err(self.corruption(
                    entry.compressed_offset,
                    format!(
                        "frame {i} holds {} records, index says {}",
                        seq - entry.base_seq,
                        entry.record_count
                    ),
                ));
            }
            checked += entry.record_count as u64;
            segment_offset += bytes.len() as u64;
        }
        if checked != self.footer.record_count {
            return Err(self.corruption(
                self.file_len - TIER1_FOOTER_BYTES,
                format!(
                    "frames hold {checked} records, footer says {}",
                    self.footer.record_count
                ),
            ));
        }
        Ok(checked)
    }

    /// Write the original sealed segment, byte for byte, to `out` (through `<out>.tmp` and a
    /// rename, so `out` is either absent or complete in the page cache).
    ///
    /// Nothing is synced: a rebuilt segment is a cache of this file, which stays the durable
    /// copy. After a crash the rebuilt file may exist with its full length but unwritten pages;
    /// the caller must not trust it across a restart without checking it (or simply delete and
    /// rebuild it). Every part written is checked as it is read (frame CRCs, header and footer).
    pub fn rebuild_segment(&self, out: &Path) -> Result<()> {
        let mut tmp = out.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let result = self.write_segment(&tmp);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, out)
            .context(|| format!("rename {} to {}", tmp.display(), out.display()))
    }

    fn write_segment(&self, tmp: &Path) -> Result<()> {
        let tmp_name = tmp.display();
        let file = File::create(tmp).context(|| format!("create {tmp_name}"))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let mut write = |bytes: &[u8]| out.write_all(bytes).context(|| format!("write {tmp_name}"));
        write(&self.segment_header_bytes()?)?;
        for i in 0..self.frames.len() {
            write(&self.read_frame(i)?)?;
        }
        write(&self.segment_tail_bytes()?)?;
        out.flush().context(|| format!("write {tmp_name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AofManager, Durability, ErrorKind, LogConfig, ManagerConfig};

    const TARGET: usize = MIN_TIER1_FRAME_BYTES;

    /// Deterministic xorshift generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Payloads of varied sizes: empty ones, small and medium ones, and some larger than the
    /// frame target; text-like, so zstd has something to find.
    fn payloads(count: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = Rng(seed | 1);
        (0..count)
            .map(|i| {
                let len = match i % 50 {
                    0 => 0,
                    7 => (TARGET as u64 + rng.below(3 * TARGET as u64)) as usize,
                    n if n % 3 == 0 => rng.below(4000) as usize,
                    _ => rng.below(300) as usize,
                };
                let mut p = Vec::with_capacity(len);
                while p.len() < len {
                    let word = format!(
                        "{{\"k\":{},\"v\":\"w{}\"}} ",
                        rng.below(1000),
                        rng.below(50)
                    );
                    p.extend_from_slice(word.as_bytes());
                }
                p.truncate(len);
                p
            })
            .collect()
    }

    type Sealed = (PathBuf, Vec<u8>, SealedMeta);

    /// Sealed segment files holding `records`, laid out exactly as the sealer lays them out
    /// (frames in batches of 7 sharing a timestamp, an index entry every 8 KiB of frames,
    /// epochs rising), built with the format encoders so these tests do not depend on the
    /// manager's background threads. Segments are cut at about 1 MiB.
    fn build_segments(dir: &Path, records: &[Vec<u8>]) -> (u128, Vec<Sealed>) {
        let (log_id, out) = build_segments_of(dir, records, 1 << 20);
        assert!(
            out.len() >= 2,
            "want at least two segments, got {}",
            out.len()
        );
        (log_id, out)
    }

    /// [`build_segments`], cutting segments at about `segment_bytes`.
    fn build_segments_of(
        dir: &Path,
        records: &[Vec<u8>],
        segment_bytes: usize,
    ) -> (u128, Vec<Sealed>) {
        use crate::format::segment::{FrameHeader, IndexEntry, encode_frame, encode_index};
        use crate::limits::INDEX_INTERVAL_BYTES;
        let log_id = 0x0123_4567_89ab_cdef_u128 << 64 | 42;
        let mut out = Vec::new();
        let mut seq = 0u64;
        let mut batches = records.chunks(7).enumerate().peekable();
        while batches.peek().is_some() {
            let id = out.len() as u64;
            let header = SegmentHeader {
                log_id,
                segment_id: id,
                base_seq: seq,
                created_ms: 1_700_000_000_000,
                capacity: segment_bytes as u64 + (1 << 20),
                recycled: false,
            };
            let base_seq = seq;
            let mut bytes = header.encode().to_vec();
            let mut index: Vec<IndexEntry> = Vec::new();
            let (mut first_ts, mut last_ts) = (0, 0);
            while let Some((b, batch)) = batches.next_if(|_| bytes.len() < segment_bytes) {
                let ts = 1_700_000_000_000 + b as u64;
                for (i, payload) in batch.iter().enumerate() {
                    let at = bytes.len() as u64;
                    if index
                        .last()
                        .is_none_or(|e| at - e.offset >= INDEX_INTERVAL_BYTES)
                    {
                        index.push(IndexEntry {
                            seq,
                            offset: at,
                            timestamp_ms: ts,
                        });
                    }
                    let frame = FrameHeader {
                        len: payload.len() as u32,
                        seq,
                        timestamp_ms: ts,
                        batch_remaining: (batch.len() - 1 - i) as u32,
                        epoch: 1 + b as u32 / 100,
                    };
                    bytes.resize(at as usize + FRAME_HEADER_BYTES as usize + payload.len(), 0);
                    encode_frame(&mut bytes[at as usize..], &frame, payload);
                    if seq == base_seq {
                        first_ts = ts;
                    }
                    last_ts = ts;
                    seq += 1;
                }
            }
            let index_bytes = encode_index(&index);
            let footer = SegmentFooter {
                index_entries: index.len() as u32,
                log_id,
                segment_id: id,
                base_seq,
                record_count: seq - base_seq,
                records_end: bytes.len() as u64,
                first_timestamp_ms: first_ts,
                last_timestamp_ms: last_ts,
                sealed_ms: 1_700_000_000_999,
                index_crc: crc32c(&index_bytes),
            };
            bytes.extend_from_slice(&index_bytes);
            let encoded = footer.encode();
            bytes.extend_from_slice(&encoded);
            let path = dir.join(segment_file_name(id));
            std::fs::write(&path, &bytes).unwrap();
            let crc = SegmentFooter::stored_crc(&encoded);
            let meta = crate::segment::check_sealed(&path, crc, bytes.len() as u64).unwrap();
            assert_eq!(
                crate::segment::verify_sealed(&path, &meta).unwrap(),
                seq - base_seq
            );
            out.push((path, bytes, meta));
        }
        (log_id, out)
    }

    /// Sealed segments of a log written through the public API. Returns the manager too: the
    /// caller closes it when done.
    fn log_segments(root: &Path, records: &[Vec<u8>]) -> (AofManager, u128, Vec<Sealed>) {
        let manager = AofManager::open(ManagerConfig::new(root)).unwrap();
        let config = LogConfig {
            durability: Durability::None,
            ..Default::default()
        }
        .with_segment_bytes(1 << 20);
        let log = manager.open_log("t", config).unwrap();
        for chunk in records.chunks(7) {
            log.append_batch(chunk).unwrap();
        }
        let log_id = log.log_id();
        // Closing the log waits for the sealer, so every full segment is sealed.
        log.close().unwrap();
        let dir = root.join("logs").join("t").join("segments");
        let mut out = Vec::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        names.sort();
        for path in names {
            let bytes = std::fs::read(&path).unwrap();
            let Some(raw) = bytes.len().checked_sub(SEGMENT_FOOTER_BYTES as usize) else {
                continue;
            };
            let raw: &[u8; 96] = bytes[raw..].try_into().unwrap();
            if SegmentFooter::decode(raw).is_err() {
                continue; // the active segment
            }
            let crc = SegmentFooter::stored_crc(raw);
            let meta = crate::segment::check_sealed(&path, crc, bytes.len() as u64).unwrap();
            out.push((path, bytes, meta));
        }
        assert!(
            out.len() >= 2,
            "want at least two sealed segments, got {}",
            out.len()
        );
        (manager, log_id, out)
    }

    fn compressor() -> Compressor<'static> {
        Compressor::new(3).unwrap()
    }

    /// (seq, offset, frame bytes) of every record frame in a sealed segment.
    fn segment_frames(bytes: &[u8], meta: &SealedMeta) -> Vec<(u64, usize, usize)> {
        let mut out = Vec::new();
        let mut at = SEGMENT_HEADER_BYTES as usize;
        while at < meta.footer.records_end as usize {
            let h = peek_frame(&bytes[at..]);
            let n = FRAME_HEADER_BYTES as usize + h.len as usize;
            out.push((h.seq, at, n));
            at += n;
        }
        assert_eq!(out.len() as u64, meta.footer.record_count);
        out
    }

    fn flip(path: &Path, at: u64) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x20;
        f.write_all_at(&b, at).unwrap();
    }

    /// The reservation bound holds for the files that grow most: incompressible records (from
    /// one byte, so most frames are tiny, to larger than the frame target) and text.
    #[test]
    fn tier1_file_never_exceeds_its_reserved_bound() {
        let mut rng = Rng(7);
        let random = |len: usize, rng: &mut Rng| -> Vec<u8> {
            (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        };
        let cases: Vec<Vec<Vec<u8>>> = vec![
            (0..2000).map(|i| random(i % 5000, &mut rng)).collect(),
            (0..3000).map(|_| random(1, &mut rng)).collect(),
            (0..40).map(|_| random(3 * TARGET, &mut rng)).collect(),
            payloads(3000, 3),
        ];
        let out = tempfile::tempdir().unwrap();
        let mut c = compressor();
        for records in cases {
            let root = tempfile::tempdir().unwrap();
            let (log_id, segments) = build_segments_of(root.path(), &records, 1 << 20);
            for (_, bytes, sealed) in &segments {
                for target in [1, TARGET, 1 << 20] {
                    let meta =
                        write_tier1(out.path(), bytes, sealed, log_id, 1, target, &mut c).unwrap();
                    let bound = max_tier1_file_len(sealed, target);
                    assert!(
                        meta.file_len <= bound,
                        "{} bytes written, bound {bound} ({} frames)",
                        meta.file_len,
                        meta.frames
                    );
                }
            }
        }
    }

    #[test]
    fn tier1_file_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tier1File>();
    }

    #[test]
    fn tier1_every_record_matches_the_segment() {
        let root = tempfile::tempdir().unwrap();
        let records = payloads(3000, 1);
        let (log_id, segments) = build_segments(root.path(), &records);
        let out = tempfile::tempdir().unwrap();
        let mut c = compressor();
        let mut records_seen = 0u64;
        for (_, bytes, sealed) in &segments {
            let meta = write_tier1(out.path(), bytes, sealed, log_id, 3, TARGET, &mut c).unwrap();
            let path = out.path().join(tier1_file_name(sealed.footer.segment_id));
            assert!(
                !out.path()
                    .join(tier1_tmp_name(sealed.footer.segment_id))
                    .exists()
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), meta.file_len);
            assert_eq!(meta.record_count, sealed.footer.record_count);
            assert_eq!(
                meta.uncompressed_bytes,
                sealed.footer.records_end - SEGMENT_HEADER_BYTES
            );
            assert!(
                meta.file_len < sealed.file_len,
                "compressible data got larger"
            );
            let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
            assert_eq!(t1.header().log_id, log_id);
            assert_eq!(t1.header().level, 3);
            assert_eq!(t1.header().frame_target_bytes as usize, TARGET);
            assert_eq!(t1.frames().len() as u32, meta.frames);
            assert!(meta.frames > 10);
            // Frames respect the target unless a single record is larger than it.
            let mut alone = 0;
            for f in t1.frames() {
                if f.uncompressed_len as usize > TARGET {
                    assert_eq!(f.record_count, 1);
                    alone += 1;
                }
            }
            assert!(alone > 0, "no record larger than the target");

            let mut cached: Option<(usize, Vec<u8>)> = None;
            let mut frame_start = SEGMENT_HEADER_BYTES as usize;
            for (seq, at, n) in segment_frames(bytes, sealed) {
                let i = t1.frame_for_seq(seq).unwrap();
                if cached.as_ref().is_none_or(|(c, _)| *c != i) {
                    if let Some((_, prev)) = &cached {
                        frame_start += prev.len();
                    }
                    cached = Some((i, t1.read_frame(i).unwrap()));
                }
                let (_, frame) = cached.as_ref().unwrap();
                let inner = at - frame_start;
                assert_eq!(&frame[inner..inner + n], &bytes[at..at + n], "seq {seq}");
                records_seen += 1;
            }
            let end = sealed.footer.base_seq + sealed.footer.record_count;
            assert_eq!(t1.frame_for_seq(end), None);
            if sealed.footer.base_seq > 0 {
                assert_eq!(t1.frame_for_seq(sealed.footer.base_seq - 1), None);
            }
            assert_eq!(t1.verify().unwrap(), sealed.footer.record_count);
            assert!(matches!(
                t1.read_frame(t1.frames().len()),
                Err(Error::NotFound(_))
            ));
        }
        assert!(records_seen > 1000);
    }

    #[test]
    fn tier1_round_trips_segments_written_by_a_log() {
        let root = tempfile::tempdir().unwrap();
        let (manager, log_id, segments) = log_segments(root.path(), &payloads(3000, 8));
        let out = tempfile::tempdir().unwrap();
        let mut c = compressor();
        for (_, bytes, sealed) in &segments {
            let meta = write_tier1(out.path(), bytes, sealed, log_id, 3, TARGET, &mut c).unwrap();
            let path = out.path().join(tier1_file_name(meta.segment_id));
            let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
            assert_eq!(t1.verify().unwrap(), sealed.footer.record_count);
            let rebuilt = out.path().join(segment_file_name(meta.segment_id));
            t1.rebuild_segment(&rebuilt).unwrap();
            assert!(std::fs::read(&rebuilt).unwrap() == *bytes);
        }
        manager.close().unwrap();
    }

    #[test]
    fn tier1_descriptors_are_bounded_and_reopened() {
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments_of(root.path(), &payloads(3000, 9), 16 << 10);
        assert!(
            segments.len() > 2 * open_files_limit(),
            "{} segments",
            segments.len()
        );
        let out = tempfile::tempdir().unwrap();
        let mut c = compressor();
        let mut files = Vec::new();
        for (_, bytes, sealed) in &segments {
            let meta = write_tier1(out.path(), bytes, sealed, log_id, 1, TARGET, &mut c).unwrap();
            let path = out.path().join(tier1_file_name(meta.segment_id));
            let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
            files.push((path, t1));
        }
        assert!(OPEN_FILES.lock().open <= open_files_limit());
        // Every file still reads, in both orders: closed descriptors are opened again.
        for (_, t1) in files.iter().chain(files.iter().rev()) {
            for i in 0..t1.frames().len() {
                t1.read_frame(i).unwrap();
            }
            assert!(OPEN_FILES.lock().open <= open_files_limit());
        }
        // The reverse pass opened more than `open_files_limit()` other files after the last one,
        // so its descriptor is closed. Replaced at its path by another Tier 1 file, it reads as
        // gone, never as the other file's frames.
        let (path, t1) = files.last().unwrap();
        std::fs::remove_file(path).unwrap();
        std::fs::copy(&files[0].0, path).unwrap();
        let err = t1.read_frame(0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        // Removed outright: also gone.
        std::fs::remove_file(path).unwrap();
        assert_eq!(t1.read_frame(0).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn tier1_rebuilds_the_segment_byte_for_byte() {
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments(root.path(), &payloads(3000, 2));
        let out = tempfile::tempdir().unwrap();
        let mut c = compressor();
        for (path, bytes, sealed) in &segments {
            let meta = write_tier1(out.path(), bytes, sealed, log_id, 1, TARGET, &mut c).unwrap();
            let t1_path = out.path().join(tier1_file_name(meta.segment_id));
            let t1 = Tier1File::open(&t1_path, meta.footer_crc, meta.file_len).unwrap();
            let rebuilt = out.path().join(segment_file_name(meta.segment_id));
            t1.rebuild_segment(&rebuilt).unwrap();
            assert!(
                std::fs::read(&rebuilt).unwrap() == *bytes,
                "{} differs",
                path.display()
            );
            let again = crate::segment::check_sealed(&rebuilt, sealed.footer_crc, sealed.file_len);
            assert_eq!(again.unwrap().footer, sealed.footer);
            let mut tmp = rebuilt.into_os_string();
            tmp.push(".tmp");
            assert!(!Path::new(&tmp).exists());
        }
    }

    /// A Tier 1 file served from memory, as a Tier 2 object is served by ranged GETs.
    #[derive(Debug)]
    struct InMemory(Vec<u8>);

    impl RangeRead for InMemory {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            let at = offset as usize;
            let bytes = self
                .0
                .get(at..at + buf.len())
                .ok_or_else(|| Error::NotFound(format!("{} bytes at {offset}", buf.len())))?;
            buf.copy_from_slice(bytes);
            Ok(())
        }
    }

    /// Sequential readers of Tier 2 copies get frames fetched ahead. A scan that stops (or
    /// leaves the segment) must not leave them in memory for as long as the segment is known:
    /// over many segments that grew with the data read, outside every budget.
    #[test]
    fn frames_fetched_ahead_are_bounded_across_segments() {
        use crate::tiering::{FrameCache, Tier1Segment};
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments(root.path(), &payloads(3000, 2));
        let out = tempfile::tempdir().unwrap();
        let (_, bytes, sealed) = &segments[0];
        let meta = write_tier1(
            out.path(),
            bytes,
            sealed,
            log_id,
            1,
            TARGET,
            &mut compressor(),
        )
        .unwrap();
        assert!(meta.frames >= 8, "{} frames", meta.frames);
        let file = Arc::new(InMemory(
            std::fs::read(out.path().join(tier1_file_name(meta.segment_id))).unwrap(),
        ));
        let info = crate::format::manifest::Tier1Info {
            segment_id: meta.segment_id,
            file_len: meta.file_len,
            footer_crc: meta.footer_crc,
            frames: meta.frames,
            uncompressed_bytes: meta.uncompressed_bytes,
            level: meta.level,
        };
        let cache = Arc::new(FrameCache::default());
        // Forty segments (the same object under forty names): a scan reads two frames of each
        // and stops, so every segment gets frames fetched ahead that nobody reads.
        let opened: Vec<Arc<Tier1Segment>> = (0..40)
            .map(|i| {
                let name = PathBuf::from(format!("memory://segment-{i}"));
                let remote: Arc<dyn RangeRead> = file.clone();
                Arc::new(Tier1Segment::open_remote(remote, name, info, cache.clone()).unwrap())
            })
            .collect();
        for segment in &opened {
            for i in 0..2 {
                drop(segment.frame(i).unwrap());
                segment.read_ahead(i);
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !opened.iter().all(|s| s.read_ahead_idle()) {
            assert!(
                std::time::Instant::now() < deadline,
                "read-ahead never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let in_memory: usize = opened.iter().map(|s| s.frames_in_memory()).sum();
        let bound = 4 * 3 + crate::limits::FRAME_CACHE_ENTRIES;
        assert!(
            in_memory <= bound,
            "{in_memory} frames of 40 abandoned scans still in memory (at most {bound})"
        );
    }

    #[test]
    fn tier1_damaged_frame_is_corruption() {
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments(root.path(), &payloads(3000, 3));
        let (_, bytes, sealed) = &segments[0];
        let out = tempfile::tempdir().unwrap();
        let meta = write_tier1(
            out.path(),
            bytes,
            sealed,
            log_id,
            3,
            TARGET,
            &mut compressor(),
        )
        .unwrap();
        let path = out.path().join(tier1_file_name(meta.segment_id));
        let frames = Tier1File::open(&path, meta.footer_crc, meta.file_len)
            .unwrap()
            .frames()
            .to_vec();
        let k = frames.len() / 2;
        let f = frames[k];
        let len = f.compressed_len as u64;
        for at in [0, 4, 6, len / 3, len / 2, len - 2, len - 1] {
            let at = f.compressed_offset + at;
            flip(&path, at);
            // Open does not read frames: it succeeds; reading the damaged frame fails.
            let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
            let err = t1.read_frame(k).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "flip at {at}: {err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert_eq!(t1.verify().unwrap_err().kind(), ErrorKind::Corruption);
            t1.read_frame(k - 1).unwrap();
            t1.read_frame(k + 1).unwrap();
            let rebuilt = out.path().join("rebuilt.seg");
            assert_eq!(
                t1.rebuild_segment(&rebuilt).unwrap_err().kind(),
                ErrorKind::Corruption
            );
            assert!(!rebuilt.exists());
            flip(&path, at);
            t1.read_frame(k).unwrap();
        }
        let mut flipped_crc = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
        flipped_crc.frames[k].uncompressed_crc ^= 1;
        let err = flipped_crc.read_frame(k).unwrap_err();
        assert!(
            err.to_string()
                .contains("fails its checksum after decompression"),
            "{err}"
        );
    }

    #[test]
    fn tier1_open_detects_damage_outside_the_frames() {
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments(root.path(), &payloads(3000, 4));
        let (_, bytes, sealed) = &segments[0];
        let out = tempfile::tempdir().unwrap();
        let meta = write_tier1(
            out.path(),
            bytes,
            sealed,
            log_id,
            3,
            TARGET,
            &mut compressor(),
        )
        .unwrap();
        let path = out.path().join(tier1_file_name(meta.segment_id));
        let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
        let footer = *t1.footer();
        drop(t1);
        let len = meta.file_len;
        // Every byte of the header, the segment header copy, the frame index, the segment footer
        // copy and the footer.
        let ranges = [
            0..TIER1_FRAMES_OFFSET,
            footer.index_offset()..footer.seg_tail_offset,
            len - TIER1_FOOTER_BYTES - SEGMENT_FOOTER_BYTES..len,
        ];
        let mut checked = 0;
        for at in ranges.into_iter().flatten() {
            flip(&path, at);
            let err = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "flip at {at}: {err}");
            flip(&path, at);
            checked += 1;
        }
        assert!(checked > 500);
        // The sparse index copy is checked when it is used (rebuild, verify).
        let at = footer.seg_tail_offset;
        flip(&path, at);
        let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
        assert_eq!(
            t1.segment_tail_bytes().unwrap_err().kind(),
            ErrorKind::Corruption
        );
        assert_eq!(t1.verify().unwrap_err().kind(), ErrorKind::Corruption);
        flip(&path, at);
        t1.verify().unwrap();
        // A file that is not the one the manifest recorded.
        let err = Tier1File::open(&path, meta.footer_crc ^ 1, meta.file_len).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        // Wrong magic at offset 0: not an aof2 file at all.
        let original = std::fs::read(&path).unwrap();
        let mut not_ours = original.clone();
        not_ours[..8].copy_from_slice(b"NOTAOF2!");
        std::fs::write(&path, &not_ours).unwrap();
        assert!(matches!(
            Tier1File::open(&path, meta.footer_crc, meta.file_len),
            Err(Error::NotAof2File { .. })
        ));
        // Written by a newer format version.
        let mut newer = original.clone();
        newer[8] = 2;
        crate::format::seal_fixed(&mut newer[..TIER1_HEADER_BYTES as usize]);
        std::fs::write(&path, &newer).unwrap();
        assert!(matches!(
            Tier1File::open(&path, meta.footer_crc, meta.file_len),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn tier1_truncated_or_extended_file_is_corruption() {
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments(root.path(), &payloads(3000, 5));
        let (_, bytes, sealed) = &segments[0];
        let out = tempfile::tempdir().unwrap();
        let meta = write_tier1(
            out.path(),
            bytes,
            sealed,
            log_id,
            3,
            TARGET,
            &mut compressor(),
        )
        .unwrap();
        let path = out.path().join(tier1_file_name(meta.segment_id));
        let original = std::fs::read(&path).unwrap();
        let cuts = [1, 63, 64, 65, 500, original.len() - 100, original.len()];
        for cut in cuts {
            let short = &original[..original.len() - cut];
            std::fs::write(&path, short).unwrap();
            for expected_len in [meta.file_len, short.len() as u64] {
                let err = Tier1File::open(&path, meta.footer_crc, expected_len).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Corruption, "cut {cut}: {err}");
            }
        }
        let mut longer = original.clone();
        longer.extend_from_slice(&[0u8; 64]);
        std::fs::write(&path, &longer).unwrap();
        for expected_len in [meta.file_len, longer.len() as u64] {
            let err = Tier1File::open(&path, meta.footer_crc, expected_len).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        }
        // A file truncated after it was opened: reads fail as corruption, not a panic.
        std::fs::write(&path, &original).unwrap();
        let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
        std::fs::write(&path, &original[..original.len() / 2]).unwrap();
        let err = t1.verify().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }

    #[test]
    fn tier1_levels_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments(root.path(), &payloads(3000, 6));
        let (_, bytes, sealed) = &segments[0];
        let out = tempfile::tempdir().unwrap();
        let mut c = compressor();
        let range = zstd::compression_level_range();
        let cases = [
            (-5, -5),
            (1, 1),
            (3, 3),
            (19, 19),
            (0, zstd::DEFAULT_COMPRESSION_LEVEL),
            (i32::MIN, *range.start()),
        ];
        let mut sizes = Vec::new();
        for (level, used) in cases {
            let meta = write_tier1(out.path(), bytes, sealed, log_id, level, 1, &mut c).unwrap();
            assert_eq!(meta.level, used);
            let path = out.path().join(tier1_file_name(meta.segment_id));
            let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
            assert_eq!(t1.header().level, used);
            // A target below the minimum is raised to it.
            assert_eq!(
                t1.header().frame_target_bytes as usize,
                MIN_TIER1_FRAME_BYTES
            );
            assert_eq!(t1.verify().unwrap(), sealed.footer.record_count);
            let rebuilt = out.path().join("rebuilt.seg");
            t1.rebuild_segment(&rebuilt).unwrap();
            assert!(std::fs::read(&rebuilt).unwrap() == *bytes, "level {level}");
            sizes.push((level, meta.file_len));
        }
        // Higher levels compress at least as well on this data.
        assert!(sizes[0].1 > sizes[3].1, "{sizes:?}");
        // The largest target allowed is kept; above it, it is lowered.
        let meta = write_tier1(out.path(), bytes, sealed, log_id, 1, usize::MAX, &mut c).unwrap();
        let path = out.path().join(tier1_file_name(meta.segment_id));
        let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
        assert_eq!(
            t1.header().frame_target_bytes as usize,
            MAX_TIER1_FRAME_BYTES
        );
        assert_eq!(t1.frames().len(), 1);
    }

    #[test]
    fn tier1_empty_segment_round_trips() {
        let log_id = 77u128;
        let header = SegmentHeader {
            log_id,
            segment_id: 9,
            base_seq: 1234,
            created_ms: 1,
            capacity: 1 << 20,
            recycled: false,
        };
        let footer = SegmentFooter {
            index_entries: 0,
            log_id,
            segment_id: 9,
            base_seq: 1234,
            record_count: 0,
            records_end: SEGMENT_HEADER_BYTES,
            first_timestamp_ms: 0,
            last_timestamp_ms: 0,
            sealed_ms: 2,
            index_crc: crc32c(&[]),
        };
        let mut bytes = header.encode().to_vec();
        let encoded = footer.encode();
        bytes.extend_from_slice(&encoded);
        let sealed = SealedMeta {
            footer,
            footer_crc: SegmentFooter::stored_crc(&encoded),
            file_len: bytes.len() as u64,
        };
        let out = tempfile::tempdir().unwrap();
        let meta = write_tier1(
            out.path(),
            &bytes,
            &sealed,
            log_id,
            3,
            TARGET,
            &mut compressor(),
        )
        .unwrap();
        assert_eq!(
            (meta.frames, meta.record_count, meta.uncompressed_bytes),
            (0, 0, 0)
        );
        let path = out.path().join(tier1_file_name(9));
        let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
        assert_eq!(t1.frame_for_seq(1234), None);
        assert_eq!(t1.verify().unwrap(), 0);
        let rebuilt = out.path().join("rebuilt.seg");
        t1.rebuild_segment(&rebuilt).unwrap();
        assert_eq!(std::fs::read(&rebuilt).unwrap(), bytes);
        // A segment that is not what its meta says is refused before anything is written.
        let mut other_log = sealed.clone();
        other_log.footer_crc ^= 1;
        let err = write_tier1(
            out.path(),
            &bytes,
            &other_log,
            log_id,
            3,
            TARGET,
            &mut compressor(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        let err = write_tier1(
            out.path(),
            &bytes,
            &sealed,
            log_id + 1,
            3,
            TARGET,
            &mut compressor(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }

    #[test]
    fn tier1_refuses_a_damaged_segment() {
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments(root.path(), &payloads(3000, 7));
        let (_, bytes, sealed) = &segments[0];
        let out = tempfile::tempdir().unwrap();
        let frames = segment_frames(bytes, sealed);
        let (_, at, n) = frames[frames.len() / 2];
        // A payload byte (the writer thread's checksum check), the sequence number and the
        // length (the compressing thread's walk).
        for (damage, expect) in [
            (at + n - 1, "fails its checksum"),
            (at + 8, "expected seq"),
            (at + 7, "truncated"),
        ] {
            let mut damaged = bytes.clone();
            damaged[damage] ^= 0x40;
            let mut c = compressor();
            let err =
                write_tier1(out.path(), &damaged, sealed, log_id, 3, TARGET, &mut c).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            assert!(err.to_string().contains(&format!("offset {at}")), "{err}");
            assert!(err.to_string().contains(expect), "{err}");
            let id = sealed.footer.segment_id;
            assert!(!out.path().join(tier1_tmp_name(id)).exists());
            assert!(!out.path().join(tier1_file_name(id)).exists());
        }
    }

    /// Compression throughput on a 64 MiB segment at level 1, against one `zstd::bulk::compress`
    /// call over the same records. Run with
    /// `cargo test -p aof2 --release --lib tier1_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn tier1_throughput_64mib_level1() {
        use std::time::Instant;
        let mut rng = Rng(42);
        let mut records = Vec::new();
        let mut total = 0usize;
        while total < 64 << 20 {
            // Log-line-like records, 50..1000 bytes.
            let len = 50 + rng.below(950) as usize;
            let mut p = Vec::with_capacity(len + 100);
            while p.len() < len {
                let line = format!(
                    "{{\"ts\":{},\"user\":\"u{}\",\"op\":\"{}\",\"amount\":{}}}",
                    1_700_000_000_000u64 + rng.below(1 << 20),
                    rng.below(10_000),
                    ["get", "put", "delete", "scan"][rng.below(4) as usize],
                    rng.below(1_000_000)
                );
                p.extend_from_slice(line.as_bytes());
            }
            p.truncate(len);
            total += len + FRAME_HEADER_BYTES as usize;
            records.push(p);
        }
        let root = tempfile::tempdir().unwrap();
        let (log_id, segments) = build_segments_of(root.path(), &records, 64 << 20);
        let (_, bytes, sealed) = &segments[0];
        let records = &bytes[SEGMENT_HEADER_BYTES as usize..sealed.footer.records_end as usize];
        let mb = records.len() as f64 / 1e6;
        println!(
            "segment: {} records, {mb:.1} MB of record frames",
            sealed.footer.record_count
        );

        let out = tempfile::tempdir().unwrap();
        let mut c = Compressor::new(1).unwrap();
        for target in [16 << 10, 64 << 10, 256 << 10, 1 << 20, 8 << 20] {
            let mut best = f64::MAX;
            let mut meta = None;
            for _ in 0..3 {
                let t = Instant::now();
                meta = Some(
                    write_tier1(out.path(), bytes, sealed, log_id, 1, target, &mut c).unwrap(),
                );
                best = best.min(t.elapsed().as_secs_f64());
            }
            let meta = meta.unwrap();
            println!(
                "write_tier1 level 1, {:>4} KiB frames: {:>5.0} MB/s, {:>4} frames, {:.3} of the input",
                target >> 10,
                mb / best,
                meta.frames,
                meta.file_len as f64 / records.len() as f64
            );
        }
        let mut best = f64::MAX;
        let mut size = 0;
        for _ in 0..3 {
            let t = Instant::now();
            size = zstd::bulk::compress(records, 1).unwrap().len();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "zstd::bulk::compress level 1, one call:    {:>5.0} MB/s,    1 frame,  {:.3} of the input",
            mb / best,
            size as f64 / records.len() as f64
        );
        let meta = write_tier1(out.path(), bytes, sealed, log_id, 1, 256 << 10, &mut c).unwrap();
        let path = out.path().join(tier1_file_name(meta.segment_id));
        let t1 = Tier1File::open(&path, meta.footer_crc, meta.file_len).unwrap();
        let t = Instant::now();
        let n = t1.verify().unwrap();
        println!(
            "verify (decompress + every record CRC), 256 KiB frames: {:.0} MB/s, {n} records",
            mb / t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let frames = t1.frames().len();
        for i in 0..frames {
            t1.read_frame(i).unwrap();
        }
        println!(
            "read_frame, 256 KiB frames: {:.1} us per frame",
            t.elapsed().as_secs_f64() * 1e6 / frames as f64
        );
    }
}
