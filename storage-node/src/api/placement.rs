//! `GET /v1/placement/{device}`: what the device holds, partition by partition — how many
//! committed fragments of each fragment index, and a digest of their (object, version) set, which every slot of a
//! healthy partition shares whatever its fragment index. `nimbus admin placement` compares
//! these over the cluster against the ring: fragments away from their slot's device, and
//! partitions whose slots disagree.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{ApiError, NodeState};
use crate::store::ListedFragment;

pub(super) fn routes() -> Router<Arc<NodeState>> {
    Router::new().route("/v1/placement/{device}", get(placement))
}

async fn placement(
    State(state): State<Arc<NodeState>>,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let store = &state.device(&device)?.fragments;
    let mut partitions = Vec::new();
    for (policy, partition) in store.partitions_on_disk().await? {
        let listed = store.list_partition(&policy, partition).await?;
        let committed: Vec<&ListedFragment> = listed.iter().filter(|f| f.durable).collect();
        if committed.is_empty() {
            continue;
        }
        let mut indexes = std::collections::BTreeMap::<String, usize>::new();
        for f in &committed {
            *indexes.entry(f.index.to_string()).or_default() += 1;
        }
        partitions.push(json!({
            "policy": policy,
            "partition": partition.0,
            "fragments": committed.len(),
            "indexes": indexes,
            "digest": hex::encode(version_digest(&committed)),
        }));
    }
    Ok(axum::Json(json!({ "device": device, "partitions": partitions })).into_response())
}

/// A digest of the (object, version) pairs of committed fragments, sorted, ignoring the
/// fragment index: equal on every slot of a partition that lacks nothing.
fn version_digest(fragments: &[&ListedFragment]) -> [u8; 32] {
    let mut pairs: Vec<(&str, u64)> = fragments
        .iter()
        .map(|f| (f.object_hash.as_str(), f.version.0))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut hasher = blake3::Hasher::new();
    for (hash, version) in pairs {
        hasher.update(hash.as_bytes());
        hasher.update(&version.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::ids::VersionId;

    fn listed(hash: &str, version: u64, index: u8) -> ListedFragment {
        ListedFragment {
            object_hash: hash.into(),
            version: VersionId(version),
            index,
            durable: true,
        }
    }

    #[test]
    fn slots_holding_the_same_versions_agree_whatever_their_index() {
        let a = [listed("aa", 1, 0), listed("bb", 2, 0)];
        let b = [listed("bb", 2, 3), listed("aa", 1, 3)];
        let c = [listed("aa", 1, 5)];
        let digest = |s: &[ListedFragment]| version_digest(&s.iter().collect::<Vec<_>>());
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
    }
}
