//! `lb-dataplane probe`: start EAL, probe devices, configure and start a port
//! on each with one RX and one TX queue, report what the driver says, stop.
//!
//! It answers "does this build drive this device?" before a configuration is
//! written around it, and it is how the tests show each PMD registering.

use serde::Serialize;

use crate::app::format_mac;
use crate::dpdk::{
    Eal, EalError, Link, Mempool, MempoolError, Port, PortConfig, DEFAULT_DATA_ROOM,
};

/// What became of one device.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub devargs: String,
    pub port: String,
    pub ok: bool,
    pub driver: Option<String>,
    pub mac: Option<String>,
    pub link: Option<Link>,
    pub error: Option<String>,
}

/// The EAL arguments probe uses unless it is given its own: no hugepages, no
/// PCI scan, one lcore, a private file prefix.
pub fn default_eal_args() -> Vec<String> {
    [
        "--no-huge",
        "--no-shconf",
        "-m",
        "128",
        "--no-pci",
        "-l",
        "0",
    ]
    .into_iter()
    .map(String::from)
    .chain(std::iter::once(format!(
        "--file-prefix=lb-probe-{}",
        std::process::id()
    )))
    .collect()
}

/// Why probing could not even start.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Eal(#[from] EalError),
    #[error(transparent)]
    Mempool(#[from] MempoolError),
}

/// Probes and starts each device in `devargs`; one result each, in order.
pub fn probe(eal_args: &[String], devargs: &[String]) -> Result<Vec<ProbeResult>, ProbeError> {
    let eal = Eal::init(eal_args)?;
    let pool = Mempool::create(&eal, "probe_mbufs", 4095, 64, DEFAULT_DATA_ROOM)?;
    let cfg = PortConfig {
        rx_descriptors: 256,
        tx_descriptors: 256,
        ..PortConfig::default()
    };
    Ok(devargs
        .iter()
        .map(|d| {
            let name = d.split(',').next().unwrap_or_default().to_owned();
            let failed = |error: String| ProbeResult {
                devargs: d.clone(),
                port: name.clone(),
                ok: false,
                driver: None,
                mac: None,
                link: None,
                error: Some(error),
            };
            if let Err(e) = eal.probe(d) {
                return failed(e.to_string());
            }
            match Port::open(&eal, &name, pool, &cfg) {
                Ok((port, _rx, _tx)) => ProbeResult {
                    devargs: d.clone(),
                    port: name.clone(),
                    ok: true,
                    driver: Some(port.driver().to_owned()),
                    mac: Some(format_mac(port.mac())),
                    link: Some(port.link()),
                    error: None,
                },
                Err(e) => failed(e.to_string()),
            }
        })
        .collect())
}
