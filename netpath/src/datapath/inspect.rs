//! Read-only access to the pinned maps, for the CLI: works whether or not the agent runs.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap};
use netpath_common::{maps, EndpointKey, Reason, TrafficCounters};
use serde::Serialize;

use super::DatapathError;

pub struct Inspector {
    dir: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointCounters {
    pub ip: Ipv4Addr,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReasonCounter {
    pub reason: &'static str,
    pub drop: bool,
    pub packets: u64,
    pub bytes: u64,
}

impl Inspector {
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    fn open(&self, name: &str) -> Result<Map, DatapathError> {
        let path = self.dir.join(name);
        let err = |source| DatapathError::Pinned {
            path: path.clone(),
            dir: self.dir.clone(),
            source: Box::new(source),
        };
        let data = MapData::from_pin(&path).map_err(err)?;
        Map::from_map_data(data).map_err(err)
    }

    /// Per-endpoint counters summed over CPUs.
    pub fn endpoint_counters(&self) -> Result<Vec<EndpointCounters>, DatapathError> {
        let map = self.open(maps::ENDPOINT_STATS)?;
        let stats: PerCpuHashMap<_, EndpointKey, TrafficCounters> = PerCpuHashMap::try_from(map)
            .map_err(|source| DatapathError::Map { map: maps::ENDPOINT_STATS, source: Box::new(source) })?;
        let mut out = Vec::new();
        for entry in stats.iter() {
            let (key, per_cpu) = entry.map_err(|source| DatapathError::Map {
                map: maps::ENDPOINT_STATS,
                source: Box::new(source),
            })?;
            let mut sum = TrafficCounters::default();
            per_cpu.iter().for_each(|c| sum.merge(c));
            out.push(EndpointCounters {
                ip: Ipv4Addr::from(key.addr),
                tx_packets: sum.tx_packets,
                tx_bytes: sum.tx_bytes,
                rx_packets: sum.rx_packets,
                rx_bytes: sum.rx_bytes,
            });
        }
        out.sort_by_key(|c| c.ip);
        Ok(out)
    }

    /// What the datapath did, per reason, summed over CPUs.
    pub fn reason_counters(&self) -> Result<Vec<ReasonCounter>, DatapathError> {
        let map = self.open(maps::REASON_STATS)?;
        let stats: PerCpuArray<_, TrafficCounters> = PerCpuArray::try_from(map)
            .map_err(|source| DatapathError::Map { map: maps::REASON_STATS, source: Box::new(source) })?;
        Reason::ALL
            .iter()
            .map(|r| {
                let per_cpu = stats.get(&(*r as u32), 0).map_err(|source| DatapathError::Map {
                    map: maps::REASON_STATS,
                    source: Box::new(source),
                })?;
                let mut sum = TrafficCounters::default();
                per_cpu.iter().for_each(|c| sum.merge(c));
                Ok(ReasonCounter {
                    reason: r.name(),
                    drop: r.is_drop(),
                    packets: sum.tx_packets,
                    bytes: sum.tx_bytes,
                })
            })
            .collect()
    }
}
