//! The states the call-site analysers ([`super::x86`], [`super::arm64`]) keep for the targets of
//! forward branches during their linear pass, by target.
//!
//! The pass asks at every instruction whether one is due there ([`Pending::take`]); nearly all
//! are no branch target, so the nearest target is kept apart and that question costs one
//! comparison instead of a search of the map.

use std::collections::BTreeMap;

/// States by branch target (an RVA or an offset), with the nearest target at hand.
pub struct Pending<K, S> {
    states: BTreeMap<K, S>,
    nearest: Option<K>,
}

impl<K: Ord + Copy, S> Default for Pending<K, S> {
    fn default() -> Self {
        Pending {
            states: BTreeMap::new(),
            nearest: None,
        }
    }
}

impl<K: Ord + Copy, S> Pending<K, S> {
    /// The state kept for `at`, if any; the targets before `at` (left behind by the pass) are
    /// forgotten.
    pub fn take(&mut self, at: K) -> Option<S> {
        if self.nearest.is_none_or(|nearest| nearest > at) {
            return None;
        }
        let state = self.states.remove(&at);
        while let Some(entry) = self.states.first_entry() {
            if *entry.key() >= at {
                break;
            }
            entry.remove();
        }
        self.renew();
        state
    }

    pub fn get_mut(&mut self, target: &K) -> Option<&mut S> {
        self.states.get_mut(target)
    }

    pub fn insert(&mut self, target: K, state: S) {
        self.states.insert(target, state);
        self.nearest = Some(self.nearest.map_or(target, |nearest| nearest.min(target)));
    }

    pub fn remove(&mut self, target: &K) {
        if self.states.remove(target).is_some() {
            self.renew();
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn clear(&mut self) {
        self.states.clear();
        self.nearest = None;
    }

    fn renew(&mut self) {
        self.nearest = self.states.first_key_value().map(|(target, _)| *target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_taken_at_its_target_and_those_left_behind_are_forgotten() {
        let mut pending = Pending::default();
        pending.insert(40, "b");
        pending.insert(20, "a");
        pending.insert(60, "c");
        assert_eq!(pending.take(10), None);
        assert_eq!(pending.take(20), Some("a"));
        assert_eq!(pending.take(50), None);
        assert_eq!(pending.len(), 1);
        pending.remove(&60);
        assert_eq!(pending.take(60), None);
        pending.insert(70, "d");
        pending.clear();
        assert_eq!(pending.take(70), None);
    }
}
