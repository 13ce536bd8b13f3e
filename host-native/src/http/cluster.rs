//! `/cluster`, `/ring`, `/health` and `/readyz`: the node's status as the API's documents.

use ringkv_client::api;
use ringkv_core::bucket::BucketProps;
use ringkv_core::id::NodeId;
use ringkv_core::membership::{Handoff, MemberInfo, MemberStatus};
use ringkv_core::ring::PartitionId;

use crate::node_loop::NodeStatus;

fn member_docs(status: &NodeStatus) -> Vec<api::MemberDoc> {
    // A joining node without a ring owns nothing, whatever placeholder ring it routes by.
    let owned = if status.ring_version.is_some() {
        status.ring.partition_counts()
    } else {
        Default::default()
    };
    status
        .view
        .members()
        .map(|member: &MemberInfo| {
            let alive = status.alive.contains(&member.id);
            // "As this node sees it": a member the failure detector does not hear from is down
            // here, whatever the view says (the view's Down is only an operator's mark).
            let seen = match member.status {
                MemberStatus::Up | MemberStatus::Joining if !alive => MemberStatus::Down,
                other => other,
            };
            (member, alive, seen)
        })
        .map(|(member, alive, seen)| api::MemberDoc {
            id: member.id.as_str().to_string(),
            status: seen.as_str().to_string(),
            alive,
            zone: member.zone.clone(),
            capacity: member.capacity,
            peer_addr: member.peer_address.clone(),
            http_addr: member.client_address.clone(),
            partitions: owned.get(&member.id).copied().unwrap_or(0),
            handoff_partitions: match &member.handoff {
                Handoff::Pending(partitions) => Some(partitions.len() as u32),
                Handoff::Unknown | Handoff::Drained => None,
            },
            drained: status.view.is_drained(&member.id),
        })
        .collect()
}

pub(super) fn props_doc(bucket: &[u8], props: &BucketProps) -> api::BucketPropsDoc {
    api::BucketPropsDoc {
        bucket: String::from_utf8_lossy(bucket).into_owned(),
        n: props.n,
        r: props.r.to_string(),
        w: props.w.to_string(),
        dw: props.dw.to_string(),
        conflict_mode: props.conflict_mode.as_str().to_string(),
        siblings_warn: Some(props.limits.siblings_warn),
        max_siblings: Some(props.limits.max_siblings),
        max_object_bytes: Some(props.limits.max_object_bytes),
        default_ttl: props.default_ttl_ms.map(api::format_duration_ms),
        n_per_zone: (!props.n_per_zone.is_empty()).then(|| props.n_per_zone.clone()),
    }
}

/// The `/cluster` document for a node's status.
pub fn cluster_status(status: &NodeStatus) -> api::ClusterStatus {
    api::ClusterStatus {
        cluster: status.view.cluster().to_string(),
        node: status.node.as_str().to_string(),
        claimant: status.view.claimant().map(|id| id.as_str().to_string()),
        ring_version: status.ring_version,
        members: member_docs(status),
        hints_pending: status.hints_pending,
        transfers_pending: u32::try_from(status.partitions_moving.len()).unwrap_or(u32::MAX),
        in_flight: status.in_flight,
        buckets: status
            .view
            .buckets()
            .map(|(bucket, _, props)| props_doc(bucket, props))
            .collect(),
        merkle_roots: status
            .merkle_roots
            .iter()
            .map(|(partition, root)| (partition.0, format!("{root:016x}")))
            .collect(),
    }
}

/// The `/ring` document for a node's status (version 0 when the node has no ring; [`handle`](super::handle)
/// answers 503 then).
pub fn ring_doc(status: &NodeStatus) -> api::RingDoc {
    let ring = &status.ring;
    let target_n = ring.config().target_n;
    let moving: std::collections::HashMap<PartitionId, &Vec<NodeId>> = status
        .partitions_moving
        .iter()
        .map(|(partition, receivers)| (*partition, receivers))
        .collect();
    let to_strings =
        |ids: &[NodeId]| -> Vec<String> { ids.iter().map(|id| id.as_str().to_string()).collect() };
    let partitions = (0..ring.partition_count())
        .map(|index| {
            let partition = PartitionId(index);
            api::PartitionDoc {
                id: index,
                start: ring.partition_start(partition).to_string(),
                replicas: to_strings(&ring.partition_preference_list(partition, target_n)),
                moving_to: moving
                    .get(&partition)
                    .map(|receivers| to_strings(receivers))
                    .unwrap_or_default(),
            }
        })
        .collect();
    api::RingDoc {
        cluster: status.view.cluster().to_string(),
        node: status.node.as_str().to_string(),
        version: status.ring_version.unwrap_or(0),
        partition_count: ring.partition_count(),
        target_n: u32::try_from(target_n).unwrap_or(u32::MAX),
        strategy: ring.config().strategy.name().to_string(),
        members: member_docs(status),
        partitions,
    }
}

pub(super) fn health(status: &NodeStatus) -> api::Health {
    api::Health {
        status: if status.ring_version.is_some() {
            "ok"
        } else {
            "no_ring"
        }
        .to_string(),
        node: status.node.as_str().to_string(),
        alive_members: u32::try_from(status.alive.len()).unwrap_or(u32::MAX),
        members: u32::try_from(
            status
                .view
                .members()
                .filter(|member| member.status != MemberStatus::Removed)
                .count(),
        )
        .unwrap_or(u32::MAX),
    }
}

/// The readiness checks `status` fails (empty: ready). `stopping`: the server is shutting down.
pub(super) fn readiness_failures(status: &NodeStatus, stopping: bool) -> Vec<String> {
    let mut failed = Vec::new();
    if stopping {
        failed.push("stopping".to_string());
    }
    if status.ring_version.is_none() {
        failed.push("no_ring".to_string());
    }
    if !status.storage_open {
        failed.push("storage".to_string());
    }
    let leaving = status
        .view
        .member(&status.node)
        .is_some_and(|me| matches!(me.status, MemberStatus::Leaving | MemberStatus::Removed));
    if leaving {
        failed.push("leaving".to_string());
    }
    failed
}
