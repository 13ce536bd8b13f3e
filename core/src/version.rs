//! Versions: dotted version vectors, siblings and the client context.
//!
//! # Model
//!
//! A stored [`Object`] is a set of sibling values that share one causal history, after Preguiça and
//! Almeida's dotted version vectors in the form Riak 2.0 uses ("DVV with per-sibling dots"):
//!
//! - Every write is named by a [`Dot`]: the [`ActorId`] that coordinated it and that actor's next
//!   counter. An actor is a node *incarnation* (`"n1.4"`), so a node that lost unsynced writes in a
//!   crash comes back as a new actor and never issues the same dot twice.
//! - The object's `clock`, a [`VersionVector`], covers every dot the object has seen, whether it
//!   still holds that write or has seen it superseded. Each [`Sibling`] carries the dot of the
//!   write that created it.
//! - A client reads all siblings together with a [`Context`] (the clock) and writes back with it.
//!   [`Object::update`] drops exactly the siblings the context covers, so a write replaces what its
//!   client saw and nothing else. Two clients that write through the same coordinator from the same
//!   context get two dots of that actor and two siblings, but a write that saw both replaces both:
//!   the per-sibling dots are what keep one coordinator from turning later writes into false
//!   siblings.
//! - Replicas converge with [`Object::merge`]: a sibling survives unless the other side has seen
//!   its dot (its clock covers it) and no longer holds it, which means some write superseded it
//!   there. The merge is commutative, associative and idempotent, so replicas may exchange objects
//!   in any order, any number of times.
//! - Buckets may use [`ConflictMode::LastWriterWins`] instead: only the sibling with the greatest
//!   `(timestamp, dot)` is kept, which loses concurrent writes by design.
//! - Deletes are writes of [`Content::Tombstone`], ordinary siblings until they are reaped.
//! - Every sibling carries a crc32 [`checksum`] of its value computed when the write was made;
//!   stored records ([`Object::encode`]) and contexts ([`Context::encode`]) carry a crc32 of their
//!   own.
//!
//! # Example
//!
//! ```
//! use ringkv_core::version::{ActorId, ConflictMode, Content, Context, Object, VersionVector};
//!
//! let n1 = ActorId::new("n1.1");
//! let n2 = ActorId::new("n2.1");
//! let mode = ConflictMode::Siblings;
//!
//! // Two clients write the same key without a context through different coordinators.
//! let mut a = Object::new();
//! a.update(&VersionVector::new(), &n1, Content::Value(b"x".to_vec()), 10, mode);
//! let mut b = Object::new();
//! b.update(&VersionVector::new(), &n2, Content::Value(b"y".to_vec()), 11, mode);
//!
//! // Anti-entropy merges the replicas: both writes are kept as siblings.
//! a.merge(&b, mode);
//! assert_eq!(a.values().collect::<Vec<_>>(), [&b"x"[..], &b"y"[..]]);
//!
//! // A client reads both siblings and writes back a resolution with the read's context.
//! let token = a.context().to_base64(); // what travels in X-Ringkv-Context
//! let context = Context::from_base64(&token).unwrap();
//! a.update(context.clock(), &n1, Content::Value(b"xy".to_vec()), 12, mode);
//!
//! // The resolution supersedes both siblings on every replica it reaches.
//! b.merge(&a, mode);
//! assert_eq!(b.values().collect::<Vec<_>>(), [&b"xy"[..]]);
//! assert_eq!(a, b);
//! ```

use alloc::{collections::BTreeMap, string::String, vec, vec::Vec};
use core::cmp::Ordering;
use core::fmt;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod context;

pub use context::{key_fingerprint, Context, ContextError};

/// Format version byte that starts every record written by [`Object::encode`].
pub const RECORD_FORMAT: u8 = 1;

/// Format version byte that starts every context written by [`Context::encode`]. Version 1
/// carried no key fingerprint; such contexts are refused ([`ContextError::Unbound`]).
pub const CONTEXT_FORMAT: u8 = 2;

/// Largest encoded context [`Context::decode`] accepts, in bytes. Contexts come from clients, so
/// their size is bounded before anything is decoded.
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;

/// Largest number of clock entries [`Context::decode`] accepts. Truncation keeps real clocks far
/// below this; the cap only bounds the work a hostile context can cause.
pub const MAX_CONTEXT_ENTRIES: usize = 10_000;

/// Length of the crc32 trailer of records and contexts.
const CRC_LEN: usize = 4;

/// The checksum used for values everywhere: crc32 (IEEE) of the bytes.
///
/// A tombstone's checksum is that of the empty slice.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Who issued a dot: a node in one incarnation (e.g. `"n1.4"`), so that a node that lost unsynced
/// writes in a crash restarts as a new actor and never reissues a dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActorId(String);

impl ActorId {
    /// Wraps a name as an actor id.
    pub fn new(s: impl Into<String>) -> Self {
        ActorId(s.into())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of one write: the actor that coordinated it and that actor's counter for it.
///
/// Dots are ordered by actor, then counter; displayed as `actor:counter`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot {
    /// The coordinator incarnation that issued the dot.
    pub actor: ActorId,
    /// The actor's counter, starting at 1.
    pub counter: u64,
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

/// How two histories relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// The first history is strictly older: the second has seen all of it and more.
    Before,
    /// The first history strictly descends the second.
    After,
    /// Both have seen exactly the same writes.
    Equal,
    /// Each has seen a write the other has not.
    Concurrent,
}

impl Causality {
    /// The relation seen from the other side (`Before` and `After` swap).
    pub fn reverse(self) -> Causality {
        match self {
            Causality::Before => Causality::After,
            Causality::After => Causality::Before,
            other => other,
        }
    }
}

/// One actor's entry in a [`VersionVector`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEntry {
    /// Highest counter of the actor seen; all of `1..=counter` are covered.
    pub counter: u64,
    /// Timestamp (coordinator ms) of the entry's last increment, the age truncation goes by. Merges
    /// keep the larger of two timestamps.
    pub timestamp: u64,
}

/// Per actor: highest counter seen and the (coordinator wall-clock, ms) timestamp of that entry's
/// last increment, for truncation.
///
/// An absent actor means counter 0; entries with counter 0 are never stored (deserializing rejects
/// them, and repeated actors), so two vectors compare [`Causality::Equal`] exactly when they hold
/// the same counters (`==` compares the timestamps too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    entries: BTreeMap<ActorId, ClockEntry>,
}

impl VersionVector {
    /// The empty vector, which covers nothing.
    pub fn new() -> Self {
        VersionVector::default()
    }

    /// The highest counter of `actor` seen (0 when none).
    pub fn get(&self, actor: &ActorId) -> u64 {
        self.entries.get(actor).map_or(0, |e| e.counter)
    }

    /// The entry of `actor`, if the vector has one.
    pub fn entry(&self, actor: &ActorId) -> Option<&ClockEntry> {
        self.entries.get(actor)
    }

    /// Number of actors with an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the vector has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when the write named `dot` has been seen: `self[dot.actor] >= dot.counter`.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// True when `self` has seen everything `other` has (pointwise `>=`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|(a, e)| self.get(a) >= e.counter)
    }

    /// How `self` relates to `other`; `Before` means `other` strictly descends `self`. Timestamps
    /// play no part.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        // One pass over both sorted maps; every stored counter is >= 1, so an actor present on one
        // side only makes that side greater.
        let mut mine = self.entries.iter().peekable();
        let mut theirs = other.entries.iter().peekable();
        let (mut ahead, mut behind) = (false, false);
        while !(ahead && behind) {
            match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => {
                    ahead = true;
                    break;
                }
                (None, Some(_)) => {
                    behind = true;
                    break;
                }
                (Some((a, x)), Some((b, y))) => match a.cmp(b) {
                    Ordering::Less => {
                        ahead = true;
                        mine.next();
                    }
                    Ordering::Greater => {
                        behind = true;
                        theirs.next();
                    }
                    Ordering::Equal => {
                        match x.counter.cmp(&y.counter) {
                            Ordering::Greater => ahead = true,
                            Ordering::Less => behind = true,
                            Ordering::Equal => {}
                        }
                        mine.next();
                        theirs.next();
                    }
                },
            }
        }
        match (ahead, behind) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }

    /// Pointwise maximum; an entry's timestamp becomes the larger of the two.
    pub fn merge(&mut self, other: &VersionVector) {
        for (actor, theirs) in &other.entries {
            match self.entries.get_mut(actor) {
                Some(mine) => {
                    mine.counter = mine.counter.max(theirs.counter);
                    mine.timestamp = mine.timestamp.max(theirs.timestamp);
                }
                None => {
                    self.entries.insert(actor.clone(), *theirs);
                }
            }
        }
    }

    /// The entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (&ActorId, &ClockEntry)> {
        self.entries.iter()
    }

    /// The largest timestamp of any entry.
    fn max_timestamp(&self) -> Option<u64> {
        self.entries.values().map(|e| e.timestamp).max()
    }
}

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(&self.entries)
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(VersionVectorVisitor)
    }
}

/// Builds a vector entry by entry so that zero counters and repeated actors are rejected wherever a
/// vector is deserialized, not only in [`Context::decode`]: either would make `==` disagree with
/// [`VersionVector::compare`].
struct VersionVectorVisitor;

impl<'de> Visitor<'de> for VersionVectorVisitor {
    type Value = VersionVector;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map from actor id to clock entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VersionVector, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some((actor, entry)) = map.next_entry::<ActorId, ClockEntry>()? {
            if entry.counter == 0 {
                return Err(de::Error::custom("clock entry with counter 0"));
            }
            if entries.insert(actor, entry).is_some() {
                return Err(de::Error::custom("actor repeated in a clock"));
            }
        }
        Ok(VersionVector { entries })
    }
}

/// What a sibling holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A value's bytes.
    Value(#[serde(with = "value_bytes")] Vec<u8>),
    /// A delete marker, kept as an ordinary sibling until every replica has it.
    Tombstone,
    /// A value that expires: from `expires_at` (coordinator time, ms) on, reads do not return it
    /// and it counts as deleted. The coordinator fixed the absolute time, so every replica holds
    /// the same bytes. (Last, so that records written before expiry existed decode unchanged.)
    Expiring {
        /// The value's bytes.
        #[serde(with = "value_bytes")]
        value: Vec<u8>,
        /// When it expires.
        expires_at: u64,
    },
}

impl Content {
    /// A value that expires at `expires_at`, or never (`None`).
    pub fn value(bytes: Vec<u8>, expires_at: Option<u64>) -> Content {
        match expires_at {
            Some(expires_at) => Content::Expiring {
                value: bytes,
                expires_at,
            },
            None => Content::Value(bytes),
        }
    }

    /// The value's bytes, or the empty slice for a tombstone (what the checksum covers).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Content::Value(v) | Content::Expiring { value: v, .. } => v,
            Content::Tombstone => &[],
        }
    }

    /// True for a tombstone.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Content::Tombstone)
    }

    /// When the value expires (`None`: a value that does not, or a tombstone).
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Content::Expiring { expires_at, .. } => Some(*expires_at),
            Content::Value(_) | Content::Tombstone => None,
        }
    }

    /// True for a value that has not expired at `now`; false for a tombstone and an expired
    /// value, which reads do not return.
    pub fn is_live_at(&self, now: u64) -> bool {
        match self {
            Content::Value(_) => true,
            Content::Expiring { expires_at, .. } => now < *expires_at,
            Content::Tombstone => false,
        }
    }

    /// Whether the content is the same write's: the same bytes, tombstone or not, expiry
    /// aside (what a history checker compares).
    pub fn same_value(&self, other: &Content) -> bool {
        self.is_tombstone() == other.is_tombstone() && self.bytes() == other.bytes()
    }
}

/// (De)serializes value bytes as one byte string rather than element by element: the same postcard
/// encoding as a `Vec<u8>` (length then bytes), but a 1 MiB value is copied once instead of being
/// visited a million times.
mod value_bytes {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Self-describing formats (JSON) write bytes as a sequence of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The hint comes from the input; cap what it can make us reserve.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// One sibling value of an object: a write's content, tagged with the write's dot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The dot of the write that created this sibling.
    pub dot: Dot,
    /// The value or tombstone written.
    pub content: Content,
    /// Coordinator time (ms) of the write. [`Object::update`] raises it above the timestamps of the
    /// writes it supersedes when the coordinator's clock is behind, so last-writer-wins never
    /// prefers a write over its own successor.
    pub timestamp: u64,
    /// crc32 of the value bytes (of an empty slice for a tombstone), computed when the write was
    /// made.
    pub checksum: u32,
}

impl Sibling {
    /// A sibling with its checksum computed from `content`.
    pub fn new(dot: Dot, content: Content, timestamp: u64) -> Sibling {
        let checksum = checksum(content.bytes());
        Sibling {
            dot,
            content,
            timestamp,
            checksum,
        }
    }

    /// True when the content still matches the checksum taken at write time.
    pub fn verify(&self) -> bool {
        checksum(self.content.bytes()) == self.checksum
    }

    /// The value bytes, or `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Value(v) | Content::Expiring { value: v, .. } => Some(v),
            Content::Tombstone => None,
        }
    }

    /// When this sibling stops counting: a tombstone at once (its write time), an expiring
    /// value at its expiry, a value that does not expire never. It may leave the disk a grace
    /// period after that (see [`Object::dead_since`]).
    pub fn dead_from(&self) -> Option<u64> {
        match &self.content {
            Content::Tombstone => Some(self.timestamp),
            Content::Expiring { expires_at, .. } => Some(*expires_at),
            Content::Value(_) => None,
        }
    }
}

/// Which of two copies of the same dot to keep. The copies are identical in a correct system; if
/// corruption or a bug makes them differ, the greater `(checksum, content, timestamp)` is kept so
/// that merge stays commutative.
fn copy_order(a: &Sibling, b: &Sibling) -> Ordering {
    a.checksum
        .cmp(&b.checksum)
        .then_with(|| content_order(&a.content, &b.content))
        .then_with(|| a.timestamp.cmp(&b.timestamp))
}

/// A total order of contents: tombstone, then values by bytes, a value that expires after one
/// that does not, and later expiries last.
fn content_order(a: &Content, b: &Content) -> Ordering {
    a.is_tombstone()
        .cmp(&b.is_tombstone())
        .reverse()
        .then_with(|| a.bytes().cmp(b.bytes()))
        .then_with(|| a.expires_at().cmp(&b.expires_at()))
}

/// The last-writer-wins order: `(timestamp, dot)`, then [`copy_order`] so it is total.
fn lww_order(a: &Sibling, b: &Sibling) -> Ordering {
    a.timestamp
        .cmp(&b.timestamp)
        .then_with(|| a.dot.cmp(&b.dot))
        .then_with(|| copy_order(a, b))
}

/// How an object resolves concurrent writes (a bucket property).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ConflictMode {
    /// Keep every concurrent write as a sibling for the client to resolve.
    #[default]
    Siblings,
    /// Keep only the write with the greatest `(timestamp, dot)`; concurrent writes are lost.
    LastWriterWins,
}

impl ConflictMode {
    /// `siblings` or `lww`: the name configurations, the HTTP API and the bindings use.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictMode::Siblings => "siblings",
            ConflictMode::LastWriterWins => "lww",
        }
    }
}

impl fmt::Display for ConflictMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A conflict mode name that is neither `siblings`, `lww` nor `last_writer_wins`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown conflict mode {0:?}: expected siblings or lww")]
pub struct ConflictModeError(pub String);

impl core::str::FromStr for ConflictMode {
    type Err = ConflictModeError;

    /// Parses `siblings`, `lww` or `last_writer_wins` (any case, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "siblings" => Ok(ConflictMode::Siblings),
            "lww" | "last_writer_wins" => Ok(ConflictMode::LastWriterWins),
            _ => Err(ConflictModeError(String::from(s))),
        }
    }
}

/// A stored object: sibling values with one causal history.
///
/// Invariant: siblings sorted by dot, unique dots, every sibling's dot covered by `clock`. Every
/// constructor, [`Object::decode`] and serde deserialization keep or check it; sorted siblings
/// also make `==` semantic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ObjectRepr")]
pub struct Object {
    clock: VersionVector,
    siblings: Vec<Sibling>,
}

/// The wire shape of [`Object`], before its invariants are checked.
#[derive(Deserialize)]
struct ObjectRepr {
    clock: VersionVector,
    siblings: Vec<Sibling>,
}

impl TryFrom<ObjectRepr> for Object {
    type Error = &'static str;

    fn try_from(repr: ObjectRepr) -> Result<Object, &'static str> {
        let object = Object {
            clock: repr.clock,
            siblings: repr.siblings,
        };
        object.check_invariants()?;
        Ok(object)
    }
}

impl Object {
    /// An object that has seen nothing (a key never written).
    pub fn new() -> Self {
        Object::default()
    }

    /// The causal history: every dot this object has seen.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    /// The siblings, in dot order.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The client-facing context for this object (its clock).
    pub fn context(&self) -> Context {
        Context::from_clock(self.clock.clone())
    }

    /// A write coordinated by `actor` at time `now` with the client's `context`: drops exactly the
    /// siblings the context covers, adds the new sibling with dot
    /// `(actor, max(clock[actor], context[actor]) + 1)`, and merges the context into the clock.
    /// Siblings mode keeps concurrent (unseen) siblings; LastWriterWins keeps only the winner by
    /// `(timestamp, dot)` order, which may be an older concurrent write when the coordinator's
    /// clock is behind. Returns the new dot.
    ///
    /// The sibling's timestamp is `now`, raised when needed to one more than the largest timestamp
    /// in `context` and to at least the actor's own entry. Clock entry timestamps are never below
    /// those of the dots they cover, so a write is always timestamped after every write it
    /// supersedes: last-writer-wins then agrees with causality, and its merge can be a plain
    /// maximum (see [`Object::merge`]).
    ///
    /// The counter comes from this object's clock, so the coordinator must call this on its own
    /// replica's object, and must not truncate its own entry there (see
    /// [`Object::truncate_keeping`]). The context is not authenticated: a forged one can only
    /// supersede or hide writes of this key.
    pub fn update(
        &mut self,
        context: &VersionVector,
        actor: &ActorId,
        content: Content,
        now: u64,
        mode: ConflictMode,
    ) -> Dot {
        self.update_above(context, actor, content, now, mode, 0)
    }

    /// [`Object::update`] with a dot counter above `floor` as well: what a coordinator uses
    /// once it has reaped records that held its actor's dots: a new object of such a key must
    /// not reissue them, or a client holding a context from before the reap would supersede
    /// the new write without having seen it. The clock then claims the actor's counters up to
    /// `floor`, which covers no live dot of this key: the actor's dots are all in its own
    /// record, and the reaped ones were dead on every replica. (A node that hands a record
    /// over instead takes a fresh actor: the handed-over dots live on elsewhere.)
    pub fn update_above(
        &mut self,
        context: &VersionVector,
        actor: &ActorId,
        content: Content,
        now: u64,
        mode: ConflictMode,
        floor: u64,
    ) -> Dot {
        let counter = self
            .clock
            .get(actor)
            .max(context.get(actor))
            .max(floor)
            .saturating_add(1);
        let own = self.clock.entry(actor).map_or(0, |e| e.timestamp);
        let after_context = context.max_timestamp().map_or(0, |t| t.saturating_add(1));
        let timestamp = now.max(own).max(after_context);
        let dot = Dot {
            actor: actor.clone(),
            counter,
        };

        self.siblings.retain(|s| !context.covers(&s.dot));
        self.clock.merge(context);
        // `counter` and `timestamp` are at least the merged entry's, so this is an increment.
        self.clock
            .entries
            .insert(actor.clone(), ClockEntry { counter, timestamp });

        let new = Sibling::new(dot.clone(), content, timestamp);
        match mode {
            ConflictMode::Siblings => {
                // The counter is above every dot of `actor` the clock covers: the dot is new.
                let at = self
                    .siblings
                    .binary_search_by(|s| s.dot.cmp(&new.dot))
                    .unwrap_or_else(|i| i);
                self.siblings.insert(at, new);
            }
            ConflictMode::LastWriterWins => {
                let kept = core::mem::take(&mut self.siblings)
                    .into_iter()
                    .chain(core::iter::once(new))
                    .max_by(lww_order);
                self.siblings = kept.into_iter().collect();
            }
        }
        dot
    }

    /// Sync with another replica's object: keep a sibling of either side unless the other side's
    /// clock covers it and the other side does not hold it; clocks merge. Commutative, associative,
    /// idempotent. Both sides holding a dot keep one copy (see [`Sibling`] for differing copies).
    ///
    /// LastWriterWins: afterwards only the single winner by `(timestamp, dot)` remains. It is the
    /// greatest sibling of the two sides, which is what the siblings rule followed by picking the
    /// winner gives whenever timestamps follow causality, as [`Object::update`] ensures: a dot the
    /// other side has seen but dropped was superseded there by a write with a greater timestamp,
    /// whose winner is at least that great. Unlike that two-step rule, the plain maximum is
    /// associative on any input (truncated clocks, mode changes), so it is used. On objects kept in
    /// this mode (at most one sibling) it is also idempotent.
    pub fn merge(&mut self, other: &Object, mode: ConflictMode) {
        let mine = core::mem::take(&mut self.siblings);
        self.siblings = match mode {
            ConflictMode::Siblings => {
                let mut out = Vec::with_capacity(mine.len() + other.siblings.len());
                let mut theirs = other.siblings.iter().peekable();
                // Both lists are sorted by dot: walk them together.
                for s in mine {
                    while let Some(t) = theirs.next_if(|t| t.dot < s.dot) {
                        if !self.clock.covers(&t.dot) {
                            out.push(t.clone());
                        }
                    }
                    match theirs.next_if(|t| t.dot == s.dot) {
                        Some(t) if copy_order(&s, t) == Ordering::Less => out.push(t.clone()),
                        Some(_) => out.push(s),
                        None if !other.clock.covers(&s.dot) => out.push(s),
                        None => {}
                    }
                }
                for t in theirs {
                    if !self.clock.covers(&t.dot) {
                        out.push(t.clone());
                    }
                }
                out
            }
            ConflictMode::LastWriterWins => {
                let best_mine = mine.into_iter().max_by(lww_order);
                let best_theirs = other.siblings.iter().max_by(|a, b| lww_order(a, b));
                match (best_mine, best_theirs) {
                    (Some(m), Some(t)) if lww_order(&m, t) == Ordering::Less => vec![t.clone()],
                    (Some(m), _) => vec![m],
                    (None, Some(t)) => vec![t.clone()],
                    (None, None) => Vec::new(),
                }
            }
        };
        self.clock.merge(&other.clock);
    }

    /// Values (non-tombstone siblings, expired or not), in dot order.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.siblings.iter().filter_map(Sibling::value)
    }

    /// The siblings a read at `now` returns: values not expired, in dot order.
    pub fn live_at(&self, now: u64) -> impl Iterator<Item = &Sibling> {
        self.siblings
            .iter()
            .filter(move |s| s.content.is_live_at(now))
    }

    /// True when the object exists but no sibling is live at `now` (every one a tombstone or
    /// expired): it reads as deleted, and may be reaped once [`Object::dead_since`] is old enough.
    pub fn is_dead_at(&self, now: u64) -> bool {
        !self.is_empty() && self.live_at(now).next().is_none()
    }

    /// When the object stopped counting: the latest time one of its siblings died (see
    /// [`Sibling::dead_from`]); `None` while one of them never dies (a value without expiry) or
    /// for an empty object. A tombstone reaper waits a grace period past this.
    pub fn dead_since(&self) -> Option<u64> {
        let mut latest = None;
        for s in &self.siblings {
            let died = s.dead_from()?;
            latest = latest.max(Some(died));
        }
        latest
    }

    /// Drops the siblings expired at `now` (a coordinator does, before it writes): they are
    /// dead, and its clock still covers their dots, so every replica drops them when it merges
    /// the result.
    pub fn drop_expired(&mut self, now: u64) {
        self.siblings
            .retain(|s| s.content.is_tombstone() || s.content.is_live_at(now));
    }

    /// True when the object exists but every sibling is a tombstone (a deleted key): it is not
    /// [empty](Object::is_empty) and has no live value.
    pub fn is_deleted(&self) -> bool {
        !self.is_empty() && self.values().next().is_none()
    }

    /// True when the object has no sibling and an empty clock (never written, as far as this
    /// replica knows).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.clock.is_empty()
    }

    /// Drops the clock entries with the oldest timestamps until at most `max_entries` remain,
    /// never an entry whose actor still has a sibling in this object (its dot must stay covered).
    /// Ties are broken by actor id, so replicas truncate alike.
    ///
    /// Truncation can turn a later write into a false sibling but never loses one: a smaller clock
    /// covers fewer dots, and a sibling is only ever dropped because some clock or context *covers*
    /// it ([`Object::merge`] drops a sibling the other side covers, [`Object::update`] one the
    /// context covers). Covering less can therefore only keep a sibling that a full clock would
    /// have recognised as superseded; the next write with a context resolves it.
    ///
    /// One caution: dot counters come from the clock, so truncating the coordinating actor's *own*
    /// entry on its own replica lets its next write reissue a dot that other replicas already
    /// cover, and they would drop that write. A coordinator uses [`Object::truncate_keeping`] with
    /// its own actor; this form is for replicas that never coordinate as an actor in this clock.
    pub fn truncate(&mut self, max_entries: usize) {
        self.truncate_inner(max_entries, None);
    }

    /// [`Object::truncate`], but never dropping `keep`'s entry either: the form a coordinator uses
    /// on its own replica, with its own actor, so its counters never go back.
    pub fn truncate_keeping(&mut self, max_entries: usize, keep: &ActorId) {
        self.truncate_inner(max_entries, Some(keep));
    }

    fn truncate_inner(&mut self, max_entries: usize, keep: Option<&ActorId>) {
        let excess = self.clock.len().saturating_sub(max_entries);
        if excess == 0 {
            return;
        }
        let mut candidates: Vec<(u64, &ActorId)> = self
            .clock
            .entries
            .iter()
            .filter(|(actor, _)| Some(*actor) != keep)
            .filter(|(actor, _)| !self.siblings.iter().any(|s| &s.dot.actor == *actor))
            .map(|(actor, e)| (e.timestamp, actor))
            .collect();
        candidates.sort_unstable();
        let doomed: Vec<ActorId> = candidates
            .into_iter()
            .take(excess)
            .map(|(_, actor)| actor.clone())
            .collect();
        for actor in &doomed {
            self.clock.entries.remove(actor);
        }
    }

    /// Checks every sibling's checksum; `Err` names the first bad dot.
    pub fn verify(&self) -> Result<(), ChecksumError> {
        match self.siblings.iter().find(|s| !s.verify()) {
            Some(bad) => Err(ChecksumError {
                dot: bad.dot.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Stored record: `[format version byte][postcard body][crc32 LE]`, where the crc32 covers the
    /// version byte and the body.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(RECORD_FORMAT, self)
    }

    /// Decodes and checks the record crc, the format version, the invariants of [`Object`] and
    /// every sibling checksum.
    pub fn decode(bytes: &[u8]) -> Result<Object, RecordError> {
        let body = open_frame(bytes, RECORD_FORMAT).map_err(|e| match e {
            FrameError::Empty | FrameError::Short => RecordError::Truncated,
            FrameError::Version(v) => RecordError::UnknownVersion(v),
            FrameError::Checksum => RecordError::Checksum,
        })?;
        // Decoding the unchecked shape first keeps the invariant that failed in the error.
        let repr: ObjectRepr = decode_body(body).ok_or(RecordError::Malformed)?;
        let object = Object {
            clock: repr.clock,
            siblings: repr.siblings,
        };
        object.check_invariants().map_err(RecordError::Invariant)?;
        object.verify()?;
        Ok(object)
    }

    /// Exact length of [`Object::encode`]'s output, computed without building it.
    pub fn encoded_len(&self) -> usize {
        1 + body_len(self) + CRC_LEN
    }

    fn check_invariants(&self) -> Result<(), &'static str> {
        if self.siblings.windows(2).any(|w| w[0].dot >= w[1].dot) {
            return Err("siblings not strictly sorted by dot");
        }
        for s in &self.siblings {
            if s.dot.counter == 0 {
                return Err("sibling dot with counter 0");
            }
            if !self.clock.covers(&s.dot) {
                return Err("sibling dot not covered by the clock");
            }
        }
        Ok(())
    }
}

/// Why a stored record could not be decoded. Decoding changes nothing; the caller treats the
/// replica's copy as missing so that read repair or anti-entropy replaces it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record is shorter than a version byte and a crc32. Nothing is changed.
    #[error("record truncated")]
    Truncated,
    /// The record starts with a format version this build does not know. Nothing is changed.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// The record's crc32 does not match: it was altered or cut. Nothing is changed.
    #[error("record checksum mismatch")]
    Checksum,
    /// The record passed its checksum but its body does not decode (a writer bug). Nothing is
    /// changed.
    #[error("malformed record")]
    Malformed,
    /// The record decodes but breaks an invariant of [`Object`], named here. Nothing is changed.
    #[error("record breaks an invariant: {0}")]
    Invariant(&'static str),
    /// A sibling's value does not match its checksum. Nothing is changed.
    #[error(transparent)]
    SiblingChecksum(#[from] ChecksumError),
}

/// A sibling whose content no longer matches the checksum taken when it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sibling {dot} failed its checksum")]
pub struct ChecksumError {
    /// The dot of the first sibling that failed.
    pub dot: Dot,
}

/// `[version][postcard body][crc32 LE of version and body]`.
pub(crate) fn encode_frame<T: Serialize + ?Sized>(version: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body_len(value) + CRC_LEN);
    out.push(version);
    // Postcard only fails on a full fixed buffer or on sequences of unknown length; a Vec grows and
    // every sequence here has a length, so this cannot fail.
    let mut out = postcard::to_extend(value, out).expect("postcard into a Vec cannot fail");
    let crc = checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Length of the postcard body of `value`.
fn body_len<T: Serialize + ?Sized>(value: &T) -> usize {
    // Same reasoning as in `encode_frame`: sizing cannot fail.
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("postcard sizing cannot fail")
}

pub(crate) enum FrameError {
    Empty,
    Version(u8),
    Short,
    Checksum,
}

/// Checks a frame's version and crc and returns its body.
pub(crate) fn open_frame(bytes: &[u8], version: u8) -> Result<&[u8], FrameError> {
    // The version comes first: a future format may lay out the rest differently.
    let (&found, _) = bytes.split_first().ok_or(FrameError::Empty)?;
    if found != version {
        return Err(FrameError::Version(found));
    }
    if bytes.len() < 1 + CRC_LEN {
        return Err(FrameError::Short);
    }
    let (framed, trailer) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored: [u8; CRC_LEN] = trailer.try_into().map_err(|_| FrameError::Short)?;
    if checksum(framed) != u32::from_le_bytes(stored) {
        return Err(FrameError::Checksum);
    }
    Ok(&framed[1..])
}

/// Decodes a whole body; trailing bytes make it malformed.
pub(crate) fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Option<T> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use std::collections::BTreeSet;
    use std::format;
    use std::string::ToString;

    const N: usize = 3;

    fn actor(i: usize) -> ActorId {
        ActorId::new(format!("n{i}.1"))
    }

    fn value(bytes: &[u8]) -> Content {
        Content::Value(bytes.to_vec())
    }

    fn vv(entries: &[(&str, u64, u64)]) -> VersionVector {
        VersionVector {
            entries: entries
                .iter()
                .map(|&(a, counter, timestamp)| {
                    (ActorId::new(a), ClockEntry { counter, timestamp })
                })
                .collect(),
        }
    }

    fn dots(object: &Object) -> Vec<Dot> {
        object.siblings().iter().map(|s| s.dot.clone()).collect()
    }

    fn merge_all(objects: &[Object], mode: ConflictMode) -> Object {
        let mut all = Object::new();
        for o in objects {
            all.merge(o, mode);
        }
        all
    }

    /// Frames `body` as a record or context with a correct crc.
    fn frame(version: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![version];
        out.extend_from_slice(body);
        let crc = checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    // ---- Histories -------------------------------------------------------------------------

    /// One step of a simulated cluster of `N` replicas; replica `i` coordinates as actor `i`, as
    /// a real coordinator issues dots only from its own replica's clock.
    #[derive(Clone, Debug)]
    enum Op {
        /// A client reads from the replicas in `mask` (merging them, as a quorum read does) and
        /// keeps the context for a later write.
        Read { mask: u8 },
        /// A write at `replica` with one of the earlier reads' contexts (or none).
        Write {
            replica: usize,
            read: Option<Index>,
            content: Option<Vec<u8>>,
            jitter: u64,
        },
        /// `to` merges `from`'s object (read repair, anti-entropy, hint delivery).
        Sync { from: usize, to: usize },
        /// `replica` truncates its clock, keeping its own actor's entry.
        Truncate { replica: usize, max: usize },
    }

    #[derive(Clone, Debug)]
    struct Write {
        /// The sibling the write created (timestamp as raised by `update`).
        sibling: Sibling,
        /// The context it was made with: it supersedes exactly the dots this covers.
        context: VersionVector,
    }

    #[derive(Clone, Debug)]
    struct History {
        mode: ConflictMode,
        replicas: Vec<Object>,
        reads: Vec<VersionVector>,
        writes: Vec<Write>,
        truncated: bool,
    }

    impl History {
        fn run(ops: &[Op], mode: ConflictMode) -> History {
            let mut h = History {
                mode,
                replicas: vec![Object::new(); N],
                reads: Vec::new(),
                writes: Vec::new(),
                truncated: false,
            };
            for (step, op) in ops.iter().enumerate() {
                match op {
                    Op::Read { mask } => {
                        let read: Vec<Object> = (0..N)
                            .filter(|r| mask & (1 << r) != 0)
                            .map(|r| h.replicas[r].clone())
                            .collect();
                        h.reads.push(merge_all(&read, mode).clock().clone());
                    }
                    Op::Write {
                        replica,
                        read,
                        content,
                        jitter,
                    } => {
                        let context = match read {
                            Some(i) if !h.reads.is_empty() => {
                                h.reads[i.index(h.reads.len())].clone()
                            }
                            _ => VersionVector::new(),
                        };
                        let content = content.clone().map_or(Content::Tombstone, Content::Value);
                        // Coordinator clocks are skewed: `jitter` lets later writes carry
                        // earlier times.
                        let now = step as u64 * 4 + jitter;
                        let me = actor(*replica);
                        let object = &mut h.replicas[*replica];
                        let dot = object.update(&context, &me, content.clone(), now, mode);
                        let timestamp = object.clock().entry(&me).unwrap().timestamp;
                        h.writes.push(Write {
                            sibling: Sibling::new(dot, content, timestamp),
                            context,
                        });
                    }
                    Op::Sync { from, to } => {
                        let source = h.replicas[*from].clone();
                        h.replicas[*to].merge(&source, mode);
                    }
                    Op::Truncate { replica, max } => {
                        h.replicas[*replica].truncate_keeping(*max, &actor(*replica));
                        h.truncated = true;
                    }
                }
            }
            h
        }

        fn superseded(&self, dot: &Dot) -> bool {
            self.writes.iter().any(|w| w.context.covers(dot))
        }

        fn merged(&self) -> Object {
            merge_all(&self.replicas, self.mode)
        }
    }

    fn op(truncate: bool) -> impl Strategy<Value = Op> {
        let read = any::<u8>().prop_map(|m| Op::Read {
            mask: (m % 7) + 1, // a non-empty subset of 3 replicas
        });
        let write = (
            0..N,
            proptest::option::weighted(0.8, any::<Index>()),
            proptest::option::weighted(0.85, proptest::collection::vec(any::<u8>(), 0..6)),
            0u64..40,
        )
            .prop_map(|(replica, read, content, jitter)| Op::Write {
                replica,
                read,
                content,
                jitter,
            });
        let sync = (0..N, 0..N).prop_map(|(from, to)| Op::Sync { from, to });
        // (proptest refuses a zero weight, so a history without truncation syncs instead.)
        let trunc = (0..N, 0usize..3).prop_map(move |(replica, max)| match truncate {
            true => Op::Truncate { replica, max },
            false => Op::Sync {
                from: replica,
                to: max,
            },
        });
        prop_oneof![2 => read, 4 => write, 3 => sync, 1 => trunc]
    }

    fn history(mode: ConflictMode, truncate: bool) -> impl Strategy<Value = History> {
        proptest::collection::vec(op(truncate), 0..40).prop_map(move |ops| History::run(&ops, mode))
    }

    fn any_mode() -> impl Strategy<Value = ConflictMode> {
        prop_oneof![
            Just(ConflictMode::Siblings),
            Just(ConflictMode::LastWriterWins)
        ]
    }

    fn any_history() -> impl Strategy<Value = History> {
        (any_mode(), any::<bool>()).prop_flat_map(|(mode, truncate)| history(mode, truncate))
    }

    /// Small arbitrary vectors over a few actors (counters >= 1, as stored vectors are).
    fn any_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::btree_map(0usize..4, (1u64..4, 0u64..10), 0..4).prop_map(|m| {
            VersionVector {
                entries: m
                    .into_iter()
                    .map(|(a, (counter, timestamp))| (actor(a), ClockEntry { counter, timestamp }))
                    .collect(),
            }
        })
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn merge_is_commutative_associative_idempotent(h in any_history(), trunc in 0usize..4) {
            let mode = h.mode;
            let [a, b, mut c]: [Object; N] = h.replicas.clone().try_into().unwrap();
            // Truncated objects are objects too: the laws must hold for them.
            c.truncate(trunc);
            let m = |x: &Object, y: &Object| { let mut r = x.clone(); r.merge(y, mode); r };
            prop_assert_eq!(m(&a, &b), m(&b, &a));
            prop_assert_eq!(m(&a, &c), m(&c, &a));
            prop_assert_eq!(m(&m(&a, &b), &c), m(&a, &m(&b, &c)));
            prop_assert_eq!(m(&m(&a, &c), &b), m(&a, &m(&c, &b)));
            prop_assert_eq!(m(&a, &a), a.clone());
            prop_assert_eq!(m(&m(&a, &b), &b), m(&a, &b));
            let merged = m(&m(&a, &b), &c);
            prop_assert!(merged.check_invariants().is_ok());
            prop_assert!(merged.clock().descends(a.clock()) && merged.clock().descends(c.clock()));
        }

        #[test]
        fn put_with_a_read_context_supersedes_exactly_what_the_read_saw(
            h in history(ConflictMode::Siblings, true),
            mask in 1u8..8,
            r in 0..N,
            content in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let read: Vec<Object> =
                (0..N).filter(|q| mask & (1 << q) != 0).map(|q| h.replicas[q].clone()).collect();
            let ctx = merge_all(&read, h.mode).context();
            let before_all = h.merged();

            let mut replicas = h.replicas.clone();
            let before = replicas[r].clone();
            let dot = replicas[r].update(ctx.clock(), &actor(r), value(&content), 1_000, h.mode);

            let mut expected: Vec<Dot> =
                dots(&before).into_iter().filter(|d| !ctx.clock().covers(d)).collect();
            expected.push(dot.clone());
            expected.sort();
            prop_assert_eq!(dots(&replicas[r]), expected);
            prop_assert!(replicas[r].clock().descends(ctx.clock()));
            prop_assert!(replicas[r].check_invariants().is_ok());

            // Everywhere, once merged: the read's siblings are gone, the rest stay.
            let after_all = merge_all(&replicas, h.mode);
            let mut expected: Vec<Dot> =
                dots(&before_all).into_iter().filter(|d| !ctx.clock().covers(d)).collect();
            expected.push(dot);
            expected.sort();
            prop_assert_eq!(dots(&after_all), expected);
        }

        #[test]
        fn no_write_is_lost(h in history(ConflictMode::Siblings, true)) {
            let all = h.merged();
            let survivors: BTreeSet<Dot> = dots(&all).into_iter().collect();
            let expected: BTreeSet<Dot> = h
                .writes
                .iter()
                .map(|w| w.sibling.dot.clone())
                .filter(|d| !h.superseded(d))
                .collect();
            // Every write that no context saw survives, with its content.
            let lost: Vec<&Dot> = expected.difference(&survivors).collect();
            prop_assert!(lost.is_empty(), "lost: {:?}", lost);
            if !h.truncated {
                // Without truncation nothing else survives: exactly the unseen writes.
                prop_assert_eq!(&survivors, &expected);
            }
            for s in all.siblings() {
                let w = h.writes.iter().find(|w| w.sibling.dot == s.dot);
                prop_assert_eq!(Some(s), w.map(|w| &w.sibling), "reissued or altered dot");
            }
            for w in &h.writes {
                prop_assert!(all.clock().covers(&w.sibling.dot));
            }
            // Every merge order gives the same object.
            let mut reversed = h.replicas.clone();
            reversed.reverse();
            prop_assert_eq!(merge_all(&reversed, h.mode), all);
        }

        #[test]
        fn compare_agrees_with_descends(a in any_vv(), b in any_vv()) {
            let c = a.compare(&b);
            prop_assert_eq!(c == Causality::Equal, a.descends(&b) && b.descends(&a));
            let counters = |v: &VersionVector| -> Vec<(ActorId, u64)> {
                v.iter().map(|(k, e)| (k.clone(), e.counter)).collect()
            };
            prop_assert_eq!(c == Causality::Equal, counters(&a) == counters(&b));
            prop_assert_eq!(c == Causality::Before, b.descends(&a) && !a.descends(&b));
            prop_assert_eq!(c == Causality::After, a.descends(&b) && !b.descends(&a));
            prop_assert_eq!(c == Causality::Concurrent, !a.descends(&b) && !b.descends(&a));
            prop_assert_eq!(b.compare(&a), c.reverse());
            prop_assert_eq!(a.compare(&a), Causality::Equal);
            let mut m = a.clone();
            m.merge(&b);
            prop_assert!(m.descends(&a) && m.descends(&b));
            let ctx = (Context::from_clock(a.clone()), Context::from_clock(b.clone()));
            prop_assert_eq!(ctx.0.compare(&ctx.1), c);
        }

        #[test]
        fn truncation_keeps_sibling_entries_and_never_loses_a_sibling(
            h in any_history(),
            max in 0usize..4,
            which in 0..N,
            other in 0..N,
        ) {
            let a = &h.replicas[which];
            let mut t = a.clone();
            t.truncate(max);
            prop_assert!(t.check_invariants().is_ok());
            prop_assert_eq!(t.siblings(), a.siblings());
            let protected: BTreeSet<&ActorId> = a.siblings().iter().map(|s| &s.dot.actor).collect();
            for actor in &protected {
                prop_assert_eq!(t.clock().entry(actor), a.clock().entry(actor));
            }
            prop_assert_eq!(t.clock().len(), a.clock().len().min(max.max(protected.len())));
            // The oldest go first: nothing dropped is younger than an unprotected entry kept.
            for (actor, e) in a.clock().iter().filter(|(x, _)| t.clock().entry(x).is_none()) {
                for (kept, k) in t.clock().iter().filter(|(x, _)| !protected.contains(x)) {
                    prop_assert!((e.timestamp, actor) < (k.timestamp, kept));
                }
                prop_assert!(!protected.contains(actor));
            }

            let b = &h.replicas[other];
            let merged = |x: &Object, y: &Object| { let mut r = x.clone(); r.merge(y, h.mode); r };
            if h.mode == ConflictMode::Siblings {
                // Truncation may keep false siblings, never drop one the full merge keeps.
                let full: BTreeSet<Dot> = dots(&merged(a, b)).into_iter().collect();
                for m in [merged(&t, b), merged(b, &t)] {
                    let kept: BTreeSet<Dot> = dots(&m).into_iter().collect();
                    prop_assert!(kept.is_superset(&full));
                }
            } else {
                let (truncated, full) = (merged(&t, b), merged(a, b));
                prop_assert_eq!(truncated.siblings(), full.siblings());
            }
        }

        #[test]
        fn last_writer_wins_converges_on_the_greatest_write(
            h in history(ConflictMode::LastWriterWins, true),
        ) {
            let mode = ConflictMode::LastWriterWins;
            for r in &h.replicas {
                prop_assert!(r.siblings().len() <= 1);
            }
            // Gossip until every replica has merged every other.
            let mut replicas = h.replicas.clone();
            for _ in 0..2 {
                for i in 0..N {
                    for j in 0..N {
                        let source = replicas[j].clone();
                        replicas[i].merge(&source, mode);
                    }
                }
            }
            for r in &replicas[1..] {
                prop_assert_eq!(r, &replicas[0]);
            }
            let best = h.writes.iter().map(|w| &w.sibling).max_by(|a, b| lww_order(a, b));
            prop_assert_eq!(replicas[0].siblings().first(), best);
            // Timestamps follow causality: a write is later than everything its context saw.
            for w in &h.writes {
                for v in h.writes.iter().filter(|v| w.context.covers(&v.sibling.dot)) {
                    prop_assert!(v.sibling.timestamp < w.sibling.timestamp);
                }
            }
        }

        #[test]
        fn encodings_round_trip(h in any_history()) {
            for o in h.replicas.iter().chain(core::iter::once(&h.merged())) {
                let bytes = o.encode();
                prop_assert_eq!(bytes.len(), o.encoded_len());
                prop_assert_eq!(Object::decode(&bytes), Ok(o.clone()));
                // What a coordinator answers is bound to its key (a decoded context always is).
                let ctx = o.context().bound_to(b"b", b"k");
                prop_assert_eq!(Context::decode(&ctx.encode()), Ok(ctx.clone()));
                prop_assert_eq!(Context::from_base64(&ctx.to_base64()), Ok(ctx.clone()));
                // serde through another route checks the invariants too.
                let body = postcard::to_allocvec(o).unwrap();
                let via_serde: Object = postcard::from_bytes(&body).unwrap();
                prop_assert_eq!(&via_serde, o);
            }
        }

        #[test]
        fn flipped_bits_are_always_rejected(
            h in any_history(),
            at in any::<Index>(),
            bit in 0u8..8,
        ) {
            for o in &h.replicas {
                let mut bytes = o.encode();
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
                prop_assert!(Object::decode(&bytes).is_err());

                let mut bytes = o.context().encode();
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
                prop_assert!(Context::decode(&bytes).is_err());

                // One character of the HTTP form replaced by another base64 character.
                let mut text = o.context().to_base64().into_bytes();
                let i = at.index(text.len());
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let pos = alphabet.iter().position(|&c| c == text[i]).unwrap();
                text[i] = alphabet[(pos + 1 + bit as usize) % 64];
                prop_assert!(Context::from_base64(core::str::from_utf8(&text).unwrap()).is_err());
            }
        }

        #[test]
        fn decoders_never_panic_on_random_input(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            text in "[A-Za-z0-9_=+/-]{0,40}",
            version in 0u8..3,
        ) {
            let _ = Object::decode(&bytes);
            let _ = Context::decode(&bytes);
            let _ = Context::from_base64(&text);
            let _ = Context::from_base64(&String::from_utf8_lossy(&bytes));
            // Past the crc check, the body decoders see arbitrary bytes too.
            if let Ok(o) = Object::decode(&frame(version, &bytes)) {
                prop_assert_eq!(Object::decode(&o.encode()), Ok(o));
            }
            if let Ok(c) = Context::decode(&frame(version, &bytes)) {
                prop_assert_eq!(Context::decode(&c.encode()), Ok(c));
            }
        }

        #[test]
        fn mutated_bodies_with_valid_crc_never_panic(
            h in any_history(),
            at in any::<Index>(),
            byte in any::<u8>(),
            cut in any::<Index>(),
        ) {
            for o in &h.replicas {
                let encoded = o.encode();
                let mut body = encoded[1..encoded.len() - CRC_LEN].to_vec();
                let i = at.index(body.len());
                body[i] = byte;
                for candidate in [&body[..], &body[..cut.index(body.len() + 1)]] {
                    if let Ok(d) = Object::decode(&frame(RECORD_FORMAT, candidate)) {
                        prop_assert!(d.check_invariants().is_ok());
                        prop_assert!(d.verify().is_ok());
                        prop_assert_eq!(Object::decode(&d.encode()), Ok(d));
                    }
                }
                let encoded = o.context().encode();
                let mut body = encoded[1..encoded.len() - CRC_LEN].to_vec();
                let i = at.index(body.len());
                body[i] = byte;
                if let Ok(c) = Context::decode(&frame(CONTEXT_FORMAT, &body)) {
                    prop_assert_eq!(Context::decode(&c.encode()), Ok(c));
                }
            }
        }

        #[test]
        fn altered_values_fail_their_checksum(
            h in any_history(),
            at in any::<Index>(),
            delta in 1u8..=255,
        ) {
            for o in &h.replicas {
                let Some(k) = o.siblings().iter().position(|s| !s.content.bytes().is_empty()) else {
                    continue;
                };
                let mut bad = o.clone();
                let dot = bad.siblings[k].dot.clone();
                if let Content::Value(v) = &mut bad.siblings[k].content {
                    let i = at.index(v.len());
                    v[i] = v[i].wrapping_add(delta);
                }
                prop_assert!(!bad.siblings[k].verify());
                let err = ChecksumError { dot };
                prop_assert_eq!(bad.verify(), Err(err.clone()));
                // encode writes what it is given; decode refuses it.
                let decoded = Object::decode(&bad.encode());
                prop_assert_eq!(decoded, Err(RecordError::SiblingChecksum(err)));
            }
        }
    }

    // ---- Examples --------------------------------------------------------------------------

    #[test]
    fn concurrent_writes_through_one_coordinator_are_true_siblings() {
        let mode = ConflictMode::Siblings;
        let n1 = actor(1);
        let mut o = Object::new();
        o.update(&VersionVector::new(), &n1, value(b"a"), 1, mode);
        let ctx = o.context();
        // Two clients read the same version and write concurrently through n1.
        let x = o.update(ctx.clock(), &n1, value(b"x"), 2, mode);
        let y = o.update(ctx.clock(), &n1, value(b"y"), 3, mode);
        assert_eq!(dots(&o), [x, y]);
        assert_eq!(o.values().collect::<Vec<_>>(), [&b"x"[..], &b"y"[..]]);
        // A write that saw both resolves them.
        let z = o.update(o.context().clock(), &n1, value(b"z"), 4, mode);
        assert_eq!(dots(&o), core::slice::from_ref(&z));
        assert_eq!(z.counter, 4);
        assert_eq!(o.clock().len(), 1);
    }

    #[test]
    fn delete_leaves_a_tombstone() {
        let mode = ConflictMode::Siblings;
        let mut o = Object::new();
        assert!(o.is_empty() && !o.is_deleted());
        o.update(&VersionVector::new(), &actor(0), value(b"v"), 1, mode);
        assert!(!o.is_deleted());
        let ctx = o.context();
        o.update(ctx.clock(), &actor(0), Content::Tombstone, 2, mode);
        assert!(o.is_deleted() && !o.is_empty());
        assert_eq!(o.values().count(), 0);
        assert_eq!(o.siblings()[0].checksum, checksum(&[]));
        assert!(o.verify().is_ok());
    }

    #[test]
    fn last_writer_wins_raises_a_skewed_timestamp_above_what_it_supersedes() {
        let mode = ConflictMode::LastWriterWins;
        let mut a = Object::new();
        a.update(&VersionVector::new(), &actor(0), value(b"old"), 100, mode);
        let mut b = a.clone();
        // n1's clock is far behind, but its client saw "old": its write must still win.
        let ctx = a.context();
        b.update(ctx.clock(), &actor(1), value(b"new"), 5, mode);
        assert_eq!(b.siblings()[0].timestamp, 101);
        a.merge(&b, mode);
        assert_eq!(a.values().collect::<Vec<_>>(), [&b"new"[..]]);
        // Without a context, a write with an earlier time simply loses.
        let lost = a.update(&VersionVector::new(), &actor(2), value(b"late"), 50, mode);
        assert!(a.clock().covers(&lost));
        assert_eq!(a.values().collect::<Vec<_>>(), [&b"new"[..]]);
    }

    #[test]
    fn differing_copies_of_one_dot_merge_deterministically() {
        for mode in [ConflictMode::Siblings, ConflictMode::LastWriterWins] {
            let mut a = Object::new();
            a.update(&VersionVector::new(), &actor(0), value(b"one"), 1, mode);
            let mut b = a.clone();
            b.siblings[0] = Sibling::new(b.siblings[0].dot.clone(), value(b"two"), 1);
            let mut c = a.clone();
            c.siblings[0] = Sibling::new(c.siblings[0].dot.clone(), Content::Tombstone, 1);
            let m = |x: &Object, y: &Object| {
                let mut r = x.clone();
                r.merge(y, mode);
                r
            };
            assert_eq!(m(&a, &b), m(&b, &a));
            assert_eq!(m(&a, &c), m(&c, &a));
            assert_eq!(m(&m(&a, &b), &c), m(&a, &m(&b, &c)));
            assert_eq!(m(&a, &b).siblings().len(), 1);
        }
    }

    #[test]
    fn truncating_the_coordinators_own_entry_can_reissue_a_dot() {
        // The hazard `truncate` documents, and why `truncate_keeping` exists.
        let mode = ConflictMode::Siblings;
        let mut n0 = Object::new();
        let first = n0.update(&VersionVector::new(), &actor(0), value(b"a"), 1, mode);
        let ctx = n0.context();
        n0.update(ctx.clock(), &actor(1), value(b"b"), 2, mode);
        let peer = n0.clone();

        let mut unsafe_copy = n0.clone();
        unsafe_copy.truncate(1);
        assert_eq!(unsafe_copy.clock().get(&actor(0)), 0);
        let again = unsafe_copy.update(&VersionVector::new(), &actor(0), value(b"c"), 3, mode);
        assert_eq!(again, first); // the peer already covers this dot ...
        unsafe_copy.merge(&peer, mode);
        assert!(unsafe_copy.values().all(|v| v != b"c")); // ... and the write is gone.

        let mut safe = n0.clone();
        safe.truncate_keeping(1, &actor(0));
        assert_eq!(safe.clock().len(), 2); // n0 holds no sibling but is kept; n1 has one
        let fresh = safe.update(&VersionVector::new(), &actor(0), value(b"c"), 3, mode);
        assert_eq!(fresh.counter, 2);
        safe.merge(&peer, mode);
        assert!(safe.values().any(|v| v == b"c"));
    }

    #[test]
    fn truncation_drops_oldest_unprotected_entries() {
        let mut o = Object {
            clock: vv(&[("a", 1, 50), ("b", 4, 10), ("c", 2, 30), ("d", 1, 20)]),
            siblings: Vec::new(),
        };
        let d = Dot {
            actor: ActorId::new("b"),
            counter: 4,
        };
        o.siblings.push(Sibling::new(d, value(b"v"), 10));
        o.truncate(2);
        let left: Vec<&str> = o.clock().iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(left, ["a", "b"]); // b is protected by its sibling; d then c were oldest
        o.truncate(0);
        assert_eq!(o.clock().len(), 1);
    }

    #[test]
    fn context_limits() {
        assert_eq!(Context::decode(&[]), Err(ContextError::Empty));
        assert_eq!(Context::from_base64(""), Err(ContextError::Empty));
        assert_eq!(Context::from_base64("***"), Err(ContextError::Base64));
        assert_eq!(
            Context::decode(&[CONTEXT_FORMAT, 0]),
            Err(ContextError::Malformed)
        );
        assert_eq!(
            Context::decode(&[9, 0, 0, 0, 0]),
            Err(ContextError::UnknownVersion(9))
        );
        assert_eq!(
            Context::decode(&frame(CONTEXT_FORMAT, &[0, 0, 7])),
            Err(ContextError::Malformed)
        );
        assert_eq!(
            Context::decode(&Context::empty().encode()),
            Ok(Context::empty())
        );
        assert!(Context::empty().is_empty());

        let big = vec![0u8; MAX_CONTEXT_BYTES + 1];
        assert!(matches!(
            Context::decode(&big),
            Err(ContextError::TooLarge { .. })
        ));
        let text = "A".repeat(MAX_CONTEXT_BYTES / 3 * 4 + 8);
        assert!(matches!(
            Context::from_base64(&text),
            Err(ContextError::TooLarge { .. })
        ));

        // Many short actors fit in 64 KiB but exceed the entry cap.
        let mut clock = VersionVector::new();
        for i in 0..=MAX_CONTEXT_ENTRIES {
            // Two ASCII characters per name keep each entry at 5 bytes.
            let name = String::from_utf8(vec![(i / 128) as u8, (i % 128) as u8]).unwrap();
            clock.entries.insert(
                ActorId::new(name),
                ClockEntry {
                    counter: 1,
                    timestamp: 0,
                },
            );
        }
        let ctx = Context::from_clock(clock);
        let encoded = ctx.encode();
        assert!(encoded.len() <= MAX_CONTEXT_BYTES);
        assert_eq!(
            Context::decode(&encoded),
            Err(ContextError::TooManyEntries {
                entries: MAX_CONTEXT_ENTRIES + 1,
                max: MAX_CONTEXT_ENTRIES
            })
        );
        // A length bomb: a huge declared entry count in a tiny body.
        let bomb = frame(CONTEXT_FORMAT, &[0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(Context::decode(&bomb), Err(ContextError::Malformed));
    }

    #[test]
    fn non_canonical_vectors_are_rejected() {
        // Zero counter: actor "a" (len 1), counter 0, timestamp 0.
        assert_eq!(
            Context::decode(&frame(CONTEXT_FORMAT, &[0, 1, 1, b'a', 0, 0])),
            Err(ContextError::Malformed)
        );
        // Repeated actor (each body starts with fingerprint 0: bound to no key).
        let body = [0, 2, 1, b'a', 1, 0, 1, b'a', 2, 0];
        assert_eq!(
            Context::decode(&frame(CONTEXT_FORMAT, &body)),
            Err(ContextError::Malformed)
        );
        let ok = [0, 2, 1, b'b', 1, 0, 1, b'a', 2, 0]; // unsorted but unique: accepted
        assert_eq!(
            Context::decode(&frame(CONTEXT_FORMAT, &ok)).map(|c| c.clock().get(&ActorId::new("a"))),
            Ok(2)
        );
    }

    #[test]
    fn records_breaking_invariants_are_rejected() {
        let mode = ConflictMode::Siblings;
        let mut o = Object::new();
        o.update(&VersionVector::new(), &actor(0), value(b"x"), 1, mode);
        o.update(&VersionVector::new(), &actor(1), value(b"y"), 1, mode);

        let mut unsorted = o.clone();
        unsorted.siblings.reverse();
        let mut uncovered = o.clone();
        uncovered.clock.entries.remove(&actor(1));
        let mut duplicate = o.clone();
        duplicate.siblings[1] = duplicate.siblings[0].clone();
        let mut zero = o.clone();
        zero.siblings[0].dot.counter = 0;
        for bad in [unsorted, uncovered, duplicate, zero] {
            let bytes = bad.encode();
            assert!(
                matches!(Object::decode(&bytes), Err(RecordError::Invariant(_))),
                "{bad:?}"
            );
            let serde: Result<Object, _> = postcard::from_bytes(&bytes[1..bytes.len() - CRC_LEN]);
            assert!(serde.is_err());
        }

        assert_eq!(Object::decode(&[]), Err(RecordError::Truncated));
        assert_eq!(Object::decode(&[1, 0, 0]), Err(RecordError::Truncated));
        assert_eq!(
            Object::decode(&[2, 0, 0, 0, 0, 0]),
            Err(RecordError::UnknownVersion(2))
        );
        let mut trailing = o.encode();
        trailing.truncate(trailing.len() - CRC_LEN);
        trailing.push(0);
        let trailing = frame(1, &trailing[1..]);
        assert_eq!(Object::decode(&trailing), Err(RecordError::Malformed));
        assert_eq!(
            RecordError::Checksum.to_string(),
            "record checksum mismatch"
        );
        let err = ChecksumError {
            dot: Dot {
                actor: actor(0),
                counter: 3,
            },
        };
        assert_eq!(err.to_string(), "sibling n0.1:3 failed its checksum");
    }

    #[test]
    fn large_values_round_trip() {
        let mut o = Object::new();
        let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        o.update(
            &VersionVector::new(),
            &actor(0),
            Content::Value(big.clone()),
            1,
            ConflictMode::Siblings,
        );
        let bytes = o.encode();
        assert_eq!(bytes.len(), o.encoded_len());
        assert_eq!(
            Object::decode(&bytes).unwrap().values().next(),
            Some(&big[..])
        );
    }
}

#[cfg(test)]
mod conflict_mode_names {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn conflict_modes_parse_every_accepted_name_and_display_the_short_one() {
        for (name, mode) in [
            ("siblings", ConflictMode::Siblings),
            ("lww", ConflictMode::LastWriterWins),
            ("last_writer_wins", ConflictMode::LastWriterWins),
            (" LWW ", ConflictMode::LastWriterWins),
        ] {
            assert_eq!(name.parse::<ConflictMode>(), Ok(mode), "{name}");
        }
        assert_eq!(ConflictMode::LastWriterWins.to_string(), "lww");
        assert_eq!(ConflictMode::Siblings.to_string(), "siblings");
        assert_eq!(
            "newest".parse::<ConflictMode>(),
            Err(ConflictModeError("newest".into()))
        );
    }
}
