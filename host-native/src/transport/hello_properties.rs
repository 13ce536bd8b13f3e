use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_the_hello_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Hello::decode(&bytes);
    }

    /// Arbitrary bytes after a valid hello's magic and version reach the name, flags and
    /// nonce parsing, which random bytes alone almost never do.
    #[test]
    fn arbitrary_hello_bodies_never_panic_the_decoder(tail in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut bytes = HELLO_MAGIC.to_vec();
        bytes.push(PROTOCOL_VERSION);
        bytes.extend_from_slice(&tail);
        let _ = Hello::decode(&bytes);
    }

    #[test]
    fn hellos_round_trip(
        cluster in "[a-z0-9-]{0,40}",
        node in "[a-z0-9.-]{1,40}",
        address in "[a-z0-9.:]{0,40}",
        uses_secret in any::<bool>(),
        nonce in any::<[u8; NONCE_BYTES]>(),
    ) {
        let hello = Hello { cluster, node_id: NodeId::new(node.as_str()), address, uses_secret, nonce };
        prop_assert_eq!(Hello::decode(&hello.encode().unwrap()).unwrap(), hello);
    }
}
