//! `[engine]`: cores to run reactors on, data directory, durability, mesh channel size, and the
//! core layout (which CPUs are online and usable by this process).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::error::{ConfigError, ConfigErrorKind};

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// CPUs to run one reactor each on. Default [`Cores::All`].
    pub cores: Cores,
    /// Where WAL segments and other state live. Default `./shardtel-data`.
    pub data_dir: PathBuf,
    /// When a client is acknowledged. Default [`Durability::AckAfterSync`].
    pub durability: Durability,
    /// `[engine.wal]`: write-ahead log settings.
    pub wal: crate::wal::WalConfig,
    /// Slots of each mesh channel between a pair of cores. Default 1024.
    pub channel_capacity: usize,
    /// How long a graceful shutdown may take to drain before it gives up. Default 10s.
    pub shutdown_timeout: Duration,
}

impl EngineConfig {
    /// The keys `[engine]` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "cores",
        "data_dir",
        "durability",
        "channel_capacity",
        "shutdown_timeout",
        "wal",
    ];
    /// Largest accepted `channel_capacity`.
    pub const MAX_CHANNEL_CAPACITY: usize = 1 << 20;
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cores: Cores::All,
            data_dir: PathBuf::from("./shardtel-data"),
            durability: Durability::AckAfterSync,
            wal: crate::wal::WalConfig::default(),
            channel_capacity: 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Which CPUs run reactors: `cores = "all"`, `cores = [0, 1]` or `cores = "0-3,6"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// Every CPU that is online and in this process's affinity mask.
    All,
    /// These CPU ids, in this order (reactor `i` runs on `List[i]`).
    List(Vec<usize>),
}

impl Cores {
    /// The CPU ids to pin reactors to, checked against this machine ([`usable_cpus`]).
    ///
    /// Errors name the key `engine.cores`: an empty list, a CPU listed twice, or a CPU that is
    /// not online or not allowed for this process.
    pub fn resolve(&self) -> Result<Vec<usize>, ConfigError> {
        self.resolve_against(&usable_cpus())
    }

    /// Like [`Cores::resolve`], against an explicit set of usable CPUs.
    pub fn resolve_against(&self, usable: &[usize]) -> Result<Vec<usize>, ConfigError> {
        match self.problems(usable).into_iter().next() {
            Some(kind) => Err(ConfigError::new("engine.cores", kind)),
            None => Ok(match self {
                Cores::All => usable.to_vec(),
                Cores::List(cpus) => cpus.clone(),
            }),
        }
    }

    /// Every problem with this setting on a machine where `usable` CPUs are usable.
    pub(crate) fn problems(&self, usable: &[usize]) -> Vec<ConfigErrorKind> {
        let cpus = match self {
            Cores::All if usable.is_empty() => return vec![ConfigErrorKind::EmptyCpuList],
            Cores::All => return Vec::new(),
            Cores::List(cpus) if cpus.is_empty() => return vec![ConfigErrorKind::EmptyCpuList],
            Cores::List(cpus) => cpus,
        };
        let mut problems = Vec::new();
        for (i, &cpu) in cpus.iter().enumerate() {
            if cpus[..i].contains(&cpu) {
                if !cpus[..i].iter().any(|c| *c == cpu && !usable.contains(c)) {
                    problems.push(ConfigErrorKind::DuplicateCpu { cpu });
                }
            } else if !usable.contains(&cpu) {
                problems.push(ConfigErrorKind::CpuUnavailable {
                    cpu,
                    usable: format_cpu_list(usable),
                });
            }
        }
        problems
    }
}

impl fmt::Display for Cores {
    /// `all`, or the cpu list like `0-3,6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cores::All => f.write_str("all"),
            Cores::List(cpus) => f.write_str(&format_cpu_list(cpus)),
        }
    }
}

/// When a client's request is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `"ack_after_sync"` (the default): only once the request is in the receiving core's
    /// ingest log on disk (written and fdatasync'ed); export queues are on disk too.
    AckAfterSync,
    /// `"none"`: acknowledge on receipt; data in memory is lost on a crash.
    None,
}

impl fmt::Display for Durability {
    /// The config value: `ack_after_sync` or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::AckAfterSync => "ack_after_sync",
            Durability::None => "none",
        })
    }
}

/// The CPUs this process may run reactors on: online CPUs (`/sys/devices/system/cpu/online`)
/// that are in the process's affinity mask (`Cpus_allowed_list` in `/proc/self/status`, which
/// reflects `sched_getaffinity`, taskset and cgroup cpusets). Falls back to
/// `0..available_parallelism()` where neither file can be read. Never empty.
pub fn usable_cpus() -> Vec<usize> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| parse_cpu_list(text.trim()));
    let allowed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_cpu_list(list.trim()))
        });
    let cpus = match (online, allowed) {
        (Some(online), Some(allowed)) => {
            let both: Vec<usize> = online
                .iter()
                .copied()
                .filter(|c| allowed.contains(c))
                .collect();
            if both.is_empty() {
                online
            } else {
                both
            }
        }
        (Some(cpus), None) | (None, Some(cpus)) => cpus,
        (None, None) => Vec::new(),
    };
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    } else {
        cpus
    }
}

/// Parses the kernel's cpu list format: `"0-3,6,8-9"`. `None` if malformed or empty.
///
/// ```
/// assert_eq!(shardtel_config::parse_cpu_list("0-2,5"), Some(vec![0, 1, 2, 5]));
/// ```
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((first, last)) => {
                let first: usize = first.trim().parse().ok()?;
                let last: usize = last.trim().parse().ok()?;
                if first > last || last - first > 65_536 {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// Formats CPU ids in the kernel's cpu list format, e.g. `[0, 1, 2, 5]` as `"0-2,5"`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", cpus[i], cpus[j])
        } else {
            cpus[i].to_string()
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(",")
    }
}

pub(crate) fn decode(d: &mut Decoder<'_>, root: &Section<'_, '_>) -> EngineConfig {
    let s = d.section(root, "engine", EngineConfig::KEYS);
    let default = EngineConfig::default();
    let cores = match s.get("cores") {
        Some(value) => decode_cores(d, s.key("cores"), value).unwrap_or(default.cores),
        None => default.cores,
    };
    EngineConfig {
        cores,
        data_dir: d.field_or(&s, "data_dir", default.data_dir, decode::path),
        durability: d.field_or(&s, "durability", default.durability, |v| {
            Ok(match decode::one_of(v, &["ack_after_sync", "none"])? {
                "ack_after_sync" => Durability::AckAfterSync,
                _ => Durability::None,
            })
        }),
        wal: crate::wal::decode(d, &s),
        channel_capacity: d.field_or(&s, "channel_capacity", default.channel_capacity, |v| {
            let n = decode::count(v, u64::MAX)?;
            Ok(decode::in_range(n, 1, EngineConfig::MAX_CHANNEL_CAPACITY as u64)? as usize)
        }),
        shutdown_timeout: d.field_or(
            &s,
            "shutdown_timeout",
            default.shutdown_timeout,
            decode::duration,
        ),
    }
}

fn decode_cores(d: &mut Decoder<'_>, path: String, value: &decode::Value<'_>) -> Option<Cores> {
    const EXPECTED: &str = "\"all\", a cpu list like \"0-3\", or an array of cpu ids like [0, 1]";
    match value.get_ref() {
        DeValue::String(s) if s == "all" => d.value(path, value, |_| Ok(Cores::All)),
        DeValue::String(s) => d.value(path, value, |_| {
            parse_cpu_list(s)
                .map(Cores::List)
                .ok_or_else(|| ConfigErrorKind::InvalidCpuList {
                    value: s.to_string(),
                })
        }),
        DeValue::Array(array) => {
            let mut cpus = Vec::new();
            let mut ok = true;
            for (i, element) in array.iter().enumerate() {
                match d.value(format!("{path}[{i}]"), element, |v| {
                    decode::count(v, 65_535).map_err(|_| ConfigErrorKind::WrongType {
                        expected: "a cpu id (a non-negative integer)",
                        found: decode::describe(v),
                    })
                }) {
                    Some(cpu) => cpus.push(cpu as usize),
                    None => ok = false,
                }
            }
            if ok {
                d.value(path, value, |_| Ok(Cores::List(cpus)))
            } else {
                None
            }
        }
        other => {
            let found = decode::describe(other);
            d.value(path, value, |_| {
                Err(ConfigErrorKind::WrongType {
                    expected: EXPECTED,
                    found,
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(parse_cpu_list(" 1 , 2 "), Some(vec![1, 2]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(parse_cpu_list("0-"), None);
        assert_eq!(format_cpu_list(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(format_cpu_list(&[3]), "3");
        assert_eq!(format_cpu_list(&[0, 2, 4]), "0,2,4");
        assert_eq!(format_cpu_list(&[]), "none");
        assert_eq!(Cores::List(vec![0, 1, 2, 7]).to_string(), "0-2,7");
        assert_eq!(Cores::All.to_string(), "all");
        assert_eq!(Durability::AckAfterSync.to_string(), "ack_after_sync");
    }

    #[test]
    fn usable_cpus_matches_this_machine() {
        let cpus = usable_cpus();
        assert!(!cpus.is_empty());
        let parallelism = std::thread::available_parallelism().unwrap().get();
        // available_parallelism honours the affinity mask (and cgroup quotas, which can only
        // make it smaller).
        assert!(cpus.len() >= parallelism, "{cpus:?} vs {parallelism}");
        assert_eq!(Cores::All.resolve().unwrap(), cpus);
        assert_eq!(Cores::List(vec![cpus[0]]).resolve().unwrap(), vec![cpus[0]]);
    }

    #[test]
    fn resolve_against_reports_problems() {
        let usable = [0, 1, 2, 3];
        assert_eq!(
            Cores::All.resolve_against(&usable).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            Cores::List(vec![3, 1]).resolve_against(&usable).unwrap(),
            vec![3, 1]
        );
        let err = |cores: Cores| cores.resolve_against(&usable).unwrap_err().to_string();
        assert_eq!(
            err(Cores::List(vec![0, 7])),
            "engine.cores: cpu 7 is not online or not available to this process (usable cpus: 0-3)"
        );
        assert_eq!(
            err(Cores::List(vec![1, 2, 1])),
            "engine.cores: cpu 1 is listed twice"
        );
        assert_eq!(
            err(Cores::List(vec![])),
            "engine.cores: empty cpu list (use \"all\" or cpu ids like [0, 1])"
        );
        // A missing cpu listed twice is reported once.
        assert_eq!(Cores::List(vec![9, 9, 8]).problems(&usable).len(), 2);
    }
}
