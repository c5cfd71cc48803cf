//! A session under test: a virtual clock, a client that speaks bytes, and
//! helpers that answer the session's requests.
#![allow(dead_code)]

use std::time::Duration;

use testament::auth::{AuthMethod, DecidedBy, Decision, Effect, Identity, WillTrigger};
use testament::codec::*;
use testament::session::*;
use testament::time::{Now, Timestamp};

pub const T0: u64 = 1_800_000_000_000;

pub struct Peer {
    pub session: Session,
    /// The virtual clocks, both at `T0` to start with.
    pub now: Now,
    pub version: ProtocolVersion,
    client: Decoder,
}

pub fn allow() -> Decision {
    Decision {
        effect: Effect::Allow,
        decided_by: DecidedBy::Rule {
            index: 0,
            name: None,
        },
        exclusions: Default::default(),
    }
}

pub fn deny() -> Decision {
    Decision {
        effect: Effect::Deny,
        decided_by: DecidedBy::NoMatch,
        exclusions: Default::default(),
    }
}

pub fn identity(principal: &str, client_id: &str, expires_at: Option<Timestamp>) -> Identity {
    Identity {
        principal: principal.into(),
        client_id: client_id.into(),
        grants: testament::auth::Grants::new(Default::default(), None, Some("KEY-A".into())),
        expires_at,
        method: AuthMethod::Password,
        authenticated_at: Timestamp::from_millis(T0),
        token_digest: None,
    }
}

pub fn will(topic: &'static str, qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: TopicName::from_static(topic),
        payload: Bytes::from_static(b"down"),
        qos,
        retain,
        properties: Default::default(),
    }
}

pub fn connect(
    version: ProtocolVersion,
    client_id: &'static str,
    will: Option<LastWill>,
) -> Connect {
    let mut c = Connect::new(version, MqttString::from_static(client_id));
    c.keep_alive = 10;
    c.will = will;
    c.username = Some(MqttString::from_static("alice"));
    c.password = Some(Bytes::from_static(b"token"));
    c
}

impl Peer {
    pub fn new(version: ProtocolVersion, config: SessionConfig) -> Self {
        let now = Now::from_millis(T0);
        Self {
            session: Session::new(config, now).with_assigned_client_id("auto-1"),
            now,
            version,
            client: Decoder::new(1 << 20).with_version(version),
        }
    }

    /// Sends raw bytes and returns the actions they caused.
    pub fn bytes(&mut self, bytes: &[u8]) -> Vec<Action> {
        self.session.handle_bytes(self.now, bytes);
        self.drain()
    }

    /// Sends a packet and returns the actions it caused.
    pub fn send(&mut self, packet: Packet) -> Vec<Action> {
        let bytes = packet.to_vec(self.version).expect("encodable");
        self.bytes(&bytes)
    }

    pub fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    /// Moves the clock and fires due timers.
    pub fn advance(&mut self, ms: u64) -> Vec<Action> {
        self.now = self.now + Duration::from_millis(ms);
        self.session.handle_timeout(self.now);
        self.drain()
    }

    pub fn authenticate(&mut self, ticket: Ticket, outcome: AuthnOutcome) -> Vec<Action> {
        self.session
            .handle_authentication(self.now, ticket, outcome)
            .expect("known ticket");
        self.drain()
    }

    pub fn authorize(&mut self, ticket: Ticket, decision: Decision) -> Vec<Action> {
        self.session
            .handle_authorization(self.now, ticket, decision)
            .expect("known ticket");
        self.drain()
    }

    pub fn open(&mut self, ticket: Ticket, present: bool) -> Vec<Action> {
        self.session
            .handle_open(self.now, ticket, present)
            .expect("known ticket");
        self.drain()
    }

    /// The packets among `actions`' Send actions, decoded as a client would.
    pub fn packets(&mut self, actions: &[Action]) -> Vec<Packet> {
        let mut out = Vec::new();
        for a in actions {
            if let Action::Send(bytes) = a {
                self.client.feed(bytes);
                while let Some(p) = self.client.decode().expect("server sends valid packets") {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Connects with `connect`, the authenticator accepting `identity`, the
    /// will check (if any) allowing, and no stored session.
    pub fn connected(
        version: ProtocolVersion,
        config: SessionConfig,
        connect: Connect,
        identity: Identity,
    ) -> Self {
        let mut peer = Peer::new(version, config);
        let has_will = connect.will.is_some();
        let actions = peer.send(Packet::Connect(Box::new(connect)));
        let ticket = authenticate_ticket(&actions);
        let mut actions = peer.authenticate(ticket, AuthnOutcome::Success(identity));
        if has_will && peer.will_check_on() {
            let t = authorize_tickets(&actions)[0];
            actions = peer.authorize(t, allow());
        }
        let t = open_ticket(&actions);
        let actions = peer.open(t, false);
        let packets = peer.packets(&actions);
        assert!(
            matches!(&packets[..], [Packet::ConnAck(a)] if a.reason_code == ConnectReasonCode::Success),
            "{packets:?}"
        );
        peer
    }

    /// Connected as client `c1`, authenticated as `alice`: what most tests
    /// start from.
    pub fn alice(version: ProtocolVersion, config: SessionConfig) -> Self {
        Self::connected(
            version,
            config,
            connect(version, "c1", None),
            identity("alice", "c1", None),
        )
    }

    fn will_check_on(&self) -> bool {
        true
    }
}

pub fn authenticate_ticket(actions: &[Action]) -> Ticket {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Authenticate { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Authenticate in {actions:?}"))
}

pub fn authorize_tickets(actions: &[Action]) -> Vec<Ticket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Authorize { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .collect()
}

pub fn open_ticket(actions: &[Action]) -> Ticket {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Open { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Open in {actions:?}"))
}

pub fn wills(actions: &[Action]) -> Vec<&DueWill> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DeliverWill(w) => Some(&**w),
            _ => None,
        })
        .collect()
}

pub fn closes(actions: &[Action]) -> Vec<&CloseReason> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close(c) => Some(c),
            _ => None,
        })
        .collect()
}

pub fn published(actions: &[Action]) -> Vec<&InboundMessage> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// A compact name for each action, to assert sequences.
pub fn kinds(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send(_) => "send",
            Action::Close(_) => "close",
            Action::Authenticate { .. } => "authenticate",
            Action::Authorize { .. } => "authorize",
            Action::Open { .. } => "open",
            Action::Publish(_) => "publish",
            Action::Subscribe { .. } => "subscribe",
            Action::Unsubscribe(_) => "unsubscribe",
            Action::DeliverWill(_) => "will",
            Action::IdentityChanged(_) => "identity",
            Action::Progress(_) => "progress",
            Action::WillArmed(_) => "will_armed",
            Action::WillDeleted => "will_deleted",
            Action::Audit(_) => "audit",
        })
        .collect()
}

pub fn with_will(v: ProtocolVersion, config: SessionConfig) -> Peer {
    Peer::connected(
        v,
        config,
        connect(
            v,
            "srv-17",
            Some(will("trusted/srv-17/server/state", QoS::AtLeastOnce, true)),
        ),
        identity(
            "server-17",
            "srv-17",
            Some(Timestamp::from_millis(T0 + 60_000)),
        ),
    )
}

pub fn one_will(actions: &[Action], trigger: WillTrigger) -> DueWill {
    let w = wills(actions);
    assert_eq!(w.len(), 1, "{actions:?}");
    assert_eq!(w[0].trigger, trigger);
    assert_eq!(w[0].will.topic.as_str(), "trusted/srv-17/server/state");
    assert_eq!(&*w[0].identity.principal, "server-17");
    w[0].clone()
}

pub fn peer(v: ProtocolVersion, config: SessionConfig) -> Peer {
    Peer::connected(
        v,
        config,
        connect(v, "c1", Some(will("w", QoS::AtMostOnce, false))),
        identity("alice", "c1", None),
    )
}

pub fn disconnect_code(p: &mut Peer, a: &[Action]) -> DisconnectReasonCode {
    match &p.packets(a)[..] {
        [Packet::Disconnect(d)] => d.reason_code,
        other => panic!("{other:?}"),
    }
}
