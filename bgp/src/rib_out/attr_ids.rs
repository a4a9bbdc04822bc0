//! Attribute sets by small number, per Adj-RIB-Out.
//!
//! The RIB's per-prefix slots name their attributes by [`AttrId`] instead of holding an
//! `Arc`: a slot is 12 bytes instead of 24, and the writer does not bump a reference count
//! shared with the API thread for every prefix it sends (a cache line bouncing between two
//! cores a million times). Ids are counted: slots and queues `retain` and `release` them, and
//! an id nothing uses any more is freed for reuse.

use std::sync::Arc;

use crate::fasthash::FastMap;
use crate::policy::RouteAttrs;

/// An attribute set's number (0 is none).
pub(super) type AttrId = u32;

#[derive(Debug)]
struct Entry {
    attrs: Arc<RouteAttrs>,
    refs: u32,
}

/// The attribute sets of one RIB, by value.
#[derive(Debug, Default)]
pub(super) struct AttrTable {
    /// Index `id - 1`.
    list: Vec<Option<Entry>>,
    by_value: FastMap<Arc<RouteAttrs>, AttrId>,
    free: Vec<AttrId>,
}

impl AttrTable {
    /// The id of `attrs` (equal values share one), made if new. The caller retains it.
    pub(super) fn id(&mut self, attrs: &Arc<RouteAttrs>) -> AttrId {
        if let Some(&id) = self.by_value.get(attrs) {
            return id;
        }
        let entry = Some(Entry {
            attrs: attrs.clone(),
            refs: 0,
        });
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(e) = self.list.get_mut(id as usize - 1) {
                    *e = entry;
                }
                id
            }
            None => {
                self.list.push(entry);
                self.list.len() as AttrId
            }
        };
        self.by_value.insert(attrs.clone(), id);
        id
    }

    /// The attributes of `id`.
    pub(super) fn get(&self, id: AttrId) -> Option<&Arc<RouteAttrs>> {
        let i = (id as usize).checked_sub(1)?;
        self.list.get(i)?.as_ref().map(|e| &e.attrs)
    }

    pub(super) fn retain(&mut self, id: AttrId) {
        if let Some(Some(e)) = (id as usize)
            .checked_sub(1)
            .and_then(|i| self.list.get_mut(i))
        {
            e.refs += 1;
        }
    }

    pub(super) fn release(&mut self, id: AttrId) {
        let Some(i) = (id as usize).checked_sub(1) else {
            return;
        };
        let Some(slot) = self.list.get_mut(i) else {
            return;
        };
        if let Some(e) = slot {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                self.by_value.remove(&e.attrs);
                *slot = None;
                self.free.push(id);
            }
        }
    }

    /// Attribute sets in use.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_value.len()
    }
}
