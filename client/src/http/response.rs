//! Reading answers: what a `get` or a write returned, from status, headers and body.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::error_from_status;
use super::multipart::{multipart_boundary, parse_multipart};
use super::ClientError;
use crate::api;

/// What a `get` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResult {
    /// The values: none when the key is absent or deleted, several when writes were concurrent
    /// (siblings; write back one value with [`GetResult::context`] to reconcile them).
    pub values: Vec<Bytes>,
    /// The causal context to pass to the next write (also given for a deleted key).
    pub context: Option<String>,
    /// The replicas that answered.
    pub replicas: Vec<String>,
    /// Fallback nodes that answered for unreachable owners.
    pub fallbacks: Vec<String>,
    /// The node that coordinated the request.
    pub node: Option<String>,
    /// `false` when `r + w <= n` for the request: the read may miss an acknowledged write.
    pub read_your_writes: bool,
    /// When the last of the values expires, in milliseconds since the Unix epoch at the
    /// coordinator's clock (`None`: one of them never expires, or there are none).
    pub expires_at: Option<u64>,
    /// The base URL the request was sent to.
    pub endpoint: String,
}

impl GetResult {
    /// Whether the key holds at least one value.
    pub fn found(&self) -> bool {
        !self.values.is_empty()
    }
}

/// What a `put` or `delete` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResult {
    /// The context of the object written.
    pub context: Option<String>,
    /// The replicas that acknowledged.
    pub replicas: Vec<String>,
    /// Of those, the ones that had made the write durable.
    pub durable: Vec<String>,
    /// Fallback nodes that stood in for unreachable owners (they hold hints).
    pub fallbacks: Vec<String>,
    /// The node that coordinated the request.
    pub node: Option<String>,
    /// The dot the write was given (`actor:counter`): which sibling it is in every clock.
    pub dot: Option<String>,
    /// The base URL the request was sent to.
    pub endpoint: String,
}

/// An answer, whatever its status.
#[derive(Clone, Debug)]
pub(super) struct Answer {
    pub(super) endpoint: String,
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

pub(super) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

pub(super) fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    header_text(headers, name)
        .map(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn decode_get(answer: Answer) -> Result<GetResult, ClientError> {
    let values = match answer.status {
        StatusCode::OK => vec![answer.body.clone()],
        StatusCode::MULTIPLE_CHOICES => {
            let content_type = header_text(&answer.headers, CONTENT_TYPE.as_str())
                .ok_or_else(|| ClientError::Decode(String::from("300 without a content type")))?;
            let boundary = multipart_boundary(content_type)?;
            let values = parse_multipart(&answer.body, &boundary)?;
            if values.is_empty() {
                return Err(ClientError::Decode(String::from("300 with no siblings")));
            }
            if let Some(declared) = header_text(&answer.headers, api::HEADER_SIBLINGS) {
                if declared.parse::<usize>().ok() != Some(values.len()) {
                    return Err(ClientError::Decode(format!(
                        "{} siblings declared, {} received",
                        declared,
                        values.len()
                    )));
                }
            }
            values
        }
        StatusCode::NOT_FOUND => Vec::new(),
        status => return Err(error_from_status(status, &answer.body)),
    };
    let headers = &answer.headers;
    Ok(GetResult {
        values,
        context: header_text(headers, api::HEADER_CONTEXT).map(str::to_owned),
        replicas: header_list(headers, api::HEADER_REPLICAS),
        fallbacks: header_list(headers, api::HEADER_FALLBACKS),
        node: header_text(headers, api::HEADER_NODE).map(str::to_owned),
        read_your_writes: header_text(headers, api::HEADER_READ_YOUR_WRITES)
            .is_none_or(|text| !text.eq_ignore_ascii_case("false")),
        expires_at: header_text(headers, api::HEADER_EXPIRES_AT).and_then(|t| t.parse().ok()),
        endpoint: answer.endpoint,
    })
}

pub(super) fn decode_write(answer: Answer) -> Result<PutResult, ClientError> {
    if answer.status == StatusCode::PRECONDITION_FAILED {
        let message = match error_from_status(answer.status, &answer.body) {
            ClientError::Server { message, .. } => message,
            other => other.to_string(),
        };
        return Err(ClientError::PreconditionFailed {
            message,
            context: header_text(&answer.headers, api::HEADER_CONTEXT).map(str::to_owned),
        });
    }
    if !answer.status.is_success() {
        return Err(error_from_status(answer.status, &answer.body));
    }
    let headers = &answer.headers;
    Ok(PutResult {
        context: header_text(headers, api::HEADER_CONTEXT).map(str::to_owned),
        replicas: header_list(headers, api::HEADER_REPLICAS),
        durable: header_list(headers, api::HEADER_DURABLE),
        fallbacks: header_list(headers, api::HEADER_FALLBACKS),
        node: header_text(headers, api::HEADER_NODE).map(str::to_owned),
        dot: header_text(headers, api::HEADER_DOT).map(str::to_owned),
        endpoint: answer.endpoint,
    })
}

pub(super) fn decode_json<T: DeserializeOwned>(answer: &Answer) -> Result<T, ClientError> {
    if !answer.status.is_success() {
        return Err(error_from_status(answer.status, &answer.body));
    }
    serde_json::from_slice(&answer.body)
        .map_err(|error| ClientError::Decode(format!("{}: {error}", answer.endpoint)))
}
