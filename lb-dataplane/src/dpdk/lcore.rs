//! Running closures on EAL lcores, with their result (or panic) brought back.

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread;

use super::{Eal, Errno};

/// Why work could not start on an lcore.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("lcore {0} is not enabled in EAL (add it to -l/--lcores)")]
    NotEnabled(u32),
    #[error("lcore {0} is the main lcore; work is launched on worker lcores only")]
    MainLcore(u32),
    #[error("lcore {lcore} is busy or cannot be launched: {errno}")]
    Busy { lcore: u32, errno: Errno },
}

type Slot<T> = Arc<Mutex<Option<thread::Result<T>>>>;

struct Job<F, T> {
    work: F,
    slot: Slot<T>,
}

/// Work running on an lcore. Joining must happen on the main lcore (EAL's
/// wait is main-only), so the handle is not `Send`.
#[derive(Debug)]
pub struct LcoreHandle<T> {
    lcore: u32,
    slot: Slot<T>,
    _main_thread_only: PhantomData<*const ()>,
}

/// Runs `work` on worker lcore `lcore`.
pub fn launch<F, T>(eal: &Eal, lcore: u32, work: F) -> Result<LcoreHandle<T>, LaunchError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if lcore == eal.main_lcore() {
        return Err(LaunchError::MainLcore(lcore));
    }
    if !eal.lcore_enabled(lcore) {
        return Err(LaunchError::NotEnabled(lcore));
    }
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let job = Box::into_raw(Box::new(Job {
        work,
        slot: Arc::clone(&slot),
    }));
    // SAFETY: the lcore is enabled and not the main one; trampoline::<F, T>
    // matches the job's type and takes ownership of the box exactly once.
    let rc = unsafe {
        dpdk_sys::rte_eal_remote_launch(Some(trampoline::<F, T>), job.cast::<c_void>(), lcore)
    };
    if rc != 0 {
        // SAFETY: the launch failed, so the trampoline never saw the box and
        // we still own it.
        drop(unsafe { Box::from_raw(job) });
        return Err(LaunchError::Busy {
            lcore,
            errno: Errno(-rc),
        });
    }
    Ok(LcoreHandle {
        lcore,
        slot,
        _main_thread_only: PhantomData,
    })
}

unsafe extern "C" fn trampoline<F, T>(arg: *mut c_void) -> c_int
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: `launch` passed a Box<Job<F, T>> it gave up; it is reclaimed once.
    let job = unsafe { Box::from_raw(arg.cast::<Job<F, T>>()) };
    let Job { work, slot } = *job;
    // A panic must not unwind into C: catch it and hand it to the joiner.
    let result = panic::catch_unwind(AssertUnwindSafe(work));
    let failed = result.is_err();
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    c_int::from(failed)
}

impl<T> LcoreHandle<T> {
    /// The lcore the work runs on.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Whether the work has returned.
    pub fn is_finished(&self) -> bool {
        self.slot.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// Waits for the work to return; a panic in it comes back as `Err`.
    pub fn join(self) -> thread::Result<T> {
        // SAFETY: called on the main lcore (the handle is not Send and was
        // created there) for an lcore that was launched.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) };
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("a launched job stores its result before the lcore returns to WAIT")
    }
}
