//! A put (or delete): the coordinating replica writes locally first (that fixes the write's dot),
//! then sends the object to the other replicas; it answers once W have acknowledged, DW of them
//! durably, and keeps listening for the rest until all answered or the deadline. A node that
//! holds no replica and can reach no owner coordinates with a dot of a fresh actor instead, and
//! only sends (see `Node::start_fallback_put`).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::quorum::Need;
use super::{fallbacks_among, zones_of, Client, Target};
use crate::bucket::Quorums;
use crate::id::{Millis, NodeId};
use crate::request::{QuorumKind, Reply};
use crate::version::{Context, Dot};

#[derive(Clone, Debug)]
pub(crate) struct PutState {
    pub client: Client,
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    pub quorums: Quorums,
    /// What W and DW amount to for this key's replicas and this coordinator's zone.
    pub need_w: Need,
    pub need_dw: Need,
    pub replicas: Vec<Target>,
    pub acked: Vec<NodeId>,
    pub durable: BTreeSet<NodeId>,
    pub refused: BTreeSet<NodeId>,
    /// Set once the local write is done (or, for a restore, once the record is sent): the new
    /// object's context and the write's dot (`None` for a restore, which issues none).
    pub written: Option<(Context, Option<Dot>)>,
    /// The record sent to the replicas (kept to send it to fallbacks of silent ones).
    pub record: Option<Vec<u8>>,
    pub answered: bool,
    /// When replicas still silent are joined by fallbacks.
    pub fallback_at: Millis,
    pub deadline: Millis,
}

impl PutState {
    /// Records a replica's acknowledgement (or refusal); others and repeats are ignored.
    pub fn record(&mut self, from: &NodeId, stored: bool, synced: bool) {
        if !self.replicas.iter().any(|t| t.node == *from)
            || self.acked.contains(from)
            || self.refused.contains(from)
        {
            return;
        }
        if stored {
            self.acked.push(from.clone());
            if synced {
                self.durable.insert(from.clone());
            }
        } else {
            self.refused.insert(from.clone());
        }
    }

    fn durable_in_ack_order(&self) -> Vec<NodeId> {
        self.acked
            .iter()
            .filter(|n| self.durable.contains(*n))
            .cloned()
            .collect()
    }

    /// The success reply, once W acks (DW durable) are in and none was sent yet.
    pub fn take_reply(&mut self) -> Option<Reply> {
        let (context, dot) = self.written.as_ref()?;
        if self.answered || !self.w_met() || !self.dw_met() {
            return None;
        }
        self.answered = true;
        let Some(dot) = dot else {
            return Some(Reply::Restored {
                replicas: self.acked.clone(),
                fallbacks: fallbacks_among(&self.replicas, &self.acked),
            });
        };
        Some(Reply::Written {
            context: context.clone().bound_to(&self.bucket, &self.key),
            dot: dot.clone(),
            replicas: self.acked.clone(),
            durable: self.durable_in_ack_order(),
            fallbacks: fallbacks_among(&self.replicas, &self.acked),
            read_your_writes: self.quorums.read_your_writes(),
        })
    }

    /// The failure reply (deadline passed, or every replica answered without a quorum). A write
    /// some replica stored, or that may still be stored (sent and not answered, or its local
    /// write still queued), is [`Reply::OutcomeUnknown`]; only one that every replica refused is
    /// [`Reply::Unavailable`].
    pub fn failure(&mut self) -> Option<Reply> {
        if self.answered {
            return None;
        }
        self.answered = true;
        let nothing_stored = self.written.is_some() && self.acked.is_empty() && self.all_answered();
        let (kind, needed, answered) = if !self.w_met() {
            (QuorumKind::Write, self.need_w.total(), self.acked.clone())
        } else {
            (
                QuorumKind::Durable,
                self.need_dw.total(),
                self.durable_in_ack_order(),
            )
        };
        Some(if nothing_stored {
            Reply::Unavailable {
                kind,
                needed,
                answered,
            }
        } else {
            Reply::OutcomeUnknown {
                kind,
                needed,
                answered,
            }
        })
    }

    fn w_met(&self) -> bool {
        self.need_w
            .met(&zones_of(&self.replicas, self.acked.iter()))
    }

    fn dw_met(&self) -> bool {
        self.need_dw
            .met(&zones_of(&self.replicas, self.durable.iter()))
    }

    /// Targets that have neither acknowledged nor refused.
    pub fn silent(&self) -> Vec<Target> {
        self.replicas
            .iter()
            .filter(|t| !self.acked.contains(&t.node) && !self.refused.contains(&t.node))
            .cloned()
            .collect()
    }

    /// Whether every replica has answered.
    pub fn all_answered(&self) -> bool {
        self.acked.len() + self.refused.len() == self.replicas.len()
    }
}
