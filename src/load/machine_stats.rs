//! CPU time of the whole machine and of the load client itself, sampled around the data
//! phase. Relaying work the kernel does outside the server's threads (softirq delivery,
//! or a relay moved into the kernel altogether) is missing from the server process's
//! CPU time but not from the machine's busy time; the client's own share says how much
//! of that busy time is the load generator's.
//!
//! Machine busy time is the time all online CPUs had (their number times the time since
//! boot) minus their idle and iowait time from the aggregate `cpu` line of `/proc/stat`.
//! Idle time is kept exactly by a tickless kernel, whereas the busy fields (user,
//! system, softirq, ...) are charged a whole clock tick at a time to whatever runs when
//! the tick fires: at paced loads, where CPUs wake briefly and in step with timers,
//! their sum drifts far from the truth (it came out below the server's and the load
//! client's own exact times added). The client's time is `getrusage(RUSAGE_SELF)`,
//! exact and kept for threads that have exited.

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
        let (cpus, idle_ticks) = idle_ticks(&stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no aggregate cpu line in /proc/stat",
            )
        })?;
        let idle_us = idle_ticks.saturating_mul(1_000_000) / clock_ticks_per_second();
        let had_us = cpus.saturating_mul(since_boot_us());
        Ok(Self {
            machine_us: had_us.saturating_sub(idle_us),
            client_us: own_cpu_us()?,
        })
    }
}

/// The number of online CPUs and their idle + iowait time (the `cpu` line) in ticks.
fn idle_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [_user, _nice, _system, idle, iowait, ..] = ticks[..] else {
        return None;
    };
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    (cpus > 0).then_some((cpus, idle + iowait))
}

/// Microseconds since boot (CLOCK_BOOTTIME, the clock /proc/stat's times run on).
fn since_boot_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_BOOTTIME exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000
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
    fn idle_ticks_count_idle_and_iowait_and_the_cpus() {
        let stat = "cpu  4705 150 1120 16250 520 30 25 5 0 0\n\
                    cpu0 2352 75 560 8125 260 15 12 2 0 0\n\
                    cpu1 2353 75 560 8125 260 15 13 3 0 0\n\
                    intr 12345 0 0\n";
        assert_eq!(idle_ticks(stat), Some((2, 16250 + 520)));
        assert_eq!(idle_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(idle_ticks("cpu  1 2 3 4\n"), None);
        assert_eq!(idle_ticks("cpu  1 2 x 4 5 6 7 8\n"), None);
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
