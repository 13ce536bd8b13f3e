//! Reaping: a deleted or expired key leaves the disk once the grace period is over and every
//! replica is known to hold that very object (a read of all N, none a fallback, under a ring that
//! is not moving). A write since the check keeps the key. An expired value goes the same way as a
//! tombstone, so nothing expired comes back through read repair, hints or anti-entropy.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::{DeleteCondition, Node, PendingOp};
use crate::bucket::Quorums;
use crate::coordinator::get::{GetState, ReplicaState};
use crate::coordinator::Client;
use crate::id::Millis;
use crate::membership::MemberStatus;
use crate::merkle::object_digest;
use crate::storage::{Space, StorageKey, StorageOp, StorageResult};
use crate::version::Object;
use crate::wire::Message;

/// Keys past (or soon past) their grace period that this node, as their first replica, will
/// check for reaping: an expired session leaves the disk soon after its grace period, not at the
/// next tree rebuild. Bounded; keys it cannot hold are found by the rebuild.
#[derive(Debug, Default)]
pub(super) struct ReapSchedule {
    due: BTreeSet<(Millis, StorageKey)>,
    /// When each scheduled key is due, and whether it is deleted (every sibling a tombstone)
    /// rather than expired: one entry per key (a refreshed session moves its own).
    when: BTreeMap<StorageKey, (Millis, bool)>,
    /// Of the scheduled keys, the deleted ones (the rest are expired).
    deleted: usize,
}

/// The keys a node has scheduled for a reap check (see [`Node::reap_backlog`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReapBacklog {
    /// Deleted keys (every sibling a tombstone).
    pub tombstones: u64,
    /// Keys whose values have all expired (or will by their check).
    pub expired: u64,
}

impl ReapSchedule {
    fn insert(&mut self, key: StorageKey, when: Millis, deleted: bool) {
        if let Some((before, was_deleted)) = self.when.insert(key.clone(), (when, deleted)) {
            self.due.remove(&(before, key.clone()));
            self.deleted = self.deleted.saturating_sub(usize::from(was_deleted));
        }
        self.deleted += usize::from(deleted);
        self.due.insert((when, key));
    }

    fn pop_due(&mut self, now: Millis) -> Option<StorageKey> {
        let (when, _) = self.due.first()?;
        if *when > now {
            return None;
        }
        let (_, key) = self.due.pop_first()?;
        if let Some((_, deleted)) = self.when.remove(&key) {
            self.deleted = self.deleted.saturating_sub(usize::from(deleted));
        }
        Some(key)
    }
}

/// Keys a node keeps scheduled for a reap check at most.
const MAX_SCHEDULED_REAPS: usize = 100_000;
/// Reap checks started per anti-entropy tick at most.
const REAP_CHECKS_PER_TICK: usize = 256;

impl Node {
    /// This node stored `object`: if it is dead or will be (every sibling a tombstone or a
    /// value with an expiry) and this node is the key's first replica, its reap check is
    /// scheduled for the end of its grace period.
    pub(super) fn schedule_reap(&mut self, key: &StorageKey, object: &Object) {
        let full = self.reaps.when.len() >= MAX_SCHEDULED_REAPS;
        if key.space != Space::Data || (full && !self.reaps.when.contains_key(key)) {
            return;
        }
        let Some(dead) = object.dead_since() else {
            return;
        };
        let when = dead
            .saturating_add(self.config.tombstone_grace_ms)
            .saturating_add(1);
        // Past the next tree rebuild, the rebuild finds it: no slot is held for years.
        if when
            > self
                .now
                .saturating_add(self.config.tree_rebuild_interval_ms)
        {
            return;
        }
        let n = self.bucket_props(&key.bucket).n;
        let replicas = self.preference_list(&key.bucket, &key.key, n);
        if replicas.first() != Some(&self.config.node_id) {
            return;
        }
        self.reaps.insert(key.clone(), when, object.is_deleted());
    }

    /// The keys this node, as their first replica, has scheduled for a reap check: deleted or
    /// expired keys whose grace period ends before the next tree rebuild (at most 100,000; the
    /// rebuild finds the others). A backlog that only grows means reaps are not completing (a
    /// replica out of reach, a ring that keeps moving).
    pub fn reap_backlog(&self) -> ReapBacklog {
        let scheduled = self.reaps.when.len();
        let deleted = self.reaps.deleted.min(scheduled);
        ReapBacklog {
            tombstones: deleted as u64,
            expired: (scheduled - deleted) as u64,
        }
    }

    /// Starts the reap checks that are due (a read of the key's record first).
    pub(super) fn start_due_reaps(&mut self) {
        for _ in 0..REAP_CHECKS_PER_TICK {
            let Some(key) = self.reaps.pop_due(self.now) else {
                return;
            };
            self.storage(
                StorageOp::Get { key: key.clone() },
                PendingOp::ReapCheck(key),
            );
        }
    }

    /// A scheduled key's record: still dead, it is considered for reaping, and checked again
    /// a grace period later in case this check could not reap it (a replica out of reach, the
    /// ring moving). Gone or alive, it is forgotten.
    pub(super) fn reap_check_read(&mut self, key: StorageKey, result: StorageResult) {
        let StorageResult::Record(Some(record)) = result else {
            return;
        };
        let Ok(object) = Object::decode(&record) else {
            return;
        };
        if !object.is_dead_at(self.now) {
            return;
        }
        self.consider_reaping(&key, &object);
        if self.reaps.when.len() < MAX_SCHEDULED_REAPS {
            let again = self
                .now
                .saturating_add(self.config.tombstone_grace_ms.max(1_000));
            self.reaps.insert(key, again, object.is_deleted());
        }
    }

    /// A dead object (deleted or expired) met while building a tree: if this node is the key's
    /// first replica and the grace period is over, check whether every replica has it.
    pub(super) fn consider_reaping(&mut self, key: &StorageKey, object: &Object) {
        if self.routing.ring_version.is_none() {
            return;
        }
        // Not while the ring is moving: a receiver might not have the tombstone yet.
        if self
            .membership
            .view
            .ring()
            .is_some_and(|s| s.next.is_some())
        {
            return;
        }
        if !self.dead_past_grace(object) {
            return;
        }
        // Not while a node may hold a hint or an orphaned record of this partition: it could be
        // older than the delete and would come back once delivered. Nor while a member is out
        // of reach: it may hold one it could not yet tell anyone about.
        if self
            .membership
            .view
            .handoff_holder(key.partition.0)
            .is_some()
        {
            return;
        }
        let me = &self.config.node_id;
        let out_of_reach =
            self.membership.view.members().any(|m| {
                m.id != *me && m.status != MemberStatus::Removed && !self.reachable(&m.id)
            });
        if out_of_reach {
            return;
        }
        let n = self.bucket_props(&key.bucket).n;
        let replicas = self.preference_list(&key.bucket, &key.key, n);
        if replicas.first() != Some(&self.config.node_id) {
            return;
        }
        let quorums = Quorums {
            n,
            r: n,
            w: n,
            dw: 0,
            scopes: Default::default(),
        };
        let timeout = self.config.request_timeout_ms;
        self.start_get(
            Client::Reap,
            key.bucket.clone(),
            key.key.clone(),
            quorums,
            replicas,
            timeout,
        );
    }

    /// A reap check ended: when every replica answered with the same dead object (and none
    /// stood in as a fallback), all of them delete it.
    pub(super) fn maybe_reap(&mut self, state: &GetState, all_equal: bool) {
        let unanimous = state.all_replied()
            && all_equal
            && state.replicas.iter().all(|t| t.hint.is_none())
            && state
                .replies
                .values()
                .all(|r| matches!(r, ReplicaState::Found(_)));
        if !unanimous || !self.dead_past_grace(&state.merged) {
            return;
        }
        let digest = object_digest(&state.merged);
        let Some(ring_version) = self.routing.ring_version else {
            return;
        };
        for target in &state.replicas {
            self.send(
                target.node.clone(),
                Message::Reap {
                    bucket: state.bucket.clone(),
                    key: state.key.clone(),
                    digest,
                    ring_version,
                },
            );
        }
    }

    /// Whether `object` is dead (every sibling a tombstone or an expired value) and has been for
    /// the grace period: only then may it leave the disk (reaped, or an orphan dropped rather
    /// than delivered). The grace covers the clock skew between the nodes deciding it.
    pub(super) fn dead_past_grace(&self, object: &Object) -> bool {
        object.is_dead_at(self.now)
            && object
                .dead_since()
                .is_some_and(|t| t.saturating_add(self.config.tombstone_grace_ms) <= self.now)
    }

    /// The first replica found every replica holding this dead object: delete it, unless the
    /// ring changed since the check or a write came since (the condition).
    pub(super) fn on_reap(
        &mut self,
        bucket: Vec<u8>,
        key: Vec<u8>,
        digest: u64,
        ring_version: u64,
    ) {
        // Only under the very ring the check was made in, and not while it moves.
        let settled = self
            .membership
            .view
            .ring()
            .is_some_and(|s| s.version == ring_version && s.next.is_none());
        if !settled {
            return;
        }
        let key = self.storage_key(&bucket, &key);
        self.delete_if(key, DeleteCondition::Dead(digest));
    }
}
