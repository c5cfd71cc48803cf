//! The `testament` binary as an operator runs it: a config file, a JWKS and
//! an ACL file re-read when they change or on SIGHUP (a file that does not
//! parse is refused and the old one stays), SIGTERM for a graceful stop, a
//! bad config refused with exit code 2.

#![allow(clippy::disallowed_methods)] // a real process runs on real time

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::binary::Served;
use common::e2e::V3;
use rumqttc::QoS;
use testament::keys;

const CLOSED_ACL: &str = r#"
[[rules]]
effect = "deny"
ops = ["publish"]
filter = "open/#"
name = "frozen"

[[rules]]
effect = "allow"
ops = ["all"]
filter = "open/#"
name = "open"
"#;

fn serve(name: &str, driver: &str) -> Served {
    Served::start(name, driver, "")
}

fn delivered(sub: &V3, publisher: &V3, topic: &str) -> bool {
    publisher
        .client
        .publish(topic, QoS::AtLeastOnce, false, "x")
        .unwrap();
    sub.next_message(Duration::from_secs(1)).is_some()
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn reload_on_change(driver: &str) {
    let s = serve(&format!("acl-{driver}"), driver);
    let sub = s.client("sub", "k1").unwrap();
    sub.subscribe("open/#", QoS::AtLeastOnce);
    let publisher = s.client("pub", "k1").unwrap();
    assert!(delivered(&sub, &publisher, "open/1"));

    // The ACL file changes on disk: the next publish is judged by it.
    write_atomically(&s.dir.join("acl.toml"), CLOSED_ACL);
    assert!(s.wait_log("reloaded the key set and the ACL", Duration::from_secs(10)));
    assert!(!delivered(&sub, &publisher, "open/2"));

    // A file that does not parse is refused; the rules in force stay.
    write_atomically(&s.dir.join("acl.toml"), "[[rules]]\neffect = \"perhaps\"\n");
    assert!(
        s.wait_log("reload refused", Duration::from_secs(10)),
        "{}",
        s.log()
    );
    assert!(!delivered(&sub, &publisher, "open/3"));
    assert!(s.log().contains("frozen"), "the audit names the rule");
}

#[test]
fn smol_the_acl_file_is_reread_when_it_changes() {
    reload_on_change("smol");
}

#[test]
fn blocking_the_acl_file_is_reread_when_it_changes() {
    reload_on_change("blocking");
}

#[test]
fn sighup_rotates_the_key_set_and_sigterm_stops_gracefully() {
    let s = serve("keys", "smol");
    let old = s.client("old-key", "k1").unwrap();
    // Rotation: publish k2, withdraw k1, tell the broker.
    keys::generate(keys::algorithm("EdDSA").unwrap(), "k2", &s.dir).unwrap();
    keys::remove("k1", &s.dir.join("jwks.json")).unwrap();
    s.signal("HUP");
    assert!(s.wait_log("reloaded the key set and the ACL", Duration::from_secs(10)));
    assert!(s.client("late-old", "k1").is_err(), "k1 no longer logs in");
    assert!(s.client("late-new", "k2").is_ok(), "k2 does");
    // The session opened with k1 is untouched by the rotation.
    old.subscribe("open/#", QoS::AtMostOnce);

    let mut s = s;
    let status = s.stop("TERM");
    assert!(status.success());
    assert!(s.log().contains("shutting down"));
    assert!(old.closed_within(Duration::from_secs(5)));
}

#[test]
fn a_bad_config_stops_the_broker_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("testament-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[limits]\noffline_overflow = \"drop_all\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testament"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("limits.offline_overflow"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
