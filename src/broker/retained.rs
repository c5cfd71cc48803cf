//! Retained messages: one per topic, bounded in count and bytes.

use std::collections::BTreeMap;

use super::remaining_expiry;
use crate::codec::{Bytes, PublishProperties, QoS, TopicName, filter_matches};
use crate::time::{Instant, Now};

/// A retained message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retained {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub properties: PublishProperties,
    pub stored_at: Instant,
}

impl Retained {
    fn size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// What [`RetainedStore::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOutcome {
    Stored,
    Deleted,
    Refused(&'static str),
}

#[derive(Debug)]
pub(crate) struct RetainedStore {
    map: BTreeMap<TopicName, Retained>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl RetainedStore {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes (topics and payloads) held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores, replaces, or — for an empty payload — deletes
    /// [MQTT-3.3.1-5], [MQTT-3.3.1-6].
    pub fn store(&mut self, msg: Retained) -> StoreOutcome {
        if msg.payload.is_empty() {
            if let Some(old) = self.map.remove(&msg.topic) {
                self.bytes -= old.size();
            }
            return StoreOutcome::Deleted;
        }
        let old_size = self.map.get(&msg.topic).map_or(0, Retained::size);
        if old_size == 0 && self.map.len() >= self.max_count {
            return StoreOutcome::Refused("retained store full (count)");
        }
        if self.bytes - old_size + msg.size() > self.max_bytes {
            return StoreOutcome::Refused("retained store full (bytes)");
        }
        self.bytes = self.bytes - old_size + msg.size();
        self.map.insert(msg.topic.clone(), msg);
        StoreOutcome::Stored
    }

    /// The unexpired messages whose topic matches `filter`, expiry
    /// intervals lowered by the time they were stored; expired ones go, and
    /// their topics are added to `expired`.
    pub fn matching(
        &mut self,
        filter: &str,
        now: Now,
        expired: &mut Vec<TopicName>,
    ) -> Vec<Retained> {
        let mut out = Vec::new();
        let first_expired = expired.len();
        let mut visit = |m: &Retained| match remaining_expiry(&m.properties, m.stored_at, now.mono)
        {
            Some(left) => {
                let mut m = m.clone();
                if left.is_some() {
                    m.properties.message_expiry_interval = left;
                }
                out.push(m);
            }
            None => expired.push(m.topic.clone()),
        };
        if memchr::memchr2(b'+', b'#', filter.as_bytes()).is_none() {
            if let Some(m) = self.map.get(filter) {
                visit(m);
            }
        } else {
            for m in self.map.values() {
                if filter_matches(filter, m.topic.as_str()) {
                    visit(m);
                }
            }
        }
        for topic in &expired[first_expired..] {
            if let Some(old) = self.map.remove(topic) {
                self.bytes -= old.size();
            }
        }
        out
    }
}
