//! The task that owns a [`Node`]: every input goes through one channel into one task, so the
//! protocol state needs no locks. The rest of the host talks to it through a [`NodeHandle`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ringkv_core::bucket::BucketProps;
use ringkv_core::error::{CommandError, RequestError};
use ringkv_core::id::NodeId;
use ringkv_core::io::Command;
use ringkv_core::membership::ClusterView;
use ringkv_core::request::{ClientRequest, Reply};
use ringkv_core::ring::{PartitionId, Ring};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Why the node task did not carry out a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The core refused the request before starting it (bad input, no ring yet, ...).
    #[error(transparent)]
    Rejected(#[from] RequestError),
    /// The core refused an operator command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A join could not start (the node is not alone, or the seed cannot be reached).
    #[error("cannot join: {0}")]
    Join(String),
    /// The local store could not be read.
    #[error("storage: {0}")]
    Storage(String),
    /// The node is shutting down and takes no new requests.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The node shut down while the request was in flight: a write may or may not have been
    /// applied.
    #[error(
        "the node shut down before the request finished; a write may or may not have been applied"
    )]
    Abandoned,
}

/// A snapshot of what the node knows, for `/cluster`, `/ring` and `/health`.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// This node.
    pub node: NodeId,
    /// Its view of the cluster.
    pub view: ClusterView,
    /// The ring it routes by.
    pub ring: Ring,
    /// That ring's version (`None`: a joining node that has none yet).
    pub ring_version: Option<u64>,
    /// Members the failure detector hears from (this node included).
    pub alive: BTreeSet<NodeId>,
    /// Hints held here for other nodes.
    pub hints_pending: u64,
    /// Partitions still to be handed to the next ring, with their receivers.
    pub partitions_moving: Vec<(PartitionId, Vec<NodeId>)>,
    /// Requests coordinated here now.
    pub in_flight: u64,
    /// Properties of buckets that were never set.
    pub default_bucket: BucketProps,
    /// Merkle roots of the partition replicas whose trees are built.
    pub merkle_roots: BTreeMap<PartitionId, u64>,
    /// The database is open (false after an I/O error it could not be reopened from).
    pub storage_open: bool,
}

/// What other tasks ask of the node task.
pub(crate) enum NodeRequest {
    Client {
        request: ClientRequest,
        reply: oneshot::Sender<Result<Reply, NodeError>>,
    },
    Command {
        command: Command,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Join {
        seed: String,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    Snapshot {
        each: SnapshotCallback,
        reply: oneshot::Sender<Result<crate::storage::SnapshotStats, NodeError>>,
    },
    LocalRecord {
        bucket: Vec<u8>,
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Option<Vec<u8>>, NodeError>>,
    },
}

/// What [`NodeHandle::snapshot`] calls with each record; false stops the walk.
pub type SnapshotCallback =
    Box<dyn FnMut(ringkv_core::storage::StorageKey, Vec<u8>) -> bool + Send + 'static>;

/// A cheap, cloneable way to talk to the node task.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) requests: mpsc::Sender<NodeRequest>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) node_id: NodeId,
    /// Set once the server is stopping: `/readyz` answers 503 from then on, so that load
    /// balancers stop sending requests before the listener closes.
    pub(crate) draining: Arc<AtomicBool>,
}

impl NodeHandle {
    /// Marks the node as stopping (not ready). It keeps serving; only `/readyz` changes.
    pub fn mark_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether [`NodeHandle::mark_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Runs a client request to its reply (quorum failures are replies, not errors).
    pub async fn client(&self, request: ClientRequest) -> Result<Reply, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(NodeRequest::Client { request, reply }).await?;
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// Runs an operator command (leave, remove, bucket properties).
    pub async fn command(&self, command: Command) -> Result<(), NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(NodeRequest::Command { command, reply }).await?;
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// Makes this node, alone in its own cluster, join the cluster of the seed at `seed` (a peer
    /// address).
    pub async fn join(&self, seed: String) -> Result<(), NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(NodeRequest::Join { seed, reply }).await?;
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// What the node knows now.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(NodeRequest::Status { reply }).await?;
        answer.await.map_err(|_| NodeError::ShuttingDown)
    }

    /// This node's own stored replica of a key, as its encoded record, read straight from the
    /// store (no quorum, no repair): what a history checker compares across replicas. A record
    /// that fails its checksum reads as `Some(vec![])`.
    pub async fn local_record(
        &self,
        bucket: Vec<u8>,
        key: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(NodeRequest::LocalRecord { bucket, key, reply })
            .await?;
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// Walks every record of this node's store (its replicas and the hints it holds) from one
    /// read transaction, on a blocking thread, while the node serves (see
    /// [`Storage::snapshot`](crate::storage::Storage::snapshot)). `each` may block (to feed a
    /// bounded channel); it returns false to stop.
    pub async fn snapshot(
        &self,
        each: SnapshotCallback,
    ) -> Result<crate::storage::SnapshotStats, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.send(NodeRequest::Snapshot { each, reply }).await?;
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    async fn send(&self, request: NodeRequest) -> Result<(), NodeError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| NodeError::ShuttingDown)
    }
}

// ----- the task -----

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringkv_core::id::{Millis, OpId, RequestId};

use ringkv_core::config::NodeConfig;
use ringkv_core::io::{Event, Output};
use ringkv_core::membership::MemberInfo;
use ringkv_core::node::Node;
use ringkv_core::storage::StorageResult;
use ringkv_core::wire::Message;

use crate::storage::Storage;
use crate::transport::Transport;

/// The node's time: milliseconds since the Unix epoch as read at start, advanced by a monotonic
/// clock. Wall time, because last-writer-wins buckets compare timestamps across nodes; advanced
/// monotonically, so a step of the system clock neither freezes the node's timers nor runs them
/// backwards.
#[derive(Debug)]
pub(crate) struct Clock {
    wall_at_start: Millis,
    start: std::time::Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            wall_at_start: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as Millis),
            start: std::time::Instant::now(),
        }
    }
}

impl Clock {
    pub(crate) fn now(&mut self) -> Millis {
        self.wall_at_start
            .saturating_add(self.start.elapsed().as_millis() as Millis)
    }
}

/// Inputs of one kind handled in a row before the node's outputs are performed: fewer wake-ups
/// and larger group commits under load, while every source still gets its turn.
const BATCH: usize = 64;

/// Storage operations in flight above which the node takes no new client requests or peer
/// messages: the disk is the bottleneck, so HTTP and TCP push back on the senders instead of
/// queues growing without bound.
const MAX_STORAGE_IN_FLIGHT: usize = 8192;

/// Everything the node task owns.
pub(crate) struct NodeTask {
    pub(crate) node: Node,
    /// This node's entry as it announces itself (addresses, capacity, zone), for a join.
    pub(crate) me: MemberInfo,
    pub(crate) storage: Storage,
    pub(crate) transport: Transport,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Clock,
    pub(crate) requests: mpsc::Receiver<NodeRequest>,
    pub(crate) inbound: mpsc::Receiver<(NodeId, Message)>,
    pub(crate) completions: mpsc::UnboundedReceiver<(OpId, StorageResult)>,
    /// How long shutdown waits for requests in flight.
    pub(crate) drain_timeout: Duration,
    /// Storage operations submitted and not yet answered.
    pub(crate) storage_in_flight: usize,
    /// A join waiting for the storage operations of the node it replaces to finish (their ids
    /// would otherwise be taken for the new node's).
    pub(crate) pending_join: Option<PendingJoin>,
    /// Set when the node says it is drained (see `ServerConfig::stop_when_drained`).
    pub(crate) drained: tokio::sync::watch::Sender<bool>,
}

/// A join whose seed has answered, waiting to switch nodes.
pub(crate) struct PendingJoin {
    seed_id: NodeId,
    seed: String,
    reply: oneshot::Sender<Result<(), NodeError>>,
}

type Waiters = HashMap<RequestId, oneshot::Sender<Result<Reply, NodeError>>>;

/// How often the node task looks for watches whose client went away.
const WATCH_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl NodeTask {
    /// Ends the watches whose waiter `ends` says so: the node forgets them, and a waiter still
    /// listening is told the node is shutting down.
    fn end_watches(
        &mut self,
        replies: &mut Waiters,
        ends: impl Fn(&oneshot::Sender<Result<Reply, NodeError>>) -> bool,
    ) {
        let now = self.clock.now();
        let ending: Vec<RequestId> = replies
            .iter()
            .filter(|(_, reply)| ends(reply))
            .map(|(id, _)| *id)
            .collect();
        for id in ending {
            if self.node.cancel_watch(now, id) {
                if let Some(reply) = replies.remove(&id) {
                    let _ = reply.send(Err(NodeError::ShuttingDown));
                }
            }
        }
        self.drain_outputs(replies);
    }
}

/// The node task's loop: runs until `shutdown` fires, then drains in-flight requests (bounded by
/// `drain_timeout`) and flushes storage.
pub(crate) async fn run(mut task: NodeTask, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut replies: Waiters = HashMap::new();
    let mut next_request: RequestId = 0;
    task.refresh_peers();
    task.drain_outputs(&mut replies);
    let mut draining_since: Option<tokio::time::Instant> = None;
    let mut watches_swept = tokio::time::Instant::now();
    loop {
        // Deadlines first, whatever else is busy: request timeouts, gossip and hint delivery
        // must not starve behind a stream of messages.
        let now = task.clock.now();
        if task
            .node
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            task.node.handle_timeout(now);
            task.metrics
                .hints_pending
                .set(task.storage.hints_pending() as i64);
            task.drain_outputs(&mut replies);
        }
        if task.pending_join.is_some() && task.storage_in_flight == 0 {
            task.switch_to_joining().await;
            task.drain_outputs(&mut replies);
        }
        let wake = task.wake_at();
        let accepting = task.storage_in_flight < MAX_STORAGE_IN_FLIGHT;
        let taking_requests = accepting && draining_since.is_none() && task.pending_join.is_none();
        tokio::select! {
            Some((op_id, result)) = task.completions.recv() => {
                task.storage_done(op_id, result);
                for _ in 1..BATCH {
                    match task.completions.try_recv() {
                        Ok((op_id, result)) => task.storage_done(op_id, result),
                        Err(_) => break,
                    }
                }
            }
            Some((from, message)) = task.inbound.recv(), if accepting => {
                task.peer_message(from, message);
                for _ in 1..BATCH {
                    match task.inbound.try_recv() {
                        Ok((from, message)) => task.peer_message(from, message),
                        Err(_) => break,
                    }
                }
            }
            request = task.requests.recv(), if taking_requests => match request {
                Some(request) => task.on_request(request, &mut replies, &mut next_request).await,
                None => draining_since = Some(tokio::time::Instant::now()),
            },
            _ = tokio::time::sleep_until(wake) => {}
            changed = shutdown.changed(), if draining_since.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    draining_since = Some(tokio::time::Instant::now());
                    task.requests.close();
                }
            }
        }
        task.drain_outputs(&mut replies);
        // Watches whose client went away end now, not at their deadline: each holds a slot
        // of the node's bounded watch table.
        if watches_swept.elapsed() >= WATCH_SWEEP_INTERVAL {
            watches_swept = tokio::time::Instant::now();
            task.end_watches(&mut replies, |reply| reply.is_closed());
        }
        if let Some(since) = draining_since {
            // A watch could wait minutes: every one ends now, answered 503 shutting_down.
            task.end_watches(&mut replies, |_| true);
            // Requests already queued on the closed channel still get their answer.
            while let Ok(request) = task.requests.try_recv() {
                task.on_request(request, &mut replies, &mut next_request)
                    .await;
                task.drain_outputs(&mut replies);
            }
            if replies.is_empty() || since.elapsed() >= task.drain_timeout {
                break;
            }
        }
    }
    if let Some(join) = task.pending_join.take() {
        let _ = join.reply.send(Err(NodeError::ShuttingDown));
    }
    for (_, reply) in replies.drain() {
        let _ = reply.send(Err(NodeError::Abandoned));
    }
    // Joins the storage threads and fsyncs: off the async workers, which other nodes of the
    // same process (ringkv dev, tests) still use.
    let storage = task.storage.clone();
    match tokio::task::spawn_blocking(move || storage.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "storage did not flush cleanly at shutdown"),
        Err(error) => tracing::error!(%error, "storage shutdown failed"),
    }
    task.transport.shutdown().await;
}

impl NodeTask {
    fn storage_done(&mut self, op_id: OpId, result: StorageResult) {
        self.storage_in_flight = self.storage_in_flight.saturating_sub(1);
        let now = self.clock.now();
        self.node.handle_storage(now, op_id, result);
    }

    fn peer_message(&mut self, from: NodeId, message: Message) {
        let now = self.clock.now();
        if let Err(error) = self.node.handle_message(now, from, message) {
            tracing::debug!(%error, "peer message dropped by the node");
            Metrics::count(&self.metrics.peer_messages_dropped, "refused_by_node");
        }
    }

    /// When the loop must wake for the node's next deadline (at most a second away, so a clock
    /// jump cannot stall it).
    fn wake_at(&mut self) -> tokio::time::Instant {
        let now = self.clock.now();
        let wait = match self.node.poll_timeout() {
            Some(deadline) => deadline.saturating_sub(now).min(1_000),
            None => 1_000,
        };
        tokio::time::Instant::now() + Duration::from_millis(wait)
    }

    async fn on_request(
        &mut self,
        request: NodeRequest,
        replies: &mut HashMap<RequestId, oneshot::Sender<Result<Reply, NodeError>>>,
        next_request: &mut RequestId,
    ) {
        let now = self.clock.now();
        match request {
            NodeRequest::Client { request, reply } => {
                let id = *next_request;
                *next_request += 1;
                match self.node.handle_client(now, id, request) {
                    Ok(()) => {
                        replies.insert(id, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(NodeError::Rejected(error)));
                    }
                }
            }
            NodeRequest::Command { command, reply } => {
                let result = self
                    .node
                    .handle_command(now, command)
                    .map_err(NodeError::Command);
                let _ = reply.send(result);
            }
            NodeRequest::Status { reply } => {
                let _ = reply.send(self.status());
            }
            NodeRequest::Snapshot { each, reply } => {
                let storage = self.storage.clone();
                // Off the node task: the walk reads the whole store.
                tokio::task::spawn_blocking(move || {
                    let stats = storage
                        .snapshot(each)
                        .map_err(|error| NodeError::Storage(error.to_string()));
                    let _ = reply.send(stats);
                });
            }
            NodeRequest::LocalRecord { bucket, key, reply } => {
                let storage_key = self.node.storage_key(&bucket, &key);
                let storage = self.storage.clone();
                // Off the node task: the read waits on the store.
                tokio::task::spawn_blocking(move || {
                    let record = storage
                        .read_now(&storage_key)
                        .map_err(|error| NodeError::Storage(error.to_string()));
                    let _ = reply.send(record);
                });
            }
            NodeRequest::Join { seed, reply } => match self.prepare_join(&seed).await {
                Ok(seed_id) => {
                    self.pending_join = Some(PendingJoin {
                        seed_id,
                        seed,
                        reply,
                    });
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
        }
    }

    /// Checks that this node may join another cluster (it is alone in its own) and learns the
    /// seed's id. The seed is dialled from the node task: an operator's rare command, bounded by
    /// the transport's connect and handshake timeouts.
    async fn prepare_join(&mut self, seed: &str) -> Result<NodeId, NodeError> {
        let me = self.node.id().clone();
        if self.pending_join.is_some() {
            return Err(NodeError::Join("a join is already in progress".into()));
        }
        if self.node.view().members().any(|m| m.id != me) {
            return Err(NodeError::Join(
                "this node is already in a cluster with other members".into(),
            ));
        }
        let seed_id = self
            .transport
            .identify(seed)
            .await
            .map_err(|e| NodeError::Join(format!("seed {seed}: {e}")))?;
        if seed_id == me {
            return Err(NodeError::Join("the seed is this node".into()));
        }
        Ok(seed_id)
    }

    /// Replaces the lone node by one joining the seed's cluster, once no storage operation of the
    /// old node is in flight. Only the construction is here; joining itself (gossip, claim,
    /// transfer) is the core's.
    async fn switch_to_joining(&mut self) {
        let Some(PendingJoin {
            seed_id,
            seed,
            reply,
        }) = self.pending_join.take()
        else {
            return;
        };
        let me = self.node.id().clone();
        if self.node.in_flight() > 0 {
            let _ = reply.send(Err(NodeError::Join("requests are in flight; retry".into())));
            return;
        }
        let mut config: NodeConfig = self.node.config().clone();
        config.gossip.seeds = vec![seed_id.clone()];
        let mut info = self.me.clone();
        info.status = ringkv_core::membership::MemberStatus::Joining;
        // Outranks the entry of this node's former one-node cluster wherever it was gossiped.
        info.version = self
            .node
            .view()
            .member(&me)
            .map_or(0, |m| m.version.saturating_add(1));
        let now = self.clock.now();
        let node = match Node::join_as(config, info, now) {
            Ok(node) => node,
            Err(e) => {
                let _ = reply.send(Err(NodeError::Join(format!(
                    "cannot build the joining node: {e}"
                ))));
                return;
            }
        };
        // Persisted before the switch, so a restart rejoins instead of refounding its old cluster.
        let storage = self.storage.clone();
        let view = node.view().encode();
        let persisted = tokio::task::spawn_blocking(move || {
            storage.write_now(&ringkv_core::storage::StorageKey::view(), view)
        })
        .await;
        if !matches!(persisted, Ok(Ok(()))) {
            let _ = reply.send(Err(NodeError::Join(
                "cannot persist the joining view".into(),
            )));
            return;
        }
        self.transport.set_addresses([(seed_id, seed)]);
        self.node = node;
        tracing::info!(node = %me, "joining the cluster");
        let _ = reply.send(Ok(()));
    }

    fn status(&mut self) -> NodeStatus {
        let view = self.node.view().clone();
        let alive = view
            .members()
            .filter(|m| self.node.is_alive(&m.id))
            .map(|m| m.id.clone())
            .collect();
        let n = self.node.config().ring.target_n;
        let partitions_moving = view.ring().map(|r| r.transfers(n)).unwrap_or_default();
        NodeStatus {
            node: self.node.id().clone(),
            ring: self.node.ring().clone(),
            ring_version: view.ring().map(|r| r.version),
            view,
            alive,
            hints_pending: self.storage.hints_pending(),
            partitions_moving,
            in_flight: self.node.in_flight() as u64,
            default_bucket: self.node.config().default_bucket.clone(),
            merkle_roots: self.node.merkle_roots(),
            storage_open: self.storage.is_open(),
        }
    }

    /// Tells the transport where every member is reached, and updates the membership gauges.
    fn refresh_peers(&mut self) {
        let me = self.node.id().clone();
        let peers: Vec<(NodeId, String)> = self
            .node
            .view()
            .members()
            .filter(|m| m.id != me && !m.peer_address.is_empty())
            .map(|m| (m.id.clone(), m.peer_address.clone()))
            .collect();
        self.transport.set_addresses(peers);
        let n = self.node.config().ring.target_n;
        let moving = self.node.view().ring().map_or(0, |r| r.transfers(n).len());
        self.metrics.transfer_partitions_pending.set(moving as i64);
        self.metrics
            .hints_pending
            .set(self.storage.hints_pending() as i64);
    }

    fn drain_outputs(
        &mut self,
        replies: &mut HashMap<RequestId, oneshot::Sender<Result<Reply, NodeError>>>,
    ) {
        let outputs: Vec<Output> = std::iter::from_fn(|| self.node.poll_output()).collect();
        // A changed view may name new peers that these very outputs are addressed to (the
        // answer to a newcomer's first gossip): learn their addresses before sending.
        if outputs
            .iter()
            .any(|o| matches!(o, Output::Event(Event::ViewChanged { .. })))
        {
            self.refresh_peers();
        }
        for output in outputs {
            match output {
                Output::Send { to, message } => self.transport.send(&to, message),
                Output::Storage { op_id, op } => {
                    self.storage_in_flight += 1;
                    self.storage.submit(op_id, op);
                }
                Output::Reply { request_id, reply } => {
                    if let Reply::Got {
                        values, context, ..
                    } = &reply
                    {
                        self.metrics.observe_read(values, context.clock().len());
                    }
                    if let Some(waiter) = replies.remove(&request_id) {
                        // The HTTP side may have gone (client hung up): nothing to do then.
                        let _ = waiter.send(Ok(reply));
                    }
                }
                Output::Event(event) => self.on_event(event),
            }
        }
        self.update_gauges();
    }

    /// Sets the gauges that follow the core's state (cheap: counts the core keeps).
    fn update_gauges(&self) {
        let metrics = &self.metrics;
        let backlog = self.node.reap_backlog();
        metrics.set_reap_backlog(backlog.tombstones, backlog.expired);
        metrics
            .transfer_pulls_active
            .set(crate::metrics::gauge_value(
                self.node.pulls_under_way() as u64
            ));
        metrics
            .requests_in_flight
            .set(crate::metrics::gauge_value(self.node.in_flight() as u64));
    }

    fn on_event(&mut self, event: Event) {
        let metrics = &self.metrics;
        match event {
            Event::ChecksumFailure {
                bucket,
                key,
                detail,
            } => {
                // Counted by storage, which sees the damaged frame first.
                tracing::warn!(
                    bucket = %String::from_utf8_lossy(&bucket),
                    key = %String::from_utf8_lossy(&key),
                    %detail,
                    "damaged replica: treated as missing, will be repaired"
                );
            }
            Event::ReadRepair { replicas, .. } => {
                metrics.read_repairs.inc_by(replicas.len() as u64);
            }
            Event::QuorumFailed { .. } => {
                // Counted by the HTTP layer, which sees every request's outcome.
            }
            Event::StorageFailed { error } => {
                tracing::warn!(%error, "storage operation failed");
            }
            Event::MessageDropped { from, reason } => {
                tracing::debug!(%from, %reason, "peer message dropped");
            }
            Event::AntiEntropy {
                partition,
                peer,
                differing,
                repaired,
                ..
            } => {
                metrics.anti_entropy_exchanges.inc();
                metrics
                    .anti_entropy_keys_differing
                    .inc_by(u64::from(differing));
                metrics
                    .anti_entropy_keys_repaired
                    .inc_by(u64::from(repaired));
                if differing > 0 {
                    tracing::info!(partition = partition.0, %peer, differing, repaired, "anti-entropy repaired keys");
                }
            }
            Event::AntiEntropyAbandoned {
                partition,
                peer,
                reason,
            } => {
                tracing::debug!(partition = partition.0, %peer, %reason, "anti-entropy exchange abandoned");
            }
            Event::TransferSent {
                keys, bytes, done, ..
            } => metrics.count_transfer("sent", keys, bytes, done),
            Event::TransferReceived {
                partition,
                from,
                keys,
                bytes,
                done,
            } => {
                metrics.count_transfer("received", keys, bytes, done);
                if done {
                    tracing::debug!(partition = partition.0, %from, "partition transfer received");
                }
            }
            Event::TombstoneReaped { .. } => {
                metrics.tombstones_reaped.inc();
            }
            Event::PeerDown { peer } => {
                metrics.peers_down.inc();
                tracing::warn!(%peer, "peer down: requests use fallbacks");
            }
            Event::PeerUp { peer } => {
                metrics.peers_down.dec();
                tracing::info!(%peer, "peer up");
            }
            Event::DownAlert { peer, down_ms } => {
                tracing::error!(%peer, down_ms, "peer down for long: leave or remove it if it is gone for good");
            }
            Event::ViewChanged { digest } => {
                tracing::debug!(digest, "cluster view changed");
            }
            Event::ActorRenewed { actor } => {
                tracing::warn!(%actor, "version actor renewed after a damaged record");
            }
            Event::Drained => {
                tracing::info!("drained: this node left the ring and handed every hint and orphaned record over; it may be stopped");
                let _ = self.drained.send(true);
            }
            other => tracing::debug!(event = %other, "node event"),
        }
    }
}
