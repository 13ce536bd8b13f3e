use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frames_round_trip(record in proptest::collection::vec(any::<u8>(), 0..4096), lz4 in any::<bool>()) {
        let compression = if lz4 { Compression::Lz4 } else { Compression::None };
        prop_assert_eq!(decode_frame(&encode_frame(&record, compression)).ok(), Some(record));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn arbitrary_lz4_payloads_never_panic_or_inflate_past_the_ratio(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        declared in 0u32..8192,
    ) {
        // A plausible declared size in front, so that decompression itself is reached
        // (random frames almost never get past the header).
        let mut frame = vec![FRAME_FORMAT_V1, COMPRESSION_LZ4, 0, 0, 0, 0];
        frame.extend_from_slice(&declared.to_le_bytes());
        frame.extend_from_slice(&payload);
        let _ = decode_frame(&frame);
        if let Ok(record) = decompress_lz4(&frame[FRAME_HEADER_LEN..]) {
            prop_assert_eq!(record.len(), declared as usize);
            prop_assert!(record.len() <= payload.len() * LZ4_MAX_RATIO + 16);
        }
    }

    #[test]
    fn a_damaged_frame_never_decodes_to_a_different_record(
        record in proptest::collection::vec(any::<u8>(), 1..2048),
        lz4 in any::<bool>(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let compression = if lz4 { Compression::Lz4 } else { Compression::None };
        let mut frame = encode_frame(&record, compression);
        let at = position.index(frame.len());
        frame[at] ^= flip;
        if let Ok(decoded) = decode_frame(&frame) {
            // Only a flip that leaves the record intact (in the compression byte's unused
            // bits, say) may decode, and then to the same record.
            prop_assert_eq!(decoded, record);
        }
    }
}
