//! The open-file limit: every allocation holds a socket of its own, so the soft limit
//! is raised to the hard one at start, and a run that needs more is told so.

use std::io;

/// Descriptors the process needs besides the allocations' sockets (runtime, peer,
/// setup threads' borrowed sockets, standard streams).
const SPARE: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the warning to print when
/// even that is below what `allocations` sockets need.
pub fn raise_open_files(allocations: usize) -> Option<String> {
    let needed = allocations as u64 + SPARE;
    let limit = match raise() {
        Ok(limit) => limit,
        Err(e) => return Some(format!("cannot raise the open-file limit: {e}")),
    };
    (limit < needed).then(|| {
        format!(
            "the open-file limit is {limit}, {allocations} allocations need about {needed}: \
             allocations past it will fail with \"io\" (raise the hard limit, e.g. ulimit -Hn)"
        )
    })
}

/// The soft limit in force afterwards.
fn raise() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}
