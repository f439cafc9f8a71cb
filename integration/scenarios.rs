//! Fault-injection scenarios, each checked for linearizability: the HA
//! promise of DESIGN.md §1 tested the way etcd and Jepsen test it.
//!
//! Every scenario starts a proxied three-node cluster with a short request
//! timeout, runs the [`crate::workload`] against all nodes, and injects one
//! kind of fault over and over (each injection waits, by polling, for its
//! effect: a new leader, writes flowing again) until its time is up. Then
//! every fault is healed and the run is judged:
//!
//! 1. the cluster takes writes again;
//! 2. a final linearizable GET of every key on every node is added to the
//!    history, so that a lost acknowledged write or a node serving old data
//!    shows up as a violation;
//! 3. the [`crate::checker`] must find the whole history linearizable;
//! 4. every node must converge: once their applied indexes match, local
//!    (`READONLY`) reads of every key agree on all nodes, and with the final
//!    reads;
//! 5. the longest time without a successful write must stay under a
//!    generous bound ([`MAX_WRITE_GAP`]): correctness is the point, the
//!    figure is only printed.
//!
//! Faults are injected from the test's own thread, never a helper thread:
//! nodes get `PR_SET_PDEATHSIG` from the thread that spawns them (see
//! [`crate::harness::raftis_command`]), so a node restarted from a thread
//! that then exits would be killed with it.
//!
//! Each scenario runs about [`DEFAULT_SECS`] seconds of faults; set
//! `RAFTIS_SOAK_SECS` to run each one longer. A summary line per scenario
//! (operations, faults, violations, longest write gap) goes straight to
//! stderr, past the test harness's capture, so that it shows in every run.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;

use crate::checker;
use crate::harness::{eventually, ProcessCluster};
use crate::history::{Call, History, Outcome};
use crate::proxy::LinkMode;
use crate::workload::{self, Clock, Workload, WorkloadConfig, WorkloadReport};

/// Seconds of fault injection per scenario unless `RAFTIS_SOAK_SECS` says
/// otherwise: enough for several faults, short enough that the whole
/// integration run stays within its budget on two cores.
const DEFAULT_SECS: u64 = 10;

/// The server's request timeout in these clusters: short, so that requests
/// stuck behind a fault end (as `-TIMEOUT`) within a scenario.
const REQUEST_TIMEOUT_MS: u64 = 2000;

/// The clients' timeout: a bit above the server's, so the server decides
/// whenever it can answer at all.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(REQUEST_TIMEOUT_MS + 1000);

/// The longest acceptable time without a successful write. Seconds, not
/// milliseconds: it catches a cluster that stopped making progress, not a
/// slow failover on a loaded machine.
const MAX_WRITE_GAP: Duration = Duration::from_secs(10);

/// Writes that must succeed after a fault before it counts as recovered.
const PROGRESS_WRITES: u64 = 5;

/// How long the cluster may take to take writes again after a fault.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn scenario_duration() -> Duration {
    let secs = std::env::var("RAFTIS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs)
}

fn workload_config() -> WorkloadConfig {
    WorkloadConfig {
        clients: 5,
        registers: 5,
        counters: 2,
        client_timeout: CLIENT_TIMEOUT,
    }
}

/// A proxied three-node cluster with the scenarios' request timeout and
/// any extra settings.
fn start_cluster(extra_env: &[(&str, &str)]) -> ProcessCluster {
    let timeout = REQUEST_TIMEOUT_MS.to_string();
    let mut builder = ProcessCluster::builder(3)
        .proxied()
        .env("RAFTIS_REQUEST_TIMEOUT_MS", &timeout);
    for (key, value) in extra_env {
        builder = builder.env(key, value);
    }
    builder.start()
}

/// Runs the workload on `cluster`, calling `inject` (one fault, waited out
/// and healed) until the scenario's time is up, then heals everything and
/// judges the run (see the module docs). Returns the workload's report for
/// scenario-specific checks.
fn run_scenario(
    name: &str,
    cluster: &mut ProcessCluster,
    mut inject: impl FnMut(&mut ProcessCluster, &Workload),
) -> WorkloadReport {
    let config = workload_config();
    let nodes: Vec<_> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.addrs(id).resp))
        .collect();
    let workload = Workload::start(&nodes, &config);
    workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);

    let deadline = Instant::now() + scenario_duration();
    let mut faults = 0;
    while Instant::now() < deadline {
        inject(cluster, &workload);
        faults += 1;
    }

    // Heal whatever a fault left behind, then make sure the cluster is
    // whole and takes writes before the clients stop.
    if cluster.is_proxied() {
        cluster.heal();
    }
    cluster.resume_all();
    cluster.restart_all();
    cluster.wait_for_leader();
    workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
    let clock = workload.clock;
    let mut report = workload.stop();
    assert!(
        report.unexpected.is_empty(),
        "{name}: errors no honest server gives:\n{}",
        report.unexpected.join("\n")
    );

    let first_client = report.clients;
    let final_reads = final_reads(cluster, &config, first_client, &clock, &mut report.history);
    let (ok, failed, unknown) = report.outcome_counts();
    let gap = report.longest_write_gap();
    let verdict = checker::check(&report.history);
    summary(&format!(
        "scenario {name}: {} operations ({ok} ok, {failed} failed, {unknown} unknown), \
         {faults} faults injected, {} violations, longest write gap {gap:.2?}",
        report.history.ops.len(),
        usize::from(verdict.is_err()),
    ));
    if let Err(violation) = verdict {
        panic!("{name}: the history is not linearizable:\n{violation}");
    }
    assert_converged(cluster, &config, &final_reads);
    assert!(
        gap < MAX_WRITE_GAP,
        "{name}: no write succeeded for {gap:?} (bound {MAX_WRITE_GAP:?})"
    );
    report
}

/// A line for the run's summary, written to stderr directly so that the
/// test harness's output capture does not swallow it.
fn summary(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A linearizable GET of every key on every node, retried until it
/// succeeds, each attempt added to `history` (as clients `first_client`
/// and on, beyond the workload's), each connection with the workload's
/// client timeout. Returns what each node read, by key.
pub(crate) fn final_reads(
    cluster: &ProcessCluster,
    config: &WorkloadConfig,
    first_client: usize,
    clock: &Clock,
    history: &mut History,
) -> BTreeMap<u64, BTreeMap<String, Option<String>>> {
    let mut reads = BTreeMap::new();
    for (n, id) in cluster.ids().into_iter().enumerate() {
        let client = first_client + n;
        let addr = cluster.addrs(id).resp;
        let mut values = BTreeMap::new();
        for key in config.keys() {
            let value = eventually(
                &format!("a final GET {key} on node {id}"),
                RECOVERY_TIMEOUT,
                || {
                    let mut con = workload::connect(addr, config.client_timeout)
                        .map_err(|e| format!("connect: {e}"))?;
                    match workload::record_one(history, clock, client, &mut con, &key, Call::Get) {
                        Ok(Outcome::Ok(value)) => Ok(value),
                        Ok(other) => Err(format!("{other:?}")),
                        Err(unexpected) => panic!("final read on node {id}: {unexpected}"),
                    }
                },
            );
            values.insert(key, value);
        }
        reads.insert(id, values);
    }
    reads
}

/// Waits until every node has applied the leader's whole log, then checks
/// that their local state agrees, key by key, with the final reads.
fn assert_converged(
    cluster: &ProcessCluster,
    config: &WorkloadConfig,
    final_reads: &BTreeMap<u64, BTreeMap<String, Option<String>>>,
) {
    let leader = cluster.wait_for_leader();
    eventually(
        "every node to apply the leader's log",
        RECOVERY_TIMEOUT,
        || {
            let commit = cluster.raft_info(leader)?.commit_index;
            for id in cluster.ids() {
                let applied = cluster.raft_info(id)?.last_applied;
                if applied < commit {
                    return Err(format!("node {id} applied {applied} of {commit}"));
                }
            }
            Ok(())
        },
    );
    let keys = config.keys();
    let reference = &final_reads[&leader];
    for id in cluster.ids() {
        let mut con = cluster.connect(id);
        let _: () = redis::cmd("READONLY").query(&mut con).unwrap();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        let local: BTreeMap<String, Option<String>> = keys.iter().cloned().zip(values).collect();
        assert_eq!(
            &local, reference,
            "node {id}'s local state differs from the final linearizable reads on the leader {leader}"
        );
        assert_eq!(
            &final_reads[&id], reference,
            "final linearizable reads on node {id} and on the leader {leader} differ"
        );
    }
}

#[test]
fn leader_killed_repeatedly() {
    let mut cluster = start_cluster(&[]);
    run_scenario("leader-killed", &mut cluster, |cluster, workload| {
        let leader = cluster.wait_for_leader();
        cluster.kill(leader);
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
        cluster.restart(leader);
        // Every node follows one leader again before the next kill, or the
        // next kill would leave no quorum.
        cluster.wait_for_leader();
    });
}

#[test]
fn random_node_killed_and_restarted() {
    let mut cluster = start_cluster(&[]);
    run_scenario("random-node-killed", &mut cluster, |cluster, workload| {
        let victim = *cluster.ids().choose(&mut rand::rng()).unwrap();
        cluster.kill(victim);
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
        cluster.restart(victim);
        cluster.wait_for_leader();
    });
}

/// With `raft.read_policy = "lease"` the leader answers reads from its
/// lease, without a heartbeat round: the history stays linearizable while
/// nodes are killed and restarted at once and leaders are paused past the
/// election timeout (resumed, a leader's lease has run out by its own
/// clock, and it must not answer from it). With no partition a restarted
/// node cannot help elect a second leader here; `lease.rs` has the fault
/// that needs its wait before voting.
#[test]
fn lease_reads_with_nodes_restarted_and_the_leader_paused() {
    let mut cluster = start_cluster(&[("RAFTIS_RAFT__READ_POLICY", "lease")]);
    let mut round = 0u32;
    run_scenario("lease-reads", &mut cluster, |cluster, workload| {
        let leader = cluster.wait_for_leader();
        round += 1;
        if round % 2 == 1 {
            let victim = *cluster.ids().choose(&mut rand::rng()).unwrap();
            cluster.kill(victim);
            cluster.restart(victim);
        } else {
            let others = cluster.ids_except(leader);
            cluster.pause(leader);
            cluster.wait_for_leader_among(&others);
            workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
            cluster.resume(leader);
        }
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
        cluster.wait_for_leader();
    });
}

/// Clients pinned to the leader before each pause, sending while it is
/// paused a GET and a SET on each of `r0`, `r1` and `r2`.
const PINNED_CLIENTS: usize = 6;

/// Operations each pinned client completes on the resumed node, after the
/// one it sent while the node was paused, before the round ends.
const PINNED_OPS_AFTER_RESUME: u64 = 3;

/// One pause of a leader: which node, its pinned clients, and when it was
/// paused and resumed (workload clock).
struct Pause {
    node: u64,
    pinned: Vec<usize>,
    paused_ns: u64,
    resumed_ns: u64,
}

#[test]
fn leader_paused_past_the_election_timeout() {
    let mut cluster = start_cluster(&[]);
    let mut pauses = Vec::new();
    let report = run_scenario("leader-paused", &mut cluster, |cluster, workload| {
        let leader = cluster.wait_for_leader();
        let others = cluster.ids_except(leader);
        // Clients that stay on this node whatever happens, connected (and
        // served once) before the pause, then held idle on their open
        // connections.
        let mut pinned = workload.pin(leader, cluster.addrs(leader).resp, PINNED_CLIENTS);
        pinned.wait_for_ops(1, RECOVERY_TIMEOUT);
        pinned.hold(RECOVERY_TIMEOUT);
        cluster.pause(leader);
        let paused_ns = workload.clock.now_ns();
        // The pause lasts until the others have elected a leader and taken
        // writes: longer than the election timeout.
        let new_leader = cluster.wait_for_leader_among(&others);
        assert_ne!(new_leader, leader);
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
        // Now the pinned clients send a GET or a SET each to the paused
        // node, after those writes were acknowledged: the node reads them
        // when it resumes, still believing it leads in its old term, at the
        // same time as the new leader's messages. A GET answered from its
        // own state without a quorum would miss those writes (a stale
        // read); a SET acknowledged in the old term would be lost.
        pinned.release(RECOVERY_TIMEOUT);
        let resumed_ns = workload.clock.now_ns();
        cluster.resume(leader);
        // And they keep at it on the resumed node for a few more
        // operations, while it learns of the new term.
        pinned.wait_for_ops_since_release(1 + PINNED_OPS_AFTER_RESUME, RECOVERY_TIMEOUT);
        pauses.push(Pause {
            node: leader,
            pinned: pinned.ids.clone(),
            paused_ns,
            resumed_ns,
        });
        pinned.stop();
        cluster.wait_for_leader();
    });
    // The pinned clients' operations are in the history the checker
    // accepted; count what the resumed old leaders answered, to show the
    // scenario did what it means to. A read sent while paused "could be
    // stale" when a write to its key was acknowledged after the pause began
    // and before the read was sent: answering it from the old leader's
    // state would then have been a violation.
    let ops = &report.history.ops;
    let (mut sent_paused, mut paused_reads, mut could_be_stale, mut paused_writes) = (0, 0, 0, 0);
    let (mut reads_after, mut not_ok) = (0, 0);
    for (op, node) in ops.iter().zip(&report.served_by) {
        let Some(pause) = pauses.iter().find(|p| p.pinned.contains(&op.client)) else {
            continue;
        };
        assert_eq!(*node, pause.node, "a pinned client left its node: {op:?}");
        if op.invoked_ns < pause.paused_ns {
            continue;
        }
        let ok = matches!(op.outcome, Outcome::Ok(_));
        if !ok {
            not_ok += 1;
        }
        if op.invoked_ns >= pause.resumed_ns {
            reads_after += usize::from(ok && op.call == Call::Get);
            continue;
        }
        sent_paused += 1;
        match (&op.call, ok) {
            (Call::Get, true) => {
                paused_reads += 1;
                let written = ops.iter().any(|w| {
                    w.key == op.key
                        && w.call != Call::Get
                        && matches!(w.outcome, Outcome::Ok(_))
                        && w.completed_ns > pause.paused_ns
                        && w.completed_ns < op.invoked_ns
                });
                could_be_stale += usize::from(written);
            }
            (_, true) => paused_writes += 1,
            (_, false) => {}
        }
    }
    summary(&format!(
        "scenario leader-paused: {sent_paused} requests sent to a paused leader, answered ok \
         after it resumed: {paused_reads} reads ({could_be_stale} of a key written during \
         the pause) and {paused_writes} writes; {reads_after} later reads ok on it; \
         {not_ok} not ok"
    ));
    assert_eq!(
        sent_paused,
        pauses.len() * PINNED_CLIENTS,
        "every pinned client sends one request while its node is paused"
    );
}

/// One isolation of a leader: which node, and when (workload clock).
struct Isolation {
    node: u64,
    from_ns: u64,
    until_ns: u64,
}

#[test]
fn leader_isolated_from_the_majority() {
    let mut cluster = start_cluster(&[]);
    let mut isolations = Vec::new();
    let mut round = 0u32;
    let report = run_scenario("leader-isolated", &mut cluster, |cluster, workload| {
        let leader = cluster.wait_for_leader();
        let others = cluster.ids_except(leader);
        // Alternate a refusing network and a silent one: the first is
        // noticed at once, the second only through timeouts.
        let mode = if round % 2 == 0 {
            LinkMode::Drop
        } else {
            LinkMode::Blackhole
        };
        round += 1;
        cluster.partition_with(&[leader], &others, mode);
        let from_ns = workload.clock.now_ns();
        // Every other round, the majority's own link is slow too, so that
        // it elects and commits over a network with latency. The round trip
        // must stay under the heartbeat interval (50 ms in these clusters):
        // openraft gives each AppendEntries that long, so a slower link
        // never replicates anything (seen with 30 ms each way).
        if round % 2 == 0 {
            let delay = LinkMode::Delay(Duration::from_millis(10));
            cluster.set_link(others[0], others[1], delay);
            cluster.set_link(others[1], others[0], delay);
        }
        let new_leader = cluster.wait_for_leader_among(&others);
        assert_ne!(new_leader, leader);
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
        hold_past_request_timeout(workload, from_ns);
        let until_ns = workload.clock.now_ns();
        cluster.heal();
        isolations.push(Isolation {
            node: leader,
            from_ns,
            until_ns,
        });
        cluster.wait_for_leader();
    });
    // The minority side (the old leader alone) can neither commit a write
    // nor confirm a read with a quorum: nothing sent to it during an
    // isolation, and answered before the heal, may have succeeded.
    let served = assert_nothing_served_while_cut_off(&report, &isolations);
    summary(&format!(
        "scenario leader-isolated: {served} operations answered by an isolated leader, none successful"
    ));
}

/// Asserts that no operation sent to a node while it was cut off (by one of
/// `cuts`) and answered before the cut ended succeeded; returns how many
/// such operations there were.
fn assert_nothing_served_while_cut_off(report: &WorkloadReport, cuts: &[Isolation]) -> usize {
    let mut served = 0;
    for (op, node) in report.history.ops.iter().zip(&report.served_by) {
        let inside = cuts.iter().any(|i| {
            i.node == *node && op.invoked_ns >= i.from_ns && op.completed_ns <= i.until_ns
        });
        if inside {
            served += 1;
            assert!(
                !matches!(op.outcome, Outcome::Ok(_)),
                "node {node} answered {op:?} successfully while it could not reach the others"
            );
        }
    }
    served
}

/// The leader's links cut in one direction only, alternately:
///
/// - *mute*: the leader cannot send to the followers (its connections to
///   them fail), but they can still send to it. They stop hearing from it
///   and elect a new leader, whose vote request and heartbeats reach the old
///   one and make it step down; it then follows, hearing the new leader but
///   unable to answer it, forward a write or ask for a read index. So it
///   must answer nothing successfully while muted: it can neither commit
///   nor confirm a read, as leader or as follower.
/// - *deaf*: the followers cannot send to the leader, which still reaches
///   them: it keeps leading, while the followers' forwarded writes and
///   read-index requests go nowhere (held, with a blackhole, and delivered
///   late after the heal: writes whose outcome was unknown may apply then).
///
/// Each alternates refusing (`Drop`) and silent (`Blackhole`) links.
#[test]
fn leader_partitioned_one_way() {
    let mut cluster = start_cluster(&[]);
    let mut muted = Vec::new();
    let (mut round, mut deaf_rounds) = (0u32, 0);
    let report = run_scenario("leader-one-way", &mut cluster, |cluster, workload| {
        let leader = cluster.wait_for_leader();
        let others = cluster.ids_except(leader);
        let mode = if round % 4 < 2 {
            LinkMode::Drop
        } else {
            LinkMode::Blackhole
        };
        let mute = round % 2 == 0;
        round += 1;
        for &other in &others {
            if mute {
                cluster.set_link(leader, other, mode);
            } else {
                cluster.set_link(other, leader, mode);
            }
        }
        let from_ns = workload.clock.now_ns();
        if mute {
            let new_leader = cluster.wait_for_leader_among(&others);
            assert_ne!(new_leader, leader);
        } else {
            deaf_rounds += 1;
        }
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
        hold_past_request_timeout(workload, from_ns);
        let until_ns = workload.clock.now_ns();
        cluster.heal();
        if mute {
            muted.push(Isolation {
                node: leader,
                from_ns,
                until_ns,
            });
        }
        cluster.wait_for_leader();
    });
    let served = assert_nothing_served_while_cut_off(&report, &muted);
    summary(&format!(
        "scenario leader-one-way: {} mute and {deaf_rounds} deaf leaders; \
         {served} operations answered by a muted node, none successful",
        muted.len()
    ));
}

#[test]
fn all_nodes_killed_at_once_and_restarted() {
    let mut cluster = start_cluster(&[]);
    run_scenario("all-killed", &mut cluster, |cluster, workload| {
        cluster.kill_all();
        cluster.restart_all();
        cluster.wait_for_leader();
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
    });
}

#[test]
fn follower_partitioned_until_it_needs_a_snapshot() {
    // Snapshot every 50 entries and keep no log behind it, so that a
    // follower cut off for a few hundred writes can only catch up from a
    // snapshot.
    let mut cluster = start_cluster(&[
        ("RAFTIS_RAFT__SNAPSHOT_LOGS_SINCE_LAST", "50"),
        ("RAFTIS_RAFT__MAX_IN_SNAPSHOT_LOG_TO_KEEP", "0"),
    ]);
    run_scenario("follower-snapshot", &mut cluster, |cluster, workload| {
        let leader = cluster.wait_for_leader();
        let others = cluster.ids_except(leader);
        let follower = others[0];
        let installed_before = cluster.log(follower).matches("snapshot installed").count();
        let majority: Vec<u64> = others[1..].iter().copied().chain([leader]).collect();
        cluster.partition(&[follower], &majority);
        // The follower cannot have entries the leader had not appended
        // when it was cut off; a margin covers those still in flight.
        let cut_at = cluster.raft_info(leader).expect("INFO raft").commit_index + 20;
        eventually(
            &format!("the leader to purge its log past index {cut_at}"),
            RECOVERY_TIMEOUT,
            || {
                let leader = cluster.wait_for_leader_among(&majority);
                let purged = cluster.raft_info(leader)?.purged_index;
                (purged > cut_at)
                    .then_some(())
                    .ok_or_else(|| format!("purged up to {purged}"))
            },
        );
        cluster.heal();
        eventually(
            &format!("node {follower} to install a snapshot"),
            RECOVERY_TIMEOUT,
            || {
                let installed = cluster.log(follower).matches("snapshot installed").count();
                (installed > installed_before)
                    .then_some(())
                    .ok_or_else(|| "no new snapshot installed".to_owned())
            },
        );
        cluster.wait_for_leader();
        workload.wait_for_more_writes(PROGRESS_WRITES, RECOVERY_TIMEOUT);
    });
}

/// Keeps a fault in place until the server's request timeout (plus margin)
/// has passed since it began, so that requests that cannot be served end,
/// as errors, while it lasts. This is the fault's length, not a wait for a
/// condition.
fn hold_past_request_timeout(workload: &Workload, from_ns: u64) {
    let held = Duration::from_nanos(workload.clock.now_ns() - from_ns);
    let min_hold = Duration::from_millis(REQUEST_TIMEOUT_MS + 500);
    if held < min_hold {
        std::thread::sleep(min_hold - held);
    }
}
