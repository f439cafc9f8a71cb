//! The newest Raft log entries, kept decoded in memory.
//!
//! After an entry is appended, openraft reads it back at least twice on the
//! leader (once per follower to replicate it, once to apply it) and once on
//! a follower (to apply it). Served from fjall, each read is a range scan of
//! the log keyspace's memtable plus a postcard decode. [`LogTail`] holds the
//! last entries appended, in index order, so those reads are a clone (the
//! payload's keys and values are reference-counted `Bytes`).
//!
//! The log store keeps it exactly in step with the log on disk: every
//! appended entry is pushed after its write succeeded, a truncation or purge
//! drops the same indexes here, and a read is answered from the tail only
//! when the tail holds the whole range; anything older (a follower catching
//! up from far behind, a restart) is read from fjall. The tail is bounded by
//! entries and by encoded bytes, evicting the oldest first.
//!
//! On the leader an entry's keys and values are slices of the connection
//! read buffer the command arrived in (16 KiB or more), and a slice keeps
//! its whole buffer alive: 8192 entries of a few bytes could hold ~128 MiB
//! while counting as a few hundred KiB. So [`LogTail::push`] copies every
//! key and value shorter than [`COPY_BELOW`] into its own allocation; only
//! longer ones, which fill most of the buffer they came in, stay shared.

use std::collections::VecDeque;
use std::ops::{Bound, RangeBounds};

use bytes::Bytes;
use openraft::EntryPayload;

use super::op::Op;
use super::types::Entry;

/// Most entries the tail keeps.
pub const MAX_ENTRIES: usize = 8192;
/// Most encoded bytes the tail keeps (a big value is evicted soon).
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Keys and values shorter than this are copied when pushed, so that they
/// do not pin the (larger) buffer they are a slice of. A connection reads
/// into buffers of 16 to 64 KiB, bigger only after a request that needed
/// the room (up to 1 MiB is kept for the next reads), so a longer value
/// pins at most a few times its size. The copy is one memcpy next to the
/// encoding and the journal write, which copy every entry anyway.
pub const COPY_BELOW: usize = 64 * 1024;

/// A contiguous run of the newest log entries.
#[derive(Default)]
pub struct LogTail {
    /// Index of `entries[0]`.
    first: u64,
    /// Entries with their encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl LogTail {
    /// Adds the entry appended after the current last one; `size` is its
    /// encoded length. An entry that does not follow the last (never the
    /// case when truncations go through [`LogTail::truncate_from`]) starts a
    /// new run rather than leave a gap. Its keys and values shorter than
    /// [`COPY_BELOW`] are copied (see the module doc).
    pub fn push(&mut self, mut entry: Entry, size: usize) {
        let index = entry.log_id.index;
        if self.entries.is_empty() || index != self.end() {
            self.clear();
            self.first = index;
        }
        // An entry over the bound is evicted right below: no use copying it.
        if size <= MAX_BYTES {
            if let EntryPayload::Normal(stamped) = &mut entry.payload {
                unshare_op(&mut stamped.op);
            }
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            self.pop_front();
        }
    }

    /// Drops the entries at `index` and after.
    pub fn truncate_from(&mut self, index: u64) {
        while self.end() > index.max(self.first) {
            match self.entries.pop_back() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Drops the entries at `index` and before.
    pub fn purge_through(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first <= index {
            self.pop_front();
        }
    }

    /// The entries in `range` when the tail holds every one of them. A
    /// range without an end is not answered: the tail's end is the log's
    /// only as long as every write goes through the log store.
    #[must_use]
    pub fn get(&self, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        if self.entries.is_empty() {
            return None;
        }
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1)?,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => return None,
        };
        if start >= end {
            return Some(Vec::new());
        }
        if start < self.first || end > self.end() {
            return None;
        }
        let from = usize::try_from(start - self.first).ok()?;
        let to = usize::try_from(end - self.first).ok()?;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// One past the last index held.
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first += 1;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// Copies `op`'s keys and values shorter than [`COPY_BELOW`] into their own
/// allocations. Every variant is listed (no catch-all) so that a new one
/// carrying `Bytes` cannot be forgotten.
fn unshare_op(op: &mut Op) {
    match op {
        Op::Set { key, value, .. }
        | Op::SetNx { key, value }
        | Op::Append { key, value }
        | Op::SetRange { key, value, .. }
        | Op::IncrByFloat { key, delta: value }
        | Op::Rename {
            from: key,
            to: value,
            ..
        } => {
            unshare(key);
            unshare(value);
        }
        Op::MSet(pairs) | Op::MSetNx(pairs) => {
            for (key, value) in pairs {
                unshare(key);
                unshare(value);
            }
        }
        Op::GetDel(key)
        | Op::GetEx { key, .. }
        | Op::IncrBy { key, .. }
        | Op::Expire { key, .. }
        | Op::Persist(key) => unshare(key),
        Op::Del(keys) | Op::ExpireKeys(keys) => keys.iter_mut().for_each(unshare),
        Op::FlushAll => {}
        Op::Batch(ops) => ops.iter_mut().for_each(unshare_op),
    }
}

/// `bytes` in an allocation of its own when it is shorter than
/// [`COPY_BELOW`]. It cannot tell whether `bytes` already is one (bytes
/// does not expose the backing size), so a follower's entries, decoded into
/// their own allocations, are copied once more: a small memcpy per value.
fn unshare(bytes: &mut Bytes) {
    if bytes.len() < COPY_BELOW {
        *bytes = Bytes::copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: crate::cluster::types::test_values::log_id(index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    fn tail(range: std::ops::RangeInclusive<u64>) -> LogTail {
        let mut t = LogTail::default();
        for i in range {
            t.push(entry(i), 10);
        }
        t
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let t = tail(5..=9);
        assert_eq!(indexes(t.get(&(5..=9))), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(t.get(&(7..=9))), Some(vec![7, 8, 9]));
        assert_eq!(indexes(t.get(&(7..))), None, "unbounded end");
        assert_eq!(indexes(t.get(&(6..8))), Some(vec![6, 7]));
        assert_eq!(indexes(t.get(&(4..=6))), None, "4 is not held");
        assert_eq!(indexes(t.get(&(8..=10))), None, "10 is not held");
        assert_eq!(indexes(t.get(&(..7))), None, "unbounded start");
        assert_eq!(indexes(t.get(&(8..8))), Some(vec![]));
        assert_eq!(indexes(LogTail::default().get(&(1..=1))), None);
    }

    #[test]
    fn truncation_and_purge_drop_the_same_indexes_as_the_log() {
        let mut t = tail(1..=10);
        t.truncate_from(8);
        assert_eq!(indexes(t.get(&(1..=7))), Some((1..=7).collect()));
        t.push(entry(8), 10);
        assert_eq!(indexes(t.get(&(6..=8))), Some(vec![6, 7, 8]));
        t.purge_through(3);
        assert_eq!(indexes(t.get(&(3..=8))), None);
        assert_eq!(indexes(t.get(&(4..=8))), Some((4..=8).collect()));
        t.truncate_from(1);
        assert_eq!(indexes(t.get(&(4..=4))), None);
        assert_eq!(t.bytes, 0);
    }

    #[test]
    fn a_gap_starts_a_new_run() {
        let mut t = tail(1..=3);
        t.push(entry(7), 10);
        assert_eq!(indexes(t.get(&(7..=7))), Some(vec![7]));
        assert_eq!(indexes(t.get(&(3..=7))), None);
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let mut t = LogTail::default();
        for i in 1..=(MAX_ENTRIES as u64 + 5) {
            t.push(entry(i), 1);
        }
        assert_eq!(t.entries.len(), MAX_ENTRIES);
        assert_eq!(t.first, 6);
        t.push(entry(MAX_ENTRIES as u64 + 6), MAX_BYTES);
        assert_eq!(t.entries.len(), 1, "a huge entry evicts the rest");
        t.push(entry(MAX_ENTRIES as u64 + 7), 1);
        assert_eq!(t.entries.len(), 1, "and is evicted by the next");
        assert!(t.bytes <= MAX_BYTES);
    }

    fn normal(index: u64, op: Op) -> Entry {
        let mut e = entry(index);
        e.payload = EntryPayload::Normal(crate::cluster::types::StampedOp {
            now_ms: 0,
            op,
            trace: None,
        });
        e
    }

    /// A request read the way a connection reads it: into a 16 KiB buffer,
    /// split off and frozen; returns the frozen request.
    fn read_buffer(request: &[u8]) -> Bytes {
        let mut buf = bytes::BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(request);
        buf.split_to(request.len()).freeze()
    }

    /// A SET, and a batch of writes naming keys and values of every
    /// shape, all slices of `request`.
    fn sliced_ops(request: &Bytes) -> [Op; 2] {
        let slice = |from: usize, to: usize| request.slice(from..to);
        [
            Op::Set {
                key: slice(0, 4),
                value: slice(4, 10),
                condition: crate::cluster::op::SetCondition::Always,
                expiry: crate::cluster::op::SetExpiry::Clear,
                get: false,
            },
            Op::Batch(vec![
                Op::MSet(vec![(slice(10, 14), slice(14, 20))]),
                Op::Del(vec![slice(20, 24)]),
                Op::IncrByFloat {
                    key: slice(24, 30),
                    delta: slice(20, 24),
                },
            ]),
        ]
    }

    #[test]
    fn small_slices_do_not_pin_their_read_buffer() {
        let request = read_buffer(b"key1value1key2value2key3value3");
        let [set, batch] = sliced_ops(&request);
        let mut t = LogTail::default();
        t.push(normal(1, set), 10);
        t.push(normal(2, batch), 10);
        assert!(
            request.is_unique(),
            "the tail's entries must not hold slices of the read buffer"
        );
        let held: Vec<Op> = t
            .get(&(1..=2))
            .unwrap()
            .into_iter()
            .map(|e| match e.payload {
                EntryPayload::Normal(stamped) => stamped.op,
                _ => panic!("not a normal entry"),
            })
            .collect();
        let expected = sliced_ops(&Bytes::copy_from_slice(&request));
        assert_eq!(held, expected, "same keys and values");
    }

    #[test]
    fn big_values_stay_shared() {
        let big = vec![7u8; COPY_BELOW];
        let request = read_buffer(&big);
        let value = request.slice(..);
        let key = request.slice(..3);
        let mut t = LogTail::default();
        t.push(
            normal(
                1,
                Op::Append {
                    key,
                    value: value.clone(),
                },
            ),
            COPY_BELOW,
        );
        let held = t.get(&(1..=1)).unwrap();
        let EntryPayload::Normal(stamped) = &held[0].payload else {
            panic!("not a normal entry");
        };
        let Op::Append { key, value: kept } = &stamped.op else {
            panic!("not the op pushed");
        };
        assert_eq!(kept.as_ptr(), value.as_ptr(), "no copy of a big value");
        assert_ne!(key.as_ptr(), value.as_ptr(), "the key was copied");
        assert_eq!(&key[..], &[7, 7, 7]);
    }
}
