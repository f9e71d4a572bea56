//! Connections indexed by connection id and by user: a push to a user touches only that user's few
//! connections, and the per-user cap counts them, without going through every connection held.
//!
//! Every idle connection pays for its entry, so the entry is kept small: the connection id and the
//! user id are each one shared allocation (`Arc<str>`) used by both indexes (and by whoever else holds
//! the same `Arc`), and a user with a single connection, the usual case, needs no list of its own.

use std::collections::HashMap;
use std::sync::Arc;

/// Values keyed by connection id, each belonging to one user.
#[derive(Debug)]
pub struct ByUser<T> {
    entries: HashMap<Arc<str>, Entry<T>>,
    /// Connection ids of each user (a handful: the per-user cap).
    users: HashMap<Arc<str>, Ids>,
}

#[derive(Debug)]
struct Entry<T> {
    user_id: Arc<str>,
    value: T,
}

/// The connection ids of one user: one inline, more in a list.
#[derive(Debug)]
enum Ids {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Ids {
    fn as_slice(&self) -> &[Arc<str>] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(ids) => ids,
        }
    }

    fn push(&mut self, id: Arc<str>) {
        match self {
            Ids::One(first) => *self = Ids::Many(vec![first.clone(), id]),
            Ids::Many(ids) => ids.push(id),
        }
    }

    /// Removes `id`; `true` when none is left.
    fn remove(&mut self, id: &str) -> bool {
        match self {
            Ids::One(only) => &**only == id,
            Ids::Many(ids) => {
                ids.retain(|other| &**other != id);
                match ids.as_slice() {
                    [] => true,
                    [only] => {
                        let only = only.clone();
                        *self = Ids::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

impl<T> Default for ByUser<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            users: HashMap::new(),
        }
    }
}

impl<T> ByUser<T> {
    /// Adds (or replaces) the value of `connection_id`; returns the value it replaced.
    pub fn insert(&mut self, connection_id: Arc<str>, user_id: Arc<str>, value: T) -> Option<T> {
        let previous = self.remove(&connection_id);
        match self.users.get_mut(&user_id) {
            Some(ids) => ids.push(connection_id.clone()),
            None => {
                self.users.insert(user_id.clone(), Ids::One(connection_id.clone()));
            }
        }
        self.entries.insert(connection_id, Entry { user_id, value });
        previous
    }

    pub fn remove(&mut self, connection_id: &str) -> Option<T> {
        self.remove_entry(connection_id).map(|(_, value)| value)
    }

    /// Removes `connection_id`'s value; returns it with its user.
    pub fn remove_entry(&mut self, connection_id: &str) -> Option<(Arc<str>, T)> {
        let Entry { user_id, value } = self.entries.remove(connection_id)?;
        if self
            .users
            .get_mut(&user_id)
            .is_some_and(|ids| ids.remove(connection_id))
        {
            self.users.remove(&user_id);
        }
        Some((user_id, value))
    }

    pub fn get(&self, connection_id: &str) -> Option<&T> {
        self.entries.get(connection_id).map(|entry| &entry.value)
    }

    pub fn get_mut(&mut self, connection_id: &str) -> Option<&mut T> {
        self.entries.get_mut(connection_id).map(|entry| &mut entry.value)
    }

    /// The value of `connection_id` with the shared connection id and user id it is indexed by.
    pub fn get_full(&self, connection_id: &str) -> Option<(&Arc<str>, &Arc<str>, &T)> {
        self.entries
            .get_key_value(connection_id)
            .map(|(id, entry)| (id, &entry.user_id, &entry.value))
    }

    /// `user_id`'s connection ids with their values.
    pub fn of_user(&self, user_id: &str) -> impl Iterator<Item = (&Arc<str>, &T)> {
        self.users
            .get(user_id)
            .map(Ids::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|id| self.entries.get_key_value(&**id))
            .map(|(id, entry)| (id, &entry.value))
    }

    /// Calls `f` with each of `user_id`'s values.
    pub fn for_user_mut(&mut self, user_id: &str, mut f: impl FnMut(&mut T)) {
        let Some(ids) = self.users.get(user_id) else {
            return;
        };
        for id in ids.as_slice() {
            if let Some(entry) = self.entries.get_mut(&**id) {
                f(&mut entry.value);
            }
        }
    }

    /// Every connection id with its user id and value.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>, &T)> {
        self.entries
            .iter()
            .map(|(id, entry)| (id, &entry.user_id, &entry.value))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.values().map(|entry| &entry.value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many connections each user holds, one count per user.
    pub fn counts_per_user(&self) -> impl Iterator<Item = usize> + '_ {
        self.users.values().map(|ids| ids.as_slice().len())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(index: &mut ByUser<i32>, id: &str, user: &str, value: i32) -> Option<i32> {
        index.insert(id.into(), user.into(), value)
    }

    fn values_of(index: &ByUser<i32>, user: &str) -> Vec<i32> {
        let mut values: Vec<i32> = index.of_user(user).map(|(_, v)| *v).collect();
        values.sort_unstable();
        values
    }

    #[test]
    fn values_are_found_by_connection_and_by_user_and_removed_from_both() {
        let mut index = ByUser::default();
        assert_eq!(insert(&mut index, "c1", "alice", 1), None);
        insert(&mut index, "c2", "alice", 2);
        insert(&mut index, "c3", "bob", 3);
        assert_eq!(values_of(&index, "alice"), [1, 2]);
        let mut counts: Vec<usize> = index.counts_per_user().collect();
        counts.sort_unstable();
        assert_eq!(counts, [1, 2]);
        index.for_user_mut("bob", |v| *v += 10);
        assert_eq!(index.get("c3"), Some(&13));
        assert_eq!(index.remove("c1"), Some(1));
        assert_eq!(values_of(&index, "alice"), [2]);
        assert_eq!(
            insert(&mut index, "c2", "carol", 4),
            Some(2),
            "an id moved to another user"
        );
        assert_eq!(index.of_user("alice").count(), 0);
        assert_eq!(values_of(&index, "carol"), [4]);
        assert_eq!(index.len(), 2);
        assert!(!index.users.contains_key("alice"), "no empty user entries linger");
    }

    #[test]
    fn a_user_grows_from_one_id_to_many_and_back() {
        let mut index = ByUser::default();
        insert(&mut index, "c1", "alice", 1);
        assert!(
            matches!(index.users["alice"], Ids::One(_)),
            "a single connection needs no list"
        );
        insert(&mut index, "c2", "alice", 2);
        insert(&mut index, "c3", "alice", 3);
        assert_eq!(values_of(&index, "alice"), [1, 2, 3]);
        index.remove("c2");
        assert_eq!(values_of(&index, "alice"), [1, 3]);
        index.remove("c1");
        assert!(
            matches!(index.users["alice"], Ids::One(_)),
            "back to one: the list is gone"
        );
        assert_eq!(values_of(&index, "alice"), [3]);
        assert_eq!(
            index.remove_entry("c3").map(|(user, v)| (user.to_string(), v)),
            Some(("alice".into(), 3))
        );
        assert!(index.is_empty());
        assert!(index.users.is_empty());
        assert_eq!(index.remove("c3"), None, "removing twice is harmless");
    }

    #[test]
    fn ids_are_shared_not_copied() {
        let mut index = ByUser::default();
        let id: Arc<str> = "c1".into();
        let user: Arc<str> = "alice".into();
        index.insert(id.clone(), user.clone(), 1);
        let (stored_id, stored_user, value) = index.get_full("c1").expect("present");
        assert!(Arc::ptr_eq(stored_id, &id) && Arc::ptr_eq(stored_user, &user));
        assert_eq!(*value, 1);
        let (listed_id, _) = index.of_user("alice").next().expect("listed");
        assert!(Arc::ptr_eq(listed_id, &id));
    }
}
