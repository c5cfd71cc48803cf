//! SUBSCRIBE and UNSUBSCRIBE.

use super::*;
use crate::codec::TopicFilter;

impl Session {
    pub(super) fn on_subscribe(&mut self, now: Now, s: Subscribe) {
        let v5 = self.version == ProtocolVersion::V5;
        if s.properties.subscription_identifier.is_some() && !self.config.subscription_identifiers {
            self.fail(
                now,
                DisconnectReasonCode::SubscriptionIdentifiersNotSupported,
                "subscription identifiers not supported",
                WillTrigger::ProtocolError,
            );
            return;
        }
        let Some(identity) = self.identity().cloned() else {
            return;
        };
        if self.stage.conn().is_some_and(|c| {
            c.per_message().pending.len() >= self.config.max_pending_authorizations
        }) {
            self.fail(
                now,
                DisconnectReasonCode::MessageRateTooHigh,
                "too many requests waiting for authorization",
                WillTrigger::ProtocolError,
            );
            return;
        }
        let mut slots = Vec::with_capacity(s.subscriptions.len());
        let mut requests = Vec::new();
        for sub in &s.subscriptions {
            let refused = if sub.filter.shared().is_some() && !self.config.shared_subscriptions {
                Some(SubAckReasonCode::SharedSubscriptionsNotSupported)
            } else if sub.filter.has_wildcards() && !self.config.wildcard_subscriptions {
                Some(SubAckReasonCode::WildcardSubscriptionsNotSupported)
            } else if !self.topic_fits(sub.filter.as_str()) {
                Some(SubAckReasonCode::TopicFilterInvalid)
            } else {
                None
            };
            match refused {
                Some(code) => slots.push(Slot::Refused(if v5 {
                    code
                } else {
                    SubAckReasonCode::UnspecifiedError
                })),
                None => {
                    let query = AuthzQuery {
                        identity: identity.clone(),
                        op: Operation::Subscribe,
                        topic: sub.filter.as_mqtt_str().clone(),
                        qos: sub.options.qos.min(self.config.maximum_qos),
                        retain: false,
                        will_trigger: None,
                    };
                    if let Some(decision) = self.decide_now(&query) {
                        slots.push(Slot::Decided(query, decision));
                    } else {
                        let ticket = self.ticket();
                        slots.push(Slot::Waiting(ticket, query.clone()));
                        requests.push(Action::Authorize { ticket, query });
                    }
                }
            }
        }
        if let Some(conn) = self.stage.conn_mut() {
            conn.per_message_mut()
                .pending
                .push_back(Pending::Subscribe { packet: s, slots });
        }
        for r in requests {
            self.push(r);
        }
        self.drain_pending(now);
    }

    pub(super) fn finish_subscribe(&mut self, now: Now, s: Subscribe, slots: Vec<Slot>) {
        let mut codes = Vec::with_capacity(slots.len());
        let mut granted = Vec::new();
        for (sub, slot) in s.subscriptions.into_iter().zip(slots) {
            match slot {
                Slot::Refused(code) => codes.push(code),
                Slot::Decided(query, decision) => {
                    let qos = query.qos;
                    let allowed = decision.is_allowed();
                    let exclusions = decision.exclusions.clone();
                    self.audit(AuditRecord::authorization(now.wall, query, decision));
                    if allowed && !self.remember_subscription(&sub.filter) {
                        codes.push(SubAckReasonCode::QuotaExceeded);
                    } else if allowed {
                        codes.push(SubAckReasonCode::granted(qos));
                        granted.push(GrantedSubscription {
                            subscription: sub,
                            granted_qos: qos,
                            exclusions,
                        });
                    } else {
                        codes.push(SubAckReasonCode::NotAuthorized);
                    }
                }
                Slot::Waiting(..) => codes.push(SubAckReasonCode::UnspecifiedError),
            }
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        }));
        if !granted.is_empty() {
            self.push(Action::Subscribe {
                granted,
                subscription_identifier: s.properties.subscription_identifier,
            });
        }
    }

    /// Adds a filter to the session's table; `false` when the table is full.
    fn remember_subscription(&mut self, filter: &TopicFilter) -> bool {
        let max = self.config.max_subscriptions;
        let Some(conn) = self.stage.conn_mut() else {
            return false;
        };
        if conn.subscriptions.contains(filter) {
            // A new subscription to the same filter replaces the old one.
            return true;
        }
        if conn.subscriptions.len() >= max {
            return false;
        }
        conn.subscriptions.push(filter.clone());
        true
    }

    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        let codes = u
            .filters
            .iter()
            .map(|f| {
                if conn.subscriptions.remove(f) {
                    UnsubAckReasonCode::Success
                } else {
                    UnsubAckReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Default::default(),
            reason_codes: codes,
        }));
        self.push(Action::Unsubscribe(u.filters));
    }
}
