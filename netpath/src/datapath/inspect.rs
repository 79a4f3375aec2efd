//! Read-only access to the pinned maps, for the CLI: works whether or not the agent runs.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap as BpfHashMap, IterableMap as _, Map, MapData, PerCpuArray},
    Pod,
};
use netpath_common::{
    conntrack::{NatEntry, Tuple, CT_F_DNAT, CT_F_REPLY, CT_F_SNAT, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN},
    maps, ClosedFlow, EndpointKey, Reason, TrafficCounters,
};
use serde::Serialize;

use super::{
    family::{Entries, Family, Ipv4, Ipv6, PortEntry},
    DatapathError,
};

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

/// The conntrack tables in numbers. `evicted` is derived: every entry the datapath
/// created is live (in any table, either family), collected by the agent after its
/// timeout, or was evicted by an LRU.
#[derive(Clone, Debug, Serialize)]
pub struct CtSummary {
    /// Entries of assured flows (CONNTRACK) and its size.
    pub entries: u64,
    pub capacity: u32,
    /// Entries of flows not yet assured (CONNTRACK_NEW) and its size.
    pub new_entries: u64,
    pub new_capacity: u32,
    /// The same for IPv6 (CONNTRACK6, CONNTRACK6_NEW): counted apart, since each family
    /// has tables of its own to fill, and IPv4's figures keep their meaning.
    pub entries6: u64,
    pub capacity6: u32,
    pub new_entries6: u64,
    pub new_capacity6: u32,
    pub created: u64,
    pub collected: u64,
    pub evicted: u64,
}

/// What `netpath map list` shows of one map.
#[derive(Clone, Debug, Serialize)]
pub struct MapSummary {
    pub name: String,
    pub kind: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Live entries, for hash maps.
    pub entries: Option<u64>,
    pub pin: PathBuf,
}

/// One conntrack entry of either family, decoded.
#[derive(Clone, Debug, Serialize)]
pub struct CtRow {
    pub proto: &'static str,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// "snat 192.168.77.1:61234", "dnat 10.77.0.2:80", "snat [2001:db8::1]:61234", or "-".
    pub rewrite: String,
    pub reply: bool,
    /// In its family's table of assured flows (CONNTRACK, CONNTRACK6) rather than that
    /// of new flows.
    pub assured: bool,
    pub state: &'static str,
    pub age_secs: u64,
    pub idle_secs: u64,
    pub packets: u64,
    pub bytes: u64,
}

fn ct_row<A: Family>(k: &Tuple<A>, e: &NatEntry<A>, assured: bool, now_ns: u64) -> CtRow {
    let proto = match k.proto {
        6 => "tcp",
        17 => "udp",
        // ICMP echo, and ICMPv6 echo: the addresses tell the family, and `--proto icmp`
        // finds both, as `--proto tcp` does.
        1 | 58 => "icmp",
        _ => "other",
    };
    let at = |ip: A, port: [u8; 2]| SocketAddr::new(ip.ip(), u16::from_be_bytes(port));
    let mut rewrite = Vec::new();
    if e.flags & CT_F_SNAT != 0 {
        rewrite.push(format!("snat {}", at(e.nat_src, e.nat_sport)));
    }
    if e.flags & CT_F_DNAT != 0 {
        rewrite.push(format!("dnat {}", at(e.nat_dst, e.nat_dport)));
    }
    let state = match (k.proto, e.tcp_state) {
        (6, TCP_SYN) => "syn",
        (6, TCP_ESTABLISHED) => "established",
        (6, TCP_CLOSING) => "closing",
        _ => "-",
    };
    CtRow {
        proto,
        src: k.src.ip(),
        sport: u16::from_be_bytes(k.sport),
        dst: k.dst.ip(),
        dport: u16::from_be_bytes(k.dport),
        rewrite: if rewrite.is_empty() { "-".into() } else { rewrite.join(" ") },
        reply: e.flags & CT_F_REPLY != 0,
        assured,
        state,
        age_secs: now_ns.saturating_sub(e.created_ns) / 1_000_000_000,
        idle_secs: now_ns.saturating_sub(e.last_seen_ns) / 1_000_000_000,
        packets: e.packets,
        bytes: e.bytes,
    }
}

type CtMap<A> = BpfHashMap<MapData, Tuple<A>, NatEntry<A>>;

impl Inspector {
    /// The endpoint map: address -> what the datapath knows of it.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, netpath_common::EndpointInfo)>, DatapathError> {
        // Typed first: the sizes checked before the batch read writes into buffers of them.
        let eps: BpfHashMap<_, EndpointKey, netpath_common::EndpointInfo> =
            BpfHashMap::try_from(self.open(maps::ENDPOINTS)?)
                .map_err(|source| DatapathError::Map { map: maps::ENDPOINTS, source: Box::new(source) })?;
        let eps = super::batch::read_all(&eps, maps::ENDPOINTS)?;
        Ok(eps.into_iter().map(|(k, v)| (Ipv4Addr::from(k.addr), v)).collect())
    }

    /// The IPv6 endpoint map: address (an endpoint's own or its link-local one) -> the
    /// same entry as its IPv4 address has.
    pub fn endpoints6(&self) -> Result<Vec<(Ipv6Addr, netpath_common::EndpointInfo)>, DatapathError> {
        let eps: BpfHashMap<_, netpath_common::Endpoint6Key, netpath_common::EndpointInfo> =
            BpfHashMap::try_from(self.open(maps::ENDPOINTS6)?)
                .map_err(|source| DatapathError::Map { map: maps::ENDPOINTS6, source: Box::new(source) })?;
        let eps = super::batch::read_all(&eps, maps::ENDPOINTS6)?;
        Ok(eps.into_iter().map(|(k, v)| (Ipv6Addr::from(k.addr), v)).collect())
    }

    /// The node settings the agent gave the datapath.
    pub fn node_config(&self) -> Result<netpath_common::NodeConfig, DatapathError> {
        let map = self.open(maps::NODE_CONFIG)?;
        let arr: aya::maps::Array<_, netpath_common::NodeConfig> = aya::maps::Array::try_from(map)
            .map_err(|source| DatapathError::Map { map: maps::NODE_CONFIG, source: Box::new(source) })?;
        arr.get(&0, 0)
            .map_err(|source| DatapathError::Map { map: maps::NODE_CONFIG, source: Box::new(source) })
    }

    /// The IPv4 published-port map (PORT_MAPS).
    pub fn port_maps(
        &self,
    ) -> Result<Vec<(netpath_common::PortKey, netpath_common::PortTarget)>, DatapathError> {
        self.port_maps_of::<Ipv4>()
    }

    /// Family `A`'s published-port map (PORT_MAPS, PORT_MAPS6).
    pub fn port_maps_of<A: Family>(&self) -> Result<Vec<PortEntry<A>>, DatapathError>
    where
        netpath_common::PortKeyOf<A>: Pod,
        netpath_common::PortTargetOf<A>: Pod,
    {
        let map = self.open(A::PORTS)?;
        let pm: BpfHashMap<_, netpath_common::PortKeyOf<A>, netpath_common::PortTargetOf<A>> =
            BpfHashMap::try_from(map)
                .map_err(|source| DatapathError::Map { map: A::PORTS, source: Box::new(source) })?;
        Ok(pm.iter().filter_map(Result::ok).collect())
    }

    /// What node-local sockets were redirected to, and what they asked for.
    /// Cluster mode: the other nodes' subnets and where they are.
    pub fn node_routes(
        &self,
    ) -> Result<Vec<(netpath_common::EndpointKey, netpath_common::NodeRoute)>, DatapathError> {
        let map = self.open(maps::NODE_ROUTES)?;
        let routes: BpfHashMap<_, netpath_common::EndpointKey, netpath_common::NodeRoute> =
            BpfHashMap::try_from(map)
                .map_err(|source| DatapathError::Map { map: maps::NODE_ROUTES, source: Box::new(source) })?;
        Ok(routes.iter().filter_map(Result::ok).collect())
    }

    /// Cluster mode: the other nodes' IPv6 subnets and where they are.
    pub fn node_routes6(
        &self,
    ) -> Result<Vec<(netpath_common::Endpoint6Key, netpath_common::NodeRoute)>, DatapathError> {
        let map = self.open(maps::NODE_ROUTES6)?;
        let routes: BpfHashMap<_, netpath_common::Endpoint6Key, netpath_common::NodeRoute> =
            BpfHashMap::try_from(map)
                .map_err(|source| DatapathError::Map { map: maps::NODE_ROUTES6, source: Box::new(source) })?;
        Ok(routes.iter().filter_map(Result::ok).collect())
    }

    pub fn node_local_redirects(
        &self,
    ) -> Result<Vec<(netpath_common::SockRevKey, netpath_common::SockOrigin)>, DatapathError> {
        let map = self.open(maps::NODE_LOCAL_REV)?;
        let rev: BpfHashMap<_, netpath_common::SockRevKey, netpath_common::SockOrigin> =
            BpfHashMap::try_from(map).map_err(|source| DatapathError::Map {
                map: maps::NODE_LOCAL_REV,
                source: Box::new(source),
            })?;
        super::batch::read_all(&rev, maps::NODE_LOCAL_REV)
    }

    /// [`Inspector::node_local_redirects`] of IPv6 sockets.
    pub fn node_local_redirects6(
        &self,
    ) -> Result<Vec<(netpath_common::SockRevKey6, netpath_common::SockOrigin6)>, DatapathError> {
        let map = self.open(maps::NODE_LOCAL_REV6)?;
        let rev: BpfHashMap<_, netpath_common::SockRevKey6, netpath_common::SockOrigin6> =
            BpfHashMap::try_from(map).map_err(|source| DatapathError::Map {
                map: maps::NODE_LOCAL_REV6,
                source: Box::new(source),
            })?;
        super::batch::read_all(&rev, maps::NODE_LOCAL_REV6)
    }

    /// Closed masqueraded flows of family `A` remembered for port reuse: server-side
    /// tuple -> record.
    pub fn snat_closed<A: Family>(&self) -> Result<Vec<(Tuple<A>, ClosedFlow)>, DatapathError>
    where
        Tuple<A>: Pod,
    {
        let map = self.open(A::CLOSED)?;
        let closed: BpfHashMap<_, Tuple<A>, ClosedFlow> = BpfHashMap::try_from(map)
            .map_err(|source| DatapathError::Map { map: A::CLOSED, source: Box::new(source) })?;
        super::batch::read_all(&closed, A::CLOSED)
    }

    /// The IPv6 half of the node settings (meaningful with `NODE_F_IPV6` set).
    pub fn node_config6(&self) -> Result<netpath_common::NodeConfig6, DatapathError> {
        let map = self.open(maps::NODE_CONFIG6)?;
        let err = |source| DatapathError::Map { map: maps::NODE_CONFIG6, source: Box::new(source) };
        let arr: aya::maps::Array<_, netpath_common::NodeConfig6> =
            aya::maps::Array::try_from(map).map_err(err)?;
        arr.get(&0, 0).map_err(err)
    }

    /// HAIRPIN's two counts: hairpins the datapath opened, and the agent's mark (one
    /// more than the count it read before a pass that found none live; 0: one may live).
    pub fn hairpin(&self) -> Result<[u64; 2], DatapathError> {
        let err = |source| DatapathError::Map { map: maps::HAIRPIN, source: Box::new(source) };
        let arr: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(self.open(maps::HAIRPIN)?).map_err(err)?;
        Ok([
            arr.get(&maps::HAIRPIN_OPENED, 0).map_err(err)?,
            arr.get(&maps::HAIRPIN_CLEARED, 0).map_err(err)?,
        ])
    }

    /// A pinned program array's slots: the name and ID of the program in each, None
    /// where a slot is empty (a tail call into it falls through).
    pub fn program_slots(&self, name: &'static str) -> Result<Vec<Option<(String, u32)>>, DatapathError> {
        use std::os::fd::AsFd as _;
        let data = self.map_data(name)?;
        let err = |source| self.pinned_err(name, source);
        let info = data.info().map_err(err)?;
        // The kernel writes a value of the map's size: only a program array's is an ID.
        let kind = info.map_type().map_err(err)?;
        let invalid = if kind != aya::maps::MapType::ProgramArray {
            Some(aya::maps::MapError::InvalidMapType { map_type: kind as u32 })
        } else if info.value_size() != 4 {
            Some(aya::maps::MapError::InvalidValueSize { size: info.value_size() as usize, expected: 4 })
        } else {
            None
        };
        if let Some(e) = invalid {
            return Err(DatapathError::Map { map: name, source: Box::new(e) });
        }
        let syscall = |io_error| DatapathError::syscall(name, "bpf_map_lookup_elem", io_error);
        let ids = (0..info.max_entries())
            // SAFETY: a program array of 4-byte values, checked above.
            .map(|i| unsafe { super::sys::program_in_slot(data.fd().as_fd(), i) }.map_err(syscall))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.iter().all(Option::is_none) {
            return Ok(vec![None; ids.len()]);
        }
        // A program gone between the two reads (an agent's restart) has no name: "?".
        let names = super::sys::program_names(&ids.iter().flatten().copied().collect::<Vec<_>>());
        let named = |id: u32| (names.get(&id).cloned().unwrap_or_else(|| "?".to_string()), id);
        Ok(ids.into_iter().map(|id| id.map(named)).collect())
    }

    /// Kind, sizes and entry count of a pinned map.
    pub fn describe(&self, name: &str) -> Result<MapSummary, DatapathError> {
        let data = self.map_data(name)?;
        let err = |source| self.pinned_err(name, source);
        let info = data.info().map_err(err)?;
        let kind = format!("{:?}", info.map_type().map_err(err)?);
        let (key, value, max) = (info.key_size(), info.value_size(), info.max_entries());
        drop(data);
        let entries = match name {
            maps::ENDPOINTS => Some(self.endpoints()?.len() as u64),
            maps::ENDPOINTS6 => Some(self.endpoints6()?.len() as u64),
            maps::ENDPOINT_STATS => Some(self.endpoint_counters()?.len() as u64),
            maps::CONNTRACK => Some(self.ct_count::<Ipv4>(maps::CONNTRACK)?.0),
            maps::CONNTRACK_NEW => Some(self.ct_count::<Ipv4>(maps::CONNTRACK_NEW)?.0),
            maps::CONNTRACK6 => Some(self.ct_count::<Ipv6>(maps::CONNTRACK6)?.0),
            maps::CONNTRACK6_NEW => Some(self.ct_count::<Ipv6>(maps::CONNTRACK6_NEW)?.0),
            maps::PORT_MAPS => Some(self.port_maps_of::<Ipv4>()?.len() as u64),
            maps::PORT_MAPS6 => Some(self.port_maps_of::<Ipv6>()?.len() as u64),
            maps::NODE_LOCAL_REV => Some(self.node_local_redirects()?.len() as u64),
            maps::NODE_LOCAL_REV6 => Some(self.node_local_redirects6()?.len() as u64),
            maps::SNAT_CLOSED => Some(self.snat_closed::<Ipv4>()?.len() as u64),
            maps::SNAT_CLOSED6 => Some(self.snat_closed::<Ipv6>()?.len() as u64),
            _ => None,
        };
        Ok(MapSummary {
            name: name.to_string(),
            kind,
            key_size: key,
            value_size: value,
            max_entries: max,
            entries,
            pin: self.dir.join(name),
        })
    }

    /// Is every map netpath pins present?
    pub fn missing_maps(&self) -> Vec<&'static str> {
        netpath_common::contract::pinned().map(|m| m.name).filter(|m| !self.dir.join(m).exists()).collect()
    }

    /// Every conntrack entry of every table, both families, decoded.
    pub fn conntrack(&self) -> Result<Vec<CtRow>, DatapathError> {
        let mut rows = self.conntrack_of::<Ipv4>()?;
        rows.extend(self.conntrack_of::<Ipv6>()?);
        rows.sort_by_key(|r| (r.proto, r.src, r.sport, r.dst, r.dport));
        Ok(rows)
    }

    /// Every conntrack entry of family `A`'s two tables, decoded.
    pub fn conntrack_of<A: Family>(&self) -> Result<Vec<CtRow>, DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        let now = super::monotonic_ns();
        let mut rows = Vec::new();
        for (name, assured) in A::TABLES.into_iter().zip([true, false]) {
            let (entries, _) = self.ct_table::<A>(name)?;
            rows.extend(entries.iter().map(|(k, e)| ct_row(k, e, assured, now)));
        }
        rows.sort_by_key(|r| (r.proto, r.src, r.sport, r.dst, r.dport));
        Ok(rows)
    }

    /// One conntrack table's entries and size. Pins of an agent from before the table
    /// existed (CONNTRACK_NEW, the IPv6 ones) have none: empty.
    fn ct_table<A>(&self, name: &'static str) -> Result<(Entries<A>, u32), DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        let Some((ct, capacity)) = self.ct_map::<A>(name)? else { return Ok((Vec::new(), 0)) };
        Ok((super::batch::read_all(&ct, name)?, capacity))
    }

    /// One conntrack table's entry count and size (see [`Inspector::ct_table`]).
    fn ct_count<A>(&self, name: &'static str) -> Result<(u64, u32), DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        let (entries, capacity) = self.ct_table::<A>(name)?;
        Ok((entries.len() as u64, capacity))
    }

    /// [`Inspector::ct_count`] of family `A`'s table of assured flows and of its table of
    /// new flows.
    fn ct_counts<A: Family>(&self) -> Result<[(u64, u32); 2], DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        Ok([self.ct_count::<A>(A::ASSURED)?, self.ct_count::<A>(A::NEW)?])
    }

    /// A conntrack table opened, with its size; None for a table that is not pinned
    /// (CONNTRACK itself must be).
    fn ct_map<A>(&self, name: &'static str) -> Result<Option<(CtMap<A>, u32)>, DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        if name != maps::CONNTRACK && !self.dir.join(name).exists() {
            return Ok(None);
        }
        let err = |source| DatapathError::Map { map: name, source: Box::new(source) };
        let ct: CtMap<A> = BpfHashMap::try_from(self.open(name)?).map_err(err)?;
        let capacity = ct.map().info().map_err(err)?.max_entries();
        Ok(Some((ct, capacity)))
    }

    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// Whether the veth endpoint with host device `ifindex` runs from_container in a TCX
    /// link rather than a clsact filter.
    pub fn endpoint_in_tcx_link(&self, ifindex: u32) -> bool {
        super::links::endpoint_link_pin(&self.dir.join("links"), ifindex).exists()
    }

    fn pinned_err(&self, name: &str, source: aya::maps::MapError) -> DatapathError {
        DatapathError::Pinned { path: self.dir.join(name), dir: self.dir.clone(), source: Box::new(source) }
    }

    fn map_data(&self, name: &str) -> Result<MapData, DatapathError> {
        MapData::from_pin(self.dir.join(name)).map_err(|source| self.pinned_err(name, source))
    }

    fn open(&self, name: &str) -> Result<Map, DatapathError> {
        Map::from_map_data(self.map_data(name)?).map_err(|source| self.pinned_err(name, source))
    }

    /// Per-endpoint counters summed over CPUs, read from the slot each endpoint's entry
    /// names (an endpoint without one yet shows zeros).
    pub fn endpoint_counters(&self) -> Result<Vec<EndpointCounters>, DatapathError> {
        let endpoints = self.endpoints()?;
        let map = self.open(maps::ENDPOINT_STATS)?;
        let err = |source| DatapathError::Map { map: maps::ENDPOINT_STATS, source: Box::new(source) };
        let stats: PerCpuArray<_, TrafficCounters> = PerCpuArray::try_from(map).map_err(err)?;
        let mut out = Vec::with_capacity(endpoints.len());
        for (ip, info) in endpoints {
            let mut sum = TrafficCounters::default();
            if info.counter_slot != 0 && u32::from(info.counter_slot) < stats.len() {
                stats.get(&u32::from(info.counter_slot), 0).map_err(err)?.iter().for_each(|c| sum.merge(c));
            }
            out.push(EndpointCounters {
                ip,
                tx_packets: sum.tx_packets,
                tx_bytes: sum.tx_bytes,
                rx_packets: sum.rx_packets,
                rx_bytes: sum.rx_bytes,
            });
        }
        out.sort_by_key(|c| c.ip);
        Ok(out)
    }

    pub fn conntrack_summary(&self, reasons: &[ReasonCounter]) -> Result<CtSummary, DatapathError> {
        let [(entries, capacity), (new_entries, new_capacity)] = self.ct_counts::<Ipv4>()?;
        let [(entries6, capacity6), (new_entries6, new_capacity6)] = self.ct_counts::<Ipv6>()?;
        let get = |name: &str| reasons.iter().find(|r| r.reason == name).map_or(0, |r| r.packets);
        // The counters are the datapath's, both families together.
        let (created, collected) = (get(Reason::CtCreated.name()), get(Reason::CtCollected.name()));
        let live = entries + new_entries + entries6 + new_entries6;
        Ok(CtSummary {
            entries,
            capacity,
            new_entries,
            new_capacity,
            entries6,
            capacity6,
            new_entries6,
            new_capacity6,
            created,
            collected,
            evicted: created.saturating_sub(collected).saturating_sub(live),
        })
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

#[cfg(test)]
mod tests {
    use netpath_common::Ip6;

    use super::*;

    /// A row as `ct list -o json` prints it.
    fn json<A: Family>(k: &Tuple<A>, e: &NatEntry<A>) -> String {
        serde_json::to_string(&ct_row(k, e, true, 5_000_000_000)).unwrap()
    }

    #[test]
    fn rows_of_both_families_have_the_same_fields_and_their_own_addresses() {
        fn seen<A: Default>() -> NatEntry<A> {
            NatEntry { tcp_state: TCP_ESTABLISHED, last_seen_ns: 1_000_000_000, ..Default::default() }
        }
        let k4 = Tuple {
            src: [10, 77, 0, 2],
            dst: [1, 1, 1, 1],
            sport: [0x9c, 0x40],
            dport: [0, 80],
            proto: 6,
            _pad: [0; 3],
        };
        let e4 = NatEntry { nat_src: [192, 168, 77, 1], nat_sport: [0xee, 0x48], flags: CT_F_SNAT, ..seen() };
        // IPv4's row as it always was.
        assert_eq!(
            json(&k4, &e4),
            r#"{"proto":"tcp","src":"10.77.0.2","sport":40000,"dst":"1.1.1.1","dport":80,"rewrite":"snat 192.168.77.1:61000","reply":false,"assured":true,"state":"established","age_secs":5,"idle_secs":4,"packets":0,"bytes":0}"#
        );
        let ip6 = |s: &str| Ip6(s.parse::<Ipv6Addr>().unwrap().octets());
        let k6 = Tuple {
            src: ip6("2001:db8::1"),
            dst: ip6("2001:db8::77"),
            sport: [0, 80],
            dport: [0xee, 0x48],
            proto: 6,
            _pad: [0; 3],
        };
        let e6 = NatEntry {
            nat_dst: ip6("fd00:77::2"),
            nat_dport: [0x9c, 0x40],
            flags: CT_F_DNAT | CT_F_REPLY,
            ..seen()
        };
        assert_eq!(
            json(&k6, &e6),
            r#"{"proto":"tcp","src":"2001:db8::1","sport":80,"dst":"2001:db8::77","dport":61000,"rewrite":"dnat [fd00:77::2]:40000","reply":true,"assured":true,"state":"established","age_secs":5,"idle_secs":4,"packets":0,"bytes":0}"#
        );
        // ICMPv6 echo is ICMP to `--proto icmp`.
        assert_eq!(ct_row(&Tuple { proto: 58, ..k6 }, &e6, false, 0).proto, "icmp");
    }
}
