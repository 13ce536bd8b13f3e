//! The reader threads: point reads and scans in read-only transactions.

use std::ops::Bound;
use std::sync::Arc;

use ringkv_core::id::OpId;

use ringkv_core::storage::{ScanRange, StorageKey, StorageResult};

use super::*;

pub(super) struct ReadRequest {
    pub(super) op_id: OpId,
    pub(super) kind: ReadKind,
}

pub(super) enum ReadKind {
    Get {
        key: StorageKey,
    },
    Scan {
        range: ScanRange,
        after: Option<StorageKey>,
        limit: usize,
    },
}

pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) requests: crossbeam_channel::Receiver<ReadRequest>,
    /// [`StorageConfig::max_scan_bytes`].
    pub(super) max_scan_bytes: usize,
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl Reader {
    pub(super) fn run(self) {
        loop {
            let batch = {
                let requests = &self.requests;
                let Ok(first) = requests.recv() else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < READS_PER_TRANSACTION {
                    match requests.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                batch
            };
            self.serve(batch);
        }
    }

    /// Serves reads in one read transaction (a snapshot taken after they were all queued).
    pub(super) fn serve(&self, batch: Vec<ReadRequest>) {
        let shared = &self.shared;
        let guard = read_lock(&shared.db);
        let Some((generation, db)) = guard.as_ref() else {
            drop(guard);
            for request in batch {
                shared.complete_failed(request.op_id, unavailable_error());
            }
            return;
        };
        let table = db
            .begin_read()
            .map_err(Failure::from)
            .and_then(|txn| txn.open_table(RECORDS).map_err(Failure::from));
        let table = match table {
            Ok(table) => table,
            Err(error) => {
                let generation = *generation;
                drop(guard);
                self.fail_all(batch, &error, generation);
                return;
            }
        };
        for request in batch {
            let result = match &request.kind {
                ReadKind::Get { key } => self.get(&table, key),
                ReadKind::Scan {
                    range,
                    after,
                    limit,
                } => self.scan(&table, range, after.as_ref(), *limit),
            };
            match result {
                Ok(result) => shared.complete(request.op_id, result),
                Err(failure) => {
                    if failure.reopen {
                        shared.request_reopen(*generation);
                    }
                    shared.complete_failed(request.op_id, failure.error);
                }
            }
        }
    }

    fn fail_all(&self, batch: Vec<ReadRequest>, failure: &Failure, generation: u64) {
        if failure.reopen {
            self.shared.request_reopen(generation);
        }
        for request in batch {
            self.shared
                .complete_failed(request.op_id, failure.error.clone());
        }
    }

    pub(super) fn get(
        &self,
        table: &ReadTable,
        key: &StorageKey,
    ) -> Result<StorageResult, Failure> {
        let encoded = key.encode();
        let found = table.get(encoded.as_slice())?;
        Ok(StorageResult::Record(found.map(|frame| {
            self.shared.record_or_empty(&encoded, frame.value())
        })))
    }

    pub(super) fn scan(
        &self,
        table: &ReadTable,
        range: &ScanRange,
        after: Option<&StorageKey>,
        limit: usize,
    ) -> Result<StorageResult, Failure> {
        // Every key of a range shares a prefix of its encoding, and `start()` is its smallest
        // key, so the range is one run of the table from `start()`.
        let start = range.start().encode();
        let after = after.map(StorageKey::encode);
        let lower = match &after {
            Some(after) if after.as_slice() >= start.as_slice() => {
                Bound::Excluded(after.as_slice())
            }
            _ => Bound::Included(start.as_slice()),
        };
        let mut items = Vec::with_capacity(limit.min(1024));
        let mut bytes = 0usize;
        let mut done = true;
        for entry in table.range::<&[u8]>((lower, Bound::Unbounded))? {
            let (encoded, frame) = entry?;
            let key = match StorageKey::decode(encoded.value()) {
                Ok(key) => key,
                Err(_) => {
                    tracing::warn!(key = ?encoded.value(), "undecodable storage key skipped");
                    continue;
                }
            };
            if !range.contains(&key) {
                break;
            }
            // A page ends at `limit` records, or before the record that would take it past
            // `max_scan_bytes` (a page always has one record, however large: the caller resumes
            // after the last record it got).
            let size = encoded.value().len() + frame.value().len();
            if items.len() >= limit
                || (!items.is_empty() && bytes.saturating_add(size) > self.max_scan_bytes)
            {
                done = false;
                break;
            }
            bytes = bytes.saturating_add(size);
            let record = self.shared.record_or_empty(encoded.value(), frame.value());
            items.push((key, record));
        }
        Ok(StorageResult::Scanned { items, done })
    }
}
