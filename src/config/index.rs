//! Names to registry indexes, sorted: per-request lookups stay flat however many registries are
//! configured.

/// How an [`Index`] compares names.
#[derive(Debug, Clone, Copy)]
pub(super) enum Case {
    Exact,
    /// ASCII case-insensitive: names are stored lower-case and looked up folded.
    Fold,
}

/// Names to registry indexes, sorted for binary search.
#[derive(Debug)]
pub(super) struct Index {
    case: Case,
    entries: Vec<(String, usize)>,
}

impl Index {
    pub(super) fn new(case: Case) -> Self {
        Index { case, entries: Vec::new() }
    }

    /// `known` (stored) against `name` (as asked), folding `name` if the index folds.
    fn compare(&self, known: &str, name: &str) -> std::cmp::Ordering {
        match self.case {
            Case::Exact => known.cmp(name),
            Case::Fold => known.bytes().cmp(name.bytes().map(|b| b.to_ascii_lowercase())),
        }
    }

    /// The position of `name`, or where it would go.
    fn search(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(known, _)| self.compare(known, name))
    }

    pub(super) fn get(&self, name: &str) -> Option<usize> {
        let at = self.search(name).ok()?;
        self.entries.get(at).map(|&(_, index)| index)
    }

    /// Adds `name`, or returns the index it already has.
    pub(super) fn insert(&mut self, name: &str, index: usize) -> Result<(), usize> {
        match self.search(name) {
            Ok(at) => Err(self.entries.get(at).map_or(index, |&(_, other)| other)),
            Err(at) => {
                let name = match self.case {
                    Case::Exact => name.to_owned(),
                    Case::Fold => name.to_ascii_lowercase(),
                };
                self.entries.insert(at, (name, index));
                Ok(())
            }
        }
    }
}

