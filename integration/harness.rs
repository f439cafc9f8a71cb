//! A cluster of real `raftis` processes, for black-box tests.
//!
//! [`ProcessCluster`] starts N copies of the binary cargo built for this test
//! target, each on ports of its own (found by binding port 0), with its own
//! data dir under one temp dir, fast Raft timing set through `RAFTIS_*`
//! environment variables, and stdout/stderr appended to a log file beside
//! its data. Tests talk to the nodes over RESP like any client would (the
//! `redis` crate here, `redis-cli` and others through [`crate::tools`]), find
//! the leader from `INFO raft`, and inject process-level faults: SIGKILL one
//! node or all of them, stop one gracefully with SIGTERM, and restart a node
//! on the same ports and data dir.
//! A node can also be paused (SIGSTOP) and resumed (SIGCONT), and a cluster
//! built with [`ClusterBuilder::proxied`] routes every peer connection
//! through a fault-injecting proxy ([`crate::proxy`]), so that the network
//! between any two nodes can be cut, blackholed, delayed and healed.
//!
//! Every process is killed when the cluster is dropped, which also happens
//! while a failing test unwinds; the node logs are then printed so that the
//! failure can be understood from the test output alone. As a last resort,
//! each node gets `PR_SET_PDEATHSIG`, so even a test binary that is killed
//! outright does not leave nodes behind on the machine.
//!
//! Nothing here sleeps for a fixed time to "let things settle": every wait is
//! a condition polled until a deadline ([`eventually`]).

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proxy::{LinkMode, Network};

/// The binary under test, built by cargo for this test target.
pub const RAFTIS: &str = env!("CARGO_BIN_EXE_raftis");

/// Raft timing for tests: elections in well under a second, so that a
/// failover test waits for Raft, not for defaults meant for real networks.
const FAST_RAFT: [(&str, &str); 3] = [
    ("RAFTIS_RAFT__HEARTBEAT_INTERVAL_MS", "50"),
    ("RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS", "300"),
    ("RAFTIS_RAFT__ELECTION_TIMEOUT_MAX_MS", "600"),
];

/// How long a cluster may take to start and elect a leader. Generous, since
/// a loaded 2-core CI machine runs several clusters at once.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a failover (election after a leader is lost) may take.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Client read timeout: longer than the server's request timeout (5 s), so
/// the server, not the client, decides when a request has failed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Calls `probe` until it returns `Ok`, at most until `timeout` has passed;
/// then panics with `what` and the last error.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(error) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {error}")
            }
            // A short poll interval keeps tests fast; every probe is cheap.
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// Ports handed out by [`free_addrs`] in this test process. The OS may give
/// a released port to the next `bind(0)`, so without this two clusters
/// started by parallel tests could be handed the same port.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// `n` distinct addresses on 127.0.0.1 that were free a moment ago.
///
/// They are found by binding port 0 and released before returning, so
/// another process may still take one before a node binds it: callers that
/// start nodes retry with new ports when a bind fails (see
/// [`ClusterBuilder::start`]).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    // All listeners stay bound until every address is chosen, so the OS
    // cannot return one port twice in this call.
    let mut held = Vec::new();
    let mut addrs = Vec::new();
    while addrs.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        if handed_out.insert(addr.port()) {
            addrs.push(addr);
        }
        held.push(listener);
    }
    addrs
}

/// A `Command` for the raftis binary with no `RAFTIS_*` or `MIMALLOC_*`
/// variables inherited from the environment running the tests, so that a developer's shell
/// cannot change what a test sees. The process gets SIGKILL if the thread
/// that spawned it dies (`PR_SET_PDEATHSIG`): spawn nodes from the test's own
/// thread, which outlives them because the cluster is dropped on it.
pub fn raftis_command() -> Command {
    let mut cmd = Command::new(RAFTIS);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy().to_ascii_uppercase();
        if key_text.starts_with("RAFTIS_") || key_text.starts_with("MIMALLOC_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd
}

/// The addresses one node listens on.
#[derive(Debug, Clone, Copy)]
pub struct NodeAddrs {
    /// RESP, for clients.
    pub resp: SocketAddr,
    /// Raft and forwarded commands, for the other members.
    pub peer: SocketAddr,
    /// Metrics and health.
    pub http: SocketAddr,
}

/// The `# Raft` section of `INFO`, as one node sees the cluster.
#[derive(Debug, Clone)]
pub struct RaftInfo {
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The leader this node knows of, if any.
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub last_applied: u64,
    /// The last log index purged behind a snapshot (0: none).
    pub purged_index: u64,
}

impl RaftInfo {
    /// Parses the text of `INFO raft`.
    fn parse(text: &str) -> Result<RaftInfo, String> {
        let fields: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.trim_end().split_once(':'))
            .collect();
        let field = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| format!("INFO raft has no '{key}' field:\n{text}"))
        };
        let number = |key: &str| {
            field(key)?
                .parse::<u64>()
                .map_err(|e| format!("INFO raft field '{key}': {e}:\n{text}"))
        };
        Ok(RaftInfo {
            role: field("raft_role")?.to_owned(),
            // No leader may be written as an empty value or as 0.
            leader_id: field("leader_id")?.parse().ok().filter(|id| *id != 0),
            term: number("term")?,
            commit_index: number("commit_index")?,
            last_applied: number("last_applied")?,
            purged_index: number("purged_index")?,
        })
    }
}

/// One member: its fixed addresses and directories, and its process while
/// it runs. Dropping it kills the process.
struct NodeProcess {
    id: u64,
    addrs: NodeAddrs,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Stopped with SIGSTOP and not yet continued.
    paused: bool,
    /// Started with `--join` to this RESP address instead of
    /// `--initial-cluster` (see [`ProcessCluster::join_node`]).
    join: Option<SocketAddr>,
}

impl NodeProcess {
    /// A member not started yet, listening on `ports` (RESP, peer, HTTP),
    /// with its log in `node_dir`.
    fn new(
        id: u64,
        ports: &[SocketAddr],
        node_dir: &Path,
        data_dir: PathBuf,
        join: Option<SocketAddr>,
    ) -> NodeProcess {
        NodeProcess {
            id,
            addrs: NodeAddrs {
                resp: ports[0],
                peer: ports[1],
                http: ports[2],
            },
            data_dir,
            log_path: node_dir.join("raftis.log"),
            child: None,
            starts: 0,
            paused: false,
            join,
        }
    }

    /// Starts the process; its output is appended to the node's log, after
    /// a line that marks which start it is.
    fn spawn(&mut self, initial_cluster: &str, env: &[(String, String)]) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        writeln!(
            log,
            "==== harness: start #{} of node {} ====",
            self.starts, self.id
        )
        .expect("write node log");
        let mut cmd = raftis_command();
        cmd.arg("--id")
            .arg(self.id.to_string())
            .arg("--listen")
            .arg(self.addrs.resp.to_string())
            .arg("--peer-listen")
            .arg(self.addrs.peer.to_string())
            .arg("--http-listen")
            .arg(self.addrs.http.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir);
        match self.join {
            Some(member) => cmd.arg("--join").arg(member.to_string()),
            None => cmd.arg("--initial-cluster").arg(initial_cluster),
        };
        cmd.envs(FAST_RAFT)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("spawn raftis"));
    }

    /// Sends `signal` to the running process.
    fn signal(&self, signal: libc::c_int) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", self.id));
        // SAFETY: kill(2) with the pid of a child this process has not
        // reaped yet, so the pid cannot have been reused.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "signal {signal} to node {}: {}",
            self.id,
            std::io::Error::last_os_error()
        );
    }

    /// SIGKILL, without waiting for the process to go.
    fn send_kill(&mut self) {
        if let Some(child) = &mut self.child {
            // An error only means the process is gone already.
            let _ = child.kill();
        }
    }

    /// SIGKILL and reap; the data dir stays as the crash left it.
    fn kill(&mut self) {
        self.send_kill();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        // SIGKILL ends a stopped process too.
        self.paused = false;
    }

    /// The exit status, if the process has exited on its own.
    fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("try_wait")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why a node did not come up.
enum StartFailure {
    /// Another process took one of its ports: try again with new ones.
    PortTaken,
    /// Anything else: a real failure.
    Other(String),
}

/// Options for a [`ProcessCluster`]; see [`ProcessCluster::builder`].
pub struct ClusterBuilder {
    size: u64,
    env: Vec<(String, String)>,
    proxied: bool,
    /// Nodes whose data dir goes under a given directory instead of the
    /// cluster's temp dir.
    data_parents: BTreeMap<u64, PathBuf>,
}

impl ClusterBuilder {
    /// Puts node `id`'s data dir under `parent` (a small tmpfs, say) instead
    /// of the cluster's temp dir: in a new subdirectory for each start
    /// attempt, so a retried start never finds an earlier attempt's data.
    /// The caller owns `parent` and whatever is left in it.
    pub fn data_dir_under(mut self, id: u64, parent: &std::path::Path) -> Self {
        assert!(
            (1..=self.size).contains(&id),
            "no node {id} in a cluster of {}",
            self.size
        );
        self.data_parents.insert(id, parent.to_owned());
        self
    }

    /// Sets a `RAFTIS_*` environment variable on every node (and on every
    /// restart), after the harness's fast Raft timing, so it may override it.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Routes every peer connection through a fault-injecting proxy, for
    /// [`ProcessCluster::partition`] and [`ProcessCluster::set_link`]: the
    /// nodes are told the proxies' addresses instead of each other's.
    pub fn proxied(mut self) -> Self {
        self.proxied = true;
        self
    }

    /// Starts the nodes and waits until they agree on a leader.
    ///
    /// # Panics
    /// If the cluster does not come up within [`STARTUP_TIMEOUT`]; the node
    /// logs are printed.
    pub fn start(self) -> ProcessCluster {
        // Ports are released between choosing them and the nodes binding
        // them, so another process may win one; then start over.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = self.spawn_all();
            match cluster.wait_all_ready(STARTUP_TIMEOUT) {
                Ok(()) => {
                    cluster.wait_for_leader();
                    return cluster;
                }
                Err(StartFailure::PortTaken) if attempt < ATTEMPTS => {
                    eprintln!(
                        "harness: a port was taken by another process; retrying with new ports"
                    );
                    cluster.kill_all();
                }
                Err(StartFailure::PortTaken) => {
                    panic!("cluster did not start: ports taken on {ATTEMPTS} attempts")
                }
                Err(StartFailure::Other(why)) => panic!("cluster did not start: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn_all(&self) -> ProcessCluster {
        let dir = tempfile::Builder::new()
            .prefix("raftis-it-")
            .tempdir()
            .expect("create temp dir");
        let addrs = free_addrs(3 * self.size as usize);
        let mut nodes = BTreeMap::new();
        for (i, ports) in addrs.chunks(3).enumerate() {
            let id = i as u64 + 1;
            let node_dir = dir.path().join(format!("node{id}"));
            std::fs::create_dir_all(&node_dir).expect("create node dir");
            let data_dir = match self.data_parents.get(&id) {
                // Named after this attempt's temp dir: unique per attempt.
                Some(parent) => parent.join(format!(
                    "{}-node{id}",
                    dir.path()
                        .file_name()
                        .map_or_else(|| "cluster".into(), |n| n.to_string_lossy().into_owned())
                )),
                None => node_dir.join("data"),
            };
            nodes.insert(id, NodeProcess::new(id, ports, &node_dir, data_dir, None));
        }
        let network = self
            .proxied
            .then(|| Network::start(&nodes.iter().map(|(id, n)| (*id, n.addrs.peer)).collect()));
        let initial_cluster = nodes
            .values()
            .map(|n| {
                let advertised = network
                    .as_ref()
                    .map_or(n.addrs.peer, |net| net.advertised(n.id));
                format!("{}={advertised}", n.id)
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = ProcessCluster {
            nodes,
            network,
            initial_cluster,
            env: self.env.clone(),
            dir: Some(dir),
        };
        for node in cluster.nodes.values_mut() {
            node.spawn(&cluster.initial_cluster, &cluster.env);
        }
        cluster
    }
}

/// N `raftis` processes forming one cluster. Dropping it kills them all.
pub struct ProcessCluster {
    nodes: BTreeMap<u64, NodeProcess>,
    /// The peer proxies of a [`ClusterBuilder::proxied`] cluster. Dropped
    /// after the nodes are killed (`Drop` runs before the fields).
    network: Option<Network>,
    initial_cluster: String,
    env: Vec<(String, String)>,
    /// Data dirs and logs; `None` once kept for inspection.
    dir: Option<tempfile::TempDir>,
}

impl ProcessCluster {
    /// Starts a cluster of `size` nodes with the default test settings.
    pub fn start(size: u64) -> ProcessCluster {
        Self::builder(size).start()
    }

    /// A cluster of `size` nodes with extra settings.
    pub fn builder(size: u64) -> ClusterBuilder {
        assert!(size >= 1, "a cluster has at least one node");
        ClusterBuilder {
            size,
            env: Vec::new(),
            proxied: false,
            data_parents: BTreeMap::new(),
        }
    }

    fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Every member's id.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The ids of the nodes whose process the harness has not killed.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// The running nodes that are not paused: those that can answer.
    pub fn responsive(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some() && !n.paused)
            .map(|n| n.id)
            .collect()
    }

    /// A node's addresses (fixed for the cluster's life, across restarts).
    pub fn addrs(&self, id: u64) -> NodeAddrs {
        self.node(id).addrs
    }

    /// The pid of a running node's process, as the harness spawned it.
    pub fn pid(&self, id: u64) -> u32 {
        self.node(id)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .id()
    }

    /// A node's RESP port, for tools that take `-p`.
    pub fn port(&self, id: u64) -> u16 {
        self.node(id).addrs.resp.port()
    }

    /// Everything a node has written to stdout and stderr, over all starts.
    pub fn log(&self, id: u64) -> String {
        self.node(id).log()
    }

    /// A new client connection to a node, with [`CLIENT_TIMEOUT`].
    ///
    /// # Errors
    /// If the node does not accept the connection.
    pub fn try_connect(&self, id: u64) -> redis::RedisResult<redis::Connection> {
        connect(self.node(id).addrs.resp)
    }

    /// A new client connection to a node; panics if it cannot connect.
    pub fn connect(&self, id: u64) -> redis::Connection {
        self.try_connect(id)
            .unwrap_or_else(|e| panic!("connect to node {id}: {e}"))
    }

    /// A node's `INFO raft`.
    ///
    /// # Errors
    /// If the node does not answer or the section cannot be parsed.
    pub fn raft_info(&self, id: u64) -> Result<RaftInfo, String> {
        let mut con = self
            .try_connect(id)
            .map_err(|e| format!("node {id}: {e}"))?;
        let text: String = redis::cmd("INFO")
            .arg("raft")
            .query(&mut con)
            .map_err(|e| format!("node {id}: INFO raft: {e}"))?;
        RaftInfo::parse(&text).map_err(|e| format!("node {id}: {e}"))
    }

    /// Waits until every running node names the same leader, and that node
    /// runs and says it leads; returns its id. Paused nodes are left out
    /// (they cannot answer).
    pub fn wait_for_leader(&self) -> u64 {
        self.wait_for_leader_among(&self.responsive())
    }

    /// Waits until the nodes `among` all name the same leader, one of them,
    /// which says it leads: the leader of a majority side of a partition,
    /// while the minority may still believe in an old one.
    pub fn wait_for_leader_among(&self, among: &[u64]) -> u64 {
        eventually(
            &format!("a leader nodes {among:?} agree on"),
            ELECTION_TIMEOUT,
            || {
                let mut leader = None;
                for id in among {
                    let info = self.raft_info(*id)?;
                    let Some(l) = info.leader_id else {
                        return Err(format!("node {id} knows no leader ({})", info.role));
                    };
                    if leader.is_some_and(|other| other != l) {
                        return Err(format!("nodes disagree: {leader:?} and {l}"));
                    }
                    leader = Some(l);
                }
                let leader = leader.ok_or("no node is running")?;
                if !among.contains(&leader) {
                    return Err(format!(
                        "the leader named, {leader}, is not among {among:?}"
                    ));
                }
                let role = self.raft_info(leader)?.role;
                if role != "leader" {
                    return Err(format!("node {leader} is named leader but is {role}"));
                }
                Ok(leader)
            },
        )
    }

    /// The current leader (waiting for one if there is none).
    pub fn leader(&self) -> u64 {
        self.wait_for_leader()
    }

    /// Every node's id but `id`'s.
    pub fn ids_except(&self, id: u64) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|other| *other != id)
            .collect()
    }

    /// The running nodes other than the current leader.
    pub fn followers(&self) -> Vec<u64> {
        let leader = self.leader();
        self.running()
            .into_iter()
            .filter(|id| *id != leader)
            .collect()
    }

    /// SIGKILLs a node, as a crash or `kill -9` would, and reaps it. Its
    /// data dir stays, for [`ProcessCluster::restart`].
    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).kill();
    }

    /// SIGKILLs every running node at once (all signals are sent before
    /// any process is reaped), as a power loss would.
    pub fn kill_all(&mut self) {
        for node in self.nodes.values_mut() {
            node.send_kill();
        }
        for node in self.nodes.values_mut() {
            node.kill();
        }
    }

    /// Sends SIGTERM to a node, as a service manager stopping it would, and
    /// waits up to `timeout` for the process to exit; returns its exit
    /// status. Its data dir stays, for [`ProcessCluster::restart`].
    ///
    /// # Panics
    /// If the process is still running after `timeout`.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> ExitStatus {
        self.stop_with(id, libc::SIGTERM, timeout)
    }

    /// Sends `signal` (SIGTERM, SIGINT...) to a node and waits up to
    /// `timeout` for the process to exit; returns its exit status.
    ///
    /// # Panics
    /// If the process is still running after `timeout`.
    pub fn stop_with(&mut self, id: u64, signal: libc::c_int, timeout: Duration) -> ExitStatus {
        let node = self.node_mut(id);
        node.signal(signal);
        let status = eventually(
            &format!("node {id} to exit after signal {signal}"),
            timeout,
            || node.exited().ok_or_else(|| "still running".to_owned()),
        );
        node.child = None;
        status
    }

    /// Starts node `id`, new to the cluster, on fresh ports with an empty
    /// data dir and `--join` to node `via`'s RESP address, and waits until it
    /// answers `PING`; the node then asks the cluster to add it (wait for
    /// that with `INFO raft` or `RAFT.NODES`). Not for proxied clusters.
    pub fn join_node(&mut self, id: u64, via: u64) {
        assert!(!self.is_proxied(), "join_node needs direct peer links");
        assert!(!self.nodes.contains_key(&id), "node {id} exists already");
        let member = self.addrs(via).resp;
        let dir = self
            .dir
            .as_ref()
            .expect("the cluster's temp dir")
            .path()
            .join(format!("node{id}"));
        std::fs::create_dir_all(&dir).expect("create node dir");
        let ports = free_addrs(3);
        self.nodes.insert(
            id,
            NodeProcess::new(id, &ports, &dir, dir.join("data"), Some(member)),
        );
        let (initial_cluster, env) = (self.initial_cluster.clone(), self.env.clone());
        self.node_mut(id).spawn(&initial_cluster, &env);
        if self.wait_ready(id, STARTUP_TIMEOUT).is_err() {
            panic!("joining node {id} did not start:\n{}", self.node(id).log());
        }
    }

    /// Kills node `id` (if it runs) and forgets it: a member removed from
    /// the cluster, which the cluster's checks must no longer include.
    pub fn forget(&mut self, id: u64) {
        if let Some(mut node) = self.nodes.remove(&id) {
            node.kill();
        }
    }

    /// Starts a killed node again on its ports and data dir, and waits until
    /// it answers `PING`. It does not wait for the node to find a leader.
    pub fn restart(&mut self, id: u64) {
        // The port is free once the killed process is gone, unless another
        // process took it meanwhile; a few attempts cover a transient race.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let (initial_cluster, env) = (self.initial_cluster.clone(), self.env.clone());
            self.node_mut(id).spawn(&initial_cluster, &env);
            match self.wait_ready(id, STARTUP_TIMEOUT) {
                Ok(()) => return,
                Err(StartFailure::PortTaken) if attempt < ATTEMPTS => {
                    self.node_mut(id).kill();
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(StartFailure::PortTaken) => {
                    panic!("node {id} did not restart: its ports stay taken")
                }
                Err(StartFailure::Other(why)) => panic!("node {id} did not restart: {why}"),
            }
        }
    }

    /// Stops a node with SIGSTOP: it keeps its sockets and state but does
    /// nothing, as a long GC pause or a frozen VM would. Its clients' and
    /// peers' requests wait, unanswered.
    pub fn pause(&mut self, id: u64) {
        let node = self.node_mut(id);
        assert!(!node.paused, "node {id} is already paused");
        node.signal(libc::SIGSTOP);
        node.paused = true;
    }

    /// Continues a node stopped by [`ProcessCluster::pause`].
    pub fn resume(&mut self, id: u64) {
        let node = self.node_mut(id);
        assert!(node.paused, "node {id} is not paused");
        node.signal(libc::SIGCONT);
        node.paused = false;
    }

    /// Resumes every paused node.
    pub fn resume_all(&mut self) {
        let paused: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.paused)
            .map(|n| n.id)
            .collect();
        for id in paused {
            self.resume(id);
        }
    }

    /// Whether peer traffic goes through proxies ([`ClusterBuilder::proxied`]).
    pub fn is_proxied(&self) -> bool {
        self.network.is_some()
    }

    fn network(&self) -> &Network {
        self.network
            .as_ref()
            .expect("network faults need a cluster built with .proxied()")
    }

    /// Sets how the connections node `from` opens to node `to` behave
    /// (`to`'s requests to `from` use the link `(to, from)`).
    pub fn set_link(&self, from: u64, to: u64, mode: LinkMode) {
        self.network().set(from, to, mode);
    }

    /// Cuts every link between the nodes of `a` and those of `b`, both
    /// ways: connections are closed and new ones refused.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        self.partition_with(a, b, LinkMode::Drop);
    }

    /// Like [`ProcessCluster::partition`] with another fault, such as
    /// [`LinkMode::Blackhole`].
    pub fn partition_with(&self, a: &[u64], b: &[u64], mode: LinkMode) {
        self.network().partition(a, b, mode);
    }

    /// Restores every link (held traffic is then delivered).
    pub fn heal(&self) {
        self.network().heal();
    }

    /// Restarts every node that is not running.
    pub fn restart_all(&mut self) {
        let stopped: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.child.is_none())
            .map(|n| n.id)
            .collect();
        // Spawn all first: a node's Raft needs its peers, and waiting for
        // each in turn would only serialize their startup.
        let (initial_cluster, env) = (self.initial_cluster.clone(), self.env.clone());
        for id in &stopped {
            self.node_mut(*id).spawn(&initial_cluster, &env);
        }
        for id in stopped {
            match self.wait_ready(id, STARTUP_TIMEOUT) {
                Ok(()) => {}
                Err(StartFailure::PortTaken) => panic!("node {id} did not restart: port taken"),
                Err(StartFailure::Other(why)) => panic!("node {id} did not restart: {why}"),
            }
        }
    }

    /// Waits until every running node answers `PING`.
    fn wait_all_ready(&mut self, timeout: Duration) -> Result<(), StartFailure> {
        for id in self.running() {
            self.wait_ready(id, timeout)?;
        }
        Ok(())
    }

    /// Waits until node `id` answers `PING`, or fails as soon as its process
    /// exits.
    fn wait_ready(&mut self, id: u64, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.node_mut(id);
            if let Some(status) = node.exited() {
                node.child = None;
                let log = node.log();
                return Err(if log.contains("Address already in use") {
                    StartFailure::PortTaken
                } else {
                    StartFailure::Other(format!("node {id} exited with {status}"))
                });
            }
            let ping = connect(node.addrs.resp)
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
            match ping {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(StartFailure::Other(format!(
                        "node {id} did not answer PING within {timeout:?}: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    /// Prints the tail of every node's log to stderr (which the test
    /// harness shows for a failed test).
    fn print_logs(&self) {
        const TAIL: usize = 200;
        for node in self.nodes.values() {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let skipped = lines.len().saturating_sub(TAIL);
            eprintln!(
                "---- node {} log ({}, last {} of {} lines) ----",
                node.id,
                node.log_path.display(),
                lines.len() - skipped,
                lines.len()
            );
            for line in &lines[skipped..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for ProcessCluster {
    /// Kills every node. A node that exited on its own before that (a panic,
    /// an abort, a fatal error) fails the test even if the test's own checks
    /// passed, since the survivors may have hidden it.
    fn drop(&mut self) {
        // A stopped process would not be reported as exited below; SIGKILL
        // in kill_all ends it either way.
        let crashed: Vec<String> = self
            .nodes
            .values_mut()
            .filter_map(|node| {
                let status = node.exited()?;
                Some(format!("node {} ({status})", node.id))
            })
            .collect();
        self.kill_all();
        let failing = std::thread::panicking();
        if failing || !crashed.is_empty() {
            self.print_logs();
            // Whole logs and data dirs, for a failure the tail does not explain.
            if std::env::var_os("INTEGRATION_KEEP_DIR").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("kept {}", dir.keep().display());
                }
            } else {
                eprintln!("(set INTEGRATION_KEEP_DIR=1 to keep the data dirs and whole logs)");
            }
        }
        // Never panic while already unwinding: that would abort the run.
        if !failing && !crashed.is_empty() {
            panic!(
                "exited during the test without being killed: {}",
                crashed.join(", ")
            );
        }
    }
}

/// A client connection to `addr` with [`CLIENT_TIMEOUT`] for replies.
///
/// # Errors
/// If the connection cannot be made within a second (a listening local
/// node accepts at once; a dead one refuses at once).
pub fn connect(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    con.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(con)
}
