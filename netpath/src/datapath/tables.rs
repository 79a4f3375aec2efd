//! Typed writes to the datapath's maps by the agent: endpoints, node settings, port
//! mappings, and conntrack housekeeping.
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues},
    Pod,
};
use netpath_common::{
    conntrack::{NatEntry, Tuple},
    maps, Endpoint6Key, EndpointInfo, EndpointKey, NodeConfig, NodeRoute, PortKeyOf, PortTargetOf, Reason,
    SenderEntry, TrafficCounters,
};

use super::{
    family::{Entries, Family, PortEntry},
    senders::Change,
    Datapath, DatapathError,
};

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source: Box::new(source) }
}

fn cpus() -> Result<usize, DatapathError> {
    aya::util::nr_cpus().map_err(|(what, source)| DatapathError::Cpus { what, source })
}

impl Datapath {
    fn map_data(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf.map_mut(name).ok_or(DatapathError::MissingMap(name))
    }

    fn endpoints(&mut self) -> Result<BpfHashMap<&mut MapData, EndpointKey, EndpointInfo>, DatapathError> {
        BpfHashMap::try_from(self.map_data(maps::ENDPOINTS)?).map_err(map_err(maps::ENDPOINTS))
    }

    fn endpoints6(&mut self) -> Result<BpfHashMap<&mut MapData, Endpoint6Key, EndpointInfo>, DatapathError> {
        BpfHashMap::try_from(self.map_data(maps::ENDPOINTS6)?).map_err(map_err(maps::ENDPOINTS6))
    }

    fn endpoint_stats(&mut self) -> Result<PerCpuArray<&mut MapData, TrafficCounters>, DatapathError> {
        PerCpuArray::try_from(self.map_data(maps::ENDPOINT_STATS)?).map_err(map_err(maps::ENDPOINT_STATS))
    }

    /// Family `A`'s published ports (PORT_MAPS, PORT_MAPS6).
    fn port_maps<A: Family>(
        &mut self,
    ) -> Result<BpfHashMap<&mut MapData, PortKeyOf<A>, PortTargetOf<A>>, DatapathError>
    where
        PortKeyOf<A>: Pod,
        PortTargetOf<A>: Pod,
    {
        BpfHashMap::try_from(self.map_data(A::PORTS)?).map_err(map_err(A::PORTS))
    }

    /// `name`: one of `A`'s [`Family::TABLES`].
    fn conntrack<A: Family>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, Tuple<A>, NatEntry<A>>, DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        BpfHashMap::try_from(self.map_data(name)?).map_err(map_err(name))
    }

    /// Makes `ip` a local endpoint, counting in a slot of its own: the one its entry
    /// already names, or a free one, zeroed before the entry points the datapath at it.
    pub fn register(&mut self, ip: Ipv4Addr, info: EndpointInfo) -> Result<(), DatapathError> {
        let (slot, fresh) = self.counter_slots()?.assign(ip).ok_or(DatapathError::Full {
            map: maps::ENDPOINT_STATS,
            what: "endpoints",
            max: maps::MAX_ENDPOINTS,
        })?;
        let info = EndpointInfo { counter_slot: slot, ..info };
        let written = self
            .endpoints()
            .map(|map| map.get(&EndpointKey::new(ip.octets()), 0).ok())
            .and_then(|old| match old {
                // The address moving to another device (an endpoint made again): its
                // old device's shortcut goes before the entry stops naming that device.
                Some(old) if old.host_ifindex != info.host_ifindex => {
                    self.uncache_sender(self.senders.remove(ip, old.host_ifindex))
                }
                _ => Ok(()),
            })
            .and_then(|()| self.zero_counters(slot, fresh))
            .and_then(|()| {
                self.endpoints()?
                    .insert(EndpointKey::new(ip.octets()), info, 0)
                    .map_err(map_err(maps::ENDPOINTS))
            });
        if written.is_err() && fresh {
            self.counter_slots()?.release(ip);
        }
        written?;
        self.cache_sender(self.senders.claim(ip, info), &ip);
        Ok(())
    }

    fn hairpin(&mut self) -> Result<Array<&mut MapData, u64>, DatapathError> {
        Array::try_from(self.map_data(maps::HAIRPIN)?).map_err(map_err(maps::HAIRPIN))
    }

    /// How many hairpins the datapath has opened (see netpath_common::maps::HAIRPIN):
    /// read before a conntrack pass, whose finding no hairpin flow clears up to it.
    pub fn hairpins_opened(&mut self) -> Result<u64, DatapathError> {
        self.hairpin()?.get(&maps::HAIRPIN_OPENED, 0).map_err(map_err(maps::HAIRPIN))
    }

    /// Some(n): no hairpin the datapath opened up to its `n`th (the count read before
    /// the pass that found none) lives, and published containers skip the lookup until
    /// it opens another. None: one may live (a pass saw one, or could not tell), the
    /// lookup is on whatever the count.
    pub fn hairpin_shortcut(&mut self, none_live_up_to: Option<u64>) -> Result<(), DatapathError> {
        // 0 is never count + 1 (the count would have to wrap a u64).
        let cleared = none_live_up_to.map_or(0, |n| n.wrapping_add(1));
        self.hairpin()?.set(maps::HAIRPIN_CLEARED, cleared, 0).map_err(map_err(maps::HAIRPIN))
    }

    fn senders(&mut self) -> Result<Array<&mut MapData, SenderEntry>, DatapathError> {
        Array::try_from(self.map_data(maps::SENDERS)?).map_err(map_err(maps::SENDERS))
    }

    /// Writes `change` into SENDERS, then records it.
    fn write_sender(&mut self, change: &Change) -> Result<(), DatapathError> {
        let mut map = self.senders()?;
        for value in change.writes() {
            map.set(change.slot, value, 0).map_err(map_err(maps::SENDERS))?;
        }
        self.senders.done(change);
        Ok(())
    }

    /// Writes `change`, which puts an address into a slot; only after its endpoint
    /// map entry is written. A write the kernel refuses costs the endpoint's packets the
    /// shortcut, nothing else: logged, the slot emptied if it can be (else it keeps what
    /// it held, or holds something unnamed, which matches nothing), not an error.
    fn cache_sender(&mut self, change: Option<Change>, what: &dyn std::fmt::Display) {
        let Some(change) = change else { return };
        if let Err(e) = self.write_sender(&change) {
            tracing::warn!(address = %what, "source check shortcut not written ({e}); checked through the endpoint maps");
            let _ = self.write_sender(&change.emptied());
        }
    }

    /// Writes `change`, which takes an address out of a slot; before its endpoint map
    /// entry goes or changes device. Refused, the whole slot is emptied; an error only
    /// when that is refused too (the slot may still name the entry, which must stay).
    fn uncache_sender(&mut self, change: Option<Change>) -> Result<(), DatapathError> {
        let Some(change) = change else { return Ok(()) };
        self.write_sender(&change).or_else(|_| self.write_sender(&change.emptied()))
    }

    /// Makes IPv6 address `ip6` (an endpoint's own, or its link-local one) lead to the
    /// endpoint registered as `owner`: the same entry, counter slot included, so both
    /// families count as one endpoint. `owner` must be registered first.
    pub fn register6(
        &mut self,
        ip6: Ipv6Addr,
        owner: Ipv4Addr,
        info: EndpointInfo,
    ) -> Result<(), DatapathError> {
        let slot = self.counter_slots()?.slot_of(owner).ok_or(DatapathError::NoOwner { ip6, owner })?;
        let info = EndpointInfo { counter_slot: slot, ..info };
        if let Ok(old) = self.endpoints6()?.get(&Endpoint6Key::new(ip6.octets()), 0) {
            if old != info {
                self.uncache_sender(self.senders.remove6(ip6, old.host_ifindex))?;
            }
        }
        self.endpoints6()?
            .insert(Endpoint6Key::new(ip6.octets()), info, 0)
            .map_err(map_err(maps::ENDPOINTS6))?;
        self.cache_sender(self.senders.add6(ip6, info), &ip6);
        Ok(())
    }

    /// Removes IPv6 address `ip6` from the maps; an absent entry is fine. The counter
    /// slot is its owner's, freed with the owner's IPv4 address.
    pub fn unregister6(&mut self, ip6: Ipv6Addr) -> Result<(), DatapathError> {
        if let Ok(old) = self.endpoints6()?.get(&Endpoint6Key::new(ip6.octets()), 0) {
            self.uncache_sender(self.senders.remove6(ip6, old.host_ifindex))?;
        }
        match self.endpoints6()?.remove(&Endpoint6Key::new(ip6.octets())) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            // Still there, still naming its owner's slot: the caller must not free it.
            Err(e) => Err(map_err(maps::ENDPOINTS6)(e)),
        }
    }

    /// Removes `ip` from the maps and frees its counter slot; an absent entry is fine.
    pub fn unregister(&mut self, ip: Ipv4Addr) -> Result<(), DatapathError> {
        if let Ok(old) = self.endpoints()?.get(&EndpointKey::new(ip.octets()), 0) {
            self.uncache_sender(self.senders.remove(ip, old.host_ifindex))?;
        }
        match self.endpoints()?.remove(&EndpointKey::new(ip.octets())) {
            Ok(()) => {}
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            // The entry still names its slot: giving the slot out again would have two
            // endpoints count in it.
            Err(e) => return Err(map_err(maps::ENDPOINTS)(e)),
        }
        self.counter_slots()?.release(ip);
        Ok(())
    }

    /// Gives every ENDPOINTS entry without a counter slot of its own (written by a build
    /// before slots, or corrupt) one; returns how many. Until then such an endpoint
    /// counts in slot 0, which nothing reports.
    pub fn adopt_counter_slots(&mut self) -> Result<usize, DatapathError> {
        if self.counter_slots.is_some() {
            return Ok(0);
        }
        // Every entry, or none: a skipped one's slot would be given out twice.
        let entries: Vec<(Ipv4Addr, EndpointInfo)> = self
            .endpoints()?
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from(k.addr), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::ENDPOINTS))?;
        let (table, without) = super::slots::CounterSlots::scan(&entries);
        self.counter_slots = Some(table);
        let by_ip: std::collections::HashMap<Ipv4Addr, EndpointInfo> = entries.iter().copied().collect();
        for ip in &without {
            self.register(*ip, by_ip[ip])?;
        }
        // This agent's SENDERS starts empty: every entry already slotted gets its
        // shortcut here (the ones just registered got theirs).
        let slotless: std::collections::HashSet<&Ipv4Addr> = without.iter().collect();
        for (ip, info) in entries.iter().filter(|(ip, _)| !slotless.contains(ip)) {
            self.cache_sender(self.senders.claim(*ip, *info), ip);
        }
        let entries6: Vec<(Ipv6Addr, EndpointInfo)> = self
            .endpoints6()?
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv6Addr::from(k.addr), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::ENDPOINTS6))?;
        for (ip6, info) in entries6 {
            self.cache_sender(self.senders.add6(ip6, info), &ip6);
        }
        Ok(without.len())
    }

    fn counter_slots(&mut self) -> Result<&mut super::slots::CounterSlots, DatapathError> {
        if self.counter_slots.is_none() {
            self.adopt_counter_slots()?;
        }
        Ok(self.counter_slots.as_mut().expect("set by adopt_counter_slots"))
    }

    /// Zeroes `slot`'s counters on every CPU when it was `fresh`ly given out (it may
    /// hold a deleted endpoint's counts).
    fn zero_counters(&mut self, slot: u16, fresh: bool) -> Result<(), DatapathError> {
        if !fresh {
            return Ok(());
        }
        let zero = PerCpuValues::try_from(vec![TrafficCounters::default(); cpus()?])
            .map_err(|source| DatapathError::PerCpu { map: maps::ENDPOINT_STATS, source })?;
        self.endpoint_stats()?.set(slot as u32, zero, 0).map_err(map_err(maps::ENDPOINT_STATS))
    }

    pub fn set_node_config(&mut self, cfg: NodeConfig) -> Result<(), DatapathError> {
        let mut arr: Array<_, NodeConfig> =
            Array::try_from(self.map_data(maps::NODE_CONFIG)?).map_err(map_err(maps::NODE_CONFIG))?;
        arr.set(0, cfg, 0).map_err(map_err(maps::NODE_CONFIG))
    }

    /// NODE_CONFIG6: the IPv6 half of the node's settings.
    pub fn set_node_config6(&mut self, cfg: netpath_common::NodeConfig6) -> Result<(), DatapathError> {
        let mut arr: Array<_, netpath_common::NodeConfig6> =
            Array::try_from(self.map_data(maps::NODE_CONFIG6)?).map_err(map_err(maps::NODE_CONFIG6))?;
        arr.set(0, cfg, 0).map_err(map_err(maps::NODE_CONFIG6))
    }

    /// Makes NODE_ROUTES hold exactly `routes` (another node's subnet network address ->
    /// where it is): new and changed entries first, then the ones no longer wanted, so
    /// a node that stays never loses its route in between.
    pub fn set_node_routes(&mut self, routes: &[(Ipv4Addr, NodeRoute)]) -> Result<(), DatapathError> {
        let wanted: std::collections::HashSet<[u8; 4]> = routes.iter().map(|(net, _)| net.octets()).collect();
        let present: Vec<EndpointKey> = self.node_routes_map()?.keys().filter_map(Result::ok).collect();
        let gone: Vec<Ipv4Addr> =
            present.iter().filter(|k| !wanted.contains(&k.addr)).map(|k| Ipv4Addr::from(k.addr)).collect();
        self.update_node_routes(routes, &gone)
    }

    /// Writes `upsert` into NODE_ROUTES, then removes `remove`: what a change of the
    /// node list changed, and nothing else.
    pub fn update_node_routes(
        &mut self,
        upsert: &[(Ipv4Addr, NodeRoute)],
        remove: &[Ipv4Addr],
    ) -> Result<(), DatapathError> {
        let mut map = self.node_routes_map()?;
        for (net, route) in upsert {
            map.insert(EndpointKey::new(net.octets()), *route, 0).map_err(map_err(maps::NODE_ROUTES))?;
        }
        for net in remove {
            let _ = map.remove(&EndpointKey::new(net.octets()));
        }
        Ok(())
    }

    fn node_routes_map(&mut self) -> Result<BpfHashMap<&mut MapData, EndpointKey, NodeRoute>, DatapathError> {
        BpfHashMap::try_from(self.map_data(maps::NODE_ROUTES)?).map_err(map_err(maps::NODE_ROUTES))
    }

    /// [`Datapath::set_node_routes`] for NODE_ROUTES6 (another node's IPv6 subnet).
    pub fn set_node_routes6(&mut self, routes: &[(Ipv6Addr, NodeRoute)]) -> Result<(), DatapathError> {
        let wanted: std::collections::HashSet<[u8; 16]> =
            routes.iter().map(|(net, _)| net.octets()).collect();
        let present: Vec<Endpoint6Key> = self.node_routes6_map()?.keys().filter_map(Result::ok).collect();
        let gone: Vec<Ipv6Addr> =
            present.iter().filter(|k| !wanted.contains(&k.addr)).map(|k| Ipv6Addr::from(k.addr)).collect();
        self.update_node_routes6(routes, &gone)
    }

    /// [`Datapath::update_node_routes`] for NODE_ROUTES6.
    pub fn update_node_routes6(
        &mut self,
        upsert: &[(Ipv6Addr, NodeRoute)],
        remove: &[Ipv6Addr],
    ) -> Result<(), DatapathError> {
        let mut map = self.node_routes6_map()?;
        for (net, route) in upsert {
            map.insert(Endpoint6Key::new(net.octets()), *route, 0).map_err(map_err(maps::NODE_ROUTES6))?;
        }
        for net in remove {
            let _ = map.remove(&Endpoint6Key::new(net.octets()));
        }
        Ok(())
    }

    fn node_routes6_map(
        &mut self,
    ) -> Result<BpfHashMap<&mut MapData, Endpoint6Key, NodeRoute>, DatapathError> {
        BpfHashMap::try_from(self.map_data(maps::NODE_ROUTES6)?).map_err(map_err(maps::NODE_ROUTES6))
    }

    /// Arms (or, with the default filter, disarms) the datapath's trace filter.
    pub fn set_trace_filter(&mut self, filter: netpath_common::TraceFilter) -> Result<(), DatapathError> {
        let mut arr: Array<_, netpath_common::TraceFilter> =
            Array::try_from(self.map_data(maps::TRACE_FILTER)?).map_err(map_err(maps::TRACE_FILTER))?;
        arr.set(0, filter, 0).map_err(map_err(maps::TRACE_FILTER))
    }

    /// Publishes one port in its family's table (the key's address says which).
    pub fn set_port<A: Family>(
        &mut self,
        key: PortKeyOf<A>,
        target: PortTargetOf<A>,
    ) -> Result<(), DatapathError>
    where
        PortKeyOf<A>: Pod,
        PortTargetOf<A>: Pod,
    {
        self.port_maps::<A>()?.insert(key, target, 0).map_err(map_err(A::PORTS))
    }

    pub fn remove_port<A: Family>(&mut self, key: &PortKeyOf<A>) -> Result<(), DatapathError>
    where
        PortKeyOf<A>: Pod,
        PortTargetOf<A>: Pod,
    {
        let _ = self.port_maps::<A>()?.remove(key);
        Ok(())
    }

    /// Publishes many ports of family `A` in one batch, all or none: those written
    /// before a failure are taken out again.
    pub fn set_ports<A: Family>(&mut self, entries: &[PortEntry<A>]) -> Result<(), DatapathError>
    where
        PortKeyOf<A>: Pod,
        PortTargetOf<A>: Pod,
    {
        use std::os::fd::AsFd as _;
        if entries.is_empty() {
            return Ok(());
        }
        let (keys, targets): (Vec<PortKeyOf<A>>, Vec<PortTargetOf<A>>) = entries.iter().copied().unzip();
        let aya::maps::Map::HashMap(data) = self.map_data(A::PORTS)? else {
            return Err(DatapathError::MissingMap(A::PORTS));
        };
        let fd = data.fd().as_fd();
        if let Err((done, io_error)) = super::batch::update_all(fd, &keys, &targets) {
            let _ = super::batch::delete_all(fd, &keys[..done]);
            return Err(DatapathError::syscall(A::PORTS, "bpf_map_update_batch", io_error));
        }
        Ok(())
    }

    /// Unpublishes many ports of family `A` in one batch; absent ones are fine.
    pub fn remove_ports<A: Family>(&mut self, keys: &[PortKeyOf<A>]) -> Result<(), DatapathError>
    where
        PortKeyOf<A>: Pod,
    {
        use std::os::fd::AsFd as _;
        if keys.is_empty() {
            return Ok(());
        }
        let aya::maps::Map::HashMap(data) = self.map_data(A::PORTS)? else {
            return Err(DatapathError::MissingMap(A::PORTS));
        };
        super::batch::delete_all(data.fd().as_fd(), keys)
            .map_err(|e| DatapathError::syscall(A::PORTS, "bpf_map_delete_batch", e))
    }

    /// The ENDPOINTS map as it is in the kernel.
    pub fn endpoint_entries(&mut self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>, DatapathError> {
        // One batch read, not a syscall per key: every collection pass reads both maps.
        let map = self.endpoints()?;
        let entries: Vec<(EndpointKey, EndpointInfo)> = super::batch::read_all(&map, maps::ENDPOINTS)?;
        Ok(entries.into_iter().map(|(k, v)| (Ipv4Addr::from(k.addr), v)).collect())
    }

    /// The ENDPOINTS6 map as it is in the kernel.
    pub fn endpoint_entries6(&mut self) -> Result<Vec<(Ipv6Addr, EndpointInfo)>, DatapathError> {
        let map = self.endpoints6()?;
        let entries: Vec<(Endpoint6Key, EndpointInfo)> = super::batch::read_all(&map, maps::ENDPOINTS6)?;
        Ok(entries.into_iter().map(|(k, v)| (Ipv6Addr::from(k.addr), v)).collect())
    }

    /// Family `A`'s published-port table (PORT_MAPS, PORT_MAPS6) as it is in the kernel.
    pub fn port_entries<A: Family>(&mut self) -> Result<Vec<PortEntry<A>>, DatapathError>
    where
        PortKeyOf<A>: Pod,
        PortTargetOf<A>: Pod,
    {
        let entries: Result<Vec<_>, _> = self.port_maps::<A>()?.iter().collect();
        entries.map_err(map_err(A::PORTS))
    }

    /// Every conntrack entry of both tables of family `A` (a snapshot; the datapath keeps
    /// changing them). A flow being assured at this moment may show up twice, never not
    /// at all (see [`Datapath::conntrack_tables`]).
    pub fn conntrack_entries<A: Family>(&mut self) -> Result<Entries<A>, DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        Ok(self.conntrack_tables()?.concat())
    }

    /// The entries of family `A`'s table of assured flows (CONNTRACK, CONNTRACK6) and of
    /// its table of new flows, in that order. Read new flows first: a pair moves from
    /// there to the assured table (written there before it leaves the new one), so a
    /// pair moving during the reads is seen at least once; read the other way round it
    /// could leave the assured table's read behind it and the new one before it, and a
    /// collection pass would not see a live hairpin (see `HAIRPIN`).
    pub fn conntrack_tables<A: Family>(&mut self) -> Result<[Entries<A>; 2], DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        let mut out = [Vec::new(), Vec::new()];
        for (entries, name) in out.iter_mut().zip(A::TABLES).rev() {
            let ct = self.conntrack::<A>(name)?;
            *entries = super::batch::read_all(&ct, name)?;
        }
        Ok(out)
    }

    /// `key`'s entry in its family's table of assured flows and in that of new flows, in
    /// that order. A lookup from user space leaves the LRU's reference bits alone (kernel
    /// 5.2+), so looking changes nothing about what is evicted next.
    pub fn conntrack_get<A: Family>(
        &mut self,
        key: &Tuple<A>,
    ) -> Result<[Option<NatEntry<A>>; 2], DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        let mut found = [None, None];
        for (slot, name) in found.iter_mut().zip(A::TABLES) {
            match self.conntrack::<A>(name)?.get(key, 0) {
                Ok(e) => *slot = Some(e),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(found)
    }

    /// Removes `key` from whichever table of its family holds it.
    pub fn remove_conntrack<A: Family>(&mut self, key: &Tuple<A>) -> Result<bool, DatapathError>
    where
        Tuple<A>: Pod,
        NatEntry<A>: Pod,
    {
        let assured = self.conntrack::<A>(A::ASSURED)?.remove(key).is_ok();
        let new = self.conntrack::<A>(A::NEW)?.remove(key).is_ok();
        Ok(assured || new)
    }

    /// Adds `n` to a per-reason counter from user space (CPU 0's slot).
    pub fn add_to_reason(&mut self, reason: Reason, n: u64) -> Result<(), DatapathError> {
        let mut arr: PerCpuArray<_, TrafficCounters> =
            PerCpuArray::try_from(self.map_data(maps::REASON_STATS)?).map_err(map_err(maps::REASON_STATS))?;
        let mut values: Vec<TrafficCounters> =
            arr.get(&(reason as u32), 0).map_err(map_err(maps::REASON_STATS))?.iter().copied().collect();
        values[0].tx_packets += n;
        let values = PerCpuValues::try_from(values)
            .map_err(|source| DatapathError::PerCpu { map: maps::REASON_STATS, source })?;
        arr.set(reason as u32, values, 0).map_err(map_err(maps::REASON_STATS))
    }
}
