//! The record frame: a format byte, the compression, the length, then the (maybe LZ4) record.

use super::*;

/// Why a stored frame could not be turned back into its record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown frame format {0}")]
    UnknownFormat(u8),
    #[error("unknown compression {0}")]
    UnknownCompression(u8),
    #[error("lz4 payload does not decompress: {0}")]
    Decompress(String),
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
}

/// The frame stored for `record`. The checksum covers the uncompressed record, so it also
/// checks the decompression.
pub(crate) fn encode_frame(record: &[u8], compression: Compression) -> Vec<u8> {
    let checksum = crc32fast::hash(record);
    let compressed = match compression {
        Compression::None => None,
        Compression::Lz4 => {
            Some(lz4_flex::compress_prepend_size(record)).filter(|c| c.len() < record.len())
        }
    };
    let (tag, payload) = match &compressed {
        Some(compressed) => (COMPRESSION_LZ4, compressed.as_slice()),
        None => (COMPRESSION_NONE, record),
    };
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.push(FRAME_FORMAT_V1);
    frame.push(tag);
    frame.extend_from_slice(&checksum.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The record in `frame`, checked.
pub(crate) fn decode_frame(frame: &[u8]) -> Result<Vec<u8>, FrameError> {
    let Some((header, payload)) = frame.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(FrameError::Short(frame.len()));
    };
    let [format, compression, c0, c1, c2, c3] = *header;
    if format != FRAME_FORMAT_V1 {
        return Err(FrameError::UnknownFormat(format));
    }
    let stored = u32::from_le_bytes([c0, c1, c2, c3]);
    let record = match compression {
        COMPRESSION_NONE => payload.to_vec(),
        COMPRESSION_LZ4 => decompress_lz4(payload)?,
        other => return Err(FrameError::UnknownCompression(other)),
    };
    let computed = crc32fast::hash(&record);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(record)
}

pub(crate) fn decompress_lz4(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let (size, body) = lz4_flex::block::uncompressed_size(payload)
        .map_err(|error| FrameError::Decompress(error.to_string()))?;
    if size > body.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(16) {
        return Err(FrameError::Decompress(format!(
            "claims {size} bytes from {} compressed",
            body.len()
        )));
    }
    let record = lz4_flex::block::decompress(body, size)
        .map_err(|error| FrameError::Decompress(error.to_string()))?;
    if record.len() != size {
        return Err(FrameError::Decompress(format!(
            "{} bytes where {size} were declared",
            record.len()
        )));
    }
    Ok(record)
}
