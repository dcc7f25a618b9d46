//! The scenarios: each a fault schedule drawn from a seed. Faults start after a quiet lead
//! and end before a quiet tail of the run, so each run also shows the cluster before and
//! after; at most two storage nodes are affected at once (an `ec4+2` or `rep3` object
//! survives any two).

use std::time::Duration;

use anyhow::{Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{DEVICES, META_MEMBERS};
use crate::faults::Fault;

/// Every scenario, in the order `all` runs them.
pub const SCENARIOS: [&str; 12] = [
    "node-crash",
    "proxy-crash",
    "leader-crash",
    "hung-node",
    "partition",
    "meta-minority",
    "slow-link",
    "bitrot",
    "wiped-device",
    "full-device",
    "ring-change",
    "mixed",
];

/// One fault of a schedule.
#[derive(Clone, Debug)]
pub struct Step {
    /// When it starts, from the start of the run.
    pub at: Duration,
    /// How long it lasts before it is undone.
    pub hold: Duration,
    /// The fault.
    pub fault: Fault,
}

/// The shape of the cluster a schedule is drawn for.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Nodes in the rings.
    pub nodes: u16,
    /// Proxies.
    pub proxies: u16,
}

/// The schedule of scenario `name` for a run of `duration`, drawn from `seed`.
///
/// # Errors
/// An unknown scenario.
pub fn schedule(name: &str, seed: u64, duration: Duration, shape: Shape) -> Result<Vec<Step>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let lead = (duration / 10).max(Duration::from_secs(1));
    let end = duration.saturating_sub((duration / 5).max(Duration::from_secs(2)));
    let node = |rng: &mut StdRng| rng.random_range(1..=shape.nodes);
    let steps = match name {
        "node-crash" => track(&mut rng, lead, end, |r| Fault::KillNode(node(r))),
        "proxy-crash" => track(&mut rng, lead, end, |r| {
            Fault::KillProxy(r.random_range(1..=shape.proxies))
        }),
        "leader-crash" => track(&mut rng, lead, end, |_| Fault::KillLeader),
        "hung-node" => track(&mut rng, lead, end, |r| Fault::HangNode(node(r))),
        "partition" => track(&mut rng, lead, end, |r| Fault::Partition(vec![node(r)])),
        "meta-minority" => track(&mut rng, lead, end, |r| {
            let a = r.random_range(1..=META_MEMBERS);
            let b = loop {
                let b = r.random_range(1..=META_MEMBERS);
                if b != a {
                    break b;
                }
            };
            Fault::Partition(vec![a, b])
        }),
        "slow-link" => track(&mut rng, lead, end, |r| {
            Fault::SlowLink(node(r), r.random_range(2_000..=8_000))
        }),
        "bitrot" => track(&mut rng, lead, end, |r| {
            Fault::FlipBytes(r.random_range(2..=6))
        }),
        "wiped-device" => {
            let i = node(&mut rng);
            let device = DEVICES[rng.random_range(0..DEVICES.len())];
            vec![Step {
                at: lead + (end.saturating_sub(lead)) / 2,
                hold: Duration::ZERO,
                fault: Fault::WipeDevice(i, device),
            }]
        }
        "full-device" => track(&mut rng, lead, end, |_| Fault::FillDevice),
        "ring-change" => {
            let spare = shape.nodes + 1;
            let span = end.saturating_sub(lead);
            vec![
                Step {
                    at: lead,
                    hold: Duration::ZERO,
                    fault: Fault::AddNode(spare),
                },
                Step {
                    at: lead + span / 2,
                    hold: Duration::ZERO,
                    fault: Fault::RemoveNode(spare),
                },
            ]
        }
        "mixed" => {
            let pick = |r: &mut StdRng| match r.random_range(0..6) {
                0 => Fault::KillNode(node(r)),
                1 => Fault::HangNode(node(r)),
                2 => Fault::Partition(vec![node(r)]),
                3 => Fault::SlowLink(node(r), r.random_range(2_000..=8_000)),
                4 => Fault::KillProxy(r.random_range(1..=shape.proxies)),
                _ => Fault::KillLeader,
            };
            // Two tracks at once: at most two nodes down, hung or cut off together.
            let mut steps = track(&mut rng, lead, end, pick);
            steps.extend(track(&mut rng, lead + Duration::from_secs(1), end, pick));
            steps.sort_by_key(|s| s.at);
            steps
        }
        _ => bail!(
            "no scenario {name:?}; there are: all, {}",
            SCENARIOS.join(", ")
        ),
    };
    Ok(steps)
}

/// A sequence of faults from `lead` to `end`, one at a time: each held 2–8 s (less on
/// short runs), then 1–4 s without.
fn track(
    rng: &mut StdRng,
    lead: Duration,
    end: Duration,
    mut fault: impl FnMut(&mut StdRng) -> Fault,
) -> Vec<Step> {
    let span = end.saturating_sub(lead).as_millis() as u64;
    let hold_max = (span / 2).clamp(1_000, 8_000);
    let mut steps = Vec::new();
    let mut at = lead;
    while at < end {
        let hold = Duration::from_millis(rng.random_range(hold_max / 4..=hold_max));
        let hold = hold.min(end.saturating_sub(at));
        steps.push(Step {
            at,
            hold,
            fault: fault(rng),
        });
        at += hold + Duration::from_millis(rng.random_range(1_000..=4_000));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        nodes: 6,
        proxies: 2,
    };

    #[test]
    fn schedules_are_reproducible_and_stay_inside_the_run() {
        for name in SCENARIOS {
            let a = schedule(name, 42, Duration::from_secs(60), SHAPE).unwrap();
            let b = schedule(name, 42, Duration::from_secs(60), SHAPE).unwrap();
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{name}");
            assert!(!a.is_empty(), "{name} has faults");
            for step in &a {
                assert!(
                    step.at + step.hold <= Duration::from_secs(60),
                    "{name}: {step:?}"
                );
            }
        }
        assert!(schedule("nothing", 1, Duration::from_secs(10), SHAPE).is_err());
    }

    #[test]
    fn one_track_never_overlaps_itself() {
        let steps = schedule("node-crash", 7, Duration::from_secs(300), SHAPE).unwrap();
        for pair in steps.windows(2) {
            assert!(pair[0].at + pair[0].hold < pair[1].at);
        }
    }
}
