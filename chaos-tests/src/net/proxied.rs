//! The network without root: every storage node and metadata member listens on loopback
//! behind a TCP proxy run by the harness, and is known to everyone by the proxy's address.
//! Each node's two proxies share one link:
//!
//! - **Cut off.** No byte moves either way on any connection to the node: new connections
//!   wait and old ones stall, as if its packets were dropped. Both resume once it is joined
//!   again.
//! - **Slow.** Each chunk waits as long as its size takes at the link's rate, plus 5 ms.
//!   Past a connection's first 8 chunks, about one chunk in 500 breaks it, as heavy loss
//!   would.
//!
//! Ports: node `i` listens on `base+i` and is reached at `base+20+i`; its metadata member
//! listens on `base+40+i` and is reached at `base+60+i`.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::Network;

/// Most nodes a proxied network has.
const MAX_NODES: u16 = 19;
/// Bytes moved at a time.
const CHUNK: usize = 16 * 1024;
/// On a slow link, one chunk in this many breaks its connection.
const BREAK_ONE_IN: u64 = 500;

/// One node's link.
struct Link {
    connected: watch::Sender<bool>,
    /// 0: full speed.
    rate_kbit: AtomicU32,
}

impl Link {
    async fn wait_connected(&self) {
        let mut rx = self.connected.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The proxies of one run.
pub struct Proxied {
    base: u16,
    links: Vec<Arc<Link>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxied {
    /// Binds every proxy for `nodes` nodes on a free block of loopback ports and starts
    /// them.
    ///
    /// # Errors
    /// Too many nodes, no free block, no runtime.
    pub fn create(nodes: u16) -> Result<Proxied> {
        if nodes > MAX_NODES {
            bail!("a proxied network has at most {MAX_NODES} nodes");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .context("start the proxies' runtime")?;
        let first = 20_000 + (std::process::id() % 200) as u16 * 100;
        for step in 0..200u16 {
            let base = 20_000 + (first - 20_000 + step * 100) % 20_000;
            let all_free = (1..=nodes).all(|i| {
                [i, 20 + i, 40 + i, 60 + i]
                    .iter()
                    .all(|o| StdListener::bind(("127.0.0.1", base + o)).is_ok())
            });
            if !all_free {
                continue;
            }
            let mut net = Proxied {
                base,
                links: Vec::new(),
                runtime: None,
            };
            for i in 1..=nodes {
                let (connected, _) = watch::channel(true);
                let link = Arc::new(Link {
                    connected,
                    rate_kbit: AtomicU32::new(0),
                });
                for (listen, target) in [
                    (net.node_addr(i), net.node_listen(i)),
                    (net.meta_addr(i), net.meta_listen(i)),
                ] {
                    let listener = StdListener::bind(listen)
                        .with_context(|| format!("bind the proxy for {target} on {listen}"))?;
                    listener.set_nonblocking(true)?;
                    let link = Arc::clone(&link);
                    runtime.spawn(async move {
                        if let Ok(listener) = TcpListener::from_std(listener) {
                            serve(listener, target, link).await;
                        }
                    });
                }
                net.links.push(link);
            }
            net.runtime = Some(runtime);
            return Ok(net);
        }
        bail!("no free block of loopback ports for the proxies")
    }

    fn link(&self, i: u16) -> Result<&Link> {
        self.links
            .get(usize::from(i).wrapping_sub(1))
            .map(AsRef::as_ref)
            .with_context(|| format!("no node {i}"))
    }

    fn at(&self, offset: u16, i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + offset + i))
    }
}

impl Drop for Proxied {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Network for Proxied {
    fn node_addr(&self, i: u16) -> SocketAddr {
        self.at(20, i)
    }

    fn node_listen(&self, i: u16) -> SocketAddr {
        self.at(0, i)
    }

    fn meta_addr(&self, i: u16) -> SocketAddr {
        self.at(60, i)
    }

    fn meta_listen(&self, i: u16) -> SocketAddr {
        self.at(40, i)
    }

    fn command_prefix(&self, _i: u16) -> Vec<String> {
        Vec::new()
    }

    fn set_connected(&self, i: u16, connected: bool) -> Result<()> {
        self.link(i)?.connected.send_replace(connected);
        Ok(())
    }

    fn set_slow(&self, i: u16, rate_kbit: Option<u32>) -> Result<()> {
        self.link(i)?
            .rate_kbit
            .store(rate_kbit.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "loopback behind the harness's fault-injecting TCP proxies, ports {}..{}",
            self.base,
            self.base + 80
        )
    }
}

/// Accepts connections for `target` until the runtime stops.
async fn serve(listener: TcpListener, target: SocketAddr, link: Arc<Link>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let link = Arc::clone(&link);
        tokio::spawn(async move {
            link.wait_connected().await;
            // A node that is down refuses: the client sees its connection closed.
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (from_client, to_client) = inbound.into_split();
            let (from_node, to_node) = outbound.into_split();
            tokio::join!(
                pump(from_client, to_node, &link),
                pump(from_node, to_client, &link)
            );
        });
    }
}

/// Chunks moved on slow links so far, across every link: the source of "now and then".
static CHUNKS: AtomicU64 = AtomicU64::new(0);

/// Moves bytes one way until either end closes or fails, then closes the writing end (so
/// that the other direction ends too).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: &Link) {
    let mut buf = vec![0u8; CHUNK];
    let mut chunks = 0u32;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        link.wait_connected().await;
        let rate = u64::from(link.rate_kbit.load(Ordering::Relaxed));
        chunks = chunks.saturating_add(1);
        if let Some(micros) = (n as u64 * 8 * 1000).checked_div(rate) {
            // Short exchanges get through; long transfers break now and then.
            let count = CHUNKS.fetch_add(1, Ordering::Relaxed);
            if chunks > 8 && mix(count).is_multiple_of(BREAK_ONE_IN) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(micros + 5_000)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// SplitMix64's finalizer: spreads a counter over 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// An echo server on a free port: what a node would be.
    fn echo_at(addr: SocketAddr) -> std::thread::JoinHandle<()> {
        let listener = StdListener::bind(addr).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }

    fn round_trip(addr: SocketAddr, timeout: Duration) -> std::io::Result<Vec<u8>> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"ping")?;
        let mut got = [0u8; 4];
        stream.read_exact(&mut got)?;
        Ok(got.to_vec())
    }

    #[test]
    fn bytes_pass_stall_while_cut_off_and_flow_again() {
        let net = Proxied::create(1).unwrap();
        let _echo = echo_at(net.node_listen(1));
        assert_eq!(
            round_trip(net.node_addr(1), Duration::from_secs(5)).unwrap(),
            b"ping"
        );

        net.set_connected(1, false).unwrap();
        assert!(round_trip(net.node_addr(1), Duration::from_millis(300)).is_err());

        // A connection made while cut off goes through once joined again.
        let mut stream = std::net::TcpStream::connect(net.node_addr(1)).unwrap();
        stream.write_all(b"pong").unwrap();
        net.set_connected(1, true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }

    #[test]
    fn a_slow_link_takes_its_time() {
        let net = Proxied::create(1).unwrap();
        let _echo = echo_at(net.node_listen(1));
        net.set_slow(1, Some(64)).unwrap(); // 64 kbit/s: 8 KB take about a second each way
        let mut stream = std::net::TcpStream::connect(net.node_addr(1)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let started = Instant::now();
        let data = vec![7u8; 8 * 1024];
        stream.write_all(&data).unwrap();
        let mut got = vec![0u8; data.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(got, data);
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }

    #[test]
    fn a_node_that_is_down_closes_the_connection() {
        let net = Proxied::create(1).unwrap();
        // Nothing listens on node_listen(1).
        assert!(round_trip(net.node_addr(1), Duration::from_secs(5)).is_err());
    }
}
