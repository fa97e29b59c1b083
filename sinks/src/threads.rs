//! Threads that a library starts from a reactor thread.
//!
//! A new thread inherits its creator's CPU affinity. librdkafka starts its threads (`rdk:main`,
//! `rdk:broker*`: compression, protocol, network) from the thread that creates a producer or
//! consumer, and for the Kafka exporter and receiver that is a reactor pinned to one CPU: its
//! compression work would then compete with that reactor only, while other CPUs idle.
//! [`unpinned`] creates them with the process's CPU mask instead.

use nix::sched::{sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// Runs `f` with the calling thread allowed on every CPU the process may use (the main
/// thread's affinity: all online CPUs, or what `taskset` or a cgroup allows), then gives the
/// calling thread its own affinity back. Threads that `f` starts keep the wider mask, so the
/// kernel places them where there is room. If the affinity cannot be read or set, `f` runs
/// as it is.
pub fn unpinned<T>(f: impl FnOnce() -> T) -> T {
    let me = Pid::from_raw(0);
    let own = sched_getaffinity(me);
    let widened = match (&own, sched_getaffinity(Pid::this())) {
        (Ok(_), Ok(all)) => sched_setaffinity(me, &all).is_ok(),
        _ => false,
    };
    let out = f();
    if let (true, Ok(own)) = (widened, own) {
        let _ = sched_setaffinity(me, &own);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::CpuSet;

    #[test]
    fn threads_started_inside_get_the_process_mask_and_the_caller_keeps_its_own() {
        let all = sched_getaffinity(Pid::this()).unwrap();
        let Some(cpu) = (0..CpuSet::count()).find(|&c| all.is_set(c).unwrap_or(false)) else {
            return;
        };
        let mut one = CpuSet::new();
        one.set(cpu).unwrap();
        let pinned = std::thread::spawn(move || {
            sched_setaffinity(Pid::from_raw(0), &one).unwrap();
            let inner = unpinned(|| {
                std::thread::spawn(|| sched_getaffinity(Pid::from_raw(0)).unwrap())
                    .join()
                    .unwrap()
            });
            (inner, sched_getaffinity(Pid::from_raw(0)).unwrap())
        });
        let (inner, after) = pinned.join().unwrap();
        assert_eq!(
            inner, all,
            "a thread started inside gets the process's mask"
        );
        assert_eq!(after, one, "the caller is pinned again");
    }
}
