//! Connections: dialing and accepting them, reading inbound ones, and the writer task that owns
//! each peer's outbound connection and queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use ringkv_core::id::NodeId;
use ringkv_core::wire::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::frame::{FrameReader, FrameWriter};
use super::handshake::{handshake_accept, handshake_dial, secure_inbound, secure_outbound};
use super::*;
use crate::metrics::Metrics;

/// Connects to `address` and runs the dialing side of the handshake.
pub(super) async fn dial(
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

pub(super) async fn accept_loop(
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
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            min,
            max,
            current: min,
        }
    }

    pub(super) fn reset(&mut self) {
        self.current = self.min;
    }

    /// A delay in `[current / 2, current]` (never under `min`), then doubles `current` up to
    /// `max`.
    pub(super) fn next_delay(&mut self) -> Duration {
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
pub(super) async fn run_writer(
    shared: Arc<Shared>,
    peer: NodeId,
    mut queue: mpsc::Receiver<Queued>,
    mut address: watch::Receiver<String>,
) {
    let config = &shared.config;
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    // The message taken off the queue that waits for a connection.
    let mut pending: Option<Queued> = None;
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
    pending: &mut Option<Queued>,
    queue: &mut mpsc::Receiver<Queued>,
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
    first: Queued,
    queue: &mut mpsc::Receiver<Queued>,
) -> Result<(), TransportError> {
    let mut written: u64 = 0;
    let mut next = Some(first);
    let mut taken = 0;
    while let Some(queued) = next.take() {
        taken += 1;
        if queued.is_stale() {
            // Its forwarder may have coordinated it elsewhere: delivered now, the write could
            // be coordinated a second time (a duplicate sibling, or a value the client has
            // since replaced coming back). The peer would refuse it.
            Metrics::count(&shared.metrics.peer_messages_dropped, "stale_forward");
            tracing::debug!(%peer, "stale forwarded request dropped");
        } else if let Some(frame) = encode_for_wire(shared, peer, &queued.message) {
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
    queue: &mut mpsc::Receiver<Queued>,
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

/// A message in a peer's queue, with when it goes stale.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) message: Message,
    /// When a forward's deadline passes, by this process's monotonic clock.
    stale_at: Option<std::time::Instant>,
}

impl Queued {
    pub(super) fn new(message: Message) -> Queued {
        let stale_at = match &message {
            // The deadline is the node's time, milliseconds since the Unix epoch by the wall
            // clock: what is left of it is measured now and then counted on the monotonic
            // clock, which a step of the wall clock does not move.
            Message::Forward { deadline, .. } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let left = std::time::Duration::from_millis(deadline.saturating_sub(now));
                Some(std::time::Instant::now() + left)
            }
            _ => None,
        };
        Queued { message, stale_at }
    }

    /// A forwarded client request still queued (its peer unreachable or slow) when its deadline
    /// passed: its forwarder may have coordinated it elsewhere by now, and the peer would refuse
    /// it anyway. Other messages are never stale: late writes, repairs and gossip are all still
    /// right to apply.
    pub(super) fn is_stale(&self) -> bool {
        self.stale_at
            .is_some_and(|at| std::time::Instant::now() >= at)
    }
}
