//! The backup file: a fixed header that makes the whole file checkable, then
//! the snapshot the node sent, byte for byte.
//!
//! ```text
//! offset  0  "RAFTISBK"             magic
//!         8  version: u32 LE        1
//!        12  reserved: u32 LE       0
//!        16  payload_len: u64 LE    bytes after the header
//!        24  payload_xxh3: u64 LE   xxh3-64 of those bytes
//!        32  header_xxh3: u64 LE    xxh3-64 of bytes 0..32
//!        40  payload                a raftis snapshot file (data stream, metadata, trailer)
//! ```
//!
//! `raftis backup` knows the payload's length and checksum before the first
//! byte arrives (the node reports them when the backup begins), so it writes
//! the header first and the payload as it streams in. [`verify`] reads the
//! whole file once and checks everything this layer can: the header's own
//! checksum, the length (so a truncated file says how much is missing), the
//! payload checksum. The snapshot's own checks (its trailer, and its data
//! stream's checksum on import) come on top, in `cluster::backup`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"RAFTISBK";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Length of the header; the payload starts here.
pub const HEADER_LEN: u64 = 40;

/// Why a file is not a valid backup. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    /// Not a raftis backup at all.
    #[error("not a raftis backup file (no RAFTISBK header)")]
    NotABackup,
    /// Written by a newer format.
    #[error("backup format version {0} is not supported (this raftis reads version {VERSION})")]
    Version(u32),
    /// The header itself is damaged.
    #[error("the backup header is corrupt (its checksum does not match)")]
    CorruptHeader,
    /// Shorter than its header says.
    #[error("the backup is truncated: {have} of {want} bytes")]
    Truncated {
        /// Bytes in the file.
        have: u64,
        /// Bytes it should have.
        want: u64,
    },
    /// Longer than its header says.
    #[error("the backup has {extra} bytes more than its header says")]
    TrailingBytes {
        /// Bytes too many.
        extra: u64,
    },
    /// The payload's checksum does not match the header's.
    #[error(
        "the backup is corrupt: its checksum is {actual:016x}, its header says {expected:016x}"
    )]
    Checksum {
        /// From the header.
        expected: u64,
        /// Of the bytes in the file.
        actual: u64,
    },
    /// Reading failed.
    #[error("cannot read the backup: {0}")]
    Io(#[from] io::Error),
}

/// The header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of payload after the header.
    pub payload_len: u64,
    /// xxh3-64 of the payload.
    pub payload_xxh3: u64,
}

impl Header {
    /// The header's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.payload_xxh3.to_le_bytes());
        let check = xxh3_64(&out[..32]);
        out[32..40].copy_from_slice(&check.to_le_bytes());
        out
    }

    /// Parses and checks a header.
    ///
    /// # Errors
    /// [`BackupFileError::NotABackup`], [`BackupFileError::CorruptHeader`]
    /// or [`BackupFileError::Version`].
    pub fn decode(bytes: &[u8; HEADER_LEN as usize]) -> Result<Header, BackupFileError> {
        if &bytes[..8] != MAGIC {
            return Err(BackupFileError::NotABackup);
        }
        if xxh3_64(&bytes[..32]) != u64_at(bytes, 32) {
            return Err(BackupFileError::CorruptHeader);
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(version);
        if version != VERSION {
            return Err(BackupFileError::Version(version));
        }
        Ok(Header {
            payload_len: u64_at(bytes, 16),
            payload_xxh3: u64_at(bytes, 24),
        })
    }
}

fn u64_at(bytes: &[u8; HEADER_LEN as usize], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Checks a whole backup file: header, length, payload checksum. Reads it
/// once, in bounded memory. Leaves the file position unspecified.
///
/// # Errors
/// The first problem found, as a [`BackupFileError`].
pub fn verify(file: &mut File) -> Result<Header, BackupFileError> {
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut raw = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN {
        // Too short for a header: tell a foreign file from a cut-off backup.
        let mut start = Vec::new();
        file.read_to_end(&mut start)?;
        let prefix = start.len().min(MAGIC.len());
        return Err(if start[..prefix] == MAGIC[..prefix] {
            BackupFileError::Truncated {
                have: len,
                want: HEADER_LEN,
            }
        } else {
            BackupFileError::NotABackup
        });
    }
    file.read_exact(&mut raw)?;
    let header = Header::decode(&raw)?;
    let want = HEADER_LEN.saturating_add(header.payload_len);
    if len < want {
        return Err(BackupFileError::Truncated { have: len, want });
    }
    if len > want {
        return Err(BackupFileError::TrailingBytes { extra: len - want });
    }
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hasher.digest();
    if actual != header.payload_xxh3 {
        return Err(BackupFileError::Checksum {
            expected: header.payload_xxh3,
            actual,
        });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn backup_with(payload: &[u8]) -> Vec<u8> {
        let header = Header {
            payload_len: payload.len() as u64,
            payload_xxh3: xxh3_64(payload),
        };
        let mut out = header.encode().to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn check(bytes: &[u8]) -> Result<Header, BackupFileError> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        verify(&mut file)
    }

    #[test]
    fn a_whole_backup_verifies() {
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let header = check(&backup_with(&payload)).unwrap();
        assert_eq!(header.payload_len, 3_000_000);
        assert_eq!(header.payload_xxh3, xxh3_64(&payload));
        assert!(check(&backup_with(b"")).is_ok());
    }

    #[test]
    fn every_damage_is_named() {
        let good = backup_with(b"some snapshot bytes");
        let msg = |bytes: &[u8]| check(bytes).unwrap_err().to_string();

        assert_eq!(msg(b""), "the backup is truncated: 0 of 40 bytes");
        assert_eq!(
            msg(b"hello world, no header here at all, none"),
            "not a raftis backup file (no RAFTISBK header)"
        );
        assert_eq!(msg(&good[..20]), "the backup is truncated: 20 of 40 bytes");
        assert_eq!(
            msg(&good[..45]),
            format!("the backup is truncated: 45 of {} bytes", good.len())
        );
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(
            msg(&longer),
            "the backup has 1 bytes more than its header says"
        );
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            msg(&flipped).starts_with("the backup is corrupt: its checksum is "),
            "{}",
            msg(&flipped)
        );
        for at in [8, 16, 24, 33] {
            let mut header = good.clone();
            header[at] ^= 0x10;
            assert_eq!(
                msg(&header),
                "the backup header is corrupt (its checksum does not match)",
                "byte {at}"
            );
        }
        let mut future = good.clone();
        future[8] = 2;
        let check = xxh3_64(&future[..32]);
        future[32..40].copy_from_slice(&check.to_le_bytes());
        assert_eq!(
            msg(&future),
            "backup format version 2 is not supported (this raftis reads version 1)"
        );
    }
}
