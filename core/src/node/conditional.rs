//! Conditional writes (`If-None-Match: *`, `If-Match`): where a write is coordinated, a read at R
//! checks the condition, and only then is the write coordinated. Best effort, as in Riak: two writers checking at once can both pass, and their writes become
//! siblings (nothing is lost; the next write with a read's context reconciles them).

use alloc::vec::Vec;

use super::Node;
use crate::bucket::{Quorums, WriteCondition};
use crate::coordinator::Client;
use crate::id::{CoordinationId, Millis, NodeId};
use crate::request::{ClientRequest, Reply};

/// A write waiting for the read that checks its condition.
#[derive(Debug)]
pub(super) struct ConditionalWrite {
    client: Client,
    request: ClientRequest,
    quorums: Quorums,
    replicas: Vec<NodeId>,
    deadline: Millis,
}

/// Whether a read's answer meets the condition.
fn holds(
    condition: &WriteCondition,
    values: &[Vec<u8>],
    context: &crate::version::Context,
) -> bool {
    match condition {
        WriteCondition::IfAbsent => values.is_empty(),
        WriteCondition::IfMatch(expected) => expected.clock() == context.clock(),
    }
}

impl Node {
    /// Starts the read that checks a write's condition; the write waits for it.
    pub(super) fn check_condition(
        &mut self,
        client: Client,
        request: ClientRequest,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        timeout: Millis,
    ) {
        let waiting = self.new_coordination_id();
        let (bucket, key) = request.target();
        let (bucket, key) = (bucket.to_vec(), key.to_vec());
        self.requests.conditional.insert(
            waiting,
            ConditionalWrite {
                client,
                request,
                quorums,
                replicas: replicas.clone(),
                deadline: self.now.saturating_add(timeout),
            },
        );
        self.start_get(
            Client::Condition(waiting),
            bucket,
            key,
            quorums,
            replicas,
            timeout,
        );
    }

    /// The condition's read answered: write, or answer `precondition_failed`, or pass on the
    /// read's failure (nothing was written). The write keeps its own context (see
    /// [`ClientRequest::write_context`]): a create over a deleted key keeps the tombstone as an
    /// invisible sibling, as a blind write does, rather than claim to have seen it.
    pub(super) fn on_condition_read(&mut self, waiting: CoordinationId, reply: Reply) {
        let Some(write) = self.requests.conditional.remove(&waiting) else {
            return;
        };
        let Reply::Got {
            values, context, ..
        } = reply
        else {
            self.reply(write.client, reply);
            return;
        };
        let Some(condition) = write.request.options().condition.clone() else {
            return;
        };
        if !holds(&condition, &values, &context) {
            let exists = !values.is_empty();
            self.reply(write.client, Reply::PreconditionFailed { context, exists });
            return;
        }
        // What the read left of the client's time; at least a millisecond, so a write whose
        // check passed is always tried.
        let timeout = write.deadline.saturating_sub(self.now).max(1);
        self.coordinate_write(
            write.client,
            write.request,
            write.quorums,
            write.replicas,
            timeout,
        );
    }
}
