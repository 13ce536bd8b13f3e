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

mod anti_entropy;
mod conditional;
mod coordinate;
mod handoff;
mod hints;
mod listing;
mod membership;
mod read;
mod reap;
mod replica;
mod restore;
mod routing;
mod transfer;
mod watch;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::config::NodeConfig;
use crate::coordinator::Client;
use crate::error::{ConfigError, MessageError, RequestError};
use crate::id::{CoordinationId, Millis, NodeId, OpId, RequestId};
use crate::io::{Event, Input, Output};
use crate::listing::CursorError;
use crate::membership::{ClusterView, FailureDetector, MemberInfo, MemberStatus};
use crate::request::{ClientRequest, QuorumKind, Reply};
use crate::ring::{Member, PartitionId, Ring};
use crate::storage::{StorageKey, StorageOp, StorageResult};
use crate::version::ActorId;
use crate::wire::Message;

use anti_entropy::AntiEntropy;
use coordinate::Requests;
use handoff::HandoffTracker;
use hints::{HintDelivery, OrphanScan};
use listing::Listings;
use membership::Membership;
pub use reap::ReapBacklog;
use reap::ReapSchedule;
use replica::{DeleteCondition, LocalWrite, LocalWriteKind, Replica};
use routing::Routing;
use transfer::Transfers;
use watch::Watches;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A deadline of whatever waits under this coordination id: a client request, a hint
    /// delivery or a Merkle exchange (ids are unique across them).
    Deadline(CoordinationId),
    /// A client request's replicas (or forward target) have had their share of its timeout:
    /// the silent ones are joined by fallbacks.
    Fallback(CoordinationId),
    /// Time to deliver some hints (or orphaned records).
    HintDelivery,
    /// Time to build a tree or start an exchange.
    AntiEntropy,
    /// Time to gossip and check peers' liveness.
    Gossip,
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
    /// A page of hints to deliver.
    HintScan,
    /// A page of a partition, to build its tree.
    TreeBuild(PartitionId),
    /// The cluster view being persisted.
    PersistView,
    /// A page of a partition this node does not hold.
    OrphanScan(PartitionId),
    /// A chunk of a partition for a receiver's transfer pull.
    ServeTransfer {
        to: NodeId,
        id: CoordinationId,
        partition: PartitionId,
    },
    /// A page of a bucket's keys for a listing's coordinator.
    ServeList { to: NodeId, id: CoordinationId },
    /// A key a watch just registered for, checked once.
    WatchCheck(StorageKey),
    /// A key scheduled for a reap check.
    ReapCheck(StorageKey),
}

/// The protocol state of one physical node. See the [module docs](self) for the caller's
/// obligations.
///
/// `Node` is the one facade: the `handle_*` inputs, `poll_output` and `poll_timeout`. What it
/// does is split by subsystem, each with its own state (a field below) and its own file: the
/// methods of one subsystem may call another's, but each owns its fields.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    now: Millis,
    rng: ChaCha8Rng,
    /// The actor that issues this node's dots, renewed when a damaged record hides its past dots.
    actor: ActorId,
    actor_generation: u64,
    /// Actors issued for writes coordinated without a replica (see [`Node::next_fallback_actor`]).
    fallback_actors: u64,
    outputs: VecDeque<Output>,
    /// Messages this node sent to itself, handled before the current input returns.
    loopback: VecDeque<Message>,
    next_op: u64,
    next_coordination: CoordinationId,
    pending_ops: BTreeMap<OpId, PendingOp>,
    timers: BTreeSet<(Millis, Timer)>,
    /// The ring requests are routed by, and which peers are suspected.
    routing: Routing,
    /// Client requests being coordinated or forwarded, and the node's own background reads.
    requests: Requests,
    /// Local read-modify-writes, one at a time per key.
    replica: Replica,
    /// Hinted hand-off: hints on their way to their owners.
    hints: HintDelivery,
    /// Records of partitions this node no longer holds, on their way to the replicas.
    orphans: OrphanScan,
    /// What this node may still hold of other nodes' partitions, as its scans found it.
    handoff: HandoffTracker,
    /// The cluster view, gossip and the failure detector.
    membership: Membership,
    /// Partitions pulled from current replicas for the next ring.
    transfers: Transfers,
    /// Merkle trees and exchanges.
    anti_entropy: AntiEntropy,
    /// Listings coordinated here, and listing scans served.
    listings: Listings,
    /// Watches coordinated here, and watch registrations held as an owner.
    watches: Watches,
    /// Dead keys to check for reaping once their grace period is over.
    reaps: ReapSchedule,
}

impl Node {
    /// A node with the given configuration, in a cluster of `members` (all up), at time `now`.
    ///
    /// Every node given the same configuration and members builds the same view and ring: the
    /// ring is the claim of the lowest-id member, as if it had claimed and gossiped it.
    pub fn new(config: NodeConfig, members: Vec<Member>, now: Millis) -> Result<Node, ConfigError> {
        config.merkle.validate()?;
        let view = Node::initial_view(&config, &members)?;
        Node::from_view(config, view, now)
    }

    /// The view [`Node::new`] starts from: `members` all up, and the ring the lowest-id member
    /// claims for them. It depends only on the cluster name and the ring configuration of
    /// `config`, so a host starting many nodes of one cluster (the simulator) builds it once
    /// and gives each node a copy through [`Node::from_view`], rather than claiming the ring
    /// once per node.
    pub fn initial_view(
        config: &NodeConfig,
        members: &[Member],
    ) -> Result<ClusterView, ConfigError> {
        // Checks the members (duplicates, capacities) with the ring's own rules first.
        Ring::new(config.ring.clone(), members.to_vec())?;
        let mut view = ClusterView::new(config.cluster.clone())?;
        for member in members {
            let mut info = MemberInfo::new(member.id.clone(), "", "", member.capacity);
            info.zone = member.zone.clone();
            info.status = MemberStatus::Up;
            view.set_member(info)?;
        }
        if let Some(claimant) = view.claimant().cloned() {
            view.claim(&claimant, &config.ring)?;
        }
        view.compact();
        Ok(view)
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
        for bucket in core::iter::once(&config.default_bucket).chain(config.buckets.values()) {
            routing::check_zone_placement(&config.ring, bucket)?;
            bucket.limits.validate()?;
            if let Some(ttl) = bucket.default_ttl_ms {
                crate::bucket::check_ttl(ttl)?;
            }
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
        // Starts each peer's clock, so one that is never heard from is found down.
        detector.start_clocks(
            view.members()
                .map(|m| &m.id)
                .filter(|id| **id != config.node_id),
            now,
        );
        let gossip_interval = config.gossip.interval_ms.max(1);
        let hint_interval = config.hint_delivery_interval_ms.max(1);
        let ae_interval = config.anti_entropy_interval_ms.max(1);
        let mut node = Node {
            actor: actor_name(&config.node_id, config.incarnation, 0),
            actor_generation: 0,
            fallback_actors: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            // Coordination and storage op ids start in a range of their own per incarnation, so
            // a reply or a storage result meant for a previous incarnation cannot be taken for
            // one of this incarnation's. The range wraps after 2^24 incarnations (hosts may use
            // clock milliseconds as incarnations): answers outlive an incarnation by seconds,
            // not by 2^24 restarts.
            next_coordination: id_range_start(config.incarnation),
            next_op: id_range_start(config.incarnation),
            now,
            outputs: VecDeque::new(),
            loopback: VecDeque::new(),
            pending_ops: BTreeMap::new(),
            timers: BTreeSet::from([
                (now.saturating_add(hint_interval), Timer::HintDelivery),
                (now.saturating_add(ae_interval), Timer::AntiEntropy),
                (now.saturating_add(gossip_interval), Timer::Gossip),
            ]),
            routing: Routing::new(ring, ring_version),
            requests: Requests::default(),
            replica: Replica::default(),
            hints: HintDelivery::default(),
            orphans: OrphanScan::default(),
            handoff: HandoffTracker::default(),
            membership: Membership::new(view, detector),
            transfers: Transfers::default(),
            anti_entropy: AntiEntropy::default(),
            listings: Listings::default(),
            watches: Watches::default(),
            reaps: ReapSchedule::default(),
            config,
        };
        node.ring_changed_for_handoff();
        Ok(node)
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
        &self.routing.ring
    }

    /// The actor that names the dots this node issues now.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// Whether the failure detector hears from `peer` (this node itself is always alive).
    pub fn is_alive(&self, peer: &NodeId) -> bool {
        *peer == self.config.node_id || self.membership.detector.is_alive(peer, self.now)
    }

    /// Client requests being coordinated or forwarded here (this node's clients' and those
    /// forwarded to it). Background work (hint deliveries, Merkle exchanges, repair and reap
    /// reads, transfers) is not counted.
    pub fn in_flight(&self) -> usize {
        self.requests.client_count()
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
        if self.requests.client_ids.contains(&request_id) {
            return Err(RequestError::DuplicateRequestId(request_id));
        }
        if self.routing.ring_version.is_none() {
            return Err(RequestError::NoReplicas);
        }
        let timeout = request
            .options()
            .timeout_ms
            .unwrap_or(self.config.request_timeout_ms);
        if let ClientRequest::List {
            bucket,
            cursor,
            limit,
            ..
        } = request
        {
            let partitions = self.routing.ring.partition_count();
            if let Some(cursor) = &cursor {
                if cursor.partition.0 >= partitions {
                    return Err(RequestError::Cursor(CursorError::OutOfRange {
                        partition: cursor.partition.0,
                        partitions,
                    }));
                }
            }
            self.requests.client_ids.insert(request_id);
            self.start_list(Client::Local(request_id), bucket, cursor, limit, timeout);
            self.drain_loopback();
            return Ok(());
        }
        if matches!(request, ClientRequest::Watch { .. })
            && self.watches.count() >= self.config.max_watches
        {
            return Err(RequestError::TooManyWatches {
                max: self.config.max_watches,
            });
        }
        let (bucket, key) = request.target();
        let replicas = self.preference_list(bucket, key, quorums.n);
        if replicas.is_empty() {
            return Err(RequestError::NoReplicas);
        }
        // A write needs W acknowledgements and DW durable ones, each from a distinct node.
        let needs = if request.is_write() {
            alloc::vec![
                (QuorumKind::Write, quorums.w),
                (QuorumKind::Durable, quorums.dw),
            ]
        } else {
            alloc::vec![(QuorumKind::Read, quorums.r)]
        };
        let unmet = needs
            .into_iter()
            .find(|&(_, needed)| (replicas.len() as u32) < needed);
        // A zone quorum needs replicas in the zones it counts (this node's, for a local one).
        self.needs(&quorums, &replicas)?;
        if let Some((kind, needed)) = unmet {
            return Err(RequestError::TooFewMembers {
                quorum: kind.parameter().to_string(),
                needed,
                members: replicas.len(),
                n: quorums.n,
            });
        }
        self.requests.client_ids.insert(request_id);
        let client = Client::Local(request_id);
        match request {
            ClientRequest::Get { bucket, key, .. } => {
                self.start_get(client, bucket, key, quorums, replicas, timeout);
            }
            ClientRequest::Watch {
                bucket,
                key,
                context,
                wait_ms,
                ..
            } => {
                self.start_watch(
                    client, bucket, key, context, wait_ms, quorums, replicas, timeout,
                );
            }
            ClientRequest::Restore {
                bucket,
                key,
                record,
                ..
            } => self.start_restore(client, bucket, key, record, quorums, replicas, timeout),
            write => self.route_write(client, write, quorums, replicas, timeout),
        }
        self.drain_loopback();
        Ok(())
    }

    /// The client of request `request_id`, a watch, went away: the watch ends without an
    /// answer, freeing its slot (see [`NodeConfig::max_watches`](crate::config::NodeConfig)).
    /// Returns whether there was such a watch; any other request runs on.
    pub fn cancel_watch(&mut self, now: Millis, request_id: RequestId) -> bool {
        self.advance(now);
        let cancelled = Node::cancel_watch_of(self, request_id);
        self.drain_loopback();
        cancelled
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
        if !introduction
            && self.membership.view.member(&from).is_none()
            && self.routing.ring.member(&from).is_none()
        {
            self.event(Event::MessageDropped {
                from: from.clone(),
                reason: "sender is not a member".to_string(),
            });
            return Err(MessageError::UnknownPeer(from));
        }
        if let Message::Read { bucket, key, .. }
        | Message::Write { bucket, key, .. }
        | Message::Repair { bucket, key, .. }
        | Message::Watch { bucket, key, .. } = &message
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
        self.routing.suspects.remove(&from);
        self.membership.detector.heartbeat(&from, self.now);
        self.on_message(from, message);
        self.drain_loopback();
        Ok(())
    }

    /// The result of the storage operation `op_id`. Results for unknown ids (answered twice, or
    /// meant for an earlier incarnation, whose op ids lie in another range) are ignored: a host
    /// need not tell a previous incarnation's late results apart.
    pub fn handle_storage(&mut self, now: Millis, op_id: OpId, result: StorageResult) {
        self.advance(now);
        let Some(purpose) = self.pending_ops.remove(&op_id) else {
            return;
        };
        if let StorageResult::Failed(error) = &result {
            self.event(Event::StorageFailed {
                error: error.clone(),
            });
        }
        match purpose {
            PendingOp::ServeRead { to, id, key } => self.serve_read_done(to, id, key, result),
            PendingOp::WriteRead(key) => self.local_write_read_done(key, result),
            PendingOp::WriteStore(key) => self.local_write_stored(key, result),
            PendingOp::HintScan => self.hints_scanned(result),
            PendingOp::TreeBuild(partition) => self.tree_page(partition, result),
            PendingOp::PersistView => {}
            PendingOp::OrphanScan(partition) => self.orphans_scanned(partition, result),
            PendingOp::ServeTransfer { to, id, partition } => {
                self.transfer_page_read(to, id, partition, result)
            }
            PendingOp::ServeList { to, id } => self.list_page_scanned(to, id, result),
            PendingOp::WatchCheck(key) => self.watch_checked(key, result),
            PendingOp::ReapCheck(key) => self.reap_check_read(key, result),
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
                Timer::Deadline(id) => self.on_deadline(id),
                Timer::Fallback(id) => self.on_fallback(id),
                Timer::Gossip => {
                    self.gossip_tick();
                    self.sweep_registrations();
                    self.timers.insert((
                        self.now
                            .saturating_add(self.config.gossip.interval_ms.max(1)),
                        Timer::Gossip,
                    ));
                }
                Timer::AntiEntropy => {
                    self.start_due_reaps();
                    self.anti_entropy_tick();
                    self.timers.insert((
                        self.now
                            .saturating_add(self.config.anti_entropy_interval_ms.max(1)),
                        Timer::AntiEntropy,
                    ));
                }
                Timer::HintDelivery => {
                    self.hint_delivery_tick();
                    self.timers.insert((
                        self.now
                            .saturating_add(self.config.hint_delivery_interval_ms.max(1)),
                        Timer::HintDelivery,
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

    fn advance(&mut self, now: Millis) {
        self.now = self.now.max(now);
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
                self.requests.client_ids.remove(&request_id);
                let reply = if self.requests.abandoned_forwards.remove(&request_id) {
                    reply.after_abandoned_forward()
                } else {
                    reply
                };
                self.outputs.push_back(Output::Reply { request_id, reply });
            }
            Client::Remote { from, id } => self.send(from, Message::ForwardReply { id, reply }),
            Client::Condition(waiting) => self.on_condition_read(waiting, reply),
            Client::Watch(waiting) => self.on_watch_read(waiting, reply),
            Client::Internal | Client::Reap => {}
        }
    }

    /// Answers with a quorum failure (`unavailable` or `outcome_unknown`) and reports it, with
    /// the same counts as the reply.
    fn reply_unavailable(&mut self, client: Client, reply: Reply) {
        // A client's write re-coordinated after an abandoned forward is answered
        // `outcome_unknown` whatever this coordination says (see `reply`).
        let abandoned = matches!(&client, Client::Local(id)
            if self.requests.abandoned_forwards.contains(id));
        let failed = match &reply {
            Reply::Unavailable {
                kind,
                needed,
                answered,
            } => Some((*kind, *needed, answered.len(), abandoned)),
            Reply::OutcomeUnknown {
                kind,
                needed,
                answered,
            } => Some((*kind, *needed, answered.len(), true)),
            _ => None,
        };
        if let Some((kind, needed, answered, outcome_unknown)) = failed {
            self.event(Event::QuorumFailed {
                kind,
                needed,
                answered: answered as u32,
                outcome_unknown,
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

    /// Dispatches a peer's message (or one this node sent itself) to its subsystem.
    fn on_message(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Forward {
                id,
                request,
                deadline,
            } => self.on_forward(from, id, request, Some(deadline)),
            Message::ForwardWithoutDeadline { id, request } => {
                self.on_forward(from, id, request, None)
            }
            Message::ForwardReply { id, reply } => self.on_forward_reply(from, id, reply),
            Message::Read {
                id,
                bucket,
                key,
                hint,
            } => self.on_replica_read(from, id, bucket, key, hint),
            Message::ReadReply { id, result } => self.on_read_reply(from, id, result),
            Message::Ping => self.send(from, Message::Pong),
            Message::Reap {
                bucket,
                key,
                digest,
                ring_version,
            } => self.on_reap(bucket, key, digest, ring_version),
            Message::Gossip(gossip) => self.on_gossip(from, gossip),
            Message::TransferPull {
                id,
                partition,
                after,
            } => self.serve_transfer(from, id, partition, after),
            Message::TransferChunk { id, items, done } => {
                self.on_transfer_chunk(from, id, items, done)
            }
            Message::Exchange {
                id,
                partition,
                request,
            } => self.on_exchange(from, id, partition, request),
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
            Message::ListKeys {
                id,
                partition,
                bucket,
                after,
                limit,
            } => self.on_list_keys(from, id, partition, bucket, after, limit),
            Message::KeysListed {
                id,
                keys,
                last,
                done,
                served,
            } => self.on_keys_listed(from, id, keys, last, done, served),
            Message::Watch {
                id,
                bucket,
                key,
                context,
                lasts_ms,
            } => self.on_watch(from, id, bucket, key, context, lasts_ms),
            Message::Unwatch { id } => self.on_unwatch(from, id),
            Message::Changed { id, record } => self.on_changed(from, id, record),
            Message::WatchRefused { id } => self.on_watch_refused(from, id),
        }
    }

    /// Arms the deadline of whatever waits under coordination id `id`.
    fn arm_deadline(&mut self, id: CoordinationId, deadline: Millis) {
        self.timers.insert((deadline, Timer::Deadline(id)));
    }

    /// Disarms a deadline armed with [`Node::arm_deadline`].
    fn disarm_deadline(&mut self, id: CoordinationId, deadline: Millis) {
        self.timers.remove(&(deadline, Timer::Deadline(id)));
    }

    /// A fresh coordination id: unique across client requests, hint deliveries, exchanges and
    /// transfer pulls, so one deadline timer kind serves them all.
    fn new_coordination_id(&mut self) -> CoordinationId {
        self.next_coordination += 1;
        self.next_coordination
    }

    /// Some deadline passed: whoever waits under `id` is told.
    fn on_deadline(&mut self, id: CoordinationId) {
        if self.requests.contains(id) {
            self.on_request_deadline(id);
        } else if self.hints.deliveries.contains_key(&id) {
            self.on_delivery_deadline(id);
        } else if self.anti_entropy.exchanges.contains_key(&id) {
            self.on_exchange_deadline(id);
        } else if self.listings.contains(id) {
            self.on_list_deadline(id);
        } else if self.watches.contains(id) {
            self.on_watch_deadline(id);
        }
    }

    /// A fresh actor for one write coordinated by a node that holds no replica of its key:
    /// `{node}.{incarnation}.{generation}.f{n}`. Its last part is not a number, so it can equal
    /// no [`actor_name`]; incarnations make it new across restarts.
    fn next_fallback_actor(&mut self) -> ActorId {
        self.fallback_actors += 1;
        ActorId::new(format!("{}.f{}", self.actor.as_str(), self.fallback_actors))
    }

    fn renew_actor(&mut self) {
        // The new actor has issued nothing: no removed record holds its dots.
        self.replica.removed_dot_floor = 0;
        self.replica.renew_before_write = false;
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

/// The first id of an incarnation's range of coordination ids and storage op ids.
fn id_range_start(incarnation: u64) -> u64 {
    (incarnation & 0xff_ffff) << 40
}

/// The actor a node's dots are issued by: `{node}.{incarnation}.{generation}`. Read from the
/// right, the two numbers are unambiguous even for node ids that contain dots, so two nodes can
/// never share an actor.
fn actor_name(node: &NodeId, incarnation: u64, generation: u64) -> ActorId {
    ActorId::new(format!("{node}.{incarnation}.{generation}"))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod zone_tests;
