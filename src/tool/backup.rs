//! `raftis backup --from ADDR FILE`: stream a consistent backup from a
//! running member to a file.
//!
//! The flow, over one RESP connection ([`RespClient`]):
//!
//! 1. `RAFT.BACKUP BEGIN`: the node passes a linearizable read barrier and
//!    prepares a snapshot of its applied state; it answers with the
//!    backup's id, size, xxh3-64 checksum and last log index and term.
//! 2. `FILE.tmp` gets the backup file header (size and checksum, see
//!    [`backup_file`]), then `RAFT.BACKUP READ` chunks of [`CHUNK`] bytes
//!    in order, hashed as they arrive; nothing is held in memory beyond one
//!    chunk. A connection that fails mid-transfer is replaced and the read
//!    retried ([`READ_ATTEMPTS`] in all): the backup waits on the node.
//! 3. `RAFT.BACKUP END` lets the node delete its copy.
//! 4. The file on disk is read back and verified as `restore` will verify
//!    it (header, length, checksum, snapshot trailer, and that the trailer
//!    covers the index and term the node announced), fsynced, and renamed
//!    to `FILE` (replacing an older backup there only once the new one is
//!    whole), and the directory is fsynced.
//!
//! Any failure removes `FILE.tmp` and leaves `FILE` as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use xxhash_rust::xxh3::Xxh3;

use super::backup_file::{self, Header, HEADER_LEN};
use super::ToolError;
use crate::cluster::backup::inspect_snapshot;
use crate::resp_client::{ClientError, RespClient, RespValue};

/// Bytes asked for per `RAFT.BACKUP READ`.
pub const CHUNK: u64 = 4 * 1024 * 1024;

/// Tries per `RAFT.BACKUP READ` (over a new connection after the first).
pub const READ_ATTEMPTS: u32 = 3;

/// Pause before reconnecting, times the attempt number.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// What `RAFT.BACKUP BEGIN` announced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Announced {
    id: String,
    size: u64,
    xxh3: u64,
    index: u64,
    term: u64,
}

/// Takes a backup from the member at `from` into `file`; returns the
/// summary line.
///
/// # Errors
/// A [`ToolError`] naming what failed: the connection, a refused command,
/// a short or corrupt transfer, or the local file.
pub async fn run(from: &str, file: &Path, timeout: Duration) -> Result<String, ToolError> {
    let mut client = RespClient::connect(from, timeout).await?;
    let begin = client.call(&[b"RAFT.BACKUP", b"BEGIN"]).await?;
    if let RespValue::Error(message) = begin {
        return Err(ToolError::Refused {
            addr: from.to_owned(),
            command: "RAFT.BACKUP BEGIN".to_owned(),
            message,
        });
    }
    let announced = parse_begin(&begin).map_err(|what| {
        ToolError::Transfer(format!(
            "unexpected reply from {from} to RAFT.BACKUP BEGIN: {what}"
        ))
    })?;
    let tmp = tmp_path(file);
    let outcome = download(&mut client, &announced, &tmp).await;
    // The node deletes an idle backup by itself; ending it is a courtesy
    // that frees its disk at once, and its failure changes nothing here.
    if client
        .call(&[b"RAFT.BACKUP", b"END", announced.id.as_bytes()])
        .await
        .is_err()
    {
        tracing::debug!(id = %announced.id, "RAFT.BACKUP END failed");
    }
    let finished = match outcome {
        Ok(()) => finish(&tmp, file, &announced).await,
        Err(e) => Err(e),
    };
    if finished.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    finished?;
    Ok(format!(
        "backup of {from} saved to {}: index {}, term {}, {} bytes, xxh3 {:016x}",
        file.display(),
        announced.index,
        announced.term,
        HEADER_LEN + announced.size,
        announced.xxh3,
    ))
}

/// `FILE.tmp`.
fn tmp_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn parse_begin(reply: &RespValue) -> Result<Announced, String> {
    let items = reply
        .as_array()
        .ok_or_else(|| format!("expected an array, got {reply}"))?;
    let field = |name: &str| {
        items
            .chunks(2)
            .find(|pair| pair.first().and_then(RespValue::as_str) == Some(name))
            .and_then(|pair| pair.get(1))
            .ok_or_else(|| format!("no '{name}' in {reply}"))
    };
    let number = |name: &str| {
        field(name)?
            .as_integer()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| format!("'{name}' is not a count in {reply}"))
    };
    let id = field("id")?
        .as_str()
        .ok_or_else(|| format!("'id' is not a string in {reply}"))?
        .to_owned();
    let xxh3 = field("xxh3")?
        .as_str()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("'xxh3' is not hex in {reply}"))?;
    Ok(Announced {
        id,
        size: number("size")?,
        xxh3,
        index: number("last_log_index")?,
        term: number("last_log_term")?,
    })
}

/// Streams the backup into `tmp`, after its header, and checks the size and
/// checksum of what arrived against what was announced.
async fn download(
    client: &mut RespClient,
    announced: &Announced,
    tmp: &Path,
) -> Result<(), ToolError> {
    let local = |source| ToolError::File {
        action: "write",
        path: tmp.to_owned(),
        source,
    };
    let from = client.addr().to_owned();
    let mut out = tokio::fs::File::create(tmp).await.map_err(local)?;
    let header = Header {
        payload_len: announced.size,
        payload_xxh3: announced.xxh3,
    };
    out.write_all(&header.encode()).await.map_err(local)?;
    let mut hasher = Xxh3::new();
    let mut offset = 0u64;
    while offset < announced.size {
        let count = CHUNK.min(announced.size - offset).to_string();
        let offset_arg = offset.to_string();
        let argv: [&[u8]; 5] = [
            b"RAFT.BACKUP",
            b"READ",
            announced.id.as_bytes(),
            offset_arg.as_bytes(),
            count.as_bytes(),
        ];
        let reply = read_chunk(client, &argv)
            .await
            .map_err(|source| ToolError::Interrupted {
                offset,
                size: announced.size,
                source,
            })?;
        let chunk = match reply {
            RespValue::Bulk(Some(chunk)) => chunk,
            RespValue::Error(message) => {
                return Err(ToolError::Refused {
                    addr: from,
                    command: format!("RAFT.BACKUP READ at byte {offset} of {}", announced.size),
                    message,
                })
            }
            other => {
                return Err(ToolError::Transfer(format!(
                    "unexpected reply from {from} to RAFT.BACKUP READ: {other}"
                )))
            }
        };
        if chunk.is_empty() {
            return Err(ToolError::Transfer(format!(
                "{from} ended the backup at byte {offset}, but announced {} bytes",
                announced.size
            )));
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(local)?;
        offset += chunk.len() as u64;
    }
    if offset != announced.size {
        return Err(ToolError::Transfer(format!(
            "{from} sent {offset} bytes, but announced {}",
            announced.size
        )));
    }
    let actual = hasher.digest();
    if actual != announced.xxh3 {
        return Err(ToolError::Transfer(format!(
            "the backup received from {from} is corrupt: its checksum is {actual:016x}, the node announced {:016x}",
            announced.xxh3
        )));
    }
    out.flush().await.map_err(local)?;
    out.sync_all().await.map_err(local)?;
    Ok(())
}

/// Sends one `RAFT.BACKUP READ`; when the connection fails, reconnects and
/// asks again, up to [`READ_ATTEMPTS`] times in all. The backup lives on
/// the node as a file, not in the connection, so a new connection reads on
/// from the same offset.
async fn read_chunk(client: &mut RespClient, argv: &[&[u8]]) -> Result<RespValue, ClientError> {
    let mut attempt = 1;
    loop {
        match client.call(argv).await {
            Ok(reply) => return Ok(reply),
            Err(error) if attempt >= READ_ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::debug!(%error, attempt, "backup read failed; reconnecting");
                attempt += 1;
                // A node restarting or a connection limit needs a moment.
                tokio::time::sleep(RECONNECT_PAUSE * attempt).await;
                let (addr, timeout) = (client.addr().to_owned(), client.timeout());
                match RespClient::connect(&addr, timeout).await {
                    Ok(fresh) => *client = fresh,
                    Err(e) if attempt >= READ_ATTEMPTS => return Err(e),
                    // The next call on the broken client fails at once and
                    // counts as the next attempt.
                    Err(_) => {}
                }
            }
        }
    }
}

/// Verifies `tmp` as written on disk, then renames it to `file` durably.
async fn finish(tmp: &Path, file: &Path, announced: &Announced) -> Result<(), ToolError> {
    let (tmp, file, announced) = (tmp.to_owned(), file.to_owned(), announced.clone());
    tokio::task::spawn_blocking(move || finish_blocking(&tmp, &file, &announced))
        .await
        .map_err(|source| ToolError::Task {
            what: "verifying the backup",
            source,
        })?
}

fn finish_blocking(tmp: &Path, file: &Path, announced: &Announced) -> Result<(), ToolError> {
    let mut written = std::fs::File::open(tmp).map_err(ToolError::file("read back", tmp))?;
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| ToolError::Verification {
        path: tmp.to_owned(),
        source,
    };
    backup_file::verify(&mut written).map_err(|e| failed(e.into()))?;
    let snapshot = inspect_snapshot(&mut written, HEADER_LEN).map_err(|e| failed(e.into()))?;
    if (snapshot.last_log_index, snapshot.last_log_term) != (announced.index, announced.term) {
        return Err(ToolError::Transfer(format!(
            "the snapshot received covers index {} term {}, but the node announced index {} term {}",
            snapshot.last_log_index, snapshot.last_log_term, announced.index, announced.term
        )));
    }
    drop(written);
    std::fs::rename(tmp, file).map_err(ToolError::file("rename to", file))?;
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ToolError::file("sync", dir))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> RespValue {
        RespValue::Bulk(Some(Bytes::from(s.to_owned())))
    }

    #[test]
    fn begin_reply_is_read_by_name() {
        let reply = RespValue::Array(Some(vec![
            bulk("id"),
            bulk("00000000000000ff"),
            bulk("size"),
            RespValue::Integer(123),
            bulk("xxh3"),
            bulk("00000000000000ab"),
            bulk("last_log_index"),
            RespValue::Integer(7),
            bulk("last_log_term"),
            RespValue::Integer(2),
            bulk("future_field"),
            RespValue::Integer(0),
        ]));
        assert_eq!(
            parse_begin(&reply),
            Ok(Announced {
                id: "00000000000000ff".into(),
                size: 123,
                xxh3: 0xab,
                index: 7,
                term: 2,
            })
        );
    }

    #[test]
    fn malformed_begin_replies_are_named() {
        assert!(parse_begin(&RespValue::Simple("OK".into()))
            .unwrap_err()
            .starts_with("expected an array"));
        let missing = RespValue::Array(Some(vec![bulk("id"), bulk("x")]));
        assert!(parse_begin(&missing).unwrap_err().starts_with("no 'xxh3'"));
        let negative = RespValue::Array(Some(vec![
            bulk("id"),
            bulk("x"),
            bulk("xxh3"),
            bulk("1"),
            bulk("size"),
            RespValue::Integer(-1),
        ]));
        assert!(parse_begin(&negative)
            .unwrap_err()
            .starts_with("'size' is not a count"));
    }

    #[test]
    fn tmp_path_appends_a_suffix() {
        assert_eq!(
            tmp_path(Path::new("/a/b.bak")),
            PathBuf::from("/a/b.bak.tmp")
        );
        assert_eq!(tmp_path(Path::new("b")), PathBuf::from("b.tmp"));
    }
}
