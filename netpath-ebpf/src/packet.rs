//! The one bounds-checked accessor into packet data, for tc and XDP alike.
use aya_ebpf::programs::{TcContext, XdpContext};
use netpath_common::Reason;

/// A program context with linear packet data.
pub trait PacketData {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

impl PacketData for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

impl PacketData for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

/// Pointer to a `T` at `offset` bytes into the linear packet data, or `Err` when the
/// packet is too short. The explicit `data_end` comparison is what lets the verifier
/// accept every later access through the pointer.
#[inline(always)]
pub fn ptr_at<T, C: PacketData>(ctx: &C, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

/// [`ptr_at`] for a header the packet must have: a packet too short for it is malformed.
#[inline(always)]
pub fn header<T, C: PacketData>(ctx: &C, offset: usize) -> Result<*mut T, Reason> {
    ptr_at(ctx, offset).map_err(|()| Reason::DropMalformed)
}

/// A load, store or checksum helper that fails on a packet whose headers were already
/// bounds-checked means the packet is not what its headers claim: malformed.
pub trait OrMalformed<T> {
    fn or_malformed(self) -> Result<T, Reason>;
}

impl<T, E> OrMalformed<T> for Result<T, E> {
    #[inline(always)]
    fn or_malformed(self) -> Result<T, Reason> {
        self.map_err(|_| Reason::DropMalformed)
    }
}

/// ifindex of the device the packet is seen on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: ctx.skb.skb is the context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Marker an XDP program leaves in the packet's metadata when it has already translated
/// the packet, so the tc program only has to deliver it.
pub const XDP_TRANSLATED: u32 = 0x6e70_7864; // "npxd"

/// Did the uplink's XDP program translate this packet?
#[inline(always)]
pub fn translated_by_xdp(ctx: &TcContext) -> bool {
    // SAFETY: the context pointer is the kernel's; data_meta/data are readable in tc.
    let (meta, data) = unsafe { ((*ctx.skb.skb).data_meta as usize, (*ctx.skb.skb).data as usize) };
    if meta + 4 > data {
        return false;
    }
    // SAFETY: meta..meta+4 lies before data, bounds-checked just above.
    unsafe { *(meta as *const u32) == XDP_TRANSLATED }
}
