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

/// Opaque client context: a version vector. Encoded as `[version byte 1][postcard(VersionVector)]
/// [crc32 LE]` (the crc covers the version byte and the body), and as unpadded URL-safe base64 over
/// HTTP.
///
/// A client without a context sends none; the host uses [`Context::empty`] then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context(pub(super) VersionVector);

impl Context {
    /// The context of a client that has read nothing: a write with it supersedes nothing.
    pub fn empty() -> Self {
        Context::default()
    }

    /// The version vector the context carries.
    pub fn clock(&self) -> &VersionVector {
        &self.0
    }

    /// Wraps a version vector as a context.
    pub fn from_clock(clock: VersionVector) -> Self {
        Context(clock)
    }

    /// Unwraps the version vector.
    pub fn into_clock(self) -> VersionVector {
        self.0
    }

    /// True when the context has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The binary form: `[1][postcard body][crc32 LE]`.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(CONTEXT_FORMAT, &self.0)
    }

    /// Decodes the binary form, checking size, version, crc and entry count.
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
            FrameError::Version(v) => ContextError::UnknownVersion(v),
            FrameError::Checksum => ContextError::Checksum,
        })?;
        // The size check above bounds what decoding can allocate; the entry cap bounds the work
        // every later comparison and merge with this context does.
        let clock: VersionVector = decode_body(body).ok_or(ContextError::Malformed)?;
        if clock.len() > MAX_CONTEXT_ENTRIES {
            return Err(ContextError::TooManyEntries {
                entries: clock.len(),
                max: MAX_CONTEXT_ENTRIES,
            });
        }
        Ok(Context(clock))
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
}
