//! Authorization that stays live on existing subscriptions: when the ACL
//! changes (a reload, SIGHUP), every subscription of every session —
//! connected or stored — is judged again against the rules in force, with
//! the identity of its session. One no longer allowed is removed (its
//! authorization record says `decision=deny`); one still allowed takes the
//! carve-outs the new rules give it. A host policy that answers
//! asynchronously is not asked again: its grants stand until the next one.

use super::*;
use crate::auth::{AuthzQuery, Operation};

impl Broker {
    /// Judges every subscription again against the synchronous authorizer
    /// in force ([`Broker::set_authorizer`]); see the module docs.
    pub fn reauthorize_subscriptions(&mut self, now: Now) {
        let Some(authorizer) = self.shared.authorizer().cloned() else {
            return;
        };
        for key in self.store.session_keys() {
            let Some(s) = self.store.session(key) else {
                continue;
            };
            let conn = s.conn();
            let identity = match conn {
                Some(id) => self
                    .store
                    .conn(id)
                    .and_then(|c| c.session.identity().cloned()),
                None => s.away_identity().cloned(),
            };
            // A session whose identity is not known (a record written
            // before it was kept) keeps what it was granted.
            let Some(identity) = identity else {
                continue;
            };
            let filters = s.filters().to_vec();
            let mut changed = false;
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
            }
            if changed {
                self.persist_session_as_is(now, key);
            }
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
                let secs = u32::try_from(left.as_secs()).unwrap_or(u32::MAX - 1).max(1);
                self.persist_session(key, secs, Some(now.wall + left));
            }
            None => self.persist_session(key, u32::MAX, None),
        }
    }
}
