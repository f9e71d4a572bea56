//! CPU time and resident memory of processes, read from `/proc` (Linux).

use anyhow::Context;

/// Clock ticks per second of `/proc/*/stat` times; 100 on every Linux this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds consumed so far by all of `pids`.
pub fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter()
        .map(|pid| stat_cpu_seconds(&format!("/proc/{pid}/stat")))
        .sum()
}

/// User + system CPU seconds consumed so far by each of `pids` (those that can be read).
pub fn cpu_by_pid(pids: &[u32]) -> std::collections::HashMap<u32, f64> {
    pids.iter()
        .filter_map(|pid| Some((*pid, stat_cpu_seconds(&format!("/proc/{pid}/stat")).ok()?)))
        .collect()
}

/// CPU seconds `pids` consumed since `before` was read: a process started since (a database
/// connection the pool opened meanwhile) counts from zero, so none is left out.
pub fn cpu_since(before: &std::collections::HashMap<u32, f64>, pids: &[u32]) -> f64 {
    cpu_by_pid(pids)
        .into_iter()
        .map(|(pid, now)| now - before.get(&pid).copied().unwrap_or(0.0))
        .sum()
}

/// User + system CPU seconds consumed so far by this process (the benchmark's own client).
pub fn own_cpu_seconds() -> anyhow::Result<f64> {
    stat_cpu_seconds("/proc/self/stat")
}

fn stat_cpu_seconds(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name may contain spaces; the fields after its closing parenthesis are fixed.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no command name")?
        .1
        .split_whitespace()
        .collect();
    // `state` is field 3 of proc(5); utime and stime are fields 14 and 15.
    let ticks = |index: usize| -> anyhow::Result<f64> { Ok(fields.get(index).context("short stat")?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// Resident memory of all of `pids`, in KiB.
pub fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|pid| crate::rss_kib(*pid)).sum()
}

/// The processes of the benchmark's own services: the PostgreSQL whose data directory is `pg_data`
/// (its postmaster and every backend, i.e. its children) and the Redis listening on `redis_port`.
/// Best effort: a process that cannot be read is left out.
pub fn service_pids(pg_data: &str, redis_port: u16) -> Vec<u32> {
    let mut pids = Vec::new();
    let postmaster: Option<u32> = std::fs::read_to_string(format!("{pg_data}/postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    let redis_port = format!(":{redis_port}");
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let is_postgres = postmaster.is_some_and(|p| p == pid || parent == Some(p));
        let is_redis = cmdline.contains("redis-server") && cmdline.contains(&redis_port);
        if is_postgres || is_redis {
            pids.push(pid);
        }
    }
    pids
}
