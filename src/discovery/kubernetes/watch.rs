//! The reflector: one list + watch per (API server, kind, namespace, selectors), shared by
//! every discovery that needs it, keeping a store of the objects (trimmed) up to date in
//! place, as client-go's informers do:
//!
//! - **list** in pages of 500 (`limit`, `continue`), replacing the store and telling
//!   subscribers what was added, changed and removed since the store's last state;
//! - **watch** from the list's `resourceVersion` with bookmarks, for a random 5–10 minutes
//!   (`timeoutSeconds`), then again from the last version seen;
//! - on `410 Gone` (as the response status or as an `ERROR` event) list again at once; on any
//!   other failure wait with backoff (0.8 s doubling to 30 s, jittered; reset after a healthy
//!   watch) and watch again from the last version, or list again if it was never listed.
//!
//! Each reflector runs on its own control-plane thread; it ends when the last subscriber's
//! handle is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::client::Api;
use super::objects::{Kind, Object};
use crate::log::Level;
use crate::runtime::{Event, race};
use crate::selfmetrics::SdStats;

/// What a reflector watches.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchKey {
    pub api: Api,
    pub kind: Kind,
    /// Empty: every namespace.
    pub namespace: String,
    pub label_selector: String,
    pub field_selector: String,
}

/// A change a reflector tells its subscribers: the object `key` of `kind` was added,
/// changed or removed (look in the store for which).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: Kind,
    pub key: String,
}

/// The state a reflector shares with its subscribers.
struct Shared {
    key: WatchKey,
    store: Mutex<HashMap<String, Arc<Object>>>,
    synced: AtomicBool,
    subscribers: Mutex<Vec<Sender<Notice>>>,
}

/// A subscriber's handle on a reflector; the reflector stops when the last handle goes.
pub struct Watch {
    shared: Arc<Shared>,
    stop: Arc<Event>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.set();
    }
}

impl Watch {
    /// The object stored under `key` (`namespace/name`, or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        lock(&self.shared.store).get(key).cloned()
    }

    /// Every stored object.
    pub fn objects(&self) -> Vec<Arc<Object>> {
        lock(&self.shared.store).values().cloned().collect()
    }

    /// Whether the first list has completed.
    pub fn synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    pub fn key(&self) -> &WatchKey {
        &self.shared.key
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running reflectors, shared by key.
static REFLECTORS: Mutex<Vec<(WatchKey, Weak<Watch>)>> = Mutex::new(Vec::new());

/// The reflector for `key` (started if none runs), with `tx` subscribed to its notices.
pub fn subscribe(key: WatchKey, tx: Sender<Notice>, stats: &Arc<SdStats>) -> Arc<Watch> {
    let mut all = lock(&REFLECTORS);
    all.retain(|(_, w)| w.strong_count() > 0);
    if let Some(w) = all
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        lock(&w.shared.subscribers).push(tx);
        return w;
    }
    let shared = Arc::new(Shared {
        key: key.clone(),
        store: Mutex::new(HashMap::new()),
        synced: AtomicBool::new(false),
        subscribers: Mutex::new(vec![tx]),
    });
    let stop = Arc::new(Event::new());
    let watch = Arc::new(Watch {
        shared: shared.clone(),
        stop: stop.clone(),
    });
    let stats = stats.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("spate-k8s-{}", key.kind.name()))
        .spawn(move || {
            let mut r = Reflector {
                shared,
                stats,
                version: String::new(),
            };
            let _ = crate::runtime::block_on(async {
                let _ = race(stop.wait(), r.run()).await;
            });
        });
    if let Err(e) = spawned {
        crate::log!(
            Level::Error,
            "discovery",
            "cannot start a Kubernetes watch thread",
            err = e
        );
    }
    all.push((key, Arc::downgrade(&watch)));
    watch
}

struct Reflector {
    shared: Arc<Shared>,
    stats: Arc<SdStats>,
    /// The last resourceVersion seen; empty until listed (and after `410 Gone`).
    version: String,
}

/// Why a watch ended.
enum WatchEnd {
    /// The server ended it (its timeout): watch again from the last version.
    Done,
    /// `410 Gone`: the version is too old; list again.
    Gone,
    Failed(String),
}

const BACKOFF_START: Duration = Duration::from_millis(800);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A watch that lasted this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(120);
/// Objects per list page.
const PAGE: usize = 500;
/// The largest list page or event line taken.
const MAX_BODY: usize = 256 << 20;

impl Reflector {
    async fn run(&mut self) {
        let mut backoff = BACKOFF_START;
        loop {
            if self.version.is_empty() {
                match self.list().await {
                    Ok(()) => backoff = BACKOFF_START,
                    Err(e) => {
                        self.failed("list", &e);
                        crate::runtime::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let started = Instant::now();
            match self.watch().await {
                WatchEnd::Done => {}
                WatchEnd::Gone => {
                    crate::log!(
                        Level::Debug,
                        "discovery",
                        "watch version too old; listing again",
                        kind = self.shared.key.kind.name()
                    );
                    self.version.clear();
                }
                WatchEnd::Failed(e) => {
                    self.failed("watch", &e);
                    if started.elapsed() >= HEALTHY {
                        backoff = BACKOFF_START;
                    }
                    crate::runtime::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn failed(&self, what: &str, err: &str) {
        self.stats.k8s_failures.fetch_add(1, Ordering::Relaxed);
        let k = &self.shared.key;
        crate::log!(
            Level::Error,
            "discovery",
            "Kubernetes request failed; the last objects stay and it is retried",
            request = what,
            kind = k.kind.name(),
            namespace = k.namespace,
            api_server = k.api.url,
            err = err
        );
    }

    fn query(&self, extra: &str) -> String {
        let k = &self.shared.key;
        let mut q = k.kind.path(&k.namespace);
        q.push('?');
        q.push_str(extra);
        for (name, value) in [
            ("labelSelector", &k.label_selector),
            ("fieldSelector", &k.field_selector),
        ] {
            if !value.is_empty() {
                q.push('&');
                q.push_str(name);
                q.push('=');
                crate::http::query_escape(&mut q, value);
            }
        }
        q
    }

    /// Lists every object (in pages) and replaces the store with them.
    async fn list(&mut self) -> Result<(), String> {
        #[derive(Deserialize)]
        struct ListMeta {
            #[serde(default, rename = "resourceVersion")]
            resource_version: String,
            #[serde(default, rename = "continue")]
            cont: String,
        }
        #[derive(Deserialize)]
        struct List<'a> {
            metadata: ListMeta,
            #[serde(borrow, default)]
            items: Vec<&'a RawValue>,
        }
        let kind = self.shared.key.kind;
        let mut objects: HashMap<String, Arc<Object>> = HashMap::new();
        let mut cont = String::new();
        let version = loop {
            let mut extra = format!("limit={PAGE}");
            if !cont.is_empty() {
                extra.push_str("&continue=");
                crate::http::query_escape(&mut extra, &cont);
            }
            let path = self.query(&extra);
            let (status, body) = self.shared.key.api.get(&path, MAX_BODY).await?;
            if status != 200 {
                return Err(status_error(status, &body));
            }
            let list: List = serde_json::from_slice(&body)
                .map_err(|e| format!("cannot parse the {} list: {e}", kind.name()))?;
            for item in list.items {
                let obj = kind
                    .parse(item)
                    .map_err(|e| format!("cannot parse a {} in the list: {e}", kind.name()))?;
                objects.insert(obj.key(), Arc::new(obj));
            }
            if list.metadata.cont.is_empty() {
                break list.metadata.resource_version;
            }
            cont = list.metadata.cont;
        };
        let mut notices = Vec::new();
        {
            let mut store = lock(&self.shared.store);
            for (k, old) in store.iter() {
                match objects.get(k) {
                    None => {
                        self.count(kind, 2);
                        notices.push(k.clone());
                    }
                    Some(new) if new != old => {
                        self.count(kind, 1);
                        notices.push(k.clone());
                    }
                    Some(_) => {}
                }
            }
            for k in objects.keys() {
                if !store.contains_key(k) {
                    self.count(kind, 0);
                    notices.push(k.clone());
                }
            }
            *store = objects;
        }
        self.version = version;
        self.shared.synced.store(true, Ordering::Release);
        self.notify(notices);
        Ok(())
    }

    /// Watches from the last version until the server ends the watch or it fails.
    async fn watch(&mut self) -> WatchEnd {
        // Like client-go: a random duration between 5 and 10 minutes.
        let seconds = 300 + jitter(Duration::from_secs(300)).as_secs() % 300;
        let mut extra =
            format!("watch=1&allowWatchBookmarks=true&timeoutSeconds={seconds}&resourceVersion=");
        crate::http::query_escape(&mut extra, &self.version);
        let path = self.query(&extra);
        let (mut conn, status) = match self.shared.key.api.open_stream(&path).await {
            Ok(c) => c,
            Err(e) => return WatchEnd::Failed(e),
        };
        if status != 200 {
            let mut body = Vec::new();
            while body.len() < 64 * 1024 {
                match crate::runtime::timeout(Duration::from_secs(10), conn.read_stream(&mut body))
                    .await
                {
                    Ok(Ok(true)) => continue,
                    _ => break,
                }
            }
            return match status {
                410 => WatchEnd::Gone,
                _ => WatchEnd::Failed(status_error(status, &body)),
            };
        }
        // A silent connection longer than the watch itself is a dead one.
        let stall = Duration::from_secs(seconds + 30);
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let more = match crate::runtime::timeout(stall, conn.read_stream(&mut buf)).await {
                Err(_) => return WatchEnd::Failed("the watch stalled".into()),
                Ok(Err(e)) => return WatchEnd::Failed(e.to_string()),
                Ok(Ok(more)) => more,
            };
            let mut start = 0;
            while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
                let line = &buf[start..start + nl];
                start += nl + 1;
                if line.trim_ascii().is_empty() {
                    continue;
                }
                if let Some(end) = self.event(line) {
                    return end;
                }
            }
            buf.drain(..start);
            if buf.len() > MAX_BODY {
                return WatchEnd::Failed("a watch event is larger than 256 MiB".into());
            }
            if !more {
                if !buf.trim_ascii().is_empty() {
                    let line = std::mem::take(&mut buf);
                    if let Some(end) = self.event(&line) {
                        return end;
                    }
                }
                return WatchEnd::Done;
            }
        }
    }

    /// Applies one watch event; `Some` ends the watch.
    fn event(&mut self, line: &[u8]) -> Option<WatchEnd> {
        #[derive(Deserialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(borrow)]
            object: &'a RawValue,
        }
        #[derive(Deserialize)]
        struct Status {
            #[serde(default)]
            code: u16,
            #[serde(default)]
            message: String,
        }
        #[derive(Deserialize)]
        struct Bookmark {
            metadata: Version,
        }
        #[derive(Deserialize)]
        struct Version {
            #[serde(default, rename = "resourceVersion")]
            resource_version: String,
        }
        let ev: Event = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(e) => return Some(WatchEnd::Failed(format!("cannot parse a watch event: {e}"))),
        };
        let kind = self.shared.key.kind;
        match ev.kind {
            "ADDED" | "MODIFIED" | "DELETED" => {
                let obj = match kind.parse(ev.object) {
                    Ok(o) => o,
                    Err(e) => {
                        return Some(WatchEnd::Failed(format!(
                            "cannot parse the {} of a watch event: {e}",
                            kind.name()
                        )));
                    }
                };
                let key = obj.key();
                let version = obj.meta().resource_version.clone();
                let mut store = lock(&self.shared.store);
                if ev.kind == "DELETED" {
                    if store.remove(&key).is_some() {
                        self.count(kind, 2);
                    }
                } else {
                    let was = store.insert(key.clone(), Arc::new(obj));
                    self.count(kind, usize::from(was.is_some()));
                }
                drop(store);
                if !version.is_empty() {
                    self.version = version;
                }
                self.notify(vec![key]);
                None
            }
            "BOOKMARK" => {
                if let Ok(b) = serde_json::from_str::<Bookmark>(ev.object.get())
                    && !b.metadata.resource_version.is_empty()
                {
                    self.version = b.metadata.resource_version;
                }
                None
            }
            "ERROR" => {
                let s: Status = serde_json::from_str(ev.object.get()).unwrap_or(Status {
                    code: 0,
                    message: ev.object.get().to_string(),
                });
                Some(if s.code == 410 {
                    WatchEnd::Gone
                } else {
                    WatchEnd::Failed(format!("watch error {}: {}", s.code, s.message))
                })
            }
            other => Some(WatchEnd::Failed(format!(
                "unknown watch event type {other:?}"
            ))),
        }
    }

    /// Counts an event: 0 add, 1 update, 2 delete.
    fn count(&self, kind: Kind, event: usize) {
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.stats.k8s_events[i][event].fetch_add(1, Ordering::Relaxed);
    }

    fn notify(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let kind = self.shared.key.kind;
        let mut subs = lock(&self.shared.subscribers);
        subs.retain(|tx| {
            keys.iter().all(|k| {
                tx.send(Notice {
                    kind,
                    key: k.clone(),
                })
                .is_ok()
            })
        });
    }
}

/// An error for a non-200 answer, with the API's `Status` message when it has one.
fn status_error(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if !s.message.is_empty() => {
            format!("API server returned HTTP {status}: {}", s.message)
        }
        _ => format!(
            "API server returned HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    }
}

/// `d` scaled by a factor in [1, 2) taken from the clock (retries of many reflectors spread).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let f = 1.0 + f64::from(nanos % 1000) / 1000.0;
    d.mul_f64(f)
}
