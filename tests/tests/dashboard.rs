//! The Grafana dashboard `deploy/grafana/ringkv.json` charts only what a real server exports,
//! and charts all of it.
//!
//! Every panel's PromQL is read for the metric names it selects (identifiers that are not
//! functions, keywords, label names, durations or Grafana variables), and each must be a series
//! a running node's `GET /metrics` has: `<counter>_total`, a gauge, or a histogram's
//! `_bucket`/`_sum`/`_count`, known from the `# TYPE` lines (so a family with no samples yet
//! counts). A misspelled name, a `_bucket` on a counter or a gauge queried as `_total` fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ringkv::server::{self, BucketDefaults, ServerConfig};
use ringkv_client::{Client, ClientConfig, Options};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DASHBOARD: &str = include_str!("../../deploy/grafana/ringkv.json");
const DATASOURCE: &str = "${datasource}";

/// PromQL functions and aggregations the dashboard may call.
const FUNCTIONS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "abs",
    "round",
    "label_values",
];
/// PromQL keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// PromQL keywords that stand alone.
const KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset"];

/// A metric an expression selects, and whether its selector filters on `$instance`.
#[derive(Debug, PartialEq, Eq)]
struct Selected {
    name: String,
    by_instance: bool,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

/// The index just past the `close` that matches the `open` at `start`, skipping quoted strings.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' => i = skip_string(chars, i)?,
            c if c == open => {
                depth += 1;
                i += 1;
            }
            c if c == close => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Err(format!("unbalanced {open}{close}"))
}

/// The index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("unterminated string".to_string())
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The metrics `expr` selects; an error for an unknown function or unbalanced brackets.
fn selected_metrics(expr: &str) -> Result<Vec<Selected>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '(' {
            depth += 1;
            i += 1;
        } else if c == ')' {
            depth = depth
                .checked_sub(1)
                .ok_or_else(|| "unbalanced ()".to_string())?;
            i += 1;
        } else if c == '"' || c == '\'' {
            i = skip_string(&chars, i)?;
        } else if c == '{' {
            // Label matchers of a selector whose name was not an identifier: not ours.
            i = skip_group(&chars, i, '{', '}')?;
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']')?;
        } else if c == '$' {
            // A Grafana variable: `${name}` or `$name`.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '{', '}')?;
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `1e3`).
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            let opens = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&ident.as_str()) {
                if opens {
                    i = skip_group(&chars, next, '(', ')')?;
                }
            } else if KEYWORDS.contains(&ident.as_str()) || FUNCTIONS.contains(&ident.as_str()) {
                // An aggregation may be followed by `by (...)` before its argument.
            } else if opens {
                return Err(format!("unknown function {ident}"));
            } else {
                let by_instance = if chars.get(next) == Some(&'{') {
                    let end = skip_group(&chars, next, '{', '}')?;
                    let matchers: String = chars[next..end].iter().collect();
                    i = end;
                    matchers.contains("instance=~\"$instance\"")
                } else {
                    false
                };
                found.push(Selected {
                    name: ident,
                    by_instance,
                });
            }
        } else {
            i += 1;
        }
    }
    if depth != 0 {
        return Err("unbalanced ()".to_string());
    }
    Ok(found)
}

/// Series names a `/metrics` rendering lets Prometheus query, by the family each belongs to.
fn queryable(rendered: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in rendered.lines() {
        let Some((family, kind)) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
        else {
            continue;
        };
        let series: Vec<String> = match kind {
            "counter" => vec![format!("{family}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{family}{suffix}"))
                .collect(),
            _ => vec![family.to_string()],
        };
        for name in series {
            names.insert(name, family.to_string());
        }
    }
    names
}

/// What is wrong with `dashboard` against the `rendered` metrics: empty when nothing is.
fn problems(dashboard: &str, rendered: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let dashboard: Value = match serde_json::from_str(dashboard) {
        Ok(value) => value,
        Err(error) => return vec![format!("not JSON: {error}")],
    };
    let exported = queryable(rendered);
    if exported.is_empty() {
        problems.push("the server exported no metric".to_string());
    }
    let mut charted = BTreeSet::new();

    // The variables: a Prometheus data source and the instances, offered from the server's own
    // build_info.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
    match variable("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        other => problems.push(format!("no Prometheus datasource variable: {other:?}")),
    }
    match variable("instance") {
        Some(v) if v["type"] == "query" && v["datasource"]["uid"] == DATASOURCE => {
            let query = v["definition"].as_str().unwrap_or_default();
            // `label_values(metric, label)`: the first name is the metric.
            match selected_metrics(query).map(|s| s.into_iter().next()) {
                Ok(Some(s)) if exported.contains_key(&s.name) => {}
                other => problems.push(format!("instance variable query {query}: {other:?}")),
            }
        }
        other => problems.push(format!("no instance query variable: {other:?}")),
    }
    for key in ["title", "uid", "schemaVersion"] {
        if dashboard[key].is_null() {
            problems.push(format!("no {key}"));
        }
    }

    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        problems.push("no panels".to_string());
    }
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
        match panel["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            other => problems.push(format!("{title}: id {other:?} missing or repeated")),
        }
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        if !matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24) || grid["h"].is_null() {
            problems.push(format!("{title}: gridPos {grid} outside the 24 columns"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != DATASOURCE {
            problems.push(format!("{title}: datasource is not {DATASOURCE}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no targets"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in &targets {
            if !ref_ids.insert(target["refId"].to_string()) {
                problems.push(format!("{title}: refId {} repeated", target["refId"]));
            }
            if target["datasource"]["uid"] != DATASOURCE {
                problems.push(format!(
                    "{title}: a target's datasource is not {DATASOURCE}"
                ));
            }
            let expr = target["expr"].as_str().unwrap_or_default();
            let selected = match selected_metrics(expr) {
                Ok(selected) => selected,
                Err(error) => {
                    problems.push(format!("{title}: {expr}: {error}"));
                    continue;
                }
            };
            if selected.is_empty() {
                problems.push(format!("{title}: {expr:?} selects no metric"));
            }
            for s in selected {
                match exported.get(&s.name) {
                    Some(family) => {
                        charted.insert(family.clone());
                    }
                    None => problems.push(format!(
                        "{title}: {} is not a series the server exports",
                        s.name
                    )),
                }
                if !s.by_instance {
                    problems.push(format!(
                        "{title}: {} is not filtered by instance=~\"$instance\"",
                        s.name
                    ));
                }
            }
        }
    }
    // Every family the server exports has a panel.
    let families: BTreeSet<&String> = exported.values().collect();
    for family in families {
        if !charted.contains(family) {
            problems.push(format!("{family} is exported but on no panel"));
        }
    }
    problems
}

/// The body of `GET path` on `address` (HTTP/1.1, the connection closed after).
async fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).expect("metrics are text");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_selects_an_exported_metric() {
    let dir = tempfile::tempdir().unwrap();
    let server = server::start(ServerConfig {
        node_id: Some("n1".to_string()),
        data_dir: dir.path().join("n1"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        partitions: 64,
        request_timeout_ms: 2_000,
        // One node: one replica, so the default quorums can be met.
        bucket: BucketDefaults {
            n: 1,
            ..BucketDefaults::default()
        },
        ..ServerConfig::default()
    })
    .await
    .expect("server starts");
    server::wait_until_settled(std::slice::from_ref(&server), Duration::from_secs(60))
        .await
        .expect("the node settles");
    // A write and two reads, so the request and object histograms have samples.
    let client = Client::new(ClientConfig {
        nodes: vec![format!("http://{}", server.client_address)],
        ..ClientConfig::default()
    })
    .expect("client");
    let options = Options::default();
    client
        .put(b"b", b"k", None, Bytes::from_static(b"value"), &options)
        .await
        .expect("put");
    let read = client.get(b"b", b"k", &options).await.expect("get");
    assert_eq!(read.values.len(), 1);
    client.get(b"b", b"absent", &options).await.expect("get");

    let rendered = http_get(server.client_address, "/metrics").await;
    let found = problems(DASHBOARD, &rendered);
    assert!(
        found.is_empty(),
        "dashboard problems:\n{}\n\nmetrics:\n{rendered}",
        found.join("\n")
    );
    // The read was observed: one read that found a value, with one sibling of 5 bytes.
    for (line, value) in [
        ("ringkv_read_siblings_count ", "1"),
        ("ringkv_read_siblings_sum ", "1.0"),
        ("ringkv_read_object_size_bytes_sum ", "5.0"),
        ("ringkv_build_info{", "1"),
    ] {
        let sample = rendered.lines().find(|l| l.starts_with(line));
        assert_eq!(
            sample.and_then(|l| l.rsplit(' ').next()),
            Some(value),
            "{line} in {rendered}"
        );
    }
    server.shutdown().await;
}

#[test]
fn a_misspelled_or_mistyped_metric_is_reported() {
    let rendered = ringkv::metrics::Metrics::new().render();
    assert_eq!(problems(DASHBOARD, &rendered), Vec::<String>::new());
    for (good, bad) in [
        ("ringkv_read_siblings_bucket", "ringkv_read_sibling_bucket"),
        // A gauge has no _total, a counter no _bucket.
        ("ringkv_hints_pending{", "ringkv_hints_pending_total{"),
        (
            "ringkv_tombstones_reaped_total",
            "ringkv_tombstones_reaped_bucket",
        ),
        ("histogram_quantile", "histogram_quantil"),
    ] {
        assert!(DASHBOARD.contains(good), "{good}");
        let broken = DASHBOARD.replace(good, bad);
        let found = problems(&broken, &rendered);
        assert!(
            found.iter().any(|p| p.contains(bad.trim_end_matches('{'))),
            "{bad}: {found:?}"
        );
    }
    // A panel that forgets the instance filter, or a data source other than the variable.
    let unfiltered = DASHBOARD.replacen(
        r#"ringkv_peers_down{instance=~\"$instance\"}"#,
        "ringkv_peers_down",
        1,
    );
    assert!(problems(&unfiltered, &rendered)
        .iter()
        .any(|p| p.contains("not filtered by instance")));
    let fixed_source = DASHBOARD.replacen(r#""uid": "${datasource}""#, r#""uid": "prom1""#, 2);
    assert!(!problems(&fixed_source, &rendered).is_empty());
}

#[test]
fn promql_names_are_told_from_functions_labels_and_variables() {
    let names = |expr: &str| -> Vec<String> {
        selected_metrics(expr)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (op, le) (rate(ringkv_a_bucket{instance=~"$instance",op!="x"}[$__rate_interval])))"#
        ),
        ["ringkv_a_bucket"]
    );
    assert_eq!(
        names("sum(rate(a_total[5m])) / on (instance) group_left (version) b offset 1h"),
        ["a_total", "b"]
    );
    // A label argument reads as a name: the variable check takes the first one only.
    assert_eq!(
        names(r#"label_values(ringkv_build_info, instance)"#),
        ["ringkv_build_info", "instance"]
    );
    assert!(selected_metrics("sum(rate(x[5m]").is_err());
    assert!(selected_metrics("ratee(x[5m])").is_err());
}
