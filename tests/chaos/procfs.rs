//! What `/proc` tells of a process: its environment, its arguments, the
//! files with an `flock` on them, the master's resident memory and
//! descriptors.

use std::collections::HashSet;

/// A worker's `/proc` facts that decide whether it is healthy.
pub(super) fn read_proc_file(pid: i32, what: &str) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/{what}")).ok()
}

pub(super) fn env_var(pid: i32, key: &str) -> Option<String> {
    let environ = read_proc_file(pid, "environ")?;
    let prefix = format!("{key}=");
    environ.split(|&b| b == 0).find_map(|var| {
        var.strip_prefix(prefix.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

pub(super) fn last_arg(pid: i32) -> Option<String> {
    let cmdline = read_proc_file(pid, "cmdline")?;
    cmdline
        .split(|&b| b == 0)
        .rfind(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
}

/// (device, inode) of every file with an `flock` on it.
pub(super) fn flocked() -> HashSet<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("FLOCK") && !l.contains("->"))
        .filter_map(|l| {
            // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:567 0 EOF"
            let id = l.split_whitespace().nth(5)?;
            let mut parts = id.split(':');
            let major = u64::from_str_radix(parts.next()?, 16).ok()?;
            let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
            let ino = parts.next()?.parse().ok()?;
            Some((major, minor, ino))
        })
        .map(|(major, minor, ino)| (encode_dev(major, minor), ino))
        .collect()
}

/// glibc's `makedev`.
fn encode_dev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

pub(super) fn master_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub(super) fn master_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
