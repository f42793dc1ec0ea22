//! What a restore or a fetch into Tier 1 holds in memory: each Tier 2 object streams into its file through a bounded
//! buffer (`limits::DOWNLOAD_CHUNK_BYTES`, 1 MiB), so no allocation of the restore grows with
//! the object's size. Restores used to read each object whole into one buffer (and up to 8 at
//! once): 64 MiB apiece with the default segment size.
//!
//! The allocator of this test binary records the largest single allocation made while it is
//! armed. That is a count of bytes asked for, not a timing or a resident-set reading, so it does
//! not depend on the machine's load. One test in this binary: nothing else allocates meanwhile.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aof2::{AofManager, Durability, LogConfig, ManagerConfig, Tier2Config};
use support::s3::{S3Server, unique_bucket};

struct LargestAllocation;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

impl LargestAllocation {
    fn note(size: usize) {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed to the system allocator unchanged; only sizes are recorded.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

const SEGMENT: u64 = 8 << 20;

fn manager(root: &std::path::Path, t2: Tier2Config) -> AofManager {
    let mut config = ManagerConfig::new(root);
    config.tier2 = Some(t2);
    // Incompressible records at level 1: each object is about a segment.
    config.compression = aof2::Compression::Fixed(1);
    config.compress_threads = 1;
    AofManager::open(config).unwrap()
}

fn log_config() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(SEGMENT)
    }
}

#[test]
fn restores_and_fetches_allocate_no_buffer_the_size_of_an_object() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("restore-memory"));
    let mut t2 = Tier2Config::new(&target.url);
    t2.options = target.options.clone();
    t2.request_timeout = Duration::from_secs(30);
    let records = support::incompressible(700, 30_000);

    let a = tempfile::tempdir().unwrap();
    {
        let m = manager(a.path(), t2.clone());
        let log = m.open_log("big", log_config()).unwrap();
        for chunk in records.chunks(32) {
            log.append_batch(chunk).unwrap();
        }
        log.seal().unwrap();
        assert!(m.wait_for_tier2(&log, Duration::from_secs(120)));
        m.close().unwrap();
    }
    let objects: Vec<usize> = server
        .list_keys(target.bucket_name(), "aof2/logs/big/")
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .map(|k| server.object_bytes(target.bucket_name(), &k).unwrap().len())
        .collect();
    let largest_object = *objects.iter().max().unwrap();
    assert!(objects.len() >= 2, "{objects:?}");
    assert!(largest_object > 7 << 20, "{objects:?}");

    let b = tempfile::tempdir().unwrap();
    let mut take_over = t2;
    take_over.take_over = true;
    let m = manager(b.path(), take_over);
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let report = m.restore_log("big", &mut |_| {});
    ARMED.store(false, Ordering::Relaxed);
    let report = report.unwrap();
    let largest = LARGEST.load(Ordering::Relaxed);
    eprintln!(
        "restore of {} objects ({objects:?} bytes): largest allocation {largest} bytes",
        report.segments_downloaded
    );
    assert_eq!(report.segments_downloaded, objects.len() as u64);
    assert!(
        largest < largest_object / 4,
        "a restore of objects of up to {largest_object} bytes allocated {largest} bytes at once"
    );
    // The restored log reads back.
    let log = m.open_log("big", log_config()).unwrap();
    assert_eq!(log.next_seq(), records.len() as u64);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), &records[i][..], "seq {i}");
    }

    // Fetches back into Tier 1 of segments read repeatedly from Tier 2 stream too. (Reads
    // allocate a frame's worth, 256 KiB by default; nothing here needs an object's worth.)
    assert!(m.evict_tier1(&log).unwrap() > 0);
    let fetches = || m.tier_stats().tier2.unwrap().fetches;
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while fetches() < objects.len() as u64 && std::time::Instant::now() < deadline {
        for (i, r) in log.reader(0).enumerate() {
            assert_eq!(r.unwrap().payload(), &records[i][..], "seq {i}");
        }
    }
    ARMED.store(false, Ordering::Relaxed);
    let largest = LARGEST.load(Ordering::Relaxed);
    eprintln!("fetches into Tier 1 and reads: largest allocation {largest} bytes");
    assert_eq!(fetches(), objects.len() as u64, "every segment was fetched");
    assert!(
        largest < largest_object / 4,
        "fetches of objects of up to {largest_object} bytes allocated {largest} bytes at once"
    );
}
