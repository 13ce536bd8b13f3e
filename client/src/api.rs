//! The HTTP API's contract, shared by the server (the `ringkv` crate's `http` module) and the
//! client (`Client`, behind the `http` feature): header names, query parameters and the JSON
//! documents. It needs only serde, so it compiles without the `http` feature (the WebAssembly
//! bindings use it that way).
//!
//! | request | answer |
//! |---|---|
//! | `GET /kv/{bucket}/{key}` | 200 value + context (+ [`HEADER_EXPIRES_AT`] if it expires); 300 `multipart/mixed` siblings + context; 404 absent, deleted or expired (context header if the key has a history) |
//! | `PUT /kv/{bucket}/{key}` (body = value, optional context header, `?ttl=` or [`HEADER_TTL`]) | 204 + context of the new object |
//! | `DELETE /kv/{bucket}/{key}` (context header) | 204 |
//! | a PUT or DELETE with `If-None-Match: *` or `If-Match: <context>` whose condition fails | 412 + [`ErrorBody`] + the current context |
//! | any of those, quorum not met | 503 + [`ErrorBody`] with `needed` and `answered` |
//! | `GET /cluster` | [`ClusterStatus`] |
//! | `GET /ring` | [`RingDoc`] |
//! | `POST /cluster/join` [`JoinRequest`], `/cluster/leave`, `/cluster/remove` [`RemoveRequest`] | 202 |
//! | `GET`/`PUT /buckets/{bucket}/props` | [`BucketPropsDoc`] |
//! | `GET /health` | [`Health`] (503 while the node knows no ring) |
//! | `GET /livez` | [`Probe`]: 200 whenever the process serves HTTP (no call into the node) |
//! | `GET /readyz` | [`Probe`]: 200 when the node has a ring, its storage is open and it is neither stopping nor leaving; else 503 naming the failed checks |
//! | `GET /metrics` | Prometheus text |
//!
//! Query overrides on `/kv`: `r`, `w`, `n`, `dw` (`one`, `quorum`, `all` or a count),
//! `timeout_ms`, and on a PUT `ttl` (a duration, see [`parse_duration_ms`]). Bucket and key are
//! percent-decoded path segments (arbitrary bytes).

use serde::{Deserialize, Serialize};

/// The causal context of a key (base64 text, opaque to clients).
pub const HEADER_CONTEXT: &str = "x-ringkv-context";
/// Comma-separated ids of the replicas that answered.
pub const HEADER_REPLICAS: &str = "x-ringkv-replicas";
/// Comma-separated ids of the fallback nodes that stood in for unreachable owners (sloppy quorum).
pub const HEADER_FALLBACKS: &str = "x-ringkv-fallbacks";
/// Comma-separated ids of the replicas that had made a write durable before the ack.
pub const HEADER_DURABLE: &str = "x-ringkv-durable";
/// `false` when `r + w <= n` for the request: a read may miss an acknowledged write.
pub const HEADER_READ_YOUR_WRITES: &str = "x-ringkv-read-your-writes";
/// How many siblings a 300 answer carries.
pub const HEADER_SIBLINGS: &str = "x-ringkv-siblings";
/// The node that coordinated (or forwarded) the request.
pub const HEADER_NODE: &str = "x-ringkv-node";
/// On a write's answer: the dot the write was given (`actor:counter`), its identity in every
/// clock. A history checker uses it to tell which write a stored sibling is.
pub const HEADER_DOT: &str = "x-ringkv-dot";

/// On a PUT: the value's time to live, a duration as [`parse_duration_ms`] reads it (the same as
/// the `ttl` query parameter).
pub const HEADER_TTL: &str = "x-ringkv-ttl";
/// On a read's answer: when the last of its values expires, in milliseconds since the Unix
/// epoch at the coordinator's clock (absent when one of them never expires).
pub const HEADER_EXPIRES_AT: &str = "x-ringkv-expires-at";

/// A duration that [`parse_duration_ms`] cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError(pub String);

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not a duration: expected a whole number with a unit ms, s, m, h or d (30m, \
             90s, 1500ms), or a number of seconds",
            self.0
        )
    }
}

impl std::error::Error for DurationError {}

/// Reads a duration: a whole number followed by `ms`, `s`, `m`, `h` or `d` (`30m`, `1500ms`),
/// or a bare number of seconds (as Redis's `EXPIRE` and HTTP's `max-age` count). Surrounding
/// spaces are ignored; 0 is read as 0 (the caller decides whether it is allowed).
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(DurationError(text.to_string())),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| DurationError(text.to_string()))
}

/// Writes a duration in the largest unit that divides it (`1800000` as `30m`), which
/// [`parse_duration_ms`] reads back.
pub fn format_duration_ms(ms: u64) -> String {
    for (unit, scale) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % scale == 0 {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable reason.
    pub error: String,
    /// Machine-readable class: `bad_request`, `too_large`, `not_found`, `method_not_allowed`,
    /// `unavailable` (a quorum not reached, and the request had no effect), `failed`,
    /// `shutting_down` (not started), `outcome_unknown` (a write whose quorum was not reached in
    /// time, or that was abandoned in flight at shutdown: it may or may not take effect; read
    /// before retrying), `overloaded`, `no_ring`, `too_few_members` (the cluster is smaller than
    /// the quorum asked for: the message names the fix).
    pub kind: String,
    /// For `unavailable`: the quorum that failed (`read`, `write`, `durable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<String>,
    /// For `unavailable`: how many replicas were needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<u32>,
    /// For `unavailable`: the replicas that answered in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<String>,
}

/// One member as `/cluster` and `/ring` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDoc {
    /// Node id.
    pub id: String,
    /// `joining`, `up`, `leaving`, `down` or `removed`, as the answering node sees it: a member
    /// its failure detector does not hear from is `down`.
    pub status: String,
    /// Whether the answering node's failure detector hears from it.
    pub alive: bool,
    /// Failure domain.
    pub zone: Option<String>,
    /// Ring weight.
    pub capacity: u32,
    /// HTTP address (`host:port`).
    pub http_addr: String,
    /// Peer transport address (`host:port`).
    pub peer_addr: String,
    /// Partitions it owns (first replica) in the current ring.
    pub partitions: u32,
    /// Partitions of other nodes it may still hold hints or orphaned records of, as it last
    /// said (`None`: not known yet, or drained).
    #[serde(default)]
    pub handoff_partitions: Option<u32>,
    /// It left the ring and handed everything over: it may be stopped.
    #[serde(default)]
    pub drained: bool,
}

/// `GET /cluster`: the answering node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster name.
    pub cluster: String,
    /// The answering node.
    pub node: String,
    /// The member that computes new rings.
    pub claimant: Option<String>,
    /// Version of the current ring (`None` while a joining node has none).
    pub ring_version: Option<u64>,
    /// Every member, removed ones included.
    pub members: Vec<MemberDoc>,
    /// Hints this node holds for unreachable owners.
    pub hints_pending: u64,
    /// Partitions whose transfer to the next ring is not done.
    pub transfers_pending: u32,
    /// Requests this node coordinates now.
    pub in_flight: u64,
    /// Bucket properties set cluster-wide.
    pub buckets: Vec<BucketPropsDoc>,
    /// Merkle root (16 hex digits) of each partition replica on this node whose tree is built,
    /// by partition: replicas of a partition with equal roots hold the same objects.
    #[serde(default)]
    pub merkle_roots: std::collections::BTreeMap<u32, String>,
}

/// One partition in `/ring`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDoc {
    /// Partition index.
    pub id: u32,
    /// First ring position, as a decimal string (128-bit: JSON numbers cannot hold it).
    pub start: String,
    /// Its preference list for the ring's `target_n`, owner first.
    pub replicas: Vec<String>,
    /// Nodes still to receive it before the next ring takes over (empty when it is not moving).
    pub moving_to: Vec<String>,
}

/// `GET /ring`: enough to route a key to its owners, and to draw the ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingDoc {
    /// Cluster name.
    pub cluster: String,
    /// The answering node.
    pub node: String,
    /// Ring version.
    pub version: u64,
    /// Q.
    pub partition_count: u32,
    /// Replicas placement plans for (the largest N a bucket may have).
    pub target_n: u32,
    /// `partitions` or `tokens`.
    pub strategy: String,
    /// Members of the ring and the cluster.
    pub members: Vec<MemberDoc>,
    /// Every partition in order.
    pub partitions: Vec<PartitionDoc>,
}

/// `POST /cluster/join`: this node (which must be alone in its cluster) joins the cluster a seed
/// belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The seed's peer address (`host:port`).
    pub seed: String,
}

/// `POST /cluster/remove`: mark a member gone for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// The member's id.
    pub node: String,
}

/// `GET/PUT /buckets/{bucket}/props`. Quorums as `one`, `quorum`, `all` or a count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketPropsDoc {
    /// Bucket name (lossy UTF-8; ignored on PUT, where the path names the bucket).
    #[serde(default)]
    pub bucket: String,
    /// Replication factor (on PUT, 0 or absent with `n_per_zone`: their sum).
    #[serde(default)]
    pub n: u32,
    /// Read quorum (default on PUT: `quorum`).
    #[serde(default = "quorum_text")]
    pub r: String,
    /// Write quorum (default on PUT: `quorum`).
    #[serde(default = "quorum_text")]
    pub w: String,
    /// Durable-write quorum (default on PUT: `0`).
    #[serde(default = "zero_text")]
    pub dw: String,
    /// `siblings` or `lww` (default on PUT: `siblings`).
    #[serde(default = "siblings_text")]
    pub conflict_mode: String,
    /// Past this many siblings a write is reported; 0: never (default on PUT: 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siblings_warn: Option<u32>,
    /// A write that would leave more siblings than this (and more than before) is refused with
    /// 409 (default on PUT: 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_siblings: Option<u32>,
    /// A write that would make the object larger than this many bytes (and larger than before)
    /// is refused with 413 (default on PUT: 17 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_bytes: Option<u64>,
    /// Time to live of a value whose PUT names none, a duration such as `30m` (see
    /// [`parse_duration_ms`]); absent: values do not expire (default on PUT: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<String>,
    /// Replicas per zone, e.g. `{"dc1": 3, "dc2": 2}`; `n` is their sum (on PUT `n` may be left
    /// out). Absent: `n` replicas anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_per_zone: Option<std::collections::BTreeMap<String, u32>>,
}

fn quorum_text() -> String {
    "quorum".to_string()
}

fn zero_text() -> String {
    "0".to_string()
}

fn siblings_text() -> String {
    "siblings".to_string()
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `no_ring` while a joining node has not received the ring.
    pub status: String,
    /// The node.
    pub node: String,
    /// Peers its failure detector hears from, itself included.
    pub alive_members: u32,
    /// Members not removed.
    pub members: u32,
}

/// `GET /livez` and `GET /readyz`: a probe's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// `ok` (live, or ready) or `not_ready`.
    pub status: String,
    /// The node.
    pub node: String,
    /// The readiness checks that failed: `no_ring` (a joining node without a ring yet),
    /// `storage` (the database is not open), `stopping` (shutting down: finishing requests in
    /// flight), `leaving` (handing its partitions over after `cluster leave`, or left), or
    /// `node_unresponsive` (the node task did not answer in time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units_and_write_back_in_the_largest() {
        assert_eq!(parse_duration_ms("30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms(" 1500ms "), Ok(1_500));
        assert_eq!(parse_duration_ms("90"), Ok(90_000));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        for bad in [
            "",
            "m",
            "-5s",
            "1.5h",
            "10 m",
            "5w",
            "99999999999999999999d",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} read");
        }
        for ms in [
            1, 999, 1_000, 90_000, 1_800_000, 3_600_000, 86_400_000, 1_234_567,
        ] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }
        assert_eq!(format_duration_ms(1_800_000), "30m");
    }
}

// ----- keys in documents: listing and multi-get -----

/// A key in a JSON document: its text when it is UTF-8, else `{"base64": "..."}` (standard
/// alphabet, padded). Binary keys are keys like any other; this is how JSON carries them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyDoc {
    /// A UTF-8 key.
    Text(String),
    /// Any key, base64-encoded.
    Binary {
        /// The key's bytes in base64.
        base64: String,
    },
}

/// A key document whose base64 does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDocError(pub String);

impl std::fmt::Display for KeyDocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a key's base64 does not decode: {:?}", self.0)
    }
}

impl std::error::Error for KeyDocError {}

impl KeyDoc {
    /// The document of a key: text when it is UTF-8.
    pub fn from_bytes(key: &[u8]) -> KeyDoc {
        match std::str::from_utf8(key) {
            Ok(text) => KeyDoc::Text(text.to_string()),
            Err(_) => KeyDoc::Binary {
                base64: base64_encode(key),
            },
        }
    }

    /// The key's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, KeyDocError> {
        match self {
            KeyDoc::Text(text) => Ok(text.as_bytes().to_vec()),
            KeyDoc::Binary { base64 } => {
                base64_decode(base64).ok_or_else(|| KeyDocError(base64.clone()))
            }
        }
    }
}

/// Standard, padded base64: how documents carry bytes (keys and multi-get values).
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`base64_encode`]; `None` when the text is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `GET /kv/{bucket}?list`: one page of a bucket's keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// The keys, in listing order (by ring partition, then by key).
    pub keys: Vec<KeyDoc>,
    /// Pass it back as `cursor=` for the next page; `null` once the listing is complete. A page
    /// may be short, or empty, and still have a cursor.
    pub cursor: Option<String>,
}

/// Keys one multi-get may ask for at most (more is a 400, as DynamoDB's `BatchGetItem`
/// refuses more than its 100).
pub const MAX_MGET_KEYS: usize = 1_000;
/// Bytes of values one multi-get answers at most; keys not read by then are returned as
/// `unprocessed` (as `BatchGetItem` does past 16 MB).
pub const MAX_MGET_BYTES: usize = 16 * 1024 * 1024;

/// `POST /kv/{bucket}?mget`: the keys to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MgetRequest {
    /// 1 to [`MAX_MGET_KEYS`] distinct keys.
    pub keys: Vec<KeyDoc>,
}

/// One line of a multi-get's answer (`application/x-ndjson`): a key's result, as the same
/// key's GET would answer, in the order the reads complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MgetItem {
    /// The key, as the request gave it.
    pub key: KeyDoc,
    /// The status its GET would have: 200 (one value), 300 (siblings), 404, or an error's.
    pub status: u16,
    /// The values (siblings), base64; empty for a 404 or an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// The context to write with (absent when the key has no history, or on an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// When the values expire (ms since the Unix epoch), if they all do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// On an error, its kind (`unavailable`, `bad_request`, ...) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// ... and its explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The last line of a multi-get's answer: the keys it did not read (past
/// [`MAX_MGET_BYTES`]); ask for them again. A stream without this line was cut short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MgetEnd {
    /// Keys not read.
    pub unprocessed: Vec<KeyDoc>,
}
