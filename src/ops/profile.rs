//! Optional timing of a model's forward pass op by op, for the benchmarks' profile tables.
//! `enable(true)`, run the forward, then `take()` returns, per op name in order of first use,
//! the calls, wall time and floating-point operations recorded by `scope(name, flops)` guards.
//! Off (the default) a scope costs one relaxed atomic load. Scopes are placed where a forward
//! pass runs them one after another (not inside parallel loops, not nested), so their times add
//! up to the forward's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Vec<OpTotal>> = Mutex::new(Vec::new());

/// What one op name accumulated.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTotal {
    pub name: &'static str,
    pub calls: u64,
    pub seconds: f64,
    /// Floating-point operations (a multiply-add counts two).
    pub flops: f64,
}

/// Times the code until it is dropped, under `name`, when profiling is on.
pub struct Scope {
    name: &'static str,
    flops: f64,
    start: Option<Instant>,
}

/// A scope for `name` doing `flops` floating-point operations.
#[inline]
pub fn scope(name: &'static str, flops: f64) -> Scope {
    Scope {
        name,
        flops,
        start: ENABLED.load(Ordering::Relaxed).then(Instant::now),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some(start) = self.start else { return };
        let seconds = start.elapsed().as_secs_f64();
        let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        match totals.iter_mut().find(|t| t.name == self.name) {
            Some(t) => {
                t.calls += 1;
                t.seconds += seconds;
                t.flops += self.flops;
            }
            None => totals.push(OpTotal {
                name: self.name,
                calls: 1,
                seconds,
                flops: self.flops,
            }),
        }
    }
}

/// Turns recording on or off (totals are kept until [`take`]).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The totals recorded so far, cleared.
pub fn take() -> Vec<OpTotal> {
    std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_add_up_per_name_only_when_enabled() {
        {
            let _off = scope("test-off", 1.0);
        }
        enable(true);
        for _ in 0..3 {
            let _s = scope("test-a", 10.0);
        }
        {
            let _s = scope("test-b", 5.0);
        }
        enable(false);
        let t: Vec<OpTotal> = take()
            .into_iter()
            .filter(|t| t.name.starts_with("test-"))
            .collect();
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!((t[0].name, t[0].calls, t[0].flops), ("test-a", 3, 30.0));
        assert_eq!((t[1].name, t[1].calls, t[1].flops), ("test-b", 1, 5.0));
    }
}
