//! Embedding the hub in your own loop: one thread, non-blocking std sockets,
//! the built-in ACL, and an authentication rule of your own (here: the
//! password must be `let-me-in`). No driver, no async: the hub is a value
//! you feed and drain.
//!
//! ```sh
//! cargo run --example embed_blocking          # listens on 127.0.0.1:1885
//! mosquitto_sub -p 1885 -u alice -P let-me-in -t 'clients/alice/#' -v
//! ```

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use testament::auth::{AuthMethod, AuthnError, Identity};
use testament::broker::{Action, Broker, BrokerConfig, ConnId};
use testament::config::default_acl;
use testament::driver::{Clock, SystemClock};
use testament::session::{AuthnOutcome, TransportClosed};

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:1885")?;
    listener.set_nonblocking(true)?;
    let mut hub = Broker::new(BrokerConfig::default());
    hub.set_authorizer(Some(Arc::new(default_acl())));
    let mut sockets: BTreeMap<ConnId, TcpStream> = BTreeMap::new();
    let mut buf = vec![0u8; 16 * 1024];
    // Timers run on its monotonic clock; tokens are judged by its wall clock.
    let clock = SystemClock::new();
    loop {
        let now = clock.now();
        let mut busy = false;
        while let Ok((stream, peer)) = listener.accept() {
            stream.set_nonblocking(true)?;
            let conn = hub.open(now, Some(peer.to_string()));
            sockets.insert(conn, stream);
            busy = true;
        }
        let ids: Vec<ConnId> = sockets.keys().copied().collect();
        for conn in ids {
            let Some(stream) = sockets.get_mut(&conn) else {
                continue;
            };
            match stream.read(&mut buf) {
                Ok(0) => hub.handle_closed(now, conn, TransportClosed::PeerClosed),
                Ok(n) => hub.handle_bytes(now, conn, &buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(_) => hub.handle_closed(now, conn, TransportClosed::Error),
            }
            busy = true;
        }
        if hub.poll_timeout().is_some_and(|t| t <= now.mono) {
            hub.handle_timeout(now);
        }
        while let Some(action) = hub.poll_action() {
            match action {
                Action::Send { conn, bytes } => {
                    // A real program would buffer what does not fit now;
                    // this one writes in blocking mode for simplicity.
                    if let Some(s) = sockets.get_mut(&conn) {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(&bytes);
                        let _ = s.set_nonblocking(true);
                    }
                }
                Action::Close { conn, .. } => {
                    sockets.remove(&conn);
                }
                Action::Authenticate {
                    ticket,
                    credentials,
                    ..
                } => {
                    let ok = credentials.password.as_deref() == Some(&b"let-me-in"[..]);
                    let outcome = match (&credentials.username, ok) {
                        (Some(user), true) => AuthnOutcome::Success(Identity {
                            principal: user.as_str().into(),
                            client_id: credentials.client_id.clone(),
                            grants: testament::auth::Grants::none(),
                            expires_at: None,
                            method: AuthMethod::Password,
                            authenticated_at: now.wall,
                            token_digest: None,
                        }),
                        _ => AuthnOutcome::Failure(AuthnError::WrongPassword.into()),
                    };
                    let _ = hub.handle_authentication(now, ticket, outcome);
                }
                // The ACL answers on the spot; nothing is left to ask.
                Action::Authorize { .. } => {}
                Action::Audit(record) => println!("{record}"),
                // This hub is not durable (`BrokerConfig::durable`): nothing
                // to keep.
                Action::Persist(_) => {}
                // One thread reads every socket in turn: a publisher is not
                // singled out (a slow subscriber's queue is bounded anyway).
                Action::PauseReading(_) | Action::ResumeReading(_) => {}
            }
        }
        // Forget sockets the hub let go of (closed by the peer).
        sockets.retain(|conn, _| hub.is_open(*conn));
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
