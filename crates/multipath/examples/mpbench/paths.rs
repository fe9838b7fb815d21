//! NVMe/TCP paths to one namespace (one controller per target address, all with one host
//! identity, as one host with several ports) and the multipath bdev over them.

use bdev::{Bdev, Registry};
use multipath::{AutoAssemble, MultipathBdev, MultipathModule, MultipathOptions, MultipathParams, PathParams};
use nvme_tcp::initiator::{ConnectOpts, HostId};
use nvme_tcp::nvmf::NvmfController;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How to reach the paths.
#[derive(Clone, Debug)]
pub struct PathSetup {
    /// One target address per path.
    pub addrs: Vec<SocketAddr>,
    /// Subsystem NQN.
    pub nqn: String,
    /// Namespace used.
    pub nsid: u32,
    /// Commands in flight per path.
    pub queue_depth: u16,
    /// Delay between reconnect attempts of a lost path.
    pub reconnect_delay: Duration,
}

/// Connected paths, registered as `path<i>n<nsid>` in their own registry.
pub struct Paths {
    /// The registry holding the path bdevs (and the multipath bdev once built).
    pub reg: Arc<Registry>,
    /// One controller per path.
    pub ctrls: Vec<Arc<NvmfController>>,
    /// Path bdev names, in address order.
    pub names: Vec<String>,
}

/// Connect every path. Lost paths fail their IO at once (multipath re-drives it elsewhere) and
/// keep reconnecting for a day, as dm-multipath sets up NVMe/TCP paths.
pub fn connect(s: &PathSetup) -> Result<Paths, String> {
    let reg = Registry::new();
    let host = HostId::generate();
    let mut ctrls = Vec::new();
    let mut names = Vec::new();
    for (i, a) in s.addrs.iter().enumerate() {
        let mut o = ConnectOpts::new(*a, &s.nqn);
        o.host = host.clone();
        o.io_queues = 1;
        o.io_queue_depth = s.queue_depth.max(2);
        o.fast_io_fail_timeout = Duration::ZERO;
        o.ctrl_loss_timeout = Duration::from_secs(24 * 3600);
        o.reconnect_delay = s.reconnect_delay;
        o.admin_timeout = Duration::from_secs(30);
        let c =
            NvmfController::connect(&format!("path{i}"), o).map_err(|e| format!("connecting path {i} ({a}): {e}"))?;
        let b = c
            .bdevs()
            .into_iter()
            .find(|b| b.nsid() == s.nsid)
            .ok_or_else(|| format!("path {i} ({a}) has no namespace {}", s.nsid))?;
        names.push(b.info().name.clone());
        reg.register(b).map_err(|e| format!("registering path {i}: {e}"))?;
        ctrls.push(c);
    }
    Ok(Paths { reg, ctrls, names })
}

impl Paths {
    /// Build multipath bdev `name` over every path (weights in path order; 1 when missing).
    pub fn multipath(
        &self,
        name: &str,
        options: MultipathOptions,
        weights: &[u32],
    ) -> Result<(Arc<MultipathModule>, Arc<MultipathBdev>), String> {
        let module = MultipathModule::new(AutoAssemble { enabled: false, ..Default::default() });
        let paths = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| PathParams { bdev: n.clone(), group: 0, weight: weights.get(i).copied().unwrap_or(1) })
            .collect();
        let dev = module
            .create(&self.reg, MultipathParams { name: Some(name.into()), paths, options })
            .map_err(|e| format!("creating {name}: {e}"))?;
        Ok((module, dev))
    }

    /// Disconnect every path.
    pub fn detach(&self) {
        for c in &self.ctrls {
            c.detach();
        }
    }
}
