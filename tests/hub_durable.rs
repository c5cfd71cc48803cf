//! A durable hub: every change of a retained message leaves as a Persist
//! before anything that follows it (the PUBACK of the publish that made
//! it), and a restart restores what was kept, the expiry counted by the
//! date it ends on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::hub::{Net, connect, default_acl};
use common::jwt::NOW_SECS;
use testament::broker::{Action, BrokerConfig, ConnId, Persist, RetainedMessage};
use testament::codec::*;
use testament::time::{Instant, Now, Timestamp};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn durable() -> Net {
    let config = BrokerConfig {
        durable: true,
        ..BrokerConfig::default()
    };
    Net::new(config, Some(default_acl()))
}

/// A durable hub in a new process, `down` after `before`'s clocks: the
/// wall clock moved on, the monotonic one starts anew.
fn restarted(before: &Net, down: Duration) -> Net {
    let mut net = durable();
    net.now = Now::new(Instant::from_secs(1), before.now.wall + down);
    net
}

fn client(net: &mut Net, id: &str) -> ConnId {
    net.connect(connect(V5, id, id)).0
}

fn publish_with_expiry(net: &mut Net, conn: ConnId, topic: &str, payload: &[u8], secs: u32) {
    let mut p = Publish::new(TopicName::try_from(topic).unwrap(), payload.to_vec());
    p.qos = QoS::AtLeastOnce;
    p.retain = true;
    p.packet_id = PacketId::new(9);
    p.properties.message_expiry_interval = Some(secs);
    net.send(conn, Packet::Publish(p));
}

/// A store as a host keeps one: what the Persists say, by topic.
fn apply(store: &mut BTreeMap<String, RetainedMessage>, ops: &[Persist]) {
    for op in ops {
        match op {
            Persist::Retain(m) => {
                store.insert(m.topic.to_string(), m.clone());
            }
            Persist::Unretain(t) => {
                store.remove(t.as_str());
            }
            // Sessions: `apply_sessions`.
            Persist::Session(_) | Persist::EndSession(_) => {}
        }
    }
}

/// The retained messages a new subscriber to `filter` gets, with their
/// Message Expiry Interval.
fn retained(net: &mut Net, id: &str, filter: &'static str) -> Vec<(String, String, Option<u32>)> {
    let c = client(net, id);
    net.subscribe(c, &[(filter, QoS::AtLeastOnce)]);
    net.publishes(c)
        .into_iter()
        .map(|p| {
            (
                p.topic.unwrap().to_string(),
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.properties.message_expiry_interval,
            )
        })
        .collect()
}

#[test]
fn every_retained_change_is_persisted_before_its_puback() {
    let mut net = durable();
    let p = client(&mut net, "p");
    let before = net.log.len();
    net.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
    let turn = &net.log[before..];
    let persist = turn
        .iter()
        .position(
            |a| matches!(a, Action::Persist(Persist::Retain(m)) if m.topic.as_str() == "open/a"),
        )
        .expect("the retained message is persisted");
    let puback = turn
        .iter()
        .position(|a| matches!(a, Action::Send { conn, .. } if *conn == p))
        .expect("the PUBACK is sent");
    assert!(persist < puback, "{turn:?}");
    assert!(matches!(
        &net.take(p)[..],
        [Packet::PubAck(a)] if a.packet_id == PacketId::new(7).unwrap()
    ));
    let Persist::Retain(kept) = &net.persisted[0] else {
        panic!("{:?}", net.persisted)
    };
    assert_eq!(
        (&kept.payload[..], kept.qos, kept.expires_at),
        (&b"up"[..], QoS::AtLeastOnce, None)
    );

    // Cleared by an empty payload [MQTT-3.3.1-6]; not retained: nothing.
    net.publish(p, "open/a", b"", QoS::AtLeastOnce, true);
    net.publish(p, "open/b", b"x", QoS::AtLeastOnce, false);
    assert_eq!(
        net.persisted[1..],
        [Persist::Unretain(TopicName::from_static("open/a"))]
    );

    // The expiry is kept as the date it ends on; found expired, it goes.
    publish_with_expiry(&mut net, p, "open/e", b"soon", 10);
    let Some(Persist::Retain(e)) = net.persisted.last() else {
        panic!("{:?}", net.persisted)
    };
    assert_eq!(e.expires_at, Some(Timestamp::from_secs(NOW_SECS + 10)));
    net.advance(11);
    assert!(retained(&mut net, "late", "open/#").is_empty());
    assert_eq!(
        net.persisted.last(),
        Some(&Persist::Unretain(TopicName::from_static("open/e")))
    );
}

#[test]
fn a_hub_that_is_not_durable_persists_nothing() {
    let mut net = Net::standard();
    let p = client(&mut net, "p");
    net.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
    net.publish(p, "open/a", b"", QoS::AtLeastOnce, true);
    assert!(net.persisted.is_empty());
}

#[test]
fn a_restart_restores_retained_messages_their_expiry_counted_by_the_date() {
    let mut before = durable();
    let p = client(&mut before, "p");
    before.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
    publish_with_expiry(&mut before, p, "open/e", b"for a minute", 60);
    let mut store = BTreeMap::new();
    apply(&mut store, &before.persisted);
    assert_eq!(store.len(), 2);

    // Thirty seconds later by the date; a new process, a new monotonic
    // origin.
    let mut after = restarted(&before, Duration::from_secs(30));
    after.hub.restore(after.now, store.values().cloned());
    after.pump();
    assert!(after.persisted.is_empty(), "{:?}", after.persisted);
    assert_eq!(after.hub.retained_messages(), 2);
    assert_eq!(
        retained(&mut after, "s", "open/#"),
        [
            ("open/a".into(), "up".into(), None),
            ("open/e".into(), "for a minute".into(), Some(30)),
        ]
    );
    // Its expiry runs on from there.
    after.advance(31);
    assert_eq!(
        retained(&mut after, "s2", "open/#"),
        [("open/a".into(), "up".into(), None)]
    );

    // Down longer than its minute: dropped at restore, and from the store.
    let mut late = restarted(&before, Duration::from_secs(61));
    late.hub.restore(late.now, store.values().cloned());
    late.pump();
    assert_eq!(
        late.persisted,
        [Persist::Unretain(TopicName::from_static("open/e"))]
    );
    assert_eq!(
        retained(&mut late, "s", "open/#"),
        [("open/a".into(), "up".into(), None)]
    );
}

#[test]
fn a_restore_is_deterministic() {
    let run = || {
        let mut net = durable();
        let p = client(&mut net, "p");
        net.publish(p, "open/a", b"up", QoS::AtLeastOnce, true);
        publish_with_expiry(&mut net, p, "open/e", b"e", 5);
        let mut store = BTreeMap::new();
        apply(&mut store, &net.persisted);
        let mut next = durable();
        next.now = next.now + Duration::from_secs(3);
        next.hub.restore(next.now, store.into_values());
        let got = retained(&mut next, "s", "open/#");
        (got, next.log)
    };
    assert_eq!(run(), run());
}

mod restarts {
    //! Random retained publishes, clears, time and restarts at random
    //! points: after each step, a new subscriber sees exactly what a model
    //! of the retained store says — across restarts, only what was
    //! persisted comes back.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// Retain `payload` (none: clear) on topic `t`, expiring after
        /// `expiry` seconds if set.
        Retain {
            t: u8,
            payload: Option<u8>,
            expiry: Option<u8>,
        },
        /// Both clocks move on.
        Wait(u8),
        /// The broker restarts after being down this many seconds.
        Restart(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..4, proptest::option::weighted(0.8, any::<u8>()), proptest::option::of(1u8..20))
                .prop_map(|(t, payload, expiry)| Step::Retain { t, payload, expiry }),
            2 => (0u8..25).prop_map(Step::Wait),
            1 => (0u8..25).prop_map(Step::Restart),
        ]
    }

    /// What a subscriber should see now: topic → payload, with expiry dates
    /// in wall-clock seconds.
    type Model = BTreeMap<String, (String, Option<u64>)>;

    fn visible(model: &Model, wall_secs: u64) -> Vec<(String, String)> {
        model
            .iter()
            .filter(|(_, (_, exp))| exp.is_none_or(|e| wall_secs < e))
            .map(|(t, (p, _))| (t.clone(), p.clone()))
            .collect()
    }

    fn seen(net: &mut Net, n: &mut u32) -> Vec<(String, String)> {
        *n += 1;
        retained(net, &format!("s{n}"), "open/#")
            .into_iter()
            .map(|(t, p, _)| (t, p))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn what_was_persisted_comes_back_and_nothing_else(steps in proptest::collection::vec(step(), 1..40)) {
            let mut net = durable();
            let mut store = BTreeMap::new();
            let mut model = Model::new();
            let mut n = 0;
            let p = client(&mut net, "p");
            let mut publisher = p;
            for s in steps {
                match s {
                    Step::Retain { t, payload, expiry } => {
                        let topic = format!("open/{t}");
                        let text = payload.map(|b| format!("v{b}")).unwrap_or_default();
                        match expiry {
                            Some(secs) => publish_with_expiry(&mut net, publisher, &topic, text.as_bytes(), secs.into()),
                            None => net.publish(publisher, &topic, text.as_bytes(), QoS::AtLeastOnce, true),
                        }
                        if text.is_empty() {
                            model.remove(&topic);
                        } else {
                            let wall = net.now.wall.as_secs();
                            model.insert(topic, (text, expiry.map(|e| wall + u64::from(e))));
                        }
                    }
                    Step::Wait(secs) => net.advance(secs.into()),
                    Step::Restart(down) => {
                        apply(&mut store, &std::mem::take(&mut net.persisted));
                        let mut next = restarted(&net, Duration::from_secs(down.into()));
                        next.hub.restore(next.now, store.values().cloned());
                        next.pump();
                        net = next;
                        publisher = client(&mut net, "p");
                    }
                }
                let want = visible(&model, net.now.wall.as_secs());
                prop_assert_eq!(seen(&mut net, &mut n), want);
            }
        }
    }
}

mod sessions {
    //! Persistent sessions: kept with their subscriptions and expiry date,
    //! brought back disconnected after a restart, ended when their date
    //! passed while the broker was down.

    use super::*;
    use testament::broker::SessionRecord;

    /// A 5.0 client with a Session Expiry Interval of `expiry` seconds.
    fn persistent(id: &str, expiry: u32, clean: bool) -> Connect {
        let mut c = connect(V5, id, id);
        c.clean_start = clean;
        c.properties.session_expiry_interval = Some(expiry);
        c
    }

    fn apply_sessions(store: &mut BTreeMap<String, SessionRecord>, ops: &[Persist]) {
        for op in ops {
            match op {
                Persist::Session(r) => {
                    store.insert(r.client_id.to_string(), r.clone());
                }
                Persist::EndSession(id) => {
                    store.remove(&**id);
                }
                _ => {}
            }
        }
    }

    /// A subscriber `sub` (expiry 300 s, `open/#` at QoS 1 with
    /// identifier 5) that crashed; the store as the hub left it.
    fn crashed_subscriber() -> (Net, BTreeMap<String, SessionRecord>) {
        let mut net = durable();
        let (s, _) = net.connect(persistent("sub", 300, true));
        net.subscribe_with(
            s,
            vec![common::hub::sub("open/#", QoS::AtLeastOnce)],
            Some(5),
        );
        net.crash(s);
        let mut store = BTreeMap::new();
        apply_sessions(&mut store, &net.persisted);
        (net, store)
    }

    #[test]
    fn a_persistent_session_is_kept_with_its_subscriptions_and_its_date() {
        let (net, store) = crashed_subscriber();
        let r = &store["sub"];
        assert_eq!(r.expiry_interval, 300);
        assert_eq!(r.expires_at, Some(net.now.wall + Duration::from_secs(300)));
        assert_eq!(r.subscriptions.len(), 1);
        let s = &r.subscriptions[0];
        assert_eq!(
            (s.filter.as_str(), s.options.qos, s.id),
            ("open/#", QoS::AtLeastOnce, SubscriptionId::new(5))
        );
    }

    #[test]
    fn after_a_restart_it_queues_what_came_and_its_client_finds_it() {
        let (before, store) = crashed_subscriber();
        let mut after = restarted(&before, Duration::from_secs(100));
        after.hub.restore_sessions(after.now, store.into_values());
        after.pump();
        assert_eq!(after.hub.sessions(), 1);
        let p = client(&mut after, "p");
        after.publish(p, "open/x", b"while away", QoS::AtLeastOnce, false);
        let (s, present) = after.connect(persistent("sub", 300, false));
        assert!(present, "Session Present: the session came back");
        let got = after.publishes(s);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(&got[0].payload[..], b"while away");
        assert_eq!(
            got[0]
                .properties
                .subscription_identifiers
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [SubscriptionId::new(5).unwrap()]
        );
    }

    #[test]
    fn one_whose_date_passed_while_the_broker_was_down_ends() {
        let (before, store) = crashed_subscriber();
        let mut after = restarted(&before, Duration::from_secs(301));
        after.hub.restore_sessions(after.now, store.into_values());
        after.pump();
        assert_eq!(after.hub.sessions(), 0);
        assert_eq!(
            after.persisted,
            [Persist::EndSession("sub".into())],
            "its record goes"
        );
        assert!(
            after
                .audit_lines()
                .iter()
                .any(|l| l.contains("event=session_expired"))
        );
        let (_, present) = after.connect(persistent("sub", 300, false));
        assert!(!present);
    }

    #[test]
    fn one_connected_at_a_crash_expires_its_interval_after_the_restart() {
        let mut net = durable();
        net.connect(persistent("sub", 300, true));
        let mut store = BTreeMap::new();
        apply_sessions(&mut store, &net.persisted);
        assert_eq!(store["sub"].expires_at, None, "connected: not running");
        // The broker dies; it is back a day later.
        let mut after = restarted(&net, Duration::from_secs(86_400));
        let wall = after.now.wall;
        after.hub.restore_sessions(after.now, store.into_values());
        after.pump();
        assert_eq!(after.hub.sessions(), 1);
        let Some(Persist::Session(r)) = after.persisted.last() else {
            panic!("{:?}", after.persisted)
        };
        assert_eq!(r.expires_at, Some(wall + Duration::from_secs(300)));
        after.advance(299);
        assert_eq!(after.hub.sessions(), 1);
        after.advance(1);
        assert_eq!(after.hub.sessions(), 0, "expired 300 s after the restart");
    }

    #[test]
    fn a_session_that_ends_with_its_connection_is_not_kept() {
        let mut net = durable();
        let (c, _) = net.connect(persistent("clean", 0, true));
        net.subscribe(c, &[("open/#", QoS::AtLeastOnce)]);
        net.crash(c);
        assert!(
            !net.persisted
                .iter()
                .any(|p| matches!(p, Persist::Session(_))),
            "{:?}",
            net.persisted
        );
    }
}
