//! [`UserTable`]: a map from user id to a value, for a million users and more.
//!
//! A hash map of `Rc<str> → V` keeps its whole entries in its buckets, and hashbrown keeps between
//! an eighth and a half of the buckets empty (its capacity is a power of two): with 56-byte
//! values, 153 MB for 930k users. Here the entries live in a dense vector and the table holds
//! 4-byte entry numbers, so an empty bucket costs 5 bytes rather than 73.

use std::hash::BuildHasher;
use std::rc::Rc;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// A map from user id to `V`, its entries in a dense vector. See the module documentation.
///
/// ```ignore
/// let mut table = UserTable::default();
/// *table.get_or_insert_with("u1", || 0).1 += 1;
/// assert_eq!(table.get("u1"), Some(&1));
/// ```
#[derive(Debug)]
pub(super) struct UserTable<V> {
    /// Entry numbers, found by the hash of their entry's user id.
    index: HashTable<u32>,
    /// `None` where an entry was removed, until another takes its place.
    entries: Vec<Option<(Rc<str>, V)>>,
    vacant: Vec<u32>,
    hasher: RandomState,
}

impl<V> Default for UserTable<V> {
    fn default() -> Self {
        UserTable {
            index: HashTable::new(),
            entries: Vec::new(),
            vacant: Vec::new(),
            hasher: RandomState::default(),
        }
    }
}

impl<V> UserTable<V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    fn find(&self, user_id: &str) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(self.hasher.hash_one(user_id), |&n| {
                entries[n as usize]
                    .as_ref()
                    .is_some_and(|(u, _)| **u == *user_id)
            })
            .copied()
    }

    pub fn get_key_value(&self, user_id: &str) -> Option<(&Rc<str>, &V)> {
        let number = self.find(user_id)?;
        let (user, value) = self.entries[number as usize].as_ref()?;
        Some((user, value))
    }

    pub fn get(&self, user_id: &str) -> Option<&V> {
        self.get_key_value(user_id).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, user_id: &str) -> Option<&mut V> {
        let number = self.find(user_id)?;
        self.entries[number as usize]
            .as_mut()
            .map(|(_, value)| value)
    }

    /// The user's entry and its number, made by `make` if there is none.
    pub fn get_or_insert_with(
        &mut self,
        user_id: &str,
        make: impl FnOnce() -> V,
    ) -> (&Rc<str>, &mut V, u32) {
        let number = match self.find(user_id) {
            Some(number) => number,
            None => self.insert_new(Rc::from(user_id), make()),
        };
        let (user, value) = self.entries[number as usize].as_mut().expect("indexed");
        (user, value, number)
    }

    /// The number of a user's entry: it stays the entry's until the entry is removed.
    pub fn number_of(&self, user_id: &str) -> Option<u32> {
        self.find(user_id)
    }

    /// The entry with a number, without a lookup of its user.
    pub fn by_number_mut(&mut self, number: u32) -> Option<(&Rc<str>, &mut V)> {
        let (user, value) = self.entries.get_mut(number as usize)?.as_mut()?;
        Some((user, value))
    }

    /// Puts a user's value in place of the one it had, if any.
    pub fn insert(&mut self, user_id: Rc<str>, value: V) {
        match self.find(&user_id) {
            Some(number) => self.entries[number as usize] = Some((user_id, value)),
            None => {
                self.insert_new(user_id, value);
            }
        }
    }

    fn insert_new(&mut self, user_id: Rc<str>, value: V) -> u32 {
        let hash = self.hasher.hash_one(&*user_id);
        let number = match self.vacant.pop() {
            Some(number) => {
                self.entries[number as usize] = Some((user_id, value));
                number
            }
            None => {
                self.entries.push(Some((user_id, value)));
                u32::try_from(self.entries.len() - 1).expect("fewer than 4 billion users a worker")
            }
        };
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, number, |&n| {
            let (user, _) = entries[n as usize].as_ref().expect("indexed");
            hasher.hash_one(&**user)
        });
        number
    }

    pub fn remove(&mut self, user_id: &str) -> Option<V> {
        let number = self.find(user_id)?;
        Some(self.remove_entry(number))
    }

    fn remove_entry(&mut self, number: u32) -> V {
        let (user, value) = self.entries[number as usize].take().expect("occupied");
        let hash = self.hasher.hash_one(&*user);
        let indexed = self.index.find_entry(hash, |&n| n == number);
        indexed.expect("an entry is indexed").remove();
        self.vacant.push(number);
        value
    }

    /// Keeps the entries for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Rc<str>, &mut V) -> bool) {
        for number in 0..self.entries.len() as u32 {
            let removed = match &mut self.entries[number as usize] {
                Some((user, value)) => !keep(user, value),
                None => false,
            };
            if removed {
                self.remove_entry(number);
            }
        }
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Rc<str>, &V)> {
        Entries {
            entries: self.entries.iter(),
            remaining: self.len(),
        }
    }
}

/// The occupied entries of a [`UserTable`], with their number known beforehand.
struct Entries<'a, V> {
    entries: std::slice::Iter<'a, Option<(Rc<str>, V)>>,
    remaining: usize,
}

impl<'a, V> Iterator for Entries<'a, V> {
    type Item = (&'a Rc<str>, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let (user, value) = self.entries.by_ref().flatten().next()?;
        self.remaining -= 1;
        Some((user, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<V> ExactSizeIterator for Entries<'_, V> {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against a map: whatever the order of inserting, changing, removing and retaining.
        #[test]
        fn behaves_like_a_map(
            steps in prop::collection::vec((0..5u8, 0..8u8, 0..100u32), 1..300)
        ) {
            let mut table = UserTable::default();
            let mut model: BTreeMap<String, u32> = BTreeMap::new();
            for (operation, user, value) in steps {
                let user = format!("user-{user}");
                match operation {
                    0 => {
                        table.insert(Rc::from(user.as_str()), value);
                        model.insert(user.clone(), value);
                    }
                    1 => {
                        *table.get_or_insert_with(&user, || value).1 += 1;
                        *model.entry(user.clone()).or_insert(value) += 1;
                    }
                    2 => prop_assert_eq!(table.remove(&user), model.remove(&user)),
                    3 => {
                        table.retain(|_, v| *v % 3 != value % 3);
                        model.retain(|_, v| *v % 3 != value % 3);
                    }
                    _ => {
                        prop_assert_eq!(table.get_mut(&user).copied(), model.get(&user).copied());
                        // An entry's number reaches it without its user.
                        let by_number = table.number_of(&user).and_then(|n| {
                            table.by_number_mut(n).map(|(u, v)| (u.to_string(), *v))
                        });
                        prop_assert_eq!(by_number, model.get_key_value(&user).map(|(u, v)| (u.clone(), *v)));
                    }
                }
                let entries: BTreeMap<String, u32> =
                    table.iter().map(|(u, v)| (u.to_string(), *v)).collect();
                prop_assert_eq!(&entries, &model);
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.iter().len(), model.len());
                prop_assert_eq!(table.get(&user), model.get(&user));
            }
        }
    }
}
