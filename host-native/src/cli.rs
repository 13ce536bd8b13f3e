//! The client-side commands of the `ringkv` binary: `get`, `put`, `delete`, `mget`, `list`,
//! `watch`, `probe` and `cluster status|join|leave|remove`, as clap argument structs and `run_*`
//! functions.
//!
//! Every command takes `--node URL` (repeatable or comma-separated; default `$RINGKV_NODE`, else
//! `http://127.0.0.1:8087`; `https://` URLs are reached over TLS, checked against `--ca-file`
//! when given), and `--zone ZONE` (default `$RINGKV_ZONE`): the zone the command runs in, so that
//! a key's request goes to an owner of the key in that zone when there is one (the command then
//! reads the ring first). Bucket and key are taken as raw OS strings, so any bytes the shell can
//! pass work.
//!
//! Output conventions, so that `ringkv get b k > file` and `ringkv get b k | tool` work:
//!
//! - `get` writes **only values to stdout**. With one value and stdout not a terminal, the value's
//!   raw bytes and nothing else; on a terminal, the value as text (or a hex preview when binary).
//!   Siblings are listed on stdout (`2 siblings:` then each numbered with its length and a
//!   preview). The context and any warning go to **stderr** as `context: <base64>`.
//! - `put` and `delete` print what happened to stdout: replicas that acknowledged, fallbacks
//!   flagged, then `context: <base64>` on the last line.
//! - Failures are returned as errors (the binary prints them and exits non-zero): a key that is not
//!   found is [`NotFound`]; a quorum failure shows the server's message with needed and answered.
//! - `--output json` (every command that prints data) writes JSON documents instead, one a line
//!   on stdout; their shapes are in [`output`].
//!
//! `probe` ([`run_probe`]) turns a node's `/livez` or `/readyz` into an exit code.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::future::join_all;
use ringkv_client::api;
use ringkv_client::{member_url, Client, ClientConfig, Condition, GetResult, Options, PutResult};
use ringkv_core::bucket::QuorumValue;
use tokio::io::AsyncReadExt;

pub mod backup;
mod keys;
pub mod output;
mod probe;
pub use backup::{run_backup, run_restore, BackupArgs, RestoreArgs};
pub use keys::{run_list, run_mget, run_watch, ListArgs, MgetArgs, WatchArgs};
use output::{print_json, ActionDoc, ReadDoc, StatusDoc, WriteDoc};
pub use output::{OutputArgs, OutputFormat};
pub use probe::{run_probe, ProbeArgs};

/// The node commands talk to when neither `--node` nor `$RINGKV_NODE` names one.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8087";

/// The environment variable that names the default nodes (comma-separated).
pub const NODE_ENV: &str = "RINGKV_NODE";

/// The environment variable that names the client's zone (see [`NodeArgs::zone`]).
pub const ZONE_ENV: &str = "RINGKV_ZONE";

/// How long `cluster status` waits for each member's own view.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of a value shown in a preview.
const PREVIEW_BYTES: usize = 64;

/// The nodes to use: those given, else `$RINGKV_NODE`, else [`DEFAULT_NODE`].
pub fn resolve_nodes(given: &[String]) -> Vec<String> {
    resolve_nodes_from(given, std::env::var(NODE_ENV).ok().as_deref())
}

fn resolve_nodes_from(given: &[String], environment: Option<&str>) -> Vec<String> {
    let split = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let given: Vec<String> = given.iter().flat_map(|node| split(node)).collect();
    if !given.is_empty() {
        return given;
    }
    let from_environment = environment.map(split).unwrap_or_default();
    if !from_environment.is_empty() {
        return from_environment;
    }
    vec![DEFAULT_NODE.to_owned()]
}

/// The zone to use: the one given, else `$RINGKV_ZONE`; an empty one is none.
pub fn resolve_zone(given: Option<&str>) -> Option<String> {
    resolve_zone_from(given, std::env::var(ZONE_ENV).ok().as_deref())
}

fn resolve_zone_from(given: Option<&str>, environment: Option<&str>) -> Option<String> {
    given
        .or(environment)
        .map(str::trim)
        .filter(|zone| !zone.is_empty())
        .map(str::to_owned)
}

/// `--node`, shared by every command.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeArgs {
    /// Node to talk to, like http://127.0.0.1:8087 (repeatable or comma-separated; default
    /// $RINGKV_NODE, else http://127.0.0.1:8087).
    #[arg(long = "node", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// PEM CA file that https:// nodes' certificates must chain to (default: the Mozilla
    /// roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The zone (datacenter, rack) this command runs in, as the nodes' `zone` setting names it:
    /// a key's request goes first to an owner of the key in this zone (default $RINGKV_ZONE).
    #[arg(long)]
    pub zone: Option<String>,
}

impl NodeArgs {
    /// The nodes to use (see [`resolve_nodes`]).
    pub fn resolved(&self) -> Vec<String> {
        resolve_nodes(&self.nodes)
    }

    /// The one node a command addresses (join, leave); several is an error.
    pub fn single(&self) -> anyhow::Result<String> {
        match self.resolved().as_slice() {
            [node] => Ok(node.clone()),
            nodes => bail!(
                "this command addresses one node; {} given: {}",
                nodes.len(),
                nodes.join(", ")
            ),
        }
    }

    /// A client for these nodes. One-shot commands do not read the ring first: any node
    /// forwards to the owners, and reading the ring would cost a round trip. With a zone they
    /// do (the client reads it before its first key request): the point of a zone is to keep
    /// requests near.
    pub fn client(&self) -> anyhow::Result<Client> {
        let zone = resolve_zone(self.zone.as_deref());
        Ok(Client::new(ClientConfig {
            nodes: self.resolved(),
            ca_file: self.ca_file.clone(),
            ring_refresh: if zone.is_some() {
                ClientConfig::default().ring_refresh
            } else {
                Duration::ZERO
            },
            zone,
            ..ClientConfig::default()
        })?)
    }
}

/// Per-request overrides of the bucket's properties: the quorum flags of `get`, `put`, `delete`
/// and `bench`. A flag left out keeps the bucket's value; the server checks the values (400 when
/// out of range).
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct RequestArgs {
    /// Read quorum (`one`, `quorum`, `all` or a count).
    #[arg(long)]
    pub r: Option<QuorumValue>,
    /// Write quorum.
    #[arg(long)]
    pub w: Option<QuorumValue>,
    /// Durable-write quorum.
    #[arg(long)]
    pub dw: Option<QuorumValue>,
    /// Replication factor for this request.
    #[arg(long)]
    pub n: Option<u32>,
    /// Server-side deadline per request, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

impl RequestArgs {
    /// The client's options for these flags.
    pub fn options(&self) -> Options {
        Options {
            r: self.r,
            w: self.w,
            dw: self.dw,
            n: self.n,
            timeout_ms: self.timeout_ms,
            ..Options::default()
        }
    }
}

/// A key that holds no value.
#[derive(Debug, thiserror::Error)]
#[error("not found: {bucket}/{key}")]
pub struct NotFound {
    /// The bucket (lossy UTF-8).
    pub bucket: String,
    /// The key (lossy UTF-8).
    pub key: String,
}

fn os_bytes(text: &OsStr) -> Vec<u8> {
    text.as_encoded_bytes().to_vec()
}

/// `ringkv get <bucket> <key>`.
#[derive(Clone, Debug, clap::Args)]
pub struct GetArgs {
    /// Bucket.
    pub bucket: OsString,
    /// Key.
    pub key: OsString,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub request: RequestArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Reads a key and prints it (see the module doc for where each part goes). A missing key is a
/// [`NotFound`] error.
pub async fn run_get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    let options = args.request.options();
    let (bucket, key) = (os_bytes(&args.bucket), os_bytes(&args.key));
    let result = client.get(&bucket, &key, &options).await?;
    if args.output.json() {
        print_json(&ReadDoc::new(&bucket, &key, &result))?;
    } else {
        let raw = !std::io::stdout().is_terminal();
        write_get(
            &result,
            raw,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )?;
    }
    if !result.found() {
        return Err(NotFound {
            bucket: args.bucket.to_string_lossy().into_owned(),
            key: args.key.to_string_lossy().into_owned(),
        }
        .into());
    }
    Ok(())
}

/// Writes a read's values to `out` and its context and warnings to `err`. `raw`: stdout is not a
/// terminal, so a single value is written as its bytes alone.
fn write_get(
    result: &GetResult,
    raw: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    match result.values.as_slice() {
        [] => {}
        [value] if raw => out.write_all(value)?,
        [value] => match std::str::from_utf8(value) {
            Ok(text) if !has_control_characters(text) => {
                out.write_all(text.as_bytes())?;
                if !text.ends_with('\n') {
                    out.write_all(b"\n")?;
                }
            }
            _ => writeln!(out, "{} bytes: {}", value.len(), preview(value))?,
        },
        siblings => {
            writeln!(out, "{} siblings:", siblings.len())?;
            for (number, value) in siblings.iter().enumerate() {
                writeln!(
                    out,
                    "  {}) {} bytes: {}",
                    number + 1,
                    value.len(),
                    preview(value)
                )?;
            }
        }
    }
    out.flush()?;
    if let Some(context) = &result.context {
        writeln!(err, "context: {context}")?;
    }
    if result.values.len() > 1 {
        writeln!(
            err,
            "note: write one value with this context to reconcile the siblings"
        )?;
    }
    if result.values.is_empty() && result.context.is_some() {
        writeln!(
            err,
            "note: the key was deleted or expired (the context covers its history)"
        )?;
    }
    if let Some(expires_at) = result.expires_at {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        writeln!(
            err,
            "expires: in {} (at {expires_at} ms since the epoch)",
            api::format_duration_ms(expires_at.saturating_sub(now) / 1_000 * 1_000)
        )?;
    }
    if !result.fallbacks.is_empty() {
        writeln!(
            err,
            "note: fallback nodes answered for unreachable owners: {}",
            result.fallbacks.join(", ")
        )?;
    }
    if !result.read_your_writes {
        writeln!(
            err,
            "warning: r + w <= n for this read: it may miss acknowledged writes"
        )?;
    }
    Ok(())
}

fn has_control_characters(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
}

/// A one-line preview of a value: its text when it is printable UTF-8, else hex; long values are
/// cut with `…`.
pub fn preview(value: &[u8]) -> String {
    let cut = value.len() > PREVIEW_BYTES;
    let shown = &value[..value.len().min(PREVIEW_BYTES)];
    // A cut may split a character: accept an incomplete sequence at the very end.
    let text = match std::str::from_utf8(shown) {
        Ok(text) => Some(text),
        Err(error) if cut && error.error_len().is_none() => {
            std::str::from_utf8(&shown[..error.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    let mut line = match text {
        Some(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => {
            let hex: Vec<String> = shown.iter().map(|b| format!("{b:02x}")).collect();
            format!("hex {}", hex.join(""))
        }
    };
    if cut {
        line.push('…');
    }
    line
}

/// `ringkv put <bucket> <key> [VALUE]`.
#[derive(Clone, Debug, clap::Args)]
pub struct PutArgs {
    /// Bucket.
    pub bucket: OsString,
    /// Key.
    pub key: OsString,
    /// The value; `-` or nothing reads it from stdin.
    #[arg(conflicts_with = "file")]
    pub value: Option<OsString>,
    /// Read the value from this file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The context of the last read, so the write replaces what that read saw.
    #[arg(long)]
    pub context: Option<String>,
    /// Time to live of the value, like 30m, 90s, 1500ms or 2h (a bare number is seconds); the
    /// bucket's default_ttl without it. A write with the read's context refreshes it.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<u64>,
    /// Write only if the key has no value (absent, deleted or expired); else fail with the
    /// current context.
    #[arg(long, conflicts_with = "if_match")]
    pub if_none_match: bool,
    /// Write only if the key's context is still this one (from a read); else fail with the
    /// current context. With no --context, the write replaces what that context saw.
    #[arg(long)]
    pub if_match: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub request: RequestArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Reads `--ttl`: a duration of 1 ms to 10 years.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let ms = api::parse_duration_ms(text).map_err(|e| e.to_string())?;
    ringkv_core::bucket::check_ttl(ms).map_err(|e| e.to_string())
}

/// The value of a put: the argument, the file, or stdin.
async fn read_value(value: Option<&OsStr>, file: Option<&PathBuf>) -> anyhow::Result<Bytes> {
    if let Some(path) = file {
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(Bytes::from(bytes));
    }
    match value {
        Some(value) if value != "-" => Ok(Bytes::from(os_bytes(value))),
        _ => {
            let mut bytes = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut bytes)
                .await
                .context("reading the value from stdin")?;
            Ok(Bytes::from(bytes))
        }
    }
}

/// Writes a key and prints the replicas that acknowledged and the new context.
pub async fn run_put(args: PutArgs) -> anyhow::Result<()> {
    let value = read_value(args.value.as_deref(), args.file.as_ref()).await?;
    let client = args.node.client()?;
    let options = Options {
        ttl_ms: args.ttl,
        condition: match (args.if_none_match, args.if_match) {
            (true, _) => Some(Condition::IfAbsent),
            (false, Some(context)) => Some(Condition::IfMatch(context)),
            (false, None) => None,
        },
        ..args.request.options()
    };
    let length = value.len();
    let (bucket, key) = (os_bytes(&args.bucket), os_bytes(&args.key));
    let result = client
        .put(&bucket, &key, args.context.as_deref(), value, &options)
        .await?;
    if args.output.json() {
        print_json(&WriteDoc::new("put", &bucket, &key, Some(length), &result))?;
    } else {
        print!(
            "{}",
            describe_write(&format!("stored {length} bytes"), &result)
        );
    }
    Ok(())
}

/// `ringkv delete <bucket> <key>`.
#[derive(Clone, Debug, clap::Args)]
pub struct DeleteArgs {
    /// Bucket.
    pub bucket: OsString,
    /// Key.
    pub key: OsString,
    /// The context of the last read, so the delete covers what that read saw. Without it, the
    /// key is read first and what that read returns is deleted.
    #[arg(long)]
    pub context: Option<String>,
    /// Delete only if the key's context is still this one (from a read); else fail with the
    /// current context. With no --context, the delete covers what that context saw.
    #[arg(long)]
    pub if_match: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub request: RequestArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Deletes a key and prints the replicas that acknowledged.
pub async fn run_delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    let options = Options {
        condition: args.if_match.clone().map(Condition::IfMatch),
        ..args.request.options()
    };
    let (bucket, key) = (os_bytes(&args.bucket), os_bytes(&args.key));
    // With only --if-match, the delete covers what that context saw.
    let context = args.context.as_deref().or(args.if_match.as_deref());
    let result = match context {
        Some(context) => {
            client
                .delete(&bucket, &key, Some(context), &options)
                .await?
        }
        // No context: delete what a read sees now, and say so when that is nothing.
        None => match client.delete_current(&bucket, &key, &options).await? {
            Some(result) => result,
            None => anyhow::bail!(
                "nothing to delete: {}/{} is absent or already deleted",
                args.bucket.to_string_lossy(),
                args.key.to_string_lossy()
            ),
        },
    };
    if args.output.json() {
        print_json(&WriteDoc::new("delete", &bucket, &key, None, &result))?;
    } else {
        print!("{}", describe_write("deleted", &result));
    }
    Ok(())
}

/// What a write did, for people: acks, durable replicas, fallbacks, then the context.
fn describe_write(done: &str, result: &PutResult) -> String {
    let mut text = format!(
        "{done}: acknowledged by {} replica{}",
        result.replicas.len(),
        if result.replicas.len() == 1 { "" } else { "s" }
    );
    if !result.replicas.is_empty() {
        text.push_str(&format!(" ({})", result.replicas.join(", ")));
    }
    if let Some(node) = &result.node {
        text.push_str(&format!(", coordinated by {node}"));
    }
    text.push('\n');
    if !result.durable.is_empty() {
        text.push_str(&format!("durable on: {}\n", result.durable.join(", ")));
    }
    if !result.fallbacks.is_empty() {
        text.push_str(&format!(
            "fallbacks: {} (standing in for unreachable owners; they hold hints)\n",
            result.fallbacks.join(", ")
        ));
    }
    if let Some(context) = &result.context {
        text.push_str(&format!("context: {context}\n"));
    }
    text
}

/// `ringkv cluster ...`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the members, their state, the partitions they own and the transfers under way.
    Status(ClusterStatusArgs),
    /// Make a node that is alone join the cluster of a seed.
    Join(ClusterJoinArgs),
    /// Make a node leave the cluster (it hands its partitions over first).
    Leave(ClusterLeaveArgs),
    /// Mark a member gone for good (a dead machine that will not come back).
    Remove(ClusterRemoveArgs),
}

/// `ringkv cluster status`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterStatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `ringkv cluster join --node URL <seed>`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterJoinArgs {
    /// Peer address (`host:port`) of any member of the cluster to join.
    pub seed: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `ringkv cluster leave --node URL`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterLeaveArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `ringkv cluster remove <node-id>`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterRemoveArgs {
    /// Id of the member to remove.
    pub node_id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Runs a `cluster` subcommand.
pub async fn run_cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status(args) => run_cluster_status(args).await,
        ClusterCommand::Join(args) => run_cluster_join(args).await,
        ClusterCommand::Leave(args) => run_cluster_leave(args).await,
        ClusterCommand::Remove(args) => run_cluster_remove(args).await,
    }
}

/// Prints the cluster as a table (see [`cluster_status_text`]).
pub async fn run_cluster_status(args: ClusterStatusArgs) -> anyhow::Result<()> {
    if args.output.json() {
        print_json(&cluster_status_doc(&args.node).await?)?;
    } else {
        print!("{}", cluster_status_text(&args.node).await?);
    }
    Ok(())
}

/// The cluster as one node sees it, with each member's own hints and transfers, asked of the
/// members concurrently (`?` for members that do not answer).
pub async fn cluster_status_text(nodes: &NodeArgs) -> anyhow::Result<String> {
    let (status, mut views) = cluster_views(nodes).await?;
    views.insert(status.node.clone(), Some(status.clone()));
    Ok(render_status(&status, &views))
}

/// [`cluster_status_text`]'s facts as a document.
pub async fn cluster_status_doc(nodes: &NodeArgs) -> anyhow::Result<StatusDoc> {
    let (status, views) = cluster_views(nodes).await?;
    Ok(StatusDoc {
        status,
        members: views.into_iter().collect(),
    })
}

/// One node's `/cluster`, and each other member's own (`None`: no answer), asked concurrently.
async fn cluster_views(
    nodes: &NodeArgs,
) -> anyhow::Result<(
    api::ClusterStatus,
    HashMap<String, Option<api::ClusterStatus>>,
)> {
    let client = nodes.client()?;
    let status = client.cluster_status(None).await?;
    // Wildcard member addresses are resolved against a node we know how to reach.
    let source = client.nodes().first().cloned().unwrap_or_default();
    let queries = status
        .members
        .iter()
        .filter(|member| member.id != status.node && member.status != "removed")
        .filter_map(|member| {
            let url = member_url(&member.http_addr, &source)?;
            let client = client.clone();
            let id = member.id.clone();
            Some(async move {
                let answer =
                    tokio::time::timeout(MEMBER_STATUS_TIMEOUT, client.cluster_status(Some(&url)))
                        .await;
                // An address now used by another node does not describe this member.
                let own = match answer {
                    Ok(Ok(own)) if own.node == id => Some(own),
                    _ => None,
                };
                (id, own)
            })
        });
    let views: HashMap<String, Option<api::ClusterStatus>> =
        join_all(queries).await.into_iter().collect();
    Ok((status, views))
}

/// The status table. `views` holds each member's own `/cluster` answer (`None`: no answer).
fn render_status(
    status: &api::ClusterStatus,
    views: &HashMap<String, Option<api::ClusterStatus>>,
) -> String {
    let mut text = format!(
        "cluster {}, ring version {}, claimant {} (as seen by {})\n",
        status.cluster,
        status
            .ring_version
            .map_or_else(|| String::from("none"), |version| version.to_string()),
        status.claimant.as_deref().unwrap_or("none"),
        status.node
    );
    let header = [
        "NODE",
        "STATUS",
        "ALIVE",
        "ZONE",
        "CAPACITY",
        "PARTITIONS",
        "HINTS",
        "TRANSFERS",
        "HANDOFF",
        "ADDRESS",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for member in &status.members {
        let own = views.get(&member.id).and_then(Option::as_ref);
        let (hints, transfers) = match own {
            Some(own) => (
                own.hints_pending.to_string(),
                own.transfers_pending.to_string(),
            ),
            None if member.status == "removed" => (String::from("-"), String::from("-")),
            None => (String::from("?"), String::from("?")),
        };
        let name = if member.id == status.node {
            format!("{}*", member.id)
        } else {
            member.id.clone()
        };
        rows.push(vec![
            name,
            member.status.clone(),
            String::from(if member.alive { "yes" } else { "no" }),
            member.zone.clone().unwrap_or_else(|| String::from("-")),
            member.capacity.to_string(),
            member.partitions.to_string(),
            hints,
            transfers,
            handoff_cell(member),
            member.http_addr.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text.push_str(&format!(
        "* answered this status; HINTS and TRANSFERS are each member's own count ('?': no answer)\n\
         HANDOFF: partitions of others a member may still hold hints or orphans of ('?': not \
         known yet); 'drained': it left and handed everything over, it may be stopped\n\
         in flight on {}: {}\n",
        status.node, status.in_flight
    ));
    text
}

/// A member's HANDOFF cell: `drained`, the partitions it may still hand over, or `?`.
fn handoff_cell(member: &api::MemberDoc) -> String {
    match (member.drained, member.handoff_partitions) {
        (true, _) => String::from("drained"),
        (false, Some(partitions)) => partitions.to_string(),
        (false, None) => String::from("?"),
    }
}

/// Asks a node to join the cluster of `seed`.
pub async fn run_cluster_join(args: ClusterJoinArgs) -> anyhow::Result<()> {
    let node = args.node.single()?;
    args.node.client()?.join(&node, &args.seed).await?;
    if args.output.json() {
        print_json(&ActionDoc {
            action: "join".into(),
            node,
            seed: Some(args.seed),
        })?;
        return Ok(());
    }
    println!(
        "{node} is joining the cluster of {}; watch with `ringkv cluster status`",
        args.seed
    );
    Ok(())
}

/// Asks a node to leave the cluster.
pub async fn run_cluster_leave(args: ClusterLeaveArgs) -> anyhow::Result<()> {
    let node = args.node.single()?;
    args.node.client()?.leave(&node).await?;
    if args.output.json() {
        print_json(&ActionDoc {
            action: "leave".into(),
            node,
            seed: None,
        })?;
        return Ok(());
    }
    println!(
        "{node} is leaving: it hands its partitions over, then stops serving them; stop it once \
         `ringkv cluster status` shows it drained (or start it with --stop-when-drained)"
    );
    Ok(())
}

/// Marks a member removed.
pub async fn run_cluster_remove(args: ClusterRemoveArgs) -> anyhow::Result<()> {
    args.node.client()?.remove(&args.node_id).await?;
    if args.output.json() {
        print_json(&ActionDoc {
            action: "remove".into(),
            node: args.node_id,
            seed: None,
        })?;
        return Ok(());
    }
    println!(
        "{} is marked removed; its partitions go to the remaining members",
        args.node_id
    );
    Ok(())
}

#[cfg(test)]
mod tests;
