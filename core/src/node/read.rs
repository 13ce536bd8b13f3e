//! Coordination of a get: ask R replicas (more when one fails or is slow, all for a sampled
//! share), answer at R, and repair the stale ones at the end. The state machine is
//! [`crate::coordinator::get`]; this is where the node starts, advances and ends it.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;
use rand::Rng;

use super::Node;
use crate::bucket::Quorums;
use crate::coordinator::get::{first_to_ask, GetState, ReplicaState};
use crate::coordinator::{Client, Target};
use crate::id::{CoordinationId, Millis, NodeId};
use crate::io::Event;
use crate::version::Object;
use crate::wire::{Message, ReadResult};

impl Node {
    pub(super) fn start_get(
        &mut self,
        client: Client,
        bucket: Vec<u8>,
        key: Vec<u8>,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        timeout: Millis,
    ) -> CoordinationId {
        let id = self.new_coordination_id();
        let need = self.needs_or_majority(&quorums, &replicas).r;
        let targets = self.targets(&bucket, &key, replicas);
        // The node's own reads (anti-entropy, reap checks) need every replica; a sampled share
        // of client gets asks them all too, for read repair.
        let ask_all = matches!(client, Client::Internal | Client::Reap)
            || match self.config.read_all_percent {
                0 => false,
                100.. => true,
                percent => self.rng.gen_range(0..100) < percent,
            };
        let (replicas, held_back) = if ask_all {
            (targets, Vec::new())
        } else {
            let me = self.config.node_id.clone();
            first_to_ask(targets, &me, self.zone(), &need)
        };
        self.ask(id, &bucket, &key, &replicas);
        let fallbacks_at = self.config.fallback_at(self.now, timeout);
        let speculate_at = match self.requests.read_latencies.threshold() {
            Some(wait) if !held_back.is_empty() => self.now.saturating_add(wait).min(fallbacks_at),
            _ => fallbacks_at,
        };
        let state = GetState {
            client,
            mode: self.mode(&bucket),
            bucket,
            key,
            quorums,
            need,
            replicas,
            held_back,
            replies: BTreeMap::new(),
            extra: Default::default(),
            merged: Object::new(),
            answered: false,
            started: self.now,
            fallback_at: speculate_at,
            fallbacks_at,
            deadline: self.now.saturating_add(timeout),
        };
        self.arm_get(id, state);
        id
    }

    /// Sends a get's read to each of `targets`.
    fn ask(&mut self, id: CoordinationId, bucket: &[u8], key: &[u8], targets: &[Target]) {
        for target in targets {
            self.send(
                target.node.clone(),
                Message::Read {
                    id,
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    hint: target.hint.clone(),
                },
            );
        }
    }

    /// Asks a get's held-back targets (see [`GetState::held_back`]).
    pub(super) fn ask_held_back(&mut self, id: CoordinationId) {
        let Some(state) = self.requests.get_mut(id) else {
            return;
        };
        let held_back = core::mem::take(&mut state.held_back);
        state.replicas.extend(held_back.iter().cloned());
        let (bucket, key) = (state.bucket.clone(), state.key.clone());
        self.ask(id, &bucket, &key, &held_back);
    }

    pub(super) fn on_read_reply(&mut self, from: NodeId, id: CoordinationId, result: ReadResult) {
        let Some(state) = self.requests.get(id) else {
            return;
        };
        let replica_state = match result {
            ReadResult::Found(record) => match Object::decode(&record) {
                Ok(object) => ReplicaState::Found(object),
                Err(error) => {
                    let (bucket, key) = (state.bucket.clone(), state.key.clone());
                    self.event(Event::ChecksumFailure {
                        bucket,
                        key,
                        detail: format!("record from {from}: {error}"),
                    });
                    ReplicaState::Corrupt
                }
            },
            ReadResult::NotFound => ReplicaState::Missing,
            ReadResult::Corrupt => ReplicaState::Corrupt,
            ReadResult::Failed => ReplicaState::Failed,
        };
        let now = self.now;
        let Some(state) = self.requests.get_mut(id) else {
            return;
        };
        let asked = state.replicas.iter().any(|t| t.node == from);
        let latency = now.saturating_sub(state.started);
        state.record(&from, replica_state);
        let reply = state.take_reply(now);
        let client = state.client.clone();
        let ask_more = state.needs_held_back(&from);
        let done = state.all_replied() && !ask_more;
        if asked {
            self.requests.read_latencies.record(latency);
        }
        if let Some(reply) = reply {
            self.reply(client, reply);
        }
        if ask_more {
            self.ask_held_back(id);
        }
        if done {
            self.end_get(id);
        }
    }

    /// Ends a get: answers if it never did, and repairs the replicas that replied stale.
    pub(super) fn end_get(&mut self, id: CoordinationId) {
        let Some(mut state) = self.finish_get(id) else {
            return;
        };
        if let Some(reply) = state.final_reply(self.now) {
            self.reply_unavailable(state.client.clone(), reply);
        }
        let stale = state.stale_replicas();
        if state.client == Client::Reap {
            self.maybe_reap(&state, stale.is_empty());
        }
        if !self.config.read_repair || stale.is_empty() {
            return;
        }
        let record = state.merged.encode();
        for target in &stale {
            self.send(
                target.node.clone(),
                Message::Repair {
                    bucket: state.bucket.clone(),
                    key: state.key.clone(),
                    record: record.clone(),
                    hint: target.hint.clone(),
                },
            );
        }
        self.event(Event::ReadRepair {
            bucket: state.bucket,
            key: state.key,
            replicas: stale.into_iter().map(|t| t.node).collect(),
        });
    }
}
