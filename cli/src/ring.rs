//! `nimbus ring …`: create and change ring builder files, rebalance them into ring files, and
//! explain the result. Every change loads the builder, applies the change in memory and
//! writes the file atomically only if everything succeeded: on any error the file is left
//! exactly as it was.

mod output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use nimbus_core::ids::DeviceId;
use nimbus_core::policy::StoragePolicy;
use nimbus_ring::builder::BuilderSettings;
use nimbus_ring::{DeviceSpec, Location, Ring, RingBuilder};

/// Arguments of `nimbus ring`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RingArgs {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RingCommand,
}

#[derive(Subcommand)]
enum RingCommand {
    /// Create an empty builder file for one storage policy.
    Create(CreateArgs),
    /// Add devices: `add FILE r1z2-10.0.0.5:6200/sdb 100 [LOCATION WEIGHT]…`, or one with --region, --zone, ….
    #[command(allow_negative_numbers = true)]
    Add(AddArgs),
    /// Remove devices: rebalances drain them, then they are forgotten.
    Remove(RemoveArgs),
    /// Change a device's weight.
    #[command(allow_negative_numbers = true)]
    SetWeight(SetWeightArgs),
    /// Change how long a partition that moved must stay before it moves again.
    SetMinPartHours(SetMinPartHoursArgs),
    /// Assign slots to devices, print what moved, and write the ring file.
    Rebalance(RebalanceArgs),
    /// Show the builder's settings and a table of devices with their balance.
    Show(FileArg),
    /// Show how widely partitions are spread over regions, zones and nodes.
    Dispersion(FileArg),
    /// Show the partition, primaries and first handoffs of ACCOUNT/CONTAINER/OBJECT.
    Lookup(LookupArgs),
    /// Check a builder or ring file; exit non-zero if it is not usable.
    Validate(FileArg),
}

#[derive(Args)]
struct FileArg {
    /// The builder file (or, for lookup and validate, a ring file).
    file: PathBuf,
}

#[derive(Args)]
struct CreateArgs {
    /// The builder file to create, e.g. object-ec42.builder.
    file: PathBuf,
    /// Storage policy: repN (e.g. rep3) or ecK+M (e.g. ec4+2).
    #[arg(long)]
    policy: String,
    /// 2^part_power partitions (1 to 24). Aim for at least 100 slots per device.
    #[arg(long)]
    part_power: u32,
    /// Hours a partition that moved must stay before it moves again.
    #[arg(long, default_value_t = 1)]
    min_part_hours: u32,
    /// Seed for every random choice, for reproducible rings [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// cluster_hash_key as 64 hex digits [default: random]. Never changes once data exists.
    #[arg(long)]
    hash_key: Option<String>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct AddArgs {
    /// The builder file.
    file: PathBuf,
    #[arg(
        value_names = ["LOCATION", "WEIGHT"],
        help = "Devices as pairs: where the device sits, r<region>z<zone>-<ip:port>/<device>, and its weight (normally its capacity, e.g. in TiB)"
    )]
    devices: Vec<String>,
    /// Region number (instead of LOCATION).
    #[arg(long, conflicts_with = "devices")]
    region: Option<u32>,
    /// Zone number (instead of LOCATION).
    #[arg(long, conflicts_with = "devices")]
    zone: Option<u32>,
    /// Node address ip:port (instead of LOCATION).
    #[arg(long, conflicts_with = "devices")]
    node: Option<String>,
    /// Device name on its node (instead of LOCATION).
    #[arg(long, conflicts_with = "devices")]
    device: Option<String>,
    /// The weight (instead of WEIGHT).
    #[arg(long)]
    weight: Option<f64>,
    /// Use this device id instead of the next free one (one device only).
    #[arg(long)]
    id: Option<u32>,
    /// Only print what a rebalance after this change would move.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct RemoveArgs {
    /// The builder file.
    file: PathBuf,
    /// Ids of the devices to remove.
    #[arg(required = true)]
    ids: Vec<u32>,
    /// Only print what a rebalance after this change would move.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct SetWeightArgs {
    /// The builder file.
    file: PathBuf,
    /// The device id.
    id: u32,
    /// The new weight.
    weight: f64,
    /// Only print what a rebalance after this change would move.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct SetMinPartHoursArgs {
    /// The builder file.
    file: PathBuf,
    /// Hours.
    hours: u32,
}

#[derive(Args)]
struct RebalanceArgs {
    /// The builder file.
    file: PathBuf,
    /// Where to write the ring [default: FILE with the extension .ring].
    #[arg(long)]
    ring: Option<PathBuf>,
    /// Only print what would move; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct LookupArgs {
    /// The builder or ring file.
    file: PathBuf,
    /// The object path: ACCOUNT/CONTAINER/OBJECT.
    path: String,
    /// How many handoffs to list.
    #[arg(long, default_value_t = 3)]
    handoffs: usize,
}

/// Runs `nimbus ring …`.
///
/// # Errors
/// Any failure, with context naming the file and the step.
pub fn run(args: RingArgs) -> Result<ExitCode> {
    let json = args.json;
    match args.command {
        RingCommand::Create(a) => create(a, json),
        RingCommand::Add(a) => add(a, json),
        RingCommand::Remove(a) => {
            let ids: Vec<DeviceId> = a.ids.iter().copied().map(DeviceId).collect();
            change(&a.file, a.dry_run, json, |b| {
                for &id in &ids {
                    b.remove_device(id)?;
                }
                Ok(format!("removed device(s) {}", output::join(&ids)))
            })
        }
        RingCommand::SetWeight(a) => change(&a.file, a.dry_run, json, |b| {
            b.set_weight(DeviceId(a.id), a.weight)?;
            Ok(format!("device {} now has weight {}", a.id, a.weight))
        }),
        RingCommand::SetMinPartHours(a) => change(&a.file, false, json, |b| {
            b.set_min_part_hours(a.hours);
            Ok(format!("min_part_hours is now {}", a.hours))
        }),
        RingCommand::Rebalance(a) => rebalance(a, json),
        RingCommand::Show(a) => {
            let b = load_builder(&a.file)?;
            output::show(&a.file, &b, json)?;
            Ok(ExitCode::SUCCESS)
        }
        RingCommand::Dispersion(a) => {
            let b = load_builder(&a.file)?;
            output::dispersion(&b.dispersion_report(), json)?;
            Ok(ExitCode::SUCCESS)
        }
        RingCommand::Lookup(a) => lookup(a, json),
        RingCommand::Validate(a) => validate(&a.file, json),
    }
}

fn load_builder(path: &Path) -> Result<RingBuilder> {
    RingBuilder::load(path).context("load ring builder")
}

/// Takes an exclusive lock on the builder file, so that two commands changing it at once do
/// not lose one change: the second one fails with a clear error instead. The lock is on the
/// file's inode; a writer replaces the file by renaming a new one over it, so after locking we
/// check that the path still names the locked inode (else another writer just replaced it,
/// and we lock the new one). The lock is released when the returned handle drops.
fn lock_builder(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = std::fs::File::open(path)
            .with_context(|| format!("load ring builder: open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{} is being changed by another `nimbus ring` command; try again when it is done",
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("lock {}", path.display()));
            }
        }
        let locked = file.metadata()?;
        let current = std::fs::metadata(path)?;
        if (locked.dev(), locked.ino()) == (current.dev(), current.ino()) {
            return Ok(file);
        }
    }
}

fn save_builder(path: &Path, b: &RingBuilder) -> Result<()> {
    b.save(path).context("write ring builder")
}

fn create(a: CreateArgs, json: bool) -> Result<ExitCode> {
    if !a.force && std::fs::symlink_metadata(&a.file).is_ok() {
        bail!(
            "{} already exists; pass --force to replace it",
            a.file.display()
        );
    }
    let policy: StoragePolicy = a.policy.parse()?;
    let hash_key = match &a.hash_key {
        Some(hex) => parse_hash_key(hex)?,
        None => RingBuilder::random_hash_key()
            .map_err(|e| anyhow!("read random bytes for the hash key: {e}"))?,
    };
    let seed = match a.seed {
        Some(seed) => seed,
        None => {
            let key = RingBuilder::random_hash_key()
                .map_err(|e| anyhow!("read random bytes for the seed: {e}"))?;
            u64::from_le_bytes(key[..8].try_into().expect("8 bytes"))
        }
    };
    let b = RingBuilder::new(BuilderSettings {
        policy,
        part_power: a.part_power,
        min_part_hours: a.min_part_hours,
        seed,
        hash_key,
    })?;
    save_builder(&a.file, &b)?;
    output::created(&a.file, &b, json)?;
    Ok(ExitCode::SUCCESS)
}

/// Parses a `cluster_hash_key` given as 64 hex digits.
pub(crate) fn parse_hash_key(hex: &str) -> Result<[u8; 32]> {
    let bad = || anyhow!("--hash-key must be 64 hex digits (32 bytes)");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}

fn add(a: AddArgs, json: bool) -> Result<ExitCode> {
    let specs = device_specs(&a)?;
    if a.id.is_some() && specs.len() > 1 {
        bail!("--id names one device, but {} are being added", specs.len());
    }
    change(&a.file, a.dry_run, json, |b| {
        let mut added = Vec::with_capacity(specs.len());
        for spec in &specs {
            let id = b.add_device(spec.clone(), a.id.map(DeviceId))?;
            added.push(format!(
                "added device {id}: {} with weight {}",
                spec.location, spec.weight
            ));
        }
        Ok(added.join("\n"))
    })
}

/// The devices `add` was given: LOCATION WEIGHT pairs, or one device by flags.
fn device_specs(a: &AddArgs) -> Result<Vec<DeviceSpec>> {
    let parse_weight = |w: &str| {
        w.parse::<f64>()
            .map_err(|_| anyhow!("weight {w:?} is not a number"))
    };
    if !a.devices.is_empty() {
        if !a.devices.len().is_multiple_of(2) && a.weight.is_none() {
            bail!("give each device as LOCATION WEIGHT: the last location has no weight");
        }
        if a.devices.len() == 1 {
            let location = a.devices[0].parse::<Location>()?;
            let weight = a
                .weight
                .ok_or_else(|| anyhow!("the device's WEIGHT is missing"))?;
            return Ok(vec![DeviceSpec { location, weight }]);
        }
        if a.weight.is_some() {
            bail!("--weight is for a single device; give each device as LOCATION WEIGHT");
        }
        return a
            .devices
            .chunks_exact(2)
            .map(|pair| {
                Ok(DeviceSpec {
                    location: pair[0].parse::<Location>()?,
                    weight: parse_weight(&pair[1])?,
                })
            })
            .collect();
    }
    let missing = |what: &str| {
        anyhow!(
            "give the device as LOCATION WEIGHT (r1z2-10.0.0.5:6200/sdb 100) or with --region, --zone, --node, --device and --weight: --{what} is missing"
        )
    };
    let node = a.node.as_deref().ok_or_else(|| missing("node"))?;
    let location = Location {
        region: a.region.ok_or_else(|| missing("region"))?,
        zone: a.zone.ok_or_else(|| missing("zone"))?,
        node: node
            .parse()
            .map_err(|_| anyhow!("--node {node:?} is not an ip:port address"))?,
        name: a.device.clone().ok_or_else(|| missing("device"))?,
    };
    location.validate()?;
    let weight = a.weight.ok_or_else(|| missing("weight"))?;
    Ok(vec![DeviceSpec { location, weight }])
}

/// Loads the builder, applies `apply`, and saves it — or, with `dry_run`, rebalances a copy
/// and reports what would move, saving nothing.
fn change(
    path: &Path,
    dry_run: bool,
    json: bool,
    apply: impl FnOnce(&mut RingBuilder) -> Result<String>,
) -> Result<ExitCode> {
    let _lock = lock_builder(path)?;
    let mut b = load_builder(path)?;
    let done = apply(&mut b)?;
    if dry_run {
        let report = b.rebalance(SystemTime::now())?;
        output::dry_run(&done, &report, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    save_builder(path, &b)?;
    output::changed(&done, json)?;
    Ok(ExitCode::SUCCESS)
}

fn ring_path(builder: &Path) -> PathBuf {
    if builder.extension().is_some_and(|e| e == "builder") {
        builder.with_extension("ring")
    } else {
        let mut name = builder.as_os_str().to_owned();
        name.push(".ring");
        PathBuf::from(name)
    }
}

fn rebalance(a: RebalanceArgs, json: bool) -> Result<ExitCode> {
    let _lock = lock_builder(&a.file)?;
    let mut b = load_builder(&a.file)?;
    let report = b.rebalance(SystemTime::now())?;
    let ring_file = a.ring.unwrap_or_else(|| ring_path(&a.file));
    if a.dry_run {
        output::rebalanced(&report, None, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let ring = b.ring()?;
    save_builder(&a.file, &b)?;
    ring.save(&ring_file).context("write ring")?;
    output::rebalanced(&report, Some(&ring_file), json)?;
    Ok(ExitCode::SUCCESS)
}

/// Loads a ring from a ring file, or the current ring of a builder file.
fn load_ring(path: &Path) -> Result<Ring> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    if bytes.starts_with(b"NIMBRING") {
        return Ring::decode(&bytes).with_context(|| format!("load ring {}", path.display()));
    }
    let b = RingBuilder::decode(&bytes)
        .with_context(|| format!("load ring builder {}", path.display()))?;
    Ok(b.ring()?)
}

fn lookup(a: LookupArgs, json: bool) -> Result<ExitCode> {
    let mut parts = a.path.splitn(3, '/');
    let (account, container, object) = (parts.next(), parts.next(), parts.next());
    let (Some(account), Some(container), Some(object)) = (account, container, object) else {
        bail!("{:?} is not ACCOUNT/CONTAINER/OBJECT", a.path);
    };
    if account.is_empty() || container.is_empty() || object.is_empty() {
        bail!(
            "{:?} is not ACCOUNT/CONTAINER/OBJECT: a part is empty",
            a.path
        );
    }
    let ring = load_ring(&a.file)?;
    let partition = ring.object_partition(account, container, object);
    output::lookup(&ring, &a.path, partition, a.handoffs, json)?;
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &Path, json: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let (kind, errors, warnings) = if bytes.starts_with(b"NIMBRING") {
        let ring =
            Ring::decode(&bytes).with_context(|| format!("validate ring {}", path.display()))?;
        (output::ring_summary(&ring), Vec::new(), Vec::new())
    } else {
        let b = RingBuilder::decode(&bytes)
            .with_context(|| format!("validate ring builder {}", path.display()))?;
        let (errors, warnings) = builder_problems(&b);
        (output::builder_summary(&b), errors, warnings)
    };
    output::validation(path, &kind, &errors, &warnings, json)?;
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Returns what makes a builder unusable (errors) and what an operator should look at.
fn builder_problems(b: &RingBuilder) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if let Err(e) = b.ring() {
        errors.push(e.to_string());
    }
    if b.has_pending_changes() {
        warnings.push("devices changed since the last rebalance".to_owned());
    }
    let balance = b.balance_report();
    for d in &balance.devices {
        if d.removed && d.slots > 0 {
            warnings.push(format!(
                "removed device {} still holds {} slots: rebalance again after min_part_hours",
                d.id, d.slots
            ));
        }
    }
    if balance.slots_off_target > 0 {
        warnings.push(format!(
            "{} slots are above their device's target: rebalance again after min_part_hours",
            balance.slots_off_target
        ));
    }
    if let Some(note) = balance.note {
        warnings.push(note);
    }
    let dispersion = b.dispersion_report();
    if dispersion.partitions_crowded > 0 {
        warnings.push(format!(
            "{} partitions have more slots in one failure domain than necessary (see `nimbus ring dispersion`)",
            dispersion.partitions_crowded
        ));
    }
    (errors, warnings)
}
