//! What is asked and what is answered: an operation on a topic by an
//! identity, and the decision with what made it. Every authorizer — the
//! built-in [`crate::auth::Acl`], a host's own policy — answers in these
//! terms, and audit records keep them.

use std::fmt;
use std::sync::Arc;

use super::identity::{ClaimList, Identity};
use crate::codec::{MqttString, QoS, TopicFilter, TopicName};

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Publish to a topic name.
    Publish,
    /// Subscribe with a topic filter.
    Subscribe,
    /// Have its will published to a topic name.
    Will,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Will => "will",
        })
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Effect {
    /// The operation may proceed.
    Allow,
    /// It may not.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// What decided an authorization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DecidedBy {
    /// The rule at this index (0-based) of the rule list.
    Rule {
        /// Its position.
        index: usize,
        /// Its name, if it has one.
        name: Option<Arc<str>>,
    },
    /// A filter of the token's `acl` claim.
    Claim {
        /// The list it is in.
        list: ClaimList,
        /// Its position in that list.
        index: usize,
    },
    /// No rule and no claim matched.
    NoMatch,
    /// A policy of the host's own decided (an external policy service, a
    /// database lookup…), under this name.
    Policy {
        /// What the audit log calls it.
        name: Arc<str>,
    },
    /// The will policy after credential expiry (`strict` or `grace`): the
    /// will was triggered after its identity's credential had expired.
    WillAfterExpiry,
    /// A durable broker whose store cannot commit (a full or failing disk)
    /// refuses what it could not keep: QoS 1/2 publishes (5.0: 0x97 Quota
    /// exceeded).
    StorageUnavailable,
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule {
                index,
                name: Some(n),
            } => write!(f, "rule {index} ({n})"),
            Self::Rule { index, name: None } => write!(f, "rule {index}"),
            Self::Claim { list, index } => write!(f, "token acl claim {list:?}[{index}]"),
            Self::NoMatch => f.write_str("no rule"),
            Self::Policy { name } => write!(f, "policy {name}"),
            Self::WillAfterExpiry => f.write_str("will policy: credential expired"),
            Self::StorageUnavailable => f.write_str("storage unavailable"),
        }
    }
}

/// An authorization answer and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// The rule or claim that decided, or none.
    pub decided_by: DecidedBy,
    /// A subscription granted with carve-outs: the topics it does not
    /// deliver (the deny rules that overlap it). Empty for anything else.
    #[serde(default, skip_serializing_if = "Exclusions::is_empty")]
    pub exclusions: Exclusions,
}

/// The topic filters a granted subscription does not deliver: deny rules
/// that overlap it without covering it (`deny fleet/secrets/#` beside an
/// allowed `fleet/#`). Checked at each delivery, and only for the
/// subscriptions that have any; empty, it holds no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions(Option<Arc<[TopicFilter]>>);

impl Exclusions {
    /// These filters (none: empty).
    pub fn new(filters: Vec<TopicFilter>) -> Self {
        Self((!filters.is_empty()).then(|| filters.into()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The filters.
    pub fn filters(&self) -> &[TopicFilter] {
        self.0.as_deref().unwrap_or_default()
    }

    /// Whether `topic` is carved out.
    pub fn excludes(&self, topic: &TopicName) -> bool {
        self.filters().iter().any(|f| f.matches(topic))
    }
}

impl fmt::Display for Exclusions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, filter) in self.filters().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(filter.as_str())?;
        }
        Ok(())
    }
}

// Written as the filters' texts; read back through the same validation.
impl serde::Serialize for Exclusions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.filters().iter().map(TopicFilter::as_str))
    }
}

impl<'de> serde::Deserialize<'de> for Exclusions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .into_iter()
            .map(|t| TopicFilter::new(t).map_err(serde::de::Error::custom))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

impl Decision {
    /// A decision without carve-outs.
    pub fn new(effect: Effect, decided_by: DecidedBy) -> Self {
        Self {
            effect,
            decided_by,
            exclusions: Exclusions::default(),
        }
    }

    /// The decision of a policy of the host's own named `name`.
    pub fn by_policy(effect: Effect, name: impl Into<Arc<str>>) -> Self {
        Self::new(effect, DecidedBy::Policy { name: name.into() })
    }

    /// Whether the operation may proceed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// A sentence a human understands.
    pub fn reason(&self) -> String {
        match (&self.effect, &self.decided_by) {
            (_, DecidedBy::NoMatch) => "no rule or token claim allows it".into(),
            (e, by) => format!("{e} by {by}"),
        }
    }
}

/// An authorization request: who wants to do what where.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// The identity asking (for a will: the stored snapshot).
    pub identity: &'a Identity,
    /// The operation.
    pub op: Operation,
    /// A topic name (publish, will) or a topic filter (subscribe).
    pub topic: &'a str,
    /// Requested QoS.
    pub qos: QoS,
    /// Retain flag (publish, will).
    pub retain: bool,
}

/// An owned authorization request, as the core emits it and audit records
/// keep it: the identity snapshot, what, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzQuery {
    /// Who asks (for a will: the identity stored with it).
    pub identity: Arc<Identity>,
    /// The operation.
    pub op: Operation,
    /// Topic name (publish, will) or filter (subscribe), shared with the packet.
    pub topic: MqttString,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// For a will: what triggered it.
    pub will_trigger: Option<WillTrigger>,
}

impl AuthzQuery {
    /// The borrowed form [`crate::auth::Acl::authorize`] answers.
    pub fn as_request(&self) -> AuthzRequest<'_> {
        AuthzRequest {
            identity: &self.identity,
            op: self.op,
            topic: &self.topic,
            qos: self.qos,
            retain: self.retain,
        }
    }
}

/// Why a will was triggered (§3.1.2.5 and `DESIGN.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WillTrigger {
    /// An I/O error or network failure.
    NetworkError,
    /// The client closed the connection without DISCONNECT.
    PeerClosed,
    /// No packet within 1.5 × keep alive [MQTT-3.1.2-22].
    KeepAliveTimeout,
    /// The client broke the protocol and the server closed the connection.
    ProtocolError,
    /// The server closed the connection for another reason.
    ServerClosed,
    /// A new connection took the client id over [MQTT-3.1.4-3].
    SessionTakenOver,
    /// The client sent DISCONNECT 0x04.
    DisconnectWithWill,
    /// The credential expired and the expiry policy closed the connection.
    CredentialExpired,
    /// A re-authentication failed [MQTT-4.12.1-2].
    ReauthenticationFailed,
    /// The server is shutting down.
    Shutdown,
    /// The server went down without closing the connection (a crash, a
    /// power cut): a durable broker triggers the will at its restart.
    ServerCrashed,
    /// An operator disconnected the client (`testament admin disconnect`).
    Operator,
}

impl fmt::Display for WillTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetworkError => "network_error",
            Self::PeerClosed => "peer_closed",
            Self::KeepAliveTimeout => "keep_alive_timeout",
            Self::ProtocolError => "protocol_error",
            Self::ServerClosed => "server_closed",
            Self::SessionTakenOver => "session_taken_over",
            Self::DisconnectWithWill => "disconnect_with_will",
            Self::CredentialExpired => "credential_expired",
            Self::ReauthenticationFailed => "reauthentication_failed",
            Self::Shutdown => "shutdown",
            Self::ServerCrashed => "server_crashed",
            Self::Operator => "operator",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_policy_names_itself_in_the_decision() {
        let d = Decision::by_policy(Effect::Allow, "sensors");
        assert!(d.is_allowed());
        assert_eq!(d.decided_by.to_string(), "policy sensors");
        assert_eq!(d.reason(), "allow by policy sensors");
        let no = Decision::by_policy(Effect::Deny, "sensors");
        assert_eq!(no.reason(), "deny by policy sensors");
    }
}
