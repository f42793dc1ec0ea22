//! SegmentIndex: an ordered map from base sequence to segment, answering "which segment holds
//! seq N" without touching the directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::segment::Segment;

#[derive(Debug, Default)]
pub struct SegmentIndex {
    by_base: BTreeMap<u64, Arc<Segment>>,
}

impl SegmentIndex {
    pub fn insert(&mut self, segment: Arc<Segment>) {
        self.by_base.insert(segment.base_seq, segment);
    }

    /// The segment whose range may contain `seq` (the one with the greatest base <= seq).
    pub fn find(&self, seq: u64) -> Option<&Arc<Segment>> {
        self.by_base.range(..=seq).next_back().map(|(_, s)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.by_base.values()
    }

    /// Remove the oldest segment.
    pub fn pop_first(&mut self) -> Option<Arc<Segment>> {
        self.by_base.pop_first().map(|(_, s)| s)
    }

    /// The oldest segment.
    pub fn first(&self) -> Option<&Arc<Segment>> {
        self.by_base.values().next()
    }

    pub fn len(&self) -> usize {
        self.by_base.len()
    }
}
