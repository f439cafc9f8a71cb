//! The replicated operation ([`Op`]) and the outcome of applying it
//! ([`OpResult`]).
//!
//! A write command's parse function (in `command::string` / `command::keys`)
//! turns its arguments into one `Op`; the cluster layer stamps it with the
//! leader's clock and appends it to the Raft log (postcard-encoded), and every
//! node hands the committed entry to `storage::ApplyBatch::apply`, which
//! returns the `OpResult` that goes back to the client as a
//! [`Reply`](crate::server::Reply).
//!
//! An `Op` records what the client asked, not what the leader saw: relative
//! expiries (EX, PX, EXPIRE) stay relative and are resolved against the
//! stamped time at apply, so every replica reaches the same absolute time.
//! Everything here must stay encodable by postcard: plain enums and structs,
//! no untagged or self-describing serde features.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::server::Reply;

/// When a key should expire, as the client gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deadline {
    /// Milliseconds after the leader's stamp (EX, PX, EXPIRE, PEXPIRE).
    /// May be zero or negative for the EXPIRE family: the key is then
    /// deleted at apply.
    After(i64),
    /// Unix time in milliseconds (EXAT, PXAT, EXPIREAT, PEXPIREAT).
    At(i64),
}

impl Deadline {
    /// The absolute unix time in milliseconds this deadline names, given the
    /// entry's stamped time. Saturates instead of overflowing: parse
    /// functions already refuse deadlines that overflow on the proposer's
    /// clock, so saturation only absorbs clock skew between nodes.
    #[must_use]
    pub fn resolve(self, now_ms: u64) -> i64 {
        match self {
            Deadline::After(ms) => i64::try_from(now_ms).unwrap_or(i64::MAX).saturating_add(ms),
            Deadline::At(ms) => ms,
        }
    }
}

/// SET's existence condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    /// No condition.
    Always,
    /// NX: only if the key does not exist.
    IfAbsent,
    /// XX: only if the key exists.
    IfPresent,
}

/// What SET does with the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetExpiry {
    /// No option: the new value has no expiry.
    Clear,
    /// KEEPTTL: keep the expiry the key had.
    Keep,
    /// EX, PX, EXAT or PXAT.
    Set(Deadline),
}

/// What GETEX does with the key's time to live (only options that change it
/// are proposed; plain GETEX reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GetExExpiry {
    /// No option: leave it (kept so GETEX can always be proposed if needed).
    Keep,
    /// PERSIST: remove it.
    Persist,
    /// EX, PX, EXAT or PXAT.
    Set(Deadline),
}

/// The EXPIRE family's Redis 7 condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireCondition {
    /// No option.
    Always,
    /// NX: only if the key has no expiry.
    IfNoExpiry,
    /// XX: only if the key has an expiry.
    IfExpiry,
    /// GT: only if the new expiry is later (no expiry counts as infinite,
    /// so GT also implies XX).
    IfLater,
    /// LT: only if the new expiry is earlier (no expiry counts as infinite).
    IfEarlier,
    /// XX and LT together.
    IfExpiryAndEarlier,
}

/// One replicated write. Keys and values are binary-safe [`Bytes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// SET (and SETEX, PSETEX, GETSET). Replies OK, nil when the condition
    /// fails, or the old value with `get`.
    Set {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// NX / XX.
        condition: SetCondition,
        /// EX PX EXAT PXAT KEEPTTL.
        expiry: SetExpiry,
        /// GET: reply with the old value.
        get: bool,
    },
    /// SETNX: replies 1 when set, 0 when the key existed.
    SetNx {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// MSET: sets every pair, clearing expiries.
    MSet(Vec<(Bytes, Bytes)>),
    /// MSETNX: sets every pair only if none of the keys exists.
    MSetNx(Vec<(Bytes, Bytes)>),
    /// GETDEL.
    GetDel(Bytes),
    /// GETEX with an option that changes the expiry.
    GetEx {
        /// The key.
        key: Bytes,
        /// What to do with its expiry.
        expiry: GetExExpiry,
    },
    /// INCR, DECR, INCRBY, DECRBY.
    IncrBy {
        /// The key.
        key: Bytes,
        /// Signed increment.
        delta: i64,
    },
    /// INCRBYFLOAT. The increment travels as the client's text (already
    /// validated) so apply can add it in exact decimal where possible.
    IncrByFloat {
        /// The key.
        key: Bytes,
        /// The increment as sent.
        delta: Bytes,
    },
    /// APPEND.
    Append {
        /// The key.
        key: Bytes,
        /// Bytes to append.
        value: Bytes,
    },
    /// SETRANGE (offset already checked non-negative and within the size
    /// limit).
    SetRange {
        /// The key.
        key: Bytes,
        /// Byte offset.
        offset: u64,
        /// Bytes to write there.
        value: Bytes,
    },
    /// DEL and UNLINK: replies the number of keys removed.
    Del(Vec<Bytes>),
    /// RENAME (`nx` false) and RENAMENX (`nx` true).
    Rename {
        /// Source key.
        from: Bytes,
        /// Destination key.
        to: Bytes,
        /// RENAMENX.
        nx: bool,
    },
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT.
    Expire {
        /// The key.
        key: Bytes,
        /// The new expiry; a time not after the stamp deletes the key.
        deadline: Deadline,
        /// NX XX GT LT.
        condition: ExpireCondition,
    },
    /// PERSIST.
    Persist(Bytes),
    /// FLUSHALL and FLUSHDB.
    FlushAll,
    /// The leader's proposal to delete keys it found expired. Apply deletes
    /// only those still expired at the stamped time, so a key SET again in
    /// between survives.
    ExpireKeys(Vec<Bytes>),
    /// Several writes in one log entry, applied in the order given, all or
    /// none: a connection's consecutive pipelined writes (so a retry after a
    /// refused proposal retries all of them or none), and the leader's
    /// proposer combining writes that arrived together (`proposer.rs`).
    /// Replies with an array of each op's result. Never nested.
    Batch(Vec<Op>),
}

impl Op {
    /// The bytes of keys and values the write carries: what it adds to a
    /// log entry, less a few bytes of framing per field.
    #[must_use]
    pub fn payload_len(&self) -> usize {
        match self {
            Op::Set { key, value, .. }
            | Op::SetNx { key, value }
            | Op::Append { key, value }
            | Op::SetRange { key, value, .. }
            | Op::IncrByFloat { key, delta: value } => key.len() + value.len(),
            Op::GetDel(key)
            | Op::GetEx { key, .. }
            | Op::IncrBy { key, .. }
            | Op::Expire { key, .. }
            | Op::Persist(key) => key.len(),
            Op::Rename { from, to, .. } => from.len() + to.len(),
            Op::MSet(pairs) | Op::MSetNx(pairs) => {
                pairs.iter().map(|(k, v)| k.len() + v.len()).sum()
            }
            Op::Del(keys) | Op::ExpireKeys(keys) => keys.iter().map(Bytes::len).sum(),
            Op::FlushAll => 0,
            Op::Batch(ops) => ops.iter().map(Op::payload_len).sum(),
        }
    }

    /// How many keys the write names (a trace attribute).
    #[must_use]
    pub fn key_count(&self) -> usize {
        match self {
            Op::Set { .. }
            | Op::SetNx { .. }
            | Op::GetDel(_)
            | Op::GetEx { .. }
            | Op::IncrBy { .. }
            | Op::IncrByFloat { .. }
            | Op::Append { .. }
            | Op::SetRange { .. }
            | Op::Expire { .. }
            | Op::Persist(_) => 1,
            Op::Rename { .. } => 2,
            Op::MSet(pairs) | Op::MSetNx(pairs) => pairs.len(),
            Op::Del(keys) | Op::ExpireKeys(keys) => keys.len(),
            Op::FlushAll => 0,
            Op::Batch(ops) => ops.iter().map(Op::key_count).sum(),
        }
    }
}

/// The deterministic outcome of applying an [`Op`]: every replica computes
/// the same one. Only the node that received the command turns it into a
/// reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpResult {
    /// `+OK`.
    Ok,
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// The null bulk string.
    Nil,
    /// An error reply, prefix included (`ERR ...`, `WRONGTYPE ...`).
    Error(Cow<'static, str>),
    /// An array of results.
    Array(Vec<OpResult>),
}

impl OpResult {
    /// An error result from a static message (no allocation).
    #[must_use]
    pub const fn error(msg: &'static str) -> Self {
        OpResult::Error(Cow::Borrowed(msg))
    }

    /// True for error results.
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(self, OpResult::Error(_))
    }
}

impl From<OpResult> for Reply {
    fn from(result: OpResult) -> Self {
        match result {
            OpResult::Ok => Reply::ok(),
            OpResult::Integer(n) => Reply::Integer(n),
            OpResult::Bulk(b) => Reply::Bulk(b),
            OpResult::Nil => Reply::Null,
            OpResult::Error(Cow::Borrowed(msg)) => Reply::Error(Bytes::from_static(msg.as_bytes())),
            OpResult::Error(Cow::Owned(msg)) => Reply::Error(Bytes::from(msg)),
            OpResult::Array(items) => Reply::Array(items.into_iter().map(Reply::from).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(op: &Op) -> Op {
        let encoded = postcard::to_allocvec(op).unwrap();
        postcard::from_bytes(&encoded).unwrap()
    }

    #[test]
    fn every_op_shape_survives_postcard() {
        let k = Bytes::from_static(b"k\x00\xff");
        let v = Bytes::from_static(b"v\r\n");
        let ops = vec![
            Op::Set {
                key: k.clone(),
                value: v.clone(),
                condition: SetCondition::IfAbsent,
                expiry: SetExpiry::Set(Deadline::After(1500)),
                get: true,
            },
            Op::SetNx {
                key: k.clone(),
                value: v.clone(),
            },
            Op::MSet(vec![(k.clone(), v.clone())]),
            Op::MSetNx(vec![(k.clone(), v.clone())]),
            Op::GetDel(k.clone()),
            Op::GetEx {
                key: k.clone(),
                expiry: GetExExpiry::Set(Deadline::At(-3)),
            },
            Op::IncrBy {
                key: k.clone(),
                delta: i64::MIN,
            },
            Op::IncrByFloat {
                key: k.clone(),
                delta: Bytes::from_static(b"1.5e3"),
            },
            Op::Append {
                key: k.clone(),
                value: v.clone(),
            },
            Op::SetRange {
                key: k.clone(),
                offset: 7,
                value: v.clone(),
            },
            Op::Del(vec![k.clone(), v.clone()]),
            Op::Rename {
                from: k.clone(),
                to: v.clone(),
                nx: true,
            },
            Op::Expire {
                key: k.clone(),
                deadline: Deadline::After(-5),
                condition: ExpireCondition::IfLater,
            },
            Op::Persist(k.clone()),
            Op::FlushAll,
            Op::ExpireKeys(vec![k]),
        ];
        for op in &ops {
            assert_eq!(&round_trip(op), op);
        }
    }

    #[test]
    fn results_survive_postcard_and_become_replies() {
        let results = vec![
            OpResult::Ok,
            OpResult::Integer(-7),
            OpResult::Bulk(Bytes::from_static(b"x")),
            OpResult::Nil,
            OpResult::error("ERR syntax error"),
            OpResult::Array(vec![OpResult::Integer(1), OpResult::Nil]),
        ];
        for r in &results {
            let encoded = postcard::to_allocvec(r).unwrap();
            let back: OpResult = postcard::from_bytes(&encoded).unwrap();
            assert_eq!(&back, r);
        }
        assert_eq!(Reply::from(OpResult::Ok), Reply::ok());
        assert_eq!(Reply::from(OpResult::Nil), Reply::Null);
        assert_eq!(
            Reply::from(OpResult::error("ERR no such key")),
            Reply::error("ERR no such key")
        );
        assert_eq!(
            Reply::from(OpResult::Error(Cow::Owned("WRONGTYPE x".to_owned()))),
            Reply::error("WRONGTYPE x")
        );
        assert_eq!(
            Reply::from(OpResult::Array(vec![OpResult::Integer(2)])),
            Reply::Array(vec![Reply::Integer(2)])
        );
    }

    #[test]
    fn deadlines_resolve_against_the_stamp() {
        assert_eq!(Deadline::After(500).resolve(1_000), 1_500);
        assert_eq!(Deadline::After(-2_000).resolve(1_000), -1_000);
        assert_eq!(Deadline::At(42).resolve(1_000), 42);
        assert_eq!(Deadline::After(i64::MAX).resolve(10), i64::MAX);
    }
}
