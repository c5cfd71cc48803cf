//! Tables of live objects (connections, sessions, sockets) keyed by ids that
//! are slab indices tagged with a serial number.
//!
//! A map keyed by ids handed out in order leaves its nodes half full, and a
//! node per few entries is much of what an idle connection costs. A slab
//! costs its entry, and reuses the index of what was removed; the serial in
//! the id's upper half tells an id from the one its index had before, so a
//! stale id misses instead of reaching the new occupant. Ids still grow in
//! the order they were handed out (the serial does, until it wraps after
//! 2^30 of them), and the index is dense enough for a host to keep its own
//! per-connection data in a vector.

/// A key of a [`Slots`] table.
pub(crate) trait SlotKey: Copy {
    fn from_id(id: u64) -> Self;
    fn id(self) -> u64;
}

/// Serials wrap below this: ids stay below 2^62.
const MAX_SERIAL: u32 = 1 << 30;

/// The index part of an id.
pub(crate) fn index_of(id: u64) -> usize {
    (id & 0xffff_ffff) as usize
}

/// The id of the entry at `index` with `serial`.
fn id_of(serial: u32, index: usize) -> u64 {
    u64::from(serial) << 32 | index as u64
}

/// A slab of `V` keyed by `K`.
#[derive(Debug)]
pub(crate) struct Slots<K, V> {
    slab: slab::Slab<(u32, V)>,
    serial: u32,
    key: std::marker::PhantomData<K>,
}

impl<K, V> Default for Slots<K, V> {
    fn default() -> Self {
        Self {
            slab: slab::Slab::new(),
            serial: 0,
            key: std::marker::PhantomData,
        }
    }
}

impl<K: SlotKey, V> Slots<K, V> {
    /// Room for `n` entries, reserved now.
    pub fn reserve(&mut self, n: usize) {
        self.slab.reserve(n.saturating_sub(self.slab.len()));
    }

    /// Stores the value `make` builds for its key; returns the key.
    pub fn insert_with(&mut self, make: impl FnOnce(K) -> V) -> K {
        // Never 0 (an id of 0 is the smallest key, for range bounds), and
        // below 2^30 so that ids leave two bits free (the hub packs a
        // timer's kind there).
        self.serial += 1;
        if self.serial >= MAX_SERIAL {
            self.serial = 1;
        }
        let entry = self.slab.vacant_entry();
        let id = id_of(self.serial, entry.key());
        let key = K::from_id(id);
        entry.insert((self.serial, make(key)));
        key
    }

    fn slot(&self, key: K) -> Option<&(u32, V)> {
        let id = key.id();
        self.slab
            .get(index_of(id))
            .filter(|(serial, _)| u64::from(*serial) == id >> 32)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.slot(*key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let id = key.id();
        self.slab
            .get_mut(index_of(id))
            .filter(|(serial, _)| u64::from(*serial) == id >> 32)
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.slot(*key).is_some()
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.contains_key(key)
            .then(|| self.slab.remove(index_of(key.id())).1)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    #[cfg_attr(not(feature = "mio"), allow(dead_code))] // the mio driver's
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every key, in the order they were handed out.
    pub fn keys(&self) -> Vec<K> {
        let mut ids: Vec<u64> = self
            .slab
            .iter()
            .map(|(index, (serial, _))| id_of(*serial, index))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(K::from_id).collect()
    }

    /// The key of the entry at `index` (an id's lower half).
    pub fn key_at(&self, index: u32) -> Option<K> {
        self.at_index(index).map(|(key, _)| key)
    }

    /// The entry at `index` (an id's lower half), whatever its serial.
    pub fn at_index(&self, index: u32) -> Option<(K, &V)> {
        let index = index as usize;
        self.slab
            .get(index)
            .map(|(serial, v)| (K::from_id(id_of(*serial, index)), v))
    }

    /// The entry at `index` (an id's lower half), whatever its serial.
    #[cfg_attr(not(feature = "mio"), allow(dead_code))] // the mio driver's
    pub fn at_index_mut(&mut self, index: u32) -> Option<(K, &mut V)> {
        let index = index as usize;
        self.slab
            .get_mut(index)
            .map(|(serial, v)| (K::from_id(id_of(*serial, index)), v))
    }

    /// Every entry with its key, in the slab's order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.slab
            .iter()
            .map(|(index, (serial, v))| (K::from_id(id_of(*serial, index)), v))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slab.iter_mut().map(|(_, (_, v))| v)
    }
}

impl SlotKey for usize {
    fn from_id(id: u64) -> Self {
        // Drivers use ids as 64-bit poll tokens.
        const _: () = assert!(usize::BITS >= 64, "slot ids need 64-bit words");
        id as usize
    }
    fn id(self) -> u64 {
        self as u64
    }
}

/// The serial part of an id (never 0 for an id a [`Slots`] handed out).
fn serial_of(id: u64) -> u32 {
    (id >> 32) as u32
}

/// A host's own data per key of another table (the hub's connections),
/// in a vector by the key's index: an entry per live key, no map node. An
/// entry holds the key's serial, not the whole key: its index is where it
/// is, and four bytes less per connection add up.
#[derive(Debug)]
pub(crate) struct SideTable<K, V> {
    /// Serial 0: vacant.
    entries: Vec<(u32, V)>,
    len: usize,
    key: std::marker::PhantomData<K>,
}

impl<K, V> Default for SideTable<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            len: 0,
            key: std::marker::PhantomData,
        }
    }
}

impl<K: SlotKey, V: Default> SideTable<K, V> {
    /// Room for keys of index below `n`, reserved now.
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n.saturating_sub(self.entries.len()));
    }

    /// Sets `key`'s value; a stale key of the same index is replaced. A key
    /// of serial 0 (no table hands one out) is not kept.
    pub fn insert(&mut self, key: K, value: V) {
        let (i, serial) = (index_of(key.id()), serial_of(key.id()));
        if serial == 0 {
            return;
        }
        if i >= self.entries.len() {
            self.entries.resize_with(i + 1, || (0, V::default()));
        }
        if self.entries[i].0 == 0 {
            self.len += 1;
        }
        self.entries[i] = (serial, value);
    }

    fn entry(&mut self, key: &K) -> Option<&mut (u32, V)> {
        let serial = serial_of(key.id());
        self.entries
            .get_mut(index_of(key.id()))
            .filter(|(s, _)| *s != 0 && *s == serial)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let serial = serial_of(key.id());
        self.entries
            .get(index_of(key.id()))
            .filter(|(s, _)| *s != 0 && *s == serial)
            .map(|(_, v)| v)
    }

    /// Takes `key`'s value out; a key that is not there (or no longer)
    /// leaves the table as it is.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let entry = self.entry(key)?;
        entry.0 = 0;
        let value = std::mem::take(&mut entry.1);
        self.len -= 1;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The key whose value sits at `index`, if any.
    #[cfg_attr(not(feature = "mio"), allow(dead_code))] // the mio driver's
    pub fn key_at(&self, index: usize) -> Option<K> {
        let (serial, _) = self.entries.get(index)?;
        (*serial != 0).then(|| K::from_id(id_of(*serial, index)))
    }

    /// Every key, in the order the other table handed them out.
    #[cfg_attr(not(feature = "mio"), allow(dead_code))] // the mio driver's
    pub fn keys(&self) -> Vec<K> {
        let mut keys: Vec<K> = (0..self.entries.len())
            .filter_map(|i| self.key_at(i))
            .collect();
        keys.sort_unstable_by_key(|k| k.id());
        keys
    }
}

impl<K: SlotKey, V> std::ops::Index<&K> for Slots<K, V> {
    type Output = V;

    /// # Panics
    /// When `key` is not in the table, as a map's index does.
    fn index(&self, key: &K) -> &V {
        self.get(key).expect("a key in the table")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Id(u64);

    impl SlotKey for Id {
        fn from_id(id: u64) -> Self {
            Id(id)
        }
        fn id(self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_stale_key_misses_the_value_that_reuses_its_index() {
        let mut t: Slots<Id, &str> = Slots::default();
        let a = t.insert_with(|_| "a");
        assert_eq!(t.remove(&a), Some("a"));
        let b = t.insert_with(|_| "b");
        assert_eq!(index_of(a.0), index_of(b.0), "the index is reused");
        assert_eq!(t.get(&a), None);
        assert_eq!(t.remove(&a), None);
        assert_eq!(t.get(&b), Some(&"b"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_side_table_forgets_a_stale_key_without_touching_its_successor() {
        let mut t: Slots<Id, ()> = Slots::default();
        let mut side: SideTable<Id, u32> = SideTable::default();
        let a = t.insert_with(|_| ());
        side.insert(a, 1);
        t.remove(&a);
        let b = t.insert_with(|_| ());
        side.insert(b, 2);
        assert_eq!(side.len(), 1, "b took a's place");
        assert_eq!(side.remove(&a), None);
        assert_eq!(side.get(&b), Some(&2));
        assert_eq!(side.keys(), vec![b]);
        assert_eq!(side.remove(&b), Some(2));
        assert_eq!(side.len(), 0);
    }

    #[test]
    fn the_serial_wraps_below_two_to_the_thirty() {
        let mut t: Slots<Id, ()> = Slots {
            serial: MAX_SERIAL - 1,
            ..Slots::default()
        };
        let id = t.insert_with(|_| ());
        assert_eq!(id.0 >> 32, 1);
        assert_eq!(t.get(&id), Some(&()));
    }

    #[test]
    fn keys_come_in_the_order_they_were_handed_out() {
        let mut t: Slots<Id, u32> = Slots::default();
        let ids: Vec<Id> = (0..5).map(|i| t.insert_with(|_| i)).collect();
        t.remove(&ids[1]);
        let again = t.insert_with(|_| 9);
        assert!(again > ids[4]);
        assert_eq!(t.keys(), vec![ids[0], ids[2], ids[3], ids[4], again]);
        assert!(
            ids.iter()
                .all(|id| id.0 != 0 && id.0 >> 32 != 0 && id.0 >> 62 == 0)
        );
    }
}
