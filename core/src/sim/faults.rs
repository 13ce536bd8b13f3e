//! Faults of links, nodes and disks: partitions, one-way cuts, message loss, crashes (with or
//! without losing unsynced writes), restarts, damaged records, and nodes taken away for good.
//! Whole zones are [`super::zone_faults`]'.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use rand::Rng;

use super::{OpOutcome, Sim, TraceEntry, TraceKind};
use crate::id::NodeId;
use crate::membership::ClusterView;
use crate::node::Node;
use crate::storage::{Space, StorageKey};

impl Sim {
    /// Cuts every link between the groups (both ways); nodes in no group keep their links.
    pub fn partition(&mut self, groups: &[&[&str]]) {
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in a.iter() {
                        for y in b.iter() {
                            self.cut.insert((NodeId::new(*x), NodeId::new(*y)));
                        }
                    }
                }
            }
        }
        self.trace_links(format!("partition {groups:?}"));
    }

    /// Cuts the link from `from` to `to` only (an asymmetric partition).
    pub fn cut(&mut self, from: &str, to: &str) {
        self.cut.insert((NodeId::new(from), NodeId::new(to)));
        self.trace_links(format!("cut {from} -> {to}"));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.trace_links("heal".to_string());
    }

    /// Sets the probability that a message is lost.
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss;
    }

    pub(super) fn trace_links(&mut self, what: String) {
        let at = self.now;
        self.trace.push(TraceEntry {
            at,
            node: NodeId::new("*"),
            kind: TraceKind::Links(what),
        });
    }

    /// Crashes a node: its memory (requests in flight included) is gone; its store stays, less the
    /// unsynced writes if the configuration says crashes lose them.
    pub fn crash(&mut self, node: &str) {
        let id = NodeId::new(node);
        let lose = self.config.lose_unsynced_on_crash;
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return;
        };
        if sim_node.node.take().is_none() {
            return;
        }
        sim_node.store.crash(lose);
        let lost: Vec<usize> = core::mem::take(&mut sim_node.requests)
            .into_values()
            .collect();
        self.reindex(&id);
        for index in lost {
            self.complete(index, OpOutcome::Lost);
        }
        self.trace.push(TraceEntry {
            at: self.now,
            node: id,
            kind: TraceKind::Crashed,
        });
    }

    /// Stops a node for good and discards its disk, as an operator does with a node that left
    /// once it is drained. Returns whether there was such a node.
    pub fn decommission(&mut self, node: &str) -> bool {
        self.crash(node);
        let id = NodeId::new(node);
        let Some(gone) = self.nodes.remove(&id) else {
            return false;
        };
        if let Some(deadline) = gone.indexed_deadline {
            self.deadlines.remove(&(deadline, id.clone()));
        }
        for (key, _) in gone.store.iter() {
            if !matches!(key.space, Space::Meta) {
                self.discarded.push(format!(
                    "{id} discarded {:?} {}/{}",
                    key.space,
                    String::from_utf8_lossy(&key.bucket),
                    String::from_utf8_lossy(&key.key)
                ));
            }
        }
        {
            self.trace.push(TraceEntry {
                at: self.now,
                node: id,
                kind: TraceKind::Decommissioned,
            });
        }
        true
    }

    /// Restarts a crashed node as a new incarnation over its store.
    pub fn restart(&mut self, node: &str) {
        let id = NodeId::new(node);
        let Some(sim_node) = self.nodes.get(&id) else {
            return;
        };
        if sim_node.node.is_some() {
            return;
        }
        let incarnation = sim_node.incarnation + 1;
        let skew = sim_node.skew;
        // A node restarts from the view it persisted, as a real host does.
        let persisted = sim_node
            .store
            .get(&StorageKey::view())
            .and_then(|record| ClusterView::decode(record).ok());
        let members = self.members.clone();
        let fresh = match persisted {
            Some(view) => {
                let config = self.node_config(&id, incarnation);
                match Node::from_view(config, view, self.now + skew) {
                    Ok(node) => node,
                    Err(_) => self.make_node(&id, incarnation, &members, skew),
                }
            }
            None => self.make_node(&id, incarnation, &members, skew),
        };
        if let Some(sim_node) = self.nodes.get_mut(&id) {
            sim_node.node = Some(fresh);
            sim_node.incarnation = incarnation;
        }
        self.reindex(&id);
        self.trace.push(TraceEntry {
            at: self.now,
            node: id,
            kind: TraceKind::Restarted,
        });
    }

    /// Flips a byte of the stored record of a key on a node (disk corruption). Returns whether
    /// there was a record.
    pub fn corrupt(&mut self, node: &str, bucket: &[u8], key: &[u8]) -> bool {
        let storage_key = self.storage_key(bucket, key);
        let index = self.rng.gen::<usize>();
        match self.nodes.get_mut(&NodeId::new(node)) {
            Some(sim_node) => sim_node.store.corrupt(&storage_key, |record| {
                if !record.is_empty() {
                    let i = index % record.len();
                    record[i] ^= 0x5a;
                }
            }),
            None => false,
        }
    }
}
