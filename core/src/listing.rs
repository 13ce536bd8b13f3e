//! Listing a bucket's keys: the resumable cursor a page ends with, and the bounds of a page.
//!
//! A listing walks the ring's partitions in order and, in each, the bucket's keys in storage
//! order, asking one live replica per partition (see the node's listing coordination). A cursor
//! names where the next page starts: a partition, and the last key of the bucket already
//! scanned in it. Its text form is bound to the bucket, so a cursor of one bucket is refused by
//! another's listing instead of silently skipping or repeating keys.

use alloc::string::String;
use alloc::vec::Vec;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::ring::PartitionId;
use crate::version::{decode_body, encode_frame, key_fingerprint, open_frame, FrameError};

/// Keys a page holds at most (and the default page size is [`DEFAULT_LIST_LIMIT`]).
pub const MAX_LIST_LIMIT: u32 = 1_000;
/// Keys a page holds when the request does not say.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// The version byte of a cursor's binary form.
const CURSOR_FORMAT: u8 = 1;
/// The longest cursor text accepted: a key's worth and a little more, checked before decoding.
const MAX_CURSOR_TEXT: usize = 8 * 1024;

/// Where the next page of a listing starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    /// The partition to scan next.
    pub partition: PartitionId,
    /// The last key of the bucket already scanned in that partition (`None`: from its start).
    pub after: Option<Vec<u8>>,
}

/// Why a cursor's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Not the text of a cursor (bad base64, damaged, or of an unknown version).
    #[error("the cursor is malformed (pass back the cursor of the previous page unchanged)")]
    Malformed,
    /// A cursor of another bucket's listing.
    #[error("the cursor belongs to another bucket's listing")]
    OtherBucket,
    /// A partition the ring does not have.
    #[error("the cursor names partition {partition}, but the ring has {partitions}")]
    OutOfRange {
        /// The cursor's partition.
        partition: u32,
        /// The ring's partition count.
        partitions: u32,
    },
}

/// The fingerprint binding a cursor to its bucket (a key fingerprint of the bucket with a
/// key no real key can equal: keys are never empty).
fn bucket_fingerprint(bucket: &[u8]) -> u64 {
    key_fingerprint(bucket, b"")
}

impl Default for ListCursor {
    /// The start of a listing.
    fn default() -> Self {
        ListCursor {
            partition: PartitionId(0),
            after: None,
        }
    }
}

impl ListCursor {
    /// The text form: unpadded URL-safe base64 of a checksummed frame holding the bucket's
    /// fingerprint, the partition and the last key.
    pub fn encode(&self, bucket: &[u8]) -> String {
        let body = (
            bucket_fingerprint(bucket),
            self.partition.0,
            self.after.as_deref(),
        );
        URL_SAFE_NO_PAD.encode(encode_frame(CURSOR_FORMAT, &body))
    }

    /// Reads a cursor of `bucket`'s listing back; `partitions` is the ring's partition count.
    pub fn decode(text: &str, bucket: &[u8], partitions: u32) -> Result<ListCursor, CursorError> {
        if text.len() > MAX_CURSOR_TEXT {
            return Err(CursorError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| CursorError::Malformed)?;
        let body = open_frame(&bytes, CURSOR_FORMAT).map_err(|error| match error {
            FrameError::Empty | FrameError::Short | FrameError::Version(_) => {
                CursorError::Malformed
            }
            FrameError::Checksum => CursorError::Malformed,
        })?;
        let (fingerprint, partition, after): (u64, u32, Option<Vec<u8>>) =
            decode_body(body).ok_or(CursorError::Malformed)?;
        if fingerprint != bucket_fingerprint(bucket) {
            return Err(CursorError::OtherBucket);
        }
        if partition >= partitions {
            return Err(CursorError::OutOfRange {
                partition,
                partitions,
            });
        }
        if after.as_ref().is_some_and(Vec::is_empty) {
            return Err(CursorError::Malformed);
        }
        Ok(ListCursor {
            partition: PartitionId(partition),
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_cursor_reads_back_for_its_bucket_only(
            bucket in proptest::collection::vec(any::<u8>(), 0..20),
            other in proptest::collection::vec(any::<u8>(), 0..20),
            partition in 0u32..64,
            after in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)),
        ) {
            let cursor = ListCursor { partition: PartitionId(partition), after };
            let text = cursor.encode(&bucket);
            prop_assert_eq!(ListCursor::decode(&text, &bucket, 64), Ok(cursor.clone()));
            if other != bucket {
                prop_assert_eq!(ListCursor::decode(&text, &other, 64), Err(CursorError::OtherBucket));
            }
            prop_assert_eq!(
                ListCursor::decode(&text, &bucket, partition),
                Err(CursorError::OutOfRange { partition, partitions: partition })
            );
        }

        #[test]
        fn garbage_is_refused_not_misread(text in ".{0,64}") {
            // Any text that decodes must be a cursor some bucket wrote; random text is not.
            let decoded = ListCursor::decode(&text, b"b", 64);
            prop_assert!(decoded.is_err() || text == ListCursor::default().encode(b"b"));
        }
    }

    #[test]
    fn a_damaged_cursor_is_malformed() {
        let text = ListCursor {
            partition: PartitionId(3),
            after: Some(vec![1, 2, 3]),
        }
        .encode(b"carts");
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).expect("own encoding");
        bytes[2] ^= 0x40;
        let damaged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            ListCursor::decode(&damaged, b"carts", 64),
            Err(CursorError::Malformed)
        );
        assert_eq!(
            ListCursor::decode("", b"carts", 64),
            Err(CursorError::Malformed)
        );
    }
}
