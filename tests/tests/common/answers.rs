//! What an answer of `/kv` means to a checker: a GET's values (a 300's `multipart/mixed` parts),
//! the core checker's outcome for an answer, and a key's state once a cluster has converged (read
//! through every node, and each owner's own record).
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use ringkv_core::checker::{FinalReplica, OpKind, OpOutcome, Operation};
use ringkv_core::id::NodeId;
use ringkv_core::request::{QuorumKind, Reply};
use ringkv_core::version::{ActorId, Context, Dot, Object};

use super::cluster::{get_request, try_raw_http, Cluster, NoAnswer, RawAnswer};

/// Percent-encodes a path segment (every byte but RFC 3986's unreserved ones).
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The values of a 200, 300 (each part of its `multipart/mixed` body, as many as
/// `X-Ringkv-Siblings` says, at least two) or 404 to a GET of `/kv`.
pub fn values_of(answer: &RawAnswer) -> Result<Vec<String>, String> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match answer.status {
        200 => Ok(vec![text(&answer.body)]),
        404 if answer.body.is_empty() => Ok(Vec::new()),
        404 => Err(format!("a 404 with a body: {:?}", text(&answer.body))),
        300 => {
            let content_type = answer.header("content-type").unwrap_or_default();
            let boundary = content_type
                .strip_prefix("multipart/mixed")
                .and_then(|rest| {
                    rest.split(';')
                        .find_map(|p| p.trim().strip_prefix("boundary="))
                })
                .ok_or_else(|| format!("a 300 of content-type {content_type:?}"))?;
            let delimiter = format!("--{boundary}");
            let find =
                |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
            let malformed = || format!("a malformed multipart body: {:?}", text(&answer.body));
            let mut rest = answer
                .body
                .strip_prefix(delimiter.as_bytes())
                .ok_or_else(malformed)?;
            let mut values = Vec::new();
            while !rest.starts_with(b"--") {
                rest = rest.strip_prefix(b"\r\n").ok_or_else(malformed)?;
                let head = find(rest, b"\r\n\r\n").ok_or_else(malformed)?;
                rest = &rest[head + 4..];
                let end =
                    find(rest, format!("\r\n{delimiter}").as_bytes()).ok_or_else(malformed)?;
                values.push(text(&rest[..end]));
                rest = &rest[end + 2 + delimiter.len()..];
            }
            let count = answer.header("x-ringkv-siblings").unwrap_or_default();
            if values.len() < 2 || count != values.len().to_string() {
                return Err(format!(
                    "a 300 of {} parts, X-Ringkv-Siblings {count:?}",
                    values.len()
                ));
            }
            Ok(values)
        }
        status => Err(format!("no values in a {status}")),
    }
}

fn node_ids(answer: &RawAnswer, header: &str) -> Vec<NodeId> {
    answer
        .header(header)
        .unwrap_or_default()
        .split(',')
        .filter(|id| !id.is_empty())
        .map(NodeId::new)
        .collect()
}

/// A context header's context (empty when absent or malformed).
pub fn context_of(text: Option<&str>) -> Context {
    text.and_then(|t| Context::from_base64(t).ok())
        .unwrap_or_default()
}

/// Checks a 503's JSON body (`kind`, and for a quorum failure `quorum`, `needed`, `answered`
/// and the `X-Ringkv-Replicas` header); returns its kind.
pub fn check_503(answer: &RawAnswer, problems: &mut Vec<String>) -> String {
    let kind = answer.kind();
    if kind == "unavailable" || kind == "outcome_unknown" {
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let whole = body["quorum"].is_string()
            && body["needed"].is_u64()
            && body["answered"].is_array()
            && answer.header("x-ringkv-replicas").is_some();
        if !whole {
            problems.push(format!(
                "a 503 {kind} without quorum, needed, answered and X-Ringkv-Replicas: {body}"
            ));
        }
    }
    kind
}

/// The `X-Ringkv-Dot` of a write's answer (`actor:counter`).
pub fn dot_of(answer: &RawAnswer) -> Option<Dot> {
    let (actor, counter) = answer.header("x-ringkv-dot")?.rsplit_once(':')?;
    Some(Dot {
        actor: ActorId::new(actor),
        counter: counter.parse().ok()?,
    })
}

/// What is wrong with an answer's `X-Ringkv-Context`, if it has one: it must decode, be bound to
/// `bucket`/`key` (README: contexts carry a fingerprint of their key) and, after a write, cover
/// the write's dot (the new context has seen the write).
pub fn context_problem(answer: &RawAnswer, bucket: &str, key: &str) -> Option<String> {
    let text = answer
        .header("x-ringkv-context")
        .filter(|t| !t.is_empty())?;
    let context = match Context::from_base64(text) {
        Ok(context) => context,
        Err(error) => return Some(format!("an undecodable context {text:?}: {error}")),
    };
    if context.key_fingerprint().is_none()
        || context
            .check_key(bucket.as_bytes(), key.as_bytes())
            .is_err()
    {
        return Some(format!("a context not bound to {bucket}/{key}"));
    }
    match dot_of(answer) {
        Some(dot) if !context.clock().covers(&dot) => Some(format!(
            "a write's new context does not cover its dot {dot}"
        )),
        _ => None,
    }
}

/// An answer (or none) to a `/kv` request as the core checker's outcome; `values`: a GET's, as
/// [`values_of`] read them.
pub fn checker_outcome(
    answer: &Result<RawAnswer, NoAnswer>,
    values: Option<&[String]>,
) -> OpOutcome {
    let answer = match answer {
        Ok(answer) => answer,
        Err(NoAnswer::Refused(_)) => return OpOutcome::Refused,
        Err(_) => return OpOutcome::Lost,
    };
    let context = context_of(answer.header("x-ringkv-context"));
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let quorum = match body["quorum"].as_str() {
        Some("read") => QuorumKind::Read,
        Some("durable") => QuorumKind::Durable,
        _ => QuorumKind::Write,
    };
    let needed = body["needed"].as_u64().unwrap_or_default() as u32;
    let answered = node_ids(answer, "x-ringkv-replicas");
    let dot = dot_of(answer);
    let read_your_writes = answer.header("x-ringkv-read-your-writes") == Some("true");
    OpOutcome::Replied(match (answer.status, answer.kind().as_str(), dot) {
        (200 | 300 | 404, _, _) if values.is_some() => Reply::Got {
            values: values
                .into_iter()
                .flatten()
                .map(|v| v.clone().into_bytes())
                .collect(),
            context,
            replicas: answered,
            fallbacks: node_ids(answer, "x-ringkv-fallbacks"),
            read_your_writes,
            expires_at: answer
                .header("x-ringkv-expires-at")
                .and_then(|t| t.parse().ok()),
        },
        (204, _, Some(dot)) => Reply::Written {
            context,
            dot,
            replicas: answered,
            durable: node_ids(answer, "x-ringkv-durable"),
            fallbacks: node_ids(answer, "x-ringkv-fallbacks"),
            read_your_writes,
        },
        (503, "unavailable", _) => Reply::Unavailable {
            kind: quorum,
            needed,
            answered,
        },
        (412, _, _) => Reply::PreconditionFailed {
            context,
            exists: true,
        },
        (409, _, _) => Reply::TooManySiblings {
            siblings: 0,
            max: 0,
        },
        (507, _, _) => Reply::StorageFull {
            reason: body["error"].to_string(),
        },
        (400, _, _) | (503, "too_few_members" | "no_ring", _) => Reply::Failed {
            reason: body["error"].to_string(),
        },
        _ => Reply::OutcomeUnknown {
            kind: quorum,
            needed,
            answered,
        },
    })
}

/// One key once the cluster has converged: each node's R = all read, and each owner's own record.
#[derive(Debug, PartialEq)]
pub struct FinalKey {
    /// Per node: status and sorted values, or what went wrong.
    pub reads: Vec<Result<(u16, Vec<String>), String>>,
    /// The first node's answer's context, for the checker.
    pub context: Option<String>,
    /// Each owner: its id and its record (`None`: no record).
    pub replicas: Vec<(String, Result<Option<Object>, String>)>,
}

impl FinalKey {
    /// Every node read it, they agree, and the owners hold equal records.
    pub fn agreed(&self) -> bool {
        let first = &self.reads[0];
        first.is_ok()
            && self.reads.iter().all(|r| r == first)
            && self
                .replicas
                .iter()
                .all(|(_, r)| r.is_ok() && r == &self.replicas[0].1)
    }

    /// This state as the core checker's final read (numbered `index`, through the first node)
    /// and replicas.
    pub fn for_checker(
        &self,
        bucket: &str,
        key: &str,
        index: usize,
    ) -> (Operation, Vec<FinalReplica>) {
        let read = Operation {
            index,
            node: NodeId::new("n1"),
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            kind: OpKind::Get,
            invoked_at: 0,
            completed_at: Some(0),
            outcome: Some(OpOutcome::Replied(Reply::Got {
                values: self.values().into_iter().map(String::into_bytes).collect(),
                context: context_of(self.context.as_deref()),
                replicas: Vec::new(),
                fallbacks: Vec::new(),
                read_your_writes: true,
                expires_at: None,
            })),
        };
        let replicas = self
            .replicas
            .iter()
            .map(|(owner, record)| FinalReplica {
                node: NodeId::new(owner),
                object: record.clone().ok().flatten(),
            })
            .collect();
        (read, replicas)
    }

    /// The sorted values the first node read.
    pub fn values(&self) -> Vec<String> {
        self.reads[0]
            .as_ref()
            .map(|r| r.1.clone())
            .unwrap_or_default()
    }
}

/// Reads `bucket`/`key` with R = all through every node of `cluster`, and fetches the own record
/// of each of `owners` (`GET /replica`).
pub async fn read_final(
    cluster: &Cluster,
    owners: &[String],
    bucket: &str,
    key: &str,
    limit: Duration,
) -> FinalKey {
    let target = format!("{}/{}", encode(bucket), encode(key));
    let mut reads = Vec::new();
    let mut context = None;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let get = get_request(&format!("/kv/{target}?r=all"));
        reads.push(match try_raw_http(node.http, &get, false, limit).await {
            Ok(answer) => {
                if i == 0 {
                    context = answer.header("x-ringkv-context").map(str::to_owned);
                }
                values_of(&answer).map(|mut values| {
                    values.sort();
                    (answer.status, values)
                })
            }
            Err(error) => Err(format!("{error:?}")),
        });
    }
    let mut replicas = Vec::new();
    for owner in owners {
        let node = cluster
            .nodes
            .iter()
            .find(|n| &n.id == owner)
            .expect("an owner of the cluster");
        let get = get_request(&format!("/replica/{target}"));
        let record = match try_raw_http(node.http, &get, false, limit).await {
            Ok(answer) if answer.status == 404 => Ok(None),
            Ok(answer) if answer.status == 200 => Object::decode(&answer.body)
                .map(Some)
                .map_err(|e| format!("undecodable record: {e}")),
            Ok(answer) => Err(format!("{} {}", answer.status, answer.kind())),
            Err(error) => Err(format!("{error:?}")),
        };
        replicas.push((owner.clone(), record));
    }
    FinalKey {
        reads,
        context,
        replicas,
    }
}
