//! `/kv/{bucket}`: a bucket's keys. `GET ?list` answers one page of a listing (a scan for
//! admin and export); `POST ?mget` reads many keys at once, each coordinated as its own get, in
//! parallel, their results streamed as they complete (`application/x-ndjson`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use ringkv_client::api::{
    base64_encode, KeyDoc, ListPage, MgetEnd, MgetItem, MgetRequest, MAX_MGET_BYTES, MAX_MGET_KEYS,
};
use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::listing::{ListCursor, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use ringkv_core::request::{ClientRequest, Reply};
use tokio::sync::mpsc;

use super::kv::{
    decode_segment, query_pairs, quorum_failure, read_limited, BadTarget, BodyProblem,
};
use super::*;
use crate::metrics::{Op, Outcome};
use crate::node_loop::NodeHandle;

/// Reads one multi-get runs at once.
const MGET_PARALLELISM: usize = 16;
/// The largest multi-get body: its keys, as JSON.
const MAX_MGET_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What a `/kv/{bucket}` query asks.
#[derive(Debug, Default)]
struct BucketQuery {
    list: bool,
    mget: bool,
    cursor: Option<String>,
    limit: Option<u32>,
    r: Option<QuorumValue>,
    n: Option<u32>,
    timeout_ms: Option<u64>,
}

fn parse_bucket_query(query: Option<&str>) -> Result<BucketQuery, BadTarget> {
    let mut parsed = BucketQuery::default();
    for pair in query_pairs(query) {
        let (name, value) = pair?;
        let value = value.as_str();
        let repeated = || BadTarget(format!("query parameter {name} is repeated"));
        match name.as_str() {
            "list" if parsed.list => return Err(repeated()),
            "list" => parsed.list = true,
            "mget" if parsed.mget => return Err(repeated()),
            "mget" => parsed.mget = true,
            "cursor" if parsed.cursor.is_some() => return Err(repeated()),
            "cursor" => parsed.cursor = Some(value.to_string()),
            "limit" if parsed.limit.is_some() => return Err(repeated()),
            "limit" => {
                let limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIST_LIMIT).contains(l));
                parsed.limit = Some(limit.ok_or_else(|| {
                    BadTarget(format!(
                        "query parameter limit: {value:?} is not a count of 1 to {MAX_LIST_LIMIT}"
                    ))
                })?);
            }
            "r" if parsed.r.is_some() => return Err(repeated()),
            "r" => {
                parsed.r = Some(
                    value
                        .parse::<QuorumValue>()
                        .map_err(|error| BadTarget(format!("query parameter r: {error}")))?,
                )
            }
            "n" if parsed.n.is_some() => return Err(repeated()),
            "n" => {
                parsed.n = Some(value.parse::<u32>().map_err(|_| {
                    BadTarget(format!("query parameter n: {value:?} is not a count"))
                })?)
            }
            "timeout_ms" if parsed.timeout_ms.is_some() => return Err(repeated()),
            "timeout_ms" => {
                let timeout = value
                    .parse::<u64>()
                    .ok()
                    .filter(|t| (1..=MAX_TIMEOUT_MS).contains(t));
                parsed.timeout_ms = Some(timeout.ok_or_else(|| {
                    BadTarget(format!(
                        "query parameter timeout_ms: {value:?} is not 1 to {MAX_TIMEOUT_MS} ms"
                    ))
                })?);
            }
            _ => {
                return Err(BadTarget(format!(
                    "unknown query parameter {name:?} on /kv/{{bucket}} (expected list, cursor, \
                     limit and timeout_ms for a listing; mget, r, n and timeout_ms for a \
                     multi-get)"
                )))
            }
        }
    }
    match (parsed.list, parsed.mget) {
        (true, true) => Err(BadTarget("?list and ?mget together: send one".to_string())),
        (false, false) => Err(BadTarget(
            "expected /kv/{bucket}/{key} for a key, or /kv/{bucket}?list (GET, a page of its \
             keys) or /kv/{bucket}?mget (POST, many keys at once)"
                .to_string(),
        )),
        (true, _) if parsed.r.is_some() || parsed.n.is_some() => Err(BadTarget(
            "a listing takes no quorum (it asks one replica of each partition)".to_string(),
        )),
        (_, true) if parsed.cursor.is_some() || parsed.limit.is_some() => Err(BadTarget(
            "cursor and limit belong to a listing (?list), not to a multi-get".to_string(),
        )),
        _ => Ok(parsed),
    }
}

/// Answers a `/kv/{bucket}` request (`rest` is the path after `/kv/`), with the operation to
/// count it under.
pub(super) async fn bucket_request<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    rest: &str,
) -> (Response<ResponseBody>, Op, Outcome)
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let query = match parse_bucket_query(request.uri().query()) {
        Ok(query) => query,
        Err(error) => {
            return (
                Problem::from(error).into_response(),
                Op::List,
                Outcome::Rejected,
            )
        }
    };
    let (op, result) = if query.list {
        (Op::List, list(node, &request, rest, query).await)
    } else {
        (Op::Mget, mget(node, config, request, rest, query).await)
    };
    match result {
        Ok((response, outcome)) => (response, op, outcome),
        Err(problem) => (problem.into_response(), op, Outcome::Rejected),
    }
}

fn bucket_of(rest: &str) -> Result<Vec<u8>, Problem> {
    let bucket = decode_segment(rest, "bucket")?;
    if bucket.is_empty() {
        return Err(Problem::bad_request("the bucket name is empty"));
    }
    Ok(bucket)
}

async fn list<B>(
    node: &NodeHandle,
    request: &Request<B>,
    rest: &str,
    query: BucketQuery,
) -> Result<(Response<ResponseBody>, Outcome), Problem> {
    if request.method() != Method::GET {
        return Err(Problem::method_not_allowed(request.method(), "GET"));
    }
    let bucket = bucket_of(rest)?;
    // The node checks the partition against its ring; here, that the text is a cursor of this
    // bucket's listing.
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            ListCursor::decode(text, &bucket, u32::MAX)
                .map_err(|error| Problem::bad_request(format!("invalid cursor: {error}")))?,
        ),
    };
    let reply = node
        .client(ClientRequest::List {
            bucket: bucket.clone(),
            cursor,
            limit: query.limit.unwrap_or(DEFAULT_LIST_LIMIT),
            options: RequestOptions {
                timeout_ms: query.timeout_ms,
                ..Default::default()
            },
        })
        .await?;
    match reply {
        Reply::Listed { keys, cursor } => {
            let page = ListPage {
                keys: keys.iter().map(|key| KeyDoc::from_bytes(key)).collect(),
                cursor: cursor.map(|cursor| cursor.encode(&bucket)),
            };
            Ok((json_response(StatusCode::OK, &page), Outcome::Ok))
        }
        reply @ Reply::Unavailable { .. } => Ok((quorum_failure(&reply), Outcome::Unavailable)),
        other => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed",
            other.to_string(),
        )),
    }
}

async fn mget<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    rest: &str,
    query: BucketQuery,
) -> Result<(Response<ResponseBody>, Outcome), Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    if request.method() != Method::POST {
        return Err(Problem::method_not_allowed(request.method(), "POST"));
    }
    let bucket = bucket_of(rest)?;
    let body = read_limited(
        request.into_body(),
        MAX_MGET_BODY_BYTES,
        config.body_read_timeout,
    )
    .await
    .map_err(|problem| match problem {
        BodyProblem::TooLarge => Problem::too_large(format!(
            "the multi-get body is over the limit of {MAX_MGET_BODY_BYTES} bytes"
        )),
        BodyProblem::Other(problem) => problem,
    })?;
    let asked: MgetRequest = serde_json::from_slice(&body).map_err(|error| {
        Problem::bad_request(format!(
            "invalid multi-get body: {error} (expected {{\"keys\": [\"key\", {{\"base64\": \"...\"}}]}})"
        ))
    })?;
    if asked.keys.is_empty() {
        return Err(Problem::bad_request("the multi-get names no keys"));
    }
    if asked.keys.len() > MAX_MGET_KEYS {
        return Err(Problem::bad_request(format!(
            "the multi-get names {} keys, over the limit of {MAX_MGET_KEYS}: split it",
            asked.keys.len()
        )));
    }
    // Twice is the same key however it is written ("a" and {"base64": "YQ=="}).
    let mut seen = HashSet::new();
    for key in &asked.keys {
        let bytes = key.to_bytes().ok();
        if bytes.is_some() && !seen.insert(bytes) {
            return Err(Problem::bad_request(format!(
                "the multi-get names the key {} twice",
                serde_json::to_string(key).unwrap_or_default()
            )));
        }
    }
    let options = RequestOptions {
        r: query.r,
        n: query.n,
        timeout_ms: query.timeout_ms,
        ..Default::default()
    };
    let (sender, receiver) = mpsc::channel(MGET_PARALLELISM);
    let reads = MgetReads {
        node: node.clone(),
        bucket,
        options,
        max_key_bytes: config.max_key_bytes,
        bytes: Arc::new(AtomicUsize::new(0)),
    };
    tokio::spawn(reads.run(asked.keys, sender));
    let mut response = Response::new(ChannelBody { receiver }.boxed());
    set_header(&mut response, "content-type", "application/x-ndjson");
    Ok((response, Outcome::Ok))
}

/// The reads of one multi-get, run off the request's task so that the answer streams.
struct MgetReads {
    node: NodeHandle,
    bucket: Vec<u8>,
    options: RequestOptions,
    max_key_bytes: usize,
    /// Bytes of values answered so far.
    bytes: Arc<AtomicUsize>,
}

/// What became of one key.
enum KeyResult {
    Line(Bytes),
    Unprocessed(KeyDoc),
}

impl MgetReads {
    async fn run(self, keys: Vec<KeyDoc>, sender: mpsc::Sender<Bytes>) {
        let this = &self;
        let mut results = futures_util::stream::iter(keys)
            .map(|key| this.read(key))
            .buffer_unordered(MGET_PARALLELISM);
        let mut unprocessed = Vec::new();
        while let Some(result) = results.next().await {
            match result {
                KeyResult::Line(line) => {
                    // The client went away: the reads in flight end, no new one starts.
                    if sender.send(line).await.is_err() {
                        return;
                    }
                }
                KeyResult::Unprocessed(key) => unprocessed.push(key),
            }
        }
        let _ = sender.send(ndjson(&MgetEnd { unprocessed })).await;
    }

    async fn read(&self, doc: KeyDoc) -> KeyResult {
        if self.bytes.load(Ordering::Relaxed) >= MAX_MGET_BYTES {
            return KeyResult::Unprocessed(doc);
        }
        let item = self.item(&doc).await;
        let size: usize = item.values.iter().map(String::len).sum();
        self.bytes.fetch_add(size, Ordering::Relaxed);
        KeyResult::Line(ndjson(&MgetItem { key: doc, ..item }))
    }

    /// A key's line, as its GET would answer.
    async fn item(&self, doc: &KeyDoc) -> MgetItem {
        let error = |status: StatusCode, kind: &str, message: String| MgetItem {
            key: doc.clone(),
            status: status.as_u16(),
            values: Vec::new(),
            context: None,
            expires_at: None,
            error: Some(kind.to_string()),
            message: Some(message),
        };
        let key = match doc.to_bytes() {
            Ok(key) => key,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
        };
        if key.len() > self.max_key_bytes {
            let message = format!(
                "the key is {} bytes, over the limit of {}",
                key.len(),
                self.max_key_bytes
            );
            return error(StatusCode::BAD_REQUEST, "bad_request", message);
        }
        let request = ClientRequest::Get {
            bucket: self.bucket.clone(),
            key,
            options: self.options.clone(),
        };
        match self.node.client(request).await {
            Ok(Reply::Got {
                values,
                context,
                expires_at,
                ..
            }) => MgetItem {
                key: doc.clone(),
                status: match values.len() {
                    0 => 404,
                    1 => 200,
                    _ => 300,
                },
                values: values.iter().map(|v| base64_encode(v)).collect(),
                context: (!context.is_empty()).then(|| context.to_base64()),
                expires_at,
                error: None,
                message: None,
            },
            Ok(reply @ (Reply::Unavailable { .. } | Reply::OutcomeUnknown { .. })) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                reply.to_string(),
            ),
            Ok(other) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                other.outcome(),
                other.to_string(),
            ),
            Err(node_error) => {
                let problem = Problem::from(node_error);
                error(problem.status, problem.kind, problem.message)
            }
        }
    }
}

/// One line of JSON and its newline.
fn ndjson<T: serde::Serialize>(value: &T) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    Bytes::from(line)
}

/// A response body fed by a channel: each message is a frame; the body ends when the sender
/// is dropped.
pub(super) struct ChannelBody {
    pub(super) receiver: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_query_names_one_operation_and_only_its_parameters() {
        let list = parse_bucket_query(Some("list&limit=10&cursor=abc")).expect("a listing");
        assert!(list.list && !list.mget);
        assert_eq!(
            (list.limit, list.cursor.as_deref()),
            (Some(10), Some("abc"))
        );
        let mget = parse_bucket_query(Some("mget&r=all&timeout_ms=500")).expect("a multi-get");
        assert!(mget.mget && mget.timeout_ms == Some(500));
        for bad in [
            None,
            Some(""),
            Some("list&mget"),
            Some("list&list"),
            Some("list&limit=0"),
            Some("list&limit=1001"),
            Some("list&r=1"),
            Some("mget&cursor=x"),
            Some("mget&limit=5"),
            Some("list&colour=blue"),
            Some("list&timeout_ms=0"),
            Some("list&cursor=%FF"),
        ] {
            assert!(parse_bucket_query(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
