//! The client's own CPU time, from `/proc/self/stat` (Linux; zero elsewhere).

/// Clock ticks per second of `/proc` times: `USER_HZ`, 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// User and system CPU seconds used by this process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User-mode seconds.
    pub user_secs: f64,
    /// Kernel-mode seconds.
    pub system_secs: f64,
}

impl CpuTimes {
    /// Reads this process's CPU times; zeros where `/proc` is not there.
    #[must_use]
    pub fn now() -> CpuTimes {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s))
            .unwrap_or_default()
    }
}

/// Parses utime and stime (fields 14 and 15) from a `/proc/PID/stat` line; the command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<CpuTimes> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field N is at index N - 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(CpuTimes {
        user_secs: utime / USER_HZ,
        system_secs: stime / USER_HZ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0";
        assert_eq!(
            parse_stat(line),
            Some(CpuTimes {
                user_secs: 2.5,
                system_secs: 0.75
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }
}
