//! Listing a bucket's keys: a coverage query. The coordinator walks the ring's partitions in
//! order and asks one replica of each (itself first when it holds one, then reachable owners,
//! then the rest) for a page of the bucket's live keys; a replica that refuses or stays silent
//! is replaced by the next. A replica scans one bounded page per ask, and serves at most
//! [`NodeConfig::max_list_scans`](crate::config::NodeConfig::max_list_scans) scans at once, so a
//! listing never holds a node's store for long.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use super::{Node, PendingOp};
use crate::coordinator::Client;
use crate::id::{CoordinationId, Millis, NodeId};
use crate::listing::{ListCursor, MAX_LIST_LIMIT};
use crate::request::{QuorumKind, Reply};
use crate::ring::PartitionId;
use crate::storage::{ScanRange, StorageKey, StorageOp, StorageResult};
use crate::version::Object;
use crate::wire::Message;

/// Scans a replica keeps waiting for their turn; past this, asks are refused.
const MAX_QUEUED_SCANS: usize = 64;

/// One listing page being coordinated.
#[derive(Debug)]
struct Listing {
    client: Client,
    bucket: Vec<u8>,
    limit: u32,
    /// Where the scan stands.
    position: ListCursor,
    /// Whether the position moved since the page started (an empty page that moved is an
    /// answer; one that did not is a failure).
    moved: bool,
    keys: Vec<Vec<u8>>,
    /// Replicas of the current partition not asked yet, in the order to ask them.
    candidates: Vec<NodeId>,
    /// The replica asked now, and when it is given up.
    asked: Option<(NodeId, Millis)>,
    /// When the page is answered with whatever it has (half the request's time), and when the
    /// request's time is up.
    answer_by: Millis,
    deadline: Millis,
}

/// A scan a replica was asked for, waiting for its turn.
#[derive(Debug)]
struct ScanAsk {
    to: NodeId,
    id: CoordinationId,
    partition: PartitionId,
    bucket: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: u32,
}

/// The listing state: pages this node coordinates, and scans it serves as a replica.
#[derive(Debug, Default)]
pub(super) struct Listings {
    /// Pages being coordinated, by the id of their current ask.
    active: BTreeMap<CoordinationId, Listing>,
    /// Scans being served.
    serving: usize,
    /// Scans waiting for their turn.
    queue: VecDeque<ScanAsk>,
}

impl Listings {
    pub(super) fn contains(&self, id: CoordinationId) -> bool {
        self.active.contains_key(&id)
    }
}

impl Node {
    /// Starts a listing page from `cursor` (checked against the ring by the caller).
    pub(super) fn start_list(
        &mut self,
        client: Client,
        bucket: Vec<u8>,
        cursor: Option<ListCursor>,
        limit: u32,
        timeout: Millis,
    ) {
        let listing = Listing {
            client,
            bucket,
            limit: limit.clamp(1, MAX_LIST_LIMIT),
            position: cursor.unwrap_or_default(),
            moved: false,
            keys: Vec::new(),
            candidates: Vec::new(),
            asked: None,
            answer_by: self.now.saturating_add(timeout / 2),
            deadline: self.now.saturating_add(timeout),
        };
        self.candidates_for(listing, true);
    }

    /// Fills the candidates of the listing's partition (when `fresh`) and asks the next one.
    fn candidates_for(&mut self, mut listing: Listing, fresh: bool) {
        if fresh {
            let n = self.bucket_props(&listing.bucket).n as usize;
            let owners = self
                .routing
                .ring
                .partition_preference_list(listing.position.partition, n);
            let me = self.config.node_id.clone();
            // Itself first (no round trip), then owners it hears from, then the rest.
            let mut ordered: Vec<NodeId> = owners.iter().filter(|o| **o == me).cloned().collect();
            ordered.extend(
                owners
                    .iter()
                    .filter(|o| **o != me && self.reachable(o))
                    .cloned(),
            );
            ordered.extend(
                owners
                    .iter()
                    .filter(|o| **o != me && !self.reachable(o))
                    .cloned(),
            );
            ordered.reverse();
            listing.candidates = ordered;
        }
        self.ask_next(listing);
    }

    /// Asks the next candidate of the current partition, or ends the page if none is left.
    fn ask_next(&mut self, mut listing: Listing) {
        let Some(replica) = listing.candidates.pop() else {
            self.end_listing(listing, false);
            return;
        };
        let id = self.new_coordination_id();
        // A replica gets the request's fallback share of the time, as a get's owners do.
        let total = listing.deadline.saturating_sub(self.now);
        let given_up = self
            .config
            .fallback_at(self.now, total)
            .max(self.now.saturating_add(1))
            .min(listing.deadline);
        listing.asked = Some((replica.clone(), given_up));
        let ask = Message::ListKeys {
            id,
            partition: listing.position.partition,
            bucket: listing.bucket.clone(),
            after: listing.position.after.clone(),
            limit: listing.limit - listing.keys.len() as u32,
        };
        self.arm_deadline(id, given_up);
        self.listings.active.insert(id, listing);
        self.send(replica, ask);
    }

    /// Answers a page: its keys and where the next starts; or, when it found nothing and did
    /// not move (every replica of a partition failed), `unavailable`.
    fn end_listing(&mut self, listing: Listing, complete: bool) {
        let reply = if complete {
            Reply::Listed {
                keys: listing.keys,
                cursor: None,
            }
        } else if listing.keys.is_empty() && !listing.moved {
            Reply::Unavailable {
                kind: QuorumKind::Read,
                needed: 1,
                answered: Vec::new(),
            }
        } else {
            Reply::Listed {
                keys: listing.keys,
                cursor: Some(listing.position),
            }
        };
        self.reply(listing.client, reply);
    }

    /// A replica's page of keys.
    pub(super) fn on_keys_listed(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        keys: Vec<Vec<u8>>,
        last: Option<Vec<u8>>,
        done: bool,
        served: bool,
    ) {
        let asked = self
            .listings
            .active
            .get(&id)
            .and_then(|listing| listing.asked.clone());
        let Some((replica, given_up)) = asked.filter(|(replica, _)| *replica == from) else {
            return;
        };
        let Some(mut listing) = self.listings.active.remove(&id) else {
            return;
        };
        self.disarm_deadline(id, given_up);
        listing.asked = None;
        if !served {
            self.ask_next(listing);
            return;
        }
        let room = (listing.limit as usize).saturating_sub(listing.keys.len());
        listing.keys.extend(keys.into_iter().take(room));
        if done {
            let next = listing.position.partition.0.saturating_add(1);
            if next >= self.routing.ring.partition_count() {
                self.end_listing(listing, true);
                return;
            }
            listing.position = ListCursor {
                partition: PartitionId(next),
                after: None,
            };
            listing.moved = true;
        } else if let Some(last) = last {
            listing.moved |= listing.position.after.as_ref() != Some(&last);
            listing.position.after = Some(last);
        }
        if listing.keys.len() >= listing.limit as usize || self.now >= listing.answer_by {
            self.end_listing(listing, false);
        } else if done {
            self.candidates_for(listing, true);
        } else {
            // The same replica goes on with the partition: it answered.
            listing.candidates.push(replica);
            self.ask_next(listing);
        }
    }

    /// An ask's time ran out: the next replica is asked, or the page ends.
    pub(super) fn on_list_deadline(&mut self, id: CoordinationId) {
        let Some(listing) = self.listings.active.remove(&id) else {
            return;
        };
        let something = !listing.keys.is_empty() || listing.moved;
        if self.now >= listing.deadline || (something && self.now >= listing.answer_by) {
            self.end_listing(listing, false);
        } else {
            self.ask_next(listing);
        }
    }

    // ----- the replica's side -----

    /// A coordinator asks for a page of a bucket's keys in a partition.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_list_keys(
        &mut self,
        from: NodeId,
        id: CoordinationId,
        partition: PartitionId,
        bucket: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: u32,
    ) {
        let ask = ScanAsk {
            to: from,
            id,
            partition,
            bucket,
            after,
            limit,
        };
        // A node that is not an owner of the partition may hold none of it: it refuses rather
        // than answer "no keys".
        let n = self.bucket_props(&ask.bucket).n as usize;
        let owner = self
            .routing
            .ring
            .partition_preference_list(partition, n)
            .contains(&self.config.node_id);
        if !owner || ask.bucket.len() > self.config.max_bucket_bytes {
            self.refuse_scan(ask);
        } else if self.listings.serving < self.config.max_list_scans.max(1) {
            self.serve_scan(ask);
        } else if self.listings.queue.len() < MAX_QUEUED_SCANS {
            self.listings.queue.push_back(ask);
        } else {
            self.refuse_scan(ask);
        }
    }

    fn refuse_scan(&mut self, ask: ScanAsk) {
        self.send(
            ask.to,
            Message::KeysListed {
                id: ask.id,
                keys: Vec::new(),
                last: None,
                done: false,
                served: false,
            },
        );
    }

    fn serve_scan(&mut self, ask: ScanAsk) {
        self.listings.serving += 1;
        let after = ask
            .after
            .as_ref()
            .map(|key| StorageKey::data(ask.partition, &ask.bucket, key));
        self.storage(
            StorageOp::Scan {
                range: ScanRange::Bucket {
                    partition: ask.partition,
                    bucket: ask.bucket,
                },
                after,
                limit: ask.limit.clamp(1, MAX_LIST_LIMIT) as usize,
            },
            PendingOp::ServeList {
                to: ask.to,
                id: ask.id,
            },
        );
    }

    /// A page was scanned for a coordinator: its live keys go back, and the next waiting scan
    /// starts.
    pub(super) fn list_page_scanned(
        &mut self,
        to: NodeId,
        id: CoordinationId,
        result: StorageResult,
    ) {
        self.listings.serving = self.listings.serving.saturating_sub(1);
        let message = match result {
            StorageResult::Scanned { items, done } => {
                let now = self.now;
                let last = items.last().map(|(key, _)| key.key.clone());
                let keys = items
                    .into_iter()
                    .filter(|(_, record)| {
                        // A damaged record is listed: the key exists, and a read repairs it.
                        Object::decode(record).map_or(true, |object| !object.is_dead_at(now))
                    })
                    .map(|(key, _)| key.key)
                    .collect();
                Message::KeysListed {
                    id,
                    keys,
                    last,
                    done,
                    served: true,
                }
            }
            _ => Message::KeysListed {
                id,
                keys: Vec::new(),
                last: None,
                done: false,
                served: false,
            },
        };
        self.send(to, message);
        if let Some(next) = self.listings.queue.pop_front() {
            self.serve_scan(next);
        }
    }
}
