//! `/health` and `/ready` of real processes under a network partition: a
//! follower cut off from the majority turns unhealthy (it still remembers
//! its leader, so only the read-index round trip `/health` makes can tell)
//! while the others stay healthy, and it is healthy again once the network
//! heals, whether the cut refuses connections or silently drops traffic.
//! The partition goes through the harness's peer proxies; the clients' and
//! the probes' own connections are never cut.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{eventually, ProcessCluster, ELECTION_TIMEOUT, STARTUP_TIMEOUT};
use crate::proxy::LinkMode;

/// Longer than `/health`'s own bound (one election timeout), so a probe
/// always gets its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` over HTTP/1.0 (the body ends where the connection does):
/// the status code and the body.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {raw:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line in {raw:?}"))?;
    Ok((status, body.to_owned()))
}

/// Waits until `path` on node `id` answers `status`; returns the body.
fn await_status(
    cluster: &ProcessCluster,
    id: u64,
    path: &str,
    status: u16,
    within: Duration,
) -> String {
    let addr = cluster.addrs(id).http;
    eventually(
        &format!("{path} of node {id} to answer {status}"),
        within,
        || match get(addr, path)? {
            (s, body) if s == status => Ok(body),
            (s, body) => Err(format!("{s} {body:?}")),
        },
    )
}

#[test]
fn health_fails_on_a_follower_cut_off_from_the_majority_and_recovers_after_healing() {
    let cluster = ProcessCluster::builder(3).proxied().start();
    for id in cluster.ids() {
        let body = await_status(&cluster, id, "/health", 200, STARTUP_TIMEOUT);
        assert_eq!(body, "ok\n");
    }
    let follower = cluster.followers()[0];
    let majority = cluster.ids_except(follower);

    // Refused connections first, then a silent link (requests hang).
    for mode in [LinkMode::Drop, LinkMode::Blackhole] {
        cluster.partition_with(&[follower], &majority, mode);
        let why = await_status(&cluster, follower, "/health", 503, ELECTION_TIMEOUT);
        assert_eq!(why.lines().count(), 1, "{mode:?}: one line: {why:?}");
        assert!(
            why.contains("leader"),
            "{mode:?}: names the leader: {why:?}"
        );
        // Cut off, it still serves its clients (with CLUSTERDOWN): ready.
        assert_eq!(
            get(cluster.addrs(follower).http, "/ready"),
            Ok((200, "ready\n".to_owned())),
            "{mode:?}"
        );
        for &id in &majority {
            let body = await_status(&cluster, id, "/health", 200, ELECTION_TIMEOUT);
            assert_eq!(body, "ok\n", "{mode:?}: node {id}");
        }

        cluster.heal();
        let body = await_status(&cluster, follower, "/health", 200, ELECTION_TIMEOUT);
        assert_eq!(body, "ok\n", "{mode:?}");
    }
}
