//! The client-id registry: opening, taking over, resuming, detaching and
//! ending sessions.

use super::*;
use std::hash::BuildHasher;

impl Broker {
    pub(super) fn client_ids(&self) -> ClientIds<'_> {
        ClientIds {
            sessions: &self.sessions,
            conns: &self.conns,
        }
    }

    /// The connection is gone: its session ends, or is stored until it
    /// expires.
    pub(super) fn detach(&mut self, now: Now, id: ConnId) {
        // Its entry in the heap goes stale, checked when it comes due; one
        // in the tree (a slot past the heap's) goes now.
        let Some(mut c) = self.conns.remove(&id) else {
            return;
        };
        if !ConnTimer::in_heap(id)
            && let Some(at) = c.deadline
        {
            self.timers.remove(&(at, Timer::Conn(id).pack()));
        }
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
        // The client id leaves with the connection: the session keeps it
        // from now on, or ends with it.
        let client_id: Arc<str> = c.session.client_id_shared().cloned().unwrap_or_default();
        let expiry = c.session.session_expiry_interval().unwrap_or(0);
        if expiry == 0 {
            self.end_session_of(now, key, client_id);
            return;
        }
        let mut inflight = c.session.take_inflight();
        // Messages that waited for the client's window wait on; their
        // expiry counts from now (the time they spent queued while connected
        // is not known here). What the session keeps while offline is
        // copied, so that it does not keep its read buffers alive.
        let away = s.away();
        away.client_id = client_id.clone();
        for msg in inflight.queued.drain(..) {
            away.offline.push_back(Queued {
                msg: msg.detached(),
                at: now.mono,
            });
        }
        for m in &mut inflight.outbound {
            m.message = m.message.detached();
        }
        away.inflight = inflight;
        if expiry != u32::MAX {
            let at = now.mono + Duration::from_secs(u64::from(expiry));
            away.expires_at = Some(at);
            self.timers.insert((at, Timer::Expiry(key).pack()));
        }
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
    pub(super) fn end_session(&mut self, now: Now, key: SessionKey) {
        let client_id = self.client_ids().get(key).cloned().unwrap_or_default();
        self.end_session_of(now, key, client_id);
    }

    /// [`Broker::end_session`] of the session whose client id is
    /// `client_id` (one that just left its connection).
    pub(super) fn end_session_of(&mut self, now: Now, key: SessionKey, client_id: Arc<str>) {
        // A stale key names no session: the index entry at its slab index
        // may be another's.
        if !self.sessions.contains_key(&key) {
            return;
        }
        self.by_client_id.remove(
            key,
            &client_id,
            ClientIds {
                sessions: &self.sessions,
                conns: &self.conns,
            },
        );
        let Some(mut s) = self.sessions.remove(&key) else {
            return;
        };
        let away = s.take_away();
        if let Some(at) = away.expires_at {
            self.timers.remove(&(at, Timer::Expiry(key).pack()));
        }
        for f in s.take_filters() {
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
            self.dropped(now, &client_id, msg, DropReason::SessionEnded);
        }
        self.will_at_session_end(now, key, away.will);
    }

    pub(super) fn dropped(
        &mut self,
        now: Now,
        client_id: &str,
        msg: &OutboundMessage,
        reason: DropReason,
    ) {
        self.audit(AuditRecord::MessageDropped {
            at: now.wall,
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
        now: Now,
        id: ConnId,
        ticket: session::Ticket,
        // Shared with the session and its identity: one allocation.
        client_id: Arc<str>,
        clean_start: bool,
        identity: Arc<Identity>,
    ) {
        if let Some(key) = self.by_client_id.get(&client_id, self.client_ids())
            && let Some(old) = self.sessions[&key].conn()
            && old != id
        {
            // [MQTT-3.1.4-3]
            self.audit(AuditRecord::Takeover {
                at: now.wall,
                client_id: client_id.to_string(),
                identity: identity.clone(),
            });
            if let Some(c) = self.conns.get_mut(&old) {
                c.session.handle_takeover(now);
            }
            self.drain(now, old);
            self.detach(now, old);
        }
        if let Some(key) = self.by_client_id.get(&client_id, self.client_ids()) {
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
        let key = self.sessions.insert_with(|_| StoredSession::new(id));
        self.by_client_id.insert(
            key,
            &client_id,
            ClientIds {
                sessions: &self.sessions,
                conns: &self.conns,
            },
        );
        if let Some(c) = self.conns.get_mut(&id) {
            c.key = Some(key);
            let _ = c.session.handle_open(now, ticket, false);
        }
    }

    pub(super) fn resume(
        &mut self,
        now: Now,
        id: ConnId,
        ticket: session::Ticket,
        key: SessionKey,
    ) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        // [MQTT-3.1.3-9] The client is back before its will was due.
        let away = s.take_away();
        let will = away.will;
        if let Some(at) = away.expires_at {
            self.timers.remove(&(at, Timer::Expiry(key).pack()));
        }
        s.set_conn(Some(id));
        let mut inflight = away.inflight;
        for q in away.offline {
            let mut msg = q.msg;
            match remaining_expiry(&msg.properties, q.at, now.mono) {
                None => {}
                Some(left) => {
                    if left.is_some() {
                        msg.properties.message_expiry_interval = left;
                    }
                    inflight.queued.push(msg);
                }
            }
        }
        self.will_on_resume(now, key, will);
        if let Some(c) = self.conns.get_mut(&id) {
            c.key = Some(key);
            let _ = c.session.handle_resume(now, ticket, inflight);
        }
    }
}

/// Where a session's client id is read: its connection's session while it
/// is attached, what it kept when it left otherwise. Keeping it in neither
/// the session's slab entry nor the index saves two words a session.
#[derive(Clone, Copy)]
pub(super) struct ClientIds<'a> {
    pub sessions: &'a Slots<SessionKey, StoredSession>,
    pub conns: &'a Slots<ConnId, Box<Conn>>,
}

impl<'a> ClientIds<'a> {
    /// The client id of the session at slab index `index`.
    fn at(self, index: u32) -> Option<&'a Arc<str>> {
        self.get(self.sessions.key_at(index)?)
    }

    pub(super) fn get(self, key: SessionKey) -> Option<&'a Arc<str>> {
        let s = self.sessions.get(&key)?;
        match s.conn() {
            Some(id) => self.conns.get(&id)?.session.client_id_shared(),
            None => s.away_ref().map(|a| &a.client_id),
        }
    }
}

/// The sessions by client id: a hash table of session slab indices alone
/// (4 bytes), each session's client id read where the session keeps it
/// ([`ClientIds`]). An index is a word's half where a map entry held the id
/// too, in nodes half full.
#[derive(Debug, Default)]
pub(super) struct ClientIndex {
    table: hashbrown::HashTable<u32>,
    /// Seeded per process: client ids are chosen by clients, and a known
    /// hash would let them collide. Nothing iterates the table, so its order
    /// never shows.
    hasher: std::hash::RandomState,
}

/// A session key's slab index, as the index keeps it.
fn slot(key: SessionKey) -> u32 {
    crate::slots::index_of(key.id()) as u32
}

impl ClientIndex {
    fn hash(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
    }

    /// The hash of the session at an index, for the table to move it.
    fn rehash<'a>(
        hasher: &'a std::hash::RandomState,
        ids: ClientIds<'a>,
    ) -> impl Fn(&u32) -> u64 + 'a {
        move |i| ids.at(*i).map_or(0, |id| hasher.hash_one(&**id))
    }

    pub(super) fn get(&self, client_id: &str, ids: ClientIds<'_>) -> Option<SessionKey> {
        let index = self
            .table
            .find(self.hash(client_id), |i| {
                ids.at(*i).is_some_and(|id| **id == *client_id)
            })
            .copied()?;
        ids.sessions.key_at(index)
    }

    /// Adds `key`, whose client id is `client_id`; every session in the
    /// table has its id where `ids` reads it.
    pub(super) fn insert(&mut self, key: SessionKey, client_id: &str, ids: ClientIds<'_>) {
        let hash = self.hash(client_id);
        self.table
            .insert_unique(hash, slot(key), Self::rehash(&self.hasher, ids));
    }

    /// Removes `key`, whose client id is `client_id`; every other session
    /// has its id where `ids` reads it.
    pub(super) fn remove(&mut self, key: SessionKey, client_id: &str, ids: ClientIds<'_>) {
        let index = slot(key);
        if let Ok(entry) = self.table.find_entry(self.hash(client_id), |i| *i == index) {
            entry.remove();
        }
        // A storm of sessions that ended leaves no table its size behind.
        if self.table.capacity() > 64 && self.table.len() < self.table.capacity() / 4 {
            self.table
                .shrink_to(self.table.len() * 2, Self::rehash(&self.hasher, ids));
        }
    }
}
