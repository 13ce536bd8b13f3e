//! The history checker: judges a recorded run once the cluster has healed and been read back.
//!
//! The history is a list of [`Operation`]s, as the simulator ([`crate::sim`]) records them and as
//! the real-cluster harness (`tests/src/jepsen.rs`) records them from HTTP clients: both feed
//! this module, which depends on neither.
//!
//! It asserts, in the spirit of Jepsen's set-full checker:
//! - **No lost acknowledged write.** Every write acknowledged to its client (its dot is in the
//!   reply) is, in the final state of its key, either still a sibling or superseded: some write
//!   was made with a context that had seen its dot. Contexts come only from the system, so a
//!   context that covers a dot proves a client saw that write.
//! - **No phantom read.** Every value a get returned was written by some put.
//! - **Convergence.** After the final read, every replica of every key holds the same object.
//! - **True siblings.** Two values are siblings at the end only if neither write had seen the
//!   other: a sibling whose writer's context covers another sibling's dot should have replaced it.
//!
//! It also reports, without failing the run, **stale reads**: gets that missed a write
//! acknowledged before they were invoked. A Dynamo store allows them (sloppy quorums, R + W <= N);
//! how many and how old the missed write was is what the report shows.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::RequestError;
use crate::id::{Millis, NodeId};
use crate::request::Reply;
use crate::version::{Content, Context, Dot, Object};

/// What a client operation was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// A get.
    Get,
    /// A put of `value` with `context`.
    Put {
        /// The value written.
        value: Vec<u8>,
        /// The context it was written with.
        context: Context,
        /// Its time to live, if it had one (its own or its bucket's default).
        #[serde(default)]
        ttl_ms: Option<Millis>,
    },
    /// A delete with `context`.
    Delete {
        /// The context it was made with.
        context: Context,
    },
}

/// How a client operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutcome {
    /// The node replied.
    Replied(Reply),
    /// The node refused the request.
    Rejected(RequestError),
    /// The node was down: the client could not even connect, so nothing was applied.
    Refused,
    /// The node crashed before replying: the operation may or may not have taken effect.
    Lost,
}

/// One client operation in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Index in the history.
    pub index: usize,
    /// The node the client asked.
    pub node: NodeId,
    /// Bucket.
    pub bucket: Vec<u8>,
    /// Key.
    pub key: Vec<u8>,
    /// What was asked.
    pub kind: OpKind,
    /// When it was asked.
    pub invoked_at: Millis,
    /// When it ended, if it has.
    pub completed_at: Option<Millis>,
    /// How it ended, if it has.
    pub outcome: Option<OpOutcome>,
}

impl OpKind {
    /// `get`, `put` or `delete`.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put { .. } => "put",
            OpKind::Delete { .. } => "delete",
        }
    }
}

impl OpOutcome {
    /// `ok`, `unavailable`, `failed`, `storage_full` (see [`Reply::outcome`]), `rejected`,
    /// `refused` or `lost`: the outcome names of the bindings.
    pub fn name(&self) -> &'static str {
        match self {
            OpOutcome::Replied(reply) => reply.outcome(),
            OpOutcome::Rejected(_) => "rejected",
            OpOutcome::Refused => "refused",
            OpOutcome::Lost => "lost",
        }
    }
}

impl Operation {
    /// Why the operation did not succeed, as one line naming the node (`None` while in flight
    /// and for a success).
    pub fn error(&self) -> Option<String> {
        let node = &self.node;
        Some(match self.outcome.as_ref()? {
            OpOutcome::Replied(Reply::Got { .. } | Reply::Written { .. }) => return None,
            OpOutcome::Replied(Reply::Failed { reason } | Reply::StorageFull { reason }) => {
                reason.clone()
            }
            OpOutcome::Replied(reply) => format!("{reply}"),
            OpOutcome::Rejected(error) => format!("{error}"),
            OpOutcome::Refused => {
                format!("{node} is down: the connection was refused, nothing was applied")
            }
            OpOutcome::Lost => format!(
                "{node} crashed before replying: the operation may or may not have been applied"
            ),
        })
    }

    /// Whether the operation succeeded (a get that met R, a write that met W).
    pub fn is_ok(&self) -> bool {
        matches!(
            self.outcome,
            Some(OpOutcome::Replied(
                Reply::Got { .. } | Reply::Written { .. }
            ))
        )
    }

    /// Values a successful get returned (empty otherwise).
    pub fn values(&self) -> Vec<Vec<u8>> {
        match &self.outcome {
            Some(OpOutcome::Replied(Reply::Got { values, .. })) => values.clone(),
            _ => Vec::new(),
        }
    }

    /// The context a successful get or write returned.
    pub fn context(&self) -> Option<&Context> {
        match &self.outcome {
            Some(OpOutcome::Replied(
                Reply::Got { context, .. } | Reply::Written { context, .. },
            )) => Some(context),
            _ => None,
        }
    }

    /// Nodes that answered (replied for a get, acknowledged for a write).
    pub fn replicas(&self) -> Vec<NodeId> {
        match &self.outcome {
            Some(OpOutcome::Replied(
                Reply::Got { replicas, .. } | Reply::Written { replicas, .. },
            )) => replicas.clone(),
            Some(OpOutcome::Replied(Reply::Unavailable { answered, .. })) => answered.clone(),
            _ => Vec::new(),
        }
    }
}

/// One replica's stored object after the run (`None`: no record, or one that failed its checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReplica {
    /// The replica.
    pub node: NodeId,
    /// Its object.
    pub object: Option<Object>,
}

/// An acknowledged write that the final state neither holds nor supersedes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    /// History index of the write.
    pub index: usize,
    /// Its dot.
    pub dot: Dot,
}

/// A get that missed a write acknowledged before it was invoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRead {
    /// History index of the get.
    pub index: usize,
    /// History index of the oldest acknowledged write it missed.
    pub missed: usize,
    /// How long before the get was invoked that write had been acknowledged, in milliseconds.
    pub staleness_ms: u64,
}

/// A get that returned a value after it had certainly expired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredRead {
    /// History index of the get.
    pub index: usize,
    /// History index of the put that wrote the value.
    pub put: usize,
    /// How long after the value's latest possible expiry (with the clock skew bound) the get
    /// was invoked, in milliseconds.
    pub late_ms: u64,
}

/// The checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Operations in the history.
    pub operations: usize,
    /// Writes acknowledged to their clients.
    pub acknowledged_writes: usize,
    /// Of those, the ones still present as siblings at the end.
    pub present: usize,
    /// Of those, the ones superseded by a later write that saw them.
    pub superseded: usize,
    /// Of those, deletes whose tombstones were reaped (the key is gone from every replica).
    pub reaped: usize,
    /// Acknowledged writes lost.
    pub lost: Vec<LostWrite>,
    /// Gets that returned a value nobody wrote: (history index, value).
    pub phantom_reads: Vec<(usize, Vec<u8>)>,
    /// Keys whose replicas differ at the end, with a description.
    pub divergent: Vec<String>,
    /// Keys whose final R = all read failed.
    pub unreadable: Vec<String>,
    /// Pairs of acknowledged writes (history indices) that were given the same dot: one of them
    /// can be silently dropped by any merge.
    pub reused_dots: Vec<(usize, usize)>,
    /// Hints still held at the end (every hint must be delivered and deleted once the cluster
    /// is healthy).
    pub hints_left: Vec<String>,
    /// Final siblings that are not concurrent: (history index of the write that had seen the
    /// other, history index of the other), when both writes are known by their dots.
    pub false_siblings: Vec<(usize, usize)>,
    /// Final siblings that an acknowledged write or delete had seen and replaced, while that
    /// write's own sibling is gone: a deleted key (or a replaced value) that came back, say from
    /// a hint or orphan delivered after the tombstone was reaped. (history index of the write
    /// that came back, history index of the one that had replaced it.)
    pub resurrected: Vec<(usize, usize)>,
    /// Records still on a node's disk when it was discarded after saying it was drained.
    pub discarded: Vec<String>,
    /// Acknowledged puts with a time to live that are gone at the end, and may be: their
    /// earliest possible expiry came before the final read (not a failure).
    pub expired: usize,
    /// Gets that returned a value past its latest possible expiry: the put's completion, plus
    /// its time to live, plus the bound on clock skew.
    pub expired_reads: Vec<ExpiredRead>,
    /// Gets that missed an acknowledged write (reported, not a failure).
    pub stale_reads: Vec<StaleRead>,
}

impl Verdict {
    /// Whether the run passed every check.
    pub fn is_ok(&self) -> bool {
        self.lost.is_empty()
            && self.phantom_reads.is_empty()
            && self.divergent.is_empty()
            && self.unreadable.is_empty()
            && self.hints_left.is_empty()
            && self.reused_dots.is_empty()
            && self.false_siblings.is_empty()
            && self.resurrected.is_empty()
            && self.discarded.is_empty()
            && self.expired_reads.is_empty()
    }
}

/// The end state of every key: (bucket, key) → (the final R = all read, each replica's object).
pub type Finals = BTreeMap<(Vec<u8>, Vec<u8>), (Operation, Vec<FinalReplica>)>;

/// Judges `history` against the final read and replica state of every key. Node clocks may be
/// up to `max_clock_skew_ms` apart: expiry is judged with that margin either way.
pub fn check(history: &[Operation], finals: &Finals, max_clock_skew_ms: Millis) -> Verdict {
    let mut verdict = Verdict {
        operations: history.len(),
        ..Verdict::default()
    };
    verdict.expired_reads = expired_reads(history, max_clock_skew_ms);
    // Whether a put with `ttl_ms` may have expired before `read` began: its earliest possible
    // expiry (the coordinator's clock ahead by the skew bound) came first.
    let may_expire_before = |op: &Operation, ttl_ms: Option<Millis>, read: &Operation| {
        ttl_ms.is_some_and(|ttl| {
            op.invoked_at
                .saturating_add(ttl)
                .saturating_sub(max_clock_skew_ms)
                <= read.invoked_at
        })
    };
    let written: BTreeSet<&[u8]> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Put { value, .. } => Some(value.as_slice()),
            _ => None,
        })
        .collect();
    let final_reads = finals.values().map(|(read, _)| read);
    for op in history.iter().chain(final_reads) {
        for value in op.values() {
            if !written.contains(value.as_slice()) {
                verdict.phantom_reads.push((op.index, value));
            }
        }
    }

    for ((bucket, key), (read, replicas)) in finals {
        let name = format!(
            "{}/{}",
            String::from_utf8_lossy(bucket),
            String::from_utf8_lossy(key)
        );
        if !read.is_ok() {
            verdict
                .unreadable
                .push(format!("{name}: {:?}", read.outcome));
        }
        let mut merged = Object::new();
        for replica in replicas {
            if let Some(object) = &replica.object {
                merged.merge(object, crate::version::ConflictMode::Siblings);
            }
        }
        let first = replicas.first().and_then(|r| r.object.as_ref());
        for replica in replicas {
            if replica.object.as_ref() != first {
                verdict.divergent.push(format!(
                    "{name}: {} differs from {}",
                    replica.node, replicas[0].node
                ));
            }
        }
        let same_key = |op: &&Operation| op.bucket == *bucket && op.key == *key;
        // Contexts of the writes to this key that may have been applied: acknowledged ones, and
        // those that failed their quorum or were cut off by a crash (the coordinator may have
        // stored them). Writes a node refused outright, or failed before storing, never were.
        let contexts: Vec<(&crate::version::Context, bool)> = history
            .iter()
            .filter(same_key)
            .filter(|op| {
                !matches!(
                    op.outcome,
                    Some(
                        OpOutcome::Rejected(_)
                            | OpOutcome::Refused
                            | OpOutcome::Replied(Reply::Failed { .. })
                            | OpOutcome::Replied(Reply::StorageFull { .. })
                            | OpOutcome::Replied(Reply::TooManySiblings { .. })
                            | OpOutcome::Replied(Reply::ObjectTooLarge { .. })
                            | OpOutcome::Replied(Reply::PreconditionFailed { .. })
                    )
                )
            })
            // Whether the write may have left the key dead (and so reaped): a delete, or a put
            // that may have expired before the final read.
            .filter_map(|op| match &op.kind {
                OpKind::Put {
                    context, ttl_ms, ..
                } => Some((context, may_expire_before(op, *ttl_ms, read))),
                OpKind::Delete { context } => Some((context, true)),
                OpKind::Get => None,
            })
            .collect();
        let acknowledged_contexts: Vec<&crate::version::Context> = history
            .iter()
            .filter(same_key)
            .filter_map(|op| match (&op.outcome, &op.kind) {
                (
                    Some(OpOutcome::Replied(Reply::Written { .. })),
                    OpKind::Put { context, .. } | OpKind::Delete { context },
                ) => Some(context),
                _ => None,
            })
            .collect();
        let mut dots_seen: BTreeMap<&Dot, usize> = BTreeMap::new();
        for op in history.iter().filter(same_key) {
            let Some(OpOutcome::Replied(Reply::Written { dot, .. })) = &op.outcome else {
                continue;
            };
            verdict.acknowledged_writes += 1;
            if let Some(first) = dots_seen.insert(dot, op.index) {
                verdict.reused_dots.push((first, op.index));
            }
            let (written, ttl_ms) = match &op.kind {
                OpKind::Put { value, ttl_ms, .. } => (Content::Value(value.clone()), *ttl_ms),
                _ => (Content::Tombstone, None),
            };
            let may_have_expired = may_expire_before(op, ttl_ms, read);
            // Present means this write's own sibling: its dot *and* its content, so a dot reused
            // by another write cannot pass for it.
            let reaped = written == Content::Tombstone && merged.is_empty();
            if reaped {
                // A delete whose tombstone every replica held, and then dropped after the grace
                // period: the key is gone, as the delete asked.
                verdict.reaped += 1;
            } else if merged
                .siblings()
                .iter()
                .any(|s| s.dot == *dot && s.content.same_value(&written))
            {
                verdict.present += 1;
            } else if acknowledged_contexts.iter().any(|c| c.clock().covers(dot))
                || (contexts.iter().any(|(c, _)| c.clock().covers(dot))
                    && merged.clock().covers(dot))
                || (merged.is_empty()
                    && contexts
                        .iter()
                        .any(|(c, dies)| *dies && c.clock().covers(dot)))
            {
                // Seen by a later write that was applied: an acknowledged one (which is checked
                // in turn), or one of unknown outcome whose history reached the replicas. A
                // successor that was never applied supersedes nothing.
                verdict.superseded += 1;
            } else if may_have_expired {
                verdict.expired += 1;
            } else {
                verdict.lost.push(LostWrite {
                    index: op.index,
                    dot: dot.clone(),
                });
            }
        }

        // Acknowledged writes to this key by dot, with the context each was made with.
        let acknowledged: BTreeMap<&Dot, (&Operation, &crate::version::Context)> = history
            .iter()
            .filter(same_key)
            .filter_map(|op| match (&op.outcome, &op.kind) {
                (
                    Some(OpOutcome::Replied(Reply::Written { dot, .. })),
                    OpKind::Put { context, .. } | OpKind::Delete { context },
                ) => Some((dot, (op, context))),
                _ => None,
            })
            .collect();
        for sibling in merged.siblings() {
            let Some((writer, context)) = acknowledged.get(&sibling.dot) else {
                continue;
            };
            for other in merged.siblings() {
                if other.dot != sibling.dot && context.clock().covers(&other.dot) {
                    if let Some((seen, _)) = acknowledged.get(&other.dot) {
                        verdict.false_siblings.push((writer.index, seen.index));
                    }
                }
            }
        }

        // What an acknowledged write replaced stays replaced: a final sibling seen by one whose
        // own sibling is gone (a reaped tombstone, say) came back from somewhere.
        let present: BTreeSet<&Dot> = merged.siblings().iter().map(|s| &s.dot).collect();
        for sibling in merged.siblings() {
            let Some((came_back, _)) = acknowledged.get(&sibling.dot) else {
                continue;
            };
            let replacer = acknowledged.iter().find(|(dot, (_, context))| {
                !present.contains(*dot) && context.clock().covers(&sibling.dot)
            });
            if let Some((_, (replacer, _))) = replacer {
                verdict.resurrected.push((came_back.index, replacer.index));
            }
        }

        // A reaped key's gets legitimately lose the history of its deletes.
        if merged.is_empty() {
            continue;
        }
        for get in history.iter().filter(same_key) {
            let Some(OpOutcome::Replied(Reply::Got { context, .. })) = &get.outcome else {
                continue;
            };
            let oldest_missed = acknowledged
                .iter()
                .filter_map(|(dot, (write, _))| {
                    let completed = write.completed_at?;
                    (completed < get.invoked_at && !context.clock().covers(dot))
                        .then_some((completed, write.index))
                })
                .min();
            if let Some((completed, missed)) = oldest_missed {
                verdict.stale_reads.push(StaleRead {
                    index: get.index,
                    missed,
                    staleness_ms: get.invoked_at - completed,
                });
            }
        }
    }
    verdict
}

/// Gets that returned a value past its latest possible expiry. Values identify their puts (a
/// value written by several puts is judged by the one that expires last, or not at all if one
/// never expires).
fn expired_reads(history: &[Operation], max_clock_skew_ms: Millis) -> Vec<ExpiredRead> {
    // For each value: the put index and the latest true time it may still be live, or `None`
    // when some put of it never expires (or its completion is unknown).
    let mut live_until: BTreeMap<&[u8], Option<(usize, Millis)>> = BTreeMap::new();
    for op in history {
        let OpKind::Put { value, ttl_ms, .. } = &op.kind else {
            continue;
        };
        let until = match (ttl_ms, op.completed_at) {
            (Some(ttl), Some(done)) => Some((
                op.index,
                done.saturating_add(*ttl).saturating_add(max_clock_skew_ms),
            )),
            _ => None,
        };
        let entry = live_until.entry(value.as_slice()).or_insert(until);
        *entry = match (*entry, until) {
            (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
            _ => None,
        };
    }
    let mut out = Vec::new();
    for get in history {
        for value in get.values() {
            if let Some(Some((put, until))) = live_until.get(value.as_slice()) {
                if get.invoked_at > *until {
                    out.push(ExpiredRead {
                        index: get.index,
                        put: *put,
                        late_ms: get.invoked_at - until,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{ActorId, ConflictMode, Context};
    use alloc::vec;

    const BUCKET: &[u8] = b"b";
    const KEY: &[u8] = b"k";

    fn put(index: usize, value: &[u8], context: Context, dot: Dot, at: (u64, u64)) -> Operation {
        Operation {
            index,
            node: NodeId::new("n1"),
            bucket: BUCKET.to_vec(),
            key: KEY.to_vec(),
            kind: OpKind::Put {
                value: value.to_vec(),
                context: context.clone(),
                ttl_ms: None,
            },
            invoked_at: at.0,
            completed_at: Some(at.1),
            outcome: Some(OpOutcome::Replied(Reply::Written {
                context,
                dot,
                replicas: Vec::new(),
                durable: Vec::new(),
                fallbacks: Vec::new(),
                read_your_writes: true,
            })),
        }
    }

    fn get(index: usize, object: &Object, at: (u64, u64)) -> Operation {
        Operation {
            index,
            node: NodeId::new("n1"),
            bucket: BUCKET.to_vec(),
            key: KEY.to_vec(),
            kind: OpKind::Get,
            invoked_at: at.0,
            completed_at: Some(at.1),
            outcome: Some(OpOutcome::Replied(Reply::Got {
                values: object.values().map(<[u8]>::to_vec).collect(),
                context: object.context(),
                replicas: Vec::new(),
                fallbacks: Vec::new(),
                read_your_writes: true,
                expires_at: None,
            })),
        }
    }

    fn finals(read: Operation, object: &Object) -> Finals {
        let replicas = ["n1", "n2"]
            .into_iter()
            .map(|node| FinalReplica {
                node: NodeId::new(node),
                object: Some(object.clone()),
            })
            .collect();
        BTreeMap::from([((BUCKET.to_vec(), KEY.to_vec()), (read, replicas))])
    }

    /// Two writers a and b; b's write is made with `b_context` and both end up in one object.
    fn two_writes(b_saw_a: bool) -> (Vec<Operation>, Object) {
        let mut at_a = Object::new();
        let empty = Context::empty();
        let dot_a = at_a.update(
            empty.clock(),
            &ActorId::new("a"),
            Content::Value(b"A".to_vec()),
            1,
            ConflictMode::Siblings,
        );
        let b_context = if b_saw_a {
            at_a.context()
        } else {
            empty.clone()
        };
        // b's replica never got a's write, so its object keeps only b's sibling; the merge of
        // the two replicas then holds both values, whatever b had seen.
        let mut at_b = Object::new();
        let dot_b = at_b.update(
            empty.clock(),
            &ActorId::new("b"),
            Content::Value(b"B".to_vec()),
            2,
            ConflictMode::Siblings,
        );
        let mut merged = at_a.clone();
        merged.merge(&at_b, ConflictMode::Siblings);
        assert_eq!(merged.siblings().len(), 2);
        let history = vec![
            put(0, b"A", empty, dot_a, (0, 10)),
            put(1, b"B", b_context, dot_b, (5, 12)),
        ];
        (history, merged)
    }

    #[test]
    fn expiry_is_judged_with_the_skew_bound() {
        let empty = Context::empty();
        let mut object = Object::new();
        let dot = object.update(
            empty.clock(),
            &ActorId::new("a"),
            Content::value(b"S".to_vec(), Some(110)),
            10,
            ConflictMode::Siblings,
        );
        let mut session = put(0, b"S", empty, dot, (10, 11));
        if let OpKind::Put { ttl_ms, .. } = &mut session.kind {
            *ttl_ms = Some(100);
        }
        // Skew bound 20: the value may be read until 11 + 100 + 20 = 131, never after.
        let history = vec![
            session,
            get(1, &object, (120, 121)),
            get(2, &object, (131, 132)),
            get(3, &object, (140, 141)),
        ];
        let gone = Object::new();
        let verdict = check(&history, &finals(get(4, &gone, (200, 201)), &gone), 20);
        assert_eq!(
            verdict.expired_reads,
            vec![ExpiredRead {
                index: 3,
                put: 0,
                late_ms: 9,
            }]
        );
        // Gone at the end, and it may be: expired, not lost.
        assert_eq!(
            (verdict.expired, verdict.lost.len()),
            (1, 0),
            "{verdict:#?}"
        );
        assert!(!verdict.is_ok());
        // Gone before its earliest expiry (10 + 100 - 20 = 90): lost.
        let verdict = check(&history[..2], &finals(get(4, &gone, (80, 81)), &gone), 20);
        assert_eq!(verdict.lost.len(), 1, "{verdict:#?}");
    }

    #[test]
    fn concurrent_writes_may_be_siblings() {
        let (history, merged) = two_writes(false);
        let read = get(2, &merged, (20, 21));
        let verdict = check(&history, &finals(read, &merged), 0);
        assert!(verdict.is_ok(), "{verdict:#?}");
        assert_eq!(verdict.present, 2);
    }

    #[test]
    fn a_sibling_whose_writer_saw_the_other_is_reported() {
        let (history, merged) = two_writes(true);
        let read = get(2, &merged, (20, 21));
        let verdict = check(&history, &finals(read, &merged), 0);
        assert_eq!(verdict.false_siblings, vec![(1, 0)]);
        assert!(!verdict.is_ok());
    }

    #[test]
    fn a_successor_that_was_never_applied_supersedes_nothing() {
        // a's write is acknowledged; a write of unknown outcome made with a context covering it
        // never reached a replica, and the replicas hold only b's concurrent write: a's write is
        // lost, whatever that successor had seen.
        let empty = Context::empty();
        let mut at_a = Object::new();
        let dot_a = at_a.update(
            empty.clock(),
            &ActorId::new("a"),
            Content::Value(b"A".to_vec()),
            1,
            ConflictMode::Siblings,
        );
        let mut at_b = Object::new();
        let dot_b = at_b.update(
            empty.clock(),
            &ActorId::new("b"),
            Content::Value(b"B".to_vec()),
            2,
            ConflictMode::Siblings,
        );
        let mut unknown = put(2, b"C", at_a.context(), dot_a.clone(), (20, 30));
        unknown.outcome = Some(OpOutcome::Lost);
        let history = vec![
            put(0, b"A", empty.clone(), dot_a, (0, 10)),
            put(1, b"B", empty, dot_b, (0, 10)),
            unknown,
        ];
        let verdict = check(&history, &finals(get(3, &at_b, (40, 41)), &at_b), 0);
        assert_eq!(verdict.lost.len(), 1, "{verdict:#?}");
        assert_eq!(verdict.lost[0].index, 0);
        assert_eq!(verdict.present, 1);
    }

    #[test]
    fn a_get_that_misses_an_earlier_acknowledged_write_is_stale() {
        let (mut history, merged) = two_writes(false);
        // Invoked at 30, after both writes were acknowledged (10 and 12), it saw neither.
        history.push(get(2, &Object::new(), (30, 31)));
        // Invoked at 11, before b's write was acknowledged, and it saw both: not stale.
        history.push(get(3, &merged, (11, 13)));
        let verdict = check(&history, &finals(get(4, &merged, (40, 41)), &merged), 0);
        assert_eq!(
            verdict.stale_reads,
            vec![StaleRead {
                index: 2,
                missed: 0,
                staleness_ms: 20,
            }]
        );
        assert!(verdict.is_ok(), "stale reads are reported, not failures");
    }
}
