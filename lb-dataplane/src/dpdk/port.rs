//! Ethernet ports and their queues.
//!
//! A [`Port`] is configured and started once; its RX and TX queues are handed
//! out as owned values, one per queue index, so each ends up with exactly one
//! worker. Every queue keeps the port alive: the device is stopped and closed
//! (which is what flushes net_pcap's output file) when the last handle drops,
//! never while a worker can still poll it.

use std::cell::Cell;
use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::sync::Arc;

use super::mbuf::burst_len;
use super::{Eal, Errno, MbufBurst, Mempool, SOCKET_ID_ANY};

const RTE_ETH_NAME_MAX_LEN: usize = 64;

/// What to ask of a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// `None` keeps the driver's default.
    pub mtu: Option<u16>,
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> PortConfig {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mtu: None,
            promiscuous: true,
        }
    }
}

/// Why a port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no DPDK port named `{name}` (ports that exist: {known}); give the port a `device` or pass --vdev/PCI arguments to EAL")]
    Unknown { name: String, known: String },
    #[error("port `{name}`: the device given to EAL as `{devargs}` failed to probe (DPDK's messages above say why)")]
    NotProbed { name: String, devargs: String },
    #[error("port `{port}`: {what} failed: {errno}")]
    Call {
        port: String,
        what: &'static str,
        errno: Errno,
    },
    #[error("port `{port}` (driver {driver}) supports at most {max} {dir} queues, {wanted} were asked for")]
    TooManyQueues {
        port: String,
        driver: String,
        dir: &'static str,
        max: u16,
        wanted: u16,
    },
    #[error("port `{port}` (driver {driver}) has no RSS, so it cannot spread traffic over {queues} RX queues; use one worker for it")]
    NoRss {
        port: String,
        driver: String,
        queues: u16,
    },
}

// Link state and the basic counters are reported as the admin protocol
// carries them, so they are its types.
pub use lb_admin_proto::{Link, PortStats};

#[derive(Debug)]
struct PortInner {
    id: u16,
    name: String,
    driver: String,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the last handle to the port is going away, so no queue of it
        // is polled any more; stop and close are valid on a started port.
        let stop = unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
        if stop != 0 {
            tracing::warn!(port = %self.name, errno = %Errno(-stop), "stopping port failed");
        }
        // SAFETY: as above; the port is not used after this.
        let close = unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
        if close != 0 {
            tracing::warn!(port = %self.name, errno = %Errno(-close), "closing port failed");
        }
    }
}

/// A configured, started Ethernet port.
#[derive(Debug, Clone)]
pub struct Port {
    inner: Arc<PortInner>,
}

/// One RX queue of a port, owned by one worker.
#[derive(Debug)]
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
    _one_owner: PhantomData<Cell<()>>,
}

/// One TX queue of a port, owned by one worker.
#[derive(Debug)]
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
    _one_owner: PhantomData<Cell<()>>,
}

pub(super) fn all_port_names() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: EAL is initialised (callers hold an Eal); iteration over valid
    // port ids as RTE_ETH_FOREACH_DEV does.
    let mut id = unsafe { dpdk_sys::rte_eth_find_next(0) };
    while u32::from(id) < dpdk_sys::RTE_MAX_ETHPORTS {
        names.push(port_name(id));
        // SAFETY: as above.
        id = unsafe { dpdk_sys::rte_eth_find_next(id + 1) };
    }
    names
}

/// The NUMA node of the port called `name` (see [`Eal::port_node`]).
pub(super) fn node_of(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: EAL is initialised (callers hold an Eal); cname is a valid C
    // string; id is written.
    let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    if rc != 0 {
        return None;
    }
    // SAFETY: id is a valid port id; the call only reads its device.
    let node = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
    u32::try_from(node).ok()
}

fn port_name(id: u16) -> String {
    let mut buf = [0 as c_char; RTE_ETH_NAME_MAX_LEN];
    // SAFETY: buf is RTE_ETH_NAME_MAX_LEN bytes, the size DPDK writes at most.
    let rc = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{id}");
    }
    // SAFETY: DPDK wrote a NUL-terminated name into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn check(port: &str, what: &'static str, rc: i32) -> Result<(), PortError> {
    if rc < 0 {
        return Err(PortError::Call {
            port: port.to_owned(),
            what,
            errno: Errno(-rc),
        });
    }
    Ok(())
}

impl Port {
    /// Configures and starts the port called `name`, with RX buffers from
    /// `pool`, and returns it with its queues (index i is queue i).
    pub fn open(
        eal: &Eal,
        name: &str,
        pool: &'static Mempool,
        cfg: &PortConfig,
    ) -> Result<(Port, Vec<RxQueue>, Vec<TxQueue>), PortError> {
        let cname = CString::new(name).map_err(|_| PortError::Unknown {
            name: name.to_owned(),
            known: eal.port_names().join(", "),
        })?;
        let mut id = 0u16;
        // SAFETY: EAL is initialised; cname is a valid C string; id is written.
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            if let Some(devargs) = eal.device_arg(name) {
                return Err(PortError::NotProbed {
                    name: name.to_owned(),
                    devargs,
                });
            }
            let known = eal.port_names();
            return Err(PortError::Unknown {
                name: name.to_owned(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            });
        }

        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a valid out-parameter.
        check(name, "rte_eth_dev_info_get", unsafe {
            dpdk_sys::rte_eth_dev_info_get(id, &mut info)
        })?;
        let driver = if info.driver_name.is_null() {
            "unknown".to_owned()
        } else {
            // SAFETY: DPDK gives a static NUL-terminated driver name.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        for (dir, max, wanted) in [
            ("RX", info.max_rx_queues, cfg.rx_queues),
            ("TX", info.max_tx_queues, cfg.tx_queues),
        ] {
            if wanted > max {
                return Err(PortError::TooManyQueues {
                    port: name.to_owned(),
                    driver,
                    dir,
                    max,
                    wanted,
                });
            }
        }

        let mut conf = dpdk_sys::rte_eth_conf::default();
        // Some ports divide their traffic between queues without RSS:
        // net_af_packet's queues are sockets of one PACKET_FANOUT group,
        // hashed by the kernel, and each of net_pcap's reads a file of its
        // own (`rx_pcap=` once per queue), divided as whoever wrote the
        // files divided the flows.
        let spreads_itself = matches!(driver.as_str(), "net_af_packet" | "net_pcap");
        if cfg.rx_queues > 1 && !spreads_itself {
            let wanted = u64::from(
                dpdk_sys::RTE_ETH_RSS_IP | dpdk_sys::RTE_ETH_RSS_TCP | dpdk_sys::RTE_ETH_RSS_UDP,
            );
            let rss = wanted & info.flow_type_rss_offloads;
            if rss == 0 {
                return Err(PortError::NoRss {
                    port: name.to_owned(),
                    driver,
                    queues: cfg.rx_queues,
                });
            }
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss;
        }
        // Where the device can verify TCP and UDP checksums on receive, it
        // does: its verdict (the RX L4 flags) spares the engine summing a
        // session's first packet in software (`offload::l4_checksum_ok`),
        // and a virtio device's "partial" reaches the engine as such.
        conf.rxmode.offloads = info.rx_offload_capa
            & u64::from(
                dpdk_sys::RTE_ETH_RX_OFFLOAD_TCP_CKSUM | dpdk_sys::RTE_ETH_RX_OFFLOAD_UDP_CKSUM,
            );
        // SAFETY: id is valid; conf is a fully initialised configuration that
        // DPDK copies.
        check(name, "rte_eth_dev_configure", unsafe {
            dpdk_sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf)
        })?;
        let (mut rxd, mut txd) = (cfg.rx_descriptors, cfg.tx_descriptors);
        // SAFETY: id is valid and configured; rxd/txd are in-out parameters.
        check(name, "rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd)
        })?;
        if let Some(mtu) = cfg.mtu {
            // SAFETY: id is valid and configured.
            check(name, "rte_eth_dev_set_mtu", unsafe {
                dpdk_sys::rte_eth_dev_set_mtu(id, mtu)
            })?;
        }
        // SAFETY: id is valid; the port is stopped while queues are set up.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        let socket = u32::try_from(socket).unwrap_or(SOCKET_ID_ANY as u32);
        for q in 0..cfg.rx_queues {
            // SAFETY: id valid, q < configured RX queues, pool valid forever;
            // a null rx_conf selects the driver's defaults.
            check(name, "rte_eth_rx_queue_setup", unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    rxd,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: id valid, q < configured TX queues; null = defaults.
            check(name, "rte_eth_tx_queue_setup", unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(id, q, txd, socket, std::ptr::null())
            })?;
        }
        // SAFETY: id is valid with every queue set up.
        check(name, "rte_eth_dev_start", unsafe {
            dpdk_sys::rte_eth_dev_start(id)
        })?;
        let inner = Arc::new(PortInner {
            id,
            name: name.to_owned(),
            driver,
        });
        if cfg.promiscuous {
            // SAFETY: id is a valid started port.
            let rc = unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
            if rc != 0 {
                tracing::debug!(port = name, errno = %Errno(-rc), "promiscuous mode not available");
            }
        }
        let rx = (0..cfg.rx_queues)
            .map(|queue| RxQueue {
                port: Arc::clone(&inner),
                queue,
                _one_owner: PhantomData,
            })
            .collect();
        let tx = (0..cfg.tx_queues)
            .map(|queue| TxQueue {
                port: Arc::clone(&inner),
                queue,
                _one_owner: PhantomData,
            })
            .collect();
        Ok((Port { inner }, rx, tx))
    }

    /// The DPDK port id.
    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// The DPDK device name (`net_pcap0`, a PCI address, ...).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The driver's name (`net_pcap`, `net_af_xdp`, ...).
    pub fn driver(&self) -> &str {
        &self.inner.driver
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = dpdk_sys::rte_ether_addr::default();
        // SAFETY: the port is valid; mac is a valid out-parameter.
        let rc = unsafe { dpdk_sys::rte_eth_macaddr_get(self.inner.id, &mut mac) };
        if rc != 0 {
            return [0; 6];
        }
        mac.addr_bytes
    }

    /// The link state, without waiting for autonegotiation.
    pub fn link(&self) -> Link {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: the port is valid; link is a valid out-parameter.
        let rc = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.inner.id, &mut link) };
        if rc != 0 {
            return Link {
                up: false,
                speed_mbps: 0,
                full_duplex: false,
            };
        }
        Link {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        }
    }

    /// The basic counters.
    pub fn stats(&self) -> PortStats {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: the port is valid; s is a valid out-parameter. Reading stats
        // from a thread other than the pollers is supported by ethdev.
        let rc = unsafe { dpdk_sys::rte_eth_stats_get(self.inner.id, &mut s) };
        if rc != 0 {
            return PortStats::default();
        }
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// The driver's extended counters, by name.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        let id = self.inner.id;
        // SAFETY: the port is valid; a null array asks for the count.
        let n = unsafe { dpdk_sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        let Ok(n) = u32::try_from(n) else {
            return Vec::new();
        };
        let mut names = vec![dpdk_sys::rte_eth_xstat_name { name: [0; 64] }; n as usize];
        let mut values = vec![dpdk_sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays have room for n entries.
        let got_names = unsafe { dpdk_sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n) };
        // SAFETY: as above.
        let got_values = unsafe { dpdk_sys::rte_eth_xstats_get(id, values.as_mut_ptr(), n) };
        if got_names < 0 || got_values < 0 {
            return Vec::new();
        }
        let count = (got_names.min(got_values) as usize).min(names.len());
        values[..count]
            .iter()
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                // SAFETY: DPDK NUL-terminates names within their 64 bytes.
                let name = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((name.to_string_lossy().into_owned(), v.value))
            })
            .collect()
    }
}

impl RxQueue {
    /// Receives into the burst's free room; returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (ptr, room) = burst.spare();
        // SAFETY: this queue is set up and owned only by us (&mut self, not
        // Sync); ptr has room for `room` mbuf pointers.
        let n =
            unsafe { dpdk_sys::rte_eth_rx_burst(self.port.id, self.queue, ptr, burst_len(room)) };
        let n = usize::from(n);
        // SAFETY: the driver wrote n owned mbufs into the free slots.
        unsafe { burst.filled(n) };
        n
    }

    /// The port's DPDK id.
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

impl TxQueue {
    /// Hands the burst to the driver; returns how many it took. Those leave
    /// the burst; the ones it refused stay, in order, to retry or free.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (ptr, len) = burst.raw_parts();
        if len == 0 {
            return 0;
        }
        // SAFETY: this queue is set up and owned only by us; ptr holds len
        // owned mbufs.
        let n =
            unsafe { dpdk_sys::rte_eth_tx_burst(self.port.id, self.queue, ptr, burst_len(len)) };
        let n = usize::from(n);
        // SAFETY: after tx_burst returns n, the first n belong to the driver.
        unsafe { burst.taken(n) };
        n
    }

    /// The port's DPDK id.
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}
