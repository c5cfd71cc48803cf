//! Audit records: every authentication, every authorization decision and
//! every step of a will's life, as data the host logs. A record never holds a
//! token or a key — at most a token's short digest.

use std::fmt::{self, Display};
use std::sync::Arc;

use super::vocabulary::{AuthnFailure, AuthzQuery, Decision, Identity, WillTrigger};
use crate::codec::{LastWill, MqttString};
use crate::time::Timestamp;

/// A step in the life of a will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WillOutcome {
    /// The trigger happened; the will is due now or after its delay.
    Triggered,
    /// The will waits for its delay.
    Delayed {
        /// When it becomes due.
        until: Timestamp,
    },
    /// It will not be sent, and why (DISCONNECT 0x00, the client came back…).
    Cancelled {
        /// Why.
        reason: String,
    },
    /// A planned shutdown stopped its delay with `left` seconds to go: a
    /// durable broker keeps it, and the delay runs again from the restart.
    Paused {
        /// Seconds of its delay left.
        left: u32,
    },
    /// It was authorized and published.
    Delivered,
    /// It was not authorized; nothing was published.
    Denied {
        /// The decision that denied it.
        decision: Decision,
    },
}

/// Why a message was dropped for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The subscriber's queue (offline queue, or outbound queue and unsent
    /// bytes while connected) was full.
    QueueFull,
    /// The subscriber's session ended with the message still queued.
    SessionEnded,
    /// An ACL change or a re-authentication took away every subscription
    /// of the subscriber that routed it, before it was sent.
    Revoked,
}

impl Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::QueueFull => "queue_full",
            Self::SessionEnded => "session_ended",
            Self::Revoked => "revoked",
        })
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRecord {
    /// A client proved who it is.
    Authenticated {
        /// When.
        at: Timestamp,
        /// The identity established (principal, client id, method, key,
        /// expiry, token digest).
        identity: Arc<Identity>,
    },
    /// A client failed to prove who it is.
    AuthenticationFailed {
        /// When.
        at: Timestamp,
        /// The client id it asked for.
        client_id: String,
        /// The user name it gave.
        username: Option<String>,
        /// Why, and what was learnt of the token.
        failure: Box<AuthnFailure>,
    },
    /// An authorization decision.
    Authorization {
        /// When.
        at: Timestamp,
        /// The request (its identity, operation, topic, QoS, retain, and for
        /// a will its trigger).
        query: AuthzQuery,
        /// The answer.
        decision: Decision,
    },
    /// A step in the life of a will.
    Will {
        /// When.
        at: Timestamp,
        /// The identity the will belongs to.
        identity: Arc<Identity>,
        /// Its topic.
        topic: MqttString,
        /// What triggered it.
        trigger: Option<WillTrigger>,
        /// What happened.
        outcome: WillOutcome,
    },
    /// A new connection took a client id over from a connected one
    /// [MQTT-3.1.4-3].
    Takeover {
        /// When.
        at: Timestamp,
        /// The client id.
        client_id: String,
        /// The identity of the new connection.
        identity: Arc<Identity>,
    },
    /// A stored session reached its expiry interval and was discarded.
    SessionExpired {
        /// When.
        at: Timestamp,
        /// Its client id.
        client_id: String,
    },
    /// A QoS 1/2 message was not delivered to one subscriber.
    MessageDropped {
        /// When.
        at: Timestamp,
        /// The subscriber's client id.
        client_id: String,
        /// The message's topic.
        topic: MqttString,
        /// Its QoS towards that subscriber.
        qos: crate::codec::QoS,
        /// Why.
        reason: DropReason,
    },
    /// A client did not read what was sent to it; the host's output bound
    /// filled and the connection was dropped.
    SlowClient {
        /// When.
        at: Timestamp,
        /// Its client id, if its CONNECT was read.
        client_id: Option<String>,
    },
    /// A connection was refused by a limit before anything was authenticated.
    ConnectionRefused {
        /// When.
        at: Timestamp,
        /// The peer.
        peer: Option<String>,
        /// Which limit.
        reason: String,
    },
    /// A retained message was not stored (it was still routed).
    RetainRefused {
        /// When.
        at: Timestamp,
        /// Its topic.
        topic: MqttString,
        /// Why.
        reason: &'static str,
    },
    /// The key set fetched from its endpoint changed, or could not be
    /// fetched (the last good one stays).
    KeySet {
        /// When.
        at: Timestamp,
        /// Where it comes from.
        source: String,
        /// `changed` or `failed`.
        result: &'static str,
        /// The key ids now in force.
        kids: String,
        /// What changed, or why it failed.
        detail: String,
    },
    /// An operator's request (`testament admin`, the admin API).
    Admin {
        /// When.
        at: Timestamp,
        /// What: `clients`, `client`, `disconnect`.
        action: &'static str,
        /// Who asked (the API's peer).
        by: String,
        /// The client it was about, if one.
        client_id: Option<String>,
        /// What came of it, or its options (`reason=0x98 will=false`).
        detail: String,
    },
}

impl AuditRecord {
    /// The record of a successful authentication.
    pub fn authenticated(identity: Arc<Identity>) -> Self {
        Self::Authenticated {
            at: identity.authenticated_at,
            identity,
        }
    }

    /// The record of a step in the life of `will`, left by `identity`:
    /// the one way every will record is made, by the session (trigger,
    /// DISCONNECT 0x00, the re-check after re-authentication) and the hub
    /// (delay, cancel, delivery, denial).
    pub fn will(
        at: Timestamp,
        identity: &Arc<Identity>,
        will: &LastWill,
        trigger: Option<WillTrigger>,
        outcome: WillOutcome,
    ) -> Self {
        Self::Will {
            at,
            identity: identity.clone(),
            topic: will.topic.as_mqtt_str().clone(),
            trigger,
            outcome,
        }
    }

    /// The record of an authorization decision.
    pub fn authorization(at: Timestamp, query: AuthzQuery, decision: Decision) -> Self {
        Self::Authorization {
            at,
            query,
            decision,
        }
    }
}

/// ` key=value`, quoting values that a reader could not split.
fn kv(f: &mut fmt::Formatter<'_>, key: &str, value: &str) -> fmt::Result {
    if value.is_empty()
        || value.contains([' ', '"', '=', '\\'])
        || value.chars().any(char::is_control)
    {
        write!(f, " {key}={value:?}")
    } else {
        write!(f, " {key}={value}")
    }
}

fn opt<T: Display>(v: &Option<T>) -> Option<&dyn Display> {
    v.as_ref().map(|v| v as &dyn Display)
}

/// The record as one map of its fields (`"event"` first; values as
/// strings, `null` where it has none): the JSON log's audit lines.
impl serde::Serialize for AuditRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        let mut failed = None;
        let _ = self.fields(&mut |key, value| {
            let value = value.map(ToString::to_string);
            map.serialize_entry(key, &value).map_err(|e| {
                failed = Some(e);
                fmt::Error
            })
        });
        match failed {
            Some(e) => Err(e),
            None => map.end(),
        }
    }
}

impl AuditRecord {
    /// Its fields in order, `event` first; `None` for a value it does not
    /// have (written `-` in the text form, `null` in JSON).
    fn fields(
        &self,
        out: &mut dyn FnMut(&str, Option<&dyn Display>) -> fmt::Result,
    ) -> fmt::Result {
        match self {
            Self::Authenticated { at, identity } => {
                out("event", Some(&"authn"))?;
                out("result", Some(&"ok"))?;
                out("at", Some(&at))?;
                out("principal", Some(&identity.principal))?;
                out("client_id", Some(&identity.client_id))?;
                out("method", Some(&identity.method))?;
                out("kid", opt(&identity.grants.key_id))?;
                out("exp", opt(&identity.expires_at))?;
                out("token", opt(&identity.token_digest))
            }
            Self::AuthenticationFailed {
                at,
                client_id,
                username,
                failure,
            } => {
                out("event", Some(&"authn"))?;
                out("result", Some(&"fail"))?;
                out("at", Some(&at))?;
                out("client_id", Some(&client_id))?;
                out("username", opt(username))?;
                out("kid", opt(&failure.key_id))?;
                out("token", opt(&failure.token))?;
                out("reason", Some(&failure.error))
            }
            Self::Authorization {
                at,
                query,
                decision,
            } => {
                out("event", Some(&"authz"))?;
                out("at", Some(&at))?;
                out("op", Some(&query.op))?;
                out("principal", Some(&query.identity.principal))?;
                out("client_id", Some(&query.identity.client_id))?;
                out("topic", Some(&query.topic))?;
                out("qos", Some(&(query.qos as u8)))?;
                out("retain", Some(&query.retain))?;
                out("decision", Some(&decision.effect))?;
                out("by", Some(&decision.decided_by))?;
                if !decision.exclusions.is_empty() {
                    out("excluding", Some(&decision.exclusions))?;
                }
                if let Some(t) = query.will_trigger {
                    out("trigger", Some(&t))?;
                }
                Ok(())
            }
            Self::Will {
                at,
                identity,
                topic,
                trigger,
                outcome,
            } => {
                out("event", Some(&"will"))?;
                out("at", Some(&at))?;
                let (name, detail) = match outcome {
                    WillOutcome::Triggered => ("triggered", None),
                    WillOutcome::Delayed { until } => ("delayed", Some(format!("until {until}"))),
                    WillOutcome::Cancelled { reason } => ("cancelled", Some(reason.clone())),
                    WillOutcome::Paused { left } => {
                        ("paused", Some(format!("{left} s left after the restart")))
                    }
                    WillOutcome::Delivered => ("delivered", None),
                    WillOutcome::Denied { decision } => ("denied", Some(decision.reason())),
                };
                out("outcome", Some(&name))?;
                out("principal", Some(&identity.principal))?;
                out("client_id", Some(&identity.client_id))?;
                out("topic", Some(&topic))?;
                out("trigger", opt(trigger))?;
                if let Some(d) = detail {
                    out("detail", Some(&d))?;
                }
                Ok(())
            }
            Self::Takeover {
                at,
                client_id,
                identity,
            } => {
                out("event", Some(&"takeover"))?;
                out("at", Some(&at))?;
                out("client_id", Some(&client_id))?;
                out("principal", Some(&identity.principal))
            }
            Self::SessionExpired { at, client_id } => {
                out("event", Some(&"session_expired"))?;
                out("at", Some(&at))?;
                out("client_id", Some(&client_id))
            }
            Self::MessageDropped {
                at,
                client_id,
                topic,
                qos,
                reason,
            } => {
                out("event", Some(&"message_dropped"))?;
                out("at", Some(&at))?;
                out("client_id", Some(&client_id))?;
                out("topic", Some(&topic))?;
                out("qos", Some(&(*qos as u8)))?;
                out("reason", Some(&reason))
            }
            Self::SlowClient { at, client_id } => {
                out("event", Some(&"slow_client"))?;
                out("at", Some(&at))?;
                out("client_id", opt(client_id))
            }
            Self::ConnectionRefused { at, peer, reason } => {
                out("event", Some(&"connection_refused"))?;
                out("at", Some(&at))?;
                out("peer", opt(peer))?;
                out("reason", Some(&reason))
            }
            Self::KeySet {
                at,
                source,
                result,
                kids,
                detail,
            } => {
                out("event", Some(&"keyset"))?;
                out("at", Some(&at))?;
                out("result", Some(result))?;
                out("source", Some(&source))?;
                out("kids", Some(&kids))?;
                out("detail", Some(&detail))
            }
            Self::Admin {
                at,
                action,
                by,
                client_id,
                detail,
            } => {
                out("event", Some(&"admin"))?;
                out("at", Some(&at))?;
                out("action", Some(action))?;
                out("by", Some(&by))?;
                out("client_id", opt(client_id))?;
                out("detail", Some(&detail))
            }
            Self::RetainRefused { at, topic, reason } => {
                out("event", Some(&"retain_refused"))?;
                out("at", Some(&at))?;
                out("topic", Some(&topic))?;
                out("reason", Some(&reason))
            }
        }
    }
}

/// One line of `key=value` pairs, machine-readable.
impl Display for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        self.fields(&mut |key, value| {
            let value = value.map_or_else(|| "-".to_owned(), ToString::to_string);
            if std::mem::take(&mut first) && key == "event" {
                write!(f, "event={value}")
            } else {
                kv(f, key, &value)
            }
        })
    }
}
