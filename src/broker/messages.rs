//! The QoS 1/2 messages a durable hub keeps for its persistent sessions:
//! each gets a key ([`OutboundMessage::seq`]) and a record
//! ([`Persist::Message`]) when it is given to the session, its exchange is
//! kept as it moves on (sent with a packet id, released), and it goes when
//! it is done with. A session whose Session Expiry Interval is 0 ends with
//! its connection: nothing of it is kept.
//!
//! Its inbound QoS 2 packet ids waiting for PUBREL are kept too: a client
//! that resends such a PUBLISH after a restart does not get it routed
//! twice (exactly once, §4.3.3).

use std::num::NonZeroU64;
use std::sync::Arc;

use super::persist::{MessageRecord, Persist, SentState, StoredMessage};
use super::store::{Queued, SessionKey};
use super::{Broker, ConnId};
use crate::auth::DropReason;
use crate::codec::{PacketId, QoS};
use crate::session::{InflightMessage, OutboundMessage, Progress};
use crate::time::Now;

impl Broker {
    /// Whether a message of `qos` for a session with this Session Expiry
    /// Interval is kept.
    pub(super) fn keeps(&self, qos: QoS, session_expiry: u32) -> bool {
        self.config.durable && qos != QoS::AtMostOnce && session_expiry > 0
    }

    /// A new key for a kept message.
    pub(super) fn next_seq(&mut self) -> NonZeroU64 {
        self.next_seq = self.next_seq.saturating_add(1);
        NonZeroU64::new(self.next_seq).unwrap_or(NonZeroU64::MIN)
    }

    /// The record of a kept message the session just took.
    pub(super) fn keep_message(&mut self, now: Now, client_id: Arc<str>, message: OutboundMessage) {
        let Some(seq) = message.seq else {
            return;
        };
        let expires_at = message
            .properties
            .message_expiry_interval
            .map(|secs| now.wall + std::time::Duration::from_secs(u64::from(secs)));
        self.persist(Persist::Message(MessageRecord {
            client_id,
            seq,
            message,
            expires_at,
        }));
    }

    /// A kept message is done with (expired, or dropped while its session
    /// goes on).
    pub(super) fn message_done(&mut self, client_id: &Arc<str>, msg: &OutboundMessage) {
        if let Some(seq) = msg.seq
            && self.config.durable
        {
            self.persist(Persist::MessageDone {
                client_id: client_id.clone(),
                seq,
            });
        }
    }

    /// A connection's session reported that an exchange moved on.
    pub(super) fn progress(&mut self, id: ConnId, step: Progress) {
        if !self.config.durable {
            return;
        }
        let Some(client_id) = self
            .store
            .conn(id)
            .and_then(|c| c.session.client_id_shared().cloned())
        else {
            return;
        };
        let op = match step {
            Progress::Sent { seq, packet_id } => Persist::MessageSent {
                client_id,
                seq,
                state: SentState {
                    packet_id,
                    released: false,
                },
            },
            Progress::Released { seq, packet_id } => Persist::MessageSent {
                client_id,
                seq,
                state: SentState {
                    packet_id,
                    released: true,
                },
            },
            Progress::Completed { seq } => Persist::MessageDone { client_id, seq },
            Progress::AwaitingRelease(packet_id) => Persist::AwaitingRelease {
                client_id,
                packet_id,
            },
            Progress::ReleaseReceived(packet_id) => Persist::ReleaseReceived {
                client_id,
                packet_id,
            },
        };
        self.persist(op);
    }

    /// What the host's store kept of the persistent sessions' messages and
    /// inbound QoS 2 packet ids, handed back after
    /// [`Broker::restore_sessions`]. A message in flight comes back with its
    /// packet id (a resume resends it with DUP, or its PUBREL); one not
    /// sent yet waits in the offline queue, its expiry counted by the date
    /// it ends on. What belongs to no restored session is let go (its
    /// records too); a queue longer than `max_offline_messages` keeps the
    /// oldest.
    pub fn restore_messages(
        &mut self,
        now: Now,
        messages: impl IntoIterator<Item = StoredMessage>,
        awaiting_release: impl IntoIterator<Item = (Arc<str>, PacketId)>,
    ) {
        let mut orphans: Vec<Arc<str>> = Vec::new();
        let mut orphan = |hub: &mut Self, client_id: Arc<str>| {
            if !orphans.contains(&client_id) {
                orphans.push(client_id.clone());
                hub.persist(Persist::EndSession(client_id));
            }
        };
        for stored in messages {
            let record = stored.record;
            self.next_seq = self.next_seq.max(record.seq.get());
            let client_id = record.client_id.clone();
            let Some(key) = self.away_session(&client_id) else {
                orphan(self, client_id);
                continue;
            };
            let mut msg = record.message;
            msg.seq = Some(record.seq);
            if let Some(state) = stored.sent {
                let Some(s) = self.store.session_mut(key) else {
                    continue;
                };
                let outbound = &mut s.away().inflight.outbound;
                if outbound.len() < usize::from(u16::MAX) {
                    outbound.push(InflightMessage {
                        packet_id: state.packet_id,
                        message: msg,
                        released: state.released,
                    });
                    continue;
                }
                self.dropped(now, &client_id, &msg, DropReason::QueueFull);
                continue;
            }
            // The interval left, as [`super::Broker::restore`] counts it.
            if let Some(at) = record.expires_at {
                let left = at.saturating_duration_since(now.wall).as_secs();
                if left == 0 {
                    self.message_done(&client_id, &msg);
                    continue;
                }
                msg.properties.message_expiry_interval =
                    Some(u32::try_from(left).unwrap_or(u32::MAX));
            }
            let max = self.config.max_offline_messages;
            let Some(s) = self.store.session_mut(key) else {
                continue;
            };
            let offline = &mut s.away().offline;
            if offline.len() < max {
                offline.push_back(Queued { msg, at: now.mono });
            } else {
                self.dropped(now, &client_id, &msg, DropReason::QueueFull);
            }
        }
        for (client_id, packet_id) in awaiting_release {
            let Some(key) = self.away_session(&client_id) else {
                orphan(self, client_id);
                continue;
            };
            let receive_maximum = usize::from(self.config.session.receive_maximum);
            if let Some(s) = self.store.session_mut(key) {
                let ids = &mut s.away().inflight.awaiting_pubrel;
                if ids.len() < receive_maximum && !ids.contains(&packet_id) {
                    ids.push(packet_id);
                }
            }
        }
    }

    /// A restored session of this client id (restored sessions are all
    /// disconnected).
    fn away_session(&self, client_id: &str) -> Option<SessionKey> {
        let key = self.store.find_session(client_id)?;
        self.store.session(key)?.conn().is_none().then_some(key)
    }
}
