//! Several nodes' network and mesh tasks in one process, on 127.0.0.1 with
//! seeded keys: route gossip convergence, sync on join, withdrawal, expiry.
//! Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use atmosphere::capability::{Capability, Kind, Source};
use atmosphere::mesh::{self, View};
use atmosphere::metrics::Metrics;
use atmosphere::network;
use atmosphere::routing::Entry;
use libp2p::Multiaddr;
use libp2p::identity::{Keypair, PeerId, ed25519};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const DIM: usize = 8;

struct TestNode {
    peer: PeerId,
    addr: Multiaddr,
    view: watch::Receiver<View>,
    net_cancel: CancellationToken,
    mesh_cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _local: watch::Sender<Arc<Vec<Entry>>>,
}

fn key(seed: u8) -> Keypair {
    let secret = ed25519::SecretKey::try_from_bytes([seed; 32]).expect("32 bytes");
    ed25519::Keypair::from(secret).into()
}

fn entry(id: &str, seed: u8) -> Entry {
    let mut v: Vec<f32> = (0..DIM)
        .map(|i| ((i as f32) + f32::from(seed)).sin())
        .collect();
    atmosphere::embed::normalize(&mut v);
    Entry {
        capability: std::sync::Arc::new(Capability {
            domain: "test".into(),
            description: format!("capability {id}"),
            ..Capability::new(
                id.parse().expect("id"),
                Kind::chat(),
                Source::Config,
                "b",
                "m",
            )
        }),
        node: String::new(),
        local: true,
        available: true,
        vector: v,
        prototypes: Vec::new(),
        reference: None,
        trust: atmosphere::routing::Trust::Local,
    }
}

async fn spawn_node(seed: u8, bootstrap: Vec<Multiaddr>, ttl: Duration) -> TestNode {
    let key = key(seed);
    let peer = key.public().to_peer_id();
    let net_cancel = CancellationToken::new();
    let mesh_cancel = CancellationToken::new();
    let config = network::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootstrap,
        external: Vec::new(),
        mdns: false,
        node_name: format!("node-{seed}"),
        dim: DIM,
        idle_timeout: Duration::from_secs(60),
        metrics: Arc::new(Metrics::default()),
        gate: None,
        swarm_key: None,
    };
    let (client, events, net) = network::spawn(&key, config, net_cancel.clone()).expect("network");
    let entries = vec![entry(&format!("n{seed}/chat"), seed)];
    let (local_tx, local_rx) = watch::channel(Arc::new(entries));
    let (view, _lookups, mesh_task) = mesh::start(
        mesh::Setup {
            key: key.clone(),
            client: client.clone(),
            events,
            local: local_rx,
            node_name: format!("node-{seed}"),
            ttl,
            dim: DIM,
            metrics: Arc::new(Metrics::default()),
            intents: tokio::sync::mpsc::channel(1).0,
            trusted: Default::default(),
            refuted: tokio::sync::mpsc::channel(1).1,
            certificate: None,
            loads: Default::default(),
        },
        mesh_cancel.clone(),
    );
    let addr = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(a) = client
                .listen_addrs()
                .await
                .expect("listen addrs")
                .into_iter()
                .next()
            {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("listening in time");
    TestNode {
        peer,
        addr: addr.with(libp2p::multiaddr::Protocol::P2p(peer)),
        view,
        net_cancel,
        mesh_cancel,
        tasks: vec![net, mesh_task],
        _local: local_tx,
    }
}

impl TestNode {
    /// A clean shutdown, in the node's order: the mesh withdraws, then the
    /// network stops.
    async fn shutdown(mut self) {
        self.mesh_cancel.cancel();
        let mesh_task = self.tasks.pop().expect("mesh task");
        let _ = tokio::time::timeout(WAIT, mesh_task).await;
        self.net_cancel.cancel();
    }
}

fn ids(view: &View) -> Vec<String> {
    let mut ids: Vec<String> = view
        .entries
        .iter()
        .map(|e| e.capability.id.to_string())
        .collect();
    ids.sort();
    ids
}

/// Waits until `node` sees exactly the capabilities of the `others`.
async fn wait_for(node: &mut TestNode, others: &[u8], what: &str) {
    let mut want: Vec<String> = others.iter().map(|s| format!("n{s}/chat")).collect();
    want.sort();
    let seen = tokio::time::timeout(WAIT, node.view.wait_for(|v| ids(v) == want))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        seen,
        "{what}: node {} sees {:?}, wants {want:?}",
        node.peer,
        ids(&node.view.borrow())
    );
}

fn seeds_except(all: &[u8], me: u8) -> Vec<u8> {
    all.iter().copied().filter(|s| *s != me).collect()
}

#[tokio::test]
async fn pair_converges_and_withdraws_on_clean_shutdown() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("atmosphere=debug,libp2p_gossipsub=debug")
        .with_test_writer()
        .try_init();
    let ttl = Duration::from_secs(30);
    let a = spawn_node(1, Vec::new(), ttl).await;
    let mut b = spawn_node(2, vec![a.addr.clone()], ttl).await;
    let mut a = a;
    wait_for(&mut a, &[2], "a learns b").await;
    wait_for(&mut b, &[1], "b learns a").await;
    let remote = b.view.borrow().entries[0].clone();
    assert!(!remote.local);
    assert_eq!(remote.node, a.peer.to_base58());
    // Clean shutdown announces withdrawal: gone long before the TTL.
    a.shutdown().await;
    let gone = tokio::time::timeout(
        Duration::from_secs(10),
        b.view.wait_for(|v| v.entries.is_empty()),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(gone, "withdrawal not applied");
}

#[tokio::test]
async fn line_of_five_converges() {
    let ttl = Duration::from_secs(30);
    let seeds = [11u8, 12, 13, 14, 15];
    let mut nodes: Vec<TestNode> = Vec::new();
    for (i, &s) in seeds.iter().enumerate() {
        let bootstrap = if i == 0 {
            Vec::new()
        } else {
            vec![nodes[i - 1].addr.clone()]
        };
        nodes.push(spawn_node(s, bootstrap, ttl).await);
    }
    for (node, &s) in nodes.iter_mut().zip(&seeds) {
        wait_for(node, &seeds_except(&seeds, s), "line of 5").await;
    }
}

#[tokio::test]
async fn star_of_ten_converges() {
    let ttl = Duration::from_secs(30);
    let hub = spawn_node(20, Vec::new(), ttl).await;
    let mut nodes = vec![];
    let seeds: Vec<u8> = (20..30).collect();
    for &s in &seeds[1..] {
        nodes.push(spawn_node(s, vec![hub.addr.clone()], ttl).await);
    }
    nodes.push(hub);
    for node in nodes.iter_mut() {
        let me = node.peer;
        let mine = seeds
            .iter()
            .copied()
            .find(|s| key(*s).public().to_peer_id() == me)
            .expect("seed");
        wait_for(node, &seeds_except(&seeds, mine), "star of 10").await;
    }
}

#[tokio::test]
async fn joining_node_gets_the_table_by_sync_not_by_refresh() {
    // Refresh every 100 s: anything learnt within the 20 s wait came by sync.
    let ttl = Duration::from_secs(300);
    let a = spawn_node(31, Vec::new(), ttl).await;
    let mut b = spawn_node(32, vec![a.addr.clone()], ttl).await;
    wait_for(&mut b, &[31], "b learns a").await;
    let mut c = spawn_node(33, vec![b.addr.clone()], ttl).await;
    wait_for(&mut c, &[31, 32], "c learns a and b through b").await;
}

#[tokio::test]
async fn crashed_node_expires_after_its_ttl() {
    let ttl = Duration::from_secs(5);
    let mut a = spawn_node(41, Vec::new(), ttl).await;
    let b = spawn_node(42, vec![a.addr.clone()], ttl).await;
    wait_for(&mut a, &[42], "a learns b").await;
    // No clean shutdown: the tasks die, no withdrawal is sent.
    for t in &b.tasks {
        t.abort();
    }
    let gone = tokio::time::timeout(WAIT, a.view.wait_for(|v| v.entries.is_empty()))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        gone,
        "expired routes still held: {:?}",
        ids(&a.view.borrow())
    );
}
