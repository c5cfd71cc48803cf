//! The configuration file: the README's example parses, bad values are
//! refused with their key, the command exits 2 on them.

mod common;

use std::process::Command;

use common::readme_toml_blocks;

use testament::config::{Config, default_acl, parse_rules};

#[test]
fn the_readme_example_is_a_valid_configuration() {
    let blocks = readme_toml_blocks();
    let c = Config::from_toml(&blocks[0]).unwrap();
    assert_eq!(c.listen, ["127.0.0.1:1883"]);
    assert_eq!(c.jwt.leeway_secs, 30);
    // Its values are the defaults, written out.
    let mut defaults = Config::default();
    defaults.jwt.jwks = c.jwt.jwks.clone();
    defaults.acl.path = c.acl.path.clone();
    assert_eq!(c, defaults);
}

#[test]
fn the_readme_default_acl_is_the_default_acl() {
    #[derive(serde::Deserialize)]
    struct File {
        rules: Vec<testament::config::RuleConfig>,
    }
    let blocks = readme_toml_blocks();
    let file: File = toml::from_str(&blocks[1]).unwrap();
    assert_eq!(parse_rules(&file.rules, "rules").unwrap(), default_acl());
}

/// The README's configuration for the Paho interoperability suites: valid,
/// and it grants `#` with `test/nosubscribe` carved out, refuses that
/// topic alone, and caps the keep alive at 60 s.
#[test]
fn the_readme_paho_configuration_carves_out_the_denied_topic() {
    use testament::auth::{AuthzRequest, Identity, Operation};
    let blocks = readme_toml_blocks();
    let c = Config::from_toml(&blocks[2]).unwrap();
    assert!(c.allow_anonymous);
    assert_eq!(
        c.broker_config().unwrap().session.server_keep_alive,
        Some(60)
    );
    let acl = c.acl().unwrap();
    let anon = Identity::anonymous("paho", testament::time::Timestamp::EPOCH);
    let ask = |topic: &str| {
        acl.authorize(&AuthzRequest {
            identity: &anon,
            op: Operation::Subscribe,
            topic,
            qos: testament::codec::QoS::AtMostOnce,
            retain: false,
        })
    };
    for wildcard in ["#", "+/+", "test/#"] {
        let d = ask(wildcard);
        assert!(d.is_allowed(), "{wildcard}");
        assert_eq!(d.exclusions.to_string(), "test/nosubscribe", "{wildcard}");
    }
    assert!(!ask("test/nosubscribe").is_allowed());
    let d = ask("TopicA/#");
    assert!(d.is_allowed() && d.exclusions.is_empty());
}

#[test]
fn bad_values_are_refused_with_their_key() {
    for (text, key) in [
        ("[will]\nafter_expiry = \"later\"", "will.after_expiry"),
        (
            "[session]\ncredential_expiry = \"never\"",
            "session.credential_expiry",
        ),
        ("listen = [\"nowhere\"]", "listen[0]"),
        (
            "[limits]\noffline_overflow = \"drop_all\"",
            "limits.offline_overflow",
        ),
        (
            "[[acl.rules]]\neffect = \"allow\"\nops = [\"publish\"]\nfilter = \"a/#/b\"",
            "acl.rules[0].filter",
        ),
        (
            "[[acl.rules]]\neffect = \"maybe\"\nops = [\"publish\"]\nfilter = \"a\"",
            "acl.rules[0].effect",
        ),
        (
            "[[acl.rules]]\neffect = \"allow\"\nops = []\nfilter = \"a\"",
            "acl.rules[0].ops",
        ),
        ("[log]\nlevel = \"loud\"", "log.level"),
        ("[storage]\nsync = \"sometimes\"", "storage.sync"),
        (
            "[storage]\nsync_interval_ms = 0",
            "storage.sync_interval_ms",
        ),
        ("[will]\non_takeover = \"maybe\"", "will.on_takeover"),
        (
            "[will]\non_credential_expiry = \"later\"",
            "will.on_credential_expiry",
        ),
        ("[acl]\non_revoke = \"ignore\"", "acl.on_revoke"),
    ] {
        let e = Config::from_toml(text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
    }
    // Unknown keys and wrong types are TOML errors that name the key.
    let e = Config::from_toml("[jwt]\nleeway = 5").unwrap_err();
    assert!(e.problem.contains("leeway"), "{e}");
    let e = Config::from_toml("[jwt]\nleeway_secs = \"five\"").unwrap_err();
    assert!(e.to_string().contains("config"), "{e}");
}

#[test]
fn check_prints_the_effective_config_or_exits_2() {
    let dir = std::env::temp_dir().join(format!("testament-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[will]\nafter_expiry = \"strict\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testament"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("after_expiry = \"strict\""), "{printed}");
    assert!(
        Config::from_toml(&printed).is_ok(),
        "the printed config reads back"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[will]\nafter_expiry = \"later\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testament"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("will.after_expiry"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_name_the_line_and_the_key_and_suggest_the_known_one() {
    let text = "listen = [\"127.0.0.1:1883\"]\n\n[jwt]\nleeway_secs = 5\n\n[will]\nafter_expry = \"send\"\n";
    let e = Config::from_toml(text).unwrap_err();
    assert_eq!(e.key, "will.after_expry");
    assert_eq!(e.location, Some(("config".to_owned(), 7)));
    assert_eq!(
        e.to_string(),
        "config:7: will.after_expry: unknown key (did you mean `after_expiry`?)"
    );
    // Nothing near: the known keys are listed.
    let e = Config::from_toml("[storage]\nzzz = 1").unwrap_err();
    assert!(
        e.problem.contains("known here: ") && e.problem.contains("sync"),
        "{e}"
    );
    // A wrong type names its key and line.
    let e = Config::from_toml("[jwt]\n\nleeway_secs = \"five\"").unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.location.clone()),
        ("jwt.leeway_secs", Some(("config".into(), 3))),
        "{e}"
    );
    // A value TOML accepts but the broker does not: placed too, inside an
    // array of tables.
    let rules = "[[acl.rules]]\neffect = \"allow\"\nops = [\"publish\"]\nfilter = \"a\"\n\n[[acl.rules]]\neffect = \"allow\"\nops = [\"publish\"]\nfilter = \"a/#/b\"\n";
    let e = Config::from_toml(rules).unwrap_err();
    assert_eq!(e.key, "acl.rules[1].filter");
    assert_eq!(e.location, Some(("config".to_owned(), 9)), "{e}");
    // A key left to its default has no line.
    let e = Config::from_toml("listen = []").unwrap_err();
    assert_eq!(e.location, Some(("config".to_owned(), 1)), "{e}");
}

#[test]
fn check_verifies_every_file_the_config_names() {
    let dir = std::env::temp_dir().join(format!("testament-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_testament");
    let run = |text: &str| {
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            path,
        )
    };
    // A JWKS that does not exist: refused at the line that names it.
    let missing = dir.join("nowhere.json");
    let (code, err, path) = run(&format!(
        "[jwt]\nallow_hmac = false\njwks = {:?}\n",
        missing.display().to_string()
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:3: jwt.jwks: ", path.display())),
        "{err}"
    );
    // One that exists but is not a key set.
    std::fs::write(&missing, "{\"keys\": 5}").unwrap();
    let (code, err, _) = run(&format!(
        "[jwt]\njwks = {:?}\n",
        missing.display().to_string()
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(":2: jwt.jwks: "), "{err}");
    // A real one and an ACL file with a bad rule.
    let st = Command::new(bin)
        .args(["keys", "generate", "--kid", "k1", "--out"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let acl = dir.join("acl.toml");
    std::fs::write(
        &acl,
        "[[rules]]\neffect = \"allow\"\nops = [\"publish\"]\nfilter = \"a/#/b\"\n",
    )
    .unwrap();
    let jwks = dir.join("jwks.json").display().to_string();
    let acl_text = format!(
        "[jwt]\njwks = {jwks:?}\n\n[acl]\npath = {:?}\n",
        acl.display().to_string()
    );
    let (code, err, _) = run(&acl_text);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(":5: acl.path: ") && err.contains(":4: rules[0].filter"),
        "{err}"
    );
    // Both good: checked, and said so.
    std::fs::write(
        &acl,
        "[[rules]]\neffect = \"allow\"\nops = [\"publish\"]\nfilter = \"a/#\"\n",
    )
    .unwrap();
    let (code, err, _) = run(&acl_text);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("1 keys") && err.contains("1 rules"), "{err}");
    // A TLS key that does not exist.
    let (code, err, _) = run(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(":3: tls.cert: "), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_and_tokens_from_the_command_line_open_a_session() {
    use testament::auth::{Credentials, JwtAuthenticator, JwtConfig};
    let dir = std::env::temp_dir().join(format!("testament-keys-{}", std::process::id()));
    let bin = env!("CARGO_BIN_EXE_testament");
    for alg in ["RS256", "ES256", "EdDSA"] {
        let kid = format!("k-{alg}");
        let st = Command::new(bin)
            .args(["keys", "generate", "--alg", alg, "--kid", &kid, "--out"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success());
        let out = Command::new(bin)
            .args([
                "token", "--kid", &kid, "--sub", "alice", "--role", "monitor", "--ttl", "1h",
                "--key",
            ])
            .arg(dir.join(format!("{kid}.pem")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let keys = testament::config::read_jwks(&dir.join("jwks.json"), false).unwrap();
        let auth = JwtAuthenticator::new(JwtConfig::default(), keys);
        let creds = Credentials {
            client_id: "c".into(),
            username: Some("alice".into()),
            password: Some(token.into_bytes().into()),
            ..Credentials::default()
        };
        let identity = auth
            .authenticate(&creds, testament::driver::SystemClock::wall())
            .unwrap();
        assert_eq!(identity.key_id().map(|k| &**k), Some(kid.as_str()));
        assert_eq!(identity.roles(), [std::sync::Arc::<str>::from("monitor")]);
    }
    // The JWKS holds the three keys; removing one leaves two.
    let st = Command::new(bin)
        .args(["keys", "remove", "--kid", "k-RS256", "--jwks"])
        .arg(dir.join("jwks.json"))
        .status()
        .unwrap();
    assert!(st.success());
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("jwks.json")).unwrap()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
