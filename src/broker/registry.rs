//! The client-id registry: opening, taking over, resuming, detaching and
//! ending sessions.

use super::*;
use std::hash::BuildHasher;

impl Broker {
    /// The connection is gone: its session ends, or is stored until it
    /// expires.
    pub(super) fn detach(&mut self, now: Timestamp, id: ConnId) {
        // Its timer entry goes stale, skipped when it comes due.
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        // Its requests die with it.
        self.pending
            .retain(|_, p| !matches!(p, Pending::Session { conn, .. } if *conn == id));
        let Some(key) = c.key else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.conn() != Some(id) {
            return;
        }
        s.set_conn(None);
        let expiry = c.session.session_expiry_interval().unwrap_or(0);
        if expiry == 0 {
            self.end_session(now, key);
            return;
        }
        let mut inflight = c.session.take_inflight();
        // Messages that waited for the client's window wait on; their
        // expiry counts from now (the time they spent queued while connected
        // is not known here). What the session keeps while offline is
        // copied, so that it does not keep its read buffers alive.
        let away = s.away();
        for msg in inflight.queued.drain(..) {
            away.offline.push_back(Queued {
                msg: msg.detached(),
                at: now,
            });
        }
        for m in &mut inflight.outbound {
            m.message = m.message.detached();
        }
        away.inflight = inflight;
        if expiry != u32::MAX {
            let at = now + Duration::from_secs(u64::from(expiry));
            away.expires_at = Some(at);
            self.timers.insert((at, Timer::Expiry(key).pack()));
        }
        let client_id = s.client_id.clone();
        let excess: Vec<Queued> = {
            let max = self.config.max_offline_messages;
            let s = self
                .sessions
                .get_mut(&key)
                .expect("the session was just stored");
            let offline = &mut s.away().offline;
            if offline.len() > max {
                offline.drain(max..).collect()
            } else {
                Vec::new()
            }
        };
        for q in excess {
            self.dropped(now, &client_id, &q.msg, DropReason::QueueFull);
        }
    }

    /// The session ends: its subscriptions go, what it had queued is
    /// dropped (audited), and a will still waiting is sent now (§3.1.3.2.2).
    pub(super) fn end_session(&mut self, now: Timestamp, key: SessionKey) {
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        self.by_client_id.remove(key, &s.client_id, &self.sessions);
        let away = s.away.take().map(|b| *b).unwrap_or_default();
        if let Some(at) = away.expires_at {
            self.timers.remove(&(at, Timer::Expiry(key).pack()));
        }
        for f in s.filters.take() {
            self.remove_subscription(key, &f);
        }
        let queued = away
            .inflight
            .outbound
            .into_iter()
            .map(|m| m.message)
            .chain(away.inflight.queued)
            .chain(away.offline.into_iter().map(|q| q.msg));
        let lost: Vec<OutboundMessage> = queued.collect();
        for msg in &lost {
            self.dropped(now, &s.client_id, msg, DropReason::SessionEnded);
        }
        if let Some(w) = away.will {
            self.timers.remove(&(w.at, Timer::Will(key).pack()));
            self.send_will(now, key, w.due);
        }
    }

    pub(super) fn dropped(
        &mut self,
        now: Timestamp,
        client_id: &str,
        msg: &OutboundMessage,
        reason: DropReason,
    ) {
        self.audit(AuditRecord::MessageDropped {
            at: now,
            client_id: client_id.to_owned(),
            topic: msg.topic.as_mqtt_str().clone(),
            qos: msg.qos,
            reason,
        });
    }

    /// The session of an authenticated connection: take over a connected
    /// one with the same client id, resume a stored one, or start anew.
    pub(super) fn open_session(
        &mut self,
        now: Timestamp,
        id: ConnId,
        ticket: session::Ticket,
        // Shared with the session and its identity: one allocation.
        client_id: Arc<str>,
        clean_start: bool,
        identity: Arc<Identity>,
    ) {
        if let Some(key) = self.by_client_id.get(&client_id, &self.sessions)
            && let Some(old) = self.sessions[&key].conn()
            && old != id
        {
            // [MQTT-3.1.4-3]
            self.audit(AuditRecord::Takeover {
                at: now,
                client_id: client_id.to_string(),
                identity: identity.clone(),
            });
            if let Some(c) = self.conns.get_mut(&old) {
                c.session.handle_takeover(now);
            }
            self.drain(now, old);
            self.detach(now, old);
        }
        if let Some(key) = self.by_client_id.get(&client_id, &self.sessions) {
            if clean_start {
                // A clean start ends the old session, and sends its will.
                self.end_session(now, key);
            } else {
                self.resume(now, id, ticket, key);
                return;
            }
        }
        if self.sessions.len() >= self.config.max_sessions {
            if let Some(c) = self.conns.get_mut(&id) {
                let _ = c.session.handle_open_refused(
                    ticket,
                    ConnectReasonCode::QuotaExceeded,
                    "too many sessions",
                );
            }
            return;
        }
        let key = self.sessions.insert_with(|_| {
            let mut s = StoredSession {
                client_id: client_id.clone(),
                conn: None,
                filters: session::Filters::default(),
                away: None,
            };
            s.set_conn(Some(id));
            s
        });
        self.by_client_id.insert(key, &self.sessions);
        if let Some(c) = self.conns.get_mut(&id) {
            c.key = Some(key);
            let _ = c.session.handle_open(now, ticket, false);
        }
    }

    pub(super) fn resume(
        &mut self,
        now: Timestamp,
        id: ConnId,
        ticket: session::Ticket,
        key: SessionKey,
    ) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        // [MQTT-3.1.3-9] The client is back before its will was due.
        let away = s.away.take().map(|b| *b).unwrap_or_default();
        let will = away.will;
        if let Some(at) = away.expires_at {
            self.timers.remove(&(at, Timer::Expiry(key).pack()));
        }
        s.set_conn(Some(id));
        let mut inflight = away.inflight;
        for q in away.offline {
            let mut msg = q.msg;
            match remaining_expiry(&msg.properties, q.at, now) {
                None => {}
                Some(left) => {
                    if left.is_some() {
                        msg.properties.message_expiry_interval = left;
                    }
                    inflight.queued.push(msg);
                }
            }
        }
        if let Some(w) = will {
            self.timers.remove(&(w.at, Timer::Will(key).pack()));
            self.cancel_will(now, &w.due, "the client reconnected");
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.key = Some(key);
            let _ = c.session.handle_resume(now, ticket, inflight);
        }
    }
}

/// The sessions by client id: a hash table of session keys alone, each
/// session's client id read from the session itself. A key is a word where
/// a map entry held the id too, in nodes half full.
#[derive(Debug, Default)]
pub(super) struct ClientIndex {
    table: hashbrown::HashTable<SessionKey>,
    /// Seeded per process: client ids are chosen by clients, and a known
    /// hash would let them collide. Nothing iterates the table, so its order
    /// never shows.
    hasher: std::hash::RandomState,
}

impl ClientIndex {
    fn hash(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
    }

    pub(super) fn get(
        &self,
        client_id: &str,
        sessions: &Slots<SessionKey, StoredSession>,
    ) -> Option<SessionKey> {
        self.table
            .find(self.hash(client_id), |k| {
                sessions.get(k).is_some_and(|s| *s.client_id == *client_id)
            })
            .copied()
    }

    /// Adds `key`, already stored in `sessions`.
    pub(super) fn insert(&mut self, key: SessionKey, sessions: &Slots<SessionKey, StoredSession>) {
        let Some(s) = sessions.get(&key) else {
            return;
        };
        let hasher = &self.hasher;
        self.table
            .insert_unique(hasher.hash_one(&*s.client_id), key, |k| {
                sessions
                    .get(k)
                    .map_or(0, |s| hasher.hash_one(&*s.client_id))
            });
    }

    /// Removes `key`, whose client id is `client_id`.
    /// Removes `key`, whose client id is `client_id`; the others are in
    /// `sessions`.
    pub(super) fn remove(
        &mut self,
        key: SessionKey,
        client_id: &str,
        sessions: &Slots<SessionKey, StoredSession>,
    ) {
        if let Ok(entry) = self.table.find_entry(self.hash(client_id), |k| *k == key) {
            entry.remove();
        }
        // A storm of sessions that ended leaves no table its size behind.
        if self.table.capacity() > 64 && self.table.len() < self.table.capacity() / 4 {
            let hasher = &self.hasher;
            self.table.shrink_to(self.table.len() * 2, |k| {
                sessions
                    .get(k)
                    .map_or(0, |s| hasher.hash_one(&*s.client_id))
            });
        }
    }
}
