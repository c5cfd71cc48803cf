//! Record and replay: every input the hub receives, with its time, as one
//! JSON line; replayed through a fresh hub offline, the same inputs give the
//! same decisions — an operator can see after the fact exactly why a will
//! was delivered or denied.

use std::io::{BufRead, Write};
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::auth::{Acl, AuditRecord, Decision};
use crate::broker::{
    Action, Broker, BrokerConfig, ConnId, Restored, RetainedMessage, SessionRecord, StoredMessage,
    Ticket, WillKey, WillRecord,
};
use crate::codec::PacketId;
use crate::session::{AuthnOutcome, TransportClosed};
use crate::time::Now;

/// One recorded input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Entry {
    /// The hub's configuration and the ACL in force at the start (`None`:
    /// every authorization was answered through the policy and recorded).
    Start {
        /// When, on both clocks.
        t: Now,
        /// The hub's configuration.
        broker: BrokerConfig,
        /// The ACL, as its rules.
        acl: Option<Acl>,
    },
    /// A connection was opened.
    Open {
        /// When, on both clocks.
        t: Now,
        /// The id the hub gave it.
        conn: ConnId,
        /// The peer.
        peer: String,
        /// The client certificate its transport verified.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate: Option<crate::auth::ClientCertificate>,
        /// Refused by a connection limit, and which.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// Bytes arrived (base64).
    Bytes {
        /// When, on both clocks.
        t: Now,
        /// Where.
        conn: ConnId,
        /// What, base64.
        data: String,
    },
    /// A transport ended.
    Closed {
        /// When, on both clocks.
        t: Now,
        /// Which.
        conn: ConnId,
        /// How.
        how: TransportClosed,
    },
    /// A client did not read and was dropped.
    Unresponsive {
        /// When, on both clocks.
        t: Now,
        /// Which.
        conn: ConnId,
    },
    /// An authentication answer.
    Authenticated {
        /// When, on both clocks.
        t: Now,
        /// For what.
        ticket: Ticket,
        /// The answer.
        outcome: Box<AuthnOutcome>,
    },
    /// An authorization answer.
    Authorized {
        /// When, on both clocks.
        t: Now,
        /// For what.
        ticket: Ticket,
        /// The answer.
        decision: Decision,
    },
    /// Deadlines were acted on.
    Timeout {
        /// When, on both clocks.
        t: Now,
    },
    /// The ACL was replaced (a reload).
    Acl {
        /// When, on both clocks.
        t: Now,
        /// The new ACL, as its rules (`None`: no synchronous ACL).
        acl: Option<Acl>,
    },
    /// What the store kept from before a restart was handed back.
    Restore {
        /// When, on both clocks.
        t: Now,
        /// The retained messages, each a stored record, base64.
        retained: Vec<String>,
        /// The persistent sessions, each a stored record, base64.
        #[serde(default)]
        sessions: Vec<String>,
        /// The messages kept for them, each a [`StoredMessage::encode`]
        /// record, base64.
        #[serde(default)]
        messages: Vec<String>,
        /// Their inbound QoS 2 packet ids waiting for PUBREL.
        #[serde(default)]
        awaiting_release: Vec<(String, u16)>,
        /// The wills: epoch, connection, and the [`WillRecord::encode`]
        /// record, base64.
        #[serde(default)]
        wills: Vec<(u64, u64, String)>,
    },
    /// The store ran out of space (`available: false`: QoS 1/2 publishes
    /// are refused) or has room again.
    Storage {
        /// When, on both clocks.
        t: Now,
        /// Whether commits succeed.
        available: bool,
    },
    /// The driver published a `$SYS/…` message ([`Broker::publish_system`]).
    System {
        /// When, on both clocks.
        t: Now,
        /// The topic.
        topic: String,
        /// The payload, text.
        payload: String,
    },
    /// An operator disconnected a client ([`Broker::kick`]).
    Kick {
        /// When, on both clocks.
        t: Now,
        /// Whose.
        client_id: String,
        /// The DISCONNECT reason code.
        reason: u8,
        /// Whether its will followed.
        will: bool,
        /// Who asked.
        by: String,
    },
    /// The broker shut down.
    Shutdown {
        /// When, on both clocks.
        t: Now,
    },
}

/// Writes entries as JSON lines.
pub struct Recorder {
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Recorder {
    /// Records to `out`, starting with the hub's configuration and the ACL
    /// in force.
    pub fn new(
        out: Box<dyn Write + Send>,
        now: Now,
        broker: &BrokerConfig,
        acl: Option<&Acl>,
    ) -> Self {
        let mut r = Self { out };
        r.write(&Entry::Start {
            t: now,
            broker: broker.clone(),
            acl: acl.cloned(),
        });
        r
    }

    /// Records what a store handed back at start ([`Broker::restore_all`]).
    pub fn restore(&mut self, now: Now, restored: &Restored) {
        let records = |encoded: Vec<Vec<u8>>| encoded.iter().map(|r| encode_bytes(r)).collect();
        self.write(&Entry::Restore {
            t: now,
            retained: records(
                restored
                    .retained
                    .iter()
                    .map(RetainedMessage::encode)
                    .collect(),
            ),
            sessions: records(
                restored
                    .sessions
                    .iter()
                    .map(SessionRecord::encode)
                    .collect(),
            ),
            messages: records(
                restored
                    .messages
                    .iter()
                    .map(StoredMessage::encode)
                    .collect(),
            ),
            awaiting_release: restored
                .awaiting_release
                .iter()
                .map(|(id, packet_id)| (id.to_string(), packet_id.get()))
                .collect(),
            wills: restored
                .wills
                .iter()
                .map(|w| (w.key.epoch, w.key.conn, encode_bytes(&w.encode())))
                .collect(),
        });
    }

    /// Appends one entry; an I/O error is logged, never fatal to the broker.
    pub fn write(&mut self, entry: &Entry) {
        let line = serde_json::to_string(entry).unwrap_or_default();
        if let Err(e) = writeln!(self.out, "{line}") {
            log::error!("recording failed: {e}");
        }
    }

    /// Pushes what was written to the file.
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// Encodes bytes for an [`Entry::Bytes`].
pub fn encode_bytes(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Stored records of a restore entry, read back.
fn decode_records<T, E: std::fmt::Display>(
    records: &[String],
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> Result<Vec<T>, String> {
    records
        .iter()
        .map(|r| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(r)
                .map_err(|e| e.to_string())?;
            decode(&bytes).map_err(|e| e.to_string())
        })
        .collect()
}

/// Why a recording cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A line is not an entry.
    #[error("line {line}: {problem}")]
    Entry {
        /// 1-based.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The recording does not start with its configuration.
    #[error("the recording does not start with a `start` entry")]
    NoStart,
    /// The hub gave a connection another id than the recording says: the
    /// recording is not from this version of testament.
    #[error("line {line}: the hub opened {got:?} where the recording has {want:?}")]
    Diverged {
        /// 1-based.
        line: usize,
        /// Recorded.
        want: ConnId,
        /// Replayed.
        got: ConnId,
    },
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs a recording through a fresh hub and returns the audit records it
/// produces, in order.
///
/// # Errors
/// [`ReplayError`] for a recording that cannot be read or does not match.
pub fn replay(input: impl BufRead) -> Result<Vec<AuditRecord>, ReplayError> {
    let mut hub: Option<Broker> = None;
    let mut audits = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line).map_err(|e| ReplayError::Entry {
            line: line_no,
            problem: e.to_string(),
        })?;
        if let Entry::Start { broker, acl, .. } = entry {
            let mut h = Broker::new(broker);
            h.set_authorizer(acl.map(|a| Arc::new(a) as _));
            hub = Some(h);
            continue;
        }
        let h = hub.as_mut().ok_or(ReplayError::NoStart)?;
        match entry {
            Entry::Start { .. } => {}
            Entry::Open {
                t,
                conn,
                peer,
                certificate,
                refused,
            } => {
                let got = match refused {
                    Some(detail) => h.open_refusing(
                        t,
                        Some(peer),
                        crate::codec::ConnectReasonCode::QuotaExceeded,
                        &detail,
                    ),
                    None => h.open_tls(t, Some(peer), certificate),
                };
                if got != conn {
                    return Err(ReplayError::Diverged {
                        line: line_no,
                        want: conn,
                        got,
                    });
                }
            }
            Entry::Bytes { t, conn, data } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| ReplayError::Entry {
                        line: line_no,
                        problem: e.to_string(),
                    })?;
                h.handle_bytes(t, conn, &bytes);
            }
            Entry::Closed { t, conn, how } => h.handle_closed(t, conn, how),
            Entry::Unresponsive { t, conn } => h.handle_unresponsive(t, conn),
            Entry::Authenticated { t, ticket, outcome } => {
                let _ = h.handle_authentication(t, ticket, *outcome);
            }
            Entry::Authorized {
                t,
                ticket,
                decision,
            } => {
                let _ = h.handle_authorization(t, ticket, decision);
            }
            Entry::Timeout { t } => h.handle_timeout(t),
            Entry::Acl { t, acl } => {
                h.set_authorizer(acl.map(|a| Arc::new(a) as _));
                h.reauthorize_subscriptions(t);
            }
            Entry::Shutdown { t } => h.handle_shutdown(t),
            Entry::Kick {
                t,
                client_id,
                reason,
                will,
                by,
            } => {
                let reason = crate::codec::DisconnectReasonCode::from_code(reason).ok_or(
                    ReplayError::Entry {
                        line: line_no,
                        problem: format!("0x{reason:02X} is not a DISCONNECT reason code"),
                    },
                )?;
                // What came of it is in the replayed audit records.
                let _ = h.kick(t, &client_id, reason, will, &by);
            }
            Entry::System { t, topic, payload } => {
                let topic =
                    crate::codec::TopicName::try_from(topic).map_err(|e| ReplayError::Entry {
                        line: line_no,
                        problem: e.to_string(),
                    })?;
                h.publish_system(t, topic, payload.into());
            }
            Entry::Storage { available, .. } => h.set_storage_available(available),
            Entry::Restore {
                t,
                retained,
                sessions,
                messages,
                awaiting_release,
                wills,
            } => {
                let bad = |problem: String| ReplayError::Entry {
                    line: line_no,
                    problem,
                };
                let awaiting_release = awaiting_release
                    .into_iter()
                    .map(|(id, p)| match PacketId::new(p) {
                        Some(p) => Ok((Arc::from(id), p)),
                        None => Err(bad("packet id 0".into())),
                    })
                    .collect::<Result<_, _>>()?;
                let restored = Restored {
                    retained: decode_records(&retained, RetainedMessage::decode).map_err(bad)?,
                    sessions: decode_records(&sessions, SessionRecord::decode).map_err(bad)?,
                    messages: decode_records(&messages, StoredMessage::decode).map_err(bad)?,
                    awaiting_release,
                    wills: wills
                        .into_iter()
                        .map(|(epoch, conn, record)| {
                            let key = WillKey { epoch, conn };
                            decode_records(&[record], |b| WillRecord::decode(key, b))
                                .map_err(bad)?
                                .pop()
                                .ok_or_else(|| bad("no will".into()))
                        })
                        .collect::<Result<_, _>>()?,
                };
                h.restore_all(t, restored);
            }
        }
        while let Some(action) = h.poll_action() {
            if let Action::Audit(record) = action {
                audits.push(record);
            }
        }
    }
    Ok(audits)
}
