//! The smol driver: one task owns the hub; each connection has a reader task
//! (socket → hub events, bounded so a fast sender waits) and a writer task
//! (hub output → socket, everything queued written in one go).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use smol::channel::{self, Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::{TcpListener, TcpStream};
use smol::{Task, Timer};

use super::runner::{Event, Io, Runner};
use super::{Answer, Control, DriverConfig, Policy, Recorder, instant_of, now};
use crate::auth::Decision;
use crate::broker::{Broker, ConnId, Ticket};
use crate::codec::{Bytes, BytesMut};
use crate::session::{AuthnOutcome, TransportClosed};

struct Connection {
    output: Sender<Bytes>,
    queued: Arc<AtomicUsize>,
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
        let queued = c.queued.fetch_add(bytes.len(), Ordering::AcqRel) + bytes.len();
        if queued > self.max_output {
            return false;
        }
        // Unbounded in messages, bounded in bytes by `queued`.
        let _ = c.output.try_send(bytes);
        true
    }

    fn close(&mut self, conn: ConnId) {
        // Dropping the sender lets the writer finish and shut the socket;
        // dropping the reader task cancels it.
        self.conns.remove(&conn);
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

async fn read_loop(conn: ConnId, mut stream: TcpStream, events: Sender<Event>, size: usize) {
    let mut buf = vec![0u8; size];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                let _ = events
                    .send(Event::Closed(conn, TransportClosed::PeerClosed))
                    .await;
                return;
            }
            Ok(n) => {
                if events
                    .send(Event::Bytes(conn, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
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

async fn write_loop(mut stream: TcpStream, output: Receiver<Bytes>, queued: Arc<AtomicUsize>) {
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
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

enum Wake {
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
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
    listeners: Vec<TcpListener>,
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
    let mut runner = Runner::new(hub, policy, recorder);
    let (accepted_tx, accepted) = channel::bounded(64);
    let _acceptors: Vec<Task<()>> = listeners
        .into_iter()
        .map(|l| {
            let tx = accepted_tx.clone();
            smol::spawn(async move {
                loop {
                    let r = l.accept().await;
                    let failed = r.is_err();
                    if tx.send(r).await.is_err() {
                        return;
                    }
                    if failed {
                        // A listener that keeps failing (no more descriptors)
                        // should not spin.
                        Timer::after(std::time::Duration::from_millis(50)).await;
                    }
                }
            })
        })
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
            Wake::Accepted(Ok((stream, peer))) => {
                let _ = stream.set_nodelay(true);
                let conn = runner.open(now, peer.to_string(), &mut io);
                let (output, pending) = channel::unbounded();
                let queued = Arc::new(AtomicUsize::new(0));
                smol::spawn(write_loop(stream.clone(), pending, queued.clone())).detach();
                let reader =
                    smol::spawn(read_loop(conn, stream, events.clone(), config.read_buffer));
                io.conns.insert(
                    conn,
                    Connection {
                        output,
                        queued,
                        _reader: reader,
                    },
                );
                if !runner.hub.is_open(conn) {
                    io.close(conn);
                }
            }
            Wake::Accepted(Err(e)) => log::warn!("accept failed: {e}"),
            Wake::Event(e) => runner.handle(now, e, &mut io),
            Wake::Tick => runner.timeout(now, &mut io),
            Wake::Control(Control::Reload) => {
                log::info!("reloading the key set and the ACL");
                runner.reload(now);
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
