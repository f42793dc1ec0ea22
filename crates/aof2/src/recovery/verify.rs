//! Deep verification: every frame checksum and sequence of every segment, sealed segments checked
//! in parallel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::aof::LogShared;
use crate::config::ReadVisibility;
use crate::segment::{self, Segment};

/// One problem found by a deep verify (`AofManager::verify_log`).
#[derive(Debug, Clone)]
pub struct Problem {
    /// Segment id.
    pub segment_id: u64,
    /// Where: file and byte offset when known.
    pub location: String,
    /// What is wrong.
    pub detail: String,
}

/// What a deep verification checks besides every local copy (`AofManager::verify_log_with`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Also check the Tier 2 copy of every uploaded segment, including those that Tier 0 or
    /// Tier 1 still hold (every frame, by ranged GETs: as many requests as the object has
    /// frames). Without it, a Tier 2 copy is checked only when it is the segment's only copy.
    pub tier2_copies: bool,
}

impl VerifyOptions {
    /// Also check the Tier 2 copy of every uploaded segment (see the field).
    pub fn with_tier2_copies(mut self, on: bool) -> Self {
        self.tier2_copies = on;
        self
    }
}

/// Result of a deep verification of one log.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Log name.
    pub log: String,
    /// Segments checked.
    pub segments: usize,
    /// Records whose checksum verified.
    pub records: u64,
    /// Tier 2 copies checked (each one in full), sound or not.
    pub tier2_copies: usize,
    /// Everything found damaged: a checksum, a record count, a quarantined segment.
    pub problems: Vec<Problem>,
    /// Segments that could not be checked (an I/O error, Tier 2 unavailable): neither found
    /// damaged nor known to be sound.
    pub unchecked: Vec<Problem>,
}

impl VerifyReport {
    /// Whether every segment was checked and nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.unchecked.is_empty()
    }
}

/// Why a segment did not verify.
enum Failed {
    /// Damage (goes to [`VerifyReport::problems`]).
    Corrupt(Problem),
    /// The check could not run (goes to [`VerifyReport::unchecked`]).
    Unchecked(Problem),
}

/// A failed check: damage, or (an I/O error, a store that does not answer or refuses aof2) no
/// verdict. A copy
/// that the manifest lists but the disk or store does not have is damage.
fn problem(segment: &Segment, e: crate::Error) -> Failed {
    use crate::ErrorKind as K;
    // A store that refuses aof2 (no such bucket, credentials rejected) gives no verdict either.
    let unchecked = matches!(
        e.kind(),
        K::Io | K::Unavailable | K::Backpressure | K::Closed
    ) || matches!(e, crate::Error::Tier2Misconfigured { .. });
    let p = match e {
        crate::Error::Corruption { location, detail } => Problem {
            segment_id: segment.id,
            location,
            detail,
        },
        other => Problem {
            segment_id: segment.id,
            location: segment.path.display().to_string(),
            detail: other.to_string(),
        },
    };
    if unchecked {
        Failed::Unchecked(p)
    } else {
        Failed::Corrupt(p)
    }
}

/// A copy's record count must be the segment's.
fn check_count(
    segment: &Segment,
    location: &str,
    tier: u8,
    n: u64,
    expected: u64,
) -> Result<(), Failed> {
    if n == expected {
        return Ok(());
    }
    Err(Failed::Corrupt(Problem {
        segment_id: segment.id,
        location: location.to_string(),
        detail: format!("Tier {tier} copy holds {n} records, the segment {expected}"),
    }))
}

fn verify_segment(
    segment: &Arc<Segment>,
    visible: u64,
    options: VerifyOptions,
    tier2_checked: &AtomicUsize,
) -> Result<u64, Failed> {
    if let Some(reason) = segment.quarantine_reason() {
        return Err(Failed::Corrupt(Problem {
            segment_id: segment.id,
            location: segment.path.display().to_string(),
            detail: format!("quarantined: {reason}"),
        }));
    }
    if let Some(meta) = segment.sealed_meta() {
        // Every copy is checked: the Tier 0 file and the Tier 1 frames.
        let mut records = None;
        // Through the segment's own mapping, which pins it: eviction skips it meanwhile.
        if let Some(mapping) = segment.tier0_mapping().map_err(|e| problem(segment, e))? {
            records = Some(
                segment::verify_sealed_bytes(mapping.tail(0), &segment.path, &meta)
                    .map_err(|e| problem(segment, e))?,
            );
        }
        if let Some(t1) = segment.tier1() {
            let n = match t1.file().verify() {
                Ok(n) => Some(n),
                // Released while this ran (Tier 2 holds it now): checked there below.
                Err(e) if e.kind() == crate::ErrorKind::NotFound && !segment.tier1_is(&t1) => None,
                Err(e) => return Err(problem(segment, e)),
            };
            if let Some(n) = n {
                let location = t1.path().display().to_string();
                check_count(segment, &location, 1, n, meta.footer.record_count)?;
                records.get_or_insert(n);
            }
        }
        if (records.is_none() || options.tier2_copies)
            && let Some(t2) = segment.tier2()
        {
            // The object, every frame by ranged GETs: the only copy, or asked for.
            let verdict = t2
                .segment()
                .and_then(|s| s.file().verify())
                .map_err(|e| problem(segment, e));
            if !matches!(verdict, Err(Failed::Unchecked(_))) {
                tier2_checked.fetch_add(1, Ordering::Relaxed);
            }
            let n = verdict?;
            check_count(segment, &t2.key, 2, n, meta.footer.record_count)?;
            records.get_or_insert(n);
        }
        return records.ok_or_else(|| {
            Failed::Corrupt(Problem {
                segment_id: segment.id,
                location: segment.path.display().to_string(),
                detail: "segment is in neither Tier 0, Tier 1 nor Tier 2".into(),
            })
        });
    }
    // Active (or rolled, not yet sealed): read every visible record through the normal path.
    let end = segment.end_seq().unwrap_or(visible).min(visible);
    let mut count = 0;
    if segment.base_seq < end {
        let position = segment
            .locate(segment.base_seq)
            .map_err(|e| problem(segment, e))?;
        let mut offset = position.offset;
        for seq in segment.base_seq..end {
            let (_, next) = segment
                .read_at(&position.backing, offset, seq)
                .map_err(|e| problem(segment, e))?;
            offset = next;
            count += 1;
        }
    }
    Ok(count)
}

/// Check every record of a log. Sealed segments run in parallel.
pub(crate) fn verify(log: &LogShared, options: VerifyOptions) -> VerifyReport {
    let segments: Vec<Arc<Segment>> = log.segments.read().iter().cloned().collect();
    let visible = log.visible(ReadVisibility::Written);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(segments.len().max(1));
    let next = AtomicUsize::new(0);
    let tier2_checked = AtomicUsize::new(0);
    let results: Vec<Vec<(usize, Result<u64, Failed>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(seg) = segments.get(i) else { break };
                        let result = match verify_segment(seg, visible, options, &tier2_checked) {
                            // Removed by a retention running meanwhile: nothing to check.
                            Err(_) if seg.is_retired() => Ok(0),
                            r => r,
                        };
                        out.push((i, result));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("verify thread"))
            .collect()
    });
    let mut flat: Vec<(usize, Result<u64, Failed>)> = results.into_iter().flatten().collect();
    flat.sort_by_key(|(i, _)| *i);
    let mut report = VerifyReport {
        log: log.name.to_string(),
        segments: segments.len(),
        tier2_copies: tier2_checked.into_inner(),
        ..Default::default()
    };
    for (_, r) in flat {
        match r {
            Ok(n) => report.records += n,
            Err(Failed::Corrupt(p)) => report.problems.push(p),
            Err(Failed::Unchecked(p)) => report.unchecked.push(p),
        }
    }
    report
}
