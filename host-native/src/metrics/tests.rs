use super::*;

/// `(name, type)` of every `# TYPE` line of a rendering.
fn families(rendered: &str) -> Vec<(String, String)> {
    rendered
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let (name, kind) = rest.split_once(' ')?;
            Some((name.to_string(), kind.to_string()))
        })
        .collect()
}

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(rendered: &str, prefix: &str) -> Option<f64> {
    rendered
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn resident_memory_is_rendered_in_bytes() {
    let rendered = Metrics::new().render();
    let value = sample(&rendered, "ringkv_process_resident_memory_bytes ")
        .unwrap_or_else(|| panic!("no resident memory gauge in {rendered}"));
    if cfg!(target_os = "linux") {
        // A running test process holds at least its own code and stacks.
        assert!(value >= f64::from(1 << 20), "{value}");
    }
}

#[test]
fn names_follow_prometheus_conventions() {
    let metrics = Metrics::new();
    // Samples in some labelled families, so their sample lines are checked too.
    metrics.count_quorum_failure(Op::Put, QuorumKind::Write, true);
    metrics.count_transfer("sent", 1, 10, true);
    metrics.set_reap_backlog(1, 2);
    metrics
        .request_seconds
        .get_or_create(&OpLabels { op: Op::Get })
        .observe(0.1);
    let rendered = metrics.render();
    let families = families(&rendered);
    // Every family is described, with no sample yet too.
    assert!(families.len() >= 39, "{rendered}");
    for empty in ["ringkv_storage_failures", "ringkv_peer_messages_dropped"] {
        assert!(
            families.contains(&(empty.to_string(), "counter".to_string())),
            "{empty} in {rendered}"
        );
    }
    for (name, kind) in &families {
        assert!(name.starts_with("ringkv_"), "{name}");
        assert!(
            rendered.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        // The names its samples may have: the encoder appends `_total` to a counter's.
        let series: Vec<String> = match kind.as_str() {
            "counter" => vec![format!("{name}_total")],
            "gauge" => vec![name.clone()],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            other => {
                panic!("{name} is a {other}: Prometheus' text format 0.0.4 knows no such type")
            }
        };
        assert!(!name.ends_with("_total"), "{name}: a {kind} named _total");
        for line in rendered.lines().filter(|l| !l.starts_with('#')) {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            let belongs = sample == name.as_str()
                || (sample.starts_with(name.as_str())
                    && ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| sample == format!("{name}{s}")));
            if belongs {
                assert!(series.contains(&sample.to_string()), "{line} of a {kind}");
            }
        }
        // Times are seconds and sizes bytes, never another unit.
        for wrong in ["_ms", "_millis", "_milliseconds", "_kb", "_kib", "_mb"] {
            assert!(!name.ends_with(wrong), "{name}: not a base unit");
        }
        if name.contains("duration") || name.contains("cpu") {
            assert!(name.ends_with("_seconds"), "{name}");
        }
        if name.contains("size") || name.contains("memory") {
            assert!(name.ends_with("_bytes"), "{name}");
        }
    }
    // Label values are snake_case, like the core's names.
    assert!(rendered.contains(r#"ringkv_request_duration_seconds_count{op="get"} 1"#));
}

#[test]
fn build_info_names_the_version() {
    let rendered = Metrics::new().render();
    let line = format!(
        r#"ringkv_build_info{{version="{}",commit="{GIT_COMMIT}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&rendered, &line), Some(1.0), "{rendered}");
    assert!(rendered.contains("# TYPE ringkv_build_info gauge"));
}

#[test]
fn reads_record_siblings_size_and_clock() {
    let metrics = Metrics::new();
    metrics.observe_read(&[b"abc".to_vec(), b"defgh".to_vec()], 3);
    // Deleted: a clock, no values. Absent: nothing.
    metrics.observe_read(&[], 2);
    metrics.observe_read(&[], 0);
    let rendered = metrics.render();
    assert_eq!(sample(&rendered, "ringkv_read_siblings_count "), Some(1.0));
    assert_eq!(sample(&rendered, "ringkv_read_siblings_sum "), Some(2.0));
    assert_eq!(
        sample(&rendered, "ringkv_read_object_size_bytes_sum "),
        Some(8.0)
    );
    assert_eq!(
        sample(&rendered, "ringkv_read_clock_entries_count "),
        Some(2.0)
    );
    assert_eq!(
        sample(&rendered, "ringkv_read_clock_entries_sum "),
        Some(5.0)
    );
}

#[test]
fn quorum_failures_transfers_and_reaps_are_labelled() {
    let metrics = Metrics::new();
    metrics.count_quorum_failure(Op::Get, QuorumKind::Read, false);
    metrics.count_quorum_failure(Op::Put, QuorumKind::Durable, true);
    metrics.count_transfer("received", 10, 1000, false);
    metrics.count_transfer("received", 5, 500, true);
    metrics.set_reap_backlog(3, 4);
    let rendered = metrics.render();
    for (line, value) in [
        (
            r#"ringkv_quorum_failures_total{op="get",quorum="read",outcome="unavailable"}"#,
            1.0,
        ),
        (
            r#"ringkv_quorum_failures_total{op="put",quorum="durable",outcome="outcome_unknown"}"#,
            1.0,
        ),
        (r#"ringkv_transfer_keys_total{direction="received"}"#, 15.0),
        (
            r#"ringkv_transfer_bytes_total{direction="received"}"#,
            1500.0,
        ),
        (
            r#"ringkv_transfer_partitions_total{direction="received"}"#,
            1.0,
        ),
        (r#"ringkv_reap_pending_keys{kind="tombstone"}"#, 3.0),
        (r#"ringkv_reap_pending_keys{kind="expired"}"#, 4.0),
    ] {
        assert_eq!(sample(&rendered, line), Some(value), "{line} in {rendered}");
    }
}

#[test]
fn cpu_time_only_grows_and_the_storage_file_is_measured() {
    let metrics = Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db");
    std::fs::write(&file, [0u8; 1234]).unwrap();
    metrics.set_storage_file(file);
    let first = metrics.render();
    // Burn some CPU so the second reading can only be larger or equal.
    let mut x = 0u64;
    for i in 0..2_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    assert_ne!(x, 1);
    let second = metrics.render();
    assert_eq!(
        sample(&first, "ringkv_storage_file_size_bytes "),
        Some(1234.0)
    );
    if cfg!(target_os = "linux") {
        let before = sample(&first, "ringkv_process_cpu_seconds_total ").unwrap();
        let after = sample(&second, "ringkv_process_cpu_seconds_total ").unwrap();
        assert!(after >= before, "{before} {after}");
        assert!(sample(&second, "ringkv_process_open_fds ").is_some_and(|n| n >= 3.0));
    }
}

#[test]
fn known_outcomes_start_at_zero() {
    let rendered = Metrics::new().render();
    for line in [
        r#"ringkv_requests_total{op="put",outcome="ok"}"#,
        r#"ringkv_requests_total{op="mget",outcome="rejected"}"#,
        r#"ringkv_quorum_failures_total{op="get",quorum="read",outcome="unavailable"}"#,
        r#"ringkv_quorum_failures_total{op="delete",quorum="durable",outcome="outcome_unknown"}"#,
    ] {
        assert_eq!(sample(&rendered, line), Some(0.0), "{line}");
    }
}
