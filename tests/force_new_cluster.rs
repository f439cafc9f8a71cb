//! `--force-new-cluster`: a survivor of a cluster that lost its majority for
//! good becomes a one-voter cluster that keeps every key in its log.

mod common;

use std::time::Duration;

use common::{eventually, Cluster, NodeTuning};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_survivor_forced_into_a_new_cluster_keeps_its_data_and_takes_writes() {
    let mut cluster = Cluster::start(
        3,
        NodeTuning {
            request_timeout_ms: 1000,
            ..NodeTuning::default()
        },
    )
    .await;
    let leader = cluster.wait_for_leader().await;
    let survivor = cluster.followers(leader)[0];
    cluster.set_numbered_keys(leader, "k", 50).await;
    // The survivor has every acknowledged write applied before the others go.
    let target = cluster.status(leader).commit_index;
    eventually(Duration::from_secs(10), || {
        cluster.status(survivor).last_applied >= target
    })
    .await;
    for id in cluster.ids() {
        cluster.stop(id).await;
    }

    // Without the flag, the survivor alone has no quorum.
    cluster.restart(survivor).await;
    {
        let mut con = cluster.client(survivor).await;
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg("lost")
            .arg(1)
            .query_async(&mut con)
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), Some("CLUSTERDOWN"), "{e}");
    }
    cluster.stop(survivor).await;

    cluster.config_mut(survivor).force_new_cluster = true;
    cluster.restart(survivor).await;
    eventually(Duration::from_secs(10), || {
        cluster.status(survivor).leader_id == Some(survivor)
    })
    .await;
    let status = cluster.status(survivor);
    assert_eq!(status.voters, vec![survivor]);
    assert!(status.learners.is_empty());
    let mut con = cluster.client(survivor).await;
    for i in 0..50 {
        let v: i64 = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, i);
    }
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("yes")
        .query_async(&mut con)
        .await
        .unwrap();
    drop(con);

    // A flag left on is refused: forcing again after members were added
    // back would make a second leader.
    cluster.stop(survivor).await;
    let config = cluster.config_mut(survivor).clone();
    let resp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(e) = raftis::node::start(config, resp, peer).await else {
        panic!("a second forced start must fail");
    };
    assert!(
        e.to_string()
            .contains("--force-new-cluster was already applied to this data dir"),
        "{e}"
    );

    // The new membership is on disk: a plain restart stays a one-voter cluster.
    cluster.config_mut(survivor).force_new_cluster = false;
    cluster.restart(survivor).await;
    eventually(Duration::from_secs(10), || {
        cluster.status(survivor).leader_id == Some(survivor)
    })
    .await;
    let mut con = cluster.client(survivor).await;
    let v: String = redis::cmd("GET")
        .arg("after")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "yes");
}

#[tokio::test]
async fn forcing_an_empty_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = raftis::config::Config {
        data_dir: dir.path().to_path_buf(),
        listen: raftis::config::HostPort::new("127.0.0.1", 0),
        peer_listen: Some(raftis::config::HostPort::new("127.0.0.1", 0)),
        force_new_cluster: true,
        ..raftis::config::Config::default()
    };
    let resp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(e) = raftis::node::start(config, resp, peer).await else {
        panic!("a forced start on an empty data dir must fail");
    };
    assert!(
        e.to_string()
            .contains("--force-new-cluster needs a data directory with a Raft log"),
        "{e}"
    );
}
