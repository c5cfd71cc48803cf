//! CONNECT to CONNACK: authentication, the will check, the open; enhanced
//! authentication and re-authentication.

use super::*;
use crate::codec::Bytes;

impl Session {
    pub(super) fn valid_client_id(&self, id: &str) -> bool {
        id.len() <= self.config.max_client_id_len
            && (!self.config.strict_client_id || id.bytes().all(|b| b.is_ascii_alphanumeric()))
    }

    pub(super) fn on_connect(&mut self, c: Connect) {
        self.version = c.protocol;
        // Whatever the CONNECT says, what the host told is used now or never.
        let prelude = self.stage.take_prelude();
        if let Some((code, detail)) = prelude.refusal {
            self.refuse(code, &detail);
            return;
        }
        let v5 = c.protocol == ProtocolVersion::V5;
        let props = &c.properties;
        let given_id = prelude.assigned_client_id;
        let request_problem_info = props.request_problem_information.unwrap_or(true);
        let (client_id, assigned) = if c.client_id.is_empty() {
            // [MQTT-3.1.3-6]/[MQTT-3.1.3-7]: an empty id is given one; 3.1.1
            // only with Clean Session 1 [MQTT-3.1.3-8].
            if !v5 && !c.clean_start {
                self.refuse(
                    ConnectReasonCode::ClientIdentifierNotValid,
                    "empty client id without clean session",
                );
                return;
            }
            let id = given_id
                .unwrap_or_else(|| format!("testament-{:x}", prelude.opened_at.as_millis()));
            (Arc::<str>::from(id), true)
        } else {
            (Arc::<str>::from(&*c.client_id), false)
        };
        let session_expiry = if v5 {
            props.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        };
        let keep_alive = match self.config.server_keep_alive {
            Some(cap) if v5 && (c.keep_alive == 0 || c.keep_alive > cap) => cap,
            _ => c.keep_alive,
        };
        let credentials = Credentials {
            client_id: client_id.clone(),
            username: c.username.as_ref().map(ToString::to_string),
            password: c.password.as_deref().map(Bytes::copy_from_slice),
            auth_method: props
                .authentication_method
                .as_ref()
                .map(ToString::to_string),
            auth_data: props
                .authentication_data
                .as_deref()
                .map(Bytes::copy_from_slice),
            // Only the credentials need them from now on.
            peer: prelude.peer,
            certificate: prelude.certificate,
        };
        self.stage = Stage::Conn(Conn {
            assigned_client_id: assigned,
            clean_start: c.clean_start,
            keep_alive,
            keep_alive_overridden: keep_alive != c.keep_alive,
            session_expiry,
            will: c.will.as_ref().map(|w| Box::new(owned_will(w))),
            identity: None,
            client_receive_max: props.receive_maximum.map_or(u16::MAX, |r| r.get()),
            client_max_packet: props.maximum_packet_size,
            per_message: None,
            client_alias_max: props
                .topic_alias_maximum
                .unwrap_or(0)
                .min(self.config.max_outbound_topic_aliases),
            request_problem_info,
            last_packet: prelude.opened_at,
            credential_deadline: None,
            inbound_inflight: 0,
            next_packet_id: 0,
            subscriptions: types::Filters::default(),
        });
        if let Some(conn) = self.stage.conn_mut() {
            conn.per_message_mut().kept = Some(Box::new(Kept {
                credentials: credentials.clone(),
                reauth: None,
                will_recheck: None,
            }));
        }
        if !self.valid_client_id(&credentials.client_id) {
            self.refuse(
                ConnectReasonCode::ClientIdentifierNotValid,
                "client id not accepted",
            );
            return;
        }
        if let Some(will) = &c.will {
            // [MQTT-3.2.2-12], [MQTT-3.2.2-13]
            if will.qos > self.config.maximum_qos {
                self.refuse(ConnectReasonCode::QoSNotSupported, "will QoS not supported");
                return;
            }
            if will.retain && !self.config.retain_available {
                self.refuse(
                    ConnectReasonCode::RetainNotSupported,
                    "retain not supported",
                );
                return;
            }
        }
        let ticket = self.ticket();
        self.state = State::Authenticating(true);
        self.push(Action::Authenticate {
            ticket,
            credentials: Box::new(credentials),
            reauthentication: false,
        });
    }

    pub(super) fn on_auth_before_connack(&mut self, a: Auth) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        // [MQTT-4.12.0-2], [MQTT-4.12.0-5]: continue with the same method.
        if a.reason_code != AuthReasonCode::ContinueAuthentication || !same_method(conn, &a) {
            self.refuse(ConnectReasonCode::ProtocolError, "unexpected AUTH");
            return;
        }
        self.authenticate_again(a, false);
        self.state = State::Authenticating(true);
    }

    /// Asks the host to authenticate the data of a client's AUTH, with the
    /// same method as before.
    fn authenticate_again(&mut self, a: Auth, reauthentication: bool) -> Ticket {
        let ticket = self.ticket();
        let credentials = self.stage.conn_mut().and_then(|conn| {
            let kept = &mut conn.kept_mut()?.credentials;
            kept.auth_data = a.properties.authentication_data.clone();
            Some(Box::new(kept.clone()))
        });
        if let Some(credentials) = credentials {
            self.push(Action::Authenticate {
                ticket,
                credentials,
                reauthentication,
            });
        }
        ticket
    }

    /// The answer to an [`Action::Authenticate`].
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no authentication is waiting for it.
    pub fn handle_authentication(
        &mut self,
        now: Now,
        ticket: Ticket,
        outcome: AuthnOutcome,
    ) -> Result<(), SessionError> {
        if self.state == State::Authenticating(true) && self.is_last_ticket(ticket) {
            self.on_authenticated(now, outcome);
            return Ok(());
        }
        if self.state == State::Connected
            && self.stage.conn().and_then(Conn::reauth) == Some(ReauthStep::WithHost(ticket))
        {
            self.on_reauthenticated(now, outcome);
            return Ok(());
        }
        Err(SessionError::UnknownTicket(ticket))
    }

    pub(super) fn on_authenticated(&mut self, now: Now, outcome: AuthnOutcome) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        match outcome {
            AuthnOutcome::Failure(failure) => {
                let record = AuditRecord::AuthenticationFailed {
                    at: now.wall,
                    client_id: conn.client_id_string(),
                    username: conn.username(),
                    failure: Box::new(failure.clone()),
                };
                self.audit(record);
                self.refuse(failure.reason_code(), &failure.to_string());
            }
            AuthnOutcome::Continue(data) => {
                let mut auth = Auth::new(AuthReasonCode::ContinueAuthentication);
                auth.properties.authentication_method = conn
                    .auth_method()
                    .and_then(|m| MqttString::try_from(m).ok());
                auth.properties.authentication_data = Some(data);
                if self.version == ProtocolVersion::V5 && conn.auth_method().is_some() {
                    // The client's next AUTH opens a new request.
                    self.state = State::Authenticating(false);
                    self.send(&Packet::Auth(auth));
                } else {
                    // [MQTT-4.12.0-6]: no AUTH to a client that did not ask for it.
                    self.refuse(
                        ConnectReasonCode::BadAuthenticationMethod,
                        "authentication needs more rounds",
                    );
                }
            }
            AuthnOutcome::Success(identity) => {
                let identity = conn.set_identity(now, identity, self.config.credential_leeway);
                // The token did its work; a re-authentication brings its
                // own (AUTH 0x19). Nothing keeps a credential longer.
                // Without an Authentication Method there is no
                // re-authentication to reuse them for.
                match conn.kept_mut() {
                    Some(kept) if kept.credentials.auth_method.is_some() => {
                        kept.credentials.password = None;
                        kept.credentials.auth_data = None;
                    }
                    _ => conn.drop_kept(),
                }
                self.audit(AuditRecord::authenticated(identity));
                match self.will_query() {
                    Some(query) if self.config.check_will_at_connect => {
                        let ticket = self.ticket();
                        self.state = State::CheckingWill;
                        match self.decide_now(&query) {
                            Some(decision) => self.on_will_checked(now, decision),
                            None => self.push(Action::Authorize { ticket, query }),
                        }
                    }
                    _ => self.open(),
                }
            }
        }
    }

    pub(super) fn open(&mut self) {
        let ticket = self.ticket();
        let Some(conn) = self.stage.conn() else {
            return;
        };
        let Some(identity) = conn.identity.clone() else {
            return;
        };
        let action = Action::Open {
            ticket,
            client_id: identity.client_id.clone(),
            clean_start: conn.clean_start,
            session_expiry_interval: conn.session_expiry,
            identity,
        };
        self.state = State::Opening;
        self.push(action);
    }

    /// The answer to an [`Action::Open`]: whether a stored session was
    /// resumed. The CONNACK goes out.
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no open is waiting for it.
    pub fn handle_open(
        &mut self,
        now: Now,
        ticket: Ticket,
        session_present: bool,
    ) -> Result<(), SessionError> {
        self.open_with(now, ticket, session_present, None)
    }

    /// The answer to an [`Action::Open`] that resumed a stored session:
    /// Session Present, then the unacknowledged messages again with their
    /// original packet ids [MQTT-4.4.0-1].
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no open is waiting for it.
    pub fn handle_resume(
        &mut self,
        now: Now,
        ticket: Ticket,
        inflight: Inflight,
    ) -> Result<(), SessionError> {
        self.open_with(now, ticket, true, Some(inflight))
    }

    /// Refuses an [`Action::Open`]: the CONNACK carries `code` (3.1.1: its
    /// nearest return code) and the connection closes. The hub uses it when
    /// it cannot hold another session. (`now`, first as for every input,
    /// decides nothing here.)
    ///
    /// # Errors
    /// [`SessionError::UnknownTicket`] when no open is waiting for it.
    pub fn handle_open_refused(
        &mut self,
        _now: Now,
        ticket: Ticket,
        code: ConnectReasonCode,
        detail: &str,
    ) -> Result<(), SessionError> {
        if self.state != State::Opening || !self.is_last_ticket(ticket) {
            return Err(SessionError::UnknownTicket(ticket));
        }
        self.refuse(code, detail);
        Ok(())
    }

    fn open_with(
        &mut self,
        now: Now,
        ticket: Ticket,
        session_present: bool,
        inflight: Option<Inflight>,
    ) -> Result<(), SessionError> {
        if self.state != State::Opening || !self.is_last_ticket(ticket) {
            return Err(SessionError::UnknownTicket(ticket));
        }
        let config = &self.config;
        let Some(conn) = self.stage.conn_mut() else {
            return Err(SessionError::UnknownTicket(ticket));
        };
        let mut ack = ConnAck::new(session_present, ConnectReasonCode::Success);
        if self.version == ProtocolVersion::V5 {
            let p = &mut ack.properties;
            if config.receive_maximum != u16::MAX {
                p.receive_maximum = std::num::NonZeroU16::new(config.receive_maximum);
            }
            if config.maximum_qos != QoS::ExactlyOnce {
                p.maximum_qos = Some(config.maximum_qos);
            }
            if !config.retain_available {
                p.retain_available = Some(false);
            }
            p.maximum_packet_size = std::num::NonZeroU32::new(config.max_packet_size);
            if conn.assigned_client_id {
                p.assigned_client_identifier = conn
                    .client_id()
                    .and_then(|id| MqttString::try_from(&**id).ok());
            }
            if config.topic_alias_maximum > 0 {
                p.topic_alias_maximum = Some(config.topic_alias_maximum);
            }
            if !config.wildcard_subscriptions {
                p.wildcard_subscription_available = Some(false);
            }
            if !config.subscription_identifiers {
                p.subscription_identifiers_available = Some(false);
            }
            if !config.shared_subscriptions {
                p.shared_subscription_available = Some(false);
            }
            // [MQTT-3.2.2-21]: Server Keep Alive replaces the client's value.
            p.server_keep_alive = conn.keep_alive_overridden.then_some(conn.keep_alive);
            if let Some(method) = conn.auth_method() {
                p.authentication_method = MqttString::try_from(method).ok();
            }
        }
        conn.last_packet = now.mono;
        self.state = State::Connected;
        // Kept before the CONNACK that says the broker took it.
        self.arm_will();
        self.send(&Packet::ConnAck(ack));
        if let Some(inflight) = inflight {
            self.redeliver(inflight);
        }
        // Packets the client sent behind its CONNECT waited for the CONNACK
        // [MQTT-3.1.4-6]; their turn has come.
        self.handle_bytes(now, &[]);
        Ok(())
    }

    /// The will, re-checked after a re-authentication: denied, it is deleted
    /// and the connection closed with 0x87.
    pub(super) fn on_will_rechecked(&mut self, now: Now, query: AuthzQuery, decision: Decision) {
        let allowed = decision.is_allowed();
        let identity = query.identity.clone();
        self.audit(AuditRecord::authorization(
            now.wall,
            query,
            decision.clone(),
        ));
        if allowed {
            return;
        }
        if let Some(conn) = self.stage.conn_mut()
            && let Some(will) = conn.will.take()
        {
            let outcome = WillOutcome::Denied { decision };
            self.audit(AuditRecord::will(now.wall, &identity, &will, None, outcome));
            self.will_deleted();
        }
        self.fail(
            now,
            DisconnectReasonCode::NotAuthorized,
            "will no longer authorized after re-authentication",
            WillTrigger::ServerClosed,
        );
    }

    pub(super) fn on_will_checked(&mut self, now: Now, decision: Decision) {
        let Some(query) = self.will_query() else {
            return;
        };
        let allowed = decision.is_allowed();
        self.audit(AuditRecord::authorization(now.wall, query, decision));
        if allowed {
            self.open();
        } else {
            // Denied at CONNECT: refused with 0x87 (3.1.1: 0x05), no will.
            self.refuse(
                ConnectReasonCode::NotAuthorized,
                "will topic not authorized",
            );
        }
    }

    pub(super) fn on_auth_connected(&mut self, now: Now, a: Auth) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        // [MQTT-4.12.0-7]: no AUTH from a client that connected without a
        // method; [MQTT-4.12.1-1]: re-authenticate with the same method.
        let allowed = same_method(conn, &a)
            && match a.reason_code {
                AuthReasonCode::ReAuthenticate => conn.reauth().is_none(),
                AuthReasonCode::ContinueAuthentication => {
                    conn.reauth() == Some(ReauthStep::WithClient)
                }
                AuthReasonCode::Success => false,
            };
        if !allowed {
            self.protocol_error(now, "unexpected AUTH");
            return;
        }
        let ticket = self.authenticate_again(a, true);
        if let Some(conn) = self.stage.conn_mut() {
            conn.set_reauth(Some(ReauthStep::WithHost(ticket)));
        }
    }

    pub(super) fn on_reauthenticated(&mut self, now: Now, outcome: AuthnOutcome) {
        let Some(conn) = self.stage.conn_mut() else {
            return;
        };
        let method = conn
            .auth_method()
            .and_then(|m| MqttString::try_from(m).ok());
        match outcome {
            AuthnOutcome::Success(identity)
                if conn
                    .identity
                    .as_ref()
                    .is_some_and(|old| old.principal == identity.principal) =>
            {
                conn.set_reauth(None);
                let identity = conn.set_identity(now, identity, self.config.credential_leeway);
                self.audit(AuditRecord::authenticated(identity.clone()));
                self.push(Action::IdentityChanged(identity));
                self.arm_will();
                let mut ok = Auth::new(AuthReasonCode::Success);
                ok.properties.authentication_method = method;
                self.send(&Packet::Auth(ok));
                if self.config.recheck_will_on_reauth
                    && let Some(query) = self.will_query()
                {
                    match self.decide_now(&query) {
                        Some(decision) => self.on_will_rechecked(now, query, decision),
                        None => {
                            let ticket = self.ticket();
                            if let Some(kept) = self.stage.conn_mut().and_then(Conn::kept_mut) {
                                kept.will_recheck = Some((ticket, query.clone()));
                            }
                            self.push(Action::Authorize { ticket, query });
                        }
                    }
                }
            }
            AuthnOutcome::Continue(data) => {
                let mut more = Auth::new(AuthReasonCode::ContinueAuthentication);
                more.properties.authentication_method = method;
                more.properties.authentication_data = Some(data);
                // The client's next AUTH opens a new request.
                conn.set_reauth(Some(ReauthStep::WithClient));
                self.send(&Packet::Auth(more));
            }
            failed => {
                conn.set_reauth(None);
                let failure = match failed {
                    AuthnOutcome::Failure(f) => f,
                    _ => crate::auth::AuthnError::PrincipalMismatch {
                        username: conn
                            .identity
                            .as_ref()
                            .map(|i| i.principal.to_string())
                            .unwrap_or_default(),
                        principal: "another principal".into(),
                    }
                    .into(),
                };
                let record = AuditRecord::AuthenticationFailed {
                    at: now.wall,
                    client_id: conn.client_id_string(),
                    username: conn.username(),
                    failure: Box::new(failure),
                };
                self.audit(record);
                // [MQTT-4.12.1-2]
                self.fail(
                    now,
                    DisconnectReasonCode::NotAuthorized,
                    "re-authentication failed",
                    WillTrigger::ReauthenticationFailed,
                );
            }
        }
    }
}

/// Whether an AUTH names the Authentication Method the client connected
/// with (none at CONNECT means no AUTH is acceptable).
fn same_method(conn: &Conn, a: &Auth) -> bool {
    match (conn.auth_method(), &a.properties.authentication_method) {
        (Some(connected), Some(named)) => connected == named.as_str(),
        _ => false,
    }
}

/// A copy of the will in allocations of its own: what a session keeps for
/// its whole life must not pin the read buffer its CONNECT arrived in.
fn owned_will(w: &LastWill) -> LastWill {
    LastWill {
        topic: w.topic.detached(),
        payload: Bytes::copy_from_slice(&w.payload),
        qos: w.qos,
        retain: w.retain,
        properties: w.properties.detached(),
    }
}
