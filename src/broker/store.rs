//! The hub's storage room: where connections and sessions live, how a
//! client id finds its session, which connections have output to drain,
//! and when each timer is due — behind a plain interface, so that
//! `registry.rs`, `routing.rs` and `wills.rs` read as MQTT rules.
//!
//! Everything here is shaped for memory, because an idle session is little
//! more than what this room keeps for it (`benches/memory.rs`,
//! `benches/load.rs`; 347 B of broker RSS per idle session against
//! mosquitto's 750 B):
//!
//! - A connection is one box in a slab ([`Conn`]: its session, the session
//!   key it is attached to, its deadline): 112 bytes, jemalloc's class
//!   below 128. A word more in it costs every connection 16 bytes.
//! - A session is two words in a slab ([`StoredSession`]: its connection,
//!   and a box for what it holds beyond it, there only when it has
//!   subscriptions or is disconnected); with the slab's serial, 24 bytes.
//! - The client-id index holds 4-byte slab indices, each session's id read
//!   where the session keeps it ([`ClientIds`]).
//! - A connection's deadline is one word in a lazy binary heap
//!   ([`Deadlines`]); the stored sessions' few timers sit in a tree.
//! - Which connections a delivery wrote to is a bit per connection slot.
//!
//! Ids are slab indices tagged with a serial ([`crate::slots`]): a stale id
//! misses instead of reaching the slot's next occupant.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use super::ConnId;
use super::wills::DelayedWill;
use crate::codec::TopicFilter;
use crate::session::{Inflight, OutboundMessage, Session};
use crate::slots::{SlotKey, Slots};
use crate::time::Instant;

/// A session in the registry; outlives its connections when persistent.
/// Never 0 (slot ids are not): an `Option` of it is a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionKey(pub NonZeroU64);

impl SlotKey for SessionKey {
    fn from_id(id: u64) -> Self {
        SessionKey(NonZeroU64::new(id).unwrap_or(NonZeroU64::MIN))
    }
    fn id(self) -> u64 {
        self.0.get()
    }
}

impl SlotKey for ConnId {
    fn from_id(id: u64) -> Self {
        ConnId(id)
    }
    fn id(self) -> u64 {
        self.0
    }
}

/// A connection: its protocol state and the session it is attached to.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) session: Session,
    /// The session it is attached to, once opened.
    pub(super) key: Option<SessionKey>,
    /// When its session wants [`Session::handle_timeout`]; the deadline
    /// queue has an entry for it at or before this.
    deadline: Option<Instant>,
}

/// A message queued for a disconnected session, with when it was queued so
/// its expiry can be lowered by the time it waited.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) msg: OutboundMessage,
    pub(super) at: Instant,
}

/// A session in the registry, kept in the slab itself (no box of its own):
/// nearly every session is a connected one that holds only these words.
#[derive(Debug)]
pub(super) struct StoredSession {
    /// The connection it is attached to: a word, as hub ids are never 0.
    conn: Option<NonZeroU64>,
    /// Its filters and what it keeps while disconnected; `None` for a
    /// connected session without subscriptions, as an idle one is. One
    /// word: with the slab's serial the entry is 24 bytes, where a word
    /// each made it 32.
    held: Option<Box<Held>>,
}

/// What a session holds beyond its connection.
#[derive(Debug, Default)]
struct Held {
    /// Its filters in the tree, for removal when the session ends.
    filters: Vec<TopicFilter>,
    /// What it keeps while disconnected; `None` while connected (the
    /// connection's session holds its delivery state). Boxed again: a
    /// connected session with subscriptions does not carry its size.
    away: Option<Box<Away>>,
}

/// What a disconnected session keeps.
#[derive(Debug, Default)]
pub(super) struct Away {
    /// Its client id once its connection is gone (while attached, the
    /// connection's session holds it: [`ClientIds`]).
    pub(super) client_id: Arc<str>,
    /// When it expires (`None`: never).
    pub(super) expires_at: Option<Instant>,
    /// Messages in flight and waiting for the window when it left.
    pub(super) inflight: Inflight,
    /// QoS 1/2 messages that came for it since.
    pub(super) offline: VecDeque<Queued>,
    /// Its will, waiting out its delay.
    pub(super) will: Option<DelayedWill>,
    /// The identity of its last successful (re)authentication, kept with
    /// its durable record (never a token).
    pub(super) identity: Option<Arc<crate::auth::Identity>>,
}

impl StoredSession {
    fn new(conn: ConnId) -> Self {
        let mut s = StoredSession {
            conn: None,
            held: None,
        };
        s.set_conn(Some(conn));
        s
    }

    /// The connection it is attached to.
    pub(super) fn conn(&self) -> Option<ConnId> {
        self.conn.map(|id| ConnId(id.get()))
    }

    pub(super) fn set_conn(&mut self, conn: Option<ConnId>) {
        self.conn = conn.and_then(|id| NonZeroU64::new(id.0));
    }

    /// What it keeps while disconnected, made when it had nothing.
    pub(super) fn away(&mut self) -> &mut Away {
        self.held
            .get_or_insert_with(Box::default)
            .away
            .get_or_insert_with(Box::default)
    }

    /// Its identity while disconnected.
    pub(super) fn away_identity(&self) -> Option<&Arc<crate::auth::Identity>> {
        self.away_ref()?.identity.as_ref()
    }

    pub(super) fn away_ref(&self) -> Option<&Away> {
        self.held.as_ref()?.away.as_deref()
    }

    /// What it kept while disconnected, leaving it nothing (an empty one
    /// if it had nothing).
    pub(super) fn take_away(&mut self) -> Away {
        let away = self.held.as_mut().and_then(|h| h.away.take());
        self.trim();
        away.map(|b| *b).unwrap_or_default()
    }

    pub(super) fn push_filter(&mut self, filter: TopicFilter) {
        self.held
            .get_or_insert_with(Box::default)
            .filters
            .push(filter);
    }

    pub(super) fn remove_filter(&mut self, filter: &TopicFilter) {
        if let Some(h) = self.held.as_mut()
            && let Some(i) = h.filters.iter().position(|f| f == filter)
        {
            h.filters.swap_remove(i);
        }
        self.trim();
    }

    /// Its filters, in the order they were made.
    pub(super) fn filters(&self) -> &[TopicFilter] {
        self.held.as_ref().map_or(&[], |h| &h.filters)
    }

    pub(super) fn take_filters(&mut self) -> Vec<TopicFilter> {
        let filters = self
            .held
            .as_mut()
            .map(|h| std::mem::take(&mut h.filters))
            .unwrap_or_default();
        self.trim();
        filters
    }

    /// Lets go of the box once it holds nothing.
    fn trim(&mut self) {
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.filters.is_empty() && h.away.is_none())
        {
            self.held = None;
        }
    }

    /// When it expires, if it is disconnected and ever does.
    pub(super) fn expires_at(&self) -> Option<Instant> {
        self.away_ref().and_then(|a| a.expires_at)
    }

    /// Its delayed will, if due at `due_at` (any: `None`).
    pub(super) fn take_will(&mut self, due_at: Option<Instant>) -> Option<DelayedWill> {
        let away = self.held.as_mut()?.away.as_mut()?;
        away.will.take_if(|w| due_at.is_none_or(|now| w.at <= now))
    }
}

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A connection's: keep alive, CONNECT timeout, credential expiry.
    Conn(ConnId),
    /// A stored session's will delay.
    Will(SessionKey),
    /// A stored session's expiry.
    Expiry(SessionKey),
}

/// The hub's storage. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Store {
    /// The session and its hub state in one box, so that the slab entry is
    /// two words.
    conns: Slots<ConnId, Box<Conn>>,
    sessions: Slots<SessionKey, StoredSession>,
    by_client_id: ClientIndex,
    deadlines: Deadlines,
    written: Written,
}

impl Store {
    /// Room for `connections` connections and `sessions` sessions, reserved
    /// now: address space only, until they come. A table that grows instead
    /// copies itself at each doubling, and the copies it leaves behind stay
    /// resident until the allocator gives them back. At most 2^20 are
    /// reserved: more grow past them.
    pub(super) fn reserve(&mut self, connections: usize, sessions: usize) {
        let connections = connections.min(1 << 20);
        self.conns.reserve(connections);
        self.sessions.reserve(connections.min(sessions));
        self.deadlines.reserve(connections);
    }

    // Connections.

    /// Connections open.
    pub(super) fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A new connection whose session `make` builds for its id.
    pub(super) fn open(&mut self, make: impl FnOnce(ConnId) -> Session) -> ConnId {
        self.conns.insert_with(|id| {
            Box::new(Conn {
                session: make(id),
                key: None,
                deadline: None,
            })
        })
    }

    pub(super) fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(&id).map(|c| &**c)
    }

    pub(super) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id).map(|c| &mut **c)
    }

    /// Every connection, in the order they opened.
    pub(super) fn conn_ids(&self) -> Vec<ConnId> {
        self.conns.keys()
    }

    /// Every connection's session (to hand them a new configuration).
    pub(super) fn conn_sessions_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.conns.values_mut().map(|c| &mut c.session)
    }

    /// Forgets a connection; its deadline goes with it.
    pub(super) fn close(&mut self, id: ConnId) -> Option<Box<Conn>> {
        let c = self.conns.remove(&id)?;
        self.deadlines.forget_conn(id, c.deadline);
        Some(c)
    }

    // Sessions.

    /// Sessions held, connected or stored.
    pub(super) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub(super) fn session(&self, key: SessionKey) -> Option<&StoredSession> {
        self.sessions.get(&key)
    }

    pub(super) fn session_mut(&mut self, key: SessionKey) -> Option<&mut StoredSession> {
        self.sessions.get_mut(&key)
    }

    /// Every session, in the order they were made.
    pub(super) fn session_keys(&self) -> Vec<SessionKey> {
        self.sessions.keys()
    }

    /// The identity of a session's last authentication: its connection's,
    /// or the one it left with.
    pub(super) fn session_identity(&self, key: SessionKey) -> Option<&Arc<crate::auth::Identity>> {
        let s = self.session(key)?;
        match s.conn() {
            Some(id) => self.conn(id)?.session.identity(),
            None => s.away_identity(),
        }
    }

    /// The session of `client_id`, if there is one.
    pub(super) fn find_session(&self, client_id: &str) -> Option<SessionKey> {
        self.by_client_id.get(client_id, self.client_ids())
    }

    /// A new session for `client_id`, attached to `conn` (whose session
    /// holds the client id from now on).
    pub(super) fn new_session(&mut self, conn: ConnId, client_id: &str) -> SessionKey {
        let key = self.sessions.insert_with(|_| StoredSession::new(conn));
        self.by_client_id.insert(
            key,
            client_id,
            ClientIds {
                sessions: &self.sessions,
                conns: &self.conns,
            },
        );
        key
    }

    /// A stored session brought back from before a restart: disconnected,
    /// under `client_id`.
    pub(super) fn restore_session(&mut self, client_id: Arc<str>) -> SessionKey {
        let key = self.sessions.insert_with(|_| StoredSession {
            conn: None,
            held: None,
        });
        if let Some(s) = self.sessions.get_mut(&key) {
            s.away().client_id = client_id.clone();
        }
        self.by_client_id.insert(
            key,
            &client_id,
            ClientIds {
                sessions: &self.sessions,
                conns: &self.conns,
            },
        );
        key
    }

    /// Removes a session, whose client id is `client_id` (passed in: a
    /// session that just left its connection keeps it nowhere yet).
    pub(super) fn remove_session(
        &mut self,
        key: SessionKey,
        client_id: &str,
    ) -> Option<StoredSession> {
        // A stale key names no session: the index entry at its slab index
        // may be another's.
        if !self.sessions.contains_key(&key) {
            return None;
        }
        self.by_client_id.remove(
            key,
            client_id,
            ClientIds {
                sessions: &self.sessions,
                conns: &self.conns,
            },
        );
        self.sessions.remove(&key)
    }

    /// A session's client id.
    pub(super) fn client_id(&self, key: SessionKey) -> Option<&Arc<str>> {
        self.client_ids().get(key)
    }

    fn client_ids(&self) -> ClientIds<'_> {
        ClientIds {
            sessions: &self.sessions,
            conns: &self.conns,
        }
    }

    // Connections with output to drain.

    /// A delivery wrote to `id`: it is drained, once, after the input.
    pub(super) fn mark_written(&mut self, id: ConnId) {
        self.written.mark(id);
    }

    /// `id` is being drained: a later write marks it again.
    pub(super) fn unmark_written(&mut self, id: ConnId) {
        self.written.unmark(id);
    }

    /// The connections written to since the last call, in the order they
    /// were first written to.
    pub(super) fn take_written(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.written.order)
    }

    // Deadlines.

    /// Asks `id`'s session when it next wants [`Session::handle_timeout`],
    /// and keeps that.
    pub(super) fn reschedule(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let next = c.session.poll_timeout();
        if next != c.deadline {
            let old = std::mem::replace(&mut c.deadline, next);
            self.deadlines.conn_moved(id, old, next);
            self.deadlines.compact(&self.conns);
        }
    }

    /// A stored session's timer is due at `at`.
    pub(super) fn set_deadline(&mut self, timer: Timer, at: Instant) {
        self.deadlines.set(timer, at);
    }

    /// A stored session's timer that was due at `at` is not any more.
    pub(super) fn cancel_deadline(&mut self, timer: Timer, at: Instant) {
        self.deadlines.cancel(timer, at);
    }

    /// The earliest deadline (a connection's may be a stale one, earlier:
    /// it comes due, and does nothing).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Every timer due at `now`, in the order of their deadlines. A due
    /// connection's deadline is taken: [`Store::reschedule`] asks anew.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Timer> {
        let due = self.deadlines.take_due(now, &mut self.conns);
        self.deadlines.compact(&self.conns);
        due
    }

    #[cfg(test)]
    pub(super) fn queued_conn_deadlines(&self) -> usize {
        self.deadlines.heap.len()
    }
}

/// The deadline queue. A connection has an entry at or before its deadline
/// in a binary heap: one whose deadline moves later (every packet moves its
/// keep alive) keeps the entry it has, and entries that went stale (the
/// deadline moved, the connection closed, its slot went to another) are
/// checked against the connection in the slot when they come due; past
/// twice the connections, the heap is rebuilt from them. An entry is a
/// word ([`ConnEntry`]) where a tree entry was about 33 bytes, and nearly
/// every connection has one. The stored sessions' timers (and those of
/// connections in a slot past [`ConnEntry::SLOTS`]) are exact entries in a
/// tree.
#[derive(Debug, Default)]
struct Deadlines {
    heap: BinaryHeap<Reverse<u64>>,
    tree: BTreeSet<(Instant, PackedTimer)>,
}

impl Deadlines {
    fn reserve(&mut self, connections: usize) {
        self.heap
            .reserve(connections.saturating_sub(self.heap.len()));
    }

    fn set(&mut self, timer: Timer, at: Instant) {
        self.tree.insert((at, PackedTimer::of(timer)));
    }

    fn cancel(&mut self, timer: Timer, at: Instant) {
        self.tree.remove(&(at, PackedTimer::of(timer)));
    }

    fn next(&self) -> Option<Instant> {
        let conn = self.heap.peek().map(|Reverse(w)| ConnEntry::at(*w));
        let stored = self.tree.first().map(|(at, _)| *at);
        conn.into_iter().chain(stored).min()
    }

    /// A connection's deadline moved from `old` to `next`.
    fn conn_moved(&mut self, id: ConnId, old: Option<Instant>, next: Option<Instant>) {
        if !ConnEntry::in_heap(id) {
            // Past the heap's slots: one exact entry in the tree.
            if let Some(at) = old {
                self.cancel(Timer::Conn(id), at);
            }
            if let Some(at) = next {
                self.set(Timer::Conn(id), at);
            }
            return;
        }
        // A later deadline keeps the entry the earlier one has.
        let earlier = next.is_some_and(|at| old.is_none_or(|old| at < old));
        if let Some(at) = next
            && earlier
            && let Some(word) = ConnEntry::pack(at, id)
        {
            self.heap.push(Reverse(word));
        }
    }

    /// A connection closed with this deadline: its heap entry goes stale
    /// (checked when it comes due); one in the tree goes now.
    fn forget_conn(&mut self, id: ConnId, deadline: Option<Instant>) {
        if !ConnEntry::in_heap(id)
            && let Some(at) = deadline
        {
            self.cancel(Timer::Conn(id), at);
        }
    }

    fn take_due(&mut self, now: Instant, conns: &mut Slots<ConnId, Box<Conn>>) -> Vec<Timer> {
        // Take what is due first: what the handlers schedule waits for the
        // next call, so the hub's loop over them always ends.
        let mut due: Vec<(Instant, PackedTimer)> = Vec::new();
        while let Some(&Reverse(word)) = self.heap.peek() {
            if ConnEntry::at(word) > now {
                break;
            }
            self.heap.pop();
            // Whoever is in the slot now: an entry left by the one before
            // is at or before any deadline too.
            let Some((id, c)) = conns.at_index_mut(ConnEntry::slot(word)) else {
                continue;
            };
            match c.deadline {
                // Due at its deadline, in the order it always had among the
                // other timers; its entry is taken.
                Some(deadline) if deadline <= now => {
                    c.deadline = None;
                    due.push((deadline, PackedTimer::of(Timer::Conn(id))));
                }
                // Past 557 years an entry cannot be later than now: the
                // deadline waits in the tree, exact.
                Some(later) => match ConnEntry::pack(later, id) {
                    Some(w) if ConnEntry::at(w) > now => self.heap.push(Reverse(w)),
                    _ => self.set(Timer::Conn(id), later),
                },
                None => {}
            }
        }
        let later = self
            .tree
            .split_off(&(now + Duration::from_millis(1), PackedTimer(0)));
        for (at, timer) in std::mem::replace(&mut self.tree, later) {
            if let Timer::Conn(id) = timer.unpack() {
                // A connection past the heap's slots: its entry is taken too.
                match conns.get_mut(&id) {
                    Some(c) => c.deadline = None,
                    None => continue,
                }
            }
            due.push((at, timer));
        }
        due.sort_unstable();
        due.dedup();
        due.into_iter().map(|(_, t)| t.unpack()).collect()
    }

    /// Rebuilds the heap from the connections' deadlines once stale entries
    /// outnumber live ones: it stays within twice the connections, whatever
    /// their deadlines do.
    fn compact(&mut self, conns: &Slots<ConnId, Box<Conn>>) {
        if self.heap.len() <= 2 * conns.len() + 64 {
            return;
        }
        let live: Vec<Reverse<u64>> = conns
            .iter()
            .filter_map(|(id, c)| ConnEntry::pack(c.deadline?, id).map(Reverse))
            .collect();
        self.heap = BinaryHeap::from(live);
    }
}

/// A timer in a word: its kind in the top two bits (ids stay below 2^62),
/// in [`Timer`]'s order, so that a tree entry is 16 bytes, not 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PackedTimer(u64);

impl PackedTimer {
    fn of(timer: Timer) -> Self {
        Self(match timer {
            Timer::Conn(id) => id.0,
            Timer::Will(key) => 1 << 62 | key.id(),
            Timer::Expiry(key) => 2 << 62 | key.id(),
        })
    }

    fn unpack(self) -> Timer {
        let id = self.0 & ((1 << 62) - 1);
        match self.0 >> 62 {
            0 => Timer::Conn(ConnId(id)),
            1 => Timer::Will(SessionKey::from_id(id)),
            _ => Timer::Expiry(SessionKey::from_id(id)),
        }
    }
}

/// A connection's entry in the heap, in a word: the time in the upper 44
/// bits (milliseconds since the host's origin, 557 years; later deadlines
/// are kept as that, an entry at or before the deadline as the heap wants),
/// the connection's slot in the lower 20.
struct ConnEntry;

impl ConnEntry {
    const SLOT_BITS: u32 = 20;
    /// Slots below this have their deadline in the heap.
    const SLOTS: u64 = 1 << Self::SLOT_BITS;
    const MAX_MILLIS: u64 = (1 << (64 - Self::SLOT_BITS)) - 1;

    /// Whether `id`'s deadlines go in the heap (its slot is below
    /// [`Self::SLOTS`]); past them, they go in the tree, exact.
    fn in_heap(id: ConnId) -> bool {
        (crate::slots::index_of(id.0) as u64) < Self::SLOTS
    }

    /// The entry for `id` at `at`; `None` for a slot past [`Self::SLOTS`].
    fn pack(at: Instant, id: ConnId) -> Option<u64> {
        let slot = crate::slots::index_of(id.0) as u64;
        Self::in_heap(id).then(|| at.as_millis().min(Self::MAX_MILLIS) << Self::SLOT_BITS | slot)
    }

    fn at(word: u64) -> Instant {
        Instant::from_millis(word >> Self::SLOT_BITS)
    }

    fn slot(word: u64) -> u32 {
        (word & (Self::SLOTS - 1)) as u32
    }
}

/// The connections deliveries wrote to: drained after the input, each
/// once, in the order they were first written to. A bit per connection
/// slot says whether one is in the list already.
#[derive(Debug, Default)]
struct Written {
    order: Vec<ConnId>,
    bits: Vec<u64>,
}

impl Written {
    fn mark(&mut self, id: ConnId) {
        let slot = crate::slots::index_of(id.0);
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.order.push(id);
        }
    }

    fn unmark(&mut self, id: ConnId) {
        let slot = crate::slots::index_of(id.0);
        if let Some(w) = self.bits.get_mut(slot / 64) {
            *w &= !(1u64 << (slot % 64));
        }
    }
}

/// Where a session's client id is read: its connection's session while it
/// is attached, what it kept when it left otherwise. Keeping it in neither
/// the session's slab entry nor the index saves two words a session.
#[derive(Clone, Copy)]
struct ClientIds<'a> {
    sessions: &'a Slots<SessionKey, StoredSession>,
    conns: &'a Slots<ConnId, Box<Conn>>,
}

impl<'a> ClientIds<'a> {
    /// The client id of the session at slab index `index`.
    fn at(self, index: u32) -> Option<&'a Arc<str>> {
        self.get(self.sessions.key_at(index)?)
    }

    fn get(self, key: SessionKey) -> Option<&'a Arc<str>> {
        let s = self.sessions.get(&key)?;
        match s.conn() {
            Some(id) => self.conns.get(&id)?.session.client_id_shared(),
            None => s.away_ref().map(|a| &a.client_id),
        }
    }
}

/// The sessions by client id: a hash table of session slab indices alone
/// (4 bytes), each session's client id read where the session keeps it
/// ([`ClientIds`]). An index is a word's half where a map entry held the id
/// too, in nodes half full.
#[derive(Debug, Default)]
struct ClientIndex {
    table: hashbrown::HashTable<u32>,
    /// Seeded per process: client ids are chosen by clients, and a known
    /// hash would let them collide. Nothing iterates the table, so its order
    /// never shows.
    hasher: std::hash::RandomState,
}

/// A session key's slab index, as the index keeps it.
fn slot(key: SessionKey) -> u32 {
    crate::slots::index_of(key.id()) as u32
}

impl ClientIndex {
    fn hash(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
    }

    /// The hash of the session at an index, for the table to move it.
    fn rehash<'a>(
        hasher: &'a std::hash::RandomState,
        ids: ClientIds<'a>,
    ) -> impl Fn(&u32) -> u64 + 'a {
        move |i| ids.at(*i).map_or(0, |id| hasher.hash_one(&**id))
    }

    fn get(&self, client_id: &str, ids: ClientIds<'_>) -> Option<SessionKey> {
        let index = self
            .table
            .find(self.hash(client_id), |i| {
                ids.at(*i).is_some_and(|id| **id == *client_id)
            })
            .copied()?;
        ids.sessions.key_at(index)
    }

    /// Adds `key`, whose client id is `client_id`; every session in the
    /// table has its id where `ids` reads it.
    fn insert(&mut self, key: SessionKey, client_id: &str, ids: ClientIds<'_>) {
        let hash = self.hash(client_id);
        self.table
            .insert_unique(hash, slot(key), Self::rehash(&self.hasher, ids));
    }

    /// Removes `key`, whose client id is `client_id`; every other session
    /// has its id where `ids` reads it.
    fn remove(&mut self, key: SessionKey, client_id: &str, ids: ClientIds<'_>) {
        let index = slot(key);
        if let Ok(entry) = self.table.find_entry(self.hash(client_id), |i| *i == index) {
            entry.remove();
        }
        // A storm of sessions that ended leaves no table its size behind.
        if self.table.capacity() > 64 && self.table.len() < self.table.capacity() / 4 {
            self.table
                .shrink_to(self.table.len() * 2, Self::rehash(&self.hasher, ids));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_timer_unpacks_to_itself_and_keeps_the_order() {
        let timers = [
            Timer::Conn(ConnId(5 << 32 | 3)),
            Timer::Conn(ConnId(6 << 32)),
            Timer::Will(SessionKey::from_id(1 << 32 | 9)),
            Timer::Will(SessionKey::from_id((1 << 62) - 1)),
            Timer::Expiry(SessionKey::from_id(7 << 32 | 1)),
        ];
        for pair in timers.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(PackedTimer::of(pair[0]) < PackedTimer::of(pair[1]));
        }
        for t in timers {
            assert_eq!(PackedTimer::of(t).unpack(), t);
        }
    }

    #[test]
    fn what_every_idle_session_holds_fits_its_allocator_classes() {
        use std::mem::size_of;
        // The connection's box: jemalloc's 112-byte class (the next is 128).
        assert!(size_of::<Conn>() <= 112, "{}", size_of::<Conn>());
        // A session lives in its slab entry, with the slot's serial: 24
        // bytes.
        assert!(size_of::<(u32, StoredSession)>() <= 24);
        assert_eq!(size_of::<Option<Instant>>(), 8);
    }

    #[test]
    fn a_connection_entry_packs_its_time_and_slot_in_a_word() {
        let at = Instant::from_millis(1_800_000_000_123);
        let id = ConnId(7 << 32 | 12_345);
        let w = ConnEntry::pack(at, id).unwrap();
        assert_eq!((ConnEntry::at(w), ConnEntry::slot(w)), (at, 12_345));
        // Words order by time first.
        let later = ConnEntry::pack(at + Duration::from_millis(1), ConnId(1 << 32)).unwrap();
        assert!(later > w);
        // A deadline past 557 years is kept as that: earlier, as the heap
        // wants.
        let far = ConnEntry::pack(Instant::from_millis(u64::MAX - 1), id).unwrap();
        assert_eq!(
            ConnEntry::at(far),
            Instant::from_millis(ConnEntry::MAX_MILLIS)
        );
        assert_eq!(ConnEntry::slot(far), 12_345);
        // A slot past the heap's has no word: its deadline goes in the tree.
        assert_eq!(
            ConnEntry::pack(at, ConnId(1 << 32 | ConnEntry::SLOTS)),
            None
        );
        assert!(ConnEntry::pack(at, ConnId(1 << 32 | (ConnEntry::SLOTS - 1))).is_some());
    }

    #[test]
    fn a_connection_is_written_to_once_per_drain_in_order() {
        let mut w = Written::default();
        let (a, b) = (ConnId(1 << 32 | 70), ConnId(2 << 32 | 3));
        w.mark(a);
        w.mark(b);
        w.mark(a);
        assert_eq!(std::mem::take(&mut w.order), [a, b]);
        w.mark(a);
        assert!(w.order.is_empty(), "still marked until drained");
        w.unmark(a);
        w.mark(a);
        assert_eq!(w.order, [a]);
    }
}
