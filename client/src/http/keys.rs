//! A bucket's keys: listing pages ([`Client::list_keys`]), reading many keys at once
//! ([`Client::mget`]) and watching one for a change ([`Client::watch`]).

use bytes::Bytes;
use http::{Method, StatusCode};

use super::error::error_from_status;
use super::request::{encode_segment, query_string};
use super::response::{decode_get, decode_json, header_text, Answer, GetResult};
use super::{Client, ClientError, Idempotence, Options};
use crate::api::{self, KeyDoc, ListPage, MgetEnd, MgetItem, MgetRequest, MAX_MGET_KEYS};
use ringkv_core::listing::MAX_LIST_LIMIT;
use ringkv_core::request::MAX_WATCH_WAIT_MS;

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, in listing order (by ring partition, then by key).
    pub keys: Vec<Bytes>,
    /// Where the next page starts (`None`: the listing is complete).
    pub cursor: Option<String>,
}

/// What a multi-get read.
#[derive(Debug, Default)]
pub struct MgetResult {
    /// Each key read, with what its own get would have answered, in the order they completed.
    pub keys: Vec<(Bytes, Result<GetResult, ClientError>)>,
    /// Keys not read (the answer reached its byte bound): ask for them again.
    pub unprocessed: Vec<Bytes>,
}

/// What a watch saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchResult {
    /// The key holds a write the watched context had not seen: the key as a get reads it.
    Changed(GetResult),
    /// Nothing new within the wait; watch again from `context`.
    Unchanged {
        /// The key's context (`None` for a key with no history).
        context: Option<String>,
    },
}

fn key_bytes(doc: &KeyDoc) -> Result<Bytes, ClientError> {
    doc.to_bytes()
        .map(Bytes::from)
        .map_err(|error| ClientError::Decode(error.to_string()))
}

impl Client {
    /// One page of `bucket`'s keys, from `cursor` (the previous page's; `None` to start),
    /// `limit` keys at most (1 to 1,000; the server's default is 100). A scan for admin and
    /// export: eventually consistent, one replica per partition.
    pub async fn list_keys(
        &self,
        bucket: &[u8],
        cursor: Option<&str>,
        limit: Option<u32>,
        options: &Options,
    ) -> Result<KeyPage, ClientError> {
        if let Some(limit) = limit.filter(|l| *l == 0 || *l > MAX_LIST_LIMIT) {
            return Err(ClientError::BadRequest(format!(
                "a listing's limit is 1 to {MAX_LIST_LIMIT} keys, not {limit}"
            )));
        }
        let mut path = format!("/kv/{}?list", encode_segment(bucket));
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={}", encode_segment(cursor.as_bytes())));
        }
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        if let Some(ms) = options.timeout_ms {
            path.push_str(&format!("&timeout_ms={ms}"));
        }
        let request = self.prepare(
            Method::GET,
            path,
            Vec::new(),
            Bytes::new(),
            options.timeout_ms,
        );
        let answer = self
            .execute(Idempotence::Idempotent, self.any_targets(), &request)
            .await?;
        let page: ListPage = decode_json(&answer)?;
        Ok(KeyPage {
            keys: page.keys.iter().map(key_bytes).collect::<Result<_, _>>()?,
            cursor: page.cursor,
        })
    }

    /// Reads `keys` of `bucket` at once (1 to 1,000 distinct keys), each coordinated as its own
    /// get; `options` carries the read quorum and timeout.
    pub async fn mget(
        &self,
        bucket: &[u8],
        keys: &[Bytes],
        options: &Options,
    ) -> Result<MgetResult, ClientError> {
        if keys.is_empty() || keys.len() > MAX_MGET_KEYS {
            return Err(ClientError::BadRequest(format!(
                "a multi-get names 1 to {MAX_MGET_KEYS} keys, not {}",
                keys.len()
            )));
        }
        let asked = MgetRequest {
            keys: keys.iter().map(|key| KeyDoc::from_bytes(key)).collect(),
        };
        let body =
            serde_json::to_vec(&asked).map_err(|error| ClientError::Decode(error.to_string()))?;
        let read_only = Options {
            r: options.r,
            n: options.n,
            timeout_ms: options.timeout_ms,
            ..Options::default()
        };
        let path = format!(
            "/kv/{}{}",
            encode_segment(bucket),
            match query_string(&read_only).strip_prefix('?') {
                Some(query) => format!("?mget&{query}"),
                None => String::from("?mget"),
            }
        );
        let headers = vec![(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )];
        let request = self.prepare(
            Method::POST,
            path,
            headers,
            Bytes::from(body),
            options.timeout_ms,
        );
        let answer = self
            .execute(Idempotence::Idempotent, self.any_targets(), &request)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(error_from_status(answer.status, &answer.body));
        }
        parse_mget(&answer)
    }

    /// Waits up to `wait_ms` (1 ms to 10 minutes) for `bucket`/`key` to hold a write that
    /// `context` (a read's) has not seen; `None` waits for the first write of a key with no
    /// history. Answers at once when there already is one.
    pub async fn watch(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: Option<&str>,
        wait_ms: u64,
        options: &Options,
    ) -> Result<WatchResult, ClientError> {
        if wait_ms == 0 || wait_ms > MAX_WATCH_WAIT_MS {
            return Err(ClientError::BadRequest(format!(
                "a watch waits 1 to {MAX_WATCH_WAIT_MS} ms, not {wait_ms}"
            )));
        }
        let since = match context.map(str::trim) {
            Some("") => {
                return Err(ClientError::BadRequest(String::from(
                    "the watched context is empty: pass a read's context, or none for a key \
                     with no history",
                )))
            }
            Some(context) => encode_segment(context.as_bytes()),
            None => String::from("*"),
        };
        let read_only = Options {
            r: options.r,
            n: options.n,
            ..Options::default()
        };
        let query = query_string(&read_only);
        let separator = if query.is_empty() { "?" } else { "&" };
        let path = format!(
            "/kv/{}/{}{query}{separator}changed_since={since}&timeout_ms={wait_ms}",
            encode_segment(bucket),
            encode_segment(key),
        );
        let request = self.prepare(Method::GET, path, Vec::new(), Bytes::new(), Some(wait_ms));
        let answer = self
            .execute(
                Idempotence::Idempotent,
                self.key_targets(bucket, key).await,
                &request,
            )
            .await?;
        if answer.status == StatusCode::NOT_MODIFIED {
            return Ok(WatchResult::Unchanged {
                context: header_text(&answer.headers, api::HEADER_CONTEXT).map(str::to_owned),
            });
        }
        decode_get(answer).map(WatchResult::Changed)
    }
}

/// Reads a multi-get's lines: one per key, then the end line (without it the answer was cut).
fn parse_mget(answer: &Answer) -> Result<MgetResult, ClientError> {
    let mut result = MgetResult::default();
    let mut ended = false;
    for line in answer.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if ended {
            return Err(ClientError::Decode(String::from(
                "a multi-get answer goes on after its end line",
            )));
        }
        if let Ok(end) = serde_json::from_slice::<MgetEnd>(line) {
            result.unprocessed = end
                .unprocessed
                .iter()
                .map(key_bytes)
                .collect::<Result<_, _>>()?;
            ended = true;
            continue;
        }
        let item: MgetItem = serde_json::from_slice(line).map_err(|error| {
            ClientError::Decode(format!("a multi-get line is not a key's result: {error}"))
        })?;
        let key = key_bytes(&item.key)?;
        result.keys.push((key, item_result(item, &answer.endpoint)));
    }
    if !ended {
        return Err(ClientError::Decode(String::from(
            "the multi-get answer was cut short (no end line): read the missing keys again",
        )));
    }
    Ok(result)
}

fn item_result(item: MgetItem, endpoint: &str) -> Result<GetResult, ClientError> {
    match item.status {
        200 | 300 | 404 => {
            let values = item
                .values
                .iter()
                .map(|value| {
                    api::base64_decode(value)
                        .map(Bytes::from)
                        .ok_or_else(|| ClientError::Decode(String::from("a value is not base64")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(GetResult {
                values,
                context: item.context,
                expires_at: item.expires_at,
                endpoint: endpoint.to_owned(),
                ..GetResult::default()
            })
        }
        status => {
            let body = api::ErrorBody {
                error: item.message.unwrap_or_default(),
                kind: item.error.unwrap_or_default(),
                quorum: None,
                needed: None,
                answered: Vec::new(),
            };
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(error_from_status(status, &Bytes::from(body)))
        }
    }
}
