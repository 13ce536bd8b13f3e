//! Partition-aware routing: which nodes to try for a request, in which order.

use std::collections::HashMap;
use std::net::SocketAddr;

use http::Uri;
use ringkv_core::ring::{key_position, partition_of, MAX_PARTITIONS};

use super::ClientError;
use crate::api;

/// Normalizes a node address to `http://host:port` or `https://host:port` (no path, no trailing
/// slash; no scheme means `http://`).
pub fn normalize_node_url(node: &str) -> Result<String, ClientError> {
    let trimmed = node.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|error| ClientError::InvalidNode(format!("{node:?}: {error}")))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => {
            return Err(ClientError::InvalidNode(format!(
                "{node:?}: only http:// and https:// are supported"
            )))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| ClientError::InvalidNode(format!("{node:?}: no host")))?;
    if authority.host().is_empty() {
        return Err(ClientError::InvalidNode(format!("{node:?}: no host")));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ClientError::InvalidNode(format!(
            "{node:?}: a node address has no path"
        )));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The base URL of a member, from its `client_address`, with the scheme of `source`, the node
/// that described the member (HTTPS is a cluster-wide setting). A wildcard IP (the server
/// listens on all interfaces) is replaced by the host of `source`.
pub fn member_url(client_address: &str, source: &str) -> Option<String> {
    let client_address = client_address.trim();
    if client_address.is_empty() {
        return None;
    }
    let source: Option<Uri> = source.parse().ok();
    let scheme = match source.as_ref().and_then(Uri::scheme_str) {
        Some("https") => "https",
        _ => "http",
    };
    if let Ok(address) = client_address.parse::<SocketAddr>() {
        if address.ip().is_unspecified() {
            let host = source.as_ref()?.host()?;
            return normalize_node_url(&format!("{scheme}://{host}:{}", address.port())).ok();
        }
    }
    if client_address.contains("://") {
        return normalize_node_url(client_address).ok();
    }
    normalize_node_url(&format!("{scheme}://{client_address}")).ok()
}

/// The ring reduced to what routing needs: per partition, the base URLs of its usable replicas,
/// and each usable member's zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    partition_count: u32,
    /// Base URLs of usable members (alive, in the cluster, with an address).
    members: Vec<String>,
    /// `zones[i]`: the zone of `members[i]`, if it has one.
    zones: Vec<Option<String>>,
    /// `replicas[offsets[p]..offsets[p + 1]]`: indexes into `members` for partition `p`, in
    /// preference order.
    offsets: Vec<u32>,
    replicas: Vec<u32>,
}

impl RoutingTable {
    /// Builds the table from a ring document fetched from `source` (a base URL).
    pub fn from_doc(doc: &api::RingDoc, source: &str) -> Result<RoutingTable, ClientError> {
        let count = doc.partition_count;
        if !count.is_power_of_two() || count > MAX_PARTITIONS {
            return Err(ClientError::Decode(format!(
                "ring: partition count {count} is not a power of two up to {MAX_PARTITIONS}"
            )));
        }
        if doc.partitions.len() != count as usize {
            return Err(ClientError::Decode(format!(
                "ring: {} partitions listed, {count} declared",
                doc.partitions.len()
            )));
        }
        let mut by_id: Vec<Option<&api::PartitionDoc>> = vec![None; count as usize];
        for partition in &doc.partitions {
            let slot = by_id.get_mut(partition.id as usize).ok_or_else(|| {
                ClientError::Decode(format!("ring: partition id {} out of range", partition.id))
            })?;
            if slot.replace(partition).is_some() {
                return Err(ClientError::Decode(format!(
                    "ring: partition {} listed twice",
                    partition.id
                )));
            }
        }
        let mut members = Vec::new();
        let mut zones = Vec::new();
        let mut index_of: HashMap<&str, u32> = HashMap::new();
        for member in &doc.members {
            let usable =
                member.alive && matches!(member.status.as_str(), "up" | "joining" | "leaving");
            if !usable {
                continue;
            }
            if let Some(url) = member_url(&member.http_addr, source) {
                let index = u32::try_from(members.len())
                    .map_err(|_| ClientError::Decode(String::from("ring: too many members")))?;
                index_of.insert(member.id.as_str(), index);
                members.push(url);
                zones.push(member.zone.clone());
            }
        }
        let mut offsets = Vec::with_capacity(count as usize + 1);
        let mut replicas = Vec::new();
        offsets.push(0);
        for partition in by_id.into_iter().flatten() {
            replicas.extend(
                partition
                    .replicas
                    .iter()
                    .filter_map(|id| index_of.get(id.as_str()).copied()),
            );
            let end = u32::try_from(replicas.len())
                .map_err(|_| ClientError::Decode(String::from("ring: too many replicas")))?;
            offsets.push(end);
        }
        Ok(RoutingTable {
            partition_count: count,
            members,
            zones,
            offsets,
            replicas,
        })
    }

    /// Base URLs of the usable replicas of `bucket`/`key`, owner first.
    pub fn replicas_for<'a>(
        &'a self,
        bucket: &[u8],
        key: &[u8],
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.replica_indexes(bucket, key)
            .iter()
            .filter_map(|&index| self.members.get(index as usize).map(String::as_str))
    }

    /// Base URLs of the usable replicas of `bucket`/`key` in the order a client in `zone` tries
    /// them: first those in `zone`, then the others, each group in preference order (owner
    /// first). With no zone, the same order as [`RoutingTable::replicas_for`].
    pub fn replicas_for_zone<'a>(
        &'a self,
        bucket: &[u8],
        key: &[u8],
        zone: Option<&str>,
    ) -> Vec<&'a str> {
        let replicas = self
            .replica_indexes(bucket, key)
            .iter()
            .filter_map(|&index| {
                let url = self.members.get(index as usize)?;
                let member_zone = self.zones.get(index as usize).and_then(Option::as_deref);
                Some((url.as_str(), member_zone))
            });
        prefer_zone(replicas, zone)
    }

    /// Indexes into `members` of the usable replicas of `bucket`/`key`, in preference order.
    fn replica_indexes(&self, bucket: &[u8], key: &[u8]) -> &[u32] {
        let partition = partition_of(key_position(bucket, key), self.partition_count).0 as usize;
        let start = self.offsets.get(partition).copied().unwrap_or(0) as usize;
        let end = self.offsets.get(partition + 1).copied().unwrap_or(0) as usize;
        self.replicas.get(start..end).unwrap_or(&[])
    }

    /// Base URLs of every usable member.
    pub fn members(&self) -> &[String] {
        &self.members
    }
}

/// Reorders a key's replicas (`(url, zone)` in preference order) for a client in `zone`: the
/// replicas in that zone first, then the others, each group keeping its preference order. With
/// no zone the order is unchanged. (A replica in the client's zone answers with no cross-zone
/// hop; the coordinator it reaches still contacts every replica the quorum needs.)
pub fn prefer_zone<'a>(
    replicas: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    zone: Option<&str>,
) -> Vec<&'a str> {
    let (near, far): (Vec<_>, Vec<_>) = replicas
        .into_iter()
        .partition(|(_, member_zone)| zone.is_some() && *member_zone == zone);
    near.into_iter().chain(far).map(|(url, _)| url).collect()
}

/// The order in which to try nodes: the key's usable replicas, then the configured nodes starting
/// at `rotation`, then other usable members; no duplicates, and suspects moved to the end.
pub fn plan_targets(
    routed: &[&str],
    configured: &[String],
    rotation: usize,
    other_members: &[String],
    is_suspect: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut candidates: Vec<&str> = routed.to_vec();
    if !configured.is_empty() {
        let start = rotation % configured.len();
        candidates.extend(configured[start..].iter().map(String::as_str));
        candidates.extend(configured[..start].iter().map(String::as_str));
    }
    candidates.extend(other_members.iter().map(String::as_str));
    for candidate in candidates {
        if !order.contains(&candidate) {
            order.push(candidate);
        }
    }
    let (healthy, suspects): (Vec<&str>, Vec<&str>) =
        order.into_iter().partition(|url| !is_suspect(url));
    healthy
        .into_iter()
        .chain(suspects)
        .map(str::to_owned)
        .collect()
}
