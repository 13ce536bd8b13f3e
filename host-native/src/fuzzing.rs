//! Checks of every decoder of untrusted bytes, shared by the fuzz targets and the tests.
//!
//! Each check takes arbitrary bytes, runs them through the decoders of one kind of input a peer,
//! a client or a damaged disk can hand us, and panics when a property fails: a decoder panics,
//! or a value it accepted does not come back unchanged from being encoded and decoded again.
//! A refusal is always fine. The cargo-fuzz targets in `fuzz/` (run by `scripts/fuzz`) call
//! these with libFuzzer's inputs, and `tests/tests/fuzz_regressions.rs` calls them with every
//! committed seed and crasher, so that an input that once failed is checked by every
//! `cargo test` after.
//!
//! | target             | decoders                                                               |
//! |--------------------|------------------------------------------------------------------------|
//! | `peer_frame`       | the transport's length-prefixed frame reader, hellos, [`Message::decode`] |
//! | `context`          | [`Context::decode`], [`Context::from_base64`]                           |
//! | `http_request`     | [`parse_kv_target`]: the `/kv` path, query and context header          |
//! | `storage_record`   | the storage record frame (lz4 included), [`Object::decode`]            |
//!
//! Only for testing: the panics are the point.

use bytes::BytesMut;
use http::HeaderValue;
use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::id::NodeId;
use ringkv_core::membership::{ClusterView, GossipMessage, MemberInfo};
use ringkv_core::request::ClientRequest;
use ringkv_core::version::{
    checksum, ActorId, ConflictMode, Content, Context, Object, VersionVector, CONTEXT_FORMAT,
    RECORD_FORMAT,
};
use ringkv_core::wire::{self, Message, ReadResult};
use tokio_util::codec::Decoder;

use crate::http::{parse_kv_target, HttpConfig, KvTarget};
use crate::storage::{self, Compression};
use crate::transport::{FrameCodec, Hello, MAX_HELLO_BYTES};

/// A named check, as the fuzz targets and the corpus directories (`fuzz/corpus/<name>/`) name it.
pub type Target = (&'static str, fn(&[u8]));

/// Every check, by target name.
pub const TARGETS: [Target; 4] = [
    ("peer_frame", peer_frame),
    ("context", context),
    ("http_request", http_request),
    ("storage_record", storage_record),
];

// ----- peer_frame -----

/// `data` as a peer's byte stream (a hello frame, then message frames, each behind its `u32`
/// length), and as one message frame on its own.
///
/// Checks: the frames read do not depend on how the stream arrives in reads, none is over its
/// limit, and they are exactly the bytes they were cut from; every hello and message decoded
/// round-trips.
pub fn peer_frame(data: &[u8]) {
    message(data);
    // The same bytes as a message body, so that mutations explore postcard bodies directly.
    let mut framed = Vec::with_capacity(1 + data.len());
    framed.push(wire::WIRE_VERSION);
    framed.extend_from_slice(data);
    message(&framed);
    stream(data);
}

fn message(frame: &[u8]) {
    if let Ok(message) = Message::decode(frame) {
        assert_eq!(
            Message::decode(&message.encode()).as_ref(),
            Ok(&message),
            "a decoded message does not round-trip"
        );
    }
}

/// What a connection's reader makes of a stream: its frames, then how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Read {
    frames: Vec<Vec<u8>>,
    /// `None` at a clean end of stream, else the error (as text: transport errors are not `Eq`).
    error: Option<String>,
}

/// Reads `stream` arriving in pieces of `chunk` bytes with the transport's own codec, as
/// `FramedRead` does: every frame in the buffer after each read, then the end of stream. The
/// limit is the hello's until the first frame, then the message limit (as after a handshake).
fn read_stream(stream: &[u8], chunk: usize) -> Read {
    let mut codec = FrameCodec {
        limit: MAX_HELLO_BYTES,
    };
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buffer.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    frames.push(frame.to_vec());
                    codec.limit = wire::MAX_FRAME_BYTES;
                }
                Ok(None) => break,
                Err(error) => {
                    return Read {
                        frames,
                        error: Some(error.to_string()),
                    }
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buffer) {
            Ok(Some(frame)) => {
                frames.push(frame.to_vec());
                codec.limit = wire::MAX_FRAME_BYTES;
            }
            Ok(None) => {
                return Read {
                    frames,
                    error: None,
                }
            }
            Err(error) => {
                return Read {
                    frames,
                    error: Some(error.to_string()),
                }
            }
        }
    }
}

fn stream(data: &[u8]) {
    let whole = read_stream(data, data.len());
    for chunk in [1, 7] {
        assert_eq!(
            read_stream(data, chunk),
            whole,
            "the frames depend on how the stream was split into reads"
        );
    }
    let mut reframed = Vec::with_capacity(data.len());
    for (index, frame) in whole.frames.iter().enumerate() {
        let limit = if index == 0 {
            MAX_HELLO_BYTES
        } else {
            wire::MAX_FRAME_BYTES
        };
        assert!(frame.len() <= limit, "a frame over its limit was accepted");
        let length = u32::try_from(frame.len()).expect("frames are shorter than the input");
        reframed.extend_from_slice(&length.to_be_bytes());
        reframed.extend_from_slice(frame);
    }
    if whole.error.is_none() {
        assert_eq!(
            reframed, data,
            "the frames are not the stream they were read from"
        );
    } else {
        assert!(
            data.starts_with(&reframed),
            "the frames are not the stream they were read from"
        );
    }
    let mut frames = whole.frames.iter();
    if let Some(first) = frames.next() {
        if let Ok(hello) = Hello::decode(first) {
            let encoded = hello
                .encode()
                .expect("a decoded hello's names are within limits");
            assert_eq!(
                Hello::decode(&encoded).ok(),
                Some(hello),
                "a decoded hello does not round-trip"
            );
        }
    }
    for frame in frames {
        message(frame);
    }
}

// ----- context -----

/// `data` as a binary context, as the body of one (with its checksum made right, so that
/// mutations get past the crc), and as the text of an HTTP context header.
///
/// Checks: every context decoded round-trips through both of its forms.
pub fn context(data: &[u8]) {
    context_binary(data);
    context_binary(&with_crc(CONTEXT_FORMAT, data));
    if let Ok(decoded) = Context::from_base64(&String::from_utf8_lossy(data)) {
        context_round_trips(decoded);
    }
}

fn context_binary(bytes: &[u8]) {
    if let Ok(decoded) = Context::decode(bytes) {
        context_round_trips(decoded);
    }
}

fn context_round_trips(context: Context) {
    assert_eq!(
        Context::decode(&context.encode()).as_ref(),
        Ok(&context),
        "a decoded context does not round-trip in binary"
    );
    assert_eq!(
        Context::from_base64(&context.to_base64()),
        Ok(context),
        "a decoded context does not round-trip in base64"
    );
}

/// `[version] body [crc32 LE of both]`: the frame of contexts and object records.
fn with_crc(version: u8, body: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(1 + body.len() + 4);
    framed.push(version);
    framed.extend_from_slice(body);
    let crc = checksum(&framed);
    framed.extend_from_slice(&crc.to_le_bytes());
    framed
}

// ----- http_request -----

/// `data` as a request target, optionally followed by a newline and a context header's value;
/// the target is tried both as hyper hands it over (a parsed URI) and as raw text split at `?`.
///
/// Checks: a refusal has a message (it is answered 400); an accepted target has a non-empty
/// bucket and key within the key limit, and written out again (percent-encoded, with its options
/// and context) it parses to the same target.
pub fn http_request(data: &[u8]) {
    let max_key_bytes = HttpConfig::default().max_key_bytes;
    let (target, header) = match data.iter().position(|&byte| byte == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    // hyper refuses a request whose header value is invalid before it reaches the router.
    let header = match header.map(HeaderValue::from_bytes) {
        Some(Err(_)) => return,
        Some(Ok(value)) => Some(value),
        None => None,
    };
    if let Ok(uri) = http::Uri::try_from(target) {
        kv_target(uri.path(), uri.query(), header.as_ref(), max_key_bytes);
    }
    let text = String::from_utf8_lossy(target);
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*text, None),
    };
    kv_target(path, query, header.as_ref(), max_key_bytes);
}

fn kv_target(path: &str, query: Option<&str>, header: Option<&HeaderValue>, max_key_bytes: usize) {
    match parse_kv_target(path, query, header, max_key_bytes) {
        Err(refusal) => assert!(!refusal.0.is_empty(), "a refusal without a message"),
        Ok(target) => {
            assert!(!target.bucket.is_empty(), "an empty bucket was accepted");
            assert!(!target.key.is_empty(), "an empty key was accepted");
            assert!(
                target.key.len() <= max_key_bytes,
                "an over-long key was accepted"
            );
            let (path, query, header) = render_kv_target(&target);
            assert_eq!(
                parse_kv_target(&path, query.as_deref(), header.as_ref(), max_key_bytes),
                Ok(target),
                "a parsed target does not parse back from its canonical form"
            );
        }
    }
}

/// The canonical request for `target`: path, query and context header, as a client sends them.
pub fn render_kv_target(target: &KvTarget) -> (String, Option<String>, Option<HeaderValue>) {
    let path = format!(
        "/kv/{}/{}",
        percent_encode(&target.bucket, NON_ALPHANUMERIC),
        percent_encode(&target.key, NON_ALPHANUMERIC)
    );
    let RequestOptions {
        n,
        r,
        w,
        dw,
        timeout_ms,
        ttl_ms,
        // Conditions travel in headers (If-Match, If-None-Match), not in the target.
        condition: _,
    } = &target.options;
    let mut query = Vec::new();
    for (name, value) in [("r", r), ("w", w), ("dw", dw)] {
        if let Some(value) = value {
            query.push(format!("{name}={value}"));
        }
    }
    if let Some(n) = n {
        query.push(format!("n={n}"));
    }
    if let Some(timeout) = timeout_ms {
        query.push(format!("timeout_ms={timeout}"));
    }
    if let Some(ttl) = ttl_ms {
        query.push(format!("ttl={ttl}ms"));
    }
    let query = (!query.is_empty()).then(|| query.join("&"));
    // Base64url is always a valid header value.
    let header = (!target.context.is_empty())
        .then(|| HeaderValue::from_str(&target.context.to_base64()).ok())
        .flatten();
    (path, query, header)
}

// ----- storage_record -----

/// `data` as a stored frame (and the record in it), as an lz4 payload, as an object record, and
/// as an object record's body (with its crc made right).
///
/// Checks: the record in a frame comes back from a new frame with either compression; every
/// object decoded round-trips, with [`Object::encoded_len`] its exact length.
pub fn storage_record(data: &[u8]) {
    if let Ok(record) = storage::decode_frame(data) {
        record_frames_round_trip(&record);
        object(&record);
    }
    if let Ok(record) = storage::decompress_lz4(data) {
        record_frames_round_trip(&record);
    }
    object(data);
    object(&with_crc(RECORD_FORMAT, data));
}

fn record_frames_round_trip(record: &[u8]) {
    for compression in [Compression::None, Compression::Lz4] {
        assert_eq!(
            storage::decode_frame(&storage::encode_frame(record, compression)).as_deref(),
            Ok(record),
            "a record does not round-trip through a {compression} frame"
        );
    }
}

fn object(record: &[u8]) {
    if let Ok(object) = Object::decode(record) {
        let encoded = object.encode();
        assert_eq!(encoded.len(), object.encoded_len(), "encoded_len is wrong");
        assert_eq!(
            Object::decode(&encoded),
            Ok(object),
            "a decoded object does not round-trip"
        );
    }
}

// ----- seeds -----

/// A seed input: target, file name, bytes.
pub type Seed = (&'static str, &'static str, Vec<u8>);

/// The small valid inputs committed under `fuzz/corpus/<target>/`, which give libFuzzer a
/// start past the version bytes, checksums and length prefixes. A test checks the committed
/// files are these (and writes them when `RINGKV_WRITE_FUZZ_SEEDS=1`).
pub fn seeds() -> Vec<Seed> {
    let (object, tombstone) = sample_objects();
    let context = object.context();
    let hello = Hello {
        cluster: "prod".into(),
        node_id: NodeId::new("n1"),
        address: "10.0.0.1:7087".into(),
        uses_secret: true,
        nonce: [7; crate::transport::NONCE_BYTES],
    }
    .encode()
    .expect("short names");
    let mut view = ClusterView::new("prod").expect("a valid cluster name");
    for id in ["n1", "n2"] {
        view.set_member(MemberInfo::new(
            id,
            format!("{id}:7087"),
            format!("{id}:8087"),
            1,
        ))
        .expect("a valid member");
    }
    let write = Message::Write {
        id: 7,
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        record: object.encode(),
        sync: true,
        hint: Some(NodeId::new("n3")),
    };
    let read = Message::Read {
        id: 8,
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        hint: None,
    };
    let mut stream = Vec::new();
    for frame in [hello, read.encode(), Message::Ping.encode()] {
        stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        stream.extend_from_slice(&frame);
    }
    let forward = Message::Forward {
        id: 9,
        request: ClientRequest::Put {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            context: context.clone(),
            value: b"v".to_vec(),
            options: RequestOptions {
                r: Some(QuorumValue::Quorum),
                timeout_ms: Some(500),
                ..RequestOptions::default()
            },
        },
        deadline: 1_700_000_000_000,
    };
    let mut with_context = b"/kv/b/k\n".to_vec();
    with_context.extend_from_slice(context.to_base64().as_bytes());
    // Compressible, so that the lz4 frame is kept.
    let mut large = Object::new();
    large.update(
        &VersionVector::new(),
        &ActorId::new("n1"),
        Content::Value(b"ab".repeat(100)),
        1,
        ConflictMode::Siblings,
    );
    vec![
        ("peer_frame", "write", write.encode()),
        (
            "peer_frame",
            "read_reply",
            Message::ReadReply {
                id: 8,
                result: ReadResult::Found(tombstone.encode()),
            }
            .encode(),
        ),
        (
            "peer_frame",
            "gossip_view",
            Message::Gossip(GossipMessage::View(Box::new(view))).encode(),
        ),
        ("peer_frame", "forward", forward.encode()),
        ("peer_frame", "stream", stream),
        ("context", "empty", Context::empty().encode()),
        ("context", "binary", context.encode()),
        ("context", "base64", context.to_base64().into_bytes()),
        ("http_request", "get", b"/kv/bucket/key".to_vec()),
        (
            "http_request",
            "options",
            b"/kv/b%2F1/k%00%FF?r=quorum&w=2&dw=one&n=3&timeout_ms=500".to_vec(),
        ),
        ("http_request", "context", with_context),
        (
            "storage_record",
            "frame",
            storage::encode_frame(&object.encode(), Compression::None),
        ),
        (
            "storage_record",
            "frame_lz4",
            storage::encode_frame(&large.encode(), Compression::Lz4),
        ),
        ("storage_record", "object", object.encode()),
        ("storage_record", "tombstone", tombstone.encode()),
    ]
}

/// Two concurrent values of a key, and the key deleted after both.
fn sample_objects() -> (Object, Object) {
    let mut object = Object::new();
    for (actor, value) in [("n1", b"one"), ("n2", b"two")] {
        object.update(
            &VersionVector::new(),
            &ActorId::new(actor),
            Content::Value(value.to_vec()),
            1,
            ConflictMode::Siblings,
        );
    }
    let mut tombstone = object.clone();
    tombstone.update(
        object.context().clock(),
        &ActorId::new("n1"),
        Content::Tombstone,
        2,
        ConflictMode::Siblings,
    );
    (object, tombstone)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    #[test]
    fn every_seed_passes_its_check() {
        for (target, name, bytes) in seeds() {
            let (_, check) = TARGETS
                .iter()
                .find(|(known, _)| *known == target)
                .expect("a seed of a known target");
            check(&bytes);
            assert!(bytes.len() < 4096, "{target}/{name} is large");
        }
    }

    #[test]
    fn seeds_decode() {
        for (target, name, bytes) in seeds() {
            let decodes = match target {
                "peer_frame" if name == "stream" => read_stream(&bytes, 1).frames.len() == 3,
                "peer_frame" => Message::decode(&bytes).is_ok(),
                "context" if name == "base64" => {
                    Context::from_base64(&String::from_utf8_lossy(&bytes)).is_ok()
                }
                "context" => Context::decode(&bytes).is_ok(),
                "http_request" => {
                    let text = String::from_utf8_lossy(&bytes);
                    let (target, header) = text.split_once('\n').unwrap_or((&text, ""));
                    let (path, query) = target.split_once('?').unwrap_or((target, ""));
                    let header = HeaderValue::from_str(header).ok();
                    parse_kv_target(path, Some(query), header.as_ref(), 1024).is_ok()
                }
                "storage_record" if name.starts_with("frame") => storage::decode_frame(&bytes)
                    .is_ok_and(|record| Object::decode(&record).is_ok()),
                "storage_record" => Object::decode(&bytes).is_ok(),
                _ => false,
            };
            assert!(decodes, "seed {target}/{name} does not decode");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn checks_hold_on_arbitrary_bytes(
            target in 0..TARGETS.len(),
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            (TARGETS[target].1)(&bytes);
        }

        #[test]
        fn checks_hold_on_mutated_seeds(
            seed in any::<Index>(),
            at in any::<Index>(),
            byte in any::<u8>(),
            cut in any::<Index>(),
        ) {
            let seeds = seeds();
            let (target, _, mut bytes) = seeds[seed.index(seeds.len())].clone();
            let (_, check) = TARGETS
                .iter()
                .find(|(known, _)| *known == target)
                .expect("a seed of a known target");
            let at = at.index(bytes.len());
            bytes[at] = byte;
            check(&bytes);
            check(&bytes[..cut.index(bytes.len() + 1)]);
        }

        #[test]
        fn framed_streams_read_back_whatever_the_reads(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5),
            cut in any::<Index>(),
        ) {
            let mut data = Vec::new();
            let mut boundaries = vec![0];
            for frame in &frames {
                data.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                data.extend_from_slice(frame);
                boundaries.push(data.len());
            }
            prop_assert_eq!(&read_stream(&data, 3).frames, &frames);
            stream(&data);
            // Cut short, the frames before the cut are read, then the stream is refused.
            let cut = cut.index(data.len() + 1);
            let read = read_stream(&data[..cut], 1);
            prop_assert!(frames.starts_with(&read.frames));
            prop_assert_eq!(read.error.is_some(), !boundaries.contains(&cut));
            stream(&data[..cut]);
        }
    }

    #[test]
    fn with_crc_makes_frames_the_decoders_accept() {
        assert_eq!(
            Context::decode(&with_crc(CONTEXT_FORMAT, &[0, 0])),
            Ok(Context::empty())
        );
        assert_eq!(
            Object::decode(&with_crc(RECORD_FORMAT, &[0, 0])),
            Ok(Object::new())
        );
    }
}
