//! A global allocator that counts: allocation calls and live bytes. A test
//! binary installs it with `#[global_allocator]`; all its tests then share
//! the counts, so such a binary holds a single test. `benches/memory.rs`
//! uses it too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Forwards to the system allocator, counting.
pub struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    // Const-initialized and without a destructor: reading it never
    // allocates, so the allocator itself may use it.
    static THREAD_CALLS: Cell<usize> = const { Cell::new(0) };
}

fn count_call() {
    CALLS.fetch_add(1, Ordering::Relaxed);
    THREAD_CALLS.with(|c| c.set(c.get() + 1));
}

impl Counting {
    /// Allocations and reallocations so far.
    pub fn calls() -> usize {
        CALLS.load(Ordering::Relaxed)
    }

    /// Allocations and reallocations so far by this thread: what a test
    /// counts, so that the test harness's own threads do not.
    pub fn thread_calls() -> usize {
        THREAD_CALLS.with(Cell::get)
    }

    /// Bytes allocated and not freed.
    pub fn live() -> isize {
        LIVE.load(Ordering::Relaxed)
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_call();
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as given.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_call();
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
