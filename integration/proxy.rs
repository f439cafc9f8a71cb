//! A fault-injecting TCP proxy for the peer channel, so that the network
//! between any two nodes can be cut, stalled or slowed, and healed again.
//!
//! **Topology.** `--initial-cluster` must be the same on every node, so a
//! node cannot be given a private route to each peer. Instead each node `j`
//! gets one [`NodeProxy`], which listens on the address `--initial-cluster`
//! advertises for `j` and forwards to `j`'s real peer listener. Every node
//! reaches `j` through it, and the proxy tells the callers apart by the
//! first frame raftis sends on a peer connection: a `Hello` carrying the
//! caller's node id (`src/cluster/rpc.rs`: a 4-byte big-endian length, then
//! a postcard `Envelope { id, body: PeerRequest::Hello { node_id, .. } }`).
//! A [`Network`] holds the proxies of all nodes, and a rule for every
//! directed link `(from, to)`: the connections `from` opened to `to`. Those
//! carry `from`'s requests and `to`'s answers to them; `to`'s own requests
//! to `from` travel on the link `(to, from)`, so cutting both is a full
//! partition between the two nodes, and cutting one is an asymmetric fault.
//!
//! **Modes** ([`LinkMode`]):
//! - `Pass`: bytes flow.
//! - `Drop`: live connections are closed at once, new ones are closed right
//!   after their `Hello` (as a refusing firewall would, both ends notice).
//! - `Blackhole`: connections stay open but nothing is delivered, in either
//!   direction, until the mode changes. Bytes are held, not discarded: a
//!   real blackhole loses packets but TCP retransmits them after the heal,
//!   so the stream resumes intact with stale messages arriving late, and
//!   dropping bytes from the middle of a framed stream would test framing
//!   corruption, which no real network produces.
//! - `Delay(d)`: every chunk is delivered `d` after it was read.
//!
//! Threads, not an async runtime: the tests are synchronous and a few dozen
//! threads per cluster cost nothing. Dropping the [`Network`] closes every
//! listener and connection.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a directed link does to its traffic; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Deliver everything.
    Pass,
    /// Close live connections and refuse new ones.
    Drop,
    /// Keep connections open, deliver nothing until the mode changes.
    Blackhole,
    /// Deliver every chunk this long after it was read.
    Delay(Duration),
}

/// How long a caller may take to send its `Hello`. raftis sends it right
/// after connecting; anything slower is not a raftis node.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to a node's real peer listener may take. A local
/// listener accepts at once and a dead node refuses at once.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// State shared by one network's proxies and their connection threads.
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a mode changes or the network shuts down, for
    /// forwarders held by a blackhole.
    changed: Condvar,
}

struct State {
    /// Rules by `(from, to)`; a missing entry means `Pass`.
    modes: HashMap<(u64, u64), LinkMode>,
    /// Live connections by id: the link they belong to and both sockets,
    /// so that `Drop` and shutdown can close them from outside.
    conns: HashMap<u64, LiveConn>,
    shutting_down: bool,
}

struct LiveConn {
    link: (u64, u64),
    sockets: Vec<TcpStream>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the others with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mode(state: &State, link: (u64, u64)) -> LinkMode {
        if state.shutting_down {
            return LinkMode::Drop;
        }
        state.modes.get(&link).copied().unwrap_or(LinkMode::Pass)
    }

    /// Closes a connection's sockets, which ends its threads.
    fn close(&self, conn_id: u64) {
        if let Some(conn) = self.lock().conns.remove(&conn_id) {
            for socket in conn.sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The proxies in front of every node's peer listener, and the rules for
/// every directed link between nodes.
pub struct Network {
    shared: Arc<Shared>,
    proxies: BTreeMap<u64, NodeProxy>,
}

impl Network {
    /// Starts one proxy per node, each on a fresh port of 127.0.0.1,
    /// forwarding to `upstreams[id]` (the node's real peer listener, which
    /// need not be up yet). Every link starts in `Pass`.
    pub fn start(upstreams: &BTreeMap<u64, SocketAddr>) -> Network {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                modes: HashMap::new(),
                conns: HashMap::new(),
                shutting_down: false,
            }),
            changed: Condvar::new(),
        });
        let next_conn = Arc::new(AtomicU64::new(0));
        let proxies = upstreams
            .iter()
            .map(|(&id, &upstream)| {
                let proxy = NodeProxy::start(id, upstream, shared.clone(), next_conn.clone());
                (id, proxy)
            })
            .collect();
        Network { shared, proxies }
    }

    /// The address other nodes must use to reach node `id` (what goes into
    /// `--initial-cluster`).
    pub fn advertised(&self, id: u64) -> SocketAddr {
        self.proxies
            .get(&id)
            .unwrap_or_else(|| panic!("no proxy for node {id}"))
            .listen
    }

    /// Sets the rule for connections `from` opens to `to`.
    pub fn set(&self, from: u64, to: u64, mode: LinkMode) {
        let doomed: Vec<u64> = {
            let mut state = self.shared.lock();
            state.modes.insert((from, to), mode);
            if mode == LinkMode::Drop {
                state
                    .conns
                    .iter()
                    .filter(|(_, c)| c.link == (from, to))
                    .map(|(id, _)| *id)
                    .collect()
            } else {
                Vec::new()
            }
        };
        for conn in doomed {
            self.shared.close(conn);
        }
        self.shared.changed.notify_all();
    }

    /// Applies `mode` to every link between a node of `a` and a node of
    /// `b`, in both directions.
    pub fn partition(&self, a: &[u64], b: &[u64], mode: LinkMode) {
        for &i in a {
            for &j in b {
                self.set(i, j, mode);
                self.set(j, i, mode);
            }
        }
    }

    /// Every link back to `Pass`; held bytes are delivered.
    pub fn heal(&self) {
        self.shared.lock().modes.clear();
        self.shared.changed.notify_all();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let conns: Vec<u64> = {
            let mut state = self.shared.lock();
            state.shutting_down = true;
            state.conns.keys().copied().collect()
        };
        self.shared.changed.notify_all();
        for conn in conns {
            self.shared.close(conn);
        }
        for proxy in self.proxies.values_mut() {
            proxy.stop();
        }
    }
}

/// The listener in front of one node's peer port.
struct NodeProxy {
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl NodeProxy {
    fn start(
        to: u64,
        upstream: SocketAddr,
        shared: Arc<Shared>,
        next_conn: Arc<AtomicU64>,
    ) -> NodeProxy {
        // Bound here, before any node starts, and never released: no other
        // process can take the port the nodes are told about.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        let listen = listener.local_addr().expect("proxy local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-{to}"))
            .spawn({
                let stop = stop.clone();
                move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let conn_id = next_conn.fetch_add(1, Ordering::SeqCst);
                        let shared = shared.clone();
                        // Connections end on their own (EOF, Drop, shutdown);
                        // nothing needs to join them.
                        let _ = std::thread::Builder::new()
                            .name(format!("proxy-{to}-conn"))
                            .spawn(move || handle(conn_id, stream, to, upstream, &shared));
                    }
                }
            })
            .expect("spawn proxy acceptor");
        NodeProxy {
            listen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks; one connection wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.listen, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Serves one accepted connection to node `to`.
fn handle(conn_id: u64, client: TcpStream, to: u64, upstream: SocketAddr, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let Ok((hello, from)) = read_hello(&client) else {
        return;
    };
    let link = (from, to);
    {
        let mut state = shared.lock();
        if Shared::mode(&state, link) == LinkMode::Drop {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let Ok(clone) = client.try_clone() else {
            return;
        };
        state.conns.insert(
            conn_id,
            LiveConn {
                link,
                sockets: vec![clone],
            },
        );
    }
    // A blackholed caller must not even learn whether `to` is up: hold the
    // connection before touching the upstream.
    if !wait_while_blackholed(shared, link) {
        shared.close(conn_id);
        return;
    }
    let server = match TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(_) => {
            // `to` is down: the caller sees its connection close, as it
            // would see a refused connect without the proxy.
            shared.close(conn_id);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    {
        let mut state = shared.lock();
        let Some(conn) = state.conns.get_mut(&conn_id) else {
            // Closed meanwhile (Drop or shutdown).
            let _ = server.shutdown(Shutdown::Both);
            return;
        };
        match server.try_clone() {
            Ok(clone) => conn.sockets.push(clone),
            Err(_) => return,
        }
    }
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        shared.close(conn_id);
        return;
    };
    std::thread::scope(|s| {
        s.spawn(move || pump(conn_id, client, server, Some(hello), link, shared));
        s.spawn(move || pump(conn_id, server2, client2, None, link, shared));
    });
}

/// Reads the caller's `Hello` frame; returns its bytes (to be forwarded
/// as they are) and the caller's node id.
fn read_hello(mut stream: &TcpStream) -> io::Result<(Vec<u8>, u64)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 4096 {
        return Err(bad("first frame too long for a Hello"));
    }
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    stream.read_exact(&mut frame[4..])?;
    stream.set_read_timeout(None)?;
    // postcard: Envelope { id: varint, body: enum variant index (varint),
    // then Hello's fields, node_id first }. Hello is variant 0.
    let mut rest = &frame[4..];
    let _id = varint(&mut rest).ok_or_else(|| bad("truncated envelope id"))?;
    let variant = varint(&mut rest).ok_or_else(|| bad("truncated variant"))?;
    if variant != 0 {
        return Err(bad("first frame is not a Hello"));
    }
    let node_id = varint(&mut rest).ok_or_else(|| bad("truncated node id"))?;
    Ok((frame, node_id))
}

/// Decodes one LEB128 varint (postcard's integer encoding).
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Blocks while `link` is blackholed; false if it is (or became) `Drop`.
fn wait_while_blackholed(shared: &Shared, link: (u64, u64)) -> bool {
    let mut state = shared.lock();
    loop {
        match Shared::mode(&state, link) {
            LinkMode::Blackhole => {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            LinkMode::Drop => return false,
            LinkMode::Pass | LinkMode::Delay(_) => return true,
        }
    }
}

/// Copies `src` to `dst` under the link's rule, `first` before anything
/// read. A reader thread stamps each chunk with its due time, and this
/// thread delivers it then, so a delay adds latency without cutting
/// throughput and a blackhole holds bytes without losing them.
fn pump(
    conn_id: u64,
    mut src: TcpStream,
    mut dst: TcpStream,
    first: Option<Vec<u8>>,
    link: (u64, u64),
    shared: &Shared,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            if let Some(first) = first {
                let _ = tx.send((due(shared, link), first));
            }
            loop {
                match src.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((due(shared, link), buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping `tx` ends the writer once it has delivered the rest.
        });
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                // The delay is the fault being injected, not a wait for a
                // condition.
                std::thread::sleep(due - now);
            }
            if !wait_while_blackholed(shared, link) || dst.write_all(&chunk).is_err() {
                break;
            }
        }
        // Either side ending ends the connection, both ways.
        shared.close(conn_id);
        let _ = dst.shutdown(Shutdown::Both);
    });
}

/// When a chunk read now must be delivered.
fn due(shared: &Shared, link: (u64, u64)) -> Instant {
    match Shared::mode(&shared.lock(), link) {
        LinkMode::Delay(d) => Instant::now() + d,
        _ => Instant::now(),
    }
}

/// The proxy on its own, with a fake caller and an echo server as the node.
mod tests {
    use super::*;

    /// A `Hello` frame as raftis encodes it: length, then postcard
    /// `Envelope { id: 0, body: Hello { node_id, resp_addr } }`.
    fn hello(node_id: u8) -> Vec<u8> {
        let resp_addr = b"127.0.0.1:1";
        let mut body = vec![0, 0, node_id, resp_addr.len() as u8];
        body.extend_from_slice(resp_addr);
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        frame
    }

    /// An echo server standing in for node 2's peer listener.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let _ = io::copy(&mut reader, &mut stream);
                });
            }
        });
        addr
    }

    /// Connects as node `from` to node 2 through the proxy; the echoed
    /// Hello proves the link passes.
    fn connect_as(net: &Network, from: u8) -> TcpStream {
        let mut stream = TcpStream::connect(net.advertised(2)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(&hello(from)).unwrap();
        stream
    }

    fn echoes(stream: &mut TcpStream, timeout: Duration) -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(buf[..n].to_vec())
    }

    #[test]
    fn proxy_passes_drops_holds_and_delays_per_caller() {
        let net = Network::start(&BTreeMap::from([(2, echo_server())]));
        let long = Duration::from_secs(5);

        // Pass: the Hello comes back (a long read covers a loaded machine).
        let mut from1 = connect_as(&net, 1);
        let mut echoed = vec![0u8; hello(1).len()];
        from1.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, hello(1));

        // Blackhole from node 1: nothing comes back while it lasts, and
        // the held bytes arrive after the heal; node 3 is not affected.
        net.set(1, 2, LinkMode::Blackhole);
        from1.write_all(b"held").unwrap();
        let silent = echoes(&mut from1, Duration::from_millis(300));
        assert!(silent.is_err(), "blackholed link delivered {silent:?}");
        let mut from3 = connect_as(&net, 3);
        let mut echoed = vec![0u8; hello(3).len()];
        from3.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, hello(3));
        net.heal();
        assert_eq!(echoes(&mut from1, long).unwrap(), b"held");

        // Delay: the echo takes at least two crossings of the delay.
        net.set(1, 2, LinkMode::Delay(Duration::from_millis(100)));
        let sent = Instant::now();
        from1.write_all(b"slow").unwrap();
        assert_eq!(echoes(&mut from1, long).unwrap(), b"slow");
        assert!(sent.elapsed() >= Duration::from_millis(200));

        // Drop: the live connection is closed, and so is a new one.
        net.set(1, 2, LinkMode::Drop);
        assert!(echoes(&mut from1, long).is_err());
        let mut again = connect_as(&net, 1);
        assert!(echoes(&mut again, long).is_err());
        from3.write_all(b"still").unwrap();
        assert_eq!(echoes(&mut from3, long).unwrap(), b"still");
    }
}
