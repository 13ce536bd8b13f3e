//! The trace of a run: what happened, in order, for reading and for the visualizer.

use alloc::string::String;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{Millis, NodeId};
use crate::io::Event;

/// Something notable in a run, for the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceKind {
    /// A node's event output.
    Event(Event),
    /// The network dropped a message (loss or a cut link).
    Dropped {
        /// Receiver.
        to: NodeId,
        /// Why.
        reason: String,
    },
    /// The node crashed.
    Crashed,
    /// The node restarted.
    Restarted,
    /// The links changed.
    Links(String),
    /// The node was stopped for good and its disk discarded (after it drained).
    Decommissioned,
    /// The node's disk was lost: it is down, and restarts empty.
    DiskLost,
    /// A fault or a recovery of a whole zone (its nodes' own entries follow).
    Zone(String),
}

/// One trace entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    /// Virtual time.
    pub at: Millis,
    /// The node concerned.
    pub node: NodeId,
    /// What happened.
    pub kind: TraceKind,
}

impl TraceKind {
    /// A stable snake_case name: the event's [`Event::kind`], or `dropped`, `crashed`,
    /// `restarted`, `links`, `decommissioned`, `disk_lost`, `zone`.
    pub fn name(&self) -> &'static str {
        match self {
            TraceKind::Event(event) => event.kind(),
            TraceKind::Dropped { .. } => "dropped",
            TraceKind::Crashed => "crashed",
            TraceKind::Restarted => "restarted",
            TraceKind::Links(_) => "links",
            TraceKind::Decommissioned => "decommissioned",
            TraceKind::DiskLost => "disk_lost",
            TraceKind::Zone(_) => "zone",
        }
    }
}

/// One human-readable line (without the time): what happened, and where.
impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = &self.node;
        match &self.kind {
            // What a node's failure detector concludes is its own view, not a fact: say whose.
            TraceKind::Event(Event::PeerDown { peer }) => write!(f, "{node} sees {peer} down"),
            TraceKind::Event(Event::PeerUp { peer }) => write!(f, "{node} sees {peer} up"),
            TraceKind::Event(event) => write!(f, "{node}: {event}"),
            TraceKind::Dropped { to, reason } if to.as_str().is_empty() => {
                write!(f, "message to {node} dropped: {reason}")
            }
            TraceKind::Dropped { to, reason } => {
                write!(f, "message from {node} to {to} dropped: {reason}")
            }
            TraceKind::Crashed => write!(f, "{node} crashed"),
            TraceKind::Restarted => write!(f, "{node} restarted"),
            TraceKind::Links(what) | TraceKind::Zone(what) => f.write_str(what),
            TraceKind::DiskLost => write!(f, "{node} lost its disk"),
            TraceKind::Decommissioned => {
                write!(f, "{node} stopped for good, its disk discarded")
            }
        }
    }
}
