//! Errors: how an I/O or redb error is classified, and what it does to the store.

use std::fmt;
use std::io;
use std::path::Path;

use redb::DatabaseError;
use ringkv_core::storage::{StorageError, StorageErrorKind};

use super::*;

/// Whether an I/O error means the disk (or the user's quota) is full.
pub(super) fn is_disk_full(error: &io::Error) -> bool {
    error.raw_os_error() == Some(ENOSPC)
        || matches!(
            error.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        )
}

/// The kind core is told for an I/O error.
fn error_kind_of(error: &io::Error) -> StorageErrorKind {
    if is_disk_full(error) {
        StorageErrorKind::Full
    } else {
        StorageErrorKind::Io
    }
}

/// A failed storage operation, with what the writer should do about it.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) error: StorageError,
    /// The database refuses everything after this error until it is reopened.
    pub(super) reopen: bool,
    /// Retrying the ops of a failed group one by one may let some through.
    pub(super) retry: bool,
    /// redb found a damaged page.
    pub(super) corrupted: bool,
}

impl Failure {
    pub(super) fn from_redb(error: &redb::Error) -> Failure {
        let (kind, reopen, retry) = match error {
            redb::Error::Io(io_error) => (error_kind_of(io_error), true, true),
            // A previous I/O error (or a panic inside redb) poisoned the database handle.
            redb::Error::PreviousIo | redb::Error::LockPoisoned(_) => {
                (StorageErrorKind::Io, true, true)
            }
            // One op's fault (a value over redb's 3 GiB limit): the others may pass alone.
            redb::Error::ValueTooLarge(_) => (StorageErrorKind::Io, false, true),
            // A damaged page: redb keeps serving the other pages, reopening would not help.
            _ => (StorageErrorKind::Io, false, false),
        };
        Failure {
            error: StorageError {
                kind,
                message: error.to_string(),
            },
            reopen,
            retry,
            corrupted: matches!(error, redb::Error::Corrupted(_)),
        }
    }

    pub(super) fn final_error(error: StorageError) -> Failure {
        Failure {
            error,
            reopen: false,
            retry: false,
            corrupted: false,
        }
    }
}

/// `?` on any redb error gives a [`Failure`] (redb's own error type is too large to pass
/// around by value).
macro_rules! failure_from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for Failure {
            fn from(error: $error) -> Failure {
                Failure::from_redb(&redb::Error::from(error))
            }
        }
    )*};
}

failure_from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError
);

/// Why the database file could not be opened (and prepared).
#[derive(Debug)]
pub(super) enum OpenFailure {
    Database(DatabaseError),
    Prepare(Failure),
    /// redb panicked opening the file.
    Panicked(String),
}

impl OpenFailure {
    pub(super) fn into_open_error(self, path: &Path) -> StorageOpenError {
        let path = path.to_path_buf();
        match self {
            OpenFailure::Database(DatabaseError::DatabaseAlreadyOpen) => {
                StorageOpenError::Locked { path }
            }
            OpenFailure::Database(DatabaseError::Storage(redb::StorageError::Corrupted(
                message,
            ))) => StorageOpenError::Corrupt { path, message },
            OpenFailure::Panicked(message) => StorageOpenError::Corrupt {
                path,
                message: format!("redb panicked opening it: {message}"),
            },
            OpenFailure::Prepare(failure) if failure.corrupted => StorageOpenError::Corrupt {
                path,
                message: failure.error.message,
            },
            // What redb reports for a file that is not a redb database (a bad magic number), or
            // one cut short.
            OpenFailure::Database(DatabaseError::Storage(redb::StorageError::Io(error)))
                if matches!(
                    error.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                StorageOpenError::Corrupt {
                    path,
                    message: error.to_string(),
                }
            }
            OpenFailure::Database(error) => StorageOpenError::Io {
                path,
                message: error.to_string(),
            },
            OpenFailure::Prepare(failure) => StorageOpenError::Io {
                path,
                message: failure.error.message,
            },
        }
    }
}

impl fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenFailure::Database(error) => error.fmt(f),
            OpenFailure::Prepare(failure) => failure.error.message.fmt(f),
            OpenFailure::Panicked(message) => write!(f, "redb panicked: {message}"),
        }
    }
}
