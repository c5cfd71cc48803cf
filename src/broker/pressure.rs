//! Backpressure: a subscriber that cannot keep up slows its publishers
//! down instead of losing what was acknowledged to them.
//!
//! A QoS 1/2 message that finds a connected subscriber's queue full is
//! queued anyway (up to twice the bound, [`crate::session::Delivery::Congested`]);
//! the subscriber is congested, and the connection that published the
//! message is no longer read ([`Action::PauseReading`]) — its next
//! messages, and the acknowledgements they would get, wait in the
//! transport. Once no subscriber is congested (each is under half its
//! queue's bound, or gone), every paused connection is read again.
//! A connection that is congested itself is never paused: it must read
//! the acknowledgements that drain it.

use super::*;

impl Broker {
    /// A delivery to `subscriber` found it congested: `publisher` (if a
    /// client's message, and not the subscriber itself) stops being read.
    pub(super) fn congested(&mut self, subscriber: ConnId, publisher: Option<SessionKey>) {
        self.congested.insert(subscriber);
        let Some(conn) = publisher
            .and_then(|key| self.store.session(key))
            .and_then(StoredSession::conn)
        else {
            return;
        };
        if conn != subscriber && !self.congested.contains(&conn) && self.paused.insert(conn) {
            self.actions.push_back(Action::PauseReading(conn));
        }
    }

    /// `conn` was congested and may have caught up (it read, it left).
    pub(super) fn relieve(&mut self, now: Now, conn: ConnId) {
        let behind = self
            .store
            .conn(conn)
            .is_some_and(|c| c.session.is_congested());
        if behind {
            return;
        }
        self.congested.remove(&conn);
        if self.congested.is_empty() {
            for paused in std::mem::take(&mut self.paused) {
                if let Some(c) = self.store.conn_mut(paused) {
                    // Its keep alive counts from now: it could not be heard.
                    c.session.hold_keep_alive(now);
                    self.actions.push_back(Action::ResumeReading(paused));
                }
            }
        }
    }

    /// `conn` is gone: it neither holds others back nor waits.
    pub(super) fn forget_pressure(&mut self, now: Now, conn: ConnId) {
        self.paused.remove(&conn);
        if self.congested.contains(&conn) {
            self.relieve(now, conn);
        }
    }
}
