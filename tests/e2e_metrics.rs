//! The Prometheus endpoint of the real binary (`[metrics] listen`):
//! scraped over HTTP and parsed, its figures follow what clients did —
//! connections, subscriptions, messages by QoS, an authorization denied, a
//! will delivered, bytes both ways, and durable commits timed.

#![allow(clippy::disallowed_methods)] // a real broker runs on real time

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::binary::{Served, free_port};
use common::e2e::V3;
use rumqttc::{Packet, QoS};

const SECONDS: Duration = Duration::from_secs(5);

/// `GET path` on the endpoint: the status line and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The samples of an OpenMetrics text: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.trim_end().ends_with("# EOF"),
        "not OpenMetrics: {text}"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    samples(&body)
}

/// Scrapes until `done` holds (the driver updates after each turn), or
/// for 5 s.
fn until(port: u16, done: impl Fn(&BTreeMap<String, f64>) -> bool) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + SECONDS;
    loop {
        let m = scrape(port);
        if done(&m) || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sum of a family's samples whose name and labels start with `prefix`.
fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

const DELIVERED_WILLS: &str = "testament_wills_total{outcome=\"delivered\"";

#[test]
fn the_metrics_endpoint_counts_what_clients_did() {
    let port = free_port();
    let s = Served::start(
        "metrics",
        "mio",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    assert!(
        s.log()
            .contains(&format!("metrics on http://127.0.0.1:{port}/metrics"))
    );
    let m = scrape(port);
    assert_eq!(m["testament_connections"], 0.0);

    let monitor = s.client("mon", "k1").unwrap();
    monitor.subscribe("open/#", QoS::AtLeastOnce);
    // Not covered by the ACL (open/# only): denied, audited.
    monitor
        .client
        .subscribe("closed/#", QoS::AtMostOnce)
        .unwrap();
    assert!(monitor.wait_for(SECONDS, |p| matches!(p, Packet::SubAck(_))));
    let mut o = V3::options(s.addr, "srv", "srv", &s.token("k1", "srv"));
    o.set_last_will(rumqttc::LastWill::new(
        "open/srv/state",
        "down",
        QoS::AtLeastOnce,
        false,
    ));
    let srv = V3::connect(o).unwrap();
    srv.client
        .publish("open/srv/state", QoS::AtLeastOnce, false, "up")
        .unwrap();
    assert!(srv.wait_for(SECONDS, |p| matches!(p, Packet::PubAck(_))));
    assert!(monitor.next_message(SECONDS).is_some());
    let m = until(port, |m| m.get("testament_connections") == Some(&2.0));
    assert_eq!(m["testament_connections"], 2.0, "{m:?}");
    assert_eq!(m["testament_subscriptions"], 1.0, "{m:?}");
    assert_eq!(
        m["testament_messages_received_total{qos=\"1\"}"], 1.0,
        "{m:?}"
    );
    assert_eq!(
        m["testament_messages_delivered_total{qos=\"1\"}"], 1.0,
        "{m:?}"
    );
    assert_eq!(
        m["testament_authentications_total{result=\"success\",reason=\"\"}"], 2.0,
        "{m:?}"
    );
    assert_eq!(
        m["testament_authorizations_total{op=\"subscribe\",decision=\"deny\"}"], 1.0,
        "{m:?}"
    );
    assert!(m["testament_bytes_received_total"] > 0.0);
    assert!(m["testament_bytes_sent_total"] > 0.0);
    // Durable by default: every QoS 1 exchange was committed, and timed.
    assert!(m["testament_storage_commit_seconds_count"] > 0.0, "{m:?}");

    srv.crash();
    assert_eq!(
        monitor.next_message(SECONDS).map(|p| p.payload.to_vec()),
        Some(b"down".to_vec())
    );
    // Counted as the driver carries the will out, the gauges set after
    // its turn: a scrape may fall in between.
    let m = until(port, |m| {
        sum(m, DELIVERED_WILLS) == 1.0 && m.get("testament_connections") == Some(&1.0)
    });
    assert_eq!(sum(&m, DELIVERED_WILLS), 1.0, "{m:?}");
    assert_eq!(m["testament_connections"], 1.0, "{m:?}");

    let (status, _) = get(port, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

/// Anonymous clients; the ones named `ops-*` may read `$SYS`.
const SYS_CONFIG: &str = r##"allow_anonymous = true

[sys]
interval_secs = 1

[[acl.rules]]
effect = "allow"
ops = ["subscribe"]
filter = "$SYS/#"
client_id = "ops-*"

[[acl.rules]]
effect = "allow"
ops = ["all"]
filter = "#"
"##;

fn anonymous(s: &Served, id: &str) -> V3 {
    V3::connect(rumqttc::MqttOptions::new(id, "127.0.0.1", s.addr.port())).unwrap()
}

/// A `$SYS` message's payload as text, within 3 s.
fn sys_payload(c: &V3) -> Option<(String, String)> {
    let p = c.next_message(Duration::from_secs(3))?;
    Some((
        p.topic.clone(),
        String::from_utf8_lossy(&p.payload).into_owned(),
    ))
}

#[test]
fn sys_topics_are_published_to_whom_the_acl_lets_read_them() {
    let s = Served::start_with_config("sys", SYS_CONFIG);
    let ops = anonymous(&s, "ops-1");
    ops.subscribe("$SYS/broker/uptime", QoS::AtMostOnce);
    // Retained: the last value comes at once, then a new one each second.
    let (topic, first) = sys_payload(&ops).expect("the retained uptime");
    assert_eq!(topic, "$SYS/broker/uptime");
    assert!(first.ends_with(" seconds"), "{first}");
    let (_, later) = sys_payload(&ops).expect("a new uptime");
    let secs = |v: &str| v.trim_end_matches(" seconds").parse::<u64>().unwrap();
    assert!(secs(&later) >= secs(&first), "{first} then {later}");

    let other = anonymous(&s, "other");
    other.client.subscribe("$SYS/#", QoS::AtMostOnce).unwrap();
    assert!(other.wait_for(SECONDS, |p| matches!(
        p,
        Packet::SubAck(a) if a.return_codes == [rumqttc::SubscribeReasonCode::Failure]
    )));
    // `#` does not match `$SYS/…` [MQTT-4.7.2-1].
    other.subscribe("#", QoS::AtMostOnce);
    ops.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce);
    let deadline = Instant::now() + SECONDS;
    let mut connected = None;
    while Instant::now() < deadline && connected.as_deref() != Some("2") {
        if let Some((t, v)) = sys_payload(&ops)
            && t == "$SYS/broker/clients/connected"
        {
            connected = Some(v);
        }
    }
    assert_eq!(connected.as_deref(), Some("2"));
    assert!(other.next_message(Duration::from_millis(1500)).is_none());
}
