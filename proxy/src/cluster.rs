//! The proxy's copy of the cluster map: fetched from the metadata members at start, then
//! kept current by a long-poll watch (`GET /meta/map?since=V&wait_ms=N`). Every request
//! reads the newest map it has; nothing else about the cluster is cached.

use std::sync::Arc;
use std::time::Duration;

use nimbus_ring::map::ClusterMap;
use nimbus_ring::raft::network::PeerClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one watch call waits for a newer map at the member.
const WATCH_WAIT_MS: u64 = 20_000;
/// How long a watch call may take in all.
const WATCH_TIMEOUT: Duration = Duration::from_secs(25);
/// The largest map accepted.
const MAX_MAP_BYTES: usize = 256 << 20;
/// Pause after a failed call before trying the next member.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The newest cluster map, shared by every request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Cluster {
    map: watch::Receiver<Arc<ClusterMap>>,
    client: PeerClient,
    members: Arc<Vec<String>>,
}

/// The task that keeps the map current; stops when dropped.
#[derive(Debug)]
pub struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the map could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cluster map: no metadata member answered ({last})")]
pub struct MapUnavailable {
    last: String,
}

impl Cluster {
    /// Reads the map from one of `members` (retrying until `deadline`), then starts the
    /// watch.
    ///
    /// # Errors
    /// [`MapUnavailable`] when no member answered with a map before the deadline.
    pub async fn start(
        client: PeerClient,
        members: Vec<String>,
        deadline: Duration,
    ) -> Result<(Cluster, Watcher), MapUnavailable> {
        let members = Arc::new(members);
        let started = tokio::time::Instant::now();
        let mut last = String::from("none tried");
        let first = 'found: loop {
            for member in members.iter() {
                match fetch(&client, member, None).await {
                    Ok(Some(map)) => break 'found map,
                    Ok(None) => {}
                    Err(e) => last = e,
                }
            }
            if started.elapsed() > deadline {
                return Err(MapUnavailable { last });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        };
        let (tx, rx) = watch::channel(Arc::new(first));
        let task = tokio::spawn(watch_loop(client.clone(), Arc::clone(&members), tx));
        Ok((
            Cluster {
                map: rx,
                client,
                members,
            },
            Watcher(task),
        ))
    }

    /// Returns the newest map.
    #[must_use]
    pub fn map(&self) -> Arc<ClusterMap> {
        Arc::clone(&self.map.borrow())
    }

    /// Waits until the map is newer than `version` or `timeout` passes; returns the newest.
    pub async fn newer_than(&self, version: u64, timeout: Duration) -> Arc<ClusterMap> {
        let mut rx = self.map.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|m| m.version() > version)).await;
        self.map()
    }

    /// The members' client (map writes go through it).
    #[must_use]
    pub fn client(&self) -> &PeerClient {
        &self.client
    }

    /// The metadata members' addresses.
    #[must_use]
    pub fn members(&self) -> &[String] {
        &self.members
    }
}

/// Reads the map from `member`: newer than `since` if given (a watch), else at once.
/// `Ok(None)`: nothing newer within the wait.
async fn fetch(
    client: &PeerClient,
    member: &str,
    since: Option<u64>,
) -> Result<Option<ClusterMap>, String> {
    let (path, timeout) = match since {
        Some(v) => (
            format!("/meta/map?since={v}&wait_ms={WATCH_WAIT_MS}"),
            WATCH_TIMEOUT,
        ),
        None => ("/meta/map".to_owned(), Duration::from_secs(5)),
    };
    let answer = client
        .get(member, &path, timeout, MAX_MAP_BYTES)
        .await
        .map_err(|e| format!("{member}: {e}"))?;
    match answer.status.as_u16() {
        200 => ClusterMap::decode(&answer.body)
            .map(Some)
            .map_err(|e| format!("{member}: map does not decode: {e}")),
        304 => Ok(None),
        s => Err(format!("{member}: {s} {}", answer.error_message())),
    }
}

async fn watch_loop(
    client: PeerClient,
    members: Arc<Vec<String>>,
    tx: watch::Sender<Arc<ClusterMap>>,
) {
    let mut next = 0usize;
    loop {
        let member = &members[next % members.len()];
        let since = tx.borrow().version();
        match fetch(&client, member, Some(since)).await {
            Ok(Some(map)) => {
                if map.version() > tx.borrow().version() {
                    tracing::debug!(
                        version = map.version(),
                        epoch = map.epoch().0,
                        "cluster map updated"
                    );
                    tx.send_replace(Arc::new(map));
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, "map watch failed; trying the next member");
                next += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
