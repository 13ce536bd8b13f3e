//! The writer thread: batches of mutations, group commit, fsync, and reopening after an I/O error.

use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use ringkv_core::id::OpId;
use ringkv_core::storage::{BatchOp, Space, StorageError, StorageErrorKind, StorageResult};

use super::*;

pub(super) struct WriteRequest {
    pub(super) ops: Vec<BatchOp>,
    pub(super) sync: bool,
    pub(super) reply: WriteReply,
}

pub(super) enum WriteReply {
    Completion(OpId),
    /// `write_now`: the caller waits on this channel (for whether the write is durable).
    Blocking(std_mpsc::Sender<Result<bool, StorageError>>),
}

/// One key's change, ready for the table.
pub(super) struct Mutation {
    pub(super) key: Vec<u8>,
    /// The frame to store, or `None` to delete.
    pub(super) frame: Option<Vec<u8>>,
    pub(super) hint: bool,
}

impl Mutation {
    pub(super) fn bytes(&self) -> usize {
        self.key.len() + self.frame.as_ref().map_or(0, Vec::len)
    }
}

/// A write request with its frames built.
struct Prepared {
    mutations: Vec<Mutation>,
    sync: bool,
    reply: WriteReply,
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) requests: std_mpsc::Receiver<WriteRequest>,
    pub(super) opener: Opener,
    pub(super) max_batch_ops: usize,
    pub(super) flush_interval: Duration,
    pub(super) durable_commits: bool,
    /// Mutations committed without fsync since the last durable commit, in order, to apply again
    /// if the database has to be reopened (which loses them).
    pub(super) unsynced: Vec<Mutation>,
    pub(super) unsynced_bytes: usize,
    /// When the first commit not yet durable was made.
    pub(super) dirty_since: Option<Instant>,
    /// When to try again to open a database that could not be reopened.
    pub(super) next_reopen: Option<Instant>,
    /// Writes fail at once until then: the disk was full.
    pub(super) full_until: Option<Instant>,
    pub(super) generation: u64,
}

impl Writer {
    pub(super) fn run(mut self) -> Result<(), StorageError> {
        loop {
            let first = match self.requests.recv_timeout(self.next_wake()) {
                Ok(request) => request,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut weight = first.ops.len().max(1);
            let mut group = vec![self.prepare(first)];
            while weight < self.max_batch_ops {
                match self.requests.try_recv() {
                    Ok(request) => {
                        weight += request.ops.len().max(1);
                        group.push(self.prepare(request));
                    }
                    Err(_) => break,
                }
            }
            self.housekeeping();
            self.process(group);
            if self.unsynced_bytes > MAX_UNSYNCED_BYTES {
                let _ = self.flush();
            }
        }
        self.finish()
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let mut wake = self.flush_interval;
        if let Some(since) = self.dirty_since {
            wake = wake.min((since + self.flush_interval).saturating_duration_since(now));
        }
        if let Some(at) = self.next_reopen {
            wake = wake.min(at.saturating_duration_since(now));
        }
        wake
    }

    /// Reopens a database a reader found broken, or that could not be reopened before; flushes
    /// non-durable commits that are due.
    fn housekeeping(&mut self) {
        let requested = self.shared.reopen_requested.swap(0, Ordering::AcqRel);
        if requested == self.generation.saturating_add(1) {
            self.reopen();
        }
        if self.next_reopen.is_some_and(|at| Instant::now() >= at) {
            self.reopen();
        }
        if self
            .dirty_since
            .is_some_and(|since| since.elapsed() >= self.flush_interval)
        {
            let _ = self.flush();
        }
    }

    fn prepare(&self, request: WriteRequest) -> Prepared {
        let mutations = request
            .ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Put { key, record } => Mutation {
                    hint: matches!(key.space, Space::Hint { .. }),
                    frame: Some(encode_frame(&record, self.shared.compression.for_key(&key))),
                    key: key.encode(),
                },
                BatchOp::Delete { key } => Mutation {
                    hint: matches!(key.space, Space::Hint { .. }),
                    frame: None,
                    key: key.encode(),
                },
            })
            .collect();
        Prepared {
            mutations,
            sync: request.sync,
            reply: request.reply,
        }
    }

    pub(super) fn answer(&self, reply: WriteReply, result: Result<bool, StorageError>) {
        if let Err(error) = &result {
            self.shared.metrics_failure(error);
        }
        match reply {
            WriteReply::Completion(op_id) => self.shared.complete(
                op_id,
                match result {
                    Ok(synced) => StorageResult::Written { synced },
                    Err(error) => StorageResult::Failed(error),
                },
            ),
            WriteReply::Blocking(reply) => {
                let _ = reply.send(result);
            }
        }
    }

    /// The error for writes refused without trying, while the disk was full moments ago.
    fn refused_while_full(&mut self) -> Option<StorageError> {
        let until = self.full_until?;
        if Instant::now() < until {
            return Some(StorageError {
                kind: StorageErrorKind::Full,
                message: "the disk was full moments ago; write refused".to_string(),
            });
        }
        self.full_until = None;
        None
    }

    fn process(&mut self, mut group: Vec<Prepared>) {
        if let Some(error) = self.refused_while_full() {
            for prepared in group {
                self.answer(prepared.reply, Err(error.clone()));
            }
            return;
        }
        let sync = self.durable_commits || group.iter().any(|prepared| prepared.sync);
        let failure = match self.commit(&mut group, sync) {
            Ok(()) => {
                for prepared in group {
                    self.answer(prepared.reply, Ok(sync));
                }
                return;
            }
            Err(failure) => failure,
        };
        if failure.reopen {
            self.reopen();
        }
        if !failure.retry || (group.len() == 1 && !failure.reopen) {
            for prepared in group {
                self.answer(prepared.reply, Err(failure.error.clone()));
            }
            return;
        }
        // One op per transaction: a batch stays atomic, and one bad op fails alone. The full-disk
        // backoff does not apply here: a group may have failed for one op too large for the
        // space left.
        let mut io_failures = 0;
        let mut last_io_failure: Option<StorageError> = None;
        for mut prepared in group {
            if io_failures > MAX_IO_RETRY_FAILURES {
                let error = last_io_failure.clone().unwrap_or_else(unavailable_error);
                self.answer(prepared.reply, Err(error));
                continue;
            }
            let sync = self.durable_commits || prepared.sync;
            match self.commit(std::slice::from_mut(&mut prepared), sync) {
                Ok(()) => {
                    io_failures = 0;
                    self.answer(prepared.reply, Ok(sync));
                }
                Err(failure) => {
                    if failure.reopen {
                        io_failures += 1;
                        last_io_failure = Some(failure.error.clone());
                        self.reopen();
                    } else if !failure.retry {
                        // The database is unavailable or in backoff: the rest would fail alike.
                        io_failures = MAX_IO_RETRY_FAILURES + 1;
                        last_io_failure = Some(failure.error.clone());
                    }
                    self.answer(prepared.reply, Err(failure.error));
                }
            }
        }
    }

    /// Applies `group` in one transaction; on success takes their mutations (for replay) and
    /// updates the hint count.
    fn commit(&mut self, group: &mut [Prepared], sync: bool) -> Result<(), Failure> {
        let started = Instant::now();
        let applied = {
            let guard = read_lock(&self.shared.db);
            let Some((_, db)) = guard.as_ref() else {
                return Err(Failure::final_error(unavailable_error()));
            };
            apply(db, group.iter().flat_map(|p| &p.mutations), sync)
        };
        let hint_delta = match applied {
            Ok(delta) => delta,
            Err(failure) => {
                if failure.error.kind == StorageErrorKind::Full {
                    self.full_until = Some(Instant::now() + FULL_BACKOFF);
                }
                tracing::warn!(error = %failure.error, ops = group.len(), "storage commit failed");
                return Err(failure);
            }
        };
        let metrics = &self.shared.metrics;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.commit_batch.observe(group.len() as f64);
        self.shared.add_hints(hint_delta);
        if sync {
            self.made_durable();
        } else {
            self.dirty_since.get_or_insert_with(Instant::now);
            for prepared in group.iter_mut() {
                for mutation in prepared.mutations.drain(..) {
                    self.unsynced_bytes += mutation.bytes();
                    self.unsynced.push(mutation);
                }
            }
        }
        Ok(())
    }

    fn made_durable(&mut self) {
        self.unsynced.clear();
        self.unsynced_bytes = 0;
        self.dirty_since = None;
    }

    /// Makes every commit so far durable.
    pub(super) fn flush(&mut self) -> Result<(), StorageError> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        let result = {
            let guard = read_lock(&self.shared.db);
            match guard.as_ref() {
                Some((_, db)) => durable_empty_commit(db),
                // Reopening (retried on its own schedule) will apply the writes again.
                None => return Err(unavailable_error()),
            }
        };
        match result {
            Ok(()) => {
                self.made_durable();
                Ok(())
            }
            Err(failure) => {
                tracing::warn!(error = %failure.error, "storage flush failed");
                // Reopening applies the non-durable writes again (durably) when it can.
                if failure.reopen && self.reopen() && self.dirty_since.is_none() {
                    return Ok(());
                }
                Err(failure.error)
            }
        }
    }

    /// Closes and opens the database again, applying the non-durable writes again. Returns
    /// whether a database is open afterwards.
    pub(super) fn reopen(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        let mut slot = write_lock(&shared.db);
        // Close first: the file lock allows one open handle.
        slot.take();
        self.generation += 1;
        let (mut db, mut hints) = match self.open_again() {
            Some(opened) => opened,
            None => return false,
        };
        if !self.unsynced.is_empty() {
            match apply(&db, self.unsynced.iter(), true) {
                Ok(_) => {
                    tracing::info!(
                        writes = self.unsynced.len(),
                        "non-durable writes applied again after reopening the database"
                    );
                    match count_hints(&db) {
                        Ok(count) => hints = count,
                        Err(failure) => {
                            tracing::warn!(error = %failure.error, "cannot count hints")
                        }
                    }
                }
                Err(failure) => {
                    tracing::warn!(
                        error = %failure.error,
                        lost = self.unsynced.len(),
                        "non-durable writes could not be applied again after reopening: lost"
                    );
                    self.made_durable();
                    // The failed commit poisoned this handle too.
                    drop(db);
                    (db, hints) = match self.open_again() {
                        Some(opened) => opened,
                        None => return false,
                    };
                }
            }
        }
        self.made_durable();
        self.shared.set_hints(hints);
        *slot = Some((self.generation, db));
        true
    }

    /// Opens the database (the old handle must be closed); on failure schedules a retry.
    fn open_again(&mut self) -> Option<(Database, u64)> {
        match open_database(&self.opener, &self.shared.metrics) {
            Ok(opened) => {
                self.next_reopen = None;
                tracing::info!(db = %self.shared.path.display(), "database reopened");
                Some(opened)
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    db = %self.shared.path.display(),
                    "cannot reopen the database; reads and writes fail until it can be"
                );
                self.next_reopen = Some(Instant::now() + REOPEN_RETRY);
                None
            }
        }
    }

    fn finish(mut self) -> Result<(), StorageError> {
        let closed = read_lock(&self.shared.db).is_none();
        if closed {
            self.reopen();
        }
        self.flush()
    }
}

/// Applies mutations in one write transaction with the given durability; returns the change in
/// the number of hints. On error nothing is applied (the transaction is dropped, hence aborted).
pub(super) fn apply<'m>(
    db: &Database,
    mutations: impl Iterator<Item = &'m Mutation>,
    sync: bool,
) -> Result<i64, Failure> {
    let mut txn = db.begin_write()?;
    txn.set_durability(if sync {
        Durability::Immediate
    } else {
        Durability::None
    });
    let mut hint_delta = 0i64;
    {
        let mut table = txn.open_table(RECORDS)?;
        for mutation in mutations {
            // The transaction sees its own earlier writes, so a key put twice counts once.
            let existed = match &mutation.frame {
                Some(frame) => table
                    .insert(mutation.key.as_slice(), frame.as_slice())?
                    .is_some(),
                None => table.remove(mutation.key.as_slice())?.is_some(),
            };
            if mutation.hint {
                match (&mutation.frame, existed) {
                    (Some(_), false) => hint_delta += 1,
                    (None, true) => hint_delta -= 1,
                    _ => {}
                }
            }
        }
    }
    txn.commit()?;
    Ok(hint_delta)
}

fn durable_empty_commit(db: &Database) -> Result<(), Failure> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    txn.commit()?;
    Ok(())
}
