//! The trace (`pollen sim ... --trace`): one line per thing that happened, in the order it
//! happened — virtual time, the node (or `--` for the simulator itself), what. Lines are
//! formatted only when a trace was asked for, so an untraced run pays for nothing but a
//! check. The trace is part of the simulator's contract: the same command prints it byte for
//! byte (a test checks this), so the text of a line changes only on purpose.

use std::fmt::Write as _;

use super::faults::Fault;
use super::world::{Observer, World};
use crate::node::{ClientId, NodeId};
use crate::wire::{self, Message};

impl<O: Observer> World<O> {
    /// One trace line: virtual time, node (or `--` for the simulator), what happened.
    pub(super) fn log(&mut self, node: NodeId, what: std::fmt::Arguments<'_>) {
        if let Some(trace) = &mut self.trace {
            if node < self.nodes.len() {
                let _ = writeln!(trace, "{:>10} n{node} {what}", self.now);
            } else {
                let _ = writeln!(trace, "{:>10} -- {what}", self.now);
            }
        }
    }

    pub(super) fn log_fault(&mut self, fault: &Fault) {
        if self.trace.is_some() {
            let line = format!("fault {fault:?}");
            self.log(self.nodes.len(), format_args!("{line}"));
        }
    }

    /// `from` is `None` for a node's message to itself.
    pub(super) fn log_delivery(&mut self, node: NodeId, from: Option<NodeId>, message: &Message) {
        if self.trace.is_none() {
            return;
        }
        let line = summary(message);
        match from {
            Some(from) => self.log(node, format_args!("deliver from {from}: {line}")),
            None => self.log(node, format_args!("deliver local: {line}")),
        }
    }

    pub(super) fn log_client(&mut self, node: NodeId, client: ClientId, args: &[Vec<u8>]) {
        if self.trace.is_none() {
            return;
        }
        let words: Vec<String> = args
            .iter()
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        self.log(node, format_args!("client {client}: {}", words.join(" ")));
    }
}

/// A compact one-line description of a message, for traces.
pub fn summary(message: &Message<'_>) -> String {
    match message {
        Message::Hello(hello) => format!("Hello node {}", hello.node),
        Message::AuthChallenge(_) => "AuthChallenge".to_string(),
        Message::AuthProof(_) => "AuthProof".to_string(),
        Message::GossipBatch(batch) => format!(
            "GossipBatch origin {} seq {}..{} ts {}",
            batch.origin,
            batch.first_seq,
            batch.first_seq + batch.values.len() as u64,
            batch.timestamp_us
        ),
        Message::GossipState(state) => {
            let mut text = String::from("GossipState");
            for entry in state.origins.iter() {
                let fin = if entry.fin == wire::FIN_UNKNOWN {
                    -1
                } else {
                    entry.fin as i64
                };
                let _ = write!(text, " {}/{fin}/{}", entry.have, entry.flags);
            }
            text
        }
        Message::RingEpoch(epoch) => format!(
            "RingEpoch {} members {:?} next {} missing {:?}",
            epoch.epoch,
            epoch.members.iter().collect::<Vec<_>>(),
            epoch.next,
            epoch.missing.iter().collect::<Vec<_>>()
        ),
        Message::RingReport(report) => format!(
            "RingReport {} frozen {} settled {} closing {} agreed {} prefix {} approved {:?}",
            report.epoch,
            report.frozen,
            report.settled,
            report.closing,
            report.agreed,
            report.prefix,
            report.approved.iter().collect::<Vec<_>>()
        ),
        Message::RingSync(sync) => format!(
            "RingSync {} prefix {} count {} entries {}",
            sync.epoch,
            sync.prefix,
            sync.count,
            sync.entries.len()
        ),
        Message::RingFreeze(freeze) => format!("{freeze:?}"),
        Message::RingValue(value) => format!("{value:?}"),
        Message::RingConfirm(confirm) => format!("{confirm:?}"),
        Message::RingApprove(approve) => format!("{approve:?}"),
        Message::RingResult(result) => format!("{result:?}"),
        Message::KvSwim(swim) => format!(
            "KvSwim {} seq {} target {} updates {:?}",
            swim.kind,
            swim.sequence,
            swim.target,
            swim.updates().collect::<Vec<_>>()
        ),
        Message::KvTree(tree) => format!(
            "KvTree session {} step {} body {} bytes",
            tree.session,
            tree.step,
            tree.body.len()
        ),
        Message::RingSyncRequest(request) => format!("{request:?}"),
        Message::KvOps(ops) => format!("KvOps to {} ({} ops)", ops.target, ops.iter().count()),
        Message::KvResults(results) => format!("KvResults ({})", results.iter().count()),
        Message::KvCredit(credit) => format!("{credit:?}"),
        Message::LamportMessage(message) => format!("LamportMessage clock {}", message.clock),
        Message::KvMembership(membership) => format!(
            "KvMembership {} {:?}",
            membership.epoch,
            membership.members.iter().collect::<Vec<_>>()
        ),
    }
}
