//! Samples of the server process from `/proc` (with `--server-pid`): CPU time used so
//! far and memory (VmRSS and VmHWM from `/proc/PID/status`).
//!
//! CPU time is the sum of every thread's on-CPU nanoseconds from
//! `/proc/PID/task/*/schedstat`, so short phases are measured exactly; where that file
//! is missing it falls back to utime + stime from `/proc/PID/stat`, counted in clock
//! ticks (10 ms each on most systems). Threads that exit between two samples take
//! their time with them; servers keep their threads, so that does not matter here.

use std::fs;
use std::io;

/// One look at the server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// CPU time used since the process started, in microseconds.
    pub cpu_us: u64,
    pub rss_kb: u64,
    /// Peak resident set size.
    pub hwm_kb: u64,
}

impl ProcSample {
    pub fn take(pid: u32) -> io::Result<Self> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let ticks = cpu_ticks(&stat).ok_or_else(|| invalid("unreadable /proc/PID/stat"))?;
        let cpu_us = thread_cpu_ns(pid)
            .map(|ns| ns / 1000)
            .unwrap_or_else(|| ticks.saturating_mul(1_000_000) / clock_ticks_per_second());
        Ok(Self {
            cpu_us,
            rss_kb: status_kb(&status, "VmRSS").ok_or_else(|| invalid("no VmRSS"))?,
            hwm_kb: status_kb(&status, "VmHWM").ok_or_else(|| invalid("no VmHWM"))?,
        })
    }

    /// CPU microseconds from `self` to `later`.
    pub fn cpu_us_until(&self, later: &Self) -> u64 {
        later.cpu_us.saturating_sub(self.cpu_us)
    }
}

/// The samples of a run: before setup (which must succeed: the PID is checked), after
/// setup, and after the phase that follows (hold or data; none with `--setup-only`).
/// Later samples are `None` if the process could no longer be read.
#[derive(Debug, Clone, Copy)]
pub struct ServerWatch {
    pid: u32,
    pub before_setup: ProcSample,
    pub after_setup: Option<ProcSample>,
    pub after_phase: Option<ProcSample>,
}

impl ServerWatch {
    pub fn start(pid: u32) -> io::Result<Self> {
        Ok(Self {
            pid,
            before_setup: ProcSample::take(pid)?,
            after_setup: None,
            after_phase: None,
        })
    }

    pub fn setup_done(&mut self) {
        self.after_setup = ProcSample::take(self.pid).ok();
    }

    pub fn phase_done(&mut self) {
        self.after_phase = ProcSample::take(self.pid).ok();
    }
}

/// The on-CPU nanoseconds of all the process's threads (first field of each
/// `/proc/PID/task/TID/schedstat`); `None` when the kernel does not provide them.
fn thread_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let text = fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// utime + stime: fields 14 and 15, counted after the `(comm)` field, which may hold
/// spaces and parentheses itself.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` line of `/proc/PID/status`.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `getconf CLK_TCK`.
pub(super) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (tern (worker) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        let status = "Name:\ttern\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(10240));
        assert_eq!(status_kb(status, "VmHWM"), Some(20480));
        assert_eq!(status_kb(status, "VmPeak"), None);
    }

    #[test]
    fn samples_this_process() {
        let sample = ProcSample::take(std::process::id()).expect("own /proc entry");
        assert!(sample.rss_kb > 0 && sample.hwm_kb >= sample.rss_kb);
    }
}
