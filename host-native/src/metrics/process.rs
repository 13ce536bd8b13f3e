//! What the node's process uses, read from `/proc/self` when the metrics are rendered (Linux; the
//! readers answer `None` elsewhere).

use std::path::Path;

/// Clock ticks per second of the times in `/proc/self/stat` (`USER_HZ`): 100 on every Linux
/// architecture the kernel's ABI fixes it for (x86, arm, riscv, ...).
const USER_HZ: f64 = 100.0;

/// The process's resident set size, from `VmRSS` in `/proc/self/status` (in kB there, whatever
/// the page size); `None` without `/proc` (not Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// CPU time the process has used, user and system, in seconds (`utime` + `stime` of
/// `/proc/self/stat`); `None` without `/proc`.
pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_from_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// `utime` + `stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields are counted from the last `)`.
fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state (field 3), ..., utime (field 14), stime (field 15).
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// File descriptors the process has open (entries of `/proc/self/fd`); `None` without `/proc`.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// The size of a file in bytes; `None` when it cannot be read.
pub fn file_bytes(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "1234 (ringkv (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_from_stat(stat), Some(3.0));
        assert_eq!(cpu_seconds_from_stat("1234 (ringkv) S 1"), None);
        assert_eq!(cpu_seconds_from_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_used_memory_cpu_and_descriptors() {
        if cfg!(target_os = "linux") {
            assert!(resident_memory_bytes().is_some_and(|b| b >= 1 << 20));
            assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
            assert!(open_fds().is_some_and(|n| n >= 3));
        }
    }
}
