//! Reading a whole hash map while the datapath changes it. A walk key by key
//! (BPF_MAP_GET_NEXT_KEY, what aya's iterators do) starts again from the first key
//! whenever the key it stands on is deleted meanwhile, and the datapath deletes all the
//! time: every new flow moves from CONNTRACK_NEW to CONNTRACK once its handshake is
//! done, LRU maps evict. Under steady connection churn such a walk may never end (the
//! 6.1 guest saw it: the conntrack collection kept the agent's loop, SIGTERM went
//! unanswered for 25 minutes), and the entries it returns repeat. BPF_MAP_LOOKUP_BATCH
//! (5.6+) reads bucket by bucket from a cursor of its own: it always ends, and each
//! entry present for the whole read comes once.
use std::{
    borrow::Borrow,
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{maps::MapData, Pod};

/// enum bpf_cmd's BPF_MAP_LOOKUP_BATCH.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries asked for per call; doubled when one bucket holds more.
const CHUNK: usize = 512;

/// union bpf_attr's `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of the hash map (plain or LRU, not per-CPU) behind `fd`, whose keys and
/// values are `K` and `V` exactly.
pub fn lookup_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    // A hash map's cursor is a bucket index.
    let (mut cursor, mut next, mut started) = (0u32, 0u32, false);
    // SAFETY: Pod types are plain data, valid for any bytes, zeroes included.
    let (mut keys, mut values): (Vec<K>, Vec<V>) =
        unsafe { (vec![std::mem::zeroed(); chunk], vec![std::mem::zeroed(); chunk]) };
    loop {
        let mut attr = BatchAttr {
            in_batch: if started { std::ptr::from_ref(&cursor) as u64 } else { 0 },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the attribute points at buffers of `count` keys and values of the
        // map's sizes, and at the two cursors, all alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::from_mut(&mut attr),
                size_of::<BatchAttr>(),
            )
        };
        let error = (r < 0).then(io::Error::last_os_error);
        match error.as_ref().and_then(io::Error::raw_os_error) {
            // The last batch (ENOENT) may carry entries too.
            None | Some(libc::ENOENT) => {
                let n = (attr.count as usize).min(chunk);
                out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                if error.is_some() {
                    return Ok(out);
                }
                cursor = next;
                started = true;
            }
            // One bucket holds more entries than the chunk.
            Some(libc::ENOSPC) if chunk < 1 << 20 => {
                chunk *= 2;
                // SAFETY: as above.
                unsafe {
                    keys.resize(chunk, std::mem::zeroed());
                    values.resize(chunk, std::mem::zeroed());
                }
            }
            _ => return Err(error.unwrap_or_else(|| io::Error::other("bpf_map_lookup_batch"))),
        }
    }
}

/// One BPF_MAP_UPDATE_BATCH or BPF_MAP_DELETE_BATCH call on `count` keys (and values,
/// for an update) at the given addresses: how many the kernel processed, which it says
/// also when the call failed part way, and its error.
fn write_batch(
    cmd: libc::c_long,
    fd: BorrowedFd<'_>,
    keys: u64,
    values: u64,
    count: usize,
) -> (usize, Option<io::Error>) {
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys,
        values,
        count: count as u32,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: the caller's addresses hold `count` keys (and values) of the map's sizes,
    // alive for the call.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(&mut attr), size_of::<BatchAttr>()) };
    ((attr.count as usize).min(count), (r < 0).then(io::Error::last_os_error))
}

/// Writes `keys[i] -> values[i]` into the hash map behind `fd` in as few calls as the
/// kernel takes (BPF_MAP_UPDATE_BATCH, 5.6+): ten thousand published ports in one call,
/// not ten thousand. On an error the entries before `Err`'s count are in the map.
pub fn update_all<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, io::Error)> {
    assert_eq!(keys.len(), values.len());
    let mut done = 0;
    while done < keys.len() {
        let (keys_at, values_at) = (keys[done..].as_ptr() as u64, values[done..].as_ptr() as u64);
        let (n, error) = write_batch(BPF_MAP_UPDATE_BATCH, fd, keys_at, values_at, keys.len() - done);
        done += n;
        if let Some(e) = error {
            return Err((done, e));
        }
    }
    Ok(())
}

/// Removes `keys` from the hash map behind `fd` (BPF_MAP_DELETE_BATCH); keys that are
/// not there are passed over.
pub fn delete_all<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<()> {
    let mut done = 0;
    while done < keys.len() {
        let (n, error) =
            write_batch(BPF_MAP_DELETE_BATCH, fd, keys[done..].as_ptr() as u64, 0, keys.len() - done);
        done += n;
        match error {
            None => {}
            // The key at `done` is absent: step over it.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => done += 1,
            Some(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`lookup_all`] of `map` (called `name`), with the datapath's error. A typed map: aya
/// checked its key and value sizes against `K` and `V` when it was opened, and the
/// kernel writes entries of those sizes into buffers of `K` and `V`.
pub fn read_all<T: Borrow<MapData>, K: Pod, V: Pod>(
    map: &aya::maps::HashMap<T, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, super::DatapathError> {
    use aya::maps::IterableMap as _;
    lookup_all(map.map().fd().as_fd())
        .map_err(|io_error| super::DatapathError::syscall(name, "bpf_map_lookup_batch", io_error))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
        sync::atomic::{AtomicBool, Ordering},
    };

    use super::*;

    /// A fresh unpinned hash map of u64 -> u64 (needs root); closed when dropped. Not an
    /// LRU one: churn would evict the entries the test counts on.
    fn hash_map(entries: u32) -> OwnedFd {
        // union bpf_attr's map-create head: type, key and value size, entries, flags.
        let mut attr = [0u32; 32];
        attr[..5].copy_from_slice(&[1, 8, 8, entries, 0]);
        // SAFETY: BPF_MAP_CREATE (0) reads the attribute, of the size given.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), 128) };
        assert!(fd >= 0, "BPF_MAP_CREATE: {}", io::Error::last_os_error());
        // SAFETY: a new descriptor nobody else owns.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    #[test]
    fn batch_updates_and_deletes_land_whole() {
        let map = hash_map(4096);
        let keys: Vec<u64> = (1..=3000).collect();
        let values: Vec<u64> = keys.iter().map(|k| k * 10).collect();
        update_all(map.as_fd(), &keys, &values).unwrap();
        let mut got = lookup_all::<u64, u64>(map.as_fd()).unwrap();
        got.sort();
        assert_eq!(got, keys.iter().map(|k| (*k, k * 10)).collect::<Vec<_>>());
        // Past the map's capacity: the error says how many went in, and they did.
        let more: Vec<u64> = (10_000..12_000).collect();
        let (n, _) = update_all(map.as_fd(), &more, &more).unwrap_err();
        assert_eq!(n, 4096 - 3000);
        assert_eq!(lookup_all::<u64, u64>(map.as_fd()).unwrap().len(), 4096);
        // Absent keys among those deleted are passed over.
        let mut gone: Vec<u64> = (1..=3000).collect();
        gone.insert(5, 99_999);
        gone.extend(&more[..n]);
        delete_all(map.as_fd(), &gone).unwrap();
        assert!(lookup_all::<u64, u64>(map.as_fd()).unwrap().is_empty());
    }

    fn update(fd: BorrowedFd<'_>, key: u64, value: u64, delete: bool) {
        // union bpf_attr's element head: map fd, pad, key pointer, value pointer, flags.
        let mut attr = [0u64; 4];
        attr[0] = fd.as_raw_fd() as u64;
        attr[1] = std::ptr::from_ref(&key) as u64;
        attr[2] = std::ptr::from_ref(&value) as u64;
        let cmd = if delete { 3 } else { 2 };
        // SAFETY: BPF_MAP_UPDATE_ELEM (2) / DELETE_ELEM (3) read the key and value given.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 32) };
    }

    /// Every entry once, in chunks and past the chunk size; and a read ends while
    /// another thread deletes and re-adds entries as fast as it can, each entry that
    /// stayed put read exactly once (the key walk starts over at every deletion of the
    /// key it stands on).
    #[test]
    fn a_batch_read_sees_every_entry_once_and_ends_under_churn() {
        let map = hash_map(8192);
        for k in 0..3000u64 {
            update(map.as_fd(), k, k * 7, false);
        }
        let all: Vec<(u64, u64)> = lookup_all(map.as_fd()).unwrap();
        assert_eq!(all.len(), 3000);
        assert!(all.iter().all(|(k, v)| *v == k * 7));
        assert_eq!(all.iter().map(|(k, _)| k).collect::<HashSet<_>>().len(), 3000);

        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let churn = s.spawn(|| {
                let mut k = 1_000_000u64;
                while !stop.load(Ordering::Relaxed) {
                    update(map.as_fd(), k, 0, false);
                    update(map.as_fd(), k - 8, 0, true);
                    k += 1;
                }
            });
            let stable: Vec<usize> = (0..20)
                .map(|_| {
                    let read: Vec<(u64, u64)> = lookup_all(map.as_fd()).unwrap();
                    read.iter().filter(|(k, _)| *k < 3000).count()
                })
                .collect();
            stop.store(true, Ordering::Relaxed);
            churn.join().unwrap();
            assert!(stable.iter().all(|n| *n == 3000), "entries that stayed, per read: {stable:?}");
        });
    }
}
