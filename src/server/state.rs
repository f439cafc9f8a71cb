//! What the RESP front end shares between connections: runtime settings,
//! the registry of connected clients, and the counters INFO reports.
//!
//! The listener creates one [`ServerState`] from the node's [`Settings`];
//! every connection registers a [`ClientEntry`] in it and gets it back in its
//! [`Session`](super::Session), so connection commands (`CLIENT LIST`,
//! `CONFIG SET`, `INFO`) reach it without touching the replicated node.
//! Settings that `CONFIG SET` may change live in atomics and connections read
//! them at the start of each batch; counters are relaxed atomics, since INFO
//! needs no exact snapshot across them. The executor feeds [`Stats`] after
//! each command: calls and time per command with its latency histogram
//! (`latency.rs`), error replies by prefix (`error_stats.rs`), and a chance
//! to sample the instantaneous rates (`rates.rs`); `INFO` and `/metrics`
//! read them. That is on every request's path, so it takes no lock and
//! hashes nothing: per-command counters sit in an array indexed by the
//! command's [`CommandId`], and the counters every request writes sit on
//! cache lines of their own ([`CachePadded`]), so cores do not steal each
//! other's lines for unrelated counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::codec::{ProtocolLimits, INLINE_MAX_SIZE};
use super::error_stats::ErrorTable;
use super::latency::LatencyHistogram;
use super::rates::{RateSampler, PERIOD as RATE_PERIOD};
use crate::command::table::CommandId;

/// The front end's settings as the node starts with them (from the
/// configuration); Redis's defaults otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `maxclients`: connections beyond this are refused.
    pub maxclients: u64,
    /// `timeout`: seconds a client may stay idle; 0 = forever.
    pub timeout_secs: u64,
    /// `proto-max-bulk-len`.
    pub proto_max_bulk_len: u64,
    /// `client-query-buffer-limit`.
    pub client_query_buffer_limit: u64,
    /// Largest multibulk count a request may announce.
    pub max_multibulk_len: u64,
    /// Data directory, reported by `CONFIG GET dir`.
    pub data_dir: String,
    /// Path of the configuration file, reported by INFO.
    pub config_file: String,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = ProtocolLimits::default();
        Settings {
            maxclients: 10_000,
            timeout_secs: 0,
            proto_max_bulk_len: limits.max_bulk_len,
            client_query_buffer_limit: limits.max_query_buffer,
            max_multibulk_len: limits.max_multibulk_len,
            data_dir: String::new(),
            config_file: String::new(),
        }
    }
}

impl From<&crate::config::Config> for Settings {
    /// The front end's part of the node's configuration (`[limits]`, `data_dir`).
    fn from(config: &crate::config::Config) -> Self {
        Settings {
            maxclients: config.limits.maxclients,
            timeout_secs: config.limits.timeout,
            proto_max_bulk_len: config.limits.proto_max_bulk_len,
            client_query_buffer_limit: config.limits.client_query_buffer_limit,
            data_dir: config.data_dir.display().to_string(),
            ..Settings::default()
        }
    }
}

/// Settings that `CONFIG SET` can change while connections run.
#[derive(Debug)]
pub struct RuntimeSettings {
    /// `maxclients`.
    pub maxclients: AtomicU64,
    /// `timeout` in seconds.
    pub timeout_secs: AtomicU64,
    /// `proto-max-bulk-len`.
    pub proto_max_bulk_len: AtomicU64,
    /// `client-query-buffer-limit`.
    pub client_query_buffer_limit: AtomicU64,
    max_multibulk_len: u64,
    data_dir: String,
    config_file: String,
}

impl RuntimeSettings {
    fn new(s: Settings) -> Self {
        RuntimeSettings {
            maxclients: AtomicU64::new(s.maxclients),
            timeout_secs: AtomicU64::new(s.timeout_secs),
            proto_max_bulk_len: AtomicU64::new(s.proto_max_bulk_len),
            client_query_buffer_limit: AtomicU64::new(s.client_query_buffer_limit),
            max_multibulk_len: s.max_multibulk_len,
            data_dir: s.data_dir,
            config_file: s.config_file,
        }
    }

    /// The request limits in force now.
    #[must_use]
    pub fn limits(&self) -> ProtocolLimits {
        ProtocolLimits {
            max_bulk_len: self.proto_max_bulk_len.load(Ordering::Relaxed),
            max_multibulk_len: self.max_multibulk_len,
            max_inline_len: INLINE_MAX_SIZE,
            max_query_buffer: self.client_query_buffer_limit.load(Ordering::Relaxed),
        }
    }

    /// The idle timeout in force now, if any.
    #[must_use]
    pub fn idle_timeout(&self) -> Option<Duration> {
        match self.timeout_secs.load(Ordering::Relaxed) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }

    /// The data directory.
    #[must_use]
    pub fn data_dir(&self) -> &str {
        &self.data_dir
    }

    /// The configuration file path.
    #[must_use]
    pub fn config_file(&self) -> &str {
        &self.config_file
    }
}

/// A value alone on its cache lines (128 bytes: two lines, as adjacent-line
/// prefetchers pull pairs), so counters written by different threads, or
/// different commands' counters, never share a line and bounce it between
/// cores (false sharing).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Calls and time of one command, for `INFO commandstats`.
#[derive(Debug, Default)]
pub struct CommandStats {
    /// Times it ran.
    pub calls: AtomicU64,
    /// Microseconds spent in it, in total.
    pub usec: AtomicU64,
    /// Times it was refused before running (arity, unknown subcommand).
    pub rejected_calls: AtomicU64,
    /// Times it ran and replied with an error.
    pub failed_calls: AtomicU64,
    /// Its call durations (`INFO latencystats`), made when it first runs.
    latency: OnceLock<LatencyHistogram>,
}

impl CommandStats {
    /// Records how long one call took.
    pub fn record_latency(&self, took: Duration) {
        self.latency
            .get_or_init(LatencyHistogram::default)
            .record(took);
    }

    /// Its call durations, if it has run.
    #[must_use]
    pub fn latency(&self) -> Option<&LatencyHistogram> {
        self.latency.get()
    }

    /// Counts one call that ran for `took` and failed (replied with an
    /// error) or not: calls, time, latency, failures.
    pub fn record_call(&self, took: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let usec = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.usec.fetch_add(usec, Ordering::Relaxed);
        self.record_latency(took);
        if failed {
            self.failed_calls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters for INFO's stats section.
#[derive(Debug)]
pub struct Stats {
    /// `total_connections_received`.
    pub connections_received: AtomicU64,
    /// `rejected_connections` (over maxclients).
    pub rejected_connections: AtomicU64,
    /// `total_net_input_bytes`. Written by every read from a client: on
    /// cache lines of its own, as are the other counters the request path
    /// writes.
    pub net_input_bytes: CachePadded<AtomicU64>,
    /// `total_net_output_bytes`.
    pub net_output_bytes: CachePadded<AtomicU64>,
    /// `total_error_replies`: every error reply, refusals included. Counted
    /// with [`Stats::note_error`], which also counts it by prefix.
    pub error_replies: CachePadded<AtomicU64>,
    /// Error replies by prefix (`INFO errorstats`).
    errors: ErrorTable,
    /// The samplers behind the `instantaneous_*` fields.
    rates: Mutex<Rates>,
    /// When the next rate sample is due, in nanoseconds since `epoch`: lets
    /// [`Stats::sample_rates`] return without locking until then.
    next_sample_due: AtomicU64,
    epoch: Instant,
    /// Per command, in [`CommandId`] order (the command table's), each on
    /// cache lines of its own: counting a call indexes this array, with no
    /// lock and no hashing.
    commands: Box<[CachePadded<CommandStats>]>,
    /// The full name of each entry of `commands`.
    names: Box<[&'static str]>,
    /// Positions in `commands` by full name, for the cold paths that have
    /// only a name.
    by_name: HashMap<&'static str, usize>,
}

/// The counters Redis samples for its instantaneous rates.
#[derive(Debug)]
struct Rates {
    ops: RateSampler,
    net_input: RateSampler,
    net_output: RateSampler,
}

impl Rates {
    fn new(now: Instant) -> Self {
        Rates {
            ops: RateSampler::new(0, now),
            net_input: RateSampler::new(0, now),
            net_output: RateSampler::new(0, now),
        }
    }
}

/// Per-second rates over the last 1.6 s, as INFO's `instantaneous_*`
/// fields report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstantaneousRates {
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: u64,
    /// Bytes per second read from clients (`instantaneous_input_kbps` × 1024).
    pub input_bytes_per_sec: u64,
    /// Bytes per second written to clients (`instantaneous_output_kbps` × 1024).
    pub output_bytes_per_sec: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Counters for every command of the command table
    /// ([`command_names`](crate::command::table::command_names)), each at
    /// the position of its [`CommandId`], which is what
    /// [`Stats::command_at`] and [`Stats::record_call`] index by.
    #[must_use]
    pub fn new() -> Self {
        let epoch = Instant::now();
        let names: Box<[&'static str]> = crate::command::table::command_names().collect();
        Stats {
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            net_input_bytes: CachePadded::default(),
            net_output_bytes: CachePadded::default(),
            error_replies: CachePadded::default(),
            errors: ErrorTable::default(),
            rates: Mutex::new(Rates::new(epoch)),
            next_sample_due: AtomicU64::new(nanos(RATE_PERIOD)),
            epoch,
            commands: names.iter().map(|_| CachePadded::default()).collect(),
            by_name: names.iter().enumerate().map(|(i, n)| (*n, i)).collect(),
            names,
        }
    }

    /// The counters of command `name` (e.g. `get`, `client|list`). Hashes
    /// the name: the request path uses [`Stats::command_at`].
    #[must_use]
    pub fn command(&self, name: &str) -> Option<&CommandStats> {
        self.by_name.get(name).map(|&i| &*self.commands[i])
    }

    /// The counters of the command with id `id`.
    #[must_use]
    pub fn command_at(&self, id: CommandId) -> Option<&CommandStats> {
        self.commands.get(id.index()).map(|c| &c.0)
    }

    /// Counts one command that ran for `took` and replied with an error
    /// (`failed`) or not, as Redis's `call()` does, in the command's own
    /// stats (and so in [`Stats::commands_processed`]). The reply itself,
    /// if an error, is counted by [`Stats::note_error`].
    pub fn record_call(&self, id: CommandId, took: Duration, failed: bool) {
        if let Some(c) = self.command_at(id) {
            c.record_call(took, failed);
        }
    }

    /// `total_commands_processed`: commands that ran (a refusal before
    /// running, such as an unknown command or a wrong arity, is not one),
    /// counted once they have answered, as Redis's `call()` counts them.
    /// That is the sum of every command's calls, which reset together, so
    /// it is added up when read rather than kept in one more counter that
    /// every command on every core would write.
    #[must_use]
    pub fn commands_processed(&self) -> u64 {
        self.commands
            .iter()
            .map(|c| c.calls.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }

    /// Every command that has run, sorted by name.
    #[must_use]
    pub fn commands(&self) -> Vec<(&'static str, &CommandStats)> {
        let mut all: Vec<_> = self
            .names
            .iter()
            .zip(self.commands.iter())
            .filter(|(_, c)| {
                c.calls.load(Ordering::Relaxed) + c.rejected_calls.load(Ordering::Relaxed) > 0
            })
            .map(|(k, v)| (*k, &v.0))
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }

    /// Counts one error reply whose message (without RESP's `-`) is
    /// `message`: in `total_error_replies`, and by its prefix (without a
    /// lock for the usual prefixes, see `error_stats.rs`).
    pub fn note_error(&self, message: &[u8]) {
        self.error_replies.fetch_add(1, Ordering::Relaxed);
        self.errors.note(message);
    }

    /// Error replies by prefix (`ERR`, `WRONGTYPE`...), sorted by prefix: what
    /// `INFO errorstats` lists. At most 128 prefixes; past that, only
    /// `ERRORSTATS_DISABLED` until `CONFIG RESETSTAT` (see `error_stats.rs`).
    #[must_use]
    pub fn error_counts(&self) -> Vec<(String, u64)> {
        self.errors.counts()
    }

    /// Offers the instantaneous rates a sample at `now`; cheap (one atomic
    /// load) until a sampling period has passed since the last sample.
    pub fn sample_rates(&self, now: Instant) {
        let at = nanos(now.saturating_duration_since(self.epoch));
        if at < self.next_sample_due.load(Ordering::Relaxed) {
            return;
        }
        // Another thread sampling now makes this offer redundant.
        let mut rates = match self.rates.try_lock() {
            Ok(rates) => rates,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        rates.ops.sample(self.commands_processed(), now);
        rates
            .net_input
            .sample(self.net_input_bytes.load(Ordering::Relaxed), now);
        rates
            .net_output
            .sample(self.net_output_bytes.load(Ordering::Relaxed), now);
        self.next_sample_due
            .store(at.saturating_add(nanos(RATE_PERIOD)), Ordering::Relaxed);
    }

    /// The instantaneous rates as of the last sample.
    #[must_use]
    pub fn instantaneous(&self) -> InstantaneousRates {
        let rates = lock(&self.rates);
        InstantaneousRates {
            ops_per_sec: rates.ops.per_second(),
            input_bytes_per_sec: rates.net_input.per_second(),
            output_bytes_per_sec: rates.net_output.per_second(),
        }
    }

    /// `CONFIG RESETSTAT`: what Redis's `resetServerStats`,
    /// `resetCommandTableStats` and `resetErrorTableStats` reset of these.
    pub fn reset(&self) {
        for counter in [
            &self.connections_received,
            &self.rejected_connections,
            &*self.net_input_bytes,
            &*self.net_output_bytes,
            &*self.error_replies,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        for c in self.commands.iter() {
            for counter in [&c.calls, &c.usec, &c.rejected_calls, &c.failed_calls] {
                counter.store(0, Ordering::Relaxed);
            }
            if let Some(latency) = c.latency() {
                latency.reset();
            }
        }
        self.errors.reset();
        *lock(&self.rates) = Rates::new(Instant::now());
    }
}

/// A duration in nanoseconds, saturating (585 years of uptime).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What `CLIENT LIST` shows of one connection and may change while it runs.
#[derive(Debug, Clone)]
pub struct ClientMeta {
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<Bytes>,
    /// Full name of the last command (`client|list`).
    pub last_cmd: &'static str,
    /// 2 or 3.
    pub resp: u8,
}

/// One connected client, as the registry knows it.
#[derive(Debug)]
pub struct ClientEntry {
    /// `CLIENT ID`.
    pub id: u64,
    /// Peer address.
    pub addr: String,
    /// Local address.
    pub laddr: String,
    /// Socket file descriptor, -1 when there is none.
    pub fd: i64,
    /// When the connection was accepted.
    pub created: Instant,
    meta: Mutex<ClientMeta>,
    /// When the client last sent something, in nanoseconds after `created`,
    /// and the bytes of an incomplete request buffered then: written after
    /// every read (see [`ClientEntry::note_read`]), so kept out of `meta`'s lock.
    last_read_nanos: AtomicU64,
    query_buffered: AtomicUsize,
}

impl ClientEntry {
    /// A client that connected now.
    #[must_use]
    pub fn new(id: u64, addr: Option<SocketAddr>, laddr: Option<SocketAddr>, fd: i64) -> Self {
        let now = Instant::now();
        ClientEntry {
            id,
            addr: addr.map_or_else(String::new, |a| a.to_string()),
            laddr: laddr.map_or_else(String::new, |a| a.to_string()),
            fd,
            created: now,
            meta: Mutex::new(ClientMeta {
                name: None,
                lib_name: None,
                lib_ver: None,
                last_cmd: "NULL",
                resp: 2,
            }),
            last_read_nanos: AtomicU64::new(0),
            query_buffered: AtomicUsize::new(0),
        }
    }

    /// Records that the client sent something at `at`, after which
    /// `buffered` bytes of a request not yet complete wait in its read
    /// buffer (`CLIENT LIST`'s `idle` and `qbuf`). Two relaxed stores and no
    /// lock: the connection calls it after every read.
    pub fn note_read(&self, at: Instant, buffered: usize) {
        let since_created = nanos(at.saturating_duration_since(self.created));
        self.last_read_nanos.store(since_created, Ordering::Relaxed);
        self.query_buffered.store(buffered, Ordering::Relaxed);
    }

    /// When the client last sent something (its connection time before that).
    #[must_use]
    pub fn last_interaction(&self) -> Instant {
        self.created + Duration::from_nanos(self.last_read_nanos.load(Ordering::Relaxed))
    }

    /// The mutable part, locked.
    pub fn meta(&self) -> MutexGuard<'_, ClientMeta> {
        lock(&self.meta)
    }

    /// One line of `CLIENT LIST` / `CLIENT INFO`, in Redis 7.2's field order.
    #[must_use]
    pub fn info_line(&self, now: Instant) -> Vec<u8> {
        let m = self.meta().clone();
        let age = now.saturating_duration_since(self.created).as_secs();
        let idle = now
            .saturating_duration_since(self.last_interaction())
            .as_secs();
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        format!(
            "id={} addr={} laddr={} fd={} name={} age={age} idle={idle} flags=N db=0 sub=0 \
             psub=0 ssub=0 multi=-1 qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 \
             obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} \
             lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            text(&m.name),
            self.query_buffered.load(Ordering::Relaxed),
            m.last_cmd,
            m.resp,
            text(&m.lib_name),
            text(&m.lib_ver),
        )
        .into_bytes()
    }
}

/// The state the whole front end shares.
#[derive(Debug)]
pub struct ServerState {
    /// Settings `CONFIG SET` may change.
    pub settings: RuntimeSettings,
    /// INFO counters.
    pub stats: Stats,
    /// When the server started (uptime).
    pub started: Instant,
    /// The same moment on the wall clock.
    pub started_wall: SystemTime,
    /// INFO's `run_id`: 40 random hex characters, new at every start, as
    /// Redis makes one per process (here per node: tests run several in one
    /// process).
    pub run_id: String,
    next_client_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    connected: AtomicUsize,
    tcp_port: AtomicU64,
}

impl ServerState {
    /// Front-end state for a node started with `settings`, counting calls of
    /// every command of the command table.
    #[must_use]
    pub fn new(settings: Settings) -> Self {
        ServerState {
            settings: RuntimeSettings::new(settings),
            stats: Stats::new(),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            run_id: random_run_id(),
            next_client_id: AtomicU64::new(1),
            clients: Mutex::new(BTreeMap::new()),
            connected: AtomicUsize::new(0),
            tcp_port: AtomicU64::new(0),
        }
    }

    /// A fresh client id (never reused).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a connected client.
    pub fn register(&self, entry: Arc<ClientEntry>) {
        lock(&self.clients).insert(entry.id, entry);
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a client that disconnected.
    pub fn unregister(&self, id: u64) {
        if lock(&self.clients).remove(&id).is_some() {
            self.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Connected clients now.
    #[must_use]
    pub fn connected_clients(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Every connected client, by id.
    #[must_use]
    pub fn clients(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.clients).values().cloned().collect()
    }

    /// Records the RESP port the listener is bound to (INFO's `tcp_port`).
    pub fn set_tcp_port(&self, port: u16) {
        self.tcp_port.store(u64::from(port), Ordering::Relaxed);
    }

    /// The RESP port, 0 before the listener starts.
    #[must_use]
    pub fn tcp_port(&self) -> u64 {
        self.tcp_port.load(Ordering::Relaxed)
    }
}

/// 20 random bytes in hex, as Redis's `getRandomHexChars` makes `run_id`.
fn random_run_id() -> String {
    let bytes: [u8; 20] = rand::random();
    bytes.iter().fold(String::with_capacity(40), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (each critical section here is a single assignment or lookup).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::table::{command_names, CommandId};

    #[test]
    fn calls_count_under_their_command_and_in_the_total() {
        let stats = Stats::new();
        let get = CommandId::of("get").unwrap();
        let list = CommandId::of("client|list").unwrap();
        stats.record_call(get, Duration::from_micros(5), false);
        stats.record_call(get, Duration::from_micros(7), true);
        stats.record_call(list, Duration::from_micros(1), false);
        stats.note_error(b"ERR x");
        let c = stats.command("get").unwrap();
        assert!(std::ptr::eq(c, stats.command_at(get).unwrap()));
        assert_eq!(c.calls.load(Ordering::Relaxed), 2);
        assert_eq!(c.usec.load(Ordering::Relaxed), 12);
        assert_eq!(c.failed_calls.load(Ordering::Relaxed), 1);
        assert_eq!(c.latency().map(LatencyHistogram::count), Some(2));
        assert_eq!(stats.commands_processed(), 3);
        let names: Vec<_> = stats.commands().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["client|list", "get"]);
        assert_eq!(stats.error_counts(), vec![("ERR".to_owned(), 1)]);
        stats.reset();
        assert_eq!(stats.commands_processed(), 0);
        assert!(stats.commands().is_empty());
        assert!(stats.error_counts().is_empty());
        assert_eq!(stats.error_replies.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn every_command_counts_at_its_id() {
        let stats = Stats::new();
        let mut count = 0;
        for name in command_names() {
            let id = CommandId::of(name).unwrap();
            assert_eq!(id.name(), name);
            assert!(
                std::ptr::eq(stats.command_at(id).unwrap(), stats.command(name).unwrap()),
                "{name}"
            );
            count += 1;
        }
        assert_eq!(count, stats.commands.len(), "one counter per command");
    }

    #[test]
    fn hot_counters_sit_on_lines_of_their_own() {
        assert_eq!(std::mem::align_of::<CachePadded<AtomicU64>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<CommandStats>>() % 128, 0);
    }

    #[test]
    fn client_list_shows_the_last_read() {
        let entry = ClientEntry::new(7, None, None, -1);
        let field = |line: &[u8], name: &str| {
            let line = String::from_utf8(line.to_vec()).unwrap();
            line.split(' ')
                .find_map(|f| f.strip_prefix(&format!("{name}=")).map(str::to_owned))
                .unwrap()
        };
        let later = entry.created + Duration::from_secs(30);
        // Never read: idle since it connected.
        let line = entry.info_line(later);
        assert_eq!(field(&line, "idle"), "30");
        assert_eq!(field(&line, "age"), "30");
        assert_eq!(field(&line, "qbuf"), "0");
        entry.note_read(entry.created + Duration::from_millis(25_500), 12);
        let line = entry.info_line(later);
        assert_eq!(field(&line, "idle"), "4");
        assert_eq!(field(&line, "qbuf"), "12");
        assert_eq!(
            entry.last_interaction(),
            entry.created + Duration::from_millis(25_500)
        );
    }
}
