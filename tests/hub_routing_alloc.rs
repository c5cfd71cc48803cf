//! Routing a publish allocates nothing per message once the hub is warm: no
//! list of matches, no list of targets, no copy of topic or payload per
//! delivery. What a batch allocates (its read buffer, the output blocks of
//! the subscribers) is shared by all the messages in it. Counted with a
//! global allocator, per thread, so this file holds a single test.

mod common;

use common::alloc::Counting;
use common::hub::{Net, connect};
use testament::codec::*;

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 500;

fn batch(version: ProtocolVersion, qos: QoS) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..BATCH {
        let mut p = Publish::new(
            TopicName::try_from(format!("open/r/site-{}/state", i % 7)).unwrap(),
            vec![7u8; 100],
        );
        p.qos = qos;
        p.packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(1 + i as u16).unwrap());
        p.encode(version, &mut out).unwrap();
    }
    out
}

#[test]
fn routing_allocates_nothing_per_message() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let mut net = Net::standard();
            let (s1, _) = net.connect(connect(version, "s1", "s1"));
            net.subscribe(s1, &[("open/r/#", QoS::AtMostOnce)]);
            let (s2, _) = net.connect(connect(version, "s2", "s2"));
            net.subscribe(s2, &[("open/r/+/state", QoS::AtMostOnce)]);
            let (p, _) = net.connect(connect(version, "p", "p"));
            let read = batch(version, qos);
            // Warm up what the hub and the sessions keep between batches.
            for _ in 0..3 {
                net.send_bytes(p, &read);
                net.take(s1);
                net.take(s2);
                net.take(p);
            }

            let before = Counting::thread_calls();
            net.hub.handle_bytes(net.now, p, &read);
            let mut sent = 0;
            while let Some(action) = net.hub.poll_action() {
                if let testament::broker::Action::Send { bytes, .. } = &action {
                    sent += bytes.len();
                }
            }
            let allocations = Counting::thread_calls() - before;
            // Two deliveries of about 120 bytes per message went out.
            assert!(sent > 2 * 100 * BATCH, "{sent} bytes sent");
            assert!(
                allocations * 10 < BATCH,
                "{version} {qos:?}: {allocations} allocations for {BATCH} messages routed to 2 subscribers"
            );
        }
    }
}
