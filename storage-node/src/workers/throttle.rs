//! A device's byte budget: the workers of one device together read at most `bytes_per_sec`
//! to move and rebuild fragments, so that foreground requests keep the disk.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The most a burst may run ahead of the rate: one second's worth.
const BURST: Duration = Duration::from_secs(1);

/// A token bucket shared by a device's workers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Throttle {
    bytes_per_sec: u64,
    /// When the bytes granted so far are paid for.
    paid_until: Arc<Mutex<Instant>>,
}

impl Throttle {
    /// A budget of `bytes_per_sec` (0: unlimited).
    #[must_use]
    pub fn new(bytes_per_sec: u64) -> Self {
        Throttle {
            bytes_per_sec,
            paid_until: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Waits until `bytes` more may be read.
    pub async fn take(&self, bytes: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let wait = {
            let mut paid = self.paid_until.lock().await;
            reserve(&mut paid, Instant::now(), bytes, self.bytes_per_sec)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Books `bytes` at `rate` on a budget paid until `paid`; returns how long the caller waits.
/// Idle time earns at most [`BURST`] of credit.
fn reserve(paid: &mut Instant, now: Instant, bytes: u64, rate: u64) -> Duration {
    let cost = Duration::from_secs_f64(bytes as f64 / rate as f64);
    let start = (*paid).max(now.checked_sub(BURST).unwrap_or(now));
    *paid = start + cost;
    paid.saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_holds_the_rate_after_one_burst_of_credit() {
        let t0 = Instant::now();
        let mut paid = t0;
        let now = t0 + Duration::from_secs(10); // idle for long: one second of credit
        let waits: Vec<Duration> = (0..5)
            .map(|_| reserve(&mut paid, now, 1 << 20, 1 << 20))
            .collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert_eq!(waits[4], Duration::from_secs(4));
    }

    #[tokio::test]
    async fn zero_is_unlimited() {
        let throttle = Throttle::new(0);
        let started = Instant::now();
        throttle.take(u64::MAX).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
