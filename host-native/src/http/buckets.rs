//! `/buckets/{bucket}/props`: reading and setting bucket properties.

use std::error::Error as StdError;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Body;
use ringkv_client::api;
use ringkv_core::bucket::{
    BucketProps, ObjectLimits, QuorumValue, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_MAX_SIBLINGS,
    DEFAULT_SIBLINGS_WARN,
};
use ringkv_core::io::Command;
use ringkv_core::version::ConflictMode;

use super::cluster::props_doc;
use super::*;
use crate::node_loop::NodeHandle;

pub(super) async fn bucket_props<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    bucket: Vec<u8>,
) -> Result<Response<ResponseBody>, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    if bucket.is_empty() {
        return Err(Problem::bad_request("the bucket name is empty"));
    }
    match *request.method() {
        Method::GET => {
            let status = node.status().await?;
            let props = status
                .view
                .bucket(&bucket)
                .unwrap_or(&status.default_bucket);
            Ok(json_response(StatusCode::OK, &props_doc(&bucket, props)))
        }
        Method::PUT => {
            let doc = read_props_doc(request, config).await?;
            let props = parse_props(&doc)?;
            node.command(Command::SetBucket { bucket, props }).await?;
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        ref other => Err(Problem::method_not_allowed(other, "GET, PUT")),
    }
}

/// A PUT's properties: a field the document does not have is refused, naming it (a misspelt
/// one was ignored, and the property it meant left unset). Checked here rather than with
/// `deny_unknown_fields` on [`api::BucketPropsDoc`], which clients also read from newer
/// servers that may add fields.
async fn read_props_doc<B>(
    request: Request<B>,
    config: &HttpConfig,
) -> Result<api::BucketPropsDoc, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let fields: serde_json::Map<String, serde_json::Value> = read_json(request, config).await?;
    // The document's own field names, every optional one filled in so that none is left out.
    let every_field = api::BucketPropsDoc {
        bucket: String::new(),
        n: 0,
        r: String::new(),
        w: String::new(),
        dw: String::new(),
        conflict_mode: String::new(),
        siblings_warn: Some(0),
        max_siblings: Some(0),
        max_object_bytes: Some(0),
        default_ttl: Some(String::new()),
        n_per_zone: Some(Default::default()),
    };
    let known = match serde_json::to_value(every_field) {
        Ok(serde_json::Value::Object(known)) => known,
        _ => serde_json::Map::new(),
    };
    let unknown: Vec<&String> = fields.keys().filter(|k| !known.contains_key(*k)).collect();
    if !unknown.is_empty() {
        let known: Vec<&String> = known.keys().collect();
        return Err(Problem::bad_request(format!(
            "unknown bucket properties {unknown:?} (known: {known:?})"
        )));
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|error| Problem::bad_request(format!("invalid JSON body: {error}")))
}

fn parse_props(doc: &api::BucketPropsDoc) -> Result<BucketProps, Problem> {
    let quorum = |name: &str, value: &str| {
        value
            .parse::<QuorumValue>()
            .map_err(|error| Problem::bad_request(format!("{name}: {error}")))
    };
    let conflict_mode = doc
        .conflict_mode
        .parse::<ConflictMode>()
        .map_err(|e| Problem::bad_request(format!("conflict_mode: {e}")))?;
    let default_ttl_ms = match &doc.default_ttl {
        None => None,
        Some(text) => {
            let ms = api::parse_duration_ms(text)
                .map_err(|error| Problem::bad_request(format!("default_ttl: {error}")))?;
            Some(
                ringkv_core::bucket::check_ttl(ms)
                    .map_err(|error| Problem::bad_request(format!("default_ttl: {error}")))?,
            )
        }
    };
    let n_per_zone = doc.n_per_zone.clone().unwrap_or_default();
    let n = match doc.n {
        0 if !n_per_zone.is_empty() => n_per_zone.values().fold(0u32, |n, c| n.saturating_add(*c)),
        n => n,
    };
    Ok(BucketProps {
        n_per_zone,
        default_ttl_ms,
        n,
        r: quorum("r", &doc.r)?,
        w: quorum("w", &doc.w)?,
        dw: quorum("dw", &doc.dw)?,
        conflict_mode,
        limits: ObjectLimits {
            siblings_warn: doc.siblings_warn.unwrap_or(DEFAULT_SIBLINGS_WARN),
            max_siblings: doc.max_siblings.unwrap_or(DEFAULT_MAX_SIBLINGS),
            max_object_bytes: doc.max_object_bytes.unwrap_or(DEFAULT_MAX_OBJECT_BYTES),
        },
    })
}
