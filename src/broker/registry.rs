//! The client-id registry: opening, taking over, resuming, detaching and
//! ending sessions.

use super::*;

impl Broker {
    /// The connection is gone: its session ends, or is stored until it
    /// expires.
    pub(super) fn detach(&mut self, now: Now, id: ConnId) {
        let Some(mut c) = self.store.close(id) else {
            return;
        };
        self.forget_pressure(now, id);
        // Its requests die with it.
        self.pending
            .retain(|_, p| !matches!(p, Pending::Session { conn, .. } if *conn == id));
        let Some(key) = c.key else {
            return;
        };
        let Some(s) = self.store.session_mut(key) else {
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
        away.identity = c.session.identity().cloned();
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
        let after = (expiry != u32::MAX).then(|| Duration::from_secs(u64::from(expiry)));
        if let Some(after) = after {
            let at = now.mono + after;
            away.expires_at = Some(at);
            self.store.set_deadline(Timer::Expiry(key), at);
        }
        self.persist_session(key, expiry, after.map(|d| now.wall + d));
        let excess: Vec<Queued> = {
            let max = self.config.max_offline_messages;
            let s = self
                .store
                .session_mut(key)
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
        let client_id = self.store.client_id(key).cloned().unwrap_or_default();
        self.end_session_of(now, key, client_id);
    }

    /// [`Broker::end_session`] of the session whose client id is
    /// `client_id` (one that just left its connection).
    pub(super) fn end_session_of(&mut self, now: Now, key: SessionKey, client_id: Arc<str>) {
        let Some(mut s) = self.store.remove_session(key, &client_id) else {
            return;
        };
        if self.config.durable {
            self.persist(Persist::EndSession(client_id.clone()));
        }
        let away = s.take_away();
        if let Some(at) = away.expires_at {
            self.store.cancel_deadline(Timer::Expiry(key), at);
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

    /// A message a session was to get is dropped: audited, and its record
    /// goes (a session that ends takes all of its records with it).
    pub(super) fn dropped(
        &mut self,
        now: Now,
        client_id: &Arc<str>,
        msg: &OutboundMessage,
        reason: DropReason,
    ) {
        self.audit(AuditRecord::MessageDropped {
            at: now.wall,
            client_id: client_id.to_string(),
            topic: msg.topic.as_mqtt_str().clone(),
            qos: msg.qos,
            reason,
        });
        if reason != DropReason::SessionEnded {
            self.message_done(client_id, msg);
        }
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
        if let Some(key) = self.store.find_session(&client_id)
            && let Some(old) = self.store.session(key).and_then(StoredSession::conn)
            && old != id
        {
            // [MQTT-3.1.4-3]
            self.audit(AuditRecord::Takeover {
                at: now.wall,
                client_id: client_id.to_string(),
                identity: identity.clone(),
            });
            if let Some(c) = self.store.conn_mut(old) {
                c.session.handle_takeover(now, !clean_start);
            }
            self.drain(now, old);
            self.detach(now, old);
        }
        if let Some(key) = self.store.find_session(&client_id) {
            if clean_start {
                // A clean start ends the old session, and sends its will.
                self.end_session(now, key);
            } else {
                self.resume(now, id, ticket, key);
                return;
            }
        }
        if self.store.sessions() >= self.config.max_sessions {
            if let Some(c) = self.store.conn_mut(id) {
                let _ = c.session.handle_open_refused(
                    now,
                    ticket,
                    ConnectReasonCode::QuotaExceeded,
                    "too many sessions",
                );
            }
            return;
        }
        let key = self.store.new_session(id, &client_id);
        if let Some(c) = self.store.conn_mut(id) {
            c.key = Some(key);
            let _ = c.session.handle_open(now, ticket, false);
        }
        self.persist_connected_session(key);
    }

    pub(super) fn resume(
        &mut self,
        now: Now,
        id: ConnId,
        ticket: session::Ticket,
        key: SessionKey,
    ) {
        let Some(s) = self.store.session_mut(key) else {
            return;
        };
        // [MQTT-3.1.3-9] The client is back before its will was due.
        let away = s.take_away();
        let will = away.will;
        s.set_conn(Some(id));
        if let Some(at) = away.expires_at {
            self.store.cancel_deadline(Timer::Expiry(key), at);
        }
        let mut inflight = away.inflight;
        let mut expired = Vec::new();
        for q in away.offline {
            let mut msg = q.msg;
            match remaining_expiry(&msg.properties, q.at, now.mono) {
                None => expired.push(msg),
                Some(left) => {
                    if left.is_some() {
                        msg.properties.message_expiry_interval = left;
                    }
                    inflight.queued.push(msg);
                }
            }
        }
        if !expired.is_empty()
            && let Some(client_id) = self.store.client_id(key).cloned()
        {
            for msg in &expired {
                self.message_done(&client_id, msg);
            }
        }
        self.will_on_resume(now, key, will);
        if let Some(c) = self.store.conn_mut(id) {
            c.key = Some(key);
            let _ = c.session.handle_resume(now, ticket, inflight);
        }
        // Connected again: its expiry stops. Resumed with an interval of
        // 0, it ends with this connection: its record goes now.
        match self
            .store
            .conn(id)
            .and_then(|c| c.session.session_expiry_interval())
        {
            Some(0) if self.config.durable => {
                if let Some(client_id) = self.store.client_id(key).cloned() {
                    self.persist(Persist::EndSession(client_id));
                }
            }
            Some(interval) => self.persist_session(key, interval, None),
            None => {}
        }
    }

    /// A stored session's expiry came: unless its client came back, it
    /// ends — its will, if still waiting, is sent now (§3.1.3.2.2).
    pub(super) fn session_expired(&mut self, now: Now, key: SessionKey) {
        let expired = self
            .store
            .session(key)
            .is_some_and(|s| s.conn().is_none() && s.expires_at().is_some_and(|at| at <= now.mono));
        if expired {
            let client_id = self
                .store
                .client_id(key)
                .map(|id| id.to_string())
                .unwrap_or_default();
            self.audit(AuditRecord::SessionExpired {
                at: now.wall,
                client_id,
            });
            self.end_session(now, key);
        }
    }

    /// A durable hub keeps what a persistent session is now: its
    /// subscriptions, its expiry interval and, once disconnected, the date
    /// it expires. A session whose interval is 0 is not kept.
    pub(super) fn persist_session(
        &mut self,
        key: SessionKey,
        expiry_interval: u32,
        expires_at: Option<Timestamp>,
    ) {
        if !self.config.durable || expiry_interval == 0 {
            return;
        }
        let subscriptions = self.stored_subscriptions(key);
        self.persist_session_with(key, expiry_interval, expires_at, subscriptions);
    }

    /// A session's subscriptions as its record keeps them, in the order
    /// they were made.
    pub(super) fn stored_subscriptions(&self, key: SessionKey) -> Vec<StoredSubscription> {
        self.store.session(key).map_or_else(Vec::new, |s| {
            s.filters()
                .iter()
                .filter_map(|f| self.tree.find(key, f))
                .map(StoredSubscription::of)
                .collect()
        })
    }

    /// [`Broker::persist_session`] with the session's subscriptions
    /// already at hand.
    pub(super) fn persist_session_with(
        &mut self,
        key: SessionKey,
        expiry_interval: u32,
        expires_at: Option<Timestamp>,
        subscriptions: Vec<StoredSubscription>,
    ) {
        if !self.config.durable || expiry_interval == 0 {
            return;
        }
        let Some(client_id) = self.store.client_id(key).cloned() else {
            return;
        };
        let identity = self.store.session_identity(key).cloned();
        self.persist(Persist::Session(SessionRecord {
            client_id,
            identity,
            expiry_interval,
            expires_at,
            subscriptions,
        }));
    }

    /// [`Broker::persist_session`] for a session attached to its
    /// connection: the interval is the connection's, the expiry not
    /// running. (A connection's interval changes only at its DISCONNECT,
    /// which [`Broker::detach`] keeps, or at a resume.)
    pub(super) fn persist_connected_session(&mut self, key: SessionKey) {
        if !self.config.durable {
            return;
        }
        let interval = self
            .store
            .session(key)
            .and_then(StoredSession::conn)
            .and_then(|id| self.store.conn(id))
            .and_then(|c| c.session.session_expiry_interval())
            .unwrap_or(0);
        self.persist_session(key, interval, None);
    }

    /// A planned stop of a durable hub whose wills resume
    /// ([`ShutdownWills::Resume`]): the sessions' expiry pauses with them.
    /// Each is kept with what was left of its interval and no date, so that
    /// it counts from the restart — a stop longer than a session's interval
    /// does not end it (nor send its will, a false "down") at the restart.
    pub(super) fn sessions_at_shutdown(&mut self, now: Now) {
        if !self.config.durable || self.config.shutdown_wills != ShutdownWills::Resume {
            return;
        }
        for key in self.store.session_keys() {
            let Some(at) = self.store.session(key).and_then(StoredSession::expires_at) else {
                continue;
            };
            // At least one: 0 would end it with its connection.
            let left = secs_left(at, now.mono).clamp(1, u32::MAX - 1);
            self.persist_session(key, left, None);
        }
    }

    /// What the host's store kept of the persistent sessions, handed back
    /// before the first connection opens. Each comes back disconnected,
    /// with its subscriptions: one whose expiry date passed while the
    /// broker was down ends (audited); one that was connected when the
    /// broker went down expires its interval after `now` (and is kept so).
    /// Its offline queue, in-flight messages and will are not kept yet.
    pub fn restore_sessions(
        &mut self,
        now: Now,
        sessions: impl IntoIterator<Item = SessionRecord>,
    ) {
        for record in sessions {
            let left = match record.expires_at {
                Some(at) => Some(at.saturating_duration_since(now.wall)),
                None if record.expiry_interval == u32::MAX => None,
                None => Some(Duration::from_secs(u64::from(record.expiry_interval))),
            };
            let full = self.store.sessions() >= self.config.max_sessions;
            if left.is_some_and(|d| d.is_zero()) || full || record.expiry_interval == 0 {
                self.audit(AuditRecord::SessionExpired {
                    at: now.wall,
                    client_id: record.client_id.to_string(),
                });
                if self.config.durable {
                    self.persist(Persist::EndSession(record.client_id));
                }
                continue;
            }
            if self.store.find_session(&record.client_id).is_some() {
                continue;
            }
            let key = self.store.restore_session(record.client_id.clone());
            if let Some(s) = self.store.session_mut(key) {
                s.away().identity = record.identity.clone();
            }
            for sub in &record.subscriptions {
                self.add_subscription(Sub {
                    key,
                    filter: sub.filter.clone(),
                    options: sub.options,
                    id: sub.id,
                    exclusions: sub.exclusions.clone(),
                });
            }
            let expires_at = left.map(|d| {
                let at = now.mono + d;
                if let Some(s) = self.store.session_mut(key) {
                    s.away().expires_at = Some(at);
                }
                self.store.set_deadline(Timer::Expiry(key), at);
                now.wall + d
            });
            if record.expires_at.is_none() && expires_at.is_some() {
                // Its expiry started now: kept so, a second restart counts
                // from this one.
                self.persist_session(key, record.expiry_interval, expires_at);
            }
        }
    }
}
