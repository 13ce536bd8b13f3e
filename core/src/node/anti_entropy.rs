//! Anti-entropy: a Merkle tree per partition replica, updated on every write and built (and
//! periodically rebuilt) from the store by paged scans; one exchange per round compares a
//! partition's tree with one other replica's, and the keys that differ are repaired by a
//! two-replica read whose read repair writes back.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::ToString;
use alloc::vec::Vec;

use rand::Rng;

use super::{Node, PendingOp};
use crate::bucket::Quorums;
use crate::coordinator::Client;
use crate::id::{CoordinationId, Millis, NodeId};
use crate::io::Event;
use crate::merkle::{
    object_digest, Exchange, ExchangeRequest, ExchangeResponse, ExchangeStep, MerkleConfig,
    MerkleTree,
};
use crate::ring::{PartitionId, Strategy};
use crate::storage::{ScanRange, Space, StorageKey, StorageOp, StorageResult};
use crate::version::Object;
use crate::wire::Message;

/// An anti-entropy exchange with one peer over one partition.
#[derive(Debug)]
pub(super) struct ExchangeState {
    peer: NodeId,
    partition: PartitionId,
    exchange: Exchange,
    deadline: Millis,
}

/// A partition replica's Merkle tree and how far it is built from the store.
#[derive(Debug)]
pub(super) struct TreeState {
    tree: MerkleTree,
    /// Built from a full scan of the partition (until then it is not used in exchanges).
    built: bool,
    /// Where the building scan resumes.
    cursor: Option<StorageKey>,
    /// When the build finished.
    built_at: Millis,
    /// Keys whose digest changed while a page of the building scan was being read: the page
    /// may hold what they were before, so its entries for them are stale and skipped.
    touched_while_scanning: Option<BTreeSet<(Vec<u8>, Vec<u8>)>>,
}

/// The anti-entropy state.
#[derive(Debug, Default)]
pub(super) struct AntiEntropy {
    /// Merkle trees of the partitions this node replicates.
    pub(super) trees: BTreeMap<PartitionId, TreeState>,
    /// A page of a tree's building scan is being read.
    building: bool,
    /// Round-robin position over this node's partitions for the next exchange.
    next_exchange: u32,
    /// Exchanges this node started (at most one at a time).
    pub(super) exchanges: BTreeMap<CoordinationId, ExchangeState>,
}

impl Node {
    /// The Merkle root of every partition replica whose tree is built from the store. Replicas
    /// of one partition holding the same objects have the same root, so equal roots across a
    /// partition's replicas show they have converged.
    pub fn merkle_roots(&mut self) -> BTreeMap<PartitionId, u64> {
        self.anti_entropy
            .trees
            .iter_mut()
            .filter(|(_, state)| state.built)
            .map(|(partition, state)| (*partition, state.tree.root()))
            .collect()
    }

    /// The partitions this node holds a replica of.
    pub(super) fn my_partitions(&self) -> Vec<PartitionId> {
        let n = self.max_n();
        (0..self.routing.ring.partition_count())
            .map(PartitionId)
            .filter(|p| {
                self.routing
                    .ring
                    .partition_preference_list(*p, n)
                    .contains(&self.config.node_id)
            })
            .collect()
    }

    pub(super) fn tree_for(
        &mut self,
        partition: PartitionId,
        config: MerkleConfig,
    ) -> Option<&mut MerkleTree> {
        let state = match self.anti_entropy.trees.entry(partition) {
            alloc::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            alloc::collections::btree_map::Entry::Vacant(entry) => entry.insert(TreeState {
                tree: MerkleTree::new(config).ok()?,
                built: false,
                cursor: None,
                built_at: 0,
                touched_while_scanning: None,
            }),
        };
        Some(&mut state.tree)
    }

    /// Sets a key's digest in its partition's tree (`None`: the key is absent or damaged).
    pub(super) fn set_in_tree(&mut self, key: &StorageKey, digest: Option<u64>) {
        let config = self.config.merkle;
        if self.tree_for(key.partition, config).is_none() {
            return;
        }
        if let Some(state) = self.anti_entropy.trees.get_mut(&key.partition) {
            state.tree.update(&key.bucket, &key.key, digest);
            if let Some(touched) = &mut state.touched_while_scanning {
                touched.insert((key.bucket.clone(), key.key.clone()));
            }
        }
    }

    /// An anti-entropy round: build the next tree not yet built from the store, and start an
    /// exchange over the next partition with a built tree, with one of its other replicas.
    pub(super) fn anti_entropy_tick(&mut self) {
        // Trees are kept per partition, which under the token strategy does not have one
        // replica set for all its keys: exchanging them would copy keys to non-replicas. The
        // token strategy is kept for comparison only.
        if self.routing.ring.config().strategy != Strategy::Partitions {
            return;
        }
        let partitions = self.my_partitions();
        if !self.anti_entropy.building {
            // The oldest tree past its age is dropped and rebuilt from the store.
            let rebuild_every = self.config.tree_rebuild_interval_ms;
            let now = self.now;
            let stale = self
                .anti_entropy
                .trees
                .iter()
                .filter(|(_, t)| t.built && now.saturating_sub(t.built_at) >= rebuild_every)
                .min_by_key(|(_, t)| t.built_at)
                .map(|(p, _)| *p);
            if let Some(partition) = stale {
                self.anti_entropy.trees.remove(&partition);
            }
            let config = self.config.merkle;
            let unbuilt = partitions
                .iter()
                .copied()
                .find(|p| !self.anti_entropy.trees.get(p).is_some_and(|t| t.built));
            if let Some(partition) = unbuilt {
                if self.tree_for(partition, config).is_some() {
                    self.request_tree_page(partition);
                }
            }
        }
        let exchanging = !self.anti_entropy.exchanges.is_empty();
        if exchanging || partitions.is_empty() {
            return;
        }
        let n = self.max_n();
        for _ in 0..partitions.len() {
            let partition = partitions[self.anti_entropy.next_exchange as usize % partitions.len()];
            self.anti_entropy.next_exchange = self.anti_entropy.next_exchange.wrapping_add(1);
            if !self
                .anti_entropy
                .trees
                .get(&partition)
                .is_some_and(|t| t.built)
            {
                continue;
            }
            let peers: Vec<NodeId> = self
                .routing
                .ring
                .partition_preference_list(partition, n)
                .into_iter()
                .filter(|p| *p != self.config.node_id && self.reachable(p))
                .collect();
            if peers.is_empty() {
                continue;
            }
            let peer = peers[self.rng.gen_range(0..peers.len())].clone();
            let (exchange, request) = Exchange::new(self.config.exchange_max_items);
            let id = self.new_coordination_id();
            self.send(
                peer.clone(),
                Message::Exchange {
                    id,
                    partition,
                    request,
                },
            );
            let deadline = self.now.saturating_add(self.config.request_timeout_ms);
            self.arm_deadline(id, deadline);
            self.anti_entropy.exchanges.insert(
                id,
                ExchangeState {
                    peer,
                    partition,
                    exchange,
                    deadline,
                },
            );
            return;
        }
    }

    /// A damaged record is as good as missing: leaving it out of the tree lets the next
    /// exchange find the key and repair it from a peer.
    pub(super) fn forget_in_tree(&mut self, key: &StorageKey) {
        if key.space == Space::Data && self.anti_entropy.trees.contains_key(&key.partition) {
            self.set_in_tree(key, None);
        }
    }

    pub(super) fn request_tree_page(&mut self, partition: PartitionId) {
        let after = self.anti_entropy.trees.get_mut(&partition).and_then(|t| {
            t.touched_while_scanning = Some(BTreeSet::new());
            t.cursor.clone()
        });
        self.anti_entropy.building = true;
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Partition(partition),
                after,
                limit: self.config.tree_build_page.max(1),
            },
            PendingOp::TreeBuild(partition),
        );
    }

    pub(super) fn tree_page(&mut self, partition: PartitionId, result: StorageResult) {
        self.anti_entropy.building = false;
        let StorageResult::Scanned { items, done } = result else {
            return;
        };
        let mut damaged = Vec::new();
        let mut tombstones = Vec::new();
        let Some(state) = self.anti_entropy.trees.get_mut(&partition) else {
            return;
        };
        // A write that landed after the page was read is newer than the page's record.
        let touched = state.touched_while_scanning.take().unwrap_or_default();
        for (key, record) in &items {
            if touched.contains(&(key.bucket.clone(), key.key.clone())) {
                continue;
            }
            match Object::decode(record) {
                Ok(object) => {
                    state
                        .tree
                        .update(&key.bucket, &key.key, Some(object_digest(&object)));
                    if object.dead_since().is_some() {
                        tombstones.push((key.clone(), object));
                    }
                }
                // A damaged record is left out of the tree: the exchange then finds the key
                // missing here and repairs it from the peer.
                Err(error) => damaged.push((key.clone(), error.to_string())),
            }
        }
        if done {
            state.built = true;
            state.built_at = self.now;
            state.cursor = None;
        } else {
            state.cursor = items.last().map(|(key, _)| key.clone());
        }
        for (key, detail) in damaged {
            self.event(Event::ChecksumFailure {
                bucket: key.bucket,
                key: key.key,
                detail,
            });
        }
        for (key, object) in tombstones {
            self.consider_reaping(&key, &object);
        }
        if !done {
            self.request_tree_page(partition);
            return;
        }
        // Go straight on to the next partition without a tree: exchanges wait for trees.
        let config = self.config.merkle;
        let next = self
            .my_partitions()
            .into_iter()
            .find(|p| !self.anti_entropy.trees.get(p).is_some_and(|t| t.built));
        if let Some(next) = next {
            if self.tree_for(next, config).is_some() {
                self.request_tree_page(next);
            }
        }
    }

    /// A peer asks about this node's tree of a partition (a step of its exchange).
    pub(super) fn on_exchange(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        partition: PartitionId,
        request: ExchangeRequest,
    ) {
        let response = self
            .anti_entropy
            .trees
            .get_mut(&partition)
            .filter(|t| t.built)
            .and_then(|t| t.tree.answer(&request).ok());
        self.send(from, Message::ExchangeReply { id, response });
    }

    pub(super) fn finish_exchange(&mut self, id: CoordinationId) -> Option<ExchangeState> {
        let state = self.anti_entropy.exchanges.remove(&id)?;
        self.disarm_deadline(id, state.deadline);
        Some(state)
    }

    /// An exchange partner that does not answer is tried again later.
    pub(super) fn on_exchange_deadline(&mut self, id: CoordinationId) {
        if let Some(state) = self.finish_exchange(id) {
            self.event(Event::AntiEntropyAbandoned {
                partition: state.partition,
                peer: state.peer,
                reason: "no answer in time".to_string(),
            });
        }
    }

    pub(super) fn on_exchange_reply(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        response: Option<ExchangeResponse>,
    ) {
        match self.anti_entropy.exchanges.get(&id) {
            Some(state) if state.peer == from => {}
            _ => return,
        }
        let Some(mut state) = self.finish_exchange(id) else {
            return;
        };
        let step = match (response, self.anti_entropy.trees.get_mut(&state.partition)) {
            (Some(response), Some(tree)) => state
                .exchange
                .on_response(&mut tree.tree, response)
                .map_err(|e| e.to_string()),
            (None, _) => Err("the peer has no tree for the partition yet".to_string()),
            (_, None) => Err("this node no longer has a tree for the partition".to_string()),
        };
        match step {
            Ok(ExchangeStep::Request(request)) => {
                self.send(
                    from,
                    Message::Exchange {
                        id,
                        partition: state.partition,
                        request,
                    },
                );
                self.arm_deadline(id, state.deadline);
                self.anti_entropy.exchanges.insert(id, state);
            }
            Ok(ExchangeStep::Done(outcome)) => {
                let differing = outcome.differing.len() as u32;
                let repairs: Vec<_> = outcome
                    .differing
                    .into_iter()
                    .take(self.config.repair_batch)
                    .collect();
                let repaired = repairs.len() as u32;
                for (bucket, key) in repairs {
                    self.repair_key(bucket, key, state.peer.clone());
                }
                self.event(Event::AntiEntropy {
                    partition: state.partition,
                    peer: state.peer,
                    differing,
                    repaired,
                    requests: outcome.requests,
                });
            }
            Err(reason) => self.event(Event::AntiEntropyAbandoned {
                partition: state.partition,
                peer: state.peer,
                reason,
            }),
        }
    }

    /// Repairs one key between this node and `peer`: a read of both replicas whose read repair
    /// writes the merged object back to whichever is behind.
    pub(super) fn repair_key(&mut self, bucket: Vec<u8>, key: Vec<u8>, peer: NodeId) {
        // Trees cover the ring's target_n replicas; a bucket with a smaller N has fewer, and a
        // key of it must not be copied to a node that is not one of them.
        let n = self.bucket_props(&bucket).n;
        let replicas = self.preference_list(&bucket, &key, n);
        if !replicas.contains(&self.config.node_id) || !replicas.contains(&peer) {
            return;
        }
        let quorums = Quorums {
            n: 2,
            r: 2,
            w: 2,
            dw: 0,
            scopes: Default::default(),
        };
        let replicas = alloc::vec![self.config.node_id.clone(), peer];
        let timeout = self.config.request_timeout_ms;
        self.start_get(Client::Internal, bucket, key, quorums, replicas, timeout);
    }
}
