//! The broker's configuration: one TOML file, every key optional, each
//! documented in the README. A bad value is refused with the key it is at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{Acl, Effect, FilterTemplate, JwtConfig, KeySet, Ops, Rule, Subject};
use crate::broker::{BrokerConfig, OfflineOverflow, OnRevoke, ShutdownWills, WillAfterExpiry};
use crate::driver::DriverConfig;
use crate::session::{CredentialExpiry, SessionConfig};

/// A configuration problem, with the key it is at and, when it came from
/// a file, where in it: `config.toml:12: will.after_expry: unknown key (did
/// you mean `after_expiry`?)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key (`acl.rules[2].filter`), or the file for I/O errors.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// The file (`config` for a text that came without one) and the line
    /// of the key, when it is written there (a default has no line).
    pub location: Option<(String, usize)>,
}

impl std::error::Error for ConfigError {}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some((file, line)) => write!(f, "{file}:{line}: {}: {}", self.key, self.problem),
            None => write!(f, "config key `{}`: {}", self.key, self.problem),
        }
    }
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self {
            key: key.into(),
            problem: problem.to_string(),
            location: None,
        }
    }

    /// The same error, placed at its key's line in `text` (read from
    /// `file`), if the key is written there.
    fn placed(mut self, file: &str, text: &str) -> Self {
        if self.location.is_none()
            && let Some(offset) = locate(text, &self.key)
        {
            self.location = Some((file.to_owned(), line_of(text, offset)));
        }
        self
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Where the deepest written part of a dotted key path
/// (`acl.rules[2].filter`) starts in a TOML text.
fn locate(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found = None;
    for segment in key.split('.') {
        let mut parts = segment.split('[');
        let name = parts.next()?;
        let (_, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        found = Some(value.span().start);
        let mut value = value;
        for index in parts {
            let i: usize = index.trim_end_matches(']').parse().ok()?;
            let DeValue::Array(items) = value.get_ref() else {
                return found;
            };
            value = items.get(i)?;
            found = Some(value.span().start);
        }
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found
}

/// The dotted path of the key a TOML error points at: its table's header
/// (`[will]`, `[[acl.rules]]` as `acl.rules[n]`) and the name before `=`
/// on its line (or `name`, when the error names it).
fn key_at(text: &str, offset: usize, name: Option<&str>) -> String {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let own = name.map(str::to_owned).or_else(|| {
        line.split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_owned())
    });
    let mut header = None;
    let mut arrays: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for l in text[..line_start].lines() {
        let l = l.trim();
        if let Some(h) = l.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let n = arrays.entry(h.trim()).and_modify(|n| *n += 1).or_insert(0);
            header = Some(format!("{}[{n}]", h.trim()));
        } else if let Some(h) = l.strip_prefix('[').and_then(|l| l.split(']').next()) {
            header = Some(h.trim().to_owned());
        }
    }
    match (header, own) {
        (Some(h), Some(k)) => format!("{h}.{k}"),
        (Some(h), None) => h,
        (None, Some(k)) => k,
        (None, None) => String::new(),
    }
}

/// A TOML or type error, as the key path and line it is at; an unknown key
/// with the known one it most resembles.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return ConfigError::new(file, message);
    };
    let location = Some((file.to_owned(), line_of(text, span.start)));
    // serde: "unknown field `after_expry`, expected one of `a`, `b`".
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let problem = match closest(name, &known) {
            Some(k) => format!("unknown key (did you mean `{k}`?)"),
            None if known.is_empty() => "unknown key".to_owned(),
            None => format!("unknown key (known here: {})", known.join(", ")),
        };
        return ConfigError {
            key: key_at(text, span.start, Some(name)),
            problem,
            location,
        };
    }
    ConfigError {
        key: key_at(text, span.start, None),
        problem: message.to_owned(),
        location,
    }
}

/// The known name nearest to a misspelt one, if one is near enough.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Which driver serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// One thread, one readiness loop (mio).
    #[default]
    Mio,
    /// Async, on smol.
    Smol,
    /// Std threads.
    Blocking,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<String>,
    /// `smol` or `blocking`.
    pub driver: DriverKind,
    /// Whether clients without credentials are let in (as `anonymous`).
    pub allow_anonymous: bool,
    /// Where the development key set lives when no JWKS is configured.
    pub data_dir: PathBuf,
    /// Token checks.
    pub jwt: JwtSection,
    /// Authorization rules.
    pub acl: AclSection,
    /// Will policy.
    pub will: WillSection,
    /// Per-connection behaviour and limits.
    pub session: SessionSection,
    /// Hub limits.
    pub limits: LimitsSection,
    /// TLS listeners.
    pub tls: TlsSection,
    /// Logging.
    pub log: LogSection,
    /// Durable state.
    pub storage: StorageSection,
    /// The Prometheus endpoint.
    pub metrics: MetricsSection,
    /// The `$SYS/…` topics.
    pub sys: SysSection,
    /// The admin API.
    pub admin: AdminSection,
    /// MQTT over WebSockets.
    pub websocket: WebSocketSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:1883".into()],
            driver: DriverKind::Mio,
            allow_anonymous: false,
            data_dir: PathBuf::from("testament-data"),
            jwt: JwtSection::default(),
            acl: AclSection::default(),
            will: WillSection::default(),
            session: SessionSection::default(),
            limits: LimitsSection::default(),
            tls: TlsSection::default(),
            log: LogSection::default(),
            storage: StorageSection::default(),
            metrics: MetricsSection::default(),
            sys: SysSection::default(),
            admin: AdminSection::default(),
            websocket: WebSocketSection::default(),
        }
    }
}

/// `[websocket]`: MQTT over WebSockets (subprotocol `mqtt`), as browsers
/// and web clients speak it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketSection {
    /// `ws://` listeners.
    pub listen: Vec<String>,
    /// `wss://` listeners, with `[tls]`'s certificate and key.
    pub tls_listen: Vec<String>,
    /// The path the upgrade must ask for.
    pub path: String,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            path: "/mqtt".into(),
        }
    }
}

/// `[admin]`: the admin API on the metrics listener (list the sessions,
/// show one, disconnect a client), for requests that carry the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// A file holding the bearer token (at least 16 characters; spaces
    /// around it ignored); unset: the API is off.
    pub token_file: Option<PathBuf>,
}

impl AdminSection {
    /// The token, read from its file, if the API is on.
    ///
    /// # Errors
    /// When the file cannot be read or its token is too short.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("admin.token_file", format!("{}: {e}", path.display()))
        })?;
        let token = text.trim();
        if token.len() < 16 || token.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "admin.token_file",
                format!(
                    "{}: the token must be one word of at least 16 characters",
                    path.display()
                ),
            ));
        }
        Ok(Some(token.to_owned()))
    }
}

/// `[sys]`: the broker's own `$SYS/…` topics (mosquitto's names), which
/// only clients the ACL lets subscribe to them can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysSection {
    /// Seconds between two publications; 0: none.
    pub interval_secs: u64,
}

impl Default for SysSection {
    fn default() -> Self {
        Self { interval_secs: 10 }
    }
}

/// `[metrics]`: a Prometheus endpoint, off unless an address is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where `GET /metrics` is answered (`127.0.0.1:9883`); empty: off.
    /// Unauthenticated: keep it on loopback or a private network.
    pub listen: String,
}

impl MetricsSection {
    /// The address to listen on, if the endpoint is on.
    ///
    /// # Errors
    /// When `listen` is not a socket address.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            ConfigError::new(
                "metrics.listen",
                format!("`{}` is not an address like 127.0.0.1:9883", self.listen),
            )
        })
    }
}

/// `[storage]`: what survives a restart, in `data_dir/testament.redb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `always` (the default): every change of durable state (retained
    /// messages, persistent sessions with their messages, wills) is
    /// committed and flushed to disk before anything that follows it is
    /// sent — one transaction per turn of the loop; a crash loses nothing
    /// acknowledged. `interval`: committed as with `always` but flushed
    /// every `sync_interval_ms`, acknowledgements not waiting for it; a
    /// crash loses what was acknowledged since the last flush. `off`: state
    /// lives in memory only; a restart loses it.
    pub sync: String,
    /// With `interval`, how often the store is flushed; with `always`, the
    /// longest the records of delivered QoS 1 messages wait for a flush
    /// (one lost costs a message sent again, never one lost).
    pub sync_interval_ms: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            sync: "always".into(),
            sync_interval_ms: 1000,
        }
    }
}

impl StorageSection {
    /// Whether state is kept on disk.
    ///
    /// # Errors
    /// A `sync` that is not one of the choices.
    pub fn durable(&self) -> Result<bool, ConfigError> {
        one_of(
            "storage.sync",
            &self.sync,
            &[("always", true), ("interval", true), ("off", false)],
        )
    }

    /// Whether every turn's commit is flushed before what follows it.
    pub fn flush_every_turn(&self) -> bool {
        self.sync != "interval"
    }

    /// The flush interval.
    ///
    /// # Errors
    /// One shorter than a millisecond or longer than an hour.
    pub fn flush_interval(&self) -> Result<Duration, ConfigError> {
        if !(1..=3_600_000).contains(&self.sync_interval_ms) {
            return Err(ConfigError::new(
                "storage.sync_interval_ms",
                "from 1 to 3600000 (an hour)",
            ));
        }
        Ok(Duration::from_millis(self.sync_interval_ms))
    }
}

/// `[jwt]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSection {
    /// The JWKS file; unset (and no `jwks_url`): the development key set in
    /// `data_dir`.
    pub jwks: Option<PathBuf>,
    /// An HTTPS endpoint publishing the JWKS (an identity provider's, as
    /// Keycloak, Auth0, Azure AD and Okta publish them), instead of a file.
    pub jwks_url: Option<String>,
    /// CA certificates (PEM) the endpoint's certificate must chain to;
    /// unset: the Mozilla root set.
    pub jwks_ca: Option<PathBuf>,
    /// How often the endpoint is fetched again when its answer carries no
    /// `Cache-Control: max-age`, seconds.
    pub jwks_refresh_secs: u64,
    /// The least time between two fetches, seconds: a token naming an
    /// unknown `kid` asks for one at most this often; a failed fetch is
    /// tried again after it; a shorter `max-age` waits this long.
    pub jwks_min_interval_secs: u64,
    /// Accepted `iss` values (empty: not checked).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (empty: not checked).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway_secs: u64,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// Dotted path of the roles claim ("" for none).
    pub roles_claim: String,
    /// The claim with a token's own ACL ("" for none).
    pub acl_claim: String,
    /// The MQTT user name must equal the principal.
    pub username_must_match: bool,
    /// Whether `oct` (HMAC) keys may be loaded.
    pub allow_hmac: bool,
    /// MQTT 5.0 Authentication Method carrying a token ("" for none).
    pub enhanced_method: String,
    /// Longest token accepted, bytes.
    pub max_token_len: usize,
}

impl Default for JwtSection {
    fn default() -> Self {
        let j = JwtConfig::default();
        Self {
            jwks: None,
            jwks_url: None,
            jwks_ca: None,
            jwks_refresh_secs: 300,
            jwks_min_interval_secs: 10,
            issuers: j.issuers,
            audiences: j.audiences,
            leeway_secs: j.leeway.as_secs(),
            require_exp: j.require_exp,
            principal_claim: j.principal_claim,
            roles_claim: j.roles_claim.unwrap_or_default(),
            acl_claim: j.acl_claim.unwrap_or_default(),
            username_must_match: j.username_must_match,
            allow_hmac: j.allow_hmac,
            enhanced_method: j.enhanced_method.unwrap_or_default(),
            max_token_len: j.max_token_len,
        }
    }
}

/// `[acl]`: a rules file, or rules inline; neither: the default ACL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclSection {
    /// A TOML file holding `[[rules]]`, re-read on reload.
    pub path: Option<PathBuf>,
    /// Rules, in order (first match wins).
    pub rules: Vec<RuleConfig>,
    /// `unsubscribe` or `disconnect`: a connection one of whose
    /// subscriptions an ACL change or a re-authentication revokes.
    pub on_revoke: String,
}

impl Default for AclSection {
    fn default() -> Self {
        Self {
            path: None,
            rules: Vec::new(),
            on_revoke: "unsubscribe".into(),
        }
    }
}

/// One ACL rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `allow` or `deny`.
    pub effect: String,
    /// Operations: `publish`, `subscribe`, `will`, `all`.
    pub ops: Vec<String>,
    /// A topic filter with `%u` (principal) and `%c` (client id).
    pub filter: String,
    /// Exactly one of: a principal …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// … a role …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// … a client-id pattern (`*` matches any run) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// … or `authenticated`, `anonymous`, `anyone` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A name for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `[will]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WillSection {
    /// Authorize the will at CONNECT too (fail fast).
    pub check_at_connect: bool,
    /// Authorize it again after each re-authentication.
    pub recheck_on_reauth: bool,
    /// `identity`, `strict` or `grace`.
    pub after_expiry: String,
    /// With `grace`: seconds after `exp` a triggered will is still allowed.
    pub grace_secs: u64,
    /// `resume`, `send` or `drop`: wills pending at shutdown (`resume`,
    /// durable: the sessions' expiry pauses with them).
    pub at_shutdown: String,
    /// `resume` or `send`: a 3.1.1 client's will when another connection
    /// takes its session over and continues it.
    pub on_takeover: String,
    /// `send` or `drop`: the will of a connection closed because its
    /// credential expired.
    pub on_credential_expiry: String,
}

impl Default for WillSection {
    fn default() -> Self {
        Self {
            check_at_connect: true,
            recheck_on_reauth: false,
            after_expiry: "identity".into(),
            grace_secs: 0,
            at_shutdown: "resume".into(),
            on_takeover: "resume".into(),
            on_credential_expiry: "send".into(),
        }
    }
}

/// `[session]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSection {
    /// `disconnect` or `keep` when a credential expires while connected.
    pub credential_expiry: String,
    /// Largest packet accepted, bytes.
    pub max_packet_size: u32,
    /// Seconds allowed from the TCP connection to the CONNACK.
    pub connect_timeout_secs: u64,
    /// Cap on the client's keep alive, seconds (0: none).
    pub max_keep_alive: u16,
    /// Inbound QoS 1/2 messages in flight (5.0 Receive Maximum).
    pub receive_maximum: u16,
    /// Outbound QoS 1/2 messages in flight.
    pub max_inflight: u16,
    /// Outbound messages waiting for the window.
    pub max_queued: usize,
    /// `backpressure` or `drop`: what a slow subscriber's full queue does
    /// with one more QoS 1/2 message.
    pub slow_subscriber: String,
    /// Seconds a subscriber past its queue's bound may take no message
    /// before it is disconnected (0x97).
    pub slow_subscriber_timeout_secs: u64,
    /// Subscriptions per session.
    pub max_subscriptions: usize,
    /// Topic aliases accepted from a client.
    pub topic_alias_maximum: u16,
    /// Topic aliases given to a 5.0 client that accepts them (at most its
    /// Topic Alias Maximum; 0: none).
    pub topic_aliases_out: u16,
    /// Longest client id.
    pub max_client_id_len: usize,
    /// Audit allowed publishes too (denials always are).
    pub audit_allowed_publishes: bool,
    /// Longest topic name or filter, bytes.
    pub max_topic_len: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
}

impl Default for SessionSection {
    fn default() -> Self {
        let s = SessionConfig::default();
        Self {
            credential_expiry: "disconnect".into(),
            max_packet_size: s.max_packet_size,
            connect_timeout_secs: s.connect_timeout.as_secs(),
            max_keep_alive: s.server_keep_alive.unwrap_or(0),
            receive_maximum: s.receive_maximum,
            max_inflight: s.max_outbound_inflight,
            max_queued: s.max_outbound_queue,
            slow_subscriber: "backpressure".into(),
            slow_subscriber_timeout_secs: s.congestion_timeout.as_secs(),
            max_subscriptions: s.max_subscriptions,
            topic_alias_maximum: s.topic_alias_maximum,
            topic_aliases_out: s.max_outbound_topic_aliases,
            max_client_id_len: s.max_client_id_len,
            audit_allowed_publishes: false,
            max_topic_len: s.max_topic_len,
            max_topic_levels: s.max_topic_levels,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Sessions held, connected or stored.
    pub max_sessions: usize,
    /// QoS 1/2 messages queued per disconnected session.
    pub max_offline_messages: usize,
    /// `drop_newest` or `drop_oldest` when that queue is full.
    pub offline_overflow: String,
    /// Retained messages held.
    pub max_retained_messages: usize,
    /// Bytes of retained messages held.
    pub max_retained_bytes: usize,
    /// Bytes waiting to be written to one client before it is dropped.
    pub max_output_bytes: usize,
    /// Connections at once (then CONNACK 0x97 Quota exceeded).
    pub max_connections: usize,
    /// Connections at once from one address.
    pub max_connections_per_address: usize,
    /// Authentication attempts per address per second (then CONNACK 0x9F,
    /// no token checked).
    pub max_authentications_per_address_per_sec: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let b = BrokerConfig::default();
        Self {
            max_sessions: b.max_sessions,
            max_offline_messages: b.max_offline_messages,
            offline_overflow: "drop_newest".into(),
            max_retained_messages: b.max_retained_messages,
            max_retained_bytes: b.max_retained_bytes,
            max_output_bytes: DriverConfig::default().max_output_bytes,
            max_connections: DriverConfig::default().max_connections,
            max_connections_per_address: DriverConfig::default().max_connections_per_address,
            max_authentications_per_address_per_sec: DriverConfig::default()
                .max_authentications_per_address_per_sec,
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Addresses of TLS listeners (empty: none).
    pub listen: Vec<String>,
    /// The certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate.
    pub require_client_cert: bool,
    /// `none`, `cn` or `dns`: what of a verified client certificate names
    /// the principal of a client that sends no token.
    pub certificate_principal: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `error`, `warn`, `info` (audit records), `debug`, `trace`.
    pub level: String,
    /// `text` (one line per record) or `json` (one object per line, an
    /// audit record's fields as keys); timestamps in RFC 3339, UTC.
    pub format: String,
    /// Where the audit records go, appended, instead of standard error;
    /// unset: with the rest of the log.
    pub audit_file: Option<PathBuf>,
}

impl LogSection {
    /// Whether records are written as JSON.
    pub fn json(&self) -> bool {
        self.format == "json"
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            audit_file: None,
        }
    }
}

/// The default ACL: each principal owns `clients/%u/#` (publish, subscribe,
/// will); the role `monitor` may subscribe to `clients/#`.
pub fn default_acl() -> Acl {
    Acl::new(vec![
        Rule::new(
            Effect::Allow,
            Ops::ALL,
            Subject::Authenticated,
            FilterTemplate::new("clients/%u/#").expect("a valid template"),
        )
        .named("own-tree"),
        Rule::new(
            Effect::Allow,
            Ops::SUBSCRIBE,
            Subject::Role("monitor".into()),
            FilterTemplate::new("clients/#").expect("a valid template"),
        )
        .named("monitors"),
    ])
}

fn one_of<T: Copy>(key: &str, value: &str, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            ConfigError::new(key, format!("`{value}` is not one of {}", names.join(", ")))
        })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Rules from their configured form; `key` prefixes the error keys.
///
/// # Errors
/// The first rule that is not valid, with its key.
pub fn parse_rules(rules: &[RuleConfig], key: &str) -> Result<Acl, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let at = |field: &str| format!("{key}[{i}].{field}");
        let effect = one_of(
            &at("effect"),
            &r.effect,
            &[("allow", Effect::Allow), ("deny", Effect::Deny)],
        )?;
        let mut ops: Option<Ops> = None;
        for op in &r.ops {
            let one = one_of(
                &at("ops"),
                op,
                &[
                    ("publish", Ops::PUBLISH),
                    ("subscribe", Ops::SUBSCRIBE),
                    ("will", Ops::WILL),
                    ("all", Ops::ALL),
                ],
            )?;
            ops = Some(ops.map_or(one, |o| o.with(one)));
        }
        let Some(ops) = ops else {
            return Err(ConfigError::new(at("ops"), "no operation"));
        };
        let subjects = [&r.principal, &r.role, &r.client_id, &r.subject]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if subjects > 1 {
            return Err(ConfigError::new(
                at("principal"),
                "give one of principal, role, client_id, subject",
            ));
        }
        let subject = if let Some(p) = &r.principal {
            Subject::Principal(p.clone())
        } else if let Some(role) = &r.role {
            Subject::Role(role.clone())
        } else if let Some(c) = &r.client_id {
            Subject::ClientId(c.clone())
        } else {
            one_of(
                &at("subject"),
                r.subject.as_deref().unwrap_or("anyone"),
                &[("authenticated", 0u8), ("anonymous", 1), ("anyone", 2)],
            )
            .map(|s| match s {
                0 => Subject::Authenticated,
                1 => Subject::Anonymous,
                _ => Subject::Anyone,
            })?
        };
        let filter =
            FilterTemplate::new(&r.filter).map_err(|e| ConfigError::new(at("filter"), e))?;
        let mut rule = Rule::new(effect, ops, subject, filter);
        if let Some(name) = &r.name {
            rule = rule.named(name);
        }
        out.push(rule);
    }
    Ok(Acl::new(out))
}

/// A rules file: `[[rules]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// Reads an ACL rules file.
///
/// # Errors
/// When the file cannot be read or a rule is not valid.
pub fn read_acl_file(path: &Path) -> Result<Acl, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, e))?;
    let file: RulesFile = toml::from_str(&text).map_err(|e| toml_error(&name, &text, &e))?;
    parse_rules(&file.rules, "rules").map_err(|e| e.placed(&name, &text))
}

/// Reads a JWKS file.
///
/// # Errors
/// When the file cannot be read or is not a usable key set.
pub fn read_jwks(path: &Path, allow_hmac: bool) -> Result<KeySet, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, e))?;
    KeySet::from_jwks(&text, allow_hmac).map_err(|e| ConfigError::new(&name, e))
}

impl Config {
    /// Parses and validates a TOML document.
    ///
    /// # Errors
    /// The first problem, with its key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_named_toml("config", text)
    }

    /// [`Config::from_toml`], its errors placed in `file`.
    fn from_named_toml(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        config.validate().map_err(|e| e.placed(file, text))?;
        Ok(config)
    }

    /// Reads a config file.
    ///
    /// # Errors
    /// When it cannot be read, or [`Config::from_toml`] refuses it.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, e))?;
        Self::from_named_toml(&name, &text)
    }

    /// Reads a config file as [`Config::read`] does, then every file it
    /// names (the JWKS, the ACL file, the TLS certificates and keys): each
    /// must exist and parse. Returns the configuration and what was
    /// checked, one line each.
    ///
    /// # Errors
    /// The first problem, at the line of the key that names the file.
    pub fn check(path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, e))?;
        let c = Self::from_named_toml(&name, &text)?;
        // The problem in the named file, at the key that names it.
        let at = |key: &str, e: ConfigError| {
            let detail = match &e.location {
                Some(_) => e.to_string(),
                None => format!("{}: {}", e.key, e.problem),
            };
            ConfigError::new(key, detail).placed(&name, &text)
        };
        let mut checked = Vec::new();
        if let Some(jwks) = &c.jwt.jwks {
            let keys = read_jwks(jwks, c.jwt.allow_hmac).map_err(|e| at("jwt.jwks", e))?;
            checked.push(format!("jwt.jwks {}: {} keys", jwks.display(), keys.len()));
        }
        #[cfg(feature = "jwks-url")]
        if let Some(url) = &c.jwt.jwks_url {
            crate::driver::jwks::JwksEndpoint::new(url, c.jwt.jwks_ca.as_deref(), c.jwt.allow_hmac)
                .map_err(|e| ConfigError::new("jwt.jwks_ca", e).placed(&name, &text))?;
            checked.push(format!("jwt.jwks_url {url}: fetched at start, not now"));
        }
        if let Some(acl) = &c.acl.path {
            let rules = read_acl_file(acl).map_err(|e| at("acl.path", e))?;
            checked.push(format!(
                "acl.path {}: {} rules",
                acl.display(),
                rules.rules().len()
            ));
        }
        if let Some(files) = c.tls_files() {
            crate::driver::tls::Tls::load(files)
                .map_err(|e| ConfigError::new("tls.cert", e.to_string()).placed(&name, &text))?;
            checked.push("tls.cert, tls.key, tls.client_ca: loaded".to_owned());
        }
        if c.admin
            .token()
            .map_err(|e| e.placed(&name, &text))?
            .is_some()
        {
            checked.push("admin.token_file: a token".to_owned());
        }
        if c.data_dir.exists() && !c.data_dir.is_dir() {
            return Err(ConfigError::new("data_dir", "not a directory").placed(&name, &text));
        }
        Ok((c, checked))
    }

    /// Checks every value that TOML types alone do not.
    ///
    /// # Errors
    /// The first problem, with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::new("listen", "no address to listen on"));
        }
        for (i, addr) in self.listen.iter().enumerate() {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| ConfigError::new(format!("listen[{i}]"), format!("`{addr}`: {e}")))?;
        }
        self.broker_config()?;
        self.storage.flush_interval()?;
        if self.metrics.address()?.is_none() && self.admin.token_file.is_some() {
            return Err(ConfigError::new(
                "admin.token_file",
                "the admin API is served on the metrics listener: set metrics.listen",
            ));
        }
        if let Some(url) = &self.jwt.jwks_url {
            if self.jwt.jwks.is_some() {
                return Err(ConfigError::new(
                    "jwt.jwks_url",
                    "give either jwt.jwks (a file) or jwt.jwks_url, not both",
                ));
            }
            if !url.starts_with("https://") {
                return Err(ConfigError::new(
                    "jwt.jwks_url",
                    format!("`{url}`: an https:// URL (keys must not travel in clear text)"),
                ));
            }
        }
        if self.jwt.jwks_min_interval_secs == 0
            || self.jwt.jwks_refresh_secs < self.jwt.jwks_min_interval_secs
        {
            return Err(ConfigError::new(
                "jwt.jwks_refresh_secs",
                "jwks_min_interval_secs must be at least 1 and at most jwks_refresh_secs",
            ));
        }
        if self.acl.path.is_some() && !self.acl.rules.is_empty() {
            return Err(ConfigError::new(
                "acl.rules",
                "give either acl.path or acl.rules, not both",
            ));
        }
        parse_rules(&self.acl.rules, "acl.rules")?;
        one_of(
            "log.level",
            &self.log.level,
            &[
                ("error", ()),
                ("warn", ()),
                ("info", ()),
                ("debug", ()),
                ("trace", ()),
            ],
        )?;
        one_of(
            "log.format",
            &self.log.format,
            &[("text", ()), ("json", ())],
        )?;
        for (key, addrs) in [
            ("tls.listen", &self.tls.listen),
            ("websocket.listen", &self.websocket.listen),
            ("websocket.tls_listen", &self.websocket.tls_listen),
        ] {
            for (i, addr) in addrs.iter().enumerate() {
                addr.parse::<std::net::SocketAddr>().map_err(|e| {
                    ConfigError::new(format!("{key}[{i}]"), format!("`{addr}`: {e}"))
                })?;
            }
        }
        let tls_listeners = !self.tls.listen.is_empty() || !self.websocket.tls_listen.is_empty();
        if tls_listeners && (self.tls.cert.is_none() || self.tls.key.is_none()) {
            return Err(ConfigError::new(
                "tls.cert",
                "TLS listeners (tls.listen, websocket.tls_listen) need tls.cert and tls.key",
            ));
        }
        if !self.websocket.path.starts_with('/') {
            return Err(ConfigError::new("websocket.path", "a path starting with /"));
        }
        if self.tls.require_client_cert && self.tls.client_ca.is_none() {
            return Err(ConfigError::new(
                "tls.require_client_cert",
                "needs tls.client_ca",
            ));
        }
        self.certificate_principal()?;
        if self.session.max_packet_size < 64 {
            return Err(ConfigError::new(
                "session.max_packet_size",
                "at least 64 bytes",
            ));
        }
        if self.session.receive_maximum == 0 || self.session.max_inflight == 0 {
            return Err(ConfigError::new(
                "session.receive_maximum",
                "receive_maximum and max_inflight are at least 1",
            ));
        }
        Ok(())
    }

    /// The JWT checks.
    pub fn jwt_config(&self) -> JwtConfig {
        let j = &self.jwt;
        JwtConfig {
            issuers: j.issuers.clone(),
            audiences: j.audiences.clone(),
            leeway: Duration::from_secs(j.leeway_secs),
            require_exp: j.require_exp,
            principal_claim: j.principal_claim.clone(),
            username_must_match: j.username_must_match,
            roles_claim: non_empty(&j.roles_claim),
            acl_claim: non_empty(&j.acl_claim),
            allow_hmac: j.allow_hmac,
            max_token_len: j.max_token_len,
            enhanced_method: non_empty(&j.enhanced_method),
            allow_anonymous: self.allow_anonymous,
        }
    }

    /// The hub's configuration.
    ///
    /// # Errors
    /// An unknown policy name, with its key.
    pub fn broker_config(&self) -> Result<BrokerConfig, ConfigError> {
        let s = &self.session;
        let session = SessionConfig {
            max_packet_size: s.max_packet_size,
            connect_timeout: Duration::from_secs(s.connect_timeout_secs),
            max_client_id_len: s.max_client_id_len,
            server_keep_alive: (s.max_keep_alive > 0).then_some(s.max_keep_alive),
            receive_maximum: s.receive_maximum,
            max_outbound_inflight: s.max_inflight,
            max_outbound_queue: s.max_queued,
            backpressure: one_of(
                "session.slow_subscriber",
                &s.slow_subscriber,
                &[("backpressure", true), ("drop", false)],
            )?,
            congestion_timeout: Duration::from_secs(s.slow_subscriber_timeout_secs),
            max_subscriptions: s.max_subscriptions,
            topic_alias_maximum: s.topic_alias_maximum,
            max_outbound_topic_aliases: s.topic_aliases_out,
            check_will_at_connect: self.will.check_at_connect,
            recheck_will_on_reauth: self.will.recheck_on_reauth,
            will_on_takeover_v311: one_of(
                "will.on_takeover",
                &self.will.on_takeover,
                &[("resume", false), ("send", true)],
            )?,
            will_on_credential_expiry: one_of(
                "will.on_credential_expiry",
                &self.will.on_credential_expiry,
                &[("send", true), ("drop", false)],
            )?,
            credential_expiry: one_of(
                "session.credential_expiry",
                &s.credential_expiry,
                &[
                    ("disconnect", CredentialExpiry::Disconnect),
                    ("keep", CredentialExpiry::Keep),
                ],
            )?,
            credential_leeway: Duration::from_secs(self.jwt.leeway_secs),
            audit_allowed_publishes: s.audit_allowed_publishes,
            max_topic_len: s.max_topic_len,
            max_topic_levels: s.max_topic_levels,
            ..SessionConfig::default()
        };
        let l = &self.limits;
        Ok(BrokerConfig {
            session,
            max_sessions: l.max_sessions,
            max_offline_messages: l.max_offline_messages,
            offline_overflow: one_of(
                "limits.offline_overflow",
                &l.offline_overflow,
                &[
                    ("drop_newest", OfflineOverflow::DropNewest),
                    ("drop_oldest", OfflineOverflow::DropOldest),
                ],
            )?,
            max_retained_messages: l.max_retained_messages,
            max_retained_bytes: l.max_retained_bytes,
            durable: self.storage.durable()?,
            will_after_expiry: match self.will.after_expiry.as_str() {
                "grace" => WillAfterExpiry::Grace(Duration::from_secs(self.will.grace_secs)),
                other => one_of(
                    "will.after_expiry",
                    other,
                    &[
                        ("identity", WillAfterExpiry::Identity),
                        ("strict", WillAfterExpiry::Strict),
                        ("grace", WillAfterExpiry::Identity),
                    ],
                )?,
            },
            shutdown_wills: one_of(
                "will.at_shutdown",
                &self.will.at_shutdown,
                &[
                    ("resume", ShutdownWills::Resume),
                    ("send", ShutdownWills::SendNow),
                    ("drop", ShutdownWills::Drop),
                ],
            )?,
            on_revoke: one_of(
                "acl.on_revoke",
                &self.acl.on_revoke,
                &[
                    ("unsubscribe", OnRevoke::Unsubscribe),
                    ("disconnect", OnRevoke::Disconnect),
                ],
            )?,
        })
    }

    /// What of a client certificate names the principal, if anything.
    ///
    /// # Errors
    /// An unknown value, with its key.
    pub fn certificate_principal(
        &self,
    ) -> Result<Option<crate::driver::CertificatePrincipal>, ConfigError> {
        use crate::driver::CertificatePrincipal as C;
        Ok(match self.tls.certificate_principal.as_deref() {
            None => None,
            Some(v) => one_of(
                "tls.certificate_principal",
                v,
                &[
                    ("none", None),
                    ("cn", Some(C::CommonName)),
                    ("dns", Some(C::DnsName)),
                ],
            )?,
        })
    }

    /// The TLS files, when TLS listeners are configured.
    pub fn tls_files(&self) -> Option<crate::driver::tls::TlsFiles> {
        if self.tls.listen.is_empty() && self.websocket.tls_listen.is_empty() {
            return None;
        }
        Some(crate::driver::tls::TlsFiles {
            cert: self.tls.cert.clone()?,
            key: self.tls.key.clone()?,
            client_ca: self.tls.client_ca.clone(),
            require_client_cert: self.tls.require_client_cert,
        })
    }

    /// The driver's limits.
    pub fn driver_config(&self) -> DriverConfig {
        DriverConfig {
            max_output_bytes: self.limits.max_output_bytes,
            max_connections: self.limits.max_connections,
            max_connections_per_address: self.limits.max_connections_per_address,
            max_authentications_per_address_per_sec: self
                .limits
                .max_authentications_per_address_per_sec,
            flush_every_turn: self.storage.flush_every_turn(),
            flush_interval: self
                .storage
                .flush_interval()
                .unwrap_or(Duration::from_secs(1)),
            sys_interval: (self.sys.interval_secs > 0)
                .then(|| Duration::from_secs(self.sys.interval_secs)),
            websocket_path: self.websocket.path.as_str().into(),
            ..DriverConfig::default()
        }
    }

    /// The ACL in force: the rules file, the inline rules, or the default.
    ///
    /// # Errors
    /// When the rules file cannot be read or a rule is not valid.
    pub fn acl(&self) -> Result<Acl, ConfigError> {
        match &self.acl.path {
            Some(path) => read_acl_file(path),
            None if self.acl.rules.is_empty() => Ok(default_acl()),
            None => parse_rules(&self.acl.rules, "acl.rules"),
        }
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
