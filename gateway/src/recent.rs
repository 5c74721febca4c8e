//! The last few things a serving thread met, for its fronts (`auth/front.rs`, `cache/front.rs`):
//! a fixed number of slots, the oldest replaced first.

/// At most `N` items; a new one takes the oldest's slot (round robin).
pub(crate) struct Recent<T, const N: usize> {
    slots: [Option<T>; N],
    /// The slot the next new item takes.
    next: usize,
}

impl<T, const N: usize> Default for Recent<T, N> {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| None), next: 0 }
    }
}

impl<T, const N: usize> Recent<T, N> {
    pub(crate) fn find(&self, mut matches: impl FnMut(&T) -> bool) -> Option<&T> {
        self.slots.iter().flatten().find(|item| matches(item))
    }

    pub(crate) fn find_mut(&mut self, mut matches: impl FnMut(&T) -> bool) -> Option<&mut T> {
        self.slots.iter_mut().flatten().find(|item| matches(item))
    }

    /// Forgets the items `matches` picks.
    pub(crate) fn remove(&mut self, mut matches: impl FnMut(&T) -> bool) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(&mut matches) {
                *slot = None;
            }
        }
    }

    /// Keeps `item` in the oldest slot.
    pub(crate) fn push(&mut self, item: T) {
        let index = self.next;
        self.next = (index + 1) % N;
        self.slots[index] = Some(item);
    }

    /// Keeps `item` in the slot of the one `same` picks, if there is one, else in the oldest.
    pub(crate) fn put(&mut self, item: T, same: impl FnMut(&T) -> bool) {
        match self.find_mut(same) {
            Some(slot) => *slot = item,
            None => self.push(item),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_goes_first_and_a_put_replaces_its_own() {
        let mut recent: Recent<(u8, u8), 3> = Recent::default();
        for key in 0..3 {
            recent.push((key, 0));
        }
        recent.put((1, 9), |item| item.0 == 1);
        assert_eq!(recent.find(|item| item.0 == 1), Some(&(1, 9)), "replaced in its slot");
        recent.push((3, 0));
        assert!(recent.find(|item| item.0 == 0).is_none(), "the oldest went");
        assert!([1, 2, 3].iter().all(|key| recent.find(|item| item.0 == *key).is_some()));
        recent.remove(|item| item.0 == 2);
        assert!(recent.find(|item| item.0 == 2).is_none(), "removed");
        assert!([1, 3].iter().all(|key| recent.find(|item| item.0 == *key).is_some()));
    }
}
