//! [`IdList`]: ids kept in one buffer.

/// A list of ids kept in one buffer: each costs its bytes and an offset, rather than an
/// allocation of its own that would outlive the row it was shared with until the next checkpoint.
#[derive(Debug, Default)]
pub(super) struct IdList {
    text: String,
    /// Where each id ends in `text`; the next starts there.
    ends: Vec<usize>,
}

impl IdList {
    pub fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// The ids, in the order they were pushed.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        (0..self.ends.len()).map(|i| {
            let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
            &self.text[start..self.ends[i]]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_back_each_id_in_order_empty_ones_too() {
        let mut ids = IdList::default();
        assert!(ids.is_empty());
        for id in ["alice", "", "bøb"] {
            ids.push(id);
        }
        assert!(!ids.is_empty());
        assert_eq!(ids.iter().len(), 3);
        assert_eq!(ids.iter().collect::<Vec<_>>(), ["alice", "", "bøb"]);
        ids.clear();
        assert!(ids.is_empty());
        ids.push("carol");
        assert_eq!(ids.iter().collect::<Vec<_>>(), ["carol"]);
    }
}
