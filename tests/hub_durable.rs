//! A durable hub: every change of a retained message leaves as a Persist
//! before anything that follows it (the PUBACK of the publish that made
//! it), and a restart restores what was kept, the expiry counted by the
//! date it ends on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::hub::{Net, connect, default_acl};
use common::jwt::NOW_SECS;
use testament::broker::{Action, BrokerConfig, ConnId, Persist, SentState, WillState};
use testament::codec::*;
use testament::driver::storage::MemoryStorage;
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

/// Commits into `store` what `net`'s hub persisted since the last call.
fn commit(net: &mut Net, store: &mut MemoryStorage) {
    std::mem::take(&mut net.persisted)
        .iter()
        .for_each(|op| store.apply(op));
}

/// The broker dies (or stopped); a new process `down` seconds later
/// restores what was committed.
fn crash_and_restart(before: &mut Net, store: &mut MemoryStorage, down: u64) -> Net {
    commit(before, store);
    let mut after = restarted(before, Duration::from_secs(down));
    after.hub.restore_all(after.now, store.load());
    after.pump();
    after
}

/// The store as a host keeps it: what `net`'s hub persisted, committed.
fn committed(net: &Net) -> MemoryStorage {
    let mut store = MemoryStorage::default();
    net.persisted.iter().for_each(|op| store.apply(op));
    store
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
    let store = committed(&before);
    assert_eq!(store.load().retained.len(), 2);

    // Thirty seconds later by the date; a new process, a new monotonic
    // origin.
    let mut after = restarted(&before, Duration::from_secs(30));
    after.hub.restore(after.now, store.load().retained);
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
    late.hub.restore(late.now, store.load().retained);
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
        let store = committed(&net);
        let mut next = durable();
        next.now = next.now + Duration::from_secs(3);
        next.hub.restore(next.now, store.load().retained);
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
            let mut store = MemoryStorage::default();
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
                        commit(&mut net, &mut store);
                        let mut next = restarted(&net, Duration::from_secs(down.into()));
                        next.hub.restore(next.now, store.load().retained);
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

    /// The sessions `net`'s hub persisted, by client id.
    fn sessions_of(net: &Net) -> BTreeMap<String, SessionRecord> {
        committed(net)
            .load()
            .sessions
            .into_iter()
            .map(|r| (r.client_id.to_string(), r))
            .collect()
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
        let store = sessions_of(&net);
        (net, store)
    }

    #[test]
    fn a_persistent_session_is_kept_with_its_subscriptions_and_its_date() {
        let (net, store) = crashed_subscriber();
        let r = &store["sub"];
        assert_eq!(r.expiry_interval, 300);
        // With the identity of its authentication — never the token.
        let identity = r.identity.as_deref().expect("its identity");
        assert_eq!((&*identity.principal, &*identity.client_id), ("sub", "sub"));
        let json = String::from_utf8(r.encode()).unwrap();
        assert!(!json.contains("eyJ"), "no token in the record: {json}");
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
        let store = sessions_of(&net);
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

mod messages {
    //! The QoS 1/2 messages of persistent sessions: kept before the PUBACK
    //! of the publish that brought them, brought back by a restart — in
    //! the offline queue, or in flight with their packet ids — and let go
    //! once acknowledged. Inbound QoS 2 packet ids waiting for PUBREL come
    //! back too: a resent PUBLISH is not routed twice.

    use super::*;
    use testament::broker::StoredMessage;

    fn persistent(id: &str, clean: bool) -> Connect {
        let mut c = connect(V5, id, id);
        c.clean_start = clean;
        c.properties.session_expiry_interval = Some(300);
        c
    }

    fn ack(net: &mut Net, conn: ConnId, packet_id: PacketId) {
        net.send(conn, Packet::PubAck(PubAck::new(packet_id)));
    }

    fn kept(store: &MemoryStorage) -> Vec<StoredMessage> {
        store.load().messages
    }

    fn payloads(got: &[Publish]) -> Vec<&[u8]> {
        got.iter().map(|p| &p.payload[..]).collect()
    }

    /// `sub` holding `open/1/#` at QoS 1 and `open/2/#` at QoS 2, away.
    fn away_subscriber(net: &mut Net) {
        let (s, _) = net.connect(persistent("sub", true));
        net.subscribe(
            s,
            &[
                ("open/1/#", QoS::AtLeastOnce),
                ("open/2/#", QoS::ExactlyOnce),
            ],
        );
        net.crash(s);
    }

    #[test]
    fn an_offline_queue_survives_a_crash_and_each_message_goes_once_acknowledged() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        away_subscriber(&mut net);
        let p = client(&mut net, "p");
        let before = net.log.len();
        net.publish(p, "open/1/a", b"m1", QoS::AtLeastOnce, false);
        let turn = &net.log[before..];
        let kept_at = turn
            .iter()
            .position(
                |a| matches!(a, Action::Persist(Persist::Message(m)) if &*m.client_id == "sub"),
            )
            .expect("the message is kept for the session");
        let puback = turn
            .iter()
            .position(|a| matches!(a, Action::Send { conn, .. } if *conn == p))
            .expect("the PUBACK");
        assert!(kept_at < puback, "kept before it is acknowledged: {turn:?}");
        net.publish(p, "open/1/b", b"m2", QoS::AtLeastOnce, false);
        net.publish(p, "open/1/c", b"m3", QoS::AtMostOnce, false);

        let mut after = crash_and_restart(&mut net, &mut store, 10);
        assert_eq!(
            kept(&store).len(),
            2,
            "QoS 0 is not kept for an away session"
        );
        let (s, present) = after.connect(persistent("sub", false));
        assert!(present);
        let got = after.publishes(s);
        assert_eq!(payloads(&got), [&b"m1"[..], b"m2"]);
        assert!(got.iter().all(|p| !p.dup), "never sent before: no DUP");
        for p in &got {
            ack(&mut after, s, p.packet_id.unwrap());
        }
        crash_and_restart(&mut after, &mut store, 1);
        assert!(kept(&store).is_empty(), "acknowledged: let go");
    }

    /// `sub` connected and holding two messages in flight: `one` (QoS 1,
    /// not acknowledged) and `two` (QoS 2, PUBREC received, PUBREL sent,
    /// the PUBCOMP never comes); their packet ids.
    fn two_in_flight(net: &mut Net) -> (ConnId, PacketId, PacketId) {
        let (s, _) = net.connect(persistent("sub", true));
        net.subscribe(
            s,
            &[
                ("open/1/#", QoS::AtLeastOnce),
                ("open/2/#", QoS::ExactlyOnce),
            ],
        );
        let p = client(net, "p");
        net.publish(p, "open/1/a", b"one", QoS::AtLeastOnce, false);
        net.publish(p, "open/2/b", b"two", QoS::ExactlyOnce, false);
        let got = net.publishes(s);
        assert_eq!(payloads(&got), [&b"one"[..], b"two"]);
        let (one, two) = (got[0].packet_id.unwrap(), got[1].packet_id.unwrap());
        net.send(s, Packet::PubRec(PubRec::new(two)));
        assert_eq!(net.take(s), [Packet::PubRel(PubRel::new(two))]);
        (s, one, two)
    }

    #[test]
    fn messages_in_flight_come_back_with_their_packet_ids_as_dup_or_pubrel() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        let (_, one, two) = two_in_flight(&mut net);

        // The broker dies (no word to anyone) and comes back.
        let mut after = crash_and_restart(&mut net, &mut store, 5);
        let sent: Vec<_> = kept(&store).iter().map(|m| m.sent).collect();
        assert_eq!(
            sent,
            [
                Some(SentState {
                    packet_id: one,
                    released: false
                }),
                Some(SentState {
                    packet_id: two,
                    released: true
                }),
            ]
        );
        let (s, present) = after.connect(persistent("sub", false));
        assert!(present);
        let again = after.take(s);
        // [MQTT-4.4.0-1] the PUBLISH with DUP and its id; the PUBREL, not
        // the message, for the one already received.
        match &again[..] {
            [Packet::Publish(p), Packet::PubRel(r)] => {
                assert_eq!(
                    (p.packet_id, p.dup, &p.payload[..]),
                    (Some(one), true, &b"one"[..])
                );
                assert_eq!(r.packet_id, two);
            }
            other => panic!("{other:?}"),
        }
        ack(&mut after, s, one);
        after.send(s, Packet::PubComp(PubComp::new(two)));
        crash_and_restart(&mut after, &mut store, 1);
        assert!(kept(&store).is_empty());
    }

    /// A turn of only changes that may wait (the subscriber's PUBACK and
    /// PUBCOMP) is committed without a flush; a crash that loses it costs
    /// the messages sent again — QoS 1 with DUP and its packet id, QoS 2 as
    /// its PUBREL — never one lost or one delivered twice as new.
    #[test]
    fn the_end_of_an_exchange_may_wait_for_a_flush_and_losing_it_costs_a_dup() {
        use testament::driver::storage::Storage as _;
        let mut net = durable();
        let mut store = MemoryStorage::default();
        let (s, one, two) = two_in_flight(&mut net);
        let sent = std::mem::take(&mut net.persisted);
        assert!(
            sent.iter().any(|op| !op.may_wait()),
            "messages kept, sent and released are flushed: {sent:?}"
        );
        store.commit(&sent).unwrap();

        ack(&mut net, s, one);
        net.send(s, Packet::PubComp(PubComp::new(two)));
        let done = std::mem::take(&mut net.persisted);
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(done.iter().all(Persist::may_wait), "{done:?}");
        store.commit_unflushed(&done).unwrap();
        store.crash();

        let mut after = restarted(&net, Duration::from_secs(5));
        after.hub.restore_all(after.now, store.load());
        after.pump();
        let (s, present) = after.connect(persistent("sub", false));
        assert!(present);
        match &after.take(s)[..] {
            [Packet::Publish(p), Packet::PubRel(r)] => {
                assert_eq!((p.packet_id, p.dup), (Some(one), true));
                assert_eq!(r.packet_id, two);
            }
            other => panic!("{other:?}"),
        }

        // Flushed, the same PUBACK and PUBCOMP let them go for good.
        ack(&mut after, s, one);
        after.send(s, Packet::PubComp(PubComp::new(two)));
        let done = std::mem::take(&mut after.persisted);
        store.commit_unflushed(&done).unwrap();
        store.flush().unwrap();
        store.crash();
        assert!(kept(&store).is_empty());
    }

    #[test]
    fn an_inbound_qos2_message_is_not_routed_twice_across_a_restart() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        away_subscriber(&mut net);
        let (p, _) = net.connect(persistent("p", true));
        let mut publish = Publish::new(TopicName::from_static("open/2/x"), &b"once"[..]);
        publish.qos = QoS::ExactlyOnce;
        publish.packet_id = PacketId::new(7);
        net.send(p, Packet::Publish(publish.clone()));
        assert!(
            matches!(&net.take(p)[..], [Packet::PubRec(r)] if r.packet_id == PacketId::new(7).unwrap())
        );

        let mut after = crash_and_restart(&mut net, &mut store, 5);
        assert_eq!(store.load().awaiting_release.len(), 1);
        let (p, present) = after.connect(persistent("p", false));
        assert!(present);
        // The client did not see the PUBREC: it resends, with DUP.
        publish.dup = true;
        after.send(p, Packet::Publish(publish));
        assert!(matches!(&after.take(p)[..], [Packet::PubRec(_)]));
        after.send(p, Packet::PubRel(PubRel::new(PacketId::new(7).unwrap())));
        match &after.take(p)[..] {
            [Packet::PubComp(c)] => assert_eq!(c.reason_code, PubCompReasonCode::Success),
            other => panic!("{other:?}"),
        }
        let (s, _) = after.connect(persistent("sub", false));
        assert_eq!(payloads(&after.publishes(s)), [&b"once"[..]], "routed once");
        crash_and_restart(&mut after, &mut store, 1);
        assert!(store.load().awaiting_release.is_empty());
    }

    #[test]
    fn a_kept_message_expires_by_its_date_across_a_restart() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        away_subscriber(&mut net);
        let p = client(&mut net, "p");
        let mut publish = Publish::new(TopicName::from_static("open/1/e"), &b"for a minute"[..]);
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = PacketId::new(3);
        publish.properties.message_expiry_interval = Some(60);
        net.send(p, Packet::Publish(publish));
        commit(&mut net, &mut store);

        let mut soon = crash_and_restart(&mut net, &mut store.clone(), 30);
        let (s, _) = soon.connect(persistent("sub", false));
        let got = soon.publishes(s);
        assert_eq!(payloads(&got), [&b"for a minute"[..]]);
        assert_eq!(got[0].properties.message_expiry_interval, Some(30));

        let mut late = crash_and_restart(&mut net, &mut store, 61);
        assert!(
            kept(&store).len() == 1 && matches!(&late.persisted[..], [Persist::MessageDone { .. }]),
            "{:?}",
            late.persisted
        );
        let (s, _) = late.connect(persistent("sub", false));
        assert!(late.publishes(s).is_empty());
    }

    #[test]
    fn a_session_that_ends_with_its_connection_keeps_no_message() {
        let mut net = durable();
        let (s, _) = net.connect(connect(V5, "clean", "clean"));
        net.subscribe(s, &[("open/#", QoS::AtLeastOnce)]);
        let p = client(&mut net, "p");
        net.publish(p, "open/1", b"m", QoS::AtLeastOnce, false);
        assert_eq!(net.publishes(s).len(), 1);
        assert!(
            !net.persisted.iter().any(|op| matches!(
                op,
                Persist::Message(_) | Persist::MessageSent { .. } | Persist::AwaitingRelease { .. }
            )),
            "{:?}",
            net.persisted
        );
    }
}

mod acknowledged {
    //! Random programs — QoS 1/2 publishes, a persistent subscriber that
    //! comes, goes and acknowledges, the broker restarting at random
    //! points from what it committed — never lose a message whose
    //! publisher was acknowledged, and never hand one to the subscriber
    //! twice as new (a repeat carries DUP, or is a PUBREL).

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Step {
        Publish { exactly_once: bool },
        Connect,
        Crash,
        Acknowledge,
        Wait(u8),
        Restart(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => any::<bool>().prop_map(|exactly_once| Step::Publish { exactly_once }),
            2 => Just(Step::Connect),
            1 => Just(Step::Crash),
            3 => Just(Step::Acknowledge),
            1 => (0u8..20).prop_map(Step::Wait),
            2 => (0u8..20).prop_map(Step::Restart),
        ]
    }

    fn subscriber(clean: bool) -> Connect {
        let mut c = connect(V5, "sub", "sub");
        c.clean_start = clean;
        c.properties.session_expiry_interval = Some(3_600);
        c
    }

    /// What the subscriber's client does with what it received: keeps
    /// each message (and whether it was a DUP), acknowledges all.
    fn acknowledge(net: &mut Net, s: ConnId, received: &mut Vec<(Bytes, bool)>) {
        for packet in net.take(s) {
            match packet {
                Packet::Publish(p) => {
                    received.push((p.payload.clone(), p.dup));
                    let id = p.packet_id.expect("QoS 1/2");
                    let ack = match p.qos {
                        QoS::ExactlyOnce => Packet::PubRec(PubRec::new(id)),
                        _ => Packet::PubAck(PubAck::new(id)),
                    };
                    net.send(s, ack);
                }
                Packet::PubRel(r) => net.send(s, Packet::PubComp(PubComp::new(r.packet_id))),
                _ => {}
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn nothing_acknowledged_is_lost_and_nothing_is_new_twice(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let mut net = durable();
            let mut store = MemoryStorage::default();
            let (first, _) = net.connect(subscriber(true));
            net.subscribe(first, &[("open/1/#", QoS::AtLeastOnce), ("open/2/#", QoS::ExactlyOnce)]);
            let mut sub = Some(first);
            let mut publisher = client(&mut net, "p");
            let mut acknowledged = BTreeSet::new();
            let mut received = Vec::new();
            for (i, s) in steps.into_iter().enumerate() {
                match s {
                    Step::Publish { exactly_once } => {
                        let payload = Bytes::from(format!("m{i}"));
                        let topic = if exactly_once { "open/2/x" } else { "open/1/x" };
                        let mut p = Publish::new(TopicName::from_static(topic), payload.clone());
                        p.qos = if exactly_once { QoS::ExactlyOnce } else { QoS::AtLeastOnce };
                        let id = PacketId::new(u16::try_from(i % 1_000 + 1).unwrap()).unwrap();
                        p.packet_id = Some(id);
                        net.send(publisher, Packet::Publish(p));
                        for answer in net.take(publisher) {
                            match answer {
                                Packet::PubAck(a) if a.reason_code == PubAckReasonCode::Success => {
                                    acknowledged.insert(payload.clone());
                                }
                                Packet::PubRec(r) if r.reason_code == PubRecReasonCode::Success => {
                                    acknowledged.insert(payload.clone());
                                    net.send(publisher, Packet::PubRel(PubRel::new(id)));
                                    net.take(publisher);
                                }
                                other => prop_assert!(false, "{other:?}"),
                            }
                        }
                    }
                    Step::Connect if sub.is_none() => sub = Some(net.connect(subscriber(false)).0),
                    Step::Crash => {
                        if let Some(s) = sub.take() {
                            net.crash(s);
                        }
                    }
                    Step::Acknowledge => {
                        if let Some(s) = sub {
                            acknowledge(&mut net, s, &mut received);
                        }
                    }
                    Step::Wait(secs) => net.advance(secs.into()),
                    Step::Restart(down) => {
                        // Whatever the subscriber's client had received
                        // stays received; its connection is gone.
                        if let Some(s) = sub.take() {
                            for packet in net.take(s) {
                                if let Packet::Publish(p) = packet {
                                    received.push((p.payload.clone(), p.dup));
                                }
                            }
                        }
                        commit(&mut net, &mut store);
                        let mut next = restarted(&net, Duration::from_secs(down.into()));
                        next.hub.restore_all(next.now, store.load());
                        next.pump();
                        net = next;
                        publisher = client(&mut net, "p");
                    }
                    Step::Connect => {}
                }
            }
            // The subscriber comes back and takes everything.
            let s = match sub {
                Some(s) => s,
                None => net.connect(subscriber(false)).0,
            };
            for _ in 0..20 {
                acknowledge(&mut net, s, &mut received);
            }
            let got: BTreeSet<Bytes> = received.iter().map(|(p, _)| p.clone()).collect();
            let lost: Vec<_> = acknowledged.difference(&got).collect();
            prop_assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
            let mut fresh = BTreeSet::new();
            for (payload, dup) in &received {
                prop_assert!(*dup || fresh.insert(payload.clone()), "{payload:?} new twice: {received:?}");
            }
        }
    }
}

mod wills {
    //! Wills across a restart. Kept from the CONNACK that registered them
    //! to their decision, they are decided once: a client connected at a
    //! crash has its will triggered at the restart (`server_crashed`), its
    //! delay counted from then; a planned shutdown pauses the wills, which
    //! resume their delay after the restart; a will decided before the
    //! crash is not sent again.

    use super::*;
    use common::hub::{sub, will};

    /// A 5.0 client `id` with a will "down" on `trusted/<id>/state`, Will
    /// Delay `delay`, Session Expiry `expiry`.
    fn server(id: &str, delay: u32, expiry: u32) -> Connect {
        let mut c = connect(V5, id, id);
        let topic = format!("trusted/{id}/state");
        let mut w = will(&topic, b"down", QoS::AtLeastOnce, false);
        w.properties.will_delay_interval = Some(delay);
        c.will = Some(w);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(expiry);
        c
    }

    /// A persistent monitor of every state, away: what comes for it waits
    /// in its queue.
    fn monitor(net: &mut Net) {
        let mut c = connect(V5, "mon", "mon");
        c.properties.session_expiry_interval = Some(86_400);
        let (m, _) = net.connect(c);
        net.subscribe_with(m, vec![sub("trusted/+/state", QoS::AtLeastOnce)], None);
        net.crash(m);
    }

    /// The "down" messages the monitor finds when it comes back (and
    /// acknowledges).
    fn downs(net: &mut Net) -> Vec<(String, String)> {
        let mut c = connect(V5, "mon", "mon");
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(86_400);
        let (m, _) = net.connect(c);
        let publishes = net.publishes(m);
        for p in &publishes {
            net.send(m, Packet::PubAck(PubAck::new(p.packet_id.unwrap())));
        }
        net.crash(m);
        common::hub::messages(&publishes)
    }

    /// A planned shutdown, then a restart `down` seconds later.
    fn stop_and_restart(before: &mut Net, store: &mut MemoryStorage, down: u64) -> Net {
        before.shutdown();
        crash_and_restart(before, store, down)
    }

    fn allow() -> testament::auth::Decision {
        testament::auth::Decision::by_policy(testament::auth::Effect::Allow, "test")
    }

    fn down() -> (String, String) {
        ("trusted/srv/state".into(), "down".into())
    }

    #[test]
    fn a_will_is_kept_before_the_connack_that_registered_it() {
        let mut net = durable();
        let c = net.connect_with(server("srv", 30, 300));
        let turn = &net.log;
        let kept = turn
            .iter()
            .position(|a| {
                matches!(a, Action::Persist(Persist::Will(w))
                    if &*w.client_id == "srv" && w.state == WillState::Armed
                        && w.identity.principal.as_ref() == "srv")
            })
            .expect("the will is kept");
        let connack = turn
            .iter()
            .position(|a| matches!(a, Action::Send { conn, .. } if *conn == c))
            .expect("the CONNACK");
        assert!(kept < connack, "{turn:?}");
    }

    #[test]
    fn connected_at_a_crash_the_will_comes_its_delay_after_the_restart() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        monitor(&mut net);
        net.connect(server("srv", 30, 300));
        // Down longer than the will's delay: it counts from the restart.
        let mut after = crash_and_restart(&mut net, &mut store, 120);
        let triggered = after
            .audit_lines()
            .into_iter()
            .find(|l| l.contains("event=will") && l.contains("outcome=triggered"))
            .expect("a trigger of its own");
        assert!(triggered.contains("trigger=server_crashed"), "{triggered}");
        after.advance(29);
        assert!(downs(&mut after).is_empty(), "not before its delay");
        after.advance(1);
        assert_eq!(downs(&mut after), [down()]);
        // Decided: nothing of it is left to send again.
        let mut again = crash_and_restart(&mut after, &mut store, 10);
        again.advance(60);
        assert!(downs(&mut again).is_empty(), "delivered once");
        assert!(store.load().wills.is_empty());
    }

    #[test]
    fn connected_at_a_crash_and_back_in_time_no_will() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        monitor(&mut net);
        net.connect(server("srv", 30, 300));
        let mut after = crash_and_restart(&mut net, &mut store, 5);
        after.advance(10);
        let (_, present) = after.connect(server("srv", 30, 300));
        assert!(present, "its session came back");
        after.advance(60);
        assert!(downs(&mut after).is_empty());
        assert!(
            after.will_events().contains(&("srv".into(), "cancelled")),
            "{:?}",
            after.will_events()
        );
    }

    #[test]
    fn a_311_client_connected_at_a_crash_has_its_will_sent_at_the_restart() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        monitor(&mut net);
        let mut c = connect(ProtocolVersion::V311, "srv", "srv");
        c.will = Some(will("trusted/srv/state", b"down", QoS::AtLeastOnce, false));
        net.connect(c);
        let mut after = crash_and_restart(&mut net, &mut store, 60);
        assert_eq!(downs(&mut after), [down()]);
    }

    #[test]
    fn a_planned_restart_pauses_wills_and_a_client_back_in_time_sends_none() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        monitor(&mut net);
        net.connect(server("srv", 30, 300));
        let mut after = stop_and_restart(&mut net, &mut store, 120);
        assert!(downs(&mut after).is_empty(), "no false down at the stop");
        after.advance(20);
        after.connect(server("srv", 30, 300));
        after.advance(60);
        assert!(downs(&mut after).is_empty(), "nor after the restart");
    }

    #[test]
    fn a_planned_restart_keeps_what_was_left_of_a_delay() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        monitor(&mut net);
        let (c, _) = net.connect(server("srv", 30, 300));
        net.crash(c);
        net.advance(10);
        // Stopped with 20 s of its delay left, down for two minutes (its
        // session's expiry, by the date, has not passed).
        let mut after = stop_and_restart(&mut net, &mut store, 120);
        assert!(
            net.will_events().contains(&("srv".into(), "paused")),
            "{:?}",
            net.will_events()
        );
        after.advance(19);
        assert!(downs(&mut after).is_empty());
        after.advance(1);
        assert_eq!(downs(&mut after), [down()]);
    }

    /// A planned stop longer than the sessions' expiry: their expiry
    /// pauses with the wills — no session ends at the restart, so no will
    /// goes as a false "down" for a client about to come back; one that
    /// does not come back still gets its will after its delay, and its
    /// session ends what was left of its interval after the restart.
    #[test]
    fn a_planned_stop_longer_than_a_session_pauses_its_expiry_too() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        monitor(&mut net);
        net.connect(server("back", 30, 60));
        let (away, _) = net.connect(server("srv", 30, 60));
        net.crash(away);
        net.advance(10);
        // Down ten minutes: past every date the sessions had.
        let mut after = stop_and_restart(&mut net, &mut store, 600);
        let sessions: BTreeMap<String, (u32, bool)> = store
            .load()
            .sessions
            .into_iter()
            .map(|r| {
                (
                    r.client_id.to_string(),
                    (r.expiry_interval, r.expires_at.is_some()),
                )
            })
            .collect();
        assert_eq!(sessions["back"].0, 60, "{sessions:?}");
        assert_eq!(sessions["srv"].0, 50, "what was left: {sessions:?}");
        assert!(
            downs(&mut after).is_empty(),
            "no session ended at the restart"
        );
        after.advance(5);
        let (_, present) = after.connect(server("back", 30, 60));
        assert!(present, "its session waited for it");
        after.advance(14);
        assert!(
            downs(&mut after).is_empty(),
            "srv: 20 s of its delay were left"
        );
        after.advance(1);
        assert_eq!(downs(&mut after), [down()], "srv did not come back");
        after.advance(30);
        let (_, present) = after.connect(server("srv", 30, 60));
        assert!(!present, "its session ended 50 s after the restart");
    }

    /// A crash is not a planned stop: the session that was already away
    /// expires by its date.
    #[test]
    fn after_a_crash_an_away_session_expires_by_its_date() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        let (away, _) = net.connect(server("srv", 0, 60));
        net.crash(away);
        let mut after = crash_and_restart(&mut net, &mut store, 600);
        let (_, present) = after.connect(server("srv", 0, 60));
        assert!(!present);
    }

    #[test]
    fn a_will_waiting_for_its_decision_at_a_crash_is_decided_after_the_restart() {
        // No synchronous ACL: each decision is the host's answer.
        let config = BrokerConfig {
            durable: true,
            ..BrokerConfig::default()
        };
        let mut net = Net::new(config.clone(), None);
        let mut store = MemoryStorage::default();
        let mut c = connect(V5, "srv", "srv");
        c.will = Some(will("open/srv/state", b"down", QoS::AtLeastOnce, false));
        let conn = net.connect_with(c);
        // The will check at CONNECT.
        assert_eq!(net.asked.len(), 1);
        let check = net.asked[0].0;
        net.answer(check, allow());
        net.take(conn);
        net.crash(conn);
        assert_eq!(net.asked.len(), 1, "the will waits for its decision");
        // The broker dies before the answer.
        commit(&mut net, &mut store);
        let mut after = Net::new(config, None);
        after.now = Now::new(Instant::from_secs(1), net.now.wall + Duration::from_secs(5));
        after.hub.restore_all(after.now, store.load());
        after.pump();
        assert_eq!(after.asked.len(), 1, "asked again, once");
        let (ticket, _, query) = after.asked[0].clone();
        assert_eq!(
            query.will_trigger,
            Some(testament::auth::WillTrigger::NetworkError),
            "the trigger it had"
        );
        after.answer(ticket, allow());
        assert!(after.will_events().contains(&("srv".into(), "delivered")));
        let mut left = store.clone();
        after.persisted.iter().for_each(|op| left.apply(op));
        assert!(left.load().wills.is_empty(), "decided: its record went");
    }

    #[test]
    fn a_restored_will_is_authorized_against_the_acl_in_force_at_the_restart() {
        let mut net = durable();
        let mut store = MemoryStorage::default();
        monitor(&mut net);
        net.connect(server("srv", 0, 300));
        commit(&mut net, &mut store);
        // Restarted with an ACL that no longer lets srv publish its state.
        let config = BrokerConfig {
            durable: true,
            ..BrokerConfig::default()
        };
        let acl = testament::auth::Acl::new(vec![testament::auth::Rule::new(
            testament::auth::Effect::Allow,
            testament::auth::Ops::ALL,
            testament::auth::Subject::Anyone,
            testament::auth::FilterTemplate::new("open/#").unwrap(),
        )]);
        let mut after = Net::new(config, Some(acl));
        after.now = Now::new(Instant::from_secs(1), net.now.wall + Duration::from_secs(5));
        after.hub.restore_all(after.now, store.load());
        after.pump();
        assert!(
            after.will_events().contains(&("srv".into(), "denied")),
            "{:?}",
            after.will_events()
        );
    }
}

mod full_disk {
    //! While the host's store cannot commit, QoS 1/2 publishes are refused
    //! — 5.0 with 0x97, 3.1.1 (no negative acknowledgement) by closing —
    //! and QoS 0 goes on; once it can, they are taken again.

    use super::*;

    #[test]
    fn qos_1_is_refused_while_the_store_is_full_and_taken_again_after() {
        let mut net = durable();
        let s = client(&mut net, "s");
        net.subscribe(s, &[("open/#", QoS::AtLeastOnce)]);
        let p = client(&mut net, "p");
        let (p3, _) = net.connect(connect(ProtocolVersion::V311, "p3", "p3"));
        net.hub.set_storage_available(false);
        net.publish(p, "open/1", b"kept?", QoS::AtLeastOnce, false);
        match &net.take(p)[..] {
            [Packet::PubAck(a)] => assert_eq!(a.reason_code, PubAckReasonCode::QuotaExceeded),
            other => panic!("{other:?}"),
        }
        net.publish(p, "open/2", b"zero", QoS::AtMostOnce, false);
        net.publish(p3, "open/3", b"kept?", QoS::AtLeastOnce, false);
        assert!(
            net.closed(p3).is_some(),
            "3.1.1: closed, it sends it again later"
        );
        assert_eq!(
            common::hub::messages(&net.publishes(s)),
            [("open/2".to_string(), "zero".to_string())],
            "only QoS 0 was routed"
        );
        assert!(
            net.audit_lines()
                .iter()
                .any(|l| l.contains("by=\"storage unavailable\"")),
            "{:#?}",
            net.audit_lines()
        );
        net.hub.set_storage_available(true);
        net.publish(p, "open/4", b"kept", QoS::AtLeastOnce, false);
        match &net.take(p)[..] {
            [Packet::PubAck(a)] => assert_eq!(a.reason_code, PubAckReasonCode::Success),
            other => panic!("{other:?}"),
        }
    }
}
