//! Disk storage for the node's storage effects: one [redb](https://docs.rs/redb) database file in
//! the data directory, one table mapping [`StorageKey::encode`] bytes to framed records.
//!
//! Why redb rather than fjall: one file and no background compaction; an ACID write transaction
//! maps 1:1 onto a core `Batch` (and several queued ops onto one group commit); durability is
//! chosen per commit, which maps onto the op's `sync`; commits are crash safe (copy-on-write
//! B-tree, checksummed pages and commit slots); the dependency tree is small. The cost: each
//! commit copies a leaf-to-root path of 4 KiB pages, so for large write-heavy data sets fjall's
//! LSM tree would win on write amplification and throughput; and redb's recovery after a crash
//! (or an I/O error, below) walks the whole file, so it grows with the data set.
//!
//! # Threads
//!
//! - One writer thread (a plain `std::thread`) drains the write queue and applies up to
//!   [`StorageConfig::max_batch_ops`] writes in one transaction (a group commit). The commit is
//!   `Durability::Immediate` (fsynced) when any op of the group asked `sync`, else
//!   `Durability::None`; every [`StorageConfig::flush_interval`], and at shutdown, an empty
//!   immediate commit makes the non-durable ones durable. If a group's transaction fails, its
//!   ops are retried one per transaction, so one bad op does not fail the others.
//! - Reader threads serve `Get` and `Scan` in read transactions, which never wait for a commit's
//!   fsync. A read submitted after a write's completion was sent sees that write (the commit
//!   returned before the completion was sent, and a later read transaction sees every finished
//!   commit, durable or not).
//!
//! # Record frame
//!
//! Each stored value is `format (1) | compression (1) | crc32 of the uncompressed record (4, LE) |
//! payload`, the payload being the record or its `lz4_flex::compress_prepend_size` form. A frame
//! that fails to decode or to match its checksum is logged, counted in `checksum_failures`, and
//! handed to core as an empty record, which core's decoder rejects (so the replica is treated as
//! missing and repaired). Damaged bytes are never returned.
//!
//! # I/O errors and a full disk
//!
//! After an I/O error, redb's handle refuses every further write and every read of a page not in
//! its cache (`PreviousIo`) until the database is closed and opened again (tested below with a
//! fault-injecting backend). So the writer reopens the database after such an error; opening
//! runs redb's repair, which goes back to the last durable commit. A failed commit is therefore
//! not applied: a full disk shows as `ENOSPC` on a page write, before the commit is complete.
//! (A failed *fsync* stays ambiguous, as in any database: the commit may survive the reopen. So
//! an `ENOSPC` from fsync is reported as `Io`, never `Full`: `Full`, HTTP 507, tells the client
//! nothing was written.)
//! Writes committed without fsync since the last durable commit (answered `synced: false`) are
//! kept in memory and applied again after the reopen; if that fails too they are lost, as in a
//! crash, and a warning says how many. After a `Full` failure, new writes fail at once for
//! [`FULL_BACKOFF`], so a full disk does not turn every write into a repair of the whole file.
//! Reads wait while the file is reopened, may fail with `Io` if in flight when the error
//! happened, and fail with `Io` while it cannot be reopened (retried every second).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, TableDefinition};
use ringkv_core::id::OpId;
use ringkv_core::storage::{
    BatchOp, Space, StorageError, StorageErrorKind, StorageKey, StorageOp, StorageResult,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

mod failure;
mod frame;
#[cfg(test)]
mod frame_properties;
mod open;
mod reader;
mod snapshot;
#[cfg(test)]
mod tests;
mod writer;

use self::failure::{Failure, OpenFailure};
pub(crate) use self::frame::{decode_frame, decompress_lz4, encode_frame};
pub use self::open::{clear_must_rejoin, must_rejoin};
use self::open::{count_hints, open_database, quarantine, Backend, Opener};
use self::reader::{ReadKind, ReadRequest, Reader};
pub use self::snapshot::SnapshotStats;
use self::writer::{WriteReply, WriteRequest, Writer};

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "ringkv.redb";
/// The marker [`Storage::open`] leaves in the data directory when it moves a damaged database
/// aside: the node lost its persisted view, so it must rejoin its cluster through seeds and may
/// not found a new one. It names the file moved aside; the server removes it once the node has
/// joined and persisted its view.
pub const MUST_REJOIN_FILE_NAME: &str = "must-rejoin";

/// redb's page cache unless configured ([`StorageConfig::cache_bytes`]): 64 MiB, against redb's
/// own default of 1 GiB. See the README's configuration section for the measurements.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Bytes of records in one scan page unless configured ([`StorageConfig::max_scan_bytes`]).
pub const DEFAULT_MAX_SCAN_BYTES: usize = 1 << 20;

/// How long writes fail at once after the disk was found full, before it is tried again.
pub const FULL_BACKOFF: Duration = Duration::from_secs(1);

/// The one table: encoded storage key to record frame.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// The frame layout this module writes (and the only one it reads).
const FRAME_FORMAT_V1: u8 = 1;
/// Format byte, compression byte, crc32.
const FRAME_HEADER_LEN: usize = 6;
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_LZ4: u8 = 1;
/// LZ4 cannot expand data by more than about 255:1, so a frame that claims more is damaged
/// (and must not make us allocate what it claims).
const LZ4_MAX_RATIO: usize = 255;

/// `ENOSPC`, the same on Linux and macOS (the `libc` crate is not a dependency of ours).
const ENOSPC: i32 = 28;

/// Reads served in one read transaction, at most.
const READS_PER_TRANSACTION: usize = 64;
/// Bytes of non-durable writes kept for replay before an early flush makes them durable.
const MAX_UNSYNCED_BYTES: usize = 64 << 20;
/// How often a database that could not be reopened is tried again.
const REOPEN_RETRY: Duration = Duration::from_secs(1);
/// After this many failed retries in a row (each one reopening the database), the rest of a
/// failed group is answered with the last error instead of being tried.
const MAX_IO_RETRY_FAILURES: usize = 1;

/// What [`Storage::open`] does with a database file it finds damaged (redb reports it
/// corrupted, or panics opening it). The default is the server's policy (`Quarantine`, which
/// the server applies only when it has seeds to rejoin through); [`StorageConfig::new`], which
/// cannot know that, asks for `Refuse`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDamagedStore {
    /// Fail to open ([`StorageOpenError::Corrupt`]); the file stays where it is.
    Refuse,
    /// Rename the file to `ringkv.redb.damaged-<unix ms>` (never delete it), count it in
    /// `stores_quarantined`, log an error and start with an empty database. Only safe where the
    /// records have other replicas to be refilled from, and where a restart may not reuse a
    /// version-vector actor of the old file (the server's incarnation guarantees that).
    #[default]
    Quarantine,
}

impl FromStr for OnDamagedStore {
    type Err = String;

    fn from_str(name: &str) -> Result<OnDamagedStore, String> {
        match name {
            "refuse" => Ok(OnDamagedStore::Refuse),
            "quarantine" => Ok(OnDamagedStore::Quarantine),
            other => Err(format!(
                "unknown damaged-store policy {other:?} (expected refuse or quarantine)"
            )),
        }
    }
}

/// How records of a bucket are compressed on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as they are.
    #[default]
    None,
    /// LZ4 block compression (kept only when it makes the record smaller).
    Lz4,
}

/// A compression name that is neither `none` nor `lz4`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?} (expected \"none\" or \"lz4\")")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(name: &str) -> Result<Compression, UnknownCompression> {
        match name {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            other => Err(UnknownCompression(other.to_string())),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
        })
    }
}

/// Which compression each bucket's records get. Only data and hint records are compressed; the
/// node's own metadata never is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompressionPolicy {
    /// For buckets not listed.
    pub default: Compression,
    /// Per bucket name.
    pub buckets: HashMap<Vec<u8>, Compression>,
}

impl CompressionPolicy {
    /// The same compression for every bucket.
    pub fn uniform(compression: Compression) -> CompressionPolicy {
        CompressionPolicy {
            default: compression,
            buckets: HashMap::new(),
        }
    }

    /// This policy with `bucket` set to `compression`.
    pub fn with_bucket(mut self, bucket: &[u8], compression: Compression) -> CompressionPolicy {
        self.buckets.insert(bucket.to_vec(), compression);
        self
    }

    /// The compression of a record stored under `key`.
    pub fn for_key(&self, key: &StorageKey) -> Compression {
        match key.space {
            Space::Meta => Compression::None,
            Space::Data | Space::Hint { .. } => self
                .buckets
                .get(&key.bucket)
                .copied()
                .unwrap_or(self.default),
        }
    }
}

/// Where and how the store keeps its records.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// The data directory (created if missing); the database file [`DB_FILE_NAME`] is inside.
    pub path: PathBuf,
    /// Compression per bucket.
    pub compression: CompressionPolicy,
    /// Writes (a batch counts its ops) applied in one group commit, at most.
    pub max_batch_ops: usize,
    /// How often writes committed without fsync are made durable.
    pub flush_interval: Duration,
    /// Threads serving reads (at least one).
    pub reader_threads: usize,
    /// Fsync every group commit, also when no op asked for it (then every write is answered
    /// `synced`). Measured here, a durable group commit cost no throughput, while commits without
    /// fsync made the periodic flush a latency stall of tens of milliseconds (see the issue
    /// note); turn it off for disks whose fsync is slow.
    pub durable_commits: bool,
    /// What to do if the database file is damaged when it is opened.
    pub on_damaged: OnDamagedStore,
    /// redb's page cache, in bytes ([`DEFAULT_CACHE_BYTES`] by default): nine tenths cache
    /// pages read (and pages written, once committed), one tenth buffers a transaction's dirty
    /// pages. It fills up with whatever was last read or written and is never given back, so it
    /// is the node's largest memory consumer; the OS page cache still caches the file beyond it.
    pub cache_bytes: usize,
    /// Bytes of records in one scan page, at most ([`DEFAULT_MAX_SCAN_BYTES`] by default); a
    /// page holds at least one record, however large. The node scans in pages of up to a few
    /// hundred records (Merkle tree builds, partition transfers, hint and orphan scans), and
    /// each page is held in memory whole, several at once: with values of megabytes, a page of
    /// records was hundreds of megabytes, and a transfer chunk over the peer frame limit (64
    /// MiB) was never delivered. The core resumes a page cut short after its last record.
    pub max_scan_bytes: usize,
}

impl StorageConfig {
    /// The defaults for a data directory: no compression, 512 ops per group commit, a flush
    /// every 200 ms, two reader threads, a [`DEFAULT_CACHE_BYTES`] page cache.
    pub fn new(path: impl Into<PathBuf>) -> StorageConfig {
        StorageConfig {
            path: path.into(),
            compression: CompressionPolicy::default(),
            max_batch_ops: 512,
            flush_interval: Duration::from_millis(200),
            reader_threads: 2,
            durable_commits: true,
            // Not the default policy: storage alone does not know whether the records can be
            // refilled from other replicas (the server decides, see `OnDamagedStore`).
            on_damaged: OnDamagedStore::Refuse,
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_scan_bytes: DEFAULT_MAX_SCAN_BYTES,
        }
    }
}

/// Why [`Storage::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageOpenError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `Storage` in this one) has the database open.
    #[error("the database {path} is locked by another process")]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file is not a readable ringkv database.
    #[error("the database {path} is corrupt: {message}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// Any other failure to open (I/O error, full disk, incompatible file format).
    #[error("cannot open the database {path}: {message}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file was damaged and could not be moved aside (`OnDamagedStore::Quarantine`).
    #[error("the database {path} is corrupt and could not be moved aside: {source}")]
    Quarantine {
        /// The database file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A storage thread could not be started.
    #[error("cannot start a storage thread: {0}")]
    Thread(#[source] io::Error),
}

/// The record store of one node. Cheap to clone; the last clone dropped shuts it down.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` once shut down. Senders are behind a lock so that shutdown cannot race a submit:
    /// every op sent before the sender is dropped is still answered.
    writes: RwLock<Option<std_mpsc::Sender<WriteRequest>>>,
    reads: RwLock<Option<crossbeam_channel::Sender<ReadRequest>>>,
    threads: Mutex<Threads>,
}

#[derive(Default)]
struct Threads {
    writer: Option<JoinHandle<Result<(), StorageError>>>,
    readers: Vec<JoinHandle<()>>,
}

/// What the threads share.
struct Shared {
    /// The open database with its generation (bumped at each reopen); `None` while it cannot be
    /// opened, and after shutdown.
    db: RwLock<Option<(u64, Database)>>,
    /// A generation a reader found broken (`PreviousIo`), plus one; 0 when none.
    reopen_requested: AtomicU64,
    hints: AtomicU64,
    metrics: Arc<Metrics>,
    completions: UnboundedSender<(OpId, StorageResult)>,
    compression: CompressionPolicy,
    path: PathBuf,
}

/// Locks even if a thread panicked while holding the lock: the protected values stay valid.
fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn shut_down_error() -> StorageError {
    StorageError {
        kind: StorageErrorKind::Io,
        message: "storage is shut down".to_string(),
    }
}

fn unavailable_error() -> StorageError {
    StorageError {
        kind: StorageErrorKind::Io,
        message: "the database is not open (it could not be reopened after an I/O error)"
            .to_string(),
    }
}

impl Storage {
    /// Opens (or creates) the database in `config.path` and starts the writer and reader
    /// threads. Results of [`Storage::submit`] are sent on `completions`.
    pub fn open(
        config: StorageConfig,
        metrics: Arc<Metrics>,
        completions: UnboundedSender<(OpId, StorageResult)>,
    ) -> Result<Storage, StorageOpenError> {
        std::fs::create_dir_all(&config.path).map_err(|source| StorageOpenError::CreateDir {
            path: config.path.clone(),
            source,
        })?;
        let file = config.path.join(DB_FILE_NAME);
        metrics.set_storage_file(file.clone());
        let opened = Storage::open_with(
            config.clone(),
            Opener {
                backend: Backend::File(file.clone()),
                cache_bytes: config.cache_bytes,
            },
            Arc::clone(&metrics),
            completions.clone(),
        );
        match opened {
            Err(StorageOpenError::Corrupt { path, message })
                if config.on_damaged == OnDamagedStore::Quarantine =>
            {
                let aside = quarantine(&config.path, &path)
                    .map_err(|source| StorageOpenError::Quarantine { path, source })?;
                tracing::error!(
                    db = %file.display(),
                    moved_to = %aside.display(),
                    damage = %message,
                    "the database is damaged: moved aside, starting with an empty store that \
                     anti-entropy and read repair refill from the other replicas"
                );
                metrics.stores_quarantined.inc();
                let opener = Opener {
                    backend: Backend::File(file),
                    cache_bytes: config.cache_bytes,
                };
                Storage::open_with(config, opener, metrics, completions)
            }
            other => other,
        }
    }

    fn open_with(
        config: StorageConfig,
        opener: Opener,
        metrics: Arc<Metrics>,
        completions: UnboundedSender<(OpId, StorageResult)>,
    ) -> Result<Storage, StorageOpenError> {
        let path = opener.path().to_path_buf();
        let (db, hints) =
            open_database(&opener, &metrics).map_err(|error| error.into_open_error(&path))?;
        metrics.hints_pending.set(gauge_value(hints));
        let shared = Arc::new(Shared {
            db: RwLock::new(Some((0, db))),
            reopen_requested: AtomicU64::new(0),
            hints: AtomicU64::new(hints),
            metrics,
            completions,
            compression: config.compression.clone(),
            path,
        });
        let (write_tx, write_rx) = std_mpsc::channel();
        // Many readers take from one queue: crossbeam's channel lets them wait on it without a
        // mutex (a shared `Mutex<Receiver>` showed up as contended futex waits under GET load).
        let (read_tx, read_rx) = crossbeam_channel::unbounded();
        let mut threads = Threads::default();
        let writer = Writer {
            shared: Arc::clone(&shared),
            requests: write_rx,
            opener,
            max_batch_ops: config.max_batch_ops.max(1),
            flush_interval: config.flush_interval,
            durable_commits: config.durable_commits,
            unsynced: Vec::new(),
            unsynced_bytes: 0,
            dirty_since: None,
            next_reopen: None,
            full_until: None,
            generation: 0,
        };
        // If the writer cannot start, dropping `shared` closes the database; if a reader cannot,
        // the threads already running are stopped by a shutdown.
        let spawned = std::thread::Builder::new()
            .name("ringkv-storage-writer".to_string())
            .spawn(move || writer.run());
        match spawned {
            Ok(handle) => threads.writer = Some(handle),
            Err(error) => return Err(StorageOpenError::Thread(error)),
        }
        for index in 0..config.reader_threads.max(1) {
            let reader = Reader {
                shared: Arc::clone(&shared),
                requests: read_rx.clone(),
                max_scan_bytes: config.max_scan_bytes,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("ringkv-storage-reader-{index}"))
                .spawn(move || reader.run());
            match spawned {
                Ok(handle) => threads.readers.push(handle),
                Err(error) => {
                    let storage = Storage::assemble(shared, write_tx, read_tx, threads);
                    let _ = storage.shutdown();
                    return Err(StorageOpenError::Thread(error));
                }
            }
        }
        Ok(Storage::assemble(shared, write_tx, read_tx, threads))
    }

    fn assemble(
        shared: Arc<Shared>,
        writes: std_mpsc::Sender<WriteRequest>,
        reads: crossbeam_channel::Sender<ReadRequest>,
        threads: Threads,
    ) -> Storage {
        Storage {
            inner: Arc::new(Inner {
                shared,
                writes: RwLock::new(Some(writes)),
                reads: RwLock::new(Some(reads)),
                threads: Mutex::new(threads),
            }),
        }
    }

    /// Queues an operation; its result arrives on the completions channel. Never blocks (fit
    /// for an async task). After shutdown the op is answered at once with an `Io` failure.
    pub fn submit(&self, op_id: OpId, op: StorageOp) {
        let sent = match op {
            StorageOp::Get { key } => self.send_read(op_id, ReadKind::Get { key }),
            StorageOp::Scan {
                range,
                after,
                limit,
            } => self.send_read(
                op_id,
                ReadKind::Scan {
                    range,
                    after,
                    limit,
                },
            ),
            StorageOp::Put { key, record, sync } => {
                self.send_write(op_id, vec![BatchOp::Put { key, record }], sync)
            }
            StorageOp::Delete { key } => {
                self.send_write(op_id, vec![BatchOp::Delete { key }], false)
            }
            StorageOp::Batch { ops, sync } => self.send_write(op_id, ops, sync),
        };
        if !sent {
            self.inner.shared.complete_failed(op_id, shut_down_error());
        }
    }

    /// Queues a read; false once shut down.
    fn send_read(&self, op_id: OpId, kind: ReadKind) -> bool {
        read_lock(&self.inner.reads)
            .as_ref()
            .is_some_and(|reads| reads.send(ReadRequest { op_id, kind }).is_ok())
    }

    /// Queues a write; false once shut down.
    fn send_write(&self, op_id: OpId, ops: Vec<BatchOp>, sync: bool) -> bool {
        let request = WriteRequest {
            ops,
            sync,
            reply: WriteReply::Completion(op_id),
        };
        read_lock(&self.inner.writes)
            .as_ref()
            .is_some_and(|writes| writes.send(request).is_ok())
    }

    /// Reads one record now, on the calling thread (for startup, before the node runs). A damaged
    /// record reads as `Some(vec![])`, as it does through [`Storage::submit`].
    pub fn read_now(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StorageError> {
        let shared = &self.inner.shared;
        let guard = read_lock(&shared.db);
        let Some((generation, db)) = guard.as_ref() else {
            let shut_down = read_lock(&self.inner.writes).is_none();
            return Err(if shut_down {
                shut_down_error()
            } else {
                unavailable_error()
            });
        };
        let result = (|| -> Result<Option<Vec<u8>>, Failure> {
            let txn = db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            let encoded = key.encode();
            let found = table.get(encoded.as_slice())?;
            Ok(found.map(|frame| shared.record_or_empty(&encoded, frame.value())))
        })();
        result.map_err(|failure| {
            if failure.reopen {
                shared.request_reopen(*generation);
            }
            shared.metrics_failure(&failure.error);
            failure.error
        })
    }

    /// Writes one record durably and waits for it (for startup, before the node runs).
    pub fn write_now(&self, key: &StorageKey, record: Vec<u8>) -> Result<(), StorageError> {
        let (reply_tx, reply_rx) = std_mpsc::channel();
        let request = WriteRequest {
            ops: vec![BatchOp::Put {
                key: key.clone(),
                record,
            }],
            sync: true,
            reply: WriteReply::Blocking(reply_tx),
        };
        let sent = read_lock(&self.inner.writes)
            .as_ref()
            .is_some_and(|tx| tx.send(request).is_ok());
        if !sent {
            return Err(shut_down_error());
        }
        match reply_rx.recv() {
            Ok(result) => result.map(|_synced| ()),
            Err(_) => Err(shut_down_error()),
        }
    }

    /// Whether the database is open: false once shut down, or after an I/O error it could not
    /// be reopened from (every op fails until then).
    pub fn is_open(&self) -> bool {
        read_lock(&self.inner.shared.db).is_some()
    }

    /// Records in the hint space (hints held for other nodes), kept current by every write.
    pub fn hints_pending(&self) -> u64 {
        self.inner.shared.hints.load(Ordering::Acquire)
    }

    /// Answers every queued op, makes every write durable, stops the threads and closes the
    /// database file (so it can be opened again). Idempotent; later submits fail with `Io`.
    /// Returns the error of the final flush, if any.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        self.inner.shutdown()
    }
}

impl Inner {
    fn shutdown(&self) -> Result<(), StorageError> {
        // Held throughout, so a concurrent second call returns only once the first is done.
        let mut threads = lock(&self.threads);
        // Dropping the senders lets each thread drain its queue, then see the channel closed.
        write_lock(&self.writes).take();
        write_lock(&self.reads).take();
        let mut result = Ok(());
        for reader in threads.readers.drain(..) {
            if reader.join().is_err() {
                result = Err(thread_panicked("reader"));
            }
        }
        if let Some(writer) = threads.writer.take() {
            match writer.join() {
                Ok(flushed) => result = result.and(flushed),
                Err(_) => result = Err(thread_panicked("writer")),
            }
        }
        write_lock(&self.shared.db).take();
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "storage did not shut down cleanly");
        }
    }
}

fn thread_panicked(which: &str) -> StorageError {
    StorageError {
        kind: StorageErrorKind::Io,
        message: format!("the storage {which} thread panicked"),
    }
}

fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Shared {
    fn complete(&self, op_id: OpId, result: StorageResult) {
        // The node task is gone at shutdown: nobody waits for the answer any more.
        let _ = self.completions.send((op_id, result));
    }

    fn complete_failed(&self, op_id: OpId, error: StorageError) {
        self.metrics_failure(&error);
        self.complete(op_id, StorageResult::Failed(error));
    }

    fn metrics_failure(&self, error: &StorageError) {
        let reason = match error.kind {
            StorageErrorKind::Full => "full",
            StorageErrorKind::Io => "io",
            _ => "other",
        };
        Metrics::count(&self.metrics.storage_failures, reason);
    }

    fn request_reopen(&self, generation: u64) {
        self.reopen_requested
            .store(generation.saturating_add(1), Ordering::Release);
    }

    /// The record in a stored frame, or an empty record (which core rejects as damaged).
    fn record_or_empty(&self, encoded_key: &[u8], frame: &[u8]) -> Vec<u8> {
        match decode_frame(frame) {
            Ok(record) => record,
            Err(error) => {
                self.metrics.checksum_failures.inc();
                match StorageKey::decode(encoded_key) {
                    Ok(key) => tracing::warn!(
                        db = %self.path.display(),
                        space = ?key.space,
                        partition = key.partition.0,
                        bucket = %String::from_utf8_lossy(&key.bucket),
                        key = %String::from_utf8_lossy(&key.key),
                        %error,
                        "damaged record frame: handed to the node as an empty record"
                    ),
                    Err(_) => tracing::warn!(
                        db = %self.path.display(),
                        key = ?encoded_key,
                        %error,
                        "damaged record frame under an undecodable key"
                    ),
                }
                Vec::new()
            }
        }
    }

    fn set_hints(&self, count: u64) {
        self.hints.store(count, Ordering::Release);
        self.metrics.hints_pending.set(gauge_value(count));
    }

    fn add_hints(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        // Only the writer thread changes the count, so load-then-store does not lose updates.
        let current = self.hints.load(Ordering::Acquire);
        let updated = if delta > 0 {
            current.saturating_add(delta.unsigned_abs())
        } else {
            current.saturating_sub(delta.unsigned_abs())
        };
        self.set_hints(updated);
    }
}
