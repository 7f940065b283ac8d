//! A core's shards, one per remote-write endpoint, as reloads change the endpoints: an
//! unchanged endpoint keeps its shard untouched (same lanes, same connections); a changed one
//! gets a new shard once the old one has sent what it held, reading on from the endpoint's
//! cursor; a removed one stops and its cursor is deleted; an added one starts at the WAL's
//! head.

use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{Endpoint, Shard};
use crate::log::Level;
use crate::percore::CoreControl;
use crate::selfmetrics::ShardStats;

/// Makes and starts a shard of an endpoint on this core (with these counters, when it takes
/// over a shard's of the same endpoint name and URL).
pub type MakeShard = dyn Fn(Arc<Endpoint>, Option<Arc<ShardStats>>) -> Rc<Shard>;

/// Lets the counters of a shard that ended for good go (its series leave `/metrics`).
pub type ForgetShard = dyn Fn(&Shard);

pub struct Senders {
    shards: RefCell<Vec<Rc<Shard>>>,
    /// Endpoint names whose retired shard has not ended yet, and what follows it once it has
    /// (the latest reload's endpoint of that name; `None`: the endpoint was removed).
    replacing: RefCell<HashMap<String, Option<Arc<Endpoint>>>>,
    ctl: Rc<CoreControl>,
    make: Box<MakeShard>,
    forget: Box<ForgetShard>,
}

impl Senders {
    pub fn new(
        shards: Vec<Rc<Shard>>,
        ctl: Rc<CoreControl>,
        make: Box<MakeShard>,
        forget: Box<ForgetShard>,
    ) -> Rc<Senders> {
        Rc::new(Senders {
            shards: RefCell::new(shards),
            replacing: Default::default(),
            ctl,
            make,
            forget,
        })
    }

    /// The shards that take committed scrapes now.
    pub fn shards(&self) -> Ref<'_, Vec<Rc<Shard>>> {
        self.shards.borrow()
    }

    /// Moves to `endpoints` (the reloaded configuration's, an unchanged endpoint being the
    /// same `Arc`).
    pub fn apply(self: &Rc<Self>, endpoints: &[Arc<Endpoint>]) {
        let by_name = |name: &str| endpoints.iter().find(|e| e.cfg.name == name).cloned();
        // Replacements under way follow the latest configuration.
        for (name, next) in self.replacing.borrow_mut().iter_mut() {
            *next = by_name(name);
        }
        let current = std::mem::take(&mut *self.shards.borrow_mut());
        let mut kept = Vec::new();
        for shard in current {
            if endpoints.iter().any(|e| Arc::ptr_eq(e, shard.endpoint())) {
                kept.push(shard);
                continue;
            }
            shard.retire();
            let name = shard.endpoint().cfg.name.clone();
            self.replacing
                .borrow_mut()
                .insert(name.clone(), by_name(&name));
            let this = self.clone();
            crate::runtime::spawn(async move { this.replace(shard).await });
        }
        for ep in endpoints {
            if kept.iter().any(|s| Arc::ptr_eq(s.endpoint(), ep))
                || self.replacing.borrow().contains_key(&ep.cfg.name)
            {
                continue;
            }
            crate::log!(
                Level::Info,
                "remote",
                "remote write endpoint added by a reload; it starts at the WAL's head",
                remote_name = ep.cfg.name,
                url = ep.url
            );
            kept.push((self.make)(ep.clone(), None));
        }
        self.shards.borrow_mut().extend(kept);
    }

    /// Once the retired `old` has ended: the endpoint that follows it starts from the
    /// endpoint's cursor, or, with none, the endpoint's cursor is deleted.
    async fn replace(self: Rc<Self>, old: Rc<Shard>) {
        old.ended().await;
        let ep = old.endpoint();
        let next = self.replacing.borrow_mut().remove(&ep.cfg.name).flatten();
        match next {
            Some(next) => {
                if self.ctl.shutdown.is_set() {
                    // The WAL keeps the rest; the next start resumes from the cursor.
                    return;
                }
                let same_series = next.url == ep.url;
                crate::log!(
                    Level::Info,
                    "remote",
                    "remote write endpoint changed by a reload; going on from its cursor",
                    remote_name = next.cfg.name,
                    url = next.url
                );
                let stats = same_series.then(|| old.stats().clone());
                if !same_series {
                    (self.forget)(&old);
                }
                let shard = (self.make)(next, stats);
                self.shards.borrow_mut().push(shard);
            }
            None => {
                crate::log!(
                    Level::Info,
                    "remote",
                    "remote write endpoint removed by a reload; its WAL position is deleted",
                    remote_name = ep.cfg.name,
                    url = ep.url
                );
                self.ctl.wal.borrow_mut().remove_endpoint(old.slot());
                (self.forget)(&old);
            }
        }
    }
}
