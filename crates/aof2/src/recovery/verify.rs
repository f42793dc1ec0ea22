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

/// Result of a deep verification of one log.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Log name.
    pub log: String,
    /// Segments checked.
    pub segments: usize,
    /// Records whose checksum verified.
    pub records: u64,
    /// Everything that failed.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn problem(segment: &Segment, e: crate::Error) -> Problem {
    match e {
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
    }
}

fn verify_segment(log: &LogShared, segment: &Arc<Segment>, visible: u64) -> Result<u64, Problem> {
    if let Some(reason) = segment.quarantine_reason() {
        return Err(Problem {
            segment_id: segment.id,
            location: segment.path.display().to_string(),
            detail: format!("quarantined: {reason}"),
        });
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
                if n != meta.footer.record_count {
                    return Err(Problem {
                        segment_id: segment.id,
                        location: t1.path().display().to_string(),
                        detail: format!(
                            "Tier 1 copy holds {n} records, the segment {}",
                            meta.footer.record_count
                        ),
                    });
                }
                records.get_or_insert(n);
            }
        }
        if records.is_none()
            && let Some(t2) = segment.tier2()
        {
            // Only Tier 2 holds it: check the object (every frame, by ranged GETs).
            let n = t2
                .segment()
                .and_then(|s| s.file().verify())
                .map_err(|e| problem(segment, e))?;
            records = Some(n);
        }
        return records.ok_or_else(|| Problem {
            segment_id: segment.id,
            location: segment.path.display().to_string(),
            detail: "segment is in neither Tier 0, Tier 1 nor Tier 2".into(),
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
    let _ = log;
    Ok(count)
}

/// Check every record of a log. Sealed segments run in parallel.
pub(crate) fn verify(log: &LogShared) -> VerifyReport {
    let segments: Vec<Arc<Segment>> = log.segments.read().iter().cloned().collect();
    let visible = log.visible(ReadVisibility::Written);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(segments.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Vec<Vec<(usize, Result<u64, Problem>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(seg) = segments.get(i) else { break };
                        let result = match verify_segment(log, seg, visible) {
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
    let mut flat: Vec<(usize, Result<u64, Problem>)> = results.into_iter().flatten().collect();
    flat.sort_by_key(|(i, _)| *i);
    let mut report = VerifyReport {
        log: log.name.to_string(),
        segments: segments.len(),
        ..Default::default()
    };
    for (_, r) in flat {
        match r {
            Ok(n) => report.records += n,
            Err(p) => report.problems.push(p),
        }
    }
    report
}
