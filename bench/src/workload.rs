//! What a run does, as values: the operation mix, object sizes, the key space and how keys
//! are drawn from it. Pure code: no I/O, and every random choice comes from a seeded
//! [`Rng`], so a run's sequence of choices depends on its seed only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::units::{format_size, parse_size};

/// A small, fast, seeded generator (SplitMix64): good enough to pick keys, sizes and
/// operations, and reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Returns a generator whose sequence depends on `seed` only.
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Returns a float uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Returns an integer uniform in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// SplitMix64's finalizer: a bijective scramble of 64 bits.
#[must_use]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// Upload a whole object in one request.
    Put,
    /// Download a whole object.
    Get,
    /// Download `--range-bytes` of an object at a random offset.
    GetRange,
    /// Read an object's metadata.
    Head,
    /// Delete an object.
    Delete,
    /// List one page of the run's keys.
    List,
    /// Upload an object in parts of `--part-size` (S3 multipart upload).
    Multipart,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 7] = [
        OpKind::Put,
        OpKind::Multipart,
        OpKind::Get,
        OpKind::GetRange,
        OpKind::Head,
        OpKind::Delete,
        OpKind::List,
    ];

    /// The name used on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::GetRange => "get-range",
            OpKind::Head => "head",
            OpKind::Delete => "delete",
            OpKind::List => "list",
            OpKind::Multipart => "multipart",
        }
    }

    /// Whether the operation reads objects that must exist beforehand (so a prepare
    /// phase uploads the data set first).
    #[must_use]
    pub fn reads_existing(self) -> bool {
        matches!(
            self,
            OpKind::Get | OpKind::GetRange | OpKind::Head | OpKind::Delete | OpKind::List
        )
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OpKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "put" => Ok(OpKind::Put),
            "get" => Ok(OpKind::Get),
            "get-range" | "range" | "rget" | "ranged-get" => Ok(OpKind::GetRange),
            "head" | "stat" => Ok(OpKind::Head),
            "delete" | "del" => Ok(OpKind::Delete),
            "list" => Ok(OpKind::List),
            "multipart" | "mpu" | "multipart-put" => Ok(OpKind::Multipart),
            other => Err(ParseError::Operation(other.to_owned())),
        }
    }
}

/// Operations with weights, e.g. `put=20,get=70,delete=10`; a single name is that
/// operation alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    /// Each operation with its weight (all weights > 0, no kind twice).
    pub weights: Vec<(OpKind, u32)>,
}

impl Mix {
    /// A mix of one operation.
    #[must_use]
    pub fn single(kind: OpKind) -> Mix {
        Mix {
            weights: vec![(kind, 1)],
        }
    }

    /// Draws an operation in proportion to the weights.
    pub fn sample(&self, rng: &mut Rng) -> OpKind {
        let total: u64 = self.weights.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut pick = rng.below(total);
        for (kind, weight) in &self.weights {
            if pick < u64::from(*weight) {
                return *kind;
            }
            pick -= u64::from(*weight);
        }
        // Unreachable with total > 0, which parsing guarantees; the last kind is a safe answer.
        self.weights.last().map_or(OpKind::Get, |(k, _)| *k)
    }

    /// Whether any operation of the mix needs the data set uploaded first.
    #[must_use]
    pub fn reads_existing(&self) -> bool {
        self.weights.iter().any(|(k, _)| k.reads_existing())
    }

    /// The operations of the mix.
    pub fn kinds(&self) -> impl Iterator<Item = OpKind> + '_ {
        self.weights.iter().map(|(k, _)| *k)
    }
}

impl FromStr for Mix {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ParseError::Weights {
            value: s.to_owned(),
            reason,
        };
        if s.trim().is_empty() {
            return Err(ParseError::Empty);
        }
        let mut weights: Vec<(OpKind, u32)> = Vec::new();
        for entry in s.split(',') {
            let (name, weight) = match entry.split_once(['=', ':']) {
                Some((name, weight)) => {
                    let weight = weight
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| ParseError::Number(weight.trim().to_owned()))?;
                    (name, weight)
                }
                None if !s.contains(',') => (entry, 1),
                None => return Err(bad("each entry needs a weight, as put=20")),
            };
            let kind: OpKind = name.parse()?;
            if weights.iter().any(|(k, _)| *k == kind) {
                return Err(bad("an operation appears twice"));
            }
            if weight > 0 {
                weights.push((kind, weight));
            }
        }
        if weights.is_empty() {
            return Err(bad("the weights add up to zero"));
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.weights.iter().map(|(_, w)| u64::from(*w)).sum();
        for (i, (kind, weight)) in self.weights.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if self.weights.len() == 1 {
                write!(f, "{kind}")?;
            } else {
                write!(
                    f,
                    "{kind}={:.0}%",
                    100.0 * f64::from(*weight) / total as f64
                )?;
            }
        }
        Ok(())
    }
}

/// Object sizes: fixed (`4KiB`), uniform over a range (`4KiB..1MiB`), or a weighted list
/// (`4KiB:70,1MiB:25,64MiB:5`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeSpec {
    /// Every object has this size.
    Fixed(u64),
    /// Uniform over `[min, max]` bytes.
    Uniform {
        /// Smallest size.
        min: u64,
        /// Largest size (inclusive).
        max: u64,
    },
    /// Each size with its weight.
    Weighted(Vec<(u64, u32)>),
}

impl SizeSpec {
    /// Draws a size.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            SizeSpec::Fixed(size) => *size,
            SizeSpec::Uniform { min, max } => min + rng.below(max - min + 1),
            SizeSpec::Weighted(list) => {
                let total: u64 = list.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut pick = rng.below(total);
                for (size, weight) in list {
                    if pick < u64::from(*weight) {
                        return *size;
                    }
                    pick -= u64::from(*weight);
                }
                list.last().map_or(0, |(s, _)| *s)
            }
        }
    }

    /// The mean object size, in bytes.
    #[must_use]
    pub fn mean(&self) -> f64 {
        match self {
            SizeSpec::Fixed(size) => *size as f64,
            SizeSpec::Uniform { min, max } => (*min as f64 + *max as f64) / 2.0,
            SizeSpec::Weighted(list) => {
                let total: f64 = list.iter().map(|(_, w)| f64::from(*w)).sum();
                list.iter()
                    .map(|(s, w)| *s as f64 * f64::from(*w))
                    .sum::<f64>()
                    / total
            }
        }
    }

    /// The largest size it can draw.
    #[must_use]
    pub fn max(&self) -> u64 {
        match self {
            SizeSpec::Fixed(size) => *size,
            SizeSpec::Uniform { max, .. } => *max,
            SizeSpec::Weighted(list) => list.iter().map(|(s, _)| *s).max().unwrap_or(0),
        }
    }
}

impl FromStr for SizeSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((min, max)) = s.split_once("..") {
            let (min, max) = (parse_size(min)?, parse_size(max)?);
            if min > max {
                return Err(ParseError::Range(s.to_owned()));
            }
            return Ok(SizeSpec::Uniform { min, max });
        }
        if !s.contains([',', ':']) {
            return Ok(SizeSpec::Fixed(parse_size(s)?));
        }
        let mut list = Vec::new();
        for entry in s.split(',') {
            let Some((size, weight)) = entry.split_once(':') else {
                return Err(ParseError::Weights {
                    value: s.to_owned(),
                    reason: "each entry needs a weight, as 4KiB:70",
                });
            };
            let weight = weight
                .trim()
                .parse::<u32>()
                .map_err(|_| ParseError::Number(weight.trim().to_owned()))?;
            if weight > 0 {
                list.push((parse_size(size)?, weight));
            }
        }
        if list.is_empty() {
            return Err(ParseError::Weights {
                value: s.to_owned(),
                reason: "the weights add up to zero",
            });
        }
        Ok(SizeSpec::Weighted(list))
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSpec::Fixed(size) => f.write_str(&format_size(*size)),
            SizeSpec::Uniform { min, max } => {
                write!(f, "{}..{}", format_size(*min), format_size(*max))
            }
            SizeSpec::Weighted(list) => {
                for (i, (size, weight)) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{weight}", format_size(*size))?;
                }
                Ok(())
            }
        }
    }
}

/// How keys are drawn from the key space of `n` objects.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Key `i` (from 0) with probability proportional to `1 / (i + 1)^s`.
    Zipf {
        /// The exponent, > 0.
        s: f64,
    },
}

/// A Zipf distribution over `1..=n` by rejection-inversion (Hörmann and Derflinger, 1996,
/// as `rand_distr::Zipf`): O(1) memory and time per draw whatever `n`.
#[derive(Debug, Clone, Copy)]
pub struct Zipf {
    s: f64,
    t: f64,
    q: f64,
}

impl Zipf {
    /// Returns the distribution over `1..=n` with exponent `s`, or `None` when `n` is 0
    /// or `s` is not a positive finite number.
    #[must_use]
    pub fn new(n: u64, s: f64) -> Option<Zipf> {
        if n == 0 || !s.is_finite() || s <= 0.0 {
            return None;
        }
        let n = n as f64;
        let (t, q) = if s == 1.0 {
            (1.0 + n.ln(), 0.0)
        } else {
            ((n.powf(1.0 - s) - s) / (1.0 - s), 1.0 / (1.0 - s))
        };
        Some(Zipf { s, t, q })
    }

    fn inv_cdf(&self, p: f64) -> f64 {
        let pt = p * self.t;
        if pt <= 1.0 {
            pt
        } else if self.s == 1.0 {
            (pt - 1.0).exp()
        } else {
            (pt * (1.0 - self.s) + self.s).powf(self.q)
        }
    }

    /// Draws a rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let inv_b = self.inv_cdf(rng.next_f64());
            let x = (inv_b + 1.0).floor();
            let mut ratio = x.powf(-self.s);
            if x > 1.0 {
                ratio *= inv_b.powf(self.s);
            }
            if rng.next_f64() < ratio {
                return x as u64;
            }
        }
    }
}

/// Draws key indexes in `0..objects` from a [`KeyDist`].
#[derive(Debug, Clone, Copy)]
pub struct KeySampler {
    objects: u64,
    zipf: Option<Zipf>,
}

impl KeySampler {
    /// Returns the sampler; a Zipf exponent that is not positive falls back to uniform
    /// (the command line refuses it before).
    #[must_use]
    pub fn new(objects: u64, dist: KeyDist) -> KeySampler {
        let zipf = match dist {
            KeyDist::Uniform => None,
            KeyDist::Zipf { s } => Zipf::new(objects, s),
        };
        KeySampler { objects, zipf }
    }

    /// Draws a key index.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match &self.zipf {
            Some(zipf) => (zipf.sample(rng) - 1).min(self.objects.saturating_sub(1)),
            None => rng.below(self.objects),
        }
    }
}

/// The object name of key `index` under `prefix`.
#[must_use]
pub fn key_name(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:010}")
}

/// The size of key `index`: fixed per key for a seed and size spec, so the prepare phase,
/// later PUTs and ranged GETs agree on it without shared state.
#[must_use]
pub fn key_size(sizes: &SizeSpec, seed: u64, index: u64) -> u64 {
    let mut rng = Rng::new(mix64(seed ^ mix64(index.wrapping_add(0x5151))));
    sizes.sample(&mut rng)
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mixes_parse_weights_and_single_names() {
        let mix: Mix = "put=20,get=70,delete=10".parse().unwrap();
        assert_eq!(
            mix.weights,
            vec![(OpKind::Put, 20), (OpKind::Get, 70), (OpKind::Delete, 10)]
        );
        assert_eq!(mix.to_string(), "put=20%,get=70%,delete=10%");
        assert_eq!("get".parse::<Mix>().unwrap(), Mix::single(OpKind::Get));
        assert_eq!(
            "get-range:1".parse::<Mix>().unwrap(),
            Mix::single(OpKind::GetRange)
        );
        assert!("put=1,put=2".parse::<Mix>().is_err());
        assert!("put=0,get=0".parse::<Mix>().is_err());
        assert!("put,get".parse::<Mix>().is_err());
        assert!("fly=3".parse::<Mix>().is_err());
        assert!("put=-3".parse::<Mix>().is_err());
        assert!("".parse::<Mix>().is_err());
    }

    #[test]
    fn size_specs_parse_fixed_ranges_and_lists() {
        assert_eq!("4KiB".parse(), Ok(SizeSpec::Fixed(4096)));
        assert_eq!(
            "4KiB..1MiB".parse(),
            Ok(SizeSpec::Uniform {
                min: 4096,
                max: 1 << 20
            })
        );
        assert_eq!(
            "4KiB:70,1MiB:30".parse(),
            Ok(SizeSpec::Weighted(vec![(4096, 70), (1 << 20, 30)]))
        );
        assert!("1MiB..4KiB".parse::<SizeSpec>().is_err());
        assert!("4KiB,1MiB".parse::<SizeSpec>().is_err());
    }

    #[test]
    fn zipf_favours_low_ranks_as_theory_says() {
        let n = 1000;
        let zipf = Zipf::new(n, 1.0).unwrap();
        let mut rng = Rng::new(42);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize + 1];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        for rank in [1usize, 2, 10] {
            let expected = draws as f64 / (rank as f64 * harmonic);
            let got = counts[rank] as f64;
            assert!(
                (got - expected).abs() < expected * 0.05,
                "rank {rank}: {got} draws, expected {expected}"
            );
        }
    }

    #[test]
    fn mix_draws_in_proportion() {
        let mix: Mix = "put=20,get=80".parse().unwrap();
        let mut rng = Rng::new(7);
        let puts = (0..100_000)
            .filter(|_| mix.sample(&mut rng) == OpKind::Put)
            .count();
        assert!((19_000..21_000).contains(&puts), "{puts} puts");
    }

    proptest! {
        #[test]
        fn zipf_stays_in_range(n in 1u64..1_000_000, s in 0.01f64..4.0, seed: u64) {
            let zipf = Zipf::new(n, s).unwrap();
            let mut rng = Rng::new(seed);
            for _ in 0..50 {
                let x = zipf.sample(&mut rng);
                prop_assert!((1..=n).contains(&x), "{} outside 1..={}", x, n);
            }
        }

        #[test]
        fn keys_stay_in_the_key_space(n in 1u64..10_000, s in prop::option::of(0.1f64..3.0), seed: u64) {
            let dist = s.map_or(KeyDist::Uniform, |s| KeyDist::Zipf { s });
            let sampler = KeySampler::new(n, dist);
            let mut rng = Rng::new(seed);
            for _ in 0..50 {
                prop_assert!(sampler.sample(&mut rng) < n);
            }
        }

        #[test]
        fn sizes_stay_in_their_spec(min in 0u64..1 << 20, span in 0u64..1 << 20, seed: u64, index: u64) {
            let spec = SizeSpec::Uniform { min, max: min + span };
            let size = key_size(&spec, seed, index);
            prop_assert!((min..=min + span).contains(&size));
            prop_assert_eq!(size, key_size(&spec, seed, index));
        }

        #[test]
        fn mixes_round_trip(weights in prop::collection::vec(1u32..1000, 1..7)) {
            let text = OpKind::ALL.iter().zip(&weights)
                .map(|(k, w)| format!("{k}={w}"))
                .collect::<Vec<_>>()
                .join(",");
            let mix: Mix = text.parse().unwrap();
            prop_assert_eq!(mix.weights.len(), weights.len());
            for ((kind, weight), (want_kind, want_weight)) in mix.weights.iter().zip(OpKind::ALL.iter().zip(&weights)) {
                prop_assert_eq!(kind, want_kind);
                prop_assert_eq!(weight, want_weight);
            }
        }
    }
}
