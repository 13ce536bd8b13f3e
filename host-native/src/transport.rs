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
//! version, the cluster name and the sender's node id. Every later frame is one
//! [`Message::encode`]. A frame that is too large or does not decode closes that connection
//! (counted in `peer_frames_rejected`); nothing a peer sends can stop the node.
//!
//! Loss is tolerated by the protocol (it retries, repairs and hands off), so [`Transport::send`]
//! never blocks: a message for a full queue or an unknown peer is dropped and counted.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures_util::StreamExt;
use rand::Rng;
use ringkv_core::id::NodeId;
use ringkv_core::wire::{self, Message, WireError};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Magic bytes that open every hello frame.
pub const HELLO_MAGIC: [u8; 4] = *b"RKV\0";
/// Version of the transport protocol (the hello and framing; messages carry their own version).
pub const PROTOCOL_VERSION: u8 = 1;
/// Longest cluster name or node id a hello may carry, in bytes.
pub const MAX_HELLO_NAME_BYTES: usize = 1024;
/// Largest hello frame: magic, version, and two length-prefixed names.
/// Most peers whose addresses are kept from hellos (the cluster view's members are always kept).
pub const MAX_PEERS: usize = 4096;

pub const MAX_HELLO_BYTES: usize = 4 + 1 + 3 * (2 + MAX_HELLO_NAME_BYTES);
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
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            advertised_address: String::new(),
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
            | TransportError::ShutDown
            | TransportError::Io(_) => None,
        }
    }
}

/// The first frame on every connection, from each side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's cluster.
    pub cluster: String,
    /// The sender's id.
    pub node_id: NodeId,
    /// Where peers reach the sender (empty when it did not say).
    pub address: String,
}

impl Hello {
    /// Encodes `RKV\0`, [`PROTOCOL_VERSION`], then the cluster, the node id and the advertised
    /// address, each as a big-endian `u16` length and UTF-8 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, TransportError> {
        let cluster = self.cluster.as_bytes();
        let node = self.node_id.as_str().as_bytes();
        let address = self.address.as_bytes();
        let mut out =
            Vec::with_capacity(4 + 1 + 2 + cluster.len() + 2 + node.len() + 2 + address.len());
        out.extend_from_slice(&HELLO_MAGIC);
        out.push(PROTOCOL_VERSION);
        for (what, name) in [
            ("the cluster name", cluster),
            ("the node id", node),
            ("the address", address),
        ] {
            if name.len() > MAX_HELLO_NAME_BYTES {
                return Err(TransportError::NameTooLong { what });
            }
            // Fits: MAX_HELLO_NAME_BYTES < u16::MAX.
            out.put_u16(name.len() as u16);
            out.extend_from_slice(name);
        }
        Ok(out)
    }

    /// Decodes a hello, refusing anything malformed (never panics).
    pub fn decode(frame: &[u8]) -> Result<Hello, TransportError> {
        let mut rest = frame;
        if rest.len() < HELLO_MAGIC.len() + 1 || rest[..HELLO_MAGIC.len()] != HELLO_MAGIC {
            return Err(TransportError::BadHandshake("not a ringkv hello"));
        }
        rest.advance(HELLO_MAGIC.len());
        if rest.get_u8() != PROTOCOL_VERSION {
            return Err(TransportError::BadHandshake("unsupported protocol version"));
        }
        let cluster = take_name(&mut rest)?;
        let node = take_name(&mut rest)?;
        let address = take_name(&mut rest)?;
        if !rest.is_empty() {
            return Err(TransportError::BadHandshake(
                "trailing bytes after the hello",
            ));
        }
        Ok(Hello {
            cluster,
            node_id: NodeId::new(node),
            address,
        })
    }
}

/// Reads one `u16`-length-prefixed UTF-8 name off the front of `rest`.
fn take_name(rest: &mut &[u8]) -> Result<String, TransportError> {
    if rest.len() < 2 {
        return Err(TransportError::BadHandshake("truncated hello"));
    }
    let length = usize::from(rest.get_u16());
    if length > MAX_HELLO_NAME_BYTES || length > rest.len() {
        return Err(TransportError::BadHandshake("bad name length in hello"));
    }
    let (name, tail) = rest.split_at(length);
    *rest = tail;
    String::from_utf8(name.to_vec())
        .map_err(|_| TransportError::BadHandshake("name in hello is not UTF-8"))
}

/// Frames: a big-endian `u32` length, then the bytes. The length is checked against `limit`
/// before the body is read, so an announced size never causes an allocation beyond the limit.
///
/// A pure function of the bytes read so far, so [`crate::fuzzing::peer_frame`] drives it with
/// arbitrary streams exactly as a connection's reader does.
#[derive(Debug)]
pub(crate) struct FrameCodec {
    /// Largest frame accepted: [`MAX_HELLO_BYTES`] until the handshake is done, then the
    /// configured `max_frame_bytes`.
    pub(crate) limit: usize,
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX_BYTES) else {
            return Ok(None);
        };
        let mut prefix_bytes = [0u8; LENGTH_PREFIX_BYTES];
        prefix_bytes.copy_from_slice(prefix);
        let length = u32::from_be_bytes(prefix_bytes) as usize;
        if length > self.limit {
            return Err(TransportError::FrameTooLarge {
                length,
                limit: self.limit,
            });
        }
        if src.len() < LENGTH_PREFIX_BYTES + length {
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(src.split_to(length)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(TransportError::Truncated),
        }
    }
}

/// The writing half of a connection: frames are gathered in a buffer and written out when it
/// is large or on [`FrameWriter::flush`], so a batch of small messages costs few syscalls.
struct FrameWriter {
    half: OwnedWriteHalf,
    buffer: BytesMut,
    limit: usize,
}

/// Buffered bytes above which [`FrameWriter::feed`] writes out before returning.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

impl FrameWriter {
    /// Appends one frame (length prefix and bytes).
    async fn feed(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        let length = u32::try_from(frame.len())
            .ok()
            .filter(|&length| length as usize <= self.limit)
            .ok_or(TransportError::FrameTooLarge {
                length: frame.len(),
                limit: self.limit,
            })?;
        self.buffer.reserve(LENGTH_PREFIX_BYTES + frame.len());
        self.buffer.put_u32(length);
        self.buffer.extend_from_slice(frame);
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn write_out(&mut self) -> Result<(), TransportError> {
        self.half.write_all(&self.buffer).await?;
        self.buffer.clear();
        Ok(())
    }

    /// Writes out everything fed so far.
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_out().await?;
        self.half.flush().await?;
        Ok(())
    }

    /// Flushes, then ends the sending direction (the peer reads an end of stream).
    async fn close(&mut self) -> Result<(), TransportError> {
        self.flush().await?;
        self.half.shutdown().await?;
        Ok(())
    }
}

type FrameReader = FramedRead<OwnedReadHalf, FrameCodec>;

/// Splits a connected stream into framed halves limited to hello-sized frames.
fn framed(stream: TcpStream) -> Result<(FrameReader, FrameWriter), TransportError> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    Ok((
        FramedRead::new(
            read,
            FrameCodec {
                limit: MAX_HELLO_BYTES,
            },
        ),
        FrameWriter {
            half: write,
            buffer: BytesMut::new(),
            limit: MAX_HELLO_BYTES,
        },
    ))
}

async fn write_hello(writer: &mut FrameWriter, hello: &Hello) -> Result<(), TransportError> {
    writer.feed(&hello.encode()?).await?;
    writer.flush().await
}

async fn read_hello(reader: &mut FrameReader) -> Result<Hello, TransportError> {
    match reader.next().await {
        None => Err(TransportError::Closed),
        Some(Err(TransportError::Truncated)) => Err(TransportError::BadHandshake(
            "connection closed in the middle of the hello",
        )),
        Some(Err(error)) => Err(error),
        Some(Ok(frame)) => Hello::decode(&frame),
    }
}

fn our_hello(config: &TransportConfig) -> Hello {
    Hello {
        cluster: config.cluster.clone(),
        node_id: config.node_id.clone(),
        address: config.advertised_address.clone(),
    }
}

/// The dialing side of the handshake: reads the accepting side's hello, then introduces itself
/// (unless the accepting side is this very node: it then hangs up without claiming the other
/// side's own id, so dialing oneself, as a seed list including this node does, is not taken
/// for an impostor). Returns the accepting side's hello; the caller decides what to do with a
/// hello naming this node.
///
/// Issue 8 (cluster secret) goes here and in [`handshake_accept`]: each hello will carry a
/// nonce, and after the hellos each side sends an HMAC of the other's nonce under the cluster
/// secret and checks the one it receives before the connection is trusted.
async fn handshake_dial(
    config: &TransportConfig,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<Hello, TransportError> {
    let remote = read_hello(reader).await?;
    if remote.node_id == config.node_id {
        return Ok(remote);
    }
    write_hello(writer, &our_hello(config)).await?;
    if remote.cluster != config.cluster {
        return Err(TransportError::WrongCluster {
            expected: config.cluster.clone(),
            found: remote.cluster,
        });
    }
    Ok(remote)
}

/// The accepting side of the handshake: introduces itself, then reads and checks the dialer's
/// hello. Returns the dialer's id. See [`handshake_dial`] for where issue 8's challenge goes.
async fn handshake_accept(
    config: &TransportConfig,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<Hello, TransportError> {
    write_hello(writer, &our_hello(config)).await?;
    let remote = read_hello(reader).await?;
    if remote.cluster != config.cluster {
        return Err(TransportError::WrongCluster {
            expected: config.cluster.clone(),
            found: remote.cluster,
        });
    }
    if remote.node_id == config.node_id {
        return Err(TransportError::SelfConnection);
    }
    Ok(remote)
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
    queue: mpsc::Sender<Message>,
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
        let result = peer.queue.try_send(message);
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

/// Connects to `address` and runs the dialing side of the handshake.
async fn dial(
    config: &TransportConfig,
    address: &str,
) -> Result<(Hello, FrameReader, FrameWriter), TransportError> {
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| TransportError::ConnectTimeout {
            address: address.to_string(),
        })?
        .map_err(|source| TransportError::Connect {
            address: address.to_string(),
            source,
        })?;
    let (mut reader, mut writer) = framed(stream)?;
    let hello = tokio::time::timeout(
        config.handshake_timeout,
        handshake_dial(config, &mut reader, &mut writer),
    )
    .await
    .map_err(|_| TransportError::HandshakeTimeout)??;
    Ok((hello, reader, writer))
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    inbound: mpsc::Sender<(NodeId, Message)>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                shared.spawn(serve_inbound(
                    shared.clone(),
                    stream,
                    remote,
                    inbound.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept a peer connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Reads one inbound connection: the handshake, then messages until the peer hangs up, is
/// silent for `idle_timeout`, or sends a bad frame.
async fn serve_inbound(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    inbound: mpsc::Sender<(NodeId, Message)>,
) {
    let config = &shared.config;
    let (mut reader, mut writer) = match framed(stream) {
        Ok(halves) => halves,
        Err(error) => return shared.reject(&error, &remote.to_string()),
    };
    let handshake = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        result = tokio::time::timeout(
            config.handshake_timeout,
            handshake_accept(config, &mut reader, &mut writer),
        ) => result.unwrap_or(Err(TransportError::HandshakeTimeout)),
    };
    let peer = match handshake {
        Ok(hello) => {
            shared.learn_address(&hello.node_id, &hello.address);
            hello.node_id
        }
        Err(error) => return shared.reject(&error, &remote.to_string()),
    };
    tracing::debug!(%peer, %remote, "inbound peer connection");
    let _gauge = ConnectionGauge::open(&shared.metrics);
    reader.decoder_mut().limit = config.max_frame_bytes;
    loop {
        let next = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            next = tokio::time::timeout(config.idle_timeout, reader.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                tracing::debug!(%peer, "idle inbound peer connection closed");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                shared.reject(&error, peer.as_str());
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let message = match Message::decode(&frame) {
            Ok(message) => message,
            Err(error) => {
                shared.reject(&TransportError::Garbage(error), peer.as_str());
                break;
            }
        };
        shared.metrics.peer_messages_received.inc();
        // Waiting here is the backpressure: while the node task lags, this connection is not
        // read and the sender's TCP window fills.
        let delivered = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            delivered = inbound.send((peer.clone(), message)) => delivered,
        };
        if delivered.is_err() {
            break;
        }
    }
    // The write half lives until here: dropping it earlier would tell the dialer we hung up.
    drop(writer);
}

/// Delays between dials of an unreachable peer: exponential, with jitter so that peers that
/// lost each other at the same moment do not dial in lockstep.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    /// A delay in `[current / 2, current]` (never under `min`), then doubles `current` up to
    /// `max`.
    fn next_delay(&mut self) -> Duration {
        let high = self.current;
        let low = (high / 2).max(self.min).min(high);
        self.current = self.current.saturating_mul(2).min(self.max);
        if low >= high {
            high
        } else {
            rand::thread_rng().gen_range(low..=high)
        }
    }
}

/// How a connected writer stopped.
enum WriterEnd {
    /// The transport is shutting down: the task ends.
    ShutDown,
    /// The connection broke, idled out, or the address changed: dial again when needed.
    Reconnect,
}

/// The task that owns a peer's queue and its outbound connection.
async fn run_writer(
    shared: Arc<Shared>,
    peer: NodeId,
    mut queue: mpsc::Receiver<Message>,
    mut address: watch::Receiver<String>,
) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    // The message taken off the queue that waits for a connection.
    let mut pending: Option<Message> = None;
    // Failures since the last connection: only the first of a streak is logged loudly.
    let mut failures: u32 = 0;
    loop {
        if pending.is_none() {
            tokio::select! {
                biased;
                message = queue.recv() => match message {
                    Some(message) => pending = Some(message),
                    None => return,
                },
                _ = shared.shutdown.cancelled() => return,
            }
        }
        let target = address.borrow_and_update().clone();
        let dialed = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            dialed = dial(config, &target) => dialed,
        };
        let dialed = dialed.and_then(|(hello, reader, writer)| {
            if hello.node_id == config.node_id {
                Err(TransportError::SelfConnection)
            } else if hello.node_id != peer {
                Err(TransportError::WrongPeer {
                    expected: peer.clone(),
                    found: hello.node_id,
                })
            } else {
                Ok((reader, writer))
            }
        });
        match dialed {
            Ok((reader, mut writer)) => {
                if failures > 0 {
                    tracing::debug!(%peer, address = %target, failures, "reconnected to peer");
                }
                failures = 0;
                backoff.reset();
                writer.limit = config.max_frame_bytes;
                let end = pump(
                    &shared,
                    &peer,
                    reader,
                    writer,
                    &mut pending,
                    &mut queue,
                    &mut address,
                )
                .await;
                if let WriterEnd::ShutDown = end {
                    return;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                match error.rejection_reason() {
                    Some(reason) => {
                        Metrics::count(&shared.metrics.peer_frames_rejected, reason);
                        if failures == 1 {
                            tracing::warn!(%peer, address = %target, %error, reason, "peer refused");
                        } else {
                            tracing::debug!(%peer, address = %target, %error, reason, "peer refused");
                        }
                    }
                    None => {
                        tracing::debug!(%peer, address = %target, %error, failures, "cannot reach peer");
                    }
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                    changed = address.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        backoff.reset();
                    }
                }
            }
        }
    }
}

/// Writes to one established outbound connection until it must be closed.
async fn pump(
    shared: &Shared,
    peer: &NodeId,
    mut reader: FrameReader,
    mut writer: FrameWriter,
    pending: &mut Option<Message>,
    queue: &mut mpsc::Receiver<Message>,
    address: &mut watch::Receiver<String>,
) -> WriterEnd {
    let config = &shared.config;
    let _gauge = ConnectionGauge::open(&shared.metrics);
    // Hang up before the reader's idle timeout would, so a message is not written into a
    // connection the other side is closing.
    let idle = config.idle_timeout / 2;
    loop {
        if let Some(first) = pending.take() {
            // A peer that stops reading must not hold this task (and its queue) forever.
            let written = tokio::time::timeout(
                config.idle_timeout,
                write_batch(shared, peer, &mut writer, first, queue),
            )
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "peer connection lost while writing");
                    return WriterEnd::Reconnect;
                }
                Err(_) => {
                    tracing::debug!(%peer, "peer stopped reading: connection closed");
                    return WriterEnd::Reconnect;
                }
            }
        }
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => {
                flush_queue(shared, peer, &mut writer, queue).await;
                return WriterEnd::ShutDown;
            }
            message = queue.recv() => match message {
                Some(message) => *pending = Some(message),
                None => {
                    let _ = writer.close().await;
                    return WriterEnd::ShutDown;
                }
            },
            changed = address.changed() => {
                if changed.is_err() {
                    return WriterEnd::ShutDown;
                }
                tracing::debug!(%peer, "peer address changed: reconnecting");
                return WriterEnd::Reconnect;
            }
            // The accepting side never writes after its hello: this is its close (or a
            // protocol violation, handled the same way).
            _ = reader.next() => {
                tracing::debug!(%peer, "peer closed the connection");
                return WriterEnd::Reconnect;
            }
            _ = tokio::time::sleep(idle) => {
                tracing::debug!(%peer, "idle peer connection closed");
                let _ = writer.close().await;
                return WriterEnd::Reconnect;
            }
        }
    }
}

/// Encodes a message for the wire, or drops it (counted) when it is over the frame limit.
fn encode_for_wire(shared: &Shared, peer: &NodeId, message: &Message) -> Option<Vec<u8>> {
    let frame = message.encode();
    if frame.len() > shared.config.max_frame_bytes {
        Metrics::count(&shared.metrics.peer_messages_dropped, "too_large");
        tracing::warn!(%peer, bytes = frame.len(), "message over the frame limit: dropped");
        return None;
    }
    Some(frame)
}

/// Writes `first` and whatever else is queued right now (up to [`MAX_BATCH`]), then flushes.
async fn write_batch(
    shared: &Shared,
    peer: &NodeId,
    writer: &mut FrameWriter,
    first: Message,
    queue: &mut mpsc::Receiver<Message>,
) -> Result<(), TransportError> {
    let mut written: u64 = 0;
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(message) = next.take() {
        taken += 1;
        if let Some(frame) = encode_for_wire(shared, peer, &message) {
            writer.feed(&frame).await?;
            written += 1;
        }
        if taken < MAX_BATCH {
            next = queue.try_recv().ok();
        }
    }
    writer.flush().await?;
    shared.metrics.peer_messages_sent.inc_by(written);
    Ok(())
}

/// At shutdown: writes what is left in the queue, then closes the connection.
async fn flush_queue(
    shared: &Shared,
    peer: &NodeId,
    writer: &mut FrameWriter,
    queue: &mut mpsc::Receiver<Message>,
) {
    queue.close();
    while let Some(first) = queue.recv().await {
        if let Err(error) = write_batch(shared, peer, writer, first, queue).await {
            tracing::debug!(%peer, %error, "queued messages lost at shutdown");
            return;
        }
    }
    let _ = writer.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ReasonLabels;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use tokio::io::AsyncReadExt;
    use wire::ReadResult;

    const WAIT: Duration = Duration::from_secs(10);

    fn config(node: &str, cluster: &str) -> TransportConfig {
        TransportConfig {
            node_id: NodeId::new(node),
            cluster: cluster.to_string(),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            ..TransportConfig::default()
        }
    }

    struct Node {
        transport: Transport,
        inbound: mpsc::Receiver<(NodeId, Message)>,
        metrics: Arc<Metrics>,
    }

    async fn start_on(config: TransportConfig, address: &str) -> Node {
        let listener = TcpListener::bind(address).await.unwrap();
        let (inbound_tx, inbound) = mpsc::channel(1024);
        let metrics = Arc::new(Metrics::new());
        let transport = Transport::start(config, listener, inbound_tx, metrics.clone());
        Node {
            transport,
            inbound,
            metrics,
        }
    }

    async fn start(node: &str, cluster: &str) -> Node {
        start_on(config(node, cluster), "127.0.0.1:0").await
    }

    fn numbered(id: u64) -> Message {
        Message::ReadReply {
            id,
            result: ReadResult::NotFound,
        }
    }

    fn count(family: &Family<ReasonLabels, Counter>, reason: &str) -> u64 {
        family
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .get()
    }

    fn rejected(node: &Node, reason: &str) -> u64 {
        count(&node.metrics.peer_frames_rejected, reason)
    }

    async fn eventually(mut condition: impl FnMut() -> bool) {
        tokio::time::timeout(WAIT, async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("condition not met in time");
    }

    async fn receive(node: &mut Node) -> (NodeId, Message) {
        tokio::time::timeout(WAIT, node.inbound.recv())
            .await
            .expect("no message in time")
            .expect("inbound channel closed")
    }

    fn introduce(a: &Node, b: &Node, a_id: &str, b_id: &str) {
        a.transport
            .set_addresses([(NodeId::new(b_id), b.transport.local_addr().to_string())]);
        b.transport
            .set_addresses([(NodeId::new(a_id), a.transport.local_addr().to_string())]);
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// A raw connection that has done a proper handshake as node `id` of `cluster`.
    async fn raw_peer(target: &Node, id: &str, cluster: &str) -> TcpStream {
        let mut stream = TcpStream::connect(target.transport.local_addr())
            .await
            .unwrap();
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await.unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(Hello::decode(&hello).unwrap().cluster, "c");
        let ours = Hello {
            cluster: cluster.to_string(),
            node_id: NodeId::new(id),
            address: String::new(),
        };
        stream
            .write_all(&frame(&ours.encode().unwrap()))
            .await
            .unwrap();
        stream
    }

    /// Reads until the transport closes the connection (EOF or reset).
    async fn closed_by_remote(stream: &mut TcpStream) {
        let mut buffer = [0u8; 64];
        tokio::time::timeout(WAIT, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("connection not closed in time");
    }

    #[test]
    fn hello_round_trips_and_rejects_malformed() {
        let hello = Hello {
            cluster: "prod".into(),
            node_id: NodeId::new("n1"),
            address: "10.0.0.1:7087".into(),
        };
        let encoded = hello.encode().unwrap();
        assert_eq!(&encoded[..4], b"RKV\0");
        assert_eq!(Hello::decode(&encoded).unwrap(), hello);
        for cut in 0..encoded.len() {
            assert!(
                Hello::decode(&encoded[..cut]).is_err(),
                "prefix {cut} accepted"
            );
        }
        let mut trailing = encoded.clone();
        trailing.push(0);
        assert!(Hello::decode(&trailing).is_err());
        let mut wrong_version = encoded.clone();
        wrong_version[4] = PROTOCOL_VERSION + 1;
        assert!(Hello::decode(&wrong_version).is_err());
        let too_long = Hello {
            cluster: "x".repeat(MAX_HELLO_NAME_BYTES + 1),
            node_id: NodeId::new("n1"),
            address: String::new(),
        };
        assert!(matches!(
            too_long.encode(),
            Err(TransportError::NameTooLong { .. })
        ));
    }

    #[test]
    fn frame_codec_refuses_an_oversized_length_before_reading_the_body() {
        let mut codec = FrameCodec { limit: 16 };
        let mut buffer = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut buffer),
            Err(TransportError::FrameTooLarge { length, limit: 16 }) if length == u32::MAX as usize
        ));
        // Nothing was reserved for the announced body.
        assert!(buffer.capacity() < 1024);
        let mut partial = BytesMut::from(&frame(b"abcdef")[..7]);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut partial),
            Err(TransportError::Truncated)
        ));
    }

    #[test]
    fn backoff_stays_within_bounds_and_grows() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let mut backoff = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= min && *d <= max));
        assert!(delays[6..].iter().all(|d| *d >= max / 2));
        backoff.reset();
        assert_eq!(backoff.next_delay(), min);
    }

    #[tokio::test]
    async fn messages_flow_both_ways_in_order() {
        let mut a = start("a", "c").await;
        let mut b = start("b", "c").await;
        introduce(&a, &b, "a", "b");
        for i in 0..200 {
            a.transport.send(&NodeId::new("b"), numbered(i));
            b.transport.send(&NodeId::new("a"), numbered(1000 + i));
        }
        for i in 0..200 {
            assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(i)));
            assert_eq!(
                receive(&mut a).await,
                (NodeId::new("b"), numbered(1000 + i))
            );
        }
        assert_eq!(a.metrics.peer_messages_received.get(), 200);
        eventually(|| a.metrics.peer_messages_sent.get() == 200).await;
        // One outbound and one inbound connection on each side.
        assert_eq!(a.metrics.peer_connections.get(), 2);
        a.transport.shutdown().await;
        b.transport.shutdown().await;
        eventually(|| a.metrics.peer_connections.get() == 0).await;
    }

    #[tokio::test]
    async fn an_inbound_peer_is_answered_at_the_address_its_hello_gives() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a_config = config("a", "c");
        a_config.advertised_address = listener.local_addr().unwrap().to_string();
        let (inbound_tx, inbound) = mpsc::channel(1024);
        let metrics = Arc::new(Metrics::new());
        let mut a = Node {
            transport: Transport::start(a_config, listener, inbound_tx, metrics.clone()),
            inbound,
            metrics,
        };
        let mut b = start("b", "c").await;
        a.transport
            .set_addresses([(NodeId::new("b"), b.transport.local_addr().to_string())]);
        a.transport.send(&NodeId::new("b"), numbered(1));
        assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(1)));
        // b never had a's address; it learned it from a's hello.
        b.transport.send(&NodeId::new("a"), numbered(2));
        assert_eq!(receive(&mut a).await, (NodeId::new("b"), numbered(2)));
        assert_eq!(count(&b.metrics.peer_messages_dropped, "no_address"), 0);
    }

    #[tokio::test]
    async fn a_restarted_peer_is_reconnected() {
        let a = start("a", "c").await;
        let mut b = start("b", "c").await;
        let b_address = b.transport.local_addr().to_string();
        a.transport
            .set_addresses([(NodeId::new("b"), b_address.clone())]);
        a.transport.send(&NodeId::new("b"), Message::Ping);
        assert_eq!(receive(&mut b).await.1, Message::Ping);
        b.transport.shutdown().await;
        drop(b);

        let mut b = start_on(config("b", "c"), &b_address).await;
        // Messages written while the old connection dies may be lost: keep sending until one
        // arrives over the new connection.
        let arrived = tokio::time::timeout(WAIT, async {
            loop {
                a.transport.send(&NodeId::new("b"), Message::Pong);
                if let Ok(Some(received)) =
                    tokio::time::timeout(Duration::from_millis(50), b.inbound.recv()).await
                {
                    return received;
                }
            }
        })
        .await
        .expect("no message after the restart");
        assert_eq!(arrived, (NodeId::new("a"), Message::Pong));
    }

    #[tokio::test]
    async fn garbage_is_rejected_and_the_transport_keeps_serving() {
        let mut b = start("b", "c").await;

        // Garbage instead of a hello.
        let mut raw = TcpStream::connect(b.transport.local_addr()).await.unwrap();
        raw.write_all(&frame(b"definitely not a hello"))
            .await
            .unwrap();
        closed_by_remote(&mut raw).await;
        eventually(|| rejected(&b, "bad_handshake") == 1).await;

        // A proper handshake, then a frame that is not a message.
        let mut raw = raw_peer(&b, "x", "c").await;
        raw.write_all(&frame(&[wire::WIRE_VERSION, 0xff, 0xff, 0xff]))
            .await
            .unwrap();
        closed_by_remote(&mut raw).await;
        eventually(|| rejected(&b, "garbage") == 1).await;
        assert_eq!(b.metrics.peer_messages_received.get(), 0);

        // A proper peer is still served.
        let a = start("a", "c").await;
        introduce(&a, &b, "a", "b");
        a.transport.send(&NodeId::new("b"), Message::Ping);
        assert_eq!(receive(&mut b).await, (NodeId::new("a"), Message::Ping));
    }

    #[tokio::test]
    async fn an_oversized_length_prefix_is_rejected_without_reading_it() {
        let b = start("b", "c").await;
        let mut raw = raw_peer(&b, "x", "c").await;
        // Announces 4 GiB and sends none of it: only a check of the prefix closes this.
        raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        closed_by_remote(&mut raw).await;
        eventually(|| rejected(&b, "too_large") == 1).await;

        // An oversized hello is refused the same way.
        let mut raw = TcpStream::connect(b.transport.local_addr()).await.unwrap();
        raw.write_all(&((MAX_HELLO_BYTES + 1) as u32).to_be_bytes())
            .await
            .unwrap();
        closed_by_remote(&mut raw).await;
        eventually(|| rejected(&b, "too_large") == 2).await;

        // A message frame over a configured limit, too, after one under it was delivered.
        let mut small = start_on(
            TransportConfig {
                max_frame_bytes: 8,
                ..config("s", "c")
            },
            "127.0.0.1:0",
        )
        .await;
        let mut raw = raw_peer(&small, "x", "c").await;
        raw.write_all(&frame(&numbered(1).encode())).await.unwrap();
        raw.write_all(&frame(&[0u8; 9])).await.unwrap();
        closed_by_remote(&mut raw).await;
        eventually(|| rejected(&small, "too_large") == 1).await;
        assert_eq!(receive(&mut small).await, (NodeId::new("x"), numbered(1)));
        assert_eq!(b.metrics.peer_messages_received.get(), 0);
    }

    #[tokio::test]
    async fn a_peer_of_another_cluster_is_refused() {
        let mut a = start("a", "c").await;
        let other = start("o", "other").await;
        other
            .transport
            .set_addresses([(NodeId::new("a"), a.transport.local_addr().to_string())]);
        other.transport.send(&NodeId::new("a"), Message::Ping);
        eventually(|| rejected(&a, "wrong_cluster") >= 1).await;
        eventually(|| rejected(&other, "wrong_cluster") >= 1).await;
        assert!(a.inbound.try_recv().is_err());
        assert!(matches!(
            other
                .transport
                .identify(&a.transport.local_addr().to_string())
                .await,
            Err(TransportError::WrongCluster { .. })
        ));
    }

    #[tokio::test]
    async fn a_hello_claiming_our_own_id_is_refused() {
        let b = start("b", "c").await;
        let mut raw = raw_peer(&b, "b", "c").await;
        closed_by_remote(&mut raw).await;
        eventually(|| rejected(&b, "self") == 1).await;
    }

    #[tokio::test]
    async fn identify_returns_the_remote_id() {
        let a = start("a", "c").await;
        let b = start("b", "c").await;
        let b_address = b.transport.local_addr().to_string();
        assert_eq!(
            a.transport.identify(&b_address).await.unwrap(),
            NodeId::new("b")
        );
        // Identifying oneself (a seed list naming this node) works and is no rejection.
        let a_address = a.transport.local_addr().to_string();
        assert_eq!(
            a.transport.identify(&a_address).await.unwrap(),
            NodeId::new("a")
        );
        // A bad hello after it, to know the self connection's end has been handled (one task
        // runs at a time here, and that connection was closed first).
        let mut raw = TcpStream::connect(a.transport.local_addr()).await.unwrap();
        raw.write_all(&frame(b"not a hello")).await.unwrap();
        closed_by_remote(&mut raw).await;
        eventually(|| rejected(&a, "bad_handshake") == 1).await;
        assert_eq!(rejected(&a, "self"), 0);
    }

    #[tokio::test]
    async fn sending_to_an_unknown_peer_counts_no_address() {
        let a = start("a", "c").await;
        a.transport.send(&NodeId::new("nobody"), Message::Ping);
        assert_eq!(count(&a.metrics.peer_messages_dropped, "no_address"), 1);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let a = start_on(
            TransportConfig {
                queue_capacity: 2,
                backoff_min: Duration::from_secs(30),
                backoff_max: Duration::from_secs(30),
                ..config("a", "c")
            },
            "127.0.0.1:0",
        )
        .await;
        // An address nobody listens on.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone_address = gone.local_addr().unwrap().to_string();
        drop(gone);
        a.transport
            .set_addresses([(NodeId::new("b"), gone_address)]);
        for i in 0..20 {
            a.transport.send(&NodeId::new("b"), numbered(i));
        }
        // At most the queue plus the one message the writer holds got through.
        assert!(count(&a.metrics.peer_messages_dropped, "queue_full") >= 17);
        assert_eq!(a.metrics.peer_messages_sent.get(), 0);
        tokio::time::timeout(WAIT, a.transport.shutdown())
            .await
            .expect("shutdown hung");
    }

    #[tokio::test]
    async fn shutdown_flushes_queued_messages() {
        let a = start("a", "c").await;
        let mut b = start("b", "c").await;
        introduce(&a, &b, "a", "b");
        a.transport.send(&NodeId::new("b"), Message::Ping);
        assert_eq!(receive(&mut b).await.1, Message::Ping);
        for i in 0..50 {
            a.transport.send(&NodeId::new("b"), numbered(i));
        }
        a.transport.shutdown().await;
        for i in 0..50 {
            assert_eq!(receive(&mut b).await.1, numbered(i));
        }
        a.transport.send(&NodeId::new("b"), Message::Ping);
        assert_eq!(count(&a.metrics.peer_messages_dropped, "shut_down"), 1);
    }
}

#[cfg(test)]
mod hello_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic_the_hello_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Hello::decode(&bytes);
        }

        #[test]
        fn hellos_round_trip(cluster in "[a-z0-9-]{0,40}", node in "[a-z0-9.-]{1,40}", address in "[a-z0-9.:]{0,40}") {
            let hello = Hello { cluster, node_id: NodeId::new(node.as_str()), address };
            prop_assert_eq!(Hello::decode(&hello.encode().unwrap()).unwrap(), hello);
        }
    }
}
