use super::*;
use clap::Parser;
use ringkv_client::http::test_server::{answer, spawn};
use ringkv_core::bucket::QuorumValue;

#[derive(Parser)]
struct Command {
    #[command(flatten)]
    args: BenchArgs,
}

fn parse(arguments: &[&str]) -> Result<BenchArgs, clap::Error> {
    Command::try_parse_from(std::iter::once("bench").chain(arguments.iter().copied()))
        .map(|command| command.args)
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
    for bad in [
        "",
        "s",
        "0s",
        "1.5s",
        "10x",
        "-1s",
        "ms10",
        "99999999999999999999s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn sizes() {
    assert_eq!(parse_size("100"), Ok(100));
    assert_eq!(parse_size("100B"), Ok(100));
    assert_eq!(parse_size("4KiB"), Ok(4096));
    assert_eq!(parse_size("4k"), Ok(4096));
    assert_eq!(parse_size("1MiB"), Ok(1 << 20));
    assert_eq!(parse_size("2mb"), Ok(2_000_000));
    assert_eq!(parse_size("0"), Ok(0));
    for bad in [
        "",
        "KiB",
        "1.5KiB",
        "4 parsecs",
        "2GiB",
        "99999999999999999999",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn mixes() {
    assert_eq!(
        parse_mix("get=50,put=50,delete=0"),
        Ok(Mix {
            get: 50,
            put: 50,
            delete: 0
        })
    );
    assert_eq!(
        parse_mix(" PUT=1 , get=3"),
        Ok(Mix {
            get: 3,
            put: 1,
            delete: 0
        })
    );
    for bad in [
        "",
        "get=0,put=0",
        "get",
        "get=x",
        "get=-1",
        "scan=5",
        "get=1,get=2",
        "get=1;put=2",
    ] {
        assert!(parse_mix(bad).is_err(), "{bad:?}");
    }
    let mix = parse_mix("get=1,put=2,delete=1").unwrap();
    let kinds: Vec<OpKind> = (0..4).map(|roll| mix.kind_for(roll)).collect();
    assert_eq!(
        kinds,
        [OpKind::Get, OpKind::Put, OpKind::Put, OpKind::Delete]
    );
    let only_puts = parse_mix("put=7").unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    assert!((0..100).all(|_| only_puts.choose(&mut rng) == OpKind::Put));
}

#[test]
fn key_choices_stay_in_range() {
    let mut rng = StdRng::seed_from_u64(7);
    for (distribution, exponent) in [
        (KeyDistribution::Uniform, 0.99),
        (KeyDistribution::Zipfian, 0.99),
        (KeyDistribution::Zipfian, 2.5),
    ] {
        for keys in [1u64, 2, 100] {
            let chooser = KeyChooser::new(distribution, keys, exponent).unwrap();
            let mut hits = vec![0u32; keys as usize];
            for _ in 0..5_000 {
                let key = chooser.choose(&mut rng);
                assert!(key < keys, "{distribution:?} {keys}: {key}");
                hits[key as usize] += 1;
            }
            if distribution == KeyDistribution::Zipfian && keys == 100 {
                // Key 0 is the hottest by far.
                assert!(hits[0] > hits[50] * 5, "{hits:?}");
                assert_eq!(hits.iter().max(), Some(&hits[0]));
            }
        }
    }
    assert!(KeyChooser::new(KeyDistribution::Uniform, 0, 1.0).is_err());
    assert!(KeyChooser::new(KeyDistribution::Zipfian, 10, 0.0).is_err());
    assert!(KeyChooser::new(KeyDistribution::Zipfian, 10, f64::NAN).is_err());
}

#[test]
fn arguments() {
    let args = parse(&[]).unwrap();
    assert_eq!(args.concurrency, 64);
    assert_eq!(args.keys, 10_000);
    assert_eq!(args.value_size, 100);
    assert_eq!(args.mix, parse_mix("get=50,put=50").unwrap());
    assert!(args.nodes.is_empty());
    assert_eq!(args.duration, None);
    let args = parse(&[
        "--nodes",
        "http://a:1,http://b:2",
        "--duration",
        "2m",
        "--value-size",
        "4KiB",
        "--distribution",
        "zipfian",
        "--w",
        "all",
        "--seed",
        "9",
    ])
    .unwrap();
    assert_eq!(args.nodes, ["http://a:1", "http://b:2"]);
    assert_eq!(args.duration, Some(Duration::from_secs(120)));
    assert_eq!(args.value_size, 4096);
    assert_eq!(args.distribution, KeyDistribution::Zipfian);
    assert_eq!(args.request.w, Some(QuorumValue::All));
    assert!(parse(&["--duration", "1s", "--ops", "5"]).is_err());
    assert!(parse(&["--mix", "get=0"]).is_err());
    assert!(parse(&["--w", "most"]).is_err());
}

#[tokio::test]
async fn a_short_run_counts_every_operation() {
    let (url, log) = spawn(|request| match request.method.as_str() {
        "GET" if request.uri.starts_with("/kv/") => {
            answer(200, &[("x-ringkv-context", "ctx-from-read")], b"value")
        }
        "PUT" | "DELETE" => answer(204, &[("x-ringkv-context", "ctx-from-write")], b""),
        _ => answer(404, &[], b""),
    })
    .await;
    let args = parse(&[
        "--nodes",
        &url,
        "--ops",
        "300",
        "--concurrency",
        "4",
        "--keys",
        "20",
        "--mix",
        "get=40,put=40,delete=20",
        "--value-size",
        "1KiB",
        "--prefill",
        "--no-progress",
        "--seed",
        "3",
    ])
    .unwrap();
    let report = execute(&args).await.unwrap();
    assert_eq!(report.ops, 300);
    assert_eq!(report.errors.total(), 0, "{:?}", report.error_samples);
    let counted: u64 = report.per_op.values().map(|stats| stats.count).sum();
    assert_eq!(counted, 300);
    assert!(report.per_op.values().all(|stats| stats.count > 0));
    assert!(report.per_op["get"].p50_us <= report.per_op["get"].max_us);
    assert_eq!(report.prefilled, 20);
    assert_eq!(report.seed, 3);

    let log = log.lock().unwrap();
    let kv: Vec<_> = log
        .iter()
        .filter(|r| r.uri.starts_with("/kv/bench/key-"))
        .collect();
    // 300 measured operations plus a read and a write per key for the prefill, plus a read
    // before each delete that had no context from the run (a delete needs one).
    let deletes = kv
        .iter()
        .filter(|r| r.method == http::Method::DELETE)
        .count();
    assert!(
        (300 + 2 * 20..=300 + 2 * 20 + deletes).contains(&kv.len()),
        "{} requests, {deletes} deletes",
        kv.len()
    );
    let puts: Vec<_> = kv
        .iter()
        .filter(|r| r.method == http::Method::PUT)
        .collect();
    assert!(puts.iter().all(|r| r.body.len() == 1024));
    // With 20 keys and 4 workers, every measured write is preceded by a read or a write of
    // its key by the same worker, except the first touch of each key by each worker.
    let with_context = puts
        .iter()
        .filter(|r| r.headers.contains_key("x-ringkv-context"))
        .count();
    assert!(
        with_context > puts.len() / 2,
        "{with_context} of {}",
        puts.len()
    );

    let table = render_table(&report);
    assert!(table.contains("300 ops"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["per_op"]["put"]["count"], report.per_op["put"].count);
    assert_eq!(json["errors"]["unavailable"], 0);
}

#[tokio::test]
async fn failures_are_counted_by_kind() {
    let (url, _) = spawn(|request| match request.method.as_str() {
        "PUT" => answer(
            503,
            &[],
            br#"{"error":"write quorum not met","kind":"unavailable","needed":2,"answered":[]}"#,
        ),
        _ => answer(500, &[], b"boom"),
    })
    .await;
    let args = parse(&[
        "--nodes",
        &url,
        "--ops",
        "40",
        "--concurrency",
        "2",
        "--keys",
        "5",
        "--mix",
        "get=1,put=1",
        "--no-progress",
        "--no-routing",
    ])
    .unwrap();
    let report = execute(&args).await.unwrap();
    assert_eq!(report.ops, 40);
    assert_eq!(report.errors.unavailable + report.errors.other, 40);
    assert!(report.errors.unavailable > 0 && report.errors.other > 0);
    assert!(report.per_op.values().all(|stats| stats.count == 0));
    assert_eq!(report.error_samples.len(), 2);
}
