//! What the kernel says about this process and machine, for INFO's CPU,
//! memory and server fields: CPU time, resident memory and its peak, the
//! machine's memory, the OS name and release.
//!
//! Everything comes from Linux's `/proc` (a file read and a parse, no
//! unsafe calls): `/proc/self/stat` for CPU time (the same totals Redis reads
//! with `getrusage`, in clock ticks), `/proc/self/status` for the resident
//! set and its high-water mark, `/proc/meminfo` for the machine's memory and
//! `/proc/sys/kernel` for what `uname` reports. Where `/proc` is missing
//! (another OS), each reading is `None` and INFO leaves its fields out
//! rather than report a number nobody measured. The parsers are pure and
//! tested on sample text.

use std::time::Duration;

/// CPU time used, as `getrusage(RUSAGE_SELF)` and
/// `getrusage(RUSAGE_CHILDREN)` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// `used_cpu_user`: all threads of this process, in user mode.
    pub user: Duration,
    /// `used_cpu_sys`: all threads of this process, in the kernel.
    pub system: Duration,
    /// `used_cpu_user_children`: waited-for children, in user mode.
    pub children_user: Duration,
    /// `used_cpu_sys_children`: waited-for children, in the kernel.
    pub children_system: Duration,
}

/// This process's CPU times, from `/proc/self/stat`.
#[must_use]
pub fn cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu(&stat, rustix::param::clock_ticks_per_second())
}

/// Fields 14 to 17 of `proc_pid_stat(5)` (utime, stime, cutime, cstime, in
/// clock ticks). The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the count starts after the last `)`.
fn parse_stat_cpu(stat: &str, ticks_per_second: u64) -> Option<CpuTimes> {
    if ticks_per_second == 0 {
        return None;
    }
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards.
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let mut next = || -> Option<Duration> {
        let ticks: u64 = fields.next()?.parse().ok()?;
        let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second);
        Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
    };
    Some(CpuTimes {
        user: next()?,
        system: next()?,
        children_user: next()?,
        children_system: next()?,
    })
}

/// Resident memory of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Bytes resident now (`VmRSS`).
    pub now: u64,
    /// The most bytes ever resident since the process started (`VmHWM`).
    pub peak: u64,
}

/// This process's resident memory, from `/proc/self/status`.
#[must_use]
pub fn resident() -> Option<Resident> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let now = kib_field(&status, "VmRSS:")?;
    // The kernel reports the high-water mark as at least the current size.
    let peak = kib_field(&status, "VmHWM:").map_or(now, |peak| peak.max(now));
    Some(Resident { now, peak })
}

/// The machine's physical memory in bytes (`MemTotal`, what Redis's
/// `total_system_memory` reads as `_SC_PHYS_PAGES` × page size).
#[must_use]
pub fn total_system_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&meminfo, "MemTotal:")
}

/// A `Name:   1234 kB` line of `/proc/self/status` or `/proc/meminfo`, in
/// bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix(name))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// `uname`'s system name and release (`Linux 6.1.0-13-amd64`), which Redis
/// prints in `os:` before the machine name.
#[must_use]
pub fn os_name_and_release() -> Option<String> {
    let read = |path| std::fs::read_to_string(path).ok();
    let name = read("/proc/sys/kernel/ostype")?;
    let release = read("/proc/sys/kernel/osrelease")?;
    Some(format!("{} {}", name.trim(), release.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_come_after_the_command_name() {
        // A command name with spaces and a ')' of its own.
        let stat = "4242 (rafti s) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 3 1 20 0 9 0 100 200000 300 18446744073709551615";
        let cpu = parse_stat_cpu(stat, 100).unwrap();
        assert_eq!(cpu.user, Duration::from_millis(2_500));
        assert_eq!(cpu.system, Duration::from_millis(750));
        assert_eq!(cpu.children_user, Duration::from_millis(30));
        assert_eq!(cpu.children_system, Duration::from_millis(10));
        assert_eq!(parse_stat_cpu(stat, 0), None);
        assert_eq!(parse_stat_cpu("4242 (raftis) S 1 2", 100), None);
    }

    #[test]
    fn kib_fields_are_bytes() {
        let status = "Name:\traftis\nVmHWM:\t   81920 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(40_960 * 1024));
        assert_eq!(kib_field(status, "VmHWM:"), Some(81_920 * 1024));
        assert_eq!(kib_field(status, "Threads:"), Some(9));
        assert_eq!(kib_field(status, "VmSwap:"), None);
        assert_eq!(kib_field("X:\t1 MB\n", "X:"), None);
    }

    #[test]
    fn this_process_reads_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        // CPU time moves while this thread spins (bounded by a deadline).
        let used = || {
            let cpu = cpu_times().expect("/proc/self/stat");
            cpu.user + cpu.system
        };
        let before = used();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut spins = 0u64;
        while used() == before {
            assert!(std::time::Instant::now() < deadline, "CPU time never moved");
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        let resident = resident().expect("/proc/self/status");
        assert!(resident.now > 0 && resident.peak >= resident.now);
        assert!(total_system_memory().expect("/proc/meminfo") >= resident.now);
        assert!(os_name_and_release()
            .expect("/proc/sys/kernel")
            .starts_with("Linux "));
    }
}
