//! Hint delivery (hinted hand-off), and the delivery of orphaned records: a node delivers what it should not
//! keep to the nodes that should, synced there, then deletes its copy. Hints are the writes a
//! fallback took for an unreachable owner (sloppy quorum); orphans are records of partitions
//! this node no longer holds (after a ring change, or a write through a stale view).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use super::{Node, PendingOp};
use crate::id::{CoordinationId, Millis, NodeId};
use crate::io::Event;
use crate::ring::{key_position, PartitionId};
use crate::storage::{ScanRange, Space, StorageKey, StorageOp, StorageResult};
use crate::version::Object;
use crate::wire::Message;

/// A record (a hint or an orphan) sent to its owner, deleted here when the owner acknowledges
/// it synced.
#[derive(Debug)]
pub(super) struct Delivery {
    owner: NodeId,
    key: StorageKey,
    record: Vec<u8>,
    deadline: Millis,
}

/// Hint delivery's state.
#[derive(Debug, Default)]
pub(super) struct HintDelivery {
    /// Where the next hint scan resumes.
    cursor: Option<StorageKey>,
    /// A page of hints is being read.
    scanning: bool,
    /// Rounds so far: hint scans and orphan scans take turns.
    round: u64,
    /// Records sent to their owners and not acknowledged yet (at most a page's worth).
    pub(super) deliveries: BTreeMap<CoordinationId, Delivery>,
}

/// The orphan scan's state.
#[derive(Debug, Default)]
pub(super) struct OrphanScan {
    /// Where the next orphan scan resumes: partition and key.
    cursor: Option<(PartitionId, Option<StorageKey>)>,
    /// A page of a partition is being read.
    scanning: bool,
    /// Empty partitions skipped in a row.
    empty_streak: u32,
}

impl Node {
    /// A delivery round: read the next page of hints, unless the previous round's are still
    /// on their way (which bounds the records in flight to one page).
    pub(super) fn hint_delivery_tick(&mut self) {
        self.publish_handoff();
        let in_flight = !self.hints.deliveries.is_empty();
        if self.hints.scanning || self.orphans.scanning || in_flight {
            return;
        }
        // Every other round looks for records of partitions this node no longer holds.
        self.hints.round = self.hints.round.wrapping_add(1);
        if self.hints.round % 2 == 0 {
            self.orphans.empty_streak = 0;
            self.orphan_scan();
            return;
        }
        self.hints.scanning = true;
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Hints,
                after: self.hints.cursor.clone(),
                limit: self.config.hint_delivery_batch.max(1),
            },
            PendingOp::HintScan,
        );
    }

    pub(super) fn hints_scanned(&mut self, result: StorageResult) {
        self.hints.scanning = false;
        let StorageResult::Scanned { items, done } = result else {
            return;
        };
        self.hints.cursor = if done {
            None
        } else {
            items.last().map(|(key, _)| key.clone())
        };
        for (hint_key, _) in &items {
            self.note_hint_seen(hint_key.partition);
        }
        if done {
            // Every hint went by in this pass, those of this page included.
            self.hint_pass_done();
        }
        for (hint_key, record) in items {
            let Space::Hint { owner } = &hint_key.space else {
                continue;
            };
            if let Err(error) = Object::decode(&record) {
                // A damaged hint cannot be delivered; the owner's copy is repaired by read
                // repair and anti-entropy from the other replicas instead.
                self.event(Event::ChecksumFailure {
                    bucket: hint_key.bucket.clone(),
                    key: hint_key.key.clone(),
                    detail: format!("hint for {owner}: {error}"),
                });
                self.delete_if_unchanged(hint_key, record);
                continue;
            }
            // A hint for a node that left goes to the key's current first replica instead.
            let owner = if self.routing.ring.member(owner).is_some() {
                owner.clone()
            } else {
                match self
                    .preference_list(&hint_key.bucket, &hint_key.key, 1)
                    .into_iter()
                    .next()
                {
                    Some(replica) => replica,
                    None => continue,
                }
            };
            // Owners still suspected are skipped: the pings tell when they are back.
            if !self.reachable(&owner) {
                continue;
            }
            self.deliver(owner, hint_key, record);
        }
    }

    /// Reads the next page of a partition this node does not hold (after a ring change, or a
    /// write through a stale view): such records are handed to the key's current replicas like
    /// hints, then deleted here. This is how a replica that left a preference list passes on
    /// writes it took after its receivers had pulled the partition.
    fn orphan_scan(&mut self) {
        if self.routing.ring_version.is_none() {
            return;
        }
        let held = self.held_partitions();
        let count = self.routing.ring.partition_count();
        let (start, after) = self
            .orphans
            .cursor
            .clone()
            .unwrap_or((PartitionId(0), None));
        let next = (0..count)
            .map(|i| PartitionId((start.0 + i) % count))
            .find(|p| !held.contains(p));
        let Some(partition) = next else {
            // Nothing to scan: a pass over no partition is done.
            self.orphan_partition_done(None);
            return;
        };
        let after = if partition == start { after } else { None };
        self.orphans.scanning = true;
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Partition(partition),
                after,
                limit: self.config.hint_delivery_batch.max(1),
            },
            PendingOp::OrphanScan(partition),
        );
    }

    pub(super) fn orphans_scanned(&mut self, partition: PartitionId, result: StorageResult) {
        self.orphans.scanning = false;
        let StorageResult::Scanned { items, done } = result else {
            return;
        };
        let count = self.routing.ring.partition_count().max(1);
        self.orphans.cursor = if done {
            Some((PartitionId((partition.0 + 1) % count), None))
        } else {
            Some((partition, items.last().map(|(key, _)| key.clone())))
        };
        // Partitions with nothing to deliver are skipped at once (up to one pass round the
        // ring per round), so a node that left finds its records in seconds, not minutes.
        if items.is_empty() && done {
            self.orphan_partition_done(Some(partition));
            self.orphans.empty_streak += 1;
            if self.orphans.empty_streak < count {
                self.orphan_scan();
            }
            return;
        }
        self.orphans.empty_streak = 0;
        let me = self.config.node_id.clone();
        let next = self.membership.view.ring().and_then(|s| s.next.clone());
        for (key, record) in items {
            // Decided per key, with the key's own bucket N: under the token strategy one
            // partition's keys can have different replicas, and buckets differ in N.
            let n = self.bucket_props(&key.bucket).n as usize;
            let position = key_position(&key.bucket, &key.key);
            if self.routing.ring.preference_list(position, n).contains(&me)
                || next
                    .as_ref()
                    .is_some_and(|r| r.preference_list(position, n).contains(&me))
            {
                continue;
            }
            self.note_orphan_seen(partition);
            let Ok(object) = Object::decode(&record) else {
                // A damaged orphan is worth nothing; the replicas have their own copies.
                self.delete_if_unchanged(key.clone(), record);
                continue;
            };
            // An old tombstone (or long expired value) is dropped, not delivered: its replicas
            // may have reaped it, and handing it back would bring it back.
            if self.dead_past_grace(&object) {
                self.delete_if_unchanged(key.clone(), record);
                continue;
            }
            let owner = self
                .routing
                .ring
                .preference_list(key_position(&key.bucket, &key.key), n)
                .into_iter()
                .find(|node| *node != self.config.node_id && self.reachable(node));
            if let Some(owner) = owner {
                self.deliver(owner, key, record);
            }
        }
        if done {
            self.orphan_partition_done(Some(partition));
        }
    }

    /// Sends a record this node should not keep (a hint, an orphan) to `owner`, synced there
    /// before the local copy goes, so delivery never weakens what DW promised for the write.
    fn deliver(&mut self, owner: NodeId, key: StorageKey, record: Vec<u8>) {
        let id = self.new_coordination_id();
        self.send(
            owner.clone(),
            Message::Write {
                id,
                bucket: key.bucket.clone(),
                key: key.key.clone(),
                record: record.clone(),
                sync: true,
                hint: None,
            },
        );
        let deadline = self.now.saturating_add(self.config.request_timeout_ms);
        self.arm_deadline(id, deadline);
        self.hints.deliveries.insert(
            id,
            Delivery {
                owner,
                key,
                record,
                deadline,
            },
        );
    }

    /// The owner answered a delivery: once it holds the record synced, the copy here goes.
    pub(super) fn on_delivery_ack(
        &mut self,
        from: &NodeId,
        id: CoordinationId,
        stored: bool,
        synced: bool,
    ) {
        match self.hints.deliveries.get(&id) {
            Some(delivery) if delivery.owner == *from => {}
            _ => return,
        }
        if let Some(delivery) = self.hints.deliveries.remove(&id) {
            self.disarm_deadline(id, delivery.deadline);
            if stored && synced {
                self.delete_if_unchanged(delivery.key, delivery.record);
            }
        }
    }

    /// An owner that does not take its delivery in time is tried again next round.
    pub(super) fn on_delivery_deadline(&mut self, id: CoordinationId) {
        if let Some(delivery) = self.hints.deliveries.remove(&id) {
            self.disarm_deadline(id, delivery.deadline);
        }
    }
}
