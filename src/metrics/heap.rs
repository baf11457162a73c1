//! What the allocator holds, published by every role's metrics endpoint.
//! Resident memory alone cannot tell a leak from allocator retention or from
//! the first touch of long-lived buffers (the data plane allocates tens of
//! MiB of zeroed packet buffers whose pages the kernel maps only when a
//! packet first reaches them): a leak shows as growth of the bytes
//! allocated, retention (fragmentation, per-thread arenas) as growth of the
//! bytes obtained from the kernel beyond them. The soak (scripts/soak.sh,
//! docs/security.md) judges these two.

use super::sample::Sample;

/// The allocator's view of the process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapUse {
    /// Held by the program: allocated and not yet freed.
    pub allocated: u64,
    /// Held by the allocator from the kernel: the arenas and the chunks it
    /// mapped on their own (whether their pages are resident or not).
    pub obtained: u64,
}

/// The current figures, from glibc's `mallinfo2` (it walks every arena
/// under its lock: fine per scrape, not per packet). `None` on other C
/// libraries.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn usage() -> Option<HeapUse> {
    // SAFETY: mallinfo2 takes no pointers and only reads malloc's own state.
    let m = unsafe { libc::mallinfo2() };
    let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Some(HeapUse {
        allocated: bytes(m.uordblks).saturating_add(bytes(m.hblkhd)),
        obtained: bytes(m.arena).saturating_add(bytes(m.hblkhd)),
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn usage() -> Option<HeapUse> {
    None
}

/// The two gauges, or none where the C library cannot tell.
pub fn samples() -> Vec<Sample> {
    let Some(h) = usage() else { return Vec::new() };
    vec![
        Sample::gauge(
            "ntmtun_heap_allocated_bytes",
            "Bytes the process holds from malloc (a leak makes this grow).",
            h.allocated,
        ),
        Sample::gauge(
            "ntmtun_heap_obtained_bytes",
            "Bytes malloc holds from the kernel, resident or not (retention makes this grow).",
            h.obtained,
        ),
    ]
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_is_counted_until_it_is_freed() {
        // 64 MiB: far above anything the other tests running in parallel
        // allocate or free at the same moment.
        const SIZE: usize = 64 << 20;
        let before = usage().expect("glibc reports its heap");
        let block = vec![1u8; SIZE];
        let during = usage().expect("glibc reports its heap");
        assert!(
            during.allocated >= before.allocated + SIZE as u64 / 2,
            "{before:?} -> {during:?}"
        );
        assert!(during.obtained >= during.allocated, "{during:?}");
        std::hint::black_box(&block);
        drop(block);
        let after = usage().expect("glibc reports its heap");
        assert!(
            after.allocated + (SIZE as u64) / 2 <= during.allocated,
            "{during:?} -> {after:?}"
        );
    }

    #[test]
    fn samples_name_both_gauges() {
        let names: Vec<_> = samples().iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["ntmtun_heap_allocated_bytes", "ntmtun_heap_obtained_bytes"]
        );
    }
}
