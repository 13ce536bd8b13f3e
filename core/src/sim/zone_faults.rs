//! Faults of a whole zone: cut off, crashed, lost with its disks, restarted.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{names, Sim, TraceEntry, TraceKind};
use crate::id::NodeId;
use crate::store::MemStore;

impl Sim {
    /// Cuts every link between the zone's nodes and all other nodes, both ways (a zone cut off
    /// from the rest, its own links intact). Returns the zone's nodes.
    pub fn isolate_zone(&mut self, zone: &str) -> Vec<NodeId> {
        let inside = self.nodes_in_zone(zone);
        for outside in self.nodes.keys().filter(|id| !inside.contains(id)) {
            for node in &inside {
                self.cut.insert((node.clone(), outside.clone()));
                self.cut.insert((outside.clone(), node.clone()));
            }
        }
        self.trace_links(format!(
            "isolate zone {zone} ({}): its links to every other zone cut, both ways",
            names(&inside)
        ));
        inside
    }

    /// Restores the links between the zone's nodes and the rest (other cuts stay).
    pub fn reconnect_zone(&mut self, zone: &str) {
        let inside = self.nodes_in_zone(zone);
        self.cut
            .retain(|(from, to)| inside.contains(from) == inside.contains(to));
        self.trace_links(format!("reconnect zone {zone} ({})", names(&inside)));
    }

    /// Crashes every node of the zone (a zone's power or network outage that stops its
    /// processes). Returns the zone's nodes.
    pub fn crash_zone(&mut self, zone: &str) -> Vec<NodeId> {
        let inside = self.nodes_in_zone(zone);
        self.trace_zone(format!("zone {zone} crashes ({})", names(&inside)));
        for node in &inside {
            self.crash(node.as_str());
        }
        inside
    }

    /// Crashes every node of the zone and loses their disks ([`Sim::lose_disk`]): the zone is
    /// gone, and comes back empty. Returns the zone's nodes.
    pub fn lose_zone(&mut self, zone: &str) -> Vec<NodeId> {
        let inside = self.nodes_in_zone(zone);
        self.trace_zone(format!(
            "zone {zone} is lost, disks and all ({})",
            names(&inside)
        ));
        for node in &inside {
            self.lose_disk(node.as_str());
        }
        inside
    }

    /// Restarts every crashed node of the zone.
    pub fn restart_zone(&mut self, zone: &str) {
        let inside = self.nodes_in_zone(zone);
        self.trace_zone(format!("zone {zone} restarts ({})", names(&inside)));
        for node in &inside {
            self.restart(node.as_str());
        }
    }

    /// Crashes a node (if it is up) and replaces its disk with an empty one: its data, hints and
    /// persisted view are gone. It restarts ([`Sim::restart`]) as a new incarnation from the
    /// initial members, learns the cluster's view by gossip, and gets its data back from the
    /// other replicas (anti-entropy, read repair). Returns whether there was such a node.
    pub fn lose_disk(&mut self, node: &str) -> bool {
        self.crash(node);
        let id = NodeId::new(node);
        let Some(sim_node) = self.nodes.get_mut(&id) else {
            return false;
        };
        sim_node.store = MemStore::new();
        self.trace.push(TraceEntry {
            at: self.now,
            node: id,
            kind: TraceKind::DiskLost,
        });
        true
    }

    fn trace_zone(&mut self, what: String) {
        self.trace.push(TraceEntry {
            at: self.now,
            node: NodeId::new("*"),
            kind: TraceKind::Zone(what),
        });
    }
}
