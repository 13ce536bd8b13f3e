//! The deterministic cluster simulator: many [`Node`]s with [`MemStore`]s in one process, a
//! virtual clock that jumps to the next thing that happens, and a seeded network that delays,
//! reorders, loses and partitions messages. Nodes crash (memory lost, store kept, unsynced writes
//! optionally lost) and restart. Every client operation and its outcome is recorded in a history
//! that [`crate::checker`] judges.
//!
//! The same [`SimConfig`] (seed included) gives the same run, byte for byte.
//!
//! ```
//! use ringkv_core::sim::{Sim, SimConfig};
//! let mut sim = Sim::new(SimConfig { nodes: 3, seed: 7, ..SimConfig::default() });
//! let put = sim.put("n1", b"cart", b"alice", b"milk", None);
//! assert!(put.is_ok());
//! let got = sim.get("n2", b"cart", b"alice");
//! assert_eq!(got.values(), vec![b"milk".to_vec()]);
//! assert!(sim.check().is_ok());
//! ```

mod campaign;
mod config;
mod faults;
mod trace;
mod zone_faults;
mod zone_loss;

pub use campaign::random_run;
use config::{initial_members, ring_config};
pub use config::{SimConfig, SimConfigError, MAX_SIM_MS};
pub use trace::{TraceEntry, TraceKind};
pub use zone_loss::{zone_loss_run, Tally, ZoneLoss, ZoneLossPlan, ZoneLossReport, ZonePhase};

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::checker::{self, FinalReplica, OpKind, OpOutcome, Operation, Verdict};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::bucket::{QuorumValue, RequestOptions};
use crate::config::NodeConfig;
use crate::id::{Millis, NodeId, OpId, RequestId};
use crate::io::Output;
use crate::membership::ClusterView;
use crate::node::Node;
use crate::request::ClientRequest;
use crate::ring::{key_position, Member, Ring};
use crate::storage::{Space, StorageKey, StorageOp, StorageResult};
use crate::store::MemStore;
use crate::version::{Context, Object};
use crate::wire::Message;

#[derive(Clone, Debug)]
enum Pending {
    Deliver {
        from: NodeId,
        to: NodeId,
        // Boxed: a message is far larger than a storage result, and most events are messages.
        message: Box<Message>,
    },
    /// A storage result on its way back. After a crash it reaches the restarted node, which
    /// ignores it: op ids are per incarnation.
    Storage {
        node: NodeId,
        op_id: OpId,
        result: StorageResult,
    },
}

#[derive(Debug)]
struct SimNode {
    /// How far this node's clock is ahead of the simulation's.
    skew: Millis,
    /// Its zone (its ring member's), which decides LAN or WAN delays.
    zone: Option<String>,
    node: Option<Node>,
    store: MemStore,
    incarnation: u64,
    /// Client requests in flight on this node: request id → history index.
    requests: BTreeMap<RequestId, usize>,
    /// This node's entry in [`Sim::deadlines`], as last indexed.
    indexed_deadline: Option<Millis>,
}

impl SimNode {
    /// The node's next deadline in simulation time.
    fn next_deadline(&self) -> Option<Millis> {
        let deadline = self.node.as_ref()?.poll_timeout()?;
        Some(deadline.saturating_sub(self.skew))
    }
}

/// A simulated cluster. See the [module docs](self).
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    members: Vec<Member>,
    ring: Ring,
    now: Millis,
    rng: ChaCha8Rng,
    seq: u64,
    next_request: RequestId,
    nodes: BTreeMap<NodeId, SimNode>,
    queue: BTreeMap<(Millis, u64), Pending>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    loss: f64,
    history: Vec<Operation>,
    trace: Vec<TraceEntry>,
    /// Records (data or hints) still on the disks of decommissioned nodes when they were
    /// discarded: a node that says it is drained must hold none.
    discarded: Vec<String>,
    /// Encoded bytes of the gossip messages each node has sent (see [`Sim::gossip_bytes`]).
    gossip_bytes: BTreeMap<NodeId, u64>,
    /// Nodes placed so far (initial and joined): the round-robin position of the next one's
    /// zone.
    placed: usize,
    /// Every running node's next deadline in simulation time, as (deadline, node): the next
    /// one is found without scanning every node at every step. Updated whenever a node may have
    /// changed ([`Sim::reindex`]).
    deadlines: BTreeSet<(Millis, NodeId)>,
    /// The view every node starts from (the initial members, all up, and their ring), built by
    /// the first node made.
    initial_view: Option<ClusterView>,
}

impl Sim {
    /// A cluster of `config.nodes` healthy nodes at time 0, or why the configuration cannot
    /// make one ([`SimConfig::validate`]).
    pub fn try_new(config: SimConfig) -> Result<Sim, SimConfigError> {
        config.validate()?;
        let members = initial_members(&config);
        let ring = Ring::new(ring_config(&config), members.clone())?;
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            loss: config.loss,
            config,
            ring,
            now: 0,
            seq: 0,
            next_request: 0,
            nodes: BTreeMap::new(),
            queue: BTreeMap::new(),
            cut: BTreeSet::new(),
            history: Vec::new(),
            trace: Vec::new(),
            discarded: Vec::new(),
            members: Vec::new(),
            gossip_bytes: BTreeMap::new(),
            placed: members.len(),
            initial_view: None,
            deadlines: BTreeSet::new(),
        };
        for member in &members {
            let skew = sim.rng.gen_range(0..=sim.config.max_clock_skew_ms);
            let node = sim.make_node(&member.id, 0, &members, skew);
            sim.nodes.insert(
                member.id.clone(),
                SimNode {
                    skew,
                    zone: member.zone.clone(),
                    node: Some(node),
                    store: MemStore::new(),
                    incarnation: 0,
                    requests: BTreeMap::new(),
                    indexed_deadline: None,
                },
            );
            sim.reindex(&member.id);
        }
        sim.members = members;
        Ok(sim)
    }

    /// [`Sim::try_new`] for configurations known to be valid (tests, examples).
    ///
    /// # Panics
    /// If the configuration is invalid ([`SimConfig::validate`]): a simulator set-up error, not a
    /// runtime condition.
    pub fn new(config: SimConfig) -> Sim {
        Sim::try_new(config).unwrap_or_else(|e| panic!("invalid simulator configuration: {e}"))
    }

    fn make_node(
        &mut self,
        id: &NodeId,
        incarnation: u64,
        members: &[Member],
        skew: Millis,
    ) -> Node {
        let config = self.node_config(id, incarnation);
        // The view (and its claimed ring) is the same for every node: built once, then copied
        // (its ring is shared), instead of each node claiming the ring for itself.
        let view = match &self.initial_view {
            Some(view) => view.clone(),
            None => {
                let view = Node::initial_view(&config, members).expect("simulator ring is valid");
                self.initial_view = Some(view.clone());
                view
            }
        };
        Node::from_view(config, view, self.now + skew).expect("simulator ring is valid")
    }

    fn node_config(&mut self, id: &NodeId, incarnation: u64) -> NodeConfig {
        let mut config = NodeConfig::new(id.clone());
        config.gossip.seeds = alloc::vec![NodeId::new("n1")];
        config.incarnation = incarnation;
        config.seed = self.rng.gen();
        config.ring = ring_config(&self.config);
        config.request_timeout_ms = self.config.request_timeout_ms;
        config.max_clock_entries = self.config.max_clock_entries;
        config.anti_entropy_interval_ms = self.config.anti_entropy_interval_ms;
        // A run lasts seconds: cross-zone exchanges get a turn every few rounds.
        config.cross_zone_anti_entropy_interval_ms = 4 * self.config.anti_entropy_interval_ms;
        config.gossip.interval_ms = self.config.gossip_interval_ms;
        // Rebuilt often, so a bad disk's silent damage is found within a run.
        config.tree_rebuild_interval_ms = 20 * self.config.anti_entropy_interval_ms;
        config.down_alert_ms = 5_000;
        config.tombstone_grace_ms = 10_000;
        config.default_bucket = self.config.default_bucket();
        config
    }

    /// Starts a new node that joins the cluster through the seed `n1`: it gets partitions once
    /// it has pulled their data. With zones it is placed in the next zone of the round
    /// ([`SimConfig::zones`]). Does nothing if the id is taken.
    pub fn join(&mut self, node: &str, capacity: u32) {
        let zone = self.config.zone_at(self.placed).map(String::from);
        self.join_in_zone(node, capacity, zone.as_deref());
    }

    /// [`Sim::join`] into the given zone (`None`: in no zone, a zone of its own for the ring,
    /// reached over WAN delays when the run has zones).
    pub fn join_in_zone(&mut self, node: &str, capacity: u32, zone: Option<&str>) {
        let id = NodeId::new(node);
        if self.nodes.contains_key(&id) {
            return;
        }
        let skew = self.rng.gen_range(0..=self.config.max_clock_skew_ms);
        let config = self.node_config(&id, 0);
        let mut member = Member::new(id.clone(), capacity);
        member.zone = zone.map(String::from);
        let Ok(fresh) = Node::join(config, member, self.now + skew) else {
            return;
        };
        self.placed += 1;
        self.nodes.insert(
            id.clone(),
            SimNode {
                skew,
                zone: zone.map(String::from),
                node: Some(fresh),
                store: MemStore::new(),
                incarnation: 0,
                requests: BTreeMap::new(),
                indexed_deadline: None,
            },
        );
        let what = match zone {
            Some(zone) => format!("{id} joins in zone {zone}"),
            None => format!("{id} joins"),
        };
        self.trace.push(TraceEntry {
            at: self.now,
            node: id.clone(),
            kind: TraceKind::Links(what),
        });
        self.pump(&id);
    }

    /// Gives an operator command to a node. Returns whether the node took it.
    pub fn command(&mut self, node: &str, command: crate::io::Command) -> bool {
        let id = NodeId::new(node);
        let now = self.now;
        let taken = match self.nodes.get_mut(&id) {
            Some(SimNode {
                node: Some(n),
                skew,
                ..
            }) => n.handle_command(now + *skew, command).is_ok(),
            _ => false,
        };
        self.pump(&id);
        taken
    }

    /// A running node's cluster view.
    pub fn view(&self, node: &str) -> Option<&ClusterView> {
        self.nodes
            .get(&NodeId::new(node))
            .and_then(|n| n.node.as_ref())
            .map(Node::view)
    }

    /// Tells a node to leave: it hands its partitions over, then is marked removed.
    pub fn leave(&mut self, node: &str) {
        self.command(node, crate::io::Command::Leave);
    }

    /// The ring most advanced among the running nodes' views (the one the cluster is converging
    /// on), or the initial ring.
    pub fn current_ring(&self) -> &Ring {
        self.nodes
            .values()
            .filter_map(|n| n.node.as_ref()?.view().ring())
            .max_by_key(|state| state.version)
            .map(|state| &state.ring)
            .unwrap_or(&self.ring)
    }

    /// The configuration the run was built with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual time now.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Ids of all nodes, up or crashed.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().cloned().collect()
    }

    /// The zone a node is in (`None`: the run has no zones, the node joined in none, or there is
    /// no such node).
    pub fn zone_of(&self, node: &str) -> Option<&str> {
        self.nodes.get(&NodeId::new(node))?.zone.as_deref()
    }

    /// The nodes of a zone, up or crashed, in name order.
    pub fn nodes_in_zone(&self, zone: &str) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.zone.as_deref() == Some(zone))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The one-way delay range of a message from `from` to `to`: the WAN range between nodes
    /// of different zones (or when either is in none), the LAN range inside a zone and in runs
    /// without zones.
    fn delay_range(&self, from: &NodeId, to: &NodeId) -> (Millis, Millis) {
        let lan = (self.config.min_delay_ms, self.config.max_delay_ms);
        if self.config.zones.is_empty() {
            return lan;
        }
        let zone = |id: &NodeId| self.nodes.get(id).and_then(|n| n.zone.as_deref());
        match (zone(from), zone(to)) {
            (Some(a), Some(b)) if a == b => lan,
            _ => (self.config.wan_min_delay_ms, self.config.wan_max_delay_ms),
        }
    }

    /// Whether the node is running.
    pub fn is_up(&self, node: &str) -> bool {
        self.nodes
            .get(&NodeId::new(node))
            .is_some_and(|n| n.node.is_some())
    }

    /// The ring the cluster places keys by.
    pub fn ring(&self) -> &Ring {
        self.current_ring()
    }

    /// The node's store (survives crashes).
    pub fn store(&self, node: &str) -> Option<&MemStore> {
        self.nodes.get(&NodeId::new(node)).map(|n| &n.store)
    }

    /// Every operation so far.
    pub fn history(&self) -> &[Operation] {
        &self.history
    }

    /// Events, drops and faults so far.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// Encoded bytes (frames as [`Message::encode`] makes them) of the gossip messages `node`
    /// has sent so far, lost ones included.
    pub fn gossip_bytes(&self, node: &str) -> u64 {
        self.gossip_bytes
            .get(&NodeId::new(node))
            .copied()
            .unwrap_or(0)
    }

    // ----- clients -----

    /// Starts a client request at `node` and returns its history index; the run goes on only when
    /// you call a `run` method.
    pub fn submit(&mut self, node: &str, request: ClientRequest) -> usize {
        let node_id = NodeId::new(node);
        let (bucket, key) = request.target();
        let kind = match &request {
            // A watch's answer is a read of the key; a listing reads no value (the checker
            // judges only a get's `Got`).
            ClientRequest::Get { .. }
            | ClientRequest::Watch { .. }
            | ClientRequest::List { .. } => OpKind::Get,
            // A restore writes no new value, it merges history the checker judged when it
            // was written (its reply is no read, so the checker passes over it).
            ClientRequest::Restore { .. } => OpKind::Get,
            // The context a write supersedes is its own, or its `If-Match` one.
            ClientRequest::Put { value, options, .. } => OpKind::Put {
                value: value.clone(),
                context: request.write_context().cloned().unwrap_or_default(),
                ttl_ms: options.ttl_ms,
            },
            ClientRequest::Delete { .. } => OpKind::Delete {
                context: request.write_context().cloned().unwrap_or_default(),
            },
        };
        let index = self.history.len();
        self.history.push(Operation {
            index,
            node: node_id.clone(),
            bucket: bucket.to_vec(),
            key: key.to_vec(),
            kind,
            invoked_at: self.now,
            completed_at: None,
            outcome: None,
        });
        self.next_request += 1;
        let request_id = self.next_request;
        let now = self.now;
        let result = match self.nodes.get_mut(&node_id) {
            Some(SimNode {
                node: Some(node),
                requests,
                skew,
                ..
            }) => {
                let result = node.handle_client(now + *skew, request_id, request);
                if result.is_ok() {
                    requests.insert(request_id, index);
                }
                result.map_err(OpOutcome::Rejected)
            }
            // Asking a crashed or unknown node: the client's connection is refused.
            _ => Err(OpOutcome::Refused),
        };
        if let Err(outcome) = result {
            self.complete(index, outcome);
        }
        self.pump(&node_id);
        index
    }

    /// Runs until operation `index` has ended (or nothing more can happen) and returns it.
    pub fn wait(&mut self, index: usize) -> Operation {
        while self.history[index].outcome.is_none() {
            if !self.step() {
                break;
            }
        }
        self.history[index].clone()
    }

    /// A get at `node`, run to completion.
    pub fn get(&mut self, node: &str, bucket: &[u8], key: &[u8]) -> Operation {
        self.get_with(node, bucket, key, RequestOptions::default())
    }

    /// A get with quorum overrides, run to completion.
    pub fn get_with(
        &mut self,
        node: &str,
        bucket: &[u8],
        key: &[u8],
        options: RequestOptions,
    ) -> Operation {
        let index = self.submit(
            node,
            ClientRequest::Get {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                options,
            },
        );
        self.wait(index)
    }

    /// A put at `node` (blind when `context` is `None`), run to completion.
    pub fn put(
        &mut self,
        node: &str,
        bucket: &[u8],
        key: &[u8],
        value: &[u8],
        context: Option<&Context>,
    ) -> Operation {
        let index = self.submit(
            node,
            ClientRequest::Put {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                context: context.cloned().unwrap_or_default(),
                value: value.to_vec(),
                options: RequestOptions::default(),
            },
        );
        self.wait(index)
    }

    /// A delete at `node`, run to completion.
    pub fn delete(
        &mut self,
        node: &str,
        bucket: &[u8],
        key: &[u8],
        context: Option<&Context>,
    ) -> Operation {
        let index = self.submit(
            node,
            ClientRequest::Delete {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                context: context.cloned().unwrap_or_default(),
                options: RequestOptions::default(),
            },
        );
        self.wait(index)
    }

    /// A running node.
    pub fn node(&self, node: &str) -> Option<&Node> {
        self.nodes
            .get(&NodeId::new(node))
            .and_then(|n| n.node.as_ref())
    }

    /// Whether a running node says it left and handed everything over, and a peer knows it
    /// ([`Node::is_drained`]).
    pub fn is_drained(&self, node: &str) -> bool {
        self.nodes
            .get(&NodeId::new(node))
            .and_then(|n| n.node.as_ref())
            .is_some_and(Node::is_drained)
    }

    // ----- running -----

    /// Runs for `ms` of virtual time.
    pub fn run(&mut self, ms: Millis) {
        let until = self.now.saturating_add(ms);
        while self.next_time().is_some_and(|t| t <= until) {
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs until nothing is left to happen (no message, storage result or deadline), or for at
    /// most `limit_ms`.
    pub fn run_until_quiet(&mut self, limit_ms: Millis) {
        let until = self.now.saturating_add(limit_ms);
        while self.next_time().is_some_and(|t| t <= until) {
            self.step();
        }
    }

    fn next_time(&self) -> Option<Millis> {
        let queued = self.queue.keys().next().map(|&(t, _)| t);
        let timers = self.deadlines.first().map(|&(t, _)| t);
        match (queued, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Performs the next thing that happens; false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        // Deadlines first at equal times: they are older than anything scheduled for this tick.
        // Handled in node id order, whatever their deadlines.
        let mut due: Vec<NodeId> = self
            .deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect();
        due.sort_unstable();
        if !due.is_empty() {
            for id in due {
                if let Some(sim_node) = self.nodes.get_mut(&id) {
                    let local = now + sim_node.skew;
                    if let Some(node) = sim_node.node.as_mut() {
                        node.handle_timeout(local);
                    }
                }
                self.pump(&id);
            }
            return true;
        }
        let Some(((_, _), pending)) = self.queue.pop_first() else {
            return false;
        };
        match pending {
            Pending::Deliver { from, to, message } => {
                if self.cut.contains(&(from.clone(), to.clone())) {
                    self.trace.push(TraceEntry {
                        at: now,
                        node: to,
                        kind: TraceKind::Dropped {
                            to: NodeId::new(""),
                            reason: format!("link from {from} cut while in flight"),
                        },
                    });
                    return true;
                }
                if let Some(sim_node) = self.nodes.get_mut(&to) {
                    let local = now + sim_node.skew;
                    let Some(node) = sim_node.node.as_mut() else {
                        return true;
                    };
                    if let Err(error) = node.handle_message(local, from, *message) {
                        self.trace.push(TraceEntry {
                            at: now,
                            node: to.clone(),
                            kind: TraceKind::Dropped {
                                to: to.clone(),
                                reason: error.to_string(),
                            },
                        });
                    }
                    self.pump(&to);
                }
            }
            Pending::Storage {
                node,
                op_id,
                result,
            } => {
                if let Some(sim_node) = self.nodes.get_mut(&node) {
                    let local = now + sim_node.skew;
                    if let Some(n) = sim_node.node.as_mut() {
                        n.handle_storage(local, op_id, result);
                        self.pump(&node);
                    }
                }
            }
        }
        true
    }

    fn schedule(&mut self, at: Millis, pending: Pending) {
        self.seq += 1;
        self.queue.insert((at, self.seq), pending);
    }

    /// Performs every output of `id`, then updates its deadline in the index. Called after
    /// every call into a node.
    fn pump(&mut self, id: &NodeId) {
        self.perform_outputs(id);
        self.reindex(id);
    }

    /// Brings `id`'s entry in [`Sim::deadlines`] up to date: after anything that may have
    /// changed its next deadline (a call into the node, a crash, a restart).
    fn reindex(&mut self, id: &NodeId) {
        let Some(sim_node) = self.nodes.get_mut(id) else {
            return;
        };
        let fresh = sim_node.next_deadline();
        if fresh == sim_node.indexed_deadline {
            return;
        }
        if let Some(old) = sim_node.indexed_deadline.take() {
            self.deadlines.remove(&(old, id.clone()));
        }
        if let Some(deadline) = fresh {
            self.deadlines.insert((deadline, id.clone()));
        }
        sim_node.indexed_deadline = fresh;
    }

    /// Performs every output of `id`.
    fn perform_outputs(&mut self, id: &NodeId) {
        loop {
            let Some(sim_node) = self.nodes.get_mut(id) else {
                return;
            };
            let Some(node) = sim_node.node.as_mut() else {
                return;
            };
            let Some(output) = node.poll_output() else {
                return;
            };
            match output {
                Output::Send { to, message } => {
                    if matches!(message, Message::Gossip(_)) {
                        let bytes = message.encode().len() as u64;
                        *self.gossip_bytes.entry(id.clone()).or_insert(0) += bytes;
                    }
                    let dropped = if self.cut.contains(&(id.clone(), to.clone())) {
                        Some("link cut")
                    } else if self.loss > 0.0 && self.rng.gen_bool(self.loss.clamp(0.0, 1.0)) {
                        Some("lost")
                    } else {
                        None
                    };
                    match dropped {
                        Some(reason) => self.trace.push(TraceEntry {
                            at: self.now,
                            node: id.clone(),
                            kind: TraceKind::Dropped {
                                to,
                                reason: reason.to_string(),
                            },
                        }),
                        None => {
                            // One draw either way, so a run without zones draws what it did
                            // before zones existed.
                            let (min, max) = self.delay_range(id, &to);
                            let delay = self.rng.gen_range(min..=max.max(min));
                            let at = self.now + delay;
                            self.schedule(
                                at,
                                Pending::Deliver {
                                    from: id.clone(),
                                    to,
                                    message: Box::new(message),
                                },
                            );
                        }
                    }
                }
                Output::Storage { op_id, op } => {
                    // Applied now, answered later: a crash in between leaves the write done but
                    // unacknowledged, as on a real disk.
                    let result = match op {
                        StorageOp::Put { key, sync, .. }
                            if !self.config.keep_persisted_views && key == StorageKey::view() =>
                        {
                            sim_node.store.apply(&StorageOp::Put {
                                key,
                                record: Vec::new(),
                                sync,
                            })
                        }
                        op => sim_node.store.apply(&op),
                    };
                    let latency = self.rng.gen_range(0..=self.config.max_disk_latency_ms);
                    let at = self.now + latency;
                    self.schedule(
                        at,
                        Pending::Storage {
                            node: id.clone(),
                            op_id,
                            result,
                        },
                    );
                }
                Output::Reply { request_id, reply } => {
                    if let Some(index) = sim_node.requests.remove(&request_id) {
                        self.complete(index, OpOutcome::Replied(reply));
                    }
                }
                Output::Event(event) => self.trace.push(TraceEntry {
                    at: self.now,
                    node: id.clone(),
                    kind: TraceKind::Event(event),
                }),
            }
        }
    }

    fn complete(&mut self, index: usize, outcome: OpOutcome) {
        let op = &mut self.history[index];
        if op.outcome.is_none() {
            op.outcome = Some(outcome);
            op.completed_at = Some(self.now);
        }
    }

    fn storage_key(&self, bucket: &[u8], key: &[u8]) -> StorageKey {
        StorageKey::data(
            self.ring.partition_of(key_position(bucket, key)),
            bucket,
            key,
        )
    }

    /// The stored object of a key on each of its replicas (`None`: no record or a damaged one).
    pub fn replicas_of(&self, bucket: &[u8], key: &[u8]) -> Vec<FinalReplica> {
        let storage_key = self.storage_key(bucket, key);
        let position = key_position(bucket, key);
        let ring = self.current_ring();
        let replicas = if self.config.n_per_zone.is_empty() {
            ring.preference_list(position, self.config.n as usize)
        } else {
            ring.zone_preference_list(position, &self.config.n_per_zone)
        };
        replicas
            .into_iter()
            .map(|node| {
                let object = self
                    .nodes
                    .get(&node)
                    .and_then(|n| n.store.get(&storage_key))
                    .and_then(|record| Object::decode(record).ok());
                FinalReplica { node, object }
            })
            .collect()
    }

    /// Hints held anywhere: (holder, owner, bucket/key).
    pub fn hints(&self) -> Vec<String> {
        let mut hints = Vec::new();
        for (id, sim_node) in &self.nodes {
            for (key, _) in sim_node.store.iter() {
                if let Space::Hint { owner } = &key.space {
                    hints.push(format!(
                        "{id} holds a hint for {owner}: {}/{}",
                        String::from_utf8_lossy(&key.bucket),
                        String::from_utf8_lossy(&key.key)
                    ));
                }
            }
        }
        hints
    }

    fn history_keys(&self) -> BTreeSet<(Vec<u8>, Vec<u8>)> {
        self.history
            .iter()
            .map(|op| (op.bucket.clone(), op.key.clone()))
            .collect()
    }

    /// Whether every key of the history has equal objects on all its replicas and no hint is
    /// left anywhere.
    pub fn converged(&self) -> bool {
        self.history_keys().iter().all(|(bucket, key)| {
            let replicas = self.replicas_of(bucket, key);
            replicas.iter().all(|r| r.object == replicas[0].object)
        }) && self.hints().is_empty()
    }

    /// Heals the cluster and runs, without any client read, until [`Sim::converged`]: hinted
    /// hint delivery, transfers and anti-entropy alone bring every replica up to date. Returns how long that
    /// took, or `None` if it had not happened after `limit_ms`.
    pub fn heal_and_converge(&mut self, limit_ms: Millis) -> Option<Millis> {
        self.heal();
        self.loss = 0.0;
        for id in self.node_ids() {
            self.restart(id.as_str());
        }
        let start = self.now;
        let step = 100;
        while self.now - start <= limit_ms {
            if self.converged() {
                return Some(self.now - start);
            }
            self.run(step);
        }
        None
    }

    /// Heals the cluster (links, loss, crashed nodes), lets hints be delivered, reads every key
    /// of the history with R = all so read repair converges the replicas, lets the hints that
    /// made be delivered too, and judges the history.
    pub fn check(&mut self) -> Verdict {
        self.heal();
        self.loss = 0.0;
        for id in self.node_ids() {
            self.restart(id.as_str());
        }
        let settle = 30 * self.config.request_timeout_ms.max(1_000);
        self.run(settle);
        let keys = self.history_keys();
        let reader = self.node_ids()[0].clone();
        let all = RequestOptions {
            r: Some(QuorumValue::All),
            ..RequestOptions::default()
        };
        let mut reads = Vec::new();
        for (bucket, key) in keys {
            // A damaged replica does not count toward R, but the failed read repairs it: try
            // again once the repair has landed.
            let mut read = self.get_with(reader.as_str(), &bucket, &key, all.clone());
            for _ in 0..3 {
                if read.is_ok() {
                    break;
                }
                self.run(self.config.request_timeout_ms);
                read = self.get_with(reader.as_str(), &bucket, &key, all.clone());
            }
            reads.push((bucket, key, read));
        }
        self.run(settle);
        let mut finals = BTreeMap::new();
        for (bucket, key, read) in reads {
            let replicas = self.replicas_of(&bucket, &key);
            finals.insert((bucket, key), (read, replicas));
        }
        let mut verdict = checker::check(&self.history, &finals, self.config.max_clock_skew_ms);
        verdict.hints_left = self.hints();
        verdict.discarded = self.discarded.clone();
        verdict
    }
}

/// Node ids as `n1, n2, n3`.
fn names(ids: &[NodeId]) -> String {
    ids.iter()
        .map(NodeId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod restore_tests;
#[cfg(test)]
mod tests;
