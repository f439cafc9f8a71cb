//! `raftis restore FILE --data-dir DIR --id N --initial-cluster LIST`: seed
//! one member of a new cluster from a backup, as `etcdutl snapshot restore`
//! does.
//!
//! Everything is checked before anything is written: the data dir must be
//! missing or empty and `--id` one of the listed members; the backup file is
//! read whole once ([`backup_file::verify`]: header, length, checksum) and
//! its snapshot trailer checked. Only then does [`seed_data_dir`] write:
//! into `.<name>.restoring` beside the data dir, which it renames into
//! place once everything is written and synced. The data stream is
//! imported there (its own checksum checked again on the way) with the new
//! membership and the backup's last log id; on any failure the staging
//! directory is removed and the data dir is left as it was.
//! Each member of the new cluster is restored from the same file with its
//! own `--id` and `--data-dir`; started with that data dir, it forms the new
//! cluster (its `--initial-cluster` is then ignored, the data dir has state).

use std::collections::BTreeMap;
use std::path::Path;

use super::backup_file::{self, HEADER_LEN};
use super::ToolError;
use crate::cluster::backup::{inspect_snapshot, seed_data_dir};
use crate::config::InitialCluster;

/// Restores `file` into `data_dir` as member `id` of `cluster`; returns the
/// summary line.
///
/// # Errors
/// A [`ToolError`]: a data dir that is not empty, an id not in the list, a
/// backup that is missing, corrupt or truncated, or storage that cannot be
/// written.
pub async fn run(
    file: &Path,
    data_dir: &Path,
    id: u64,
    cluster: &InitialCluster,
) -> Result<String, ToolError> {
    let members: BTreeMap<u64, String> = cluster
        .members()
        .iter()
        .map(|(id, addr)| (*id, addr.to_string()))
        .collect();
    let (file, data_dir, list) = (file.to_owned(), data_dir.to_owned(), cluster.to_string());
    tokio::task::spawn_blocking(move || restore_blocking(&file, &data_dir, id, &members, &list))
        .await
        .map_err(|source| ToolError::Task {
            what: "restoring",
            source,
        })?
}

fn restore_blocking(
    file: &Path,
    data_dir: &Path,
    id: u64,
    members: &BTreeMap<u64, String>,
    list: &str,
) -> Result<String, ToolError> {
    if !members.contains_key(&id) {
        let ids: Vec<String> = members.keys().map(u64::to_string).collect();
        return Err(ToolError::Usage(format!(
            "--id {id} is not in --initial-cluster (ids: {})",
            ids.join(", ")
        )));
    }
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ToolError::NotEmpty(data_dir.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ToolError::file("use data dir", data_dir)(e)),
    }
    let mut backup = std::fs::File::open(file).map_err(ToolError::file("open", file))?;
    let unusable = |source: Box<dyn std::error::Error + Send + Sync>| ToolError::Unusable {
        path: file.to_owned(),
        source,
    };
    backup_file::verify(&mut backup).map_err(|e| unusable(e.into()))?;
    inspect_snapshot(&mut backup, HEADER_LEN).map_err(|e| unusable(e.into()))?;
    let seeded = seed_data_dir(data_dir, &mut backup, HEADER_LEN, id, members)
        .map_err(ToolError::Restore)?;
    Ok(format!(
        "restored {} into {} as member {id} of {list}: index {}, term {}, {} keys",
        file.display(),
        data_dir.display(),
        seeded.last_log_index,
        seeded.last_log_term,
        seeded.keys,
    ))
}
