//! The replica side: serving peers' reads, and every local read-modify-write (a coordinated
//! write, a replica's merge, a conditional delete), queued one at a time per key.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use super::{Node, PendingOp};
use crate::id::{CoordinationId, Millis, NodeId};
use crate::io::Event;
use crate::merkle::object_digest;
use crate::request::Reply;
use crate::ring::PartitionId;
use crate::storage::{Space, StorageErrorKind, StorageKey, StorageOp, StorageResult};
use crate::version::{Content, Dot, Object, VersionVector};
use crate::wire::{Message, ReadResult};

/// What a read-modify-write of one local replica does with the record it reads.
#[derive(Debug)]
pub(super) enum LocalWriteKind {
    /// This node coordinates a client's write: it gives the write its dot.
    Coordinate {
        id: CoordinationId,
        context: VersionVector,
        content: Content,
    },
    /// Merge an object from a peer (replication or repair); answer `reply_to` when stored.
    Merge {
        object: Object,
        reply_to: Option<(NodeId, CoordinationId)>,
    },
    /// Delete the record, unless it changed since the decision to delete it was made.
    DeleteIf(DeleteCondition),
}

/// What a record must still be for a conditional delete to go ahead.
#[derive(Debug)]
pub(super) enum DeleteCondition {
    /// Exactly these bytes: a hint or orphan its owner acknowledged. If it changed since it
    /// was sent, the change still has to reach the owner, and the next round sends it.
    Record(Vec<u8>),
    /// A dead object (deleted or expired) with this digest: a reaped key (a write since the
    /// check keeps it).
    Dead(u64),
}

impl DeleteCondition {
    /// Whether `record` may still be deleted, judged at this node's clock `now` (an object that
    /// is not dead here yet is kept: the skew between clocks only delays a reap).
    pub(super) fn holds(&self, record: &[u8], now: u64) -> bool {
        match self {
            DeleteCondition::Record(delivered) => record == delivered.as_slice(),
            DeleteCondition::Dead(digest) => Object::decode(record)
                .is_ok_and(|o| o.is_dead_at(now) && object_digest(&o) == *digest),
        }
    }
}

#[derive(Debug)]
pub(super) struct LocalWrite {
    pub(super) key: StorageKey,
    pub(super) kind: LocalWriteKind,
    pub(super) sync: bool,
    /// The object being stored, and for a coordinated write its new dot (set once read).
    pub(super) result: Option<(Object, Option<Dot>)>,
    /// For a coordinated write: whether its record went to the other replicas before this
    /// node's store finished.
    pub(super) replicated_early: bool,
}

/// How long after a failed store a coordinator stores its writes before it replicates them
/// (see [`Replica::store_first_until`]).
const STORE_FIRST_AFTER_FAILURE_MS: Millis = 5_000;

/// The replica side's state: local read-modify-writes per key. The front one of a key is in
/// progress and the rest wait, so two writes of one key never interleave (that would lose one,
/// or reuse a dot).
#[derive(Debug, Default)]
pub(super) struct Replica {
    pub(super) writes: BTreeMap<StorageKey, VecDeque<LocalWrite>>,
    /// The highest counter of this node's actor in any record it reaped: new dots are issued
    /// above it (see [`Object::update_above`]). A reaped object was dead on every replica, so
    /// no live dot of the actor is below the floor without being in the actor's own record.
    pub(super) removed_dot_floor: u64,
    /// Set when this node handed over (and deleted) a record holding its actor's dots: those
    /// may be live elsewhere and missing from a record it later pulls back, so the floor
    /// cannot cover them; its next coordinated write takes a fresh actor instead.
    pub(super) renew_before_write: bool,
    /// Until when coordinated writes are stored here before they go to the other replicas,
    /// because a store failed lately (a full or failing disk). Replicated while storing, as
    /// usual, a write whose store then fails is still acknowledged by the others, but costs a
    /// new actor each time (its dot is out there and not in this node's record): a full disk
    /// would mint one per write and bloat every version vector. Stored first, such a write is
    /// refused whole (`storage_full`: nothing written) and the client tries the next node.
    pub(super) store_first_until: Millis,
}

impl Replica {
    /// Whether a local write of a record of `partition` is queued or in progress.
    pub(super) fn writes_pending_in(&self, partition: PartitionId) -> bool {
        self.writes
            .keys()
            .any(|k| k.space == Space::Data && k.partition == partition)
    }
}

impl Node {
    /// A peer's read of this node's replica (or of a hint it keeps for `hint`'s owner).
    pub(super) fn on_replica_read(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        bucket: Vec<u8>,
        key: Vec<u8>,
        hint: Option<NodeId>,
    ) {
        match self.replica_key(&bucket, &key, hint) {
            Some(key) => self.storage(
                StorageOp::Get { key: key.clone() },
                PendingOp::ServeRead { to: from, id, key },
            ),
            None => self.send(
                from,
                Message::ReadReply {
                    id,
                    result: ReadResult::Failed,
                },
            ),
        }
    }

    /// Where this node keeps its copy of a key: its own replica, or a hint for `hint`'s owner.
    /// `None` for a hint naming a node that is not a member (it could never be delivered).
    pub(super) fn replica_key(
        &self,
        bucket: &[u8],
        key: &[u8],
        hint: Option<NodeId>,
    ) -> Option<StorageKey> {
        let data = self.storage_key(bucket, key);
        match hint {
            Some(owner) if owner == self.config.node_id => Some(data),
            Some(owner) if self.routing.ring.member(&owner).is_none() => None,
            Some(owner) => Some(data.in_space(Space::Hint { owner })),
            None => Some(data),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_replica_write(
        &mut self,
        from: NodeId,
        id: Option<CoordinationId>,
        bucket: Vec<u8>,
        key: Vec<u8>,
        record: Vec<u8>,
        sync: bool,
        hint: Option<NodeId>,
    ) {
        let object = match Object::decode(&record) {
            Ok(object) => object,
            Err(error) => {
                self.event(Event::ChecksumFailure {
                    bucket,
                    key,
                    detail: format!("record sent by {from}: {error}"),
                });
                if let Some(id) = id {
                    self.send(
                        from,
                        Message::WriteReply {
                            id,
                            stored: false,
                            synced: false,
                        },
                    );
                }
                return;
            }
        };
        let Some(storage_key) = self.replica_key(&bucket, &key, hint) else {
            self.event(Event::MessageDropped {
                from: from.clone(),
                reason: "hint for a node that is not a member".to_string(),
            });
            if let Some(id) = id {
                self.send(
                    from,
                    Message::WriteReply {
                        id,
                        stored: false,
                        synced: false,
                    },
                );
            }
            return;
        };
        if matches!(storage_key.space, Space::Hint { .. }) {
            self.note_hint(storage_key.partition);
        }
        self.enqueue_local_write(LocalWrite {
            key: storage_key,
            kind: LocalWriteKind::Merge {
                object,
                reply_to: id.map(|id| (from, id)),
            },
            sync,
            result: None,
            replicated_early: false,
        });
    }

    pub(super) fn serve_read_done(
        &mut self,
        to: NodeId,
        id: CoordinationId,
        key: StorageKey,
        result: StorageResult,
    ) {
        let result = match result {
            StorageResult::Record(None) => ReadResult::NotFound,
            StorageResult::Record(Some(record)) => match Object::decode(&record) {
                Ok(_) => ReadResult::Found(record),
                Err(error) => {
                    self.forget_in_tree(&key);
                    self.event(Event::ChecksumFailure {
                        bucket: key.bucket,
                        key: key.key,
                        detail: error.to_string(),
                    });
                    ReadResult::Corrupt
                }
            },
            _ => ReadResult::Failed,
        };
        self.send(to, Message::ReadReply { id, result });
    }

    // ----- local read-modify-write, one at a time per key -----

    pub(super) fn enqueue_local_write(&mut self, write: LocalWrite) {
        let key = write.key.clone();
        let queue = self.replica.writes.entry(key.clone()).or_default();
        queue.push_back(write);
        if queue.len() == 1 {
            self.storage(
                StorageOp::Get { key: key.clone() },
                PendingOp::WriteRead(key),
            );
        }
    }

    pub(super) fn local_write_read_done(&mut self, key: StorageKey, result: StorageResult) {
        if let Some(LocalWrite {
            kind: LocalWriteKind::DeleteIf(condition),
            ..
        }) = self.replica.writes.get(&key).and_then(VecDeque::front)
        {
            let now = self.now;
            let holds = matches!(&result,
                StorageResult::Record(Some(record)) if condition.holds(record, now));
            let reaping = matches!(condition, DeleteCondition::Dead(_));
            if !holds {
                self.pop_local_write(&key);
                return;
            }
            if let StorageResult::Record(Some(record)) = &result {
                if let Ok(object) = Object::decode(record) {
                    let issued = object.context().clock().get(&self.actor);
                    if issued > 0 && reaping {
                        let floor = &mut self.replica.removed_dot_floor;
                        *floor = (*floor).max(issued);
                    } else if issued > 0 && key.space == Space::Data {
                        self.replica.renew_before_write = true;
                    }
                }
            }
            if reaping {
                self.forget_in_tree(&key);
                self.event(Event::TombstoneReaped {
                    bucket: key.bucket.clone(),
                    key: key.key.clone(),
                });
            }
            self.storage(
                StorageOp::Delete { key: key.clone() },
                PendingOp::WriteStore(key),
            );
            return;
        }
        let local = match result {
            StorageResult::Record(None) => Ok(Object::new()),
            StorageResult::Record(Some(record)) => match Object::decode(&record) {
                Ok(object) => Ok(object),
                Err(error) => {
                    self.event(Event::ChecksumFailure {
                        bucket: key.bucket.clone(),
                        key: key.key.clone(),
                        detail: error.to_string(),
                    });
                    // The damaged record is treated as missing and overwritten; what it held
                    // comes back from the other replicas by read repair and anti-entropy.
                    Err(true)
                }
            },
            _ => Err(false),
        };
        let mode = self.mode(&key.bucket);
        if !self.replica.writes.contains_key(&key) {
            return;
        }
        let (mut object, damaged) = match local {
            Ok(object) => (object, false),
            Err(true) => (Object::new(), true),
            Err(false) => {
                self.local_write_failed(&key, "storage read failed".to_string());
                return;
            }
        };
        if damaged && key.space == Space::Data {
            // This actor's dots for the key are unknown now, and whatever overwrites the record
            // (our write, or a peer's copy that lacks our latest dots) would let the next write
            // reissue one. A fresh actor cannot.
            self.renew_actor();
        }
        let coordinating = self
            .replica
            .writes
            .get(&key)
            .and_then(VecDeque::front)
            .is_some_and(|w| matches!(w.kind, LocalWriteKind::Coordinate { .. }));
        if coordinating && self.replica.renew_before_write {
            self.renew_actor();
        }
        let actor = self.actor.clone();
        let max_entries = self.config.max_clock_entries;
        let limits = self.bucket_props(&key.bucket).limits;
        let now = self.now;
        let Some(write) = self
            .replica
            .writes
            .get_mut(&key)
            .and_then(VecDeque::front_mut)
        else {
            return;
        };
        let mut refusal = None;
        let dot = match &mut write.kind {
            LocalWriteKind::Coordinate {
                context, content, ..
            } => {
                // Expired siblings are dead: they go now, and never count toward the bounds.
                object.drop_expired(now);
                let before = (object.siblings().len(), object.encoded_len());
                let content = core::mem::replace(content, Content::Tombstone);
                let floor = self.replica.removed_dot_floor;
                let dot = object.update_above(context, &actor, content, now, mode, floor);
                // Clocks are truncated where a write is coordinated, as Riak prunes on put, and
                // never on merge: replicas that truncated on merge would each keep other
                // entries and never converge. Our own entry stays, since our next dot for this
                // key is counted from it.
                object.truncate_keeping(max_entries, &actor);
                refusal = past_limits(&object, before, &limits);
                Some(dot)
            }
            LocalWriteKind::Merge {
                object: incoming, ..
            } => {
                object.merge(incoming, mode);
                None
            }
            LocalWriteKind::DeleteIf(_) => None,
        };
        if let Some(reply) = refusal {
            let bound = reply.outcome().to_string();
            self.event(Event::WriteRefused {
                bucket: key.bucket.clone(),
                key: key.key.clone(),
                bound,
            });
            self.local_write_refused(&key, reply);
            return;
        }
        let siblings = object.siblings().len() as u32;
        if dot.is_some() && limits.siblings_warn > 0 && siblings > limits.siblings_warn {
            self.event(Event::ManySiblings {
                bucket: key.bucket.clone(),
                key: key.key.clone(),
                siblings,
            });
        }
        let Some(write) = self
            .replica
            .writes
            .get_mut(&key)
            .and_then(VecDeque::front_mut)
        else {
            return;
        };
        let record = object.encode();
        let op = StorageOp::Put {
            key: key.clone(),
            record: record.clone(),
            sync: write.sync,
        };
        let coordination = match (&write.kind, &dot) {
            (LocalWriteKind::Coordinate { id, .. }, Some(dot)) => Some((*id, dot.clone())),
            _ => None,
        };
        // Early only where it can help: with no other replica to send to (N = 1, or every
        // other target gone), a failed store must stay a plain refusal (`storage_full`).
        let me = &self.config.node_id;
        let others = coordination
            .as_ref()
            .and_then(|(id, _)| self.requests.put(*id))
            .is_some_and(|put| put.replicas.iter().any(|t| t.node != *me));
        let early = others && self.now >= self.replica.store_first_until;
        write.result = Some((object, dot));
        write.replicated_early = early;
        if let Some((id, dot)) = coordination.filter(|_| early) {
            // The record goes to the other replicas now, while this node stores it: a put waits
            // for one disk write in series, not two. Nothing can reissue its dot meanwhile:
            // writes to the key queue behind this one, a restart starts a new actor (the
            // incarnation is in its name), and a failed store renews the actor
            // ([`Node::local_write_refused`]).
            if let Some((object, _)) = self
                .replica
                .writes
                .get(&key)
                .and_then(VecDeque::front)
                .and_then(|w| w.result.as_ref())
            {
                let context = object.context();
                self.coordinated_write_prepared(id, &key, context, dot, record);
            }
        }
        self.storage(op, PendingOp::WriteStore(key));
    }

    pub(super) fn local_write_stored(&mut self, key: StorageKey, result: StorageResult) {
        let synced = match result {
            StorageResult::Written { synced } => synced,
            StorageResult::Failed(error) => {
                // A full disk is told apart: the client should hear "no space", not "failed".
                let reply = match error.kind {
                    StorageErrorKind::Full => Reply::StorageFull {
                        reason: error.message.clone(),
                    },
                    StorageErrorKind::Io => Reply::Failed {
                        reason: error.to_string(),
                    },
                };
                self.local_write_refused(&key, reply);
                return;
            }
            _ => {
                self.local_write_failed(&key, "unexpected storage answer".to_string());
                return;
            }
        };
        let Some(write) = self.pop_local_write(&key) else {
            return;
        };
        if key.space == Space::Data {
            if let Some((object, _)) = &write.result {
                self.set_in_tree(&key, Some(object_digest(object)));
                self.notify_watchers(&key, object);
                self.schedule_reap(&key, object);
            }
        }
        match write.kind {
            LocalWriteKind::Coordinate { id, .. } => match write.result {
                Some((object, Some(dot))) => {
                    if !write.replicated_early {
                        let record = object.encode();
                        self.coordinated_write_prepared(id, &key, object.context(), dot, record);
                    }
                    self.coordinated_write_stored(id, synced)
                }
                _ => {
                    self.coordinated_write_failed(id, "internal: write lost its result".to_string())
                }
            },
            LocalWriteKind::Merge { reply_to, .. } => {
                if let Some((to, id)) = reply_to {
                    self.send(
                        to,
                        Message::WriteReply {
                            id,
                            stored: true,
                            synced,
                        },
                    );
                }
            }
            LocalWriteKind::DeleteIf(_) => {}
        }
    }

    pub(super) fn local_write_failed(&mut self, key: &StorageKey, reason: alloc::string::String) {
        self.local_write_refused(key, Reply::Failed { reason });
    }

    /// A local write failed: `reply` is the answer if this node coordinates the write.
    pub(super) fn local_write_refused(&mut self, key: &StorageKey, reply: Reply) {
        // A record of a partition being pulled may be the one that failed: that partition's
        // pulls start over rather than be recorded as received without it.
        if key.space == Space::Data {
            self.transfers.restart(key.partition);
        }
        let Some(write) = self.pop_local_write(key) else {
            return;
        };
        self.replica.store_first_until = self.now.saturating_add(STORE_FIRST_AFTER_FAILURE_MS);
        match write.kind {
            LocalWriteKind::Coordinate { id, .. } if write.replicated_early => {
                // The store failed after the record went to the other replicas (see
                // `local_write_read_done`): they may hold the write's dot while this node's
                // record does not, so this actor's next dot for the key could repeat it. A new
                // actor cannot. The put counts this node as refusing and waits for the others.
                self.renew_actor();
                self.coordinated_write_not_stored(id);
            }
            LocalWriteKind::Coordinate { id, .. } => self.coordinated_write_refused(id, reply),
            LocalWriteKind::Merge { reply_to, .. } => {
                if let Some((to, id)) = reply_to {
                    self.send(
                        to,
                        Message::WriteReply {
                            id,
                            stored: false,
                            synced: false,
                        },
                    );
                }
            }
            // The hint (or tombstone) stays, and is tried again.
            LocalWriteKind::DeleteIf(_) => {}
        }
    }

    /// Removes the finished front write of `key` and starts the next one.
    pub(super) fn pop_local_write(&mut self, key: &StorageKey) -> Option<LocalWrite> {
        let queue = self.replica.writes.get_mut(key)?;
        let write = queue.pop_front();
        if queue.is_empty() {
            self.replica.writes.remove(key);
        } else {
            self.storage(
                StorageOp::Get { key: key.clone() },
                PendingOp::WriteRead(key.clone()),
            );
        }
        write
    }

    /// Deletes a record this node delivered (a hint, an orphan), unless it changed since.
    pub(super) fn delete_if_unchanged(&mut self, key: StorageKey, delivered: Vec<u8>) {
        self.delete_if(key, DeleteCondition::Record(delivered));
    }

    pub(super) fn delete_if(&mut self, key: StorageKey, condition: DeleteCondition) {
        self.enqueue_local_write(LocalWrite {
            key,
            kind: LocalWriteKind::DeleteIf(condition),
            sync: false,
            result: None,
            replicated_early: false,
        });
    }
}

/// The refusal a coordinated write earns if it grew `object` past the bucket's limits
/// (`before`: its sibling count and encoded size before the write). A write that does not grow
/// the count (or the size) past its bound is accepted: one carrying the context that reconciles
/// the siblings always is.
fn past_limits(
    object: &Object,
    (siblings_before, bytes_before): (usize, usize),
    limits: &crate::bucket::ObjectLimits,
) -> Option<Reply> {
    let siblings = object.siblings().len();
    if siblings > limits.max_siblings as usize && siblings > siblings_before {
        return Some(Reply::TooManySiblings {
            siblings: siblings as u32,
            max: limits.max_siblings,
        });
    }
    let bytes = object.encoded_len() as u64;
    if bytes > limits.max_object_bytes && bytes > bytes_before as u64 && siblings > 1 {
        return Some(Reply::ObjectTooLarge {
            bytes,
            max: limits.max_object_bytes,
        });
    }
    None
}
