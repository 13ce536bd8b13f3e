use super::*;
use crate::io::Event;
use alloc::string::ToString;

#[test]
fn bad_configurations_are_errors_not_panics() {
    let ok = SimConfig::default();
    assert_eq!(ok.validate(), Ok(()));
    let cases = [
        (
            SimConfig {
                nodes: 0,
                ..ok.clone()
            },
            "nodes must be at least 1",
        ),
        (
            SimConfig {
                nodes: 2,
                ..ok.clone()
            },
            "n = 3 is out of range 1..=2",
        ),
        (
            SimConfig {
                w: QuorumValue::Count(4),
                ..ok.clone()
            },
            "invalid quorum: w = 4",
        ),
        (
            SimConfig {
                min_delay_ms: 20,
                ..ok.clone()
            },
            "min_delay_ms = 20 is above max_delay_ms = 10",
        ),
        (
            SimConfig {
                gossip_interval_ms: 0,
                ..ok.clone()
            },
            "gossip_interval_ms = 0 is out of range 1..=",
        ),
        (
            SimConfig {
                max_clock_skew_ms: MAX_SIM_MS + 1,
                ..ok.clone()
            },
            "max_clock_skew_ms",
        ),
        (
            SimConfig {
                loss: f64::NAN,
                ..ok.clone()
            },
            "not a probability",
        ),
        (
            SimConfig {
                max_clock_entries: 0,
                ..ok.clone()
            },
            "max_clock_entries",
        ),
        (
            SimConfig {
                partitions: 3,
                ..ok.clone()
            },
            "power of two",
        ),
    ];
    for (config, expected) in cases {
        let error = Sim::try_new(config.clone()).err().unwrap_or_else(|| {
            panic!("{config:?} accepted");
        });
        assert!(error.to_string().contains(expected), "{error}");
        // Compared as text: `Loss(NaN)` is not equal to itself.
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            error.to_string()
        );
    }
    assert!(Sim::try_new(ok).is_ok());
}

#[test]
fn trace_entries_and_events_read_as_lines() {
    let entry = TraceEntry {
        at: 5,
        node: NodeId::new("n1"),
        kind: TraceKind::Event(Event::PeerDown {
            peer: NodeId::new("n2"),
        }),
    };
    assert_eq!(entry.to_string(), "n1 sees n2 down");
    assert_eq!(entry.kind.name(), "peer_down");
    let repair = Event::ReadRepair {
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        replicas: alloc::vec![NodeId::new("n2"), NodeId::new("n3")],
    };
    assert_eq!(repair.to_string(), "read repair of b/k on n2, n3");
    assert_eq!(repair.kind(), "read_repair");
    let repaired = TraceEntry {
        kind: TraceKind::Event(repair.clone()),
        ..entry.clone()
    };
    assert_eq!(repaired.to_string(), "n1: read repair of b/k on n2, n3");
    let crashed = TraceEntry {
        kind: TraceKind::Crashed,
        ..entry
    };
    assert_eq!(
        (crashed.to_string().as_str(), crashed.kind.name()),
        ("n1 crashed", "crashed")
    );
}
