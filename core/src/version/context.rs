//! The context a client reads with a value and sends back with its write: the version vector of
//! what it has seen, versioned and checksummed, and its HTTP form.

use alloc::string::String;
use alloc::vec::Vec;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::{Deserialize, Serialize};

use super::{
    decode_body, encode_frame, open_frame, Causality, FrameError, VersionVector, CONTEXT_FORMAT,
    MAX_CONTEXT_BYTES, MAX_CONTEXT_ENTRIES,
};

/// Opaque client context: a version vector, bound to the bucket and key it was read from by a
/// fingerprint. Encoded as `[version byte 2][postcard((fingerprint, VersionVector))][crc32 LE]`
/// (the crc covers the version byte and the body), and as unpadded URL-safe base64 over HTTP.
///
/// The fingerprint is what makes a context from another key a clear error rather than a silent
/// loss: a write replaces exactly the siblings its context has seen, and another key's clock can
/// cover dots of this one (the same actors count per key), so it would drop values it never
/// saw. Coordinators bind every context they answer with ([`Context::bound_to`]); the request
/// check refuses a context bound to another key ([`Context::check_key`]). A context made
/// in-process from a clock ([`Context::from_clock`]) is unbound and accepted; over the wire an
/// unbound one cannot be expressed: a decoded context is bound by its format, to the
/// fingerprint it carries, whatever that is (see [`Context::decode`]). The fingerprint is not
/// sent between nodes (peer messages carry the clock only): the node a client talks to checks
/// it, and binds what it answers.
///
/// A client without a context sends none; the host uses [`Context::empty`] then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context(
    pub(super) VersionVector,
    #[serde(skip)] pub(super) Option<u64>,
);

/// The fingerprint binding a context to `bucket`/`key`: 64 bits of MD5 over a domain tag, the
/// bucket's length, the bucket and the key, so a context of one key passes for another's by
/// chance once in 2^64. (Not the ring position: placement and this binding are different
/// things, and may change apart.)
pub fn key_fingerprint(bucket: &[u8], key: &[u8]) -> u64 {
    use md5::{Digest, Md5};
    let length = u32::try_from(bucket.len()).unwrap_or(u32::MAX);
    let mut hasher = Md5::new();
    hasher.update(b"ringkv context key\0");
    hasher.update(length.to_be_bytes());
    hasher.update(bucket);
    hasher.update(key);
    let digest = hasher.finalize();
    let mut low = [0u8; 8];
    low.copy_from_slice(&digest[..8]);
    // 0 is what an unbound context is encoded with: no key has it, so such a context, once
    // decoded, passes for no key. A key hashing to 0 gets 1 instead.
    u64::from_be_bytes(low).max(1)
}

impl Context {
    /// The context of a client that has read nothing: a write with it supersedes nothing.
    pub fn empty() -> Self {
        Context::default()
    }

    /// The version vector the context carries.
    pub fn clock(&self) -> &VersionVector {
        &self.0
    }

    /// Wraps a version vector as a context bound to no key.
    pub fn from_clock(clock: VersionVector) -> Self {
        Context(clock, None)
    }

    /// This context bound to `bucket`/`key` (see [`key_fingerprint`]).
    pub fn bound_to(mut self, bucket: &[u8], key: &[u8]) -> Self {
        self.1 = Some(key_fingerprint(bucket, key));
        self
    }

    /// The fingerprint of the key this context was read from (`None`: bound to no key).
    pub fn key_fingerprint(&self) -> Option<u64> {
        self.1
    }

    /// Whether this context may be sent with a write of `bucket`/`key`: it is empty, unbound, or
    /// bound to that key.
    pub fn check_key(&self, bucket: &[u8], key: &[u8]) -> Result<(), ContextError> {
        match self.1 {
            Some(fingerprint) if fingerprint != key_fingerprint(bucket, key) => {
                Err(ContextError::OtherKey)
            }
            _ => Ok(()),
        }
    }

    /// Unwraps the version vector.
    pub fn into_clock(self) -> VersionVector {
        self.0
    }

    /// True when the context has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The binary form: `[2][postcard((fingerprint, clock))][crc32 LE]`. An unbound context
    /// is written with fingerprint 0, which no key has: it decodes bound to no key, refused
    /// for every key (the empty context excepted, see [`Context::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(CONTEXT_FORMAT, &(self.1.unwrap_or(0), &self.0))
    }

    /// Decodes the binary form, checking size, version, crc and entry count.
    ///
    /// The result is bound to the fingerprint the context carries, whatever it is: a decoded
    /// context never skips the key check. (The crc is no seal: anyone can write a context with
    /// fingerprint 0, the encoding of an unbound one; it is bound to 0, which no key has, and
    /// [`Context::check_key`] refuses it for every key.) The one exception is the empty
    /// context with fingerprint 0, [`Context::empty`]'s encoding: it has seen nothing, so a
    /// write with it supersedes nothing, whichever key it is sent with.
    pub fn decode(bytes: &[u8]) -> Result<Context, ContextError> {
        if bytes.len() > MAX_CONTEXT_BYTES {
            return Err(ContextError::TooLarge {
                size: bytes.len(),
                max: MAX_CONTEXT_BYTES,
            });
        }
        let body = open_frame(bytes, CONTEXT_FORMAT).map_err(|e| match e {
            FrameError::Empty => ContextError::Empty,
            FrameError::Short => ContextError::Malformed,
            FrameError::Version(1) => ContextError::Unbound,
            FrameError::Version(v) => ContextError::UnknownVersion(v),
            FrameError::Checksum => ContextError::Checksum,
        })?;
        // The size check above bounds what decoding can allocate; the entry cap bounds the work
        // every later comparison and merge with this context does.
        let (fingerprint, clock): (u64, VersionVector) =
            decode_body(body).ok_or(ContextError::Malformed)?;
        if clock.len() > MAX_CONTEXT_ENTRIES {
            return Err(ContextError::TooManyEntries {
                entries: clock.len(),
                max: MAX_CONTEXT_ENTRIES,
            });
        }
        let bound = fingerprint != 0 || !clock.is_empty();
        Ok(Context(clock, bound.then_some(fingerprint)))
    }

    /// The HTTP form: unpadded URL-safe base64 of [`Context::encode`].
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.encode())
    }

    /// Decodes the HTTP form. The length is checked before decoding anything.
    pub fn from_base64(s: &str) -> Result<Context, ContextError> {
        if s.is_empty() {
            return Err(ContextError::Empty);
        }
        // Unpadded base64 carries 6 bits per character.
        let size = s.len() / 4 * 3 + (s.len() % 4) * 3 / 4;
        if size > MAX_CONTEXT_BYTES {
            return Err(ContextError::TooLarge {
                size,
                max: MAX_CONTEXT_BYTES,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| ContextError::Base64)?;
        Context::decode(&bytes)
    }

    /// How this context's history relates to `other`'s.
    pub fn compare(&self, other: &Context) -> Causality {
        self.0.compare(&other.0)
    }
}

/// Why a client context was rejected. The request carrying it must be refused; nothing has been
/// changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The context is zero bytes (or characters) long. Nothing is changed; a client without a
    /// context sends none, and the host uses [`Context::empty`].
    #[error("empty context")]
    Empty,
    /// The context starts with a format version this build does not know. Nothing is changed.
    #[error("unknown context format version {0}")]
    UnknownVersion(u8),
    /// The context's crc32 does not match: it was altered or cut. Nothing is changed.
    #[error("context checksum mismatch")]
    Checksum,
    /// The context passed its checksum but does not decode as a version vector (or is too short to
    /// hold a checksum). Nothing is changed.
    #[error("malformed context")]
    Malformed,
    /// The context is larger than [`MAX_CONTEXT_BYTES`]; it was not decoded. Nothing is changed.
    #[error("context of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the offered context in bytes (decoded size for base64).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The context has more than [`MAX_CONTEXT_ENTRIES`] clock entries. Nothing is changed.
    #[error("context with {entries} entries exceeds the limit of {max}")]
    TooManyEntries {
        /// Number of entries in the context.
        entries: usize,
        /// The limit.
        max: usize,
    },
    /// The HTTP form is not unpadded URL-safe base64. Nothing is changed.
    #[error("context is not valid base64")]
    Base64,
    /// The context was read from another bucket or key: a write with it would replace siblings
    /// it never saw. Nothing is changed.
    #[error(
        "the context was read from another key: send the context of a read of this bucket and \
         key (or none, to add a sibling)"
    )]
    OtherKey,
    /// A context of the first format, bound to no key. Nothing is changed.
    #[error("context of an older format, bound to no key: read the key again for a new one")]
    Unbound,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::ActorId;

    fn clock() -> VersionVector {
        let mut object = crate::version::Object::new();
        object.update(
            &VersionVector::new(),
            &ActorId::new("a"),
            crate::version::Content::Value(b"v".to_vec()),
            1,
            crate::version::ConflictMode::Siblings,
        );
        object.clock().clone()
    }

    #[test]
    fn a_bound_context_keeps_its_key_through_both_encodings() {
        let context = Context::from_clock(clock()).bound_to(b"b", b"k");
        for decoded in [
            Context::decode(&context.encode()).unwrap(),
            Context::from_base64(&context.to_base64()).unwrap(),
        ] {
            assert_eq!(decoded, context);
            assert!(decoded.check_key(b"b", b"k").is_ok());
            assert_eq!(decoded.check_key(b"b", b"k2"), Err(ContextError::OtherKey));
            assert_eq!(decoded.check_key(b"b2", b"k"), Err(ContextError::OtherKey));
            // The bucket's length is hashed: no shifting of bytes between bucket and key.
            assert_eq!(decoded.check_key(b"bk", b""), Err(ContextError::OtherKey));
        }
        // In-process, a context made from a clock is bound to no key and passes any key's
        // check; encoded, it is bound to the fingerprint 0 it is written with.
        let unbound = Context::from_clock(clock());
        assert!(unbound.check_key(b"any", b"key").is_ok());
        let decoded = Context::decode(&unbound.encode()).unwrap();
        assert_eq!(decoded.clock(), unbound.clock());
        assert_eq!(decoded.key_fingerprint(), Some(0));
        // The empty context has nothing to protect: it stays unbound.
        assert_eq!(
            Context::decode(&Context::empty().encode()).unwrap(),
            Context::empty()
        );
    }

    /// Before: a context with fingerprint 0 (the encoding of an unbound one, which anyone can
    /// write: the crc is no seal) decoded unbound and passed the check of every key, so a
    /// clock read from one key could be sent with a write of another.
    #[test]
    fn a_crafted_context_with_fingerprint_zero_passes_for_no_key() {
        let crafted = super::super::encode_frame(CONTEXT_FORMAT, &(0u64, clock()));
        for decoded in [
            Context::decode(&crafted).unwrap(),
            Context::from_base64(&URL_SAFE_NO_PAD.encode(&crafted)).unwrap(),
        ] {
            assert!(!decoded.is_empty());
            assert_eq!(decoded.check_key(b"b", b"k"), Err(ContextError::OtherKey));
            assert_eq!(decoded.check_key(b"", b"x"), Err(ContextError::OtherKey));
        }
    }

    #[test]
    fn a_first_format_context_is_refused_as_unbound() {
        let old = super::super::encode_frame(1, &clock());
        assert_eq!(Context::decode(&old), Err(ContextError::Unbound));
    }
}
