//! The mio driver: one thread, one readiness loop, no tasks. Sockets are
//! registered once (edge-triggered, read and write interest); a readable
//! socket is read until it is empty into one buffer shared by every
//! connection, output is written straight to the socket and only what it
//! refuses waits in the connection's queue for the next writable edge. TLS
//! runs on rustls' sans-IO connection in the same loop. Policy answers that
//! are not ready at once are polled here when their waker fires.
//!
//! Per message this is a read, a write and the loop's one wait: the least
//! a broker can do on a readiness API, and what an idle connection costs is
//! its socket and a few words.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use ::mio::net::{TcpListener as MioListener, TcpStream};
use ::mio::{Events, Interest, Poll as MioPoll, Token};
use rustls::ServerConnection;

use super::runner::{Event, Io, Runner};
use super::tls::{Tls, client_certificate};
use super::{Answer, Control, DriverConfig, Policy, Recorder};
use crate::auth::Decision;
use crate::broker::{Broker, ConnId, Ticket};
use crate::codec::Bytes;
use crate::session::{AuthnOutcome, TransportClosed};
use crate::slots::{SideTable, Slots, index_of};

/// A listening socket, plain or TLS.
pub type Listener = super::Listener<std::net::TcpListener>;

/// Tokens below this are listeners; the waker is the last one.
const FIRST_SOCKET: usize = 1 << 16;
const WAKER: Token = Token(usize::MAX);
/// Bytes read from one socket per readiness before others get a turn.
const READ_BUDGET: usize = 256 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed connection may take to read what was left for it.
const LINGER: Duration = Duration::from_secs(10);
/// How long a closed connection, all written and half-closed, is still read
/// (and what comes dropped) before the socket closes: a client still
/// sending reads the DISCONNECT and its reason instead of a broken pipe
/// (a socket closed with input unread answers with a reset).
const DRAIN: Duration = Duration::from_secs(2);

/// Which hub connection a socket carries, as half an id: the index of the
/// hub's [`ConnId`] (its serial is in [`MioIo::by_conn`], which tells a
/// stale index). Half a word: the socket's slot with its serial is 24
/// bytes, where the whole id made it 32. Read and written only by
/// [`MioIo::pair`], [`MioIo::slot_of`], [`MioIo::conn_of`] and
/// [`MioIo::detach`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct ConnIndex(u32);

impl ConnIndex {
    /// No hub connection: a TLS handshake under way, or the hub closed it.
    const NONE: Self = Self(u32::MAX);

    fn of(conn: ConnId) -> Self {
        Self(index_of(conn.0) as u32)
    }
}

/// One socket: kept small, an idle connection is mostly this.
struct Slot {
    stream: TcpStream,
    /// The hub connection it carries ([`ConnIndex::NONE`] while a TLS
    /// handshake is under way and once the hub closed it).
    conn: ConnIndex,
    /// Its TLS session, or plain output the socket did not take yet (there
    /// only while some is), and whether it closes: one word, where a flag
    /// beside it took another.
    side: Option<Box<Side>>,
}

/// What a socket holds beyond its descriptor.
struct Side {
    /// The hub closed it: close once the output is written. A closing
    /// socket without a side has nothing left to write and is gone at once.
    closing: bool,
    kind: Kind,
}

enum Kind {
    /// A TLS session keeps its own output. Boxed once more: plain output
    /// waiting for a slow reader takes a small box, not this one's size.
    Tls(Box<ServerConnection>),
    Out(Output),
    /// Closed, everything written, half-closed: read until the client
    /// closes too or [`DRAIN`] passes, what comes dropped.
    Draining,
}

impl Slot {
    fn tls(&self) -> Option<&ServerConnection> {
        match self.side.as_deref().map(|s| &s.kind) {
            Some(Kind::Tls(t)) => Some(t),
            _ => None,
        }
    }

    /// The stream and the TLS session, to use together.
    fn tls_mut(&mut self) -> Option<(&mut TcpStream, &mut ServerConnection)> {
        match self.side.as_deref_mut().map(|s| &mut s.kind) {
            Some(Kind::Tls(t)) => Some((&mut self.stream, t)),
            _ => None,
        }
    }

    fn out(&self) -> Option<&Output> {
        match self.side.as_deref().map(|s| &s.kind) {
            Some(Kind::Out(o)) => Some(o),
            _ => None,
        }
    }

    /// Lets go of plain output that waited (written, or never will be).
    fn drop_out(&mut self) {
        if self.out().is_some() {
            self.side = None;
        }
    }

    fn closing(&self) -> bool {
        self.side.as_ref().is_some_and(|s| s.closing)
    }
}

impl Side {
    fn boxed(kind: Kind) -> Box<Self> {
        Box::new(Side {
            closing: false,
            kind,
        })
    }
}

#[derive(Default)]
struct Output {
    queue: VecDeque<Bytes>,
    bytes: usize,
}

/// What a policy answer brings back when it is ready.
enum Pending {
    Authentication(Ticket, Answer<AuthnOutcome>),
    Authorization(Ticket, Answer<Decision>),
}

/// Wakes the loop for one pending answer.
struct AnswerWaker {
    id: u64,
    woken: Arc<Mutex<Vec<u64>>>,
    waker: Arc<::mio::Waker>,
}

impl Wake for AnswerWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.id);
        let _ = self.waker.wake();
    }
}

struct MioIo {
    poll: MioPoll,
    /// The sockets by token: a slab entry each, and a stale token (an event
    /// or deadline left over for a closed socket) misses.
    slots: Slots<usize, Slot>,
    /// A connection's socket, by the index of its token (the slot names
    /// its connection, which tells a stale index).
    by_conn: SideTable<ConnId, u32>,
    max_output: usize,
    /// Answers not ready when asked, by id.
    pending: BTreeMap<u64, Pending>,
    next_pending: u64,
    woken: Arc<Mutex<Vec<u64>>>,
    waker: Arc<::mio::Waker>,
    /// Sockets with more to read than one turn's budget.
    backlog: BTreeSet<usize>,
    /// Sockets not read (backpressure); resumed, they go to the backlog
    /// (edge-triggered: what came meanwhile brings no new event).
    paused: BTreeSet<usize>,
    /// When a TLS handshake must be done, or a closed connection's output
    /// written, by: past it, the socket is dropped.
    deadlines: BTreeSet<(Instant, usize)>,
    /// The peer address of a TLS connection until its handshake is done,
    /// and whether it came on a WebSocket listener.
    peers: BTreeMap<usize, (String, bool)>,
}

impl MioIo {
    fn slot_of(&mut self, conn: ConnId) -> Option<(usize, &mut Slot)> {
        let index = *self.by_conn.get(&conn)?;
        self.slots
            .at_index_mut(index)
            .filter(|(_, s)| s.conn == ConnIndex::of(conn))
    }

    /// The hub's connection on the socket `token`, if any.
    fn conn_of(&self, token: usize) -> Option<ConnId> {
        let conn = self
            .by_conn
            .key_at(self.slots.get(&token)?.conn.0 as usize)?;
        // The hub's index names this socket only while its entry points back.
        (self.by_conn.get(&conn).map(|&i| i as usize) == Some(index_of(token as u64)))
            .then_some(conn)
    }

    /// The socket `token` no longer carries a hub connection.
    fn detach(&mut self, token: usize) {
        if let Some(conn) = self.conn_of(token) {
            self.by_conn.remove(&conn);
        }
        if let Some(s) = self.slots.get_mut(&token) {
            s.conn = ConnIndex::NONE;
        }
    }

    /// The socket `token` carries the hub's connection `conn` from now on.
    fn pair(&mut self, token: usize, conn: ConnId) {
        if let Some(s) = self.slots.get_mut(&token) {
            s.conn = ConnIndex::of(conn);
            // Tokens are slot ids: their lower half is the index.
            self.by_conn.insert(conn, index_of(token as u64) as u32);
        }
    }

    fn drop_slot(&mut self, token: usize, how: Shutdown) {
        self.detach(token);
        if let Some(mut s) = self.slots.remove(&token) {
            if let Some((stream, tls)) = s.tls_mut()
                && how == Shutdown::Write
            {
                tls.send_close_notify();
                let _ = flush_tls(stream, tls);
            }
            let _ = self.poll.registry().deregister(&mut s.stream);
            let _ = s.stream.shutdown(how);
            self.backlog.remove(&token);
            self.paused.remove(&token);
            self.peers.remove(&token);
        }
    }

    /// Writes what waits; closes a closing connection once it is written.
    fn flush(&mut self, token: usize) {
        let Some(s) = self.slots.get_mut(&token) else {
            return;
        };
        let closing = s.closing();
        let result = match s.side.as_deref_mut().map(|s| &mut s.kind) {
            Some(Kind::Tls(tls)) => flush_tls(&mut s.stream, tls),
            Some(Kind::Out(out)) => flush_plain(&mut s.stream, out),
            Some(Kind::Draining) => return,
            None => Ok(true),
        };
        match result {
            Ok(false) => {}
            Ok(true) if closing => self.drain(token),
            // Nothing more is owed to a closing socket that failed.
            Err(_) if closing => self.drop_slot(token, Shutdown::Both),
            // Written, or never will be (the read side sees the end and
            // reports it).
            _ => s.drop_out(),
        }
    }

    /// A closed connection wrote all it owed: half-close it (TLS after its
    /// close_notify) and read what still comes for [`DRAIN`] at most.
    fn drain(&mut self, token: usize) {
        let Some(s) = self.slots.get_mut(&token) else {
            return;
        };
        if let Some((stream, tls)) = s.tls_mut() {
            tls.send_close_notify();
            let _ = flush_tls(stream, tls);
        }
        let _ = s.stream.shutdown(Shutdown::Write);
        s.side = Some(Box::new(Side {
            closing: true,
            kind: Kind::Draining,
        }));
        self.deadlines.insert((Instant::now() + DRAIN, token));
    }

    fn add_pending(&mut self, p: Pending) {
        self.next_pending += 1;
        let id = self.next_pending;
        self.pending.insert(id, p);
        // Poll it once now: that registers its waker.
        self.woken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
        let _ = self.waker.wake();
    }
}

/// Writes `bytes` while the socket takes them: `Ok(true)` when all went,
/// `Ok(false)` when it is full (`bytes` keeps the rest).
fn write_some(stream: &mut TcpStream, bytes: &mut Bytes) -> std::io::Result<bool> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes::Buf::advance(bytes, n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes the queue; `Ok(true)` when it is empty.
fn flush_plain(stream: &mut TcpStream, out: &mut Output) -> std::io::Result<bool> {
    while let Some(front) = out.queue.front_mut() {
        let before = front.len();
        let all = write_some(stream, front)?;
        out.bytes -= before - front.len();
        if !all {
            return Ok(false);
        }
        out.queue.pop_front();
    }
    Ok(true)
}

/// Writes rustls' pending records; `Ok(true)` when none is left.
fn flush_tls(stream: &mut TcpStream, tls: &mut ServerConnection) -> std::io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Io for MioIo {
    fn write(&mut self, conn: ConnId, mut bytes: Bytes) -> bool {
        let max = self.max_output;
        let Some((_, s)) = self.slot_of(conn) else {
            return true;
        };
        if let Some((stream, tls)) = s.tls_mut() {
            // rustls holds what the socket does not take, up to its limit.
            match tls.writer().write(&bytes) {
                Ok(n) if n == bytes.len() => {}
                _ => return false,
            }
            // A failure: the read side sees it and reports it to the hub,
            // which closes the connection (a socket closes only once the
            // hub has let go of it).
            let _ = flush_tls(stream, tls);
            return true;
        }
        if s.out().map_or(0, |o| o.bytes) + bytes.len() > max {
            return false;
        }
        // Nothing waits: straight to the socket; the read side sees a
        // failure and reports it.
        if s.out().is_none() && write_some(&mut s.stream, &mut bytes).unwrap_or(true) {
            return true;
        }
        let side = s
            .side
            .get_or_insert_with(|| Side::boxed(Kind::Out(Output::default())));
        if let Kind::Out(out) = &mut side.kind {
            out.bytes += bytes.len();
            out.queue.push_back(bytes);
        }
        true
    }

    fn close(&mut self, conn: ConnId) {
        let Some((token, _)) = self.slot_of(conn) else {
            return;
        };
        // From here the socket is the driver's alone: the hub may hand the
        // id's index to the next connection.
        self.detach(token);
        let Some(s) = self.slots.get_mut(&token) else {
            return;
        };
        match s.side.as_deref_mut() {
            Some(side) => side.closing = true,
            None => return self.drain(token),
        }
        self.flush(token);
        if self.slots.contains_key(&token) {
            // A client that never reads its last bytes does not keep the
            // socket forever.
            self.deadlines.insert((Instant::now() + LINGER, token));
        }
    }

    fn abort(&mut self, conn: ConnId) {
        if let Some((token, _)) = self.slot_of(conn) {
            self.drop_slot(token, Shutdown::Both);
        }
    }

    fn spawn_authentication(&mut self, ticket: Ticket, answer: Answer<AuthnOutcome>) {
        self.add_pending(Pending::Authentication(ticket, answer));
    }

    fn spawn_authorization(&mut self, ticket: Ticket, answer: Answer<Decision>) {
        self.add_pending(Pending::Authorization(ticket, answer));
    }

    fn pause_reading(&mut self, conn: ConnId, paused: bool) {
        let Some((token, _)) = self.slot_of(conn) else {
            return;
        };
        if paused {
            self.paused.insert(token);
        } else if self.paused.remove(&token) {
            self.backlog.insert(token);
        }
    }
}

fn poll_answer<T>(answer: &mut Answer<T>, waker: &Waker) -> Poll<T> {
    let mut cx = Context::from_waker(waker);
    Pin::as_mut(answer).poll(&mut cx)
}

/// Serves MQTT on `listeners` until [`Control::Shutdown`] arrives on
/// `control` (or every sender of it is dropped), on the calling thread.
///
/// # Errors
/// The poller could not be created or a listener registered.
pub fn serve(
    listeners: Vec<Listener>,
    hub: Broker,
    policy: Arc<dyn Policy>,
    config: DriverConfig,
    recorder: Option<Recorder>,
    control: Receiver<Control>,
) -> std::io::Result<()> {
    let poll = MioPoll::new()?;
    let waker = Arc::new(::mio::Waker::new(poll.registry(), WAKER)?);
    let mut sockets = Vec::new();
    let mut tls_configs = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        l.tcp.set_nonblocking(true)?;
        let mut tcp = MioListener::from_std(l.tcp);
        poll.registry()
            .register(&mut tcp, Token(i), Interest::READABLE)?;
        if let Some(tls) = &l.tls {
            tls_configs.push(tls.clone());
        }
        sockets.push((tcp, l.tls, l.websocket));
    }
    // Controls come on a channel; a thread turns them into wakeups.
    let controls = Arc::new(Mutex::new(VecDeque::new()));
    {
        let (controls, waker) = (controls.clone(), waker.clone());
        std::thread::spawn(move || {
            loop {
                let c = control.recv().unwrap_or(Control::Shutdown);
                let last = matches!(c, Control::Shutdown);
                controls
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_back(c);
                let _ = waker.wake();
                if last {
                    return;
                }
            }
        });
    }
    // Room for every connection the limit allows, reserved now (address
    // space only until they come), as the hub does (`Runner::new`).
    let room = config.max_connections.min(1 << 20);
    let mut slots = Slots::default();
    slots.reserve(room);
    let mut by_conn = SideTable::default();
    by_conn.reserve(room);
    let mut io = MioIo {
        poll,
        slots,
        by_conn,
        max_output: config.max_output_bytes,
        pending: BTreeMap::new(),
        next_pending: 0,
        woken: Arc::new(Mutex::new(Vec::new())),
        waker,
        backlog: BTreeSet::new(),
        paused: BTreeSet::new(),
        deadlines: BTreeSet::new(),
        peers: BTreeMap::new(),
    };
    let mut runner = Runner::new(hub, policy, recorder, &config, tls_configs);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; config.read_buffer.max(4096)];
    let mut accept_retry: Option<Instant> = None;
    loop {
        if let Some(e) = runner.storage_failure() {
            // Every socket goes with `io`, nothing more written.
            return Err(e);
        }
        let mut timeout = runner.poll_timeout().map(|at| {
            runner
                .instant_of(at)
                .saturating_duration_since(Instant::now())
        });
        let mut soonest = |d: Duration| timeout = Some(timeout.map_or(d, |t| t.min(d)));
        if !io.backlog.is_empty() {
            soonest(Duration::ZERO);
        }
        if let Some(at) = accept_retry {
            soonest(at.saturating_duration_since(Instant::now()));
        }
        if let Some(&(at, _)) = io.deadlines.first() {
            soonest(at.saturating_duration_since(Instant::now()));
        }
        if let Err(e) = io.poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = runner.now();
        let mut readable: Vec<usize> = std::mem::take(&mut io.backlog).into_iter().collect();
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                Token(i) if i < FIRST_SOCKET => {
                    if let Some((listener, tls, ws)) = sockets.get(i) {
                        let retry =
                            accept_all(listener, tls.as_ref(), *ws, now, &mut runner, &mut io);
                        accept_retry = retry.then(|| Instant::now() + Duration::from_millis(50));
                    }
                }
                Token(token) => {
                    if event.is_writable() {
                        io.flush(token);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        readable.push(token);
                    }
                }
            }
        }
        if accept_retry.is_some_and(|at| at <= Instant::now()) {
            accept_retry = None;
            for (listener, tls, ws) in &sockets {
                if accept_all(listener, tls.as_ref(), *ws, now, &mut runner, &mut io) {
                    accept_retry = Some(Instant::now() + Duration::from_millis(50));
                }
            }
        }
        runner.begin_reads();
        for token in readable {
            read_ready(token, now, &mut buf, &mut runner, &mut io);
        }
        runner.end_reads(now, &mut io);
        while let Some(&(at, token)) = io.deadlines.first() {
            if at > Instant::now() {
                break;
            }
            io.deadlines.remove(&(at, token));
            // Only a handshake still under way or a closed connection still
            // writing is late; anything else met its deadline.
            match io.slots.get(&token) {
                Some(s) if s.closing() => {}
                Some(s) if s.conn == ConnIndex::NONE => log::info!("TLS handshake timed out"),
                _ => continue,
            }
            io.drop_slot(token, Shutdown::Both);
        }
        // Policy answers that became ready.
        let woken: Vec<u64> =
            std::mem::take(&mut *io.woken.lock().unwrap_or_else(PoisonError::into_inner));
        for id in woken {
            let Some(mut p) = io.pending.remove(&id) else {
                continue;
            };
            let waker = Waker::from(Arc::new(AnswerWaker {
                id,
                woken: io.woken.clone(),
                waker: io.waker.clone(),
            }));
            let event = match &mut p {
                Pending::Authentication(ticket, answer) => match poll_answer(answer, &waker) {
                    Poll::Ready(outcome) => Some(Event::Authenticated(*ticket, Box::new(outcome))),
                    Poll::Pending => None,
                },
                Pending::Authorization(ticket, answer) => match poll_answer(answer, &waker) {
                    Poll::Ready(decision) => Some(Event::Authorized(*ticket, decision)),
                    Poll::Pending => None,
                },
            };
            match event {
                Some(e) => runner.handle(now, e, &mut io),
                None => {
                    io.pending.insert(id, p);
                }
            }
        }
        runner.timeout(now, &mut io);
        let controls: Vec<Control> = controls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for c in controls {
            match c {
                Control::Reload => runner.reload(now, &mut io),
                Control::Admin(call) => runner.admin(now, call, &mut io),
                Control::Shutdown => {
                    runner.shutdown(now, &mut io);
                    let conns: Vec<ConnId> = io.by_conn.keys();
                    for c in conns {
                        io.close(c);
                    }
                    // Give what is queued a moment to leave.
                    let until = Instant::now() + Duration::from_millis(100);
                    while !io.slots.is_empty() && Instant::now() < until {
                        let _ = io.poll.poll(&mut events, Some(Duration::from_millis(10)));
                        let tokens = io.slots.keys();
                        for t in tokens {
                            io.flush(t);
                        }
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// Accepts every waiting connection; `true` when accepting failed for
/// another reason than having none left (no descriptors): try again later.
fn accept_all(
    listener: &MioListener,
    tls: Option<&Tls>,
    websocket: bool,
    now: crate::time::Now,
    runner: &mut Runner,
    io: &mut MioIo,
) -> bool {
    loop {
        let (stream, peer): (TcpStream, SocketAddr) = match listener.accept() {
            Ok(a) => a,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("accept failed: {e}");
                return true;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = peer.to_string();
        let tls = match tls.map(|t| ServerConnection::new(t.config())) {
            Some(Ok(mut c)) => {
                c.set_buffer_limit(Some(io.max_output));
                Some(Side::boxed(Kind::Tls(Box::new(c))))
            }
            Some(Err(e)) => {
                log::warn!("TLS session for {peer} not created: {e}");
                continue;
            }
            None => None,
        };
        let handshaking = tls.is_some();
        let token = io.slots.insert_with(|_| Slot {
            stream,
            conn: ConnIndex::NONE,
            side: tls,
        });
        let registered = io.slots.get_mut(&token).is_some_and(|s| {
            io.poll
                .registry()
                .register(
                    &mut s.stream,
                    Token(token),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok()
        });
        if !registered {
            io.slots.remove(&token);
            continue;
        }
        if handshaking {
            io.peers.insert(token, (peer, websocket));
            io.deadlines
                .insert((Instant::now() + HANDSHAKE_TIMEOUT, token));
        } else {
            open(token, peer, None, websocket, now, runner, io);
        }
    }
}

/// The hub hears of a connection (plain: accepted; TLS: handshake done).
fn open(
    token: usize,
    peer: String,
    certificate: Option<crate::auth::ClientCertificate>,
    websocket: bool,
    now: crate::time::Now,
    runner: &mut Runner,
    io: &mut MioIo,
) {
    if !io.slots.contains_key(&token) {
        return;
    }
    let conn = runner.open(now, peer, certificate, websocket, io);
    io.pair(token, conn);
    if !runner.hub.is_open(conn) {
        io.close(conn);
    }
}

/// What one read of a socket gave.
enum Got {
    Data(usize),
    Empty,
    End(TransportClosed),
}

fn read_plain(stream: &mut TcpStream, buf: &mut [u8]) -> Got {
    loop {
        return match stream.read(buf) {
            Ok(0) => Got::End(TransportClosed::PeerClosed),
            Ok(n) => Got::Data(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => Got::Empty,
            Err(_) => Got::End(TransportClosed::Error),
        };
    }
}

/// Reads TLS records and hands out the plaintext they hold.
fn read_tls(stream: &mut TcpStream, tls: &mut ServerConnection, buf: &mut [u8]) -> Got {
    // Plaintext already decrypted goes first.
    match tls.reader().read(buf) {
        Ok(0) => return Got::End(TransportClosed::PeerClosed),
        Ok(n) => return Got::Data(n),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(_) => return Got::End(TransportClosed::Error),
    }
    loop {
        match tls.read_tls(stream) {
            Ok(0) => return Got::End(TransportClosed::PeerClosed),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Got::Empty,
            Err(_) => return Got::End(TransportClosed::Error),
        }
        if tls.process_new_packets().is_err() {
            // The alert rustls queued tells the peer why.
            let _ = flush_tls(stream, tls);
            return Got::End(TransportClosed::Error);
        }
        let _ = flush_tls(stream, tls);
        match tls.reader().read(buf) {
            Ok(0) => return Got::End(TransportClosed::PeerClosed),
            Ok(n) => return Got::Data(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if tls.is_handshaking() {
                    continue;
                }
                return Got::Data(0);
            }
            Err(_) => return Got::End(TransportClosed::Error),
        }
    }
}

/// Reads a socket until it is empty (or its turn's budget is spent) and
/// feeds the hub.
fn read_ready(
    token: usize,
    now: crate::time::Now,
    buf: &mut [u8],
    runner: &mut Runner,
    io: &mut MioIo,
) {
    let mut budget = READ_BUDGET;
    loop {
        if io.paused.contains(&token) {
            return;
        }
        let Some(s) = io.slots.get_mut(&token) else {
            return;
        };
        let was_handshaking = s.tls().is_some_and(|t| t.is_handshaking());
        let got = match s.tls_mut() {
            Some((stream, tls)) => read_tls(stream, tls, buf),
            None => read_plain(&mut s.stream, buf),
        };
        if was_handshaking && s.conn == ConnIndex::NONE {
            let done = s.tls().is_some_and(|t| !t.is_handshaking());
            if done {
                let certificate = s
                    .tls()
                    .and_then(|t| client_certificate(t.peer_certificates()));
                let (peer, websocket) = io.peers.remove(&token).unwrap_or_default();
                open(token, peer, certificate, websocket, now, runner, io);
            }
        }
        let Some(s) = io.slots.get(&token) else {
            return;
        };
        let closing = s.closing();
        match (got, io.conn_of(token)) {
            (Got::Data(0), _) => continue,
            (Got::Data(n), Some(conn)) => {
                runner.bytes(now, conn, &buf[..n], io);
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    io.backlog.insert(token);
                    return;
                }
                if n < buf.len() && io.slots.get(&token).is_some_and(|s| s.tls().is_none()) {
                    // A short read emptied the socket (edge-triggered: the
                    // next byte brings a new event).
                    return;
                }
            }
            (Got::Data(n), None) => {
                // A closed connection's input (or a handshake's), dropped:
                // within the budget too.
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    io.backlog.insert(token);
                    return;
                }
            }
            (Got::Empty, _) => return,
            (Got::End(how), Some(conn)) => {
                runner.handle(now, Event::Closed(conn, how), io);
                io.drop_slot(token, Shutdown::Write);
                return;
            }
            (Got::End(_), None) if closing => {
                io.drop_slot(token, Shutdown::Write);
                return;
            }
            (Got::End(_), None) => {
                log::info!("TLS handshake failed");
                io.drop_slot(token, Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_slot_is_three_words() {
        use std::mem::size_of;
        // Every idle connection holds one, with its serial, in the slab: 24
        // bytes in a release build (mio's stream is a descriptor there, and
        // more in a debug build).
        assert!(size_of::<(u32, Slot)>() <= size_of::<(u32, TcpStream)>().next_multiple_of(8) + 16);
    }
}
