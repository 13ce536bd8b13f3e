//! `/admin`: backup and restore.
//!
//! - `GET /admin/backup` streams this node's records (its replicas and the hints it holds) as a
//!   backup file ([`crate::backup`]), read from one storage read transaction while the node
//!   serves: consistent for this node. A blocking task walks the transaction and feeds a
//!   bounded channel the body drains, so the backup is never held in memory whole and a slow
//!   reader slows the walk down; a reader that stops reading for `BACKUP_STALL_TIMEOUT` ends
//!   it, so a stalled client cannot pin the read transaction (and the pages it keeps from
//!   reuse). A failure midway ends the body without its end marker, which a reader reports as
//!   a truncated backup.
//! - `PUT /admin/restore/{bucket}/{key}` with a record as its body merges it into the key's
//!   replicas ([`ClientRequest::Restore`]): 204 with the replicas that merged it, 400 for a
//!   damaged record, 503 for a quorum not met. Idempotent: a restore may be retried.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::request::{ClientRequest, MAX_RESTORE_RECORD_BYTES};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::keys::ChannelBody;
use super::kv::{parse_bucket_key, query_pairs, read_limited, reply_response, BodyProblem};
use super::*;
use crate::backup::{encode_end, encode_record, BackupHeader, BackupMode};

/// Record frames buffered between the storage walk and the response body.
const BACKUP_CHANNEL_FRAMES: usize = 256;

/// How long the walk waits for a reader that stopped reading before it gives the backup up.
const BACKUP_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Hands a frame to the response body from the (blocking) storage walk. False when the client
/// went away or stalled past [`BACKUP_STALL_TIMEOUT`]: the walk then stops and its read
/// transaction ends.
fn send_from_walk(sender: &mpsc::Sender<Bytes>, frame: Bytes) -> bool {
    let deadline = Instant::now() + BACKUP_STALL_TIMEOUT;
    let mut frame = frame;
    loop {
        match sender.try_send(frame) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "backup: the client stopped reading for {BACKUP_STALL_TIMEOUT:?}; giving up"
                    );
                    return false;
                }
                frame = back;
                // A blocking thread (the walk's), not the runtime: sleeping here is fine.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// `GET /admin/backup`.
pub(super) async fn backup(node: &NodeHandle) -> Result<Response<ResponseBody>, Problem> {
    let status = node.status().await?;
    let created_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let header = BackupHeader::new(
        BackupMode::Node,
        status.view.cluster(),
        vec![status.node.as_str().to_string()],
        created_ms,
    );
    let (sender, receiver) = mpsc::channel::<Bytes>(BACKUP_CHANNEL_FRAMES);
    // Fits: the channel is new and empty.
    let _ = sender.try_send(Bytes::from(header.encode()));
    let node = node.clone();
    tokio::spawn(async move {
        let walk_sender = sender.clone();
        let each = Box::new(
            move |key: ringkv_core::storage::StorageKey, record: Vec<u8>| {
                let frame = encode_record(&key.bucket, &key.key, &record);
                // False once the client went away or stalled: the walk stops.
                send_from_walk(&walk_sender, Bytes::from(frame))
            },
        );
        match node.snapshot(each).await {
            // A walk that was not stopped sent every record it handed over.
            Ok(stats) if !stats.stopped => {
                let count = stats.records;
                if stats.damaged > 0 {
                    tracing::warn!(
                        damaged = stats.damaged,
                        "backup: records whose frame failed its checksum were left out (the \
                         other replicas hold them)"
                    );
                }
                tracing::info!(records = count, "backup streamed");
                let _ = sender.send(Bytes::from(encode_end(count))).await;
            }
            Ok(_) => tracing::info!("backup: the client went away or stopped reading"),
            // No end marker: the reader reports the backup as truncated.
            Err(error) => tracing::error!(%error, "backup failed"),
        }
    });
    let mut response = Response::new(ChannelBody { receiver }.boxed());
    set_header(&mut response, "content-type", "application/octet-stream");
    Ok(response)
}

/// `PUT /admin/restore/{bucket}/{key}`.
pub(super) async fn restore<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    rest: &str,
) -> Result<Response<ResponseBody>, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let (bucket, key) = parse_bucket_key(rest, "/admin/restore", config.max_key_bytes)?;
    let mut options = RequestOptions::default();
    for pair in query_pairs(request.uri().query()) {
        let (name, value) = pair?;
        let quorum = |value: &str| {
            value
                .parse::<QuorumValue>()
                .map_err(|error| Problem::bad_request(format!("query parameter {name}: {error}")))
        };
        match name.as_str() {
            "w" => options.w = Some(quorum(&value)?),
            "dw" => options.dw = Some(quorum(&value)?),
            "n" => {
                options.n = Some(value.parse().map_err(|_| {
                    Problem::bad_request(format!("query parameter n: {value:?} is not a count"))
                })?)
            }
            "timeout_ms" => {
                let timeout = value
                    .parse::<u64>()
                    .ok()
                    .filter(|t| (1..=MAX_TIMEOUT_MS).contains(t));
                options.timeout_ms = Some(timeout.ok_or_else(|| {
                    Problem::bad_request(format!(
                        "query parameter timeout_ms: {value:?} is not 1 to {MAX_TIMEOUT_MS} ms"
                    ))
                })?);
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {other:?} on /admin/restore (expected w, dw, n, \
                     timeout_ms)"
                )))
            }
        }
    }
    let record = read_limited(
        request.into_body(),
        MAX_RESTORE_RECORD_BYTES,
        config.body_read_timeout,
    )
    .await
    .map_err(|problem| match problem {
        BodyProblem::TooLarge => Problem::too_large(format!(
            "the record is over the limit of {MAX_RESTORE_RECORD_BYTES} bytes"
        )),
        BodyProblem::Other(problem) => problem,
    })?;
    let reply = node
        .client(ClientRequest::Restore {
            bucket,
            key,
            record: record.to_vec(),
            options,
        })
        .await?;
    Ok(reply_response(reply).0)
}
