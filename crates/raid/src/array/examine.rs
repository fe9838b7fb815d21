//! Incremental assembly (`mdadm --incremental`): a registry examiner that
//! reads the md superblock of every new bdev and starts an array as soon as
//! all of its members have appeared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bdev::{Bdev, Examiner, Registry};

use super::shared::lock;
use super::{md_assemble, md_examine, AssembleOptions, MdArray};
use crate::superblock::DevRole;

/// Members seen so far of one array.
struct Pending {
    /// (bdev name, device number, events, device uuid).
    members: Vec<(String, u32, u64, [u8; 16])>,
}

/// The examiner; register it with [`Registry::add_examiner`].
pub struct MdExaminer {
    registry: Weak<Registry>,
    pending: Mutex<HashMap<[u8; 16], Pending>>,
    started: Mutex<Vec<Arc<MdArray>>>,
}

impl MdExaminer {
    /// An examiner for `registry`.
    pub fn new(registry: &Arc<Registry>) -> Arc<MdExaminer> {
        Arc::new(MdExaminer {
            registry: Arc::downgrade(registry),
            pending: Mutex::new(HashMap::new()),
            started: Mutex::new(Vec::new()),
        })
    }

    /// Arrays this examiner started.
    pub fn arrays(&self) -> Vec<Arc<MdArray>> {
        lock(&self.started).clone()
    }
}

/// The array name recorded in a superblock: the part after "host:".
fn array_name(set_name: &str) -> String {
    let n = set_name.rsplit(':').next().unwrap_or(set_name);
    if n.is_empty() {
        "md".to_string()
    } else {
        n.to_string()
    }
}

impl Examiner for MdExaminer {
    fn name(&self) -> &str {
        "raid"
    }

    fn examine(&self, registry: &Registry, bdev: &Arc<dyn Bdev>) {
        let name = bdev.info().name.clone();
        let Ok(ex) = md_examine(registry, &name) else {
            return;
        };
        let sb = ex.superblock;
        let ready = {
            let mut pending = lock(&self.pending);
            let entry = pending.entry(sb.set_uuid).or_insert_with(|| Pending { members: Vec::new() });
            // A bdev stacked on a member (registered after it) shows the same
            // device: the newest name wins.
            entry.members.retain(|(n, _, _, u)| *n != name && *u != sb.device_uuid);
            entry.members.push((name.clone(), sb.dev_number, sb.events, sb.device_uuid));
            // Ready when every active role of the freshest superblock has a
            // member with that event count.
            let fresh = entry.members.iter().map(|m| m.2).max().unwrap_or(0);
            let have = |slot: u16| {
                entry.members.iter().any(|(_, dev, ev, _)| {
                    *ev == fresh && sb.dev_roles.get(*dev as usize) == Some(&DevRole::Active(slot))
                })
            };
            let complete = sb.events == fresh && (0..sb.raid_disks).all(|s| u16::try_from(s).is_ok_and(have));
            if complete {
                pending.remove(&sb.set_uuid).map(|p| p.members)
            } else {
                None
            }
        };
        let Some(members) = ready else {
            return;
        };
        let Some(reg) = self.registry.upgrade() else {
            return;
        };
        let mut array = array_name(&sb.name());
        if reg.lookup(&array).is_some() {
            array = format!("{array}_{}", &crate::superblock::format_uuid(&sb.set_uuid)[..8]);
        }
        let names: Vec<&str> = members.iter().map(|(n, _, _, _)| n.as_str()).collect();
        match md_assemble(&reg, &array, &names, &AssembleOptions::default()) {
            Ok(a) => {
                log::info!("raid: assembled {array} from {names:?}");
                lock(&self.started).push(a);
            }
            Err(e) => log::error!("raid: cannot assemble {array} from {names:?}: {e}"),
        }
    }
}
