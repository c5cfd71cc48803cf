//! What an operator reads and does on the real binary: the log as JSON
//! lines or text with RFC 3339 timestamps, the audit records in a file of
//! their own; the admin API and `testament admin` (list the sessions, show
//! one, disconnect a client with or without its will).

#![allow(clippy::disallowed_methods)] // a real broker runs on real time

mod common;

use std::time::Duration;

use common::binary::{Served, free_port};
use common::e2e::V3;
use common::raw::Raw;
use rumqttc::{Packet, QoS};
use testament::codec::{
    Bytes, Connect, ConnectReasonCode, DisconnectReasonCode, LastWill, MqttString,
    Packet as MqttPacket, ProtocolVersion, QoS as MqttQoS, TopicName,
};

const SECONDS: Duration = Duration::from_secs(5);

/// `2026-12-05T15:47:05.123Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b'T'
        && [13, 16].iter().all(|&i| b[i] == b':')
        && b[19] == b'.'
        && b[23] == b'Z'
        && ts
            .chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit())
}

/// A client of `served` that authenticates, publishes where it may and
/// subscribes where it may not: an authentication and two decisions.
fn some_decisions(served: &Served) {
    let c = served.client("alice", "k1").unwrap();
    c.subscribe("secret/#", QoS::AtLeastOnce);
    c.client
        .publish("open/x", QoS::AtLeastOnce, false, "hi")
        .unwrap();
    assert!(c.wait_for(SECONDS, |p| matches!(p, rumqttc::Packet::PubAck(_))));
    c.disconnect();
}

fn wait_file(path: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + SECONDS;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_json_log_with_the_audit_records_in_a_file_of_their_own() {
    let served = Served::start(
        "jsonlog",
        "mio",
        "[log]\nformat = \"json\"\naudit_file = \"{dir}/audit.jsonl\"\n",
    );
    some_decisions(&served);
    let audit = wait_file(&served.dir.join("audit.jsonl"), "\"op\":\"subscribe\"");
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |f: &dyn Fn(&serde_json::Value) -> bool| {
        records
            .iter()
            .find(|r| f(r))
            .unwrap_or_else(|| panic!("not in {audit}"))
            .clone()
    };
    let authn = find(&|r| r["event"] == "authn");
    assert_eq!(authn["result"], "ok");
    assert_eq!(authn["principal"], "alice");
    assert_eq!(authn["kid"], "k1");
    assert_eq!(authn["target"], "testament::audit");
    assert!(is_rfc3339(authn["ts"].as_str().unwrap()), "{authn}");
    let denied = find(&|r| r["op"] == "subscribe");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["topic"], "secret/#");
    assert!(records.iter().all(|r| r["target"] == "testament::audit"));

    // The rest of the log: JSON lines too, without the audit records.
    let log = served.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("testament listening on"))
            && l["level"] == "INFO"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .all(|l| is_rfc3339(l["ts"].as_str().unwrap_or_default()))
    );
    assert!(!log.contains("testament::audit"), "{log}");
}

#[test]
fn a_text_log_has_rfc3339_timestamps_and_the_audit_file_is_appended_to() {
    let prepare = |dir: &std::path::Path| {
        std::fs::write(dir.join("audit.log"), "kept from before\n").unwrap();
    };
    let served = Served::start_in(
        "textlog",
        "smol",
        "[log]\naudit_file = \"{dir}/audit.log\"\n",
        prepare,
    );
    some_decisions(&served);
    let audit = wait_file(&served.dir.join("audit.log"), "op=subscribe");
    assert!(audit.starts_with("kept from before\n"), "{audit}");
    let line = audit
        .lines()
        .find(|l| l.contains("event=authn result=ok"))
        .unwrap_or_else(|| panic!("{audit}"));
    // `[2026-12-05T15:47:05.123Z INFO  testament::audit] event=authn …`
    assert!(is_rfc3339(&line[1..25]), "{line}");
    assert!(line.contains("principal=alice"), "{line}");
    let log = served.log();
    assert!(log.contains("testament listening on"), "{log}");
    assert!(!log.contains("event=authn"), "{log}");
}

const TOKEN: &str = "s3cret-admin-token-0123456789";

/// A broker with the admin API on `port`.
fn with_admin(name: &str, port: u16) -> Served {
    Served::start_in(
        name,
        "mio",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[admin]\ntoken_file = \"{{dir}}/admin.token\"\n"
        ),
        |dir| std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap(),
    )
}

/// `testament admin --url … --token-file … ARGS`: exit code, stdout,
/// stderr.
fn admin(
    served: &Served,
    port: u16,
    token_file: &std::path::Path,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let _ = served;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_testament"))
        .args([
            "admin",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(token_file)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A 3.1.1 client with a will "down" on `open/<id>/state`.
fn with_will(served: &Served, id: &str) -> V3 {
    let mut o = V3::options(served.addr, id, id, &served.token("k1", id));
    o.set_last_will(rumqttc::LastWill::new(
        format!("open/{id}/state"),
        "down",
        QoS::AtLeastOnce,
        false,
    ));
    V3::connect(o).unwrap()
}

fn got_down(monitor: &V3, within: Duration) -> bool {
    monitor.wait_for(
        within,
        |p| matches!(p, Packet::Publish(m) if m.payload.as_ref() == b"down"),
    )
}

#[test]
fn an_operator_lists_shows_and_disconnects_clients_with_or_without_their_will() {
    let port = free_port();
    let served = with_admin("admin", port);
    let token = served.dir.join("admin.token");
    let monitor = served.client("monitor", "k1").unwrap();
    monitor.subscribe("open/+/state", QoS::AtLeastOnce);
    let alice = with_will(&served, "alice");

    // The list, as JSON: who, from where, since when, with which will.
    let (code, out, err) = admin(&served, port, &token, &["clients", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["total"], 2, "{out}");
    let a = &list["clients"][0];
    assert_eq!(a["client_id"], "alice", "{out}");
    assert_eq!(a["principal"], "alice");
    assert_eq!(a["connected"], true);
    assert_eq!(a["address"], "127.0.0.1");
    assert_eq!(a["protocol"], "3.1.1");
    assert_eq!(a["will_topic"], "open/alice/state");
    assert!(is_rfc3339(a["connected_since"].as_str().unwrap()), "{a}");
    assert!(
        a["credential_expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{a}"
    );
    assert_eq!(list["clients"][1]["client_id"], "monitor");
    assert_eq!(list["clients"][1]["subscriptions"], 1);
    assert_eq!(list["clients"][1]["will_topic"], serde_json::Value::Null);
    // Paged: after alice comes the monitor only.
    let (_, out, _) = admin(
        &served,
        port,
        &token,
        &["clients", "--json", "--after", "alice"],
    );
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["clients"].as_array().map(Vec::len), Some(1), "{out}");
    // As a table.
    let (code, out, _) = admin(&served, port, &token, &["clients"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("CLIENT ID"), "{out}");
    assert!(
        out.contains("open/alice/state") && out.contains("2 of 2 sessions"),
        "{out}"
    );
    // One session; one that is not there.
    let (code, out, _) = admin(&served, port, &token, &["client", "alice"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("\"will_topic\": \"open/alice/state\""),
        "{out}"
    );
    let (code, _, err) = admin(&served, port, &token, &["client", "nobody"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("404"), "{err}");

    // Without the token: refused, and nothing is disconnected.
    let wrong = served.dir.join("wrong.token");
    std::fs::write(&wrong, "not-the-token-but-long-enough").unwrap();
    let (code, _, err) = admin(&served, port, &wrong, &["disconnect", "alice"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("401"), "{err}");
    assert!(!alice.closed_within(Duration::from_millis(300)));

    // Disconnected without its will: closed, no "down".
    let (code, out, err) = admin(&served, port, &token, &["disconnect", "alice", "--no-will"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"disconnected\": true"), "{out}");
    assert!(alice.closed_within(SECONDS));
    assert!(!got_down(&monitor, Duration::from_millis(500)));
    // Back, and disconnected with its will: "down" follows.
    let alice = with_will(&served, "alice");
    let (code, _, err) = admin(&served, port, &token, &["disconnect", "alice"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(alice.closed_within(SECONDS));
    assert!(got_down(&monitor, SECONDS), "{}", served.log());
    // A client that is not connected any more.
    let (code, _, err) = admin(&served, port, &token, &["disconnect", "alice"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("404") || err.contains("409"), "{err}");

    // Every request audited, with who asked.
    let log = served.log();
    for needle in [
        "action=clients by=\"http 127.0.0.1:",
        "action=client by=\"http 127.0.0.1:",
        "action=unauthorized by=\"http 127.0.0.1:",
        "action=disconnect",
        "reason=0x98 will=false result=done",
        "reason=0x98 will=true result=done",
        "outcome=cancelled",
        "trigger=operator",
    ] {
        assert!(log.contains(needle), "{needle} not in {log}");
    }
    // The API without a token answers 401; the metrics stay open.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read as _, Write as _};
    write!(
        s,
        "GET /admin/clients HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[test]
fn a_5_0_client_disconnected_by_an_operator_reads_the_reason_code() {
    let port = free_port();
    let served = with_admin("admin5", port);
    let token = served.dir.join("admin.token");
    let mut raw = Raw::open(served.addr, ProtocolVersion::V5, SECONDS);
    let mut c = Connect::new(ProtocolVersion::V5, MqttString::from_static("srv"));
    c.username = Some(MqttString::from_static("srv"));
    c.password = Some(Bytes::from(served.token("k1", "srv")));
    c.will = Some(LastWill {
        topic: TopicName::from_static("open/srv/state"),
        payload: Bytes::from_static(b"down"),
        qos: MqttQoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    assert!(raw.send(MqttPacket::Connect(Box::new(c))));
    assert!(
        matches!(raw.next(), Some(MqttPacket::ConnAck(a)) if a.reason_code == ConnectReasonCode::Success)
    );
    let (code, out, _) = admin(&served, port, &token, &["client", "srv"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"protocol\": \"5.0\""), "{out}");
    let (code, _, err) = admin(
        &served,
        port,
        &token,
        &["disconnect", "srv", "--reason", "0x8E"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        matches!(raw.next(), Some(MqttPacket::Disconnect(d)) if d.reason_code == DisconnectReasonCode::SessionTakenOver),
        "{}",
        served.log()
    );
    // A reason that is not a DISCONNECT code is refused before it reaches
    // the broker.
    let (code, _, err) = admin(
        &served,
        port,
        &token,
        &["disconnect", "srv", "--reason", "0x01"],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("400"), "{err}");
}
