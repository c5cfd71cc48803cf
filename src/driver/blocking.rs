//! The blocking driver: std threads and `std::net`. One thread owns the hub
//! and waits on one channel with the hub's next deadline as its timeout;
//! each connection has a reader thread and a writer thread. A TLS
//! connection's two threads share its rustls stream under a lock, the
//! reader polling with a short socket timeout.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};

use super::runner::{Event, Io, Runner};
use super::tls::{Tls, client_certificate};
use super::{Answer, Control, DriverConfig, Policy, Recorder, admit};
use crate::auth::{ClientCertificate, Decision};
use crate::broker::{Broker, ConnId, Ticket};
use crate::codec::Bytes;
use crate::session::{AuthnOutcome, TransportClosed};

/// A listening socket, plain or TLS.
pub type Listener = super::Listener<TcpListener>;

/// The write side of a connection.
trait Sink: Write + Send {
    /// Ends the stream cleanly (TLS: close_notify).
    fn finish(&mut self);
}

impl Sink for TcpStream {
    fn finish(&mut self) {
        let _ = self.flush();
        let _ = self.shutdown(Shutdown::Write);
        drain(self);
    }
}

/// How long a closed connection, all written and half-closed, is still read
/// (and what comes dropped) before the socket closes: a client still
/// sending reads the DISCONNECT and its reason instead of a broken pipe (a
/// socket closed with input unread answers with a reset).
const DRAIN: Duration = Duration::from_secs(2);

/// Reads and drops what the client still sends, until it closes too or
/// [`DRAIN`] passes; then the socket is shut both ways (its reader ends).
fn drain(socket: &TcpStream) {
    let until = std::time::Instant::now() + DRAIN;
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*socket).read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
}

type Shared = Arc<Mutex<StreamOwned<ServerConnection, TcpStream>>>;

/// Reads a TLS stream shared with its writer: the socket's short read
/// timeout lets go of the lock often enough for the writer.
struct TlsReader(Shared);

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut s = self
                .0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?;
            match s.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    drop(s);
                    thread::yield_now();
                }
                other => return other,
            }
        }
    }
}

struct TlsWriter(Shared);

/// Writes only: rustls' own `Stream::write` may read as well, and a read
/// would meet the short timeout meant for the reader.
fn write_pending(s: &mut StreamOwned<ServerConnection, TcpStream>) -> std::io::Result<()> {
    while s.conn.wants_write() {
        s.conn.write_tls(&mut s.sock)?;
    }
    s.sock.flush()
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut s = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        s.conn.writer().write_all(buf)?;
        write_pending(&mut s)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut s = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        write_pending(&mut s)
    }
}

impl Sink for TlsWriter {
    fn finish(&mut self) {
        let socket = self.0.lock().ok().and_then(|mut s| {
            s.conn.send_close_notify();
            let _ = write_pending(&mut s);
            let _ = s.sock.shutdown(Shutdown::Write);
            s.sock.try_clone().ok()
        });
        if let Some(socket) = socket {
            drain(&socket);
        }
    }
}

struct Accepted {
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Sink>,
    tcp: TcpStream,
    peer: String,
    certificate: Option<ClientCertificate>,
    /// Came on a WebSocket listener.
    websocket: bool,
}

enum Msg {
    Accepted(Accepted),
    Event(Event),
    Control(Control),
}

struct Connection {
    output: Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    tcp: TcpStream,
    /// Closed while the connection is not to be read (backpressure), or
    /// while its reads wait in the inbox.
    gate: Arc<Gate>,
}

/// Reads of one connection waiting in the inbox at most: a client that
/// floods the broker cannot fill the inbox and starve the others (their
/// CONNECTs, their acknowledgements) or the accept thread.
const READS_QUEUED: usize = 2;

/// Whether a connection's reader may read; it waits while not.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    opened: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Backpressure: not read until resumed.
    paused: bool,
    /// Its reads in the inbox.
    queued: usize,
    /// The connection is gone: its reader reads on to find that out.
    closed: bool,
}

impl Gate {
    fn update(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.opened.notify_all();
    }

    fn set(&self, paused: bool) {
        self.update(|s| s.paused = paused);
    }

    fn close(&self) {
        self.update(|s| s.closed = true);
    }

    fn is_closed(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed
    }

    /// One of its reads was taken from the inbox.
    fn taken(&self) {
        self.update(|s| s.queued = s.queued.saturating_sub(1));
    }

    /// Waits until the reader may read, and counts the read it will queue.
    fn wait_turn(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !s.closed && (s.paused || s.queued >= READS_QUEUED) {
            s = self.opened.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.queued += 1;
    }
}

struct BlockingIo {
    conns: BTreeMap<ConnId, Connection>,
    inbox: SyncSender<Msg>,
    max_output: usize,
}

impl BlockingIo {
    /// A connection's read left the inbox: its reader may queue another.
    fn taken(&self, e: &Event) {
        if let Event::Bytes(conn, _) = e
            && let Some(c) = self.conns.get(conn)
        {
            c.gate.taken();
        }
    }
}

impl Io for BlockingIo {
    fn write(&mut self, conn: ConnId, bytes: Bytes) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return true;
        };
        if !admit(&c.queued, bytes.len(), self.max_output) {
            return false;
        }
        let _ = c.output.send(bytes);
        true
    }

    fn close(&mut self, conn: ConnId) {
        // The writer ends when the sender is gone, after writing what was
        // queued; the reader ends when the writer shuts the socket (a
        // paused one is let read to find that out).
        if let Some(c) = self.conns.remove(&conn) {
            c.gate.close();
        }
    }

    fn abort(&mut self, conn: ConnId) {
        // The writer may be stuck on a client that does not read: cut the
        // socket under it.
        if let Some(c) = self.conns.remove(&conn) {
            let _ = c.tcp.shutdown(Shutdown::Both);
            c.gate.close();
        }
    }

    fn pause_reading(&mut self, conn: ConnId, paused: bool) {
        if let Some(c) = self.conns.get(&conn) {
            c.gate.set(paused);
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

fn read_loop(
    conn: ConnId,
    mut stream: Box<dyn Read + Send>,
    inbox: SyncSender<Msg>,
    size: usize,
    gate: Arc<Gate>,
) {
    let mut buf = vec![0u8; size];
    loop {
        gate.wait_turn();
        let event = match stream.read(&mut buf) {
            Ok(0) => Event::Closed(conn, TransportClosed::PeerClosed),
            Ok(n) => Event::Bytes(conn, buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("conn {} read failed: {e} ({:?})", conn.0, e.kind());
                Event::Closed(conn, TransportClosed::Error)
            }
        };
        let last = matches!(event, Event::Closed(..));
        if gate.is_closed() {
            // The hub let go of it: what comes is dropped (the writer
            // drains, then shuts the socket, which ends this).
            if last {
                return;
            }
            continue;
        }
        if inbox.send(Msg::Event(event)).is_err() || last {
            return;
        }
    }
}

fn write_loop(mut stream: Box<dyn Sink>, output: Receiver<Bytes>, queued: Arc<AtomicUsize>) {
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
    stream.finish();
}

/// Events taken in one turn of the loop at most, after the one that woke
/// it: their changes share one commit.
const TURN_EVENTS: usize = 64;

/// Serves MQTT on `listeners` until [`Control::Shutdown`] arrives on
/// `control` (or every sender of it is dropped). Blocks the calling thread.
///
/// # Errors
/// When a listener's address cannot be read.
pub fn serve(
    listeners: Vec<Listener>,
    hub: Broker,
    policy: Arc<dyn Policy>,
    config: DriverConfig,
    recorder: Option<Recorder>,
    control: Receiver<Control>,
) -> std::io::Result<()> {
    let locals = listeners
        .iter()
        .map(|l| l.tcp.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let (inbox, messages) = mpsc::sync_channel::<Msg>(1024);
    let tls_configs: Vec<Tls> = listeners.iter().filter_map(|l| l.tls.clone()).collect();
    for listener in listeners {
        let accept_inbox = inbox.clone();
        thread::spawn(move || accept_loop(listener, &accept_inbox));
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
    let mut runner = Runner::new(hub, policy, recorder, &config, tls_configs);
    // A message taken while batching a turn that is not an event: next.
    let mut stashed: Option<Msg> = None;
    loop {
        if let Some(e) = runner.storage_failure() {
            let conns: Vec<ConnId> = io.conns.keys().copied().collect();
            for c in conns {
                io.abort(c);
            }
            drop(messages);
            for local in &locals {
                let _ = TcpStream::connect(local);
            }
            return Err(e);
        }
        let msg = if let Some(m) = stashed.take() {
            Some(m)
        } else {
            match runner.poll_timeout() {
                Some(at) => {
                    let wait = runner
                        .instant_of(at)
                        .saturating_duration_since(Instant::now());
                    match messages.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            Some(Msg::Control(Control::Shutdown))
                        }
                    }
                }
                None => Some(messages.recv().unwrap_or(Msg::Control(Control::Shutdown))),
            }
        };
        let now = runner.now();
        match msg {
            None => runner.timeout(now, &mut io),
            Some(Msg::Accepted(a)) => {
                let conn = runner.open(now, a.peer, a.certificate, a.websocket, &mut io);
                let (reader, writer) = (a.reader, a.writer);
                let (output, pending) = mpsc::channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let q = queued.clone();
                thread::spawn(move || write_loop(writer, pending, q));
                let reader_inbox = inbox.clone();
                let size = config.read_buffer;
                let gate = Arc::new(Gate::default());
                let g = gate.clone();
                thread::spawn(move || read_loop(conn, reader, reader_inbox, size, g));
                io.conns.insert(
                    conn,
                    Connection {
                        output,
                        queued,
                        tcp: a.tcp,
                        gate,
                    },
                );
                if !runner.hub.is_open(conn) {
                    io.close(conn);
                }
            }
            Some(Msg::Event(e)) => {
                // What else the readers brought meanwhile goes with it: one
                // commit for the turn (see `Runner::begin_reads`).
                runner.begin_reads();
                io.taken(&e);
                runner.handle(now, e, &mut io);
                for _ in 0..TURN_EVENTS {
                    match messages.try_recv() {
                        Ok(Msg::Event(e)) => {
                            io.taken(&e);
                            runner.handle(now, e, &mut io);
                        }
                        Ok(other) => {
                            stashed = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                runner.end_reads(now, &mut io);
                // While events keep coming `recv_timeout` never times out:
                // what came due meanwhile runs here.
                runner.timeout(now, &mut io);
            }
            Some(Msg::Control(Control::Reload)) => runner.reload(now, &mut io),
            Some(Msg::Control(Control::Admin(call))) => runner.admin(now, call, &mut io),
            Some(Msg::Control(Control::Shutdown)) => {
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

fn plain(tcp: TcpStream, peer: String) -> std::io::Result<Accepted> {
    Ok(Accepted {
        reader: Box::new(tcp.try_clone()?),
        writer: Box::new(tcp.try_clone()?),
        tcp,
        peer,
        certificate: None,
        websocket: false,
    })
}

/// The TLS handshake, within ten seconds; then the stream shared by the
/// reader and the writer.
fn handshake(tls: &Tls, tcp: TcpStream, peer: String) -> std::io::Result<Accepted> {
    let conn = ServerConnection::new(tls.config()).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(conn, tcp.try_clone()?);
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    let certificate = client_certificate(stream.conn.peer_certificates());
    // From now on the reader polls; writes may block (the output bound
    // catches a client that does not read).
    tcp.set_read_timeout(Some(Duration::from_millis(5)))?;
    tcp.set_write_timeout(None)?;
    let shared: Shared = Arc::new(Mutex::new(stream));
    Ok(Accepted {
        reader: Box::new(TlsReader(shared.clone())),
        writer: Box::new(TlsWriter(shared)),
        tcp,
        peer,
        certificate,
        websocket: false,
    })
}

fn accept_loop(listener: Listener, inbox: &SyncSender<Msg>) {
    for stream in listener.tcp.incoming() {
        let (tcp, peer) = match stream.and_then(|s| s.peer_addr().map(|p| (s, p))) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let peer = peer.to_string();
        let websocket = listener.websocket;
        match &listener.tls {
            None => match plain(tcp, peer) {
                Ok(mut a) => {
                    a.websocket = websocket;
                    if inbox.send(Msg::Accepted(a)).is_err() {
                        return;
                    }
                }
                Err(e) => log::warn!("accept failed: {e}"),
            },
            Some(tls) => {
                // A slow handshake holds up nobody.
                let tls = tls.clone();
                let inbox = inbox.clone();
                thread::spawn(move || match handshake(&tls, tcp, peer.clone()) {
                    Ok(mut a) => {
                        a.websocket = websocket;
                        let _ = inbox.send(Msg::Accepted(a));
                    }
                    Err(e) => log::info!("TLS handshake with {peer} failed: {e}"),
                });
            }
        }
    }
}
