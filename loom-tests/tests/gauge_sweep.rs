//! Model: a sweep of idle gauges races an increment through a thread's cached handle.
//!
//! The gauge table tracks at most two gauges. One thread counts on gauge `a` once, so that its
//! cache holds a handle on `a`'s cell and the cell is idle, then counts on `a` again through
//! that handle. Another thread holds gauge `b` and asks for a new gauge `c`: at the bound, that
//! sweeps the idle cells, retiring and removing `a`'s unless the second unit on it came first.
//! Whatever the interleaving:
//!
//! * every count a thread sees is one its gauge really held: each gauge has a single holder at
//!   a time, so every increment sees 1 and every decrement 0 (an increment that landed on a
//!   cell a sweep then retired, or a sweep that retired a cell just counted on, breaks this);
//! * a gauge that is held is the cell the table tracks for its name, so a later guard on the
//!   same name counts on the same cell (a sweep never removes a cell that is counted on);
//! * a refused gauge is counted, and once every unit is given back every tracked cell is idle.
//!
//! The gauge table is driven directly (`__loom_gauges`): through the public API the bound is
//! the in-flight snapshot limit, and a run whose table is full has no snapshot room left to
//! show what a sweep did.
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use tailtriage_core::__loom_gauges::GaugeTable;
use tailtriage_loom_tests::model;

/// Acquires gauge `name` and checks what a single holder must see; `None` when refused.
fn acquire(table: &GaugeTable, name: &str) -> Option<tailtriage_core::__loom_gauges::Held> {
    let (held, count) = table.acquire(name)?;
    assert_eq!(
        count, 1,
        "the only holder of gauge {name} must see it at 1 after its increment"
    );
    assert_eq!(
        table.tracked_count(name),
        Some(1),
        "a held gauge {name} must be the cell the table tracks for its name"
    );
    Some(held)
}

/// Gives a unit of gauge `name` back and checks that the count returns to zero.
fn release(held: tailtriage_core::__loom_gauges::Held, name: &str) {
    assert_eq!(
        held.release(),
        0,
        "the only holder of gauge {name} must see it at 0 after its decrement"
    );
}

#[test]
fn a_sweep_never_retires_a_gauge_counted_on_through_a_cached_handle() {
    model("gauge sweep", || {
        let table = Arc::new(GaugeTable::new(2));

        let reuser = {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                // First unit: creates the cell (if there is room) and caches its handle.
                let Some(first) = acquire(&table, "a") else {
                    return;
                };
                release(first, "a");
                // Second unit: through the cached handle, racing the sweep.
                if let Some(second) = acquire(&table, "a") {
                    release(second, "a");
                }
            })
        };
        let sweeper = {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                let b = acquire(&table, "b");
                // A new name at the bound: sweeps the idle cells first.
                let c = acquire(&table, "c");
                let refused_c = c.is_none();
                if let Some(c) = c {
                    release(c, "c");
                }
                if let Some(b) = b {
                    release(b, "b");
                }
                refused_c
            })
        };
        reuser.join().expect("the reusing thread finishes");
        let refused_c = sweeper.join().expect("the sweeping thread finishes");

        assert!(
            table.refused() <= 3,
            "at most the three first units on new names can be refused: {}",
            table.refused()
        );
        if refused_c {
            assert!(
                table.refused() >= 1,
                "a refused gauge must be counted as refused"
            );
        }
        for name in ["a", "b", "c"] {
            let count = table.tracked_count(name);
            assert!(
                count.is_none() || count == Some(0),
                "once every unit is given back, gauge {name} must be idle: {count:?}"
            );
        }
    });
}
