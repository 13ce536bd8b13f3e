//! `Node`: one physical server's protocol state, driven by inputs and drained of outputs.
//!
//! # The caller's obligations
//! - After every `handle_*` call, drain [`Node::poll_output`] until it returns `None` and perform
//!   each output (send, storage, reply, event). Outputs are not retried: a lost one is lost.
//! - Answer every [`Output::Storage`] exactly once with [`Node::handle_storage`] and the same
//!   `op_id`, in any order. Storage results for one key may come back in any order; the node itself
//!   keeps at most one read-modify-write per key in flight.
//! - Call [`Node::handle_timeout`] once the time given by [`Node::poll_timeout`] has passed (calling
//!   it earlier is harmless).
//! - `now` must not go backwards between calls; if it does, the node keeps its latest `now`.
//!
//! A node never reads a clock, touches a file or a socket, spawns a thread or draws global
//! randomness: that is all the host's.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::config::{BucketProps, Millis, NodeConfig, Quorums};
use crate::coordinator::get::{GetState, ReplicaState};
use crate::coordinator::put::PutState;
use crate::coordinator::{Client, ForwardState, Target};
use crate::error::{CommandError, ConfigError, MessageError, RequestError};
use crate::id::NodeId;
use crate::io::{
    ClientRequest, Command, Event, Input, OpId, Output, QuorumKind, Reply, RequestId, ScanRange,
    Space, StorageErrorKind, StorageKey, StorageOp, StorageResult,
};
use crate::membership::{
    choose_gossip_peer, handle_gossip, ClusterView, FailureDetector, GossipMessage, Liveness,
    MemberInfo, MemberStatus,
};
use crate::merkle::{
    object_digest, Exchange, ExchangeResponse, ExchangeStep, MerkleConfig, MerkleTree,
};
use crate::ring::{key_position, Member, PartitionId, Ring, Strategy};
use crate::version::{ActorId, ConflictMode, Content, Context, Dot, Object, VersionVector};
use crate::wire::{CoordinationId, Message, ReadResult};
use rand::Rng;

/// One request being coordinated here.
#[derive(Debug)]
enum Coordination {
    Get(GetState),
    Put(PutState),
    Forward(ForwardState),
    /// A hint on its way to its owner.
    Handoff(HandoffState),
    /// A Merkle exchange this node started.
    Exchange(ExchangeState),
}

impl Coordination {
    fn deadline(&self) -> Millis {
        match self {
            Coordination::Get(s) => s.deadline,
            Coordination::Put(s) => s.deadline,
            Coordination::Forward(s) => s.deadline,
            Coordination::Handoff(s) => s.deadline,
            Coordination::Exchange(s) => s.deadline,
        }
    }
}

/// A hint sent to its owner, deleted when the owner acknowledges it.
#[derive(Debug)]
struct HandoffState {
    owner: NodeId,
    hint_key: StorageKey,
    record: Vec<u8>,
    deadline: Millis,
}

/// An anti-entropy exchange with one peer over one partition.
#[derive(Debug)]
struct ExchangeState {
    peer: NodeId,
    partition: PartitionId,
    exchange: Exchange,
    deadline: Millis,
}

/// A partition replica's Merkle tree and how far it is built from the store.
#[derive(Debug)]
struct TreeState {
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

/// A partition this node pulls from a current replica before it owns it under the next ring.
#[derive(Debug)]
struct PullState {
    source: NodeId,
    id: CoordinationId,
    /// Last key received: the transfer resumes after it.
    cursor: Option<StorageKey>,
    /// Whether a chunk request is out, and until when it is waited for.
    waiting_until: Option<Millis>,
    /// The last chunk has arrived.
    finished: bool,
}

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A coordination's deadline.
    Request(CoordinationId),
    /// Time to hand some hints over.
    Handoff,
    /// Time to build a tree or start an exchange.
    AntiEntropy,
    /// Time to gossip and check peers' liveness.
    Gossip,
}

/// What a read-modify-write of one local replica does with the record it reads.
#[derive(Debug)]
enum LocalWriteKind {
    /// This node coordinates a client's write: it gives the write its dot.
    Coordinate {
        id: CoordinationId,
        context: VersionVector,
        content: Content,
    },
    /// Merge an object from a peer (replication or repair); answer `reply_to` when stored.
    Merge {
        object: Object,
        reply_to: Option<(NodeId, CoordinationId)>,
    },
    /// Delete the record, unless it changed since the decision to delete it was made.
    DeleteIf(DeleteCondition),
}

/// What a record must still be for a conditional delete to go ahead.
#[derive(Debug)]
enum DeleteCondition {
    /// Exactly these bytes: a hint or orphan its owner acknowledged. If it changed since it
    /// was sent, the change still has to reach the owner, and the next round sends it.
    Record(Vec<u8>),
    /// A tombstone with this digest: a reaped key (a write since the check keeps it).
    Tombstone(u64),
}

impl DeleteCondition {
    fn holds(&self, record: &[u8]) -> bool {
        match self {
            DeleteCondition::Record(delivered) => record == delivered.as_slice(),
            DeleteCondition::Tombstone(digest) => {
                Object::decode(record).is_ok_and(|o| o.is_deleted() && object_digest(&o) == *digest)
            }
        }
    }
}

#[derive(Debug)]
struct LocalWrite {
    key: StorageKey,
    kind: LocalWriteKind,
    sync: bool,
    /// The object being stored, and for a coordinated write its new dot (set once read).
    result: Option<(Object, Option<Dot>)>,
}

/// Why the node is waiting for a storage result.
#[derive(Debug)]
enum PendingOp {
    /// Serving a peer's `Read`.
    ServeRead {
        to: NodeId,
        id: CoordinationId,
        key: StorageKey,
    },
    /// The read half of the front local write of this key.
    WriteRead(StorageKey),
    /// The write half of the front local write of this key.
    WriteStore(StorageKey),
    /// A page of hints to hand over.
    HandoffScan,
    /// A page of a partition, to build its tree.
    TreeBuild(PartitionId),
    /// The cluster view being persisted.
    PersistView,
    /// A page of a partition this node does not hold.
    OrphanScan(PartitionId),
    /// A chunk of a partition for a receiver's hand-over pull.
    ServePull { to: NodeId, id: CoordinationId },
}

/// The protocol state of one physical node. See the [module docs](self) for the caller's obligations.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    ring: Ring,
    actor: ActorId,
    actor_generation: u64,
    now: Millis,
    rng: ChaCha8Rng,
    outputs: VecDeque<Output>,
    /// Messages this node sent to itself, handled before the current input returns.
    loopback: VecDeque<Message>,
    next_op: u64,
    next_coordination: CoordinationId,
    pending_ops: BTreeMap<OpId, PendingOp>,
    /// Local read-modify-writes per key; the front one is in progress, the rest wait, so two
    /// writes of one key never interleave (that would lose one, or reuse a dot).
    local_writes: BTreeMap<StorageKey, VecDeque<LocalWrite>>,
    coordinations: BTreeMap<CoordinationId, Coordination>,
    client_requests: BTreeSet<RequestId>,
    timers: BTreeSet<(Millis, Timer)>,
    /// Where the next hint scan resumes, and whether one is running.
    handoff_cursor: Option<StorageKey>,
    handoff_scanning: bool,
    /// Where the next orphan scan resumes: partition and key.
    orphan_cursor: Option<(PartitionId, Option<StorageKey>)>,
    handoff_round: u64,
    /// Empty partitions skipped in a row by the orphan scan.
    orphan_empty_streak: u32,
    /// Merkle trees of the partitions this node replicates.
    trees: BTreeMap<PartitionId, TreeState>,
    tree_building: bool,
    /// Round-robin position over this node's partitions for the next exchange.
    next_exchange: u32,
    /// Peers that let a request time out without answering; cleared when they are heard from.
    suspects: BTreeSet<NodeId>,
    /// This node's view of the cluster, kept in step with the others' by gossip.
    view: ClusterView,
    /// Liveness of peers, from all traffic (gossip included).
    detector: FailureDetector,
    /// Peers down long enough to have raised their alert.
    alerted: BTreeSet<NodeId>,
    /// Version of the view's ring `ring` was taken from (`None`: no ring known yet).
    ring_version: Option<u64>,
    /// Hand-overs this node is pulling for the next ring, per partition.
    pulls: BTreeMap<(PartitionId, NodeId), PullState>,
}

impl Node {
    /// A node with the given configuration, in a cluster of `members` (all up), at time `now`.
    ///
    /// Every node given the same configuration and members builds the same view and ring: the
    /// ring is the claim of the lowest-id member, as if it had claimed and gossiped it.
    pub fn new(config: NodeConfig, members: Vec<Member>, now: Millis) -> Result<Node, ConfigError> {
        config.merkle.validate()?;
        // Checks the members (duplicates, capacities) with the ring's own rules first.
        Ring::new(config.ring.clone(), members.clone())?;
        let mut view = ClusterView::new(config.cluster.clone())?;
        for member in &members {
            let mut info = MemberInfo::new(member.id.clone(), "", "", member.capacity);
            info.zone = member.zone.clone();
            info.status = MemberStatus::Up;
            view.set_member(info)?;
        }
        if let Some(claimant) = view.claimant().cloned() {
            view.claim(&claimant, &config.ring)?;
        }
        Node::from_view(config, view, now)
    }

    /// A node that joins an existing cluster: its view holds only itself (Joining) until gossip
    /// with the configured seeds brings it the cluster's. Client requests are refused
    /// ([`RequestError::NoReplicas`]) until it knows the cluster's ring; the claimant then gives
    /// it partitions, which it pulls from their current replicas before it owns them.
    pub fn join(config: NodeConfig, me: Member, now: Millis) -> Result<Node, ConfigError> {
        let mut info = MemberInfo::new(me.id, "", "", me.capacity);
        info.zone = me.zone;
        Node::join_as(config, info, now)
    }

    /// [`Node::join`] for a host whose peers reach it at the addresses in `me` (a `Joining`
    /// entry; its id must be the configured node id).
    pub fn join_as(config: NodeConfig, me: MemberInfo, now: Millis) -> Result<Node, ConfigError> {
        let mut view = ClusterView::new(config.cluster.clone())?;
        view.set_member(me)?;
        Node::from_view(config, view, now)
    }

    /// The first node of a new cluster: a view of `me` alone, `Up`, holding every partition.
    pub fn bootstrap(
        config: NodeConfig,
        mut me: MemberInfo,
        now: Millis,
    ) -> Result<Node, ConfigError> {
        Ring::new(config.ring.clone(), alloc::vec![me.ring_member()])?;
        let mut view = ClusterView::new(config.cluster.clone())?;
        me.status = MemberStatus::Up;
        let id = me.id.clone();
        view.set_member(me)?;
        view.claim(&id, &config.ring)?;
        Node::from_view(config, view, now)
    }

    /// A node restarted from the cluster view it persisted (or any view of its cluster).
    pub fn from_view(
        config: NodeConfig,
        view: ClusterView,
        now: Millis,
    ) -> Result<Node, ConfigError> {
        config.merkle.validate()?;
        let max = config.ring.target_n;
        let too_big = core::iter::once(&config.default_bucket)
            .chain(config.buckets.values())
            .find(|b| b.n as usize > max);
        if let Some(bucket) = too_big {
            return Err(ConfigError::NAboveTarget { n: bucket.n, max });
        }
        let ring = match view.ring() {
            Some(state) => state.ring.clone(),
            // No ring known yet (a joining node): a placeholder of this node alone, never used,
            // since requests are refused until the cluster's ring arrives.
            None => Ring::new(
                config.ring.clone(),
                alloc::vec![Member::new(config.node_id.clone(), 1)],
            )?,
        };
        let ring_version = view.ring().map(|s| s.version);
        let mut detector = FailureDetector::new(config.detector.clone());
        for member in view.members() {
            if member.id != config.node_id {
                // Starts each peer's clock, so one that is never heard from is found down.
                detector.heartbeat(&member.id, now);
            }
        }
        let gossip_interval = config.gossip.interval_ms.max(1);
        let handoff_interval = config.handoff_interval_ms.max(1);
        let ae_interval = config.anti_entropy_interval_ms.max(1);
        Ok(Node {
            ring_version,
            pulls: BTreeMap::new(),
            view,
            detector,
            alerted: BTreeSet::new(),
            actor: actor_name(&config.node_id, config.incarnation, 0),
            actor_generation: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            // Coordination ids start in a range of their own per incarnation, so a reply meant for
            // a previous incarnation's request cannot be taken for one of this incarnation's. The
            // range wraps after 2^24 incarnations (hosts may use clock milliseconds as incarnations):
            // replies outlive an incarnation by seconds, not by 2^24 restarts.
            next_coordination: (config.incarnation & 0xff_ffff) << 40,
            config,
            ring,
            now,
            outputs: VecDeque::new(),
            loopback: VecDeque::new(),
            next_op: 0,
            pending_ops: BTreeMap::new(),
            local_writes: BTreeMap::new(),
            coordinations: BTreeMap::new(),
            client_requests: BTreeSet::new(),
            timers: BTreeSet::from([
                (now.saturating_add(handoff_interval), Timer::Handoff),
                (now.saturating_add(ae_interval), Timer::AntiEntropy),
                (now.saturating_add(gossip_interval), Timer::Gossip),
            ]),
            trees: BTreeMap::new(),
            tree_building: false,
            next_exchange: 0,
            handoff_cursor: None,
            handoff_scanning: false,
            orphan_cursor: None,
            handoff_round: 0,
            orphan_empty_streak: 0,
            suspects: BTreeSet::new(),
        })
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.config.node_id
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The ring this node routes by.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The actor that names the dots this node issues now.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The node's seeded RNG, for protocol choices that need randomness.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Whether the failure detector hears from `peer` (this node itself is always alive).
    pub fn is_alive(&self, peer: &NodeId) -> bool {
        *peer == self.config.node_id || self.detector.is_alive(peer, self.now)
    }

    /// Requests being coordinated or forwarded here.
    pub fn in_flight(&self) -> usize {
        self.coordinations.len()
    }

    /// The Merkle root of every partition replica whose tree is built from the store. Replicas
    /// of one partition holding the same objects have the same root, so equal roots across a
    /// partition's replicas show they have converged.
    pub fn merkle_roots(&mut self) -> BTreeMap<PartitionId, u64> {
        self.trees
            .iter_mut()
            .filter(|(_, state)| state.built)
            .map(|(partition, state)| (*partition, state.tree.root()))
            .collect()
    }

    /// Feeds any input (a convenience over the `handle_*` methods).
    pub fn handle_input(
        &mut self,
        now: Millis,
        input: Input,
    ) -> Result<(), crate::error::InputError> {
        match input {
            Input::Client {
                request_id,
                request,
            } => self.handle_client(now, request_id, request)?,
            Input::Message { from, message } => self.handle_message(now, from, message)?,
            Input::StorageDone { op_id, result } => self.handle_storage(now, op_id, result),
            Input::Timeout => self.handle_timeout(now),
        }
        Ok(())
    }

    /// A client request. On `Err` nothing was started and no reply will come; on `Ok` exactly one
    /// [`Output::Reply`] with `request_id` will come (unless the node is dropped first).
    pub fn handle_client(
        &mut self,
        now: Millis,
        request_id: RequestId,
        request: ClientRequest,
    ) -> Result<(), RequestError> {
        self.advance(now);
        let quorums = self.validate(&request)?;
        if self.client_requests.contains(&request_id) {
            return Err(RequestError::DuplicateRequestId(request_id));
        }
        if self.ring_version.is_none() {
            return Err(RequestError::NoReplicas);
        }
        let (bucket, key) = request.target();
        let replicas = self.preference_list(bucket, key, quorums.n);
        if replicas.is_empty() {
            return Err(RequestError::NoReplicas);
        }
        self.client_requests.insert(request_id);
        let timeout = request
            .options()
            .timeout_ms
            .unwrap_or(self.config.request_timeout_ms);
        match request {
            ClientRequest::Get { bucket, key, .. } => self.start_get(
                Client::Local(request_id),
                bucket,
                key,
                quorums,
                replicas,
                timeout,
            ),
            ClientRequest::Put { .. } | ClientRequest::Delete { .. }
                if !replicas.contains(self.id()) =>
            {
                self.forward(request_id, request, quorums, &replicas, timeout)
            }
            ClientRequest::Put {
                bucket,
                key,
                context,
                value,
                ..
            } => self.start_put(
                Client::Local(request_id),
                bucket,
                key,
                context,
                Content::Value(value),
                quorums,
                replicas,
                timeout,
            ),
            ClientRequest::Delete {
                bucket,
                key,
                context,
                ..
            } => self.start_put(
                Client::Local(request_id),
                bucket,
                key,
                context,
                Content::Tombstone,
                quorums,
                replicas,
                timeout,
            ),
        }
        self.drain_loopback();
        Ok(())
    }

    /// A message from a peer. On `Err` the message was dropped and no state changed.
    pub fn handle_message(
        &mut self,
        now: Millis,
        from: NodeId,
        message: Message,
    ) -> Result<(), MessageError> {
        self.advance(now);
        // Gossip is how a new node introduces itself, so it is the one thing a stranger may
        // send; views of another cluster are refused by the merge.
        let introduction = matches!(message, Message::Gossip(_));
        if !introduction && self.view.member(&from).is_none() && self.ring.member(&from).is_none() {
            self.event(Event::MessageDropped {
                from: from.clone(),
                reason: "sender is not a member".to_string(),
            });
            return Err(MessageError::UnknownPeer(from));
        }
        if let Message::Read { bucket, key, .. }
        | Message::Write { bucket, key, .. }
        | Message::Repair { bucket, key, .. } = &message
        {
            if key.is_empty()
                || key.len() > self.config.max_key_bytes
                || bucket.len() > self.config.max_bucket_bytes
            {
                self.event(Event::MessageDropped {
                    from: from.clone(),
                    reason: "oversized or empty key".to_string(),
                });
                return Err(MessageError::Oversized);
            }
        }
        self.suspects.remove(&from);
        self.detector.heartbeat(&from, self.now);
        self.on_message(from, message);
        self.drain_loopback();
        Ok(())
    }

    /// The result of the storage operation `op_id`. Results for unknown ids (answered twice, or
    /// from before a restart) are ignored.
    pub fn handle_storage(&mut self, now: Millis, op_id: OpId, result: StorageResult) {
        self.advance(now);
        if let StorageResult::Failed(error) = &result {
            self.event(Event::StorageFailed {
                error: error.clone(),
            });
        }
        match self.pending_ops.remove(&op_id) {
            None => {}
            Some(PendingOp::ServeRead { to, id, key }) => self.serve_read_done(to, id, key, result),
            Some(PendingOp::WriteRead(key)) => self.local_write_read_done(key, result),
            Some(PendingOp::WriteStore(key)) => self.local_write_stored(key, result),
            Some(PendingOp::HandoffScan) => self.handoff_scanned(result),
            Some(PendingOp::TreeBuild(partition)) => self.tree_page(partition, result),
            Some(PendingOp::PersistView) => {}
            Some(PendingOp::OrphanScan(partition)) => self.orphans_scanned(partition, result),
            Some(PendingOp::ServePull { to, id }) => {
                let (items, done) = match result {
                    StorageResult::Scanned { items, done } => (items, done),
                    // Nothing sent: the receiver's wait runs out and it asks again.
                    _ => return,
                };
                self.send(to, Message::HandoffChunk { id, items, done });
            }
        }
        self.drain_loopback();
    }

    /// Time has passed: every deadline at or before `now` fires.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.advance(now);
        while let Some(&(deadline, timer)) = self.timers.first() {
            if deadline > self.now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Request(id) => self.on_deadline(id),
                Timer::Gossip => {
                    self.gossip_tick();
                    self.timers.insert((
                        self.now
                            .saturating_add(self.config.gossip.interval_ms.max(1)),
                        Timer::Gossip,
                    ));
                }
                Timer::AntiEntropy => {
                    self.anti_entropy_tick();
                    self.timers.insert((
                        self.now
                            .saturating_add(self.config.anti_entropy_interval_ms.max(1)),
                        Timer::AntiEntropy,
                    ));
                }
                Timer::Handoff => {
                    self.handoff_tick();
                    self.timers.insert((
                        self.now
                            .saturating_add(self.config.handoff_interval_ms.max(1)),
                        Timer::Handoff,
                    ));
                }
            }
        }
        self.drain_loopback();
    }

    /// The next output, or `None` when there is nothing more to do until the next input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Node::handle_timeout`] must next be called, if at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    // ----- validation and routing -----

    fn advance(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    fn validate(&self, request: &ClientRequest) -> Result<Quorums, RequestError> {
        let (bucket, key) = request.target();
        if key.is_empty() {
            return Err(RequestError::EmptyKey);
        }
        if key.len() > self.config.max_key_bytes {
            return Err(RequestError::KeyTooLarge {
                len: key.len(),
                max: self.config.max_key_bytes,
            });
        }
        if bucket.len() > self.config.max_bucket_bytes {
            return Err(RequestError::BucketTooLarge {
                len: bucket.len(),
                max: self.config.max_bucket_bytes,
            });
        }
        if let ClientRequest::Put { value, .. } = request {
            if value.len() > self.config.max_value_bytes {
                return Err(RequestError::ValueTooLarge {
                    len: value.len(),
                    max: self.config.max_value_bytes,
                });
            }
        }
        Ok(self.bucket_props(bucket).resolve(request.options())?)
    }

    fn preference_list(&self, bucket: &[u8], key: &[u8], n: u32) -> Vec<NodeId> {
        self.ring
            .preference_list(key_position(bucket, key), n as usize)
    }

    /// The largest N any bucket may have (the ring's `target_n`, which bucket properties are
    /// checked against): what decides which partitions a node holds, receives and scans.
    fn max_n(&self) -> usize {
        self.ring.config().target_n
    }

    /// The properties in force for a bucket: the cluster's (set by command, spread by gossip),
    /// else this node's configuration.
    fn bucket_props(&self, bucket: &[u8]) -> &BucketProps {
        self.view
            .bucket(bucket)
            .unwrap_or_else(|| self.config.bucket(bucket))
    }

    /// Whether requests should go to `peer`: the failure detector hears from it, and it has not
    /// let a request time out since it was last heard from.
    fn reachable(&self, peer: &NodeId) -> bool {
        *peer == self.config.node_id
            || (!self.suspects.contains(peer) && self.detector.is_alive(peer, self.now))
    }

    /// Where a request for a key goes: each reachable preference-list node, and in place of each
    /// unreachable one the next reachable node of the extended preference list, carrying a hint
    /// naming the owner (a sloppy quorum). An unreachable owner with no fallback left is still
    /// asked: it may be back.
    fn targets(&self, bucket: &[u8], key: &[u8], preference: Vec<NodeId>) -> Vec<Target> {
        let extended = self
            .ring
            .extended_preference_list(key_position(bucket, key), preference.len());
        let mut fallbacks = extended
            .into_iter()
            .filter(|node| !preference.contains(node) && self.reachable(node));
        preference
            .iter()
            .cloned()
            .map(|owner| {
                if self.reachable(&owner) {
                    return Target {
                        node: owner,
                        hint: None,
                    };
                }
                match fallbacks.next() {
                    Some(fallback) => Target {
                        node: fallback,
                        hint: Some(owner),
                    },
                    None => Target {
                        node: owner,
                        hint: None,
                    },
                }
            })
            .collect::<Vec<_>>()
    }

    /// Where this node keeps its own replica of `bucket`/`key` (for hosts that inspect a
    /// replica directly, as a history checker does).
    pub fn storage_key(&self, bucket: &[u8], key: &[u8]) -> StorageKey {
        StorageKey::data(
            self.ring.partition_of(key_position(bucket, key)),
            bucket,
            key,
        )
    }

    fn mode(&self, bucket: &[u8]) -> ConflictMode {
        self.bucket_props(bucket).conflict_mode
    }

    fn new_coordination_id(&mut self) -> CoordinationId {
        self.next_coordination += 1;
        self.next_coordination
    }

    // ----- outputs -----

    fn send(&mut self, to: NodeId, message: Message) {
        if to == self.config.node_id {
            self.loopback.push_back(message);
        } else {
            self.outputs.push_back(Output::Send { to, message });
        }
    }

    fn storage(&mut self, op: StorageOp, purpose: PendingOp) {
        self.next_op += 1;
        let op_id = OpId(self.next_op);
        self.pending_ops.insert(op_id, purpose);
        self.outputs.push_back(Output::Storage { op_id, op });
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    fn reply(&mut self, client: Client, reply: Reply) {
        match client {
            Client::Local(request_id) => {
                self.client_requests.remove(&request_id);
                self.outputs.push_back(Output::Reply { request_id, reply });
            }
            Client::Remote { from, id } => self.send(from, Message::ForwardReply { id, reply }),
            Client::Internal | Client::Reap => {}
        }
    }

    /// Answers with a quorum failure and reports it, with the same counts as the reply.
    fn reply_unavailable(&mut self, client: Client, reply: Reply) {
        if let Reply::Unavailable {
            kind,
            needed,
            answered,
        } = &reply
        {
            self.event(Event::QuorumFailed {
                kind: *kind,
                needed: *needed,
                answered: answered.len() as u32,
            });
        }
        self.reply(client, reply);
    }

    fn drain_loopback(&mut self) {
        while let Some(message) = self.loopback.pop_front() {
            let me = self.config.node_id.clone();
            self.on_message(me, message);
        }
    }

    fn arm(&mut self, id: CoordinationId, coordination: Coordination) {
        self.timers
            .insert((coordination.deadline(), Timer::Request(id)));
        self.coordinations.insert(id, coordination);
    }

    fn finish(&mut self, id: CoordinationId) -> Option<Coordination> {
        let coordination = self.coordinations.remove(&id)?;
        self.timers
            .remove(&(coordination.deadline(), Timer::Request(id)));
        Some(coordination)
    }

    // ----- coordination: get -----

    fn start_get(
        &mut self,
        client: Client,
        bucket: Vec<u8>,
        key: Vec<u8>,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        timeout: Millis,
    ) {
        let id = self.new_coordination_id();
        let replicas = self.targets(&bucket, &key, replicas);
        for target in &replicas {
            self.send(
                target.node.clone(),
                Message::Read {
                    id,
                    bucket: bucket.clone(),
                    key: key.clone(),
                    hint: target.hint.clone(),
                },
            );
        }
        let state = GetState {
            client,
            mode: self.mode(&bucket),
            bucket,
            key,
            quorums,
            replicas,
            replies: BTreeMap::new(),
            merged: Object::new(),
            answered: false,
            deadline: self.now.saturating_add(timeout),
        };
        self.arm(id, Coordination::Get(state));
    }

    fn on_read_reply(&mut self, from: NodeId, id: CoordinationId, result: ReadResult) {
        let Some(Coordination::Get(state)) = self.coordinations.get(&id) else {
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
        let Some(Coordination::Get(state)) = self.coordinations.get_mut(&id) else {
            return;
        };
        state.record(&from, replica_state);
        let reply = state.take_reply();
        let client = state.client.clone();
        let done = state.all_replied();
        if let Some(reply) = reply {
            self.reply(client, reply);
        }
        if done {
            self.end_get(id);
        }
    }

    /// Ends a get: answers if it never did, and repairs the replicas that replied stale.
    fn end_get(&mut self, id: CoordinationId) {
        let Some(Coordination::Get(mut state)) = self.finish(id) else {
            return;
        };
        if let Some(reply) = state.final_reply() {
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

    // ----- coordination: put and delete -----

    #[allow(clippy::too_many_arguments)]
    fn start_put(
        &mut self,
        client: Client,
        bucket: Vec<u8>,
        key: Vec<u8>,
        context: Context,
        content: Content,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        timeout: Millis,
    ) {
        let id = self.new_coordination_id();
        let storage_key = self.storage_key(&bucket, &key);
        let replicas = self.targets(&bucket, &key, replicas);
        let state = PutState {
            client,
            quorums,
            replicas,
            acked: Vec::new(),
            durable: BTreeSet::new(),
            refused: BTreeSet::new(),
            written: None,
            answered: false,
            deadline: self.now.saturating_add(timeout),
        };
        self.arm(id, Coordination::Put(state));
        self.enqueue_local_write(LocalWrite {
            key: storage_key,
            kind: LocalWriteKind::Coordinate {
                id,
                context: context.clock().clone(),
                content,
            },
            sync: quorums.dw > 0,
            result: None,
        });
    }

    /// The coordinator's own write is stored: replicate to the others and count it.
    fn coordinated_write_stored(
        &mut self,
        id: CoordinationId,
        key: &StorageKey,
        object: &Object,
        dot: Dot,
        synced: bool,
    ) {
        let me = self.config.node_id.clone();
        let Some(Coordination::Put(state)) = self.coordinations.get_mut(&id) else {
            return;
        };
        state.written = Some((object.context(), dot));
        state.record(&me, true, synced);
        let sync = state.quorums.dw > 0;
        let others: Vec<Target> = state
            .replicas
            .iter()
            .filter(|t| t.node != me)
            .cloned()
            .collect();
        let receivers = self.pending_receivers(&key.bucket, &key.key);
        if !others.is_empty() || !receivers.is_empty() {
            let record = object.encode();
            for receiver in receivers {
                self.send(
                    receiver,
                    Message::Repair {
                        bucket: key.bucket.clone(),
                        key: key.key.clone(),
                        record: record.clone(),
                        hint: None,
                    },
                );
            }
            for target in others {
                self.send(
                    target.node,
                    Message::Write {
                        id,
                        bucket: key.bucket.clone(),
                        key: key.key.clone(),
                        record: record.clone(),
                        sync,
                        hint: target.hint,
                    },
                );
            }
        }
        self.advance_put(id);
    }

    fn coordinated_write_failed(&mut self, id: CoordinationId, reason: alloc::string::String) {
        self.coordinated_write_refused(id, Reply::Failed { reason });
    }

    /// Ends a put whose local write failed with `reply` (nothing was sent to other replicas).
    fn coordinated_write_refused(&mut self, id: CoordinationId, reply: Reply) {
        if let Some(Coordination::Put(state)) = self.finish(id) {
            if !state.answered {
                self.reply(state.client, reply);
            }
        }
    }

    fn on_write_reply(&mut self, from: NodeId, id: CoordinationId, stored: bool, synced: bool) {
        if let Some(Coordination::Handoff(_)) = self.coordinations.get(&id) {
            self.on_handoff_ack(&from, id, stored, synced);
            return;
        }
        let Some(Coordination::Put(state)) = self.coordinations.get_mut(&id) else {
            return;
        };
        state.record(&from, stored, synced);
        self.advance_put(id);
    }

    fn advance_put(&mut self, id: CoordinationId) {
        let Some(Coordination::Put(state)) = self.coordinations.get_mut(&id) else {
            return;
        };
        let reply = state.take_reply();
        let client = state.client.clone();
        let all = state.all_answered();
        if let Some(reply) = reply {
            self.reply(client, reply);
        }
        if all {
            self.end_put(id);
        }
    }

    fn end_put(&mut self, id: CoordinationId) {
        let Some(Coordination::Put(mut state)) = self.finish(id) else {
            return;
        };
        if let Some(reply) = state.unavailable() {
            self.reply_unavailable(state.client, reply);
        }
    }

    // ----- forwarding -----

    fn forward(
        &mut self,
        request_id: RequestId,
        request: ClientRequest,
        quorums: Quorums,
        replicas: &[NodeId],
        timeout: Millis,
    ) {
        // The first replica that is reachable (not suspected, and alive to the failure detector)
        // coordinates; if none is, the first one still gets its chance.
        let target = replicas
            .iter()
            .find(|r| self.reachable(r))
            .unwrap_or(&replicas[0])
            .clone();
        let id = self.new_coordination_id();
        self.send(target.clone(), Message::Forward { id, request });
        let state = ForwardState {
            request_id,
            target,
            needed: quorums.w,
            deadline: self.now.saturating_add(timeout),
        };
        self.arm(id, Coordination::Forward(state));
    }

    fn on_forward(&mut self, from: NodeId, id: CoordinationId, request: ClientRequest) {
        let client = Client::Remote {
            from: from.clone(),
            id,
        };
        let quorums = match self.validate(&request) {
            Ok(quorums) => quorums,
            Err(error) => {
                self.reply(
                    client,
                    Reply::Failed {
                        reason: error.to_string(),
                    },
                );
                return;
            }
        };
        let (bucket, key) = request.target();
        let replicas = self.preference_list(bucket, key, quorums.n);
        if !replicas.contains(self.id()) {
            // Views of the ring differ; forwarding again could loop.
            self.reply(
                client,
                Reply::Failed {
                    reason: format!("{} is not a replica of this key", self.id()),
                },
            );
            return;
        }
        // The forwarder's own timer bounds the request; this one ends earlier, so that its
        // answer (which replicas acknowledged) reaches the forwarder before that timer fires.
        let timeout = request
            .options()
            .timeout_ms
            .unwrap_or(self.config.request_timeout_ms);
        let timeout = timeout - timeout / 4;
        let (content, bucket, key, context) = match request {
            ClientRequest::Put {
                bucket,
                key,
                context,
                value,
                ..
            } => (Content::Value(value), bucket, key, context),
            ClientRequest::Delete {
                bucket,
                key,
                context,
                ..
            } => (Content::Tombstone, bucket, key, context),
            ClientRequest::Get { bucket, key, .. } => {
                self.start_get(client, bucket, key, quorums, replicas, timeout);
                return;
            }
        };
        self.start_put(
            client, bucket, key, context, content, quorums, replicas, timeout,
        );
    }

    fn on_forward_reply(&mut self, from: NodeId, id: CoordinationId, reply: Reply) {
        let Some(Coordination::Forward(state)) = self.coordinations.get(&id) else {
            return;
        };
        if state.target != from {
            return;
        }
        if let Some(Coordination::Forward(state)) = self.finish(id) {
            self.reply(Client::Local(state.request_id), reply);
        }
    }

    // ----- deadlines -----

    fn on_deadline(&mut self, id: CoordinationId) {
        let Some(coordination) = self.coordinations.get(&id) else {
            return;
        };
        let silent: Vec<NodeId> = match coordination {
            Coordination::Get(s) => s
                .replicas
                .iter()
                .map(|t| &t.node)
                .filter(|r| !s.replies.contains_key(*r))
                .cloned()
                .collect(),
            // Before the local write is done nobody else was asked: a slow disk is not a reason
            // to suspect the peers.
            Coordination::Put(s) if s.written.is_none() => Vec::new(),
            Coordination::Put(s) => s
                .replicas
                .iter()
                .map(|t| &t.node)
                .filter(|r| !s.acked.contains(*r) && !s.refused.contains(*r))
                .cloned()
                .collect(),
            Coordination::Forward(s) => alloc::vec![s.target.clone()],
            // An owner that does not take its hints is retried next round, and an exchange
            // partner that does not answer is tried again later: neither is a client waiting.
            Coordination::Handoff(_) | Coordination::Exchange(_) => Vec::new(),
        };
        for node in silent {
            if node != self.config.node_id {
                self.suspects.insert(node);
            }
        }
        match self.coordinations.get(&id) {
            Some(Coordination::Get(_)) => self.end_get(id),
            Some(Coordination::Put(_)) => self.end_put(id),
            Some(Coordination::Handoff(_)) => {
                self.finish(id);
            }
            Some(Coordination::Exchange(_)) => {
                if let Some(Coordination::Exchange(state)) = self.finish(id) {
                    self.event(Event::AntiEntropyAbandoned {
                        partition: state.partition,
                        peer: state.peer,
                        reason: "no answer in time".to_string(),
                    });
                }
            }
            Some(Coordination::Forward(_)) => {
                if let Some(Coordination::Forward(state)) = self.finish(id) {
                    self.reply_unavailable(
                        Client::Local(state.request_id),
                        Reply::Unavailable {
                            kind: QuorumKind::Write,
                            needed: state.needed,
                            answered: Vec::new(),
                        },
                    );
                }
            }
            None => {}
        }
    }

    // ----- replica side -----

    fn on_message(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Forward { id, request } => self.on_forward(from, id, request),
            Message::ForwardReply { id, reply } => self.on_forward_reply(from, id, reply),
            Message::Read {
                id,
                bucket,
                key,
                hint,
            } => match self.replica_key(&bucket, &key, hint) {
                Some(key) => self.storage(
                    StorageOp::Get { key: key.clone() },
                    PendingOp::ServeRead { to: from, id, key },
                ),
                None => self.send(
                    from,
                    Message::ReadReply {
                        id,
                        result: ReadResult::Failed,
                    },
                ),
            },
            Message::ReadReply { id, result } => self.on_read_reply(from, id, result),
            Message::Ping => self.send(from, Message::Pong),
            Message::Reap {
                bucket,
                key,
                digest,
                ring_version,
            } => {
                // Only under the very ring the check was made in, and not while it moves.
                let settled = self
                    .view
                    .ring()
                    .is_some_and(|s| s.version == ring_version && s.next.is_none());
                if !settled {
                    return;
                }
                let key = self.storage_key(&bucket, &key);
                self.delete_if(key, DeleteCondition::Tombstone(digest));
            }
            Message::Gossip(gossip) => self.on_gossip(from, gossip),
            Message::HandoffPull {
                id,
                partition,
                after,
            } => self.serve_pull(from, id, partition, after),
            Message::HandoffChunk { id, items, done } => {
                self.on_handoff_chunk(from, id, items, done)
            }
            Message::Exchange {
                id,
                partition,
                request,
            } => {
                let response = self
                    .trees
                    .get_mut(&partition)
                    .filter(|t| t.built)
                    .and_then(|t| t.tree.answer(&request).ok());
                self.send(from, Message::ExchangeReply { id, response });
            }
            Message::ExchangeReply { id, response } => self.on_exchange_reply(from, id, response),
            // Hearing from the peer already cleared any suspicion of it.
            Message::Pong => {}
            Message::Write {
                id,
                bucket,
                key,
                record,
                sync,
                hint,
            } => self.on_replica_write(from, Some(id), bucket, key, record, sync, hint),
            Message::WriteReply { id, stored, synced } => {
                self.on_write_reply(from, id, stored, synced)
            }
            Message::Repair {
                bucket,
                key,
                record,
                hint,
            } => self.on_replica_write(from, None, bucket, key, record, false, hint),
        }
    }

    /// Where this node keeps its copy of a key: its own replica, or a hint for `hint`'s owner.
    /// `None` for a hint naming a node that is not a member (it could never be handed over).
    fn replica_key(&self, bucket: &[u8], key: &[u8], hint: Option<NodeId>) -> Option<StorageKey> {
        let data = self.storage_key(bucket, key);
        match hint {
            Some(owner) if owner == self.config.node_id => Some(data),
            Some(owner) if self.ring.member(&owner).is_none() => None,
            Some(owner) => Some(data.in_space(Space::Hint { owner })),
            None => Some(data),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_replica_write(
        &mut self,
        from: NodeId,
        id: Option<CoordinationId>,
        bucket: Vec<u8>,
        key: Vec<u8>,
        record: Vec<u8>,
        sync: bool,
        hint: Option<NodeId>,
    ) {
        let object = match Object::decode(&record) {
            Ok(object) => object,
            Err(error) => {
                self.event(Event::ChecksumFailure {
                    bucket,
                    key,
                    detail: format!("record sent by {from}: {error}"),
                });
                if let Some(id) = id {
                    self.send(
                        from,
                        Message::WriteReply {
                            id,
                            stored: false,
                            synced: false,
                        },
                    );
                }
                return;
            }
        };
        let Some(storage_key) = self.replica_key(&bucket, &key, hint) else {
            self.event(Event::MessageDropped {
                from: from.clone(),
                reason: "hint for a node that is not a member".to_string(),
            });
            if let Some(id) = id {
                self.send(
                    from,
                    Message::WriteReply {
                        id,
                        stored: false,
                        synced: false,
                    },
                );
            }
            return;
        };
        self.enqueue_local_write(LocalWrite {
            key: storage_key,
            kind: LocalWriteKind::Merge {
                object,
                reply_to: id.map(|id| (from, id)),
            },
            sync,
            result: None,
        });
    }

    fn serve_read_done(
        &mut self,
        to: NodeId,
        id: CoordinationId,
        key: StorageKey,
        result: StorageResult,
    ) {
        let result = match result {
            StorageResult::Record(None) => ReadResult::NotFound,
            StorageResult::Record(Some(record)) => match Object::decode(&record) {
                Ok(_) => ReadResult::Found(record),
                Err(error) => {
                    self.forget_in_tree(&key);
                    self.event(Event::ChecksumFailure {
                        bucket: key.bucket,
                        key: key.key,
                        detail: error.to_string(),
                    });
                    ReadResult::Corrupt
                }
            },
            _ => ReadResult::Failed,
        };
        self.send(to, Message::ReadReply { id, result });
    }

    // ----- local read-modify-write, one at a time per key -----

    fn enqueue_local_write(&mut self, write: LocalWrite) {
        let key = write.key.clone();
        let queue = self.local_writes.entry(key.clone()).or_default();
        queue.push_back(write);
        if queue.len() == 1 {
            self.storage(
                StorageOp::Get { key: key.clone() },
                PendingOp::WriteRead(key),
            );
        }
    }

    fn local_write_read_done(&mut self, key: StorageKey, result: StorageResult) {
        if let Some(LocalWrite {
            kind: LocalWriteKind::DeleteIf(condition),
            ..
        }) = self.local_writes.get(&key).and_then(VecDeque::front)
        {
            let holds =
                matches!(&result, StorageResult::Record(Some(record)) if condition.holds(record));
            let reaping = matches!(condition, DeleteCondition::Tombstone(_));
            if !holds {
                self.pop_local_write(&key);
                return;
            }
            if reaping {
                self.forget_in_tree(&key);
                self.event(Event::TombstoneReaped {
                    bucket: key.bucket.clone(),
                    key: key.key.clone(),
                });
            }
            self.storage(
                StorageOp::Delete { key: key.clone() },
                PendingOp::WriteStore(key),
            );
            return;
        }
        let local = match result {
            StorageResult::Record(None) => Ok(Object::new()),
            StorageResult::Record(Some(record)) => match Object::decode(&record) {
                Ok(object) => Ok(object),
                Err(error) => {
                    self.event(Event::ChecksumFailure {
                        bucket: key.bucket.clone(),
                        key: key.key.clone(),
                        detail: error.to_string(),
                    });
                    // The damaged record is treated as missing and overwritten; what it held
                    // comes back from the other replicas by read repair and anti-entropy.
                    Err(true)
                }
            },
            _ => Err(false),
        };
        let mode = self.mode(&key.bucket);
        if !self.local_writes.contains_key(&key) {
            return;
        }
        let (mut object, damaged) = match local {
            Ok(object) => (object, false),
            Err(true) => (Object::new(), true),
            Err(false) => {
                self.local_write_failed(&key, "storage read failed".to_string());
                return;
            }
        };
        if damaged && key.space == Space::Data {
            // This actor's dots for the key are unknown now, and whatever overwrites the record
            // (our write, or a peer's copy that lacks our latest dots) would let the next write
            // reissue one. A fresh actor cannot.
            self.renew_actor();
        }
        let actor = self.actor.clone();
        let max_entries = self.config.max_clock_entries;
        let now = self.now;
        let Some(write) = self
            .local_writes
            .get_mut(&key)
            .and_then(VecDeque::front_mut)
        else {
            return;
        };
        let dot = match &mut write.kind {
            LocalWriteKind::Coordinate {
                context, content, ..
            } => {
                let content = core::mem::replace(content, Content::Tombstone);
                let dot = object.update(context, &actor, content, now, mode);
                // Clocks are truncated where a write is coordinated, as Riak prunes on put, and
                // never on merge: replicas that truncated on merge would each keep other
                // entries and never converge. Our own entry stays, since our next dot for this
                // key is counted from it.
                object.truncate_keeping(max_entries, &actor);
                Some(dot)
            }
            LocalWriteKind::Merge {
                object: incoming, ..
            } => {
                object.merge(incoming, mode);
                None
            }
            LocalWriteKind::DeleteIf(_) => None,
        };
        let op = StorageOp::Put {
            key: key.clone(),
            record: object.encode(),
            sync: write.sync,
        };
        // Kept so the coordinator replicates exactly what it stored.
        write.result = Some((object, dot));
        self.storage(op, PendingOp::WriteStore(key));
    }

    fn local_write_stored(&mut self, key: StorageKey, result: StorageResult) {
        let synced = match result {
            StorageResult::Written { synced } => synced,
            StorageResult::Failed(error) => {
                // A full disk is told apart: the client should hear "no space", not "failed".
                let reply = match error.kind {
                    StorageErrorKind::Full => Reply::StorageFull {
                        reason: error.message.clone(),
                    },
                    StorageErrorKind::Io => Reply::Failed {
                        reason: error.to_string(),
                    },
                };
                self.local_write_refused(&key, reply);
                return;
            }
            _ => {
                self.local_write_failed(&key, "unexpected storage answer".to_string());
                return;
            }
        };
        let Some(write) = self.pop_local_write(&key) else {
            return;
        };
        if key.space == Space::Data {
            if let Some((object, _)) = &write.result {
                self.set_in_tree(&key, Some(object_digest(object)));
            }
        }
        match write.kind {
            LocalWriteKind::Coordinate { id, .. } => match write.result {
                Some((object, Some(dot))) => {
                    self.coordinated_write_stored(id, &key, &object, dot, synced)
                }
                _ => {
                    self.coordinated_write_failed(id, "internal: write lost its result".to_string())
                }
            },
            LocalWriteKind::Merge { reply_to, .. } => {
                if let Some((to, id)) = reply_to {
                    self.send(
                        to,
                        Message::WriteReply {
                            id,
                            stored: true,
                            synced,
                        },
                    );
                }
            }
            LocalWriteKind::DeleteIf(_) => {}
        }
    }

    fn local_write_failed(&mut self, key: &StorageKey, reason: alloc::string::String) {
        self.local_write_refused(key, Reply::Failed { reason });
    }

    /// A local write failed: `reply` is the answer if this node coordinates the write.
    fn local_write_refused(&mut self, key: &StorageKey, reply: Reply) {
        // A record of a partition being pulled may be the one that failed: that partition's
        // pulls start over rather than be recorded as received without it.
        if key.space == Space::Data {
            for ((partition, _), pull) in self.pulls.iter_mut() {
                if *partition == key.partition {
                    pull.finished = false;
                    pull.cursor = None;
                    pull.waiting_until = None;
                }
            }
        }
        let Some(write) = self.pop_local_write(key) else {
            return;
        };
        match write.kind {
            LocalWriteKind::Coordinate { id, .. } => self.coordinated_write_refused(id, reply),
            LocalWriteKind::Merge { reply_to, .. } => {
                if let Some((to, id)) = reply_to {
                    self.send(
                        to,
                        Message::WriteReply {
                            id,
                            stored: false,
                            synced: false,
                        },
                    );
                }
            }
            // The hint (or tombstone) stays, and is tried again.
            LocalWriteKind::DeleteIf(_) => {}
        }
    }

    /// Removes the finished front write of `key` and starts the next one.
    fn pop_local_write(&mut self, key: &StorageKey) -> Option<LocalWrite> {
        let queue = self.local_writes.get_mut(key)?;
        let write = queue.pop_front();
        if queue.is_empty() {
            self.local_writes.remove(key);
        } else {
            self.storage(
                StorageOp::Get { key: key.clone() },
                PendingOp::WriteRead(key.clone()),
            );
        }
        write
    }

    // ----- hinted hand-over -----

    /// A hand-over round: read the next page of hints, unless the previous round's are still
    /// on their way (which bounds the hints in flight to one page).
    fn handoff_tick(&mut self) {
        let in_flight = self
            .coordinations
            .values()
            .any(|c| matches!(c, Coordination::Handoff(_)));
        if self.handoff_scanning || in_flight {
            return;
        }
        // Every other round looks for records of partitions this node no longer holds.
        self.handoff_round = self.handoff_round.wrapping_add(1);
        if self.handoff_round % 2 == 0 {
            self.orphan_empty_streak = 0;
            self.orphan_scan();
            return;
        }
        self.handoff_scanning = true;
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Hints,
                after: self.handoff_cursor.clone(),
                limit: self.config.handoff_batch.max(1),
            },
            PendingOp::HandoffScan,
        );
    }

    fn handoff_scanned(&mut self, result: StorageResult) {
        self.handoff_scanning = false;
        let StorageResult::Scanned { items, done } = result else {
            return;
        };
        self.handoff_cursor = if done {
            None
        } else {
            items.last().map(|(key, _)| key.clone())
        };
        for (hint_key, record) in items {
            let Space::Hint { owner } = &hint_key.space else {
                continue;
            };
            if let Err(error) = Object::decode(&record) {
                // A damaged hint cannot be handed over; the owner's copy is repaired by read
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
            let owner = if self.ring.member(owner).is_some() {
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
            self.send_handoff(owner, hint_key, record);
        }
    }

    /// Partitions this node holds now or will hold under the next ring.
    fn held_partitions(&self) -> BTreeSet<PartitionId> {
        let n = self.max_n();
        let me = &self.config.node_id;
        let next = self.view.ring().and_then(|s| s.next.as_ref());
        (0..self.ring.partition_count())
            .map(PartitionId)
            .filter(|p| {
                self.ring.partition_preference_list(*p, n).contains(me)
                    || next.is_some_and(|r| r.partition_preference_list(*p, n).contains(me))
            })
            .collect()
    }

    /// Reads the next page of a partition this node does not hold (after a ring change, or a
    /// write through a stale view): such records are handed to the key's current replicas like
    /// hints, then deleted here. This is how a replica that left a preference list passes on
    /// writes it took after its receivers had pulled the partition.
    fn orphan_scan(&mut self) {
        if self.ring_version.is_none() {
            return;
        }
        let held = self.held_partitions();
        let count = self.ring.partition_count();
        let (start, after) = self.orphan_cursor.clone().unwrap_or((PartitionId(0), None));
        let next = (0..count)
            .map(|i| PartitionId((start.0 + i) % count))
            .find(|p| !held.contains(p));
        let Some(partition) = next else {
            return;
        };
        let after = if partition == start { after } else { None };
        self.handoff_scanning = true;
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Partition(partition),
                after,
                limit: self.config.handoff_batch.max(1),
            },
            PendingOp::OrphanScan(partition),
        );
    }

    fn orphans_scanned(&mut self, partition: PartitionId, result: StorageResult) {
        self.handoff_scanning = false;
        let StorageResult::Scanned { items, done } = result else {
            return;
        };
        let count = self.ring.partition_count().max(1);
        self.orphan_cursor = if done {
            Some((PartitionId((partition.0 + 1) % count), None))
        } else {
            Some((partition, items.last().map(|(key, _)| key.clone())))
        };
        // Partitions with nothing to hand over are skipped at once (up to one pass round the
        // ring per round), so a node that left finds its records in seconds, not minutes.
        if items.is_empty() && done {
            self.orphan_empty_streak += 1;
            if self.orphan_empty_streak < count {
                self.orphan_scan();
            }
            return;
        }
        self.orphan_empty_streak = 0;
        let me = self.config.node_id.clone();
        let next = self.view.ring().and_then(|s| s.next.clone());
        for (key, record) in items {
            // Decided per key, with the key's own bucket N: under the token strategy one
            // partition's keys can have different replicas, and buckets differ in N.
            let n = self.bucket_props(&key.bucket).n as usize;
            let position = key_position(&key.bucket, &key.key);
            if self.ring.preference_list(position, n).contains(&me)
                || next
                    .as_ref()
                    .is_some_and(|r| r.preference_list(position, n).contains(&me))
            {
                continue;
            }
            let Ok(object) = Object::decode(&record) else {
                // A damaged orphan is worth nothing; the replicas have their own copies.
                self.delete_if_unchanged(key.clone(), record);
                continue;
            };
            // An old tombstone is dropped, not handed over: its replicas may have reaped it,
            // and handing it back would bring it back.
            let newest = object
                .siblings()
                .iter()
                .map(|s| s.timestamp)
                .max()
                .unwrap_or(0);
            if object.is_deleted()
                && newest.saturating_add(self.config.tombstone_grace_ms) <= self.now
            {
                self.delete_if_unchanged(key.clone(), record);
                continue;
            }
            let owner = self
                .ring
                .preference_list(key_position(&key.bucket, &key.key), n)
                .into_iter()
                .find(|node| *node != self.config.node_id && self.reachable(node));
            if let Some(owner) = owner {
                self.send_handoff(owner, key, record);
            }
        }
    }

    /// Sends a record this node should not keep (a hint, an orphan) to `owner`, synced there
    /// before the local copy goes, so hand-over never weakens what DW promised for the write.
    fn send_handoff(&mut self, owner: NodeId, key: StorageKey, record: Vec<u8>) {
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
        self.arm(
            id,
            Coordination::Handoff(HandoffState {
                owner,
                hint_key: key,
                record,
                deadline,
            }),
        );
    }

    /// Deletes a record this node handed over (a hint, an orphan), unless it changed since.
    fn delete_if_unchanged(&mut self, key: StorageKey, delivered: Vec<u8>) {
        self.delete_if(key, DeleteCondition::Record(delivered));
    }

    fn delete_if(&mut self, key: StorageKey, condition: DeleteCondition) {
        self.enqueue_local_write(LocalWrite {
            key,
            kind: LocalWriteKind::DeleteIf(condition),
            sync: false,
            result: None,
        });
    }

    fn on_handoff_ack(&mut self, from: &NodeId, id: CoordinationId, stored: bool, synced: bool) {
        let Some(Coordination::Handoff(state)) = self.coordinations.get(&id) else {
            return;
        };
        if state.owner != *from {
            return;
        }
        if let Some(Coordination::Handoff(state)) = self.finish(id) {
            if stored && synced {
                self.delete_if_unchanged(state.hint_key, state.record);
            }
        }
    }

    // ----- membership -----

    /// This node's view of the cluster.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// An operator command. On `Err` nothing changed.
    pub fn handle_command(&mut self, now: Millis, command: Command) -> Result<(), CommandError> {
        self.advance(now);
        match command {
            Command::SetBucket { bucket, props } => {
                let max = self.max_n();
                if props.n == 0 || props.n as usize > max {
                    return Err(CommandError::NOutOfRange { n: props.n, max });
                }
                props.resolve(&crate::config::RequestOptions::default())?;
                self.view.set_bucket(bucket, props)?;
            }
            Command::Leave => {
                let me = self.config.node_id.clone();
                self.view.set_status(&me, MemberStatus::Leaving);
            }
            Command::Remove { node } => {
                self.view.set_status(&node, MemberStatus::Removed);
            }
        }
        self.view_changed();
        self.drain_loopback();
        Ok(())
    }

    /// Where peers and clients reach this node now (a host calls it at start, since a restarted
    /// node may listen elsewhere). Changes the view, and so gossips, only when they differ.
    pub fn announce(
        &mut self,
        now: Millis,
        peer_address: &str,
        client_address: &str,
    ) -> Result<(), CommandError> {
        self.advance(now);
        let me = self.config.node_id.clone();
        let Some(mut info) = self.view.member(&me).cloned() else {
            return Ok(());
        };
        if info.peer_address == peer_address && info.client_address == client_address {
            return Ok(());
        }
        info.peer_address = peer_address.to_string();
        info.client_address = client_address.to_string();
        self.view.set_member(info)?;
        self.view_changed();
        self.drain_loopback();
        Ok(())
    }

    /// After any change of the view: persist it, take up a new ring, and report it.
    fn view_changed(&mut self) {
        // Start the clock of every member learned from the view, as `from_view` does for the
        // first ones: a member this node never hears from must be found down, not be taken
        // for alive forever (a detector deems a peer it never heard from alive).
        let me = self.config.node_id.clone();
        let now = self.now;
        let unknown: Vec<NodeId> = self
            .view
            .members()
            .filter(|m| {
                m.id != me
                    && m.status != MemberStatus::Removed
                    && self.detector.last_heard(&m.id).is_none()
            })
            .map(|m| m.id.clone())
            .collect();
        for member in unknown {
            self.detector.heartbeat(&member, now);
        }
        let digest = self.view.digest();
        self.storage(
            StorageOp::Put {
                key: StorageKey::view(),
                record: self.view.encode(),
                sync: true,
            },
            PendingOp::PersistView,
        );
        let version = self.view.ring().map(|s| s.version);
        if version != self.ring_version {
            if let Some(state) = self.view.ring() {
                self.ring = state.ring.clone();
                self.ring_version = version;
                // Trees of partitions this node no longer holds are dropped; new ones get built.
                let mine: BTreeSet<PartitionId> = self.my_partitions().into_iter().collect();
                self.trees.retain(|p, _| mine.contains(p));
                // A node that sees itself in the ring it routes by is up.
                let me = self.config.node_id.clone();
                if self.ring.member(&me).is_some()
                    && self
                        .view
                        .member(&me)
                        .is_some_and(|m| m.status == MemberStatus::Joining)
                {
                    self.view.set_status(&me, MemberStatus::Up);
                }
            }
        }
        self.event(Event::ViewChanged { digest });
    }

    /// A gossip round: start a push-pull exchange with one peer, and report liveness changes.
    fn gossip_tick(&mut self) {
        self.membership_step();
        let now = self.now;
        let detector = &self.detector;
        let suspects = &self.suspects;
        let partner = choose_gossip_peer(
            &self.config.node_id,
            &self.view,
            &|peer: &NodeId| detector.is_alive(peer, now) && !suspects.contains(peer),
            &self.config.gossip.seeds,
            &mut self.rng,
        );
        if let Some(partner) = partner {
            let digest = self.view.digest();
            self.send(partner, Message::Gossip(GossipMessage::Digest(digest)));
        }
        for change in self.detector.poll_changes(now) {
            match change {
                Liveness::Down { peer, .. } => self.event(Event::PeerDown { peer }),
                Liveness::Up { peer } => {
                    self.alerted.remove(&peer);
                    self.event(Event::PeerUp { peer });
                }
            }
        }
        let members: Vec<NodeId> = self
            .view
            .members()
            .filter(|m| m.id != self.config.node_id && m.status != MemberStatus::Removed)
            .map(|m| m.id.clone())
            .collect();
        // Peers we believe down are pinged every round: gossip only goes to live peers, so two
        // nodes that each think the other down would otherwise never hear from each other.
        for peer in &members {
            if !self.reachable(peer) {
                self.send(peer.clone(), Message::Ping);
            }
        }
        for peer in members {
            if let Some(down_ms) = self.detector.down_for(&peer, now) {
                if down_ms >= self.config.down_alert_ms && self.alerted.insert(peer.clone()) {
                    self.event(Event::DownAlert { peer, down_ms });
                }
            }
        }
    }

    fn on_gossip(&mut self, from: NodeId, gossip: GossipMessage) {
        let before = self.view.digest();
        match handle_gossip(&mut self.view, &gossip) {
            Ok(reply) => {
                if let Some(reply) = reply {
                    self.send(from, Message::Gossip(reply));
                }
                if self.view.digest() != before {
                    self.view_changed();
                }
            }
            Err(error) => self.event(Event::MessageDropped {
                from,
                reason: format!("gossip: {error}"),
            }),
        }
    }

    /// The claimant advances membership changes; every node pulls what it must receive under
    /// the next ring, and records finished hand-overs in the view.
    ///
    /// A receiver pulls a partition from *every* current replica (bar removed ones), not just
    /// one: a write acknowledged by W of them may be missing on the others, and the replica
    /// being replaced may hold the only copy within the next ring. The switch waits for all.
    fn membership_step(&mut self) {
        let me = self.config.node_id.clone();
        let n = self.max_n();
        if self.view.claimant() == Some(&me) {
            let config = self.config.ring.clone();
            if let Ok(true) = self.view.advance(&me, &config, n) {
                self.view_changed();
            }
        }
        let Some(state) = self.view.ring() else {
            return;
        };
        let mut wanted: Vec<(PartitionId, NodeId)> = Vec::new();
        for (partition, receivers) in state.transfers(n) {
            if receivers.contains(&me) && !state.transferred.contains(&(partition.0, me.clone())) {
                for source in state.ring.partition_preference_list(partition, n) {
                    let removed = self
                        .view
                        .member(&source)
                        .is_some_and(|m| m.status == MemberStatus::Removed);
                    if source != me && !removed {
                        wanted.push((partition, source));
                    }
                }
            }
        }
        let wanted_set: BTreeSet<(PartitionId, NodeId)> = wanted.iter().cloned().collect();
        self.pulls.retain(|key, _| wanted_set.contains(key));
        for (partition, source) in wanted {
            let key = (partition, source.clone());
            match self.pulls.get(&key) {
                Some(pull) if pull.finished => {}
                Some(pull) if pull.waiting_until.is_some_and(|t| t > self.now) => {}
                _ => {
                    // Start, or resume after a lost chunk (from the last key received).
                    let cursor = self.pulls.get(&key).and_then(|p| p.cursor.clone());
                    let id = self.new_coordination_id();
                    self.send(
                        source.clone(),
                        Message::HandoffPull {
                            id,
                            partition,
                            after: cursor.clone(),
                        },
                    );
                    self.pulls.insert(
                        key,
                        PullState {
                            source,
                            id,
                            cursor,
                            waiting_until: Some(
                                self.now.saturating_add(self.config.request_timeout_ms),
                            ),
                            finished: false,
                        },
                    );
                }
            }
        }
        // A partition is received once every source has sent its last chunk and every record
        // of it is stored here.
        let partitions: BTreeSet<PartitionId> = wanted_set.iter().map(|(p, _)| *p).collect();
        let mut changed = false;
        for partition in partitions {
            let all_finished = wanted_set
                .iter()
                .filter(|(p, _)| *p == partition)
                .all(|key| self.pulls.get(key).is_some_and(|pull| pull.finished));
            let pending_writes = self
                .local_writes
                .keys()
                .any(|k| k.space == Space::Data && k.partition == partition);
            if all_finished && !pending_writes {
                changed |= self.view.mark_transferred(partition, &me);
                self.pulls.retain(|(p, _), _| *p != partition);
            }
        }
        if changed {
            self.view_changed();
        }
    }

    fn serve_pull(
        &mut self,
        to: NodeId,
        id: CoordinationId,
        partition: PartitionId,
        after: Option<StorageKey>,
    ) {
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Partition(partition),
                after,
                limit: self.config.tree_build_page.max(1),
            },
            PendingOp::ServePull { to, id },
        );
    }

    fn on_handoff_chunk(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        items: Vec<(StorageKey, Vec<u8>)>,
        done: bool,
    ) {
        let Some(key) = self
            .pulls
            .iter()
            .find(|(_, p)| p.id == id && p.source == from)
            .map(|(key, _)| key.clone())
        else {
            return;
        };
        let partition = key.0;
        let last = items.last().map(|(k, _)| k.clone());
        for (item, record) in items {
            if item.space != Space::Data || item.partition != partition {
                continue;
            }
            // Synced: the hand-over is recorded as done once these are stored, and the switch
            // that follows may leave this node the only new holder of some of them.
            self.on_replica_write(
                from.clone(),
                None,
                item.bucket,
                item.key,
                record,
                true,
                None,
            );
        }
        let now = self.now;
        let timeout = self.config.request_timeout_ms;
        let next_id = self.new_coordination_id();
        let mut next = None;
        if let Some(pull) = self.pulls.get_mut(&key) {
            if last.is_some() {
                pull.cursor = last;
            }
            pull.finished = done;
            pull.waiting_until = None;
            if !done {
                pull.id = next_id;
                pull.waiting_until = Some(now.saturating_add(timeout));
                next = Some(pull.cursor.clone());
            }
        }
        if let Some(after) = next {
            self.send(
                from,
                Message::HandoffPull {
                    id: next_id,
                    partition,
                    after,
                },
            );
        }
    }

    /// Nodes that will hold the key under the next ring but do not now: writes are copied to
    /// them while the partition is handed over, so nothing written during the move is missed.
    fn pending_receivers(&self, bucket: &[u8], key: &[u8]) -> Vec<NodeId> {
        let Some(state) = self.view.ring() else {
            return Vec::new();
        };
        let Some(next) = &state.next else {
            return Vec::new();
        };
        let n = self.max_n();
        let position = key_position(bucket, key);
        let now = state.ring.preference_list(position, n);
        next.preference_list(position, n)
            .into_iter()
            .filter(|node| !now.contains(node))
            .collect()
    }

    // ----- tombstone reaping -----

    /// A tombstone met while building a tree: if this node is the key's first replica and the
    /// grace period is over, check whether every replica has it.
    fn consider_reaping(&mut self, key: &StorageKey, object: &Object) {
        if !object.is_deleted() || self.ring_version.is_none() {
            return;
        }
        // Not while the ring is moving: a receiver might not have the tombstone yet.
        if self.view.ring().is_some_and(|s| s.next.is_some()) {
            return;
        }
        let newest = object
            .siblings()
            .iter()
            .map(|s| s.timestamp)
            .max()
            .unwrap_or(0);
        if newest.saturating_add(self.config.tombstone_grace_ms) > self.now {
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

    /// A reap check ended: when every replica answered with the same tombstone (and none stood
    /// in as a fallback), all of them delete it.
    fn maybe_reap(&mut self, state: &GetState, all_equal: bool) {
        let unanimous = state.all_replied()
            && all_equal
            && state.replicas.iter().all(|t| t.hint.is_none())
            && state
                .replies
                .values()
                .all(|r| matches!(r, ReplicaState::Found(_)));
        if !unanimous || !state.merged.is_deleted() {
            return;
        }
        let digest = object_digest(&state.merged);
        let Some(ring_version) = self.ring_version else {
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

    // ----- anti-entropy -----

    /// The partitions this node holds a replica of.
    fn my_partitions(&self) -> Vec<PartitionId> {
        let n = self.max_n();
        (0..self.ring.partition_count())
            .map(PartitionId)
            .filter(|p| {
                self.ring
                    .partition_preference_list(*p, n)
                    .contains(&self.config.node_id)
            })
            .collect()
    }

    fn tree_for(
        &mut self,
        partition: PartitionId,
        config: MerkleConfig,
    ) -> Option<&mut MerkleTree> {
        let state = match self.trees.entry(partition) {
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
    fn set_in_tree(&mut self, key: &StorageKey, digest: Option<u64>) {
        let config = self.config.merkle;
        if self.tree_for(key.partition, config).is_none() {
            return;
        }
        if let Some(state) = self.trees.get_mut(&key.partition) {
            state.tree.update(&key.bucket, &key.key, digest);
            if let Some(touched) = &mut state.touched_while_scanning {
                touched.insert((key.bucket.clone(), key.key.clone()));
            }
        }
    }

    /// An anti-entropy round: build the next tree not yet built from the store, and start an
    /// exchange over the next partition with a built tree, with one of its other replicas.
    fn anti_entropy_tick(&mut self) {
        // Trees are kept per partition, which under the token strategy does not have one
        // replica set for all its keys: exchanging them would copy keys to non-replicas. The
        // token strategy is kept for comparison only.
        if self.ring.config().strategy != Strategy::Partitions {
            return;
        }
        let partitions = self.my_partitions();
        if !self.tree_building {
            // The oldest tree past its age is dropped and rebuilt from the store.
            let rebuild_every = self.config.tree_rebuild_interval_ms;
            let now = self.now;
            let stale = self
                .trees
                .iter()
                .filter(|(_, t)| t.built && now.saturating_sub(t.built_at) >= rebuild_every)
                .min_by_key(|(_, t)| t.built_at)
                .map(|(p, _)| *p);
            if let Some(partition) = stale {
                self.trees.remove(&partition);
            }
            let config = self.config.merkle;
            let unbuilt = partitions
                .iter()
                .copied()
                .find(|p| !self.trees.get(p).is_some_and(|t| t.built));
            if let Some(partition) = unbuilt {
                if self.tree_for(partition, config).is_some() {
                    self.request_tree_page(partition);
                }
            }
        }
        let exchanging = self
            .coordinations
            .values()
            .any(|c| matches!(c, Coordination::Exchange(_)));
        if exchanging || partitions.is_empty() {
            return;
        }
        let n = self.max_n();
        for _ in 0..partitions.len() {
            let partition = partitions[self.next_exchange as usize % partitions.len()];
            self.next_exchange = self.next_exchange.wrapping_add(1);
            if !self.trees.get(&partition).is_some_and(|t| t.built) {
                continue;
            }
            let peers: Vec<NodeId> = self
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
            self.arm(
                id,
                Coordination::Exchange(ExchangeState {
                    peer,
                    partition,
                    exchange,
                    deadline,
                }),
            );
            return;
        }
    }

    /// A damaged record is as good as missing: leaving it out of the tree lets the next
    /// exchange find the key and repair it from a peer.
    fn forget_in_tree(&mut self, key: &StorageKey) {
        if key.space == Space::Data && self.trees.contains_key(&key.partition) {
            self.set_in_tree(key, None);
        }
    }

    fn request_tree_page(&mut self, partition: PartitionId) {
        let after = self.trees.get_mut(&partition).and_then(|t| {
            t.touched_while_scanning = Some(BTreeSet::new());
            t.cursor.clone()
        });
        self.tree_building = true;
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Partition(partition),
                after,
                limit: self.config.tree_build_page.max(1),
            },
            PendingOp::TreeBuild(partition),
        );
    }

    fn tree_page(&mut self, partition: PartitionId, result: StorageResult) {
        self.tree_building = false;
        let StorageResult::Scanned { items, done } = result else {
            return;
        };
        let mut damaged = Vec::new();
        let mut tombstones = Vec::new();
        let Some(state) = self.trees.get_mut(&partition) else {
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
                    if object.is_deleted() {
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
            .find(|p| !self.trees.get(p).is_some_and(|t| t.built));
        if let Some(next) = next {
            if self.tree_for(next, config).is_some() {
                self.request_tree_page(next);
            }
        }
    }

    fn on_exchange_reply(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        response: Option<ExchangeResponse>,
    ) {
        match self.coordinations.get(&id) {
            Some(Coordination::Exchange(state)) if state.peer == from => {}
            _ => return,
        }
        let Some(Coordination::Exchange(mut state)) = self.finish(id) else {
            return;
        };
        let step = match (response, self.trees.get_mut(&state.partition)) {
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
                self.arm(id, Coordination::Exchange(state));
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
    fn repair_key(&mut self, bucket: Vec<u8>, key: Vec<u8>, peer: NodeId) {
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
        };
        let replicas = alloc::vec![self.config.node_id.clone(), peer];
        let timeout = self.config.request_timeout_ms;
        self.start_get(Client::Internal, bucket, key, quorums, replicas, timeout);
    }

    fn renew_actor(&mut self) {
        self.actor_generation += 1;
        self.actor = actor_name(
            &self.config.node_id,
            self.config.incarnation,
            self.actor_generation,
        );
        self.event(Event::ActorRenewed {
            actor: self.actor.as_str().to_string(),
        });
    }
}

/// The actor a node's dots are issued by: `{node}.{incarnation}.{generation}`. Read from the
/// right, the two numbers are unambiguous even for node ids that contain dots, so two nodes can
/// never share an actor.
fn actor_name(node: &NodeId, incarnation: u64, generation: u64) -> ActorId {
    ActorId::new(format!("{node}.{incarnation}.{generation}"))
}
