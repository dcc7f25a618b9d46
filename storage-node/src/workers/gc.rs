//! TODO(session): gc step, being written.

use nimbus_core::ids::PartitionId;
use nimbus_ring::map::ClusterMap;

use super::{Ctx, WorkerError};

pub(super) async fn partition(
    _ctx: &Ctx,
    _map: &ClusterMap,
    _policy: &str,
    _partition: PartitionId,
) -> Result<(), WorkerError> {
    Ok(())
}
