//! `--output text|json`: what the data-printing commands write for scripts.
//!
//! With `--output json` each command writes JSON documents to stdout, one a line, and nothing
//! else (notes and warnings stay on stderr, or are fields of the document). The shapes reuse
//! the HTTP API's documents ([`ringkv_client::api`]) where one exists:
//!
//! | command | stdout |
//! |---|---|
//! | `get` | a [`ReadDoc`] (also for a missing key: `found` is false, and the exit code says not found) |
//! | `watch` | a [`ReadDoc`] with `changed` true, or `changed` false and the context |
//! | `put`, `delete` | a [`WriteDoc`] |
//! | `mget` | the server's own lines: an [`api::MgetItem`] per key, then an [`api::MgetEnd`] |
//! | `list` | an [`api::ListPage`] per page (the last one's `cursor` is null) |
//! | `cluster status` | a [`StatusDoc`]: the answering node's [`api::ClusterStatus`] and each member's own |
//! | `cluster join`, `leave`, `remove` | an [`ActionDoc`] |
//! | `probe` | the node's [`api::Probe`] |
//!
//! Bytes (keys, values) are written as the API writes keys ([`api::KeyDoc`]): the text itself
//! when it is UTF-8, else `{"base64": "..."}`.

use std::collections::BTreeMap;
use std::io::Write;

use ringkv_client::{api, GetResult, PutResult};
use serde::Serialize;

/// How a command prints what it got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people: values, tables and notes.
    #[default]
    Text,
    /// For scripts: JSON documents on stdout, one a line.
    Json,
}

/// `--output`, shared by every command that prints data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct OutputArgs {
    /// Output format: text (for people) or json (one JSON document a line on stdout).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

impl OutputArgs {
    /// Whether JSON was asked for.
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// Bytes as JSON: the text when UTF-8, else `{"base64": "..."}` (the API's key document).
pub type BytesDoc = api::KeyDoc;

/// A read (`get`, `watch`) as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReadDoc {
    /// Bucket.
    pub bucket: BytesDoc,
    /// Key.
    pub key: BytesDoc,
    /// `watch` only: whether a write came before the wait ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// The key holds at least one value.
    pub found: bool,
    /// The values: one, or the siblings; empty when absent, deleted or expired.
    pub values: Vec<BytesDoc>,
    /// The context to write with (absent when the key has no history).
    pub context: Option<String>,
    /// When the values expire (ms since the Unix epoch), if they all do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Replicas that answered.
    pub replicas: Vec<String>,
    /// Fallback nodes that answered for unreachable owners.
    pub fallbacks: Vec<String>,
    /// The node that coordinated the read.
    pub node: Option<String>,
    /// False when `r + w <= n`: the read may miss acknowledged writes.
    pub read_your_writes: bool,
}

impl ReadDoc {
    /// The document of a read of `bucket`/`key`.
    pub fn new(bucket: &[u8], key: &[u8], result: &GetResult) -> ReadDoc {
        ReadDoc {
            bucket: BytesDoc::from_bytes(bucket),
            key: BytesDoc::from_bytes(key),
            changed: None,
            found: result.found(),
            values: result
                .values
                .iter()
                .map(|value| BytesDoc::from_bytes(value))
                .collect(),
            context: result.context.clone(),
            expires_at: result.expires_at,
            replicas: result.replicas.clone(),
            fallbacks: result.fallbacks.clone(),
            node: result.node.clone(),
            read_your_writes: result.read_your_writes,
        }
    }

    /// A watch that ended with no write: only the key and the context to wait with next.
    pub fn unchanged(bucket: &[u8], key: &[u8], context: Option<String>) -> ReadDoc {
        ReadDoc {
            bucket: BytesDoc::from_bytes(bucket),
            key: BytesDoc::from_bytes(key),
            changed: Some(false),
            found: false,
            values: Vec::new(),
            context,
            expires_at: None,
            replicas: Vec::new(),
            fallbacks: Vec::new(),
            node: None,
            read_your_writes: true,
        }
    }
}

/// A write (`put`, `delete`) as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WriteDoc {
    /// Bucket.
    pub bucket: BytesDoc,
    /// Key.
    pub key: BytesDoc,
    /// `put` or `delete`.
    pub operation: String,
    /// `put`: the value's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<usize>,
    /// Replicas that acknowledged.
    pub replicas: Vec<String>,
    /// Replicas that had made it durable before the ack.
    pub durable: Vec<String>,
    /// Fallback nodes that stood in for unreachable owners (they hold hints).
    pub fallbacks: Vec<String>,
    /// The node that coordinated the write.
    pub node: Option<String>,
    /// The write's dot (`actor:counter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot: Option<String>,
    /// The context of the new object.
    pub context: Option<String>,
}

impl WriteDoc {
    /// The document of a write of `bucket`/`key`.
    pub fn new(
        operation: &str,
        bucket: &[u8],
        key: &[u8],
        bytes: Option<usize>,
        result: &PutResult,
    ) -> WriteDoc {
        WriteDoc {
            bucket: BytesDoc::from_bytes(bucket),
            key: BytesDoc::from_bytes(key),
            operation: operation.to_string(),
            bytes,
            replicas: result.replicas.clone(),
            durable: result.durable.clone(),
            fallbacks: result.fallbacks.clone(),
            node: result.node.clone(),
            dot: result.dot.clone(),
            context: result.context.clone(),
        }
    }
}

/// `cluster status` as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatusDoc {
    /// The answering node's `/cluster` document.
    pub status: api::ClusterStatus,
    /// Each other member's own `/cluster` document (`null`: it did not answer); removed
    /// members are left out.
    pub members: BTreeMap<String, Option<api::ClusterStatus>>,
}

/// `cluster join|leave|remove` as JSON: what was asked, and of which node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ActionDoc {
    /// `join`, `leave` or `remove`.
    pub action: String,
    /// The node asked (`join`, `leave`) or the member removed (`remove`).
    pub node: String,
    /// `join`: the seed's peer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

/// Writes `document` as one line of JSON.
pub fn write_json<T: Serialize>(out: &mut impl Write, document: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, document)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Prints `document` as one line of JSON on stdout.
pub fn print_json<T: Serialize>(document: &T) -> std::io::Result<()> {
    write_json(&mut std::io::stdout().lock(), document)
}
