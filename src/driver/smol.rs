//! The smol driver: one task owns the hub; each connection has a reader task
//! (socket → hub events, bounded so a fast sender waits) and a writer task
//! (hub output → socket, everything queued written in one go). TLS
//! handshakes run in their own tasks, before the hub hears of the
//! connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use smol::channel::{self, Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use smol::net::{TcpListener, TcpStream};
use smol::{Task, Timer};

use super::runner::{Event, Io, Runner};
use super::tls::{Tls, client_certificate};
use super::{Answer, Control, DriverConfig, Policy, Recorder, admit, instant_of, now};
use crate::auth::{ClientCertificate, Decision};
use crate::broker::{Broker, ConnId, Ticket};
use crate::codec::{Bytes, BytesMut};
use crate::session::{AuthnOutcome, TransportClosed};

/// A listening socket, plain or TLS.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub tcp: TcpListener,
    /// Its TLS configuration; `None`: plain TCP.
    pub tls: Option<Tls>,
}

impl Listener {
    /// A plain TCP listener.
    pub fn plain(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

struct Accepted {
    stream: Box<dyn Stream>,
    tcp: TcpStream,
    peer: String,
    certificate: Option<ClientCertificate>,
}

struct Connection {
    output: Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    tcp: TcpStream,
    _reader: Task<()>,
}

struct SmolIo {
    conns: BTreeMap<ConnId, Connection>,
    events: Sender<Event>,
    max_output: usize,
}

impl Io for SmolIo {
    fn write(&mut self, conn: ConnId, bytes: Bytes) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return true;
        };
        if !admit(&c.queued, bytes.len(), self.max_output) {
            return false;
        }
        // Unbounded in messages, bounded in bytes by `queued`.
        let _ = c.output.try_send(bytes);
        true
    }

    fn close(&mut self, conn: ConnId) {
        // Dropping the sender lets the writer finish and close the stream;
        // dropping the reader task cancels it.
        self.conns.remove(&conn);
    }

    fn abort(&mut self, conn: ConnId) {
        // The writer may be stuck on a client that does not read: cut the
        // socket under it.
        if let Some(c) = self.conns.remove(&conn) {
            let _ = c.tcp.shutdown(std::net::Shutdown::Both);
        }
    }

    fn spawn_authentication(&mut self, ticket: Ticket, answer: Answer<AuthnOutcome>) {
        let events = self.events.clone();
        smol::spawn(async move {
            let outcome = answer.await;
            let _ = events
                .send(Event::Authenticated(ticket, Box::new(outcome)))
                .await;
        })
        .detach();
    }

    fn spawn_authorization(&mut self, ticket: Ticket, answer: Answer<Decision>) {
        let events = self.events.clone();
        smol::spawn(async move {
            let decision: Decision = answer.await;
            let _ = events.send(Event::Authorized(ticket, decision)).await;
        })
        .detach();
    }
}

async fn read_loop(
    conn: ConnId,
    mut stream: impl AsyncRead + Unpin,
    events: Sender<Event>,
    size: usize,
) {
    // An idle connection waits with a small buffer; a read that fills it
    // doubles it up to `size`, and a short one brings it back down.
    const SMALL: usize = 256;
    let mut buf = vec![0u8; SMALL.min(size)];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                let _ = events
                    .send(Event::Closed(conn, TransportClosed::PeerClosed))
                    .await;
                return;
            }
            Ok(n) => {
                let data = buf[..n].to_vec();
                if n == buf.len() && buf.len() < size {
                    buf = vec![0u8; (buf.len() * 2).min(size)];
                } else if n < SMALL && buf.len() > SMALL {
                    buf = vec![0u8; SMALL];
                }
                if events.send(Event::Bytes(conn, data)).await.is_err() {
                    return;
                }
            }
            Err(_) => {
                let _ = events
                    .send(Event::Closed(conn, TransportClosed::Error))
                    .await;
                return;
            }
        }
    }
}

async fn write_loop(
    mut stream: impl AsyncWrite + Unpin,
    output: Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
) {
    let mut batch = BytesMut::new();
    while let Ok(first) = output.recv().await {
        batch.extend_from_slice(&first);
        while let Ok(more) = output.try_recv() {
            batch.extend_from_slice(&more);
        }
        let n = batch.len();
        if stream.write_all(&batch).await.is_err() {
            break;
        }
        batch.clear();
        queued.fetch_sub(n, Ordering::AcqRel);
    }
    let _ = stream.flush().await;
    // A TLS stream sends close_notify; a TCP stream shuts its write side.
    let _ = stream.close().await;
}

enum Wake {
    Accepted(Accepted),
    Event(Event),
    Control(Control),
    Tick,
}

/// Serves MQTT on `listeners` until [`Control::Shutdown`] arrives on
/// `control` (or every sender of it is dropped).
///
/// # Errors
/// None yet: a failing accept is logged and retried.
pub async fn serve(
    listeners: Vec<Listener>,
    hub: Broker,
    policy: Arc<dyn Policy>,
    config: DriverConfig,
    recorder: Option<Recorder>,
    control: Receiver<Control>,
) -> std::io::Result<()> {
    let (events, incoming) = channel::bounded::<Event>(1024);
    let mut io = SmolIo {
        conns: BTreeMap::new(),
        events: events.clone(),
        max_output: config.max_output_bytes,
    };
    let mut runner = Runner::new(hub, policy, recorder, &config);
    let tls_configs: Vec<Tls> = listeners.iter().filter_map(|l| l.tls.clone()).collect();
    let (accepted_tx, accepted) = channel::bounded(64);
    let _acceptors: Vec<Task<()>> = listeners
        .into_iter()
        .map(|l| smol::spawn(accept_loop(l, accepted_tx.clone())))
        .collect();
    loop {
        let deadline = runner.hub.poll_timeout();
        let accept = async {
            match accepted.recv().await {
                Ok(r) => Wake::Accepted(r),
                Err(_) => std::future::pending().await,
            }
        };
        let event = async {
            match incoming.recv().await {
                Ok(e) => Wake::Event(e),
                Err(_) => Wake::Control(Control::Shutdown),
            }
        };
        let control = async {
            match control.recv().await {
                Ok(c) => Wake::Control(c),
                Err(_) => Wake::Control(Control::Shutdown),
            }
        };
        let timer = async {
            match deadline {
                Some(at) => {
                    Timer::at(instant_of(at)).await;
                    Wake::Tick
                }
                None => std::future::pending().await,
            }
        };
        let wake = control.or(event).or(timer).or(accept).await;
        let now = now();
        match wake {
            Wake::Accepted(a) => {
                let conn = runner.open(now, a.peer, a.certificate, &mut io);
                let (output, pending) = channel::unbounded();
                let queued = Arc::new(AtomicUsize::new(0));
                let (reader, writer) = smol::io::split(a.stream);
                smol::spawn(write_loop(writer, pending, queued.clone())).detach();
                let reader =
                    smol::spawn(read_loop(conn, reader, events.clone(), config.read_buffer));
                io.conns.insert(
                    conn,
                    Connection {
                        output,
                        queued,
                        tcp: a.tcp,
                        _reader: reader,
                    },
                );
                if !runner.hub.is_open(conn) {
                    io.close(conn);
                }
            }
            Wake::Event(e) => runner.handle(now, e, &mut io),
            Wake::Tick => runner.timeout(now, &mut io),
            Wake::Control(Control::Reload) => {
                log::info!("reloading the key set and the ACL");
                runner.reload(now);
                for tls in &tls_configs {
                    if let Err(e) = tls.reload() {
                        log::error!("TLS reload refused, the old certificate stays: {e}");
                    }
                }
            }
            Wake::Control(Control::Shutdown) => {
                log::info!("shutting down");
                runner.shutdown(now, &mut io);
                // Let the writers flush the DISCONNECTs.
                io.conns.clear();
                Timer::after(std::time::Duration::from_millis(100)).await;
                return Ok(());
            }
        }
    }
}

/// Accepts connections; TLS ones are handed on only once their handshake is
/// done, each in its own task so a slow handshake holds up nobody.
async fn accept_loop(l: Listener, accepted: Sender<Accepted>) {
    loop {
        let (tcp, peer) = match l.tcp.accept().await {
            Ok(a) => a,
            Err(e) => {
                log::warn!("accept failed: {e}");
                // A listener that keeps failing (no more descriptors)
                // should not spin.
                Timer::after(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let peer = peer.to_string();
        match &l.tls {
            None => {
                let a = Accepted {
                    stream: Box::new(tcp.clone()),
                    tcp,
                    peer,
                    certificate: None,
                };
                if accepted.send(a).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let acceptor = futures_rustls::TlsAcceptor::from(tls.config());
                let accepted = accepted.clone();
                smol::spawn(async move {
                    let handshake = acceptor.accept(tcp.clone());
                    let timeout = async {
                        Timer::after(std::time::Duration::from_secs(10)).await;
                        Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
                    };
                    match handshake.or(timeout).await {
                        Ok(stream) => {
                            let certificate =
                                client_certificate(stream.get_ref().1.peer_certificates());
                            let a = Accepted {
                                stream: Box::new(stream),
                                tcp,
                                peer,
                                certificate,
                            };
                            let _ = accepted.send(a).await;
                        }
                        Err(e) => log::info!("TLS handshake with {peer} failed: {e}"),
                    }
                })
                .detach();
            }
        }
    }
}
