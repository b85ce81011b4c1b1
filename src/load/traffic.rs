//! The data phase: one tokio task per allocation sends probes on its channel (the
//! server relays them to the echo peer, and the echoes back) and times the round trips.
//!
//! - Rate pacing is open loop: a probe every period whatever comes back, on a tokio
//!   interval that bursts to catch up when late (so the average rate holds), with the
//!   allocations' first probes spread evenly over one period.
//! - Window pacing is closed loop: `window` probes in flight, a new one for each echo;
//!   a probe unanswered for [`LOSS_TIMEOUT`] gives its place to a new one.
//!
//! Sending stops at the end of the duration; each allocation then waits up to
//! [`GRACE`] for its last echoes, so every probe counted as lost had at least that long.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval, interval_at, sleep_until, timeout_at};

use super::conn::Conn;
use super::link::Link;
use super::plan::{Pace, Traffic};
use super::probe::{Frame, Probe};
use super::setup::CHANNEL;
use super::stats::{Histogram, Percentiles, RttBatch};

/// How long after the end of sending echoes are still waited for.
pub const GRACE: Duration = Duration::from_secs(1);
/// How long a window probe may stay unanswered before it counts as lost.
pub const LOSS_TIMEOUT: Duration = Duration::from_millis(250);
/// How often a window allocation whose echoes all stopped looks for lost probes.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Counts over all allocations.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    /// Allocations whose connection failed during the phase (they stopped early).
    pub links_failed: u64,
}

pub struct Outcome {
    pub totals: Totals,
    pub rtt: Option<Percentiles>,
    /// The connections back, for releasing the allocations.
    pub conns: Vec<Conn>,
}

/// Runs the data phase on `conns` (within the runtime).
pub async fn run(conns: Vec<Conn>, traffic: Traffic, stream: bool) -> Outcome {
    let start = Instant::now();
    let stop_at = start + traffic.duration;
    let histogram = Arc::new(Mutex::new(Histogram::default()));
    let mut totals = Totals::default();
    let count = conns.len();
    let mut tasks = Vec::with_capacity(count);
    for (i, conn) in conns.into_iter().enumerate() {
        let frame = Frame::new(CHANNEL, traffic.payload, stream);
        let Ok(link) = Link::from_conn(conn, frame.wire_len()) else {
            totals.links_failed += 1;
            continue;
        };
        let mut driver = Driver {
            link,
            frame,
            start,
            stop_at,
            next_seq: 0,
            sent: 0,
            received: 0,
            rtts: RttBatch::new(histogram.clone()),
        };
        let pace = traffic.pace;
        tasks.push(tokio::spawn(async move {
            let result = match pace {
                Pace::Window(window) => driver.window(window).await,
                Pace::Rate { period } => {
                    let first = start + period.mul_f64(i as f64 / count as f64);
                    driver.rate(interval_at(first, period)).await
                }
            };
            (driver.finish(), result.is_err())
        }));
    }
    let mut conns = Vec::with_capacity(count);
    for task in tasks {
        let Ok(((link, sent, received), failed)) = task.await else {
            totals.links_failed += 1;
            continue;
        };
        totals.sent += sent;
        totals.received += received;
        totals.links_failed += u64::from(failed);
        conns.extend(link.into_conn().ok());
    }
    let rtt = histogram
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .percentiles();
    Outcome { totals, rtt, conns }
}

/// One allocation's side of the data phase.
struct Driver {
    link: Link,
    frame: Frame,
    /// The clock probes carry their send time on.
    start: Instant,
    stop_at: Instant,
    next_seq: u64,
    sent: u64,
    received: u64,
    rtts: RttBatch,
}

impl Driver {
    fn sending(&self) -> bool {
        Instant::now() < self.stop_at
    }

    fn grace_end(&self) -> Instant {
        self.stop_at + GRACE
    }

    /// Done waiting once sending is over and every probe came back.
    fn finished(&self) -> bool {
        !self.sending() && self.received >= self.sent
    }

    /// Sends the next probe; returns its sequence number and send time.
    async fn send(&mut self) -> io::Result<(u64, Instant)> {
        let now = Instant::now();
        let probe = Probe {
            seq: self.next_seq,
            sent_ns: nanos(now - self.start),
        };
        let grace_end = self.grace_end();
        let frame = self.frame.stamp(probe);
        timeout_at(grace_end, self.link.send(frame))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
        self.next_seq += 1;
        self.sent += 1;
        Ok((probe.seq, now))
    }

    fn on_probe(&mut self, probe: Probe) {
        self.received += 1;
        let now = nanos(Instant::now() - self.start);
        self.rtts.push(now.saturating_sub(probe.sent_ns));
    }

    async fn rate(&mut self, mut ticker: tokio::time::Interval) -> io::Result<()> {
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let stop = sleep_until(self.stop_at);
        let grace = sleep_until(self.grace_end());
        tokio::pin!(stop, grace);
        while !self.finished() {
            let sending = self.sending();
            tokio::select! {
                received = self.link.recv() => {
                    if let Some(probe) = received? {
                        self.on_probe(probe);
                    }
                }
                _ = ticker.tick(), if sending => {
                    if self.sending() {
                        self.send().await?;
                    }
                }
                () = &mut stop, if sending => {}
                () = &mut grace => break,
            }
        }
        Ok(())
    }

    async fn window(&mut self, window: usize) -> io::Result<()> {
        let mut in_flight = VecDeque::with_capacity(window);
        let mut stall_check = interval(STALL_CHECK);
        stall_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stop = sleep_until(self.stop_at);
        let grace = sleep_until(self.grace_end());
        tokio::pin!(stop, grace);
        self.refill(&mut in_flight, window).await?;
        while !self.finished() {
            let sending = self.sending();
            tokio::select! {
                received = self.link.recv() => {
                    let Some(probe) = received? else { continue };
                    self.on_probe(probe);
                    if let Some(i) = in_flight.iter().position(|&(seq, _)| seq == probe.seq) {
                        in_flight.remove(i);
                    }
                    self.refill(&mut in_flight, window).await?;
                }
                _ = stall_check.tick() => self.refill(&mut in_flight, window).await?,
                () = &mut stop, if sending => {}
                () = &mut grace => break,
            }
        }
        Ok(())
    }

    /// Forgets probes unanswered for too long, then tops the window up (while sending).
    async fn refill(
        &mut self,
        in_flight: &mut VecDeque<(u64, Instant)>,
        window: usize,
    ) -> io::Result<()> {
        let now = Instant::now();
        while in_flight
            .front()
            .is_some_and(|&(_, sent)| now - sent >= LOSS_TIMEOUT)
        {
            in_flight.pop_front();
        }
        while in_flight.len() < window && self.sending() {
            in_flight.push_back(self.send().await?);
        }
        Ok(())
    }

    /// The link and the counts; the RTT samples go to the shared histogram.
    fn finish(self) -> (Link, u64, u64) {
        (self.link, self.sent, self.received)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
