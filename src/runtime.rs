//! The data-plane runtime: one pinned thread per core, each running one monoio executor with
//! the fusion driver (io_uring where the kernel and seccomp allow it, epoll otherwise).
//!
//! **Invariant:** this is the only module that names monoio. Everything else uses the items
//! re-exported here, so moving to another completion-based runtime is a change to this file.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub use monoio::buf::IoBufMut;
pub use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
pub use monoio::net::{TcpListener, TcpStream};
pub use monoio::time::{Instant, sleep, timeout};
pub use monoio_rustls::{ClientTlsStream as TlsStream, TlsConnector};

/// Which I/O driver a core runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Submission queue entries per ring: enough for every in-flight scrape and send on a core.
const RING_ENTRIES: u32 = 1024;

/// Starts a core thread named `spate-core-<id>`, pinned to `cpu` when given, and runs the future
/// returned by `main` on its executor until it completes. `on_driver` learns which driver the
/// core got, before `main` runs.
pub fn start_core<F, Fut>(
    id: usize,
    cpu: Option<usize>,
    on_driver: impl FnOnce(Driver) + Send + 'static,
    main: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    std::thread::Builder::new()
        .name(format!("spate-core-{id}"))
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(RING_ENTRIES)
                .enable_timer()
                .build();
            let mut rt = match built {
                Ok(rt) => rt,
                Err(e) => {
                    crate::log!(
                        crate::log::Level::Error,
                        "runtime",
                        "cannot start the core's executor",
                        core = id,
                        err = e
                    );
                    std::process::exit(1);
                }
            };
            let driver = match &rt {
                monoio::FusionRuntime::Uring(_) => Driver::IoUring,
                monoio::FusionRuntime::Legacy(_) => Driver::Epoll,
            };
            on_driver(driver);
            rt.block_on(main());
        })
}

/// `fdatasync` of `file` through the core's driver: an io_uring operation where the core runs
/// on io_uring (the core goes on meanwhile), the system call on the epoll driver.
pub async fn sync_data(file: std::fs::File) -> std::io::Result<()> {
    let file = monoio::fs::File::from_std(file)?;
    let synced = file.sync_data().await;
    let closed = file.close().await;
    synced.and(closed)
}

/// Owned bytes the ring writes from; their address does not move while the operation runs
/// (monoio pins the buffer, and the bytes live on the heap behind `B`).
struct RingBytes<B>(B);

// SAFETY: `read_ptr` and `bytes_init` describe `B`'s own bytes, which stay valid and unmoved
// for as long as monoio holds the buffer: `B` owns them on the heap (`AsRef` of a Vec-backed
// type), so moving the `RingBytes` does not move them.
unsafe impl<B: AsRef<[u8]> + Unpin + 'static> monoio::buf::IoBuf for RingBytes<B> {
    fn read_ptr(&self) -> *const u8 {
        self.0.as_ref().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.as_ref().len()
    }
}

/// Writes all of `buf` at `pos` of `file` through the core's driver (an io_uring operation on
/// io_uring; the system call on epoll), on a duplicate of the descriptor that the operation
/// owns until it completes.
pub async fn write_all_at<B: AsRef<[u8]> + Unpin + 'static>(
    file: &std::fs::File,
    buf: B,
    pos: u64,
) -> std::io::Result<()> {
    let file = monoio::fs::File::from_std(file.try_clone()?)?;
    let (written, _) = file.write_all_at(RingBytes(buf), pos).await;
    let closed = file.close().await;
    written.and(closed)
}

/// Runs `f` to completion on a new single-threaded executor on the calling thread (the same
/// driver choice as a core, a small ring): for control-plane threads that use the data plane's
/// HTTP client now and then (`http_sd`).
pub fn block_on<F: Future>(f: F) -> std::io::Result<F::Output> {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(64)
        .enable_timer()
        .build()?;
    Ok(rt.block_on(f))
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity(0, ..) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            let err = std::io::Error::last_os_error();
            crate::log!(
                crate::log::Level::Warn,
                "runtime",
                "cannot pin core thread",
                cpu = cpu,
                err = err
            );
        }
    }
}

/// The CPUs this process may run on, in order (respects taskset and cgroup cpusets).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in pin_to_cpu; sched_getaffinity fills the set for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    }
}

/// Spawns a task on the current core's executor.
pub fn spawn<F>(f: F)
where
    F: Future + 'static,
    F::Output: 'static,
{
    drop(monoio::spawn(f));
}

/// A one-shot, cross-thread event (shutdown): set once from any thread, awaited on any core.
#[derive(Clone, Default)]
pub struct Event {
    inner: Arc<EventInner>,
}

#[derive(Default)]
struct EventInner {
    set: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Event {
    pub fn new() -> Event {
        Event::default()
    }

    pub fn set(&self) {
        self.inner.set.store(true, Ordering::SeqCst);
        let wakers =
            std::mem::take(&mut *self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers {
            w.wake();
        }
    }

    pub fn is_set(&self) -> bool {
        self.inner.set.load(Ordering::SeqCst)
    }

    /// Completes once the event is set.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_set() {
                return Poll::Ready(());
            }
            let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            drop(wakers);
            // Re-check: set() may have run between the first check and the registration.
            if self.is_set() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// A single-waiter notification within one core (no atomics, no locks).
#[derive(Default)]
pub struct LocalNotify {
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalNotify {
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Completes at the next `notify` (or at once if one is pending), consuming it.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// A lock shared by one core's tasks (not across threads): [`LocalLock::lock`] completes once
/// no other task holds it; the guard releases it and wakes the next waiter.
#[derive(Default)]
pub struct LocalLock {
    held: Cell<bool>,
    waiters: std::cell::RefCell<std::collections::VecDeque<Waker>>,
}

/// Holds a [`LocalLock`] until dropped.
pub struct LocalGuard<'a>(&'a LocalLock);

impl LocalLock {
    pub async fn lock(&self) -> LocalGuard<'_> {
        std::future::poll_fn(|cx| {
            if self.held.replace(true) {
                self.waiters.borrow_mut().push_back(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        LocalGuard(self)
    }
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.0.held.set(false);
        let next = self.0.waiters.borrow_mut().pop_front();
        if let Some(w) = next {
            w.wake();
        }
    }
}

/// Which of two raced futures finished first.
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures and returns the first to complete (the left one wins a tie); the other
/// is dropped.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        if let Poll::Ready(v) = Pin::as_mut(&mut a).poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = Pin::as_mut(&mut b).poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

/// Sleeps for `d` unless `event` is set first; returns true if the event fired.
pub async fn sleep_or(d: Duration, event: &Event) -> bool {
    matches!(race(event.wait(), sleep(d)).await, Either::Left(()))
}

/// A cross-thread queue into one core: any thread sends, one task on the core receives.
pub struct Mailbox<T> {
    items: Mutex<Vec<T>>,
    waker: Mutex<Option<Waker>>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            items: Mutex::new(Vec::new()),
            waker: Mutex::new(None),
        }
    }
}

impl<T> Mailbox<T> {
    pub fn send(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }

    /// Completes with everything sent since the last receive, once there is something.
    pub fn recv(&self) -> impl Future<Output = Vec<T>> + '_ {
        std::future::poll_fn(move |cx| {
            let take = || {
                let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
                (!items.is_empty()).then(|| std::mem::take(&mut *items))
            };
            if let Some(items) = take() {
                return Poll::Ready(items);
            }
            *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // Re-check: a send may have come between the first look and the registration.
            match take() {
                Some(items) => Poll::Ready(items),
                None => Poll::Pending,
            }
        })
    }
}
