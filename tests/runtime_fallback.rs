//! spate must run where io_uring is unavailable: under a seccomp filter that refuses the
//! io_uring syscalls (Docker's and containerd's default profiles do), and when forced onto the
//! epoll driver.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{CounterTarget, Receiver, Spate, wait_for};

fn config(target: &str, receiver: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: c\n    static_configs:\n      - targets: [\"{target}\"]\nremote_write:\n  - url: {receiver}\n    queue_config:\n      batch_send_deadline: 500ms\n"
    )
}

fn delivers_on_epoll(customize: impl FnOnce(&mut std::process::Command)) {
    let target = CounterTarget::start();
    let receiver = Receiver::start(|_| 200);
    let mut spate = Spate::start_with(
        &config(&target.addr.to_string(), &receiver.url()),
        &["--cores=2"],
        customize,
    );
    wait_for(
        Duration::from_secs(60),
        "samples through the epoll driver",
        || {
            receiver
                .samples()
                .iter()
                .any(|s| s.label("__name__") == Some("test_counter") && s.value >= 2.0)
                .then_some(())
        },
    );
    assert_eq!(
        spate.metric("spate_core_driver{core=\"0\",driver=\"epoll\"}"),
        1.0
    );
    assert_eq!(
        spate.metric("spate_core_driver{core=\"1\",driver=\"epoll\"}"),
        1.0
    );
    assert!(spate.proc.log_text().contains("driver=epoll"));
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

#[test]
fn runs_on_epoll_when_forced() {
    delivers_on_epoll(|cmd| {
        cmd.env("MONOIO_FORCE_LEGACY_DRIVER", "1");
    });
}

#[cfg(target_arch = "x86_64")]
#[test]
fn runs_when_seccomp_blocks_io_uring() {
    delivers_on_epoll(|cmd| {
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe; the filter program lives on the closure's stack until then.
        unsafe {
            cmd.pre_exec(block_io_uring);
        }
    });
}

/// Installs a seccomp filter that makes io_uring_setup/enter/register (425–427 on x86_64)
/// fail with EPERM, as container runtimes' default profiles do.
#[cfg(target_arch = "x86_64")]
fn block_io_uring() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        f(LD_W_ABS, 0, 0, 4),              // 0: load seccomp_data.arch
        f(JEQ_K, 1, 0, AUDIT_ARCH_X86_64), // 1: x86_64 → 3
        f(RET_K, 0, 0, SECCOMP_RET_ALLOW), // 2: other arch: allow
        f(LD_W_ABS, 0, 0, 0),              // 3: load seccomp_data.nr
        f(JGE_K, 0, 2, 425),               // 4: nr < 425 → 7
        f(JGT_K, 1, 0, 427),               // 5: nr > 427 → 7
        f(RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32), // 6: io_uring_*: EPERM
        f(RET_K, 0, 0, SECCOMP_RET_ALLOW), // 7: allow
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with valid arguments; `prog` points at `filter`, alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
