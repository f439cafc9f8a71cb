//! The node's configuration: where it comes from, what it means, and whether
//! it makes sense.
//!
//! Data flows one way: `main` parses the command line into [`Cli`], then
//! [`Config::load`] merges four layers with figment, lowest first:
//!
//! 1. built-in defaults ([`Config::default`], documented key by key in
//!    `config/default.toml`),
//! 2. the TOML file named by `--config FILE` or `RAFTIS_CONFIG`,
//! 3. `RAFTIS_*` environment variables, where a double underscore nests
//!    (`RAFTIS_RAFT__HEARTBEAT_INTERVAL_MS` sets `raft.heartbeat_interval_ms`),
//! 4. command-line flags.
//!
//! Every layer is a figment provider whose metadata knows how to name the
//! place a key came from ("environment variable RAFTIS_ID", "config file
//! node1.toml", "command-line flag --id"), so that both type errors found by
//! serde and the semantic checks of [`Config::validate`] report one line with
//! the key and its origin. Unknown keys are errors, so a typo cannot silently
//! fall back to a default. The validated `Config` is then handed to the node
//! and never changes while it runs.
//!
//! Addresses are parsed when the configuration is read ([`HostPort`],
//! [`InitialCluster`]), so the accessors the server uses cannot fail.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use figment::error::Kind;
use figment::providers::{Env, Serialized};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "RAFTIS_";

/// Environment variable that names the configuration file (like `--config`).
pub const CONFIG_FILE_ENV: &str = "RAFTIS_CONFIG";

/// Added to the RESP port to get the default peer port (6379 → 16379), as
/// Redis Cluster does for its bus port.
pub const PEER_PORT_OFFSET: u16 = 10000;

/// The command line.
///
/// Each flag overrides the configuration key of the same name (dashes for
/// underscores); unset flags leave the lower layers alone.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "raftis",
    version,
    about = "A replicated key-value store: Raft consensus behind the Redis protocol",
    long_about = "A replicated key-value store: Raft consensus behind the Redis protocol.\n\n\
        With no arguments, raftis starts a one-node cluster that redis-cli reaches on \
        127.0.0.1:6379 and keeps its data in ./data.",
    after_help = "Configuration is merged from, lowest first: built-in defaults, the TOML file \
        given by --config (or RAFTIS_CONFIG), RAFTIS_* environment variables (a double \
        underscore nests: RAFTIS_TELEMETRY__OTLP_ENDPOINT sets telemetry.otlp_endpoint), \
        and these flags. config/default.toml documents every key."
)]
pub struct Cli {
    /// TOML configuration file (config/default.toml lists every key)
    #[arg(long, value_name = "FILE", env = CONFIG_FILE_ENV, hide_env_values = true)]
    pub config: Option<PathBuf>,

    /// This node's Raft id, at least 1 [default: 1]
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,

    /// Address for Redis clients (RESP) [default: 127.0.0.1:6379]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Address for other members (Raft and forwarded commands) [default: the RESP port + 10000]
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<String>,

    /// Address for /metrics and /health [default: 127.0.0.1:9379]
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<String>,

    /// Directory for the Raft log and the data [default: ./data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Members of a new cluster, the same on every node: 1=HOST:PORT,2=HOST:PORT,... (peer addresses)
    #[arg(long, value_name = "LIST")]
    pub initial_cluster: Option<String>,

    /// Join the running cluster that the member at ADDR (its RESP address) belongs to;
    /// needs an empty --data-dir on first start, excludes --initial-cluster
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,

    /// DISASTER RECOVERY ONLY: make this node the only voter of its cluster,
    /// keeping its data, when a majority of the voters is lost for good
    #[arg(long)]
    pub force_new_cluster: bool,

    /// A tool to run instead of a node (backup, restore, status)
    #[command(subcommand)]
    pub tool: Option<crate::tool::Tool>,
}

/// The whole configuration of one node. See `config/default.toml` for what
/// every key means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's Raft id (at least 1), unique in the cluster.
    pub id: u64,
    /// Address the RESP server binds.
    pub listen: HostPort,
    /// Address the peer server binds; `None` means [`Config::peer_listen_addr`]'s
    /// default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<HostPort>,
    /// Address of the HTTP server (metrics, health).
    pub http_listen: HostPort,
    /// Directory of this node's database.
    pub data_dir: PathBuf,
    /// Members to bootstrap a new cluster with; `None` means a one-node
    /// cluster (see [`Config::initial_members`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster: Option<InitialCluster>,
    /// How long a command may wait for a leader and for its commit.
    pub request_timeout_ms: u64,
    /// Raft timing and log compaction.
    pub raft: RaftConfig,
    /// Client limits, with Redis's names.
    pub limits: LimitsConfig,
    /// The storage engine.
    pub storage: StorageConfig,
    /// Traces export.
    pub telemetry: TelemetryConfig,
    /// Logging.
    pub log: LogConfig,
    /// The RESP address of a member of the cluster to join (`--join`), a
    /// flag only: the node starts without initializing a cluster and asks
    /// that member to add it.
    #[serde(skip)]
    pub join: Option<HostPort>,
    /// `--force-new-cluster`, a flag only (never a key, so that it cannot
    /// linger in a config file): rewrite the membership to this node alone
    /// before starting. See `cluster::force_new_cluster`.
    #[serde(skip)]
    pub force_new_cluster: bool,
}

/// `[raft]`: timing and log compaction, with etcd-like timing defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Interval between the leader's heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries were applied since the last one.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind a snapshot, so that slightly lagging followers
    /// catch up from the log rather than by snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// Timeout of one snapshot transfer request to a follower.
    pub install_snapshot_timeout_ms: u64,
    /// How a linearizable read confirms that the leader still leads.
    pub read_policy: ReadPolicy,
}

/// `raft.read_policy`: how the leader confirms, for a linearizable read,
/// that no other node can have become leader (and committed writes this
/// read would miss).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadPolicy {
    /// etcd's ReadIndex: a heartbeat round to a quorum, shared by the reads
    /// waiting for it. Assumes nothing about clocks.
    #[default]
    ReadIndex,
    /// A leader lease: no round while a quorum acknowledged the leader
    /// within the last `election_timeout_max_ms`, since until then no
    /// member votes for another node. Assumes the members' clocks run at
    /// the same rate (not that they agree); a restarted node neither votes
    /// nor campaigns for `election_timeout_max_ms`, since its promise not to
    /// vote was lost with its memory. Every member must use it, with the
    /// same `election_timeout_max_ms`: the lease relies on every voter
    /// keeping that rule for that long.
    Lease,
}

/// `[limits]`: client limits, with Redis's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Maximum number of client connections at once.
    pub maxclients: u64,
    /// Maximum length of one bulk string in a request, in bytes.
    pub proto_max_bulk_len: u64,
    /// Maximum size of one client's unparsed input, in bytes.
    pub client_query_buffer_limit: u64,
    /// Close a client connection idle for this many seconds; 0 never does.
    pub timeout: u64,
}

/// `[storage]`: the fjall storage engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Block cache size in MiB.
    pub cache_size_mb: u64,
    /// Largest memtable of each fjall keyspace, in MiB, before it is
    /// flushed to disk.
    pub memtable_size_mb: u64,
    /// Free space, in MiB, below which this node refuses writes (and
    /// below half of which it stops taking new log entries); 0 disables
    /// the check.
    pub min_free_mb: u64,
    /// Keep an in-memory filter of the stored keys (5 to 7 bytes per key)
    /// so that writes of new keys skip the storage lookup of their
    /// previous value.
    pub key_filter: bool,
}

/// `[telemetry]`: OpenTelemetry export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP endpoint (e.g. `http://127.0.0.1:4317`); `None` exports nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of traces sampled, from 0 to 1.
    pub sample_ratio: f64,
    /// Also print every sampled span on stdout (development).
    pub stdout: bool,
}

/// The default log filter: raftis at info (startup, leader and membership
/// changes, snapshots: one line each, never one per request); the libraries
/// underneath only when something is wrong, since openraft's and fjall's
/// info lines repeat raftis's own at the level of their internals.
pub const DEFAULT_LOG_LEVEL: &str = "info,openraft=warn,fjall=warn,lsm_tree=warn";

/// `[log]`: the log written to stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`info`) or `tracing` filter directives (`info,openraft=warn`);
    /// `RUST_LOG` overrides it.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            id: 1,
            listen: HostPort::new("127.0.0.1", 6379),
            peer_listen: None,
            http_listen: HostPort::new("127.0.0.1", 9379),
            data_dir: PathBuf::from("./data"),
            initial_cluster: None,
            request_timeout_ms: 5000,
            raft: RaftConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            telemetry: TelemetryConfig::default(),
            log: LogConfig::default(),
            join: None,
            force_new_cluster: false,
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_logs_since_last: 100_000,
            max_in_snapshot_log_to_keep: 1000,
            install_snapshot_timeout_ms: 10_000,
            read_policy: ReadPolicy::ReadIndex,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            maxclients: 10_000,
            proto_max_bulk_len: 512 * 1024 * 1024,
            client_query_buffer_limit: 1024 * 1024 * 1024,
            timeout: 0,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_size_mb: 32,
            memtable_size_mb: 8,
            min_free_mb: 256,
            key_filter: true,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 0.01,
            stdout: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: DEFAULT_LOG_LEVEL.to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Merges defaults, the configuration file, `RAFTIS_*` environment
    /// variables and `cli`'s flags (lowest first), then validates the result.
    ///
    /// # Errors
    ///
    /// [`ConfigError::File`] if the file cannot be read or is not TOML;
    /// [`ConfigError::Key`] naming the key and where it came from if a key is
    /// unknown, has the wrong type or an invalid value;
    /// [`ConfigError::Join`] for a `--join` address that is not host:port,
    /// or given with `initial_cluster`.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let join = match &cli.join {
            None => None,
            Some(addr) => Some(
                addr.parse::<HostPort>()
                    .map_err(|why| ConfigError::Join(format!("--join: {why}")))?,
            ),
        };
        let mut figment = Figment::from(Layer::defaults());
        if let Some(path) = &cli.config {
            figment = figment.merge(Layer::file(path)?);
        }
        let figment = figment.merge(Layer::env()).merge(Layer::flags(cli));
        let mut config: Config = figment
            .extract()
            .map_err(|error| from_figment(&figment, error))?;
        config.join = join;
        config.force_new_cluster = cli.force_new_cluster;
        // Both record this node's peer address in the membership, where the
        // other members dial it: a wildcard address would have them dial
        // themselves.
        let advertised = config.peer_listen_addr();
        if (config.join.is_some() || config.force_new_cluster)
            && matches!(advertised.host(), "0.0.0.0" | "::")
        {
            let flag = if config.join.is_some() {
                "--join"
            } else {
                "--force-new-cluster"
            };
            return Err(ConfigError::Join(format!(
                "{flag} records this node's peer address ({advertised}) in the cluster's \
                 membership, where other members dial it; give --peer-listen an address \
                 they can reach, not a wildcard"
            )));
        }
        if config.force_new_cluster && config.join.is_some() {
            return Err(ConfigError::Join(
                "--force-new-cluster cannot be combined with --join: it starts a new \
                 cluster from this node's own data"
                    .into(),
            ));
        }
        if config.join.is_some() && config.initial_cluster.is_some() {
            let origin = origin_of(&figment, "initial_cluster")
                .map(|(_, o)| format!(" (initial_cluster from {o})"))
                .unwrap_or_default();
            return Err(ConfigError::Join(format!(
                "--join cannot be combined with initial_cluster{origin}: a joining node \
                 gets its members from the cluster it joins"
            )));
        }
        config
            .check()
            .map_err(|violation| violation.blame(|key| origin_of(&figment, key)))?;
        Ok(config)
    }

    /// Checks the values that serde's types cannot: ranges, relations between
    /// keys, the member list. [`Config::load`] already calls it; call it on a
    /// `Config` built in code.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Key`] for the first invalid key (without an origin,
    /// since a `Config` built in code has none).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|violation| violation.blame(|_| None))
    }

    /// The address the peer server binds: `peer_listen`, or else the RESP
    /// host with the RESP port + 10000 (port 0 stays 0, so tests can ask for
    /// ephemeral ports for both).
    pub fn peer_listen_addr(&self) -> HostPort {
        match &self.peer_listen {
            Some(addr) => addr.clone(),
            None => HostPort::new(&self.listen.host, default_peer_port(self.listen.port)),
        }
    }

    /// The members to bootstrap a new cluster with, id → peer address: the
    /// `initial_cluster` list, or else this node alone at its
    /// [`peer_listen_addr`](Config::peer_listen_addr).
    pub fn initial_members(&self) -> BTreeMap<u64, String> {
        match &self.initial_cluster {
            Some(cluster) => cluster
                .members()
                .iter()
                .map(|(id, addr)| (*id, addr.to_string()))
                .collect(),
            None => BTreeMap::from([(self.id, self.peer_listen_addr().to_string())]),
        }
    }

    /// How long a command may wait for a leader and for its commit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    fn check(&self) -> Result<(), Violation> {
        if self.id == 0 {
            return Err(Violation::key("id", "must be at least 1"));
        }
        if self.peer_listen.is_none() && self.listen.port.checked_add(PEER_PORT_OFFSET).is_none() {
            return Err(Violation::key(
                "listen",
                format!(
                    "port {} leaves no default for peer_listen (port + {PEER_PORT_OFFSET} is past 65535); set peer_listen",
                    self.listen.port
                ),
            ));
        }
        let peer = self.peer_listen_addr();
        // A defaulted peer_listen is derived from listen, so listen is what
        // the user has to change.
        let (peer_key, peer_label) = if self.peer_listen.is_some() {
            ("peer_listen", "peer_listen")
        } else {
            ("listen", "peer_listen (by default from listen)")
        };
        for ((a, a_label, a_addr), (b, b_label, b_addr)) in [
            (
                ("listen", "listen", &self.listen),
                (peer_key, peer_label, &peer),
            ),
            (
                ("listen", "listen", &self.listen),
                ("http_listen", "http_listen", &self.http_listen),
            ),
            (
                (peer_key, peer_label, &peer),
                ("http_listen", "http_listen", &self.http_listen),
            ),
        ] {
            // Port 0 asks the OS for a fresh port, so equal addresses don't clash.
            if a_addr == b_addr && a_addr.port != 0 {
                return Err(Violation::either(
                    (a, format!("{a_addr} is also the address of {b_label}")),
                    (b, format!("{b_addr} is also the address of {a_label}")),
                ));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(Violation::key("data_dir", "must not be empty"));
        }
        if let Some(cluster) = &self.initial_cluster {
            if !cluster.members().contains_key(&self.id) {
                let ids = cluster.ids();
                return Err(Violation::either(
                    (
                        "initial_cluster",
                        format!("does not list this node's id {} (ids: {ids})", self.id),
                    ),
                    (
                        "id",
                        format!("{} is not in initial_cluster (ids: {ids})", self.id),
                    ),
                ));
            }
        }
        if self.request_timeout_ms == 0 {
            return Err(Violation::key("request_timeout_ms", "must be at least 1"));
        }
        self.raft.check()?;
        self.limits.check()?;
        if self.storage.cache_size_mb == 0 {
            return Err(Violation::key(
                "storage.cache_size_mb",
                "must be at least 1",
            ));
        }
        if self.storage.memtable_size_mb == 0 {
            return Err(Violation::key(
                "storage.memtable_size_mb",
                "must be at least 1",
            ));
        }
        if self.storage.memtable_size_mb > MAX_MEMTABLE_SIZE_MB {
            return Err(Violation::key(
                "storage.memtable_size_mb",
                format!(
                    "{} is more than {MAX_MEMTABLE_SIZE_MB} (1 GiB); the value is in MiB",
                    self.storage.memtable_size_mb
                ),
            ));
        }
        if self.storage.min_free_mb > MAX_MIN_FREE_MB {
            return Err(Violation::key(
                "storage.min_free_mb",
                format!(
                    "{} is more than {MAX_MIN_FREE_MB} (1 TiB); the value is in MiB (0 disables the check)",
                    self.storage.min_free_mb
                ),
            ));
        }
        self.telemetry.check()?;
        self.log.check()
    }
}

impl RaftConfig {
    /// Interval between the leader's heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Lower bound of the randomized election timeout.
    pub fn election_timeout_min(&self) -> Duration {
        Duration::from_millis(self.election_timeout_min_ms)
    }

    /// Upper bound of the randomized election timeout.
    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
    }

    /// Timeout of one snapshot transfer request.
    pub fn install_snapshot_timeout(&self) -> Duration {
        Duration::from_millis(self.install_snapshot_timeout_ms)
    }

    fn check(&self) -> Result<(), Violation> {
        for (key, value) in [
            ("raft.heartbeat_interval_ms", self.heartbeat_interval_ms),
            (
                "raft.snapshot_logs_since_last",
                self.snapshot_logs_since_last,
            ),
            (
                "raft.install_snapshot_timeout_ms",
                self.install_snapshot_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(Violation::key(key, "must be at least 1"));
            }
        }
        // A follower must hear several heartbeats before it may time out, or
        // a healthy leader gets deposed.
        if self.heartbeat_interval_ms >= self.election_timeout_min_ms {
            return Err(Violation::either(
                (
                    "raft.heartbeat_interval_ms",
                    format!(
                        "must be less than raft.election_timeout_min_ms ({})",
                        self.election_timeout_min_ms
                    ),
                ),
                (
                    "raft.election_timeout_min_ms",
                    format!(
                        "must be greater than raft.heartbeat_interval_ms ({})",
                        self.heartbeat_interval_ms
                    ),
                ),
            ));
        }
        // The timeout is drawn from [min, max): an empty range would make all
        // nodes time out together and split every vote.
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err(Violation::either(
                (
                    "raft.election_timeout_min_ms",
                    format!(
                        "must be less than raft.election_timeout_max_ms ({})",
                        self.election_timeout_max_ms
                    ),
                ),
                (
                    "raft.election_timeout_max_ms",
                    format!(
                        "must be greater than raft.election_timeout_min_ms ({})",
                        self.election_timeout_min_ms
                    ),
                ),
            ));
        }
        Ok(())
    }
}

impl LimitsConfig {
    /// How long a client may stay idle before it is disconnected; `None`
    /// when `timeout` is 0.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.timeout > 0).then(|| Duration::from_secs(self.timeout))
    }

    fn check(&self) -> Result<(), Violation> {
        for (key, value) in [
            ("limits.maxclients", self.maxclients),
            ("limits.proto_max_bulk_len", self.proto_max_bulk_len),
            (
                "limits.client_query_buffer_limit",
                self.client_query_buffer_limit,
            ),
        ] {
            if value == 0 {
                return Err(Violation::key(key, "must be at least 1"));
            }
        }
        // A bulk string longer than the input buffer could never be received.
        if self.proto_max_bulk_len > self.client_query_buffer_limit {
            return Err(Violation::either(
                (
                    "limits.proto_max_bulk_len",
                    format!(
                        "must not exceed limits.client_query_buffer_limit ({})",
                        self.client_query_buffer_limit
                    ),
                ),
                (
                    "limits.client_query_buffer_limit",
                    format!(
                        "must be at least limits.proto_max_bulk_len ({})",
                        self.proto_max_bulk_len
                    ),
                ),
            ));
        }
        Ok(())
    }
}

/// Largest `storage.min_free_mb` accepted (1 TiB): a larger value is most
/// likely a size given in bytes, which would refuse every write.
const MAX_MIN_FREE_MB: u64 = 1024 * 1024;

/// Largest `storage.memtable_size_mb` accepted (1 GiB): every keyspace may
/// hold that much in memory, and the journal replays it on restart.
const MAX_MEMTABLE_SIZE_MB: u64 = 1024;

impl StorageConfig {
    /// Block cache size in bytes.
    pub fn cache_size_bytes(&self) -> u64 {
        self.cache_size_mb.saturating_mul(1024 * 1024)
    }

    /// The storage engine's memory settings, in bytes.
    pub fn engine(&self) -> crate::storage::EngineOptions {
        crate::storage::EngineOptions {
            cache_size_bytes: self.cache_size_bytes(),
            memtable_size_bytes: self.memtable_size_mb.saturating_mul(1024 * 1024),
            key_filter: self.key_filter,
        }
    }

    /// `min_free_mb` in bytes; 0 when the free-space check is disabled.
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_mb.saturating_mul(1024 * 1024)
    }
}

impl TelemetryConfig {
    fn check(&self) -> Result<(), Violation> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(Violation::key(
                "telemetry.sample_ratio",
                format!("{} is not between 0 and 1", self.sample_ratio),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            if endpoint.starts_with("https://") {
                return Err(Violation::key(
                    "telemetry.otlp_endpoint",
                    format!(
                        "'{endpoint}': TLS export is not built in; send to a local collector over http://"
                    ),
                ));
            }
            let Some(authority) = endpoint.strip_prefix("http://") else {
                return Err(Violation::key(
                    "telemetry.otlp_endpoint",
                    format!(
                        "'{endpoint}' is not an http:// URL (leave the key out to export nothing)"
                    ),
                ));
            };
            // The port is required: without one gRPC would go to port 80,
            // never a collector's 4317, and fail only at export time.
            let authority = authority.strip_suffix('/').unwrap_or(authority);
            let valid = authority.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains(['/', ' ', '@'])
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(Violation::key(
                    "telemetry.otlp_endpoint",
                    format!(
                        "'{endpoint}' is not http://HOST:PORT (an OTLP/gRPC collector listens on 4317)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl LogConfig {
    fn check(&self) -> Result<(), Violation> {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        let is_level = |s: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()));
        for directive in self.level.split(',').map(str::trim) {
            // EnvFilter reads a bare word as a target at level trace, which
            // would turn a misspelt level into a silent no-op.
            let misspelt_level = !directive.contains(['=', '[']) && !is_level(directive);
            let parsed = directive.parse::<tracing_subscriber::filter::Directive>();
            if directive.is_empty() || misspelt_level || parsed.is_err() {
                return Err(Violation::key(
                    "log.level",
                    format!(
                        "'{directive}' is not a level ({}) or a target=level directive",
                        LEVELS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn default_peer_port(resp_port: u16) -> u16 {
    if resp_port == 0 {
        return 0;
    }
    // Only reachable for a Config that failed validation: 0 then at least
    // binds instead of wrapping around onto a low port.
    resp_port.checked_add(PEER_PORT_OFFSET).unwrap_or(0)
}

/// A `host:port` address: an IP address or a host name, and a port.
///
/// Written and read as `127.0.0.1:6379`, `localhost:6379` or `[::1]:6379`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// An address from its parts (`host` without brackets for IPv6).
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            port,
        }
    }

    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| format!("'{s}' is not a host:port address ({why})");
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| invalid("no port; e.g. 127.0.0.1:6379"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| invalid("unclosed '['"))?;
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| invalid("not an IPv6 address inside [ ]"))?;
            return Ok(Self::new(inner, port));
        }
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        // Without brackets "::1:16379" could be an address with or without a port.
        if host.contains(':') {
            return Err(invalid("IPv6 addresses need brackets, e.g. [::1]:6379"));
        }
        let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if !host.chars().all(host_char) {
            return Err(invalid("bad character in host"));
        }
        Ok(Self::new(host, port))
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HostPort> for String {
    fn from(addr: HostPort) -> Self {
        addr.to_string()
    }
}

/// The `initial_cluster` list: `1=127.0.0.1:16379,2=127.0.0.1:16380,...`,
/// member id → peer address. Ids are at least 1 and unique, addresses are
/// unique `host:port` with a non-zero port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InitialCluster(BTreeMap<u64, HostPort>);

impl InitialCluster {
    /// Member id → peer address.
    pub fn members(&self) -> &BTreeMap<u64, HostPort> {
        &self.0
    }

    fn ids(&self) -> String {
        let ids: Vec<String> = self.0.keys().map(u64::to_string).collect();
        ids.join(", ")
    }
}

impl fmt::Display for InitialCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (id, addr)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{id}={addr}")?;
        }
        Ok(())
    }
}

impl FromStr for InitialCluster {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("is empty (leave it out for a one-node cluster)".to_owned());
        }
        let mut members = BTreeMap::new();
        for entry in s.split(',').map(str::trim) {
            let (id, addr) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry '{entry}' is not id=host:port"))?;
            let id = id
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|id| *id >= 1)
                .ok_or_else(|| format!("entry '{entry}': the id must be a number, at least 1"))?;
            let addr = addr
                .trim()
                .parse::<HostPort>()
                .map_err(|e| format!("entry '{entry}': {e}"))?;
            if addr.port == 0 {
                return Err(format!("entry '{entry}': port 0 cannot be reached"));
            }
            if let Some((other, _)) = members.iter().find(|(_, a)| **a == addr) {
                return Err(format!(
                    "members {other} and {id} have the same address {addr}"
                ));
            }
            if members.insert(id, addr).is_some() {
                return Err(format!("id {id} is listed twice"));
            }
        }
        Ok(Self(members))
    }
}

impl TryFrom<String> for InitialCluster {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<InitialCluster> for String {
    fn from(cluster: InitialCluster) -> Self {
        cluster.to_string()
    }
}

/// Why the configuration was refused. Each message is one line meant to be
/// printed as `raftis: {error}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read or is not valid TOML.
    #[error("invalid config: config file {path}: {reason}")]
    File {
        /// The file as given.
        path: PathBuf,
        /// What is wrong with it, with line and column for syntax errors.
        reason: String,
    },
    /// A key is unknown, has the wrong type, or an invalid value.
    #[error("invalid config: key '{key}'{}: {message}", origin_suffix(origin.as_deref()))]
    Key {
        /// Dotted key, e.g. `raft.election_timeout_min_ms`.
        key: String,
        /// Where the value came from, e.g. `environment variable RAFTIS_ID`;
        /// `None` for a `Config` built in code.
        origin: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// `--join` or `--force-new-cluster` is malformed or contradicts another setting.
    #[error("invalid config: {0}")]
    Join(String),
}

fn origin_suffix(origin: Option<&str>) -> String {
    origin.map(|o| format!(" (from {o})")).unwrap_or_default()
}

/// A failed check, before we know where the values came from. When the
/// fault lies in a relation between two keys, either may be blamed, each
/// with its own message.
#[derive(Debug)]
struct Violation {
    key: (&'static str, String),
    other: Option<(&'static str, String)>,
}

impl Violation {
    fn key(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key: (key, message.into()),
            other: None,
        }
    }

    fn either(key: (&'static str, String), other: (&'static str, String)) -> Self {
        Self {
            key,
            other: Some(other),
        }
    }

    /// Blames the key set by the higher layer, because the value the user
    /// set on purpose (a flag over a default) is the likelier mistake; a tie
    /// blames the first key. `origin` gives a key's layer rank and origin.
    fn blame(self, origin: impl Fn(&str) -> Option<(u8, String)>) -> ConfigError {
        let rank_of = |found: &Option<(u8, String)>| found.as_ref().map_or(0, |(rank, _)| *rank);
        let mut blamed = self.key;
        let mut found = origin(blamed.0);
        if let Some(other) = self.other {
            let other_found = origin(other.0);
            if rank_of(&other_found) > rank_of(&found) {
                blamed = other;
                found = other_found;
            }
        }
        ConfigError::Key {
            key: blamed.0.to_owned(),
            origin: found.map(|(_, origin)| origin),
            message: blamed.1,
        }
    }
}

/// One figment provider per configuration source. Its metadata names the
/// layer and, through the interpolater, describes where a given key came
/// from in the user's terms (a file, a variable name, a flag).
struct Layer {
    metadata: Metadata,
    data: Result<Map<Profile, Dict>, figment::Error>,
}

/// Metadata names of the layers, from lowest to highest precedence; the
/// position is the rank used to decide which key to blame.
const LAYER_NAMES: [&str; 4] = [
    "built-in defaults",
    "config file",
    "environment",
    "command-line flags",
];

impl Layer {
    fn defaults() -> Self {
        Self {
            metadata: Metadata::named(LAYER_NAMES[0])
                .interpolater(|_: &Profile, _: &[&str]| "built-in default".to_owned()),
            data: Serialized::defaults(Config::default()).data(),
        }
    }

    fn file(path: &Path) -> Result<Self, ConfigError> {
        let file_error = |reason: String| ConfigError::File {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| file_error(format!("cannot be read: {e}")))?;
        let dict: Dict = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let (line, column) = line_column(&text, span.start);
                    format!("line {line}, column {column}: ")
                })
                .unwrap_or_default();
            let message = e.message().lines().collect::<Vec<_>>().join("; ");
            file_error(format!("{at}not valid TOML: {message}"))
        })?;
        let shown = path.display().to_string();
        Ok(Self {
            metadata: Metadata::named(LAYER_NAMES[1])
                .source(path)
                .interpolater(move |_: &Profile, _: &[&str]| format!("config file {shown}")),
            data: Ok(Profile::Default.collect(dict)),
        })
    }

    fn env() -> Self {
        // RAFTIS_CONFIG names the file; it is not a key of its own.
        let env = Env::prefixed(ENV_PREFIX)
            .split("__")
            .ignore(&[&CONFIG_FILE_ENV[ENV_PREFIX.len()..]]);
        Self {
            metadata: Metadata::named(LAYER_NAMES[2]).interpolater(|_: &Profile, keys: &[&str]| {
                let name: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
                format!("environment variable {ENV_PREFIX}{}", name.join("__"))
            }),
            data: env.data(),
        }
    }

    fn flags(cli: &Cli) -> Self {
        #[derive(Serialize)]
        struct Flags<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            listen: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            peer_listen: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            http_listen: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data_dir: Option<&'a Path>,
            #[serde(skip_serializing_if = "Option::is_none")]
            initial_cluster: Option<&'a str>,
        }
        let flags = Flags {
            id: cli.id,
            listen: cli.listen.as_deref(),
            peer_listen: cli.peer_listen.as_deref(),
            http_listen: cli.http_listen.as_deref(),
            data_dir: cli.data_dir.as_deref(),
            initial_cluster: cli.initial_cluster.as_deref(),
        };
        Self {
            metadata: Metadata::named(LAYER_NAMES[3]).interpolater(|_: &Profile, keys: &[&str]| {
                format!("command-line flag --{}", keys.join(".").replace('_', "-"))
            }),
            data: Serialized::defaults(flags).data(),
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.data.clone()
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The rank and the user-facing origin of the value at `key`.
fn origin_of(figment: &Figment, key: &str) -> Option<(u8, String)> {
    let metadata = figment.find_metadata(key)?;
    let rank = LAYER_NAMES
        .iter()
        .position(|name| *name == metadata.name)
        .and_then(|r| u8::try_from(r).ok())
        .unwrap_or(0);
    let keys: Vec<&str> = key.split('.').collect();
    Some((rank, metadata.interpolate(&Profile::Default, &keys)))
}

fn from_figment(figment: &Figment, error: figment::Error) -> ConfigError {
    // figment may chain several errors (`error` is the head of the chain);
    // the contract is one line, about one of them.
    let mut path = error.path.clone();
    let message = match &error.kind {
        Kind::UnknownField(field, expected) => {
            // Depending on nesting, figment has or hasn't put the field in the path yet.
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            error.kind.to_string()
        }
        Kind::Message(message) => message.clone(),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {actual}")
        }
        kind => kind.to_string(),
    };
    let key = path.join(".");
    // The error's own metadata can be that of the enclosing table (set by
    // a lower layer); the value at the key itself knows its provider.
    let origin = origin_of(figment, &key)
        .map(|(_, origin)| origin)
        .or_else(|| {
            error
                .metadata
                .as_ref()
                .map(|md| md.interpolate(&Profile::Default, &path))
        });
    ConfigError::Key {
        key,
        origin,
        message,
    }
}

// figment::Jail's closures must return figment's own (large) error type.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    use figment::Jail;

    /// Loads with the given flags (program name first) and returns the error
    /// line, failing the jail if loading succeeds.
    fn load_err(args: &[&str]) -> figment::error::Result<String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match Config::load(&cli) {
            Ok(config) => Err(format!("expected an error, got {config:?}").into()),
            Err(e) => Ok(e.to_string()),
        }
    }

    fn load(args: &[&str]) -> figment::error::Result<Config> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        Config::load(&cli).map_err(|e| e.to_string().into())
    }

    fn assert_line(actual: &str, expected: &str) -> figment::error::Result<()> {
        if actual == expected {
            Ok(())
        } else {
            Err(format!("\n  actual: {actual}\nexpected: {expected}").into())
        }
    }

    /// Removes the RAFTIS_* variables, restored when the jail ends. Unlike
    /// `Jail::clear_env` this leaves PATH, HOME and TMPDIR alone for tests
    /// running concurrently in the same process.
    fn clear_env(jail: &mut Jail) {
        let ours: Vec<String> = std::env::vars()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(ENV_PREFIX))
            .collect();
        for name in ours {
            jail.set_env(&name, "");
            std::env::remove_var(&name);
        }
    }

    fn manifest_file(name: &str) -> String {
        format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn defaults() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let config = load(&["raftis"])?;
            assert_eq!(config, Config::default());
            assert_eq!(config.id, 1);
            assert_eq!(config.listen.to_string(), "127.0.0.1:6379");
            assert_eq!(config.peer_listen_addr().to_string(), "127.0.0.1:16379");
            assert_eq!(config.http_listen.to_string(), "127.0.0.1:9379");
            assert_eq!(config.data_dir, PathBuf::from("./data"));
            assert_eq!(
                config.initial_members(),
                BTreeMap::from([(1, "127.0.0.1:16379".to_owned())])
            );
            assert_eq!(config.request_timeout(), Duration::from_secs(5));
            assert_eq!(config.raft.heartbeat_interval(), Duration::from_millis(100));
            assert_eq!(config.limits.maxclients, 10_000);
            assert_eq!(config.limits.proto_max_bulk_len, 536_870_912);
            assert_eq!(config.limits.client_query_buffer_limit, 1_073_741_824);
            assert_eq!(config.limits.idle_timeout(), None);
            assert_eq!(config.telemetry.otlp_endpoint, None);
            assert_eq!(config.telemetry.sample_ratio, 0.01);
            assert_eq!(config.log.format, LogFormat::Text);
            assert_eq!(Config::default().validate(), Ok(()));
            Ok(())
        });
    }

    #[test]
    fn default_toml_equals_builtin_defaults() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let path = manifest_file("default.toml");
            assert_eq!(load(&["raftis", "--config", &path])?, Config::default());
            Ok(())
        });
    }

    #[test]
    fn default_toml_documents_every_key() {
        // Optional keys have no default value to serialize; they are listed
        // commented out in the file.
        let mut config = Config {
            peer_listen: Some(HostPort::new("127.0.0.1", 16379)),
            initial_cluster: "1=127.0.0.1:16379".parse().ok(),
            ..Config::default()
        };
        config.telemetry.otlp_endpoint = Some("http://127.0.0.1:4317".to_owned());
        let text = std::fs::read_to_string(manifest_file("default.toml")).unwrap();
        let dict = Serialized::defaults(&config).data().unwrap();
        let mut missing = Vec::new();
        for (key, value) in &dict[&Profile::Default] {
            match value.as_dict() {
                Some(table) => {
                    assert!(text.contains(&format!("[{key}]")), "no [{key}] table");
                    for inner in table.keys() {
                        let documented = text.lines().any(|line| {
                            let line = line.trim_start_matches(['#', ' ']);
                            line.starts_with(&format!("{inner} ="))
                        });
                        if !documented {
                            missing.push(format!("{key}.{inner}"));
                        }
                    }
                }
                None => {
                    let documented = text.lines().any(|line| {
                        line.trim_start_matches(['#', ' '])
                            .starts_with(&format!("{key} ="))
                    });
                    if !documented {
                        missing.push(key.clone());
                    }
                }
            }
        }
        assert!(missing.is_empty(), "undocumented keys: {missing:?}");
    }

    #[test]
    fn node_files_describe_one_local_cluster() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let mut members = Vec::new();
            for n in 1..=3u16 {
                let config = load(&[
                    "raftis",
                    "--config",
                    &manifest_file(&format!("node{n}.toml")),
                ])?;
                assert_eq!(config.id, u64::from(n));
                assert_eq!(config.listen, HostPort::new("127.0.0.1", 6378 + n));
                assert_eq!(
                    config.peer_listen_addr(),
                    HostPort::new("127.0.0.1", 16378 + n)
                );
                assert_eq!(config.http_listen, HostPort::new("127.0.0.1", 9378 + n));
                assert_eq!(config.data_dir, PathBuf::from(format!("./data/node{n}")));
                members.push(config.initial_members());
            }
            assert_eq!(members[0].len(), 3);
            assert!(members.iter().all(|m| *m == members[0]));
            Ok(())
        });
    }

    #[test]
    fn precedence_file_env_flag() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.create_file(
                "raftis.toml",
                r#"
                    id = 2
                    listen = "127.0.0.1:7000"
                    http_listen = "127.0.0.1:9000"
                    data_dir = "/var/lib/raftis"
                    request_timeout_ms = 100
                "#,
            )?;
            let file_only = load(&["raftis", "--config", "raftis.toml"])?;
            assert_eq!(file_only.id, 2);
            assert_eq!(file_only.listen.to_string(), "127.0.0.1:7000");
            assert_eq!(file_only.peer_listen_addr().to_string(), "127.0.0.1:17000");
            assert_eq!(file_only.request_timeout_ms, 100);

            jail.set_env("RAFTIS_ID", 3);
            jail.set_env("RAFTIS_LISTEN", "127.0.0.1:7001");
            jail.set_env("RAFTIS_HTTP_LISTEN", "127.0.0.1:9001");
            let with_env = load(&["raftis", "--config", "raftis.toml"])?;
            assert_eq!(with_env.id, 3);
            assert_eq!(with_env.listen.to_string(), "127.0.0.1:7001");
            assert_eq!(with_env.http_listen.to_string(), "127.0.0.1:9001");
            assert_eq!(with_env.data_dir, PathBuf::from("/var/lib/raftis"));

            let with_flags = load(&[
                "raftis",
                "--config",
                "raftis.toml",
                "--id",
                "4",
                "--listen",
                "127.0.0.1:7002",
                "--peer-listen",
                "127.0.0.1:8002",
                "--data-dir",
                "/tmp/raftis",
            ])?;
            assert_eq!(with_flags.id, 4);
            assert_eq!(with_flags.listen.to_string(), "127.0.0.1:7002");
            assert_eq!(with_flags.peer_listen_addr().to_string(), "127.0.0.1:8002");
            assert_eq!(with_flags.http_listen.to_string(), "127.0.0.1:9001");
            assert_eq!(with_flags.data_dir, PathBuf::from("/tmp/raftis"));
            assert_eq!(with_flags.request_timeout_ms, 100);
            Ok(())
        });
    }

    #[test]
    fn config_file_from_env_var() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.create_file("node.toml", "id = 7")?;
            jail.set_env("RAFTIS_CONFIG", "node.toml");
            assert_eq!(load(&["raftis"])?.id, 7);
            Ok(())
        });
    }

    #[test]
    fn env_double_underscore_nests() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("RAFTIS_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:4317");
            jail.set_env("RAFTIS_TELEMETRY__SAMPLE_RATIO", "0.5");
            jail.set_env("RAFTIS_RAFT__HEARTBEAT_INTERVAL_MS", "50");
            jail.set_env("RAFTIS_LOG__FORMAT", "json");
            jail.set_env("RAFTIS_LIMITS__TIMEOUT", "30");
            jail.set_env("RAFTIS_PEER_LISTEN", "[::1]:16379");
            jail.set_env("RAFTIS_INITIAL_CLUSTER", "1=[::1]:16379, 2=node2:16379");
            let config = load(&["raftis"])?;
            assert_eq!(
                config.telemetry.otlp_endpoint.as_deref(),
                Some("http://127.0.0.1:4317")
            );
            assert_eq!(config.telemetry.sample_ratio, 0.5);
            assert_eq!(config.raft.heartbeat_interval_ms, 50);
            assert_eq!(config.log.format, LogFormat::Json);
            assert_eq!(config.limits.idle_timeout(), Some(Duration::from_secs(30)));
            assert_eq!(config.peer_listen_addr().to_string(), "[::1]:16379");
            assert_eq!(
                config.initial_members(),
                BTreeMap::from([(1, "[::1]:16379".to_owned()), (2, "node2:16379".to_owned())])
            );
            Ok(())
        });
    }

    #[test]
    fn listen_port_zero_gives_ephemeral_peer_port() {
        let config = Config {
            listen: HostPort::new("127.0.0.1", 0),
            http_listen: HostPort::new("127.0.0.1", 0),
            ..Config::default()
        };
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.peer_listen_addr(), HostPort::new("127.0.0.1", 0));
    }

    #[test]
    fn unknown_key_names_key_and_source() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.create_file("typo.toml", "[raft]\nheartbeat_ms = 10\n")?;
            let line = load_err(&["raftis", "--config", "typo.toml"])?;
            assert!(
                line.starts_with(
                    "invalid config: key 'raft.heartbeat_ms' (from config file typo.toml): unknown key; expected one of: heartbeat_interval_ms, "
                ),
                "{line}"
            );
            jail.create_file("empty.toml", "")?;
            jail.set_env("RAFTIS_LISEN", "127.0.0.1:1");
            let line = load_err(&["raftis", "--config", "empty.toml"])?;
            assert!(
                line.starts_with(
                    "invalid config: key 'lisen' (from environment variable RAFTIS_LISEN): unknown key"
                ),
                "{line}"
            );
            Ok(())
        });
    }

    #[test]
    fn wrong_type_names_key_and_source() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("RAFTIS_RAFT__HEARTBEAT_INTERVAL_MS", "soon");
            let line = load_err(&["raftis"])?;
            assert_line(
                &line,
                "invalid config: key 'raft.heartbeat_interval_ms' (from environment variable RAFTIS_RAFT__HEARTBEAT_INTERVAL_MS): expected u64, found string \"soon\"",
            )?;
            clear_env(jail);
            jail.create_file("f.toml", "log.format = \"xml\"\n")?;
            let line = load_err(&["raftis", "--config", "f.toml"])?;
            assert!(
                line.starts_with("invalid config: key 'log.format' (from config file f.toml): "),
                "{line}"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_addresses_name_key_and_source() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let line = load_err(&["raftis", "--listen", "localhost"])?;
            assert_line(
                &line,
                "invalid config: key 'listen' (from command-line flag --listen): 'localhost' is not a host:port address (no port; e.g. 127.0.0.1:6379)",
            )?;
            let line = load_err(&["raftis", "--http-listen", "127.0.0.1:99999"])?;
            assert_line(
                &line,
                "invalid config: key 'http_listen' (from command-line flag --http-listen): '127.0.0.1:99999' is not a host:port address (the port must be a number from 0 to 65535)",
            )?;
            let line = load_err(&["raftis", "--peer-listen", "::1:16379"])?;
            assert!(line.contains("IPv6 addresses need brackets"), "{line}");
            let line = load_err(&["raftis", "--listen", "127.0.0.1:60000"])?;
            assert_line(
                &line,
                "invalid config: key 'listen' (from command-line flag --listen): port 60000 leaves no default for peer_listen (port + 10000 is past 65535); set peer_listen",
            )?;
            let line = load_err(&["raftis", "--http-listen", "127.0.0.1:16379"])?;
            assert_line(
                &line,
                "invalid config: key 'http_listen' (from command-line flag --http-listen): 127.0.0.1:16379 is also the address of peer_listen (by default from listen)",
            )?;
            let line = load_err(&["raftis", "--peer-listen", "127.0.0.1:6379"])?;
            assert_line(
                &line,
                "invalid config: key 'peer_listen' (from command-line flag --peer-listen): 127.0.0.1:6379 is also the address of listen",
            )?;
            Ok(())
        });
    }

    #[test]
    fn initial_cluster_errors_name_key_and_source() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let cases = [
                ("1=127.0.0.1:16379,1=127.0.0.1:16380", "id 1 is listed twice"),
                (
                    "1=127.0.0.1:16379,2=127.0.0.1:16379",
                    "members 1 and 2 have the same address 127.0.0.1:16379",
                ),
                ("1=127.0.0.1", "entry '1=127.0.0.1': '127.0.0.1' is not a host:port address (no port; e.g. 127.0.0.1:6379)"),
                ("1:127.0.0.1:1", "entry '1:127.0.0.1:1' is not id=host:port"),
                ("0=127.0.0.1:1", "entry '0=127.0.0.1:1': the id must be a number, at least 1"),
                ("1=127.0.0.1:0", "entry '1=127.0.0.1:0': port 0 cannot be reached"),
                ("1=127.0.0.1:1,", "entry '' is not id=host:port"),
                ("", "is empty (leave it out for a one-node cluster)"),
            ];
            for (list, message) in cases {
                let line = load_err(&["raftis", "--initial-cluster", list])?;
                assert_line(
                    &line,
                    &format!("invalid config: key 'initial_cluster' (from command-line flag --initial-cluster): {message}"),
                )?;
            }
            jail.set_env(
                "RAFTIS_INITIAL_CLUSTER",
                "1=127.0.0.1:16379,2=127.0.0.1:16380",
            );
            let line = load_err(&["raftis", "--id", "3"])?;
            assert_line(
                &line,
                "invalid config: key 'id' (from command-line flag --id): 3 is not in initial_cluster (ids: 1, 2)",
            )?;
            let line = load_err(&["raftis", "--id", "0"])?;
            assert_line(
                &line,
                "invalid config: key 'id' (from command-line flag --id): must be at least 1",
            )?;
            jail.set_env("RAFTIS_ID", "3");
            let line = load_err(&["raftis", "--initial-cluster", "1=a:1,2=b:2"])?;
            assert_line(
                &line,
                "invalid config: key 'initial_cluster' (from command-line flag --initial-cluster): does not list this node's id 3 (ids: 1, 2)",
            )?;
            Ok(())
        });
    }

    #[test]
    fn raft_timing_errors_blame_the_key_set_on_purpose() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS", "3000");
            let line = load_err(&["raftis"])?;
            assert_line(
                &line,
                "invalid config: key 'raft.election_timeout_min_ms' (from environment variable RAFTIS_RAFT__ELECTION_TIMEOUT_MIN_MS): must be less than raft.election_timeout_max_ms (2000)",
            )?;
            clear_env(jail);
            jail.create_file("t.toml", "[raft]\nelection_timeout_max_ms = 500\n")?;
            let line = load_err(&["raftis", "--config", "t.toml"])?;
            assert_line(
                &line,
                "invalid config: key 'raft.election_timeout_max_ms' (from config file t.toml): must be greater than raft.election_timeout_min_ms (1000)",
            )?;
            jail.create_file("h.toml", "[raft]\nheartbeat_interval_ms = 1000\n")?;
            let line = load_err(&["raftis", "--config", "h.toml"])?;
            assert_line(
                &line,
                "invalid config: key 'raft.heartbeat_interval_ms' (from config file h.toml): must be less than raft.election_timeout_min_ms (1000)",
            )?;
            for key in [
                "heartbeat_interval_ms",
                "snapshot_logs_since_last",
                "install_snapshot_timeout_ms",
            ] {
                jail.create_file("z.toml", &format!("[raft]\n{key} = 0\n"))?;
                let line = load_err(&["raftis", "--config", "z.toml"])?;
                assert_line(
                    &line,
                    &format!("invalid config: key 'raft.{key}' (from config file z.toml): must be at least 1"),
                )?;
            }
            Ok(())
        });
    }

    #[test]
    fn read_policy_is_read_index_unless_set_to_lease() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            assert_eq!(load(&["raftis"])?.raft.read_policy, ReadPolicy::ReadIndex);
            jail.set_env("RAFTIS_RAFT__READ_POLICY", "lease");
            assert_eq!(load(&["raftis"])?.raft.read_policy, ReadPolicy::Lease);
            clear_env(jail);
            jail.create_file("r.toml", "[raft]\nread_policy = \"lease\"\n")?;
            let config = load(&["raftis", "--config", "r.toml"])?;
            assert_eq!(config.raft.read_policy, ReadPolicy::Lease);
            jail.create_file("w.toml", "[raft]\nread_policy = \"stale\"\n")?;
            let line = load_err(&["raftis", "--config", "w.toml"])?;
            assert_line(
                &line,
                "invalid config: key 'raft.read_policy' (from config file w.toml): unknown variant: found `stale`, expected ``read_index` or `lease``",
            )?;
            Ok(())
        });
    }

    #[test]
    fn other_value_errors_name_key_and_source() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let cases = [
                ("RAFTIS_REQUEST_TIMEOUT_MS", "0", "request_timeout_ms", "must be at least 1"),
                ("RAFTIS_LIMITS__MAXCLIENTS", "0", "limits.maxclients", "must be at least 1"),
                ("RAFTIS_LIMITS__PROTO_MAX_BULK_LEN", "0", "limits.proto_max_bulk_len", "must be at least 1"),
                ("RAFTIS_LIMITS__CLIENT_QUERY_BUFFER_LIMIT", "0", "limits.client_query_buffer_limit", "must be at least 1"),
                ("RAFTIS_LIMITS__PROTO_MAX_BULK_LEN", "2000000000", "limits.proto_max_bulk_len", "must not exceed limits.client_query_buffer_limit (1073741824)"),
                ("RAFTIS_STORAGE__CACHE_SIZE_MB", "0", "storage.cache_size_mb", "must be at least 1"),
                ("RAFTIS_STORAGE__MEMTABLE_SIZE_MB", "0", "storage.memtable_size_mb", "must be at least 1"),
                ("RAFTIS_STORAGE__MEMTABLE_SIZE_MB", "1025", "storage.memtable_size_mb", "1025 is more than 1024 (1 GiB); the value is in MiB"),
                ("RAFTIS_STORAGE__MIN_FREE_MB", "268435456", "storage.min_free_mb", "268435456 is more than 1048576 (1 TiB); the value is in MiB (0 disables the check)"),
                ("RAFTIS_TELEMETRY__SAMPLE_RATIO", "1.5", "telemetry.sample_ratio", "1.5 is not between 0 and 1"),
                ("RAFTIS_TELEMETRY__OTLP_ENDPOINT", "localhost:4317", "telemetry.otlp_endpoint", "'localhost:4317' is not an http:// URL (leave the key out to export nothing)"),
                ("RAFTIS_TELEMETRY__OTLP_ENDPOINT", "http://collector", "telemetry.otlp_endpoint", "'http://collector' is not http://HOST:PORT (an OTLP/gRPC collector listens on 4317)"),
                ("RAFTIS_TELEMETRY__OTLP_ENDPOINT", "http://127.0.0.1:99999", "telemetry.otlp_endpoint", "'http://127.0.0.1:99999' is not http://HOST:PORT (an OTLP/gRPC collector listens on 4317)"),
                ("RAFTIS_TELEMETRY__OTLP_ENDPOINT", "https://collector:4317", "telemetry.otlp_endpoint", "'https://collector:4317': TLS export is not built in; send to a local collector over http://"),
                ("RAFTIS_LOG__LEVEL", "infoo", "log.level", "'infoo' is not a level (trace, debug, info, warn, error, off) or a target=level directive"),
                ("RAFTIS_DATA_DIR", "\"\"", "data_dir", "must not be empty"),
            ];
            for (var, value, key, message) in cases {
                clear_env(jail);
                jail.set_env(var, value);
                let line = load_err(&["raftis"])?;
                assert_line(
                    &line,
                    &format!(
                        "invalid config: key '{key}' (from environment variable {var}): {message}"
                    ),
                )?;
            }
            clear_env(jail);
            jail.set_env("RAFTIS_LOG__LEVEL", "debug,openraft=warn");
            assert_eq!(load(&["raftis"])?.log.level, "debug,openraft=warn");
            Ok(())
        });
    }

    #[test]
    fn memtable_size_mb_defaults_to_8_and_reaches_the_engine_in_bytes() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let config = load(&["raftis"])?;
            assert_eq!(config.storage.memtable_size_mb, 8);
            assert_eq!(config.storage.engine().memtable_size_bytes, 8 * 1024 * 1024);
            assert_eq!(config.storage.engine().cache_size_bytes, 32 * 1024 * 1024);
            assert!(config.storage.engine().key_filter);
            jail.create_file(
                "m.toml",
                "[storage]\nmemtable_size_mb = 1024\ncache_size_mb = 16\nkey_filter = false\n",
            )?;
            let config = load(&["raftis", "--config", "m.toml"])?;
            assert_eq!(
                config.storage.engine(),
                crate::storage::EngineOptions {
                    cache_size_bytes: 16 * 1024 * 1024,
                    memtable_size_bytes: 1024 * 1024 * 1024,
                    key_filter: false,
                }
            );
            jail.set_env("RAFTIS_STORAGE__KEY_FILTER", "true");
            let config = load(&["raftis", "--config", "m.toml"])?;
            assert!(config.storage.engine().key_filter);
            Ok(())
        });
    }

    #[test]
    fn min_free_mb_defaults_to_256_and_zero_disables_the_check() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let config = load(&["raftis"])?;
            assert_eq!(config.storage.min_free_mb, 256);
            assert_eq!(config.storage.min_free_bytes(), 256 * 1024 * 1024);
            jail.create_file("d.toml", "[storage]\nmin_free_mb = 0\n")?;
            let config = load(&["raftis", "--config", "d.toml"])?;
            assert_eq!(config.storage.min_free_bytes(), 0);
            jail.create_file("t.toml", "[storage]\nmin_free_mb = 1048577\n")?;
            let line = load_err(&["raftis", "--config", "t.toml"])?;
            assert_line(
                &line,
                "invalid config: key 'storage.min_free_mb' (from config file t.toml): 1048577 is more than 1048576 (1 TiB); the value is in MiB (0 disables the check)",
            )?;
            Ok(())
        });
    }

    #[test]
    fn validate_without_sources() {
        let config = Config {
            id: 0,
            ..Config::default()
        };
        assert_eq!(
            config.validate().map_err(|e| e.to_string()),
            Err("invalid config: key 'id': must be at least 1".to_owned())
        );
    }

    #[test]
    fn malformed_file_names_file_line_and_column() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.create_file("bad.toml", "id = 1\nlisten = \"127.0.0.1:6379\n")?;
            let line = load_err(&["raftis", "--config", "bad.toml"])?;
            assert!(
                line.starts_with("invalid config: config file bad.toml: line 2, column "),
                "{line}"
            );
            assert!(line.contains("not valid TOML"), "{line}");
            assert!(!line.contains('\n'), "{line}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_names_file() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let line = load_err(&["raftis", "--config", "nowhere.toml"])?;
            assert!(
                line.starts_with("invalid config: config file nowhere.toml: cannot be read: "),
                "{line}"
            );
            Ok(())
        });
    }

    #[test]
    fn join_is_parsed() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let config = load(&["raftis", "--id", "4", "--join", "127.0.0.1:6379"])?;
            assert_eq!(config.join, Some(HostPort::new("127.0.0.1", 6379)));
            assert_eq!(config.initial_cluster, None);
            assert_eq!(load(&["raftis"])?.join, None);
            Ok(())
        });
    }

    #[test]
    fn join_must_be_an_address() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let line = load_err(&["raftis", "--join", "nowhere"])?;
            assert_line(
                &line,
                "invalid config: --join: 'nowhere' is not a host:port address (no port; e.g. 127.0.0.1:6379)",
            )
        });
    }

    #[test]
    fn join_needs_a_peer_address_others_can_dial() {
        figment::Jail::expect_with(|_| {
            let line = load_err(&[
                "raftis",
                "--id",
                "4",
                "--listen",
                "0.0.0.0:6379",
                "--join",
                "127.0.0.1:6380",
            ])?;
            assert_eq!(
                line,
                "invalid config: --join records this node's peer address (0.0.0.0:16379) in \
                 the cluster's membership, where other members dial it; give --peer-listen an \
                 address they can reach, not a wildcard"
            );
            let line = load_err(&[
                "raftis",
                "--peer-listen",
                "[::]:7000",
                "--force-new-cluster",
            ])?;
            assert!(
                line.starts_with("invalid config: --force-new-cluster records"),
                "{line}"
            );
            let line = load_err(&["raftis", "--join", "127.0.0.1:6380", "--force-new-cluster"])?;
            assert!(line.contains("cannot be combined with --join"), "{line}");
            Ok(())
        });
    }

    #[test]
    fn join_excludes_initial_cluster() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let line = load_err(&[
                "raftis",
                "--join",
                "127.0.0.1:6379",
                "--initial-cluster",
                "1=127.0.0.1:16379",
            ])?;
            assert_line(
                &line,
                "invalid config: --join cannot be combined with initial_cluster \
                 (initial_cluster from command-line flag --initial-cluster): a joining node \
                 gets its members from the cluster it joins",
            )
        });
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
