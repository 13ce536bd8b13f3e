//! A write's time to live and condition, as its headers and query give them.

use super::*;
use crate::http::kv::parse_write_headers;
use ringkv_core::bucket::WriteCondition;

/// Header name and value pairs, as sent.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn parsed(
    method: Method,
    pairs: &[(&str, &str)],
    mut options: RequestOptions,
) -> Result<RequestOptions, String> {
    parse_write_headers(&method, &headers(pairs), &mut options).map_err(|e| e.0)?;
    Ok(options)
}

#[test]
fn a_ttl_and_a_condition_come_from_the_headers() {
    let context = some_context();
    let base64 = context.to_base64();
    let quoted = format!("\"{base64}\"");
    let cases: Vec<(Method, Pairs, Option<u64>, Option<WriteCondition>)> = vec![
        (
            Method::PUT,
            vec![("x-ringkv-ttl", "30m")],
            Some(1_800_000),
            None,
        ),
        (
            Method::PUT,
            vec![("X-Ringkv-TTL", " 90 ")],
            Some(90_000),
            None,
        ),
        (
            Method::PUT,
            vec![("if-none-match", "*")],
            None,
            Some(WriteCondition::IfAbsent),
        ),
        (
            Method::PUT,
            vec![("if-match", base64.as_str())],
            None,
            Some(WriteCondition::IfMatch(context.clone())),
        ),
        (
            Method::DELETE,
            vec![("if-match", quoted.as_str())],
            None,
            Some(WriteCondition::IfMatch(context.clone())),
        ),
    ];
    for (method, pairs, ttl_ms, condition) in cases {
        let options = parsed(method.clone(), &pairs, RequestOptions::default())
            .unwrap_or_else(|e| panic!("{method} {pairs:?}: {e}"));
        assert_eq!((options.ttl_ms, options.condition), (ttl_ms, condition));
    }
}

#[test]
fn nonsense_in_a_ttl_or_a_condition_is_400_and_says_why() {
    let context = some_context().to_base64();
    let cases: Vec<(Method, Pairs, &str)> = vec![
        (Method::PUT, vec![("x-ringkv-ttl", "0")], "at least 1 ms"),
        (Method::PUT, vec![("x-ringkv-ttl", "-5s")], "not a duration"),
        (
            Method::PUT,
            vec![("x-ringkv-ttl", "soon")],
            "not a duration",
        ),
        (Method::PUT, vec![("x-ringkv-ttl", "3651d")], "maximum"),
        (
            Method::PUT,
            vec![("x-ringkv-ttl", "1m"), ("x-ringkv-ttl", "2m")],
            "repeated",
        ),
        (
            Method::PUT,
            vec![("if-none-match", "*"), ("if-match", context.as_str())],
            "send one condition",
        ),
        (Method::PUT, vec![("if-none-match", "\"v1\"")], "only *"),
        (Method::PUT, vec![("if-match", "*")], "context of a read"),
        (Method::PUT, vec![("if-match", "\"\"")], "If-Match is empty"),
        (
            Method::PUT,
            vec![("if-match", "not-base64!")],
            "invalid If-Match",
        ),
        (
            Method::GET,
            vec![("if-match", context.as_str())],
            "on a read",
        ),
        (Method::HEAD, vec![("if-none-match", "*")], "on a read"),
    ];
    for (method, pairs, says) in cases {
        let error = parsed(method.clone(), &pairs, RequestOptions::default())
            .expect_err(&format!("{method} {pairs:?} accepted"));
        assert!(error.contains(says), "{method} {pairs:?}: {error}");
    }
    // The query's ttl and the header's together are ambiguous.
    let from_query = RequestOptions {
        ttl_ms: Some(1_000),
        ..Default::default()
    };
    let error = parsed(Method::PUT, &[("x-ringkv-ttl", "1s")], from_query).unwrap_err();
    assert!(error.contains("given twice"), "{error}");
}

#[tokio::test]
async fn a_failed_condition_is_412_with_the_current_context() {
    let current = some_context();
    let reply = Reply::PreconditionFailed {
        context: current.clone(),
        exists: true,
    };
    let fake = fake_node(Box::new(move |_| Ok(reply.clone())), test_status());
    let mut put = request(Method::PUT, "/kv/b/k?ttl=10m", b"v");
    put.headers_mut()
        .insert("if-none-match", HeaderValue::from_static("*"));
    let answer = call(&fake, &config(), put).await;
    assert_eq!(answer.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(answer.error().kind, "precondition_failed");
    assert_eq!(
        answer.header(api::HEADER_CONTEXT),
        Some(current.to_base64().as_str())
    );
    let seen = fake.seen.lock().unwrap().clone();
    match &seen[..] {
        [ClientRequest::Put { options, .. }] => {
            assert_eq!(options.ttl_ms, Some(600_000));
            assert_eq!(options.condition, Some(WriteCondition::IfAbsent));
        }
        other => panic!("{other:?}"),
    }
}
