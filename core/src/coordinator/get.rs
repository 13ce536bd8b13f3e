//! A get: ask the N replicas, answer once R have replied, merge, and repair the stale ones once
//! all have replied or the deadline passed.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{fallbacks_among, Client, Target};
use crate::config::{Millis, Quorums};
use crate::id::NodeId;
use crate::io::{QuorumKind, Reply};
use crate::version::{ConflictMode, Object};

/// What one replica's reply amounted to.
#[derive(Clone, Debug)]
pub(crate) enum ReplicaState {
    /// An object, checksums verified.
    Found(Object),
    /// No record.
    Missing,
    /// A record that failed its checksum: treated as missing, so it is repaired, but it does not
    /// count toward R (the replica cannot vouch for what it held).
    Corrupt,
    /// The replica's storage failed: it does not count toward R and is not repaired.
    Failed,
}

#[derive(Clone, Debug)]
pub(crate) struct GetState {
    pub client: Client,
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    pub quorums: Quorums,
    pub mode: ConflictMode,
    pub replicas: Vec<Target>,
    pub replies: BTreeMap<NodeId, ReplicaState>,
    pub merged: Object,
    pub answered: bool,
    pub deadline: Millis,
}

impl GetState {
    /// Records a replica's reply; replies from non-replicas and repeated replies are ignored.
    pub fn record(&mut self, from: &NodeId, state: ReplicaState) {
        if !self.replicas.iter().any(|t| t.node == *from) || self.replies.contains_key(from) {
            return;
        }
        if let ReplicaState::Found(object) = &state {
            self.merged.merge(object, self.mode);
        }
        self.replies.insert(from.clone(), state);
    }

    fn successful(&self) -> impl Iterator<Item = &NodeId> {
        self.replies
            .iter()
            .filter(|(_, s)| !matches!(s, ReplicaState::Failed | ReplicaState::Corrupt))
            .map(|(n, _)| n)
    }

    /// The reply to send now, if R replies are in and none was sent yet.
    pub fn take_reply(&mut self) -> Option<Reply> {
        if self.answered || (self.successful().count() as u32) < self.quorums.r {
            return None;
        }
        self.answered = true;
        let replicas: Vec<NodeId> = self.successful().cloned().collect();
        Some(Reply::Got {
            values: self.merged.values().map(<[u8]>::to_vec).collect(),
            context: self.merged.context(),
            fallbacks: fallbacks_among(&self.replicas, &replicas),
            replicas,
            read_your_writes: self.quorums.read_your_writes(),
        })
    }

    /// The reply at the deadline when R was not reached.
    pub fn unavailable(&mut self) -> Option<Reply> {
        if self.answered {
            return None;
        }
        self.answered = true;
        Some(Reply::Unavailable {
            kind: QuorumKind::Read,
            needed: self.quorums.r,
            answered: self.successful().cloned().collect(),
        })
    }

    /// Whether every replica has replied.
    pub fn all_replied(&self) -> bool {
        self.replies.len() == self.replicas.len()
    }

    /// Targets that replied with less than the merged object.
    pub fn stale_replicas(&self) -> Vec<Target> {
        if self.merged.is_empty() {
            return Vec::new();
        }
        self.replicas
            .iter()
            .filter(|target| match self.replies.get(&target.node) {
                Some(ReplicaState::Found(object)) => *object != self.merged,
                Some(ReplicaState::Missing | ReplicaState::Corrupt) => true,
                Some(ReplicaState::Failed) | None => false,
            })
            .cloned()
            .collect()
    }
}
