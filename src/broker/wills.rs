//! Every step of a will's life once its session handed it up, in one room.
//!
//! The session keeps what is per connection: the will registered at
//! CONNECT, its check then and after a re-authentication, DISCONNECT 0x00
//! deleting it, and the trigger that hands it up with the identity it must
//! be authorized against ([`session::Action::DeliverWill`]). From there on
//! it is the hub's, and every rule is here:
//!
//! ```text
//! triggered ─┬─ no delay, or shutting down ───────────────▶ sent
//!            └─ delayed ─┬─ due ──────────────────────────▶ sent
//!                        ├─ the client came back ─────────▶ cancelled [MQTT-3.1.3-9]
//!                        ├─ its session ended ────────────▶ sent now (§3.1.3.2.2)
//!                        └─ shutdown ── ShutdownWills ────▶ sent now or cancelled
//! sent ── authorized against its identity snapshot (never re-authenticated)
//!      ─┬─ Allow ─▶ delivered (retained if flagged, routed as a PUBLISH)
//!       └─ Deny ──▶ denied; nothing is published
//! ```
//!
//! A will is decided once and delivered at most once; each step is one
//! audit record ([`AuditRecord::will`]). `tests/hub_wills.rs` has a
//! scenario for each.

use super::*;

/// A will waiting out its delay, in its session's away state.
#[derive(Debug)]
pub(super) struct DelayedWill {
    pub(super) due: Box<DueWill>,
    /// When it is due.
    pub(super) at: Instant,
}

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
        let Some(s) = self.store.session_mut(key) else {
            self.send_will(now, key, due);
            return;
        };
        let delay = Duration::from_secs(u64::from(delay));
        let at = now.mono + delay;
        // For the operator: the date it is due, as the wall clock reads now.
        let record = will_record(
            now,
            &due,
            WillOutcome::Delayed {
                until: now.wall + delay,
            },
        );
        s.away().will = Some(DelayedWill { due, at });
        self.store.set_deadline(Timer::Will(key), at);
        self.audit(record);
    }

    /// A delayed will's timer came: it is sent, if it is still waiting.
    pub(super) fn will_due(&mut self, now: Now, key: SessionKey) {
        let Some(s) = self.store.session_mut(key) else {
            return;
        };
        if let Some(w) = s.take_will(Some(now.mono)) {
            self.send_will(now, key, w.due);
        }
    }

    /// The client came back to its session before its will was due: the
    /// will is cancelled [MQTT-3.1.3-9].
    pub(super) fn will_on_resume(&mut self, now: Now, key: SessionKey, will: Option<DelayedWill>) {
        if let Some(w) = will {
            self.store.cancel_deadline(Timer::Will(key), w.at);
            self.cancel_will(now, &w.due, "the client reconnected");
        }
    }

    /// The session ended (expired, or a clean start took its client id)
    /// with its will still waiting: it is sent now (§3.1.3.2.2).
    pub(super) fn will_at_session_end(
        &mut self,
        now: Now,
        key: SessionKey,
        will: Option<DelayedWill>,
    ) {
        if let Some(w) = will {
            self.store.cancel_deadline(Timer::Will(key), w.at);
            self.send_will(now, key, w.due);
        }
    }

    /// The server shuts down: every will still waiting is sent now or
    /// dropped, as [`BrokerConfig::shutdown_wills`] says. (The wills of the
    /// connections it closes follow the same setting, in
    /// [`Broker::will_triggered`].)
    pub(super) fn wills_at_shutdown(&mut self, now: Now) {
        for key in self.store.session_keys() {
            let Some(w) = self.store.session_mut(key).and_then(|s| s.take_will(None)) else {
                continue;
            };
            self.store.cancel_deadline(Timer::Will(key), w.at);
            match self.config.shutdown_wills {
                ShutdownWills::SendNow => self.send_will(now, key, w.due),
                ShutdownWills::Drop => self.cancel_will(now, &w.due, "server shutting down"),
            }
        }
    }

    fn cancel_will(&mut self, now: Now, due: &DueWill, reason: &str) {
        let reason = reason.to_owned();
        self.audit(will_record(now, due, WillOutcome::Cancelled { reason }));
    }

    /// The will is due: authorize it against its identity snapshot — never
    /// re-authenticate — and publish it on Allow.
    fn send_will(&mut self, now: Now, key: SessionKey, due: Box<DueWill>) {
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

    /// The decision on a will came (on the spot, or as the host's answer):
    /// delivered on Allow, denied otherwise; either way it is over.
    pub(super) fn will_decided(
        &mut self,
        now: Now,
        key: SessionKey,
        due: DueWill,
        query: AuthzQuery,
        decision: Decision,
    ) {
        let allowed = decision.is_allowed();
        let record = will_record(
            now,
            &due,
            if allowed {
                WillOutcome::Delivered
            } else {
                WillOutcome::Denied {
                    decision: decision.clone(),
                }
            },
        );
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
            let from = self.store.session(key).is_some().then_some(key);
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

/// The record of a step of `due`'s life at `now`.
fn will_record(now: Now, due: &DueWill, outcome: WillOutcome) -> AuditRecord {
    AuditRecord::will(
        now.wall,
        &due.identity,
        &due.will,
        Some(due.trigger),
        outcome,
    )
}
