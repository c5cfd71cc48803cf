//! Routing: publishes to subscriptions (shared ones round-robin), the
//! retained store, offline queues.

use super::*;

impl Broker {
    pub(super) fn publish(&mut self, now: Now, from: Option<SessionKey>, msg: InboundMessage) {
        self.counted.received[msg.qos as usize] += 1;
        if msg.retain {
            self.retain(now, &msg.topic, &msg.payload, msg.qos, &msg.properties);
        }
        self.route(
            now,
            from,
            &msg.topic,
            &msg.payload,
            msg.qos,
            msg.retain,
            &msg.properties,
        );
    }

    pub(super) fn retain(
        &mut self,
        now: Now,
        topic: &TopicName,
        payload: &Bytes,
        qos: QoS,
        properties: &PublishProperties,
    ) {
        // Copied: a retained message outlives the read buffer it came in,
        // and sharing it would keep all of that buffer alive.
        let retained = Retained {
            topic: topic.detached(),
            payload: Bytes::copy_from_slice(payload),
            qos,
            properties: properties.detached(),
            stored_at: now.mono,
        };
        let durable = self.config.durable.then(|| RetainedMessage {
            topic: retained.topic.clone(),
            payload: retained.payload.clone(),
            qos,
            properties: retained.properties.clone(),
            expires_at: properties
                .message_expiry_interval
                .map(|secs| now.wall + Duration::from_secs(u64::from(secs))),
        });
        match self.retained.store(retained) {
            RetainOutcome::Stored => {
                if let Some(msg) = durable {
                    self.persist(Persist::Retain(msg));
                }
            }
            RetainOutcome::Deleted => {
                if self.config.durable {
                    self.persist(Persist::Unretain(topic.detached()));
                }
            }
            RetainOutcome::Refused(reason) => {
                self.audit(AuditRecord::RetainRefused {
                    at: now.wall,
                    topic: topic.as_mqtt_str().clone(),
                    reason,
                });
            }
        }
    }

    /// A message of the broker's own on `$SYS/…` (a topic that wildcards
    /// at the start of a filter never match, MQTT §4.7.2): retained in
    /// memory — never persisted, it is produced anew — and routed at QoS 0
    /// to the subscriptions that match it, whose grants decided who may
    /// read it. Another topic is ignored.
    pub fn publish_system(&mut self, now: Now, topic: TopicName, payload: Bytes) {
        if !topic.as_str().starts_with("$SYS/") {
            return;
        }
        let properties = PublishProperties::default();
        let retained = Retained {
            topic: topic.clone(),
            payload: payload.clone(),
            qos: QoS::AtMostOnce,
            properties: properties.clone(),
            stored_at: now.mono,
        };
        if let RetainOutcome::Refused(reason) = self.retained.store(retained) {
            self.audit(AuditRecord::RetainRefused {
                at: now.wall,
                topic: topic.as_mqtt_str().clone(),
                reason,
            });
        }
        self.route(
            now,
            None,
            &topic,
            &payload,
            QoS::AtMostOnce,
            true,
            &properties,
        );
        self.flush_dirty(now);
    }

    /// The retained messages `filter` matches, now; those found expired
    /// leave the store (and the durable one).
    fn retained_matching(&mut self, filter: &str, now: Now) -> Vec<Retained> {
        let mut expired = Vec::new();
        let found = self.retained.matching(filter, now, &mut expired);
        if self.config.durable {
            for topic in expired {
                self.persist(Persist::Unretain(topic));
            }
        }
        found
    }

    /// Delivers a message to every session with a matching subscription.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route(
        &mut self,
        now: Now,
        from: Option<SessionKey>,
        topic: &TopicName,
        payload: &Bytes,
        qos: QoS,
        retain: bool,
        properties: &PublishProperties,
    ) {
        // Reused from one publish to the next: no allocation per message.
        let mut targets = std::mem::take(&mut self.route_targets);
        targets.clear();
        let mut groups: Vec<(Box<str>, Vec<Target>)> = Vec::new();
        self.tree.for_each_match(topic.as_str(), |sub| {
            // Carved out of this subscription's grant (a deny rule beside
            // it): not through this one.
            if !sub.exclusions.is_empty() && sub.exclusions.excludes(topic) {
                return;
            }
            if sub.group().is_some() {
                let name = sub.filter.as_str();
                let t = Target::of(sub);
                match groups.iter_mut().find(|(g, _)| &**g == name) {
                    Some((_, members)) => members.push(t),
                    None => groups.push((name.into(), vec![t])),
                }
                return;
            }
            // [MQTT-3.8.3-3] No Local: not to the publisher itself.
            if sub.options.no_local && Some(sub.key) == from {
                return;
            }
            targets.push(Target::of(sub));
        });
        // One delivery per session: the highest QoS, every identifier.
        targets.sort_by_key(|t| t.key);
        targets.dedup_by(|later, first| {
            if later.key != first.key {
                return false;
            }
            first.qos = first.qos.max(later.qos);
            first.retain_as_published |= later.retain_as_published;
            first.ids.extend(later.ids.drain(..));
            true
        });
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, members) in groups {
            if let Some(t) = self.pick_member(&name, members) {
                targets.push(t);
            }
        }
        for t in targets.drain(..) {
            let mut props = properties.clone();
            if !t.ids.is_empty() {
                props.subscription_identifiers = t.ids.into_iter().collect();
            }
            let msg = OutboundMessage {
                topic: topic.clone(),
                payload: payload.clone(),
                qos: qos.min(t.qos),
                // [MQTT-3.3.1-12], [MQTT-3.3.1-13]
                retain: retain && t.retain_as_published,
                properties: props,
                seq: None,
            };
            self.deliver(now, from, t.key, msg);
        }
        self.route_targets = targets;
    }

    /// Round-robin over the group's members in subscription order: the next
    /// connected one, else the next one (to its offline queue).
    pub(super) fn pick_member(&mut self, name: &str, members: Vec<Target>) -> Option<Target> {
        let cursor = self.shares.get(name).map_or(0, |g| g.cursor);
        let n = members.len();
        let connected = |t: &Target| {
            self.store
                .session(t.key)
                .is_some_and(|s| s.conn().is_some())
        };
        let order = (0..n).map(|i| (cursor + i) % n);
        let chosen = order
            .clone()
            .find(|&i| connected(&members[i]))
            .or_else(|| order.clone().next())?;
        if let Some(g) = self.shares.get_mut(name) {
            g.cursor = (chosen + 1) % n;
        }
        members.into_iter().nth(chosen)
    }

    /// Hands a message to a session: its connection, or its offline queue.
    /// `from`: the publisher's session, which a congested subscriber slows
    /// down.
    pub(super) fn deliver(
        &mut self,
        now: Now,
        from: Option<SessionKey>,
        key: SessionKey,
        mut msg: OutboundMessage,
    ) {
        let Some(s) = self.store.session(key) else {
            return;
        };
        if let Some(id) = s.conn()
            && let Some(c) = self.store.conn(id)
            && c.session.is_connected()
        {
            // Kept only for the record a refused QoS 1/2 message gets.
            let qos = msg.qos;
            let topic = (qos != QoS::AtMostOnce).then(|| msg.topic.as_mqtt_str().clone());
            // A durable hub keeps what a persistent session is to get.
            let kept = if self.keeps(qos, c.session.session_expiry_interval().unwrap_or(0)) {
                let client_id = c.session.client_id_shared().cloned().unwrap_or_default();
                msg.seq = Some(self.next_seq());
                Some((client_id, msg.clone()))
            } else {
                None
            };
            let Some(c) = self.store.conn_mut(id) else {
                return;
            };
            match c.session.deliver(now, msg) {
                delivery @ (Delivery::Accepted | Delivery::Congested) => {
                    self.counted.delivered[qos as usize] += 1;
                    self.store.mark_written(id);
                    if let Some((client_id, msg)) = kept {
                        self.keep_message(now, client_id, msg);
                    }
                    if delivery == Delivery::Congested {
                        self.congested(id, from);
                    }
                }
                Delivery::QueueFull if let Some(topic) = topic => {
                    let client_id = c.session.client_id().unwrap_or_default().to_owned();
                    self.audit(AuditRecord::MessageDropped {
                        at: now.wall,
                        client_id,
                        topic,
                        qos,
                        reason: DropReason::QueueFull,
                    });
                }
                // Too large for this client: dropped for it (MQTT 5.0
                // §3.1.2.11.4); a QoS 0 message the client cannot take now is
                // dropped too.
                _ => {}
            }
            return;
        }
        if msg.qos == QoS::AtMostOnce {
            return;
        }
        // Copied for the same reason as a retained message. A session
        // away outlives its connection: a durable hub keeps the message.
        let mut msg = msg.detached();
        if self.keeps(msg.qos, 1) {
            msg.seq = Some(self.next_seq());
        }
        let mut lost = None;
        let mut kept = None;
        let Some(s) = self.store.session_mut(key) else {
            return;
        };
        let offline = &mut s.away().offline;
        if offline.len() >= self.config.max_offline_messages {
            match self.config.offline_overflow {
                // Never kept: no record to remove.
                OfflineOverflow::DropNewest => lost = Some(OutboundMessage { seq: None, ..msg }),
                OfflineOverflow::DropOldest => {
                    lost = offline.pop_front().map(|q| q.msg);
                    kept = msg.seq.is_some().then(|| msg.clone());
                    offline.push_back(Queued { msg, at: now.mono });
                    self.counted.queued += 1;
                }
            }
        } else {
            kept = msg.seq.is_some().then(|| msg.clone());
            offline.push_back(Queued { msg, at: now.mono });
            self.counted.queued += 1;
        }
        let client_id = self.store.client_id(key).cloned().unwrap_or_default();
        if let Some(msg) = kept {
            self.keep_message(now, client_id.clone(), msg);
        }
        if let Some(msg) = lost {
            self.dropped(now, &client_id, &msg, DropReason::QueueFull);
        }
    }

    pub(super) fn subscribe(
        &mut self,
        now: Now,
        key: SessionKey,
        granted: Vec<GrantedSubscription>,
        id: Option<SubscriptionId>,
    ) {
        let durable_change = self.config.durable && !granted.is_empty();
        for g in granted {
            let mut options = g.subscription.options;
            options.qos = g.granted_qos;
            let filter = g.subscription.filter;
            let exclusions = g.exclusions;
            let existed = self.add_subscription(Sub {
                key,
                filter: filter.clone(),
                options,
                id,
                exclusions: exclusions.clone(),
            });
            // [MQTT-3.8.4-4] Retained messages on subscribe, per Retain
            // Handling; none for shared subscriptions (§4.8.2).
            let send = match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendAtSubscribeIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            if !send || filter.shared().is_some() {
                continue;
            }
            for r in self.retained_matching(filter.as_str(), now) {
                // A carved-out topic's retained message stays with it.
                if exclusions.excludes(&r.topic) {
                    continue;
                }
                let mut properties = r.properties;
                if let Some(id) = id {
                    properties.subscription_identifiers = std::iter::once(id).collect();
                }
                let msg = OutboundMessage {
                    topic: r.topic,
                    payload: r.payload,
                    qos: r.qos.min(options.qos),
                    // [MQTT-3.3.1-9]
                    retain: true,
                    properties,
                    seq: None,
                };
                // A retained message has no publisher to slow down.
                self.deliver(now, None, key, msg);
            }
        }
        if durable_change {
            self.persist_connected_session(key);
        }
    }

    pub(super) fn unsubscribe(&mut self, key: SessionKey, filter: &TopicFilter) {
        if self.remove_subscription(key, filter)
            && let Some(s) = self.store.session_mut(key)
        {
            s.remove_filter(filter);
            self.persist_connected_session(key);
        }
    }

    /// Adds (or replaces) a session's subscription; returns whether one
    /// with its filter existed.
    pub(super) fn add_subscription(&mut self, sub: Sub) -> bool {
        let (key, filter) = (sub.key, sub.filter.clone());
        let existed = self.tree.insert(sub);
        if !existed {
            if filter.shared().is_some() {
                self.shares
                    .entry(filter.as_str().into())
                    .or_default()
                    .members += 1;
            }
            if let Some(s) = self.store.session_mut(key) {
                s.push_filter(filter);
            }
        }
        existed
    }

    pub(super) fn remove_subscription(&mut self, key: SessionKey, filter: &TopicFilter) -> bool {
        let removed = self.tree.remove(key, filter);
        if removed {
            self.left_share(filter);
        }
        removed
    }

    /// A subscription with `filter` left the tree: its share group, if it
    /// is shared, has one member less.
    pub(super) fn left_share(&mut self, filter: &TopicFilter) {
        if filter.shared().is_some()
            && let Some(g) = self.shares.get_mut(filter.as_str())
        {
            g.members -= 1;
            if g.members == 0 {
                self.shares.remove(filter.as_str());
            }
        }
    }
}

/// One subscriber of a message, with what its matching subscriptions ask.
#[derive(Debug)]
pub(super) struct Target {
    key: SessionKey,
    qos: QoS,
    retain_as_published: bool,
    ids: smallvec::SmallVec<[SubscriptionId; 2]>,
}

impl Target {
    pub(super) fn of(sub: &Sub) -> Self {
        Self {
            key: sub.key,
            qos: sub.options.qos,
            retain_as_published: sub.options.retain_as_published,
            ids: sub.id.into_iter().collect(),
        }
    }
}
