//! The cut: every node's send end, learned from the states, and the earliest of them — the
//! end of the result. Moving our own send end when an earlier one is heard, and the warning
//! that says why a result is small when nodes started far apart.

use super::*;

impl Gossip {
    /// Every node's send end is known, so the cut can move no more.
    pub(super) fn cut_final(&self) -> bool {
        self.cut_final_at_us.is_some()
    }

    /// Learns `node`'s send end; the cut may move earlier. Returns whether it did.
    pub(super) fn learn_send_end(
        &mut self,
        node: NodeId,
        send_end_us: u64,
        now_us: Micros,
    ) -> bool {
        if send_end_us == SEND_END_UNKNOWN || self.send_end_us[node] != SEND_END_UNKNOWN {
            return false;
        }
        self.send_end_us[node] = send_end_us;
        self.heard_at_us[node] = now_us;
        if self.send_end_us.iter().all(|&end| end != SEND_END_UNKNOWN) {
            self.cut_final_at_us = Some(now_us);
        }
        let earlier = send_end_us < self.cut_us;
        self.cut_us = self.cut_us.min(send_end_us);
        earlier
    }

    /// The cut moved earlier: our send phase ends there (at once if it has passed).
    pub(super) fn move_send_end(&mut self, io: &mut impl Io) {
        if self.phase != Phase::Send {
            return;
        }
        if let Some(key) = self.send_end_timer.take() {
            io.cancel_timer(key);
        }
        let now_us = io.now();
        if self.cut_us <= now_us {
            self.end_sending(io);
        } else {
            self.send_end_timer = Some(io.set_timer(self.cut_us - now_us, TIMER_SEND_END));
        }
    }

    pub(super) fn end_sending(&mut self, io: &mut impl Io) {
        self.phase = Phase::Settle;
        self.send_end_timer = None;
        let own = &mut self.streams[self.node];
        own.fin = Some(own.have);
        self.broadcast_state(io);
        self.try_finish(io);
    }
}
