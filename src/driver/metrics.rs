//! A Prometheus endpoint for an operator: what the broker holds (gauges
//! read from [`Broker::stats`](crate::broker::Broker::stats) after each
//! turn), what it did (counters from the hub's counters and from the audit
//! records the driver carries out), and how long durable commits take.
//!
//! The hub stays pure: it counts, the driver reads. The exposition format
//! is `prometheus-client`'s (OpenMetrics text), served by
//! [`super::ops`].

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::{AuditRecord, WillOutcome};
use crate::broker::{Action, Stats};

type Labels = Vec<(&'static str, String)>;

/// The broker's metrics; shared by the driver (which updates them) and the
/// endpoint's thread (which reads them).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Gauge,
    sessions: Gauge,
    subscriptions: Gauge,
    retained_messages: Gauge,
    retained_bytes: Gauge,
    received: Family<Labels, Counter>,
    delivered: Family<Labels, Counter>,
    queued: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    dropped: Family<Labels, Counter>,
    authentications: Family<Labels, Counter>,
    authorizations: Family<Labels, Counter>,
    wills: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
    commits: Histogram,
}

const QOS: [&str; 3] = ["0", "1", "2"];

impl Metrics {
    /// Every metric at zero, registered under `testament_`.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("testament");
        let m = Self {
            connections: Gauge::default(),
            sessions: Gauge::default(),
            subscriptions: Gauge::default(),
            retained_messages: Gauge::default(),
            retained_bytes: Gauge::default(),
            received: Family::default(),
            delivered: Family::default(),
            queued: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            dropped: Family::default(),
            authentications: Family::default(),
            authorizations: Family::default(),
            wills: Family::default(),
            refused: Family::default(),
            // 50 µs to ~1.6 s.
            commits: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("connections", "Connections open", m.connections.clone());
        r.register(
            "sessions",
            "Sessions held, connected or stored",
            m.sessions.clone(),
        );
        r.register(
            "subscriptions",
            "Subscriptions held",
            m.subscriptions.clone(),
        );
        r.register(
            "retained_messages",
            "Retained messages held",
            m.retained_messages.clone(),
        );
        r.register(
            "retained_bytes",
            "Bytes of retained messages (topics and payloads)",
            m.retained_bytes.clone(),
        );
        r.register(
            "messages_received",
            "PUBLISHes from clients routed, by QoS",
            m.received.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages handed to connected clients, by QoS",
            m.delivered.clone(),
        );
        r.register(
            "messages_queued",
            "QoS 1/2 messages queued for sessions whose clients are away",
            m.queued.clone(),
        );
        r.register(
            "bytes_received",
            "Bytes read from clients",
            m.bytes_received.clone(),
        );
        r.register(
            "bytes_sent",
            "Bytes written to clients",
            m.bytes_sent.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages dropped for one subscriber, by reason",
            m.dropped.clone(),
        );
        r.register(
            "authentications",
            "Authentication results, by result and reason",
            m.authentications.clone(),
        );
        r.register(
            "authorizations",
            "Audited authorization decisions (subscriptions, wills, denials), by operation and decision",
            m.authorizations.clone(),
        );
        r.register(
            "wills",
            "Will steps, by outcome and trigger",
            m.wills.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused before authentication, by reason",
            m.refused.clone(),
        );
        r.register(
            "storage_commit_seconds",
            "Time of a durable commit (flushed or not)",
            m.commits.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// The hub's gauges and counters, read after a turn.
    pub fn set(&self, s: &Stats) {
        let gauge = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.connections, s.connections);
        gauge(&self.sessions, s.sessions);
        gauge(&self.subscriptions, s.subscriptions);
        gauge(&self.retained_messages, s.retained_messages);
        gauge(&self.retained_bytes, s.retained_bytes);
        for (qos, name) in QOS.iter().enumerate() {
            let labels = vec![("qos", (*name).to_owned())];
            catch_up(&self.received.get_or_create(&labels), s.received[qos]);
            catch_up(&self.delivered.get_or_create(&labels), s.delivered[qos]);
        }
        catch_up(&self.queued, s.queued);
    }

    /// Bytes read from a client.
    pub fn read(&self, bytes: usize) {
        self.bytes_received.inc_by(bytes as u64);
    }

    /// A durable commit took `elapsed`.
    pub fn committed(&self, elapsed: Duration) {
        self.commits.observe(elapsed.as_secs_f64());
    }

    /// An action the driver carries out: bytes sent and audit records
    /// count.
    pub fn observe(&self, action: &Action) {
        match action {
            Action::Send { bytes, .. } => {
                self.bytes_sent.inc_by(bytes.len() as u64);
            }
            Action::Audit(record) => self.audited(record),
            _ => {}
        }
    }

    fn audited(&self, record: &AuditRecord) {
        let count = |family: &Family<Labels, Counter>, labels: Labels| {
            family.get_or_create(&labels).inc();
        };
        match record {
            AuditRecord::Authenticated { .. } => count(
                &self.authentications,
                vec![("result", "success".into()), ("reason", String::new())],
            ),
            AuditRecord::AuthenticationFailed { failure, .. } => count(
                &self.authentications,
                vec![
                    ("result", "failure".into()),
                    ("reason", variant(&failure.error)),
                ],
            ),
            AuditRecord::Authorization {
                query, decision, ..
            } => count(
                &self.authorizations,
                vec![
                    ("op", query.op.to_string()),
                    (
                        "decision",
                        if decision.is_allowed() {
                            "allow"
                        } else {
                            "deny"
                        }
                        .into(),
                    ),
                ],
            ),
            AuditRecord::Will {
                trigger, outcome, ..
            } => count(
                &self.wills,
                vec![
                    ("outcome", will_outcome(outcome).into()),
                    (
                        "trigger",
                        trigger.map(|t| t.to_string()).unwrap_or_default(),
                    ),
                ],
            ),
            AuditRecord::MessageDropped { reason, .. } => {
                count(&self.dropped, vec![("reason", reason.to_string())]);
            }
            // The driver's few limits name themselves.
            AuditRecord::ConnectionRefused { reason, .. } => {
                count(&self.refused, vec![("reason", reason.clone())]);
            }
            _ => {}
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Moves a counter up to the hub's count (both only grow).
fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

fn will_outcome(outcome: &WillOutcome) -> &'static str {
    match outcome {
        WillOutcome::Triggered => "triggered",
        WillOutcome::Delayed { .. } => "delayed",
        WillOutcome::Cancelled { .. } => "cancelled",
        WillOutcome::Paused { .. } => "paused",
        WillOutcome::Delivered => "delivered",
        WillOutcome::Denied { .. } => "denied",
    }
}

/// An enum's variant name in snake case, from its `Debug` form (a label
/// value that does not carry the variant's data).
fn variant(value: &impl std::fmt::Debug) -> String {
    let debug = format!("{value:?}");
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthnError;

    #[test]
    fn variants_are_snake_case_names_without_their_data() {
        assert_eq!(variant(&AuthnError::NotAJwt), "not_a_jwt");
        assert_eq!(variant(&AuthnError::UnknownKey("k9".into())), "unknown_key");
    }

    #[test]
    fn the_hub_counters_catch_up_and_never_go_back() {
        let m = Metrics::new();
        let mut s = Stats {
            connections: 3,
            ..Stats::default()
        };
        s.received[1] = 5;
        m.set(&s);
        s.received[1] = 7;
        m.set(&s);
        let text = m.encode();
        assert!(text.contains("testament_connections 3"), "{text}");
        assert!(
            text.contains("testament_messages_received_total{qos=\"1\"} 7"),
            "{text}"
        );
    }
}
