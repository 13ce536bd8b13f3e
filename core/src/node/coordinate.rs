//! Coordination of client requests: a put (or delete) counting W
//! acknowledgements, a request forwarded to an owner, and their deadlines. The per-request state
//! machines are in [`crate::coordinator`]; this is where the node starts, advances and ends them.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::ToString;
use alloc::vec::Vec;

use super::{LocalWrite, LocalWriteKind, Node};
use crate::bucket::{Quorums, Scope};
use crate::coordinator::get::GetState;
use crate::coordinator::put::PutState;
use crate::coordinator::speculation::ReadLatencies;
use crate::coordinator::{Client, ForwardState, Target};
use crate::id::{CoordinationId, Millis, NodeId, RequestId};
use crate::io::Event;
use crate::request::{ClientRequest, QuorumKind, Reply};
use crate::storage::StorageKey;
use crate::version::{Content, Context, Dot, Object};
use crate::wire::Message;

/// One client request being coordinated or forwarded here.
#[derive(Debug)]
pub(super) enum Request {
    Get(GetState),
    Put(PutState),
    Forward(ForwardState),
}

impl Request {
    fn deadline(&self) -> Millis {
        match self {
            Request::Get(s) => s.deadline,
            Request::Put(s) => s.deadline,
            Request::Forward(s) => s.deadline,
        }
    }

    fn fallback_at(&self) -> Millis {
        match self {
            Request::Get(s) => s.fallback_at,
            Request::Put(s) => s.fallback_at,
            Request::Forward(s) => s.fallback_at,
        }
    }
}

/// A write request taken apart: bucket, key, the context it supersedes (see
/// [`ClientRequest::write_context`]) and what it stores. A put's value expires at `expires_at`
/// (see [`Node::expiry_of`]).
fn write_parts(
    request: ClientRequest,
    expires_at: Option<Millis>,
) -> Option<(Vec<u8>, Vec<u8>, Context, Content)> {
    let context = request.write_context()?.clone();
    match request {
        ClientRequest::Put {
            bucket, key, value, ..
        } => Some((bucket, key, context, Content::value(value, expires_at))),
        ClientRequest::Delete { bucket, key, .. } => {
            Some((bucket, key, context, Content::Tombstone))
        }
        ClientRequest::Get { .. }
        | ClientRequest::List { .. }
        | ClientRequest::Watch { .. }
        | ClientRequest::Restore { .. } => None,
    }
}

/// The coordination state: client requests, apart from the reads the node makes for itself.
#[derive(Debug, Default)]
pub(super) struct Requests {
    /// Client requests (this node's clients' and those forwarded to it), by coordination id.
    active: BTreeMap<CoordinationId, Request>,
    /// Reads the node makes for itself: anti-entropy repairs and reap checks. They are
    /// coordinated like a client's get, but no client waits for them.
    background_reads: BTreeMap<CoordinationId, GetState>,
    /// Request ids of this node's clients not answered yet.
    pub(super) client_ids: BTreeSet<RequestId>,
    /// Of those, writes whose forward was given up and coordinated again: the first forward
    /// may still land, so no failure of theirs is certain ([`Reply::after_abandoned_forward`]).
    pub(super) abandoned_forwards: BTreeSet<RequestId>,
    /// Conditional writes waiting for the read that checks their condition.
    pub(super) conditional: BTreeMap<CoordinationId, super::conditional::ConditionalWrite>,
    /// How long recent replica reads took: when a get asks its held-back replicas.
    pub(super) read_latencies: ReadLatencies,
}

impl Requests {
    /// Client requests in flight (background reads are not counted).
    pub(super) fn client_count(&self) -> usize {
        self.active.len()
    }

    /// Whether a request or background read waits under `id`.
    pub(super) fn contains(&self, id: CoordinationId) -> bool {
        self.active.contains_key(&id) || self.background_reads.contains_key(&id)
    }

    pub(super) fn get(&self, id: CoordinationId) -> Option<&GetState> {
        match self.active.get(&id) {
            Some(Request::Get(state)) => Some(state),
            _ => self.background_reads.get(&id),
        }
    }

    pub(super) fn get_mut(&mut self, id: CoordinationId) -> Option<&mut GetState> {
        match self.active.get_mut(&id) {
            Some(Request::Get(state)) => Some(state),
            _ => self.background_reads.get_mut(&id),
        }
    }

    pub(super) fn put(&self, id: CoordinationId) -> Option<&PutState> {
        match self.active.get(&id) {
            Some(Request::Put(state)) => Some(state),
            _ => None,
        }
    }

    pub(super) fn put_mut(&mut self, id: CoordinationId) -> Option<&mut PutState> {
        match self.active.get_mut(&id) {
            Some(Request::Put(state)) => Some(state),
            _ => None,
        }
    }
}

impl Node {
    pub(super) fn arm(&mut self, id: CoordinationId, request: Request) {
        self.arm_deadline(id, request.deadline());
        self.timers
            .insert((request.fallback_at(), super::Timer::Fallback(id)));
        self.requests.active.insert(id, request);
    }

    fn finish(&mut self, id: CoordinationId) -> Option<Request> {
        let request = self.requests.active.remove(&id)?;
        self.disarm_deadline(id, request.deadline());
        self.timers
            .remove(&(request.fallback_at(), super::Timer::Fallback(id)));
        Some(request)
    }

    pub(super) fn arm_get(&mut self, id: CoordinationId, state: GetState) {
        if matches!(state.client, Client::Internal | Client::Reap) {
            self.arm_deadline(id, state.deadline);
            self.requests.background_reads.insert(id, state);
        } else {
            self.arm(id, Request::Get(state));
        }
    }

    pub(super) fn finish_get(&mut self, id: CoordinationId) -> Option<GetState> {
        if let Some(state) = self.requests.background_reads.remove(&id) {
            self.disarm_deadline(id, state.deadline);
            return Some(state);
        }
        match self.requests.active.get(&id) {
            Some(Request::Get(_)) => match self.finish(id) {
                Some(Request::Get(state)) => Some(state),
                _ => None,
            },
            _ => None,
        }
    }

    fn finish_put(&mut self, id: CoordinationId) -> Option<PutState> {
        match self.requests.active.get(&id) {
            Some(Request::Put(_)) => match self.finish(id) {
                Some(Request::Put(state)) => Some(state),
                _ => None,
            },
            _ => None,
        }
    }

    // ----- coordination: put and delete -----

    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_put(
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
        let state = self.put_state(client, bucket, key, quorums, replicas, timeout);
        self.arm(id, Request::Put(state));
        self.enqueue_local_write(LocalWrite {
            key: storage_key,
            kind: LocalWriteKind::Coordinate {
                id,
                context: context.clock().clone(),
                content,
            },
            sync: quorums.dw > 0,
            result: None,
            replicated_early: false,
        });
    }

    /// The coordinator's own write is merged and on its way to the disk: replicate it to the
    /// others at once.
    pub(super) fn coordinated_write_prepared(
        &mut self,
        id: CoordinationId,
        key: &StorageKey,
        context: Context,
        dot: Dot,
        record: Vec<u8>,
    ) {
        let me = self.config.node_id.clone();
        let Some(state) = self.requests.put_mut(id) else {
            return;
        };
        state.written = Some((context, Some(dot)));
        let sync = state.quorums.dw > 0;
        let others: Vec<Target> = state
            .replicas
            .iter()
            .filter(|t| t.node != me)
            .cloned()
            .collect();
        self.replicate(id, &key.bucket, &key.key, &record, others, sync);
        if let Some(state) = self.requests.put_mut(id) {
            state.record = Some(record);
        }
    }

    /// The coordinator's own write is stored: count it.
    pub(super) fn coordinated_write_stored(&mut self, id: CoordinationId, synced: bool) {
        let me = self.config.node_id.clone();
        if let Some(state) = self.requests.put_mut(id) {
            state.record(&me, true, synced);
        }
        self.advance_put(id);
    }

    /// The coordinator's own store failed after the record went to the others: count it as a
    /// refusal, and let the others' answers decide.
    pub(super) fn coordinated_write_not_stored(&mut self, id: CoordinationId) {
        let me = self.config.node_id.clone();
        if let Some(state) = self.requests.put_mut(id) {
            state.record(&me, false, false);
        }
        self.advance_put(id);
    }

    /// Sends a coordinated write's record to `targets` (and, as a repair, to the nodes pulling
    /// its partition for the next ring).
    pub(super) fn replicate(
        &mut self,
        id: CoordinationId,
        bucket: &[u8],
        key: &[u8],
        record: &[u8],
        targets: Vec<Target>,
        sync: bool,
    ) {
        for receiver in self.pending_receivers(bucket, key) {
            self.send(
                receiver,
                Message::Repair {
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    record: record.to_vec(),
                    hint: None,
                },
            );
        }
        for target in targets {
            self.send(
                target.node,
                Message::Write {
                    id,
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    record: record.to_vec(),
                    sync,
                    hint: target.hint,
                },
            );
        }
    }

    /// A put starting now, waiting for `replicas`, nothing written yet.
    pub(super) fn put_state(
        &self,
        client: Client,
        bucket: Vec<u8>,
        key: Vec<u8>,
        quorums: Quorums,
        replicas: Vec<Target>,
        timeout: Millis,
    ) -> PutState {
        // The owners each target stands for: a fallback's hint names one.
        let owners: Vec<NodeId> = replicas
            .iter()
            .map(|t| t.hint.clone().unwrap_or_else(|| t.node.clone()))
            .collect();
        let needs = self.needs_or_majority(&quorums, &owners);
        PutState {
            client,
            bucket,
            key,
            quorums,
            need_w: needs.w,
            need_dw: needs.dw,
            replicas,
            acked: Vec::new(),
            durable: BTreeSet::new(),
            refused: BTreeSet::new(),
            written: None,
            record: None,
            answered: false,
            fallback_at: self.config.fallback_at(self.now, timeout),
            deadline: self.now.saturating_add(timeout),
        }
    }

    /// Coordinates a write on a node that holds no replica of the key and reaches no owner
    /// (all down, cut off, or the forward to one went unanswered): always writable, as long as
    /// W nodes of the extended preference list take it.
    ///
    /// The dot cannot come from a local replica's clock, as an owner's does: this node may have
    /// issued dots for the key before, as a fallback, and no longer hold them (its hint was
    /// delivered and deleted), so counting from its own records could reissue one, and a
    /// replica whose clock covers a dot drops a new write that carries it. Each such write
    /// gets a fresh actor instead ([`Node::next_fallback_actor`]): its dot is new by
    /// construction. The cost is one clock entry per such write, pruned like any other by
    /// truncation where a later write is coordinated. The record holds the context and the new
    /// sibling only; each replica merges it into what it holds, keeping concurrent siblings.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_fallback_put(
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
        let targets = self.targets(&bucket, &key, replicas);
        let actor = self.next_fallback_actor();
        let mut object = Object::new();
        let dot = object.update(
            context.clock(),
            &actor,
            content,
            self.now,
            self.mode(&bucket),
        );
        object.truncate_keeping(self.config.max_clock_entries, &actor);
        // The bucket's bounds apply here as far as this node can see: its own write. Whether
        // it would add a sibling, and how large the key's object would grow, only a replica
        // knows, so a value that alone makes an object over `max_object_bytes` is refused
        // (through an owner it passes when it replaces every sibling; this node cannot tell
        // that it does), and `max_siblings` is left to the replicas' coordinators.
        let limits = self.bucket_props(&bucket).limits;
        let bytes = object.encoded_len() as u64;
        if bytes > limits.max_object_bytes {
            let reply = Reply::ObjectTooLarge {
                bytes,
                max: limits.max_object_bytes,
            };
            self.event(Event::WriteRefused {
                bucket,
                key,
                bound: reply.outcome().to_string(),
            });
            self.reply(client, reply);
            return;
        }
        let record = object.encode();
        let sync = quorums.dw > 0;
        let mut state = self.put_state(
            client,
            bucket.clone(),
            key.clone(),
            quorums,
            targets.clone(),
            timeout,
        );
        state.written = Some((object.context(), Some(dot.clone())));
        state.record = Some(record.clone());
        self.arm(id, Request::Put(state));
        self.event(Event::FallbackCoordinated {
            bucket: bucket.clone(),
            key: key.clone(),
            dot,
        });
        self.replicate(id, &bucket, &key, &record, targets, sync);
    }

    /// Where a write goes: coordinated here when this node holds a replica; else forwarded to
    /// the first reachable owner (a client's write only: a forwarded one is never forwarded
    /// again, which could loop between nodes whose rings differ); else coordinated here with a
    /// fresh actor ([`Node::start_fallback_put`]). A conditional write is checked first, where
    /// it is coordinated ([`Node::check_condition`]).
    pub(super) fn route_write(
        &mut self,
        client: Client,
        request: ClientRequest,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        timeout: Millis,
    ) {
        let owner = self.forward_owner(&quorums, &replicas);
        match (&client, owner) {
            (Client::Local(request_id), Some(owner)) if !replicas.contains(self.id()) => {
                let request_id = *request_id;
                self.forward(request_id, request, quorums, owner, timeout);
                return;
            }
            _ => {}
        }
        if request.options().condition.is_some() {
            self.check_condition(client, request, quorums, replicas, timeout);
        } else {
            self.coordinate_write(client, request, quorums, replicas, timeout);
        }
    }

    /// The owner a client's write is forwarded to: the first reachable one in this node's zone,
    /// else (unless a quorum counts this zone's replicas only, which another zone's coordinator
    /// would count in its own) the first reachable one.
    fn forward_owner(&self, quorums: &Quorums, replicas: &[NodeId]) -> Option<NodeId> {
        let zone = self.zone();
        let mut reachable = replicas.iter().filter(|r| self.reachable(r));
        let local = reachable
            .clone()
            .find(|r| zone.is_some() && self.zone_of(r) == zone);
        let scopes = [quorums.scopes.w, quorums.scopes.dw];
        let local_only = scopes
            .iter()
            .any(|s| matches!(s, Scope::LocalOne | Scope::LocalQuorum));
        match local {
            Some(owner) => Some(owner.clone()),
            None if local_only => None,
            None => reachable.next().cloned(),
        }
    }

    /// Coordinates a write here: as an owner when this node holds a replica, else as a fallback.
    pub(super) fn coordinate_write(
        &mut self,
        client: Client,
        request: ClientRequest,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        timeout: Millis,
    ) {
        let expires_at = self.expiry_of(&request);
        let Some((bucket, key, context, content)) = write_parts(request, expires_at) else {
            return;
        };
        if replicas.contains(self.id()) {
            self.start_put(
                client, bucket, key, context, content, quorums, replicas, timeout,
            );
        } else {
            self.start_fallback_put(
                client, bucket, key, context, content, quorums, replicas, timeout,
            );
        }
    }

    /// When a put coordinated now expires: its own time to live, else its bucket's default,
    /// counted from this node's clock (`None`: it does not expire, or the request is no put).
    fn expiry_of(&self, request: &ClientRequest) -> Option<Millis> {
        let ClientRequest::Put {
            bucket, options, ..
        } = request
        else {
            return None;
        };
        let ttl = options
            .ttl_ms
            .or_else(|| self.bucket_props(bucket).default_ttl_ms)?;
        Some(self.now.saturating_add(ttl))
    }

    pub(super) fn coordinated_write_failed(
        &mut self,
        id: CoordinationId,
        reason: alloc::string::String,
    ) {
        self.coordinated_write_refused(id, Reply::Failed { reason });
    }

    /// Ends a put whose local write failed with `reply` (nothing was sent to other replicas).
    pub(super) fn coordinated_write_refused(&mut self, id: CoordinationId, reply: Reply) {
        if let Some(state) = self.finish_put(id) {
            if !state.answered {
                self.reply(state.client, reply);
            }
        }
    }

    pub(super) fn on_write_reply(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        stored: bool,
        synced: bool,
    ) {
        if self.hints.deliveries.contains_key(&id) {
            self.on_delivery_ack(&from, id, stored, synced);
            return;
        }
        let Some(state) = self.requests.put_mut(id) else {
            return;
        };
        state.record(&from, stored, synced);
        self.advance_put(id);
    }

    pub(super) fn advance_put(&mut self, id: CoordinationId) {
        let Some(state) = self.requests.put_mut(id) else {
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

    pub(super) fn end_put(&mut self, id: CoordinationId) {
        let Some(mut state) = self.finish_put(id) else {
            return;
        };
        if let Some(reply) = state.failure() {
            self.reply_unavailable(state.client, reply);
        }
    }

    // ----- forwarding -----

    /// Sends a client's write to `target`, an owner that seems reachable, to coordinate.
    fn forward(
        &mut self,
        request_id: RequestId,
        request: ClientRequest,
        quorums: Quorums,
        target: NodeId,
        timeout: Millis,
    ) {
        let id = self.new_coordination_id();
        let fallback_at = self.config.fallback_at(self.now, timeout);
        let deadline = self.now.saturating_add(timeout);
        self.send(
            target.clone(),
            Message::Forward {
                id,
                request: request.clone(),
                // No forward is given up earlier (see `on_fallback`): delivered later, it could
                // be coordinated after the write was coordinated elsewhere.
                deadline: earliest_give_up(self.now, fallback_at, deadline),
            },
        );
        let state = ForwardState {
            request_id,
            target,
            request,
            quorums,
            sent_at: self.now,
            probed: false,
            fallback_at,
            deadline,
        };
        self.arm(id, Request::Forward(state));
    }

    /// A peer forwarded its client's request here to coordinate. One past its `deadline` (the
    /// earliest time its forwarder may have given it up and coordinated it elsewhere) is
    /// refused, unanswered: coordinated now, the write could be coordinated twice.
    pub(super) fn on_forward(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        request: ClientRequest,
        deadline: Option<Millis>,
    ) {
        if deadline.is_some_and(|deadline| self.now >= deadline) {
            self.event(Event::MessageDropped {
                from,
                reason: "forwarded request past its deadline".to_string(),
            });
            return;
        }
        let client = Client::Remote {
            from: from.clone(),
            id,
        };
        // Only writes are forwarded; a listing, a watch or a restore (which issues no dot) is
        // coordinated where it arrives.
        if matches!(
            request,
            ClientRequest::List { .. }
                | ClientRequest::Watch { .. }
                | ClientRequest::Restore { .. }
        ) {
            self.reply(
                client,
                Reply::Failed {
                    reason: "a listing, a watch or a restore is not forwarded".to_string(),
                },
            );
            return;
        }
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
        if let Err(error) = self.needs(&quorums, &replicas) {
            self.reply(
                client,
                Reply::Failed {
                    reason: error.to_string(),
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
        if let ClientRequest::Get { bucket, key, .. } = request {
            self.start_get(client, bucket, key, quorums, replicas, timeout);
            return;
        }
        // If views of the ring differ and this node holds no replica, it coordinates as a
        // fallback would (forwarding again could loop).
        self.route_write(client, request, quorums, replicas, timeout);
    }

    pub(super) fn on_forward_reply(&mut self, from: NodeId, id: CoordinationId, reply: Reply) {
        match self.requests.active.get(&id) {
            Some(Request::Forward(state)) if state.target == from => {}
            _ => return,
        }
        if let Some(Request::Forward(state)) = self.finish(id) {
            // Peer messages carry contexts without their key binding: bound again here.
            let (bucket, key) = state.request.target();
            let reply = reply.bound_to(bucket, key);
            self.reply(Client::Local(state.request_id), reply);
        }
    }

    // ----- deadlines -----

    /// A request's (or background read's) deadline passed: the replicas that stayed silent are
    /// suspected, and the request ends with what it has.
    pub(super) fn on_request_deadline(&mut self, id: CoordinationId) {
        let silent: Vec<NodeId> = match (self.requests.get(id), self.requests.active.get(&id)) {
            (Some(s), _) => s
                .replicas
                .iter()
                .map(|t| &t.node)
                .filter(|r| !s.replies.contains_key(*r))
                .cloned()
                .collect(),
            // Before the local write is done nobody else was asked: a slow disk is not a reason
            // to suspect the peers.
            (None, Some(Request::Put(s))) if s.written.is_none() => Vec::new(),
            (None, Some(Request::Put(s))) => s
                .replicas
                .iter()
                .map(|t| &t.node)
                .filter(|r| !s.acked.contains(*r) && !s.refused.contains(*r))
                .cloned()
                .collect(),
            (None, Some(Request::Forward(s))) => alloc::vec![s.target.clone()],
            (None, Some(Request::Get(_))) | (None, None) => return,
        };
        for node in silent {
            if node != self.config.node_id {
                self.routing.suspects.insert(node);
            }
        }
        if self.requests.get(id).is_some() {
            self.end_get(id);
            return;
        }
        match self.requests.active.get(&id) {
            Some(Request::Put(_)) => self.end_put(id),
            Some(Request::Forward(_)) => {
                if let Some(Request::Forward(state)) = self.finish(id) {
                    // The coordinator may have the write and may still replicate it.
                    self.reply_unavailable(
                        Client::Local(state.request_id),
                        Reply::OutcomeUnknown {
                            kind: QuorumKind::Write,
                            needed: state.quorums.w,
                            answered: Vec::new(),
                        },
                    );
                }
            }
            Some(Request::Get(_)) | None => {}
        }
    }
}

impl Node {
    /// A request's fallback time came (see
    /// [`NodeConfig::fallback_after_percent`](crate::config::NodeConfig::fallback_after_percent)):
    /// each replica still silent is joined by the next reachable node of the extended preference
    /// list, and a forward whose coordinator has not been heard from since is coordinated here.
    /// Nobody is suspected yet: that waits for the deadline.
    pub(super) fn on_fallback(&mut self, id: CoordinationId) {
        match self.requests.active.get(&id) {
            Some(Request::Get(state)) if !state.held_back.is_empty() => {
                // The speculative retry: the replicas asked first are slower than nearly every
                // read of late. Fallbacks for those still silent come at their own time.
                let (fired, fallbacks_at) = (state.fallback_at, state.fallbacks_at);
                let answered = state.answered;
                if !answered {
                    self.ask_held_back(id);
                }
                let next = fallbacks_at.max(self.now);
                if let Some(state) = self.requests.get_mut(id) {
                    state.held_back.clear();
                    state.fallback_at = next;
                }
                self.timers.remove(&(fired, super::Timer::Fallback(id)));
                self.timers.insert((next, super::Timer::Fallback(id)));
            }
            Some(Request::Get(state)) if !state.answered => {
                let (bucket, key, n) = (state.bucket.clone(), state.key.clone(), state.quorums.n);
                let extra =
                    self.extra_fallbacks(&bucket, &key, n, &state.replicas, &state.silent());
                for target in &extra {
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
                if let Some(state) = self.requests.get_mut(id) {
                    state.extra.extend(extra.iter().map(|t| t.node.clone()));
                    state.replicas.extend(extra);
                }
            }
            Some(Request::Put(state)) if !state.answered => {
                let Some(record) = state.record.clone() else {
                    // The local write is not done: nobody else was asked yet.
                    return;
                };
                let (bucket, key, n) = (state.bucket.clone(), state.key.clone(), state.quorums.n);
                let sync = state.quorums.dw > 0;
                let extra =
                    self.extra_fallbacks(&bucket, &key, n, &state.replicas, &state.silent());
                if let Some(state) = self.requests.put_mut(id) {
                    state.replicas.extend(extra.iter().cloned());
                }
                for target in extra {
                    self.send(
                        target.node,
                        Message::Write {
                            id,
                            bucket: bucket.clone(),
                            key: key.clone(),
                            record: record.clone(),
                            sync,
                            hint: target.hint,
                        },
                    );
                }
            }
            Some(Request::Forward(state)) => {
                let heard = self
                    .membership
                    .detector
                    .last_heard(&state.target)
                    .is_some_and(|at| at > state.sent_at);
                if heard {
                    // Alive, and so (most likely) coordinating it: wait for its answer.
                    return;
                }
                if !state.probed {
                    // Peers are heard from by gossip only now and then: ask it directly, and
                    // decide when the answer had as long again as half of that wait to come.
                    // Never before the deadline the forward carries ([`earliest_give_up`]):
                    // this timer fires at its fallback time or later.
                    let target = state.target.clone();
                    let wait = probe_wait(state.sent_at, state.fallback_at);
                    let at = self.now.saturating_add(wait).min(state.deadline);
                    let fired = state.fallback_at;
                    self.send(target, Message::Ping);
                    self.timers.remove(&(fired, super::Timer::Fallback(id)));
                    self.timers.insert((at, super::Timer::Fallback(id)));
                    if let Some(Request::Forward(state)) = self.requests.active.get_mut(&id) {
                        state.probed = true;
                        state.fallback_at = at;
                    }
                    return;
                }
                let Some(Request::Forward(state)) = self.finish(id) else {
                    return;
                };
                // It may yet have received the write: if so, this makes a second sibling of
                // the same value (as a client's retry would), never a lost write.
                self.routing.suspects.insert(state.target.clone());
                // Whatever the second coordination answers, the first may still land.
                self.requests.abandoned_forwards.insert(state.request_id);
                self.event(Event::ForwardAbandoned {
                    to: state.target.clone(),
                });
                let (bucket, key) = state.request.target();
                let replicas = self.preference_list(bucket, key, state.quorums.n);
                let timeout = state.deadline.saturating_sub(self.now).max(1);
                // What the client has left, not its whole timeout again: a coordinator this is
                // forwarded to next sizes its own wait by the request's timeout.
                let mut request = state.request;
                request.options_mut().timeout_ms = Some(timeout);
                self.route_write(
                    Client::Local(state.request_id),
                    request,
                    state.quorums,
                    replicas,
                    timeout,
                );
            }
            _ => {}
        }
    }
}

/// How long a forwarder waits for the answer to its probe of a silent target: half of the time
/// it waited before probing.
fn probe_wait(sent_at: Millis, fallback_at: Millis) -> Millis {
    (fallback_at.saturating_sub(sent_at) / 2).max(1)
}

/// The earliest time a forward sent at `sent_at` may be given up and coordinated elsewhere: its
/// fallback time and then the probe's wait, or its deadline (see [`Node::on_fallback`]). Sent
/// with the forward, so that nobody coordinates it after that.
fn earliest_give_up(sent_at: Millis, fallback_at: Millis, deadline: Millis) -> Millis {
    fallback_at
        .saturating_add(probe_wait(sent_at, fallback_at))
        .min(deadline)
}
