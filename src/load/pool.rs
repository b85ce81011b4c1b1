//! A bounded pool of plain threads for the blocking request phases (setup, refresh,
//! release): a fixed number of items in progress at a time, and a deadline after which
//! the items not yet started are handed back unstarted.

use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Instant;

/// What happened to one item.
pub enum Done<T, R> {
    Ran(R),
    /// The deadline passed before the item's turn came.
    Late(T),
}

/// Runs `work` on every item, `threads` at a time, in no particular order.
pub fn run<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    deadline: Instant,
    work: impl Fn(T) -> R + Sync,
) -> Vec<Done<T, R>> {
    let queue = Mutex::new(items.into_iter());
    let next = || queue.lock().unwrap_or_else(PoisonError::into_inner).next();
    let drain = || {
        let mut done = Vec::new();
        while let Some(item) = next() {
            done.push(if Instant::now() < deadline {
                Done::Ran(work(item))
            } else {
                Done::Late(item)
            });
        }
        done
    };
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .filter_map(|i| {
                thread::Builder::new()
                    .name(format!("load-pool-{i}"))
                    .spawn_scoped(scope, drain)
                    .ok()
            })
            .collect();
        // Without any thread (the system refused them all), do the work here.
        let mut done = if workers.is_empty() {
            drain()
        } else {
            Vec::new()
        };
        for worker in workers {
            match worker.join() {
                Ok(part) => done.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn runs_everything_before_the_deadline_and_nothing_after() {
        let soon = Instant::now() + Duration::from_secs(60);
        let done = run((0..100).collect(), 8, soon, |i: u32| i * 2);
        let mut ran: Vec<u32> = done
            .into_iter()
            .filter_map(|d| match d {
                Done::Ran(r) => Some(r),
                Done::Late(_) => None,
            })
            .collect();
        ran.sort_unstable();
        assert_eq!(ran, (0..100).map(|i| i * 2).collect::<Vec<_>>());

        let past = Instant::now();
        let done = run((0..10).collect(), 4, past, |i: u32| i);
        assert!(done.iter().all(|d| matches!(d, Done::Late(_))));
    }
}
