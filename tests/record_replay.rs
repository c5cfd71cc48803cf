//! Record and replay: a live broker's inputs, replayed offline through a
//! fresh hub, give the same decisions — including why a will was delivered
//! or denied.

mod common;

use std::process::Command;
use std::time::Duration;

use common::e2e::{Running, V3, token};
use common::hub::default_acl;
use common::jwt;
use rumqttc::{LastWill, QoS};
use testament::auth::{Acl, Effect, FilterTemplate, JwtConfig, Ops, Rule, Subject};
use testament::config::DriverKind;

/// Runs the story live with a recording; returns the replayed audit lines.
fn recorded_story(kind: DriverKind, revoke: bool, file: &std::path::Path) -> Vec<String> {
    // The recording starts with the default configuration, so the live hub
    // runs with it too.
    let b = Running::start_recording(
        kind,
        testament::config::Config::default()
            .broker_config()
            .unwrap(),
        JwtConfig::default(),
        default_acl(),
        Some(file),
    );
    let mut o = V3::options(b.addr, "srv", "srv", &token(&jwt::rsa_a(), "srv", 3600));
    o.set_last_will(LastWill::new(
        "trusted/srv/state",
        "down",
        QoS::AtLeastOnce,
        true,
    ));
    let server = V3::connect(o).unwrap();
    let monitor = V3::connect(V3::options(
        b.addr,
        "mon",
        "mon",
        &token(&jwt::rsa_a(), "mon", 3600),
    ))
    .unwrap();
    monitor.subscribe("trusted/+/state", QoS::AtLeastOnce);
    b.rotate_keys(&[&jwt::rsa_b()]);
    if revoke {
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
        b.set_acl(Acl::new(rules));
        std::thread::sleep(Duration::from_millis(200));
    }
    server.crash();
    let live = monitor.next_message(Duration::from_secs(2));
    assert_eq!(live.is_some(), !revoke);
    b.stop();
    let records =
        testament::driver::replay(std::io::BufReader::new(std::fs::File::open(file).unwrap()))
            .unwrap();
    records.iter().map(ToString::to_string).collect()
}

fn will_lines(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.starts_with("event=will"))
        .map(|l| {
            let outcome = l.split(' ').find(|w| w.starts_with("outcome=")).unwrap();
            &outcome["outcome=".len()..]
        })
        .collect()
}

#[test]
fn a_replay_shows_why_the_will_was_delivered() {
    let file = std::env::temp_dir().join(format!("testament-rec-a-{}.jsonl", std::process::id()));
    let lines = recorded_story(DriverKind::Smol, false, &file);
    assert_eq!(will_lines(&lines), ["triggered", "delivered"], "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("op=will")
        && l.contains("decision=allow")
        && l.contains("trigger=peer_closed")));
    // The command prints the same lines, and again the same: determinism.
    let out = Command::new(env!("CARGO_BIN_EXE_testament"))
        .arg("replay")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(printed, lines);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_replay_shows_which_rule_denied_the_will() {
    let file = std::env::temp_dir().join(format!("testament-rec-b-{}.jsonl", std::process::id()));
    let lines = recorded_story(DriverKind::Blocking, true, &file);
    assert_eq!(will_lines(&lines), ["triggered", "denied"], "{lines:#?}");
    let denied = lines.iter().find(|l| l.contains("outcome=denied")).unwrap();
    assert!(denied.contains("srv-revoked"), "{denied}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_recording_that_does_not_start_with_its_configuration_is_refused() {
    let text = "{\"ev\":\"timeout\",\"t\":1}\n";
    assert!(testament::driver::replay(text.as_bytes()).is_err());
    assert!(testament::driver::replay("not json\n".as_bytes()).is_err());
}

#[test]
fn a_restore_is_recorded_and_replays_and_a_damaged_one_is_refused() {
    use testament::broker::{BrokerConfig, RetainedMessage};
    use testament::codec::{Bytes, PublishProperties, QoS, TopicName};
    use testament::time::Now;

    let file = std::env::temp_dir().join(format!("testament-rec-r-{}.jsonl", std::process::id()));
    // Room for one retained message: the second restored one is refused,
    // which the replay must say.
    let config = BrokerConfig {
        durable: true,
        max_retained_messages: 1,
        max_offline_messages: 1,
        ..BrokerConfig::default()
    };
    let msg = |topic: &'static str| RetainedMessage {
        topic: TopicName::from_static(topic),
        payload: Bytes::from_static(b"up"),
        qos: QoS::AtLeastOnce,
        properties: PublishProperties::default(),
        expires_at: None,
    };
    let now = Now::from_secs(1_800_000_000);
    let mut r = testament::driver::Recorder::new(
        Box::new(std::fs::File::create(&file).unwrap()),
        now,
        &config,
        None,
    );
    // A session that expired while the broker was down ends at the restore.
    let gone = testament::broker::SessionRecord {
        client_id: "gone".into(),
        expiry_interval: 60,
        expires_at: Some(now.wall - Duration::from_secs(1)),
        subscriptions: Vec::new(),
        identity: None,
    };
    // A session kept with two messages for it, one more than its queue
    // takes: the second is dropped at the restore.
    let kept = testament::broker::SessionRecord {
        client_id: "kept".into(),
        expires_at: None,
        ..gone.clone()
    };
    let queued = |seq: u64, payload: &'static [u8]| testament::broker::StoredMessage {
        record: testament::broker::MessageRecord {
            client_id: "kept".into(),
            seq: std::num::NonZeroU64::new(seq).unwrap(),
            message: testament::session::OutboundMessage {
                topic: TopicName::from_static("open/q"),
                payload: Bytes::from_static(payload),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: PublishProperties::default(),
                seq: None,
            },
            expires_at: None,
        },
        sent: None,
    };
    r.restore(
        now,
        &testament::broker::Restored {
            retained: vec![msg("open/a"), msg("open/b")],
            sessions: vec![gone, kept],
            messages: vec![queued(1, b"first"), queued(2, b"second")],
            awaiting_release: Vec::new(),
            wills: Vec::new(),
        },
    );
    r.flush();
    drop(r);
    let text = std::fs::read_to_string(&file).unwrap();
    let audits = testament::driver::replay(text.as_bytes()).unwrap();
    let refused: Vec<String> = audits
        .iter()
        .filter_map(|a| match a {
            testament::auth::AuditRecord::RetainRefused { topic, .. } => Some(topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, ["open/b"], "{audits:?}");
    assert!(
        audits.iter().any(|a| matches!(
            a,
            testament::auth::AuditRecord::SessionExpired { client_id, .. } if client_id == "gone"
        )),
        "{audits:?}"
    );

    assert!(
        audits.iter().any(|a| matches!(
            a,
            testament::auth::AuditRecord::MessageDropped { client_id, topic, .. }
                if client_id == "kept" && topic.as_str() == "open/q"
        )),
        "{audits:?}"
    );

    // A record that does not read back is an error naming its line.
    let record = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(msg("open/a").encode())
    };
    assert!(text.contains(&record));
    let damaged = text.replace(&record, "AAAA");
    let e = testament::driver::replay(damaged.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn an_operator_disconnection_is_recorded_and_replays() {
    use testament::driver::Control;
    use testament::driver::admin::{Call, Reply, Request};
    let file = std::env::temp_dir().join(format!("testament-rec-k-{}.jsonl", std::process::id()));
    let b = Running::start_recording(
        DriverKind::Mio,
        testament::config::Config::default()
            .broker_config()
            .unwrap(),
        JwtConfig::default(),
        default_acl(),
        Some(&file),
    );
    let mut o = V3::options(b.addr, "srv", "srv", &token(&jwt::rsa_a(), "srv", 3600));
    o.set_last_will(LastWill::new(
        "trusted/srv/state",
        "down",
        QoS::AtLeastOnce,
        false,
    ));
    let server = V3::connect(o).unwrap();
    let monitor = V3::connect(V3::options(
        b.addr,
        "mon",
        "mon",
        &token(&jwt::rsa_a(), "mon", 3600),
    ))
    .unwrap();
    monitor.subscribe("trusted/+/state", QoS::AtLeastOnce);
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    b.control(Control::Admin(Call {
        request: Request::Disconnect {
            client_id: "srv".into(),
            reason: testament::codec::DisconnectReasonCode::AdministrativeAction,
            will: true,
        },
        by: "test".into(),
        reply,
    }));
    assert_eq!(
        answer.recv_timeout(Duration::from_secs(5)).unwrap(),
        Reply::Disconnected(Ok(()))
    );
    assert!(server.closed_within(Duration::from_secs(5)));
    assert!(monitor.next_message(Duration::from_secs(2)).is_some());
    b.stop();
    let lines: Vec<String> =
        testament::driver::replay(std::io::BufReader::new(std::fs::File::open(&file).unwrap()))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
    assert_eq!(will_lines(&lines), ["triggered", "delivered"], "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("event=will") && l.contains("trigger=operator"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("event=admin") && l.contains("by=test"))
    );
    let _ = std::fs::remove_file(&file);
}
