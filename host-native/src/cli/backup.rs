//! `ringkv backup` and `ringkv restore` (see `docs/backup.md`).
//!
//! - `backup --node URL --out FILE`: that node's snapshot (`GET /admin/backup`), consistent for
//!   that node.
//! - `backup --all --node URL --out FILE`: every member's snapshot, one after the other, in one
//!   file: the whole cluster, each node consistent on its own (records are there up to N times;
//!   a restore merges the copies).
//! - `backup --bucket B --node URL --out FILE`: the bucket's keys through the listing, each key
//!   read from every replica that holds it and merged as the core merges replies (a fuzzy scan,
//!   each key consistent as of its read).
//! - `restore --node URL FILE`: checks the whole file first (nothing is written if any byte
//!   is damaged), then merges each record into its key's replicas, 16 at a time.
//!
//! A backup is written to `FILE.partial`, checked whole, then renamed: a file named `FILE`
//! is always complete.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::StreamExt;
use ringkv_client::{member_url, Client, ClientConfig, Options, RoutingTable};
use ringkv_core::bucket::QuorumValue;
use ringkv_core::version::{ConflictMode, Object};
use tokio::sync::mpsc;

use super::output::{print_json, OutputArgs};
use super::{os_bytes, NodeArgs};
use crate::backup::{
    encode_end, encode_record, BackupHeader, BackupMode, BackupReader, BackupRecord,
};

/// Restores (or bucket reads) in flight at once, unless `--parallel` says.
pub const DEFAULT_PARALLEL: usize = 16;

/// `ringkv backup`.
#[derive(Clone, Debug, clap::Args)]
pub struct BackupArgs {
    /// The file to write (written as FILE.partial, checked, then renamed).
    #[arg(long)]
    pub out: PathBuf,
    /// Back up one bucket through the key listing rather than one node's store.
    #[arg(long, conflicts_with = "all")]
    pub bucket: Option<std::ffi::OsString>,
    /// Back up every member of the cluster (each node's snapshot, into one file).
    #[arg(long)]
    pub all: bool,
    /// Reads in flight at once (bucket mode).
    #[arg(long, default_value_t = DEFAULT_PARALLEL)]
    pub parallel: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `ringkv restore`.
#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// Restores in flight at once.
    #[arg(long, default_value_t = DEFAULT_PARALLEL)]
    pub parallel: usize,
    /// Write quorum of each restore (default: the bucket's w).
    #[arg(long)]
    pub w: Option<QuorumValue>,
    /// Server-side deadline per key, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Records in the file.
    pub records: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Records merged into their replicas (at W).
    pub restored: u64,
    /// Records that failed (quorum not met, refused, unreachable).
    pub failed: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Checks a whole backup file: every frame and record, the end marker and its count.
pub fn verify_file(path: &Path) -> anyhow::Result<(BackupHeader, u64)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("{} is not a usable backup", path.display()))?;
    while reader
        .next_record()
        .with_context(|| format!("{} is not a usable backup", path.display()))?
        .is_some()
    {}
    Ok((reader.header().clone(), reader.records()))
}

/// Runs `ringkv backup` and prints what it wrote.
pub async fn run_backup(args: BackupArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let summary = backup(&args).await?;
    let seconds = started.elapsed().as_secs_f64();
    if args.output.json() {
        print_json(&serde_json::json!({
            "operation": "backup",
            "file": args.out.display().to_string(),
            "records": summary.records,
            "bytes": summary.bytes,
            "seconds": seconds,
        }))?;
    } else {
        println!(
            "backed up {} record(s), {} bytes, to {} in {seconds:.2} s",
            summary.records,
            summary.bytes,
            args.out.display(),
        );
    }
    Ok(())
}

/// Takes the backup `args` ask for, writes it to `args.out` and checks it.
pub async fn backup(args: &BackupArgs) -> anyhow::Result<BackupSummary> {
    let partial = partial_path(&args.out);
    let result = async {
        if let Some(bucket) = &args.bucket {
            backup_bucket(args, &os_bytes(bucket), &partial).await
        } else if args.all {
            backup_cluster(args, &partial).await
        } else {
            let node = args.node.single()?;
            let client = args.node.client()?;
            download_node(&client, &node, &partial).await
        }
    }
    .await;
    if let Err(error) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    let (_, records) = match verify_file(&partial) {
        Ok(checked) => checked,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error.context("the backup just written does not check out"));
        }
    };
    std::fs::rename(&partial, &args.out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            args.out.display()
        )
    })?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupSummary { records, bytes })
}

/// Streams `node`'s backup into `path` as it comes.
async fn download_node(client: &Client, node: &str, path: &Path) -> anyhow::Result<()> {
    let mut download = client
        .backup_node(node)
        .await
        .with_context(|| format!("backup of {node}"))?;
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    while let Some(chunk) = download.chunk().await {
        let chunk = chunk.with_context(|| format!("backup of {node}"))?;
        out.write_all(&chunk)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let file = out
        .into_inner()
        .map_err(|error| error.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(())
}

/// The members' base URLs, as `node` describes them (removed members left out).
async fn member_urls(
    client: &Client,
    node: &str,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let status = client
        .cluster_status(Some(node))
        .await
        .with_context(|| format!("cluster status from {node}"))?;
    let source = ringkv_client::normalize_node_url(node)?;
    let mut members = Vec::new();
    for member in &status.members {
        if member.status == "removed" {
            continue;
        }
        let Some(url) = member_url(&member.http_addr, &source) else {
            bail!("member {} has no client address", member.id);
        };
        members.push((member.id.clone(), url));
    }
    Ok((status.cluster, members))
}

/// Every member's snapshot, one after the other, into one file.
async fn backup_cluster(args: &BackupArgs, path: &Path) -> anyhow::Result<()> {
    let node = args.node.single()?;
    let client = args.node.client()?;
    let (cluster, members) = member_urls(&client, &node).await?;
    let ids = members.iter().map(|(id, _)| id.clone()).collect();
    let header = BackupHeader::new(BackupMode::Cluster, &cluster, ids, now_ms());
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header.encode())?;
    let mut count = 0u64;
    for (id, url) in &members {
        let part = partial_path(&path.with_extension(format!("node-{id}")));
        let downloaded = download_node(&client, url, &part).await;
        let copied = downloaded.and_then(|()| {
            let file = File::open(&part)?;
            let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, file))?;
            while let Some(record) = reader.next_record()? {
                out.write_all(&encode_record(&record.bucket, &record.key, &record.record))?;
                count += 1;
            }
            Ok(())
        });
        let _ = std::fs::remove_file(&part);
        copied.with_context(|| format!("backup of member {id} at {url}"))?;
        eprintln!("{id}: backed up");
    }
    out.write_all(&encode_end(count))?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// The bucket's keys through the listing; each key read from every replica of it (`GET
/// /replica/...` on the owners the ring names) and the objects merged as the core merges
/// replies. A key no replica answered for fails the backup.
async fn backup_bucket(args: &BackupArgs, bucket: &[u8], path: &Path) -> anyhow::Result<()> {
    let node = args.node.single()?;
    let client = Client::new(ClientConfig {
        nodes: vec![node.clone()],
        ca_file: args.node.ca_file.clone(),
        ..ClientConfig::default()
    })?;
    let ring = client.ring().await.context("reading the ring")?;
    let source = ringkv_client::normalize_node_url(&node)?;
    let table = RoutingTable::from_doc(&ring, &source)?;
    let props = client
        .bucket_props(bucket)
        .await
        .context("reading the bucket's properties")?;
    let mode: ConflictMode = props
        .conflict_mode
        .parse()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let (cluster, _) = member_urls(&client, &node).await?;
    let mut header = BackupHeader::new(BackupMode::Bucket, &cluster, vec![node.clone()], now_ms());
    header.bucket = Some(String::from_utf8_lossy(bucket).into_owned());
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header.encode())?;
    let mut count = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .list_keys(bucket, cursor.as_deref(), Some(1_000), &Options::default())
            .await
            .context("listing the bucket")?;
        let reads = futures_util::stream::iter(page.keys)
            .map(|key| {
                let client = &client;
                let owners: Vec<String> = table
                    .replicas_for(bucket, &key)
                    .map(str::to_owned)
                    .collect();
                async move {
                    let object = read_merged(client, &owners, bucket, &key, mode).await;
                    (key, object)
                }
            })
            .buffer_unordered(args.parallel.max(1));
        let mut reads = std::pin::pin!(reads);
        while let Some((key, object)) = reads.next().await {
            let object = object
                .with_context(|| format!("reading the key {:?}", String::from_utf8_lossy(&key)))?;
            if let Some(object) = object {
                out.write_all(&encode_record(bucket, &key, &object.encode()))?;
                count += 1;
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    out.write_all(&encode_end(count))?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// The merge of what the replicas of a key hold; `None` when none holds it (deleted and reaped
/// since it was listed). Unreachable replicas are skipped; none reachable is an error.
async fn read_merged(
    client: &Client,
    owners: &[String],
    bucket: &[u8],
    key: &[u8],
    mode: ConflictMode,
) -> anyhow::Result<Option<Object>> {
    let mut merged: Option<Object> = None;
    let mut answered = 0;
    let mut last_error = None;
    for owner in owners {
        match client.replica(owner, bucket, key).await {
            Ok(Some(record)) => {
                answered += 1;
                // A damaged replica is skipped: the others hold the key.
                if let Ok(object) = Object::decode(&record) {
                    match &mut merged {
                        Some(merged) => merged.merge(&object, mode),
                        None => merged = Some(object),
                    }
                }
            }
            Ok(None) => answered += 1,
            Err(error) => last_error = Some(error),
        }
    }
    if answered == 0 {
        match last_error {
            Some(error) => return Err(error.into()),
            None => bail!("the ring names no replica"),
        }
    }
    Ok(merged)
}

/// Runs `ringkv restore`, prints the counts, and fails when any record failed.
pub async fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let summary = restore(&args).await?;
    let seconds = started.elapsed().as_secs_f64();
    if args.output.json() {
        print_json(&serde_json::json!({
            "operation": "restore",
            "file": args.file.display().to_string(),
            "restored": summary.restored,
            "failed": summary.failed,
            "seconds": seconds,
        }))?;
    } else {
        println!(
            "restored {} record(s), {} failed, in {seconds:.2} s",
            summary.restored, summary.failed,
        );
    }
    if summary.failed > 0 {
        bail!("{} record(s) were not restored", summary.failed);
    }
    Ok(())
}

/// Checks the whole file, then merges every record into its key's replicas.
pub async fn restore(args: &RestoreArgs) -> anyhow::Result<RestoreSummary> {
    let (header, records) = verify_file(&args.file)?;
    let client = args.node.client()?;
    let status = client
        .cluster_status(None)
        .await
        .context("reading the target cluster's status")?;
    eprintln!(
        "restoring {records} record(s): a {} backup of cluster {:?} ({}), into cluster {:?}",
        match header.mode {
            BackupMode::Node => "node",
            BackupMode::Bucket => "bucket",
            BackupMode::Cluster => "cluster",
        },
        header.cluster,
        header.nodes.join(", "),
        status.cluster
    );
    let options = Options {
        w: args.w,
        timeout_ms: args.timeout_ms,
        ..Options::default()
    };
    // The file is read on a blocking thread into a bounded channel: never whole in memory.
    let (sender, receiver) = mpsc::channel::<BackupRecord>(1024);
    let path = args.file.clone();
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let file = File::open(&path)?;
        let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, file))?;
        while let Some(record) = reader.next_record()? {
            if sender.blocking_send(record).is_err() {
                break;
            }
        }
        Ok(())
    });
    let records = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|record| (record, receiver))
    });
    let results = records
        .map(|record| {
            let client = &client;
            let options = &options;
            async move {
                let result = client
                    .restore(
                        &record.bucket,
                        &record.key,
                        Bytes::from(record.record),
                        options,
                    )
                    .await;
                (record.bucket, record.key, result)
            }
        })
        .buffer_unordered(args.parallel.max(1));
    let mut results = std::pin::pin!(results);
    let mut summary = RestoreSummary::default();
    while let Some((bucket, key, result)) = results.next().await {
        match result {
            Ok(_) => summary.restored += 1,
            Err(error) => {
                summary.failed += 1;
                if summary.failed <= 10 {
                    eprintln!(
                        "{}/{}: {error}",
                        String::from_utf8_lossy(&bucket),
                        String::from_utf8_lossy(&key)
                    );
                }
            }
        }
    }
    reading
        .await
        .context("the file reader stopped")?
        .context("reading the backup again")?;
    Ok(summary)
}
