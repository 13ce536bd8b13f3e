//! Transfers: when the ring changes, every node that gains a partition pulls it from the
//! current replicas in resumable chunks, and records in the view that it has; the claimant
//! switches to the next ring once every transfer is recorded. Writes made meanwhile are copied
//! to the receivers too (pending receivers), so nothing written during the move is missed.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::{Node, PendingOp};
use crate::id::{CoordinationId, Millis, NodeId};
use crate::io::Event;
use crate::membership::MemberStatus;
use crate::ring::{key_position, PartitionId};
use crate::storage::{ScanRange, Space, StorageKey, StorageOp, StorageResult};
use crate::wire::Message;

/// A partition this node pulls from a current replica before it owns it under the next ring.
#[derive(Debug)]
pub(super) struct PullState {
    source: NodeId,
    id: CoordinationId,
    /// Last key received: the transfer resumes after it.
    cursor: Option<StorageKey>,
    /// Whether a chunk request is out, and until when it is waited for.
    waiting_until: Option<Millis>,
    /// The last chunk has arrived.
    finished: bool,
}

/// The transfers this node is pulling for the next ring, per partition and source.
#[derive(Debug, Default)]
pub(super) struct Transfers {
    pub(super) pulls: BTreeMap<(PartitionId, NodeId), PullState>,
}

impl Transfers {
    /// A record of `partition` failed to be stored: that partition's pulls start over rather
    /// than be recorded as received without it.
    pub(super) fn restart(&mut self, partition: PartitionId) {
        for ((pulled, _), pull) in self.pulls.iter_mut() {
            if *pulled == partition {
                pull.finished = false;
                pull.cursor = None;
                pull.waiting_until = None;
            }
        }
    }
}

impl Node {
    /// Partition pulls under way (started, not finished), at most
    /// [`NodeConfig::max_concurrent_pulls`](crate::config::NodeConfig::max_concurrent_pulls).
    pub fn pulls_under_way(&self) -> usize {
        self.transfers
            .pulls
            .values()
            .filter(|p| !p.finished)
            .count()
    }

    /// Pulls what this node must receive under the next ring, and records in the view each
    /// partition it has received. Returns whether the view changed.
    ///
    /// A receiver pulls a partition from *every* current replica (bar removed ones), not just
    /// one: a write acknowledged by W of them may be missing on the others, and the replica
    /// being replaced may hold the only copy within the next ring. The switch waits for all.
    pub(super) fn transfer_step(&mut self) -> bool {
        let me = self.config.node_id.clone();
        let n = self.max_n();
        let Some(state) = self.membership.view.ring() else {
            return false;
        };
        let mut wanted: Vec<(PartitionId, NodeId)> = Vec::new();
        for (partition, receivers) in state.transfers(n) {
            if receivers.contains(&me) && !state.transferred.contains(&(partition.0, me.clone())) {
                for source in state.ring.partition_preference_list(partition, n) {
                    let removed = self
                        .membership
                        .view
                        .member(&source)
                        .is_some_and(|m| m.status == MemberStatus::Removed);
                    if source != me && !removed {
                        wanted.push((partition, source));
                    }
                }
            }
        }
        let wanted_set: BTreeSet<(PartitionId, NodeId)> = wanted.iter().cloned().collect();
        self.transfers
            .pulls
            .retain(|key, _| wanted_set.contains(key));
        // Pulls under way (started, not finished) are resumed; new ones start only while
        // fewer than `max_concurrent_pulls` are under way.
        let mut under_way = self
            .transfers
            .pulls
            .values()
            .filter(|p| !p.finished)
            .count();
        let max_pulls = self.config.max_concurrent_pulls.max(1);
        for (partition, source) in wanted {
            let key = (partition, source.clone());
            match self.transfers.pulls.get(&key) {
                Some(pull) if pull.finished => {}
                Some(pull) if pull.waiting_until.is_some_and(|t| t > self.now) => {}
                None if under_way >= max_pulls => {}
                existing => {
                    if existing.is_none() {
                        under_way += 1;
                    }
                    // Start, or resume after a lost chunk (from the last key received).
                    let cursor = self
                        .transfers
                        .pulls
                        .get(&key)
                        .and_then(|p| p.cursor.clone());
                    let id = self.new_coordination_id();
                    self.send(
                        source.clone(),
                        Message::TransferPull {
                            id,
                            partition,
                            after: cursor.clone(),
                        },
                    );
                    self.transfers.pulls.insert(
                        key,
                        PullState {
                            source,
                            id,
                            cursor,
                            waiting_until: Some(
                                self.now.saturating_add(self.config.request_timeout_ms),
                            ),
                            finished: false,
                        },
                    );
                }
            }
        }
        // A partition is received once every source has sent its last chunk and every record
        // of it is stored here.
        let partitions: BTreeSet<PartitionId> = wanted_set.iter().map(|(p, _)| *p).collect();
        let mut changed = false;
        for partition in partitions {
            let all_finished = wanted_set
                .iter()
                .filter(|(p, _)| *p == partition)
                .all(|key| {
                    self.transfers
                        .pulls
                        .get(key)
                        .is_some_and(|pull| pull.finished)
                });
            let pending_writes = self.replica.writes_pending_in(partition);
            if all_finished && !pending_writes {
                changed |= self.membership.view.mark_transferred(partition, &me);
                self.transfers.pulls.retain(|(p, _), _| *p != partition);
            }
        }
        changed
    }

    /// A receiver asks for the next chunk of a partition.
    pub(super) fn serve_transfer(
        &mut self,
        to: NodeId,
        id: CoordinationId,
        partition: PartitionId,
        after: Option<StorageKey>,
    ) {
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Partition(partition),
                after,
                limit: self.config.tree_build_page.max(1),
            },
            PendingOp::ServeTransfer { to, id, partition },
        );
    }

    /// A chunk of a partition was read for a receiver: send it.
    pub(super) fn transfer_page_read(
        &mut self,
        to: NodeId,
        id: CoordinationId,
        partition: PartitionId,
        result: StorageResult,
    ) {
        let (items, done) = match result {
            StorageResult::Scanned { items, done } => (items, done),
            // Nothing sent: the receiver's wait runs out and it asks again.
            _ => return,
        };
        let (keys, bytes) = chunk_size(&items);
        self.event(Event::TransferSent {
            partition,
            to: to.clone(),
            keys,
            bytes,
            done,
        });
        self.send(to, Message::TransferChunk { id, items, done });
    }

    /// A chunk of a partition this node pulls: store it and ask for the next.
    pub(super) fn on_transfer_chunk(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        items: Vec<(StorageKey, Vec<u8>)>,
        done: bool,
    ) {
        let Some(key) = self
            .transfers
            .pulls
            .iter()
            .find(|(_, p)| p.id == id && p.source == from)
            .map(|(key, _)| key.clone())
        else {
            return;
        };
        let partition = key.0;
        let (keys, bytes) = chunk_size(&items);
        self.event(Event::TransferReceived {
            partition,
            from: from.clone(),
            keys,
            bytes,
            done,
        });
        let last = items.last().map(|(k, _)| k.clone());
        for (item, record) in items {
            if item.space != Space::Data || item.partition != partition {
                continue;
            }
            // Synced: the transfer is recorded as done once these are stored, and the switch
            // that follows may leave this node the only new holder of some of them.
            self.on_replica_write(
                from.clone(),
                None,
                item.bucket,
                item.key,
                record,
                true,
                None,
            );
        }
        let now = self.now;
        let timeout = self.config.request_timeout_ms;
        let next_id = self.new_coordination_id();
        let mut next = None;
        if let Some(pull) = self.transfers.pulls.get_mut(&key) {
            if last.is_some() {
                pull.cursor = last;
            }
            pull.finished = done;
            pull.waiting_until = None;
            if !done {
                pull.id = next_id;
                pull.waiting_until = Some(now.saturating_add(timeout));
                next = Some(pull.cursor.clone());
            }
        }
        if let Some(after) = next {
            self.send(
                from,
                Message::TransferPull {
                    id: next_id,
                    partition,
                    after,
                },
            );
        } else if done && self.transfer_step() {
            // A pull ended: the next one starts now, not at the next gossip round.
            self.view_changed();
        }
    }

    /// Nodes that will hold the key under the next ring but do not now: writes are copied to
    /// them while the partition is transferred, so nothing written during the move is missed.
    pub(super) fn pending_receivers(&self, bucket: &[u8], key: &[u8]) -> Vec<NodeId> {
        let Some(state) = self.membership.view.ring() else {
            return Vec::new();
        };
        let Some(next) = &state.next else {
            return Vec::new();
        };
        let n = self.max_n();
        let position = key_position(bucket, key);
        let now = state.ring.preference_list(position, n);
        next.preference_list(position, n)
            .into_iter()
            .filter(|node| !now.contains(node))
            .collect()
    }
}

/// Records and bytes (keys and encoded objects) of a transfer chunk, for its event.
fn chunk_size(items: &[(StorageKey, Vec<u8>)]) -> (u32, u64) {
    let keys = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let bytes = items
        .iter()
        .map(|(key, record)| (key.bucket.len() + key.key.len() + record.len()) as u64)
        .sum();
    (keys, bytes)
}
