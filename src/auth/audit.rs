//! Audit records: every authentication, every authorization decision and
//! every step of a will's life, as data the host logs. A record never holds a
//! token or a key — at most a token's short digest.

use std::fmt::{self, Display, Write as _};
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

/// Writes ` key=value`, quoting values that a reader could not split.
fn kv(f: &mut fmt::Formatter<'_>, key: &str, value: impl Display) -> fmt::Result {
    let mut s = String::new();
    let _ = write!(s, "{value}");
    if s.is_empty() || s.contains([' ', '"', '=', '\\']) || s.chars().any(char::is_control) {
        write!(f, " {key}={s:?}")
    } else {
        write!(f, " {key}={s}")
    }
}

fn opt(v: &Option<impl Display>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

/// One line of `key=value` pairs, machine-readable.
impl Display for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authenticated { at, identity } => {
                write!(f, "event=authn result=ok")?;
                kv(f, "at", at)?;
                kv(f, "principal", &identity.principal)?;
                kv(f, "client_id", &identity.client_id)?;
                kv(f, "method", &identity.method)?;
                kv(f, "kid", opt(&identity.grants.key_id))?;
                kv(f, "exp", opt(&identity.expires_at))?;
                kv(f, "token", opt(&identity.token_digest))
            }
            Self::AuthenticationFailed {
                at,
                client_id,
                username,
                failure,
            } => {
                write!(f, "event=authn result=fail")?;
                kv(f, "at", at)?;
                kv(f, "client_id", client_id)?;
                kv(f, "username", opt(username))?;
                kv(f, "kid", opt(&failure.key_id))?;
                kv(f, "token", opt(&failure.token))?;
                kv(f, "reason", &failure.error)
            }
            Self::Authorization {
                at,
                query,
                decision,
            } => {
                write!(f, "event=authz")?;
                kv(f, "at", at)?;
                kv(f, "op", query.op)?;
                kv(f, "principal", &query.identity.principal)?;
                kv(f, "client_id", &query.identity.client_id)?;
                kv(f, "topic", &query.topic)?;
                kv(f, "qos", query.qos as u8)?;
                kv(f, "retain", query.retain)?;
                kv(f, "decision", decision.effect)?;
                kv(f, "by", &decision.decided_by)?;
                if !decision.exclusions.is_empty() {
                    kv(f, "excluding", &decision.exclusions)?;
                }
                if let Some(t) = query.will_trigger {
                    kv(f, "trigger", t)?;
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
                write!(f, "event=will")?;
                kv(f, "at", at)?;
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
                kv(f, "outcome", name)?;
                kv(f, "principal", &identity.principal)?;
                kv(f, "client_id", &identity.client_id)?;
                kv(f, "topic", topic)?;
                kv(f, "trigger", opt(trigger))?;
                if let Some(d) = detail {
                    kv(f, "detail", d)?;
                }
                Ok(())
            }
            Self::Takeover {
                at,
                client_id,
                identity,
            } => {
                write!(f, "event=takeover")?;
                kv(f, "at", at)?;
                kv(f, "client_id", client_id)?;
                kv(f, "principal", &identity.principal)
            }
            Self::SessionExpired { at, client_id } => {
                write!(f, "event=session_expired")?;
                kv(f, "at", at)?;
                kv(f, "client_id", client_id)
            }
            Self::MessageDropped {
                at,
                client_id,
                topic,
                qos,
                reason,
            } => {
                write!(f, "event=message_dropped")?;
                kv(f, "at", at)?;
                kv(f, "client_id", client_id)?;
                kv(f, "topic", topic)?;
                kv(f, "qos", *qos as u8)?;
                kv(f, "reason", reason)
            }
            Self::SlowClient { at, client_id } => {
                write!(f, "event=slow_client")?;
                kv(f, "at", at)?;
                kv(f, "client_id", opt(client_id))
            }
            Self::ConnectionRefused { at, peer, reason } => {
                write!(f, "event=connection_refused")?;
                kv(f, "at", at)?;
                kv(f, "peer", opt(peer))?;
                kv(f, "reason", reason)
            }
            Self::RetainRefused { at, topic, reason } => {
                write!(f, "event=retain_refused")?;
                kv(f, "at", at)?;
                kv(f, "topic", topic)?;
                kv(f, "reason", reason)
            }
        }
    }
}
