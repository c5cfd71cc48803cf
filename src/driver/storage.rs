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

#[cfg(feature = "redb")]
use std::path::Path;
use std::path::PathBuf;

use crate::broker::Persist;
#[cfg(feature = "redb")]
use crate::broker::{RetainedMessage, SessionRecord};

/// A store of durable state, as a driver uses it.
pub trait Storage: Send + std::fmt::Debug {
    /// Makes `ops` durable, in order, all or none: when this returns `Ok`,
    /// they survive a crash.
    ///
    /// # Errors
    /// [`StorageError`] when they could not be (none of them is then).
    fn commit(&mut self, ops: &[Persist]) -> Result<(), StorageError>;
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
    /// A commit failed (the disk is full, or failing): nothing of it is
    /// durable.
    #[error("store {path}: commit failed: {reason}")]
    Commit {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The built-in store: one redb file.
#[cfg(feature = "redb")]
pub struct RedbStorage {
    db: redb::Database,
    path: PathBuf,
}

/// Retained messages by topic: the record of [`RetainedMessage::encode`].
#[cfg(feature = "redb")]
const RETAINED: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("retained");

/// Persistent sessions by client id: the record of [`SessionRecord::encode`].
#[cfg(feature = "redb")]
const SESSIONS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sessions");

/// A table of the store, to write.
#[cfg(feature = "redb")]
type Table<'t> = redb::Table<'t, &'static str, &'static [u8]>;

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
            db,
            path: path.to_owned(),
        };
        // The tables exist from the start: reading a new store finds them.
        store
            .commit_with(|_, _| Ok(()))
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
        self.read(RETAINED, |key, value| {
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
        self.read(SESSIONS, |key, value| {
            let record = SessionRecord::decode(value).map_err(|e| e.to_string())?;
            if &*record.client_id != key {
                return Err(format!("it names {:?}", record.client_id));
            }
            Ok(record)
        })
    }

    /// Every record of `table`, read back by `decode`.
    fn read<T>(
        &self,
        table: redb::TableDefinition<&str, &[u8]>,
        decode: impl Fn(&str, &[u8]) -> Result<T, String>,
    ) -> Result<Vec<T>, StorageError> {
        use redb::{ReadableDatabase, ReadableTable};
        let open = |e: redb::Error| StorageError::Open {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tx = self.db.begin_read().map_err(|e| open(e.into()))?;
        let table = tx.open_table(table).map_err(|e| open(e.into()))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| open(e.into()))? {
            let (key, value) = entry.map_err(|e| open(e.into()))?;
            let record =
                decode(key.value(), value.value()).map_err(|reason| StorageError::Corrupt {
                    path: self.path.clone(),
                    key: key.value().to_owned(),
                    reason,
                })?;
            out.push(record);
        }
        Ok(out)
    }

    fn commit_with(
        &self,
        write: impl FnOnce(&mut Table<'_>, &mut Table<'_>) -> Result<(), redb::Error>,
    ) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        {
            let mut retained = tx.open_table(RETAINED)?;
            let mut sessions = tx.open_table(SESSIONS)?;
            write(&mut retained, &mut sessions)?;
        }
        // Durability::Immediate, redb's default: flushed before it returns.
        tx.commit()?;
        Ok(())
    }
}

#[cfg(feature = "redb")]
impl Storage for RedbStorage {
    fn commit(&mut self, ops: &[Persist]) -> Result<(), StorageError> {
        self.commit_with(|retained, sessions| {
            for op in ops {
                match op {
                    Persist::Retain(msg) => {
                        retained.insert(msg.topic.as_str(), msg.encode().as_slice())?;
                    }
                    Persist::Unretain(topic) => {
                        retained.remove(topic.as_str())?;
                    }
                    Persist::Session(record) => {
                        sessions.insert(&*record.client_id, record.encode().as_slice())?;
                    }
                    Persist::EndSession(client_id) => {
                        sessions.remove(&**client_id)?;
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| StorageError::Commit {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(all(test, feature = "redb"))]
mod tests {
    use super::*;
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
        s.commit_with(|t, _| {
            t.insert("a/state", &b"not a record"[..])?;
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
