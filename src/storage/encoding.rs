//! The on-disk layout of keys and values in a data generation.
//!
//! Data key: `xxh3_64(user key)` big-endian, then the user key. Ordering the
//! keyspace by hash first is what makes SCAN's cursor a plain integer (the
//! next hash to visit) that stays valid however the keyspace changes, and
//! what lets RANDOMKEY seek to a random point instead of counting.
//!
//! Value: a type tag byte, the expire-at time as unix milliseconds u64
//! big-endian (0 = no expiry), then the payload (the string itself; other
//! types will define their own payloads behind their own tags).
//!
//! Expiry index key: expire-at big-endian, then the user key; its value is
//! empty. Scanning it from the start yields keys in expiry order.

use xxhash_rust::xxh3::xxh3_64;

use super::StorageError;

/// Length of the value header: tag byte plus expire-at.
pub const VALUE_HEADER_LEN: usize = 9;

/// Length of the hash prefix of a data key.
pub const HASH_LEN: usize = 8;

/// The type of a stored value, as TYPE reports it. Only strings are written
/// today; the other tags are reserved so TYPE and WRONGTYPE already know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A string.
    String = 1,
    /// A list.
    List = 2,
    /// A set.
    Set = 3,
    /// A sorted set.
    ZSet = 4,
    /// A hash.
    Hash = 5,
    /// A stream.
    Stream = 6,
}

impl Kind {
    /// The name TYPE replies and SCAN's TYPE option matches.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::Hash => "hash",
            Kind::Stream => "stream",
        }
    }

    const fn from_tag(tag: u8) -> Option<Kind> {
        Some(match tag {
            1 => Kind::String,
            2 => Kind::List,
            3 => Kind::Set,
            4 => Kind::ZSet,
            5 => Kind::Hash,
            6 => Kind::Stream,
            _ => return None,
        })
    }
}

/// The decoded fixed part of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The value's type.
    pub kind: Kind,
    /// Unix milliseconds after which the key is gone; 0 = never.
    pub expire_at: u64,
}

impl Header {
    /// True when the key counts as absent at `now_ms`.
    #[must_use]
    pub const fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at != 0 && self.expire_at <= now_ms
    }

    /// The expiry, if any.
    #[must_use]
    pub const fn expiry(&self) -> Option<u64> {
        if self.expire_at == 0 {
            None
        } else {
            Some(self.expire_at)
        }
    }
}

/// The hash that orders data keys (and that SCAN cursors count in).
#[must_use]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Appends the data key for `key` to `out`.
pub fn push_data_key(out: &mut Vec<u8>, key: &[u8]) {
    out.reserve(HASH_LEN + key.len());
    out.extend_from_slice(&key_hash(key).to_be_bytes());
    out.extend_from_slice(key);
}

/// The data key for `key`, freshly allocated.
#[must_use]
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_data_key(&mut out, key);
    out
}

/// Runs `f` on the data key for `key`, on the stack for ordinary key sizes
/// (reads are the hot path and need no allocation for this).
pub fn with_data_key<R>(key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const INLINE: usize = 120;
    if key.len() <= INLINE {
        let mut buf = [0u8; HASH_LEN + INLINE];
        let len = HASH_LEN + key.len();
        buf[..HASH_LEN].copy_from_slice(&key_hash(key).to_be_bytes());
        buf[HASH_LEN..len].copy_from_slice(key);
        f(&buf[..len])
    } else {
        f(&data_key(key))
    }
}

/// Splits a data key into its hash and user key.
///
/// # Errors
/// [`StorageError::Corrupt`] when the key is shorter than its hash prefix.
pub fn split_data_key(raw: &[u8]) -> Result<(u64, &[u8]), StorageError> {
    let (hash, key) = raw
        .split_first_chunk::<HASH_LEN>()
        .ok_or(StorageError::Corrupt(
            "data key shorter than its hash prefix",
        ))?;
    Ok((u64::from_be_bytes(*hash), key))
}

/// Encodes a value: header then payload.
#[must_use]
pub fn encode_value(kind: Kind, expire_at: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_HEADER_LEN + payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&expire_at.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a stored value into its header and payload.
///
/// # Errors
/// [`StorageError::Corrupt`] for a value shorter than its header or with an
/// unknown type tag.
pub fn decode_value(raw: &[u8]) -> Result<(Header, &[u8]), StorageError> {
    let (&tag, rest) = raw
        .split_first()
        .ok_or(StorageError::Corrupt("empty value"))?;
    let kind = Kind::from_tag(tag).ok_or(StorageError::Corrupt("unknown value type tag"))?;
    let (expire_at, payload) = rest
        .split_first_chunk::<8>()
        .ok_or(StorageError::Corrupt("value shorter than its header"))?;
    Ok((
        Header {
            kind,
            expire_at: u64::from_be_bytes(*expire_at),
        },
        payload,
    ))
}

/// The expiry index key for `key` expiring at `expire_at`.
#[must_use]
pub fn expiry_key(expire_at: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&expire_at.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits an expiry index key into its time and user key.
///
/// # Errors
/// [`StorageError::Corrupt`] when the key is shorter than its time prefix.
pub fn split_expiry_key(raw: &[u8]) -> Result<(u64, &[u8]), StorageError> {
    let (at, key) = raw.split_first_chunk::<8>().ok_or(StorageError::Corrupt(
        "expiry index key shorter than its time",
    ))?;
    Ok((u64::from_be_bytes(*at), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for (kind, at, payload) in [
            (Kind::String, 0u64, &b""[..]),
            (Kind::String, 1_700_000_000_123, &b"hello\x00\xff"[..]),
            (Kind::Hash, u64::MAX, &b"x"[..]),
        ] {
            let raw = encode_value(kind, at, payload);
            assert_eq!(raw.len(), VALUE_HEADER_LEN + payload.len());
            let (header, back) = decode_value(&raw).unwrap();
            assert_eq!(
                header,
                Header {
                    kind,
                    expire_at: at
                }
            );
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn bad_values_are_corrupt_not_panics() {
        assert!(matches!(decode_value(b""), Err(StorageError::Corrupt(_))));
        assert!(matches!(
            decode_value(&[1, 0, 0]),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            decode_value(&[99, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn data_keys_carry_hash_then_key() {
        let long = vec![b'a'; 500];
        for key in [&b""[..], b"k", &long] {
            let owned = data_key(key);
            with_data_key(key, |inline| assert_eq!(inline, &owned[..]));
            let (hash, back) = split_data_key(&owned).unwrap();
            assert_eq!(hash, key_hash(key));
            assert_eq!(back, key);
        }
        assert!(split_data_key(b"short").is_err());
    }

    #[test]
    fn expiry_keys_sort_by_time() {
        let a = expiry_key(5, b"zzz");
        let b = expiry_key(256, b"aaa");
        assert!(a < b);
        assert_eq!(split_expiry_key(&b).unwrap(), (256, &b"aaa"[..]));
    }

    #[test]
    fn expiry_header_semantics() {
        let h = Header {
            kind: Kind::String,
            expire_at: 100,
        };
        assert!(!h.is_expired(99));
        assert!(h.is_expired(100));
        assert_eq!(h.expiry(), Some(100));
        let none = Header {
            kind: Kind::String,
            expire_at: 0,
        };
        assert!(!none.is_expired(u64::MAX));
        assert_eq!(none.expiry(), None);
    }
}
