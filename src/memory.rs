//! The process allocator's settings.

use std::time::Duration;

/// `mi_option_purge_delay` in mimalloc.h (v3, the version `libmimalloc-sys` builds):
/// `libmimalloc-sys` declares `mi_option_set` but not this option's constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long mimalloc keeps freed memory before it may return it to the OS (arenas wait ten
/// times this). mimalloc v3's own default is 1000 ms; 10 ms and 1000 ms measured alike
/// under load, and the shorter one gives an idle node's memory back sooner.
const PURGE_DELAY_MS: std::ffi::c_long = 10;
/// How often the purging thread returns what has waited long enough.
const PURGE_EVERY: Duration = Duration::from_millis(500);

/// Makes mimalloc return memory it no longer uses to the OS within about a second.
///
/// mimalloc purges freed memory after a delay, but only when a thread next allocates, so
/// an idle node kept the memory a misbehaving client had made it hold (2.4 GB for
/// minutes). A delay of 0 (purge at once) fixed that but cost the hot path: every page
/// freed under load was faulted in again (page faults, zeroing and TLB shootdowns were
/// ~7% of a loaded node's CPU; the R3 queue benchmark sent 32.5k/s with it, 35-39k/s
/// with a delay of 10 ms). So a short delay stays, and a thread of its own collects every
/// [`PURGE_EVERY`]: mimalloc's arenas (where freed pages go once a thread's heap lets them
/// go, and large blocks at once) are purged process-wide, whichever thread asks. Pages a
/// worker's own heap still holds wait for that worker to allocate again.
/// An operator's own `MIMALLOC_PURGE_DELAY` (milliseconds, read by mimalloc as it
/// starts) is left as it is. Call first in `main` of a binary whose global allocator is
/// mimalloc.
pub fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc reads its options atomically and
        // accepts changes at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
    // The process's allocator, not node logic: nothing here runs under simulation.
    #[allow(clippy::disallowed_methods)]
    let spawned = std::thread::Builder::new()
        .name("mpreg-purge".into())
        .spawn(|| {
            // `mi_collect` collects the calling thread's heap, and reaches the arenas only
            // through an initialized one: this thread may never allocate by itself.
            // SAFETY: initializes mimalloc's state for this thread; idempotent.
            unsafe { libmimalloc_sys::mi_thread_init() }
            loop {
                std::thread::sleep(PURGE_EVERY);
                // SAFETY: mimalloc's own collection, callable from any thread at any time.
                unsafe { libmimalloc_sys::mi_collect(false) }
            }
        });
    if let Err(e) = spawned {
        // Logging is not set up yet this early in `main`.
        eprintln!(
            "mpreg: no thread to return freed memory ({e}); it goes back as threads allocate"
        );
    }
}
