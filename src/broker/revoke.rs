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

use super::persist::StoredSubscription;
use super::*;
use crate::auth::{AuthzQuery, DropReason, Exclusions, Identity, Operation};
use crate::codec::TopicFilter;
use crate::session::Authorizer;
use crate::session::OutboundMessage;

impl Broker {
    /// Judges every session's subscriptions again against the synchronous
    /// authorizer in force ([`Broker::set_authorizer`]); see the module
    /// docs. One walk of the subscription tree: each subscription costs
    /// one decision.
    pub fn reauthorize_subscriptions(&mut self, now: Now) {
        let Some(authorizer) = self.shared.authorizer().cloned() else {
            return;
        };
        let store = &self.store;
        let mut records = Vec::new();
        let mut changed = BTreeSet::new();
        let mut revoked = Vec::new();
        self.tree.retain(|sub| {
            // A session whose identity is not known (a record written
            // before it was kept) keeps what it was granted.
            let Some(identity) = store.session_identity(sub.key) else {
                return true;
            };
            let Some((record, verdict)) = judge(&*authorizer, identity, sub, now) else {
                return true;
            };
            records.push(record);
            changed.insert(sub.key);
            match verdict {
                Verdict::Carved(exclusions) => {
                    sub.exclusions = exclusions;
                    true
                }
                Verdict::Revoked => {
                    revoked.push((sub.key, sub.filter.clone()));
                    false
                }
            }
        });
        for record in records {
            self.audit(record);
        }
        let mut lost = BTreeSet::new();
        for (key, filter) in revoked {
            self.left_share(&filter);
            self.forget_filter(key, &filter);
            lost.insert(key);
        }
        // The changed sessions' subscriptions, gathered in a second walk
        // rather than found one by one, then in the order they were made.
        let mut held: BTreeMap<SessionKey, Vec<StoredSubscription>> =
            changed.iter().map(|k| (*k, Vec::new())).collect();
        self.tree.for_each(|sub| {
            if let Some(subs) = held.get_mut(&sub.key) {
                subs.push(StoredSubscription::of(sub));
            }
        });
        for (key, mut subs) in held {
            if let Some(s) = self.store.session(key) {
                let order = s.filters();
                subs.sort_by_key(|sub| order.iter().position(|f| *f == sub.filter));
            }
            self.judged(now, key, lost.contains(&key), subs);
        }
        self.flush_dirty(now);
    }

    /// A connected session re-authenticated: its subscriptions are judged
    /// with the new identity, and its record keeps that identity.
    pub(super) fn reauthenticated(&mut self, now: Now, key: SessionKey, identity: &Arc<Identity>) {
        if let Some(authorizer) = self.shared.authorizer().cloned() {
            let filters = self.store.session(key).map(|s| s.filters().to_vec());
            let mut changed = false;
            let mut lost = false;
            for filter in filters.unwrap_or_default() {
                let Some(sub) = self.tree.find(key, &filter).cloned() else {
                    continue;
                };
                let Some((record, verdict)) = judge(&*authorizer, identity, &sub, now) else {
                    continue;
                };
                self.audit(record);
                changed = true;
                match verdict {
                    Verdict::Carved(exclusions) => {
                        let mut renewed = sub;
                        renewed.exclusions = exclusions;
                        self.add_subscription(renewed);
                    }
                    Verdict::Revoked => {
                        self.remove_subscription(key, &filter);
                        self.forget_filter(key, &filter);
                        lost = true;
                    }
                }
            }
            if changed {
                let subs = self.stored_subscriptions(key);
                self.judged(now, key, lost, subs);
                return;
            }
        }
        // The record keeps the new identity.
        self.persist_connected_session(key);
    }

    /// A revoked subscription left the tree: its session and connection
    /// forget it too.
    fn forget_filter(&mut self, key: SessionKey, filter: &TopicFilter) {
        let Some(s) = self.store.session_mut(key) else {
            return;
        };
        let conn = s.conn();
        s.remove_filter(filter);
        if let Some(c) = conn.and_then(|id| self.store.conn_mut(id)) {
            c.session.forget_subscription(filter);
        }
    }

    /// After a session's subscriptions were judged and some changed (`subs`
    /// are what it holds now): what they no longer route is not sent, its
    /// record follows, and with [`OnRevoke::Disconnect`] a connection that
    /// `lost` one is closed.
    fn judged(&mut self, now: Now, key: SessionKey, lost: bool, subs: Vec<StoredSubscription>) {
        self.drop_unrouted(now, key, &subs);
        self.persist_session_as_is(now, key, subs);
        if lost
            && self.config.on_revoke == OnRevoke::Disconnect
            && let Some(id) = self.store.session(key).and_then(StoredSession::conn)
            && let Some(c) = self.store.conn_mut(id)
        {
            // Its actions run with the connection's next drain: the one
            // this call is part of, or the hub's flush of written ones.
            c.session.handle_revoked(now);
            self.store.mark_written(id);
        }
    }

    /// After a session's subscriptions changed: the messages it has not
    /// been sent yet — queued while it is away, or waiting for its window —
    /// that none of its subscriptions would route any more are dropped
    /// (audited `reason=revoked`). A message already sent with a packet id
    /// finishes its exchange [MQTT-4.4.0-1].
    fn drop_unrouted(&mut self, now: Now, key: SessionKey, subs: &[StoredSubscription]) {
        let Some(s) = self.store.session(key) else {
            return;
        };
        let conn = s.conn();
        let routed = |m: &OutboundMessage| {
            subs.iter()
                .any(|s| s.filter.matches(&m.topic) && !s.exclusions.excludes(&m.topic))
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
    /// hub made itself: a connected one with its Session Expiry Interval,
    /// an away one with the date it expires.
    fn persist_session_as_is(&mut self, now: Now, key: SessionKey, subs: Vec<StoredSubscription>) {
        let Some(s) = self.store.session(key) else {
            return;
        };
        if let Some(id) = s.conn() {
            let interval = self
                .store
                .conn(id)
                .and_then(|c| c.session.session_expiry_interval())
                .unwrap_or(0);
            self.persist_session_with(key, interval, None, subs);
            return;
        }
        match s.expires_at() {
            Some(at) => {
                let left = at.saturating_duration_since(now.mono);
                let secs = secs_left(at, now.mono).clamp(1, u32::MAX - 1);
                self.persist_session_with(key, secs, Some(now.wall + left), subs);
            }
            None => self.persist_session_with(key, u32::MAX, None, subs),
        }
    }
}

/// What the rules in force make of a subscription.
enum Verdict {
    /// Still allowed, with other carve-outs.
    Carved(Exclusions),
    /// No longer allowed.
    Revoked,
}

/// Judges one subscription with `identity`: `None` when it stays as it is
/// (an unchanged grant is not audited again; a host policy that answers
/// later is not asked), else the decision's audit record and the verdict.
fn judge(
    authorizer: &dyn Authorizer,
    identity: &Arc<Identity>,
    sub: &Sub,
    now: Now,
) -> Option<(AuditRecord, Verdict)> {
    let query = AuthzQuery {
        identity: identity.clone(),
        op: Operation::Subscribe,
        topic: sub.filter.as_mqtt_str().clone(),
        qos: sub.options.qos,
        retain: false,
        will_trigger: None,
    };
    let decision = authorizer.authorize(&query.as_request())?;
    let verdict = if !decision.is_allowed() {
        Verdict::Revoked
    } else if decision.exclusions != sub.exclusions {
        Verdict::Carved(decision.exclusions.clone())
    } else {
        return None;
    };
    Some((
        AuditRecord::authorization(now.wall, query, decision),
        verdict,
    ))
}
