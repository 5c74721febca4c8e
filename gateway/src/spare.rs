//! The idle time of the cores this process may run on, from `/proc/stat`: whether a busy serving
//! thread gains anything by handing connections to another (`balance.rs`).
//!
//! A second serving thread only adds CPU where a core has idle time to give it. Where the other
//! cores are taken by another busy process — a load generator on the same machine, a neighbour —
//! the two threads and that process take turns on the cores the process had: the gateway then
//! spends more CPU per request (each thread wakes more often for fewer requests, and waits for the
//! scheduler), and the other process has less. So a busy thread hands connections over only once
//! the cores it may run on have been idle for `server.idle_to_move` of a core (over at least
//! [`MEASURE`]). Where `/proc/stat` cannot be read, the idle time is unknown and connections
//! move as the loads alone say.

use std::time::{Duration, Instant};

/// The shortest span the idle time is measured over: `/proc/stat` counts in clock ticks (10 ms).
pub(crate) const MEASURE: Duration = Duration::from_millis(200);

/// A mark older than this is not measured from: the loads it went with are long gone.
const STALE: Duration = Duration::from_millis(1000);

/// What a measure of the idle time found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Not yet: measured from now on, for at least [`MEASURE`].
    Measuring,
    /// Per mille of a core, over the cores this process may run on, since the last measure.
    Cores(u32),
    /// `/proc/stat` cannot be read here.
    Unknown,
}

/// A serving thread's measure of the idle time of the process's cores.
pub(crate) struct SpareMeter {
    /// The CPUs this process may run on; `None`: all of them (`/proc/stat`'s sum line).
    cpus: Option<Vec<usize>>,
    /// One of `/proc/stat`'s clock ticks.
    tick: Duration,
    /// When the measure started, and the idle ticks then.
    mark: Option<(Instant, u64)>,
}

impl SpareMeter {
    /// A meter of the cores this process may run on (its CPU affinity, as of now).
    pub(crate) fn new() -> Self {
        let hertz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|hz| *hz > 0);
        let tick = Duration::from_secs(1) / u32::try_from(hertz.unwrap_or(100)).unwrap_or(100);
        Self { cpus: allowed_cpus(), tick, mark: None }
    }

    /// The idle time since the last measure, once at least [`MEASURE`] has passed since it.
    pub(crate) fn measure(&mut self, now: Instant) -> Idle {
        // Read only where a measure starts or ends (`/proc/stat` is long on a large machine).
        let mark = self.mark.filter(|(at, _)| now.saturating_duration_since(*at) <= STALE);
        if mark.is_some_and(|(at, _)| now.saturating_duration_since(at) < MEASURE) {
            return Idle::Measuring;
        }
        let Some(idle) =
            std::fs::read_to_string("/proc/stat").ok().and_then(|stat| idle_ticks(&stat, self.cpus.as_deref()))
        else {
            return Idle::Unknown;
        };
        self.mark = Some((now, idle));
        let Some((at, before)) = mark else { return Idle::Measuring };
        let span = now.saturating_duration_since(at);
        let idle_time = self.tick.saturating_mul(u32::try_from(idle.saturating_sub(before)).unwrap_or(u32::MAX));
        Idle::Cores(u32::try_from(idle_time.as_micros() * 1000 / span.as_micros().max(1)).unwrap_or(u32::MAX))
    }

    /// The next measure starts afresh.
    pub(crate) fn forget(&mut self) {
        self.mark = None;
    }
}

/// The CPUs this process may run on, if it could be asked.
fn allowed_cpus() -> Option<Vec<usize>> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    Some((0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

/// The idle ticks (idle and waiting for I/O) of `cpus` (all: the sum line) in `/proc/stat`'s text.
fn idle_ticks(stat: &str, cpus: Option<&[usize]>) -> Option<u64> {
    let idle_of = |fields: &mut std::str::SplitAsciiWhitespace<'_>| -> Option<u64> {
        // user nice system idle iowait …
        let idle = fields.nth(3)?.parse::<u64>().ok()?;
        Some(idle + fields.next()?.parse::<u64>().ok()?)
    };
    let mut lines = stat.lines().filter(|line| line.starts_with("cpu"));
    let Some(cpus) = cpus else {
        let mut fields = lines.next()?.split_ascii_whitespace();
        return (fields.next()? == "cpu").then(|| idle_of(&mut fields)).flatten();
    };
    let mut total = 0;
    let mut found = 0;
    for line in lines {
        let mut fields = line.split_ascii_whitespace();
        let Some(cpu) = fields.next().and_then(|name| name.strip_prefix("cpu")).and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if cpus.contains(&cpu) {
            total += idle_of(&mut fields)?;
            found += 1;
        }
    }
    (found > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  942696 0 226167 1228495 3327 0 80939 998 0 0\n\
                        cpu0 471348 0 113083 614247 1663 0 40469 499 0 0\n\
                        cpu1 471348 0 113084 614248 1664 0 40470 499 0 0\n\
                        intr 1 2 3\nctxt 123\n";

    #[test]
    fn idle_ticks_are_idle_and_iowait_of_the_cpus_asked_for() {
        assert_eq!(idle_ticks(STAT, None), Some(1_228_495 + 3_327), "the sum line");
        assert_eq!(idle_ticks(STAT, Some(&[1])), Some(614_248 + 1_664));
        assert_eq!(idle_ticks(STAT, Some(&[0, 1])), Some(614_247 + 1_663 + 614_248 + 1_664));
        assert_eq!(idle_ticks(STAT, Some(&[7])), None, "none of them listed");
        assert_eq!(idle_ticks("intr 1 2\n", None), None);
        assert_eq!(idle_ticks("cpu  1 2 3\n", None), None, "too few fields");
    }

    /// On Linux the meter reads this machine's `/proc/stat`: a first measure starts, one within
    /// [`MEASURE`] is still measuring, one after it answers (at most every allowed CPU's time).
    #[test]
    fn a_measure_answers_after_its_span() {
        let mut meter = SpareMeter::new();
        let start = Instant::now();
        if meter.measure(start) == Idle::Unknown {
            return; // no /proc/stat here
        }
        assert_eq!(meter.measure(start + MEASURE / 2), Idle::Measuring);
        std::thread::sleep(MEASURE);
        let cpus = meter.cpus.as_ref().map_or(1, Vec::len).max(1) as u32;
        match meter.measure(Instant::now()) {
            // A tick's rounding may add one tick per CPU to the span's worth.
            Idle::Cores(idle) => assert!(idle <= cpus * 1000 + cpus * 100, "{idle} per mille of {cpus} cores"),
            other => panic!("a measure after {MEASURE:?}: {other:?}"),
        }
        meter.forget();
        assert_eq!(meter.measure(Instant::now()), Idle::Measuring, "forgotten: measured afresh");
        assert_eq!(meter.measure(Instant::now() + STALE + MEASURE), Idle::Measuring, "a stale mark: afresh");
    }
}
