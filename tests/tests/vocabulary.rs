//! Core's vocabulary as documents: events serialize under stable snake_case names, the same as
//! `Event::kind`, so hosts and bindings can pass them through and match on the name.

use ringkv_core::id::NodeId;
use ringkv_core::io::Event;
use ringkv_core::ring::PartitionId;

#[test]
fn events_serialize_under_their_kind_names() {
    let events = [
        Event::PeerDown {
            peer: NodeId::new("n2"),
        },
        Event::ViewChanged { digest: 7 },
        Event::TombstoneReaped {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        },
        Event::AntiEntropyAbandoned {
            partition: PartitionId(3),
            peer: NodeId::new("n3"),
            reason: "timeout".into(),
        },
        Event::TransferReceived {
            partition: PartitionId(3),
            from: NodeId::new("n2"),
            keys: 10,
            bytes: 1_000,
            done: false,
        },
    ];
    let names: Vec<String> = events
        .iter()
        .map(|event| {
            let doc = serde_json::to_value(event).unwrap();
            let name = doc.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(name, event.kind(), "{doc}");
            name
        })
        .collect();
    assert_eq!(
        names,
        [
            "peer_down",
            "view_changed",
            "tombstone_reaped",
            "anti_entropy_abandoned",
            "transfer_received"
        ]
    );
}
