//! Process signals, taken synchronously: the main thread blocks SIGTERM, SIGINT and SIGHUP
//! before starting any other thread (so all inherit the mask) and waits for them with sigwait.

pub type SignalSet = libc::sigset_t;

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and those it starts afterwards.
pub fn block() -> SignalSet {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the blocked signals and returns it.
pub fn wait(set: &SignalSet) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` is a valid, initialised sigset; `sig` is a valid out-pointer.
        if unsafe { libc::sigwait(set, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Waits for SIGTERM or SIGINT, ignoring SIGHUP.
pub fn wait_for_termination(set: &SignalSet) -> libc::c_int {
    loop {
        let sig = wait(set);
        if sig != libc::SIGHUP {
            return sig;
        }
    }
}

pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "other",
    }
}
