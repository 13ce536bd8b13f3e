//! The peer transport: [`Message`]s between nodes over persistent TCP connections.
//!
//! Each peer gets one outbound connection, owned by a writer task that drains a bounded queue
//! (messages are pipelined, `TCP_NODELAY` is set); connections a peer opens to us are only read.
//! A lost or idle outbound connection is dialed again, with exponential backoff and jitter, as
//! soon as there is something to send.
//!
//! On the wire every frame is a big-endian `u32` length followed by that many bytes; the length
//! is checked against the limit before anything is read or allocated for the body. The first
//! frame each side sends is a hello (see [`Hello`]): magic `RKV\0`, the transport protocol
//! version, the cluster name, the sender's node id and address, whether it uses a cluster
//! secret, and a fresh random nonce. With a [`ClusterSecret`], each side then proves it knows
//! the secret (see `handshake::handshake_dial`); a peer that cannot is refused before any message of its
//! is decoded. Every later frame is one [`Message::encode`]. A frame that is too large or does
//! not decode closes that connection (counted in `peer_frames_rejected`); nothing a peer sends
//! can stop the node.
//!
//! With [`PeerTls`] every connection is mutual TLS first (each side's certificate checked
//! against the cluster CA, the dialed host's name against the accepting side's certificate),
//! and the frames above travel inside it. The TLS handshake counts in `handshake_timeout`.
//!
//! Loss is tolerated by the protocol (it retries, repairs and hands off), so [`Transport::send`]
//! never blocks: a message for a full queue or an unknown peer is dropped and counted.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hmac::{Hmac, Mac};
use ringkv_core::id::NodeId;
use ringkv_core::wire::{self, Message, WireError};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::tls::PeerTls;

mod connection;
mod frame;
mod handshake;
#[cfg(test)]
mod hello_properties;
#[cfg(test)]
mod tests;

use self::connection::{accept_loop, dial, run_writer};
pub(crate) use self::frame::FrameCodec;
pub use self::handshake::Hello;
use self::handshake::Role;

/// Magic bytes that open every hello frame.
pub const HELLO_MAGIC: [u8; 4] = *b"RKV\0";
/// Version of the transport protocol (the hello and framing; messages carry their own version).
/// Version 2 added the secret flag and the nonce to the hello, and the proofs after it.
pub const PROTOCOL_VERSION: u8 = 2;
/// Longest cluster name or node id a hello may carry, in bytes.
pub const MAX_HELLO_NAME_BYTES: usize = 1024;
/// Bytes of the random nonce in every hello.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof of the cluster secret (an HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;
/// Shortest cluster secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Largest hello frame: magic, version, three length-prefixed names, flags and the nonce.
pub const MAX_HELLO_BYTES: usize = 4 + 1 + 3 * (2 + MAX_HELLO_NAME_BYTES) + 1 + NONCE_BYTES;
/// Most peers whose addresses are kept from hellos (the cluster view's members are always kept).
pub const MAX_PEERS: usize = 4096;
/// The hello flag saying the sender proves, and asks for proof of, the cluster secret.
const FLAG_SECRET: u8 = 0b0000_0001;
/// What every proof's MAC starts with, so a MAC made for anything else never passes for one.
const PROOF_DOMAIN: &[u8] = b"ringkv peer proof v2\0";
/// Length of a frame's length prefix.
const LENGTH_PREFIX_BYTES: usize = 4;
/// Most messages written between two flushes (bounds the time a batch holds the socket).
const MAX_BATCH: usize = 256;
/// How long [`Transport::shutdown`] waits for queued messages to be flushed.
const SHUTDOWN_FLUSH_WAIT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (out of file descriptors, ...) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How the transport behaves.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id, announced in every hello.
    pub node_id: NodeId,
    /// The cluster name; peers of another cluster are refused.
    pub cluster: String,
    /// Largest message frame accepted or sent (default [`wire::MAX_FRAME_BYTES`]).
    pub max_frame_bytes: usize,
    /// Messages queued per peer before new ones are dropped (default 4096).
    pub queue_capacity: usize,
    /// Time a TCP connect may take.
    pub connect_timeout: Duration,
    /// Time the hello exchange may take once connected.
    pub handshake_timeout: Duration,
    /// Inbound connections still in their handshake (not yet authenticated) at once; more are
    /// closed as soon as accepted and counted in `peer_frames_rejected` as
    /// `too_many_handshakes`, so strangers cannot hold unbounded sockets and tasks (default 64).
    pub max_pending_handshakes: usize,
    /// First delay before dialing a peer again after a failure.
    pub backoff_min: Duration,
    /// Longest delay between two dials of a peer.
    pub backoff_max: Duration,
    /// An inbound connection silent for this long is closed (the peer dials again when it has
    /// something to say); an outbound one with nothing to send is closed after half of it, so
    /// it is normally the dialer that hangs up, not the reader under its feet.
    pub idle_timeout: Duration,
    /// Where peers reach this node (sent in the hello, so that a node that has never heard of
    /// this one, such as a seed answering a newcomer's first gossip, can answer); may be empty.
    pub advertised_address: String,
    /// Mutual TLS on every peer connection (`None`: plain TCP).
    pub tls: Option<PeerTls>,
    /// The secret peers must prove they know (`None`: no proof asked or given; a peer that
    /// has a secret refuses this node, and this node refuses a peer that has one).
    pub secret: Option<ClusterSecret>,
}

/// A secret shared by the nodes of a cluster, proven in every peer handshake without being
/// sent. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Arc<[u8]>);

impl ClusterSecret {
    /// A secret of at least [`MIN_SECRET_BYTES`] bytes (shorter ones would be guessable from a
    /// recorded handshake).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<ClusterSecret, SecretTooShort> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort {
                length: bytes.len(),
            });
        }
        Ok(ClusterSecret(bytes.into()))
    }

    /// A MAC keyed with the secret, over [`PROOF_DOMAIN`] and the proving side's role.
    fn mac(&self, role: Role) -> Result<Hmac<Sha256>, TransportError> {
        // HMAC takes keys of any length; the error cannot happen, but is not unwrapped.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .map_err(|_| TransportError::Unauthenticated("the secret is not a usable key"))?;
        mac.update(PROOF_DOMAIN);
        mac.update(role.label());
        Ok(mac)
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// A cluster secret shorter than [`MIN_SECRET_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the cluster secret has {length} bytes; at least {MIN_SECRET_BYTES} are needed")]
pub struct SecretTooShort {
    /// Its length.
    pub length: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            node_id: NodeId::new("node"),
            cluster: String::from("ringkv"),
            max_frame_bytes: wire::MAX_FRAME_BYTES,
            queue_capacity: 4096,
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 64,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            advertised_address: String::new(),
            tls: None,
            secret: None,
        }
    }
}

/// Why a connection could not be made or was closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TCP connect failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address dialed.
        address: String,
        /// The socket error.
        source: io::Error,
    },
    /// The TCP connect took longer than `connect_timeout`.
    #[error("connecting to {address} timed out")]
    ConnectTimeout {
        /// The address dialed.
        address: String,
    },
    /// The hello exchange took longer than `handshake_timeout`.
    #[error("the handshake timed out")]
    HandshakeTimeout,
    /// The hello was not a valid one.
    #[error("bad handshake: {0}")]
    BadHandshake(&'static str),
    /// The peer did not prove it knows the cluster secret (or has one when this node has
    /// none): nothing it sends is read.
    #[error("peer not authenticated: {0}")]
    Unauthenticated(&'static str),
    /// The TLS handshake failed (no or an untrusted certificate, a name mismatch, not TLS).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The dialed address has no host a certificate can name.
    #[error("{address} has no host name or IP address to check a certificate against")]
    NoServerName {
        /// The address dialed.
        address: String,
    },
    /// The peer belongs to another cluster.
    #[error("peer is in cluster {found:?}, not {expected:?}")]
    WrongCluster {
        /// This node's cluster.
        expected: String,
        /// The peer's.
        found: String,
    },
    /// The peer claims this node's own id (a node dialing itself, or two nodes sharing an id).
    #[error("peer claims this node's own id")]
    SelfConnection,
    /// The node at a peer's address is another node (a stale address).
    #[error("expected node {expected} at the address, found {found}")]
    WrongPeer {
        /// The node dialed.
        expected: NodeId,
        /// The node that answered.
        found: NodeId,
    },
    /// A frame's length prefix is over the limit; the frame was not read.
    #[error("frame of {length} bytes is over the limit of {limit}")]
    FrameTooLarge {
        /// The announced length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A message frame did not decode.
    #[error("undecodable message: {0}")]
    Garbage(WireError),
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The connection ended before the handshake was complete.
    #[error("connection closed during the handshake")]
    Closed,
    /// A name is too long to be sent in a hello.
    #[error("{what} is longer than {MAX_HELLO_NAME_BYTES} bytes")]
    NameTooLong {
        /// Which name.
        what: &'static str,
    },
    /// The transport is shut down.
    #[error("the transport is shut down")]
    ShutDown,
    /// A socket error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl TransportError {
    /// The `peer_frames_rejected` reason this error counts under, if it is a peer's fault
    /// rather than a routine network event.
    pub fn rejection_reason(&self) -> Option<&'static str> {
        match self {
            TransportError::HandshakeTimeout => Some("timeout"),
            TransportError::BadHandshake(_) => Some("bad_handshake"),
            TransportError::Unauthenticated(_) => Some("bad_secret"),
            TransportError::Tls(_) => Some("tls"),
            TransportError::WrongCluster { .. } => Some("wrong_cluster"),
            TransportError::SelfConnection => Some("self"),
            TransportError::WrongPeer { .. } => Some("wrong_peer"),
            TransportError::FrameTooLarge { .. } => Some("too_large"),
            TransportError::Garbage(_) => Some("garbage"),
            TransportError::Connect { .. }
            | TransportError::ConnectTimeout { .. }
            | TransportError::Truncated
            | TransportError::Closed
            | TransportError::NameTooLong { .. }
            | TransportError::NoServerName { .. }
            | TransportError::ShutDown
            | TransportError::Io(_) => None,
        }
    }
}

/// Counts an open connection in `peer_connections` for as long as it lives.
struct ConnectionGauge {
    metrics: Arc<Metrics>,
}

impl ConnectionGauge {
    fn open(metrics: &Arc<Metrics>) -> ConnectionGauge {
        metrics.peer_connections.inc();
        ConnectionGauge {
            metrics: metrics.clone(),
        }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics.peer_connections.dec();
    }
}

/// Where a writer task sends, and the queue it drains.
struct PeerEntry {
    queue: mpsc::Sender<connection::Queued>,
    address: watch::Sender<String>,
}

/// State shared by the handles and the tasks.
struct Shared {
    config: TransportConfig,
    metrics: Arc<Metrics>,
    local_addr: SocketAddr,
    peers: Mutex<HashMap<NodeId, PeerEntry>>,
    /// Every task of the transport; `None` once shut down (no task starts after that).
    tasks: Mutex<Option<JoinSet<()>>>,
    shutdown: CancellationToken,
}

impl Shared {
    /// Where `id` is reached; an existing address is replaced only with `overwrite` (the
    /// cluster view's addresses win over what a peer says of itself in its hello).
    fn set_address(self: &Arc<Self>, id: NodeId, address: String, overwrite: bool) {
        if address.is_empty() || id == self.config.node_id {
            return;
        }
        let mut known = lock(&self.peers);
        if !overwrite && !known.contains_key(&id) && known.len() >= MAX_PEERS {
            // What strangers say of themselves must not grow the table without bound.
            tracing::debug!(peer = %id, "peer table full: address from a hello not kept");
            return;
        }
        if let Some(entry) = known.get(&id) {
            if overwrite {
                entry.address.send_if_modified(|current| {
                    if *current == address {
                        false
                    } else {
                        tracing::debug!(peer = %id, %address, "peer address changed");
                        *current = address;
                        true
                    }
                });
            }
            return;
        }
        let (queue, messages) = mpsc::channel(self.config.queue_capacity.max(1));
        let (address_tx, address_rx) = watch::channel(address);
        if self.spawn(run_writer(self.clone(), id.clone(), messages, address_rx)) {
            known.insert(
                id,
                PeerEntry {
                    queue,
                    address: address_tx,
                },
            );
        }
    }

    /// What an inbound peer said of its own address, kept only for peers with none known yet.
    fn learn_address(self: &Arc<Self>, id: &NodeId, address: &str) {
        self.set_address(id.clone(), address.to_string(), false);
    }

    /// Starts a task, unless the transport is shut down. Reaps finished tasks on the way so the
    /// set does not grow with every short-lived connection.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut tasks = lock(&self.tasks);
        match tasks.as_mut() {
            Some(set) if !self.shutdown.is_cancelled() => {
                while set.try_join_next().is_some() {}
                set.spawn(task);
                true
            }
            _ => false,
        }
    }

    fn reject(&self, error: &TransportError, peer: &str) {
        match error.rejection_reason() {
            Some(reason) => {
                Metrics::count(&self.metrics.peer_frames_rejected, reason);
                tracing::warn!(%peer, %error, reason, "peer connection rejected");
            }
            None => tracing::debug!(%peer, %error, "peer connection closed"),
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the maps stay
/// consistent: every update is a single insert or replace).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cancels the tasks when the last handle goes (the tasks hold [`Shared`], not this).
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// The peer transport of one node; cheap to clone. Dropping the last clone stops it (without
/// the flush [`Transport::shutdown`] does).
#[derive(Clone)]
pub struct Transport {
    handle: Arc<Handle>,
}

impl Transport {
    /// Accepts peers on `listener` and delivers each decoded message with its sender's id on
    /// `inbound`. The channel is bounded: when the node task lags, reading stops and TCP
    /// pushes back on the senders. Must be called within a tokio runtime.
    pub fn start(
        config: TransportConfig,
        listener: TcpListener,
        inbound: mpsc::Sender<(NodeId, Message)>,
        metrics: Arc<Metrics>,
    ) -> Transport {
        // An unbound listener cannot come from `TcpListener::bind`; report it as unspecified.
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let shared = Arc::new(Shared {
            config,
            metrics,
            local_addr,
            peers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Some(JoinSet::new())),
            shutdown: CancellationToken::new(),
        });
        shared.spawn(accept_loop(shared.clone(), listener, inbound));
        Transport {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// The address the transport listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local_addr
    }

    /// Queues a message for `to`; never blocks (the node task calls it). The message is dropped
    /// and counted in `peer_messages_dropped` (reason `queue_full`, `no_address` or
    /// `shut_down`) when the peer's queue is full or its address unknown: the protocol
    /// tolerates loss, a blocked node would not.
    pub fn send(&self, to: &NodeId, message: Message) {
        let shared = &self.handle.shared;
        let peers = lock(&shared.peers);
        let Some(peer) = peers.get(to) else {
            drop(peers);
            Metrics::count(&shared.metrics.peer_messages_dropped, "no_address");
            tracing::debug!(peer = %to, "no address for peer: message dropped");
            return;
        };
        let result = peer.queue.try_send(connection::Queued::new(message));
        drop(peers);
        match result {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                Metrics::count(&shared.metrics.peer_messages_dropped, "queue_full");
                tracing::debug!(peer = %to, "peer queue full: message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Metrics::count(&shared.metrics.peer_messages_dropped, "shut_down");
            }
        }
    }

    /// Sets where peers are reached (from the cluster view's `peer_address`). Peers not listed
    /// keep their address (a joining node learns the seed's before the view names it); an
    /// empty address is ignored; a changed address makes the peer's connection dial again.
    pub fn set_addresses(&self, peers: impl IntoIterator<Item = (NodeId, String)>) {
        for (id, address) in peers {
            self.handle.shared.set_address(id, address, true);
        }
    }

    /// Dials `address`, exchanges hellos, and returns the id of the node there (this node's
    /// own id when the address is its own). Used to learn a seed's id.
    pub async fn identify(&self, address: &str) -> Result<NodeId, TransportError> {
        let shared = &self.handle.shared;
        if shared.shutdown.is_cancelled() {
            return Err(TransportError::ShutDown);
        }
        let (hello, _reader, _writer) = dial(&shared.config, address).await?;
        Ok(hello.node_id)
    }

    /// Stops accepting, then closes every connection once what is queued for it is written
    /// (waiting at most a couple of seconds; a peer that is not connected loses its queue).
    pub async fn shutdown(&self) {
        let shared = &self.handle.shared;
        shared.shutdown.cancel();
        let tasks = lock(&shared.tasks).take();
        if let Some(mut tasks) = tasks {
            let drained = tokio::time::timeout(SHUTDOWN_FLUSH_WAIT, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::debug!("peer connections still flushing at shutdown: closed");
            }
            // Dropping the set aborts whatever is still running.
        }
    }
}
