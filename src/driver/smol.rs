//! The smol driver, on one thread: an executor run by the caller's
//! `block_on` owns the hub and every connection's reader task. Output to a
//! plain TCP client is written straight from the hub's loop while the
//! socket takes it; only what the socket refuses waits, with a flush task
//! started for it and ended when it is written. TLS connections always go
//! through such a task, and their handshakes run in their own tasks before
//! the hub hears of the connection. One thread is the point: the hub is
//! single-writer anyway, and on a broker pinned to a core every hop
//! between threads is a wakeup paid in CPU.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, TcpStream as StdTcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use smol::channel::{self, Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, WriteHalf};
use smol::net::TcpListener;
use smol::{Async, Executor, Task, Timer};

use super::runner::{Event, Io, Runner};
use super::tls::{Tls, client_certificate};
use super::{Answer, Control, DriverConfig, Policy, Recorder};
use crate::auth::{ClientCertificate, Decision};
use crate::broker::{Broker, ConnId, Ticket};
use crate::codec::{Bytes, BytesMut};
use crate::session::{AuthnOutcome, TransportClosed};
use bytes::Buf as _;

/// A listening socket, plain or TLS.
pub type Listener = super::Listener<TcpListener>;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Socket = Arc<Async<StdTcpStream>>;

enum Accepted {
    Plain {
        tcp: Socket,
        peer: String,
        websocket: bool,
    },
    Tls {
        stream: Box<dyn Stream>,
        tcp: Socket,
        peer: String,
        certificate: Option<ClientCertificate>,
        websocket: bool,
    },
}

/// Where output goes when the socket does not take it at once.
enum Writer {
    Tcp(Socket),
    Stream(WriteHalf<Box<dyn Stream>>),
}

impl Writer {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Tcp(s) => {
                let mut s: &Async<StdTcpStream> = s;
                s.write_all(bytes).await
            }
            Writer::Stream(s) => s.write_all(bytes).await,
        }
    }

    /// A TCP stream shuts its write side; a TLS stream sends close_notify.
    async fn close(self) {
        match self {
            Writer::Tcp(s) => {
                let _ = s.get_ref().shutdown(Shutdown::Write);
            }
            Writer::Stream(mut s) => {
                let _ = s.flush().await;
                let _ = s.close().await;
            }
        }
    }
}

/// One connection's output. Invariant: `writer` is here (no flush task
/// runs) only while `queue` is empty.
struct Outbox {
    queue: VecDeque<Bytes>,
    /// Bytes queued or being written by the flush task.
    bytes: usize,
    writer: Option<Writer>,
    /// Close once the queue is written.
    closing: bool,
    /// Writing failed: what comes is dropped (the reader sees the end).
    failed: bool,
}

type SharedOutbox = Arc<Mutex<Outbox>>;

fn lock(out: &SharedOutbox) -> MutexGuard<'_, Outbox> {
    out.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Connection {
    out: SharedOutbox,
    tcp: Socket,
    _reader: Task<()>,
    /// The reader passes it before each read; closed here while the
    /// connection is not to be read (backpressure).
    gate: Gate,
    paused: Option<smol::lock::RwLockWriteGuardArc<()>>,
}

/// Reads of one connection waiting in the channel at most: a client that
/// floods the broker cannot fill it and starve the others (their CONNECTs,
/// their acknowledgements).
const READS_QUEUED: usize = 2;

/// What a reader waits on: its connection paused (backpressure), or
/// [`READS_QUEUED`] of its reads in the channel already.
#[derive(Clone)]
struct Gate {
    paused: Arc<smol::lock::RwLock<()>>,
    credits: Arc<smol::lock::Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            paused: Arc::default(),
            credits: Arc::new(smol::lock::Semaphore::new(READS_QUEUED)),
        }
    }
}

impl Gate {
    /// Waits while the connection is paused.
    async fn open(&self) {
        drop(self.paused.read().await);
    }

    /// Waits for room for one more read in the channel, and takes it.
    async fn queue(&self) {
        self.credits.acquire().await.forget();
    }

    /// One of its reads left the channel.
    fn taken(&self) {
        self.credits.add_permits(1);
    }
}

struct SmolIo {
    ex: Arc<Executor<'static>>,
    conns: BTreeMap<ConnId, Connection>,
    events: Sender<Event>,
    max_output: usize,
}

impl SmolIo {
    /// A connection's read left the channel: its reader may queue another.
    fn taken(&self, e: &Event) {
        if let Event::Bytes(conn, _) = e
            && let Some(c) = self.conns.get(conn)
        {
            c.gate.taken();
        }
    }
}

impl Io for SmolIo {
    fn write(&mut self, conn: ConnId, mut bytes: Bytes) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return true;
        };
        let mut out = lock(&c.out);
        if out.failed {
            return true;
        }
        if out.bytes + bytes.len() > self.max_output {
            return false;
        }
        if let Some(Writer::Tcp(s)) = &out.writer {
            match s.get_ref().write(&bytes) {
                Ok(n) if n == bytes.len() => return true,
                Ok(n) => bytes.advance(n),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => {
                    out.failed = true;
                    return true;
                }
            }
        }
        out.bytes += bytes.len();
        out.queue.push_back(bytes);
        if let Some(writer) = out.writer.take() {
            self.ex.spawn(flush(c.out.clone(), writer)).detach();
        }
        true
    }

    fn close(&mut self, conn: ConnId) {
        // Dropping the reader task cancels it; the socket closes when the
        // flush task, if any, and the drain let go of it.
        if let Some(c) = self.conns.remove(&conn) {
            let mut out = lock(&c.out);
            out.closing = true;
            if let Some(writer) = out.writer.take() {
                match writer {
                    Writer::Tcp(s) => {
                        let _ = s.get_ref().shutdown(Shutdown::Write);
                    }
                    stream => self.ex.spawn(stream.close()).detach(),
                }
            }
            self.ex.spawn(drain(c.tcp.clone())).detach();
        }
    }

    fn abort(&mut self, conn: ConnId) {
        // A flush task may be stuck on a client that does not read: cut the
        // socket under it.
        if let Some(c) = self.conns.remove(&conn) {
            let mut out = lock(&c.out);
            out.failed = true;
            out.queue.clear();
            let _ = c.tcp.get_ref().shutdown(Shutdown::Both);
        }
    }

    fn spawn_authentication(&mut self, ticket: Ticket, answer: Answer<AuthnOutcome>) {
        let events = self.events.clone();
        self.ex
            .spawn(async move {
                let outcome = answer.await;
                let _ = events
                    .send(Event::Authenticated(ticket, Box::new(outcome)))
                    .await;
            })
            .detach();
    }

    fn spawn_authorization(&mut self, ticket: Ticket, answer: Answer<Decision>) {
        let events = self.events.clone();
        self.ex
            .spawn(async move {
                let decision: Decision = answer.await;
                let _ = events.send(Event::Authorized(ticket, decision)).await;
            })
            .detach();
    }

    fn pause_reading(&mut self, conn: ConnId, paused: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !paused {
            c.paused = None;
        } else if c.paused.is_none() {
            // Everything runs on one thread: no reader holds the gate
            // between its awaits, so it is free.
            c.paused = c.gate.paused.try_write_arc();
        }
    }
}

/// Writes what queued up, then hands the writer back (or closes it).
async fn flush(out: SharedOutbox, mut writer: Writer) {
    let mut batch = BytesMut::new();
    loop {
        let close = {
            let mut o = lock(&out);
            if o.failed {
                return;
            }
            if o.queue.is_empty() {
                if !o.closing {
                    o.writer = Some(writer);
                    return;
                }
                true
            } else {
                for b in o.queue.drain(..) {
                    batch.extend_from_slice(&b);
                }
                false
            }
        };
        if close {
            writer.close().await;
            return;
        }
        let n = batch.len();
        if writer.write_all(&batch).await.is_err() {
            let mut o = lock(&out);
            o.failed = true;
            o.queue.clear();
            return;
        }
        batch.clear();
        lock(&out).bytes -= n;
    }
}

thread_local! {
    /// Plain reads land here and leave as exactly-sized copies: an idle
    /// connection holds no buffer of its own.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

enum Read {
    Data(Vec<u8>),
    End,
    Wait,
}

/// How long a closed connection is still read (and what comes dropped)
/// before its socket closes: a client still sending reads the DISCONNECT
/// and its reason instead of a broken pipe (a socket closed with input
/// unread answers with a reset).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what a closed connection's client still sends, until it
/// closes too or [`DRAIN`] passes.
async fn drain(s: Socket) {
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.get_ref().read(&mut buf) {
                Ok(0) => return,
                // Others get their turn between reads.
                Ok(_) => smol::future::yield_now().await,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if s.readable().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    };
    read.or(async {
        Timer::after(DRAIN).await;
    })
    .await;
}

fn read_now(s: &Async<StdTcpStream>, size: usize) -> std::io::Result<Read> {
    READ_BUFFER.with_borrow_mut(|buf| {
        buf.resize(size.max(1), 0);
        loop {
            return match s.get_ref().read(buf) {
                Ok(0) => Ok(Read::End),
                Ok(n) => Ok(Read::Data(buf[..n].to_vec())),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Read::Wait),
                Err(e) => Err(e),
            };
        }
    })
}

async fn read_plain(conn: ConnId, s: Socket, events: Sender<Event>, size: usize, gate: Gate) {
    let closed = loop {
        gate.open().await;
        match read_now(&s, size) {
            Ok(Read::Data(data)) => {
                let full = data.len() == size;
                gate.queue().await;
                if events.send(Event::Bytes(conn, data)).await.is_err() {
                    return;
                }
                // A short read emptied the socket: wait for more without
                // asking it again first — after the hub had its turn, so
                // re-arming the poller is not in the way of the answer.
                if !full {
                    smol::future::yield_now().await;
                    if s.readable().await.is_err() {
                        break TransportClosed::Error;
                    }
                }
            }
            Ok(Read::End) => break TransportClosed::PeerClosed,
            Ok(Read::Wait) => {
                if s.readable().await.is_err() {
                    break TransportClosed::Error;
                }
            }
            Err(_) => break TransportClosed::Error,
        }
    };
    let _ = events.send(Event::Closed(conn, closed)).await;
}

async fn read_stream(
    conn: ConnId,
    mut stream: impl AsyncRead + Unpin,
    events: Sender<Event>,
    size: usize,
    gate: Gate,
) {
    // An idle connection waits with a small buffer; a read that fills it
    // doubles it up to `size`, and a short one brings it back down.
    const SMALL: usize = 256;
    let mut buf = vec![0u8; SMALL.min(size)];
    loop {
        gate.open().await;
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
                gate.queue().await;
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

enum Wake {
    Accepted(Accepted),
    Event(Event),
    Control(Control),
    Tick,
}

/// Events taken in one turn of the loop at most, after the one that woke
/// it: their changes share one commit.
const TURN_EVENTS: usize = 64;

/// Serves MQTT on `listeners` until [`Control::Shutdown`] arrives on
/// `control` (or every sender of it is dropped). Everything runs on the
/// thread that polls this future.
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
    let ex = Arc::new(Executor::new());
    let spawner = ex.clone();
    ex.run(async move {
        let ex = spawner;
        let (events, incoming) = channel::bounded::<Event>(1024);
        let mut io = SmolIo {
            ex: ex.clone(),
            conns: BTreeMap::new(),
            events: events.clone(),
            max_output: config.max_output_bytes,
        };
        let tls_configs: Vec<Tls> = listeners.iter().filter_map(|l| l.tls.clone()).collect();
        let mut runner = Runner::new(hub, policy, recorder, &config, tls_configs);
        let (accepted_tx, accepted) = channel::bounded(64);
        let _acceptors: Vec<Task<()>> = listeners
            .into_iter()
            .map(|l| ex.spawn(accept_loop(ex.clone(), l, accepted_tx.clone())))
            .collect();
        // One timer, moved only when the hub's deadline does: a timer made and
        // dropped per wakeup costs the reactor work on every message.
        let mut timer = Timer::never();
        let mut armed = None;
        loop {
            if let Some(e) = runner.storage_failure() {
                let ids: Vec<ConnId> = io.conns.keys().copied().collect();
                for id in ids {
                    io.abort(id);
                }
                return Err(e);
            }
            let deadline = runner.poll_timeout();
            if deadline != armed {
                match deadline {
                    Some(at) => timer.set_at(runner.instant_of(at)),
                    None => timer = Timer::never(),
                }
                armed = deadline;
            }
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
            let tick = async {
                (&mut timer).await;
                Wake::Tick
            };
            // The rare wakes first: a flood of events must not starve a
            // new connection, a control or a deadline.
            let wake = control.or(accept).or(tick).or(event).await;
            let now = runner.now();
            match wake {
                Wake::Accepted(a) => {
                    let (tcp, peer, certificate, stream, websocket) = match a {
                        Accepted::Plain {
                            tcp,
                            peer,
                            websocket,
                        } => (tcp, peer, None, None, websocket),
                        Accepted::Tls {
                            stream,
                            tcp,
                            peer,
                            certificate,
                            websocket,
                        } => (tcp, peer, certificate, Some(stream), websocket),
                    };
                    let conn = runner.open(now, peer, certificate, websocket, &mut io);
                    let size = config.read_buffer;
                    let gate = Gate::default();
                    let g = gate.clone();
                    let (writer, reader) = match stream {
                        None => (
                            Writer::Tcp(tcp.clone()),
                            ex.spawn(read_plain(conn, tcp.clone(), events.clone(), size, g)),
                        ),
                        Some(stream) => {
                            let (r, w) = smol::io::split(stream);
                            let reader = ex.spawn(read_stream(conn, r, events.clone(), size, g));
                            (Writer::Stream(w), reader)
                        }
                    };
                    let out = Outbox {
                        queue: VecDeque::new(),
                        bytes: 0,
                        writer: Some(writer),
                        closing: false,
                        failed: false,
                    };
                    io.conns.insert(
                        conn,
                        Connection {
                            out: Arc::new(Mutex::new(out)),
                            tcp,
                            _reader: reader,
                            gate,
                            paused: None,
                        },
                    );
                    if !runner.hub.is_open(conn) {
                        io.close(conn);
                    }
                }
                Wake::Event(e) => {
                    // What else the readers brought meanwhile goes with it:
                    // one commit for the turn (see `Runner::begin_reads`).
                    runner.begin_reads();
                    io.taken(&e);
                    runner.handle(now, e, &mut io);
                    for _ in 0..TURN_EVENTS {
                        match incoming.try_recv() {
                            Ok(e) => {
                                io.taken(&e);
                                runner.handle(now, e, &mut io);
                            }
                            Err(_) => break,
                        }
                    }
                    runner.end_reads(now, &mut io);
                    // While events keep coming the timer may never win the
                    // race: what came due meanwhile runs here.
                    if runner.poll_timeout().is_some_and(|t| t <= now.mono) {
                        armed = None;
                        runner.timeout(now, &mut io);
                    }
                }
                Wake::Tick => {
                    // A one-shot timer that fired stays silent: arm it again
                    // even for the same deadline (it may have fired early).
                    armed = None;
                    runner.timeout(now, &mut io);
                }
                Wake::Control(Control::Reload) => runner.reload(now, &mut io),
                Wake::Control(Control::Admin(call)) => runner.admin(now, call, &mut io),
                Wake::Control(Control::Shutdown) => {
                    runner.shutdown(now, &mut io);
                    // Let the flush tasks write the DISCONNECTs.
                    let ids: Vec<ConnId> = io.conns.keys().copied().collect();
                    for id in ids {
                        io.close(id);
                    }
                    Timer::after(std::time::Duration::from_millis(100)).await;
                    return Ok(());
                }
            }
        }
    })
    .await
}

/// Accepts connections; TLS ones are handed on only once their handshake is
/// done, each in its own task so a slow handshake holds up nobody.
async fn accept_loop(ex: Arc<Executor<'static>>, l: Listener, accepted: Sender<Accepted>) {
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
                let a = Accepted::Plain {
                    tcp: Socket::from(tcp),
                    peer,
                    websocket: l.websocket,
                };
                if accepted.send(a).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let acceptor = futures_rustls::TlsAcceptor::from(tls.config());
                let accepted = accepted.clone();
                let websocket = l.websocket;
                ex.spawn(async move {
                    let handshake = acceptor.accept(tcp.clone());
                    let timeout = async {
                        Timer::after(std::time::Duration::from_secs(10)).await;
                        Err(std::io::Error::from(ErrorKind::TimedOut))
                    };
                    match handshake.or(timeout).await {
                        Ok(stream) => {
                            let certificate =
                                client_certificate(stream.get_ref().1.peer_certificates());
                            let a = Accepted::Tls {
                                stream: Box::new(stream),
                                tcp: Socket::from(tcp),
                                peer,
                                certificate,
                                websocket,
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
