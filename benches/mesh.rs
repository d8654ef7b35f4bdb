//! Route propagation in loopback meshes of 10, 20 and 50 nodes, each a real
//! swarm (TCP + noise + yamux, gossipsub) and mesh task in this process.
//!
//!   cargo bench --bench mesh
//!
//! Each node joins through up to three earlier nodes (a random connected
//! graph). Once every node sees every other node, one node at a time changes
//! its capabilities; the time until every other node holds the new capability
//! is one sample (30 samples per size, changes 1.1 s apart since an origin
//! announces at most once a second).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atmosphere::mesh::{self, View};
use atmosphere::metrics::Metrics;
use atmosphere::network;
use atmosphere::routing::Entry;
use libp2p::Multiaddr;
use libp2p::identity::{Keypair, ed25519};
use rand::{Rng, SeedableRng};
use support::{local_entry, pct, rss_kib};
use tokio::sync::watch;

const DIM: usize = 8;

fn entry(id: &str) -> Entry {
    let mut v: Vec<f32> = (0..DIM)
        .map(|i| (i as f32 + id.len() as f32).sin())
        .collect();
    atmosphere::embed::normalize(&mut v);
    local_entry(id, v)
}

struct BenchNode {
    addr: Multiaddr,
    view: watch::Receiver<View>,
    local: watch::Sender<Arc<Vec<Entry>>>,
    client: network::Client,
    peer: libp2p::PeerId,
}

async fn spawn(i: usize, bootstrap: Vec<Multiaddr>) -> BenchNode {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1000).to_le_bytes());
    let key: Keypair =
        ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(seed).expect("32")).into();
    let peer = key.public().to_peer_id();
    let metrics = Arc::new(Metrics::default());
    let config = network::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootstrap,
        external: Vec::new(),
        mdns: false,
        node_name: format!("n{i}"),
        dim: DIM,
        idle_timeout: Duration::from_secs(600),
        metrics: metrics.clone(),
        gate: None,
        swarm_key: None,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (client, events, _) = network::spawn(&key, config, cancel.clone()).expect("network");
    let (local, local_rx) = watch::channel(Arc::new(vec![entry(&format!("n{i}/v0"))]));
    let (view, _, _) = mesh::start(
        mesh::Setup {
            key,
            client: client.clone(),
            events,
            local: local_rx,
            node_name: format!("n{i}"),
            ttl: Duration::from_secs(300),
            dim: DIM,
            metrics,
            intents: tokio::sync::mpsc::channel(1).0,
            trusted: Default::default(),
            refuted: tokio::sync::mpsc::channel(1).1,
            certificate: None,
            loads: Default::default(),
        },
        cancel,
    );
    let addr = loop {
        if let Some(a) = client
            .listen_addrs()
            .await
            .expect("addrs")
            .into_iter()
            .next()
        {
            break a.with(libp2p::multiaddr::Protocol::P2p(peer));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    BenchNode {
        addr,
        view,
        local,
        client,
        peer,
    }
}

struct Run {
    converged: Duration,
    samples: Vec<Duration>,
    /// Growth of this process's RSS per node, measured idle after convergence.
    rss_per_node_kib: u64,
    /// Kademlia provider lookups from a random node, until the query ends.
    lookups: Vec<Duration>,
}

async fn run(n: usize, rng: &mut impl Rng) -> Run {
    let rss_before = rss_kib(std::process::id());
    let started = Instant::now();
    let mut nodes: Vec<BenchNode> = Vec::new();
    for i in 0..n {
        let mut bootstrap = Vec::new();
        for _ in 0..3.min(i) {
            bootstrap.push(nodes[rng.gen_range(0..i)].addr.clone());
        }
        nodes.push(spawn(i, bootstrap).await);
    }
    for node in nodes.iter_mut() {
        tokio::time::timeout(
            Duration::from_secs(120),
            node.view.wait_for(|v| v.entries.len() == n - 1),
        )
        .await
        .expect("converged")
        .expect("view");
    }
    let converged = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_per_node_kib = rss_kib(std::process::id()).saturating_sub(rss_before) / n as u64;
    let mut samples = Vec::new();
    for round in 1..=30 {
        // Origins announce at most once a second: space the changes out so
        // each sample is propagation, not coalescing.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let who = rng.gen_range(0..n);
        let id = format!("n{who}/v{round}");
        let t = Instant::now();
        nodes[who].local.send_replace(Arc::new(vec![entry(&id)]));
        for (j, node) in nodes.iter_mut().enumerate() {
            if j == who {
                continue;
            }
            tokio::time::timeout(
                Duration::from_secs(30),
                node.view
                    .wait_for(|v| v.entries.iter().any(|e| e.capability.id.as_str() == id)),
            )
            .await
            .expect("update reached every node")
            .expect("view");
        }
        samples.push(t.elapsed());
    }
    // Kademlia: one node provides a fresh key, another looks it up; a sample
    // is the whole query (it ends when the closest peers have answered).
    let mut lookups = Vec::new();
    for round in 0..20 {
        let p = rng.gen_range(0..n);
        let q = (p + rng.gen_range(1..n)) % n;
        let key = libp2p::kad::RecordKey::new(&atmosphere::wire::kad::key_bytes(&format!(
            "kind:bench/k{round}"
        )));
        nodes[p]
            .client
            .provide(vec![key.clone()])
            .await
            .expect("provide");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let found = nodes[q].client.lookup(vec![key]).await.expect("lookup");
        lookups.push(t.elapsed());
        assert!(
            found.contains(&nodes[p].peer),
            "lookup {round} missed the provider"
        );
    }
    Run {
        converged,
        samples,
        rss_per_node_kib,
        lookups,
    }
}

#[tokio::main]
async fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    println!(
        "## Route propagation (in-process loopback meshes; each node joins through up to 3 earlier ones)"
    );
    println!();
    println!(
        "| nodes | start to converged ms | update reaches all: p50 ms | p99 ms | max ms | RSS per node, idle, no model MiB | kad lookup p50 ms | max of 20 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let sizes: Vec<usize> = std::env::var("MESH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 20, 50]);
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    for n in sizes {
        let Run {
            converged,
            mut samples,
            rss_per_node_kib,
            mut lookups,
        } = run(n, &mut rng).await;
        let lookup_max = lookups.iter().max().copied().unwrap_or_default();
        let max = samples.iter().max().copied().unwrap_or_default();
        println!(
            "| {n} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            converged.as_secs_f64() * 1e3,
            pct(&mut samples, 0.5),
            pct(&mut samples, 0.99),
            max.as_secs_f64() * 1e3,
            rss_per_node_kib as f64 / 1024.0,
            pct(&mut lookups, 0.5),
            lookup_max.as_secs_f64() * 1e3
        );
    }
}
