//! Watching a key (a long poll). The coordinator reads the key at R: if it holds a write the
//! watcher's context has not seen, that read is the answer. Otherwise the coordinator registers
//! the watch with each owner of the key, and an owner that stores such a write (from a client's
//! write, a repair, a hint or a transfer) sends it back at once; the first one answers the
//! watcher. At the watch's deadline the answer is "unchanged". Nothing polls: an owner checks
//! its registrations for a key only when it stores that key, and once when the watch registers
//! (a write may have landed between the coordinator's read and the registration).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{Node, PendingOp};
use crate::bucket::Quorums;
use crate::coordinator::get::live_values;
use crate::coordinator::Client;
use crate::id::{CoordinationId, Millis, NodeId};
use crate::request::{QuorumKind, Reply};
use crate::storage::{StorageKey, StorageOp, StorageResult};
use crate::version::{Context, Object};
use crate::wire::Message;

/// Past its deadline, how long an owner keeps a registration whose `Unwatch` may be lost.
const REGISTRATION_SLACK_MS: Millis = 1_000;
/// The longest an owner keeps a registration, whatever a coordinator asks.
const MAX_REGISTRATION_MS: Millis = crate::request::MAX_WATCH_WAIT_MS + REGISTRATION_SLACK_MS;

/// A watch this node coordinates.
#[derive(Debug)]
struct Watching {
    client: Client,
    bucket: Vec<u8>,
    key: Vec<u8>,
    /// What the watcher has seen.
    context: Context,
    /// When the watch answers "unchanged".
    deadline: Millis,
    /// The owners it registered with (empty while the first read runs), and how many refused.
    owners: Vec<NodeId>,
    refused: usize,
    /// The context of the first read: the "unchanged" answer's.
    read: Context,
}

/// A watch registered here, as an owner of its key.
#[derive(Debug)]
struct Registration {
    coordinator: NodeId,
    id: CoordinationId,
    context: Context,
    until: Millis,
}

/// The watch state: watches coordinated here, and registrations held as an owner.
#[derive(Debug, Default)]
pub(super) struct Watches {
    active: BTreeMap<CoordinationId, Watching>,
    /// Registrations by bucket and key.
    registered: BTreeMap<(Vec<u8>, Vec<u8>), Vec<Registration>>,
    /// The key of each registration, by coordinator and id.
    keys: BTreeMap<(NodeId, CoordinationId), (Vec<u8>, Vec<u8>)>,
}

impl Watches {
    /// Watches coordinated here.
    pub(super) fn count(&self) -> usize {
        self.active.len()
    }

    pub(super) fn contains(&self, id: CoordinationId) -> bool {
        self.active.contains_key(&id)
    }

    /// Registrations held as an owner.
    pub(super) fn registrations(&self) -> usize {
        self.keys.len()
    }
}

/// Whether `object`'s context holds a write `seen` has not seen.
fn changed(seen: &Context, object: &Context) -> bool {
    !seen.clock().descends(object.clock())
}

impl Node {
    /// Starts a watch: the read that tells whether the key changed already.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_watch(
        &mut self,
        client: Client,
        bucket: Vec<u8>,
        key: Vec<u8>,
        context: Context,
        wait_ms: Millis,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        read_timeout: Millis,
    ) {
        let id = self.new_coordination_id();
        self.watches.active.insert(
            id,
            Watching {
                client,
                bucket: bucket.clone(),
                key: key.clone(),
                context,
                deadline: self.now.saturating_add(wait_ms),
                owners: Vec::new(),
                refused: 0,
                read: Context::empty(),
            },
        );
        self.start_get(
            Client::Watch(id),
            bucket,
            key,
            quorums,
            replicas,
            read_timeout.min(wait_ms),
        );
    }

    /// The watch's first read answered: a change is the answer; no change registers the watch
    /// with the owners; a failed read is passed on.
    pub(super) fn on_watch_read(&mut self, id: CoordinationId, reply: Reply) {
        let Some(watching) = self.watches.active.get_mut(&id) else {
            return;
        };
        let Reply::Got { context, .. } = &reply else {
            let Some(watching) = self.watches.active.remove(&id) else {
                return;
            };
            self.reply(watching.client, reply);
            return;
        };
        if changed(&watching.context, context) {
            let Some(watching) = self.watches.active.remove(&id) else {
                return;
            };
            self.reply(watching.client, reply);
            return;
        }
        watching.read = context.clone();
        let (bucket, key) = (watching.bucket.clone(), watching.key.clone());
        let seen = watching.context.clone();
        let deadline = watching.deadline;
        let n = self.bucket_props(&bucket).n;
        let owners = self.preference_list(&bucket, &key, n);
        if let Some(watching) = self.watches.active.get_mut(&id) {
            watching.owners = owners.clone();
        }
        self.arm_deadline(id, deadline);
        // A duration, not a time: each owner counts it on its own clock, so clocks that
        // differ neither refuse nor stretch a registration.
        let lasts_ms = deadline
            .saturating_sub(self.now)
            .saturating_add(REGISTRATION_SLACK_MS);
        for owner in owners {
            self.send(
                owner,
                Message::Watch {
                    id,
                    bucket: bucket.clone(),
                    key: key.clone(),
                    context: seen.clone(),
                    lasts_ms,
                },
            );
        }
    }

    /// The watch's time is up: unchanged. The answer's context is the watcher's merged with
    /// the read's: the watcher may have seen a write (its own) that the R replicas read had
    /// not, and watching again from the read's alone would wake it at once for that write.
    pub(super) fn on_watch_deadline(&mut self, id: CoordinationId) {
        let Some(watching) = self.watches.active.remove(&id) else {
            return;
        };
        self.unregister(id, &watching.owners);
        let mut clock = watching.read.clock().clone();
        clock.merge(watching.context.clock());
        let context = Context::from_clock(clock).bound_to(&watching.bucket, &watching.key);
        self.reply(watching.client, Reply::Unchanged { context });
    }

    /// Ends the watch of this node's client `request_id` without an answer (its client went
    /// away): its slot is free again, and its owners forget it. Whether there was one.
    pub(super) fn cancel_watch_of(&mut self, request_id: crate::id::RequestId) -> bool {
        let found = self
            .watches
            .active
            .iter()
            .find(|(_, w)| w.client == Client::Local(request_id))
            .map(|(id, _)| *id);
        let Some(id) = found else {
            return false;
        };
        let Some(watching) = self.watches.active.remove(&id) else {
            return false;
        };
        if !watching.owners.is_empty() {
            self.disarm_deadline(id, watching.deadline);
            self.unregister(id, &watching.owners);
        }
        self.requests.client_ids.remove(&request_id);
        true
    }

    /// An owner stored a write the watch has not seen: it is the answer.
    pub(super) fn on_changed(&mut self, from: NodeId, id: CoordinationId, record: Vec<u8>) {
        let Some(watching) = self.watches.active.get(&id) else {
            return;
        };
        if !watching.owners.contains(&from) {
            return;
        }
        // A damaged record tells nothing: the other owners (or the deadline) answer.
        let Ok(object) = Object::decode(&record) else {
            return;
        };
        let context = object.context();
        if !changed(&watching.context, &context) {
            return;
        }
        let Some(watching) = self.watches.active.remove(&id) else {
            return;
        };
        self.disarm_deadline(id, watching.deadline);
        self.unregister(id, &watching.owners);
        let (values, expires_at) = live_values(&object, self.now);
        let n = self.bucket_props(&watching.bucket).n;
        let reply = Reply::Got {
            values,
            context: context.bound_to(&watching.bucket, &watching.key),
            replicas: alloc::vec![from],
            fallbacks: Vec::new(),
            // One owner's object answers, not a quorum's merge.
            read_your_writes: n <= 1,
            expires_at,
        };
        self.reply(watching.client, reply);
    }

    /// An owner refused the registration: when every owner has, the watch cannot be kept.
    pub(super) fn on_watch_refused(&mut self, from: NodeId, id: CoordinationId) {
        let Some(watching) = self.watches.active.get_mut(&id) else {
            return;
        };
        if !watching.owners.contains(&from) {
            return;
        }
        watching.refused += 1;
        if watching.refused < watching.owners.len() {
            return;
        }
        let Some(watching) = self.watches.active.remove(&id) else {
            return;
        };
        self.disarm_deadline(id, watching.deadline);
        self.reply(
            watching.client,
            Reply::Unavailable {
                kind: QuorumKind::Read,
                needed: 1,
                answered: Vec::new(),
            },
        );
    }

    fn unregister(&mut self, id: CoordinationId, owners: &[NodeId]) {
        for owner in owners {
            self.send(owner.clone(), Message::Unwatch { id });
        }
    }

    // ----- the owner's side -----

    /// A coordinator registers a watch: kept for `lasts_ms` (this node's clock) or until its
    /// `Unwatch`, and checked against the stored object once now.
    pub(super) fn on_watch(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        bucket: Vec<u8>,
        key: Vec<u8>,
        context: Context,
        lasts_ms: Millis,
    ) {
        let until = self.now.saturating_add(lasts_ms.min(MAX_REGISTRATION_MS));
        if self.watches.registrations() >= self.config.max_watch_registrations {
            self.sweep_registrations();
        }
        let full = self.watches.registrations() >= self.config.max_watch_registrations;
        if full || until <= self.now {
            self.send(from, Message::WatchRefused { id });
            return;
        }
        let target = (bucket, key);
        let previous = self.watches.keys.insert((from.clone(), id), target.clone());
        if previous.is_some() {
            // A repeated registration replaces the first.
            self.drop_registration(&from, id);
            self.watches.keys.insert((from.clone(), id), target.clone());
        }
        self.watches
            .registered
            .entry(target.clone())
            .or_default()
            .push(Registration {
                coordinator: from,
                id,
                context,
                until,
            });
        let storage_key = self.storage_key(&target.0, &target.1);
        self.storage(
            StorageOp::Get {
                key: storage_key.clone(),
            },
            PendingOp::WatchCheck(storage_key),
        );
    }

    /// A coordinator ended its watch.
    pub(super) fn on_unwatch(&mut self, from: NodeId, id: CoordinationId) {
        self.drop_registration(&from, id);
    }

    fn drop_registration(&mut self, coordinator: &NodeId, id: CoordinationId) {
        let Some(target) = self.watches.keys.remove(&(coordinator.clone(), id)) else {
            return;
        };
        if let Some(list) = self.watches.registered.get_mut(&target) {
            list.retain(|r| !(r.id == id && r.coordinator == *coordinator));
            if list.is_empty() {
                self.watches.registered.remove(&target);
            }
        }
    }

    /// The stored record of a key just registered: tells the watches it has news for.
    pub(super) fn watch_checked(&mut self, key: StorageKey, result: StorageResult) {
        if let StorageResult::Record(Some(record)) = result {
            if let Ok(object) = Object::decode(&record) {
                self.notify_watchers(&key, &object);
            }
        }
    }

    /// This node stored `object` under `key`: every watch of the key that has not seen it is
    /// told, and forgotten here.
    pub(super) fn notify_watchers(&mut self, key: &StorageKey, object: &Object) {
        if self.watches.registered.is_empty() {
            return;
        }
        let target = (key.bucket.clone(), key.key.clone());
        let Some(list) = self.watches.registered.get_mut(&target) else {
            return;
        };
        let now = self.now;
        let context = object.context();
        let mut told = Vec::new();
        let mut gone = Vec::new();
        list.retain(|r| {
            if r.until <= now {
                gone.push((r.coordinator.clone(), r.id));
                false
            } else if changed(&r.context, &context) {
                told.push((r.coordinator.clone(), r.id));
                false
            } else {
                true
            }
        });
        if list.is_empty() {
            self.watches.registered.remove(&target);
        }
        for entry in gone.iter().chain(&told) {
            self.watches.keys.remove(entry);
        }
        if told.is_empty() {
            return;
        }
        let record = object.encode();
        for (coordinator, id) in told {
            self.send(
                coordinator,
                Message::Changed {
                    id,
                    record: record.clone(),
                },
            );
        }
    }

    /// Forgets registrations past their time (their coordinator's `Unwatch` was lost).
    pub(super) fn sweep_registrations(&mut self) {
        let now = self.now;
        let mut gone = Vec::new();
        self.watches.registered.retain(|_, list| {
            list.retain(|r| {
                let keep = r.until > now;
                if !keep {
                    gone.push((r.coordinator.clone(), r.id));
                }
                keep
            });
            !list.is_empty()
        });
        for entry in gone {
            self.watches.keys.remove(&entry);
        }
    }
}
