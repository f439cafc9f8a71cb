//! `INFO [section ...]`: Redis's report on the server, in Redis's sections
//! and field names, plus a `# Raft` section, so Redis dashboards, exporters
//! and client libraries read a raftis node as they read a Redis server.
//!
//! A call picks sections as Redis 7 does: none means `default`; names are
//! case-insensitive, several may be given, `default`, `all` and
//! `everything` stand for groups, and names that are not sections add
//! nothing. Sections are always printed in Redis's order, whatever order
//! they were asked in. Each section writer reads its facts where they live:
//! the front end's [`ServerState`](crate::server::ServerState) (clients,
//! counters, rates, errors by prefix, latency percentiles), the store (keys, hits and misses,
//! expiry deletions), the cluster (Raft role, log, persistence) and the
//! kernel ([`process`]: CPU time, resident memory). A field is printed only
//! where raftis has a real value for it; Redis fields about machinery
//! raftis does not have (RDB forks, the allocator's own statistics,
//! pub/sub) are left out, except the few that clients probe and whose value
//! here is a plain fact (`evicted_keys:0`: nothing is ever evicted).

mod process;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::server::REDIS_COMPAT_VERSION;
use super::Args;
use crate::node::Node;
use crate::server::latency::PERCENTILES;
use crate::server::{Reply, Session};

/// One INFO section.
struct Section {
    /// Its name in `INFO <name>`, lower case.
    name: &'static str,
    /// Part of `INFO` / `INFO default`. Every section is part of `all` and
    /// `everything`.
    default: bool,
}

/// The sections in the order Redis 7 prints them, then raftis's own.
const SECTIONS: &[Section] = &[
    Section {
        name: "server",
        default: true,
    },
    Section {
        name: "clients",
        default: true,
    },
    Section {
        name: "memory",
        default: true,
    },
    Section {
        name: "persistence",
        default: true,
    },
    Section {
        name: "stats",
        default: true,
    },
    Section {
        name: "replication",
        default: true,
    },
    Section {
        name: "cpu",
        default: true,
    },
    Section {
        name: "modules",
        default: true,
    },
    Section {
        name: "commandstats",
        default: false,
    },
    Section {
        name: "errorstats",
        default: true,
    },
    Section {
        name: "latencystats",
        default: false,
    },
    Section {
        name: "cluster",
        default: true,
    },
    Section {
        name: "keyspace",
        default: true,
    },
    Section {
        name: "raft",
        default: true,
    },
];

/// Which sections of [`SECTIONS`] the arguments ask for, by index.
fn selected_sections(args: &[impl AsRef<[u8]>]) -> Vec<bool> {
    let mut selected = vec![false; SECTIONS.len()];
    let mut select = |pick: &dyn Fn(&Section) -> bool| {
        for (n, section) in SECTIONS.iter().enumerate() {
            selected[n] |= pick(section);
        }
    };
    if args.is_empty() {
        select(&|s| s.default);
    }
    for arg in args {
        let arg = arg.as_ref().to_ascii_lowercase();
        match arg.as_slice() {
            b"default" => select(&|s| s.default),
            b"all" | b"everything" => select(&|_| true),
            name => select(&|s| s.name.as_bytes() == name),
        }
    }
    selected
}

/// `INFO [section ...]`.
pub(super) fn info(node: &Node, session: &mut Session, args: &mut Args) -> Reply {
    let selected = selected_sections(&args.rest());
    let raft = raft_view(node);
    let mut out = String::new();
    for (section, _) in SECTIONS.iter().zip(&selected).filter(|(_, on)| **on) {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        match section.name {
            "server" => info_server(&mut out, session),
            "clients" => info_clients(&mut out, session),
            "memory" => info_memory(&mut out, node),
            "persistence" => info_persistence(&mut out, node, session),
            "stats" => info_stats(&mut out, node, session),
            "replication" => info_replication(&mut out, raft.as_ref()),
            "cpu" => info_cpu(&mut out),
            // No modules: the header alone, as Redis prints it with none loaded.
            "modules" => out.push_str("# Modules\r\n"),
            "commandstats" => info_commandstats(&mut out, session),
            "errorstats" => info_errorstats(&mut out, session),
            "latencystats" => info_latencystats(&mut out, session),
            "cluster" => info_cluster(&mut out),
            "keyspace" => info_keyspace(&mut out, node),
            "raft" => info_raft(&mut out, raft.as_ref()),
            _ => {}
        }
    }
    Reply::text(out)
}

macro_rules! field {
    ($out:expr, $name:expr, $value:expr) => {
        let _ = write!($out, "{}:{}\r\n", $name, $value);
    };
}

/// Redis's `getSafeInfoString`: characters that would break INFO's
/// `name:value` lines (`#` starts a header, `:` ends a name) become `_`.
fn info_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if matches!(c, '#' | ':' | '\r' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Redis's `bytesToHuman`: `1023B`, `1.50K`, `12.00M`...
fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 10, "K"),
        (1 << 20, "M"),
        (1 << 30, "G"),
        (1 << 40, "T"),
        (1 << 50, "P"),
    ];
    if !(1024..1 << 60).contains(&n) {
        return format!("{n}B");
    }
    let (unit, suffix) = UNITS
        .iter()
        .rev()
        .find(|(unit, _)| n >= *unit)
        .copied()
        .unwrap_or(UNITS[0]);
    #[allow(clippy::cast_precision_loss)]
    let scaled = n as f64 / unit as f64;
    format!("{scaled:.2}{suffix}")
}

/// Seconds with six decimals, as Redis prints CPU times (`%ld.%06ld`).
fn seconds_micros(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

fn info_server(out: &mut String, session: &Session) {
    let state = &session.server;
    let uptime = state.started.elapsed().as_secs();
    let now_usec = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let arch = std::env::consts::ARCH;
    let os = process::os_name_and_release().map_or_else(
        || format!("{} {arch}", std::env::consts::OS),
        |os| format!("{os} {arch}"),
    );
    out.push_str("# Server\r\n");
    field!(out, "redis_version", REDIS_COMPAT_VERSION);
    field!(out, "raftis_version", env!("CARGO_PKG_VERSION"));
    field!(out, "redis_git_sha1", "00000000");
    field!(out, "redis_git_dirty", 0);
    field!(out, "redis_build_id", "0");
    field!(out, "redis_mode", "standalone");
    field!(out, "os", os);
    field!(out, "arch_bits", usize::BITS);
    // std's Instant is clock_gettime(CLOCK_MONOTONIC), which Redis names so.
    if cfg!(unix) {
        field!(out, "monotonic_clock", "POSIX clock_gettime");
    }
    field!(out, "multiplexing_api", "tokio");
    field!(out, "process_id", std::process::id());
    field!(out, "run_id", state.run_id);
    field!(out, "tcp_port", state.tcp_port());
    field!(out, "server_time_usec", now_usec);
    field!(out, "uptime_in_seconds", uptime);
    field!(out, "uptime_in_days", uptime / 86_400);
    field!(out, "hz", 10);
    field!(
        out,
        "executable",
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    field!(out, "config_file", state.settings.config_file());
}

fn info_clients(out: &mut String, session: &Session) {
    let state = &session.server;
    out.push_str("# Clients\r\n");
    field!(out, "connected_clients", state.connected_clients());
    field!(out, "cluster_connections", 0);
    field!(
        out,
        "maxclients",
        state.settings.maxclients.load(Ordering::Relaxed)
    );
    field!(out, "blocked_clients", 0);
    field!(out, "tracking_clients", 0);
    field!(out, "clients_in_timeout_table", 0);
}

fn info_memory(out: &mut String, node: &Node) {
    out.push_str("# Memory\r\n");
    // Rust's allocator keeps no statistics (Redis's used_memory is what
    // zmalloc counts), so the resident set stands in for used_memory, and
    // its kernel-kept high-water mark for the peak. That makes
    // mem_fragmentation_ratio (rss / used) 1 by definition.
    if let Some(resident) = process::resident() {
        field!(out, "used_memory", resident.now);
        field!(out, "used_memory_human", human_bytes(resident.now));
        field!(out, "used_memory_rss", resident.now);
        field!(out, "used_memory_rss_human", human_bytes(resident.now));
        field!(out, "used_memory_peak", resident.peak);
        field!(out, "used_memory_peak_human", human_bytes(resident.peak));
        #[allow(clippy::cast_precision_loss)]
        let peak_perc = resident.now as f64 * 100.0 / resident.peak.max(1) as f64;
        field!(out, "used_memory_peak_perc", format!("{peak_perc:.2}%"));
    }
    if let Some(total) = process::total_system_memory() {
        field!(out, "total_system_memory", total);
        field!(out, "total_system_memory_human", human_bytes(total));
    }
    field!(out, "maxmemory", 0);
    field!(out, "maxmemory_human", "0B");
    field!(out, "maxmemory_policy", "noeviction");
    field!(out, "mem_fragmentation_ratio", "1.00");
    field!(out, "mem_allocator", mem_allocator());
    // raftis's own: the filter that spares writes of new keys a point read.
    field!(out, "key_filter_bytes", node.store.key_filter_bytes());
}

/// The name of the process's global allocator, once the program that
/// installed it said so (see [`set_mem_allocator`]).
static MEM_ALLOCATOR: OnceLock<&'static str> = OnceLock::new();

/// Records the name of the process's `#[global_allocator]` for INFO's
/// `mem_allocator` field. The `raftis` binary calls it with `"mimalloc"`
/// before it starts anything; a program that links the library without
/// installing an allocator (the tests, the benches) does not, and INFO
/// says `libc`, as a Redis built without jemalloc does. The allocator is
/// fixed for the life of the process, so only the first call counts.
pub fn set_mem_allocator(name: &'static str) {
    // A later call names the same allocator or is a mistake: keep the first.
    let _ = MEM_ALLOCATOR.set(name);
}

/// INFO's `mem_allocator`: what [`set_mem_allocator`] recorded, else `libc`.
fn mem_allocator() -> &'static str {
    MEM_ALLOCATOR.get().copied().unwrap_or("libc")
}

fn info_persistence(out: &mut String, node: &Node, session: &Session) {
    let started = session
        .server
        .started_wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.push_str("# Persistence\r\n");
    let p = node.cluster.persistence();
    field!(out, "loading", 0);
    field!(out, "async_loading", 0);
    // The Raft snapshot is raftis's RDB: what it does not cover yet is the
    // log behind it, and it was last saved when the snapshot was built (the
    // start of this process when there is none yet).
    field!(
        out,
        "rdb_changes_since_last_save",
        p.log_last_index.saturating_sub(p.last_snapshot_index)
    );
    field!(out, "rdb_bgsave_in_progress", 0);
    let last_save = if p.last_snapshot_time > 0 {
        p.last_snapshot_time
    } else {
        started
    };
    field!(out, "rdb_last_save_time", last_save);
    field!(out, "rdb_last_bgsave_status", "ok");
    field!(out, "aof_enabled", 1);
    field!(out, "aof_rewrite_in_progress", 0);
    // Redis reports a failing disk as aof_last_write_status:err.
    let write_status = if p.disk_low { "err" } else { "ok" };
    field!(out, "aof_last_write_status", write_status);
    field!(out, "db_size_bytes", p.db_size_bytes);
    field!(out, "raft_log_first_index", p.log_first_index);
    field!(out, "raft_log_last_index", p.log_last_index);
    field!(out, "raft_log_entries", p.log_entries);
    field!(out, "raft_last_snapshot_index", p.last_snapshot_index);
    field!(out, "raft_last_snapshot_time", p.last_snapshot_time);
    field!(out, "disk_free_bytes", p.disk_free_bytes);
    field!(out, "disk_low", u8::from(p.disk_low));
    field!(out, "disk_critical", u8::from(p.disk_critical));
    field!(out, "min_free_bytes", p.min_free_bytes);
    // fjall's background work: a bulk load leaves flushes and compactions
    // running for a while after it, competing with requests for the cores.
    let e = p.engine;
    field!(out, "storage_flushes_pending", e.flushes_pending);
    field!(out, "storage_compactions_running", e.compactions_running);
    field!(
        out,
        "storage_compactions_completed",
        e.compactions_completed
    );
    field!(out, "storage_compaction_time_ms", e.compaction_time_ms);
    field!(
        out,
        "storage_block_cache_used_bytes",
        e.block_cache_used_bytes
    );
    field!(
        out,
        "storage_block_cache_capacity_bytes",
        e.block_cache_capacity_bytes
    );
}

fn info_stats(out: &mut String, node: &Node, session: &Session) {
    let s = &session.server.stats;
    s.sample_rates(Instant::now());
    let rates = s.instantaneous();
    let usage = node.store.usage_stats();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)]
    let kbps = |bytes_per_sec: u64| format!("{:.2}", bytes_per_sec as f64 / 1024.0);
    out.push_str("# Stats\r\n");
    field!(
        out,
        "total_connections_received",
        get(&s.connections_received)
    );
    field!(out, "total_commands_processed", s.commands_processed());
    field!(out, "instantaneous_ops_per_sec", rates.ops_per_sec);
    field!(out, "total_net_input_bytes", get(&s.net_input_bytes));
    field!(out, "total_net_output_bytes", get(&s.net_output_bytes));
    field!(
        out,
        "instantaneous_input_kbps",
        kbps(rates.input_bytes_per_sec)
    );
    field!(
        out,
        "instantaneous_output_kbps",
        kbps(rates.output_bytes_per_sec)
    );
    field!(out, "rejected_connections", get(&s.rejected_connections));
    field!(out, "expired_keys", usage.expired_keys);
    // Nothing is evicted: there is no maxmemory.
    field!(out, "evicted_keys", 0);
    field!(out, "keyspace_hits", usage.keyspace_hits);
    field!(out, "keyspace_misses", usage.keyspace_misses);
    // Redis counts here errors in what its master or AOF sent it, which
    // must never fail; raftis has no such stream (a replicated command that
    // fails, fails the same way for its client on every node).
    field!(out, "unexpected_error_replies", 0);
    field!(out, "total_error_replies", get(&s.error_replies));
}

fn info_cpu(out: &mut String) {
    out.push_str("# CPU\r\n");
    // Whole-process times: every tokio worker thread serves clients, so
    // Redis's *_main_thread fields have no counterpart.
    if let Some(cpu) = process::cpu_times() {
        field!(out, "used_cpu_sys", seconds_micros(cpu.system));
        field!(out, "used_cpu_user", seconds_micros(cpu.user));
        field!(
            out,
            "used_cpu_sys_children",
            seconds_micros(cpu.children_system)
        );
        field!(
            out,
            "used_cpu_user_children",
            seconds_micros(cpu.children_user)
        );
    }
}

fn info_errorstats(out: &mut String, session: &Session) {
    out.push_str("# Errorstats\r\n");
    for (prefix, count) in session.server.stats.error_counts() {
        let _ = write!(out, "errorstat_{}:count={count}\r\n", info_safe(&prefix));
    }
}

/// `latency_percentiles_usec_<command>:p50=…,p99=…,p99.9=…` for each
/// command that has run, in microseconds with three decimals, as Redis 7
/// prints its HdrHistogram percentiles (see `server::latency`).
fn info_latencystats(out: &mut String, session: &Session) {
    out.push_str("# Latencystats\r\n");
    for (name, c) in session.server.stats.commands() {
        let Some(latency) = c.latency() else {
            continue;
        };
        if latency.count() == 0 {
            continue;
        }
        let _ = write!(out, "latency_percentiles_usec_{}:", info_safe(name));
        for (n, (label, percentile)) in PERCENTILES.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            #[allow(clippy::cast_precision_loss)]
            let usec = latency.value_at_percentile(*percentile) as f64 / 1000.0;
            let _ = write!(out, "p{label}={usec:.3}");
        }
        out.push_str("\r\n");
    }
}

/// raftis is not a Redis Cluster (no slots, no MOVED): exporters read this
/// to skip `CLUSTER INFO`.
fn info_cluster(out: &mut String) {
    out.push_str("# Cluster\r\n");
    field!(out, "cluster_enabled", 0);
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn info_replication(out: &mut String, raft: Option<&RaftView>) {
    out.push_str("# Replication\r\n");
    let Some(r) = raft else {
        field!(out, "role", "master");
        field!(out, "connected_slaves", 0);
        return;
    };
    let host_port = |id: u64| {
        r.resp_members
            .iter()
            .find(|(m, _)| *m == id)
            .and_then(|(_, addr)| addr.rsplit_once(':'))
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .unwrap_or_default()
    };
    if r.role == "leader" {
        field!(out, "role", "master");
        let followers: Vec<u64> = r
            .resp_members
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != r.node_id)
            .collect();
        field!(out, "connected_slaves", followers.len());
        for (n, id) in followers.iter().enumerate() {
            let (ip, port) = host_port(*id);
            let _ = write!(
                out,
                "slave{n}:ip={ip},port={port},state=online,offset={},lag=0\r\n",
                r.commit_index
            );
        }
    } else {
        field!(out, "role", "slave");
        let (host, port) = r.leader_id.map(host_port).unwrap_or_default();
        field!(out, "master_host", host);
        field!(out, "master_port", port);
        field!(
            out,
            "master_link_status",
            if r.leader_id.is_some() { "up" } else { "down" }
        );
        field!(out, "slave_repl_offset", r.last_applied);
        field!(out, "slave_read_only", 1);
        field!(out, "connected_slaves", 0);
    }
    field!(out, "master_repl_offset", r.commit_index);
}

fn info_keyspace(out: &mut String, node: &Node) {
    out.push_str("# Keyspace\r\n");
    let keys = node.store.key_count();
    if keys > 0 {
        let expires = node.store.expires_count();
        let _ = write!(out, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
    }
}

fn info_raft(out: &mut String, raft: Option<&RaftView>) {
    out.push_str("# Raft\r\n");
    let Some(r) = raft else {
        field!(out, "raft_role", "unknown");
        return;
    };
    field!(out, "node_id", r.node_id);
    // Not `role`: exporters key fields by name across sections, and
    // `# Replication` already says role:master/slave as Redis tools expect.
    field!(out, "raft_role", r.role);
    field!(
        out,
        "leader_id",
        r.leader_id.map_or_else(String::new, |l| l.to_string())
    );
    field!(out, "term", r.term);
    field!(out, "commit_index", r.commit_index);
    field!(out, "last_applied", r.last_applied);
    field!(out, "last_log_index", r.last_log_index);
    field!(out, "snapshot_index", r.snapshot_index);
    field!(out, "purged_index", r.purged_index);
    field!(out, "voters", join_ids(&r.voters));
    field!(out, "learners", join_ids(&r.learners));
    field!(out, "quorum", r.quorum);
    field!(out, "failure_tolerance", r.failure_tolerance);
    // An even count tolerates no more failures than one voter fewer.
    field!(out, "voters_even", u8::from(r.voters_even));
    field!(
        out,
        "members",
        r.members
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    // On the leader, one line per member as RAFT.NODES shows it (Redis's
    // `slave0:` lines are the model).
    for n in &r.nodes {
        field!(
            out,
            format!("node{}", n.id),
            format!(
                "role={},peer_addr={},resp_addr={},match_index={},lag={},reachable={}",
                n.role.as_str(),
                n.peer_addr,
                n.resp_addr.as_deref().unwrap_or(""),
                n.match_index.unwrap_or(0),
                n.lag.unwrap_or(0),
                u8::from(n.reachable.unwrap_or(false)),
            )
        );
    }
}

fn info_commandstats(out: &mut String, session: &Session) {
    out.push_str("# Commandstats\r\n");
    for (name, c) in session.server.stats.commands() {
        let calls = c.calls.load(Ordering::Relaxed);
        let usec = c.usec.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let per_call = if calls == 0 {
            0.0
        } else {
            usec as f64 / calls as f64
        };
        let _ = write!(
            out,
            "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
            c.rejected_calls.load(Ordering::Relaxed),
            c.failed_calls.load(Ordering::Relaxed),
        );
    }
}

/// The Raft facts INFO and HELLO report, copied out of the cluster's status.
pub(super) struct RaftView {
    node_id: u64,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub(super) role: &'static str,
    leader_id: Option<u64>,
    term: u64,
    commit_index: u64,
    last_applied: u64,
    last_log_index: u64,
    snapshot_index: u64,
    purged_index: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
    /// Id and peer address.
    members: Vec<(u64, String)>,
    /// Id and RESP address (the peer address when it is not known yet).
    resp_members: Vec<(u64, String)>,
    /// Voters needed for a decision.
    quorum: usize,
    /// Voters that may fail.
    failure_tolerance: usize,
    /// The voter count is even.
    voters_even: bool,
    /// Each member's replication state, on the leader only.
    nodes: Vec<crate::cluster::membership::NodeInfo>,
}

pub(super) fn raft_view(node: &Node) -> Option<RaftView> {
    let s = node.cluster.status();
    // Clients and dashboards want where to connect, not the peer port.
    let resp_members = s
        .members
        .iter()
        .map(|(id, peer)| {
            (
                *id,
                node.cluster.resp_addr(*id).unwrap_or_else(|| peer.clone()),
            )
        })
        .collect();
    Some(RaftView {
        node_id: s.node_id,
        role: s.role,
        leader_id: s.leader_id,
        term: s.term,
        commit_index: s.commit_index,
        last_applied: s.last_applied,
        last_log_index: s.last_log_index,
        snapshot_index: s.snapshot_index,
        purged_index: s.purged_index,
        voters: s.voters,
        learners: s.learners,
        members: s.members,
        resp_members,
        quorum: s.quorum,
        failure_tolerance: s.failure_tolerance,
        voters_even: s.voters_even,
        nodes: s.nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(args: &[&str]) -> Vec<&'static str> {
        let selected = selected_sections(args);
        SECTIONS
            .iter()
            .zip(selected)
            .filter(|(_, on)| *on)
            .map(|(s, _)| s.name)
            .collect()
    }

    #[test]
    fn sections_are_picked_as_redis_7_picks_them() {
        let default = [
            "server",
            "clients",
            "memory",
            "persistence",
            "stats",
            "replication",
            "cpu",
            "modules",
            "errorstats",
            "cluster",
            "keyspace",
            "raft",
        ];
        assert_eq!(names(&[]), default);
        assert_eq!(names(&["DEFAULT"]), default);
        let all = names(&["all"]);
        assert_eq!(all.len(), SECTIONS.len());
        assert!(all.contains(&"commandstats") && all.contains(&"latencystats"));
        assert_eq!(names(&["everything"]), all);
        // Case-insensitive, several at once, in Redis's order, no repeats.
        assert_eq!(
            names(&["Raft", "CPU", "server", "cpu"]),
            ["server", "cpu", "raft"]
        );
        assert_eq!(names(&["default", "commandstats"]).len(), default.len() + 1);
        assert!(names(&["nosuch"]).is_empty());
        assert_eq!(names(&["nosuch", "errorstats"]), ["errorstats"]);
    }

    #[test]
    fn human_bytes_as_redis_prints_them() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.00K");
        assert_eq!(human_bytes(990_632), "967.41K");
        assert_eq!(human_bytes(12_070_912), "11.51M");
        assert_eq!(human_bytes(25_276_514_304), "23.54G");
        assert_eq!(human_bytes(3 << 40), "3.00T");
        assert_eq!(human_bytes(u64::MAX), format!("{}B", u64::MAX));
    }

    #[test]
    fn cpu_times_have_six_decimals() {
        assert_eq!(seconds_micros(Duration::from_micros(4_084)), "0.004084");
        assert_eq!(seconds_micros(Duration::from_millis(12_500)), "12.500000");
    }

    #[test]
    fn mem_allocator_is_libc_until_the_binary_names_its_own() {
        // The only test that sets the process-wide name.
        assert_eq!(mem_allocator(), "libc");
        set_mem_allocator("mimalloc");
        assert_eq!(mem_allocator(), "mimalloc");
        set_mem_allocator("jemalloc");
        assert_eq!(mem_allocator(), "mimalloc", "the first name stays");
    }

    #[test]
    fn info_names_cannot_break_lines() {
        assert_eq!(info_safe("ERR"), "ERR");
        assert_eq!(info_safe("A:B#C\r\nD"), "A_B_C__D");
    }
}
