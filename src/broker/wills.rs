//! Every step of a will's life once its session handed it up, in one room.
//!
//! The session keeps what is per connection: the will registered at
//! CONNECT, its check then and after a re-authentication, DISCONNECT 0x00
//! deleting it, and the trigger that hands it up with the identity it must
//! be authorized against ([`session::Action::DeliverWill`]). From there on
//! it is the hub's, and every rule is here:
//!
//! ```text
//! armed (durable: kept from the CONNACK on) ── crash ── restart ──▶ triggered (server_crashed)
//! triggered ─┬─ no delay, or shutting down ───────────────▶ sent
//!            └─ delayed ─┬─ due ──────────────────────────▶ sent
//!                        ├─ the client came back ─────────▶ cancelled [MQTT-3.1.3-9]
//!                        ├─ its session ended ────────────▶ sent now (§3.1.3.2.2)
//!                        └─ shutdown ── ShutdownWills ────▶ paused (resumes after the
//!                                                           restart), sent now or cancelled
//! sent ── authorized against its identity snapshot (never re-authenticated)
//!      ─┬─ Allow ─▶ delivered (retained if flagged, routed as a PUBLISH)
//!       └─ Deny ──▶ denied; nothing is published
//! ```
//!
//! A will is decided once and delivered at most once; each step is one
//! audit record ([`AuditRecord::will`]). `tests/hub_wills.rs` has a
//! scenario for each.
//!
//! A durable hub keeps each will ([`Persist::Will`]) from the CONNACK that
//! registered it to its decision ([`Persist::WillDone`], in the same commit
//! as what delivering it changed): a restart finds every will that was not
//! decided, and decides it once.

use super::*;
use crate::auth::WillTrigger;
use crate::codec::LastWill;

/// A will waiting out its delay, in its session's away state.
#[derive(Debug)]
pub(super) struct DelayedWill {
    pub(super) due: Box<DueWill>,
    /// When it is due.
    pub(super) at: Instant,
    /// Its record, in a durable hub.
    pub(super) record: Option<WillKey>,
}

impl Broker {
    /// A session handed its will up: send it now, or when its delay is over
    /// (the smaller of Will Delay Interval and Session Expiry Interval,
    /// §3.1.3.2.2).
    pub(super) fn will_triggered(
        &mut self,
        now: Now,
        key: Option<SessionKey>,
        due: Box<DueWill>,
        record: Option<WillKey>,
    ) {
        let delay = will_delay(&due);
        if self.shut_down {
            match self.config.shutdown_wills {
                ShutdownWills::Drop => {
                    self.cancel_will(now, &due, "server shutting down", record);
                    return;
                }
                ShutdownWills::Resume if record.is_some() => {
                    let left = u32::try_from(delay.as_secs()).unwrap_or(u32::MAX);
                    self.pause_will(now, due, record, left);
                    return;
                }
                ShutdownWills::Resume | ShutdownWills::SendNow => {}
            }
        }
        self.delay_will(now, key, due, record, delay);
    }

    /// A triggered will waits `delay` seconds for its client to come back
    /// (none: it is sent now); a durable hub keeps it with the date it is
    /// due.
    fn delay_will(
        &mut self,
        now: Now,
        key: Option<SessionKey>,
        due: Box<DueWill>,
        record: Option<WillKey>,
        delay: Duration,
    ) {
        let state = WillState::Triggered {
            trigger: due.trigger,
            triggered_at: due.triggered_at.wall,
            due: now.wall + delay,
        };
        self.keep_will(
            record,
            due.will.clone(),
            due.identity.clone(),
            due.session_expiry_interval,
            state,
        );
        let session = key.filter(|_| !delay.is_zero() && !self.shut_down);
        let Some(s) = session.and_then(|key| self.store.session_mut(key)) else {
            self.send_will(now, key, due, record);
            return;
        };
        if let Some(earlier) = s.take_will(None) {
            // One will waits per session: of two, the one triggered first
            // goes now and the other waits — as live, where the one waiting
            // is always the older. Restored wills come in the store's
            // order, not their age: a restored one may be the older. At the
            // same date, one triggered by the restart itself (it was armed
            // at the crash) is the newer.
            let age = |d: &DueWill| (d.triggered_at.wall, d.trigger == WillTrigger::ServerCrashed);
            if age(&due) < age(&earlier.due) {
                s.away().will = Some(earlier);
                self.send_will(now, key, due, record);
                return;
            }
            if let Some(key) = key {
                self.store.cancel_deadline(Timer::Will(key), earlier.at);
            }
            self.send_will(now, key, earlier.due, earlier.record);
        }
        let Some(s) = session.and_then(|key| self.store.session_mut(key)) else {
            self.send_will(now, key, due, record);
            return;
        };
        let at = now.mono + delay;
        // For the operator: the date it is due, as the wall clock reads now.
        let audit = will_record(
            now,
            &due,
            WillOutcome::Delayed {
                until: now.wall + delay,
            },
        );
        s.away().will = Some(DelayedWill { due, at, record });
        if let Some(key) = key {
            self.store.set_deadline(Timer::Will(key), at);
        }
        self.audit(audit);
    }

    /// A planned shutdown: the will is kept with `left` seconds of its
    /// delay to run after the restart.
    fn pause_will(&mut self, now: Now, due: Box<DueWill>, record: Option<WillKey>, left: u32) {
        let state = WillState::Paused {
            trigger: due.trigger,
            triggered_at: due.triggered_at.wall,
            left,
        };
        self.audit(will_record(now, &due, WillOutcome::Paused { left }));
        let DueWill {
            will,
            identity,
            session_expiry_interval,
            ..
        } = *due;
        self.keep_will(record, will, identity, session_expiry_interval, state);
    }

    /// The wills the host's store kept, handed back after the sessions
    /// ([`Broker::restore_all`]). Each is decided once from here:
    /// - one whose connection was open when the broker went down (a crash)
    ///   is triggered now ([`WillTrigger::ServerCrashed`], audited), its
    ///   delay counted from now;
    /// - one paused by a planned shutdown waits what was left of its delay;
    /// - one already triggered is due at its date, or now if that passed.
    ///
    /// A will waits in its restored session — its client coming back in
    /// time cancels it [MQTT-3.1.3-9] — or, without one, is sent now. Each
    /// is authorized when sent, against its stored identity and the ACL in
    /// force then.
    pub fn restore_wills(&mut self, now: Now, wills: impl IntoIterator<Item = WillRecord>) {
        for r in wills {
            // New wills are keyed in an epoch of their own.
            self.epoch = self.epoch.max(r.key.epoch.saturating_add(1));
            let key = self
                .store
                .find_session(&r.client_id)
                .filter(|k| self.store.session(*k).is_some_and(|s| s.conn().is_none()));
            let (trigger, triggered_at, left) = match r.state {
                WillState::Armed => (WillTrigger::ServerCrashed, now.wall, None),
                WillState::Triggered {
                    trigger,
                    triggered_at,
                    due,
                } => (
                    trigger,
                    triggered_at,
                    Some(due.saturating_duration_since(now.wall)),
                ),
                WillState::Paused {
                    trigger,
                    triggered_at,
                    left,
                } => (trigger, triggered_at, Some(secs(left))),
            };
            let due = Box::new(DueWill {
                will: r.will,
                identity: r.identity,
                trigger,
                triggered_at: Now::new(now.mono, triggered_at),
                session_expiry_interval: r.session_expiry_interval,
            });
            if r.state == WillState::Armed {
                self.audit(will_record(now, &due, WillOutcome::Triggered));
            }
            let full = will_delay(&due);
            let delay = left.map_or(full, |l| l.min(full));
            self.delay_will(now, key, due, Some(r.key), delay);
        }
    }

    /// The key of the will `conn` registered, in a durable hub.
    pub(super) fn will_key(&self, conn: ConnId) -> Option<WillKey> {
        self.config.durable.then_some(WillKey {
            epoch: self.epoch,
            conn: conn.0,
        })
    }

    /// A durable hub keeps where the will of `record` stands now.
    pub(super) fn keep_will(
        &mut self,
        record: Option<WillKey>,
        will: LastWill,
        identity: Arc<Identity>,
        session_expiry_interval: u32,
        state: WillState,
    ) {
        let Some(key) = record else {
            return;
        };
        self.persist(Persist::Will(WillRecord {
            client_id: identity.client_id.clone(),
            key,
            will,
            identity,
            session_expiry_interval,
            state,
        }));
    }

    /// The will of `record` is over: its record goes.
    fn will_done(&mut self, due: &DueWill, record: Option<WillKey>) {
        if let Some(key) = record {
            self.persist(Persist::WillDone {
                client_id: due.identity.client_id.clone(),
                key,
            });
        }
    }

    /// A delayed will's timer came: it is sent, if it is still waiting.
    pub(super) fn will_due(&mut self, now: Now, key: SessionKey) {
        let Some(s) = self.store.session_mut(key) else {
            return;
        };
        if let Some(w) = s.take_will(Some(now.mono)) {
            self.send_will(now, Some(key), w.due, w.record);
        }
    }

    /// The client came back to its session before its will was due: the
    /// will is cancelled [MQTT-3.1.3-9].
    pub(super) fn will_on_resume(&mut self, now: Now, key: SessionKey, will: Option<DelayedWill>) {
        if let Some(w) = will {
            self.store.cancel_deadline(Timer::Will(key), w.at);
            self.cancel_will(now, &w.due, "the client reconnected", w.record);
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
            self.send_will(now, Some(key), w.due, w.record);
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
                ShutdownWills::Resume if w.record.is_some() => {
                    let left = super::secs_left(w.at, now.mono);
                    self.pause_will(now, w.due, w.record, left);
                }
                ShutdownWills::Resume | ShutdownWills::SendNow => {
                    self.send_will(now, Some(key), w.due, w.record);
                }
                ShutdownWills::Drop => {
                    self.cancel_will(now, &w.due, "server shutting down", w.record);
                }
            }
        }
    }

    fn cancel_will(&mut self, now: Now, due: &DueWill, reason: &str, record: Option<WillKey>) {
        let reason = reason.to_owned();
        self.audit(will_record(now, due, WillOutcome::Cancelled { reason }));
        self.will_done(due, record);
    }

    /// The will is due: authorize it against its identity snapshot — never
    /// re-authenticate — and publish it on Allow.
    fn send_will(
        &mut self,
        now: Now,
        key: Option<SessionKey>,
        due: Box<DueWill>,
        record: Option<WillKey>,
    ) {
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
                exclusions: Default::default(),
            };
            self.will_decided(now, key, *due, query, decision, record);
            return;
        }
        let decision = self
            .shared
            .authorizer()
            .and_then(|a| a.authorize(&query.as_request()));
        match decision {
            Some(decision) => self.will_decided(now, key, *due, query, decision, record),
            None => {
                let q = query.clone();
                let ticket = self.ticket(Pending::Will {
                    key,
                    due,
                    query: q,
                    record,
                });
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
        key: Option<SessionKey>,
        due: DueWill,
        query: AuthzQuery,
        decision: Decision,
        record: Option<WillKey>,
    ) {
        let allowed = decision.is_allowed();
        let audit = will_record(
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
        // Decided: its record goes in the same commit as what it changes.
        self.will_done(&due, record);
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
            let from = key.filter(|key| self.store.session(*key).is_some());
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
        self.audit(audit);
    }
}

/// How long a triggered will waits: the smaller of its Will Delay Interval
/// and its session's expiry interval (§3.1.3.2.2).
fn will_delay(due: &DueWill) -> Duration {
    secs(
        due.will
            .properties
            .will_delay_interval
            .unwrap_or(0)
            .min(due.session_expiry_interval),
    )
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
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
