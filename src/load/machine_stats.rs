//! CPU time of the whole machine and of the load client itself, sampled around the data
//! phase. Relaying work the kernel does outside the server's threads (softirq delivery,
//! or a relay moved into the kernel altogether) is missing from the server process's
//! CPU time but not from the machine's busy time; the client's own share says how much
//! of that busy time is the load generator's.
//!
//! Machine time is the aggregate `cpu` line of `/proc/stat`: the sum of user, nice,
//! system, irq, softirq and steal over all CPUs, in clock ticks (idle and iowait are not
//! busy; guest time is already part of user). The client's time is
//! `getrusage(RUSAGE_SELF)`, which keeps the time of threads that have exited.

use std::fs;
use std::io;

use super::server_stats::clock_ticks_per_second;

/// One look at the machine's and the load client's CPU time, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// Non-idle time of all CPUs together since boot.
    pub machine_us: u64,
    /// User + system time of this process since it started.
    pub client_us: u64,
}

impl CpuSample {
    pub fn take() -> io::Result<Self> {
        let stat = fs::read_to_string("/proc/stat")?;
        let ticks = busy_ticks(&stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no aggregate cpu line in /proc/stat",
            )
        })?;
        Ok(Self {
            machine_us: ticks.saturating_mul(1_000_000) / clock_ticks_per_second(),
            client_us: own_cpu_us()?,
        })
    }
}

/// user + nice + system + irq + softirq + steal of the `cpu` line (all CPUs).
fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = ticks[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// This process's user + system time, every thread it ever had included.
fn own_cpu_us() -> io::Result<u64> {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct, which
    // getrusage only writes into.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    Ok(us(usage.ru_utime) + us(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  4705 150 1120 16250 520 30 25 5 0 0\n\
                    cpu0 2352 75 560 8125 260 15 12 2 0 0\n\
                    intr 12345 0 0\n";
        assert_eq!(busy_ticks(stat), Some(4705 + 150 + 1120 + 30 + 25 + 5));
        assert_eq!(busy_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(busy_ticks("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(busy_ticks("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn samples_grow() {
        let before = CpuSample::take().expect("/proc/stat and getrusage");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        let after = CpuSample::take().expect("/proc/stat and getrusage");
        assert!(after.client_us > before.client_us, "{before:?} {after:?}");
        assert!(
            after.machine_us >= before.machine_us,
            "{before:?} {after:?}"
        );
    }
}
