//! The blocking driver: std threads and `std::net`. One thread owns the hub
//! and waits on one channel with the hub's next deadline as its timeout;
//! each connection has a reader thread and a writer thread.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use super::runner::{Event, Io, Runner};
use super::{Answer, Control, DriverConfig, Policy, Recorder, instant_of, now};
use crate::auth::Decision;
use crate::broker::{Broker, ConnId, Ticket};
use crate::codec::Bytes;
use crate::session::{AuthnOutcome, TransportClosed};

enum Msg {
    Accepted(TcpStream, SocketAddr),
    Event(Event),
    Control(Control),
}

struct Connection {
    output: Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    stream: TcpStream,
}

struct BlockingIo {
    conns: BTreeMap<ConnId, Connection>,
    inbox: SyncSender<Msg>,
    max_output: usize,
}

impl Io for BlockingIo {
    fn write(&mut self, conn: ConnId, bytes: Bytes) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return true;
        };
        let queued = c.queued.fetch_add(bytes.len(), Ordering::AcqRel) + bytes.len();
        if queued > self.max_output {
            return false;
        }
        let _ = c.output.send(bytes);
        true
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            // The writer ends when the sender is gone, after writing what was
            // queued; the reader ends when the writer shuts the socket.
            drop(c.output);
            drop(c.stream);
        }
    }

    fn spawn_authentication(&mut self, ticket: Ticket, answer: Answer<AuthnOutcome>) {
        let inbox = self.inbox.clone();
        thread::spawn(move || {
            let outcome = futures_lite::future::block_on(answer);
            let _ = inbox.send(Msg::Event(Event::Authenticated(ticket, Box::new(outcome))));
        });
    }

    fn spawn_authorization(&mut self, ticket: Ticket, answer: Answer<Decision>) {
        let inbox = self.inbox.clone();
        thread::spawn(move || {
            let decision = futures_lite::future::block_on(answer);
            let _ = inbox.send(Msg::Event(Event::Authorized(ticket, decision)));
        });
    }
}

fn read_loop(conn: ConnId, mut stream: TcpStream, inbox: SyncSender<Msg>, size: usize) {
    let mut buf = vec![0u8; size];
    loop {
        let event = match stream.read(&mut buf) {
            Ok(0) => Event::Closed(conn, TransportClosed::PeerClosed),
            Ok(n) => Event::Bytes(conn, buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => Event::Closed(conn, TransportClosed::Error),
        };
        let last = matches!(event, Event::Closed(..));
        if inbox.send(Msg::Event(event)).is_err() || last {
            return;
        }
    }
}

fn write_loop(mut stream: TcpStream, output: Receiver<Bytes>, queued: Arc<AtomicUsize>) {
    let mut batch = Vec::new();
    while let Ok(first) = output.recv() {
        batch.extend_from_slice(&first);
        while let Ok(more) = output.try_recv() {
            batch.extend_from_slice(&more);
        }
        if stream.write_all(&batch).is_err() {
            break;
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.clear();
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Serves MQTT on `listeners` until [`Control::Shutdown`] arrives on
/// `control` (or every sender of it is dropped). Blocks the calling thread.
///
/// # Errors
/// When a listener's address cannot be read.
pub fn serve(
    listeners: Vec<TcpListener>,
    hub: Broker,
    policy: Arc<dyn Policy>,
    config: DriverConfig,
    recorder: Option<Recorder>,
    control: Receiver<Control>,
) -> std::io::Result<()> {
    let locals = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let (inbox, messages) = mpsc::sync_channel::<Msg>(1024);
    for listener in listeners {
        let accept_inbox = inbox.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let msg = match stream.and_then(|s| s.peer_addr().map(|p| (s, p))) {
                    Ok((s, peer)) => Msg::Accepted(s, peer),
                    Err(e) => {
                        log::warn!("accept failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if accept_inbox.send(msg).is_err() {
                    return;
                }
            }
        });
    }
    let control_inbox = inbox.clone();
    thread::spawn(move || {
        while let Ok(c) = control.recv() {
            if control_inbox.send(Msg::Control(c)).is_err() {
                return;
            }
        }
        let _ = control_inbox.send(Msg::Control(Control::Shutdown));
    });
    let mut io = BlockingIo {
        conns: BTreeMap::new(),
        inbox: inbox.clone(),
        max_output: config.max_output_bytes,
    };
    let mut runner = Runner::new(hub, policy, recorder);
    loop {
        let msg = match runner.hub.poll_timeout() {
            Some(at) => {
                let wait = instant_of(at).saturating_duration_since(Instant::now());
                match messages.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Msg::Control(Control::Shutdown)),
                }
            }
            None => Some(messages.recv().unwrap_or(Msg::Control(Control::Shutdown))),
        };
        let now = now();
        match msg {
            None => runner.timeout(now, &mut io),
            Some(Msg::Accepted(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let conn = runner.open(now, peer.to_string(), &mut io);
                let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
                    runner.handle(now, Event::Closed(conn, TransportClosed::Error), &mut io);
                    continue;
                };
                let (output, pending) = mpsc::channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let q = queued.clone();
                thread::spawn(move || write_loop(writer, pending, q));
                let reader_inbox = inbox.clone();
                let size = config.read_buffer;
                thread::spawn(move || read_loop(conn, reader, reader_inbox, size));
                io.conns.insert(
                    conn,
                    Connection {
                        output,
                        queued,
                        stream,
                    },
                );
                if !runner.hub.is_open(conn) {
                    io.close(conn);
                }
            }
            Some(Msg::Event(e)) => runner.handle(now, e, &mut io),
            Some(Msg::Control(Control::Reload)) => {
                log::info!("reloading the key set and the ACL");
                runner.reload(now);
            }
            Some(Msg::Control(Control::Shutdown)) => {
                log::info!("shutting down");
                runner.shutdown(now, &mut io);
                let conns = std::mem::take(&mut io.conns);
                drop(conns);
                // Wake the accept threads so they see the inbox is gone.
                drop(messages);
                for local in &locals {
                    let _ = TcpStream::connect(local);
                }
                thread::sleep(Duration::from_millis(100));
                return Ok(());
            }
        }
    }
}
