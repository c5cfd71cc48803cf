//! Where durable state lives: the hub emits [`Persist`] actions, a driver
//! commits them through a [`Storage`] before it carries out anything that
//! follows them, one transaction per turn of its loop; at start, what was
//! stored goes back into the hub ([`crate::broker::Broker::restore`]).
//!
//! The built-in store is [`RedbStorage`]: one redb file (pure Rust, ACID,
//! copy-on-write B-trees with checksums, each commit flushed to disk before
//! it returns — `Durability::Immediate`, no background thread). A torn
//! write leaves the last committed state; a file that is not a store, or
//! one redb finds corrupt, is refused with its path, never opened empty.

use std::collections::{BTreeMap, BTreeSet};
#[cfg(feature = "redb")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "redb")]
use crate::broker::{MessageRecord, SentState};
use crate::broker::{
    Persist, Restored, RetainedMessage, SessionRecord, StoredMessage, WillKey, WillRecord,
};
use crate::codec::PacketId;

/// A store of durable state, as a driver uses it.
///
/// What survives a crash is always a prefix of the changes in the order
/// they were committed: everything up to the last [`Storage::commit`] or
/// [`Storage::flush`], and perhaps some of what
/// [`Storage::commit_unflushed`] applied after it.
pub trait Storage: Send + std::fmt::Debug {
    /// Makes `ops` durable, in order, all or none — and every change
    /// committed unflushed before them: when this returns `Ok`, they
    /// survive a crash.
    ///
    /// # Errors
    /// [`StorageError`] when they could not be (none of them is then).
    fn commit(&mut self, ops: &[Persist]) -> Result<(), StorageError>;

    /// Applies `ops`, in order, all or none, without waiting for the disk:
    /// they become durable with the next [`Storage::commit`] or
    /// [`Storage::flush`], and a crash before it may lose them. A store
    /// that cannot tell the two apart commits them.
    ///
    /// # Errors
    /// [`StorageError`] when they could not be applied.
    fn commit_unflushed(&mut self, ops: &[Persist]) -> Result<(), StorageError> {
        self.commit(ops)
    }

    /// Makes what was committed unflushed durable.
    ///
    /// # Errors
    /// [`StorageError`] when it could not be.
    fn flush(&mut self) -> Result<(), StorageError> {
        self.commit(&[])
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store file could not be opened, or is not a store.
    #[error("store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A record in it does not read back.
    #[error("store {path}: the record of {key:?} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The record's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A commit failed (a failing disk): nothing of it is durable.
    #[error("store {path}: commit failed: {reason}")]
    Commit {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A commit failed for want of space: nothing of it is durable; the
    /// same commit may succeed once space returns.
    #[error("store {path}: no space left for a commit")]
    Full {
        /// The file.
        path: PathBuf,
    },
}

/// A store in memory, applying each [`Persist`] as [`RedbStorage`] does:
/// for tests and simulations of restarts (a crash keeps what was
/// committed and flushed: [`MemoryStorage::load`] leaves out what
/// [`Storage::commit_unflushed`] applied since), and for an embedder that
/// wants the hub's durable records without a disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStorage {
    /// Committed without a flush: lost by a crash.
    unflushed: Vec<Persist>,
    retained: BTreeMap<String, RetainedMessage>,
    sessions: BTreeMap<Arc<str>, SessionRecord>,
    messages: BTreeMap<(Arc<str>, u64), StoredMessage>,
    releases: BTreeSet<(Arc<str>, PacketId)>,
    wills: BTreeMap<(Arc<str>, WillKey), WillRecord>,
}

impl MemoryStorage {
    /// Applies one change.
    pub fn apply(&mut self, op: &Persist) {
        match op {
            Persist::Retain(msg) => {
                self.retained.insert(msg.topic.to_string(), msg.clone());
            }
            Persist::Unretain(topic) => {
                self.retained.remove(topic.as_str());
            }
            Persist::Session(record) => {
                self.sessions
                    .insert(record.client_id.clone(), record.clone());
            }
            Persist::EndSession(client_id) => {
                self.sessions.remove(client_id);
                self.messages.retain(|(id, _), _| id != client_id);
                self.releases.retain(|(id, _)| id != client_id);
            }
            Persist::Message(record) => {
                self.messages.insert(
                    (record.client_id.clone(), record.seq.get()),
                    StoredMessage {
                        record: record.clone(),
                        sent: None,
                    },
                );
            }
            Persist::MessageSent {
                client_id,
                seq,
                state,
            } => {
                if let Some(m) = self.messages.get_mut(&(client_id.clone(), seq.get())) {
                    m.sent = Some(*state);
                }
            }
            Persist::MessageDone { client_id, seq } => {
                self.messages.remove(&(client_id.clone(), seq.get()));
            }
            Persist::AwaitingRelease {
                client_id,
                packet_id,
            } => {
                self.releases.insert((client_id.clone(), *packet_id));
            }
            Persist::ReleaseReceived {
                client_id,
                packet_id,
            } => {
                self.releases.remove(&(client_id.clone(), *packet_id));
            }
            Persist::Will(record) => {
                self.wills
                    .insert((record.client_id.clone(), record.key), record.clone());
            }
            Persist::WillDone { client_id, key } => {
                self.wills.remove(&(client_id.clone(), *key));
            }
        }
    }

    /// A crash: what was committed unflushed since the last commit or
    /// flush is gone.
    pub fn crash(&mut self) {
        self.unflushed.clear();
    }

    /// What a crash now would keep, as [`RedbStorage::load`] reads it
    /// back: everything but what was committed unflushed since the last
    /// commit or flush.
    pub fn load(&self) -> Restored {
        Restored {
            retained: self.retained.values().cloned().collect(),
            sessions: self.sessions.values().cloned().collect(),
            messages: self.messages.values().cloned().collect(),
            awaiting_release: self.releases.iter().cloned().collect(),
            wills: self.wills.values().cloned().collect(),
        }
    }
}

impl Storage for MemoryStorage {
    fn commit(&mut self, ops: &[Persist]) -> Result<(), StorageError> {
        let unflushed = std::mem::take(&mut self.unflushed);
        unflushed.iter().chain(ops).for_each(|op| self.apply(op));
        Ok(())
    }

    fn commit_unflushed(&mut self, ops: &[Persist]) -> Result<(), StorageError> {
        self.unflushed.extend_from_slice(ops);
        Ok(())
    }
}

/// The built-in store: one redb file.
#[cfg(feature = "redb")]
pub struct RedbStorage {
    /// `None` after an I/O error: redb then refuses everything until the
    /// file is opened again, which the next commit does.
    db: Option<redb::Database>,
    path: PathBuf,
}

/// Retained messages by topic: the record of [`RetainedMessage::encode`].
#[cfg(feature = "redb")]
const RETAINED: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("retained");

/// Persistent sessions by client id: the record of [`SessionRecord::encode`].
#[cfg(feature = "redb")]
const SESSIONS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sessions");

/// The QoS 1/2 messages kept for persistent sessions, by client id and
/// [`MessageRecord::seq`]: [`SentState::encode`] (zeros while not sent), then
/// [`MessageRecord::encode_message`].
#[cfg(feature = "redb")]
const MESSAGES: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("messages");

/// Inbound QoS 2 packet ids of persistent sessions waiting for PUBREL.
#[cfg(feature = "redb")]
const RELEASES: redb::TableDefinition<(&str, u16), ()> = redb::TableDefinition::new("releases");

/// The wills, by client id and [`WillKey`] (epoch, connection): the record
/// of [`WillRecord::encode`].
#[cfg(feature = "redb")]
const WILLS: redb::TableDefinition<(&str, u64, u64), &[u8]> = redb::TableDefinition::new("wills");

/// The store's tables, open in one write transaction.
#[cfg(feature = "redb")]
struct Tables<'t> {
    retained: redb::Table<'t, &'static str, &'static [u8]>,
    sessions: redb::Table<'t, &'static str, &'static [u8]>,
    messages: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    releases: redb::Table<'t, (&'static str, u16), ()>,
    wills: redb::Table<'t, (&'static str, u64, u64), &'static [u8]>,
    /// Messages kept in this transaction, written at its end: one sent (or
    /// even acknowledged) in the same turn is written once (or not at all)
    /// instead of written, read back and rewritten.
    fresh: BTreeMap<(Arc<str>, u64), Vec<u8>>,
}

#[cfg(feature = "redb")]
impl Tables<'_> {
    fn apply(&mut self, op: &Persist) -> Result<(), redb::Error> {
        use redb::ReadableTable;
        match op {
            Persist::Retain(msg) => {
                self.retained
                    .insert(msg.topic.as_str(), msg.encode().as_slice())?;
            }
            Persist::Unretain(topic) => {
                self.retained.remove(topic.as_str())?;
            }
            Persist::Session(record) => {
                self.sessions
                    .insert(&*record.client_id, record.encode().as_slice())?;
            }
            Persist::EndSession(client_id) => {
                let id = &**client_id;
                self.fresh.retain(|(c, _), _| c != client_id);
                self.sessions.remove(id)?;
                self.messages
                    .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
                self.releases
                    .retain_in((id, 0)..=(id, u16::MAX), |_, _| false)?;
            }
            Persist::Message(record) => {
                let mut value = SentState::UNSENT.to_vec();
                value.extend_from_slice(&record.encode_message());
                self.fresh
                    .insert((record.client_id.clone(), record.seq.get()), value);
            }
            Persist::MessageSent {
                client_id,
                seq,
                state,
            } => {
                if let Some(value) = self.fresh.get_mut(&(client_id.clone(), seq.get())) {
                    if let Some(head) = value.first_chunk_mut::<3>() {
                        *head = state.encode();
                    }
                    return Ok(());
                }
                let key = (&**client_id, seq.get());
                // A message no longer kept stays gone.
                let value = self.messages.get(key)?.map(|v| v.value().to_vec());
                if let Some(mut value) = value
                    && let Some(head) = value.first_chunk_mut::<3>()
                {
                    *head = state.encode();
                    self.messages.insert(key, value.as_slice())?;
                }
            }
            Persist::MessageDone { client_id, seq } => {
                if self.fresh.remove(&(client_id.clone(), seq.get())).is_none() {
                    self.messages.remove((&**client_id, seq.get()))?;
                }
            }
            Persist::AwaitingRelease {
                client_id,
                packet_id,
            } => {
                self.releases.insert((&**client_id, packet_id.get()), ())?;
            }
            Persist::ReleaseReceived {
                client_id,
                packet_id,
            } => {
                self.releases.remove((&**client_id, packet_id.get()))?;
            }
            Persist::Will(record) => {
                let key = (&*record.client_id, record.key.epoch, record.key.conn);
                self.wills.insert(key, record.encode().as_slice())?;
            }
            Persist::WillDone { client_id, key } => {
                self.wills.remove((&**client_id, key.epoch, key.conn))?;
            }
        }
        Ok(())
    }

    /// Writes the messages kept in this transaction.
    fn finish(&mut self) -> Result<(), redb::Error> {
        for ((client_id, seq), value) in std::mem::take(&mut self.fresh) {
            self.messages.insert((&*client_id, seq), value.as_slice())?;
        }
        Ok(())
    }
}

#[cfg(feature = "redb")]
impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(feature = "redb")]
impl RedbStorage {
    /// Opens the store at `path`, making it (and its folder) if there is
    /// none.
    ///
    /// # Errors
    /// [`StorageError::Open`] for a file that cannot be opened or is not a
    /// store (another process holding it included).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let open = |reason: String| StorageError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open(e.to_string()))?;
        }
        let db = redb::Database::create(path).map_err(|e| open(e.to_string()))?;
        let store = Self {
            db: Some(db),
            path: path.to_owned(),
        };
        // The tables exist from the start: reading a new store finds them.
        store
            .commit_with(redb::Durability::Immediate, |_| Ok(()))
            .map_err(|e| open(e.to_string()))?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every retained message stored, by topic.
    ///
    /// # Errors
    /// [`StorageError::Open`] when the store cannot be read,
    /// [`StorageError::Corrupt`] for a record that does not read back.
    pub fn retained(&self) -> Result<Vec<RetainedMessage>, StorageError> {
        self.read(RETAINED, str::to_owned, |key, value| {
            let msg = RetainedMessage::decode(value).map_err(|e| e.to_string())?;
            if msg.topic.as_str() != key {
                return Err(format!("it names {:?}", msg.topic.as_str()));
            }
            Ok(msg)
        })
    }

    /// Every persistent session stored, by client id.
    ///
    /// # Errors
    /// As [`RedbStorage::retained`].
    pub fn sessions(&self) -> Result<Vec<SessionRecord>, StorageError> {
        self.read(SESSIONS, str::to_owned, |key, value| {
            let record = SessionRecord::decode(value).map_err(|e| e.to_string())?;
            if &*record.client_id != key {
                return Err(format!("it names {:?}", record.client_id));
            }
            Ok(record)
        })
    }

    /// Everything stored, to hand back to the hub at start
    /// ([`crate::broker::Broker::restore_all`]).
    ///
    /// # Errors
    /// As [`RedbStorage::retained`].
    pub fn load(&self) -> Result<Restored, StorageError> {
        Ok(Restored {
            retained: self.retained()?,
            sessions: self.sessions()?,
            messages: self.messages()?,
            awaiting_release: self.awaiting_release()?,
            wills: self.wills()?,
        })
    }

    /// Every message kept for a persistent session, by client id and in
    /// the order the session got them, with where its exchange stood.
    ///
    /// # Errors
    /// As [`RedbStorage::retained`].
    pub fn messages(&self) -> Result<Vec<StoredMessage>, StorageError> {
        self.read(
            MESSAGES,
            |(client_id, seq)| format!("{client_id}/{seq}"),
            |(client_id, seq), value| {
                let seq = std::num::NonZeroU64::new(seq).ok_or("seq 0")?;
                let (head, message) = value
                    .split_first_chunk::<3>()
                    .ok_or("shorter than its header")?;
                let sent = SentState::decode(*head).map_err(|e| e.to_string())?;
                let record = MessageRecord::decode_message(client_id.into(), seq, message)
                    .map_err(|e| e.to_string())?;
                Ok(StoredMessage { record, sent })
            },
        )
    }

    /// Every inbound QoS 2 packet id of a persistent session waiting for
    /// PUBREL, by client id.
    ///
    /// # Errors
    /// As [`RedbStorage::retained`].
    pub fn awaiting_release(&self) -> Result<Vec<(Arc<str>, PacketId)>, StorageError> {
        self.read(
            RELEASES,
            |(client_id, id)| format!("{client_id}/{id}"),
            |(client_id, id), ()| {
                let packet_id = PacketId::new(id).ok_or("packet id 0")?;
                Ok((client_id.into(), packet_id))
            },
        )
    }

    /// Every will kept, by client id and key.
    ///
    /// # Errors
    /// As [`RedbStorage::retained`].
    pub fn wills(&self) -> Result<Vec<WillRecord>, StorageError> {
        self.read(
            WILLS,
            |(client_id, epoch, conn)| format!("{client_id}/{epoch}/{conn}"),
            |(client_id, epoch, conn), value| {
                let record = WillRecord::decode(WillKey { epoch, conn }, value)
                    .map_err(|e| e.to_string())?;
                if &*record.client_id != client_id {
                    return Err(format!("it names {:?}", record.client_id));
                }
                Ok(record)
            },
        )
    }

    fn open_error(&self, e: redb::Error) -> StorageError {
        StorageError::Open {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Every record of `table`, read back by `decode`; a record that does
    /// not read back is reported under the key `name` gives it.
    fn read<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: redb::TableDefinition<K, V>,
        name: impl Fn(K::SelfType<'_>) -> String,
        decode: impl Fn(K::SelfType<'_>, V::SelfType<'_>) -> Result<T, String>,
    ) -> Result<Vec<T>, StorageError> {
        use redb::{ReadableDatabase, ReadableTable};
        let open = |e: redb::Error| self.open_error(e);
        let tx = self
            .db()
            .and_then(|db| Ok(db.begin_read()?))
            .map_err(open)?;
        let table = tx.open_table(table).map_err(|e| open(e.into()))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| open(e.into()))? {
            let (key, value) = entry.map_err(|e| open(e.into()))?;
            let record =
                decode(key.value(), value.value()).map_err(|reason| StorageError::Corrupt {
                    path: self.path.clone(),
                    key: name(key.value()),
                    reason,
                })?;
            out.push(record);
        }
        Ok(out)
    }

    fn commit_with(
        &self,
        durability: redb::Durability,
        write: impl FnOnce(&mut Tables<'_>) -> Result<(), redb::Error>,
    ) -> Result<(), redb::Error> {
        let mut tx = self.db()?.begin_write()?;
        tx.set_durability(durability)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        {
            let mut tables = Tables {
                retained: tx.open_table(RETAINED)?,
                sessions: tx.open_table(SESSIONS)?,
                messages: tx.open_table(MESSAGES)?,
                releases: tx.open_table(RELEASES)?,
                wills: tx.open_table(WILLS)?,
                fresh: BTreeMap::new(),
            };
            write(&mut tables)?;
            tables.finish()?;
        }
        // Immediate: flushed before it returns (with every None commit
        // before it); None: in this process only until then.
        tx.commit()?;
        Ok(())
    }
}

#[cfg(feature = "redb")]
impl RedbStorage {
    fn db(&self) -> Result<&redb::Database, redb::Error> {
        self.db.as_ref().ok_or(redb::Error::PreviousIo)
    }

    fn commit_ops(
        &mut self,
        ops: &[Persist],
        durability: redb::Durability,
    ) -> Result<(), StorageError> {
        let committed = self.reopen().and_then(|()| {
            self.commit_with(durability, |tables| {
                ops.iter().try_for_each(|op| tables.apply(op))
            })
        });
        committed.map_err(|e| {
            if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                // Closed now (what it can still write is written), opened
                // again by the next commit.
                self.db = None;
            }
            self.commit_error(e)
        })
    }

    /// Opens the file again after an I/O error (a full disk): it holds the
    /// last flushed commit; what was committed unflushed since is gone, as
    /// in a crash.
    fn reopen(&mut self) -> Result<(), redb::Error> {
        if self.db.is_none() {
            self.db = Some(redb::Database::create(&self.path)?);
            log::warn!(
                "store {}: opened again after an I/O error, at its last flushed commit",
                self.path.display()
            );
        }
        Ok(())
    }

    fn commit_error(&self, e: redb::Error) -> StorageError {
        match e {
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StorageError::Full {
                    path: self.path.clone(),
                }
            }
            e => StorageError::Commit {
                path: self.path.clone(),
                reason: e.to_string(),
            },
        }
    }
}

#[cfg(feature = "redb")]
impl Storage for RedbStorage {
    fn commit(&mut self, ops: &[Persist]) -> Result<(), StorageError> {
        self.commit_ops(ops, redb::Durability::Immediate)
    }

    fn commit_unflushed(&mut self, ops: &[Persist]) -> Result<(), StorageError> {
        self.commit_ops(ops, redb::Durability::None)
    }
}

#[cfg(all(test, feature = "redb"))]
mod tests {
    use super::*;
    use crate::broker::WillState;
    use crate::broker::persist_tests::will_record;
    use crate::codec::{Bytes, PublishProperties, QoS, TopicName};

    fn msg(topic: &'static str, payload: &'static [u8]) -> RetainedMessage {
        RetainedMessage {
            topic: TopicName::from_static(topic),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            properties: PublishProperties::default(),
            expires_at: None,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("testament-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("testament.redb")
    }

    #[test]
    fn what_was_committed_is_there_after_reopening() {
        let path = scratch("reopen");
        let mut s = RedbStorage::open(&path).unwrap();
        assert!(s.retained().unwrap().is_empty());
        s.commit(&[
            Persist::Retain(msg("a/state", b"up")),
            Persist::Retain(msg("b/state", b"up")),
        ])
        .unwrap();
        s.commit(&[
            Persist::Retain(msg("a/state", b"down")),
            Persist::Unretain(TopicName::from_static("b/state")),
        ])
        .unwrap();
        drop(s);
        let s = RedbStorage::open(&path).unwrap();
        assert_eq!(s.retained().unwrap(), [msg("a/state", b"down")]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A message `seq` for `client_id`'s session.
    fn kept(client_id: &str, seq: u64, qos: QoS) -> Persist {
        let mut properties = PublishProperties {
            message_expiry_interval: Some(60),
            ..PublishProperties::default()
        };
        properties.subscription_identifiers = [crate::codec::SubscriptionId::new(5).unwrap()]
            .into_iter()
            .collect();
        Persist::Message(MessageRecord {
            client_id: client_id.into(),
            seq: std::num::NonZeroU64::new(seq).unwrap(),
            message: crate::session::OutboundMessage {
                topic: TopicName::from_static("open/q"),
                payload: Bytes::from(format!("m{seq}")),
                qos,
                retain: seq.is_multiple_of(2),
                properties,
                seq: std::num::NonZeroU64::new(seq),
            },
            expires_at: Some(crate::time::Timestamp::from_secs(1_800_000_060)),
        })
    }

    #[test]
    fn messages_and_their_exchanges_read_back_as_the_memory_store_has_them() {
        let path = scratch("messages");
        let mut disk = RedbStorage::open(&path).unwrap();
        let mut memory = MemoryStorage::default();
        let seq = |n| std::num::NonZeroU64::new(n).unwrap();
        let id = |n| PacketId::new(n).unwrap();
        let sent = |client_id: &str, n, packet_id, released| Persist::MessageSent {
            client_id: client_id.into(),
            seq: seq(n),
            state: SentState {
                packet_id: id(packet_id),
                released,
            },
        };
        let batches = vec![
            vec![
                kept("a", 1, QoS::AtLeastOnce),
                kept("a", 2, QoS::ExactlyOnce),
                kept("b", 3, QoS::AtLeastOnce),
                kept("ab", 4, QoS::AtLeastOnce),
                sent("a", 1, 10, false),
                sent("a", 2, 11, false),
                Persist::AwaitingRelease {
                    client_id: "a".into(),
                    packet_id: id(7),
                },
                Persist::AwaitingRelease {
                    client_id: "b".into(),
                    packet_id: id(8),
                },
            ],
            vec![
                sent("a", 2, 11, true),
                Persist::MessageDone {
                    client_id: "a".into(),
                    seq: seq(1),
                },
                // Not kept (done with, or never): stays gone.
                sent("a", 1, 12, false),
                sent("zz", 9, 1, false),
                Persist::ReleaseReceived {
                    client_id: "b".into(),
                    packet_id: id(8),
                },
            ],
            vec![
                kept("b", 5, QoS::ExactlyOnce),
                Persist::Will(will_record("b", 1, WillState::Armed)),
                Persist::Will(will_record("b", 2, WillState::Armed)),
                // Everything of "b", and only of "b" ("ab" stays) — but a
                // will outlives its session.
                Persist::EndSession("b".into()),
                kept("c", 6, QoS::AtLeastOnce),
                // Kept and done with in one turn: never written.
                kept("c", 7, QoS::AtLeastOnce),
                sent("c", 7, 3, false),
                Persist::MessageDone {
                    client_id: "c".into(),
                    seq: seq(7),
                },
            ],
            vec![
                Persist::Will(will_record(
                    "b",
                    1,
                    WillState::Paused {
                        trigger: crate::auth::WillTrigger::Shutdown,
                        triggered_at: crate::time::Timestamp::from_secs(1_800_000_000),
                        left: 20,
                    },
                )),
                Persist::WillDone {
                    client_id: "b".into(),
                    key: will_record("b", 2, WillState::Armed).key,
                },
            ],
        ];
        for batch in &batches {
            disk.commit(batch).unwrap();
            memory.commit(batch).unwrap();
            assert_eq!(disk.load().unwrap(), memory.load());
        }
        drop(disk);
        let loaded = RedbStorage::open(&path).unwrap().load().unwrap();
        assert_eq!(loaded, memory.load());
        let left: Vec<(String, u64, Option<SentState>)> = loaded
            .messages
            .iter()
            .map(|m| (m.record.client_id.to_string(), m.record.seq.get(), m.sent))
            .collect();
        assert_eq!(
            left,
            [
                (
                    "a".into(),
                    2,
                    Some(SentState {
                        packet_id: id(11),
                        released: true
                    })
                ),
                ("ab".into(), 4, None),
                ("c".into(), 6, None),
            ]
        );
        assert_eq!(loaded.awaiting_release, [("a".into(), id(7))]);
        assert_eq!(loaded.wills.len(), 1);
        assert!(matches!(
            loaded.wills[0].state,
            WillState::Paused { left: 20, .. }
        ));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_damaged_message_record_is_reported_with_its_key() {
        let path = scratch("message-record");
        let s = RedbStorage::open(&path).unwrap();
        s.commit_with(redb::Durability::Immediate, |t| {
            t.messages.insert(("sub", 3), &[0, 1, 7, 0][..])?;
            Ok(())
        })
        .unwrap();
        let e = s.load().unwrap_err();
        assert!(
            matches!(&e, StorageError::Corrupt { key, .. } if key == "sub/3"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_naming_it() {
        let path = scratch("garbage");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let e = RedbStorage::open(&path).unwrap_err();
        assert!(matches!(e, StorageError::Open { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_truncated_store_is_refused_or_reads_back_what_was_committed() {
        let path = scratch("truncated");
        let mut s = RedbStorage::open(&path).unwrap();
        for i in 0..200 {
            let topic = TopicName::try_from(format!("t/{i}")).unwrap();
            let m = RetainedMessage {
                topic,
                ..msg("x", b"payload")
            };
            s.commit(&[Persist::Retain(m)]).unwrap();
        }
        drop(s);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        // Never a panic, never an empty store passed off as this one.
        match RedbStorage::open(&path).and_then(|s| s.retained()) {
            Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
            Ok(found) => assert!(
                found.iter().all(|m| m.payload == b"payload"[..]),
                "only whole committed records"
            ),
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_damaged_record_is_reported_with_its_key() {
        let path = scratch("record");
        let s = RedbStorage::open(&path).unwrap();
        s.commit_with(redb::Durability::Immediate, |t| {
            t.retained.insert("a/state", &b"not a record"[..])?;
            Ok(())
        })
        .unwrap();
        let e = s.retained().unwrap_err();
        assert!(
            matches!(&e, StorageError::Corrupt { key, .. } if key == "a/state"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
