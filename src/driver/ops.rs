//! The operator's HTTP endpoint (`[metrics] listen`): `GET /metrics` for
//! Prometheus, and — with `[admin] token_file` — the admin API under
//! `/admin/`, behind `Authorization: Bearer <token>`:
//!
//! - `GET /admin/clients?after=ID&limit=N`: the sessions, a page at a time;
//! - `GET /admin/clients/ID`: one session;
//! - `POST /admin/clients/ID/disconnect?reason=0x98&will=true`: disconnect
//!   a client, with or without its will.
//!
//! Client ids in paths are percent-encoded. Answers are JSON, timestamps
//! RFC 3339. The admin requests go to the driver as
//! [`Control::Admin`] and are answered between its
//! turns.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use super::Control;
use super::admin::{self, Call, Client, Reply};
use super::metrics::Metrics;
use crate::broker::KickError;
use crate::codec::{DisconnectReasonCode, ProtocolVersion};
use crate::time::Timestamp;

/// How the admin API reaches the driver: its token, and the driver's
/// control channel.
pub struct AdminApi {
    /// The bearer token requests must carry.
    pub token: String,
    /// Sends a control to the running driver; `false` once it stopped.
    pub send: Arc<dyn Fn(Control) -> bool + Send + Sync>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminApi")
    }
}

/// How long a request waits for the driver's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Serves the endpoint on `listener`, on threads of its own.
///
/// # Errors
/// When the server cannot start on the listener.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    admin: Option<AdminApi>,
) -> std::io::Result<()> {
    let server = Server::from_listener(listener, None).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("testament-ops".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, kind, body) = answer(&request, &metrics, admin.as_ref());
                let mut response = Response::from_string(body).with_status_code(status);
                if let Ok(h) = Header::from_bytes("Content-Type", kind) {
                    response = response.with_header(h);
                }
                let _ = request.respond(response);
            }
        })?;
    Ok(())
}

type Answer = (u16, &'static str, String);

const JSON: &str = "application/json";

fn answer(request: &Request, metrics: &Metrics, admin: Option<&AdminApi>) -> Answer {
    let (path, query) = request.url().split_once('?').unwrap_or((request.url(), ""));
    if path == "/metrics" && *request.method() == Method::Get {
        return (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        );
    }
    let Some(rest) = path.strip_prefix("/admin/") else {
        return error(404, "GET /metrics, or the admin API under /admin/");
    };
    let Some(api) = admin else {
        return error(404, "the admin API is off: set [admin] token_file");
    };
    let by = request
        .remote_addr()
        .map_or_else(|| "http".to_owned(), |a| format!("http {a}"));
    if !authorized(request, &api.token) {
        let record = crate::auth::AuditRecord::Admin {
            at: super::SystemClock::wall(),
            action: "unauthorized",
            by,
            client_id: None,
            detail: format!("{} {}", request.method(), request.url()),
        };
        super::log_audit(&record, log::Level::Warn);
        return error(
            401,
            "Authorization: Bearer <the token of [admin] token_file>",
        );
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let request_of = match (request.method(), segments.as_slice()) {
        (Method::Get, ["clients"]) => admin::Request::Clients {
            after: param(query, "after"),
            limit: param(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(1000),
        },
        (Method::Get, ["clients", id]) => admin::Request::Client(decode(id)),
        (Method::Post, ["clients", id, "disconnect"]) => {
            let reason = match param(query, "reason").map(|r| parse_reason(&r)) {
                None => DisconnectReasonCode::AdministrativeAction,
                Some(Some(r)) => r,
                Some(None) => return error(400, "reason: a DISCONNECT reason code, like 0x98"),
            };
            let will = match param(query, "will").as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(_) => return error(400, "will: true or false"),
            };
            admin::Request::Disconnect {
                client_id: decode(id),
                reason,
                will,
            }
        }
        _ => return error(404, "no such admin request"),
    };
    let (reply, answers) = std::sync::mpsc::sync_channel(1);
    let call = Call {
        request: request_of,
        by,
        reply,
    };
    if !(api.send)(Control::Admin(call)) {
        return error(503, "the broker is stopping");
    }
    match answers.recv_timeout(ANSWER_WITHIN) {
        Ok(reply) => render(reply),
        Err(_) => error(503, "the broker did not answer in time"),
    }
}

fn render(reply: Reply) -> Answer {
    match reply {
        Reply::Clients { clients, total } => {
            let list: Vec<Value> = clients.iter().map(client_json).collect();
            (
                200,
                JSON,
                json!({ "total": total, "clients": list }).to_string(),
            )
        }
        Reply::Client(Some(c)) => (200, JSON, client_json(&c).to_string()),
        Reply::Client(None) => error(404, "no session has that client id"),
        Reply::Disconnected(Ok(())) => (200, JSON, json!({ "disconnected": true }).to_string()),
        Reply::Disconnected(Err(e @ KickError::NoSession)) => error(404, &e.to_string()),
        Reply::Disconnected(Err(e @ KickError::NotConnected)) => error(409, &e.to_string()),
    }
}

/// A session as JSON: what the issue of an operator asks first — who, from
/// where, since when, with which will.
fn client_json(c: &Client) -> Value {
    let s = &c.session;
    let identity = s.identity.as_deref();
    json!({
        "client_id": &*s.client_id,
        "connected": s.conn.is_some(),
        "address": c.address.map(|a| a.to_string()),
        "connected_since": c.connected_since.map(rfc3339),
        "protocol": s.protocol.map(|p| match p {
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        }),
        "principal": identity.map(|i| &*i.principal),
        "roles": identity.map(|i| i.grants.roles.iter().map(|r| &**r).collect::<Vec<_>>()),
        "authenticated_by": identity.map(|i| i.method.to_string()),
        "credential_expires_at": s.credential_expires_at().map(rfc3339),
        "will_topic": s.will_topic,
        "session_expiry_secs": s.expiry_secs,
        "subscriptions": s.subscriptions,
        "queued": s.queued,
    })
}

/// `2026-12-05T16:00:00.123Z`.
fn rfc3339(t: Timestamp) -> String {
    i64::try_from(t.as_millis())
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || t.as_millis().to_string(),
            |t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        )
}

fn error(status: u16, message: &str) -> Answer {
    (status, JSON, json!({ "error": message }).to_string())
}

/// Whether the request carries the token (compared in constant time).
fn authorized(request: &Request, token: &str) -> bool {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .is_some_and(|given| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                given.trim().as_bytes(),
                token.as_bytes(),
            )
            .is_ok()
        })
}

/// A query parameter, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `0x98`, `152`, or a name's code as in the 5.0 table.
fn parse_reason(s: &str) -> Option<DisconnectReasonCode> {
    let code = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16).ok()?,
        None => s.parse().ok()?,
    };
    DisconnectReasonCode::from_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_codes_of_the_disconnect_table() {
        assert_eq!(
            parse_reason("0x98"),
            Some(DisconnectReasonCode::AdministrativeAction)
        );
        assert_eq!(
            parse_reason("152"),
            Some(DisconnectReasonCode::AdministrativeAction)
        );
        assert_eq!(parse_reason("0x01"), None);
        assert_eq!(parse_reason("x"), None);
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_millisecond() {
        assert_eq!(
            rfc3339(Timestamp::from_millis(1_796_486_400_000)),
            "2026-12-05T16:00:00.000Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_millis(1_796_486_400_500)),
            "2026-12-05T16:00:00.500Z"
        );
    }

    #[test]
    fn parameters_are_percent_decoded() {
        assert_eq!(
            param("after=a%2Fb&limit=5", "after").as_deref(),
            Some("a/b")
        );
        assert_eq!(param("after=a%2Fb&limit=5", "limit").as_deref(), Some("5"));
        assert_eq!(param("limit=5", "after"), None);
    }
}
