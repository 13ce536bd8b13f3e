//! A consistent snapshot of every record, for a node backup.

use redb::ReadableTable;
use ringkv_core::storage::{Space, StorageKey};

use super::*;

/// What a [`Storage::snapshot`] walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Records handed to the callback.
    pub records: u64,
    /// Records skipped because their frame failed its checksum (logged and counted in
    /// `checksum_failures`, as every read of them is); the other replicas still hold them.
    pub damaged: u64,
    /// Whether the callback stopped the walk before the end.
    pub stopped: bool,
}

impl Storage {
    /// Walks every data and hint record (not the node's own metadata) in key order, from one
    /// read transaction: what it hands `each` is the store as of one commit, however long the
    /// walk takes, while writes go on (redb keeps the snapshot's pages until it ends). `each`
    /// returns false to stop. Blocks: call it from a blocking thread.
    pub fn snapshot(
        &self,
        mut each: impl FnMut(StorageKey, Vec<u8>) -> bool,
    ) -> Result<SnapshotStats, StorageError> {
        let shared = &self.inner.shared;
        let (generation, table) = {
            let guard = read_lock(&shared.db);
            let Some((generation, db)) = guard.as_ref() else {
                return Err(unavailable_error());
            };
            let table = db
                .begin_read()
                .map_err(Failure::from)
                .and_then(|txn| txn.open_table(RECORDS).map_err(Failure::from));
            match table {
                Ok(table) => (*generation, table),
                Err(failure) => {
                    if failure.reopen {
                        shared.request_reopen(*generation);
                    }
                    return Err(failure.error);
                }
            }
            // The lock is let go here: the transaction holds its snapshot on its own, and a
            // reopen after an I/O error must not wait for a long backup.
        };
        let mut stats = SnapshotStats::default();
        let walk = (|| -> Result<(), Failure> {
            for entry in table.iter()? {
                let (encoded, frame) = entry?;
                let Ok(key) = StorageKey::decode(encoded.value()) else {
                    continue;
                };
                if key.space == Space::Meta {
                    continue;
                }
                let Ok(record) = decode_frame(frame.value()) else {
                    // Logged and counted the way every read of it is.
                    shared.record_or_empty(encoded.value(), frame.value());
                    stats.damaged += 1;
                    continue;
                };
                stats.records += 1;
                if !each(key, record) {
                    stats.stopped = true;
                    break;
                }
            }
            Ok(())
        })();
        match walk {
            Ok(()) => Ok(stats),
            Err(failure) => {
                if failure.reopen {
                    shared.request_reopen(generation);
                }
                shared.metrics_failure(&failure.error);
                Err(failure.error)
            }
        }
    }
}
