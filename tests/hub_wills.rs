//! Wills through the hub, one scenario at a time: every trigger, delays,
//! takeover, DISCONNECT 0x00 / 0x04, key rotation, ACL revocation, the
//! expiry policies, asynchronous decisions and shutdown.

mod common;

use std::time::Duration;

use common::hub::{Net, connect, default_acl, messages, will};
use common::jwt::{self, claims, mint};
use testament::auth::{
    Acl, AuditRecord, DecidedBy, Decision, Effect, FilterTemplate, JwtAuthenticator, JwtConfig,
    Operation, Ops, Rule, Subject, WillTrigger,
};
use testament::broker::{BrokerConfig, BrokerError, ShutdownWills, WillAfterExpiry};
use testament::codec::*;
use testament::session::{CredentialExpiry, DeniedPublishV311, SessionConfig, TransportClosed};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

fn state(id: &str) -> String {
    format!("trusted/{id}/state")
}

/// A CONNECT for `id` with a QoS 1 will `down` on `trusted/{id}/state`,
/// the given Will Delay Interval and Session Expiry Interval (5.0).
fn with_will(version: ProtocolVersion, id: &str, delay: u32, expiry: u32) -> Connect {
    let mut c = connect(version, id, id);
    let mut w = will(&state(id), b"down", QoS::AtLeastOnce, false);
    if version == V5 {
        if delay > 0 {
            w.properties.will_delay_interval = Some(delay);
        }
        if expiry > 0 {
            c.properties.session_expiry_interval = Some(expiry);
        }
    }
    c.will = Some(w);
    c
}

/// A monitor subscribed to every state.
fn monitor(net: &mut Net) -> testament::broker::ConnId {
    let (m, _) = net.connect(connect(V5, "monitor", "monitor"));
    net.subscribe(m, &[("trusted/+/state", QoS::AtLeastOnce)]);
    m
}

fn downs(net: &mut Net, monitor: testament::broker::ConnId) -> Vec<String> {
    messages(&net.publishes(monitor))
        .into_iter()
        .map(|(t, p)| format!("{t}={p}"))
        .collect()
}

fn triggers(net: &Net) -> Vec<WillTrigger> {
    net.audits
        .iter()
        .filter_map(|r| match r {
            AuditRecord::Will {
                trigger: Some(t),
                outcome: testament::auth::WillOutcome::Triggered,
                ..
            } => Some(*t),
            _ => None,
        })
        .collect()
}

fn ev(id: &str, what: &'static str) -> (String, &'static str) {
    (id.to_string(), what)
}

#[test]
fn every_trigger_publishes_the_will_once() {
    type Kill = fn(&mut Net, testament::broker::ConnId);
    let cases: [(&str, WillTrigger, Kill); 7] = [
        ("network error", WillTrigger::NetworkError, |net, c| {
            net.crash(c)
        }),
        ("peer closed", WillTrigger::PeerClosed, |net, c| {
            net.hub
                .handle_closed(net.now, c, TransportClosed::PeerClosed);
            net.pump();
        }),
        ("protocol error", WillTrigger::ProtocolError, |net, c| {
            // Packet type 0 is reserved.
            net.send_bytes(c, &[0x00, 0x00]);
        }),
        (
            "DISCONNECT 0x04",
            WillTrigger::DisconnectWithWill,
            |net, c| {
                net.send(
                    c,
                    Packet::Disconnect(Disconnect::new(
                        DisconnectReasonCode::DisconnectWithWillMessage,
                    )),
                );
            },
        ),
        ("keep alive", WillTrigger::KeepAliveTimeout, |net, _| {
            net.advance(16)
        }),
        ("shutdown", WillTrigger::Shutdown, |net, _| net.shutdown()),
        ("takeover", WillTrigger::SessionTakenOver, |net, _| {
            net.connect(connect(V5, "srv", "srv"));
        }),
    ];
    for (name, trigger, kill) in cases {
        let mut net = Net::standard();
        let m = monitor(&mut net);
        let mut c = with_will(V5, "srv", 0, 0);
        c.keep_alive = 10;
        let (srv, _) = net.connect(c);
        // The monitor pings so only the server's keep alive runs out.
        net.send(m, Packet::PingReq);
        kill(&mut net, srv);
        if trigger == WillTrigger::Shutdown {
            // The monitor went down too; the record says it was delivered.
            assert_eq!(
                net.will_events(),
                [ev("srv", "triggered"), ev("srv", "delivered")],
                "{name}"
            );
        } else {
            assert_eq!(
                downs(&mut net, m),
                [format!("{}=down", state("srv"))],
                "{name}"
            );
        }
        assert_eq!(triggers(&net), [trigger], "{name}");
    }
}

#[test]
fn a_publish_denied_to_a_3_1_1_client_under_the_close_policy_triggers_the_will() {
    let config = BrokerConfig {
        session: SessionConfig {
            denied_publish_v311: DeniedPublishV311::Close,
            ..SessionConfig::default()
        },
        ..BrokerConfig::default()
    };
    let mut net = Net::new(config, Some(default_acl()));
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V3, "srv", 0, 0));
    net.publish(
        srv,
        "trusted/someone-else/state",
        b"x",
        QoS::AtLeastOnce,
        false,
    );
    assert!(net.closed(srv).is_some());
    assert_eq!(triggers(&net), [WillTrigger::ServerClosed]);
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
}

#[test]
fn a_failed_reauthentication_triggers_the_will() {
    let mut net = Net::standard();
    net.authn = JwtAuthenticator::new(
        JwtConfig {
            enhanced_method: Some("JWT".into()),
            ..JwtConfig::default()
        },
        jwt::key_set(&[&jwt::rsa_a()], false),
    );
    let m = monitor(&mut net);
    let mut c = with_will(V5, "srv", 0, 0);
    c.password = None;
    c.properties.authentication_method = Some(MqttString::from_static("JWT"));
    c.properties.authentication_data = Some(Bytes::from(Net::token("srv", 3600)));
    let (srv, _) = net.connect(c);
    let mut auth = Auth::new(AuthReasonCode::ReAuthenticate);
    auth.properties.authentication_method = Some(MqttString::from_static("JWT"));
    auth.properties.authentication_data = Some(Bytes::from_static(b"not.a.token"));
    net.send(srv, Packet::Auth(auth));
    assert!(matches!(
        &net.take(srv)[..],
        [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::NotAuthorized
    ));
    assert_eq!(triggers(&net), [WillTrigger::ReauthenticationFailed]);
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
}

#[test]
fn disconnect_0x00_deletes_the_will_and_0x04_sends_it() {
    for (code, sent) in [
        (DisconnectReasonCode::NormalDisconnection, false),
        (DisconnectReasonCode::DisconnectWithWillMessage, true),
    ] {
        let mut net = Net::standard();
        let m = monitor(&mut net);
        let (srv, _) = net.connect(with_will(V5, "srv", 0, 0));
        net.send(srv, Packet::Disconnect(Disconnect::new(code)));
        net.advance(3600);
        assert_eq!(downs(&mut net, m).len(), usize::from(sent), "{code:?}");
    }
    // 3.1.1 DISCONNECT: no will, ever.
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V3, "srv", 0, 0));
    net.send(
        srv,
        Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection)),
    );
    net.advance(3600);
    assert!(downs(&mut net, m).is_empty());
    assert_eq!(net.will_events(), [ev("srv", "cancelled")]);
}

#[test]
fn a_connection_that_never_got_its_connack_leaves_no_will() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let mut c = with_will(V5, "srv", 0, 0);
    c.password = Some(Bytes::from(mint(&jwt::rsa_b(), &claims("srv", 3600))));
    let srv = net.connect_with(c);
    assert!(matches!(
        &net.take(srv)[..],
        [Packet::ConnAck(a)] if a.reason_code == ConnectReasonCode::BadUserNameOrPassword
    ));
    net.advance(60);
    assert!(downs(&mut net, m).is_empty());
    assert!(net.will_events().is_empty());
}

#[test]
fn a_delayed_will_is_cancelled_when_the_client_comes_back_in_time() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V5, "srv", 30, 3600));
    net.crash(srv);
    net.advance(29);
    assert!(downs(&mut net, m).is_empty());
    let mut again = with_will(V5, "srv", 30, 3600);
    again.clean_start = false;
    let (_, present) = net.connect(again);
    assert!(present);
    net.advance(3600);
    assert!(downs(&mut net, m).is_empty());
    assert_eq!(
        net.will_events(),
        [
            ev("srv", "triggered"),
            ev("srv", "delayed"),
            ev("srv", "cancelled")
        ]
    );
}

#[test]
fn a_delayed_will_is_sent_when_its_delay_is_over_and_not_before() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V5, "srv", 30, 3600));
    net.crash(srv);
    net.advance_ms(29_999);
    assert!(downs(&mut net, m).is_empty());
    net.advance_ms(1);
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
}

#[test]
fn the_will_waits_for_the_smaller_of_its_delay_and_the_session_expiry() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V5, "srv", 600, 10));
    net.crash(srv);
    net.advance(9);
    assert!(downs(&mut net, m).is_empty());
    net.advance(1);
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
    assert!(
        net.audits.iter().any(
            |r| matches!(r, AuditRecord::SessionExpired { client_id, .. } if client_id == "srv")
        )
    );
    assert_eq!(net.hub.sessions(), 1, "only the monitor's session is left");
}

#[test]
fn a_clean_start_ends_the_old_session_and_sends_its_delayed_will() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V5, "srv", 30, 3600));
    net.crash(srv);
    net.advance(5);
    let (_, present) = net.connect(connect(V5, "srv", "srv"));
    assert!(!present);
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
}

#[test]
fn takeover_follows_rule_4() {
    // (will delay, clean start of the new connection, will sent?)
    for (delay, clean_start, sent) in [
        (0, false, true),
        (0, true, true),
        (30, false, false),
        (30, true, true),
    ] {
        let mut net = Net::standard();
        let m = monitor(&mut net);
        let (old, _) = net.connect(with_will(V5, "srv", delay, 3600));
        let mut c = connect(V5, "srv", "srv");
        c.clean_start = clean_start;
        c.properties.session_expiry_interval = Some(3600);
        let (_, present) = net.connect(c);
        let case = format!("delay {delay}, clean start {clean_start}");
        // [MQTT-3.1.4-3] The old connection gets DISCONNECT 0x8E and is closed.
        assert!(
            matches!(&net.take(old)[..], [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::SessionTakenOver),
            "{case}"
        );
        assert_eq!(
            net.closed(old).map(|r| r.code),
            Some(DisconnectReasonCode::SessionTakenOver)
        );
        assert_eq!(present, !clean_start, "{case}");
        net.advance(3600);
        assert_eq!(downs(&mut net, m).len(), usize::from(sent), "{case}");
        assert!(
            net.audits.iter().any(
                |r| matches!(r, AuditRecord::Takeover { client_id, .. } if client_id == "srv")
            ),
            "{case}"
        );
    }
}

/// `srv`'s will reached the monitor (`sent`), or was deleted without a
/// word, audited as cancelled with `reason`.
fn sent_or_deleted(
    net: &mut Net,
    m: testament::broker::ConnId,
    sent: bool,
    reason: &str,
    case: &str,
) {
    let expected: Vec<String> = if sent {
        vec![format!("{}=down", state("srv"))]
    } else {
        vec![]
    };
    assert_eq!(downs(net, m), expected, "{case}");
    let deleted = net
        .audit_lines()
        .into_iter()
        .any(|l| l.contains("event=will") && l.contains("outcome=cancelled") && l.contains(reason));
    assert_eq!(deleted, !sent, "{case}: {:?}", net.audit_lines());
}

/// 3.1.1 says nothing of the will at a takeover. `will.on_takeover =
/// "resume"` (the default): a connection that continues the session
/// (Clean Session 0) deletes it, audited — a client reconnecting over its
/// own half-open connection is not "down"; `"send"` sends it. A takeover
/// by a clean session ends the session: the will goes either way.
#[test]
fn a_3_1_1_takeover_follows_will_on_takeover() {
    // (send on takeover, clean session of the new connection, will sent?)
    for (send, clean, sent) in [
        (false, false, false),
        (false, true, true),
        (true, false, true),
        (true, true, true),
    ] {
        let mut config = BrokerConfig::default();
        config.session.will_on_takeover_v311 = send;
        let mut net = Net::new(config, Some(default_acl()));
        let m = monitor(&mut net);
        let mut c = with_will(V3, "srv", 0, 0);
        c.clean_start = false;
        let (old, _) = net.connect(c);
        let mut c = connect(V3, "srv", "srv");
        c.clean_start = clean;
        let (_, present) = net.connect(c);
        let case = format!("send {send}, clean session {clean}");
        assert_eq!(present, !clean, "{case}");
        assert!(
            net.take(old).is_empty(),
            "3.1.1 has no DISCONNECT from the server"
        );
        assert!(net.closed(old).is_some(), "{case}");
        sent_or_deleted(&mut net, m, sent, "continues the session", &case);
    }
}

/// A 5.0 client follows its Will Delay Interval at a takeover, whatever
/// `will.on_takeover` says (§3.1.3.2.2): delay 0, continued, sent.
#[test]
fn a_5_0_takeover_ignores_will_on_takeover() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    net.connect(with_will(V5, "srv", 0, 3600));
    let mut c = connect(V5, "srv", "srv");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    net.connect(c);
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
}

/// A connection closed because its credential expired
/// (`credential_expiry = "disconnect"`): `will.on_credential_expiry =
/// "send"` (the default) sends its will; `"drop"` deletes it, audited — a
/// healthy server whose token ran out is not "down".
#[test]
fn credential_expiry_sends_or_drops_the_will() {
    for (send, sent) in [(true, true), (false, false)] {
        let mut config = BrokerConfig::default();
        config.session.will_on_credential_expiry = send;
        let mut net = Net::new(config, Some(default_acl()));
        let m = monitor(&mut net);
        let mut c = with_will(V5, "srv", 0, 0);
        c.password = Some(Bytes::from(Net::token("srv", 60)));
        let (srv, _) = net.connect(c);
        net.advance(59);
        assert!(net.closed(srv).is_none());
        net.advance(120);
        assert_eq!(
            net.closed(srv).map(|r| r.code),
            Some(DisconnectReasonCode::MaximumConnectTime),
            "send {send}"
        );
        sent_or_deleted(
            &mut net,
            m,
            sent,
            "credential expired",
            &format!("send {send}"),
        );
    }
}

#[test]
fn a_will_is_delivered_after_the_key_set_was_rotated() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V5, "srv", 0, 0));
    net.rotate_keys(&[&jwt::rsa_b()]);
    net.crash(srv);
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
}

#[test]
fn a_will_is_denied_when_the_acl_was_revoked_before_the_crash() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V5, "srv", 0, 0));
    let mut rules = vec![
        Rule::new(
            Effect::Deny,
            Ops::WILL,
            Subject::Principal("srv".into()),
            FilterTemplate::new("#").unwrap(),
        )
        .named("srv-revoked"),
    ];
    rules.extend(default_acl().rules().iter().cloned());
    net.set_acl(Acl::new(rules));
    net.crash(srv);
    assert!(downs(&mut net, m).is_empty());
    assert_eq!(
        net.will_events(),
        [ev("srv", "triggered"), ev("srv", "denied")]
    );
    let line = net
        .audit_lines()
        .into_iter()
        .find(|l| l.contains("outcome=denied"))
        .unwrap();
    assert!(line.contains("srv-revoked"), "{line}");
}

/// A hub whose sessions outlive their credentials, with `policy`.
fn expiry_net(policy: WillAfterExpiry) -> Net {
    let config = BrokerConfig {
        session: SessionConfig {
            credential_expiry: CredentialExpiry::Keep,
            ..SessionConfig::default()
        },
        will_after_expiry: policy,
        ..BrokerConfig::default()
    };
    Net::new(config, Some(default_acl()))
}

/// Connects `srv` with a 100 s token and a will of `delay` seconds, crashes
/// it `crash_at` seconds in, waits an hour; whether the monitor got `down`.
fn will_after(policy: WillAfterExpiry, crash_at: u64, delay: u32) -> bool {
    let mut net = expiry_net(policy);
    let mut c = connect(V5, "monitor", "monitor");
    c.password = Some(Bytes::from(Net::token("monitor", 86_400)));
    let (m, _) = net.connect(c);
    net.subscribe(m, &[("trusted/+/state", QoS::AtLeastOnce)]);
    let mut c = with_will(V5, "srv", delay, 3600);
    c.password = Some(Bytes::from(Net::token("srv", 100)));
    let (srv, _) = net.connect(c);
    net.advance(crash_at);
    net.crash(srv);
    net.advance(3600);
    !downs(&mut net, m).is_empty()
}

#[test]
fn the_identity_policy_sends_a_will_after_expiry() {
    assert!(will_after(WillAfterExpiry::Identity, 50, 0));
    assert!(will_after(WillAfterExpiry::Identity, 500, 0));
}

#[test]
fn the_strict_policy_denies_a_will_triggered_after_expiry_judged_at_the_trigger() {
    assert!(will_after(WillAfterExpiry::Strict, 50, 0));
    assert!(!will_after(WillAfterExpiry::Strict, 101, 0));
    // Triggered before `exp`, due after it: the trigger time decides.
    assert!(will_after(WillAfterExpiry::Strict, 50, 600));
    let mut net = expiry_net(WillAfterExpiry::Strict);
    let (srv, _) = net.connect({
        let mut c = with_will(V5, "srv", 0, 0);
        c.password = Some(Bytes::from(Net::token("srv", 100)));
        c
    });
    net.advance(200);
    net.crash(srv);
    let line = net
        .audit_lines()
        .into_iter()
        .find(|l| l.contains("outcome=denied"))
        .unwrap();
    assert!(line.contains("credential expired"), "{line}");
}

#[test]
fn the_grace_policy_allows_a_will_up_to_n_seconds_after_expiry() {
    let grace = WillAfterExpiry::Grace(Duration::from_secs(60));
    assert!(will_after(grace, 150, 0));
    assert!(!will_after(grace, 170, 0));
    // Triggered inside the grace, delayed past it: still sent.
    assert!(will_after(grace, 150, 600));
}

#[test]
fn an_asynchronous_will_decision_is_asked_once_and_used_once() {
    let mut net = Net::new(BrokerConfig::default(), None);
    // Everything but the will is allowed as it is asked.
    let allow = Decision {
        effect: Effect::Allow,
        decided_by: DecidedBy::NoMatch,
        exclusions: Default::default(),
    };
    let (m, _) = net.connect(connect(V5, "monitor", "monitor"));
    net.subscribe_with(
        m,
        vec![common::hub::sub("trusted/+/state", QoS::AtLeastOnce)],
        None,
    );
    let (t, _, _) = net.asked.pop().unwrap();
    net.answer(t, allow.clone());
    let mut c = with_will(V5, "srv", 0, 0);
    c.will.as_mut().unwrap().retain = true;
    let srv = net.connect_with(c);
    // The will check at CONNECT.
    let (t, _, q) = net.asked.pop().unwrap();
    assert_eq!(q.op, Operation::Will);
    net.answer(t, allow.clone());
    assert!(matches!(&net.take(srv)[..], [Packet::ConnAck(_)]));
    net.crash(srv);
    let (ticket, conn, q) = net.asked.pop().expect("the will's authorization");
    assert!(net.asked.is_empty());
    assert_eq!(conn, None, "asked on behalf of a client that is gone");
    assert_eq!(q.op, Operation::Will);
    assert_eq!(&*q.identity.principal, "srv");
    assert_eq!(q.will_trigger, Some(WillTrigger::NetworkError));
    assert!(q.retain);
    assert!(downs(&mut net, m).is_empty(), "nothing before the Allow");
    net.answer(ticket, allow.clone());
    assert_eq!(downs(&mut net, m), [format!("{}=down", state("srv"))]);
    assert_eq!(
        net.hub.handle_authorization(net.now, ticket, allow),
        Err(BrokerError::UnknownTicket(ticket))
    );
    net.pump();
    assert!(downs(&mut net, m).is_empty());
    assert_eq!(net.hub.retained_messages(), 1);
}

#[test]
fn shutdown_sends_pending_wills_or_drops_them_as_configured() {
    for (policy, outcome) in [
        (ShutdownWills::SendNow, "delivered"),
        (ShutdownWills::Drop, "cancelled"),
    ] {
        let config = BrokerConfig {
            shutdown_wills: policy,
            ..BrokerConfig::default()
        };
        let mut net = Net::new(config, Some(default_acl()));
        let (a, _) = net.connect(with_will(V5, "a", 300, 3600));
        net.connect(with_will(V5, "b", 0, 0));
        net.crash(a);
        net.advance(10);
        net.shutdown();
        let events = net.will_events();
        assert!(events.contains(&ev("a", outcome)), "{policy:?}: {events:?}");
        assert!(events.contains(&ev("b", outcome)), "{policy:?}: {events:?}");
        net.advance(7200);
        assert_eq!(net.will_events(), events, "{policy:?}: nothing more, ever");
    }
}

#[test]
fn the_will_is_published_with_all_its_properties() {
    let mut net = Net::standard();
    let m = monitor(&mut net);
    let mut c = with_will(V5, "srv", 0, 0);
    let w = c.will.as_mut().unwrap();
    w.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    w.properties.message_expiry_interval = Some(120);
    w.properties.content_type = Some(MqttString::from_static("text/plain"));
    w.properties.response_topic = Some(TopicName::from_static("trusted/srv/reply"));
    w.properties.correlation_data = Some(Bytes::from_static(b"corr"));
    for (k, v) in [("z", "1"), ("a", "2"), ("z", "3")] {
        w.properties.user_properties.push(UserProperty {
            key: MqttString::try_from(k).unwrap(),
            value: MqttString::try_from(v).unwrap(),
        });
    }
    let expected = w.properties.clone();
    let (srv, _) = net.connect(c);
    net.crash(srv);
    let got = net.publishes(m);
    assert_eq!(got.len(), 1);
    let p = &got[0].properties;
    assert_eq!(
        p.payload_format_indicator,
        expected.payload_format_indicator
    );
    assert_eq!(p.message_expiry_interval, Some(120));
    assert_eq!(p.content_type, expected.content_type);
    assert_eq!(p.response_topic, expected.response_topic);
    assert_eq!(p.correlation_data, expected.correlation_data);
    assert_eq!(p.user_properties, expected.user_properties, "order kept");
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

#[test]
fn a_step_of_the_wall_clock_closes_nothing_fires_no_will_and_stalls_no_timer() {
    use testament::time::WallStep;
    const HOUR: Duration = Duration::from_secs(3600);
    let mut net = Net::standard();
    let m = monitor(&mut net);
    // A token that expires ten minutes from now, inside the step; the
    // default policy disconnects at `exp` + leeway.
    let mut c = with_will(V5, "a", 0, 0);
    c.password = Some(Bytes::from(Net::token("a", 600)));
    c.keep_alive = 10;
    let (a, _) = net.connect(c);
    net.now = net.now.with_wall_step(WallStep::Forward(2 * HOUR));
    net.advance(9);
    net.send(a, Packet::PingReq);
    net.advance(9);
    assert!(net.closed(a).is_none(), "{:?}", net.closed(a));
    assert!(triggers(&net).is_empty());
    assert!(downs(&mut net, m).is_empty());
    // A token presented now is judged by the wall clock, stepped: the
    // one-hour tokens minted at the start expired with the step.
    let b = net.connect_with(connect(V5, "b", "b"));
    let refused = net.take(b);
    assert!(
        matches!(&refused[..], [Packet::ConnAck(a)] if a.reason_code == ConnectReasonCode::BadUserNameOrPassword),
        "{refused:?}"
    );
    assert!(
        net.audit_lines().iter().any(|l| l.contains("result=fail")
            && l.contains("client_id=b")
            && l.contains("expired")),
        "{:?}",
        net.audit_lines()
    );

    // Back three hours: the timers do not stall. No packet for 15 s closes
    // the connection, as the monotonic clock says.
    net.send(a, Packet::PingReq);
    net.now = net.now.with_wall_step(WallStep::Back(3 * HOUR));
    net.advance(14);
    assert!(net.closed(a).is_none());
    net.advance(1);
    assert!(net.closed(a).is_some(), "keep alive expired on time");
    assert_eq!(triggers(&net), [WillTrigger::KeepAliveTimeout]);
    assert_eq!(downs(&mut net, m), ["trusted/a/state=down"]);
}

#[test]
fn an_operator_disconnects_a_client_with_its_will_after_its_delay_or_without_it() {
    let mut net = Net::new(BrokerConfig::default(), Some(default_acl()));
    let m = monitor(&mut net);
    let (srv, _) = net.connect(with_will(V5, "srv", 5, 60));
    let now = net.now;
    net.hub
        .kick(
            now,
            "srv",
            DisconnectReasonCode::AdministrativeAction,
            true,
            "test",
        )
        .unwrap();
    net.pump();
    // 5.0: the client reads 0x98; the will waits out its delay.
    assert!(
        net.take(srv)
            .iter()
            .any(|p| matches!(p, Packet::Disconnect(d) if d.reason_code == DisconnectReasonCode::AdministrativeAction))
    );
    assert!(net.closed(srv).is_some());
    assert!(downs(&mut net, m).is_empty());
    net.advance(5);
    assert_eq!(downs(&mut net, m), ["trusted/srv/state=down"]);
    assert_eq!(triggers(&net), [WillTrigger::Operator]);
    // Its session stays; listed as away with what is left of its expiry.
    let (page, total) = net.hub.sessions_info(net.now, None, 10);
    assert_eq!(total, 2);
    let srv_info = page.iter().find(|s| &*s.client_id == "srv").unwrap();
    assert_eq!((srv_info.conn, srv_info.expiry_secs), (None, Some(55)));
    assert_eq!(
        srv_info.identity.as_ref().map(|i| &*i.principal),
        Some("srv")
    );

    // Without its will: deleted, audited cancelled, never sent.
    let (srv, _) = net.connect(with_will(V3, "srv", 0, 0));
    let info = net.hub.session_info_of(net.now, "srv").unwrap();
    assert_eq!(info.will_topic.as_deref(), Some("trusted/srv/state"));
    assert_eq!(info.protocol, Some(V3));
    let now = net.now;
    net.hub
        .kick(
            now,
            "srv",
            DisconnectReasonCode::AdministrativeAction,
            false,
            "test",
        )
        .unwrap();
    net.pump();
    assert!(net.closed(srv).is_some());
    net.advance(10);
    assert!(downs(&mut net, m).is_empty());
    assert!(
        net.audit_lines()
            .iter()
            .any(|l| l.contains("outcome=cancelled")
                && l.contains("disconnected by an operator, without its will"))
    );
    // Nobody to disconnect.
    assert_eq!(
        net.hub.kick(
            net.now,
            "srv",
            DisconnectReasonCode::AdministrativeAction,
            true,
            "t"
        ),
        Err(testament::broker::KickError::NoSession)
    );
    net.pump();
    let audits = net.audit_lines();
    let admin: Vec<&String> = audits
        .iter()
        .filter(|l| l.starts_with("event=admin"))
        .collect();
    assert_eq!(admin.len(), 3, "{admin:?}");
    assert!(
        admin[2].contains("result=no session has that client id"),
        "{admin:?}"
    );
}

#[test]
fn the_sessions_are_listed_in_client_id_order_a_page_at_a_time() {
    let mut net = Net::new(BrokerConfig::default(), Some(default_acl()));
    for id in ["c", "a", "d", "b"] {
        net.connect(connect(V5, id, id));
    }
    let ids = |page: &[testament::broker::SessionInfo]| -> Vec<String> {
        page.iter().map(|s| s.client_id.to_string()).collect()
    };
    let (page, total) = net.hub.sessions_info(net.now, None, 3);
    assert_eq!(
        (ids(&page), total),
        (vec!["a".into(), "b".into(), "c".into()], 4)
    );
    let (page, _) = net.hub.sessions_info(net.now, Some("c"), 3);
    assert_eq!(ids(&page), ["d"]);
    let (page, _) = net.hub.sessions_info(net.now, Some("bb"), 3);
    assert_eq!(ids(&page), ["c", "d"]);
    let (page, _) = net.hub.sessions_info(net.now, Some("z"), 3);
    assert!(page.is_empty());
}
