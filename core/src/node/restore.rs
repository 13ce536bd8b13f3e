//! Restore: a whole object from a backup merged into the key's current replicas.
//!
//! A restore is the replication half of a put without its local update: the record already
//! holds its siblings, their dots and the causal history, so the coordinator issues no dot and
//! need not be an owner. It sends the record to the key's targets (the preference list, with
//! fallbacks and hints for unreachable owners) as a [`Message::Write`](crate::wire::Message),
//! the message replication and hinted hand-off use, and every replica merges it into what it
//! holds ([`Object::merge`](crate::version::Object::merge)): a sibling that live data has
//! superseded disappears, a concurrent one becomes a sibling, and nothing the replica holds is
//! lost. The answer comes at W acknowledgements (DW durable), like a put's.
//!
//! A restored key keeps the history it had: a put with the context of a read after the restore
//! supersedes exactly the siblings it saw, restored or not. Its dots never collide with new
//! ones: a node's actor carries its incarnation, which is at least the host's clock in
//! milliseconds, so a wiped node restarted later is a new actor.

use alloc::vec::Vec;

use super::coordinate::Request;
use super::Node;
use crate::bucket::Quorums;
use crate::coordinator::Client;
use crate::id::{Millis, NodeId};
use crate::request::Reply;
use crate::version::Object;

impl Node {
    /// Coordinates a restore of `record` (checked by [`ClientRequest::check`]) into the
    /// replicas of `bucket`/`key`.
    ///
    /// [`ClientRequest::check`]: crate::request::ClientRequest::check
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_restore(
        &mut self,
        client: Client,
        bucket: Vec<u8>,
        key: Vec<u8>,
        record: Vec<u8>,
        quorums: Quorums,
        replicas: Vec<NodeId>,
        timeout: Millis,
    ) {
        // The request's check decoded it; decoding again keeps this path safe on its own.
        let object = match Object::decode(&record) {
            Ok(object) => object,
            Err(error) => {
                self.reply(
                    client,
                    Reply::Failed {
                        reason: alloc::format!("invalid record to restore: {error}"),
                    },
                );
                return;
            }
        };
        let id = self.new_coordination_id();
        let targets = self.targets(&bucket, &key, replicas);
        let sync = quorums.dw > 0;
        let mut state = self.put_state(
            client,
            bucket.clone(),
            key.clone(),
            quorums,
            targets.clone(),
            timeout,
        );
        state.written = Some((object.context(), None));
        state.record = Some(record.clone());
        self.arm(id, Request::Put(state));
        self.replicate(id, &bucket, &key, &record, targets, sync);
    }
}
