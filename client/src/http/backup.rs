//! Backup and restore: `GET /admin/backup` streamed from one node, and `PUT
//! /admin/restore/{bucket}/{key}` (a record merged into the key's replicas).

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::error::{error_chain, error_from_status};
use super::request::query_string;
use super::response::header_list;
use super::routing::normalize_node_url;
use super::{Client, ClientError, Idempotence, Options};

/// A node backup being downloaded: its body, chunk by chunk as the node reads its store.
pub struct BackupDownload {
    body: hyper::body::Incoming,
}

impl BackupDownload {
    /// The next chunk of the backup file; `None` at the end of the body (whether the backup
    /// is whole is for its reader to check: a node that failed midway ends it early).
    pub async fn chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(error) => {
                    return Some(Err(ClientError::Transport(format!(
                        "reading the backup: {}",
                        error_chain(&error)
                    ))))
                }
            }
        }
    }
}

impl Client {
    /// Starts downloading `node`'s backup (`GET /admin/backup`): every record it stores, from
    /// one read transaction. Only connecting and the answer's head are bounded by the request
    /// timeout; the body takes as long as the store takes to read.
    pub async fn backup_node(&self, node: &str) -> Result<BackupDownload, ClientError> {
        let endpoint = normalize_node_url(node)?;
        let uri = format!("{endpoint}/admin/backup")
            .parse::<http::Uri>()
            .map_err(|error| ClientError::BadRequest(format!("bad node URL: {error}")))?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|error| ClientError::BadRequest(error.to_string()))?;
        let response =
            tokio::time::timeout(self.inner.request_timeout, self.inner.http.request(request))
                .await
                .map_err(|_| ClientError::Timeout(format!("{endpoint}: no answer to the backup")))?
                .map_err(|error| {
                    ClientError::Connect(format!("{endpoint}: {}", error_chain(&error)))
                })?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(error_from_status(parts.status, &body));
        }
        Ok(BackupDownload { body })
    }

    /// Merges `record` (a stored object from a backup, all its siblings and history) into
    /// `bucket`/`key`'s replicas (`PUT /admin/restore/{bucket}/{key}`), answered once W of
    /// them have it: a restore never overwrites a newer write. Merging twice changes nothing,
    /// so a restore is retried on another node like a read. Returns the replicas that merged it.
    pub async fn restore(
        &self,
        bucket: &[u8],
        key: &[u8],
        record: Bytes,
        options: &Options,
    ) -> Result<Vec<String>, ClientError> {
        let path = format!(
            "/admin/restore/{}/{}{}",
            super::encode_segment(bucket),
            super::encode_segment(key),
            query_string(options)
        );
        if path.len() > super::MAX_PATH_BYTES {
            return Err(ClientError::TooLarge(format!(
                "bucket and key take {} bytes percent-encoded",
                path.len()
            )));
        }
        let request = self.prepare(
            Method::PUT,
            path,
            vec![(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            record,
            options.timeout_ms,
        );
        let answer = self
            .execute(
                Idempotence::Idempotent,
                self.key_targets(bucket, key).await,
                &request,
            )
            .await?;
        if answer.status != StatusCode::NO_CONTENT {
            return Err(error_from_status(answer.status, &answer.body));
        }
        Ok(header_list(&answer.headers, crate::api::HEADER_REPLICAS))
    }
}
