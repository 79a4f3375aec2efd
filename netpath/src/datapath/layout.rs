//! What a new build may find pinned by an old one. aya adopts a pinned map by name
//! without comparing its layout, so a map whose key or value changed size would be read
//! as garbage by the new programs (or fail verification with a baffling message); and
//! replacing it silently would empty tables that live connections depend on. So before
//! loading, every pin is compared with what this build expects: maps whose contents are
//! counters, trace plumbing or rebuilt at start are replaced (their loss is a counter
//! reset); a table live flows depend on whose entries still fit (a new size, hash
//! instead of LRU) is migrated: a new table takes the name and every entry is copied
//! over, twice (at load, and again once the new programs are attached, for the flows
//! the old programs created in between). Any other foreign layout makes the agent
//! refuse to start, naming the map and the way out.
use std::path::{Path, PathBuf};

use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, MapType},
    Ebpf, Pod,
};
use netpath_common::{
    conntrack::{NatEntry, Tuple},
    contract::{self, Capacity, MapKind},
    maps, Endpoint6Key, EndpointInfo, EndpointKey, NodeRoute, PortKey, PortKey6, PortTarget, PortTarget6,
    SockOrigin, SockOrigin6, SockRevKey, SockRevKey6,
};
use tracing::{info, warn};

use super::{
    family::{Ipv4, Ipv6},
    DatapathError,
};

/// A map as this build defines it, from the contract.
struct Expected {
    name: &'static str,
    kind: MapType,
    key: u32,
    value: u32,
    max_entries: u32,
    /// The map flags that change how it behaves (BPF_F_NO_COMMON_LRU).
    flags: u32,
    /// Its contents can be lost without breaking a connection.
    disposable: bool,
}

/// The contract's kind as aya names it.
fn map_type(kind: MapKind) -> MapType {
    match kind {
        MapKind::Hash => MapType::Hash,
        MapKind::Array => MapType::Array,
        MapKind::ProgArray => MapType::ProgramArray,
        MapKind::PerCpuHash => MapType::PerCpuHash,
        MapKind::PerCpuArray => MapType::PerCpuArray,
        MapKind::LruHash => MapType::LruHash,
        MapKind::RingBuf => MapType::RingBuf,
    }
}

/// Every pinned map as this build defines it, conntrack sized `ct_entries`, on a node
/// with IPv6 (`--pod-cidr6`) or without.
fn expected(ct_entries: u32, ipv6: bool) -> Vec<Expected> {
    contract::pinned()
        .map(|m| Expected {
            name: m.name,
            kind: map_type(m.kind),
            key: m.key_size,
            value: m.value_size,
            max_entries: entries(m.capacity, ct_entries, ipv6),
            flags: m.flags & COMPARED_FLAGS,
            disposable: m.disposable,
        })
        .collect()
}

/// The entries a map of `capacity` has on this machine, for a conntrack of `ct_entries`
/// on a node with IPv6 or without (see [`Capacity`]).
pub fn entries(capacity: Capacity, ct_entries: u32, ipv6: bool) -> u32 {
    match capacity {
        Capacity::Fixed(n) => n,
        Capacity::Conntrack => ct_entries,
        Capacity::NewFlows => new_flow_entries(ct_entries),
        Capacity::Conntrack6 | Capacity::NewFlows6 | Capacity::Fixed6(_) if !ipv6 => ct_min_entries(),
        Capacity::Fixed6(n) => n,
        Capacity::Conntrack6 => ct_entries,
        Capacity::NewFlows6 => new_flow_entries(ct_entries),
    }
}

/// The flags [`check`] compares: those that change how a map behaves (the kind of LRU).
/// Others (BPF_F_RDONLY_PROG and the like, set by loaders) are not the contract's.
const COMPARED_FLAGS: u32 = maps::CONNTRACK_NEW_FLAGS;

/// The machine's possible CPUs (what per-CPU maps and LRU lists are sized by).
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |n| n as u32)
}

/// CONNTRACK_NEW's size on this machine (see [`maps::new_flow_entries`]).
pub fn new_flow_entries(ct_entries: u32) -> u32 {
    maps::new_flow_entries(ct_entries, possible_cpus())
}

/// The smallest `--ct-max-entries` this machine takes (see [`maps::ct_min_entries`]).
pub fn ct_min_entries() -> u32 {
    maps::ct_min_entries(possible_cpus())
}

/// What loading does with the pins of an older layout.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Disposable maps: a new, empty one takes the name.
    pub replace: Vec<PathBuf>,
    /// Maps whose entries are copied into the new one of this build's layout.
    pub migrate: Vec<PathBuf>,
}

/// Compares the maps pinned in `dir` with this build's (`ct_entries`: the conntrack
/// size asked for; `ipv6`: the node has an IPv6 pod CIDR, which sizes the IPv6 tables).
/// Changes nothing: returns what loading must replace or migrate, or refuses when a map
/// live connections depend on has a layout that cannot be migrated.
pub fn check(dir: &Path, ct_entries: u32, ipv6: bool) -> Result<Plan, DatapathError> {
    let mut plan = Plan::default();
    for want in expected(ct_entries, ipv6) {
        let pin = dir.join(want.name);
        if !pin.exists() {
            continue;
        }
        let found = MapData::from_pin(&pin).and_then(|m| m.info()).map_err(|source| {
            DatapathError::Pinned { path: pin.clone(), dir: dir.into(), source: Box::new(source) }
        })?;
        let kind = found.map_type().ok();
        let same_entries = found.key_size() == want.key && found.value_size() == want.value;
        let flags = found.map_flags() & COMPARED_FLAGS;
        if kind == Some(want.kind)
            && same_entries
            && found.max_entries() == want.max_entries
            && flags == want.flags
        {
            continue;
        }
        let describe = |kind: Option<MapType>, key: u32, value: u32, max: u32, flags: u32| {
            let kind = kind.map_or("an unknown kind".to_string(), |k| format!("{k:?}"));
            let per_cpu = if flags & maps::CONNTRACK_NEW_FLAGS != 0 { " (per-CPU LRU)" } else { "" };
            format!("{kind}{per_cpu}, key {key} B, value {value} B, {max} entries")
        };
        let found_desc = describe(kind, found.key_size(), found.value_size(), found.max_entries(), flags);
        let want_desc = describe(Some(want.kind), want.key, want.value, want.max_entries, want.flags);
        let hashes = |k: Option<MapType>| matches!(k, Some(MapType::Hash | MapType::LruHash));
        if want.disposable {
            warn!(map = want.name, found = %found_desc, expected = %want_desc, "pinned map has an old layout; replacing it");
            plan.replace.push(pin);
        } else if same_entries && hashes(kind) && hashes(Some(want.kind)) {
            info!(map = want.name, found = %found_desc, expected = %want_desc, "pinned map has an old layout; migrating its entries");
            plan.migrate.push(pin);
        } else {
            return Err(DatapathError::Layout {
                map: want.name,
                pin,
                found: found_desc,
                expected: want_desc,
            });
        }
    }
    Ok(plan)
}

/// The maps of an old layout, unpinned so that loading creates new ones under their
/// names, but held open. Dropped before [`SetAside::commit`] (the load failed), it pins
/// them again where they were: a refused start changes nothing.
pub struct SetAside {
    held: Vec<Held>,
}

struct Held {
    pin: PathBuf,
    map: Map,
    /// Copy its entries into the new map (else it is replaced empty).
    migrate: bool,
}

/// Unpins the maps of `plan`, keeping each one open (bpffs has no rename); the old maps
/// also live on while the old programs use them.
pub fn set_aside(plan: &Plan) -> Result<SetAside, DatapathError> {
    let mut aside = SetAside { held: Vec::new() };
    let all = plan.replace.iter().map(|p| (p, false)).chain(plan.migrate.iter().map(|p| (p, true)));
    for (pin, migrate) in all {
        let dir = pin.parent().unwrap_or(pin);
        let pinned =
            |source| DatapathError::Pinned { path: pin.clone(), dir: dir.into(), source: Box::new(source) };
        let map = Map::from_map_data(MapData::from_pin(pin).map_err(pinned)?).map_err(pinned)?;
        std::fs::remove_file(pin).map_err(|source| DatapathError::PinDir { path: pin.clone(), source })?;
        aside.held.push(Held { pin: pin.clone(), map, migrate });
    }
    Ok(aside)
}

impl SetAside {
    /// The new maps are loaded and pinned: migrated maps get their entries. Returns what
    /// the second copy needs ([`Migration::finish`]); the replaced maps go with their
    /// last user.
    pub fn commit(mut self, ebpf: &mut Ebpf) -> Result<Migration, DatapathError> {
        let mut migration = Migration { old: Vec::new() };
        for held in &self.held {
            if held.migrate {
                let n = copy(&held.map, &held.pin, ebpf, 0)?;
                info!(pin = %held.pin.display(), entries = n, "entries migrated to the new map");
            }
        }
        for held in std::mem::take(&mut self.held) {
            if held.migrate {
                migration.old.push((held.pin, held.map));
            } else {
                info!(pin = %held.pin.display(), "old map unpinned; a new one takes its place");
            }
        }
        Ok(migration)
    }
}

impl Drop for SetAside {
    fn drop(&mut self) {
        for held in self.held.drain(..) {
            // A pin the failed load created goes first.
            let _ = std::fs::remove_file(&held.pin);
            if let Err(e) = held.map.pin(&held.pin) {
                warn!(pin = %held.pin.display(), "cannot pin the old map back: {e}");
            }
        }
    }
}

/// Old maps whose entries were copied at load, held until the new programs have taken
/// over from the old ones.
pub struct Migration {
    old: Vec<(PathBuf, Map)>,
}

impl Migration {
    /// Copies what the old programs created since the first copy (entries the new maps
    /// do not have yet), then lets the old maps go.
    pub fn finish(self, ebpf: &mut Ebpf) -> Result<(), DatapathError> {
        const BPF_NOEXIST: u64 = 1;
        for (pin, map) in &self.old {
            // The programs never write the endpoint maps: a second copy could only bring
            // back entries the agent removed since the first (naming released slots).
            let name = pin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name == maps::ENDPOINTS || name == maps::ENDPOINTS6 {
                continue;
            }
            let n = copy(map, pin, ebpf, BPF_NOEXIST)?;
            info!(pin = %pin.display(), entries = n, "migration finished; old map released");
        }
        Ok(())
    }
}

/// Copies every entry of `old` into the map of the same name in `ebpf`; returns how many.
fn copy(old: &Map, pin: &Path, ebpf: &mut Ebpf, flags: u64) -> Result<usize, DatapathError> {
    let name = pin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    match name {
        maps::CONNTRACK => copy_conntrack::<Ipv4>(old, maps::CONNTRACK, ebpf, flags),
        maps::CONNTRACK_NEW => copy_conntrack::<Ipv4>(old, maps::CONNTRACK_NEW, ebpf, flags),
        maps::CONNTRACK6 => copy_conntrack::<Ipv6>(old, maps::CONNTRACK6, ebpf, flags),
        maps::CONNTRACK6_NEW => copy_conntrack::<Ipv6>(old, maps::CONNTRACK6_NEW, ebpf, flags),
        maps::ENDPOINTS => {
            copy_typed::<EndpointKey, EndpointInfo>(old, maps::ENDPOINTS, ebpf, flags, |_| true)
        }
        maps::ENDPOINTS6 => {
            copy_typed::<Endpoint6Key, EndpointInfo>(old, maps::ENDPOINTS6, ebpf, flags, |_| true)
        }
        maps::PORT_MAPS => copy_typed::<PortKey, PortTarget>(old, maps::PORT_MAPS, ebpf, flags, |_| true),
        maps::PORT_MAPS6 => copy_typed::<PortKey6, PortTarget6>(old, maps::PORT_MAPS6, ebpf, flags, |_| true),
        // The other nodes' routes are written again from the store at every start, but
        // cross-node connections ride on them until then.
        maps::NODE_ROUTES => {
            copy_typed::<EndpointKey, NodeRoute>(old, maps::NODE_ROUTES, ebpf, flags, |_| true)
        }
        maps::NODE_ROUTES6 => {
            copy_typed::<Endpoint6Key, NodeRoute>(old, maps::NODE_ROUTES6, ebpf, flags, |_| true)
        }
        maps::NODE_LOCAL_REV => {
            copy_typed::<SockRevKey, SockOrigin>(old, maps::NODE_LOCAL_REV, ebpf, flags, |_| true)
        }
        maps::NODE_LOCAL_REV6 => {
            copy_typed::<SockRevKey6, SockOrigin6>(old, maps::NODE_LOCAL_REV6, ebpf, flags, |_| true)
        }
        _ => Err(DatapathError::MissingMap("a migratable map")),
    }
}

/// A conntrack table's entries, reply entries first: the datapath takes a new flow's
/// original-direction entry without its reply entry for half an evicted pair and
/// removes it, so while the new programs run (the second copy), an original entry must
/// never arrive before its partner. `A`: the family's address.
fn copy_conntrack<A>(
    old: &Map,
    name: &'static str,
    ebpf: &mut Ebpf,
    flags: u64,
) -> Result<usize, DatapathError>
where
    Tuple<A>: Pod,
    NatEntry<A>: Pod,
{
    use netpath_common::conntrack::CT_F_REPLY;
    let replies = copy_typed::<Tuple<A>, NatEntry<A>>(old, name, ebpf, flags, |e| e.flags & CT_F_REPLY != 0)?;
    let originals =
        copy_typed::<Tuple<A>, NatEntry<A>>(old, name, ebpf, flags, |e| e.flags & CT_F_REPLY == 0)?;
    Ok(replies + originals)
}

fn copy_typed<K: Pod, V: Pod>(
    old: &Map,
    name: &'static str,
    ebpf: &mut Ebpf,
    flags: u64,
    wanted: impl Fn(&V) -> bool,
) -> Result<usize, DatapathError> {
    const EEXIST: i32 = 17;
    let err = |source| DatapathError::Map { map: name, source: Box::new(source) };
    let from = BpfHashMap::<&MapData, K, V>::try_from(old).map_err(err)?;
    let to = ebpf.map_mut(name).ok_or(DatapathError::MissingMap(name))?;
    let mut to = BpfHashMap::<&mut MapData, K, V>::try_from(to).map_err(err)?;
    let mut copied = 0;
    // The old programs may still be changing the old map: a batch read always ends.
    for (k, v) in super::batch::read_all(&from, name)? {
        if !wanted(&v) {
            continue;
        }
        match to.insert(k, v, flags) {
            Ok(()) => copied += 1,
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(EEXIST) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(ct_entries: u32, ipv6: bool) -> Vec<(&'static str, u32)> {
        let tables = [
            maps::CONNTRACK,
            maps::CONNTRACK_NEW,
            maps::CONNTRACK6,
            maps::CONNTRACK6_NEW,
            maps::SNAT_CLOSED6,
            maps::NODE_LOCAL_REV6,
        ];
        let all = expected(ct_entries, ipv6);
        tables.map(|t| (t, all.iter().find(|m| m.name == t).expect("pinned").max_entries)).into()
    }

    /// IPv6's tables are IPv4's sizes on a node with IPv6 and the machine's smallest
    /// without; IPv4's never depend on it.
    #[test]
    fn the_ipv6_tables_are_sized_by_ipv6_on_the_node() {
        let ct = ct_min_entries() * 8;
        let (new, min) = (new_flow_entries(ct), ct_min_entries());
        assert_eq!(
            sizes(ct, true),
            [
                (maps::CONNTRACK, ct),
                (maps::CONNTRACK_NEW, new),
                (maps::CONNTRACK6, ct),
                (maps::CONNTRACK6_NEW, new),
                (maps::SNAT_CLOSED6, maps::SNAT_CLOSED_ENTRIES),
                (maps::NODE_LOCAL_REV6, maps::NODE_LOCAL_REV_ENTRIES),
            ]
        );
        assert_eq!(
            sizes(ct, false),
            [
                (maps::CONNTRACK, ct),
                (maps::CONNTRACK_NEW, new),
                (maps::CONNTRACK6, min),
                (maps::CONNTRACK6_NEW, min),
                (maps::SNAT_CLOSED6, min),
                (maps::NODE_LOCAL_REV6, min),
            ]
        );
    }
}
