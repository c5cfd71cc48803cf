//! An operator's requests to a running broker ([`super::Control::Admin`]):
//! list the sessions, show one, disconnect a client. The driver answers
//! them between turns, from the hub's state; a disconnection is recorded
//! and replayed like any input, and every request is audited.

use std::net::IpAddr;
use std::sync::mpsc::SyncSender;

use crate::broker::{KickError, SessionInfo};
use crate::codec::DisconnectReasonCode;
use crate::time::Timestamp;

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The sessions in client-id order: `limit` of them, after `after`.
    Clients {
        /// The last client id of the previous page.
        after: Option<String>,
        /// How many, at most (capped at [`MAX_PAGE`]).
        limit: usize,
    },
    /// One session.
    Client(String),
    /// Disconnect a client (5.0: DISCONNECT `reason`), with its will or
    /// without.
    Disconnect {
        /// Whose.
        client_id: String,
        /// The reason code the client reads.
        reason: DisconnectReasonCode,
        /// Whether its will follows.
        will: bool,
    },
}

/// The most sessions one page lists.
pub const MAX_PAGE: usize = 10_000;

/// A request and where its answer goes.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request.
    pub request: Request,
    /// Who asks, for the audit record (the API's peer).
    pub by: String,
    /// Where the answer goes.
    pub reply: SyncSender<Reply>,
}

/// The driver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A page of sessions, and how many there are in all.
    Clients {
        /// The page.
        clients: Vec<Client>,
        /// Sessions in all.
        total: usize,
    },
    /// One session, if there is one by that id.
    Client(Option<Client>),
    /// What came of a disconnection.
    Disconnected(Result<(), KickError>),
}

/// A session as the operator sees it: what the hub holds, and where its
/// client connected from and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The hub's view.
    pub session: SessionInfo,
    /// The client's address, while connected.
    pub address: Option<IpAddr>,
    /// When its connection opened, while connected.
    pub connected_since: Option<Timestamp>,
}
