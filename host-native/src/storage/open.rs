//! Opening: the database file, its rollback and damage detection, quarantine and must-rejoin.

use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redb::{Database, DatabaseError};
use ringkv_core::storage::{ScanRange, StorageKey};

use super::*;
use crate::metrics::Metrics;

/// Renames a damaged database file to `<name>.damaged-<unix ms>` beside it (never over an
/// existing file) and makes the rename durable. Kept, not deleted: it may hold the only copy of
/// something, and it is evidence of what went wrong.
pub(super) fn quarantine(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    let mut name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the database path has no file name"))?
        .to_os_string();
    name.push(format!(".damaged-{millis}"));
    let aside = path.with_file_name(name);
    if aside.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", aside.display()),
        ));
    }
    // The marker is durable before the file moves: a crash in between leaves the damaged file
    // in place (moved aside again at the next start) or a marker with no view, never an empty
    // store that could be mistaken for a new node's.
    write_must_rejoin(dir, &aside)?;
    std::fs::rename(path, &aside)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(aside)
}

/// Durably writes the [`MUST_REJOIN_FILE_NAME`] marker naming `aside` (file and folder synced).
fn write_must_rejoin(dir: &Path, aside: &Path) -> io::Result<()> {
    use std::io::Write as _;
    let marker = dir.join(MUST_REJOIN_FILE_NAME);
    let temporary = dir.join(format!("{MUST_REJOIN_FILE_NAME}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    writeln!(
        file,
        "the damaged database was moved to {}; this node lost its cluster view and must \
         rejoin through --seed",
        aside.display()
    )?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &marker)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The content of the [`MUST_REJOIN_FILE_NAME`] marker in `dir`, if there is one.
pub fn must_rejoin(dir: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(dir.join(MUST_REJOIN_FILE_NAME)) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Removes the [`MUST_REJOIN_FILE_NAME`] marker from `dir` (durably; no marker is fine).
pub fn clear_must_rejoin(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(MUST_REJOIN_FILE_NAME)) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// A storage backend whose failed fsync is never reported as a full disk. A page write failing
/// with `ENOSPC` happens before the commit is complete (the reopen's repair goes back to the
/// last durable commit), so `Full` (HTTP 507, "nothing was written") is true of it; after a
/// failed fsync the commit may still be on disk, so its `ENOSPC` must be an ordinary I/O failure
/// (outcome unknown), not a `Full` that lets a client send the write elsewhere.
#[derive(Debug)]
struct SyncFailureIsAmbiguous<B>(B);

impl<B: redb::StorageBackend> redb::StorageBackend for SyncFailureIsAmbiguous<B> {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.0.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        self.0.sync_data(eventual).map_err(|error| {
            io::Error::other(format!(
                "fsync failed, the commit may or may not be on disk: {error}"
            ))
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write(offset, data)
    }
}

/// How the database file is opened: where, through which backend (tests use a fault-injecting
/// one), and with how much page cache.
pub(super) struct Opener {
    pub(super) backend: Backend,
    /// redb's page cache in bytes ([`StorageConfig::cache_bytes`]).
    pub(super) cache_bytes: usize,
}

/// The file a database is opened from.
pub(super) enum Backend {
    File(PathBuf),
    #[cfg(test)]
    Faulty {
        path: PathBuf,
        faults: Arc<tests::Faults>,
    },
}

impl Opener {
    pub(super) fn path(&self) -> &Path {
        match &self.backend {
            Backend::File(path) => path,
            #[cfg(test)]
            Backend::Faulty { path, .. } => path,
        }
    }

    /// Opens the file; also says whether redb's crash recovery found the newest commit damaged
    /// (its page checksums wrong: a torn last write) and went back to the commit before it.
    pub(super) fn open(&self) -> Result<(Database, bool), DatabaseError> {
        let rolled_back = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut builder = redb::Builder::new();
        // redb's default is 1 GiB, and it is no bound in practice: pages read or written stay
        // cached until the cache is full, so a node's memory grew with its data up to that.
        builder.set_cache_size(self.cache_bytes);
        {
            let rolled_back = Arc::clone(&rolled_back);
            // redb 2.6 reports recovery progress 0.0, 0.6 and 0.9 in every recovery, and 0.3 only
            // after it found the newest commit damaged, before rolling it back.
            builder.set_repair_callback(move |session| {
                if (0.2..0.4).contains(&session.progress()) {
                    rolled_back.store(true, Ordering::Release);
                }
            });
        }
        let db = self.open_with(&builder)?;
        Ok((db, rolled_back.load(Ordering::Acquire)))
    }

    pub(super) fn open_with(&self, builder: &redb::Builder) -> Result<Database, DatabaseError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path())?;
        match &self.backend {
            Backend::File(_) => builder.create_with_backend(SyncFailureIsAmbiguous(
                redb::backends::FileBackend::new(file)?,
            )),
            #[cfg(test)]
            Backend::Faulty { faults, .. } => {
                builder.create_with_backend(SyncFailureIsAmbiguous(tests::FaultyBackend {
                    file: redb::backends::FileBackend::new(file)?,
                    faults: Arc::clone(faults),
                }))
            }
        }
    }
}

/// Opens the database, creates the table if it is new and counts the hints. A newest commit
/// that redb's recovery found damaged and rolled back is logged and counted in
/// `stores_rolled_back`: this replica lost those writes, and anti-entropy and read repair bring
/// them back from the others.
pub(super) fn open_database(
    opener: &Opener,
    metrics: &Metrics,
) -> Result<(Database, u64), OpenFailure> {
    // redb 2.6 asserts on some damage instead of returning an error: a file shorter than its
    // header says (a torn tail) panics in its page manager. That is a damaged file, not a bug
    // of ours, and must not kill the node (or the writer thread, on a reopen). Unwinding drops
    // redb's half-built handle, which closes the file and its lock.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        open_database_unguarded(opener, metrics)
    }))
    .unwrap_or_else(|panic| Err(OpenFailure::Panicked(panic_message(panic.as_ref()))))
}

fn open_database_unguarded(
    opener: &Opener,
    metrics: &Metrics,
) -> Result<(Database, u64), OpenFailure> {
    let (db, rolled_back) = opener.open().map_err(OpenFailure::Database)?;
    if rolled_back {
        metrics.stores_rolled_back.inc();
        tracing::error!(
            db = %opener.path().display(),
            "the newest commit of the database was damaged (a torn write): redb went back to the \
             commit before it, so this replica lost those writes; anti-entropy and read repair \
             restore them from the other replicas"
        );
    }
    let prepared = (|| -> Result<u64, Failure> {
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.commit()?;
        count_hints(&db)
    })();
    match prepared {
        Ok(hints) => Ok((db, hints)),
        Err(error) => Err(OpenFailure::Prepare(error)),
    }
}

pub(super) fn count_hints(db: &Database) -> Result<u64, Failure> {
    let txn = db.begin_read()?;
    let table = txn.open_table(RECORDS)?;
    let start = ScanRange::Hints.start().encode();
    let mut count = 0;
    for entry in table.range::<&[u8]>((Bound::Included(start.as_slice()), Bound::Unbounded))? {
        let (key, _) = entry?;
        match StorageKey::decode(key.value()) {
            Ok(key) if ScanRange::Hints.contains(&key) => count += 1,
            // Past the hints (keys sort by space first).
            Ok(_) => break,
            Err(_) => continue,
        }
    }
    Ok(count)
}
