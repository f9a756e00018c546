//! The process's memory allocator: mimalloc (v2), with transparent huge pages off.
//!
//! Why not the system allocator: glibc's malloc/free were a third of a session GET's
//! instructions and about a quarter of a Durable Streams append's (callgrind, see
//! docs/benchmarks.md "Allocator"); mimalloc v2 takes 12–18 % off every hot request.
//!
//! Why v2 and not v3, and why huge pages off: both trade memory for speed on Linux machines
//! with transparent huge pages set to `always` (a common default): mimalloc reserves large,
//! aligned regions, so a byte touched in one can make a whole 2 MiB huge page resident (v2:
//! +14 MiB at start; v3, which also commits its arenas eagerly, more per idle socket than
//! glibc). With huge pages off for this process, v2 starts as small as glibc and holds no more
//! per idle socket (docs/benchmarks.md "Allocator").
//! The flag is per process (the kernel checks it on every page fault), so setting it first
//! thing in `main` covers every later allocation; the handful of allocations the Rust runtime
//! makes before `main` may keep one huge page.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (Linux; elsewhere nothing to do). A
/// kernel that refuses (older than 3.15) only costs memory, so the error is not fatal.
pub fn huge_pages_off() {
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!(
            "sessiond: could not turn transparent huge pages off ({err}); memory use may be higher"
        );
    }
}
