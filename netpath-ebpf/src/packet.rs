//! The one bounds-checked accessor into packet data.
use aya_ebpf::programs::TcContext;

/// Pointer to a `T` at `offset` bytes into the linear packet data, or `Err` when the
/// packet is too short. The explicit `data_end` comparison is what lets the verifier
/// accept every later access through the pointer.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

/// ifindex of the device the packet is seen on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: ctx.skb.skb is the context pointer the kernel passed to the program.
    unsafe { (*ctx.skb.skb).ifindex }
}
