//! The HTTP port cannot be used to take the node's file descriptors:
//! clients that open connections and never finish a request hold at most
//! `MAX_CONNECTIONS` of the server's, and the port serves again once they
//! leave. (Its own test binary: it counts this process's descriptors.)

mod common;

use std::time::Duration;

use common::{Cluster, NodeTuning};
use raftis::telemetry::http_listener::MAX_CONNECTIONS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_requests_hold_a_bounded_number_of_connections() {
    let cluster = Cluster::start(1, NodeTuning::default()).await;
    cluster.wait_for_leader().await;
    let addr = cluster.http_addr(1);
    assert!(get(addr, "/ready").await.starts_with("HTTP/1.1 200"));

    let before = open_descriptors();
    let clients = MAX_CONNECTIONS + 36;
    let mut idle = Vec::new();
    for _ in 0..clients {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        idle.push(stream);
    }
    // The server takes up to MAX_CONNECTIONS of them; the rest wait in
    // the backlog, holding no descriptor of the server's.
    common::eventually(Duration::from_secs(10), || {
        open_descriptors() >= before + clients + MAX_CONNECTIONS
    })
    .await;
    let held = open_descriptors() - before;
    assert!(
        held <= clients + MAX_CONNECTIONS + 4,
        "{held} descriptors for {clients} idle clients"
    );
    // While every slot is held, a new request is not served...
    let waiting = tokio::spawn(get(addr, "/ready"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            while !waiting.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_err(),
        "served beyond the connection limit"
    );
    // ...and once the idle clients leave, it is.
    drop(idle);
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once the idle clients left")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
