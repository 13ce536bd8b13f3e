//! A get: ask R replicas (the local one first), the others only when one of those fails or is
//! slow (or for a sampled share of gets, to repair them), answer once R have replied, merge, and
//! repair the stale ones once all asked have replied or the deadline passed.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::quorum::Need;
use super::{fallbacks_among, zones_of, Client, Target};
use crate::bucket::Quorums;
use crate::id::{Millis, NodeId};
use crate::request::{QuorumKind, Reply};
use crate::version::{ConflictMode, Object};

/// What one replica's reply amounted to.
#[derive(Clone, Debug)]
pub(crate) enum ReplicaState {
    /// An object, checksums verified.
    Found(Object),
    /// No record.
    Missing,
    /// A record that failed its checksum: treated as missing, so it is repaired, but it does not
    /// count toward R (the replica cannot vouch for what it held).
    Corrupt,
    /// The replica's storage failed: it does not count toward R and is not repaired.
    Failed,
}

#[derive(Clone, Debug)]
pub(crate) struct GetState {
    pub client: Client,
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    pub quorums: Quorums,
    /// What R amounts to for this key's replicas and this coordinator's zone.
    pub need: Need,
    pub mode: ConflictMode,
    /// The targets asked.
    pub replicas: Vec<Target>,
    /// Targets of the preference list not asked yet: asked when an asked one fails, when all
    /// asked replied without an answer, or at `fallback_at` (the speculative retry).
    pub held_back: Vec<Target>,
    pub replies: BTreeMap<NodeId, ReplicaState>,
    /// Targets added when replicas stayed silent past the fallback time: their not-founds count
    /// toward R only once some reply found the key (they stand in for owners that may hold it
    /// and are only slow, so they must not make a "not found").
    pub extra: alloc::collections::BTreeSet<NodeId>,
    pub merged: Object,
    pub answered: bool,
    /// When the get was started: replies tell how long replica reads take.
    pub started: Millis,
    /// The next wake-up: the speculative retry while targets are held back, then the time when
    /// replicas still silent are joined by fallbacks.
    pub fallback_at: Millis,
    /// When replicas still silent are joined by fallbacks, while `fallback_at` is the
    /// speculative retry.
    pub fallbacks_at: Millis,
    pub deadline: Millis,
}

impl GetState {
    /// Records a replica's reply; replies from non-replicas and repeated replies are ignored.
    pub fn record(&mut self, from: &NodeId, state: ReplicaState) {
        if !self.replicas.iter().any(|t| t.node == *from) || self.replies.contains_key(from) {
            return;
        }
        if let ReplicaState::Found(object) = &state {
            self.merged.merge(object, self.mode);
        }
        self.replies.insert(from.clone(), state);
    }

    fn found_anywhere(&self) -> bool {
        self.replies
            .values()
            .any(|s| matches!(s, ReplicaState::Found(_)))
    }

    fn successful(&self) -> impl Iterator<Item = &NodeId> {
        self.replies
            .iter()
            .filter(|(n, s)| match s {
                ReplicaState::Failed | ReplicaState::Corrupt => false,
                // A late fallback's not-found joins a read that found the key, never makes a
                // "not found" of its own.
                ReplicaState::Missing => !self.extra.contains(*n) || self.found_anywhere(),
                ReplicaState::Found(_) => true,
            })
            .map(|(n, _)| n)
    }

    /// Whether the replies so far say something about the key: a preference-list node answered,
    /// or some replica holds the key, or every target has answered. Not-founds from fallbacks
    /// only say that they hold no hint for the key: answering with them alone would report an
    /// existing key missing while an owner that holds it is still being asked (the network
    /// harness caught such reads, stale by tens of seconds, when a partition cut two owners off).
    fn informed(&self) -> bool {
        self.replies.iter().any(|(node, state)| match state {
            ReplicaState::Found(_) => true,
            ReplicaState::Missing => self
                .replicas
                .iter()
                .any(|t| t.node == *node && t.hint.is_none()),
            ReplicaState::Corrupt | ReplicaState::Failed => false,
        })
    }

    /// The reply to send now, if R replies are in, they say something about the key (see
    /// [`GetState::informed`]), and none was sent yet. Values expired at `now` (the
    /// coordinator's clock) are left out.
    pub fn take_reply(&mut self, now: Millis) -> Option<Reply> {
        if !self.informed() {
            return None;
        }
        self.got(now)
    }

    /// The answer from the replies in, if R of them are and none was sent yet.
    fn got(&mut self, now: Millis) -> Option<Reply> {
        if self.answered || !self.need.met(&zones_of(&self.replicas, self.successful())) {
            return None;
        }
        self.answered = true;
        let replicas: Vec<NodeId> = self.successful().cloned().collect();
        let (values, expires_at) = live_values(&self.merged, now);
        Some(Reply::Got {
            values,
            expires_at,
            context: self.merged.context().bound_to(&self.bucket, &self.key),
            fallbacks: fallbacks_among(&self.replicas, &replicas),
            replicas,
            read_your_writes: self.quorums.read_your_writes(),
        })
    }

    /// The reply at the deadline (or once every target replied) if none was sent: what R
    /// replies say if they say something about the key, else a quorum failure. Not-founds from
    /// fallbacks alone, every owner silent, are not an answer: a 404 for a key the owners hold
    /// would be a lie, and `unavailable` is the truth (the outsider's test caught that 404).
    pub fn final_reply(&mut self, now: Millis) -> Option<Reply> {
        if self.informed() {
            if let Some(got) = self.got(now) {
                return Some(got);
            }
        }
        if self.answered {
            return None;
        }
        self.answered = true;
        Some(Reply::Unavailable {
            kind: QuorumKind::Read,
            needed: self.need.total(),
            answered: self.successful().cloned().collect(),
        })
    }

    /// Whether the held-back targets should be asked now: the reply just recorded failed, or
    /// every target asked has replied and the get has no answer.
    pub fn needs_held_back(&self, last: &NodeId) -> bool {
        if self.answered || self.held_back.is_empty() {
            return false;
        }
        let failed = matches!(
            self.replies.get(last),
            Some(ReplicaState::Failed | ReplicaState::Corrupt)
        );
        failed || self.all_replied()
    }

    /// Targets that have not replied.
    pub fn silent(&self) -> Vec<Target> {
        self.replicas
            .iter()
            .filter(|t| !self.replies.contains_key(&t.node))
            .cloned()
            .collect()
    }

    /// Whether every target asked has replied.
    pub fn all_replied(&self) -> bool {
        self.replies.len() == self.replicas.len()
    }

    /// Targets that replied with less than the merged object.
    pub fn stale_replicas(&self) -> Vec<Target> {
        if self.merged.is_empty() {
            return Vec::new();
        }
        self.replicas
            .iter()
            .filter(|target| match self.replies.get(&target.node) {
                Some(ReplicaState::Found(object)) => *object != self.merged,
                Some(ReplicaState::Missing | ReplicaState::Corrupt) => true,
                Some(ReplicaState::Failed) | None => false,
            })
            .cloned()
            .collect()
    }
}

/// Splits a get's `targets` into those to ask first and those held back: the fewest that can
/// meet `need`, chosen as the local replica, then owners (not fallbacks) in the coordinator's
/// zone, then the other owners, then fallbacks, each in preference-list order.
pub(crate) fn first_to_ask(
    targets: Vec<Target>,
    me: &NodeId,
    my_zone: Option<&str>,
    need: &Need,
) -> (Vec<Target>, Vec<Target>) {
    let rank = |t: &Target| {
        if t.node == *me {
            0
        } else if t.hint.is_some() {
            3
        } else if my_zone.is_some() && t.zone.as_deref() == my_zone {
            1
        } else {
            2
        }
    };
    let mut order: Vec<Target> = targets;
    order.sort_by_key(rank);
    let mut first = Vec::new();
    let mut rest = order.into_iter();
    for target in rest.by_ref() {
        first.push(target);
        let zones: Vec<Option<&str>> = first.iter().map(|t| t.zone.as_deref()).collect();
        if need.met(&zones) {
            break;
        }
    }
    (first, rest.collect())
}

/// The object's values live at `now`, each distinct value once (in dot order), and when the
/// last of them expires (`None` if one never does). Siblings with equal bytes come from one
/// write coordinated twice (a client's retry after `outcome_unknown`, a forward re-coordinated
/// when its coordinator fell silent) or from writers who agree: there is nothing for the client
/// to resolve between them. They stay siblings in the object, and the context covers each, so
/// the next write with it replaces them all.
pub(crate) fn live_values(object: &Object, now: Millis) -> (Vec<Vec<u8>>, Option<Millis>) {
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut expires_at = Some(0);
    for sibling in object.live_at(now) {
        expires_at = match (expires_at, sibling.content.expires_at()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        let value = sibling.content.bytes();
        if !values.iter().any(|v| v.as_slice() == value) {
            values.push(value.to_vec());
        }
    }
    if values.is_empty() {
        expires_at = None;
    }
    (values, expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{ActorId, Content};
    use alloc::vec;

    fn target(node: &str, hint: Option<&str>) -> Target {
        Target {
            node: NodeId::new(node),
            hint: hint.map(NodeId::new),
            zone: None,
        }
    }

    fn state(targets: Vec<Target>, r: u32) -> GetState {
        GetState {
            client: Client::Internal,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            quorums: Quorums {
                n: 3,
                r,
                w: 2,
                dw: 0,
                scopes: Default::default(),
            },
            need: Need::anywhere(r),
            mode: ConflictMode::Siblings,
            replicas: targets,
            held_back: Vec::new(),
            replies: BTreeMap::new(),
            extra: Default::default(),
            merged: Object::new(),
            answered: false,
            started: 0,
            fallback_at: 200,
            fallbacks_at: 200,
            deadline: 1_000,
        }
    }

    fn object(value: &[u8]) -> Object {
        let mut object = Object::new();
        object.update(
            &Default::default(),
            &ActorId::new("a"),
            Content::Value(value.to_vec()),
            1,
            ConflictMode::Siblings,
        );
        object
    }

    fn values(reply: Option<Reply>) -> Vec<Vec<u8>> {
        match reply {
            Some(Reply::Got { values, .. }) => values,
            other => panic!("expected a Got reply, got {other:?}"),
        }
    }

    #[test]
    fn siblings_of_equal_bytes_are_answered_once() {
        let mut merged = object(b"v");
        let mut twin = Object::new();
        twin.update(
            &Default::default(),
            &ActorId::new("b"),
            Content::Value(b"v".to_vec()),
            2,
            ConflictMode::Siblings,
        );
        merged.merge(&twin, ConflictMode::Siblings);
        assert_eq!(merged.values().count(), 2, "two siblings of v kept");
        let mut other = Object::new();
        other.update(
            &Default::default(),
            &ActorId::new("c"),
            Content::Value(b"w".to_vec()),
            3,
            ConflictMode::Siblings,
        );
        merged.merge(&other, ConflictMode::Siblings);
        assert_eq!(merged.values().count(), 3);
        assert_eq!(
            live_values(&merged, 0).0,
            vec![b"v".to_vec(), b"w".to_vec()]
        );
    }

    #[test]
    fn expired_values_are_not_read_and_the_answer_says_when_the_rest_expire() {
        let mut object = Object::new();
        for (actor, content, now) in [
            ("a", Content::value(b"old".to_vec(), Some(100)), 1),
            ("b", Content::value(b"new".to_vec(), Some(300)), 2),
        ] {
            let mut one = Object::new();
            one.update(
                &Default::default(),
                &ActorId::new(actor),
                content,
                now,
                ConflictMode::Siblings,
            );
            object.merge(&one, ConflictMode::Siblings);
        }
        assert_eq!(
            live_values(&object, 99),
            (vec![b"old".to_vec(), b"new".to_vec()], Some(300))
        );
        assert_eq!(
            live_values(&object, 100),
            (vec![b"new".to_vec()], Some(300))
        );
        // Every sibling expired: no value, as a deleted key reads, and no expiry to report.
        assert_eq!(live_values(&object, 300), (Vec::<Vec<u8>>::new(), None));
        assert!(object.is_dead_at(300) && !object.is_dead_at(299));
        assert_eq!(object.dead_since(), Some(300));
        // One value that never expires: the answer has no expiry.
        let mut forever = Object::new();
        forever.update(
            &Default::default(),
            &ActorId::new("c"),
            Content::value(b"kept".to_vec(), None),
            3,
            ConflictMode::Siblings,
        );
        object.merge(&forever, ConflictMode::Siblings);
        assert_eq!(live_values(&object, 150).1, None);
        assert_eq!(object.dead_since(), None);
    }

    #[test]
    fn fallback_not_founds_wait_for_the_owner_still_asked() {
        let mut get = state(
            vec![
                target("n1", Some("n2")),
                target("n5", Some("n3")),
                target("n4", None),
            ],
            2,
        );
        get.record(&NodeId::new("n5"), ReplicaState::Missing);
        get.record(&NodeId::new("n1"), ReplicaState::Missing);
        assert_eq!(
            get.take_reply(0),
            None,
            "two fallbacks' not-founds are not a read"
        );
        get.record(&NodeId::new("n4"), ReplicaState::Found(object(b"v")));
        assert_eq!(values(get.take_reply(0)), vec![b"v".to_vec()]);
    }

    #[test]
    fn an_owner_not_found_or_a_found_anywhere_answers_at_once() {
        let mut get = state(
            vec![
                target("n1", None),
                target("n5", Some("n3")),
                target("n4", None),
            ],
            2,
        );
        get.record(&NodeId::new("n5"), ReplicaState::Missing);
        get.record(&NodeId::new("n1"), ReplicaState::Missing);
        assert_eq!(values(get.take_reply(0)), Vec::<Vec<u8>>::new());

        let mut get = state(
            vec![
                target("n1", Some("n2")),
                target("n5", Some("n3")),
                target("n4", None),
            ],
            2,
        );
        get.record(&NodeId::new("n5"), ReplicaState::Found(object(b"hinted")));
        get.record(&NodeId::new("n1"), ReplicaState::Missing);
        assert_eq!(values(get.take_reply(0)), vec![b"hinted".to_vec()]);
    }

    #[test]
    fn a_late_fallbacks_not_found_does_not_count_toward_r() {
        // C (an owner) missed the write; A and B hold it but are slow, and D, asked in A's
        // place at the fallback time, holds nothing: C and D are not a read of the key.
        let mut get = state(
            vec![target("c", None), target("a", None), target("b", None)],
            2,
        );
        get.record(&NodeId::new("c"), ReplicaState::Missing);
        get.replicas.push(target("d", Some("a")));
        get.extra.insert(NodeId::new("d"));
        get.record(&NodeId::new("d"), ReplicaState::Missing);
        assert_eq!(get.take_reply(0), None);
        get.record(&NodeId::new("a"), ReplicaState::Found(object(b"v")));
        assert_eq!(values(get.take_reply(0)), vec![b"v".to_vec()]);
    }

    #[test]
    fn fallbacks_not_founds_alone_are_unavailable_never_a_404() {
        // Every target a fallback (the owners are all cut off): their not-founds say nothing
        // about the key, even once all are in.
        let mut get = state(vec![target("n1", Some("n2")), target("n5", Some("n3"))], 2);
        get.record(&NodeId::new("n5"), ReplicaState::Missing);
        get.record(&NodeId::new("n1"), ReplicaState::Missing);
        assert_eq!(get.take_reply(0), None);
        assert!(get.all_replied());
        assert!(matches!(
            get.final_reply(0),
            Some(Reply::Unavailable { .. })
        ));

        // The owner never answers: at the deadline, still unavailable.
        let mut get = state(
            vec![
                target("n1", Some("n2")),
                target("n5", Some("n3")),
                target("n4", None),
            ],
            2,
        );
        get.record(&NodeId::new("n5"), ReplicaState::Missing);
        get.record(&NodeId::new("n1"), ReplicaState::Missing);
        assert_eq!(get.take_reply(0), None);
        assert!(matches!(
            get.final_reply(0),
            Some(Reply::Unavailable { .. })
        ));
        assert_eq!(get.final_reply(0), None, "one answer only");

        // A fallback holding the key (a hint) is an answer.
        let mut get = state(vec![target("n1", Some("n2")), target("n5", Some("n3"))], 2);
        get.record(&NodeId::new("n5"), ReplicaState::Found(object(b"hinted")));
        get.record(&NodeId::new("n1"), ReplicaState::Missing);
        assert_eq!(values(get.take_reply(0)), vec![b"hinted".to_vec()]);

        // Fewer than R replies at the deadline is a quorum failure.
        let mut get = state(vec![target("n1", None), target("n4", None)], 2);
        get.record(&NodeId::new("n1"), ReplicaState::Missing);
        assert!(matches!(
            get.final_reply(0),
            Some(Reply::Unavailable { .. })
        ));
    }

    fn zoned(node: &str, zone: &str, hint: Option<&str>) -> Target {
        Target {
            zone: Some(zone.into()),
            ..target(node, hint)
        }
    }

    fn nodes(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| t.node.as_str()).collect()
    }

    #[test]
    fn a_get_asks_the_local_replica_then_its_zone_then_owners_before_fallbacks() {
        let me = NodeId::new("c");
        let targets = vec![
            zoned("a", "z1", None),
            zoned("f", "z2", Some("b")),
            zoned("c", "z2", None),
            zoned("d", "z2", None),
        ];
        let (first, rest) = first_to_ask(targets.clone(), &me, Some("z2"), &Need::anywhere(2));
        assert_eq!(nodes(&first), ["c", "d"]);
        assert_eq!(nodes(&rest), ["a", "f"]);
        // Without a zone, owners in preference order; the fallback last.
        let (first, rest) = first_to_ask(targets.clone(), &me, None, &Need::anywhere(3));
        assert_eq!(nodes(&first), ["c", "a", "d"]);
        assert_eq!(nodes(&rest), ["f"]);
        // A need no subset meets asks them all.
        let (first, rest) = first_to_ask(targets.clone(), &me, None, &Need::anywhere(9));
        assert_eq!(first.len(), 4);
        assert!(rest.is_empty());
        // each_quorum takes what every zone needs, not just the nearest.
        let zones = [Some("z1"), Some("z2"), Some("z2"), Some("z2")];
        let need = Need::new("r", 2, crate::bucket::Scope::EachQuorum, Some("z2"), &zones).unwrap();
        let (first, _) = first_to_ask(targets, &me, Some("z2"), &need);
        assert_eq!(nodes(&first), ["c", "d", "a"]);
    }

    #[test]
    fn held_back_replicas_are_asked_after_a_failure_or_when_the_asked_say_nothing() {
        let mut get = state(vec![target("a", None), target("f", Some("b"))], 2);
        get.held_back = vec![target("c", None)];
        get.record(&NodeId::new("a"), ReplicaState::Failed);
        assert!(get.needs_held_back(&NodeId::new("a")), "a failure");
        let mut get = state(vec![target("a", None), target("f", Some("b"))], 1);
        get.held_back = vec![target("c", None)];
        get.replicas = vec![target("f", Some("b"))];
        get.record(&NodeId::new("f"), ReplicaState::Missing);
        assert_eq!(
            get.take_reply(0),
            None,
            "a fallback's not-found says nothing"
        );
        assert!(
            get.needs_held_back(&NodeId::new("f")),
            "all asked replied, no answer"
        );
        let mut get = state(vec![target("a", None), target("d", None)], 2);
        get.held_back = vec![target("c", None)];
        get.record(&NodeId::new("a"), ReplicaState::Found(object(b"v")));
        assert!(
            !get.needs_held_back(&NodeId::new("a")),
            "still waiting on d"
        );
        get.record(&NodeId::new("d"), ReplicaState::Missing);
        assert!(get.take_reply(0).is_some());
        assert!(!get.needs_held_back(&NodeId::new("d")), "answered");
    }
}
