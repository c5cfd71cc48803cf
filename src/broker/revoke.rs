//! Authorization that stays live on existing subscriptions. When the ACL
//! changes (a reload, SIGHUP), every subscription of every session —
//! connected or stored — is judged again against the rules in force, with
//! the identity of its session; after a re-authentication, the session's
//! own are judged with its new identity; at a restart, the restored ones
//! are judged against the rules the broker starts with. One no longer
//! allowed is removed (its authorization record says `decision=deny`), and
//! with [`OnRevoke::Disconnect`] its connection is closed (5.0: DISCONNECT
//! 0x87 Not authorized); one still allowed takes the carve-outs the new
//! rules give it. A host policy that answers asynchronously is not asked
//! again: its grants stand until the next one.

use super::*;
use crate::auth::{AuthzQuery, DropReason, Exclusions, Identity, Operation};
use crate::codec::TopicFilter;
use crate::session::Authorizer;
use crate::session::OutboundMessage;

impl Broker {
    /// Judges every session's subscriptions again against the synchronous
    /// authorizer in force ([`Broker::set_authorizer`]); see the module
    /// docs.
    pub fn reauthorize_subscriptions(&mut self, now: Now) {
        let Some(authorizer) = self.shared.authorizer().cloned() else {
            return;
        };
        for key in self.store.session_keys() {
            let Some(identity) = self.session_identity(key) else {
                // A session whose identity is not known (a record written
                // before it was kept) keeps what it was granted.
                continue;
            };
            if self.reauthorize_session(now, key, &identity, &authorizer) {
                self.persist_session_as_is(now, key);
            }
        }
        self.flush_dirty(now);
    }

    /// A connected session re-authenticated: its subscriptions are judged
    /// with the new identity, and its record keeps that identity.
    pub(super) fn reauthenticated(&mut self, now: Now, key: SessionKey, identity: &Arc<Identity>) {
        if let Some(authorizer) = self.shared.authorizer().cloned() {
            self.reauthorize_session(now, key, identity, &authorizer);
        }
        self.persist_connected_session(key);
    }

    /// The identity a session's subscriptions are judged with: its
    /// connection's, or the one it left with.
    fn session_identity(&self, key: SessionKey) -> Option<Arc<Identity>> {
        let s = self.store.session(key)?;
        match s.conn() {
            Some(id) => self.store.conn(id)?.session.identity().cloned(),
            None => s.away_identity().cloned(),
        }
    }

    /// Judges one session's subscriptions; whether any changed.
    fn reauthorize_session(
        &mut self,
        now: Now,
        key: SessionKey,
        identity: &Arc<Identity>,
        authorizer: &Arc<dyn Authorizer>,
    ) -> bool {
        let Some(s) = self.store.session(key) else {
            return false;
        };
        let conn = s.conn();
        let filters = s.filters().to_vec();
        let mut changed = false;
        let mut revoked = false;
        for filter in filters {
            let Some(sub) = self.tree.find(key, &filter) else {
                continue;
            };
            let query = AuthzQuery {
                identity: identity.clone(),
                op: Operation::Subscribe,
                topic: filter.as_mqtt_str().clone(),
                qos: sub.options.qos,
                retain: false,
                will_trigger: None,
            };
            let Some(decision) = authorizer.authorize(&query.as_request()) else {
                continue;
            };
            if decision.is_allowed() {
                if decision.exclusions != sub.exclusions {
                    let mut renewed = sub.clone();
                    renewed.exclusions = decision.exclusions.clone();
                    self.add_subscription(renewed);
                    self.audit(AuditRecord::authorization(now.wall, query, decision));
                    changed = true;
                }
                continue;
            }
            self.audit(AuditRecord::authorization(now.wall, query, decision));
            self.remove_subscription(key, &filter);
            if let Some(s) = self.store.session_mut(key) {
                s.remove_filter(&filter);
            }
            if let Some(c) = conn.and_then(|id| self.store.conn_mut(id)) {
                c.session.forget_subscription(&filter);
            }
            changed = true;
            revoked = true;
        }
        if changed {
            self.drop_unrouted(now, key);
        }
        if revoked
            && self.config.on_revoke == OnRevoke::Disconnect
            && let Some(id) = conn
            && let Some(c) = self.store.conn_mut(id)
        {
            // Its actions run with the connection's next drain: the one
            // this call is part of, or the hub's flush of written ones.
            c.session.handle_revoked(now);
            self.store.mark_written(id);
        }
        changed
    }

    /// After a session's subscriptions changed: the messages it has not
    /// been sent yet — queued while it is away, or waiting for its window —
    /// that none of its subscriptions would route any more are dropped
    /// (audited `reason=revoked`). A message already sent with a packet id
    /// finishes its exchange [MQTT-4.4.0-1].
    fn drop_unrouted(&mut self, now: Now, key: SessionKey) {
        let Some(s) = self.store.session(key) else {
            return;
        };
        let conn = s.conn();
        let routes: Vec<(TopicFilter, Exclusions)> = s
            .filters()
            .iter()
            .filter_map(|f| Some((f.clone(), self.tree.find(key, f)?.exclusions.clone())))
            .collect();
        let routed = |m: &OutboundMessage| {
            routes
                .iter()
                .any(|(f, x)| f.matches(&m.topic) && !x.excludes(&m.topic))
        };
        let (client_id, dropped) = match conn {
            Some(id) => {
                let Some(c) = self.store.conn_mut(id) else {
                    return;
                };
                let dropped = c.session.drop_queued(routed);
                let Some(client_id) = c.session.client_id_shared().cloned() else {
                    return;
                };
                if !dropped.is_empty() {
                    // Its next drain relieves the publishers it slowed.
                    self.store.mark_written(id);
                }
                (client_id, dropped)
            }
            None => {
                let Some(s) = self.store.session_mut(key) else {
                    return;
                };
                let away = s.away();
                let mut dropped = Vec::new();
                away.inflight.queued.retain(|m| {
                    let kept = routed(m);
                    if !kept {
                        dropped.push(m.clone());
                    }
                    kept
                });
                away.offline.retain(|q| {
                    let kept = routed(&q.msg);
                    if !kept {
                        dropped.push(q.msg.clone());
                    }
                    kept
                });
                (away.client_id.clone(), dropped)
            }
        };
        for msg in &dropped {
            self.dropped(now, &client_id, msg, DropReason::Revoked);
        }
    }

    /// Keeps a persistent session's record up to date after a change the
    /// hub made itself: a connected one as [`Broker::persist_connected_session`],
    /// an away one with the date it expires.
    fn persist_session_as_is(&mut self, now: Now, key: SessionKey) {
        let Some(s) = self.store.session(key) else {
            return;
        };
        if s.conn().is_some() {
            self.persist_connected_session(key);
            return;
        }
        match s.expires_at() {
            Some(at) => {
                let left = at.saturating_duration_since(now.mono);
                let secs = secs_left(at, now.mono).clamp(1, u32::MAX - 1);
                self.persist_session(key, secs, Some(now.wall + left));
            }
            None => self.persist_session(key, u32::MAX, None),
        }
    }
}
