//! Pinning: the load generator on its own cores, the servers under test on the others, so that
//! the generator's CPU (about 30 µs a request) is not shared with the server it measures and
//! every ratio is not pulled toward 1 (issue #23).
//!
//! Linux only, through `sched_setaffinity`, which sets one thread's cores. The benchmark's
//! threads inherit the main thread's set, taken before the runtime starts; a server inherits
//! the set of the thread that spawns it, which [`Plan::spawn_on_server_cores`] sets for the
//! spawn only. With fewer than two cores there is nothing to split and nothing is pinned.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Which cores the load generator and the servers run on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Plan {
    /// The load generator's cores.
    pub(crate) load: Vec<usize>,
    /// The servers' cores.
    pub(crate) servers: Vec<usize>,
}

impl Plan {
    /// Splits `available` cores: the first half (at least one) for the load generator, the
    /// rest for the servers. `None` with fewer than two.
    pub(crate) fn split(available: &[usize]) -> Option<Self> {
        if available.len() < 2 {
            return None;
        }
        let (load, servers) = available.split_at(available.len() / 2);
        Some(Self {
            load: load.to_vec(),
            servers: servers.to_vec(),
        })
    }

    /// The plan for this process's cores, with the calling thread (call it first thing in
    /// `main`, before any thread starts) moved to the load generator's. `None` when there is
    /// nothing to split or the cores cannot be read or set; the benchmark then runs unpinned.
    pub(crate) fn apply() -> Option<Self> {
        let current = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let available: Vec<usize> = (0..CpuSet::count())
            .filter(|&cpu| current.is_set(cpu).unwrap_or(false))
            .collect();
        let plan = Self::split(&available)?;
        set_current(&plan.load).ok()?;
        Some(plan)
    }

    /// Runs `spawn` (which starts a server process) on the servers' cores, so that the process
    /// and every thread it starts run there; the calling thread is back on the load
    /// generator's cores afterwards.
    pub(crate) fn spawn_on_server_cores<T>(&self, spawn: impl FnOnce() -> T) -> T {
        // Should it fail, the server runs where the generator does: slower, never wrong.
        let moved = set_current(&self.servers).is_ok();
        let spawned = spawn();
        if moved {
            let _ = set_current(&self.load);
        }
        spawned
    }
}

/// Runs `spawn` on the servers' cores when there is a plan, as is otherwise.
pub(crate) fn spawn_pinned<T>(plan: Option<&Plan>, spawn: impl FnOnce() -> T) -> T {
    match plan {
        Some(plan) => plan.spawn_on_server_cores(spawn),
        None => spawn(),
    }
}

fn set_current(cpus: &[usize]) -> nix::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// The CPU time (user + system, every thread's, in microseconds) process `pid` has used, from
/// `/proc/<pid>/stat`; `None` when it cannot be read.
pub(crate) fn cpu_time_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks * (1_000_000 / USER_HZ))
}

/// Clock ticks per second in `/proc`'s figures: `USER_HZ`, 100 on every Linux ABI.
const USER_HZ: u64 = 100;

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are counted from the last
/// `)`: `utime` and `stime` are the 14th and 15th fields, the 12th and 13th after it.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_cores_give_one_each_and_one_core_pins_nothing() {
        assert_eq!(
            Plan::split(&[0, 1]),
            Some(Plan {
                load: vec![0],
                servers: vec![1]
            })
        );
        assert_eq!(
            Plan::split(&[2, 3, 5, 7, 9]),
            Some(Plan {
                load: vec![2, 3],
                servers: vec![5, 7, 9]
            })
        );
        assert_eq!(Plan::split(&[0]), None);
        assert_eq!(Plan::split(&[]), None);
    }

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1180 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_cpu_time_moves_as_it_works() {
        let pid = std::process::id();
        let start = cpu_time_us(pid).expect("its own /proc/<pid>/stat");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spin = 0u64;
        while cpu_time_us(pid) == Some(start) {
            assert!(std::time::Instant::now() < deadline, "no CPU time counted");
            spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_time_us(pid).unwrap() > start);
    }
}
