//! Reads of the applied state, for the Read command handlers.
//!
//! A handler runs after the node's read barrier and passes this node's clock
//! as `now_ms`; a key whose expiry is not after it is invisible here, even
//! though it stays stored until the leader's `ExpireKeys` proposal deletes
//! it. Single-key reads go straight to the current generation; reads of
//! several keys (MGET, EXISTS) go through one fjall snapshot, so they never
//! see half of a batch that commits while they run.
//!
//! SCAN's cursor is the hash (see `encoding.rs`) of the next key to visit.
//! Keys are stored in hash order, so a scan is a range scan from the cursor,
//! and every key present for the whole scan is returned at least once
//! whatever is added or removed meanwhile, as Redis documents. A call stops
//! only between two different hashes, so colliding keys are never split
//! across calls; cursor 0 starts and ends a scan.

use bytes::Bytes;
use fjall::{Readable, Slice};

use super::encoding::{decode_value, split_data_key, with_data_key, Kind};
use super::glob::{glob_match, matches_everything};
use super::{StorageError, Store, MAX_KEY_LEN};

/// A live value borrowed from storage, as a read handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its type.
    pub kind: Kind,
    /// Unix milliseconds at which it expires, if it does.
    pub expire_at: Option<u64>,
    /// The payload (the string, for strings).
    pub payload: &'a [u8],
}

/// A live value, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Its type.
    pub kind: Kind,
    /// Unix milliseconds at which it expires, if it does.
    pub expire_at: Option<u64>,
    /// The payload (the string, for strings).
    pub payload: Bytes,
}

/// SCAN's options.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions<'a> {
    /// MATCH pattern.
    pub pattern: Option<&'a [u8]>,
    /// COUNT: how many stored keys to examine (not return) per call.
    pub count: usize,
    /// TYPE name, compared case-insensitively with [`Kind::name`].
    pub kind: Option<&'a [u8]>,
}

/// How many stored keys RANDOMKEY looks at from its random starting point
/// before giving up on finding one that has not expired.
const RANDOM_KEY_PROBES: usize = 128;

/// Decodes a stored value into an [`Entry`] if it is live at `now_ms`.
fn live_entry(raw: &[u8], now_ms: u64) -> Result<Option<Entry<'_>>, StorageError> {
    let (header, payload) = decode_value(raw)?;
    if header.is_expired(now_ms) {
        return Ok(None);
    }
    Ok(Some(Entry {
        kind: header.kind,
        expire_at: header.expiry(),
        payload,
    }))
}

impl Store {
    /// Runs `f` on the live value of `key` (or `None`), without copying it.
    /// Counts a keyspace hit or miss: this is a read command's lookup.
    ///
    /// # Errors
    /// Any fjall error, or a stored value that does not decode.
    pub fn with_key<R>(
        &self,
        key: &[u8],
        now_ms: u64,
        f: impl FnOnce(Option<Entry<'_>>) -> R,
    ) -> Result<R, StorageError> {
        if key.len() > MAX_KEY_LEN {
            // It cannot be stored, and fjall panics on keys that long.
            self.usage.lookup(false);
            return Ok(f(None));
        }
        let generation = self.current();
        let raw: Option<Slice> = with_data_key(key, |data_key| generation.data.get(data_key))?;
        let entry = match &raw {
            Some(raw) => live_entry(raw, now_ms)?,
            None => None,
        };
        self.usage.lookup(entry.is_some());
        Ok(f(entry))
    }

    /// The live value of `key`, copied out.
    ///
    /// # Errors
    /// Any fjall error, or a stored value that does not decode.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<Value>, StorageError> {
        self.with_key(key, now_ms, |entry| {
            entry.map(|e| Value {
                kind: e.kind,
                expire_at: e.expire_at,
                payload: Bytes::copy_from_slice(e.payload),
            })
        })
    }

    /// Calls `f` with the live value (or `None`) of each key in order, all
    /// read from one consistent snapshot. Counts a keyspace hit or miss per
    /// key.
    ///
    /// # Errors
    /// Any fjall error, or a stored value that does not decode.
    pub fn with_keys(
        &self,
        keys: &[Bytes],
        now_ms: u64,
        mut f: impl FnMut(Option<Entry<'_>>),
    ) -> Result<(), StorageError> {
        let generation = self.current();
        let snapshot = self.db.snapshot();
        for key in keys {
            if key.len() > MAX_KEY_LEN {
                self.usage.lookup(false);
                f(None);
                continue;
            }
            let raw = with_data_key(key, |data_key| snapshot.get(&generation.data, data_key))?;
            let entry = match &raw {
                Some(raw) => live_entry(raw, now_ms)?,
                None => None,
            };
            self.usage.lookup(entry.is_some());
            f(entry);
        }
        Ok(())
    }

    /// Every live key matching `pattern` (KEYS). Walks the whole keyspace.
    ///
    /// # Errors
    /// Any fjall error, or stored data that does not decode.
    pub fn keys(&self, pattern: &[u8], now_ms: u64) -> Result<Vec<Bytes>, StorageError> {
        let everything = matches_everything(pattern);
        let mut out = Vec::new();
        for item in self.current().data.iter() {
            let (raw_key, raw_value) = item.into_inner()?;
            let (_, key) = split_data_key(&raw_key)?;
            if (everything || glob_match(pattern, key)) && live_entry(&raw_value, now_ms)?.is_some()
            {
                out.push(Bytes::copy_from_slice(key));
            }
        }
        Ok(out)
    }

    /// One SCAN step from `cursor`: examines about `options.count` stored
    /// keys and returns the next cursor (0 when done) and the live keys among
    /// them that pass the MATCH and TYPE filters.
    ///
    /// # Errors
    /// Any fjall error, or stored data that does not decode.
    pub fn scan(
        &self,
        cursor: u64,
        options: &ScanOptions<'_>,
        now_ms: u64,
    ) -> Result<(u64, Vec<Bytes>), StorageError> {
        let pattern = options.pattern.filter(|p| !matches_everything(p));
        let count = options.count.max(1);
        let mut out = Vec::new();
        let mut last_hash = None;
        for (examined, item) in self
            .current()
            .data
            .range(cursor.to_be_bytes()..)
            .enumerate()
        {
            let (raw_key, raw_value) = item.into_inner()?;
            let (hash, key) = split_data_key(&raw_key)?;
            if examined >= count && last_hash != Some(hash) {
                return Ok((hash, out));
            }
            last_hash = Some(hash);
            if pattern.is_some_and(|p| !glob_match(p, key)) {
                continue;
            }
            let Some(entry) = live_entry(&raw_value, now_ms)? else {
                continue;
            };
            if options
                .kind
                .is_some_and(|k| !k.eq_ignore_ascii_case(entry.kind.name().as_bytes()))
            {
                continue;
            }
            out.push(Bytes::copy_from_slice(key));
        }
        Ok((0, out))
    }

    /// A live key picked at random (RANDOMKEY), `None` when there is none
    /// close to the random starting point (the keyspace is empty or its
    /// neighbourhood has only expired keys awaiting deletion).
    ///
    /// # Errors
    /// Any fjall error, or stored data that does not decode.
    pub fn random_key(&self, now_ms: u64) -> Result<Option<Bytes>, StorageError> {
        let generation = self.current();
        let start: u64 = rand::random();
        // From the random point to the end, then wrapping to the start.
        let passes = [
            generation.data.range(start.to_be_bytes()..),
            generation.data.iter(),
        ];
        for pass in passes {
            for item in pass.take(RANDOM_KEY_PROBES) {
                let (raw_key, raw_value) = item.into_inner()?;
                if live_entry(&raw_value, now_ms)?.is_some() {
                    let (_, key) = split_data_key(&raw_key)?;
                    return Ok(Some(Bytes::copy_from_slice(key)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::cluster::op::{Deadline, Op, SetCondition, SetExpiry};
    use crate::storage::tests::open_store;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.as_bytes().to_vec())
    }

    fn apply(store: &Store, ops: Vec<Op>, now_ms: u64) {
        let mut batch = store.begin();
        for op in &ops {
            batch.apply(op, now_ms).unwrap();
        }
        batch.commit().unwrap();
    }

    fn mset(store: &Store, keys: impl IntoIterator<Item = String>) {
        let pairs = keys.into_iter().map(|k| (Bytes::from(k), b("v"))).collect();
        apply(store, vec![Op::MSet(pairs)], 0);
    }

    fn all(count: usize) -> ScanOptions<'static> {
        ScanOptions {
            pattern: None,
            count,
            kind: None,
        }
    }

    #[test]
    fn scan_returns_every_key_once_without_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        mset(&store, (0..500).map(|i| format!("key:{i}")));
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut calls = 0;
        loop {
            let (next, keys) = store.scan(cursor, &all(7), 0).unwrap();
            assert!(
                keys.len() <= 7,
                "a step returns at most COUNT keys without collisions"
            );
            seen.extend(keys);
            calls += 1;
            if next == 0 {
                break;
            }
            assert!(next > cursor, "cursors only move forward");
            cursor = next;
        }
        assert!(calls >= 500 / 7);
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 500);
        assert_eq!(unique.len(), 500);
    }

    #[test]
    fn scan_keeps_its_guarantee_while_the_keyspace_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        // "stable:*" exist for the whole scan; "churn:*" come and go.
        mset(&store, (0..300).map(|i| format!("stable:{i}")));
        mset(&store, (0..300).map(|i| format!("churn:{i}")));
        let mut seen = HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            let (next, keys) = store.scan(cursor, &all(10), 0).unwrap();
            seen.extend(keys);
            round += 1;
            let deletes = (0..10)
                .map(|i| b(&format!("churn:{}", round * 10 + i)))
                .collect();
            apply(&store, vec![Op::Del(deletes)], 0);
            mset(&store, (0..10).map(|i| format!("added:{round}:{i}")));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for i in 0..300 {
            assert!(
                seen.contains(&b(&format!("stable:{i}"))),
                "stable:{i} missed"
            );
        }
    }

    #[test]
    fn scan_filters_by_match_type_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        mset(&store, (0..20).map(|i| format!("user:{i}")));
        mset(&store, (0..20).map(|i| format!("order:{i}")));
        let ttl = Op::Set {
            key: b("user:short"),
            value: b("v"),
            condition: SetCondition::Always,
            expiry: SetExpiry::Set(Deadline::After(10)),
            get: false,
        };
        apply(&store, vec![ttl], 100);
        let pattern = Some(&b"user:*"[..]);
        let collect = |options: ScanOptions<'_>, now_ms| {
            let mut out = Vec::new();
            let mut cursor = 0;
            loop {
                let (next, keys) = store.scan(cursor, &options, now_ms).unwrap();
                out.extend(keys);
                if next == 0 {
                    return out;
                }
                cursor = next;
            }
        };
        assert_eq!(
            collect(
                ScanOptions {
                    pattern,
                    count: 3,
                    kind: None
                },
                100
            )
            .len(),
            21
        );
        assert_eq!(
            collect(
                ScanOptions {
                    pattern,
                    count: 3,
                    kind: None
                },
                110
            )
            .len(),
            20
        );
        let strings = Some(&b"String"[..]);
        assert_eq!(
            collect(
                ScanOptions {
                    pattern: None,
                    count: 1000,
                    kind: strings
                },
                110
            )
            .len(),
            40
        );
        let lists = Some(&b"list"[..]);
        assert!(collect(
            ScanOptions {
                pattern: None,
                count: 1000,
                kind: lists
            },
            110
        )
        .is_empty());
        // One big COUNT finishes in one step.
        let (next, keys) = store.scan(0, &all(1000), 100).unwrap();
        assert_eq!((next, keys.len()), (0, 41));
    }

    #[test]
    fn multi_key_reads_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        mset(&store, ["a".to_owned(), "b".to_owned(), String::new()]);
        let mut seen = Vec::new();
        store
            .with_keys(
                &[
                    b("a"),
                    b("zz"),
                    b("b"),
                    Bytes::from(vec![0u8; MAX_KEY_LEN + 1]),
                ],
                0,
                |e| {
                    seen.push(e.map(|e| e.payload.to_vec()));
                },
            )
            .unwrap();
        assert_eq!(
            seen,
            vec![Some(b"v".to_vec()), None, Some(b"v".to_vec()), None]
        );
        let mut all_keys = store.keys(b"*", 0).unwrap();
        all_keys.sort();
        assert_eq!(all_keys, vec![b(""), b("a"), b("b")]);
        assert_eq!(
            store.keys(b"**", 0).unwrap().len(),
            2,
            "as Redis, ** needs a character"
        );
        assert_eq!(store.keys(b"?", 0).unwrap().len(), 2);
        assert_eq!(store.keys(b"a", 0).unwrap(), vec![b("a")]);
    }

    #[test]
    fn random_key_skips_expired_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        assert_eq!(store.random_key(0).unwrap(), None);
        let ttl = |k: &str| Op::Set {
            key: b(k),
            value: b("v"),
            condition: SetCondition::Always,
            expiry: SetExpiry::Set(Deadline::After(10)),
            get: false,
        };
        apply(&store, vec![ttl("x"), ttl("y"), ttl("z")], 0);
        mset(&store, ["live".to_owned()]);
        for _ in 0..20 {
            assert_eq!(store.random_key(10).unwrap(), Some(b("live")));
        }
        let mut picked = HashSet::new();
        for _ in 0..200 {
            picked.insert(store.random_key(0).unwrap().unwrap());
        }
        assert!(
            picked.len() > 1,
            "random, not always the same key: {picked:?}"
        );
    }
}
