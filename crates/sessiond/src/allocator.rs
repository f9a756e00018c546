//! The process's memory allocator: mimalloc (v3, the crate's default), with transparent huge
//! pages off.
//!
//! Why not the system allocator: glibc's malloc/free were a third of a session GET's
//! instructions and about a quarter of a Durable Streams append's (callgrind, see
//! docs/benchmarks.md "Allocator"); mimalloc takes 10–16 % off every hot request.
//!
//! Why v3 and not v2: v2 gives the memory of a freed large block (a catch-up page of a few MiB)
//! back to the kernel 10 ms after the free, so back-to-back page reads faulted their buffers in
//! again (30–65 page faults per MB read, +35 % CPU per MB); v3 keeps it for a second.
//!
//! Why huge pages off: on Linux machines with transparent huge pages set to `always` (a common
//! default) mimalloc's large, aligned regions become resident 2 MiB pages as soon as a byte of
//! them is touched: +14 MiB at start and more per idle socket than glibc. With huge pages off
//! for this process, sessiond starts as small as with glibc and holds about as much per idle
//! socket. The flag is per process (the kernel checks it on every page fault), so setting it
//! first thing in `main` covers every later allocation. The allocations the Rust runtime makes
//! before `main` are covered by the crate's `no_thp` feature: without it mimalloc asks for huge
//! pages on its arenas (`madvise`), and those first allocations kept two of them resident (the
//! idle server held 24.0 MiB, 4 MiB of it in huge pages; with the feature 20.8 MiB, none).

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
