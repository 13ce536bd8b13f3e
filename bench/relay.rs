//! The replication baseline of `bench/compare.sh`: the network shape of ringkv's replicated
//! write and read, and nothing else. One binary, started three times:
//!
//! ```text
//! relay peer 127.0.0.1:18401
//! relay peer 127.0.0.1:18402
//! relay coordinator 127.0.0.1:18400 --peers 127.0.0.1:18401,127.0.0.1:18402
//! ```
//!
//! The coordinator answers HTTP (hyper, as `bare_hyper`) on ringkv's key path `/kv/{bucket}/{key}`
//! so `ringkv bench --no-routing` can load it. A `PUT` stores the value in an in-memory map, sends
//! it to every peer and answers `204` once all of them replied: with two peers, the two peer round
//! trips of a 3-node N=3 write. A `GET` looks the key up locally and asks one peer (in turn), then
//! answers `200` with the value or `404`: the one peer round trip of a 3-node R=2 read.
//!
//! Peers are reached over one persistent TCP connection each, shared by all HTTP requests as
//! ringkv's peer links are: frames are pipelined and carry a request id, the writer sends whatever
//! is queued in one write, and replies are matched by id. Every process runs a current-thread
//! tokio runtime (one thread). No versions, no storage engine, no membership: whatever ringkv
//! spends beyond this is its own.
//!
//! Frames are `length: u32` then the body, big-endian. A request body is `id: u64, op: u8,
//! key_length: u32, key, value`; a reply body is `id: u64, status: u8, value`. A malformed frame
//! closes the connection.
//!
//! `cargo run --release -p ringkv --example relay -- peer 127.0.0.1:18401`

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// The largest value a PUT may carry.
const MAX_VALUE: usize = 16 << 20;
/// The largest frame accepted on a peer link (a value, its key and the header).
const MAX_FRAME: usize = MAX_VALUE + (1 << 20);
/// Socket buffers: large enough to carry a burst of pipelined frames in one system call.
const BUFFER: usize = 64 << 10;

const OP_PUT: u8 = 1;
const OP_GET: u8 = 2;
const STATUS_STORED: u8 = 0;
const STATUS_FOUND: u8 = 1;
const STATUS_MISSING: u8 = 2;

const USAGE: &str = "usage: relay peer <listen address>\n       relay coordinator <listen address> --peers <address>,<address>...";

/// The in-memory map of one process.
#[derive(Clone, Default)]
struct Store(Arc<Mutex<HashMap<Bytes, Bytes>>>);

impl Store {
    fn map(&self) -> MutexGuard<'_, HashMap<Bytes, Bytes>> {
        // Nothing panics while holding the lock; should it, the map is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads one frame body, or `None` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Bytes>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(invalid("frame too long"));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(Bytes::from(body)))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A request on a peer link.
struct PeerRequest {
    id: u64,
    op: u8,
    key: Bytes,
    value: Bytes,
}

impl PeerRequest {
    fn encode(&self, out: &mut BytesMut) -> io::Result<()> {
        let body = 8 + 1 + 4 + self.key.len() + self.value.len();
        if body > MAX_FRAME {
            return Err(invalid("request too long"));
        }
        out.reserve(4 + body);
        out.put_u32(body as u32);
        out.put_u64(self.id);
        out.put_u8(self.op);
        out.put_u32(self.key.len() as u32);
        out.put_slice(&self.key);
        out.put_slice(&self.value);
        Ok(())
    }

    fn decode(mut frame: Bytes) -> Option<PeerRequest> {
        let id = frame.try_get_u64().ok()?;
        let op = frame.try_get_u8().ok()?;
        let key_length = frame.try_get_u32().ok()? as usize;
        if frame.len() < key_length {
            return None;
        }
        let key = frame.split_to(key_length);
        Some(PeerRequest {
            id,
            op,
            key,
            value: frame,
        })
    }
}

/// A reply on a peer link.
struct PeerReply {
    status: u8,
    value: Bytes,
}

fn encode_reply(id: u64, status: u8, value: &[u8], out: &mut BytesMut) {
    out.reserve(4 + 9 + value.len());
    // Values come from frames no longer than MAX_FRAME, so the length fits.
    out.put_u32((9 + value.len()) as u32);
    out.put_u64(id);
    out.put_u8(status);
    out.put_slice(value);
}

fn decode_reply(mut frame: Bytes) -> Option<(u64, PeerReply)> {
    let id = frame.try_get_u64().ok()?;
    let status = frame.try_get_u8().ok()?;
    Some((
        id,
        PeerReply {
            status,
            value: frame,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Peer

async fn run_peer(address: &str) -> io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    let store = Store::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let store = store.clone();
        tokio::spawn(async move {
            let _ = serve_link(stream, store).await;
        });
    }
}

/// Answers the requests of one coordinator's link, in order; replies to requests that arrived
/// together leave in one write.
async fn serve_link(stream: TcpStream, store: Store) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(BUFFER, read);
    let mut out = BytesMut::with_capacity(BUFFER);
    while let Some(frame) = read_frame(&mut reader).await? {
        let request = PeerRequest::decode(frame).ok_or_else(|| invalid("malformed request"))?;
        match request.op {
            OP_PUT => {
                store.map().insert(request.key, request.value);
                encode_reply(request.id, STATUS_STORED, &[], &mut out);
            }
            OP_GET => match store.map().get(&request.key) {
                Some(value) => encode_reply(request.id, STATUS_FOUND, value, &mut out),
                None => encode_reply(request.id, STATUS_MISSING, &[], &mut out),
            },
            _ => return Err(invalid("unknown operation")),
        }
        if reader.buffer().is_empty() {
            write.write_all(&out).await?;
            out.clear();
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Coordinator

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<PeerReply>>>>;

fn pending(pending: &Pending) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<PeerReply>>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The coordinator's persistent connection to one peer, shared by all HTTP requests.
struct Link {
    outgoing: mpsc::UnboundedSender<PeerRequest>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Link {
    fn open(address: String) -> Link {
        let (outgoing, queue) = mpsc::unbounded_channel();
        let pending = Pending::default();
        tokio::spawn(run_link(address, queue, pending.clone()));
        Link {
            outgoing,
            pending,
            next_id: AtomicU64::new(0),
        }
    }

    /// Queues a request; the receiver gets the reply, or an error if the connection is lost.
    fn send(&self, op: u8, key: Bytes, value: Bytes) -> oneshot::Receiver<PeerReply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        pending(&self.pending).insert(id, reply);
        let request = PeerRequest { id, op, key, value };
        if self.outgoing.send(request).is_err() {
            pending(&self.pending).remove(&id);
        }
        receiver
    }
}

/// Keeps one connection to `address` open (reconnecting when it drops), writes queued requests
/// and hands replies to their waiters.
async fn run_link(
    address: String,
    mut queue: mpsc::UnboundedReceiver<PeerRequest>,
    waiting: Pending,
) {
    loop {
        let stream = match TcpStream::connect(&address).await {
            Ok(stream) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let closed = tokio::select! {
            _ = read_replies(read, waiting.clone()) => false,
            result = write_requests(write, &mut queue) => matches!(result, Ok(true)),
        };
        // Requests in flight on the lost connection fail (their waiters see the sender dropped).
        pending(&waiting).clear();
        if closed {
            return;
        }
    }
}

/// Writes requests as they are queued, all those queued together in one write. `Ok(true)` when
/// the queue is closed.
async fn write_requests(
    mut write: OwnedWriteHalf,
    queue: &mut mpsc::UnboundedReceiver<PeerRequest>,
) -> io::Result<bool> {
    let mut out = BytesMut::with_capacity(BUFFER);
    while let Some(request) = queue.recv().await {
        request.encode(&mut out)?;
        while let Ok(request) = queue.try_recv() {
            request.encode(&mut out)?;
        }
        write.write_all(&out).await?;
        out.clear();
    }
    Ok(true)
}

async fn read_replies(read: OwnedReadHalf, waiting: Pending) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(BUFFER, read);
    while let Some(frame) = read_frame(&mut reader).await? {
        let (id, reply) = decode_reply(frame).ok_or_else(|| invalid("malformed reply"))?;
        // A reply nobody waits for any more (its HTTP request was dropped) is ignored.
        if let Some(waiter) = pending(&waiting).remove(&id) {
            let _ = waiter.send(reply);
        }
    }
    Ok(())
}

struct Coordinator {
    store: Store,
    peers: Vec<Link>,
    next_reader: AtomicUsize,
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

async fn answer(
    request: Request<Incoming>,
    coordinator: Arc<Coordinator>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    if path == "/health" {
        return Ok(reply(StatusCode::OK, Bytes::new()));
    }
    let Some(key) = path.strip_prefix("/kv/") else {
        return Ok(reply(StatusCode::NOT_FOUND, Bytes::new()));
    };
    let key = Bytes::copy_from_slice(key.as_bytes());
    Ok(match *request.method() {
        Method::PUT => {
            let value = match Limited::new(request.into_body(), MAX_VALUE).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new())),
            };
            coordinator.store.map().insert(key.clone(), value.clone());
            // Both requests are queued before waiting for either.
            let replies: Vec<_> = coordinator
                .peers
                .iter()
                .map(|peer| peer.send(OP_PUT, key.clone(), value.clone()))
                .collect();
            let mut stored = true;
            for reply in replies {
                stored &= matches!(
                    reply.await,
                    Ok(PeerReply {
                        status: STATUS_STORED,
                        ..
                    })
                );
            }
            if stored {
                reply(StatusCode::NO_CONTENT, Bytes::new())
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
            }
        }
        Method::GET => {
            let local = coordinator.store.map().get(&key).cloned();
            let turn = coordinator.next_reader.fetch_add(1, Ordering::Relaxed);
            let Some(peer) = coordinator.peers.get(turn % coordinator.peers.len().max(1)) else {
                return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()));
            };
            match peer.send(OP_GET, key, Bytes::new()).await {
                Ok(remote) => {
                    match local.or((remote.status == STATUS_FOUND).then_some(remote.value)) {
                        Some(value) => reply(StatusCode::OK, value),
                        None => reply(StatusCode::NOT_FOUND, Bytes::new()),
                    }
                }
                Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()),
            }
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
    })
}

async fn run_coordinator(address: &str, peers: Vec<String>) -> io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    let coordinator = Arc::new(Coordinator {
        store: Store::default(),
        peers: peers.into_iter().map(Link::open).collect(),
        next_reader: AtomicUsize::new(0),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let coordinator = coordinator.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| answer(request, coordinator.clone()));
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("relay: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> io::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    match arguments.as_slice() {
        ["peer", address] => run_peer(address).await,
        ["coordinator", address, "--peers", peers] => {
            let peers: Vec<String> = peers
                .split(',')
                .map(str::trim)
                .filter(|peer| !peer.is_empty())
                .map(str::to_owned)
                .collect();
            if peers.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, USAGE));
            }
            run_coordinator(address, peers).await
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, USAGE)),
    }
}
