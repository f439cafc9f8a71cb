//! Applying committed `Op`s: the only way user data changes.
//!
//! An [`ApplyBatch`] collects the effect of a group of entries in an
//! in-memory overlay (key → its value as of the last op, or deleted), so an
//! op sees every earlier op of the same group without a round trip to fjall.
//! For each touched key the overlay also remembers what the generation held
//! before the batch (present or not, and its expiry), which is all
//! [`ApplyBatch::commit`] needs to derive the data writes, the expiry-index
//! updates and the deltas of the key count and of the count of keys with an
//! expiry, and to write them together with the caller's metadata in one
//! atomic fjall batch.
//!
//! Apply is a pure function of the stored state, the op and the stamped
//! `now_ms`: no clock, no randomness. A key whose expiry is not after
//! `now_ms` counts as absent, and an op that touches one deletes it for good
//! (every replica does the same at the same log position).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use fjall::Slice;

use super::encoding::{
    data_key, decode_value, encode_value, expiry_key, push_data_key, Header, Kind, HASH_LEN,
    VALUE_HEADER_LEN,
};
use super::key_filter::{data_key_fingerprint, Change};
use super::number::{add_floats, parse_i64, FloatError};
use super::{
    caller_meta_key, Generation, StorageError, Store, WriterGuard, COUNT_KEY, EXPIRES_KEY,
    GENERATION_KEY, MAX_KEY_LEN,
};
use crate::cluster::op::{
    Deadline, ExpireCondition, GetExExpiry, Op, OpResult, SetCondition, SetExpiry,
};

/// Largest string a command may build, Redis's default `proto-max-bulk-len`.
/// A constant rather than configuration: apply must give the same answer on
/// every replica.
pub const MAX_STRING_LEN: u64 = 512 * 1024 * 1024;

const WRONGTYPE: OpResult =
    OpResult::error("WRONGTYPE Operation against a key holding the wrong kind of value");
const NOT_AN_INTEGER: OpResult = OpResult::error("ERR value is not an integer or out of range");
const OVERFLOW: OpResult = OpResult::error("ERR increment or decrement would overflow");
const NOT_A_FLOAT: OpResult = OpResult::error("ERR value is not a valid float");
const NOT_FINITE: OpResult = OpResult::error("ERR increment would produce NaN or Infinity");
const TOO_LONG: OpResult =
    OpResult::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
const NO_SUCH_KEY: OpResult = OpResult::error("ERR no such key");
/// Parse functions refuse such keys already; apply refuses them again so no
/// log entry can ever make fjall reject (panic on) a key.
const KEY_TOO_LONG: OpResult = OpResult::error("ERR key exceeds the maximum allowed length");

/// One key's state in the overlay.
struct Slot {
    /// The generation's entry before this batch: `Some(expire_at)` (0 = no
    /// expiry) when present, `None` when absent.
    committed: Option<u64>,
    /// The encoded value as of the latest op, `None` when deleted or absent.
    current: Option<Slice>,
    /// True once an op changed `current`.
    dirty: bool,
}

/// A live (present and unexpired) value read through the overlay.
struct Live {
    header: Header,
    raw: Slice,
}

impl Live {
    fn payload(&self) -> &[u8] {
        self.raw.get(VALUE_HEADER_LEN..).unwrap_or_default()
    }

    fn payload_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.payload())
    }

    /// The expiry to keep when rewriting the value.
    fn expiry(&self) -> Option<i64> {
        self.header
            .expiry()
            .map(|at| i64::try_from(at).unwrap_or(i64::MAX))
    }
}

/// A group of ops applied in order, committed atomically. Created by
/// [`Store::begin`]; while it is open no other writer runs.
pub struct ApplyBatch<'s> {
    store: &'s Store,
    _writer: WriterGuard<'s>,
    /// Where this batch's writes go: the current generation, or a fresh one
    /// after a FLUSHALL in this batch.
    generation: Arc<Generation>,
    /// True when `generation` was created by this batch.
    switched: bool,
    /// Generations created by earlier FLUSHALLs of this batch and already
    /// replaced by a later one.
    abandoned: Vec<Arc<Generation>>,
    /// Key count of `generation` before this batch.
    base_count: u64,
    /// Count of keys with an expiry in `generation` before this batch.
    base_expires: u64,
    overlay: HashMap<Bytes, Slot>,
    meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// Reused buffer for data keys of point lookups.
    scratch: Vec<u8>,
    /// Keys deleted by `ExpireKeys` ops, counted in INFO's `expired_keys`
    /// once the batch commits.
    expired: u64,
}

impl<'s> ApplyBatch<'s> {
    pub(super) fn new(store: &'s Store, writer: WriterGuard<'s>) -> Self {
        ApplyBatch {
            store,
            _writer: writer,
            generation: store.current(),
            switched: false,
            abandoned: Vec::new(),
            base_count: store.key_count(),
            base_expires: store.expires_count(),
            overlay: HashMap::new(),
            meta: Vec::new(),
            scratch: Vec::new(),
            expired: 0,
        }
    }

    /// Applies one op as of the leader's stamped time `now_ms`, after every
    /// op applied before it in this batch.
    ///
    /// # Errors
    /// Only storage failures (a read from fjall failed, or a stored value
    /// does not decode). Deterministic command failures are
    /// `Ok(OpResult::Error(..))`.
    pub fn apply(&mut self, op: &Op, now_ms: u64) -> Result<OpResult, StorageError> {
        if has_oversized_key(op) {
            return Ok(KEY_TOO_LONG);
        }
        match op {
            Op::Set {
                key,
                value,
                condition,
                expiry,
                get,
            } => self.set(key, value, *condition, *expiry, *get, now_ms),
            Op::SetNx { key, value } => {
                if self.live(key, now_ms)?.is_some() {
                    return Ok(OpResult::Integer(0));
                }
                self.write(key, Kind::String, None, value, now_ms)?;
                Ok(OpResult::Integer(1))
            }
            Op::MSet(pairs) => {
                for (key, value) in pairs {
                    self.write(key, Kind::String, None, value, now_ms)?;
                }
                Ok(OpResult::Ok)
            }
            Op::MSetNx(pairs) => {
                for (key, _) in pairs {
                    if self.live(key, now_ms)?.is_some() {
                        return Ok(OpResult::Integer(0));
                    }
                }
                for (key, value) in pairs {
                    self.write(key, Kind::String, None, value, now_ms)?;
                }
                Ok(OpResult::Integer(1))
            }
            Op::GetDel(key) => match self.live_string(key, now_ms)? {
                Err(wrong) => Ok(wrong),
                Ok(None) => Ok(OpResult::Nil),
                Ok(Some(live)) => {
                    self.delete(key)?;
                    Ok(OpResult::Bulk(live.payload_bytes()))
                }
            },
            Op::GetEx { key, expiry } => self.get_ex(key, *expiry, now_ms),
            Op::IncrBy { key, delta } => self.incr_by(key, *delta, now_ms),
            Op::IncrByFloat { key, delta } => self.incr_by_float(key, delta, now_ms),
            Op::Append { key, value } => self.append(key, value, now_ms),
            Op::SetRange { key, offset, value } => self.set_range(key, *offset, value, now_ms),
            Op::Del(keys) => {
                let mut removed = 0;
                for key in keys {
                    if self.live(key, now_ms)?.is_some() {
                        self.delete(key)?;
                        removed += 1;
                    }
                }
                Ok(OpResult::Integer(removed))
            }
            Op::Rename { from, to, nx } => self.rename(from, to, *nx, now_ms),
            Op::Expire {
                key,
                deadline,
                condition,
            } => self.expire(key, *deadline, *condition, now_ms),
            Op::Persist(key) => match self.live(key, now_ms)? {
                Some(live) if live.header.expire_at != 0 => {
                    self.write(key, live.header.kind, None, live.payload(), now_ms)?;
                    Ok(OpResult::Integer(1))
                }
                _ => Ok(OpResult::Integer(0)),
            },
            Op::FlushAll => {
                self.flush()?;
                Ok(OpResult::Ok)
            }
            Op::Batch(ops) => {
                let mut results = Vec::with_capacity(ops.len());
                for op in ops {
                    results.push(match op {
                        Op::Batch(_) => {
                            OpResult::Error(std::borrow::Cow::Borrowed("ERR nested batch"))
                        }
                        op => self.apply(op, now_ms)?,
                    });
                }
                Ok(OpResult::Array(results))
            }
            Op::ExpireKeys(keys) => {
                let mut removed = 0;
                for key in keys {
                    let slot = self.slot(key)?;
                    let expired = match &slot.current {
                        Some(raw) => decode_value(raw)?.0.is_expired(now_ms),
                        None => false,
                    };
                    if expired {
                        self.delete(key)?;
                        removed += 1;
                        self.expired += 1;
                    }
                }
                Ok(OpResult::Integer(removed))
            }
        }
    }

    /// Adds a state-machine metadata pair (last applied log id, membership)
    /// to the batch; it is written atomically with the data changes.
    pub fn put_meta(&mut self, key: &[u8], value: Vec<u8>) {
        // One fjall batch must not carry two writes of the same key.
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => self.meta.push((key.to_vec(), value)),
        }
    }

    /// Writes every change of the batch, its key and expires counts and its
    /// metadata in one atomic fjall write batch (journaled, not fsynced: the
    /// Raft log is what makes entries durable), then publishes a FLUSHALL's
    /// new generation and drops the replaced ones.
    ///
    /// # Errors
    /// Any fjall error; nothing of the batch is then visible.
    pub fn commit(self) -> Result<(), StorageError> {
        let ApplyBatch {
            store,
            _writer,
            generation,
            switched,
            abandoned,
            base_count,
            base_expires,
            overlay,
            meta,
            expired,
            ..
        } = self;
        let mut batch = store.db.batch();
        let (mut added, mut removed) = (0u64, 0u64);
        let mut changes = Vec::new();
        let (mut ttl_added, mut ttl_removed) = (0u64, 0u64);
        for (key, slot) in overlay {
            if !slot.dirty {
                continue;
            }
            let new_expiry = match &slot.current {
                Some(raw) => Some(decode_value(raw)?.0.expire_at),
                None => None,
            };
            // The key count and the key filter change with the key's
            // presence; the filter's fingerprint is the data key's hash.
            let stored_key = data_key(&key);
            match (&slot.current, slot.committed) {
                (Some(raw), committed) => {
                    if committed.is_none() {
                        added += 1;
                        changes.push(Change::Created(data_key_fingerprint(&stored_key)?));
                    }
                    batch.insert(&generation.data, stored_key, raw.clone());
                }
                (None, Some(_)) => {
                    removed += 1;
                    changes.push(Change::Deleted(data_key_fingerprint(&stored_key)?));
                    batch.remove(&generation.data, stored_key);
                }
                (None, None) => {}
            }
            let old_at = slot.committed.filter(|&at| at != 0);
            let new_at = new_expiry.filter(|&at| at != 0);
            match (old_at.is_some(), new_at.is_some()) {
                (false, true) => ttl_added += 1,
                (true, false) => ttl_removed += 1,
                _ => {}
            }
            if old_at != new_at {
                if let Some(at) = old_at {
                    batch.remove(&generation.expiry, expiry_key(at, &key));
                }
                if let Some(at) = new_at {
                    batch.insert(&generation.expiry, expiry_key(at, &key), &b""[..]);
                }
            }
        }
        let count = (base_count + added).saturating_sub(removed);
        if switched || added != removed {
            batch.insert(&store.meta, COUNT_KEY, count.to_be_bytes());
        }
        let expires = (base_expires + ttl_added).saturating_sub(ttl_removed);
        if switched || ttl_added != ttl_removed {
            batch.insert(&store.meta, EXPIRES_KEY, expires.to_be_bytes());
        }
        if switched {
            batch.insert(&store.meta, GENERATION_KEY, generation.id.to_be_bytes());
        }
        for (key, value) in meta {
            batch.insert(&store.meta, caller_meta_key(&key), value);
        }
        batch.commit()?;

        if switched || !abandoned.is_empty() {
            // A generation is about to be deleted, which bypasses the
            // journal: the pointer away from it must be durable first.
            store.db.persist(fjall::PersistMode::SyncAll)?;
        }
        if switched {
            store.switch_to(Arc::unwrap_or_clone(generation), count, expires);
        } else {
            use std::sync::atomic::Ordering;
            store.key_count.store(count, Ordering::Release);
            store.expires_count.store(expires, Ordering::Release);
        }
        // Still the writer, so the filter follows the batches in order.
        if switched && store.engine.key_filter {
            store.key_filter.reset_empty();
        }
        store.key_filter.record(&changes);
        for generation in &abandoned {
            store.drop_generation(generation);
        }
        store
            .usage
            .expired
            .fetch_add(expired, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The overlay slot of `key`, loaded from the generation on first touch.
    fn slot(&mut self, key: &Bytes) -> Result<&mut Slot, StorageError> {
        match self.overlay.entry(key.clone()) {
            MapEntry::Occupied(entry) => Ok(entry.into_mut()),
            MapEntry::Vacant(entry) => {
                self.scratch.clear();
                push_data_key(&mut self.scratch, key);
                // A key the store certainly lacks needs no read. The data
                // key starts with the key's hash: no second hashing.
                let absent = self.scratch.first_chunk::<HASH_LEN>().is_some_and(|hash| {
                    self.store
                        .key_filter
                        .certainly_absent(u64::from_be_bytes(*hash))
                });
                let stored = if absent {
                    None
                } else {
                    self.generation.data.get(&self.scratch)?
                };
                let committed = match &stored {
                    Some(raw) => Some(decode_value(raw)?.0.expire_at),
                    None => None,
                };
                Ok(entry.insert(Slot {
                    committed,
                    current: stored,
                    dirty: false,
                }))
            }
        }
    }

    /// The value of `key` if present and unexpired at `now_ms`; an expired
    /// one is deleted on the way.
    fn live(&mut self, key: &Bytes, now_ms: u64) -> Result<Option<Live>, StorageError> {
        let slot = self.slot(key)?;
        let Some(raw) = &slot.current else {
            return Ok(None);
        };
        let header = decode_value(raw)?.0;
        if header.is_expired(now_ms) {
            slot.current = None;
            slot.dirty = true;
            return Ok(None);
        }
        Ok(Some(Live {
            header,
            raw: raw.clone(),
        }))
    }

    /// Like [`Self::live`], with WRONGTYPE for a value that is not a string.
    fn live_string(
        &mut self,
        key: &Bytes,
        now_ms: u64,
    ) -> Result<Result<Option<Live>, OpResult>, StorageError> {
        Ok(match self.live(key, now_ms)? {
            Some(live) if live.header.kind != Kind::String => Err(WRONGTYPE),
            other => Ok(other),
        })
    }

    /// Stores a value expiring at `expire_at` (unix ms), or deletes the key
    /// if that time is not after `now_ms`. Returns whether it was stored.
    fn write(
        &mut self,
        key: &Bytes,
        kind: Kind,
        expire_at: Option<i64>,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let expire_at = match expire_at {
            None => 0,
            Some(at) => match u64::try_from(at) {
                Ok(at) if at > now_ms => at,
                _ => {
                    self.delete(key)?;
                    return Ok(false);
                }
            },
        };
        let raw = Slice::from(encode_value(kind, expire_at, payload));
        let slot = self.slot(key)?;
        slot.current = Some(raw);
        slot.dirty = true;
        Ok(true)
    }

    fn delete(&mut self, key: &Bytes) -> Result<(), StorageError> {
        let slot = self.slot(key)?;
        if slot.current.is_some() {
            slot.current = None;
            slot.dirty = true;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        let fresh = Arc::new(self.store.create_generation()?);
        let replaced = std::mem::replace(&mut self.generation, fresh);
        if self.switched {
            self.abandoned.push(replaced);
        }
        self.switched = true;
        self.base_count = 0;
        self.base_expires = 0;
        self.overlay.clear();
        Ok(())
    }

    fn set(
        &mut self,
        key: &Bytes,
        value: &Bytes,
        condition: SetCondition,
        expiry: SetExpiry,
        get: bool,
        now_ms: u64,
    ) -> Result<OpResult, StorageError> {
        let old = if get {
            match self.live_string(key, now_ms)? {
                Ok(old) => old,
                Err(wrong) => return Ok(wrong),
            }
        } else {
            self.live(key, now_ms)?
        };
        let answer = |old: &Option<Live>, done: OpResult| {
            if get {
                old.as_ref()
                    .map_or(OpResult::Nil, |live| OpResult::Bulk(live.payload_bytes()))
            } else {
                done
            }
        };
        let proceed = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        if !proceed {
            return Ok(answer(&old, OpResult::Nil));
        }
        let expire_at = match expiry {
            SetExpiry::Clear => None,
            SetExpiry::Keep => old.as_ref().and_then(Live::expiry),
            SetExpiry::Set(deadline) => Some(deadline.resolve(now_ms)),
        };
        self.write(key, Kind::String, expire_at, value, now_ms)?;
        Ok(answer(&old, OpResult::Ok))
    }

    fn get_ex(
        &mut self,
        key: &Bytes,
        expiry: GetExExpiry,
        now_ms: u64,
    ) -> Result<OpResult, StorageError> {
        let live = match self.live_string(key, now_ms)? {
            Err(wrong) => return Ok(wrong),
            Ok(None) => return Ok(OpResult::Nil),
            Ok(Some(live)) => live,
        };
        match expiry {
            GetExExpiry::Keep => {}
            GetExExpiry::Persist => {
                if live.header.expire_at != 0 {
                    self.write(key, Kind::String, None, live.payload(), now_ms)?;
                }
            }
            GetExExpiry::Set(deadline) => {
                self.write(
                    key,
                    Kind::String,
                    Some(deadline.resolve(now_ms)),
                    live.payload(),
                    now_ms,
                )?;
            }
        }
        Ok(OpResult::Bulk(live.payload_bytes()))
    }

    fn incr_by(&mut self, key: &Bytes, delta: i64, now_ms: u64) -> Result<OpResult, StorageError> {
        let old = match self.live_string(key, now_ms)? {
            Err(wrong) => return Ok(wrong),
            Ok(old) => old,
        };
        let current = match &old {
            None => 0,
            Some(live) => match parse_i64(live.payload()) {
                Some(n) => n,
                None => return Ok(NOT_AN_INTEGER),
            },
        };
        let Some(new) = current.checked_add(delta) else {
            return Ok(OVERFLOW);
        };
        let mut digits = itoa_buffer();
        let text = format_i64(new, &mut digits);
        self.write(
            key,
            Kind::String,
            old.as_ref().and_then(Live::expiry),
            text,
            now_ms,
        )?;
        Ok(OpResult::Integer(new))
    }

    fn incr_by_float(
        &mut self,
        key: &Bytes,
        delta: &[u8],
        now_ms: u64,
    ) -> Result<OpResult, StorageError> {
        let old = match self.live_string(key, now_ms)? {
            Err(wrong) => return Ok(wrong),
            Ok(old) => old,
        };
        let current = old.as_ref().map_or(&b"0"[..], Live::payload);
        let text = match add_floats(current, delta) {
            Ok(text) => text,
            Err(FloatError::NotAFloat) => return Ok(NOT_A_FLOAT),
            Err(FloatError::NotFinite) => return Ok(NOT_FINITE),
        };
        self.write(
            key,
            Kind::String,
            old.as_ref().and_then(Live::expiry),
            text.as_bytes(),
            now_ms,
        )?;
        Ok(OpResult::Bulk(Bytes::from(text)))
    }

    fn append(&mut self, key: &Bytes, value: &[u8], now_ms: u64) -> Result<OpResult, StorageError> {
        let old = match self.live_string(key, now_ms)? {
            Err(wrong) => return Ok(wrong),
            Ok(old) => old,
        };
        let old_payload = old.as_ref().map_or(&b""[..], Live::payload);
        let new_len = old_payload.len() + value.len();
        if new_len as u64 > MAX_STRING_LEN {
            return Ok(TOO_LONG);
        }
        let mut payload = Vec::with_capacity(new_len);
        payload.extend_from_slice(old_payload);
        payload.extend_from_slice(value);
        self.write(
            key,
            Kind::String,
            old.as_ref().and_then(Live::expiry),
            &payload,
            now_ms,
        )?;
        Ok(OpResult::Integer(len_reply(new_len)))
    }

    fn set_range(
        &mut self,
        key: &Bytes,
        offset: u64,
        value: &[u8],
        now_ms: u64,
    ) -> Result<OpResult, StorageError> {
        let old = match self.live_string(key, now_ms)? {
            Err(wrong) => return Ok(wrong),
            Ok(old) => old,
        };
        let old_payload = old.as_ref().map_or(&b""[..], Live::payload);
        if value.is_empty() {
            // Redis neither creates nor pads a key for an empty write.
            return Ok(OpResult::Integer(len_reply(old_payload.len())));
        }
        let end = offset.saturating_add(value.len() as u64);
        if end > MAX_STRING_LEN {
            return Ok(TOO_LONG);
        }
        let (Ok(start), Ok(end)) = (usize::try_from(offset), usize::try_from(end)) else {
            return Ok(TOO_LONG);
        };
        let mut payload = Vec::with_capacity(end.max(old_payload.len()));
        payload.extend_from_slice(old_payload);
        if payload.len() < end {
            payload.resize(end, 0);
        }
        payload[start..end].copy_from_slice(value);
        self.write(
            key,
            Kind::String,
            old.as_ref().and_then(Live::expiry),
            &payload,
            now_ms,
        )?;
        Ok(OpResult::Integer(len_reply(payload.len())))
    }

    fn rename(
        &mut self,
        from: &Bytes,
        to: &Bytes,
        nx: bool,
        now_ms: u64,
    ) -> Result<OpResult, StorageError> {
        let Some(source) = self.live(from, now_ms)? else {
            return Ok(NO_SUCH_KEY);
        };
        let done = if nx {
            OpResult::Integer(1)
        } else {
            OpResult::Ok
        };
        if from == to {
            return Ok(if nx {
                OpResult::Integer(0)
            } else {
                OpResult::Ok
            });
        }
        if nx && self.live(to, now_ms)?.is_some() {
            return Ok(OpResult::Integer(0));
        }
        // The value moves with its type and expiry unchanged.
        let slot = self.slot(to)?;
        slot.current = Some(source.raw);
        slot.dirty = true;
        self.delete(from)?;
        Ok(done)
    }

    fn expire(
        &mut self,
        key: &Bytes,
        deadline: Deadline,
        condition: ExpireCondition,
        now_ms: u64,
    ) -> Result<OpResult, StorageError> {
        let Some(live) = self.live(key, now_ms)? else {
            return Ok(OpResult::Integer(0));
        };
        let when = deadline.resolve(now_ms);
        let current = live.expiry();
        let allowed = match condition {
            ExpireCondition::Always => true,
            ExpireCondition::IfNoExpiry => current.is_none(),
            ExpireCondition::IfExpiry => current.is_some(),
            ExpireCondition::IfLater => current.is_some_and(|c| when > c),
            ExpireCondition::IfEarlier => current.is_none_or(|c| when < c),
            ExpireCondition::IfExpiryAndEarlier => current.is_some_and(|c| when < c),
        };
        if !allowed {
            return Ok(OpResult::Integer(0));
        }
        self.write(key, live.header.kind, Some(when), live.payload(), now_ms)?;
        Ok(OpResult::Integer(1))
    }
}

fn has_oversized_key(op: &Op) -> bool {
    let long = |key: &Bytes| key.len() > MAX_KEY_LEN;
    match op {
        Op::Set { key, .. }
        | Op::SetNx { key, .. }
        | Op::GetDel(key)
        | Op::GetEx { key, .. }
        | Op::IncrBy { key, .. }
        | Op::IncrByFloat { key, .. }
        | Op::Append { key, .. }
        | Op::SetRange { key, .. }
        | Op::Expire { key, .. }
        | Op::Persist(key) => long(key),
        Op::MSet(pairs) | Op::MSetNx(pairs) => pairs.iter().any(|(key, _)| long(key)),
        Op::Del(keys) | Op::ExpireKeys(keys) => keys.iter().any(long),
        Op::Rename { from, to, .. } => long(from) || long(to),
        // Each op of a batch is checked when it is applied.
        Op::FlushAll | Op::Batch(_) => false,
    }
}

fn len_reply(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// Room for any i64 in decimal.
fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

/// Formats `n` in decimal into `buf` without allocating.
fn format_i64(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut pos = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::encoding::key_hash;
    use crate::storage::key_filter::fingerprint;
    use crate::storage::tests::open_store;
    use crate::storage::EngineOptions;
    use std::time::Duration;

    const NOW: u64 = 1_000_000;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.as_bytes().to_vec())
    }

    fn set_op(key: &str, value: &str) -> Op {
        Op::Set {
            key: b(key),
            value: b(value),
            condition: SetCondition::Always,
            expiry: SetExpiry::Clear,
            get: false,
        }
    }

    fn bulk(s: &str) -> OpResult {
        OpResult::Bulk(b(s))
    }

    /// Applies each op in its own committed batch.
    fn run(store: &Store, ops: &[Op], now_ms: u64) -> Vec<OpResult> {
        ops.iter()
            .map(|op| {
                let mut batch = store.begin();
                let result = batch.apply(op, now_ms).unwrap();
                batch.commit().unwrap();
                result
            })
            .collect()
    }

    fn one(store: &Store, op: Op, now_ms: u64) -> OpResult {
        run(store, &[op], now_ms).remove(0)
    }

    fn payload(store: &Store, key: &str, now_ms: u64) -> Option<Bytes> {
        store
            .get(key.as_bytes(), now_ms)
            .unwrap()
            .map(|v| v.payload)
    }

    #[test]
    fn batch_applies_in_order_and_answers_each_op() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let batch = Op::Batch(vec![
            set_op("k", "1"),
            Op::IncrBy {
                key: b("k"),
                delta: 5,
            },
            Op::Append {
                key: b("k"),
                value: b("x"),
            },
            Op::IncrBy {
                key: b("k"),
                delta: 1,
            },
            Op::Batch(vec![set_op("k", "nested")]),
        ]);
        let results = one(&store, batch, NOW);
        assert_eq!(
            results,
            OpResult::Array(vec![
                OpResult::Ok,
                OpResult::Integer(6),
                OpResult::Integer(2),
                OpResult::Error(std::borrow::Cow::Borrowed(
                    "ERR value is not an integer or out of range"
                )),
                OpResult::Error(std::borrow::Cow::Borrowed("ERR nested batch")),
            ])
        );
        assert_eq!(payload(&store, "k", NOW).as_deref(), Some(&b"6x"[..]));
        assert_eq!(store.key_count(), 1);
    }

    fn expiry(store: &Store, key: &str) -> Option<u64> {
        store
            .get(key.as_bytes(), 0)
            .unwrap()
            .and_then(|v| v.expire_at)
    }

    /// Stores a value of another type directly, to exercise WRONGTYPE.
    fn put_list(store: &Store, key: &str) {
        let generation = store.current();
        generation
            .data
            .insert(
                data_key(key.as_bytes()),
                encode_value(Kind::List, 0, b"opaque"),
            )
            .unwrap();
        let mut batch = store.db.batch();
        batch.insert(
            &store.meta,
            COUNT_KEY,
            (store.key_count() + 1).to_be_bytes(),
        );
        batch.commit().unwrap();
        store
            .key_count
            .store(store.key_count() + 1, std::sync::atomic::Ordering::Release);
        store
            .key_filter
            .record(&[Change::Created(fingerprint(key_hash(key.as_bytes())))]);
    }

    #[test]
    fn set_conditions_get_and_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let with = |condition, expiry, get| Op::Set {
            key: b("k"),
            value: b("new"),
            condition,
            expiry,
            get,
        };
        assert_eq!(
            one(
                &store,
                with(SetCondition::IfPresent, SetExpiry::Clear, false),
                NOW
            ),
            OpResult::Nil
        );
        assert_eq!(
            one(
                &store,
                with(SetCondition::IfPresent, SetExpiry::Clear, true),
                NOW
            ),
            OpResult::Nil
        );
        assert_eq!(store.key_count(), 0);
        assert_eq!(one(&store, set_op("k", "v"), NOW), OpResult::Ok);
        // NX GET on an existing key: not set, old value returned.
        assert_eq!(
            one(
                &store,
                with(SetCondition::IfAbsent, SetExpiry::Clear, true),
                NOW
            ),
            bulk("v")
        );
        assert_eq!(payload(&store, "k", NOW), Some(b("v")));
        assert_eq!(
            one(
                &store,
                with(SetCondition::IfAbsent, SetExpiry::Clear, false),
                NOW
            ),
            OpResult::Nil
        );
        // Relative expiry resolves against the stamp.
        let ex = SetExpiry::Set(Deadline::After(20_000));
        assert_eq!(
            one(&store, with(SetCondition::IfPresent, ex, true), NOW),
            bulk("v")
        );
        assert_eq!(expiry(&store, "k"), Some(NOW + 20_000));
        // KEEPTTL keeps it, a plain SET clears it.
        assert_eq!(
            one(
                &store,
                with(SetCondition::Always, SetExpiry::Keep, false),
                NOW + 5
            ),
            OpResult::Ok
        );
        assert_eq!(expiry(&store, "k"), Some(NOW + 20_000));
        assert_eq!(one(&store, set_op("k", "plain"), NOW), OpResult::Ok);
        assert_eq!(expiry(&store, "k"), None);
        // An absolute time already past stores nothing.
        let past = SetExpiry::Set(Deadline::At(5));
        assert_eq!(
            one(&store, with(SetCondition::Always, past, false), NOW),
            OpResult::Ok
        );
        assert_eq!(payload(&store, "k", NOW), None);
        assert_eq!(store.key_count(), 0);
    }

    #[test]
    fn expired_keys_count_as_absent_at_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let op = Op::Set {
            key: b("k"),
            value: b("v"),
            condition: SetCondition::Always,
            expiry: SetExpiry::Set(Deadline::After(100)),
            get: false,
        };
        one(&store, op, NOW);
        assert_eq!(
            one(
                &store,
                Op::SetNx {
                    key: b("k"),
                    value: b("x")
                },
                NOW + 99
            ),
            OpResult::Integer(0)
        );
        // At exactly the expire time the key is gone.
        assert_eq!(
            one(
                &store,
                Op::SetNx {
                    key: b("k"),
                    value: b("x")
                },
                NOW + 100
            ),
            OpResult::Integer(1)
        );
        assert_eq!(payload(&store, "k", NOW + 100), Some(b("x")));
        assert_eq!(expiry(&store, "k"), None);
        assert_eq!(store.key_count(), 1);
        assert_eq!(
            store.expired_keys(u64::MAX, 10).unwrap(),
            Vec::<Bytes>::new()
        );
    }

    #[test]
    fn mset_msetnx_getdel_getex() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let pairs = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (b(k), b(v))).collect::<Vec<_>>();
        assert_eq!(
            one(&store, Op::MSet(pairs(&[("a", "1"), ("b", "2")])), NOW),
            OpResult::Ok
        );
        assert_eq!(
            one(&store, Op::MSetNx(pairs(&[("a", "x"), ("c", "3")])), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(payload(&store, "c", NOW), None);
        assert_eq!(
            one(
                &store,
                Op::MSetNx(pairs(&[("c", "3"), ("d", "4"), ("c", "5")])),
                NOW
            ),
            OpResult::Integer(1)
        );
        assert_eq!(payload(&store, "c", NOW), Some(b("5")));
        assert_eq!(store.key_count(), 4);

        assert_eq!(one(&store, Op::GetDel(b("a")), NOW), bulk("1"));
        assert_eq!(one(&store, Op::GetDel(b("a")), NOW), OpResult::Nil);
        assert_eq!(store.key_count(), 3);

        let getex = |expiry| Op::GetEx {
            key: b("b"),
            expiry,
        };
        assert_eq!(
            one(&store, getex(GetExExpiry::Set(Deadline::After(1_000))), NOW),
            bulk("2")
        );
        assert_eq!(expiry(&store, "b"), Some(NOW + 1_000));
        assert_eq!(one(&store, getex(GetExExpiry::Keep), NOW), bulk("2"));
        assert_eq!(expiry(&store, "b"), Some(NOW + 1_000));
        assert_eq!(one(&store, getex(GetExExpiry::Persist), NOW), bulk("2"));
        assert_eq!(expiry(&store, "b"), None);
        assert_eq!(
            one(&store, getex(GetExExpiry::Set(Deadline::At(1))), NOW),
            bulk("2")
        );
        assert_eq!(payload(&store, "b", NOW), None);
        assert_eq!(
            one(
                &store,
                Op::GetEx {
                    key: b("nokey"),
                    expiry: GetExExpiry::Persist
                },
                NOW
            ),
            OpResult::Nil
        );
        assert_eq!(store.key_count(), 2);
    }

    #[test]
    fn counters() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let incr = |key: &str, delta| Op::IncrBy { key: b(key), delta };
        assert_eq!(one(&store, incr("n", 5), NOW), OpResult::Integer(5));
        assert_eq!(one(&store, incr("n", -7), NOW), OpResult::Integer(-2));
        assert_eq!(payload(&store, "n", NOW), Some(b("-2")));
        one(&store, set_op("max", "9223372036854775807"), NOW);
        assert_eq!(one(&store, incr("max", 1), NOW), OVERFLOW);
        one(&store, set_op("min", "-9223372036854775808"), NOW);
        assert_eq!(one(&store, incr("min", -1), NOW), OVERFLOW);
        assert_eq!(
            one(&store, incr("min", 0), NOW),
            OpResult::Integer(i64::MIN)
        );
        for bad in ["abc", " 1", "007", "+5", "", "1.5"] {
            one(&store, set_op("s", bad), NOW);
            assert_eq!(one(&store, incr("s", 1), NOW), NOT_AN_INTEGER, "{bad:?}");
        }
        // INCR keeps the TTL.
        one(
            &store,
            Op::Expire {
                key: b("n"),
                deadline: Deadline::After(500),
                condition: ExpireCondition::Always,
            },
            NOW,
        );
        assert_eq!(one(&store, incr("n", 1), NOW), OpResult::Integer(-1));
        assert_eq!(expiry(&store, "n"), Some(NOW + 500));

        let float = |key: &str, delta: &str| Op::IncrByFloat {
            key: b(key),
            delta: b(delta),
        };
        one(&store, set_op("f", "10.50"), NOW);
        assert_eq!(one(&store, float("f", "0.1"), NOW), bulk("10.6"));
        assert_eq!(one(&store, float("f", "-5"), NOW), bulk("5.6"));
        assert_eq!(one(&store, float("g", "1.5"), NOW), bulk("1.5"));
        assert_eq!(one(&store, float("f", "abc"), NOW), NOT_A_FLOAT);
        one(&store, set_op("s", "1.5x"), NOW);
        assert_eq!(one(&store, float("s", "1"), NOW), NOT_A_FLOAT);
        assert_eq!(one(&store, float("f", "inf"), NOW), NOT_FINITE);
        assert_eq!(payload(&store, "f", NOW), Some(b("5.6")));
    }

    #[test]
    fn append_and_setrange() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let append = |v: &str| Op::Append {
            key: b("k"),
            value: b(v),
        };
        assert_eq!(one(&store, append("abc"), NOW), OpResult::Integer(3));
        assert_eq!(one(&store, append("de"), NOW), OpResult::Integer(5));
        assert_eq!(payload(&store, "k", NOW), Some(b("abcde")));

        let setrange = |key: &str, offset, v: &str| Op::SetRange {
            key: b(key),
            offset,
            value: b(v),
        };
        one(&store, set_op("s", "hello"), NOW);
        assert_eq!(
            one(&store, setrange("s", 10, ""), NOW),
            OpResult::Integer(5)
        );
        assert_eq!(
            one(&store, setrange("s", 7, "W"), NOW),
            OpResult::Integer(8)
        );
        assert_eq!(
            payload(&store, "s", NOW),
            Some(Bytes::from_static(b"hello\0\0W"))
        );
        assert_eq!(
            one(&store, setrange("s", 1, "EL"), NOW),
            OpResult::Integer(8)
        );
        assert_eq!(
            payload(&store, "s", NOW),
            Some(Bytes::from_static(b"hELlo\0\0W"))
        );
        assert_eq!(
            one(&store, setrange("new", 0, ""), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(payload(&store, "new", NOW), None);
        assert_eq!(
            one(&store, setrange("new", 2, "x"), NOW),
            OpResult::Integer(3)
        );
        assert_eq!(
            payload(&store, "new", NOW),
            Some(Bytes::from_static(b"\0\0x"))
        );
        assert_eq!(
            one(&store, setrange("s", MAX_STRING_LEN, "x"), NOW),
            TOO_LONG
        );
        assert_eq!(one(&store, setrange("s", u64::MAX, "x"), NOW), TOO_LONG);
    }

    #[test]
    fn wrongtype_on_other_types() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        put_list(&store, "l");
        let ops = [
            Op::Set {
                key: b("l"),
                value: b("v"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Clear,
                get: true,
            },
            Op::GetDel(b("l")),
            Op::GetEx {
                key: b("l"),
                expiry: GetExExpiry::Persist,
            },
            Op::IncrBy {
                key: b("l"),
                delta: 1,
            },
            Op::IncrByFloat {
                key: b("l"),
                delta: b("abc"),
            },
            Op::Append {
                key: b("l"),
                value: b("x"),
            },
            Op::SetRange {
                key: b("l"),
                offset: 0,
                value: b("x"),
            },
        ];
        for op in ops {
            assert_eq!(one(&store, op.clone(), NOW), WRONGTYPE, "{op:?}");
        }
        assert_eq!(store.get(b"l", NOW).unwrap().unwrap().kind, Kind::List);
        // Commands that do not care about the type.
        assert_eq!(
            one(
                &store,
                Op::SetNx {
                    key: b("l"),
                    value: b("v")
                },
                NOW
            ),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(
                &store,
                Op::Expire {
                    key: b("l"),
                    deadline: Deadline::After(50),
                    condition: ExpireCondition::Always
                },
                NOW
            ),
            OpResult::Integer(1)
        );
        assert_eq!(store.get(b"l", NOW).unwrap().unwrap().kind, Kind::List);
        assert_eq!(
            one(
                &store,
                Op::Rename {
                    from: b("l"),
                    to: b("m"),
                    nx: false
                },
                NOW
            ),
            OpResult::Ok
        );
        let moved = store.get(b"m", NOW).unwrap().unwrap();
        assert_eq!((moved.kind, moved.expire_at), (Kind::List, Some(NOW + 50)));
        assert_eq!(one(&store, set_op("m", "v"), NOW), OpResult::Ok);
        assert_eq!(store.get(b"m", NOW).unwrap().unwrap().kind, Kind::String);
        assert_eq!(store.key_count(), 1);
    }

    #[test]
    fn del_rename_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        run(&store, &[set_op("a", "1"), set_op("b", "2")], NOW);
        assert_eq!(
            one(&store, Op::Del(vec![b("a"), b("a"), b("x")]), NOW),
            OpResult::Integer(1)
        );
        assert_eq!(store.key_count(), 1);

        let rename = |from: &str, to: &str, nx| Op::Rename {
            from: b(from),
            to: b(to),
            nx,
        };
        assert_eq!(one(&store, rename("x", "y", false), NOW), NO_SUCH_KEY);
        assert_eq!(one(&store, rename("x", "y", true), NOW), NO_SUCH_KEY);
        assert_eq!(one(&store, rename("b", "b", false), NOW), OpResult::Ok);
        assert_eq!(
            one(&store, rename("b", "b", true), NOW),
            OpResult::Integer(0)
        );
        one(&store, set_op("c", "3"), NOW);
        assert_eq!(
            one(&store, rename("b", "c", true), NOW),
            OpResult::Integer(0)
        );
        // RENAME moves the TTL and overwrites the destination's.
        one(
            &store,
            Op::Expire {
                key: b("b"),
                deadline: Deadline::After(700),
                condition: ExpireCondition::Always,
            },
            NOW,
        );
        assert_eq!(one(&store, rename("b", "c", false), NOW), OpResult::Ok);
        assert_eq!(payload(&store, "c", NOW), Some(b("2")));
        assert_eq!(expiry(&store, "c"), Some(NOW + 700));
        assert_eq!(payload(&store, "b", NOW), None);
        assert_eq!(store.key_count(), 1);
        assert_eq!(store.expired_keys(u64::MAX, 10).unwrap(), vec![b("c")]);
        assert_eq!(
            one(&store, rename("c", "d", true), NOW),
            OpResult::Integer(1)
        );
        assert_eq!(store.expired_keys(u64::MAX, 10).unwrap(), vec![b("d")]);

        assert_eq!(one(&store, Op::Persist(b("d")), NOW), OpResult::Integer(1));
        assert_eq!(one(&store, Op::Persist(b("d")), NOW), OpResult::Integer(0));
        assert_eq!(
            one(&store, Op::Persist(b("nokey")), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(
            store.expired_keys(u64::MAX, 10).unwrap(),
            Vec::<Bytes>::new()
        );
    }

    #[test]
    fn expire_conditions_follow_redis_7() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let expire = |deadline, condition| Op::Expire {
            key: b("k"),
            deadline,
            condition,
        };
        use ExpireCondition as C;
        assert_eq!(
            one(&store, expire(Deadline::After(10), C::Always), NOW),
            OpResult::Integer(0)
        );
        one(&store, set_op("k", "v"), NOW);
        // No expiry yet: XX and GT fail, NX and LT succeed.
        assert_eq!(
            one(&store, expire(Deadline::After(1_000), C::IfExpiry), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(&store, expire(Deadline::After(1_000), C::IfLater), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(
                &store,
                expire(Deadline::After(1_000), C::IfExpiryAndEarlier),
                NOW
            ),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(&store, expire(Deadline::After(1_000), C::IfNoExpiry), NOW),
            OpResult::Integer(1)
        );
        assert_eq!(expiry(&store, "k"), Some(NOW + 1_000));
        assert_eq!(
            one(&store, expire(Deadline::After(2_000), C::IfNoExpiry), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(&store, expire(Deadline::After(2_000), C::IfEarlier), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(&store, expire(Deadline::After(1_000), C::IfLater), NOW),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(&store, expire(Deadline::After(2_000), C::IfLater), NOW),
            OpResult::Integer(1)
        );
        assert_eq!(expiry(&store, "k"), Some(NOW + 2_000));
        assert_eq!(
            one(
                &store,
                expire(Deadline::At((NOW + 1_500) as i64), C::IfExpiryAndEarlier),
                NOW
            ),
            OpResult::Integer(1)
        );
        assert_eq!(expiry(&store, "k"), Some(NOW + 1_500));
        assert_eq!(store.expired_keys(NOW + 1_500, 10).unwrap(), vec![b("k")]);
        assert_eq!(
            store.expired_keys(NOW + 1_499, 10).unwrap(),
            Vec::<Bytes>::new()
        );
        // A time not after the stamp deletes the key and counts as success.
        assert_eq!(
            one(&store, expire(Deadline::After(0), C::Always), NOW),
            OpResult::Integer(1)
        );
        assert_eq!(payload(&store, "k", 0), None);
        assert_eq!(store.key_count(), 0);
        assert_eq!(
            store.expired_keys(u64::MAX, 10).unwrap(),
            Vec::<Bytes>::new()
        );
        one(&store, set_op("k", "v"), NOW);
        assert_eq!(
            one(&store, expire(Deadline::After(-1), C::IfEarlier), NOW),
            OpResult::Integer(1)
        );
        assert_eq!(payload(&store, "k", 0), None);
    }

    #[test]
    fn one_batch_sees_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut batch = store.begin();
        assert_eq!(batch.apply(&set_op("n", "41"), NOW).unwrap(), OpResult::Ok);
        assert_eq!(
            batch
                .apply(
                    &Op::IncrBy {
                        key: b("n"),
                        delta: 1
                    },
                    NOW
                )
                .unwrap(),
            OpResult::Integer(42)
        );
        assert_eq!(
            batch
                .apply(
                    &Op::Append {
                        key: b("n"),
                        value: b("!")
                    },
                    NOW
                )
                .unwrap(),
            OpResult::Integer(3)
        );
        assert_eq!(batch.apply(&Op::GetDel(b("n")), NOW).unwrap(), bulk("42!"));
        assert_eq!(
            batch
                .apply(
                    &Op::SetNx {
                        key: b("n"),
                        value: b("x")
                    },
                    NOW
                )
                .unwrap(),
            OpResult::Integer(1)
        );
        assert_eq!(batch.apply(&set_op("m", "1"), NOW).unwrap(), OpResult::Ok);
        batch.put_meta(b"applied", b"7".to_vec());
        batch.put_meta(b"applied", b"8".to_vec());
        // Nothing is visible before commit.
        assert_eq!(store.get(b"n", NOW).unwrap(), None);
        assert_eq!(store.meta(b"applied").unwrap(), None);
        assert_eq!(store.key_count(), 0);
        batch.commit().unwrap();
        assert_eq!(payload(&store, "n", NOW), Some(b("x")));
        assert_eq!(store.meta(b"applied").unwrap(), Some(b"8".to_vec()));
        assert_eq!(store.key_count(), 2);
    }

    #[test]
    fn flush_inside_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        run(&store, &[set_op("old", "1"), set_op("gone", "2")], NOW);
        let mut batch = store.begin();
        batch.apply(&set_op("before", "x"), NOW).unwrap();
        assert_eq!(batch.apply(&Op::FlushAll, NOW).unwrap(), OpResult::Ok);
        assert_eq!(
            batch.apply(&Op::GetDel(b("old")), NOW).unwrap(),
            OpResult::Nil
        );
        batch.apply(&set_op("after", "y"), NOW).unwrap();
        batch.apply(&Op::FlushAll, NOW).unwrap();
        batch.apply(&set_op("last", "z"), NOW).unwrap();
        batch.put_meta(b"applied", b"9".to_vec());
        // Readers still see the old generation until commit.
        assert_eq!(payload(&store, "old", NOW), Some(b("1")));
        batch.commit().unwrap();
        for gone in ["old", "gone", "before", "after"] {
            assert_eq!(payload(&store, gone, NOW), None, "{gone}");
        }
        assert_eq!(payload(&store, "last", NOW), Some(b("z")));
        assert_eq!(store.key_count(), 1);
        assert_eq!(store.meta(b"applied").unwrap(), Some(b"9".to_vec()));
        let names: Vec<String> = store
            .db
            .list_keyspace_names()
            .iter()
            .map(ToString::to_string)
            .filter(|n| n.starts_with("data_"))
            .collect();
        assert_eq!(
            names.len(),
            2,
            "only the current generation is left: {names:?}"
        );
    }

    #[test]
    fn expire_keys_spares_a_key_set_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let with_ttl = |key: &str, ms| Op::Set {
            key: b(key),
            value: b("v"),
            condition: SetCondition::Always,
            expiry: SetExpiry::Set(Deadline::After(ms)),
            get: false,
        };
        run(
            &store,
            &[with_ttl("a", 10), with_ttl("b", 10), with_ttl("c", 5_000)],
            NOW,
        );
        assert_eq!(store.key_count(), 3);
        let due = store.expired_keys(NOW + 10, 100).unwrap();
        let mut sorted = due.clone();
        sorted.sort();
        assert_eq!(sorted, vec![b("a"), b("b")]);
        assert_eq!(store.expired_keys(NOW + 10, 1).unwrap().len(), 1);
        // "b" is SET again (no TTL) before the proposal applies.
        one(&store, set_op("b", "fresh"), NOW + 11);
        let mut batch = store.begin();
        let removed = batch.apply(&Op::ExpireKeys(due), NOW + 12).unwrap();
        batch.commit().unwrap();
        assert_eq!(removed, OpResult::Integer(1));
        assert_eq!(payload(&store, "b", NOW + 12), Some(b("fresh")));
        assert_eq!(store.get(b"a", 0).unwrap(), None, "physically gone");
        assert_eq!(store.key_count(), 2);
        assert_eq!(
            store.expired_keys(NOW + 12, 100).unwrap(),
            Vec::<Bytes>::new()
        );
        // A key that has not expired yet at the stamp is kept too.
        assert_eq!(
            one(
                &store,
                Op::ExpireKeys(vec![b("c"), b("nokey")]),
                NOW + 4_999
            ),
            OpResult::Integer(0)
        );
        assert_eq!(
            one(&store, Op::ExpireKeys(vec![b("c")]), NOW + 5_000),
            OpResult::Integer(1)
        );
        assert_eq!(store.key_count(), 1);
    }

    /// Everything `key_count_through_every_path_survives_reopen` and more,
    /// in batches of several ops, on a store whose key filter answers and on
    /// one that reads every key: every answer and count must agree, and no
    /// stored key may be one the filter calls absent (nor after a reopen
    /// rebuilds it, nor after a snapshot install).
    #[test]
    fn the_key_filter_changes_no_answer() {
        let (dir_on, dir_off) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let filtered = open_store(dir_on.path());
        assert!(filtered.key_filter.wait_built(Duration::from_secs(10)));
        let without_filter = EngineOptions {
            key_filter: false,
            ..EngineOptions::default()
        };
        let reading = Store::open(
            without_filter.open_database(dir_off.path()).unwrap(),
            &without_filter,
        )
        .unwrap();

        let k = |i: usize| b(&format!("k{i}"));
        let set = |key: Bytes, condition, expiry| Op::Set {
            key,
            value: b("v"),
            condition,
            expiry,
            get: true,
        };
        let script: Vec<Vec<Op>> = vec![
            vec![Op::MSet((0..300).map(|i| (k(i), b("v"))).collect())],
            vec![
                set(k(1), SetCondition::IfAbsent, SetExpiry::Clear),
                set(k(400), SetCondition::IfAbsent, SetExpiry::Clear),
                set(k(401), SetCondition::IfPresent, SetExpiry::Clear),
                set(
                    k(2),
                    SetCondition::Always,
                    SetExpiry::Set(Deadline::At(NOW as i64 + 5)),
                ),
                Op::SetNx {
                    key: k(402),
                    value: b("x"),
                },
                Op::MSetNx(vec![(k(403), b("x")), (k(3), b("x"))]),
                Op::Del((10..60).map(k).collect()),
                Op::Del(vec![k(10), k(404)]),
                Op::GetDel(k(60)),
                Op::GetDel(k(405)),
            ],
            vec![
                Op::Rename {
                    from: k(61),
                    to: k(406),
                    nx: false,
                },
                Op::Rename {
                    from: k(62),
                    to: k(63),
                    nx: true,
                },
                Op::Rename {
                    from: k(64),
                    to: k(65),
                    nx: false,
                },
                Op::Expire {
                    key: k(66),
                    deadline: Deadline::At(1),
                    condition: ExpireCondition::Always,
                },
                Op::IncrBy {
                    key: k(407),
                    delta: 3,
                },
                Op::IncrByFloat {
                    key: k(408),
                    delta: b("1.5"),
                },
                Op::Append {
                    key: k(409),
                    value: b("x"),
                },
                Op::SetRange {
                    key: k(410),
                    offset: 2,
                    value: b("x"),
                },
                Op::GetEx {
                    key: k(67),
                    expiry: GetExExpiry::Set(Deadline::At(1)),
                },
                Op::Persist(k(2)),
            ],
            // The short expiry of k(70) has passed when the leader asks.
            vec![set(
                k(70),
                SetCondition::Always,
                SetExpiry::Set(Deadline::At(NOW as i64 + 10)),
            )],
            vec![Op::Batch(vec![
                Op::Del(vec![k(71)]),
                Op::MSet(vec![(k(71), b("again")), (k(411), b("new"))]),
                Op::Del(vec![k(411)]),
            ])],
            vec![Op::ExpireKeys(vec![k(70), k(72)])],
            vec![Op::Batch(vec![
                set(k(412), SetCondition::Always, SetExpiry::Clear),
                Op::FlushAll,
                set(k(0), SetCondition::Always, SetExpiry::Clear),
                set(k(413), SetCondition::IfAbsent, SetExpiry::Clear),
            ])],
            vec![Op::MSet((0..50).map(|i| (k(i * 3), b("w"))).collect())],
            vec![Op::Del((0..100).map(k).collect())],
        ];
        let mut now = NOW;
        for ops in &script {
            now += 2;
            let run_on = |store: &Store| {
                let mut batch = store.begin();
                let results: Vec<OpResult> =
                    ops.iter().map(|op| batch.apply(op, now).unwrap()).collect();
                batch.commit().unwrap();
                results
            };
            assert_eq!(run_on(&filtered), run_on(&reading), "ops {ops:?}");
            assert_eq!(filtered.key_count(), reading.key_count(), "after {ops:?}");
            // One fingerprint per stored key: deletions are not forgotten.
            let count = usize::try_from(filtered.key_count()).unwrap();
            assert_eq!(filtered.key_filter.len(), Some(count));
            assert_eq!(filtered.expires_count(), reading.expires_count());
        }
        // Every key and value (and expiry) as of the last batch.
        let held = |store: &Store| {
            let mut keys = store.keys(b"*", now).unwrap();
            keys.sort();
            keys.into_iter()
                .map(|key| {
                    let value = store.get(&key, now).unwrap();
                    (key, value)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(held(&filtered), held(&reading));
        assert_eq!(reading.key_filter_bytes(), 0, "storage.key_filter = false");
        let never_absent = |store: &Store| {
            for (key, _) in held(store) {
                assert!(
                    !store.key_filter.certainly_absent(key_hash(&key)),
                    "{key:?}"
                );
            }
        };
        never_absent(&filtered);

        // A reopen rebuilds the filter from disk; an install from a stream.
        drop(filtered);
        let reopened = open_store(dir_on.path());
        assert!(reopened.key_filter.wait_built(Duration::from_secs(10)));
        never_absent(&reopened);
        let count = usize::try_from(reopened.key_count()).unwrap();
        assert_eq!(reopened.key_filter.len(), Some(count));
        assert!(reopened.key_filter.certainly_absent(key_hash(b"k0")));
        let mut stream = Vec::new();
        let meta = reopened.export(&mut stream).unwrap();
        let installed_dir = tempfile::tempdir().unwrap();
        let installed = open_store(installed_dir.path());
        installed.import(&mut stream.as_slice(), meta).unwrap();
        assert!(installed.key_filter.wait_built(Duration::from_secs(10)));
        never_absent(&installed);
        assert_eq!(held(&installed), held(&reading));
    }

    #[test]
    fn key_count_through_every_path_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            let pairs = (0..50).map(|i| (b(&format!("k{i}")), b("v"))).collect();
            run(&store, &[Op::MSet(pairs)], NOW);
            assert_eq!(store.key_count(), 50);
            run(
                &store,
                &[
                    Op::Del(vec![b("k0"), b("k1")]),
                    Op::GetDel(b("k2")),
                    Op::Rename {
                        from: b("k3"),
                        to: b("k4"),
                        nx: false,
                    },
                    Op::Rename {
                        from: b("k5"),
                        to: b("moved"),
                        nx: true,
                    },
                    Op::Expire {
                        key: b("k6"),
                        deadline: Deadline::At(1),
                        condition: ExpireCondition::Always,
                    },
                    Op::IncrBy {
                        key: b("counter"),
                        delta: 1,
                    },
                    Op::Append {
                        key: b("appended"),
                        value: b("x"),
                    },
                ],
                NOW,
            );
            // 50 - 2 - 1 - 1 (rename over k4) - 1 (k6) + 2 (counter, appended)
            assert_eq!(store.key_count(), 47);
        }
        let store = open_store(dir.path());
        assert_eq!(store.key_count(), 47);
        assert_eq!(store.keys(b"*", NOW).unwrap().len(), 47);
    }

    /// Asserts `expires_count`, and that it agrees with the expiry index.
    fn assert_expires(store: &Store, expected: u64, what: &str) {
        assert_eq!(store.expires_count(), expected, "{what}");
        let indexed = store.expired_keys(u64::MAX, usize::MAX).unwrap().len();
        assert_eq!(indexed as u64, expected, "{what}: expiry index");
    }

    #[test]
    fn expires_count_through_every_path_survives_reopen() {
        let set_ex = |key: &str, ms| Op::Set {
            key: b(key),
            value: b("v"),
            condition: SetCondition::Always,
            expiry: SetExpiry::Set(Deadline::After(ms)),
            get: false,
        };
        let expire = |key: &str, ms| Op::Expire {
            key: b(key),
            deadline: Deadline::After(ms),
            condition: ExpireCondition::Always,
        };
        let rename = |from: &str, to: &str| Op::Rename {
            from: b(from),
            to: b(to),
            nx: false,
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open_store(dir.path());
            assert_expires(&store, 0, "empty");

            run(&store, &[set_ex("a", 1_000), set_ex("b", 1_000)], NOW);
            run(&store, &[set_op("c", "1"), set_op("d", "1")], NOW);
            assert_expires(&store, 2, "SET EX");
            assert_eq!(store.key_count(), 4);
            // A new TTL on a key that has one changes nothing.
            one(&store, set_ex("a", 2_000), NOW);
            one(&store, expire("a", 3_000), NOW);
            assert_expires(&store, 2, "TTL replaced");

            assert_eq!(one(&store, Op::Persist(b("a")), NOW), OpResult::Integer(1));
            assert_expires(&store, 1, "PERSIST");
            assert_eq!(one(&store, Op::Persist(b("a")), NOW), OpResult::Integer(0));
            assert_expires(&store, 1, "PERSIST without a TTL");

            assert_eq!(one(&store, expire("c", 1_000), NOW), OpResult::Integer(1));
            assert_expires(&store, 2, "EXPIRE on an existing key");
            assert_eq!(
                one(&store, expire("nokey", 1_000), NOW),
                OpResult::Integer(0)
            );
            assert_expires(&store, 2, "EXPIRE on a missing key");

            // SET without KEEPTTL clears the TTL, with KEEPTTL keeps it;
            // writes that keep the TTL (INCR, APPEND) keep the count.
            one(&store, set_op("c", "2"), NOW);
            assert_expires(&store, 1, "SET clears the TTL");
            one(
                &store,
                Op::Set {
                    key: b("b"),
                    value: b("7"),
                    condition: SetCondition::Always,
                    expiry: SetExpiry::Keep,
                    get: false,
                },
                NOW,
            );
            run(
                &store,
                &[
                    Op::IncrBy {
                        key: b("b"),
                        delta: 1,
                    },
                    Op::Append {
                        key: b("b"),
                        value: b("0"),
                    },
                ],
                NOW,
            );
            assert_expires(&store, 1, "KEEPTTL, INCR, APPEND");
            assert_eq!(expiry(&store, "b"), Some(NOW + 1_000));

            // GETEX sets and removes a TTL.
            one(
                &store,
                Op::GetEx {
                    key: b("d"),
                    expiry: GetExExpiry::Set(Deadline::After(1_000)),
                },
                NOW,
            );
            assert_expires(&store, 2, "GETEX EX");
            one(
                &store,
                Op::GetEx {
                    key: b("d"),
                    expiry: GetExExpiry::Persist,
                },
                NOW,
            );
            assert_expires(&store, 1, "GETEX PERSIST");

            // RENAME moves the TTL: onto a key without one, then a key
            // without a TTL over one with a TTL.
            one(&store, rename("b", "e"), NOW);
            assert_expires(&store, 1, "RENAME with a TTL");
            assert_eq!(expiry(&store, "e"), Some(NOW + 1_000));
            one(&store, set_ex("f", 1_000), NOW);
            assert_expires(&store, 2, "SET EX f");
            one(&store, rename("e", "c"), NOW);
            assert_expires(&store, 2, "RENAME onto a key without a TTL");
            one(&store, rename("a", "f"), NOW);
            assert_expires(&store, 1, "RENAME over a key with a TTL");
            assert_eq!(expiry(&store, "f"), None);

            // Deletion of a key with a TTL: DEL, GETDEL, a past EXPIRE, the
            // expiry proposals, and the lazy deletion of an op touching it.
            run(
                &store,
                &[set_ex("g", 1_000), set_ex("h", 1_000), set_ex("i", 10)],
                NOW,
            );
            run(&store, &[set_ex("j", 10), set_ex("k", 1_000)], NOW);
            assert_expires(&store, 6, "more TTLs");
            one(&store, Op::Del(vec![b("g"), b("f")]), NOW);
            assert_expires(&store, 5, "DEL");
            one(&store, Op::GetDel(b("h")), NOW);
            assert_expires(&store, 4, "GETDEL");
            one(&store, expire("k", 0), NOW);
            assert_expires(&store, 3, "EXPIRE in the past");
            assert_eq!(
                one(&store, Op::ExpireKeys(vec![b("i")]), NOW + 10),
                OpResult::Integer(1)
            );
            assert_expires(&store, 2, "expiry deletion");
            assert_eq!(
                one(
                    &store,
                    Op::SetNx {
                        key: b("j"),
                        value: b("plain")
                    },
                    NOW + 10
                ),
                OpResult::Integer(1)
            );
            assert_expires(&store, 1, "lazily deleted, then set again");

            // Ops on one key in one batch count once, by the net effect.
            let mut batch = store.begin();
            batch.apply(&set_ex("m", 1_000), NOW).unwrap();
            batch.apply(&Op::Persist(b("m")), NOW).unwrap();
            batch.apply(&set_ex("n", 1_000), NOW).unwrap();
            batch.apply(&Op::Del(vec![b("n")]), NOW).unwrap();
            batch.apply(&set_ex("n", 1_000), NOW).unwrap();
            batch.apply(&expire("c", 1_000), NOW).unwrap();
            batch.apply(&set_op("c", "plain"), NOW).unwrap();
            batch.apply(&expire("d", 1_000), NOW).unwrap();
            batch.apply(&Op::Persist(b("d")), NOW).unwrap();
            batch.apply(&expire("d", 2_000), NOW).unwrap();
            // Not visible before commit.
            assert_expires(&store, 1, "uncommitted");
            batch.commit().unwrap();
            assert_expires(&store, 2, "one batch");
        }
        let store = open_store(dir.path());
        assert_expires(&store, 2, "reopen");

        // FLUSHALL resets it; a TTL set after it in the same batch counts.
        let mut batch = store.begin();
        batch.apply(&set_ex("before", 1_000), NOW).unwrap();
        batch.apply(&Op::FlushAll, NOW).unwrap();
        batch.apply(&set_ex("after", 1_000), NOW).unwrap();
        batch.apply(&set_op("plain", "1"), NOW).unwrap();
        batch.commit().unwrap();
        assert_expires(&store, 1, "FLUSHALL then SET EX");
        one(&store, Op::FlushAll, NOW);
        assert_expires(&store, 0, "FLUSHALL");
        assert_eq!(store.key_count(), 0);
        one(&store, set_ex("z", 1_000), NOW);
        drop(store);
        let store = open_store(dir.path());
        assert_expires(&store, 1, "reopen after FLUSHALL");
    }

    #[test]
    fn oversized_keys_are_refused_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let long = Bytes::from(vec![b'k'; MAX_KEY_LEN + 1]);
        let op = Op::MSet(vec![(long.clone(), b("v"))]);
        assert_eq!(one(&store, op, NOW), KEY_TOO_LONG);
        let fits = Bytes::from(vec![b'k'; MAX_KEY_LEN]);
        let op = Op::Set {
            key: fits.clone(),
            value: b("v"),
            condition: SetCondition::Always,
            expiry: SetExpiry::Set(Deadline::After(10)),
            get: false,
        };
        assert_eq!(one(&store, op, NOW), OpResult::Ok);
        assert_eq!(store.get(&fits, NOW).unwrap().unwrap().payload, b("v"));
        assert_eq!(store.get(&long, NOW).unwrap(), None);
    }

    #[test]
    fn integers_format_without_allocating() {
        let mut buf = itoa_buffer();
        for n in [0, 7, -7, 1234567890, i64::MAX, i64::MIN] {
            assert_eq!(format_i64(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
