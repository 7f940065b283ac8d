//! A fake Kubernetes API server on a free loopback port: list and watch for the collections
//! discovery reads, served from objects the test applies (JSON as the API serves it), with
//! resource versions, paging, label and field selectors, bookmarks, bearer-token auth, and
//! the failures a real one has — `410 Gone` (as a status or an in-stream `ERROR` event after
//! compaction) and watches dropped mid-stream. Every request is recorded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How a watch from a compacted version is refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GoneAs {
    Status,
    Event,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (collection, namespace, name) → (version, object).
    objects: BTreeMap<(String, String, String), Value>,
    /// Every change: (version, collection, namespace, type, object).
    events: Vec<(u64, String, String, &'static str, Value)>,
    /// Watches from a version below this are answered `410 Gone`.
    compacted: u64,
    gone_as: Option<GoneAs>,
    /// Bumped to break every open watch.
    generation: u64,
    requests: Vec<String>,
}

pub struct FakeKube {
    pub addr: SocketAddr,
    shared: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

/// The collection an object kind lives in, and whether it is namespaced.
fn collection(kind: &str) -> (&'static str, bool) {
    match kind {
        "Pod" => ("pods", true),
        "Service" => ("services", true),
        "Endpoints" => ("endpoints", true),
        "EndpointSlice" => ("endpointslices", true),
        "Ingress" => ("ingresses", true),
        "Node" => ("nodes", false),
        "Namespace" => ("namespaces", false),
        other => panic!("the fake API server does not serve {other}"),
    }
}

impl FakeKube {
    /// Starts the server; with `token`, every request must carry `Authorization: Bearer`
    /// and that token.
    pub fn start(token: Option<&str>) -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, stp) = (shared.clone(), stop.clone());
        let token = token.map(str::to_string);
        std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (sh, stp, token) = (sh.clone(), stp.clone(), token.clone());
                        std::thread::spawn(move || serve(conn, &sh, &stp, token.as_deref()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeKube { addr, shared, stop }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (m, cv) = &*self.shared;
        let out = f(&mut m.lock().unwrap());
        cv.notify_all();
        out
    }

    /// Creates or replaces an object (by its `kind`, namespace and name) with a new version.
    pub fn apply(&self, mut obj: Value) {
        let kind = obj["kind"].as_str().expect("object kind").to_string();
        let (coll, namespaced) = collection(&kind);
        let ns = if namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("object name")
            .to_string();
        self.with(|s| {
            s.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            let key = (coll.to_string(), ns.clone(), name);
            let kind = if s.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.objects.insert(key, obj.clone());
            s.events.push((s.rv, coll.to_string(), ns, kind, obj));
        });
    }

    /// Deletes an object.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let (coll, namespaced) = collection(kind);
        let ns = if namespaced { namespace } else { "" };
        self.with(|s| {
            let key = (coll.to_string(), ns.to_string(), name.to_string());
            if let Some(mut obj) = s.objects.remove(&key) {
                s.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                s.events
                    .push((s.rv, coll.to_string(), ns.to_string(), "DELETED", obj));
            }
        });
    }

    /// Forgets the history: every open watch breaks, and watching again from any version
    /// seen so far is answered `410 Gone` (`how`), so clients must list again.
    pub fn compact(&self, how: GoneAs) {
        self.with(|s| {
            s.compacted = s.rv + 1;
            s.gone_as = Some(how);
            s.generation += 1;
        });
    }

    /// Breaks every open watch mid-stream (no final chunk), as a lost connection does.
    pub fn drop_watches(&self) {
        self.with(|s| s.generation += 1);
    }

    /// The requests so far: `LIST <path>` and `WATCH <path> rv=<version>`.
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.shared.1.notify_all();
    }
}

/// What a request asks for.
struct Query {
    coll: String,
    namespace: String,
    params: BTreeMap<String, String>,
}

fn parse_target(target: &str) -> Option<Query> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match *segs.first()? {
        "api" => segs.get(2..)?,
        "apis" => segs.get(3..)?,
        _ => return None,
    };
    let (namespace, coll) = match rest {
        [coll] => (String::new(), coll.to_string()),
        ["namespaces", ns, coll] => (ns.to_string(), coll.to_string()),
        _ => return None,
    };
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), unescape(v))
        })
        .collect();
    Some(Query {
        coll,
        namespace,
        params,
    })
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality, inequality and existence requirements, comma-separated.
fn matches_labels(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .all(|req| {
            let req = req.trim();
            if let Some((k, v)) = req.split_once("!=") {
                labels[k.trim()].as_str() != Some(v.trim())
            } else if let Some((k, v)) = req.split_once('=') {
                let v = v.trim_start_matches('=');
                labels[k.trim()].as_str() == Some(v.trim())
            } else if let Some(k) = req.strip_prefix('!') {
                labels.get(k.trim()).is_none()
            } else {
                labels.get(req).is_some()
            }
        })
}

/// `metadata.name`, `metadata.namespace` and `spec.nodeName` equality.
fn matches_fields(selector: &str, obj: &Value) -> bool {
    selector
        .split(',')
        .filter(|r| !r.trim().is_empty())
        .all(|req| {
            let (k, v, eq) = match req.split_once("!=") {
                Some((k, v)) => (k, v, false),
                None => match req.split_once('=') {
                    Some((k, v)) => (k, v.trim_start_matches('='), true),
                    None => return false,
                },
            };
            let mut cur = obj;
            for part in k.trim().split('.') {
                cur = &cur[part];
            }
            (cur.as_str().unwrap_or("") == v.trim()) == eq
        })
}

fn selected(q: &Query, ns: &str, obj: &Value) -> bool {
    (q.namespace.is_empty() || q.namespace == ns)
        && matches_labels(
            q.params.get("labelSelector").map_or("", String::as_str),
            &obj["metadata"]["labels"],
        )
        && matches_fields(
            q.params.get("fieldSelector").map_or("", String::as_str),
            obj,
        )
}

fn serve(
    mut conn: TcpStream,
    shared: &Arc<(Mutex<State>, Condvar)>,
    stop: &AtomicBool,
    token: Option<&str>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        // One request head (GET only: no bodies).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.lines();
        let target = lines
            .next()
            .unwrap_or("")
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string();
        let auth = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim().to_string());
        if let Some(t) = token
            && auth.as_deref() != Some(&format!("Bearer {t}"))
        {
            let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401});
            respond(&mut conn, 401, &body);
            continue;
        }
        let Some(q) = parse_target(&target) else {
            respond(
                &mut conn,
                404,
                &json!({"kind": "Status", "code": 404, "message": "not found"}),
            );
            continue;
        };
        if q.params
            .get("watch")
            .is_some_and(|w| w == "1" || w == "true")
        {
            watch(conn, &q, &target, shared, stop);
            return;
        }
        list(&mut conn, &q, &target, shared);
    }
}

fn respond(conn: &mut TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

fn list(conn: &mut TcpStream, q: &Query, target: &str, shared: &Arc<(Mutex<State>, Condvar)>) {
    let (m, _) = &**shared;
    let mut s = m.lock().unwrap();
    s.requests.push(format!("LIST {target}"));
    let items: Vec<Value> = s
        .objects
        .iter()
        .filter(|((c, ns, _), obj)| *c == q.coll && selected(q, ns, obj))
        .map(|(_, o)| o.clone())
        .collect();
    let rv = s.rv;
    drop(s);
    let limit: usize = q
        .params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX);
    let start: usize = q
        .params
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let end = start.saturating_add(limit).min(items.len());
    let cont = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    let body = json!({
        "kind": "List", "apiVersion": "v1",
        "metadata": {"resourceVersion": rv.to_string(), "continue": cont},
        "items": items[start.min(end)..end],
    });
    respond(conn, 200, &body);
}

fn chunk(conn: &mut TcpStream, data: &str) -> bool {
    write!(conn, "{:x}\r\n{data}\r\n", data.len())
        .and_then(|_| conn.flush())
        .is_ok()
}

fn watch(
    mut conn: TcpStream,
    q: &Query,
    target: &str,
    shared: &Arc<(Mutex<State>, Condvar)>,
    stop: &AtomicBool,
) {
    let (m, cv) = &**shared;
    let from: u64 = q
        .params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(600), Duration::from_secs);
    let bookmarks = q
        .params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let mut s = m.lock().unwrap();
    s.requests.push(format!("WATCH {target}"));
    if from < s.compacted {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410});
        if s.gone_as == Some(GoneAs::Status) {
            drop(s);
            respond(&mut conn, 410, &status);
            return;
        }
        drop(s);
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        chunk(
            &mut conn,
            &format!("{}\n", json!({"type": "ERROR", "object": status})),
        );
        chunk(&mut conn, "");
        return;
    }
    let generation = s.generation;
    drop(s);
    if write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let started = Instant::now();
    let mut last = from;
    let mut last_bookmark = Instant::now();
    loop {
        let s = m.lock().unwrap();
        if s.generation != generation || stop.load(Ordering::Relaxed) {
            // Broken mid-stream: no final chunk.
            let _ = conn.shutdown(std::net::Shutdown::Both);
            return;
        }
        let events: Vec<Value> = s
            .events
            .iter()
            .filter(|(rv, c, ns, _, obj)| *rv > last && *c == q.coll && selected(q, ns, obj))
            .map(|(_, _, _, t, obj)| json!({"type": t, "object": obj}))
            .collect();
        let rv = s.rv;
        if events.is_empty() && last_bookmark.elapsed() < Duration::from_secs(1) {
            let (g, _) = cv.wait_timeout(s, Duration::from_millis(200)).unwrap();
            drop(g);
        } else {
            drop(s);
        }
        for e in &events {
            if !chunk(&mut conn, &format!("{e}\n")) {
                return;
            }
        }
        last = last.max(rv);
        if bookmarks && last_bookmark.elapsed() >= Duration::from_secs(1) {
            last_bookmark = Instant::now();
            let b = json!({"type": "BOOKMARK", "object": {"kind": "Bookmark",
                "metadata": {"resourceVersion": last.to_string()}}});
            if !chunk(&mut conn, &format!("{b}\n")) {
                return;
            }
        }
        if started.elapsed() >= timeout {
            chunk(&mut conn, "");
            return;
        }
    }
}
