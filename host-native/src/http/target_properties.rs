use http::{HeaderValue, StatusCode};
use proptest::prelude::*;
use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::version::{ActorId, ConflictMode, Content, Context, Object};

use super::{parse_kv_target, KvTarget, Problem, MAX_TIMEOUT_MS};

/// `bytes` percent-encoded the way any client might: each byte as `%XX` or `%xx`, or as
/// itself where that is unambiguous, as `escape` chooses.
fn encode(bytes: &[u8], escape: &[u8]) -> String {
    let mut out = String::new();
    for (index, &byte) in bytes.iter().enumerate() {
        let choice = escape.get(index).copied().unwrap_or(0) % 3;
        if byte.is_ascii_alphanumeric() && choice == 0 {
            out.push(char::from(byte));
        } else if choice == 1 {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn quorum() -> impl Strategy<Value = Option<QuorumValue>> {
    proptest::option::of(prop_oneof![
        Just(QuorumValue::One),
        Just(QuorumValue::Quorum),
        Just(QuorumValue::All),
        any::<u32>().prop_map(QuorumValue::Count),
    ])
}

fn options() -> impl Strategy<Value = RequestOptions> {
    (
        proptest::option::of(any::<u32>()),
        quorum(),
        quorum(),
        quorum(),
        proptest::option::of(1..=MAX_TIMEOUT_MS),
        proptest::option::of(1..=ringkv_core::bucket::MAX_TTL_MS),
    )
        .prop_map(|(n, r, w, dw, timeout_ms, ttl_ms)| RequestOptions {
            n,
            r,
            w,
            dw,
            timeout_ms,
            ttl_ms,
            condition: None,
        })
}

/// The context after writes by `writers` actors (empty for none).
fn context(writers: u8) -> Context {
    let mut object = Object::new();
    for actor in 0..writers {
        let actor = ActorId::new(format!("n{actor}"));
        let value = Content::Value(vec![actor.as_str().len() as u8]);
        object.update(
            &Default::default(),
            &actor,
            value,
            1,
            ConflictMode::Siblings,
        );
    }
    // Bound, as every context a node answers with is (the empty one needs no key).
    let context = object.context();
    if context.is_empty() {
        context
    } else {
        context.bound_to(b"b", b"k")
    }
}

fn query(options: &RequestOptions) -> Option<String> {
    let mut pairs = Vec::new();
    for (name, value) in [("r", options.r), ("w", options.w), ("dw", options.dw)] {
        if let Some(value) = value {
            pairs.push(format!("{name}={value}"));
        }
    }
    if let Some(n) = options.n {
        pairs.push(format!("n={n}"));
    }
    if let Some(timeout) = options.timeout_ms {
        pairs.push(format!("timeout_ms={timeout}"));
    }
    if let Some(ttl) = options.ttl_ms {
        pairs.push(format!(
            "ttl={}",
            ringkv_client::api::format_duration_ms(ttl)
        ));
    }
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn percent_encoded_targets_parse_back_to_the_same_bytes(
        bucket in proptest::collection::vec(any::<u8>(), 1..40),
        key in proptest::collection::vec(any::<u8>(), 1..40),
        escape in proptest::collection::vec(any::<u8>(), 40),
        options in options(),
        writers in 0u8..4,
    ) {
        let context = context(writers);
        let path = format!("/kv/{}/{}", encode(&bucket, &escape), encode(&key, &escape));
        let header = (!context.is_empty())
            .then(|| HeaderValue::from_str(&context.to_base64()).unwrap());
        let parsed = parse_kv_target(&path, query(&options).as_deref(), header.as_ref(), 40);
        prop_assert_eq!(parsed, Ok(KvTarget { bucket, key, options, context, watch: None }));
    }

    #[test]
    fn a_malformed_escape_anywhere_in_a_segment_is_refused(
        bucket in proptest::collection::vec(any::<u8>(), 1..20),
        key in proptest::collection::vec(any::<u8>(), 1..20),
        escape in proptest::collection::vec(any::<u8>(), 20),
        bad in prop_oneof![Just("%zz"), Just("%G1"), Just("%4g"), Just("%g4"), Just("%%41")],
        at in any::<proptest::sample::Index>(),
        in_key in any::<bool>(),
    ) {
        let (mut bucket, mut key) = (encode(&bucket, &escape), encode(&key, &escape));
        let segment = if in_key { &mut key } else { &mut bucket };
        // Anywhere, even inside a valid escape (which it then breaks too).
        segment.insert_str(at.index(segment.len() + 1), bad);
        let what = if in_key { "key" } else { "bucket" };
        let refusal = parse_kv_target(&format!("/kv/{bucket}/{key}"), None, None, 100).unwrap_err();
        prop_assert!(
            refusal.0.starts_with(&format!("malformed percent-encoding in {what}")),
            "{}", refusal.0
        );
    }

    #[test]
    fn garbage_targets_never_panic_and_are_refused_with_400(
        path in "(/kv/)?[^?#]{0,40}",
        query in proptest::option::of(".{0,40}"),
        header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    ) {
        let header = header.and_then(|bytes| HeaderValue::from_bytes(&bytes).ok());
        match parse_kv_target(&path, query.as_deref(), header.as_ref(), 10) {
            Err(refusal) => {
                let problem = Problem::from(refusal);
                prop_assert_eq!(problem.status, StatusCode::BAD_REQUEST);
                prop_assert!(!problem.message.is_empty());
            }
            Ok(target) => {
                prop_assert!(!target.bucket.is_empty() && !target.key.is_empty());
                prop_assert!(target.key.len() <= 10);
            }
        }
    }

    #[test]
    fn the_fuzz_check_holds_on_near_valid_targets(
        bucket in "[a-z%0-9/]{0,6}",
        key in "[a-z%0-9/]{0,6}",
        query in "[a-z_&=%0-9]{0,30}",
        header in "[A-Za-z0-9_ -]{0,12}",
    ) {
        let input = format!("/kv/{bucket}/{key}?{query}\n{header}");
        crate::fuzzing::http_request(input.as_bytes());
    }
}
