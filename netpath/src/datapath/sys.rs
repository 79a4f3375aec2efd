//! bpf(2) itself, for the commands aya 0.14 has no call for (netkit links, reading a
//! program array's slots): each caller a small typed function over these two; and
//! netpath's names for the programs such reads return by ID.
use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// bpf(2) with `attr`; the kernel's return value.
///
/// # Safety
/// Every address `attr` holds for `cmd` (keys, values, names, ID arrays) must point to
/// memory of the size the command reads or writes there, alive and not otherwise
/// borrowed for the call: the kernel writes through them.
pub unsafe fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: attr is a whole bpf_attr of the size passed; the addresses in it are the
    // caller's to vouch for (above).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// A bpf_attr of zeroes, in which callers set their command's fields (writes to a
/// union's integer fields need no unsafe; the kernel wants every other field zero).
pub fn zeroed() -> bpf_attr {
    // SAFETY: bpf_attr is plain old data (a union of integer structs): all zeroes is a
    // valid value, and the one the kernel expects in every field not set.
    unsafe { std::mem::zeroed() }
}

/// BPF_MAP_LOOKUP_ELEM on a program array: the ID of the program in slot `index` (what
/// the kernel answers user space for a program array), None for an empty slot.
///
/// # Safety
/// `array` must be a map whose values are 4 bytes (a program array's are): the kernel
/// writes a whole value into the u32 here.
pub unsafe fn program_in_slot(array: BorrowedFd<'_>, index: u32) -> io::Result<Option<u32>> {
    let mut id = 0u32;
    let mut attr = zeroed();
    attr.__bindgen_anon_2.map_fd = array.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = std::ptr::from_ref(&index) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = std::ptr::from_mut(&mut id) as u64;
    // SAFETY: the key is a u32, the value a u32 (the caller vouches for the map's value
    // size), both alive for the call.
    match unsafe { sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(_) => Ok(Some(id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// netpath's names of the loaded programs among `ids` (a program gone meanwhile has
/// none).
pub fn program_names(ids: &[u32]) -> HashMap<u32, String> {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()))
        .map(|p| (p.id(), program_name(p.name_as_str().unwrap_or("?"))))
        .collect()
}

/// netpath's name for a program the kernel names: the kernel keeps 15 characters
/// (`icmp6_to_contai`), so the one program of netpath's whose name that begins is meant;
/// anything else (two such, or none) as the kernel has it.
fn program_name(kernel: &str) -> String {
    const KERNEL_NAME_LEN: usize = 15;
    let mut of_ours = netpath_common::contract::PROGRAMS
        .iter()
        .map(|p| p.name)
        .filter(|n| *n == kernel || (kernel.len() == KERNEL_NAME_LEN && n.starts_with(kernel)));
    match (of_ours.next(), of_ours.next()) {
        (Some(name), None) => name.to_string(),
        _ => kernel.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn programs_are_named_in_full_where_the_kernel_cut_the_name() {
        assert_eq!(super::program_name("icmp6_to_contai"), "icmp6_to_container");
        assert_eq!(super::program_name("from_other_node"), "from_other_node6");
        assert_eq!(super::program_name("uplink_in"), "uplink_in", "not uplink_in6");
        // Two of ours begin so: the kernel's name stays.
        assert_eq!(super::program_name("node_getpeernam"), "node_getpeernam");
        assert_eq!(super::program_name("someone_else"), "someone_else");
    }
}
