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
//! the secret (see [`handshake_dial`]); a peer that cannot is refused before any message of its
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

use bytes::{Buf, BufMut, BytesMut};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use ringkv_core::id::NodeId;
use ringkv_core::wire::{self, Message, WireError};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::tls::{self, PeerTls};

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

/// Which side of a handshake made a proof: part of what is MACed, so that a proof cannot be
/// sent back to the side that made it.
#[derive(Clone, Copy, Debug)]
enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer\0",
            Role::Acceptor => b"acceptor\0",
        }
    }
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

/// The first frame on every connection, from each side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's cluster.
    pub cluster: String,
    /// The sender's id.
    pub node_id: NodeId,
    /// Where peers reach the sender (empty when it did not say).
    pub address: String,
    /// Whether the sender proves, and asks for proof of, the cluster secret after the hellos.
    pub uses_secret: bool,
    /// Fresh random bytes: the other side's proof covers them, so no recorded proof is ever
    /// valid again.
    pub nonce: [u8; NONCE_BYTES],
}

impl Hello {
    /// Encodes `RKV\0`, [`PROTOCOL_VERSION`], then the cluster, the node id and the advertised
    /// address, each as a big-endian `u16` length and UTF-8 bytes, then a flags byte (bit 0:
    /// [`Hello::uses_secret`]; the others zero) and the [`NONCE_BYTES`]-byte nonce.
    pub fn encode(&self) -> Result<Vec<u8>, TransportError> {
        let cluster = self.cluster.as_bytes();
        let node = self.node_id.as_str().as_bytes();
        let address = self.address.as_bytes();
        let mut out = Vec::with_capacity(
            4 + 1 + 2 + cluster.len() + 2 + node.len() + 2 + address.len() + 1 + NONCE_BYTES,
        );
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
        out.push(if self.uses_secret { FLAG_SECRET } else { 0 });
        out.extend_from_slice(&self.nonce);
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
        if rest.len() < 1 + NONCE_BYTES {
            return Err(TransportError::BadHandshake("truncated hello"));
        }
        let flags = rest.get_u8();
        if flags & !FLAG_SECRET != 0 {
            return Err(TransportError::BadHandshake("unknown flags in hello"));
        }
        let mut nonce = [0u8; NONCE_BYTES];
        rest.copy_to_slice(&mut nonce);
        if !rest.is_empty() {
            return Err(TransportError::BadHandshake(
                "trailing bytes after the hello",
            ));
        }
        Ok(Hello {
            cluster,
            node_id: NodeId::new(node),
            address,
            uses_secret: flags & FLAG_SECRET != 0,
            nonce,
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
    half: WriteHalf,
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

/// The halves of a connection, plain TCP or TLS (boxed: the framing does not care which).
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
type FrameReader = FramedRead<ReadHalf, FrameCodec>;

/// Framed halves limited to hello-sized frames.
fn framed(read: ReadHalf, write: WriteHalf) -> (FrameReader, FrameWriter) {
    (
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
    )
}

/// A TLS handshake's failure: rustls's refusals (bad certificate, not TLS) arrive as
/// `InvalidData` and are the peer's doing; anything else is the network's.
fn tls_failure(error: io::Error) -> TransportError {
    if error.kind() == io::ErrorKind::InvalidData {
        TransportError::Tls(error)
    } else {
        TransportError::Io(error)
    }
}

/// The dialing side's connection: TLS when configured (checking that the certificate names
/// the host of `address`), else the TCP stream itself.
async fn secure_outbound(
    config: &TransportConfig,
    stream: TcpStream,
    address: &str,
) -> Result<(FrameReader, FrameWriter), TransportError> {
    stream.set_nodelay(true)?;
    match &config.tls {
        None => {
            let (read, write) = stream.into_split();
            Ok(framed(Box::new(read), Box::new(write)))
        }
        Some(peer_tls) => {
            let name = tls::server_name(address).ok_or_else(|| TransportError::NoServerName {
                address: address.to_string(),
            })?;
            let stream = peer_tls
                .connector
                .connect(name, stream)
                .await
                .map_err(tls_failure)?;
            let (read, write) = tokio::io::split(stream);
            Ok(framed(Box::new(read), Box::new(write)))
        }
    }
}

/// The accepting side's connection: TLS when configured (the dialer must present a
/// certificate of the cluster CA), else the TCP stream itself.
async fn secure_inbound(
    config: &TransportConfig,
    stream: TcpStream,
) -> Result<(FrameReader, FrameWriter), TransportError> {
    stream.set_nodelay(true)?;
    match &config.tls {
        None => {
            let (read, write) = stream.into_split();
            Ok(framed(Box::new(read), Box::new(write)))
        }
        Some(peer_tls) => {
            let stream = peer_tls
                .acceptor
                .accept(stream)
                .await
                .map_err(tls_failure)?;
            let (read, write) = tokio::io::split(stream);
            Ok(framed(Box::new(read), Box::new(write)))
        }
    }
}

async fn write_frame(writer: &mut FrameWriter, frame: &[u8]) -> Result<(), TransportError> {
    writer.feed(frame).await?;
    writer.flush().await
}

/// Reads one handshake frame (a hello or a proof).
async fn read_handshake_frame(reader: &mut FrameReader) -> Result<BytesMut, TransportError> {
    match reader.next().await {
        None => Err(TransportError::Closed),
        Some(Err(TransportError::Truncated)) => Err(TransportError::BadHandshake(
            "connection closed in the middle of a handshake frame",
        )),
        Some(Err(error)) => Err(error),
        Some(Ok(frame)) => Ok(frame),
    }
}

/// Reads a hello; returns it with its exact bytes, which the proofs cover.
async fn read_hello(reader: &mut FrameReader) -> Result<(Hello, BytesMut), TransportError> {
    let frame = read_handshake_frame(reader).await?;
    Ok((Hello::decode(&frame)?, frame))
}

/// This node's hello, with a fresh nonce from the operating system's CSPRNG.
fn our_hello(config: &TransportConfig) -> Result<Hello, TransportError> {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(io::Error::other)?;
    Ok(Hello {
        cluster: config.cluster.clone(),
        node_id: config.node_id.clone(),
        address: config.advertised_address.clone(),
        uses_secret: config.secret.is_some(),
        nonce,
    })
}

/// The MAC a `role` side sends to prove it knows the secret: over the role and both hellos
/// exactly as sent (so both nonces, both ids, the cluster and the addresses), each with its
/// length so that no two transcripts read the same.
fn proof_mac(
    secret: &ClusterSecret,
    role: Role,
    acceptor_hello: &[u8],
    dialer_hello: &[u8],
) -> Result<Hmac<Sha256>, TransportError> {
    let mut mac = secret.mac(role)?;
    for hello in [acceptor_hello, dialer_hello] {
        // Hellos are far below 4 GiB (MAX_HELLO_BYTES).
        mac.update(&(hello.len() as u32).to_be_bytes());
        mac.update(hello);
    }
    Ok(mac)
}

/// Checks that both sides agree on using a secret: one without would hang on the other's proof
/// or read it as a message.
fn check_secret_use(config: &TransportConfig, remote: &Hello) -> Result<(), TransportError> {
    match (config.secret.is_some(), remote.uses_secret) {
        (true, false) => Err(TransportError::Unauthenticated(
            "the peer has no cluster secret",
        )),
        (false, true) => Err(TransportError::Unauthenticated(
            "the peer uses a cluster secret and this node has none",
        )),
        _ => Ok(()),
    }
}

/// Reads the other side's proof and checks it in constant time.
async fn verify_proof(
    reader: &mut FrameReader,
    expected: Hmac<Sha256>,
) -> Result<(), TransportError> {
    let proof = read_handshake_frame(reader).await?;
    // verify_slice compares in constant time (and refuses any length but the MAC's).
    expected
        .verify_slice(&proof)
        .map_err(|_| TransportError::Unauthenticated("wrong proof of the cluster secret"))
}

/// The dialing side of the handshake: reads the accepting side's hello, then introduces itself
/// (unless the accepting side is this very node: it then hangs up without claiming the other
/// side's own id, so dialing oneself, as a seed list including this node does, is not taken
/// for an impostor). Returns the accepting side's hello; the caller decides what to do with a
/// hello naming this node.
///
/// With a cluster secret, the hellos are followed by two proofs, each an HMAC-SHA256 under the
/// secret of a role label and both hellos as sent (see [`proof_mac`]): the dialer sends its
/// proof first, the acceptor checks it, then sends its own, which the dialer checks. The dialer
/// goes first so that a stranger who connects learns no MAC at all; each side's proof covers
/// the other's fresh nonce, so a recorded proof is worthless, and its role label, so a proof
/// cannot be reflected. The secret proves membership of the handshake only: against someone on
/// the path who could take over the connection afterwards, TLS is what protects the link.
async fn handshake_dial(
    config: &TransportConfig,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<Hello, TransportError> {
    let (remote, remote_bytes) = read_hello(reader).await?;
    // Reached ourselves (a seed list naming this node). Without a secret, say so at once; with
    // one, a hello claiming our id proves nothing (anyone listening at a seed's address can
    // send it), so the proofs run as with any peer: only our own listener can answer them.
    if remote.node_id == config.node_id && config.secret.is_none() {
        return Ok(remote);
    }
    let ours = our_hello(config)?.encode()?;
    write_frame(writer, &ours).await?;
    if remote.cluster != config.cluster {
        return Err(TransportError::WrongCluster {
            expected: config.cluster.clone(),
            found: remote.cluster,
        });
    }
    check_secret_use(config, &remote)?;
    if let Some(secret) = &config.secret {
        let proof = proof_mac(secret, Role::Dialer, &remote_bytes, &ours)?;
        write_frame(writer, &proof.finalize().into_bytes()).await?;
        let expected = proof_mac(secret, Role::Acceptor, &remote_bytes, &ours)?;
        verify_proof(reader, expected).await?;
    }
    Ok(remote)
}

/// The accepting side of the handshake: introduces itself, then reads and checks the dialer's
/// hello and, with a cluster secret, its proof (before answering with its own, see
/// [`handshake_dial`]). Returns the dialer's hello; no frame of a dialer that fails here is
/// ever decoded as a message.
async fn handshake_accept(
    config: &TransportConfig,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<Hello, TransportError> {
    let ours = our_hello(config)?.encode()?;
    write_frame(writer, &ours).await?;
    let (remote, remote_bytes) = read_hello(reader).await?;
    if remote.cluster != config.cluster {
        return Err(TransportError::WrongCluster {
            expected: config.cluster.clone(),
            found: remote.cluster,
        });
    }
    let claims_self = remote.node_id == config.node_id;
    if claims_self && config.secret.is_none() {
        return Err(TransportError::SelfConnection);
    }
    check_secret_use(config, &remote)?;
    if let Some(secret) = &config.secret {
        let expected = proof_mac(secret, Role::Dialer, &ours, &remote_bytes)?;
        verify_proof(reader, expected).await?;
        let proof = proof_mac(secret, Role::Acceptor, &ours, &remote_bytes)?;
        write_frame(writer, &proof.finalize().into_bytes()).await?;
    }
    if claims_self {
        // This node identifying itself through a seed list, proven above (our own dialer, or
        // a relay to it): answered, then closed without counting a rejection.
        return Err(TransportError::Closed);
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
    let handshake = async {
        let (mut reader, mut writer) = secure_outbound(config, stream, address).await?;
        let hello = handshake_dial(config, &mut reader, &mut writer).await?;
        Ok::<_, TransportError>((hello, reader, writer))
    };
    tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| TransportError::HandshakeTimeout)?
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    inbound: mpsc::Sender<(NodeId, Message)>,
) {
    let handshakes = Arc::new(Semaphore::new(shared.config.max_pending_handshakes.max(1)));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let Ok(permit) = Arc::clone(&handshakes).try_acquire_owned() else {
                    // Closed at once: no task, no timer, the socket freed now.
                    drop(stream);
                    Metrics::count(&shared.metrics.peer_frames_rejected, "too_many_handshakes");
                    tracing::debug!(%remote, "too many peer handshakes in progress: connection closed");
                    continue;
                };
                shared.spawn(serve_inbound(
                    shared.clone(),
                    stream,
                    remote,
                    inbound.clone(),
                    permit,
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
    handshake_permit: OwnedSemaphorePermit,
) {
    let config = &shared.config;
    // The TLS handshake is inside the timeout too: a silent dialer holds nothing for long.
    let handshake = async {
        let (mut reader, mut writer) = secure_inbound(config, stream).await?;
        let hello = handshake_accept(config, &mut reader, &mut writer).await?;
        Ok::<_, TransportError>((hello, reader, writer))
    };
    let handshake = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        result = tokio::time::timeout(config.handshake_timeout, handshake) =>
            result.unwrap_or(Err(TransportError::HandshakeTimeout)),
    };
    let (peer, mut reader, writer) = match handshake {
        Ok((hello, reader, writer)) => {
            shared.learn_address(&hello.node_id, &hello.address);
            (hello.node_id, reader, writer)
        }
        Err(error) => return shared.reject(&error, &remote.to_string()),
    };
    // Authenticated (as far as the configuration asks): no longer a pending handshake.
    drop(handshake_permit);
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
    use std::path::Path;
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

    /// Reads one frame off a raw stream.
    async fn read_raw_frame(stream: &mut TcpStream) -> Vec<u8> {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut body).await.unwrap();
        body
    }

    fn raw_hello(id: &str, cluster: &str, uses_secret: bool, nonce: u8) -> Vec<u8> {
        Hello {
            cluster: cluster.to_string(),
            node_id: NodeId::new(id),
            address: String::new(),
            uses_secret,
            nonce: [nonce; NONCE_BYTES],
        }
        .encode()
        .unwrap()
    }

    /// A raw connection that has done a proper handshake as node `id` of `cluster`.
    async fn raw_peer(target: &Node, id: &str, cluster: &str) -> TcpStream {
        let mut stream = TcpStream::connect(target.transport.local_addr())
            .await
            .unwrap();
        let hello = read_raw_frame(&mut stream).await;
        assert_eq!(Hello::decode(&hello).unwrap().cluster, "c");
        stream
            .write_all(&frame(&raw_hello(id, cluster, false, 0)))
            .await
            .unwrap();
        stream
    }

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(format!("{text:0<16}")).unwrap()
    }

    fn with_secret(node: &str, cluster: &str, text: &str) -> TransportConfig {
        TransportConfig {
            secret: Some(secret(text)),
            ..config(node, cluster)
        }
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
            uses_secret: true,
            nonce: [7; NONCE_BYTES],
        };
        let encoded = hello.encode().unwrap();
        assert_eq!(&encoded[..4], b"RKV\0");
        assert_eq!(encoded[4], 2);
        assert_eq!(Hello::decode(&encoded).unwrap(), hello);
        // Version 1 hellos (no flags, no nonce) are refused, not misread.
        let mut version_1 = encoded[..encoded.len() - 1 - NONCE_BYTES].to_vec();
        version_1[4] = 1;
        assert!(Hello::decode(&version_1).is_err());
        let mut unknown_flag = encoded.clone();
        let flags_at = encoded.len() - 1 - NONCE_BYTES;
        unknown_flag[flags_at] |= 0b10;
        assert!(matches!(
            Hello::decode(&unknown_flag),
            Err(TransportError::BadHandshake("unknown flags in hello"))
        ));
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
            ..hello.clone()
        };
        assert!(matches!(
            too_long.encode(),
            Err(TransportError::NameTooLong { .. })
        ));
        // The largest hello fits the hello frame limit exactly.
        let longest = Hello {
            cluster: "x".repeat(MAX_HELLO_NAME_BYTES),
            node_id: NodeId::new("y".repeat(MAX_HELLO_NAME_BYTES)),
            address: "z".repeat(MAX_HELLO_NAME_BYTES),
            ..hello
        };
        assert_eq!(longest.encode().unwrap().len(), MAX_HELLO_BYTES);
    }

    #[test]
    fn proofs_depend_on_the_secret_the_role_and_both_hellos() {
        let proof = |secret: &ClusterSecret, role, acceptor: &[u8], dialer: &[u8]| {
            proof_mac(secret, role, acceptor, dialer)
                .unwrap()
                .finalize()
                .into_bytes()
        };
        let (a, b) = (raw_hello("a", "c", true, 1), raw_hello("b", "c", true, 2));
        let s = secret("s");
        let reference = proof(&s, Role::Dialer, &a, &b);
        assert_eq!(reference.len(), PROOF_BYTES);
        assert_eq!(reference, proof(&s, Role::Dialer, &a, &b));
        assert_ne!(reference, proof(&secret("t"), Role::Dialer, &a, &b));
        assert_ne!(reference, proof(&s, Role::Acceptor, &a, &b));
        assert_ne!(reference, proof(&s, Role::Dialer, &b, &a));
        assert_ne!(
            reference,
            proof(&s, Role::Dialer, &raw_hello("a", "c", true, 3), &b)
        );
        assert!(ClusterSecret::new("short").is_err());
        assert_eq!(format!("{s:?}"), "ClusterSecret(..)");
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
    async fn peers_sharing_the_secret_talk_and_others_are_refused() {
        let mut a = start_on(with_secret("a", "c", "right"), "127.0.0.1:0").await;
        let mut b = start_on(with_secret("b", "c", "right"), "127.0.0.1:0").await;
        introduce(&a, &b, "a", "b");
        a.transport.send(&NodeId::new("b"), numbered(1));
        assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(1)));
        b.transport.send(&NodeId::new("a"), numbered(2));
        assert_eq!(receive(&mut a).await, (NodeId::new("b"), numbered(2)));

        // A wrong secret: its proof fails at b, which never answers with its own.
        let wrong = start_on(with_secret("w", "c", "wrong"), "127.0.0.1:0").await;
        // No secret at all: each side sees the other's hello does not match its own.
        let none = start("n", "c").await;
        for stranger in [&wrong, &none] {
            stranger
                .transport
                .set_addresses([(NodeId::new("b"), b.transport.local_addr().to_string())]);
            stranger.transport.send(&NodeId::new("b"), numbered(66));
        }
        eventually(|| rejected(&b, "bad_secret") >= 2).await;
        eventually(|| rejected(&none, "bad_secret") >= 1).await;
        assert!(matches!(
            none.transport
                .identify(&b.transport.local_addr().to_string())
                .await,
            Err(TransportError::Unauthenticated(_))
        ));
        assert!(wrong
            .transport
            .identify(&b.transport.local_addr().to_string())
            .await
            .is_err());

        // b goes on serving a, and nothing of the strangers' reached it.
        a.transport.send(&NodeId::new("b"), numbered(3));
        assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(3)));
        assert_eq!(b.metrics.peer_messages_received.get(), 2);
        assert!(b.inbound.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_recorded_proof_does_not_open_a_second_connection() {
        let s = secret("right");
        let mut b = start_on(with_secret("b", "c", "right"), "127.0.0.1:0").await;
        let ours = raw_hello("x", "c", true, 9);

        // A raw dialer that knows the secret gets in and is heard.
        let mut first = TcpStream::connect(b.transport.local_addr()).await.unwrap();
        let theirs = read_raw_frame(&mut first).await;
        first.write_all(&frame(&ours)).await.unwrap();
        let recorded = proof_mac(&s, Role::Dialer, &theirs, &ours)
            .unwrap()
            .finalize()
            .into_bytes();
        first.write_all(&frame(&recorded)).await.unwrap();
        let answer = read_raw_frame(&mut first).await;
        proof_mac(&s, Role::Acceptor, &theirs, &ours)
            .unwrap()
            .verify_slice(&answer)
            .expect("the acceptor's proof does not check");
        first
            .write_all(&frame(&numbered(1).encode()))
            .await
            .unwrap();
        assert_eq!(receive(&mut b).await, (NodeId::new("x"), numbered(1)));

        // The same proof replayed on a new connection: b's nonce is new, so it fails.
        let mut replay = TcpStream::connect(b.transport.local_addr()).await.unwrap();
        let fresh = read_raw_frame(&mut replay).await;
        assert_ne!(fresh, theirs);
        replay.write_all(&frame(&ours)).await.unwrap();
        replay.write_all(&frame(&recorded)).await.unwrap();
        replay.write_all(&frame(&numbered(2).encode())).await.ok();
        closed_by_remote(&mut replay).await;
        eventually(|| rejected(&b, "bad_secret") == 1).await;

        // A stranger claiming a secret and sending a message where the proof goes: refused
        // without the message being decoded.
        let mut stranger = TcpStream::connect(b.transport.local_addr()).await.unwrap();
        read_raw_frame(&mut stranger).await;
        stranger.write_all(&frame(&ours)).await.unwrap();
        stranger.write_all(&frame(&numbered(3).encode())).await.ok();
        closed_by_remote(&mut stranger).await;
        eventually(|| rejected(&b, "bad_secret") == 2).await;
        assert_eq!(b.metrics.peer_messages_received.get(), 1);
        assert!(b.inbound.try_recv().is_err());
    }

    fn with_tls(node: &str, files: &crate::tls::test_certs::Files, ca: &Path) -> TransportConfig {
        TransportConfig {
            tls: Some(PeerTls::from_files(&files.cert, &files.key, ca).unwrap()),
            handshake_timeout: Duration::from_millis(500),
            ..with_secret(node, "c", "right")
        }
    }

    #[tokio::test]
    async fn peers_over_mutual_tls_talk_and_untrusted_ones_are_refused() {
        let cluster = crate::tls::test_certs::generate();
        let mut a = start_on(with_tls("a", &cluster, &cluster.ca), "127.0.0.1:0").await;
        let mut b = start_on(with_tls("b", &cluster, &cluster.ca), "127.0.0.1:0").await;
        introduce(&a, &b, "a", "b");
        for i in 0..50 {
            a.transport.send(&NodeId::new("b"), numbered(i));
        }
        for i in 0..50 {
            assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(i)));
        }
        b.transport.send(&NodeId::new("a"), Message::Ping);
        assert_eq!(receive(&mut a).await, (NodeId::new("b"), Message::Ping));
        let b_address = b.transport.local_addr().to_string();

        // A node of another CA does not trust b's certificate (and b would not trust its own).
        let other = crate::tls::test_certs::generate();
        let foreign = start_on(with_tls("f", &other, &other.ca), "127.0.0.1:0").await;
        assert!(matches!(
            foreign.transport.identify(&b_address).await,
            Err(TransportError::Tls(_))
        ));
        assert_eq!(rejected(&foreign, "tls"), 0, "identify counts nothing");
        // One that trusts b's CA but presents a certificate of another CA: b refuses it.
        let impostor = start_on(with_tls("i", &other, &cluster.ca), "127.0.0.1:0").await;
        impostor
            .transport
            .set_addresses([(NodeId::new("b"), b_address.clone())]);
        impostor.transport.send(&NodeId::new("b"), numbered(66));
        eventually(|| rejected(&b, "tls") >= 2).await;

        // A plain-TCP peer waits for a hello that never comes, and b for a ClientHello: b's
        // handshake timeout (500 ms) cuts it. The plain peer waits longer, so that its own
        // timeout cannot close the connection first (which b would count as a TLS failure).
        let plain = start_on(
            TransportConfig {
                handshake_timeout: Duration::from_secs(5),
                ..with_secret("p", "c", "right")
            },
            "127.0.0.1:0",
        )
        .await;
        assert!(plain.transport.identify(&b_address).await.is_err());
        eventually(|| rejected(&b, "timeout") >= 1).await;
        // A silent connection is cut too.
        let started = std::time::Instant::now();
        let mut silent = TcpStream::connect(b.transport.local_addr()).await.unwrap();
        closed_by_remote(&mut silent).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        eventually(|| rejected(&b, "timeout") >= 2).await;

        // b still serves a; nothing else reached it.
        a.transport.send(&NodeId::new("b"), Message::Pong);
        assert_eq!(receive(&mut b).await, (NodeId::new("a"), Message::Pong));
        assert_eq!(b.metrics.peer_messages_received.get(), 51);
    }

    #[tokio::test]
    async fn connections_beyond_the_pending_handshake_cap_are_closed_at_once() {
        let b = start_on(
            TransportConfig {
                max_pending_handshakes: 2,
                handshake_timeout: Duration::from_secs(30),
                ..config("b", "c")
            },
            "127.0.0.1:0",
        )
        .await;
        // Two silent connections hold both handshake slots.
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(b.transport.local_addr()).await.unwrap());
        }
        // The third is closed at once, long before the handshake timeout.
        let mut third = TcpStream::connect(b.transport.local_addr()).await.unwrap();
        closed_by_remote(&mut third).await;
        eventually(|| rejected(&b, "too_many_handshakes") == 1).await;
        // A real peer still gets through once a slot is free again.
        drop(silent);
        let a = start("a", "c").await;
        let b_address = b.transport.local_addr().to_string();
        tokio::time::timeout(WAIT, async {
            loop {
                if a.transport.identify(&b_address).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a peer could not connect after the slots were freed");
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
    async fn with_a_secret_an_unproven_hello_claiming_our_id_is_not_taken_for_ourselves() {
        let a = start_on(with_secret("a", "c", "s"), "127.0.0.1:0").await;
        // Our own address, with the secret: identified as ourselves after the proofs.
        let a_address = a.transport.local_addr().to_string();
        assert_eq!(
            a.transport.identify(&a_address).await.unwrap(),
            NodeId::new("a")
        );
        // A listener without the secret that claims to be "a" (and to use a secret).
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake_address = fake.local_addr().unwrap().to_string();
        let impostor = tokio::spawn(async move {
            let (mut stream, _) = fake.accept().await.unwrap();
            stream
                .write_all(&frame(&raw_hello("a", "c", true, 0)))
                .await
                .unwrap();
            // Reads whatever the dialer sends, proves nothing, then hangs up.
            let mut buffer = [0u8; 1024];
            while let Ok(Ok(read)) = tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
                if read == 0 {
                    break;
                }
                let _ = stream.write_all(&frame(&[0u8; 32])).await;
            }
        });
        let answer = a.transport.identify(&fake_address).await;
        assert!(
            answer.is_err(),
            "an unproven self answer was accepted: {answer:?}"
        );
        impostor.abort();
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

        /// Arbitrary bytes after a valid hello's magic and version reach the name, flags and
        /// nonce parsing, which random bytes alone almost never do.
        #[test]
        fn arbitrary_hello_bodies_never_panic_the_decoder(tail in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = HELLO_MAGIC.to_vec();
            bytes.push(PROTOCOL_VERSION);
            bytes.extend_from_slice(&tail);
            let _ = Hello::decode(&bytes);
        }

        #[test]
        fn hellos_round_trip(
            cluster in "[a-z0-9-]{0,40}",
            node in "[a-z0-9.-]{1,40}",
            address in "[a-z0-9.:]{0,40}",
            uses_secret in any::<bool>(),
            nonce in any::<[u8; NONCE_BYTES]>(),
        ) {
            let hello = Hello { cluster, node_id: NodeId::new(node.as_str()), address, uses_secret, nonce };
            prop_assert_eq!(Hello::decode(&hello.encode().unwrap()).unwrap(), hello);
        }
    }
}
