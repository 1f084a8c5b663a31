//! What an operator does for a poll-mode worker that must never stall:
//! real-time scheduling for its lcore's thread (`SCHED_FIFO`), so no
//! ordinary thread preempts it, and memory locked in RAM (`mlockall`), so
//! no page of it is ever swapped out or faulted in on the fast path.
//!
//! Both are off by default: on a machine whose cores are shared, a
//! real-time thread that polls flat out takes its core from everything else
//! but the kernel's real-time throttling (`kernel.sched_rt_runtime_us`,
//! 95% by default), which in turn stops the worker for the rest of every
//! second. They are for dedicated, isolated cores (docs/deploy.md).

use super::{Eal, Errno};

/// Why a worker thread could not be given what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("lcore {lcore}: no thread named rte-worker-{lcore} in /proc/self/task")]
    NoThread { lcore: u32 },
    #[error(
        "lcore {lcore}: SCHED_FIFO priority {priority} refused: {errno} (it needs root, \
         CAP_SYS_NICE, or an RLIMIT_RTPRIO of at least {priority}; or set \
         realtime_priority = 0)"
    )]
    Refused {
        lcore: u32,
        priority: u8,
        errno: Errno,
    },
    #[error(
        "locking memory refused: {0} (it needs root, CAP_IPC_LOCK, or a memlock limit \
         larger than the process: LimitMEMLOCK=infinity in a systemd unit; or set \
         lock_memory = false)"
    )]
    Lock(Errno),
}

/// The thread id of worker lcore `lcore` (EAL names its threads
/// `rte-worker-<lcore>` and starts them at init).
fn thread_of(lcore: u32) -> Option<libc::pid_t> {
    let name = format!("rte-worker-{lcore}");
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .and_then(|t| t.file_name().to_str()?.parse().ok())
}

/// Runs worker lcore `lcore`'s thread under `SCHED_FIFO` at `priority`
/// (1 to 99).
pub fn set_realtime(_eal: &Eal, lcore: u32, priority: u8) -> Result<(), RealtimeError> {
    let tid = thread_of(lcore).ok_or(RealtimeError::NoThread { lcore })?;
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: sched_setscheduler reads the sched_param we pass by pointer
    // for the duration of the call and touches nothing else; tid is a
    // thread of this process (EAL's lcore thread, alive until exit).
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        return Err(RealtimeError::Refused {
            lcore,
            priority,
            errno: Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        });
    }
    Ok(())
}

/// Locks every page the process has and will have in RAM.
pub fn lock_memory() -> Result<(), RealtimeError> {
    // SAFETY: mlockall takes flags only and changes no memory contents.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        return Err(RealtimeError::Lock(Errno(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        )));
    }
    Ok(())
}

/// CPU time the calling thread has run, in nanoseconds
/// (`CLOCK_THREAD_CPUTIME_ID`): time it was preempted, or its virtual CPU
/// was taken by the hypervisor (on kernels that account steal time), is
/// not in it. A system call: for between bursts, not per packet.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
/// machine, so that one's events can be set beside another's.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer we
    // pass, which points to a live, writable local for the whole call; both
    // clocks exist on every Linux this runs on, and on failure `t` stays 0.
    let _ = unsafe { libc::clock_gettime(clock, &mut t) };
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}
