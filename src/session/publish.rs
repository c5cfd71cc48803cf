//! Publishes in both directions and the authorization queue they wait in.

use super::*;
use crate::auth::DecidedBy;
use crate::codec::PublishView;

impl Session {
    // By reference: moving the packet just decoded into an argument copies it
    // with wide loads over the decoder's narrow stores, which stalls.
    pub(super) fn on_publish(&mut self, now: Now, p: &mut Publish) {
        let v5 = self.version == ProtocolVersion::V5;
        let config_max_qos = self.config.maximum_qos;
        let retain_available = self.config.retain_available;
        let receive_maximum = self.config.receive_maximum;
        let max_pending = self.config.max_pending_authorizations;
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        if v5 && !p.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6]
            self.protocol_error(now, "subscription identifier from a client");
            return;
        }
        if p.qos > config_max_qos {
            self.fail(
                now,
                DisconnectReasonCode::QoSNotSupported,
                "QoS not supported",
                WillTrigger::ProtocolError,
            );
            return;
        }
        if p.retain && !retain_available {
            self.fail(
                now,
                DisconnectReasonCode::RetainNotSupported,
                "retain not supported",
                WillTrigger::ProtocolError,
            );
            return;
        }
        // Topic aliases (§3.3.2.3.4): the topic meant ends up in `p.topic`.
        if let Some(alias) = p.properties.topic_alias {
            let slot = usize::from(alias.get()) - 1;
            if slot >= usize::from(self.config.topic_alias_maximum) {
                self.fail(
                    now,
                    DisconnectReasonCode::TopicAliasInvalid,
                    "topic alias out of range",
                    WillTrigger::ProtocolError,
                );
                return;
            }
            match &p.topic {
                Some(t) => {
                    if conn.per_message().aliases_in.len() <= slot {
                        conn.per_message_mut().aliases_in.resize(slot + 1, None);
                    }
                    // Kept for the connection's life: copied out of the
                    // read buffer, and only when the alias changes.
                    if conn.per_message().aliases_in[slot].as_ref() != Some(t) {
                        conn.per_message_mut().aliases_in[slot] = Some(t.detached());
                    }
                }
                None => match conn.per_message().aliases_in.get(slot).cloned().flatten() {
                    Some(t) => p.topic = Some(t),
                    None => {
                        self.protocol_error(now, "unknown topic alias");
                        return;
                    }
                },
            }
        }
        let Some(topic) = &p.topic else {
            self.protocol_error(now, "no topic");
            return;
        };
        if v5 {
            p.properties.topic_alias = None;
        }
        if !self.topic_fits(topic.as_str()) {
            self.fail(
                now,
                DisconnectReasonCode::TopicNameInvalid,
                "topic longer or deeper than allowed",
                WillTrigger::ProtocolError,
            );
            return;
        }
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        if let Some(id) = p.packet_id {
            if p.qos == QoS::ExactlyOnce && conn.per_message().awaiting_pubrel.contains(&id) {
                // Already received and acknowledged: acknowledge again, do
                // not hand it up twice (exactly once).
                self.send(&Packet::PubRec(PubRec::new(id)));
                return;
            }
            let in_progress = p.qos == QoS::ExactlyOnce && conn.per_message().pending.iter().any(|x| {
                matches!(x, Pending::Publish { publish, .. } if publish.packet_id == Some(id) && publish.qos == QoS::ExactlyOnce)
            });
            if in_progress {
                return;
            }
            if conn.inbound_inflight >= receive_maximum {
                self.fail(
                    now,
                    DisconnectReasonCode::ReceiveMaximumExceeded,
                    "receive maximum exceeded",
                    WillTrigger::ProtocolError,
                );
                return;
            }
            conn.inbound_inflight += 1;
        }
        if conn.per_message().pending.len() >= max_pending {
            self.fail(
                now,
                DisconnectReasonCode::MessageRateTooHigh,
                "too many requests waiting for authorization",
                WillTrigger::ProtocolError,
            );
            return;
        }
        // The common case — a synchronous authorizer and nothing waiting —
        // decides on borrowed data: no owned request is built unless an
        // audit record needs it.
        if conn.per_message().pending.is_empty()
            && let (Some(authorizer), Some(identity)) = (&self.config.authorizer, &conn.identity)
        {
            let request = crate::auth::AuthzRequest {
                identity,
                op: Operation::Publish,
                topic: topic.as_str(),
                qos: p.qos,
                retain: p.retain,
            };
            // Matched in place: moving the answer out would copy what the
            // authorizer just wrote.
            if let Some(decision) = &authorizer.authorize(&request) {
                self.finish_publish(now, None, p, decision);
                return;
            }
        }
        let Some(identity) = conn.identity.clone() else {
            return;
        };
        let query = AuthzQuery {
            identity,
            op: Operation::Publish,
            topic: topic.as_mqtt_str().clone(),
            qos: p.qos,
            retain: p.retain,
            will_trigger: None,
        };
        if let Some(decision) = self.decide_now(&query) {
            let Some(conn) = self.stage.conn_mut() else {
                return;
            };
            if conn.per_message().pending.is_empty() {
                self.finish_publish(now, Some(query.identity), p, &decision);
            } else {
                // Earlier requests still wait: take effect after them. Its
                // ticket is never answered: the decision is already in.
                conn.per_message_mut().pending.push_back(Pending::Publish {
                    ticket: Ticket(0),
                    identity: query.identity,
                    publish: take_publish(p),
                    decision: Some(decision),
                });
            }
            return;
        }
        let ticket = self.ticket();
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        conn.per_message_mut().pending.push_back(Pending::Publish {
            ticket,
            identity: query.identity.clone(),
            publish: take_publish(p),
            decision: None,
        });
        self.push(Action::Authorize { ticket, query });
    }

    /// The synchronous authorizer's answer, if one is installed and answers.
    pub(super) fn decide_now(&self, query: &AuthzQuery) -> Option<Decision> {
        self.config
            .authorizer
            .as_ref()?
            .authorize(&query.as_request())
    }

    /// Carries out every decided request at the front of the queue, in order.
    pub(super) fn drain_pending(&mut self, now: Now) {
        loop {
            let ready = match self
                .stage
                .conn()
                .and_then(|c| c.per_message().pending.front())
            {
                Some(Pending::Publish { decision, .. }) => decision.is_some(),
                Some(Pending::Subscribe { slots, .. }) => {
                    !slots.iter().any(|s| matches!(s, Slot::Waiting(..)))
                }
                None => false,
            };
            if !ready || self.state != State::Connected {
                return;
            }
            let Some(item) = self
                .stage
                .conn_mut()
                .and_then(|c| c.per_message_mut().pending.pop_front())
            else {
                return;
            };
            match item {
                Pending::Publish {
                    identity,
                    mut publish,
                    decision: Some(decision),
                    ..
                } => {
                    self.finish_publish(now, Some(identity), &mut publish, &decision);
                }
                Pending::Publish { .. } => {}
                Pending::Subscribe { packet, slots } => self.finish_subscribe(now, packet, slots),
            }
        }
    }

    /// Carries out a publish decision: the audit record (its request built
    /// here, against the identity in force, when the decision was made on
    /// borrowed data), the hand-up, the acknowledgement.
    #[inline]
    pub(super) fn finish_publish(
        &mut self,
        now: Now,
        // The identity the request was made with (`None`: the one in force).
        identity: Option<Arc<Identity>>,
        p: &mut Publish,
        // Borrowed: an allowed publish reads only its effect, and the
        // answer just written by the authorizer is not copied.
        decision: &Decision,
    ) {
        // What the broker could not keep, it does not acknowledge.
        let refused;
        let decision =
            if self.config.storage_unavailable && p.qos != QoS::AtMostOnce && decision.is_allowed()
            {
                refused = Decision {
                    effect: crate::auth::Effect::Deny,
                    decided_by: DecidedBy::StorageUnavailable,
                    exclusions: Default::default(),
                };
                &refused
            } else {
                decision
            };
        let no_storage = decision.decided_by == DecidedBy::StorageUnavailable;
        let allowed = decision.is_allowed();
        if !allowed || self.config.audit_allowed_publishes {
            let identity = identity.or_else(|| self.stage.conn()?.identity.clone());
            let query = identity.and_then(|identity| {
                Some(AuthzQuery {
                    identity,
                    op: Operation::Publish,
                    topic: p.topic.as_ref()?.as_mqtt_str().clone(),
                    qos: p.qos,
                    retain: p.retain,
                    will_trigger: None,
                })
            });
            if let Some(query) = query {
                self.audit(AuditRecord::authorization(
                    now.wall,
                    query,
                    decision.clone(),
                ));
            }
        }
        if allowed && let Some(topic) = p.topic.take() {
            // Straight into the queue (a publish never waits for bytes
            // written before it): one copy of the message, not three.
            self.io().actions.push_back(Action::Publish(InboundMessage {
                topic,
                payload: std::mem::take(&mut p.payload),
                qos: p.qos,
                retain: p.retain,
                properties: std::mem::take(&mut p.properties),
            }));
        }
        let Some(id) = p.packet_id else {
            return;
        };
        let v5 = self.version == ProtocolVersion::V5;
        if no_storage && !v5 {
            // 3.1.1 has no negative acknowledgement: closed, the client
            // sends it again later.
            self.fail(
                now,
                DisconnectReasonCode::QuotaExceeded,
                "storage unavailable",
                WillTrigger::ServerClosed,
            );
            return;
        }
        if !allowed && !v5 && self.config.denied_publish_v311 == DeniedPublishV311::Close {
            self.fail(
                now,
                DisconnectReasonCode::NotAuthorized,
                "publish not authorized",
                WillTrigger::ServerClosed,
            );
            return;
        }
        // 5.0: 0x87 Not authorized (0x97 Quota exceeded when nothing can be
        // kept); 3.1.1: a positive acknowledgement.
        let code = if allowed || !v5 {
            PubAckReasonCode::Success
        } else if no_storage {
            PubAckReasonCode::QuotaExceeded
        } else {
            PubAckReasonCode::NotAuthorized
        };
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        match p.qos {
            QoS::AtLeastOnce => {
                conn.inbound_inflight = conn.inbound_inflight.saturating_sub(1);
                if code == PubAckReasonCode::Success {
                    // The same four bytes in 3.1.1 and 5.0 (a success
                    // without properties leaves its reason code out), so
                    // the one acknowledgement per message skips the
                    // general encoder.
                    let [hi, lo] = id.get().to_be_bytes();
                    self.reserve_tx().extend_from_slice(&[0x40, 0x02, hi, lo]);
                } else {
                    self.send(&Packet::PubAck(PubAck::with_reason(id, code)));
                }
            }
            QoS::ExactlyOnce => {
                if code.is_error() {
                    // The exchange ends with an error PUBREC (§4.3.3).
                    conn.inbound_inflight = conn.inbound_inflight.saturating_sub(1);
                } else {
                    conn.per_message_mut().awaiting_pubrel.push(id);
                    if self.keeps_inbound() {
                        self.push(Action::Progress(Progress::AwaitingRelease(id)));
                    }
                }
                self.send(&Packet::PubRec(PubRec::with_reason(id, code)));
            }
            QoS::AtMostOnce => {}
        }
    }

    pub(super) fn on_pubrel(&mut self, r: PubRel) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        let code = match conn
            .per_message()
            .awaiting_pubrel
            .iter()
            .position(|id| *id == r.packet_id)
        {
            Some(i) => {
                conn.per_message_mut().awaiting_pubrel.swap_remove(i);
                conn.inbound_inflight = conn.inbound_inflight.saturating_sub(1);
                if self.keeps_inbound() {
                    self.push(Action::Progress(Progress::ReleaseReceived(r.packet_id)));
                }
                PubRelReasonCode::Success
            }
            None => PubRelReasonCode::PacketIdentifierNotFound,
        };
        self.send(&Packet::PubComp(PubComp::with_reason(r.packet_id, code)));
    }

    /// Gives the session a message for its client. QoS 1/2 messages beyond
    /// the client's Receive Maximum wait in a bounded queue.
    pub fn deliver(&mut self, now: Now, msg: OutboundMessage) -> Delivery {
        if self.state != State::Connected {
            return Delivery::NotConnected;
        }
        let window = self.window();
        let Some(conn) = self.stage.conn_mut() else {
            return Delivery::NotConnected;
        };
        let size = view(&msg, (msg.qos != QoS::AtMostOnce).then_some(PacketId::MIN))
            .encoded_len(self.version)
            .unwrap_or(usize::MAX);
        if conn
            .client_max_packet
            .is_some_and(|max| size > max.get() as usize)
        {
            return Delivery::TooLarge;
        }
        let sending_now = msg.qos == QoS::AtMostOnce
            || (conn.per_message().outbound.len() < window
                && conn.per_message().outbound_queue.is_empty());
        let unsent = self
            .io
            .as_ref()
            .map_or(0, |io| io.unsent_bytes + io.tx.len());
        let queued = conn.per_message().outbound_queue.len();
        // Backpressure takes QoS 1/2 messages up to twice the queue's bound:
        // past it, even they are dropped (memory stays bounded whatever the
        // publishers do).
        let pressed = msg.qos != QoS::AtMostOnce
            && self.config.backpressure
            && queued < self.config.max_outbound_queue.saturating_mul(2);
        if sending_now && unsent + size > self.config.max_unsent_bytes {
            if pressed {
                // The client has not read what was written: the message
                // waits in the queue, and its publishers slow down.
                conn.per_message_mut()
                    .outbound_queue
                    .push_back(msg.detached());
                stalled(conn, now);
                return Delivery::Congested;
            }
            // The host has not taken what was written: drop for this client
            // rather than grow without bound.
            return Delivery::QueueFull;
        }
        if msg.qos == QoS::AtMostOnce {
            let mut p = view(&msg, None);
            alias_topic(conn, &mut p);
            let version = self.version;
            // Sized above: it encodes.
            let _ = p.encode(version, self.reserve_tx());
            return Delivery::Accepted;
        }
        if conn.per_message().outbound.len() < window
            && conn.per_message().outbound_queue.is_empty()
        {
            self.send_outbound(msg);
            Delivery::Accepted
        } else if queued < self.config.max_outbound_queue || pressed {
            // Copied: a message waiting behind a slow client's window would
            // otherwise keep the publisher's whole read buffer alive.
            conn.per_message_mut()
                .outbound_queue
                .push_back(msg.detached());
            if queued < self.config.max_outbound_queue {
                Delivery::Accepted
            } else {
                stalled(conn, now);
                Delivery::Congested
            }
        } else {
            Delivery::QueueFull
        }
    }

    /// Whether the client is still behind: more than half of
    /// [`SessionConfig::max_outbound_queue`] waits for its window. The
    /// publishers a [`Delivery::Congested`] slowed down go on once it is
    /// not.
    pub fn is_congested(&self) -> bool {
        self.stage.conn().is_some_and(|c| {
            c.per_message().outbound_queue.len() > self.config.max_outbound_queue / 2
        })
    }

    /// Drops the messages waiting for the outbound window that `keep`
    /// refuses, and returns them: after a revocation, what none of the
    /// session's subscriptions would route any more is not sent. Messages
    /// already sent finish their exchange [MQTT-4.4.0-1].
    pub fn drop_queued(
        &mut self,
        mut keep: impl FnMut(&OutboundMessage) -> bool,
    ) -> Vec<OutboundMessage> {
        let Some(t) = self.stage.conn_mut().and_then(|c| c.per_message.as_mut()) else {
            return Vec::new();
        };
        let mut dropped = Vec::new();
        t.outbound_queue.retain(|m| {
            let kept = keep(m);
            if !kept {
                dropped.push(m.clone());
            }
            kept
        });
        dropped
    }

    /// Takes the delivery state the hub keeps for a persistent session when
    /// this connection ends: messages in flight (with their packet ids),
    /// messages still queued, and inbound QoS 2 ids waiting for PUBREL.
    pub fn take_inflight(&mut self) -> Inflight {
        let Some(conn) = self.stage.conn_mut() else {
            return Inflight::default();
        };
        let subscriptions = conn.subscriptions.take();
        let Some(t) = conn.per_message.as_mut() else {
            return Inflight {
                subscriptions,
                ..Inflight::default()
            };
        };
        Inflight {
            outbound: t
                .outbound
                .drain(..)
                .map(|(packet_id, state, message)| InflightMessage {
                    packet_id,
                    message,
                    released: state == OutState::Released,
                })
                .collect(),
            queued: t.outbound_queue.drain(..).collect(),
            awaiting_pubrel: std::mem::take(&mut t.awaiting_pubrel),
            subscriptions,
        }
    }

    /// Resends a resumed session's unacknowledged messages with their
    /// original packet ids — PUBLISH with DUP, or PUBREL — then what was queued
    /// [MQTT-4.4.0-1].
    pub(super) fn redeliver(&mut self, inflight: Inflight) {
        let version = self.version;
        let tx = &mut Io::of(&mut self.io, &self.config, self.state, version).tx;
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        conn.per_message_mut().awaiting_pubrel = inflight.awaiting_pubrel;
        conn.subscriptions = types::Filters::from_vec(inflight.subscriptions);
        conn.inbound_inflight =
            u16::try_from(conn.per_message().awaiting_pubrel.len()).unwrap_or(u16::MAX);
        for m in inflight.outbound {
            if m.released {
                let _ = Packet::PubRel(PubRel::new(m.packet_id)).encode(version, tx);
                conn.per_message_mut().outbound.push_back((
                    m.packet_id,
                    OutState::Released,
                    m.message,
                ));
            } else {
                let mut p = view(&m.message, Some(m.packet_id));
                p.dup = true;
                let _ = p.encode(version, tx);
                conn.per_message_mut().outbound.push_back((
                    m.packet_id,
                    OutState::Published,
                    m.message,
                ));
            }
        }
        conn.per_message_mut()
            .outbound_queue
            .extend(inflight.queued);
        self.fill_window();
    }

    /// Sends queued messages while the outbound window has room.
    fn fill_window(&mut self) {
        while self.stage.conn().is_some_and(|c| {
            !c.per_message().outbound_queue.is_empty()
                && c.per_message().outbound.len() < self.window()
        }) {
            let Some(msg) = self
                .stage
                .conn_mut()
                .and_then(|c| c.per_message_mut().outbound_queue.pop_front())
            else {
                break;
            };
            self.send_outbound(msg);
        }
    }

    pub(super) fn window(&self) -> usize {
        let client = self.stage.conn().map_or(u16::MAX, |c| c.client_receive_max);
        usize::from(client.min(self.config.max_outbound_inflight))
    }

    pub(super) fn send_outbound(&mut self, msg: OutboundMessage) {
        let version = self.version;
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        let Some(id) = next_free_id(conn) else {
            conn.per_message_mut().outbound_queue.push_front(msg);
            return;
        };
        let mut p = view(&msg, Some(id));
        alias_topic(conn, &mut p);
        // The hub keeps the message for redelivery on a later connection; a
        // connection itself never resends [MQTT-4.4.0-1].
        let tx = Io::of(&mut self.io, &self.config, self.state, version).reserve_tx();
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        if p.encode(version, tx).is_ok() {
            let seq = msg.seq;
            conn.per_message_mut()
                .outbound
                .push_back((id, OutState::Published, msg));
            if let Some(seq) = seq {
                self.push(Action::Progress(Progress::Sent { seq, packet_id: id }));
            }
        }
    }

    /// Whether this session reports its inbound QoS 2 exchanges to a
    /// durable hub: it outlives its connection.
    fn keeps_inbound(&self) -> bool {
        self.config.durable && self.session_expiry_interval().is_some_and(|e| e > 0)
    }

    pub(super) fn on_pubrec(&mut self, now: Now, r: PubRec) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        match conn
            .per_message_mut()
            .outbound
            .iter_mut()
            .find(|(id, state, _)| *id == r.packet_id && *state == OutState::Published)
        {
            Some(entry) if !r.reason_code.is_error() => {
                entry.1 = OutState::Released;
                let seq = entry.2.seq;
                self.send(&Packet::PubRel(PubRel::new(r.packet_id)));
                if let Some(seq) = seq {
                    self.push(Action::Progress(Progress::Released {
                        seq,
                        packet_id: r.packet_id,
                    }));
                }
            }
            Some(_) => self.on_outbound_ack(now, r.packet_id, OutState::Published),
            None if self.version == ProtocolVersion::V5 => {
                self.send(&Packet::PubRel(PubRel::with_reason(
                    r.packet_id,
                    PubRelReasonCode::PacketIdentifierNotFound,
                )));
            }
            None => self.send(&Packet::PubRel(PubRel::new(r.packet_id))),
        }
    }

    /// Completes an outbound exchange and sends what waited for the window.
    pub(super) fn on_outbound_ack(&mut self, now: Now, id: PacketId, expected: OutState) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        if let Some(i) = conn
            .per_message()
            .outbound
            .iter()
            .position(|(pid, state, _)| *pid == id && *state == expected)
            && let Some((_, _, msg)) = conn.per_message_mut().outbound.remove(i)
            && let Some(seq) = msg.seq
        {
            self.push(Action::Progress(Progress::Completed { seq }));
        }
        self.fill_window();
        // Taking a message is progress; under half its bound, no longer
        // behind.
        let congested = self.is_congested();
        if let Some(conn) = self.stage.conn_mut()
            && conn.per_message().stalled_since.is_some()
        {
            conn.per_message_mut().stalled_since = congested.then_some(now.mono);
        }
    }

    /// The answer to an [`Action::Authorize`].
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no authorization is waiting for it.
    pub fn handle_authorization(
        &mut self,
        now: Now,
        ticket: Ticket,
        decision: Decision,
    ) -> Result<(), SessionError> {
        if self.state == State::CheckingWill && self.is_last_ticket(ticket) {
            self.on_will_checked(now, decision);
            return Ok(());
        }
        if self.state != State::Connected {
            return Err(SessionError::UnknownTicket(ticket));
        }
        let Some(conn) = self.stage.conn_mut() else {
            return Err(SessionError::UnknownTicket(ticket));
        };
        if let Some(kept) = conn.kept_mut()
            && kept.will_recheck.as_ref().is_some_and(|w| w.0 == ticket)
            && let Some(waiting) = kept.will_recheck.take()
        {
            self.on_will_rechecked(now, waiting.1, decision);
            return Ok(());
        }
        // Moved to the one request that waits for it (tickets are unique).
        let mut answer = Some(decision);
        for p in conn.per_message_mut().pending.iter_mut() {
            match p {
                Pending::Publish {
                    ticket: t,
                    decision: d,
                    ..
                } if *t == ticket && d.is_none() => {
                    *d = answer.take();
                }
                Pending::Subscribe { slots, .. } => {
                    for slot in slots.iter_mut() {
                        if matches!(slot, Slot::Waiting(t, _) if *t == ticket)
                            && let Slot::Waiting(_, query) = std::mem::replace(
                                slot,
                                Slot::Refused(SubAckReasonCode::UnspecifiedError),
                            )
                            && let Some(decision) = answer.take()
                        {
                            *slot = Slot::Decided(query, decision);
                        }
                    }
                }
                Pending::Publish { .. } => {}
            }
            if answer.is_none() {
                break;
            }
        }
        if answer.is_some() {
            return Err(SessionError::UnknownTicket(ticket));
        }
        self.drain_pending(now);
        Ok(())
    }
}

/// The publish out of `p`, which keeps only empty parts.
fn take_publish(p: &mut Publish) -> Publish {
    Publish {
        dup: p.dup,
        qos: p.qos,
        retain: p.retain,
        topic: p.topic.take(),
        packet_id: p.packet_id,
        properties: std::mem::take(&mut p.properties),
        payload: std::mem::take(&mut p.payload),
    }
}

/// The client's queue went past its bound: it stalls from now, unless it
/// already did.
fn stalled(conn: &mut Conn, now: Now) {
    let since = &mut conn.per_message_mut().stalled_since;
    since.get_or_insert(now.mono);
}

pub(super) fn next_free_id(conn: &mut Conn) -> Option<PacketId> {
    for _ in 0..u16::MAX {
        conn.next_packet_id = conn.next_packet_id.checked_add(1).unwrap_or(1);
        let id = PacketId::new(conn.next_packet_id)?;
        if !conn
            .per_message()
            .outbound
            .iter()
            .any(|(pid, _, _)| *pid == id)
        {
            return Some(id);
        }
    }
    None
}

/// Replaces the topic by an alias the client already knows, or teaches it a
/// new one (MQTT 5.0 §3.3.2.3.4): a free alias while there is one, then the
/// oldest assignment's, round robin — a PUBLISH with both the topic and
/// the alias sets the client's mapping anew.
fn alias_topic(conn: &mut Conn, p: &mut PublishView<'_>) {
    if conn.client_alias_max == 0 {
        return;
    }
    let Some(topic) = p.topic else {
        return;
    };
    if let Some(i) = conn
        .per_message()
        .aliases_out
        .iter()
        .position(|t| t == topic)
    {
        p.topic = None;
        p.topic_alias = u16::try_from(i + 1)
            .ok()
            .and_then(std::num::NonZeroU16::new);
    } else {
        let max = usize::from(conn.client_alias_max);
        let table = conn.per_message_mut();
        // Kept for the connection's life: copied out of the publisher's
        // read buffer.
        let index = if table.aliases_out.len() < max {
            table.aliases_out.push(topic.detached());
            table.aliases_out.len() - 1
        } else {
            let index = usize::from(table.alias_next) % max;
            table.aliases_out[index] = topic.detached();
            index
        };
        table.alias_next = u16::try_from((index + 1) % max).unwrap_or(0);
        p.topic_alias = u16::try_from(index + 1)
            .ok()
            .and_then(std::num::NonZeroU16::new);
    }
}

/// A kept message as a PUBLISH to encode, without copying it into one.
fn view(msg: &OutboundMessage, packet_id: Option<PacketId>) -> PublishView<'_> {
    PublishView {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: Some(&msg.topic),
        packet_id,
        topic_alias: msg.properties.topic_alias,
        properties: &msg.properties,
        payload: &msg.payload,
    }
}
