//! `ringkv server`: configuration, the node's identity on disk, start-up and shutdown.
//!
//! Start-up order matters for durability: the identity file's incarnation is bumped and fsynced
//! before the node exists, so a restarted node never reuses a version-vector actor or a
//! coordination id of its previous life; the persisted cluster view is read back from storage so
//! a restarted node rejoins with the ring it knew.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::config::NodeConfig;
use ringkv_core::id::NodeId;
use ringkv_core::membership::{ClusterView, MemberInfo};
use ringkv_core::node::Node;
use ringkv_core::ring::{RingConfig, Strategy};
use ringkv_core::storage::StorageKey;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::http::{self, HttpConfig};
use crate::metrics::Metrics;
use crate::node_loop::{self, Clock, NodeHandle, NodeTask};
use crate::storage::{
    self, Compression, CompressionPolicy, OnDamagedStore, Storage, StorageConfig, StorageOpenError,
    MUST_REJOIN_FILE_NAME,
};
use crate::tls::{self, PeerTls, TlsError};
use crate::transport::{ClusterSecret, Transport, TransportConfig};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The data folder's identity file is unreadable, or belongs to another node or cluster.
    #[error("identity {path}: {message}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageOpenError),
    /// The database is damaged, and the policy (or the lack of seeds) says not to start empty.
    #[error("the database {path} is damaged ({message}); {advice}")]
    DamagedStore {
        /// The database file.
        path: PathBuf,
        /// What the storage engine said.
        message: String,
        /// What the operator can do.
        advice: &'static str,
    },
    /// A damaged store was moved aside earlier (the `must-rejoin` marker is in the data folder):
    /// the node lost its view and may only rejoin its cluster through seeds, never found one.
    #[error(
        "refusing to start a new cluster: {marker}; start with --seed <peer> to rejoin the \
         cluster (remove {path} only if this node should really found a new cluster)"
    )]
    MustRejoin {
        /// The marker file.
        path: PathBuf,
        /// What it says.
        marker: String,
    },
    /// The persisted cluster view could not be read.
    #[error("persisted cluster view: {0}")]
    View(String),
    /// No seed answered.
    #[error("no seed answered: {0}")]
    Seeds(String),
    /// A local cluster did not settle in time.
    #[error("{0}")]
    NotSettled(String),
    /// A task of the running server stopped on its own.
    #[error("{0}")]
    Stopped(String),
    /// The core refused the configuration.
    #[error("node configuration: {0}")]
    Node(#[from] ringkv_core::error::ConfigError),
    /// A certificate, key or CA file is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A secret given in the configuration: serialized as is, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(..)")
    }
}

/// The TLS and authentication settings built from a [`ServerConfig`] (see
/// [`ServerConfig::security`]).
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// HTTPS for the API.
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
    /// Mutual TLS for peer links.
    pub peer_tls: Option<PeerTls>,
    /// The cluster secret peers prove.
    pub secret: Option<ClusterSecret>,
}

/// The server's default key limit: 16 KiB, so that any key, every byte percent-encoded (three
/// characters each), fits in an HTTP request target (hyper refuses targets over 64 KiB).
pub const DEFAULT_HTTP_MAX_KEY_BYTES: usize = 16 * 1024;

/// Everything `ringkv server` can be told, from a TOML file and flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's id; by default the one in the data folder, or a new random one.
    pub node_id: Option<String>,
    /// Cluster name: nodes of different clusters refuse each other.
    pub cluster: String,
    /// Where records, hints, the view and the identity live.
    pub data_dir: PathBuf,
    /// HTTP API address.
    pub listen: SocketAddr,
    /// Peer transport address.
    pub peer_listen: SocketAddr,
    /// HTTP address others should use (default: `listen`, which must then not be 0.0.0.0).
    pub advertise: Option<String>,
    /// Peer address others should use (default: `peer_listen`).
    pub peer_advertise: Option<String>,
    /// Peer addresses of nodes to join through (empty: start a new cluster, or restart).
    pub seeds: Vec<String>,
    /// Weight in the ring (virtual nodes in proportion).
    pub capacity: u32,
    /// Failure domain: replicas of a key go to distinct zones where possible.
    pub zone: Option<String>,
    /// Q, partitions of the ring (a power of two; the same on every node).
    pub partitions: u32,
    /// The largest N a bucket may have (the same on every node).
    pub target_n: usize,
    /// Replicas per zone (data centre), e.g. `{ dc1 = 3, dc2 = 2 }`: every key gets that many
    /// replicas in each zone, and `target_n` is their sum (the same on every node). Empty:
    /// `target_n` replicas anywhere, spread over zones where possible.
    pub replicas_per_zone: BTreeMap<String, u32>,
    /// `partitions` (Riak's equal partitions) or `tokens` (random tokens, Dynamo's first scheme).
    pub strategy: String,
    /// Properties of buckets nobody configured.
    pub bucket: BucketDefaults,
    /// Value compression on disk for every bucket: `none` or `lz4`.
    pub compression: Compression,
    /// Per-bucket compression overrides.
    pub bucket_compression: HashMap<String, Compression>,
    /// Time a coordinator waits for a quorum.
    pub request_timeout_ms: u64,
    /// Gossip interval.
    pub gossip_interval_ms: u64,
    /// Anti-entropy interval.
    pub anti_entropy_interval_ms: u64,
    /// How often at most an anti-entropy exchange may go to a replica in another zone.
    pub cross_zone_anti_entropy_interval_ms: u64,
    /// How long a deleted or expired key stays on disk before it may be reaped (default 1 h). It
    /// must exceed the clock skew between nodes and the longest a replica may stay away
    /// unnoticed.
    pub tombstone_grace_ms: u64,
    /// Watches (`?changed_since=`) this node holds at once; one more is answered 429.
    pub max_watches: usize,
    /// Listing page scans this node serves at once as a replica (more wait their turn).
    pub max_list_scans: usize,
    /// How often hints are delivered to their owners (hinted hand-off). Also read under its
    /// earlier name, `handoff_interval_ms`.
    #[serde(alias = "handoff_interval_ms")]
    pub hint_delivery_interval_ms: u64,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Largest key accepted (default [`DEFAULT_HTTP_MAX_KEY_BYTES`]).
    pub max_key_bytes: usize,
    /// Fsync every group commit (default), so every acknowledged write is durable whatever its
    /// dw; `false` commits dw = 0 writes without fsync and makes them durable every
    /// `flush_interval_ms` (for disks whose fsync is slow).
    pub durable_commits: bool,
    /// What to do when the database file is found damaged at start-up: `quarantine` (default)
    /// moves it aside as `ringkv.redb.damaged-<unix ms>` and starts empty, to be refilled from
    /// the replicas by anti-entropy and read repair; `refuse` does not start. Quarantine applies
    /// only with `seeds`: a node without seeds and without its persisted view would found a new
    /// cluster of its own, so then the node refuses whatever this says.
    pub on_damaged_store: OnDamagedStore,
    /// With `durable_commits = false`: how often writes committed without fsync are made durable.
    pub flush_interval_ms: u64,
    /// Most writes in one group commit.
    pub max_batch_ops: usize,
    /// Memory for the storage engine's page cache, in bytes (default
    /// [`storage::DEFAULT_CACHE_BYTES`], 64 MiB; redb's own default is 1 GiB). The cache keeps
    /// the pages last read or written, so a node's resident memory grows to about this much
    /// plus what requests in flight hold; the OS page cache still caches the file beyond it.
    pub storage_cache_bytes: usize,
    /// Most bytes of records in one storage scan page (default
    /// [`storage::DEFAULT_MAX_SCAN_BYTES`], 1 MiB; a page always holds one record, however
    /// large). Merkle tree builds, partition transfers and hint delivery read the store in pages
    /// of up to 256 records, several at once, so with large values this bounds what they hold;
    /// each transfer chunk sent to a joining node is one page.
    pub storage_scan_bytes: usize,
    /// Most HTTP connections at once.
    pub max_connections: usize,
    /// Most inbound peer connections still in their handshake (not yet authenticated) at once;
    /// more are closed at once and counted as `too_many_handshakes`.
    pub max_pending_handshakes: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout_ms: u64,
    /// Where the visualizer's built files are (served at `/ui`).
    pub ui_dir: Option<PathBuf>,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout_ms: u64,
    /// At SIGTERM/SIGINT, how long the node keeps serving while `/readyz` already answers 503,
    /// before it closes its listener: time for load balancers and Kubernetes Endpoints to
    /// stop sending it requests (0: close at once).
    pub shutdown_delay_ms: u64,
    /// Most partition pulls at once when the ring changes (each holds one chunk of at most
    /// `storage_scan_bytes` in flight): what a joining node holds in memory while it fills.
    pub max_concurrent_pulls: usize,
    /// Stop the process by itself once the node has left the ring and handed every hint and
    /// orphaned record over (it says `drained` in `/cluster`), as after `ringkv cluster leave`.
    pub stop_when_drained: bool,
    /// PEM certificate (chain) of the HTTP API; with `tls_key`, the API serves HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM certificate this node presents to peers (as server and as client); with
    /// `peer_tls_key` and `peer_tls_ca`, every peer link is mutual TLS.
    pub peer_tls_cert: Option<PathBuf>,
    /// PEM private key of `peer_tls_cert`.
    pub peer_tls_key: Option<PathBuf>,
    /// PEM CA that signs every node's peer certificate; peers are checked against it.
    pub peer_tls_ca: Option<PathBuf>,
    /// Secret (at least 16 bytes) every peer must prove it knows; prefer `cluster_secret_file`.
    pub cluster_secret: Option<SecretString>,
    /// File holding the cluster secret (surrounding whitespace, such as a final newline, is
    /// not part of it).
    pub cluster_secret_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let node = NodeConfig::new("default");
        ServerConfig {
            node_id: None,
            cluster: node.cluster.clone(),
            data_dir: PathBuf::from("ringkv-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8087)),
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 7087)),
            advertise: None,
            peer_advertise: None,
            seeds: Vec::new(),
            capacity: 1,
            zone: None,
            partitions: node.ring.partitions,
            target_n: node.ring.target_n,
            replicas_per_zone: BTreeMap::new(),
            strategy: "partitions".into(),
            bucket: BucketDefaults::default(),
            compression: Compression::None,
            bucket_compression: HashMap::new(),
            request_timeout_ms: node.request_timeout_ms,
            gossip_interval_ms: node.gossip.interval_ms,
            anti_entropy_interval_ms: node.anti_entropy_interval_ms,
            cross_zone_anti_entropy_interval_ms: node.cross_zone_anti_entropy_interval_ms,
            tombstone_grace_ms: node.tombstone_grace_ms,
            max_watches: node.max_watches,
            max_list_scans: node.max_list_scans,
            hint_delivery_interval_ms: node.hint_delivery_interval_ms,
            max_value_bytes: node.max_value_bytes,
            max_key_bytes: DEFAULT_HTTP_MAX_KEY_BYTES,
            durable_commits: true,
            on_damaged_store: OnDamagedStore::default(),
            flush_interval_ms: 20,
            max_batch_ops: 512,
            storage_cache_bytes: storage::DEFAULT_CACHE_BYTES,
            storage_scan_bytes: storage::DEFAULT_MAX_SCAN_BYTES,
            max_connections: 1024,
            max_pending_handshakes: TransportConfig::default().max_pending_handshakes,
            header_read_timeout_ms: 10_000,
            ui_dir: None,
            drain_timeout_ms: 10_000,
            shutdown_delay_ms: 2_000,
            max_concurrent_pulls: node.max_concurrent_pulls,
            stop_when_drained: false,
            tls_cert: None,
            tls_key: None,
            peer_tls_cert: None,
            peer_tls_key: None,
            peer_tls_ca: None,
            cluster_secret: None,
            cluster_secret_file: None,
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently keep a default).
    pub fn from_file(path: &Path) -> Result<ServerConfig, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ServerError::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads and checks the certificate, key and secret files, so that a half-configured or
    /// unreadable setting stops the start with a message naming it (no listener is bound and
    /// the data folder is not touched before this succeeds).
    pub fn security(&self) -> Result<Security, ServerError> {
        let http_tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(tls::http_server_config(cert, key)?),
            (Some(_), None) => {
                return Err(ServerError::Config(
                    "tls_cert is set without tls_key: HTTPS needs both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(ServerError::Config(
                    "tls_key is set without tls_cert: HTTPS needs both".into(),
                ))
            }
        };
        let peer_tls = match (&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(PeerTls::from_files(cert, key, ca)?),
            (cert, key, ca) => {
                let missing: Vec<&str> = [
                    ("peer_tls_cert", cert.is_none()),
                    ("peer_tls_key", key.is_none()),
                    ("peer_tls_ca", ca.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, missing)| missing.then_some(name))
                .collect();
                return Err(ServerError::Config(format!(
                    "peer TLS needs peer_tls_cert, peer_tls_key and peer_tls_ca; missing {}",
                    missing.join(" and ")
                )));
            }
        };
        let secret = match (&self.cluster_secret, &self.cluster_secret_file) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(ServerError::Config(
                    "set cluster_secret or cluster_secret_file, not both".into(),
                ))
            }
            (Some(SecretString(text)), None) => Some(
                ClusterSecret::new(text.as_bytes())
                    .map_err(|e| ServerError::Config(format!("cluster_secret: {e}")))?,
            ),
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    ServerError::Config(format!("cluster_secret_file {}: {e}", path.display()))
                })?;
                Some(ClusterSecret::new(bytes.trim_ascii()).map_err(|e| {
                    ServerError::Config(format!("cluster_secret_file {}: {e}", path.display()))
                })?)
            }
        };
        Ok(Security {
            http_tls,
            peer_tls,
            secret,
        })
    }

    fn advertised(
        &self,
        explicit: &Option<String>,
        bound: SocketAddr,
    ) -> Result<String, ServerError> {
        match explicit {
            Some(address) => Ok(address.clone()),
            None if bound.ip().is_unspecified() => Err(ServerError::Config(format!(
                "{bound} is a wildcard address: set advertise / peer_advertise to where others reach this node"
            ))),
            None => Ok(bound.to_string()),
        }
    }

    /// The storage engine's configuration for this node, with the damaged-store policy the
    /// server settled on (see [`ServerConfig::on_damaged_store`]).
    pub fn storage_config(&self, on_damaged: OnDamagedStore) -> StorageConfig {
        StorageConfig {
            compression: CompressionPolicy {
                default: self.compression,
                buckets: self
                    .bucket_compression
                    .iter()
                    .map(|(bucket, c)| (bucket.as_bytes().to_vec(), *c))
                    .collect(),
            },
            flush_interval: Duration::from_millis(self.flush_interval_ms.max(1)),
            max_batch_ops: self.max_batch_ops.max(1),
            durable_commits: self.durable_commits,
            on_damaged,
            cache_bytes: self.storage_cache_bytes,
            max_scan_bytes: self.storage_scan_bytes.max(1),
            ..StorageConfig::new(self.data_dir.clone())
        }
    }

    /// The core's configuration for this node.
    fn node_config(&self, node_id: &NodeId, incarnation: u64) -> Result<NodeConfig, ServerError> {
        let mut config = NodeConfig::new(node_id.clone());
        config.incarnation = incarnation;
        // The node's protocol randomness (gossip partners, jitter) comes from the OS here.
        config.seed = rand::random();
        config.cluster = self.cluster.clone();
        config.ring = RingConfig {
            partitions: self.partitions,
            strategy: self
                .strategy
                .parse::<Strategy>()
                .map_err(|e| ServerError::Config(format!("strategy: {e}")))?,
            target_n: sum_unless_set("target_n", self.target_n as u32, 3, &self.replicas_per_zone)?
                as usize,
            replicas_per_zone: self.replicas_per_zone.clone(),
        };
        config.default_bucket = self.bucket.to_props()?;
        config.request_timeout_ms = self.request_timeout_ms;
        config.gossip.interval_ms = self.gossip_interval_ms;
        config.anti_entropy_interval_ms = self.anti_entropy_interval_ms;
        config.cross_zone_anti_entropy_interval_ms = self.cross_zone_anti_entropy_interval_ms;
        config.tombstone_grace_ms = self.tombstone_grace_ms;
        config.max_watches = self.max_watches;
        config.max_list_scans = self.max_list_scans;
        config.hint_delivery_interval_ms = self.hint_delivery_interval_ms;
        config.max_value_bytes = self.max_value_bytes;
        config.max_key_bytes = self.max_key_bytes;
        config.max_concurrent_pulls = self.max_concurrent_pulls.max(1);
        Ok(config)
    }
}

/// What the data folder remembers about the node that owns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node's id.
    pub node_id: String,
    /// Its cluster.
    pub cluster: String,
    /// Bumped at every start, before the node runs.
    pub incarnation: u64,
}

const IDENTITY_FILE: &str = "identity.json";

/// Milliseconds since the Unix epoch: the floor of every new incarnation. Milliseconds, not
/// seconds: restarts in a crash loop bump the incarnation by one each, and must not run ahead of
/// a floor that a wiped folder falls back to (one restart per millisecond is out of reach).
fn clock_floor() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the folder's identity (checking it against the configuration), bumps the incarnation
/// and writes it back durably (temporary file, fsync, rename, fsync of the folder).
///
/// The incarnation is at least the clock in milliseconds: a node whose folder was wiped (and so forgot
/// its last incarnation) must still not reuse the version-vector actor of an earlier life, or the
/// other replicas would take its new writes for ones they already have (Riak's KV679).
pub fn claim_identity(data_dir: &Path, config: &ServerConfig) -> Result<Identity, ServerError> {
    let path = data_dir.join(IDENTITY_FILE);
    let err = |message: String| ServerError::Identity {
        path: path.clone(),
        message,
    };
    let identity = match std::fs::read(&path) {
        Ok(bytes) => {
            let mut identity: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                err(format!(
                    "unreadable ({e}); refusing to guess who this node is"
                ))
            })?;
            if let Some(id) = &config.node_id {
                if *id != identity.node_id {
                    return Err(err(format!(
                        "the data folder belongs to node {:?}, not {id:?}",
                        identity.node_id
                    )));
                }
            }
            if identity.cluster != config.cluster {
                return Err(err(format!(
                    "the data folder belongs to cluster {:?}, not {:?}",
                    identity.cluster, config.cluster
                )));
            }
            identity.incarnation = identity
                .incarnation
                .checked_add(1)
                .ok_or_else(|| err("incarnation overflow".into()))?
                .max(clock_floor());
            identity
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if data_dir.join(crate::storage::DB_FILE_NAME).exists() {
                return Err(err(
                    "missing, but the folder holds a database: refusing to start as a new node over \
                     another node's data (restore the file, or wipe the folder to rejoin empty)"
                        .into(),
                ));
            }
            Identity {
                node_id: config
                    .node_id
                    .clone()
                    .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>())),
                cluster: config.cluster.clone(),
                incarnation: clock_floor().max(1),
            }
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let temporary = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(&identity).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| err(format!("cannot write: {e}")))?;
    Ok(identity)
}

/// A running server.
pub struct RunningServer {
    /// Talk to the node.
    pub node: NodeHandle,
    /// Where the HTTP API listens.
    pub client_address: SocketAddr,
    /// Where peers connect.
    pub peer_address: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Becomes true when the node says it is drained.
    drained: watch::Receiver<bool>,
    stop_when_drained: bool,
    /// How long [`RunningServer::run_until`] serves, not ready, after its stop future resolves.
    shutdown_delay: Duration,
    node_task: JoinHandle<()>,
    http_task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (bounded), flushes storage, and returns
    /// when everything has stopped.
    pub async fn shutdown(self) {
        self.node.mark_draining();
        let _ = self.shutdown.send(true);
        self.wait().await;
    }

    /// Waits until the server has stopped (after [`RunningServer::shutdown`] or a fatal error).
    pub async fn wait(self) {
        match self.http_task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "HTTP server stopped"),
            Err(error) => tracing::error!(%error, "HTTP task failed"),
        }
        let _ = self.shutdown.send(true);
        if let Err(error) = self.node_task.await {
            tracing::error!(%error, "node task failed");
        }
    }

    /// Serves until `stop` resolves, then marks the node not ready (`/readyz` answers 503),
    /// keeps serving for the configured `shutdown_delay_ms` so that load balancers notice, and
    /// shuts down cleanly; or until the HTTP or node task dies, which is an error (a process
    /// must not linger without one of them).
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let stop_when_drained = self.stop_when_drained;
        let mut drained = self.drained.clone();
        let failure = tokio::select! {
            _ = stop => {
                self.node.mark_draining();
                if !self.shutdown_delay.is_zero() {
                    tracing::info!(
                        delay_ms = self.shutdown_delay.as_millis() as u64,
                        "not ready: serving a little longer so that load balancers stop sending requests"
                    );
                }
                self.serve_for(self.shutdown_delay).await
            }
            Ok(_) = drained.wait_for(|drained| *drained), if stop_when_drained => {
                tracing::info!("drained: every hint and orphaned record is handed over; stopping as configured (stop_when_drained)");
                None
            }
            result = &mut self.http_task => Some(http_stopped(result)),
            result = &mut self.node_task => Some(node_stopped(result)),
        };
        self.node.mark_draining();
        let _ = self.shutdown.send(true);
        if !self.http_task.is_finished() {
            let _ = (&mut self.http_task).await;
        }
        if !self.node_task.is_finished() {
            let _ = (&mut self.node_task).await;
        }
        match failure {
            None => Ok(()),
            Some(reason) => Err(ServerError::Stopped(reason)),
        }
    }

    /// Keeps serving for `delay`; `Some(reason)` if the HTTP or node task stops meanwhile.
    async fn serve_for(&mut self, delay: Duration) -> Option<String> {
        if delay.is_zero() {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            result = &mut self.http_task => Some(http_stopped(result)),
            result = &mut self.node_task => Some(node_stopped(result)),
        }
    }

    /// A sender that starts the shutdown (for signal handlers).
    pub fn shutdown_signal(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Why the server stops when its HTTP task ended first.
fn http_stopped(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "the HTTP server stopped".to_string(),
        Ok(Err(error)) => format!("the HTTP server failed: {error}"),
        Err(error) => format!("the HTTP task failed: {error}"),
    }
}

/// Why the server stops when its node task ended first.
fn node_stopped(result: Result<(), tokio::task::JoinError>) -> String {
    match result {
        Ok(()) => "the node task stopped".to_string(),
        Err(error) => format!("the node task failed: {error}"),
    }
}

/// Waits until every server of a local cluster routes by the same ring, holding all of them, with
/// no partition moving (`ringkv dev` and tests start clusters this way).
pub async fn wait_until_settled(
    servers: &[RunningServer],
    timeout: Duration,
) -> Result<(), ServerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut versions = Vec::new();
        let mut moving = 0;
        let mut smallest_ring = usize::MAX;
        for server in servers {
            let status = server
                .node
                .status()
                .await
                .map_err(|e| ServerError::Stopped(e.to_string()))?;
            versions.push(status.ring_version);
            moving += status.partitions_moving.len();
            smallest_ring = smallest_ring.min(status.ring.members().len());
        }
        let same = versions.windows(2).all(|w| w[0] == w[1])
            && versions.first().is_some_and(Option::is_some);
        if same && moving == 0 && smallest_ring == servers.len() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ServerError::NotSettled(format!(
                "not settled within {timeout:?}: ring versions {versions:?}, {moving} partitions moving"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stores a new node's view before it runs, so a restart finds its cluster (and does not found
/// or join another one) even if it stops before its first view change.
fn persist_view(storage: &Storage, node: Node) -> Result<Node, ServerError> {
    storage
        .write_now(&StorageKey::view(), node.view().encode())
        .map_err(|e| ServerError::View(format!("cannot persist the view: {e}")))?;
    Ok(node)
}

/// The visualizer's folder when `ringkv` runs from a checkout where `bindings-wasm/build.sh`
/// has built it (so `ringkv dev` serves `/ui` with no configuration).
fn built_ui_dir() -> Option<PathBuf> {
    let web = PathBuf::from("bindings-wasm/web");
    web.join("pkg/ringkv_wasm.js").is_file().then_some(web)
}

async fn bind(address: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Listen { address, source })
}

/// Opens storage, binds both listeners, builds (or restores) the node and starts its tasks.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let security = config.security()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| ServerError::Identity {
        path: config.data_dir.clone(),
        message: format!("cannot create the data folder: {e}"),
    })?;
    let identity = claim_identity(&config.data_dir, &config)?;
    let node_id = NodeId::new(identity.node_id.as_str());
    let mut node_config = config.node_config(&node_id, identity.incarnation)?;

    let metrics = Arc::new(Metrics::new());
    let (completions_tx, completions) = mpsc::unbounded_channel();
    // Starting empty is safe only for a node that rejoins through seeds: the persisted view is
    // in the damaged file, and a node with neither would bootstrap a cluster of its own. Its
    // version-vector actor is new either way (the incarnation was bumped above).
    let on_damaged = match config.on_damaged_store {
        OnDamagedStore::Quarantine if config.seeds.is_empty() => OnDamagedStore::Refuse,
        policy => policy,
    };
    let opened = Storage::open(
        config.storage_config(on_damaged),
        metrics.clone(),
        completions_tx,
    );
    let storage = match opened {
        Ok(storage) => storage,
        Err(StorageOpenError::Corrupt { path, message }) => {
            let advice = match config.on_damaged_store {
                OnDamagedStore::Refuse => {
                    "not started (on_damaged_store = \"refuse\"): restore the file, or move it \
                     aside and restart with --seed to be refilled from the replicas"
                }
                OnDamagedStore::Quarantine => {
                    "not moved aside, as no --seed is given to rejoin through (without its view \
                     the node would found a new cluster): restart with --seed <peer> to start \
                     empty and be refilled from the replicas, or restore the file"
                }
            };
            return Err(ServerError::DamagedStore {
                path,
                message,
                advice,
            });
        }
        Err(error) => return Err(error.into()),
    };

    let http_listener = bind(config.listen).await?;
    let peer_listener = bind(config.peer_listen).await?;
    let client_address = http_listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: config.listen,
            source,
        })?;
    let peer_address = peer_listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: config.peer_listen,
            source,
        })?;
    // Port 0 in the configuration means "any": advertise the port actually bound.
    let advertised_client = config.advertised(&config.advertise, client_address)?;
    let advertised_peer = config.advertised(&config.peer_advertise, peer_address)?;

    let (inbound_tx, inbound) = mpsc::channel(4096);
    let transport = Transport::start(
        TransportConfig {
            node_id: node_id.clone(),
            cluster: config.cluster.clone(),
            advertised_address: advertised_peer.clone(),
            tls: security.peer_tls,
            secret: security.secret,
            max_pending_handshakes: config.max_pending_handshakes,
            ..TransportConfig::default()
        },
        peer_listener,
        inbound_tx,
        metrics.clone(),
    );

    // Seeds are given as addresses; the core knows nodes by id, so ask each who it is.
    let mut seed_ids = Vec::new();
    let mut seed_errors = Vec::new();
    for seed in &config.seeds {
        match transport.identify(seed).await {
            Ok(id) if id == node_id => {}
            Ok(id) => {
                transport.set_addresses([(id.clone(), seed.clone())]);
                seed_ids.push(id);
            }
            Err(e) => seed_errors.push(format!("{seed}: {e}")),
        }
    }
    node_config.gossip.seeds = seed_ids.clone();

    let mut me = MemberInfo::new(
        node_id.clone(),
        advertised_peer.clone(),
        advertised_client.clone(),
        config.capacity.max(1),
    );
    me.zone = config.zone.clone();

    let mut clock = Clock::default();
    let now = clock.now();
    let persisted = storage
        .read_now(&StorageKey::view())
        .map_err(|e| ServerError::View(e.to_string()))?;
    let marker_path = config.data_dir.join(MUST_REJOIN_FILE_NAME);
    let marker_error = |e: std::io::Error| ServerError::Identity {
        path: marker_path.clone(),
        message: format!("cannot read or remove the must-rejoin marker: {e}"),
    };
    let must_rejoin = storage::must_rejoin(&config.data_dir).map_err(marker_error)?;
    let node = match persisted {
        Some(bytes) => {
            let view = ClusterView::decode(&bytes).map_err(|e| ServerError::View(e.to_string()))?;
            let mut node = Node::from_view(node_config, view, now)?;
            node.announce(now, &advertised_peer, &advertised_client)
                .map_err(|e| ServerError::View(e.to_string()))?;
            tracing::info!(node = %node_id, incarnation = identity.incarnation, "restarted from the persisted cluster view");
            node
        }
        None if !config.seeds.is_empty() => {
            if seed_ids.is_empty() {
                return Err(ServerError::Seeds(seed_errors.join("; ")));
            }
            tracing::info!(node = %node_id, seeds = ?seed_ids, "joining through the seeds");
            persist_view(&storage, Node::join_as(node_config, me.clone(), now)?)?
        }
        None if must_rejoin.is_some() => {
            return Err(ServerError::MustRejoin {
                path: marker_path.clone(),
                marker: must_rejoin.unwrap_or_default(),
            });
        }
        None => {
            tracing::info!(node = %node_id, "starting a new cluster");
            persist_view(&storage, Node::bootstrap(node_config, me.clone(), now)?)?
        }
    };

    // The view is persisted (restored, or stored by the join above): a restart now finds its
    // cluster, so the node no longer needs seeds to be kept from founding one.
    if must_rejoin.is_some() {
        storage::clear_must_rejoin(&config.data_dir).map_err(marker_error)?;
        tracing::info!(node = %node_id, "rejoined after a damaged store: must-rejoin marker removed");
    }

    let (requests_tx, requests) = mpsc::channel(4096);
    let handle = NodeHandle {
        requests: requests_tx,
        metrics: metrics.clone(),
        node_id: node_id.clone(),
        draining: Default::default(),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (drained_tx, drained) = watch::channel(false);
    let task = NodeTask {
        node,
        me,
        storage,
        transport,
        metrics,
        clock,
        requests,
        inbound,
        completions,
        drain_timeout: Duration::from_millis(config.drain_timeout_ms),
        storage_in_flight: 0,
        pending_join: None,
        drained: drained_tx,
    };
    let node_task = tokio::spawn(node_loop::run(task, shutdown_rx.clone()));
    let http_config = HttpConfig {
        max_connections: config.max_connections,
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        ui_dir: config.ui_dir.clone().or_else(built_ui_dir),
        tls: security.http_tls,
        ..HttpConfig::default()
    };
    let mut http_shutdown = shutdown_rx;
    let http_task = tokio::spawn(http::serve(
        http_listener,
        handle.clone(),
        http_config,
        async move {
            let _ = http_shutdown.wait_for(|stop| *stop).await;
        },
    ));
    tracing::info!(
        node = %node_id,
        http = %client_address,
        peer = %peer_address,
        https = config.tls_cert.is_some(),
        peer_tls = config.peer_tls_cert.is_some(),
        cluster_secret = config.cluster_secret.is_some() || config.cluster_secret_file.is_some(),
        "serving"
    );
    Ok(RunningServer {
        node: handle,
        client_address,
        peer_address,
        shutdown,
        drained,
        stop_when_drained: config.stop_when_drained,
        shutdown_delay: Duration::from_millis(config.shutdown_delay_ms),
        node_task,
        http_task,
    })
}

mod bucket_defaults;
#[cfg(test)]
mod tests;

use bucket_defaults::sum_unless_set;
pub use bucket_defaults::BucketDefaults;
