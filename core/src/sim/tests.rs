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

fn zoned(nodes: usize, seed: u64) -> SimConfig {
    SimConfig {
        nodes,
        seed,
        zones: ["a", "b", "c"].map(String::from).to_vec(),
        wan_min_delay_ms: 20,
        wan_max_delay_ms: 80,
        ..SimConfig::default()
    }
}

#[test]
fn bad_zone_configurations_are_errors() {
    let ok = zoned(6, 1);
    assert_eq!(ok.validate(), Ok(()));
    for (zones, expected) in [
        (alloc::vec!["a", "a"], "given twice"),
        (alloc::vec!["a", ""], "needs a name"),
        (alloc::vec![" a"], "blanks"),
    ] {
        let config = SimConfig {
            zones: zones.into_iter().map(String::from).collect(),
            ..ok.clone()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    let config = SimConfig {
        wan_min_delay_ms: 90,
        ..ok
    };
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "wan_min_delay_ms = 90 is above wan_max_delay_ms = 80"
    );
}

#[test]
fn nodes_are_placed_in_zones_round_robin_and_their_members_carry_them() {
    let mut sim = Sim::new(zoned(7, 3));
    let zones: Vec<_> = sim
        .node_ids()
        .iter()
        .map(|id| (id.to_string(), sim.zone_of(id.as_str()).map(String::from)))
        .collect();
    assert_eq!(zones[0], ("n1".to_string(), Some("a".to_string())));
    assert_eq!(zones[1], ("n2".to_string(), Some("b".to_string())));
    assert_eq!(zones[3], ("n4".to_string(), Some("a".to_string())));
    assert_eq!(zones[6], ("n7".to_string(), Some("a".to_string())));
    let b: Vec<_> = sim
        .nodes_in_zone("b")
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(b, ["n2", "n5"]);
    // The ring and every node's view know each member's zone.
    for member in sim.ring().members() {
        assert_eq!(member.zone.as_deref(), sim.zone_of(member.id.as_str()));
    }
    let view = sim.view("n3").unwrap();
    assert_eq!(
        view.member(&NodeId::new("n6"))
            .and_then(|m| m.zone.as_deref()),
        Some("c")
    );
    // A joiner goes on with the round: the eighth node is in zone b.
    sim.join("j1", 1);
    assert_eq!(sim.zone_of("j1"), Some("b"));
    sim.join_in_zone("j2", 1, Some("c"));
    assert_eq!(sim.zone_of("j2"), Some("c"));
    // Three zones, N = 3: every key has a replica in each zone.
    let list = sim.ring().preference_list(key_position(b"b", b"k"), 3);
    let mut list_zones: Vec<_> = list.iter().map(|n| sim.zone_of(n.as_str())).collect();
    list_zones.sort();
    assert_eq!(list_zones, [Some("a"), Some("b"), Some("c")]);
}

#[test]
fn messages_between_zones_take_wan_delays() {
    let mut lan = Sim::new(zoned(6, 5));
    lan.config.wan_min_delay_ms = 1;
    lan.config.wan_max_delay_ms = 10;
    let mut wan = Sim::new(zoned(6, 5));
    for sim in [&mut lan, &mut wan] {
        sim.run(1_000);
    }
    let latency = |sim: &mut Sim| {
        let mut total = 0;
        for i in 0..20 {
            let key = format!("k{i}");
            let op = sim.put("n1", b"b", key.as_bytes(), b"v", None);
            assert!(op.is_ok(), "{op:?}");
            total += op.completed_at.unwrap() - op.invoked_at;
        }
        total / 20
    };
    let (fast, slow) = (latency(&mut lan), latency(&mut wan));
    // A quorum of 2 in 3 zones needs at least one WAN round trip.
    assert!(
        slow >= 2 * 20,
        "mean quorum write {slow} ms with WAN delays"
    );
    assert!(fast < 40, "mean quorum write {fast} ms with LAN delays");
    assert!(wan.check().is_ok());
}

#[test]
fn a_zone_isolated_crashed_and_lost_comes_back_and_converges() {
    let mut sim = Sim::new(zoned(6, 9));
    sim.run(1_000);
    assert!(sim.put("n1", b"b", b"k0", b"v0", None).is_ok());
    let c = sim.isolate_zone("c");
    assert_eq!(c, [NodeId::new("n3"), NodeId::new("n6")]);
    let line = sim.trace().last().unwrap().to_string();
    assert_eq!(
        line,
        "isolate zone c (n3, n6): its links to every other zone cut, both ways"
    );
    // Zones a and b still make a quorum of 2 of the 3 replicas (one per zone).
    sim.run(5_000);
    for i in 1..10 {
        let key = format!("k{i}");
        let op = sim.put("n2", b"b", key.as_bytes(), b"v", None);
        assert!(op.is_ok(), "{op:?}");
    }
    // Nothing crosses to or from zone c.
    let before = sim.store("n3").unwrap().len();
    sim.run(2_000);
    assert_eq!(sim.store("n3").unwrap().len(), before);
    sim.crash_zone("c");
    assert!(!sim.is_up("n3") && !sim.is_up("n6") && sim.is_up("n1"));
    sim.restart_zone("c");
    assert!(sim.is_up("n3") && sim.is_up("n6"));
    let lost = sim.lose_zone("c");
    assert_eq!(lost.len(), 2);
    assert!(sim.store("n3").unwrap().is_empty() && sim.store("n6").unwrap().is_empty());
    let kinds: Vec<_> = sim
        .trace()
        .iter()
        .rev()
        .take(5)
        .map(|e| e.to_string())
        .collect();
    assert!(kinds.contains(&"n6 lost its disk".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"zone c is lost, disks and all (n3, n6)".to_string()),
        "{kinds:?}"
    );
    sim.reconnect_zone("c");
    sim.restart_zone("c");
    assert!(
        sim.heal_and_converge(120_000).is_some(),
        "zone c never caught up"
    );
    assert!(!sim.store("n3").unwrap().is_empty());
    let verdict = sim.check();
    assert!(verdict.is_ok(), "{verdict:#?}");
    assert_eq!(verdict.acknowledged_writes, 10);
}

#[test]
fn replicas_per_zone_place_the_replicas_and_local_quorums_stay_in_the_zone() {
    let mut sim = Sim::new(SimConfig {
        nodes: 9,
        n: 6,
        n_per_zone: [("a", 2), ("b", 2), ("c", 2)]
            .map(|(zone, n)| (String::from(zone), n))
            .into(),
        ..zoned(9, 4)
    });
    sim.run(1_000);
    let replicas = sim.replicas_of(b"b", b"k");
    let mut zones: Vec<_> = replicas
        .iter()
        .map(|r| sim.zone_of(r.node.as_str()).unwrap().to_string())
        .collect();
    zones.sort();
    assert_eq!(zones, ["a", "a", "b", "b", "c", "c"]);
    sim.isolate_zone("c");
    sim.isolate_zone("b");
    // Zone a alone: a local quorum (both of a's replicas) needs no other zone.
    let index = sim.submit(
        "n1",
        ClientRequest::Put {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            context: Context::default(),
            value: b"v".to_vec(),
            options: RequestOptions {
                w: Some(QuorumValue::LocalQuorum),
                ..RequestOptions::default()
            },
        },
    );
    let put = sim.wait(index);
    assert!(put.is_ok(), "{put:?}");
    assert!(put.completed_at.unwrap() - put.invoked_at < 40, "{put:?}");
    assert!(sim.heal_and_converge(60_000).is_some());
    assert!(sim.check().is_ok());
}

#[test]
fn a_removed_leaver_whose_acknowledgement_is_lost_still_learns_that_it_is_drained() {
    // A leaver is Removed once its partitions moved, so no peer starts an exchange with it;
    // and once the others hold its drained entry, its digests equal theirs and get no answer.
    // Were the last message of the exchange that carried its entry lost, it would wait
    // forever for a confirmation nobody sends.
    let mut sim = Sim::new(SimConfig {
        nodes: 4,
        seed: 37,
        ..SimConfig::default()
    });
    sim.run(2_000);
    sim.leave("n4");
    let n4 = NodeId::new("n4");
    let peers = ["n1", "n2", "n3"];
    let mut steps = 0;
    // Until a peer merged n4's drained entry: its acknowledgement is in flight, or not sent yet.
    while !peers
        .iter()
        .any(|p| sim.view(p).is_some_and(|v| v.is_drained(&n4)))
    {
        assert!(sim.step(), "the simulation ran dry");
        steps += 1;
        assert!(steps < 1_000_000, "n4 never drained");
    }
    assert!(!sim.is_drained("n4"));
    let status = |sim: &Sim, at: &str| sim.view(at).and_then(|v| v.member(&n4)).map(|m| m.status);
    assert_eq!(
        status(&sim, "n4"),
        Some(crate::membership::MemberStatus::Removed)
    );
    // Everything to n4 is lost for a while; the peers spread its entry among themselves.
    for peer in peers {
        sim.cut(peer, "n4");
    }
    sim.run(3_000);
    assert!(!sim.is_drained("n4"), "n4 heard nothing, yet learned");
    for peer in peers {
        assert_eq!(
            sim.view(peer).unwrap().digest(),
            sim.view("n4").unwrap().digest()
        );
    }
    sim.heal();
    sim.run(10_000);
    assert!(
        sim.is_drained("n4"),
        "the leaver never learned that a peer holds its drained entry"
    );
}
