//! Memory of the network runs, in a test binary of its own so that no other
//! test's allocations move this process's resident set.
//!
//! ONNX Runtime's CPU arena (see `runtime/arena.rs`, `CpuArena`) keeps every
//! activation buffer between segments. It must be shared by sessions open at
//! the same time and released when the last one closes: a desktop app that
//! finished its jobs must not keep the ~2 GB a separation needs.

use stemroom_testkit::{cpu_turn as serial, falcon_mixture, open_separator, rss_gb as rss, separate_into};

#[test]
fn the_arena_is_shared_while_sessions_are_open_and_released_after_the_last() {
    let _turn = serial();
    let mix = falcon_mixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let separate = |sep: &stemroom_engine::job::Separator, out: &str| {
        let done = separate_into(sep, &mix, &dir.path().join(out));
        assert_eq!(done.stems.len(), 4, "four stems");
    };

    // Two sessions at once share the arena; closing the first leaves the
    // second working.
    let first = open_separator();
    let second = open_separator();
    separate(&first, "a");
    let (during, peak) = rss();
    eprintln!("two sessions, after a run: RSS {during:.2} GB, peak {peak:.2} GB");
    assert!(peak > 1.5, "the network ran (peak {peak:.2} GB)");
    assert!(during > 1.5, "the arena keeps its buffers while sessions are open");
    drop(first);
    separate(&second, "b");
    drop(second);

    let (after, _) = rss();
    eprintln!("all sessions closed: RSS {after:.2} GB");
    assert!(after < 0.8, "closing the last session gives the arena back: RSS {after:.2} GB");

    // Opening again registers a new arena.
    let third = open_separator();
    separate(&third, "c");
    drop(third);
    let (after, _) = rss();
    assert!(after < 0.8, "released again: RSS {after:.2} GB");
}
