use super::failure::is_disk_full;
use super::frame::FrameError;
use super::writer::{apply, Mutation};
use super::*;
use redb::DatabaseError;
use ringkv_core::id::NodeId;
use ringkv_core::ring::PartitionId;
use ringkv_core::storage::ScanRange;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const BLOCK: u64 = 4096;

/// Switches for [`FaultyBackend`].
#[derive(Debug)]
pub(crate) struct Faults {
    /// The disk is full: like a file system that overwrites in place (ext4, xfs), writes
    /// into blocks written before succeed, writes needing a new block fail with ENOSPC.
    pub full: AtomicBool,
    /// Writes containing these bytes fail with ENOSPC (one op too big for the space left).
    pub poison: Mutex<Option<Vec<u8>>>,
    /// The next this many writes fail with EIO.
    pub fail_writes: AtomicUsize,
    /// Every fsync fails with ENOSPC (after the pages were written: the commit may be on
    /// disk, as with a file system that allocates at writeback).
    pub fail_syncs_full: AtomicBool,
    /// Held by a test to stop the writer thread inside a write.
    pub gate: Mutex<()>,
    /// Bytes read from the file so far (pages redb did not find in its cache).
    pub read_bytes: AtomicUsize,
    /// Blocks of the file written so far (allocated on disk).
    written: Mutex<std::collections::HashSet<u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            full: AtomicBool::new(false),
            poison: Mutex::new(None),
            fail_writes: AtomicUsize::new(0),
            fail_syncs_full: AtomicBool::new(false),
            gate: Mutex::new(()),
            read_bytes: AtomicUsize::new(0),
            written: Mutex::new(std::collections::HashSet::new()),
        }
    }
}

/// A file backend whose writes fail with ENOSPC on demand (a full disk without a tmpfs).
#[derive(Debug)]
pub(crate) struct FaultyBackend {
    pub file: redb::backends::FileBackend,
    pub faults: Arc<Faults>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(ENOSPC)
}

impl redb::StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.faults.read_bytes.fetch_add(len, Ordering::SeqCst);
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        // Growing a file leaves a hole: no block is allocated until it is written.
        self.file.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        if self.faults.fail_syncs_full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.file.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        drop(lock(&self.faults.gate));
        let failing = self.faults.fail_writes.load(Ordering::SeqCst);
        if failing > 0 {
            self.faults.fail_writes.store(failing - 1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(5));
        }
        if let Some(poison) = lock(&self.faults.poison).as_deref() {
            if data.windows(poison.len()).any(|window| window == poison) {
                return Err(enospc());
            }
        }
        let blocks = offset / BLOCK..(offset + data.len() as u64).div_ceil(BLOCK);
        let mut written = lock(&self.faults.written);
        if self.faults.full.load(Ordering::SeqCst)
            && blocks.clone().any(|block| !written.contains(&block))
        {
            return Err(enospc());
        }
        self.file.write(offset, data)?;
        written.extend(blocks);
        Ok(())
    }
}

struct Harness {
    storage: Storage,
    completions: UnboundedReceiver<(OpId, StorageResult)>,
    metrics: Arc<Metrics>,
    next_op: u64,
}

impl Harness {
    fn open(config: StorageConfig) -> Harness {
        let metrics = Arc::new(Metrics::new());
        let (tx, completions) = unbounded_channel();
        let storage = Storage::open(config, Arc::clone(&metrics), tx).unwrap();
        Harness {
            storage,
            completions,
            metrics,
            next_op: 0,
        }
    }

    fn open_faulty(config: StorageConfig, faults: Arc<Faults>) -> Harness {
        let metrics = Arc::new(Metrics::new());
        let (tx, completions) = unbounded_channel();
        std::fs::create_dir_all(&config.path).unwrap();
        let opener = Opener {
            backend: Backend::Faulty {
                path: config.path.join(DB_FILE_NAME),
                faults,
            },
            cache_bytes: config.cache_bytes,
        };
        let storage = Storage::open_with(config, opener, Arc::clone(&metrics), tx).unwrap();
        Harness {
            storage,
            completions,
            metrics,
            next_op: 0,
        }
    }

    fn run(&mut self, op: StorageOp) -> StorageResult {
        self.next_op += 1;
        let id = OpId(self.next_op);
        self.storage.submit(id, op);
        let (got, result) = self.completions.blocking_recv().unwrap();
        assert_eq!(got, id);
        result
    }

    fn put(&mut self, key: &StorageKey, record: &[u8], sync: bool) -> StorageResult {
        self.run(StorageOp::Put {
            key: key.clone(),
            record: record.to_vec(),
            sync,
        })
    }

    fn get(&mut self, key: &StorageKey) -> Option<Vec<u8>> {
        match self.run(StorageOp::Get { key: key.clone() }) {
            StorageResult::Record(record) => record,
            other => panic!("get answered {other:?}"),
        }
    }

    fn scan(
        &mut self,
        range: ScanRange,
        after: Option<StorageKey>,
        limit: usize,
    ) -> (Vec<(StorageKey, Vec<u8>)>, bool) {
        match self.run(StorageOp::Scan {
            range,
            after,
            limit,
        }) {
            StorageResult::Scanned { items, done } => (items, done),
            other => panic!("scan answered {other:?}"),
        }
    }

    fn failures(&self, reason: &str) -> u64 {
        self.metrics
            .storage_failures
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.to_string(),
            })
            .get()
    }
}

/// Commits without fsync unless asked, so the tests see both kinds of commit.
fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        durable_commits: false,
        ..StorageConfig::new(dir.join("data"))
    }
}

fn data(partition: u32, key: &str) -> StorageKey {
    StorageKey::data(PartitionId(partition), b"b", key.as_bytes())
}

fn hint(owner: &str, partition: u32, key: &str) -> StorageKey {
    data(partition, key).in_space(Space::Hint {
        owner: NodeId::new(owner),
    })
}

const WRITTEN: StorageResult = StorageResult::Written { synced: false };
const SYNCED: StorageResult = StorageResult::Written { synced: true };

/// Opens the database file directly (the storage must be shut down).
fn raw_db(dir: &Path) -> Database {
    Database::create(dir.join("data").join(DB_FILE_NAME)).unwrap()
}

fn raw_frame(db: &Database, key: &StorageKey) -> Option<Vec<u8>> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(RECORDS).unwrap();
    let found = table.get(key.encode().as_slice()).unwrap();
    found.map(|frame| frame.value().to_vec())
}

fn raw_put(db: &Database, key: &StorageKey, frame: &[u8]) {
    let txn = db.begin_write().unwrap();
    txn.open_table(RECORDS)
        .unwrap()
        .insert(key.encode().as_slice(), frame)
        .unwrap();
    txn.commit().unwrap();
}

/// The records a crash now would leave: a copy of the file, opened (and repaired) apart.
fn durable_copy_get(dir: &Path, key: &StorageKey) -> Option<Vec<u8>> {
    let copy = dir.join("crash-copy.redb");
    std::fs::copy(dir.join("data").join(DB_FILE_NAME), &copy).unwrap();
    let db = Database::create(&copy).unwrap();
    let frame = raw_frame(&db, key);
    drop(db);
    std::fs::remove_file(&copy).unwrap();
    frame.map(|frame| decode_frame(&frame).unwrap())
}

#[test]
fn frames_round_trip_with_and_without_compression() {
    let compressible = b"abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(20);
    for record in [Vec::new(), b"x".to_vec(), compressible.clone()] {
        for compression in [Compression::None, Compression::Lz4] {
            let frame = encode_frame(&record, compression);
            assert_eq!(frame[0], FRAME_FORMAT_V1);
            assert_eq!(decode_frame(&frame).unwrap(), record);
        }
    }
    let frame = encode_frame(&compressible, Compression::Lz4);
    assert_eq!(frame[1], COMPRESSION_LZ4);
    assert!(frame.len() < compressible.len() / 4);
    // Compression that does not help is not kept.
    assert_eq!(encode_frame(b"xyz", Compression::Lz4)[1], COMPRESSION_NONE);
}

#[test]
fn damaged_frames_are_rejected() {
    assert_eq!(decode_frame(&[1, 0, 0]), Err(FrameError::Short(3)));
    let mut frame = encode_frame(b"hello", Compression::None);
    frame[0] = 9;
    assert_eq!(decode_frame(&frame), Err(FrameError::UnknownFormat(9)));
    let mut frame = encode_frame(b"hello", Compression::None);
    frame[1] = 7;
    assert_eq!(decode_frame(&frame), Err(FrameError::UnknownCompression(7)));
    let mut frame = encode_frame(b"hello", Compression::None);
    frame[7] ^= 1;
    assert!(matches!(
        decode_frame(&frame),
        Err(FrameError::Checksum { .. })
    ));
    // A size prefix claiming 4 GiB is refused before anything is allocated.
    let mut frame = encode_frame(&b"ab".repeat(100), Compression::Lz4);
    frame[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_frame(&frame),
        Err(FrameError::Decompress(_))
    ));
}

#[test]
fn checksum_is_checked_after_decompression() {
    // A well-formed lz4 payload of one record under the checksum of another.
    let record = b"one record one record one record one record".repeat(8);
    let other = b"another record another record another".repeat(8);
    let mut frame = encode_frame(&record, Compression::Lz4);
    assert_eq!(frame[1], COMPRESSION_LZ4);
    frame[2..6].copy_from_slice(&crc32fast::hash(&other).to_le_bytes());
    assert!(matches!(
        decode_frame(&frame),
        Err(FrameError::Checksum { .. })
    ));
}

#[test]
fn no_flipped_bit_of_a_compressed_frame_gives_a_wrong_record_or_a_panic() {
    let record = b"0123456789 repeated text repeated text repeated text".repeat(10);
    let frame = encode_frame(&record, Compression::Lz4);
    for index in 0..frame.len() {
        for bit in [0x01u8, 0x80] {
            let mut damaged = frame.clone();
            damaged[index] ^= bit;
            // A flip may leave the output unchanged (an lz4 match offset pointing at an
            // identical run): then the record is right. Never a wrong one.
            if let Ok(decoded) = decode_frame(&damaged) {
                assert_eq!(decoded, record, "flip at {index} went unnoticed");
            }
        }
    }
}

#[test]
fn disk_full_errors_map_to_full() {
    assert!(is_disk_full(&io::Error::from_raw_os_error(ENOSPC)));
    assert!(is_disk_full(&io::Error::from(io::ErrorKind::StorageFull)));
    assert!(!is_disk_full(&io::Error::from_raw_os_error(5))); // EIO
    assert!(!is_disk_full(&io::Error::other("x")));
    let full = Failure::from_redb(&redb::Error::Io(io::Error::from_raw_os_error(ENOSPC)));
    assert_eq!(full.error.kind, StorageErrorKind::Full);
    assert!(full.reopen);
    let eio = Failure::from_redb(&redb::Error::Io(io::Error::from_raw_os_error(5)));
    assert_eq!(eio.error.kind, StorageErrorKind::Io);
    assert!(eio.reopen);
    let previous = Failure::from_redb(&redb::Error::PreviousIo);
    assert_eq!(previous.error.kind, StorageErrorKind::Io);
    assert!(previous.reopen);
    let corrupt = Failure::from_redb(&redb::Error::Corrupted("bad page".into()));
    assert!(!corrupt.reopen && !corrupt.retry);
    let too_large = Failure::from_redb(&redb::Error::ValueTooLarge(1 << 33));
    assert!(!too_large.reopen && too_large.retry);
}

#[test]
fn compression_names_parse() {
    assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4);
    assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
    assert!("zstd".parse::<Compression>().is_err());
    #[derive(Deserialize)]
    struct Doc {
        compression: Compression,
    }
    let doc: Doc = toml::from_str("compression = \"lz4\"").unwrap();
    assert_eq!(doc.compression, Compression::Lz4);
    let policy =
        CompressionPolicy::uniform(Compression::Lz4).with_bucket(b"raw", Compression::None);
    assert_eq!(policy.for_key(&data(0, "k")), Compression::Lz4);
    assert_eq!(
        policy.for_key(&StorageKey::data(PartitionId(0), b"raw", b"k")),
        Compression::None
    );
    assert_eq!(policy.for_key(&StorageKey::view()), Compression::None);
}

#[test]
fn put_get_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::open(config(dir.path()));
    let key = data(3, "k");
    assert_eq!(h.get(&key), None);
    assert_eq!(h.put(&key, b"v1", false), WRITTEN);
    assert_eq!(h.get(&key), Some(b"v1".to_vec()));
    assert_eq!(h.put(&key, b"v2", false), WRITTEN);
    assert_eq!(h.get(&key), Some(b"v2".to_vec()));
    assert_eq!(h.get(&data(3, "other")), None);
    assert_eq!(h.run(StorageOp::Delete { key: key.clone() }), WRITTEN);
    assert_eq!(h.get(&key), None);
    // Deleting what is absent is not an error.
    assert_eq!(h.run(StorageOp::Delete { key: key.clone() }), WRITTEN);
    h.storage.shutdown().unwrap();
}

#[test]
fn sync_writes_report_synced_and_are_durable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_interval = Duration::from_secs(3600);
    let mut h = Harness::open(cfg);
    let (lazy, durable) = (data(1, "lazy"), data(1, "durable"));
    assert_eq!(h.put(&lazy, b"l", false), WRITTEN);
    // A Durability::None commit is visible to reads but not yet in the file's commit slot.
    assert_eq!(h.get(&lazy), Some(b"l".to_vec()));
    assert_eq!(durable_copy_get(dir.path(), &lazy), None);
    assert_eq!(h.put(&durable, b"d", true), SYNCED);
    // The immediate commit made the earlier non-durable one durable too.
    assert_eq!(durable_copy_get(dir.path(), &durable), Some(b"d".to_vec()));
    assert_eq!(durable_copy_get(dir.path(), &lazy), Some(b"l".to_vec()));
    let batch = StorageOp::Batch {
        ops: vec![BatchOp::Delete { key: lazy.clone() }],
        sync: true,
    };
    assert_eq!(h.run(batch), SYNCED);
    h.storage.shutdown().unwrap();
}

#[test]
fn durable_commits_make_every_write_durable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.durable_commits = true;
    cfg.flush_interval = Duration::from_secs(3600);
    let mut h = Harness::open(cfg);
    let key = data(1, "lazy");
    assert_eq!(h.put(&key, b"l", false), SYNCED);
    assert_eq!(durable_copy_get(dir.path(), &key), Some(b"l".to_vec()));
    h.storage.shutdown().unwrap();
}

#[test]
fn non_durable_writes_are_flushed_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_interval = Duration::from_millis(20);
    let mut h = Harness::open(cfg);
    let key = data(1, "k");
    assert_eq!(h.put(&key, b"v", false), WRITTEN);
    let deadline = Instant::now() + Duration::from_secs(10);
    while durable_copy_get(dir.path(), &key).is_none() {
        assert!(Instant::now() < deadline, "never flushed");
        std::thread::sleep(Duration::from_millis(20));
    }
    h.storage.shutdown().unwrap();
}

#[test]
fn batch_applies_all_its_ops() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::open(config(dir.path()));
    let (a, b, c) = (data(1, "a"), data(1, "b"), data(2, "c"));
    assert_eq!(h.put(&c, b"old", false), WRITTEN);
    let batch = StorageOp::Batch {
        ops: vec![
            BatchOp::Put {
                key: a.clone(),
                record: b"1".to_vec(),
            },
            BatchOp::Put {
                key: b.clone(),
                record: b"2".to_vec(),
            },
            BatchOp::Put {
                key: a.clone(),
                record: b"3".to_vec(),
            },
            BatchOp::Delete { key: c.clone() },
        ],
        sync: false,
    };
    assert_eq!(h.run(batch), WRITTEN);
    assert_eq!(h.get(&a), Some(b"3".to_vec()));
    assert_eq!(h.get(&b), Some(b"2".to_vec()));
    assert_eq!(h.get(&c), None);
    h.storage.shutdown().unwrap();
}

#[test]
fn redb_refuses_everything_after_an_io_error_until_reopened() {
    // What the reopen logic is built on (redb 2.6): after one failed write, the handle
    // answers PreviousIo; a fresh open repairs back to the last durable commit.
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let opener = Opener {
        backend: Backend::Faulty {
            path: dir.path().join("x.redb"),
            faults: Arc::clone(&faults),
        },
        cache_bytes: DEFAULT_CACHE_BYTES,
    };
    let (db, _) = open_database(&opener, &Metrics::new()).unwrap();
    let put = |value: &[u8]| Mutation {
        key: b"k".to_vec(),
        frame: Some(value.to_vec()),
        hint: false,
    };
    apply(&db, [&put(b"old")].into_iter(), true).unwrap();
    faults.full.store(true, Ordering::SeqCst);
    let failure = apply(&db, [&put(b"new")].into_iter(), true).unwrap_err();
    assert_eq!(failure.error.kind, StorageErrorKind::Full);
    assert!(failure.reopen);
    assert!(matches!(
        db.begin_write().map(|_| ()).unwrap_err(),
        redb::TransactionError::Storage(redb::StorageError::PreviousIo)
    ));
    // A second handle cannot be opened while the first holds the file lock.
    assert!(matches!(
        opener.open().map(|_| ()).unwrap_err(),
        DatabaseError::DatabaseAlreadyOpen
    ));
    drop(db);
    // Still full: the repair only rewrites blocks already on disk, so it succeeds.
    let (db, _) = open_database(&opener, &Metrics::new()).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(RECORDS).unwrap();
    let frame = table.get(b"k".as_slice()).unwrap().unwrap();
    assert_eq!(frame.value(), b"old");
}

#[test]
fn a_failed_batch_applies_nothing_and_a_full_disk_is_reported_as_full() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut h = Harness::open_faulty(config(dir.path()), Arc::clone(&faults));
    let a = data(1, "a");
    assert_eq!(h.put(&a, b"old", true), SYNCED);
    assert_eq!(h.put(&hint("n1", 1, "h"), b"h", true), SYNCED);
    faults.full.store(true, Ordering::SeqCst);
    let batch = StorageOp::Batch {
        ops: vec![
            BatchOp::Put {
                key: a.clone(),
                record: b"new".to_vec(),
            },
            BatchOp::Put {
                key: data(1, "c"),
                record: b"c".to_vec(),
            },
            BatchOp::Delete {
                key: hint("n1", 1, "h"),
            },
        ],
        sync: true,
    };
    match h.run(batch) {
        StorageResult::Failed(error) => assert_eq!(error.kind, StorageErrorKind::Full),
        other => panic!("batch on a full disk answered {other:?}"),
    }
    assert!(h.failures("full") >= 1);
    assert_eq!(h.failures("io"), 0);
    // Reads still work (the database was reopened) and see nothing of the batch.
    assert_eq!(h.get(&a), Some(b"old".to_vec()));
    assert_eq!(h.get(&data(1, "c")), None);
    assert_eq!(h.storage.hints_pending(), 1);
    // While the disk is full, writes fail (at once during the backoff).
    assert!(
        matches!(h.put(&a, b"x", false), StorageResult::Failed(e) if e.kind == StorageErrorKind::Full)
    );
    // Once there is space again, writes succeed (after the backoff).
    faults.full.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match h.put(&a, b"later", true) {
            StorageResult::Written { synced: true } => break,
            StorageResult::Failed(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("write after the disk emptied answered {other:?}"),
        }
    }
    assert_eq!(h.get(&a), Some(b"later".to_vec()));
    h.storage.shutdown().unwrap();
    drop(h);
    let mut h = Harness::open(config(dir.path()));
    assert_eq!(h.get(&a), Some(b"later".to_vec()));
    assert_eq!(h.get(&data(1, "c")), None);
}

#[test]
fn a_failed_fsync_on_a_full_disk_is_not_reported_as_full() {
    // The pages are written, the fsync fails with ENOSPC: the commit may be on disk, so the
    // answer must not be `Full` (507, "nothing was written") but an ordinary failure.
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let opener = Opener {
        backend: Backend::Faulty {
            path: dir.path().join("x.redb"),
            faults: Arc::clone(&faults),
        },
        cache_bytes: DEFAULT_CACHE_BYTES,
    };
    let (db, _) = open_database(&opener, &Metrics::new()).unwrap();
    let put = Mutation {
        key: b"k".to_vec(),
        frame: Some(b"v".to_vec()),
        hint: false,
    };
    faults.fail_syncs_full.store(true, Ordering::SeqCst);
    let failure = apply(&db, [&put].into_iter(), true).unwrap_err();
    assert_eq!(
        failure.error.kind,
        StorageErrorKind::Io,
        "{:?}",
        failure.error
    );
    assert!(failure.reopen);
    drop(db);

    faults.fail_syncs_full.store(false, Ordering::SeqCst);
    let mut h = Harness::open_faulty(config(dir.path()), Arc::clone(&faults));
    faults.fail_syncs_full.store(true, Ordering::SeqCst);
    match h.put(&data(1, "a"), b"x", true) {
        StorageResult::Failed(error) => assert_eq!(error.kind, StorageErrorKind::Io),
        other => panic!("write with a failing fsync answered {other:?}"),
    }
    assert_eq!(h.failures("full"), 0);
    assert!(h.failures("io") >= 1);
    faults.fail_syncs_full.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match h.put(&data(1, "a"), b"y", true) {
            StorageResult::Written { synced: true } => break,
            StorageResult::Failed(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("write after the fsync recovered answered {other:?}"),
        }
    }
    h.storage.shutdown().unwrap();
}

#[test]
fn non_durable_writes_survive_a_reopen_after_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_interval = Duration::from_secs(3600);
    let faults = Arc::new(Faults::default());
    let mut h = Harness::open_faulty(cfg, Arc::clone(&faults));
    let (a, b, lazy_hint) = (data(1, "a"), data(1, "b"), hint("n2", 3, "h"));
    assert_eq!(h.put(&a, b"old", true), SYNCED);
    assert_eq!(h.put(&b, b"lazy", false), WRITTEN);
    assert_eq!(h.put(&lazy_hint, b"hint", false), WRITTEN);
    // One write fails with EIO: the commit fails, the database is reopened (which loses
    // the non-durable commits), they are applied again, and the op is retried.
    faults.fail_writes.store(1, Ordering::SeqCst);
    assert_eq!(h.put(&a, b"new", true), SYNCED);
    assert_eq!(faults.fail_writes.load(Ordering::SeqCst), 0);
    assert_eq!(h.get(&a), Some(b"new".to_vec()));
    assert_eq!(h.get(&b), Some(b"lazy".to_vec()));
    assert_eq!(h.storage.hints_pending(), 1);
    assert_eq!(h.failures("io"), 0);
    h.storage.shutdown().unwrap();
    drop(h);
    let mut h = Harness::open(config(dir.path()));
    assert_eq!(h.get(&b), Some(b"lazy".to_vec()));
    assert_eq!(h.get(&lazy_hint), Some(b"hint".to_vec()));
}

#[test]
fn one_bad_op_in_a_group_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut h = Harness::open_faulty(config(dir.path()), Arc::clone(&faults));
    // Whatever page holds this record cannot be written.
    let poison = b"this record does not fit on the disk".to_vec();
    *lock(&faults.poison) = Some(poison.clone());
    let (before, too_big, after) = (data(1, "before"), data(1, "too big"), data(1, "after"));
    // Hold the writer inside the write of a first op, so the next three queue up and are
    // taken together.
    let gate = lock(&faults.gate);
    h.storage.submit(
        OpId(99),
        StorageOp::Put {
            key: data(1, "first"),
            record: b"0".to_vec(),
            sync: true,
        },
    );
    let ops = [
        (before.clone(), b"1".to_vec()),
        (too_big.clone(), poison),
        (after.clone(), b"3".to_vec()),
    ];
    for (i, (key, record)) in ops.into_iter().enumerate() {
        let op = StorageOp::Put {
            key,
            record,
            sync: true,
        };
        h.storage.submit(OpId(100 + i as u64), op);
    }
    drop(gate);
    let mut results = HashMap::new();
    for _ in 0..4 {
        let (id, result) = h.completions.blocking_recv().unwrap();
        results.insert(id.0, result);
    }
    assert_eq!(results[&99], SYNCED);
    assert_eq!(results[&100], SYNCED);
    assert!(matches!(&results[&101], StorageResult::Failed(e) if e.kind == StorageErrorKind::Full));
    assert_eq!(results[&102], SYNCED);
    assert_eq!(h.get(&before), Some(b"1".to_vec()));
    assert_eq!(h.get(&too_big), None);
    assert_eq!(h.get(&after), Some(b"3".to_vec()));
    h.storage.shutdown().unwrap();
}

mod memory;
mod reading_and_recovery;
