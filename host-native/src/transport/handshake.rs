//! The handshake every connection opens with: TLS when configured, the hellos, and the proofs of
//! the cluster secret.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use rand::RngCore;
use ringkv_core::id::NodeId;
use sha2::Sha256;
use tokio::net::TcpStream;

use super::frame::{framed, FrameReader, FrameWriter};
use super::*;
use crate::tls;

/// Which side of a handshake made a proof: part of what is MACed, so that a proof cannot be
/// sent back to the side that made it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    pub(super) fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer\0",
            Role::Acceptor => b"acceptor\0",
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
pub(super) async fn secure_outbound(
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
pub(super) async fn secure_inbound(
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
pub(super) fn proof_mac(
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
pub(super) async fn handshake_dial(
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
pub(super) async fn handshake_accept(
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
