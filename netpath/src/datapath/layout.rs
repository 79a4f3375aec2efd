//! What a new build may find pinned by an old one. aya adopts a pinned map by name
//! without comparing its layout, so a map whose key or value changed size would be read
//! as garbage by the new programs (or fail verification with a baffling message); and
//! replacing it silently would empty tables that live connections depend on. So before
//! loading, every pin is compared with what this build expects: maps whose contents are
//! counters, trace plumbing or rebuilt at start are replaced (their loss is a counter
//! reset), any other map with a foreign layout makes the agent refuse to start, naming
//! the map and the way out.
use std::path::{Path, PathBuf};

use aya::maps::{MapData, MapType};
use netpath_common::{
    maps, ClosedFlow, CtEntry, CtKey, EndpointInfo, EndpointKey, NodeConfig, PortKey, PortTarget, Reason,
    SockOrigin, SockRevKey, TraceFilter, TrafficCounters,
};
use tracing::{info, warn};

use super::DatapathError;

/// A map as this build defines it.
struct Expected {
    name: &'static str,
    kind: MapType,
    key: u32,
    value: u32,
    /// None: sized at load time (conntrack), not part of the layout.
    max_entries: Option<u32>,
    /// Its contents can be lost without breaking a connection.
    disposable: bool,
}

const fn size<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

fn expected() -> [Expected; 10] {
    let e = |name, kind, key, value, max_entries, disposable| Expected {
        name,
        kind,
        key,
        value,
        max_entries,
        disposable,
    };
    [
        e(
            maps::ENDPOINTS,
            MapType::Hash,
            size::<EndpointKey>(),
            size::<EndpointInfo>(),
            Some(maps::MAX_ENDPOINTS),
            false,
        ),
        e(
            maps::ENDPOINT_STATS,
            MapType::PerCpuHash,
            size::<EndpointKey>(),
            size::<TrafficCounters>(),
            Some(maps::MAX_ENDPOINTS),
            true,
        ),
        e(maps::REASON_STATS, MapType::PerCpuArray, 4, size::<TrafficCounters>(), Some(Reason::COUNT), true),
        e(maps::CONNTRACK, MapType::LruHash, size::<CtKey>(), size::<CtEntry>(), None, false),
        e(
            maps::SNAT_CLOSED,
            MapType::LruHash,
            size::<CtKey>(),
            size::<ClosedFlow>(),
            Some(maps::SNAT_CLOSED_ENTRIES),
            true,
        ),
        e(
            maps::PORT_MAPS,
            MapType::Hash,
            size::<PortKey>(),
            size::<PortTarget>(),
            Some(maps::MAX_PORT_MAPS),
            false,
        ),
        e(maps::NODE_CONFIG, MapType::Array, 4, size::<NodeConfig>(), Some(1), true),
        e(
            maps::NODE_LOCAL_REV,
            MapType::LruHash,
            size::<SockRevKey>(),
            size::<SockOrigin>(),
            Some(maps::NODE_LOCAL_REV_ENTRIES),
            false,
        ),
        e(maps::EVENTS, MapType::RingBuf, 0, 0, Some(maps::EVENTS_BYTES), true),
        e(maps::TRACE_FILTER, MapType::Array, 4, size::<TraceFilter>(), Some(1), true),
    ]
}

/// Compares the maps pinned in `dir` with this build's. Changes nothing: returns the
/// pins of disposable maps with an old layout (to be replaced: [`set_aside`]), or
/// refuses when a map live connections depend on has one.
pub fn check(dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let mut stale = Vec::new();
    for want in expected() {
        let pin = dir.join(want.name);
        if !pin.exists() {
            continue;
        }
        let found = MapData::from_pin(&pin).and_then(|m| m.info()).map_err(|source| {
            DatapathError::Pinned { path: pin.clone(), dir: dir.into(), source: Box::new(source) }
        })?;
        let kind = found.map_type().ok();
        let max_matches = want.max_entries.is_none_or(|m| m == found.max_entries());
        if kind == Some(want.kind)
            && found.key_size() == want.key
            && found.value_size() == want.value
            && max_matches
        {
            continue;
        }
        let describe = |kind: Option<MapType>, key: u32, value: u32, max: Option<u32>| {
            let kind = kind.map_or("an unknown kind".to_string(), |k| format!("{k:?}"));
            let max = max.map_or(String::new(), |m| format!(", {m} entries"));
            format!("{kind}, key {key} B, value {value} B{max}")
        };
        let found_desc = describe(kind, found.key_size(), found.value_size(), Some(found.max_entries()));
        let want_desc = describe(Some(want.kind), want.key, want.value, want.max_entries);
        if want.disposable {
            warn!(map = want.name, found = %found_desc, expected = %want_desc, "pinned map has an old layout; replacing it");
            stale.push(pin);
        } else {
            return Err(DatapathError::Layout {
                map: want.name,
                pin,
                found: found_desc,
                expected: want_desc,
            });
        }
    }
    Ok(stale)
}

/// The disposable maps with an old layout, unpinned so that loading creates new ones
/// under their names, but held open. Dropped without [`SetAside::commit`] (the load
/// failed), it pins them again where they were: a refused start changes nothing.
pub struct SetAside {
    held: Vec<(PathBuf, MapData)>,
}

/// Unpins the maps [`check`] found disposable, keeping each one open (bpffs has no
/// rename); the old maps also live on while the old programs use them.
pub fn set_aside(stale: &[PathBuf]) -> Result<SetAside, DatapathError> {
    let mut aside = SetAside { held: Vec::new() };
    for pin in stale {
        let dir = pin.parent().unwrap_or(pin);
        let map = MapData::from_pin(pin).map_err(|source| DatapathError::Pinned {
            path: pin.clone(),
            dir: dir.into(),
            source: Box::new(source),
        })?;
        std::fs::remove_file(pin).map_err(|source| DatapathError::PinDir { path: pin.clone(), source })?;
        aside.held.push((pin.clone(), map));
    }
    Ok(aside)
}

impl SetAside {
    /// The new maps are in place: the old ones go with their last user.
    pub fn commit(mut self) {
        for (pin, _) in std::mem::take(&mut self.held) {
            info!(pin = %pin.display(), "old map unpinned; a new one takes its place");
        }
    }
}

impl Drop for SetAside {
    fn drop(&mut self) {
        for (pin, map) in self.held.drain(..) {
            // A pin the failed load created goes first.
            let _ = std::fs::remove_file(&pin);
            if let Err(e) = map.pin(&pin) {
                warn!(pin = %pin.display(), "cannot pin the old map back: {e}");
            }
        }
    }
}

/// The conntrack table keeps the size it was created with: a different
/// --ct-max-entries takes effect only on a new table.
pub fn conntrack_size(dir: &Path) -> Option<u32> {
    let pin = dir.join(maps::CONNTRACK);
    MapData::from_pin(&pin).and_then(|m| m.info()).ok().map(|i| i.max_entries())
}
