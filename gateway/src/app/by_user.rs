//! This replica's connections, indexed by connection id and by user: a push to a user touches only
//! that user's few connections, not every connection the replica holds.

use std::collections::HashMap;

/// Values keyed by connection id, each belonging to one user.
#[derive(Debug)]
pub struct ByUser<T> {
    entries: HashMap<String, (String, T)>,
    /// Connection ids of each user (a handful: the per-user cap).
    users: HashMap<String, Vec<String>>,
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
    pub fn insert(&mut self, connection_id: &str, user_id: &str, value: T) -> Option<T> {
        let previous = self.remove(connection_id);
        self.entries
            .insert(connection_id.to_owned(), (user_id.to_owned(), value));
        self.users
            .entry(user_id.to_owned())
            .or_default()
            .push(connection_id.to_owned());
        previous
    }

    pub fn remove(&mut self, connection_id: &str) -> Option<T> {
        self.remove_entry(connection_id).map(|(_, value)| value)
    }

    /// Removes `connection_id`'s value; returns it with its user.
    pub fn remove_entry(&mut self, connection_id: &str) -> Option<(String, T)> {
        let (user_id, value) = self.entries.remove(connection_id)?;
        if let Some(ids) = self.users.get_mut(&user_id) {
            ids.retain(|id| id != connection_id);
            if ids.is_empty() {
                self.users.remove(&user_id);
            }
        }
        Some((user_id, value))
    }

    pub fn get(&self, connection_id: &str) -> Option<&T> {
        self.entries.get(connection_id).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, connection_id: &str) -> Option<&mut T> {
        self.entries.get_mut(connection_id).map(|(_, value)| value)
    }

    /// The values of `user_id`'s connections.
    pub fn of_user(&self, user_id: &str) -> impl Iterator<Item = &T> {
        self.users
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
    }

    /// Calls `f` with each of `user_id`'s values.
    pub fn for_user_mut(&mut self, user_id: &str, mut f: impl FnMut(&mut T)) {
        let Some(ids) = self.users.get(user_id) else {
            return;
        };
        for id in ids {
            if let Some((_, value)) = self.entries.get_mut(id) {
                f(value);
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.values().map(|(_, value)| value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_by_connection_and_by_user_and_removed_from_both() {
        let mut index = ByUser::default();
        assert_eq!(index.insert("c1", "alice", 1), None);
        index.insert("c2", "alice", 2);
        index.insert("c3", "bob", 3);
        let mut alice: Vec<i32> = index.of_user("alice").copied().collect();
        alice.sort_unstable();
        assert_eq!(alice, [1, 2]);
        index.for_user_mut("bob", |v| *v += 10);
        assert_eq!(index.get("c3"), Some(&13));
        assert_eq!(index.remove("c1"), Some(1));
        assert_eq!(index.of_user("alice").copied().collect::<Vec<_>>(), [2]);
        assert_eq!(index.insert("c2", "carol", 4), Some(2), "an id moved to another user");
        assert_eq!(index.of_user("alice").count(), 0);
        assert_eq!(index.of_user("carol").copied().collect::<Vec<_>>(), [4]);
        assert_eq!(index.len(), 2);
        assert!(!index.users.contains_key("alice"), "no empty user entries linger");
    }
}
