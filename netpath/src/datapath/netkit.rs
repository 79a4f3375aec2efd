//! netkit links (Linux 6.7+), which aya 0.14 cannot make: the four bpf(2) commands the
//! agent needs, each a small typed function. A netkit link on a netkit pair's primary
//! (host-side) device with attach type BPF_NETKIT_PEER runs its program in the peer's
//! transmit path: for every packet the container sends, with the skb's device already
//! the host side (drivers/net/netkit.c, netkit_xmit). Like a TCX link it is a bpf_link:
//! pinned it outlives the agent, and BPF_LINK_UPDATE swaps its program in place.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya_obj::generated::{bpf_attach_type::BPF_NETKIT_PEER, bpf_cmd};

use super::sys::{sys_bpf, zeroed};

/// BPF_LINK_CREATE: `prog` as the peer program of the netkit primary device `ifindex`,
/// after the programs already there.
pub fn attach_peer(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_ifindex = ifindex;
    attr.link_create.attach_type = BPF_NETKIT_PEER as u32;
    // SAFETY: the attribute holds descriptors and an index, no address.
    let fd = unsafe { sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) }?;
    // SAFETY: BPF_LINK_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_LINK_UPDATE: the link runs `prog` from now on, without a moment with none.
pub fn replace_program(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = zeroed();
    attr.link_update.link_fd = link.as_raw_fd() as u32;
    attr.link_update.__bindgen_anon_1.new_prog_fd = prog.as_raw_fd() as u32;
    // SAFETY: the attribute holds descriptors, no address.
    unsafe { sys_bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr) }.map(drop)
}

/// BPF_OBJ_PIN: the link stays attached after its descriptor closes, until `path` goes.
pub fn pin(link: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = zeroed();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = link.as_raw_fd() as u32;
    // SAFETY: the path is a NUL-terminated string alive for the call; the kernel reads it.
    unsafe { sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr) }.map(drop)
}

/// BPF_OBJ_GET: a descriptor of the link pinned at `path`.
pub fn open_pin(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = zeroed();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    // SAFETY: as for pin().
    let fd = unsafe { sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr) }?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_PROG_QUERY: the IDs of the peer programs on the netkit primary `ifindex`, in the
/// order they run. ENODEV or EINVAL when it is no netkit device.
pub fn peer_program_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut attr = zeroed();
    attr.query.__bindgen_anon_1.target_ifindex = ifindex;
    attr.query.attach_type = BPF_NETKIT_PEER as u32;
    attr.query.prog_ids = ids.as_mut_ptr() as u64;
    attr.query.__bindgen_anon_2.prog_cnt = ids.len() as u32;
    // SAFETY: prog_ids points at `prog_cnt` u32s, alive for the call; the kernel writes
    // at most that many.
    unsafe { sys_bpf(bpf_cmd::BPF_PROG_QUERY, &mut attr) }?;
    // SAFETY: the kernel wrote the count back into the same field.
    let n = unsafe { attr.query.__bindgen_anon_2.prog_cnt } as usize;
    Ok(ids[..n.min(ids.len())].to_vec())
}

/// The names of the peer programs on the netkit primary `ifindex`.
pub fn peer_programs(ifindex: u32) -> io::Result<Vec<String>> {
    let ids = peer_program_ids(ifindex)?;
    let mut names = super::sys::program_names(&ids);
    Ok(ids.iter().filter_map(|id| names.remove(id)).collect())
}
