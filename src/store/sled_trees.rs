//! The sled database, opened only by tree, to read or to write. The only
//! way to a sled call that changes a tree is a [`WriteTree`], and taking
//! one marks its collection written in the [`PlaceHints`] until it is
//! dropped: so no read by key answers from memory what a write may have
//! changed in the store, and no write can forget to say so.

use super::place_hints::{PlaceHints, UnderWay};
use anyhow::{Context, Result};
use std::ops::RangeBounds;
use std::path::Path;

pub(super) struct Trees {
    db: sled::Db,
    hints: PlaceHints,
}

impl Trees {
    pub(super) fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 << 20)
            .open()
            .with_context(|| format!("opening the sled store at {}", dir.display()))?;
        Ok(Self {
            db,
            hints: PlaceHints::default(),
        })
    }

    fn open_tree(&self, name: &str) -> Result<sled::Tree> {
        self.db
            .open_tree(name)
            .with_context(|| format!("opening tree {name}"))
    }

    /// `name`, to read.
    pub(super) fn read(&self, name: &str) -> Result<ReadTree> {
        self.open_tree(name).map(ReadTree)
    }

    /// `name`, to write: marked written in the hints until dropped.
    pub(super) fn write<'a>(&'a self, name: &'a str) -> Result<WriteTree<'a>> {
        let tree = self.open_tree(name)?;
        Ok(WriteTree {
            _under_way: self.hints.writing(name),
            tree,
        })
    }

    /// Every tree's name, sled's own default tree included.
    pub(super) fn names(&self) -> Vec<sled::IVec> {
        self.db.tree_names()
    }

    /// Makes every write so far durable.
    pub(super) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Where reads by key last found their records, and the records.
    pub(super) fn hints(&self) -> &PlaceHints {
        &self.hints
    }
}

/// A tree opened to read: only sled's calls that change nothing.
pub(super) struct ReadTree(sled::Tree);

impl ReadTree {
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        self.0.get(key)
    }

    pub(super) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> sled::Iter {
        self.0.range(range)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A tree opened to write, its collection marked written while it is held
/// ([`PlaceHints::writing`]). Only sled's calls this backend makes, and no
/// way to the tree itself: none can outlive the mark.
pub(super) struct WriteTree<'a> {
    tree: sled::Tree,
    _under_way: UnderWay<'a>,
}

type Value = Option<sled::IVec>;

impl WriteTree<'_> {
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> sled::Result<Value> {
        self.tree.get(key)
    }

    pub(super) fn insert(&self, key: &[u8], value: &[u8]) -> sled::Result<Value> {
        self.tree.insert(key, value)
    }

    pub(super) fn remove(&self, key: &[u8]) -> sled::Result<Value> {
        self.tree.remove(key)
    }

    pub(super) fn compare_and_swap(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> sled::Result<Result<(), sled::CompareAndSwapError>> {
        self.tree.compare_and_swap(key, old, new)
    }

    pub(super) fn apply_batch(&self, batch: sled::Batch) -> sled::Result<()> {
        self.tree.apply_batch(batch)
    }

    pub(super) fn update_and_fetch(
        &self,
        key: &[u8],
        f: impl FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> sled::Result<Value> {
        self.tree.update_and_fetch(key, f)
    }
}
