//! The request/reply vocabulary: what a client asks of a node ([`ClientRequest`]), what it gets
//! back ([`Reply`]), and the one check every request passes before any work is done
//! ([`ClientRequest::check`]), shared by the node and the bindings so that they refuse the same
//! requests with the same errors.
//!
//! Peer messages carry requests and replies (a forwarded write), so this module sits below
//! [`crate::wire`] and [`crate::io`].

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::bucket::{check_ttl, BucketProps, Quorums, RequestOptions, WriteCondition};
use crate::error::RequestError;
use crate::id::NodeId;
use crate::listing::{ListCursor, MAX_LIST_LIMIT};
use crate::version::{Context, Dot};

/// Largest key accepted, in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest bucket name accepted, in bytes.
pub const DEFAULT_MAX_BUCKET_BYTES: usize = 1024;
/// Largest value accepted, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8 * 1024 * 1024;

/// Largest record a restore carries, in bytes: half of what a peer message may carry
/// (`wire::MAX_FRAME_BYTES`), leaving room for the message around it.
pub const MAX_RESTORE_RECORD_BYTES: usize = 32 * 1024 * 1024;

/// The size limits a node applies to client requests (see
/// [`NodeConfig::request_limits`](crate::config::NodeConfig::request_limits)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLimits {
    /// Largest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest bucket name accepted, in bytes.
    pub max_bucket_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_bucket_bytes: DEFAULT_MAX_BUCKET_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// What a client asks of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key: all its siblings and one context.
    Get {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Quorum and timeout overrides.
        options: RequestOptions,
    },
    /// Write a value. It replaces exactly the siblings `context` has seen; with an empty context it
    /// adds a sibling.
    Put {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Context from an earlier get (or put), or empty.
        context: Context,
        /// The value.
        value: Vec<u8>,
        /// Quorum and timeout overrides.
        options: RequestOptions,
    },
    /// Delete: a put of a tombstone superseding what `context` has seen. The context is
    /// required ([`RequestError::DeleteWithoutContext`]): without one it would delete nothing.
    Delete {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Context from an earlier get of this key (not empty).
        context: Context,
        /// Quorum and timeout overrides.
        options: RequestOptions,
    },
    /// A page of a bucket's keys (live ones: deleted and expired keys are not listed): one
    /// live replica per partition is asked, in ring order, from `cursor`. A scan for admin
    /// and export, eventually consistent: a key written moments ago may be missing.
    List {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Where to resume (the previous page's cursor); `None` from the start.
        cursor: Option<ListCursor>,
        /// Keys the page holds at most: 1 to [`MAX_LIST_LIMIT`].
        limit: u32,
        /// The timeout override (quorums do not apply).
        options: RequestOptions,
    },
    /// A long poll: answered as soon as the key holds a write that `context` has not seen
    /// (as a get is answered), or [`Reply::Unchanged`] once `wait_ms` has passed. The owners
    /// tell the coordinator of each write they store; nothing polls.
    Watch {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// What the watcher has seen (a read's context; the empty context waits for any write).
        context: Context,
        /// How long to wait for a change: 1 ms to [`MAX_WATCH_WAIT_MS`].
        wait_ms: u64,
        /// Read quorum and timeout overrides for the reads the watch makes.
        options: RequestOptions,
    },
    /// Merge a whole object (a record from a backup, see
    /// [`Object::encode`](crate::version::Object::encode)) into the key's current replicas, as
    /// read repair and hinted handoff do: siblings the live data has superseded disappear,
    /// concurrent ones stay as siblings, and nothing newer is lost. Any node coordinates it (it
    /// issues no dot): the record goes to the preference list (fallbacks for unreachable
    /// owners), answered at W acknowledgements. Merging is idempotent, so a restore may be
    /// retried. (Last, so that the encoding of the other variants is unchanged.)
    Restore {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The encoded object, checked (record checksum, invariants, sibling checksums) before
        /// anything is sent.
        record: Vec<u8>,
        /// Quorum (`w`, `dw`, `n`) and timeout overrides; no condition, no time to live.
        options: RequestOptions,
    },
}

/// The longest a watch may wait for a change (10 minutes): a watch holds a connection and a
/// slot of the node's bounded watch table.
pub const MAX_WATCH_WAIT_MS: u64 = 600_000;

impl ClientRequest {
    /// The bucket and key the request is about (a listing names no key: the key is empty).
    pub fn target(&self) -> (&[u8], &[u8]) {
        match self {
            ClientRequest::Get { bucket, key, .. }
            | ClientRequest::Put { bucket, key, .. }
            | ClientRequest::Delete { bucket, key, .. }
            | ClientRequest::Watch { bucket, key, .. }
            | ClientRequest::Restore { bucket, key, .. } => (bucket, key),
            ClientRequest::List { bucket, .. } => (bucket, &[]),
        }
    }

    /// Whether the request writes (a put, a delete or a restore): it needs W acknowledgements.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ClientRequest::Put { .. }
                | ClientRequest::Delete { .. }
                | ClientRequest::Restore { .. }
        )
    }

    /// The request's overrides.
    pub fn options(&self) -> &RequestOptions {
        match self {
            ClientRequest::Get { options, .. }
            | ClientRequest::Put { options, .. }
            | ClientRequest::Delete { options, .. }
            | ClientRequest::List { options, .. }
            | ClientRequest::Watch { options, .. }
            | ClientRequest::Restore { options, .. } => options,
        }
    }

    /// The context a write supersedes: its own, or, when that is empty and the write is
    /// conditional on `If-Match`, the matched context (a client that sends only `If-Match`
    /// means to replace what it read, not to add a sibling beside it). `None` for a get, and
    /// for a restore (its record carries its own history).
    pub fn write_context(&self) -> Option<&Context> {
        match self {
            ClientRequest::Get { .. }
            | ClientRequest::List { .. }
            | ClientRequest::Watch { .. }
            | ClientRequest::Restore { .. } => None,
            ClientRequest::Put {
                context, options, ..
            }
            | ClientRequest::Delete {
                context, options, ..
            } => match &options.condition {
                Some(WriteCondition::IfMatch(matched)) if context.is_empty() => Some(matched),
                _ => Some(context),
            },
        }
    }

    /// The request's overrides, to change (a forwarder passes on the time its client has left).
    pub fn options_mut(&mut self) -> &mut RequestOptions {
        match self {
            ClientRequest::Get { options, .. }
            | ClientRequest::Put { options, .. }
            | ClientRequest::Delete { options, .. }
            | ClientRequest::List { options, .. }
            | ClientRequest::Watch { options, .. }
            | ClientRequest::Restore { options, .. } => options,
        }
    }

    /// Checks the request against the size limits and resolves its quorums against the
    /// properties of its bucket: the check a node makes before it does any work for a request,
    /// public so that a binding or a client refuses exactly what a node would, with the same error.
    ///
    /// The key must be non-empty and within `limits`, the bucket name and a put's value within
    /// `limits`, a write's context (and an `If-Match` one) not bound to another key, a delete's
    /// context not empty, a time to live only on a put and within range, a condition only on a
    /// write (and never "absent" on a delete), and the quorums valid for N (see
    /// [`BucketProps::resolve`]). Checks nothing that depends on a node's state (such as a
    /// request id in flight).
    pub fn check(
        &self,
        props: &BucketProps,
        limits: &RequestLimits,
    ) -> Result<Quorums, RequestError> {
        let (bucket, key) = self.target();
        if let ClientRequest::List { limit, .. } = self {
            if *limit == 0 || *limit > MAX_LIST_LIMIT {
                return Err(RequestError::ListLimit {
                    limit: *limit,
                    max: MAX_LIST_LIMIT,
                });
            }
        } else if key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        if key.len() > limits.max_key_bytes {
            return Err(RequestError::KeyTooLarge {
                len: key.len(),
                max: limits.max_key_bytes,
            });
        }
        if bucket.len() > limits.max_bucket_bytes {
            return Err(RequestError::BucketTooLarge {
                len: bucket.len(),
                max: limits.max_bucket_bytes,
            });
        }
        if let ClientRequest::Delete { context, .. } = self {
            if context.is_empty() {
                return Err(RequestError::DeleteWithoutContext);
            }
        }
        if let ClientRequest::Watch { wait_ms, .. } = self {
            if *wait_ms == 0 || *wait_ms > MAX_WATCH_WAIT_MS {
                return Err(RequestError::WatchWait {
                    wait_ms: *wait_ms,
                    max: MAX_WATCH_WAIT_MS,
                });
            }
        }
        if let ClientRequest::Put { context, .. }
        | ClientRequest::Delete { context, .. }
        | ClientRequest::Watch { context, .. } = self
        {
            if context.check_key(bucket, key).is_err() {
                return Err(RequestError::ContextOfAnotherKey);
            }
        }
        let options = self.options();
        if let Some(ttl_ms) = options.ttl_ms {
            if !matches!(self, ClientRequest::Put { .. }) {
                return Err(RequestError::TtlNotOnPut);
            }
            check_ttl(ttl_ms)?;
        }
        match (&options.condition, self) {
            (None, _) => {}
            (Some(_), ClientRequest::Get { .. } | ClientRequest::List { .. })
            | (Some(_), ClientRequest::Watch { .. } | ClientRequest::Restore { .. }) => {
                return Err(RequestError::ConditionOnRead)
            }
            (Some(WriteCondition::IfAbsent), ClientRequest::Delete { .. }) => {
                return Err(RequestError::DeleteIfAbsent)
            }
            (Some(WriteCondition::IfMatch(expected)), _) => {
                if expected.check_key(bucket, key).is_err() {
                    return Err(RequestError::ContextOfAnotherKey);
                }
            }
            (Some(WriteCondition::IfAbsent), _) => {}
        }
        if let ClientRequest::Restore { record, .. } = self {
            // A record holds every sibling: bounded by what a peer message can carry, and it
            // must be a whole, undamaged object.
            if record.len() > MAX_RESTORE_RECORD_BYTES {
                return Err(RequestError::BadRecord {
                    detail: alloc::format!(
                        "the record is {} bytes, over the limit of {}",
                        record.len(),
                        MAX_RESTORE_RECORD_BYTES
                    ),
                });
            }
            if let Err(error) = crate::version::Object::decode(record) {
                return Err(RequestError::BadRecord {
                    detail: alloc::string::ToString::to_string(&error),
                });
            }
        }
        if let ClientRequest::Put { value, .. } = self {
            if value.len() > limits.max_value_bytes {
                return Err(RequestError::ValueTooLarge {
                    len: value.len(),
                    max: limits.max_value_bytes,
                });
            }
        }
        Ok(props.resolve(self.options())?)
    }
}

/// Which quorum a request failed to reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumKind {
    /// R replies to a get.
    Read,
    /// W acknowledgements of a put.
    Write,
    /// DW durable acknowledgements of a put.
    Durable,
}

impl QuorumKind {
    /// `read`, `write` or `durable`: the name logs, metrics and the bindings use.
    pub fn as_str(self) -> &'static str {
        match self {
            QuorumKind::Read => "read",
            QuorumKind::Write => "write",
            QuorumKind::Durable => "durable",
        }
    }

    /// The request option that sets this quorum: `r`, `w` or `dw`.
    pub fn parameter(self) -> &'static str {
        match self {
            QuorumKind::Read => "r",
            QuorumKind::Write => "w",
            QuorumKind::Durable => "dw",
        }
    }
}

impl fmt::Display for QuorumKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a client request. Quorum failures are outcomes, not errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A get reached R replies.
    Got {
        /// Live sibling values; empty when the key is absent or deleted.
        values: Vec<Vec<u8>>,
        /// Context to pass to the next put; non-empty for a deleted key (its tombstone's history).
        context: Context,
        /// Replicas whose replies were merged.
        replicas: Vec<NodeId>,
        /// Of those, the fallbacks that stood in for unreachable preference-list nodes.
        fallbacks: Vec<NodeId>,
        /// False when `r + w <= n` for this request and the bucket's w.
        read_your_writes: bool,
        /// When the last of `values` expires (coordinator time, ms); `None` when one of them
        /// never does, or there are none.
        expires_at: Option<crate::id::Millis>,
    },
    /// A put or delete reached W acknowledgements (DW of them durable).
    Written {
        /// Context of the object at the coordinator after the write.
        context: Context,
        /// The dot the write was given: its identity in every clock.
        dot: Dot,
        /// Replicas that acknowledged before the reply.
        replicas: Vec<NodeId>,
        /// Of those, the ones that had made it durable.
        durable: Vec<NodeId>,
        /// Of those, the fallbacks that stood in for unreachable preference-list nodes (a sloppy
        /// quorum): they hold the write as a hint until the owner is back.
        fallbacks: Vec<NodeId>,
        /// False when `r + w <= n` for this request and the bucket's r.
        read_your_writes: bool,
    },
    /// The quorum was not reached, and the request certainly had no effect: a get, or a write that
    /// no replica stored (and none will).
    Unavailable {
        /// Which quorum failed.
        kind: QuorumKind,
        /// How many were needed.
        needed: u32,
        /// Replicas that answered in time.
        answered: Vec<NodeId>,
    },
    /// The request could not be carried out (a storage failure on the coordinator, say).
    Failed {
        /// What went wrong, for the client.
        reason: String,
    },
    /// The coordinator's disk is full: its local write failed before any replica was asked, so
    /// nothing was written. (Last, so that the encoding of the other variants is unchanged.)
    StorageFull {
        /// The storage engine's description.
        reason: String,
    },
    /// The write would have left more siblings than the bucket's `max_siblings` (and more than
    /// before): nothing was written. A write with the context of a read reconciles them.
    TooManySiblings {
        /// Siblings the object would have had.
        siblings: u32,
        /// The bucket's bound.
        max: u32,
    },
    /// The write would have made the object (every sibling, encoded) larger than the bucket's
    /// `max_object_bytes` (and larger than before): nothing was written.
    ObjectTooLarge {
        /// Bytes the object would have had.
        bytes: u64,
        /// The bucket's bound.
        max: u64,
    },
    /// A write did not reach its quorum in time, but it may still take effect (or already has,
    /// on the replicas in `answered` or on the coordinator): it was stored or sent somewhere.
    /// Retrying it blind can make a sibling of the same value; reading first cannot.
    OutcomeUnknown {
        /// Which quorum was not reached.
        kind: QuorumKind,
        /// How many were needed.
        needed: u32,
        /// Replicas that acknowledged in time.
        answered: Vec<NodeId>,
    },
    /// A conditional write's condition did not hold at the read quorum: nothing was written.
    PreconditionFailed {
        /// The key's current context (of the read that checked the condition).
        context: Context,
        /// Whether the key has a live value (what `If-None-Match: *` found).
        exists: bool,
    },
    /// A page of a bucket's keys.
    Listed {
        /// The keys, in listing order (by partition, then by key within one).
        keys: Vec<Vec<u8>>,
        /// Where the next page starts; `None` when the listing is complete. A page may be
        /// short, even empty, and still have a cursor: it ends when its time runs low.
        cursor: Option<ListCursor>,
    },
    /// A watch waited its whole time and the key held no write its context had not seen.
    Unchanged {
        /// The key's context as the watch last read it.
        context: Context,
    },
    /// A restore reached W acknowledgements (DW durable): that many replicas merged the
    /// record into what they hold. (Last, so that the encoding of the other variants is
    /// unchanged.)
    Restored {
        /// Replicas that acknowledged before the reply.
        replicas: Vec<NodeId>,
        /// Of those, the fallbacks that stood in for unreachable preference-list nodes.
        fallbacks: Vec<NodeId>,
    },
}

impl Reply {
    /// `ok` (a get that met R, a write that met W), `unavailable`, `outcome_unknown`, `failed` or
    /// `storage_full`:
    /// the outcome name the bindings and logs use.
    pub fn outcome(&self) -> &'static str {
        match self {
            Reply::Got { .. }
            | Reply::Written { .. }
            | Reply::Listed { .. }
            | Reply::Restored { .. } => "ok",
            Reply::Unchanged { .. } => "unchanged",
            Reply::Unavailable { .. } => "unavailable",
            Reply::Failed { .. } => "failed",
            Reply::StorageFull { .. } => "storage_full",
            Reply::OutcomeUnknown { .. } => "outcome_unknown",
            Reply::TooManySiblings { .. } => "too_many_siblings",
            Reply::ObjectTooLarge { .. } => "object_too_large",
            Reply::PreconditionFailed { .. } => "precondition_failed",
        }
    }
}

impl Reply {
    /// The answer to a write that was coordinated a second time after its forward went
    /// unanswered: a failure of the second coordination says nothing of the first, which may
    /// still land, so every failure becomes [`Reply::OutcomeUnknown`].
    pub fn after_abandoned_forward(self) -> Reply {
        match self {
            Reply::Got { .. }
            | Reply::Written { .. }
            | Reply::OutcomeUnknown { .. }
            | Reply::Listed { .. }
            | Reply::Restored { .. }
            | Reply::Unchanged { .. } => self,
            Reply::Unavailable {
                kind,
                needed,
                answered,
            } => Reply::OutcomeUnknown {
                kind,
                needed,
                answered,
            },
            Reply::Failed { .. }
            | Reply::StorageFull { .. }
            | Reply::TooManySiblings { .. }
            | Reply::ObjectTooLarge { .. }
            | Reply::PreconditionFailed { .. } => Reply::OutcomeUnknown {
                kind: QuorumKind::Write,
                needed: 0,
                answered: Vec::new(),
            },
        }
    }

    /// The reply with its context (of a get or a write) bound to `bucket`/`key` (see
    /// [`Context::bound_to`]).
    pub fn bound_to(self, bucket: &[u8], key: &[u8]) -> Reply {
        match self {
            Reply::Got {
                values,
                context,
                replicas,
                fallbacks,
                read_your_writes,
                expires_at,
            } => Reply::Got {
                values,
                context: context.bound_to(bucket, key),
                replicas,
                fallbacks,
                read_your_writes,
                expires_at,
            },
            Reply::PreconditionFailed { context, exists } => Reply::PreconditionFailed {
                context: context.bound_to(bucket, key),
                exists,
            },
            Reply::Unchanged { context } => Reply::Unchanged {
                context: context.bound_to(bucket, key),
            },
            Reply::Written {
                context,
                dot,
                replicas,
                durable,
                fallbacks,
                read_your_writes,
            } => Reply::Written {
                context: context.bound_to(bucket, key),
                dot,
                replicas,
                durable,
                fallbacks,
                read_your_writes,
            },
            other => other,
        }
    }
}

/// One human-readable line, for logs and the bindings' error texts (values are not shown: they
/// may be large or binary).
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Got {
                values, replicas, ..
            } => write!(
                f,
                "got {} value(s) from {} replica(s)",
                values.len(),
                replicas.len()
            ),
            Reply::Written { dot, replicas, .. } => {
                write!(f, "written as {dot} on {} replica(s)", replicas.len())
            }
            Reply::Unavailable {
                kind,
                needed,
                answered,
            } => write!(
                f,
                "{kind} quorum not reached: {needed} needed, {} answered in time",
                answered.len()
            ),
            Reply::Failed { reason } => write!(f, "failed: {reason}"),
            Reply::StorageFull { reason } => write!(f, "storage full: {reason}"),
            Reply::TooManySiblings { siblings, max } => write!(
                f,
                "refused: the key would have {siblings} siblings, over the bucket's max_siblings \
                 of {max}; read it and write back one value with the read's context to \
                 reconcile them"
            ),
            Reply::ObjectTooLarge { bytes, max } => write!(
                f,
                "refused: the key's object would be {bytes} bytes, over the bucket's \
                 max_object_bytes of {max}; read it and write back with the read's context to \
                 replace its siblings"
            ),
            Reply::PreconditionFailed { exists, .. } => write!(
                f,
                "precondition failed: the key {} and does not meet the write's condition \
                 (If-None-Match: * wants no value, If-Match the context unchanged); nothing was \
                 written, and the answer carries the key's current context",
                if *exists {
                    "has a value"
                } else {
                    "has no value (absent, deleted or expired)"
                }
            ),
            Reply::Listed { keys, cursor } => write!(
                f,
                "listed {} key(s){}",
                keys.len(),
                if cursor.is_some() {
                    ", more to come"
                } else {
                    ""
                }
            ),
            Reply::Unchanged { .. } => {
                f.write_str("unchanged: no write the watch's context had not seen")
            }
            Reply::Restored { replicas, .. } => {
                write!(f, "restored (merged) on {} replica(s)", replicas.len())
            }
            Reply::OutcomeUnknown {
                kind,
                needed,
                answered,
            } => write!(
                f,
                "outcome unknown: {kind} quorum not reached in time ({needed} needed, {} \
                 acknowledged); the write may still take effect: read before retrying",
                answered.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::QuorumValue;
    use alloc::string::ToString;
    use alloc::vec;

    fn put(bucket: &[u8], key: &[u8], value: &[u8]) -> ClientRequest {
        ClientRequest::Put {
            bucket: bucket.to_vec(),
            key: key.to_vec(),
            context: Context::default(),
            value: value.to_vec(),
            options: RequestOptions::default(),
        }
    }

    #[test]
    fn check_refuses_what_a_node_refuses() {
        let props = BucketProps::default();
        let limits = RequestLimits {
            max_key_bytes: 3,
            max_bucket_bytes: 2,
            max_value_bytes: 4,
        };
        let q = put(b"b", b"k", b"v").check(&props, &limits).unwrap();
        assert_eq!((q.n, q.r, q.w, q.dw), (3, 2, 2, 0));
        assert_eq!(
            put(b"b", b"", b"v").check(&props, &limits),
            Err(RequestError::EmptyKey)
        );
        assert_eq!(
            put(b"b", b"long", b"v").check(&props, &limits),
            Err(RequestError::KeyTooLarge { len: 4, max: 3 })
        );
        assert_eq!(
            put(b"bkt", b"k", b"v").check(&props, &limits),
            Err(RequestError::BucketTooLarge { len: 3, max: 2 })
        );
        assert_eq!(
            put(b"b", b"k", b"value").check(&props, &limits),
            Err(RequestError::ValueTooLarge { len: 5, max: 4 })
        );
        // A get has no value to check, but its quorum overrides are checked against N.
        let get = ClientRequest::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions {
                r: Some(QuorumValue::Count(4)),
                ..Default::default()
            },
        };
        assert!(matches!(
            get.check(&props, &limits),
            Err(RequestError::Quorum(_))
        ));
        let limits = RequestLimits::default();
        assert_eq!(limits.max_value_bytes, DEFAULT_MAX_VALUE_BYTES);
        let big = vec![0u8; DEFAULT_MAX_VALUE_BYTES + 1];
        assert!(put(b"b", b"k", &big).check(&props, &limits).is_err());
    }

    #[test]
    fn replies_read_as_one_line() {
        let unavailable = Reply::Unavailable {
            kind: QuorumKind::Write,
            needed: 2,
            answered: vec![NodeId::new("n1")],
        };
        assert_eq!(unavailable.outcome(), "unavailable");
        assert_eq!(
            unavailable.to_string(),
            "write quorum not reached: 2 needed, 1 answered in time"
        );
        let failed = Reply::Failed {
            reason: "disk".into(),
        };
        assert_eq!(
            (failed.outcome(), failed.to_string().as_str()),
            ("failed", "failed: disk")
        );
        assert_eq!(QuorumKind::Durable.to_string(), "durable");
        // The one explanation of `outcome_unknown`, which the hosts answer with.
        let unknown = Reply::OutcomeUnknown {
            kind: QuorumKind::Write,
            needed: 2,
            answered: vec![NodeId::new("n1")],
        };
        assert_eq!(
            unknown.to_string(),
            "outcome unknown: write quorum not reached in time (2 needed, 1 acknowledged); the \
             write may still take effect: read before retrying"
        );
    }
}
