//! Streaming the whole data set out of the store and into another one, for
//! Raft snapshots (and backups).
//!
//! [`Store::export`] writes every stored pair from one consistent fjall
//! snapshot, in storage order, and returns the caller's metadata as seen in
//! that same snapshot, so the metadata (last applied log id) describes
//! exactly the data written. [`Store::import`] loads such a stream into a
//! fresh generation in bounded batches, checks the trailer, and only then
//! switches to it in one batch together with the new metadata: a truncated
//! or corrupt stream, or a crash midway, leaves the old state current.
//!
//! Stream format (integers little-endian):
//!
//! ```text
//! "RAFTISD1"
//! { key_len: u32, key, value_len: u32, value }*     key: the user key
//!                                                   value: header + payload
//! 0xFFFF_FFFF, record_count: u64, xxh3_64 of every byte before it: u64
//! ```
//!
//! Values travel in their stored encoding (type tag, expire-at, payload), so
//! expiries stay absolute and the importing node needs no clock.

use std::io::{BufReader, BufWriter, Read, Write};

use fjall::{Readable, Snapshot};
use xxhash_rust::xxh3::Xxh3;

use super::encoding::{data_key, decode_value, expiry_key, split_data_key, VALUE_HEADER_LEN};
use super::{
    caller_meta_key, decode_u64, Generation, MetaPairs, StorageError, Store, CALLER_META,
    COUNT_KEY, EXPIRES_KEY, GENERATION_KEY, MAX_KEY_LEN, MAX_STRING_LEN,
};

const MAGIC: &[u8; 8] = b"RAFTISD1";
/// A key length no key can have, marking the trailer.
const END_OF_RECORDS: u32 = u32::MAX;
/// Bytes of records per import batch: bounded memory whatever the snapshot
/// size.
const IMPORT_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Largest value a stream may carry (a maximal string and its header).
const MAX_VALUE_LEN: u64 = MAX_STRING_LEN + VALUE_HEADER_LEN as u64;

impl Store {
    /// Writes every stored pair to `out` from one consistent snapshot and
    /// returns the caller's metadata pairs (as given to
    /// [`put_meta`](super::ApplyBatch::put_meta)) from that same snapshot.
    /// Memory use does not grow with the data.
    ///
    /// # Errors
    /// Any fjall error, stored data that does not decode, or a failed write
    /// to `out`.
    pub fn export(&self, out: &mut dyn Write) -> Result<MetaPairs, StorageError> {
        let (generation, snapshot) = self.consistent_snapshot()?;
        let mut out = HashingWriter {
            inner: BufWriter::new(out),
            hasher: Xxh3::new(),
        };
        out.write_all(MAGIC)?;
        let mut records: u64 = 0;
        for item in snapshot.iter(&generation.data) {
            let (raw_key, value) = item.into_inner()?;
            let (_, key) = split_data_key(&raw_key)?;
            write_len(&mut out, key.len())?;
            out.write_all(key)?;
            write_len(&mut out, value.len())?;
            out.write_all(&value)?;
            records += 1;
        }
        out.write_all(&END_OF_RECORDS.to_le_bytes())?;
        out.write_all(&records.to_le_bytes())?;
        let digest = out.hasher.digest();
        out.inner.write_all(&digest.to_le_bytes())?;
        out.inner.flush()?;

        let mut meta = Vec::new();
        for item in snapshot.prefix(&self.meta, CALLER_META) {
            let (key, value) = item.into_inner()?;
            let key = key.get(CALLER_META.len()..).unwrap_or_default();
            meta.push((key.to_vec(), value.to_vec()));
        }
        Ok(meta)
    }

    /// Replaces the whole state with the stream in `input` (as written by
    /// [`Store::export`]) and the caller's metadata with `meta`, atomically.
    /// The stream is loaded into a fresh generation first; nothing changes
    /// unless all of it is read and verified. Syncs the journal at the end:
    /// the caller may discard its log once this returns.
    ///
    /// # Errors
    /// [`StorageError::Snapshot`] for a truncated, corrupt or foreign stream,
    /// [`StorageError::Io`] when reading fails, or any fjall error. The old
    /// state is then still current.
    pub fn import(&self, input: &mut dyn Read, meta: MetaPairs) -> Result<(), StorageError> {
        let _writer = self.writer.acquire();
        let generation = self.create_generation()?;
        let (count, expires) = match self.load(&generation, input) {
            Ok(counts) => counts,
            Err(error) => {
                self.drop_generation(&generation);
                return Err(error);
            }
        };

        let mut batch = self.db.batch();
        for item in self.meta.prefix(CALLER_META) {
            let key = item.key()?;
            let caller_key = key.get(CALLER_META.len()..).unwrap_or_default();
            if !meta.iter().any(|(k, _)| k == caller_key) {
                batch.remove(&self.meta, key);
            }
        }
        let mut written: Vec<&[u8]> = Vec::with_capacity(meta.len());
        // Last pair wins; one fjall batch must not write a key twice.
        for (key, value) in meta.iter().rev() {
            if !written.contains(&key.as_slice()) {
                written.push(key);
                batch.insert(&self.meta, caller_meta_key(key), value.as_slice());
            }
        }
        batch.insert(&self.meta, GENERATION_KEY, generation.id.to_be_bytes());
        batch.insert(&self.meta, COUNT_KEY, count.to_be_bytes());
        batch.insert(&self.meta, EXPIRES_KEY, expires.to_be_bytes());
        if let Err(error) = batch.commit() {
            self.drop_generation(&generation);
            return Err(error.into());
        }
        // The pointer must be durable before the old generation goes:
        // deleting a keyspace bypasses the journal, so after a power loss a
        // pointer still naming it would find it gone.
        self.db.persist(fjall::PersistMode::SyncAll)?;
        let data = generation.data.clone();
        self.switch_to(generation, count, expires);
        // Still the writer: the snapshot holds all of the new generation and
        // no later batch.
        if self.engine.key_filter {
            self.key_filter.rebuild(data, self.db.snapshot(), count);
        }
        Ok(())
    }

    /// A fjall snapshot and the generation its pointer names. A flush or
    /// import may switch generations between reading the in-memory pointer
    /// and opening the snapshot; then the two disagree and we try again.
    fn consistent_snapshot(&self) -> Result<(std::sync::Arc<Generation>, Snapshot), StorageError> {
        loop {
            let generation = self.current();
            let snapshot = self.db.snapshot();
            let pointed = match snapshot.get(&self.meta, GENERATION_KEY)? {
                Some(raw) => decode_u64(&raw, "generation pointer")?,
                None => return Err(StorageError::Corrupt("generation pointer missing")),
            };
            if pointed == generation.id {
                return Ok((generation, snapshot));
            }
            std::thread::yield_now();
        }
    }

    /// Reads and verifies a whole stream into `generation`; returns the
    /// number of keys and the number of them with an expiry.
    fn load(
        &self,
        generation: &Generation,
        input: &mut dyn Read,
    ) -> Result<(u64, u64), StorageError> {
        let mut input = HashingReader {
            inner: BufReader::new(input),
            hasher: Xxh3::new(),
        };
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic)?;
        if &magic != MAGIC {
            return Err(StorageError::Snapshot("not a raftis data stream"));
        }
        let mut batch = self.db.batch();
        let mut batch_bytes = 0usize;
        let mut records: u64 = 0;
        let mut expires: u64 = 0;
        loop {
            let key_len = read_u32(&mut input)?;
            if key_len == END_OF_RECORDS {
                break;
            }
            if key_len as usize > MAX_KEY_LEN {
                return Err(StorageError::Snapshot("key length out of range"));
            }
            let key = read_bytes(&mut input, u64::from(key_len))?;
            let value_len = read_u32(&mut input)?;
            if u64::from(value_len) > MAX_VALUE_LEN {
                return Err(StorageError::Snapshot("value length out of range"));
            }
            let value = read_bytes(&mut input, u64::from(value_len))?;
            let header = decode_value(&value)
                .map_err(|_| StorageError::Snapshot("value does not decode"))?
                .0;
            if header.expire_at != 0 {
                batch.insert(
                    &generation.expiry,
                    expiry_key(header.expire_at, &key),
                    &b""[..],
                );
                expires += 1;
            }
            batch_bytes += key.len() + value.len();
            batch.insert(&generation.data, data_key(&key), value);
            records += 1;
            if batch_bytes >= IMPORT_BATCH_BYTES {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
                batch_bytes = 0;
            }
        }
        let expected = read_u64(&mut input)?;
        let digest = input.hasher.digest();
        let mut stored = [0u8; 8];
        read_exact(&mut input.inner, &mut stored)?;
        if expected != records {
            return Err(StorageError::Snapshot(
                "record count does not match the trailer",
            ));
        }
        if u64::from_le_bytes(stored) != digest {
            return Err(StorageError::Snapshot("checksum mismatch"));
        }
        batch.commit()?;
        Ok((records, expires))
    }
}

fn write_len(out: &mut impl Write, len: usize) -> Result<(), StorageError> {
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l != END_OF_RECORDS)
        .ok_or(StorageError::Corrupt("stored item too long to export"))?;
    out.write_all(&len.to_le_bytes())?;
    Ok(())
}

/// `read_exact`, with a premature end reported as a truncated stream.
fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), StorageError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StorageError::Snapshot("stream is truncated"),
        _ => StorageError::Io(e),
    })
}

fn read_u32(input: &mut impl Read) -> Result<u32, StorageError> {
    let mut buf = [0u8; 4];
    read_exact(input, &mut buf)?;
    Ok(u32::from_le_bytes(buf))
}

fn read_u64(input: &mut impl Read) -> Result<u64, StorageError> {
    let mut buf = [0u8; 8];
    read_exact(input, &mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

/// Reads `len` bytes, growing the buffer only as data actually arrives, so a
/// corrupt length cannot make us allocate gigabytes up front.
fn read_bytes(input: &mut impl Read, len: u64) -> Result<Vec<u8>, StorageError> {
    let mut buf = Vec::new();
    input.by_ref().take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(StorageError::Snapshot("stream is truncated"));
    }
    Ok(buf)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Xxh3,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(buf.get(..written).unwrap_or_default());
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Xxh3,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(buf.get(..read).unwrap_or_default());
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cluster::op::{Deadline, Op, SetCondition, SetExpiry};
    use crate::storage::tests::open_store;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.as_bytes().to_vec())
    }

    /// A store with plain keys, keys with expiries, binary data and metadata.
    fn populated(dir: &std::path::Path) -> Store {
        let store = open_store(dir);
        let mut batch = store.begin();
        let pairs = (0..1000)
            .map(|i| (b(&format!("k{i}")), Bytes::from(vec![i as u8; i % 50])))
            .collect();
        batch.apply(&Op::MSet(pairs), 0).unwrap();
        let with_ttl = Op::Set {
            key: Bytes::from_static(b"bin\x00\xff"),
            value: b("t"),
            condition: SetCondition::Always,
            expiry: SetExpiry::Set(Deadline::At(5_000)),
            get: false,
        };
        batch.apply(&with_ttl, 0).unwrap();
        batch.put_meta(b"last_applied", b"12".to_vec());
        batch.put_meta(b"membership", b"m".to_vec());
        batch.commit().unwrap();
        store
    }

    fn export(store: &Store) -> (Vec<u8>, MetaPairs) {
        let mut out = Vec::new();
        let meta = store.export(&mut out).unwrap();
        (out, meta)
    }

    fn dump(store: &Store) -> Vec<(Bytes, Option<u64>, Bytes)> {
        let mut keys = store.keys(b"*", 0).unwrap();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let v = store.get(&k, 0).unwrap().unwrap();
                (k, v.expire_at, v.payload)
            })
            .collect()
    }

    #[test]
    fn export_import_round_trip() {
        let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = populated(src_dir.path());
        let (stream, mut meta) = export(&source);
        meta.sort();
        assert_eq!(
            meta,
            vec![
                (b"last_applied".to_vec(), b"12".to_vec()),
                (b"membership".to_vec(), b"m".to_vec())
            ]
        );

        let target = open_store(dst_dir.path());
        let mut batch = target.begin();
        batch
            .apply(&Op::MSet(vec![(b("stale"), b("x"))]), 0)
            .unwrap();
        for key in ["stale_ttl1", "stale_ttl2"] {
            let with_ttl = Op::Set {
                key: b(key),
                value: b("x"),
                condition: SetCondition::Always,
                expiry: SetExpiry::Set(Deadline::At(9_000)),
                get: false,
            };
            batch.apply(&with_ttl, 0).unwrap();
        }
        batch.put_meta(b"obsolete", b"1".to_vec());
        batch.put_meta(b"last_applied", b"3".to_vec());
        batch.commit().unwrap();
        assert_eq!(target.expires_count(), 2);

        target.import(&mut stream.as_slice(), meta.clone()).unwrap();
        assert_eq!(dump(&target), dump(&source));
        assert_eq!(target.key_count(), 1001);
        assert_eq!(source.expires_count(), 1);
        assert_eq!(target.expires_count(), 1, "computed while loading");
        assert_eq!(target.get(b"stale", 0).unwrap(), None);
        assert_eq!(target.meta(b"last_applied").unwrap(), Some(b"12".to_vec()));
        assert_eq!(target.meta(b"obsolete").unwrap(), None);
        assert_eq!(
            target.expired_keys(5_000, 10).unwrap(),
            vec![Bytes::from_static(b"bin\x00\xff")]
        );
        // The imported state is what a re-export sees, byte for byte.
        assert_eq!(export(&target).0, stream);
        drop(target);
        let reopened = open_store(dst_dir.path());
        assert_eq!(reopened.key_count(), 1001);
        assert_eq!(reopened.expires_count(), 1);
        assert_eq!(
            reopened.meta(b"last_applied").unwrap(),
            Some(b"12".to_vec())
        );
    }

    #[test]
    fn broken_streams_change_nothing() {
        let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = populated(src_dir.path());
        let (stream, meta) = export(&source);
        let target = open_store(dst_dir.path());
        let mut batch = target.begin();
        batch
            .apply(&Op::MSet(vec![(b("mine"), b("kept"))]), 0)
            .unwrap();
        batch.put_meta(b"last_applied", b"1".to_vec());
        batch.commit().unwrap();

        let mut flipped = stream.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let mut bad_magic = stream.clone();
        bad_magic[0] = b'X';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            (
                "truncated in the records",
                stream[..stream.len() / 3].to_vec(),
            ),
            (
                "truncated in the trailer",
                stream[..stream.len() - 3].to_vec(),
            ),
            ("bit flip", flipped),
            ("foreign", bad_magic),
        ];
        for (what, bytes) in cases {
            let result = target.import(&mut bytes.as_slice(), meta.clone());
            assert!(
                matches!(result, Err(StorageError::Snapshot(_))),
                "{what}: {result:?}"
            );
            assert_eq!(
                target.get(b"mine", 0).unwrap().unwrap().payload,
                b("kept"),
                "{what}"
            );
            assert_eq!(target.key_count(), 1, "{what}");
            assert_eq!(target.expires_count(), 0, "{what}");
            assert_eq!(
                target.meta(b"last_applied").unwrap(),
                Some(b"1".to_vec()),
                "{what}"
            );
        }
        let generations = target
            .db
            .list_keyspace_names()
            .iter()
            .filter(|n| n.starts_with("data_"))
            .count();
        assert_eq!(generations, 2, "failed imports leave no generation behind");
    }

    #[test]
    fn export_is_one_consistent_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = populated(dir.path());
        let mut out = Vec::new();
        let meta = store.export(&mut out).unwrap();
        // Writing after the export does not change what was exported.
        let mut batch = store.begin();
        batch.apply(&Op::FlushAll, 0).unwrap();
        batch.put_meta(b"last_applied", b"13".to_vec());
        batch.commit().unwrap();
        let other = tempfile::tempdir().unwrap();
        let copy = open_store(other.path());
        copy.import(&mut out.as_slice(), meta).unwrap();
        assert_eq!(copy.key_count(), 1001);
        assert_eq!(copy.expires_count(), 1);
        assert_eq!(copy.meta(b"last_applied").unwrap(), Some(b"12".to_vec()));
        // And exporting the flushed store gives an empty stream that imports.
        let (empty, meta) = export(&store);
        copy.import(&mut empty.as_slice(), meta).unwrap();
        assert_eq!(copy.key_count(), 0);
        assert_eq!(copy.expires_count(), 0);
        assert_eq!(copy.meta(b"last_applied").unwrap(), Some(b"13".to_vec()));
    }
}
