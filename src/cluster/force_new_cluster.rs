//! `--force-new-cluster`: the last resort when a majority of the voters is
//! gone for good, as etcd's flag of the same name.
//!
//! Raft cannot elect a leader without a quorum, and rightly so. When the
//! lost voters will never come back, an operator may start one survivor with
//! this option: before Raft starts, it appends to the survivor's own log a
//! membership entry naming this node as the only voter, under a vote for
//! itself in a new term. openraft takes the last membership entry in the log
//! as the effective one, so the node elects itself at once and commits its
//! whole log, including entries the old cluster may not have committed;
//! nothing in the log is lost, and entries the old majority committed but
//! never sent here are lost for good (that is what the option cannot undo).
//! Other members are then added back with `RAFT.NODE ADD`, from empty data
//! directories.
//!
//! The data flow: read the vote and the last log id from the log store,
//! write the vote for (term + 1, this node), append the membership entry at
//! the next index under that leader id, fsync, then leave a marker file in
//! the data dir. A start with the flag finds the marker and refuses: a flag
//! left in a unit file would otherwise force again after members were added
//! back, and the forced node would lead alone while the others elect a
//! leader of their own (two leaders, and the forced one's acknowledged
//! writes truncated later). To force the same data dir a second time, the
//! operator deletes the marker.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::vote::RaftLeaderId;
use openraft::{EntryPayload, Membership};

use super::log_store::LogStore;
use super::types::{Entry, LogId, Member, TypeConfig, Vote};

/// What the rewrite did, for the loud log line the node prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedMembership {
    /// The new term this node will lead in.
    pub term: u64,
    /// Index of the appended single-voter membership entry.
    pub index: u64,
}

/// The file, in the data dir, that records a forced membership.
pub const MARKER: &str = "force-new-cluster.done";

/// Makes `id` (reachable at `peer_addr`) the only voter of the cluster whose
/// log `log_store` holds, and records that in `data_dir`.
///
/// # Errors
/// `AlreadyExists` when this data dir was forced before (the marker file
/// exists); `NotFound` when the log is pristine (nothing to recover: start a
/// new cluster instead); any storage error.
pub async fn force_new_cluster(
    log_store: &mut LogStore,
    data_dir: &Path,
    id: u64,
    peer_addr: &str,
) -> Result<ForcedMembership, io::Error> {
    let marker = data_dir.join(MARKER);
    if let Ok(done) = std::fs::read_to_string(&marker) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "--force-new-cluster was already applied to this data dir ({}); start \
                 without it (delete {} to force this data dir again)",
                done.trim(),
                marker.display()
            ),
        ));
    }
    let state = log_store.get_log_state().await?;
    let vote = log_store.read_vote().await?;
    let Some(last) = state.last_log_id else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "--force-new-cluster needs a data directory with a Raft log; this one is empty",
        ));
    };
    // The vote's term is never behind the term of any entry in the log.
    let term = vote.as_ref().map_or(0, |v| v.leader_id().term()) + 1;
    let new_vote = Vote::new(term, id);
    log_store.save_vote(&new_vote).await?;

    let index = last.index + 1;
    let leader = openraft::alias::LeaderIdOf::<TypeConfig>::new(term, id);
    let log_id = LogId::new(leader.to_committed(), index);
    let membership = Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(
            id,
            Member {
                peer_addr: peer_addr.to_string(),
            },
        )]),
    )
    .map_err(io::Error::other)?;
    let entry = Entry::new(log_id, EntryPayload::Membership(membership));
    log_store.append([entry], IOFlushed::noop()).await?;
    // The append is written but its fsync runs on the flusher thread; saving
    // the vote again fsyncs the shared journal, so the entry is on disk when
    // this returns.
    log_store.save_vote(&new_vote).await?;
    write_marker(
        &marker,
        &format!("term {term}, log index {index}, node {id}"),
    )?;
    Ok(ForcedMembership { term, index })
}

fn write_marker(path: &Path, text: &str) -> io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
