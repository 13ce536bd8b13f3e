//! Answers sent before the request body was read (a 413 from the `Content-Length`, an early 400),
//! through a socket, to clients that, like Python's http.client, send the whole body before they
//! read anything: they must get to read the answer, not a reset.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::documents::start;
use super::*;

const MIB: usize = 1024 * 1024;

/// What a client that writes its whole request before reading saw.
#[derive(Debug)]
enum Seen {
    /// Writing failed after `sent` bytes of body: the server closed (EPIPE, ECONNRESET).
    WriteFailed { error: std::io::Error, sent: usize },
    /// Reading the answer failed after `received` bytes.
    ReadFailed {
        error: std::io::Error,
        received: Vec<u8>,
    },
    /// The answer, read until the server closed the connection (`closed`) or the time to read
    /// passed.
    Answer(Raw),
}

#[derive(Debug)]
struct Raw {
    status: u16,
    /// The status line and headers, lower-cased.
    head: String,
    body: Vec<u8>,
    closed: bool,
}

impl Raw {
    fn parse(received: &[u8], closed: bool) -> Raw {
        let end = received
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(received)));
        let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        Raw {
            status,
            head,
            body: received[end + 4..].to_vec(),
            closed,
        }
    }

    fn error(&self) -> api::ErrorBody {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn closes(&self) -> bool {
        self.head.contains("\r\nconnection: close")
    }
}

/// Writes `head`, then `length` bytes of body (`chunked`: in chunked coding, with its last
/// chunk), 64 KiB at a time with `pause` after each; only then reads, until the server closes
/// the connection or `read_for` passed.
async fn upload_then_read(
    stream: &mut TcpStream,
    head: &str,
    length: usize,
    chunked: bool,
    pause: Duration,
    read_for: Duration,
) -> Seen {
    if let Err(error) = stream.write_all(head.as_bytes()).await {
        return Seen::WriteFailed { error, sent: 0 };
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < length {
        let size = chunk.len().min(length - sent);
        let mut data = Vec::with_capacity(size + 16);
        if chunked {
            data.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        }
        data.extend_from_slice(&chunk[..size]);
        if chunked {
            data.extend_from_slice(b"\r\n");
        }
        if let Err(error) = stream.write_all(&data).await {
            return Seen::WriteFailed { error, sent };
        }
        sent += size;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    if chunked {
        if let Err(error) = stream.write_all(b"0\r\n\r\n").await {
            return Seen::WriteFailed { error, sent };
        }
    }
    let mut received = Vec::new();
    match tokio::time::timeout(read_for, stream.read_to_end(&mut received)).await {
        Ok(Err(error)) => Seen::ReadFailed { error, received },
        Ok(Ok(_)) => Seen::Answer(Raw::parse(&received, true)),
        Err(_) => Seen::Answer(Raw::parse(&received, false)),
    }
}

/// Sends `request` and reads one answer with a `Content-Length` (the connection stays open).
async fn exchange(stream: &mut TcpStream, request: &str) -> Raw {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |length| length.trim().parse().unwrap());
            if received.len() >= end + 4 + length {
                return Raw::parse(&received, false);
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("no answer")
            .unwrap();
        assert!(read > 0, "closed after {received:?}");
        received.extend_from_slice(&buffer[..read]);
    }
}

fn put_head(uri: &str, length: usize) -> String {
    format!("PUT {uri} HTTP/1.1\r\nhost: ringkv\r\ncontent-length: {length}\r\n\r\n")
}

async fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).await.unwrap()
}

fn answer(seen: Seen) -> Raw {
    match seen {
        Seen::Answer(raw) => raw,
        Seen::WriteFailed { error, sent } => {
            panic!("the client did not get to read the answer: writing failed after {sent} bytes of body: {error}")
        }
        Seen::ReadFailed { error, received } => panic!(
            "the client did not get to read the answer: reading failed ({error}) after {:?}",
            String::from_utf8_lossy(&received)
        ),
    }
}

#[tokio::test]
async fn a_client_uploading_an_oversized_value_reads_the_413() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let mut stream = connect(server.address).await;
    let length = 9 * MIB;
    let seen = upload_then_read(
        &mut stream,
        &put_head("/kv/b/k", length),
        length,
        false,
        Duration::from_millis(1),
        Duration::from_secs(5),
    )
    .await;
    let raw = answer(seen);
    assert_eq!(raw.status, 413, "{}", raw.head);
    assert_eq!(raw.error().kind, "too_large");
    assert!(raw.closes(), "{}", raw.head);
    assert!(raw.closed, "the connection stayed open after the body");
    assert!(fake.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_early_400_on_a_keep_alive_connection_reaches_a_client_still_uploading() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let mut stream = connect(server.address).await;
    let first = exchange(
        &mut stream,
        "GET /kv/b/one HTTP/1.1\r\nhost: ringkv\r\n\r\n",
    )
    .await;
    assert_eq!(first.status, 200);
    assert!(!first.closes());
    // A bad quorum is refused before the body is looked at.
    let length = 9 * MIB;
    let seen = upload_then_read(
        &mut stream,
        &put_head("/kv/b/k?w=two", length),
        length,
        false,
        Duration::from_millis(1),
        Duration::from_secs(5),
    )
    .await;
    let raw = answer(seen);
    assert_eq!(raw.status, 400, "{}", raw.head);
    assert!(raw.error().error.contains('w'), "{:?}", raw.error());
    assert!(raw.closes() && raw.closed, "{}", raw.head);
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_gets_its_413_read_too() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let mut stream = connect(server.address).await;
    let length = 9 * MIB;
    let seen = upload_then_read(
        &mut stream,
        "PUT /kv/b/k HTTP/1.1\r\nhost: ringkv\r\ntransfer-encoding: chunked\r\n\r\n",
        length,
        true,
        Duration::from_millis(1),
        Duration::from_secs(5),
    )
    .await;
    let raw = answer(seen);
    assert_eq!(raw.status, 413, "{}", raw.head);
    assert!(raw.closes() && raw.closed, "{}", raw.head);
}

/// A client that asked to wait for `100 Continue` gets the final answer instead and never sends
/// the body; nothing is waited for.
#[tokio::test]
async fn expect_continue_gets_the_final_answer_without_a_100() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let mut stream = connect(server.address).await;
    let head = format!(
        "PUT /kv/b/k HTTP/1.1\r\nhost: ringkv\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        9 * MIB
    );
    let started = Instant::now();
    let seen = upload_then_read(
        &mut stream,
        &head,
        0,
        false,
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .await;
    let raw = answer(seen);
    assert_eq!(raw.status, 413, "{}", raw.head);
    assert!(raw.closes() && raw.closed, "{}", raw.head);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Only an answer sent before its body was read closes the connection: one read to its end,
/// chunked or not, keeps it.
#[tokio::test]
async fn a_body_read_to_its_end_keeps_the_connection() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let mut stream = connect(server.address).await;
    let written = exchange(
        &mut stream,
        "PUT /kv/b/k HTTP/1.1\r\nhost: ringkv\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(written.status, 204);
    assert!(!written.closes(), "{}", written.head);
    let written = exchange(
        &mut stream,
        "PUT /kv/b/k HTTP/1.1\r\nhost: ringkv\r\ntransfer-encoding: chunked\r\n\r\n\
         5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(written.status, 204);
    assert!(!written.closes(), "{}", written.head);
    // A quorum failure answered after the body was read keeps it too.
    let failed = exchange(
        &mut stream,
        "PUT /kv/b/down HTTP/1.1\r\nhost: ringkv\r\ntransfer-encoding: chunked\r\n\r\n\
         1\r\nx\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(failed.status, 503);
    assert!(!failed.closes(), "{}", failed.head);
    let read = exchange(
        &mut stream,
        "GET /kv/b/one HTTP/1.1\r\nhost: ringkv\r\n\r\n",
    )
    .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, b"the value");
    let seen = fake.seen.lock().unwrap().clone();
    assert!(
        matches!(&seen[1], ClientRequest::Put { value, .. } if value == b"helloabc"),
        "{seen:?}"
    );
}

/// HTTP/2 has its own way to stop a body (the stream is reset, not the connection): an early
/// 413 leaves the connection serving.
#[tokio::test]
async fn an_early_413_over_http2_leaves_the_connection_serving() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let stream = connect(server.address).await;
    let (mut client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let put = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{}/kv/b/k", server.address))
        .header(CONTENT_LENGTH, 2000)
        .body(Full::new(Bytes::from(vec![7u8; 2000])))
        .unwrap();
    let response = client.send_request(put).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!response.headers().contains_key("connection"));
    let get = Request::builder()
        .uri(format!("http://{}/kv/b/one", server.address))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.send_request(get).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// The lingering is bounded: by time for a client that stops sending, by bytes for one that
/// sends more than is worth reading; then the connection is closed and its slot freed.
#[tokio::test]
async fn a_lingering_close_is_bounded_in_time_and_bytes() {
    let fake = fake_node(canned(), test_status());
    let server = start(
        &fake,
        HttpConfig {
            lingering_time: Duration::from_millis(300),
            lingering_bytes: MIB as u64,
            ..config()
        },
    )
    .await;
    // 100 KiB of a declared 10 MiB, then silence: the answer, then the close when time is up.
    let mut stream = connect(server.address).await;
    let started = Instant::now();
    let seen = upload_then_read(
        &mut stream,
        &put_head("/kv/b/k", 10 * MIB),
        100 * 1024,
        false,
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .await;
    let raw = answer(seen);
    let elapsed = started.elapsed();
    assert_eq!(raw.status, 413);
    assert!(raw.closed, "still open after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    drop(stream);

    // A client sending 100 MiB without reading is cut off once 1 MiB has been discarded.
    let mut stream = connect(server.address).await;
    let started = Instant::now();
    let seen = upload_then_read(
        &mut stream,
        &put_head("/kv/b/k", 100 * MIB),
        100 * MIB,
        false,
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .await;
    match seen {
        // What the kernels buffered on the way comes on top of the 1 MiB.
        Seen::WriteFailed { sent, .. } => assert!(sent < 32 * MIB, "{sent} bytes sent"),
        other => panic!("100 MiB were taken: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(stream);

    for _ in 0..500 {
        if fake.handle.metrics().http_connections.get() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the lingering connections were not closed");
}
