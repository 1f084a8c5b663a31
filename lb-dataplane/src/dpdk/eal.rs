//! EAL initialisation: once per process, and an error rather than a panic or
//! an exit when EAL refuses its arguments.

use std::ffi::{c_char, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{rte_errno, Errno};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Why EAL did not start.
#[derive(Debug, thiserror::Error)]
pub enum EalError {
    #[error(
        "EAL is already initialised in this process; it can start only once (run a new process)"
    )]
    AlreadyInitialised,
    #[error("EAL argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("EAL refused its arguments [{args}]: {errno}")]
    Refused { args: String, errno: Errno },
    #[error("device `{devargs}` failed to probe: {errno}")]
    Probe { devargs: String, errno: Errno },
    #[error("device arguments {0:?} contain a NUL byte")]
    NulInDevargs(String),
}

/// The initialised Environment Abstraction Layer.
///
/// Holding an `Eal` proves `rte_eal_init` succeeded on this process; the
/// calling thread became the main lcore, hence `Eal` is neither `Send` nor
/// `Sync`. EAL is never torn down: `rte_eal_cleanup` would free memory that
/// mbufs and mempools (which live for the whole process) still point into,
/// and the process exit releases it anyway. Ports are stopped and closed when
/// their last handle drops, which is what flushes devices such as net_pcap.
#[derive(Debug)]
pub struct Eal {
    main_lcore: u32,
    /// Device arguments given with `--vdev`/`-a`, to explain a missing port.
    devices: Vec<String>,
    _main_thread_only: PhantomData<*const ()>,
}

impl Eal {
    /// Starts EAL with `args` (without a program name: one is prepended).
    pub fn init<I, S>(args: I) -> Result<Eal, EalError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut owned = vec![CString::new("lb-dataplane").expect("no NUL")];
        for arg in args {
            let arg = arg.as_ref();
            owned.push(CString::new(arg).map_err(|_| EalError::NulInArgument(arg.to_owned()))?);
        }
        let devices = device_args(args_of(&owned[1..]).as_slice());
        let shown = owned[1..]
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(EalError::AlreadyInitialised);
        }
        // EAL may keep pointers into argv (it permutes it while parsing), so the
        // strings live for the rest of the process: one small leak, once.
        let argv: &'static mut [*mut c_char] =
            Vec::leak(owned.into_iter().map(CString::into_raw).collect::<Vec<_>>());
        let argc = i32::try_from(argv.len()).expect("argument count fits in an int");
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive the
        // process; INITIALISED guarantees this is the only call in the process.
        let rc = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            return Err(EalError::Refused {
                args: shown,
                errno: Errno(rte_errno()),
            });
        }
        // SAFETY: EAL is initialised; this reads its configuration.
        let main_lcore = unsafe { dpdk_sys::rte_get_main_lcore() };
        Ok(Eal {
            main_lcore,
            devices,
            _main_thread_only: PhantomData,
        })
    }

    /// Probes a device from its device arguments (`net_pcap0,rx_pcap=...`,
    /// or a PCI address), which creates its ethdev port.
    pub fn probe(&self, devargs: &str) -> Result<(), EalError> {
        let c = CString::new(devargs).map_err(|_| EalError::NulInDevargs(devargs.to_owned()))?;
        // SAFETY: EAL is initialised (self exists) and c is a valid C string
        // that DPDK copies before returning.
        let rc = unsafe { dpdk_sys::rte_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(EalError::Probe {
                devargs: devargs.to_owned(),
                errno: Errno(-rc),
            });
        }
        Ok(())
    }

    /// The lcore this thread runs as.
    pub fn main_lcore(&self) -> u32 {
        self.main_lcore
    }

    /// Every enabled lcore other than the main one, in ascending order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        (0..dpdk_sys::RTE_MAX_LCORE)
            .filter(|&l| l != self.main_lcore && self.lcore_enabled(l))
            .collect()
    }

    /// Whether `lcore` was given to EAL (`-l`/`--lcores`).
    pub fn lcore_enabled(&self, lcore: u32) -> bool {
        // SAFETY: EAL is initialised; out-of-range ids return 0.
        lcore < dpdk_sys::RTE_MAX_LCORE && unsafe { dpdk_sys::rte_lcore_is_enabled(lcore) } != 0
    }

    /// The device arguments EAL was given for the device called `name`.
    pub fn device_arg(&self, name: &str) -> Option<String> {
        self.devices
            .iter()
            .find(|d| d.split(',').next() == Some(name))
            .cloned()
    }

    /// The NUMA node (DPDK's socket) of `lcore`.
    pub fn lcore_node(&self, lcore: u32) -> u32 {
        if lcore < dpdk_sys::RTE_MAX_LCORE {
            // SAFETY: EAL is initialised, and DPDK indexes its lcore table
            // with an id below RTE_MAX_LCORE.
            unsafe { dpdk_sys::rte_lcore_to_socket_id(lcore) }
        } else {
            0
        }
    }

    /// The NUMA node of the ethdev port called `name`, if it exists and
    /// its device sits on a known node (virtual devices often do not).
    pub fn port_node(&self, name: &str) -> Option<u32> {
        super::port::node_of(name)
    }

    /// The names of every ethdev port that exists now.
    pub fn port_names(&self) -> Vec<String> {
        super::port::all_port_names()
    }
}

fn args_of(owned: &[CString]) -> Vec<String> {
    owned
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// The values of `--vdev`, `-a` and `--allow` in EAL arguments, in both the
/// `--vdev=X` and `--vdev X` spellings.
fn device_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        for flag in ["--vdev", "--allow", "-a"] {
            if a == flag {
                out.extend(it.next().cloned());
            } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                out.push(v.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_device_args_in_both_spellings() {
        let args: Vec<String> = [
            "--no-huge",
            "--vdev=net_null0",
            "--vdev",
            "net_pcap0,rx_pcap=a",
            "-a",
            "0000:01:00.0",
            "-l",
            "0",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            device_args(&args),
            ["net_null0", "net_pcap0,rx_pcap=a", "0000:01:00.0"]
        );
    }
}
