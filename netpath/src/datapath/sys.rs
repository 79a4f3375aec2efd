//! bpf(2) itself, for the commands aya 0.14 has no call for (netkit links, reading a
//! program array's slots): each caller a small typed function over these two.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// bpf(2) with `attr`; the kernel's return value.
pub fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: attr is a valid, zero-initialised bpf_attr of the size passed; the kernel
    // reads and writes only within it (and the buffers it points to, owned by callers).
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
pub fn program_in_slot(array: BorrowedFd<'_>, index: u32) -> io::Result<Option<u32>> {
    let mut id = 0u32;
    let mut attr = zeroed();
    attr.__bindgen_anon_2.map_fd = array.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = std::ptr::from_ref(&index) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = std::ptr::from_mut(&mut id) as u64;
    match sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
