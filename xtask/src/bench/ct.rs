//! Emptying netpath's conntrack tables between benchmark tests (the datapath's pins).
use std::path::Path;

use aya::{
    maps::{HashMap, Map, MapData},
    Pod,
};
use netpath_common::{maps, CtEntry, CtEntry6, CtKey, CtKey6, PortKey, PortTarget};

pub fn flush(bpffs_dir: &Path) -> anyhow::Result<()> {
    for name in [maps::CONNTRACK, maps::CONNTRACK_NEW] {
        flush_table::<CtKey, CtEntry>(bpffs_dir, name)?;
    }
    for name in [maps::CONNTRACK6, maps::CONNTRACK6_NEW] {
        flush_table::<CtKey6, CtEntry6>(bpffs_dir, name)?;
    }
    Ok(())
}

fn flush_table<K: Pod, V: Pod>(bpffs_dir: &Path, name: &str) -> anyhow::Result<()> {
    let map = Map::from_map_data(MapData::from_pin(bpffs_dir.join(name))?)?;
    let mut ct: HashMap<_, K, V> = HashMap::try_from(map)?;
    let keys: Vec<K> = ct.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = ct.remove(&k);
    }
    Ok(())
}

/// Fills netpath's port map with `n` extra published ports (to a dummy target) for the
/// scaling run, straight into the pinned map: the CLI's per-call cost is not what is
/// measured there.
pub fn add_port_maps(bpffs_dir: &Path, n: u32, first_port: u16) -> anyhow::Result<()> {
    let map = Map::from_map_data(MapData::from_pin(bpffs_dir.join(maps::PORT_MAPS))?)?;
    let mut pm: HashMap<_, PortKey, PortTarget> = HashMap::try_from(map)?;
    for i in 0..n {
        // Spread over both protocols and host addresses to reach 100,000 distinct keys
        // within 16-bit ports.
        let port = first_port.wrapping_add((i % 50_000) as u16);
        let host_ip = if i < 50_000 { [0; 4] } else { [192, 168, 77, 1] };
        let key = PortKey { host_ip, port: port.to_be_bytes(), proto: 6, _pad: 0 };
        pm.insert(key, PortTarget { ip: [10, 77, 0, 250], port: port.to_be_bytes(), _pad: [0; 2] }, 0)?;
    }
    Ok(())
}
