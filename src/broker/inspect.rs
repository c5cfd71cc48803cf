//! What an operator sees of the sessions (`testament admin clients`), and
//! what an operator does to one: disconnect its client, with or without
//! its will. Reading changes nothing; a disconnection is an input like any
//! other (a host records it for replay).

use std::sync::Arc;

use super::store::StoredSession;
use super::{Broker, ConnId, SessionKey};
use crate::auth::{AuditRecord, Identity};
use crate::codec::{DisconnectReasonCode, ProtocolVersion};
use crate::time::{Now, Timestamp};

/// One session as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its client identifier.
    pub client_id: Arc<str>,
    /// Its connection, while connected.
    pub conn: Option<ConnId>,
    /// The identity of its last authentication (a stored session keeps
    /// it), if it has one.
    pub identity: Option<Arc<Identity>>,
    /// Its connection's protocol, while connected.
    pub protocol: Option<ProtocolVersion>,
    /// The topic of its will, registered or waiting out its delay.
    pub will_topic: Option<String>,
    /// While connected, its Session Expiry Interval in seconds; while
    /// away, the seconds left before it expires (`None`: never).
    pub expiry_secs: Option<u64>,
    /// How many subscriptions it holds.
    pub subscriptions: usize,
    /// Messages kept for it while away (queued and in flight).
    pub queued: usize,
}

impl SessionInfo {
    /// When the credential of its last authentication expires.
    pub fn credential_expires_at(&self) -> Option<Timestamp> {
        self.identity.as_ref()?.expires_at
    }
}

/// Why an operator's disconnection did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KickError {
    /// No session has that client id.
    #[error("no session has that client id")]
    NoSession,
    /// Its session is stored, its client not connected.
    #[error("the client is not connected")]
    NotConnected,
}

impl Broker {
    /// The sessions, connected or stored, in client-id order: at most
    /// `limit` of them, from the first whose id comes after `after`. The
    /// second value is how many sessions there are in all.
    pub fn sessions_info(
        &self,
        now: Now,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<SessionInfo>, usize) {
        let mut ids: Vec<(&Arc<str>, SessionKey)> = self
            .store
            .session_keys()
            .into_iter()
            .filter_map(|key| Some((self.store.client_id(key)?, key)))
            .collect();
        let total = ids.len();
        ids.sort_unstable();
        let start = after.map_or(0, |a| ids.partition_point(|(id, _)| &***id <= a));
        let page = ids[start.min(ids.len())..]
            .iter()
            .take(limit)
            .filter_map(|(_, key)| self.session_info(now, *key))
            .collect();
        (page, total)
    }

    /// One session, by client id.
    pub fn session_info_of(&self, now: Now, client_id: &str) -> Option<SessionInfo> {
        self.session_info(now, self.store.find_session(client_id)?)
    }

    fn session_info(&self, now: Now, key: SessionKey) -> Option<SessionInfo> {
        let stored = self.store.session(key)?;
        let client_id = self.store.client_id(key)?.clone();
        let subscriptions = stored.filters().len();
        if let Some(conn) = stored.conn() {
            let session = &self.store.conn(conn)?.session;
            return Some(SessionInfo {
                client_id,
                conn: Some(conn),
                identity: session.identity().cloned(),
                protocol: Some(session.version()),
                will_topic: session.will_topic().map(str::to_owned),
                expiry_secs: session.session_expiry_interval().map(u64::from),
                subscriptions,
                queued: 0,
            });
        }
        let away = stored.away_ref();
        Some(SessionInfo {
            client_id,
            conn: None,
            identity: away.and_then(|a| a.identity.clone()),
            protocol: None,
            will_topic: away
                .and_then(|a| a.will.as_ref())
                .map(|w| w.due.will.topic.as_str().to_owned()),
            expiry_secs: stored
                .expires_at()
                .map(|at| at.saturating_duration_since(now.mono).as_secs()),
            subscriptions,
            queued: away.map_or(0, |a| {
                a.offline.len() + a.inflight.outbound.len() + a.inflight.queued.len()
            }),
        })
    }

    /// An operator disconnects `client_id`'s client: 5.0 DISCONNECT with
    /// `reason` (3.1.1: the connection closes), its will sent (after its
    /// delay) when `will`, deleted otherwise. Its session stays, as for
    /// any close: a persistent one waits for the client to come back.
    ///
    /// # Errors
    /// No session has that client id, or its client is not connected.
    /// Audited (`event=admin action=disconnect`, with `by`), whatever
    /// came of it.
    pub fn kick(
        &mut self,
        now: Now,
        client_id: &str,
        reason: DisconnectReasonCode,
        will: bool,
        by: &str,
    ) -> Result<(), KickError> {
        let conn = self
            .store
            .find_session(client_id)
            .ok_or(KickError::NoSession)
            .and_then(|key| {
                self.store
                    .session(key)
                    .and_then(StoredSession::conn)
                    .ok_or(KickError::NotConnected)
            });
        let result = match conn {
            Ok(_) => "done".to_owned(),
            Err(e) => e.to_string(),
        };
        self.audit(AuditRecord::Admin {
            at: now.wall,
            action: "disconnect",
            by: by.to_owned(),
            client_id: Some(client_id.to_owned()),
            detail: format!("reason=0x{:02X} will={will} result={result}", reason.code()),
        });
        let conn = conn?;
        if let Some(c) = self.store.conn_mut(conn) {
            c.session.handle_kicked(now, reason, will);
            self.drain(now, conn);
        }
        self.flush_dirty(now);
        Ok(())
    }
}
