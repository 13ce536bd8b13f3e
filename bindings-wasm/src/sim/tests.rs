//! The binding layer on the host target: the scenarios the page shows, through the same methods
//! the JavaScript wrappers call.

use super::*;

fn sim(seed: u64) -> Sim {
    Sim::create(&SimOptions {
        seed,
        ..SimOptions::default()
    })
    .unwrap()
}

/// The first key of `cart-0`, `cart-1`, ... whose preference list includes `node`.
fn key_on(sim: &Sim, node: &str) -> String {
    let ring = Ring::wrap(sim.core().ring().clone());
    (0..)
        .map(|i| format!("cart-{i}"))
        .find(|key| {
            let doc = ring.locate("carts", key, 3).unwrap();
            doc.preference_list.iter().any(|n| n == node)
        })
        .unwrap()
}

#[test]
fn a_write_with_an_owner_down_goes_to_a_fallback_and_the_hint_is_handed_back() {
    let mut sim = sim(1);
    let key = key_on(&sim, "n2");
    let coordinator = Ring::wrap(sim.core().ring().clone())
        .locate("carts", &key, 3)
        .unwrap()
        .preference_list
        .into_iter()
        .find(|n| n != "n2")
        .unwrap();
    sim.crash("n2").unwrap();
    // Long enough for the failure detectors to mark n2 down: writes then go to a fallback.
    sim.run(5_000.0).unwrap();
    assert!(sim
        .events(0)
        .iter()
        .any(|e| e.kind == "peer_down" && e.peer.as_deref() == Some("n2")));
    let put = sim
        .put(
            &coordinator,
            "carts",
            &key,
            "milk",
            None,
            Some("all".into()),
            None,
            None,
        )
        .unwrap();
    assert!(put.ok, "{put:?}");
    // W = all: the reply waits for the fallback too, so it names it.
    assert_eq!(put.fallbacks.len(), 1, "{put:?}");
    assert!(put.replicas.contains(&put.fallbacks[0]) && !put.replicas.contains(&"n2".to_string()));
    assert!(put.context.is_some() && put.dot.is_some());
    sim.run(500.0).unwrap();
    let hints = sim.hints();
    assert!(
        hints.iter().any(|h| h.owner == "n2" && h.key == key),
        "{hints:?}"
    );
    let nodes = sim.nodes();
    let n2 = nodes.iter().find(|n| n.id == "n2").unwrap();
    assert!(!n2.up);
    assert!(nodes.iter().map(|n| n.hints).sum::<u32>() >= 1);
    sim.restart("n2").unwrap();
    sim.run(10_000.0).unwrap();
    assert!(sim.hints().is_empty(), "{:?}", sim.hints());
    let n2 = sim
        .replicas("carts", &key)
        .into_iter()
        .find(|r| r.node == "n2")
        .unwrap();
    assert_eq!(n2.siblings.len(), 1);
    assert_eq!(n2.siblings[0].value.as_deref(), Some("milk"));
}

#[test]
fn writes_on_both_sides_of_a_partition_become_siblings_repaired_by_anti_entropy() {
    let mut sim = sim(2);
    let (a, b) = (
        vec!["n1".to_string(), "n2".to_string()],
        vec!["n3".to_string(), "n4".to_string(), "n5".to_string()],
    );
    let first = sim
        .put("n1", "carts", "alice", "milk", None, None, None, None)
        .unwrap();
    assert!(first.ok);
    sim.partition(vec![a, b]).unwrap();
    sim.run(5_000.0).unwrap();
    let left = sim
        .put(
            "n1",
            "carts",
            "alice",
            "milk,eggs",
            first.context.clone(),
            None,
            None,
            None,
        )
        .unwrap();
    let right = sim
        .put(
            "n4",
            "carts",
            "alice",
            "bread",
            first.context.clone(),
            None,
            None,
            None,
        )
        .unwrap();
    assert!(left.ok && right.ok, "{left:?} {right:?}");
    let before = sim.events(0).len();
    sim.js_heal();
    sim.run(10_000.0).unwrap();
    let repaired: Vec<TraceDoc> = sim
        .events(before)
        .into_iter()
        .filter(|e| e.kind == "anti_entropy" && e.repaired.unwrap_or(0) > 0)
        .collect();
    assert!(
        !repaired.is_empty(),
        "no anti-entropy repair after the heal"
    );
    for replica in sim.replicas("carts", "alice") {
        let mut values: Vec<_> = replica
            .siblings
            .iter()
            .filter_map(|s| s.value.clone())
            .collect();
        values.sort();
        assert_eq!(values, ["bread", "milk,eggs"], "{replica:?}");
    }
    let got = sim.get("n5", "carts", "alice", None).unwrap();
    assert_eq!(got.values.len(), 2);
    let merged = sim
        .put(
            "n5",
            "carts",
            "alice",
            "bread,eggs,milk",
            got.context,
            None,
            None,
            None,
        )
        .unwrap();
    assert!(merged.ok);
    let got = sim.get("n2", "carts", "alice", Some("all".into())).unwrap();
    assert_eq!(got.values, ["bread,eggs,milk"]);
}

#[test]
fn a_join_spreads_by_gossip_and_takes_partitions() {
    let mut sim = sim(3);
    sim.join("n6", 2).unwrap();
    let knows = |sim: &Sim| {
        sim.views()
            .iter()
            .filter(|v| v.members.iter().any(|m| m.id == "n6"))
            .count()
    };
    assert!(knows(&sim) < 6);
    sim.run(30_000.0).unwrap();
    assert_eq!(knows(&sim), 6);
    let doc = sim.ring_doc();
    let n6 = doc.members.iter().find(|m| m.id == "n6").unwrap();
    assert!(n6.partitions > 0 && n6.alive, "{n6:?}");
    assert!(doc.version.is_some());
    assert!(sim.events(0).iter().any(|e| e.kind == "view_changed"));
    let digests: std::collections::BTreeSet<_> =
        sim.views().into_iter().map(|v| v.digest).collect();
    assert_eq!(digests.len(), 1, "views converged");
}

#[test]
fn history_and_operations_are_plain_documents() {
    let mut sim = sim(4);
    let put = sim
        .put("n1", "carts", "bob", "tea", None, None, None, None)
        .unwrap();
    let got = sim.get("n3", "carts", "bob", None).unwrap();
    assert_eq!(got.values, ["tea"]);
    assert_eq!(got.op, "get");
    let deleted = sim.delete("n2", "carts", "bob", got.context).unwrap();
    assert!(deleted.ok);
    let history = sim.history();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0], put);
    assert_eq!(history[0].value.as_deref(), Some("tea"));
    assert!(history.iter().all(|op| op.outcome.as_deref() == Some("ok")));
    assert!(sim.js_now() > 0.0);
}

#[test]
fn every_spelling_of_last_writer_wins_is_accepted() {
    // The drift this binding had: it refused "last_writer_wins", which Python and the server take.
    for name in ["lww", "last_writer_wins", "LWW"] {
        let sim = Sim::create(&SimOptions {
            conflict_mode: name.into(),
            ..SimOptions::default()
        })
        .unwrap();
        assert_eq!(
            sim.core().config().conflict_mode,
            ringkv_core::version::ConflictMode::LastWriterWins
        );
    }
    let err = Sim::create(&SimOptions {
        conflict_mode: "newest".into(),
        ..SimOptions::default()
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("unknown conflict mode"), "{err}");
}

#[test]
fn bad_arguments_are_errors_with_messages() {
    let bad = |options: SimOptions| Sim::create(&options).err().unwrap().to_string();
    assert!(bad(SimOptions {
        nodes: 0,
        ..SimOptions::default()
    })
    .contains("nodes"));
    assert!(bad(SimOptions {
        n: 9,
        ..SimOptions::default()
    })
    .contains("n = 9"));
    assert!(bad(SimOptions {
        r: "most".into(),
        ..SimOptions::default()
    })
    .contains("not a quorum"));
    assert!(bad(SimOptions {
        partitions: 48,
        ..SimOptions::default()
    })
    .contains("power of two"));
    let mut sim = sim(5);
    let err = sim.crash("n9").unwrap_err().to_string();
    assert!(
        err.contains("unknown node \"n9\"") && err.contains("n1, n2"),
        "{err}"
    );
    let err = sim
        .put("n1", "b", "k", "v", Some("!!".into()), None, None, None)
        .unwrap_err();
    assert!(matches!(err, Error::Context(_)), "{err}");
    assert!(sim.put("n1", "", "k", "v", None, None, None, None).is_err());
    assert!(sim
        .join("n1", 1)
        .unwrap_err()
        .to_string()
        .contains("already"));
    assert!(sim.join("n7", 0).is_err());
    assert!(sim.run(-1.0).is_err());
    assert!(sim.run(f64::NAN).is_err());
    let err = sim
        .partition(vec![vec!["n1".into()], vec!["n1".into()]])
        .unwrap_err();
    assert!(err.to_string().contains("more than one group"), "{err}");
    assert!(sim.get("n1", "b", "k", Some("7".into())).is_err());
}

#[test]
fn sessions_expire_and_conditions_hold_in_the_page_simulator() {
    let mut sim = Sim::create(&SimOptions::default()).unwrap();
    let session = sim
        .put(
            "n1",
            "s",
            "alice",
            "cart",
            None,
            None,
            Some("2s".into()),
            None,
        )
        .unwrap();
    assert!(session.ok, "{session:?}");
    let read = sim.get("n2", "s", "alice", None).unwrap();
    assert_eq!(read.values, vec!["cart".to_string()]);
    assert!(read.expires_at.is_some());
    sim.run(3_000.0).unwrap();
    let expired = sim.get("n2", "s", "alice", None).unwrap();
    assert!(expired.ok && expired.values.is_empty(), "{expired:?}");
    // Create only: the first passes, the second finds a value and names the current context.
    let created = sim
        .put("n1", "s", "bob", "1", None, None, None, Some("*".into()))
        .unwrap();
    assert!(created.ok, "{created:?}");
    let again = sim
        .put("n3", "s", "bob", "2", None, None, None, Some("*".into()))
        .unwrap();
    assert_eq!(again.outcome.as_deref(), Some("precondition_failed"));
    assert_eq!(again.context, created.context);
    assert!(sim
        .put("n1", "s", "bob", "3", None, None, Some("0s".into()), None)
        .is_err());
}

#[test]
fn zones_reach_the_node_list_and_the_ring_and_a_lost_zone_comes_back() {
    let mut sim = Sim::create(&SimOptions {
        nodes: 6,
        seed: 3,
        zones: vec!["a".into(), "b".into(), "c".into()],
        wan_min_delay_ms: 20,
        wan_max_delay_ms: 60,
        ..SimOptions::default()
    })
    .unwrap();
    let zones: Vec<_> = sim
        .nodes()
        .into_iter()
        .map(|n| (n.id, n.zone.unwrap()))
        .collect();
    let expected = [
        ("n1", "a"),
        ("n2", "b"),
        ("n3", "c"),
        ("n4", "a"),
        ("n5", "b"),
        ("n6", "c"),
    ];
    assert_eq!(
        zones,
        expected
            .map(|(n, z)| (n.to_string(), z.to_string()))
            .to_vec()
    );
    for member in sim.ring_doc().members {
        let zone = sim.core().zone_of(&member.id).map(String::from);
        assert!(zone.is_some() && member.zone == zone, "{member:?}");
    }
    assert_eq!(sim.isolate_zone("c").unwrap(), ["n3", "n6"]);
    sim.run(5_000.0).unwrap();
    assert!(
        sim.put("n1", "carts", "alice", "milk", None, None, None, None)
            .unwrap()
            .ok
    );
    sim.crash_zone("c", true).unwrap();
    assert!(sim
        .nodes()
        .iter()
        .filter(|n| n.zone.as_deref() == Some("c"))
        .all(|n| !n.up));
    assert!(sim.events(0).iter().any(|e| e.kind == "disk_lost"));
    sim.reconnect_zone("c").unwrap();
    sim.restart_zone("c").unwrap();
    sim.run(30_000.0).unwrap();
    assert!(sim.core().converged());
    let error = sim.isolate_zone("d").unwrap_err().to_string();
    assert!(error.contains("the zones are a, b, c"), "{error}");
    let error = Sim::create(&SimOptions {
        zones: vec!["a".into(), "a".into()],
        ..SimOptions::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("given twice"), "{error}");
}
