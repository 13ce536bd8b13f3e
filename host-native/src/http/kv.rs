//! `/kv/{bucket}/{key}`: parsing the target, options and context, and turning the node's reply
//! into an answer (siblings as `multipart/mixed`).

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;
use percent_encoding::percent_decode_str;
use ringkv_client::api;
use ringkv_core::bucket::{check_ttl, QuorumValue, RequestOptions, WriteCondition};
use ringkv_core::id::NodeId;
use ringkv_core::request::{ClientRequest, QuorumKind, Reply, MAX_WATCH_WAIT_MS};
use ringkv_core::version::Context;
use serde::de::DeserializeOwned;

use super::*;
use crate::metrics::{Metrics, Op, OpLabels, Outcome, RequestLabels};
use crate::node_loop::NodeHandle;

/// The path prefix of the key-value resources.
pub(super) const KV_PREFIX: &str = "/kv/";

/// What a `/kv/{bucket}/{key}` request's target and context header ask, parsed and checked (the
/// method and the body are dealt with apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvTarget {
    /// The bucket, percent-decoded (never empty).
    pub bucket: Vec<u8>,
    /// The key, percent-decoded (never empty, at most the configured key limit).
    pub key: Vec<u8>,
    /// The query's quorum and timeout overrides.
    pub options: RequestOptions,
    /// The context header's context ([`Context::empty`] without one).
    pub context: Context,
    /// A watch (`?changed_since=`): the context watched from, and how long to wait
    /// (`timeout_ms`, which on a watch is the wait: 1 ms to 10 minutes, 60 s by default).
    pub watch: Option<(Context, u64)>,
}

/// How long a watch waits when `timeout_ms` does not say.
pub const DEFAULT_WATCH_WAIT_MS: u64 = 60_000;

/// Why a `/kv` request target was refused: it is answered `400 Bad Request` with this message,
/// and nothing reaches the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTarget(pub String);

impl From<BadTarget> for Problem {
    fn from(error: BadTarget) -> Problem {
        Problem::bad_request(error.0)
    }
}

pub(super) async fn kv<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let started = Instant::now();
    let metrics = node.metrics();
    // `/kv/{bucket}` (no key): the bucket's keys, listed or read many at once.
    let path = request.uri().path().to_string();
    if let Some(bucket) = path
        .strip_prefix(KV_PREFIX)
        .filter(|rest| !rest.contains('/'))
    {
        let (response, op, outcome) =
            super::keys::bucket_request(node, config, request, bucket).await;
        count_request(metrics, op, outcome, started);
        return response;
    }
    let op = match *request.method() {
        // HEAD is a GET whose answer loses its body below.
        Method::GET | Method::HEAD => Op::Get,
        Method::PUT => Op::Put,
        Method::DELETE => Op::Delete,
        ref other => {
            return Problem::method_not_allowed(other, "GET, HEAD, PUT, DELETE").into_response();
        }
    };
    let head = request.method() == Method::HEAD;
    let watch = op == Op::Get
        && request
            .uri()
            .query()
            .is_some_and(|query| query.contains("changed_since"));
    let (response, outcome) = match kv_op(node, config, request, op).await {
        Ok(answer) => answer,
        Err(problem) => (problem.into_response(), Outcome::Rejected),
    };
    count_request(
        metrics,
        if watch { Op::Watch } else { op },
        outcome,
        started,
    );
    if head {
        without_body(response)
    } else {
        response
    }
}

/// Counts a `/kv` request and its time.
fn count_request(metrics: &Metrics, op: Op, outcome: Outcome, started: Instant) {
    metrics
        .requests
        .get_or_create(&RequestLabels { op, outcome })
        .inc();
    metrics
        .request_seconds
        .get_or_create(&OpLabels { op })
        .observe(started.elapsed().as_secs_f64());
}

/// The answer to a HEAD: the GET's status and headers, its `Content-Length` included, and no
/// body. (hyper leaves the body out of an HTTP/1 answer to HEAD by itself, but not of an HTTP/2
/// one.)
fn without_body(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    let length = body.size_hint().exact().unwrap_or_default();
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    Response::from_parts(parts, full_body(Bytes::new()))
}

async fn kv_op<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    op: Op,
) -> Result<(Response<ResponseBody>, Outcome), Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    refuse_unsupported_headers(request.method(), request.headers())?;
    let mut target = parse_kv_target(
        request.uri().path(),
        request.uri().query(),
        request.headers().get(api::HEADER_CONTEXT),
        config.max_key_bytes,
    )?;
    parse_write_headers(request.method(), request.headers(), &mut target.options)?;
    if target.watch.is_some() && op != Op::Get {
        return Err(BadTarget("changed_since (a watch) applies to GET only".to_string()).into());
    }
    let client_request = match op {
        Op::Get => match target.watch {
            Some((context, wait_ms)) => ClientRequest::Watch {
                bucket: target.bucket,
                key: target.key,
                context,
                wait_ms,
                options: target.options,
            },
            None => ClientRequest::Get {
                bucket: target.bucket,
                key: target.key,
                options: target.options,
            },
        },
        Op::Delete => ClientRequest::Delete {
            bucket: target.bucket,
            key: target.key,
            context: target.context,
            options: target.options,
        },
        // Only GET, PUT and DELETE reach here (see `kv`).
        Op::Put | Op::Watch | Op::List | Op::Mget => {
            let value = read_value(request, config).await?;
            ClientRequest::Put {
                bucket: target.bucket,
                key: target.key,
                context: target.context,
                value: value.to_vec(),
                options: target.options,
            }
        }
    };
    let reply = node.client(client_request).await?;
    match &reply {
        Reply::Unavailable { kind, .. } => node.metrics().count_quorum_failure(op, *kind, false),
        Reply::OutcomeUnknown { kind, .. } => node.metrics().count_quorum_failure(op, *kind, true),
        _ => {}
    }
    Ok(reply_response(reply))
}

/// Request headers whose meaning the store does not implement, with what to send instead.
/// Acting as if one were absent would break the client's expectation silently (a write
/// overwriting the value it meant to keep, a value kept that was meant to expire), so a request
/// that carries one is refused instead.
const UNSUPPORTED_HEADERS: [(&str, &str); 3] = [
    ("If-Modified-Since", BY_DATE),
    ("If-Unmodified-Since", BY_DATE),
    (
        "Expires",
        "an absolute expiry time is not supported (clocks differ); send a time to live with \
         ?ttl= or X-Ringkv-TTL",
    ),
];
const BY_DATE: &str = "conditions on dates are not supported (clocks differ); send If-Match with \
                       the context of a read, or If-None-Match: *";

/// Refuses a `/kv` request that carries a header the store would otherwise ignore (see
/// [`UNSUPPORTED_HEADERS`]), and a PUT with `Content-Range`: a server that does not do partial
/// writes must refuse one rather than store the part as the whole (RFC 9110, section 14.5).
fn refuse_unsupported_headers(method: &Method, headers: &HeaderMap) -> Result<(), BadTarget> {
    for (name, instead) in UNSUPPORTED_HEADERS {
        if headers.contains_key(name) {
            return Err(BadTarget(format!(
                "the {name} header is not supported: {instead}"
            )));
        }
    }
    if *method == Method::PUT && headers.contains_key(CONTENT_RANGE) {
        return Err(BadTarget(
            "a PUT with Content-Range (a partial write) is not supported; send the whole value"
                .to_string(),
        ));
    }
    Ok(())
}

/// Reads a write's headers into its options: a time to live ([`api::HEADER_TTL`], a PUT's
/// only, and not as well as `?ttl=`), and a condition (`If-None-Match: *`, or `If-Match` with a
/// context, quoted as an entity tag or not; never both).
pub fn parse_write_headers(
    method: &Method,
    headers: &HeaderMap,
    options: &mut RequestOptions,
) -> Result<(), BadTarget> {
    let text = |name: &str| -> Result<Option<String>, BadTarget> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        if headers.get_all(name).iter().count() > 1 {
            return Err(BadTarget(format!("the {name} header is repeated")));
        }
        let value = value
            .to_str()
            .map_err(|_| BadTarget(format!("the {name} header is not ASCII")))?;
        Ok(Some(value.trim().to_string()))
    };
    if let Some(ttl) = text(api::HEADER_TTL)? {
        if options.ttl_ms.is_some() {
            return Err(BadTarget(
                "the time to live is given twice (?ttl= and X-Ringkv-TTL): send one".to_string(),
            ));
        }
        options.ttl_ms = Some(parse_ttl(&ttl, "the X-Ringkv-TTL header")?);
    }
    let if_none_match = text("If-None-Match")?;
    let if_match = text("If-Match")?;
    let reading = matches!(*method, Method::GET | Method::HEAD);
    if reading && (if_none_match.is_some() || if_match.is_some()) {
        return Err(BadTarget(
            "If-None-Match and If-Match are not supported on a read: they are write conditions \
             here (PUT and DELETE)"
                .to_string(),
        ));
    }
    options.condition = match (if_none_match, if_match) {
        (Some(_), Some(_)) => {
            return Err(BadTarget(
                "If-None-Match and If-Match together: send one condition".to_string(),
            ))
        }
        (Some(star), None) if star == "*" => Some(WriteCondition::IfAbsent),
        (Some(other), None) => {
            return Err(BadTarget(format!(
                "If-None-Match: {other:?} is not supported: only * (create the key only if it \
                 has no value)"
            )))
        }
        (None, Some(star)) if star == "*" => {
            return Err(BadTarget(
                "If-Match: * is not supported: send the context of a read of the key".to_string(),
            ))
        }
        (None, Some(context)) => {
            let context = context.trim_matches('"');
            if context.is_empty() {
                return Err(BadTarget(
                    "If-Match is empty: send the context of a read of the key".to_string(),
                ));
            }
            let context = Context::from_base64(context)
                .map_err(|error| BadTarget(format!("invalid If-Match context: {error}")))?;
            Some(WriteCondition::IfMatch(context))
        }
        (None, None) => None,
    };
    Ok(())
}

/// A time to live as a query parameter or header gives it: a duration of 1 ms to 10 years.
fn parse_ttl(text: &str, what: &str) -> Result<u64, BadTarget> {
    let ms = api::parse_duration_ms(text).map_err(|error| BadTarget(format!("{what}: {error}")))?;
    check_ttl(ms).map_err(|error| BadTarget(format!("{what}: {error}")))
}

/// Parses a `/kv/{bucket}/{key}` request: `path` is the request URI's path as sent (still
/// percent-encoded), `query` its query, `context` the [`api::HEADER_CONTEXT`] header. A pure
/// function of its arguments, kept apart from the router so that it can be tested and fuzzed
/// without a server (see [`crate::fuzzing::http_request`]); every refusal is a [`BadTarget`].
pub fn parse_kv_target(
    path: &str,
    query: Option<&str>,
    context: Option<&HeaderValue>,
    max_key_bytes: usize,
) -> Result<KvTarget, BadTarget> {
    let Some(rest) = path.strip_prefix(KV_PREFIX) else {
        return Err(BadTarget("expected /kv/{bucket}/{key}".to_string()));
    };
    let (bucket, key) = parse_bucket_key(rest, "/kv", max_key_bytes)?;
    let (options, watch) = parse_options(query)?;
    let context = parse_context(context)?;
    Ok(KvTarget {
        bucket,
        key,
        options,
        context,
        watch,
    })
}

/// Splits and decodes `{bucket}/{key}`, the rest of a path after `prefix`.
pub(super) fn parse_bucket_key(
    rest: &str,
    prefix: &str,
    max_key_bytes: usize,
) -> Result<(Vec<u8>, Vec<u8>), BadTarget> {
    let Some((bucket, key)) = rest.split_once('/') else {
        return Err(BadTarget(format!(
            "expected {prefix}/{{bucket}}/{{key}} (percent-encode a '/' in a bucket or key)"
        )));
    };
    if key.contains('/') {
        return Err(BadTarget(format!(
            "expected {prefix}/{{bucket}}/{{key}}: the key has an unencoded '/' (send it as %2F)"
        )));
    }
    let bucket = decode_segment(bucket, "bucket")?;
    let key = decode_segment(key, "key")?;
    if bucket.is_empty() {
        return Err(BadTarget("the bucket name is empty".to_string()));
    }
    if key.is_empty() {
        return Err(BadTarget("the key is empty".to_string()));
    }
    if key.len() > max_key_bytes {
        return Err(BadTarget(format!(
            "the key is {} bytes, over the limit of {max_key_bytes}",
            key.len(),
        )));
    }
    Ok((bucket, key))
}

/// Percent-decodes one path segment, the `what` (bucket or key) of a request. A `%` not followed
/// by two hex digits is refused: decoding it leniently (as itself) would make `%zz` and `%25zz`
/// name the same key. A `+` is a plain `+` in a path (RFC 3986; only form-encoded queries turn it
/// into a space).
pub(super) fn decode_segment(segment: &str, what: &str) -> Result<Vec<u8>, BadTarget> {
    let bytes = segment.as_bytes();
    for (at, _) in segment.match_indices('%') {
        let escape = bytes.get(at + 1..at + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            let shown = String::from_utf8_lossy(&bytes[at..bytes.len().min(at + 3)]);
            return Err(BadTarget(format!(
                "malformed percent-encoding in {what}: {shown:?} (a '%' must be followed by two \
                 hex digits; send a '%' itself as %25)"
            )));
        }
    }
    Ok(percent_decode_str(segment).collect())
}

/// Parses the query overrides `r`, `w`, `n`, `dw`, `timeout_ms` and `ttl`, and a watch's
/// `changed_since`; anything else is refused so that a misspelt override is not silently
/// ignored. On a watch, `timeout_ms` is the wait (up to [`MAX_WATCH_WAIT_MS`]).
fn parse_options(
    query: Option<&str>,
) -> Result<(RequestOptions, Option<(Context, u64)>), BadTarget> {
    let mut options = RequestOptions::default();
    let mut changed_since: Option<Context> = None;
    let mut timeout_ms: Option<u64> = None;
    for pair in query_pairs(query) {
        let (name, value) = pair?;
        let value = value.as_str();
        let duplicate = || BadTarget(format!("query parameter {name} is repeated"));
        let quorum = |value: &str| {
            value
                .parse::<QuorumValue>()
                .map_err(|error| BadTarget(format!("query parameter {name}: {error}")))
        };
        match name.as_str() {
            "r" if options.r.is_some() => return Err(duplicate()),
            "r" => options.r = Some(quorum(value)?),
            "w" if options.w.is_some() => return Err(duplicate()),
            "w" => options.w = Some(quorum(value)?),
            "dw" if options.dw.is_some() => return Err(duplicate()),
            "dw" => options.dw = Some(quorum(value)?),
            "n" if options.n.is_some() => return Err(duplicate()),
            "n" => {
                options.n = Some(value.parse::<u32>().map_err(|_| {
                    BadTarget(format!("query parameter n: {value:?} is not a count"))
                })?)
            }
            "ttl" if options.ttl_ms.is_some() => return Err(duplicate()),
            "ttl" => options.ttl_ms = Some(parse_ttl(value, "query parameter ttl")?),
            "timeout_ms" if timeout_ms.is_some() => return Err(duplicate()),
            "timeout_ms" => {
                timeout_ms = Some(value.parse::<u64>().map_err(|_| {
                    BadTarget(format!(
                        "query parameter timeout_ms: {value:?} is not a number of milliseconds"
                    ))
                })?);
            }
            "changed_since" if changed_since.is_some() => return Err(duplicate()),
            "changed_since" => changed_since = Some(parse_changed_since(value)?),
            _ => {
                return Err(BadTarget(format!(
                    "unknown query parameter {name:?} (expected r, w, n, dw, timeout_ms, ttl or \
                     changed_since)"
                )))
            }
        }
    }
    // A request waits in the node (and holds its memory) until its deadline, so the deadline
    // is bounded; a watch's wait is bounded too, further.
    let max = if changed_since.is_some() {
        MAX_WATCH_WAIT_MS
    } else {
        MAX_TIMEOUT_MS
    };
    if let Some(timeout) = timeout_ms {
        if timeout == 0 || timeout > max {
            return Err(BadTarget(format!(
                "query parameter timeout_ms: {timeout} is outside 1..={max}"
            )));
        }
    }
    let watch = match changed_since {
        Some(context) => Some((context, timeout_ms.unwrap_or(DEFAULT_WATCH_WAIT_MS))),
        None => {
            options.timeout_ms = timeout_ms;
            None
        }
    };
    Ok((options, watch))
}

/// A query's `name=value` pairs, percent-decoded (a name lossily, a value that is not UTF-8
/// refused) and the value trimmed; empty pairs skipped, a pair without `=` has an empty value.
pub(super) fn query_pairs(
    query: Option<&str>,
) -> impl Iterator<Item = Result<(String, String), BadTarget>> + '_ {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode_str(name).decode_utf8_lossy().into_owned();
            let value = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| BadTarget(format!("query parameter {name} is not UTF-8")))?;
            Ok((name, value.trim().to_string()))
        })
}

/// A watch's `changed_since`: the context of a read, or `*` for a key never written (wait for
/// its first write). Empty is refused: a watch must say what it has seen.
fn parse_changed_since(value: &str) -> Result<Context, BadTarget> {
    match value {
        "" => Err(BadTarget(
            "query parameter changed_since is empty: send the context of a read of the key \
             (its X-Ringkv-Context header), or * to wait for the first write of a key that has none"
                .to_string(),
        )),
        "*" => Ok(Context::empty()),
        text => Context::from_base64(text)
            .map_err(|error| BadTarget(format!("query parameter changed_since: {error}"))),
    }
}

/// The request's context: empty without the header (or with an empty one), 400 when malformed.
fn parse_context(header: Option<&HeaderValue>) -> Result<Context, BadTarget> {
    let Some(header) = header else {
        return Ok(Context::empty());
    };
    let text = header
        .to_str()
        .map_err(|_| BadTarget("the context header is not ASCII".to_string()))?
        .trim();
    if text.is_empty() {
        return Ok(Context::empty());
    }
    Context::from_base64(text)
        .map_err(|error| BadTarget(format!("invalid context header: {error}")))
}

/// Reads a PUT body: refused by `Content-Length` before any of it is read, and cut off as soon
/// as a body without one passes the limit.
async fn read_value<B>(request: Request<B>, config: &HttpConfig) -> Result<Bytes, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let limit = config.max_value_bytes;
    if let Some(length) = request.headers().get(CONTENT_LENGTH) {
        let length = length
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| Problem::bad_request("invalid Content-Length"))?;
        if length > limit as u64 {
            return Err(value_too_large(limit));
        }
    }
    read_limited(request.into_body(), limit, config.body_read_timeout)
        .await
        .map_err(|problem| match problem {
            BodyProblem::TooLarge => value_too_large(limit),
            BodyProblem::Other(problem) => problem,
        })
}

fn value_too_large(limit: usize) -> Problem {
    Problem::too_large(format!("the value is over the limit of {limit} bytes"))
}

pub(super) enum BodyProblem {
    TooLarge,
    Other(Problem),
}

pub(super) async fn read_limited<B>(
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyProblem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyProblem::Other(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            format!("the request body did not arrive within {timeout:?}"),
        ))),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyProblem::TooLarge)
        }
        Ok(Err(error)) => Err(BodyProblem::Other(Problem::bad_request(format!(
            "could not read the request body: {error}"
        )))),
        Ok(Ok(collected)) => {
            let mut data = collected.aggregate();
            Ok(data.copy_to_bytes(data.remaining()))
        }
    }
}

pub(super) async fn read_json<T, B>(request: Request<B>, config: &HttpConfig) -> Result<T, Problem>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let body = read_limited(
        request.into_body(),
        MAX_JSON_BODY_BYTES,
        config.body_read_timeout,
    )
    .await
    .map_err(|problem| match problem {
        BodyProblem::TooLarge => Problem::too_large(format!(
            "the JSON body is over the limit of {MAX_JSON_BODY_BYTES} bytes"
        )),
        BodyProblem::Other(problem) => problem,
    })?;
    serde_json::from_slice(&body)
        .map_err(|error| Problem::bad_request(format!("invalid JSON body: {error}")))
}

fn join_ids(ids: &[NodeId]) -> String {
    ids.iter().map(NodeId::as_str).collect::<Vec<_>>().join(",")
}

/// The body of a quorum failure: an [`api::ErrorBody`] whose `answered` is there even when
/// nobody answered (`ErrorBody` leaves an empty list out, and "answered: absent" reads as "not
/// known" rather than "0 answered").
#[derive(serde::Serialize)]
struct QuorumFailureBody<'a> {
    error: String,
    kind: &'static str,
    quorum: &'static str,
    needed: u32,
    answered: Vec<&'a str>,
}

/// The 503 of a quorum not reached (`kind` tells whether the request may still take effect):
/// the reply's own text (the one explanation of an outcome, shared with every binding), the
/// quorum, how many were needed and who answered, in the body and in [`api::HEADER_REPLICAS`]
/// (empty when nobody did), as every answer names its replicas.
pub(super) fn quorum_failure(reply: &Reply) -> Response<ResponseBody> {
    let (quorum, needed, answered) = match reply {
        Reply::Unavailable {
            kind,
            needed,
            answered,
        }
        | Reply::OutcomeUnknown {
            kind,
            needed,
            answered,
        } => (*kind, *needed, answered),
        // Not a quorum failure: never called with one.
        other => {
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                other.to_string(),
            )
            .into_response()
        }
    };
    let body = QuorumFailureBody {
        error: reply.to_string(),
        kind: reply.outcome(),
        quorum: QuorumKind::as_str(quorum),
        needed,
        answered: answered.iter().map(NodeId::as_str).collect(),
    };
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    set_header(&mut response, api::HEADER_REPLICAS, &join_ids(answered));
    response
}

/// The HTTP answer to a node's reply, with the outcome it counts as.
pub(super) fn reply_response(reply: Reply) -> (Response<ResponseBody>, Outcome) {
    match reply {
        Reply::Got {
            mut values,
            context,
            replicas,
            fallbacks,
            read_your_writes,
            expires_at,
        } => {
            let mut response = match values.len() {
                0 => {
                    let mut response = empty_response(StatusCode::NOT_FOUND);
                    // A tombstone's context lets the next put supersede the delete.
                    if !context.is_empty() {
                        set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
                    }
                    response
                }
                1 => {
                    let value = values.pop().unwrap_or_default();
                    let mut response = Response::new(full_body(value));
                    set_header(&mut response, "content-type", "application/octet-stream");
                    set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
                    response
                }
                count => {
                    let boundary = pick_boundary(&values);
                    let body = multipart_body(&values, &boundary);
                    let mut response = Response::new(full_body(body));
                    *response.status_mut() = StatusCode::MULTIPLE_CHOICES;
                    set_header(
                        &mut response,
                        "content-type",
                        &format!("multipart/mixed; boundary={boundary}"),
                    );
                    set_header(&mut response, api::HEADER_SIBLINGS, &count.to_string());
                    set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
                    response
                }
            };
            set_header(&mut response, api::HEADER_REPLICAS, &join_ids(&replicas));
            set_header(&mut response, api::HEADER_FALLBACKS, &join_ids(&fallbacks));
            set_header(
                &mut response,
                api::HEADER_READ_YOUR_WRITES,
                if read_your_writes { "true" } else { "false" },
            );
            if let Some(expires_at) = expires_at {
                set_header(
                    &mut response,
                    api::HEADER_EXPIRES_AT,
                    &expires_at.to_string(),
                );
            }
            (response, Outcome::Ok)
        }
        Reply::Written {
            context,
            dot,
            replicas,
            durable,
            fallbacks,
            read_your_writes,
        } => {
            let mut response = empty_response(StatusCode::NO_CONTENT);
            set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
            set_header(&mut response, api::HEADER_DOT, &dot.to_string());
            set_header(&mut response, api::HEADER_REPLICAS, &join_ids(&replicas));
            set_header(&mut response, api::HEADER_FALLBACKS, &join_ids(&fallbacks));
            set_header(&mut response, api::HEADER_DURABLE, &join_ids(&durable));
            set_header(
                &mut response,
                api::HEADER_READ_YOUR_WRITES,
                if read_your_writes { "true" } else { "false" },
            );
            (response, Outcome::Ok)
        }
        // 503 both, told apart by their kind: after `outcome_unknown` the write may still take
        // effect, so a client should read before it retries (a blind retry can make a sibling).
        reply @ (Reply::Unavailable { .. } | Reply::OutcomeUnknown { .. }) => {
            (quorum_failure(&reply), Outcome::Unavailable)
        }
        // 409: the key's state (its siblings) conflicts with a write that adds another; a write
        // with the context of a read resolves it.
        reply @ Reply::TooManySiblings { .. } => (
            Problem::new(StatusCode::CONFLICT, "too_many_siblings", reply.to_string())
                .into_response(),
            Outcome::Failed,
        ),
        // 412: the write's condition did not hold at the read quorum; the answer carries the
        // key's current context, to read or to retry `If-Match` with.
        Reply::PreconditionFailed { ref context, .. } => {
            let mut response = Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                reply.to_string(),
            )
            .into_response();
            if !context.is_empty() {
                set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
            }
            (response, Outcome::Failed)
        }
        reply @ Reply::ObjectTooLarge { .. } => (
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "object_too_large",
                reply.to_string(),
            )
            .into_response(),
            Outcome::Failed,
        ),
        Reply::Failed { reason } => (
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", reason).into_response(),
            Outcome::Failed,
        ),
        // 507 Insufficient Storage (RFC 4918): the coordinator's disk is full and nothing was
        // written; reads keep working, and the write may succeed through another node.
        Reply::StorageFull { reason } => (
            Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                format!("the disk of this node is full, nothing was written: {reason}"),
            )
            .into_response(),
            Outcome::Failed,
        ),
        // 304: the watch waited its whole time and the key did not change; the context is the
        // one to watch from next.
        Reply::Unchanged { context } => {
            let mut response = empty_response(StatusCode::NOT_MODIFIED);
            if !context.is_empty() {
                set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
            }
            (response, Outcome::Ok)
        }
        // A restore (`PUT /admin/restore/...`): merged on the replicas named.
        Reply::Restored {
            replicas,
            fallbacks,
        } => {
            let mut response = empty_response(StatusCode::NO_CONTENT);
            set_header(&mut response, api::HEADER_REPLICAS, &join_ids(&replicas));
            set_header(&mut response, api::HEADER_FALLBACKS, &join_ids(&fallbacks));
            (response, Outcome::Ok)
        }
        // A listing's page is answered by the listing's own handler; it never reaches here.
        reply @ Reply::Listed { .. } => (
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed",
                format!("unexpected answer to a key request: {reply}"),
            )
            .into_response(),
            Outcome::Failed,
        ),
    }
}

/// A random multipart boundary that occurs in none of the values (so no value can end a part).
pub(super) fn pick_boundary(values: &[Vec<u8>]) -> String {
    loop {
        let boundary = format!("ringkv-{:032x}", rand::random::<u128>());
        let needle = boundary.as_bytes();
        let clashes = values
            .iter()
            .any(|value| value.windows(needle.len()).any(|window| window == needle));
        if !clashes {
            return boundary;
        }
    }
}

/// RFC 2046 `multipart/mixed`: each part is `--boundary CRLF headers CRLF CRLF value`, the CRLF
/// before the next delimiter belonging to the delimiter; the body ends with `--boundary--`.
fn multipart_body(values: &[Vec<u8>], boundary: &str) -> Vec<u8> {
    let size = values
        .iter()
        .map(|value| value.len() + boundary.len() + 64)
        .sum::<usize>();
    let mut body = Vec::with_capacity(size + boundary.len() + 8);
    for value in values {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    body
}
