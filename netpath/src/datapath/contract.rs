//! The embedded eBPF object held against netpath-common's contract table
//! (`netpath_common::contract`), without root: every map with its kind, key and value
//! sizes, capacity and pinning, every program with its section, and nothing besides.
//! The object sizes its maps from the table, user space derives its layout checks,
//! listings and program names from it; this test catches the sides that cannot be
//! derived (a map's key or value type in the eBPF crate, a program's name or section,
//! a map added on one side only).

#[cfg(test)]
mod tests {
    use aya_obj::{
        maps::PinningType,
        programs::{CgroupSockAddrAttachType as Sock, XdpAttachType},
        Object, ProgramSection,
    };
    use netpath_common::contract::{object_capacity, Attach, MAPS, PROGRAMS};

    fn object() -> Object {
        let bytes = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));
        Object::parse(bytes).expect("the embedded object parses")
    }

    /// How it was checked (each change on its own, the object rebuilt, the test red,
    /// the change undone): PORT_MAPS sized with a literal 1024 in
    /// netpath-ebpf/src/maps.rs instead of the table's capacity: red, (1, 8, 8, 1024)
    /// against (1, 8, 8, 131072); PORT_MAPS made an LRU hash in the contract alone: red,
    /// kind 1 against 9. (A key or value type changed in the eBPF crate alone does not
    /// even compile: the programs' map accesses are typed.)
    #[test]
    fn the_object_holds_exactly_the_contracts_maps_and_programs() {
        let obj = object();
        for m in &MAPS {
            let found = obj.maps.get(m.name).unwrap_or_else(|| panic!("the object has no map {}", m.name));
            let got = (
                found.map_type(),
                found.key_size(),
                found.value_size(),
                found.max_entries(),
                found.map_flags(),
            );
            let want = (m.kind as u32, m.key_size, m.value_size, object_capacity(m.name), m.flags);
            assert_eq!(
                got, want,
                "map {}: (kind, key, value, entries, flags) differ from the contract",
                m.name
            );
            let pinned = matches!(found.pinning(), PinningType::ByName);
            assert_eq!(pinned, m.pinned, "map {}: pinned by name in the object: {pinned}", m.name);
        }
        // Sections of globals (.rodata, .bss) are the compiler's, not maps of ours.
        let extra: Vec<_> =
            obj.maps.keys().filter(|k| !k.starts_with('.') && !MAPS.iter().any(|m| m.name == *k)).collect();
        assert!(extra.is_empty(), "maps in the object but not in the contract: {extra:?}");

        for p in &PROGRAMS {
            let found =
                obj.programs.get(p.name).unwrap_or_else(|| panic!("the object has no program {}", p.name));
            let ok = match (&p.attach, &found.section) {
                (Attach::TcIngress(_), ProgramSection::SchedClassifier) => true,
                (Attach::TailCall(_), ProgramSection::SchedClassifier) => true,
                (Attach::Benchmark(_), ProgramSection::SchedClassifier) => true,
                (Attach::Xdp, ProgramSection::Xdp { attach_type: XdpAttachType::Interface, .. }) => true,
                (Attach::CgroupSockAddr(hook), ProgramSection::CgroupSockAddr { attach_type }) => matches!(
                    (*hook, attach_type),
                    ("connect4", Sock::Connect4)
                        | ("sendmsg4", Sock::UDPSendMsg4)
                        | ("recvmsg4", Sock::UDPRecvMsg4)
                        | ("getpeername4", Sock::GetPeerName4)
                        | ("connect6", Sock::Connect6)
                        | ("sendmsg6", Sock::UDPSendMsg6)
                        | ("recvmsg6", Sock::UDPRecvMsg6)
                        | ("getpeername6", Sock::GetPeerName6)
                ),
                _ => false,
            };
            assert!(ok, "program {}: section {:?}, contract {:?}", p.name, found.section, p.attach);
        }
        let extra: Vec<_> = obj.programs.keys().filter(|k| !PROGRAMS.iter().any(|p| p.name == *k)).collect();
        assert!(extra.is_empty(), "programs in the object but not in the contract: {extra:?}");
    }
}
