//! A key set fetched from an HTTPS endpoint (`jwt.jwks_url`), as identity
//! providers publish theirs: fetched at start (the broker does not start
//! without it), fetched again on an interval — sooner when the answer's
//! `Cache-Control: max-age` says so — and on a reload (SIGHUP) or when a
//! token names a `kid` the set does not have, at most once per
//! `jwt.jwks_min_interval_secs`. A
//! fetch that fails, or brings something that is not a usable key set,
//! leaves the last good set in force. Every change and every failure is
//! audited (`event=keyset`).
//!
//! The fetching runs on a thread of its own; the policy only swaps its key
//! set, so a slow endpoint never holds an authentication up.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use crate::auth::{AuditRecord, KeySet};

/// The endpoint and how to reach it.
pub struct JwksEndpoint {
    url: String,
    agent: ureq::Agent,
    allow_hmac: bool,
}

impl std::fmt::Debug for JwksEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksEndpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// One good answer of the endpoint.
#[derive(Debug)]
pub struct Fetched {
    /// The key set.
    pub keys: KeySet,
    /// The document, to tell a change.
    pub body: String,
    /// How long it may be kept (`Cache-Control: max-age`; `no-cache` and
    /// `no-store` are 0).
    pub max_age: Option<Duration>,
}

/// The largest key set document accepted.
const MAX_BODY: u64 = 1 << 20;

impl JwksEndpoint {
    /// An endpoint at `url` (https), its certificate verified against the
    /// CA certificates in `ca` (PEM) or, without, the Mozilla root set.
    ///
    /// # Errors
    /// When `ca` cannot be read or holds no certificate.
    pub fn new(url: &str, ca: Option<&Path>, allow_hmac: bool) -> Result<Self, String> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let roots = match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(format!("{}: no certificate", path.display()));
                }
                RootCerts::from(certs)
            }
            None => RootCerts::WebPki,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Self {
            url: url.to_owned(),
            agent,
            allow_hmac,
        })
    }

    /// Where it is.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches the key set once.
    ///
    /// # Errors
    /// When the endpoint cannot be reached, answers other than 200, or its
    /// answer is not a usable key set.
    pub fn fetch(&self) -> Result<Fetched, String> {
        let mut response = self
            .agent
            .get(&self.url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| e.to_string())?;
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let keys = KeySet::from_jwks(&body, self.allow_hmac).map_err(|e| e.to_string())?;
        if keys.is_empty() {
            return Err("the key set has no key".to_owned());
        }
        Ok(Fetched {
            keys,
            body,
            max_age,
        })
    }
}

/// `Cache-Control`'s `max-age` (`no-cache`, `no-store`: 0).
fn max_age(header: &str) -> Option<Duration> {
    header.split(',').map(str::trim).find_map(|d| {
        let d = d.to_ascii_lowercase();
        if d == "no-cache" || d == "no-store" {
            return Some(Duration::ZERO);
        }
        d.strip_prefix("max-age=")
            .and_then(|s| s.trim_matches('"').parse().ok())
            .map(Duration::from_secs)
    })
}

/// How often, and how soon, the endpoint is fetched again.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Without `max-age`: this often.
    pub refresh: Duration,
    /// Never more often than this.
    pub min_interval: Duration,
}

impl Schedule {
    /// How long an answer with this `max-age` is kept: the sooner of its
    /// `max-age` and `refresh`, never below `min_interval`.
    pub fn keep(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .map_or(self.refresh, |m| m.min(self.refresh))
            .max(self.min_interval)
    }
}

/// Asks the refresher for a fresh copy (a token named an unknown `kid`);
/// cheap, never blocks, and asks at most once while one is pending.
#[derive(Debug, Clone)]
pub struct Refetch(SyncSender<()>);

impl Refetch {
    /// Asks for a fetch as soon as the schedule allows.
    pub fn ask(&self) {
        let _ = self.0.try_send(());
    }
}

/// Where the refresher hears [`Refetch::ask`].
#[derive(Debug)]
pub struct Asks(Receiver<()>);

/// A [`Refetch`] for the policy and what the refresher will hear it on.
pub fn refetch_channel() -> (Refetch, Asks) {
    let (ask, asks) = sync_channel(1);
    (Refetch(ask), Asks(asks))
}

/// Starts the refresher: `body` and `max_age` are those of the answer
/// fetched at start (whose keys are in force), `install` puts a new key set
/// in force, `asks` brings the policy's requests for a fresh copy. Runs
/// until every [`Refetch`] is dropped.
///
/// # Errors
/// When the thread cannot start.
pub fn spawn(
    endpoint: JwksEndpoint,
    body: String,
    max_age: Option<Duration>,
    schedule: Schedule,
    asks: Asks,
    install: impl Fn(KeySet) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("testament-jwks".into())
        .spawn(move || refresh(&endpoint, body, max_age, schedule, &install, &asks.0))?;
    Ok(())
}

fn refresh(
    endpoint: &JwksEndpoint,
    mut body: String,
    max_age: Option<Duration>,
    schedule: Schedule,
    install: &dyn Fn(KeySet),
    asks: &Receiver<()>,
) {
    let mut last = Instant::now();
    let mut due = last + schedule.keep(max_age);
    loop {
        match asks.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                // An unknown kid: fetch as soon as allowed.
                due = due.min(last + schedule.min_interval);
                if Instant::now() < due {
                    continue;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        last = Instant::now();
        match endpoint.fetch() {
            Ok(fetched) => {
                due = last + schedule.keep(fetched.max_age);
                if fetched.body != body {
                    let kids = kids(&fetched.keys);
                    audit(
                        "changed",
                        endpoint.url(),
                        kids,
                        "a new key set is in force".into(),
                    );
                    install(fetched.keys);
                    body = fetched.body;
                }
            }
            Err(e) => {
                due = last + schedule.min_interval;
                audit(
                    "failed",
                    endpoint.url(),
                    String::new(),
                    format!("{e}; the last good key set stays"),
                );
            }
        }
    }
}

/// The key ids of a set, comma-separated (`-` for a key without one).
pub fn kids(keys: &KeySet) -> String {
    keys.kids()
        .map(|k| k.unwrap_or("-"))
        .collect::<Vec<_>>()
        .join(",")
}

fn audit(result: &'static str, source: &str, kids: String, detail: String) {
    let record = AuditRecord::KeySet {
        at: super::SystemClock::wall(),
        source: source.to_owned(),
        result,
        kids,
        detail,
    };
    let level = if result == "failed" {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    super::log_audit(&record, level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_and_no_cache_are_read() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=x"), None);
    }

    #[test]
    fn an_answer_is_kept_for_the_sooner_of_max_age_and_refresh_never_below_the_floor() {
        let s = Schedule {
            refresh: Duration::from_secs(300),
            min_interval: Duration::from_secs(10),
        };
        assert_eq!(s.keep(None), Duration::from_secs(300));
        assert_eq!(
            s.keep(Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            s.keep(Some(Duration::from_secs(3600))),
            Duration::from_secs(300)
        );
        assert_eq!(s.keep(Some(Duration::ZERO)), Duration::from_secs(10));
    }
}
