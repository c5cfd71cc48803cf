//! What the hub keeps beyond the moment — retained messages, offline
//! queues, messages waiting behind a slow client's window — is copied out of
//! the read buffer it arrived in: sharing it would keep that whole buffer
//! alive for as long as the message is kept. Counted with a global
//! allocator, so this file holds a single test.

mod common;

use common::alloc::Counting;
use common::hub::{Net, connect};
use testament::codec::*;

#[global_allocator]
static GLOBAL: Counting = Counting;

const V5: ProtocolVersion = ProtocolVersion::V5;
const MESSAGES: usize = 50;
const BIG: usize = 32 * 1024;

fn publish(topic: &str, payload: Vec<u8>, qos: QoS, retain: bool) -> Vec<u8> {
    let mut p = Publish::new(TopicName::try_from(topic).unwrap(), payload);
    p.qos = qos;
    p.retain = retain;
    p.packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(1).unwrap());
    Packet::Publish(p).to_vec(V5).unwrap()
}

#[test]
fn kept_messages_do_not_keep_their_read_buffers() {
    let mut net = Net::standard();
    // A persistent subscriber that goes away: QoS 1 messages queue for it.
    let mut c = connect(V5, "s", "s");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    let (s, _) = net.connect(c);
    net.subscribe(s, &[("open/q/#", QoS::AtLeastOnce)]);
    net.crash(s);
    // A connected subscriber that takes one message at a time and never
    // acknowledges: the others wait in its queue.
    let mut c = connect(V5, "slow", "slow");
    c.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (slow, _) = net.connect(c);
    net.subscribe(slow, &[("open/q/#", QoS::AtLeastOnce)]);
    let (p, _) = net.connect(connect(V5, "p", "p"));
    // Warm up whatever the hub allocates once (tables, queues).
    net.send_bytes(
        p,
        &publish("open/warm", b"w".to_vec(), QoS::AtLeastOnce, true),
    );
    net.send_bytes(
        p,
        &publish("open/q/warm", b"w".to_vec(), QoS::AtLeastOnce, false),
    );
    net.take(p);
    net.take(slow);
    // The test's own records would keep what they name alive.
    net.audits.clear();
    net.log.clear();

    let before = Counting::live();
    for i in 0..MESSAGES {
        // Each small message to keep arrives in one read with a big one
        // that nobody keeps: they share the read buffer.
        let mut read = publish(&format!("open/r/{i}"), vec![1; 10], QoS::AtMostOnce, true);
        read.extend(publish(
            &format!("open/q/{i}"),
            vec![2; 10],
            QoS::AtLeastOnce,
            false,
        ));
        read.extend(publish("open/big", vec![3; BIG], QoS::AtMostOnce, false));
        net.send_bytes(p, &read);
        net.take(p);
        net.take(slow);
        net.audits.clear();
        net.log.clear();
    }
    let grown = Counting::live() - before;
    assert_eq!(net.hub.retained_messages(), MESSAGES + 1);
    // Shared, each kept message would hold a buffer of more than BIG bytes.
    let per_message = grown / (3 * MESSAGES) as isize;
    assert!(
        per_message < 1024,
        "{per_message} bytes held per kept message ({grown} in all)"
    );

    // And they are all there.
    let (s, present) = net.connect({
        let mut c = connect(V5, "s", "s");
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
        c
    });
    assert!(present);
    let queued = net.publishes(s);
    assert_eq!(queued.len(), MESSAGES + 1);
    assert!(queued[1..].iter().all(|m| m.payload[..] == [2; 10]));
}
