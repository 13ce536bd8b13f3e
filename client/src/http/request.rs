//! Forming requests: per-request options, paths, query strings, headers and JSON bodies.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ringkv_core::bucket::QuorumValue;

use super::ClientError;
use crate::api;

/// Bytes that stay literal in a path segment: RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Per-request overrides of the bucket's properties (`None` keeps the bucket's value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Read quorum.
    pub r: Option<QuorumValue>,
    /// Write quorum.
    pub w: Option<QuorumValue>,
    /// Durable-write quorum.
    pub dw: Option<QuorumValue>,
    /// Replication factor for this request.
    pub n: Option<u32>,
    /// The server's deadline for this request, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// A put's time to live, in milliseconds (`?ttl=`); the bucket's `default_ttl` without one.
    pub ttl_ms: Option<u64>,
    /// What the key must read as for a put or delete to go ahead; a failed one is
    /// [`ClientError::PreconditionFailed`].
    pub condition: Option<Condition>,
}

/// A write's condition, checked by the coordinator with a read at R just before it writes. Best
/// effort: two writers checking at once can both pass, and their writes become siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `If-None-Match: *`: the key has no value (absent, deleted or expired).
    IfAbsent,
    /// `If-Match`: the key's context is still this one (from a read): nothing was written since.
    IfMatch(String),
}

/// The headers of `condition`.
pub(super) fn condition_headers(
    condition: Option<&Condition>,
) -> Result<Vec<(HeaderName, HeaderValue)>, ClientError> {
    Ok(match condition {
        None => Vec::new(),
        Some(Condition::IfAbsent) => {
            vec![(http::header::IF_NONE_MATCH, HeaderValue::from_static("*"))]
        }
        Some(Condition::IfMatch(context)) => {
            let value = HeaderValue::from_str(context.trim()).map_err(|_| {
                ClientError::BadRequest(String::from(
                    "the If-Match context is not a valid header value",
                ))
            })?;
            vec![(http::header::IF_MATCH, value)]
        }
    })
}

pub(super) fn context_header(
    context: Option<&str>,
) -> Result<Vec<(HeaderName, HeaderValue)>, ClientError> {
    match context {
        None => Ok(Vec::new()),
        Some(context) => {
            let value = HeaderValue::from_str(context.trim()).map_err(|_| {
                ClientError::BadRequest(String::from("the context is not a valid header value"))
            })?;
            Ok(vec![(HeaderName::from_static(api::HEADER_CONTEXT), value)])
        }
    }
}

pub(super) fn json_body<T: serde::Serialize>(value: &T) -> Result<Option<Bytes>, ClientError> {
    serde_json::to_vec(value)
        .map(|body| Some(Bytes::from(body)))
        .map_err(|error| ClientError::BadRequest(format!("cannot encode the request: {error}")))
}

/// Percent-encodes one path segment (bucket or key, arbitrary bytes). Segments of dots only are
/// fully encoded so that no URL normalization can read them as `.` or `..`.
pub fn encode_segment(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|&b| b == b'.') {
        return "%2E".repeat(bytes.len());
    }
    percent_encode(bytes, SEGMENT).to_string()
}

/// Longest request target sent: HTTP servers (hyper among them) refuse longer ones.
pub const MAX_PATH_BYTES: usize = 65_000;

/// [`kv_path`], refused as [`ClientError::TooLarge`] when the percent-encoded bucket and key do
/// not fit in a request target (binary bytes take three characters each).
pub(super) fn checked_kv_path(
    bucket: &[u8],
    key: &[u8],
    options: &Options,
) -> Result<String, ClientError> {
    let path = kv_path(bucket, key, options);
    if path.len() > MAX_PATH_BYTES {
        return Err(ClientError::TooLarge(format!(
            "bucket and key take {} bytes percent-encoded; a request target holds at most {MAX_PATH_BYTES}",
            path.len()
        )));
    }
    Ok(path)
}

pub(super) fn kv_path(bucket: &[u8], key: &[u8], options: &Options) -> String {
    format!(
        "/kv/{}/{}{}",
        encode_segment(bucket),
        encode_segment(key),
        query_string(options)
    )
}

pub(super) fn props_path(bucket: &[u8]) -> String {
    format!("/buckets/{}/props", encode_segment(bucket))
}

/// `?r=..&w=..` for the overrides set, or nothing.
pub(super) fn query_string(options: &Options) -> String {
    let mut pairs: Vec<String> = Vec::new();
    let quorums = [("r", options.r), ("w", options.w), ("dw", options.dw)];
    for (name, value) in quorums {
        if let Some(value) = value {
            pairs.push(format!("{name}={value}"));
        }
    }
    if let Some(n) = options.n {
        pairs.push(format!("n={n}"));
    }
    if let Some(ms) = options.timeout_ms {
        pairs.push(format!("timeout_ms={ms}"));
    }
    if let Some(ms) = options.ttl_ms {
        pairs.push(format!("ttl={ms}ms"));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}
