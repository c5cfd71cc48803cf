//! Wills: delayed, cancelled, or authorized when they are sent — against the
//! identity of the session's last successful authentication, never by
//! authenticating again.

use super::*;

impl Broker {
    /// A session handed its will up: send it now, or when its delay is over
    /// (the smaller of Will Delay Interval and Session Expiry Interval,
    /// §3.1.3.2.2).
    pub(super) fn will_triggered(&mut self, now: Now, key: SessionKey, due: Box<DueWill>) {
        if self.shut_down && self.config.shutdown_wills == ShutdownWills::Drop {
            self.cancel_will(now, &due, "server shutting down");
            return;
        }
        let delay = due
            .will
            .properties
            .will_delay_interval
            .unwrap_or(0)
            .min(due.session_expiry_interval);
        if delay == 0 || self.shut_down {
            self.send_will(now, key, due);
            return;
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            self.send_will(now, key, due);
            return;
        };
        let delay = Duration::from_secs(u64::from(delay));
        let at = now.mono + delay;
        let record = AuditRecord::Will {
            at: now.wall,
            identity: due.identity.clone(),
            topic: due.will.topic.as_mqtt_str().clone(),
            trigger: Some(due.trigger),
            // For the operator: the date it is due, as the wall clock reads now.
            outcome: WillOutcome::Delayed {
                until: now.wall + delay,
            },
        };
        s.away().will = Some(DelayedWill { due, at });
        self.timers.insert((at, Timer::Will(key).pack()));
        self.audit(record);
    }

    pub(super) fn cancel_will(&mut self, now: Now, due: &DueWill, reason: &str) {
        self.audit(AuditRecord::Will {
            at: now.wall,
            identity: due.identity.clone(),
            topic: due.will.topic.as_mqtt_str().clone(),
            trigger: Some(due.trigger),
            outcome: WillOutcome::Cancelled {
                reason: reason.to_owned(),
            },
        });
    }

    /// The will is due: authorize it against its identity snapshot — never
    /// re-authenticate — and publish it on Allow.
    pub(super) fn send_will(&mut self, now: Now, key: SessionKey, due: Box<DueWill>) {
        let will = &due.will;
        let query = AuthzQuery {
            identity: due.identity.clone(),
            op: Operation::Will,
            topic: will.topic.as_mqtt_str().clone(),
            qos: will.qos,
            retain: will.retain,
            will_trigger: Some(due.trigger),
        };
        let exp = due.identity.expires_at;
        let too_late = match self.config.will_after_expiry {
            WillAfterExpiry::Identity => false,
            // `exp` is a wall-clock date: judged by the wall clock.
            WillAfterExpiry::Strict => exp.is_some_and(|e| due.triggered_at.wall > e),
            WillAfterExpiry::Grace(grace) => exp.is_some_and(|e| due.triggered_at.wall > e + grace),
        };
        if too_late {
            let decision = Decision {
                effect: Effect::Deny,
                decided_by: DecidedBy::WillAfterExpiry,
            };
            self.will_decided(now, key, *due, query, decision);
            return;
        }
        let decision = self
            .shared
            .authorizer()
            .and_then(|a| a.authorize(&query.as_request()));
        match decision {
            Some(decision) => self.will_decided(now, key, *due, query, decision),
            None => {
                let q = query.clone();
                let ticket = self.ticket(Pending::Will { key, due, query: q });
                self.actions.push_back(Action::Authorize {
                    ticket,
                    conn: None,
                    query,
                });
            }
        }
    }

    pub(super) fn will_decided(
        &mut self,
        now: Now,
        key: SessionKey,
        due: DueWill,
        query: AuthzQuery,
        decision: Decision,
    ) {
        let allowed = decision.is_allowed();
        let record = AuditRecord::Will {
            at: now.wall,
            identity: due.identity.clone(),
            topic: due.will.topic.as_mqtt_str().clone(),
            trigger: Some(due.trigger),
            outcome: if allowed {
                WillOutcome::Delivered
            } else {
                WillOutcome::Denied {
                    decision: decision.clone(),
                }
            },
        };
        self.audit(AuditRecord::authorization(now.wall, query, decision));
        if allowed {
            let will = due.will;
            let w = &*will.properties;
            // Published exactly as the client would have: every will
            // property, User Property order kept [MQTT-3.1.3-10].
            let properties = PublishProperties {
                payload_format_indicator: w.payload_format_indicator,
                message_expiry_interval: w.message_expiry_interval,
                topic_alias: None,
                extras: Properties::from(PublishExtras {
                    content_type: w.content_type.clone(),
                    response_topic: w.response_topic.clone(),
                    correlation_data: w.correlation_data.clone(),
                    user_properties: w.user_properties.clone(),
                    ..PublishExtras::default()
                }),
            };
            if will.retain {
                self.retain(now, &will.topic, &will.payload, will.qos, &properties);
            }
            // No Local still knows the client when its session lives on.
            let from = self.sessions.contains_key(&key).then_some(key);
            self.route(
                now,
                from,
                &will.topic,
                &will.payload,
                will.qos,
                will.retain,
                &properties,
            );
        }
        self.audit(record);
    }
}
