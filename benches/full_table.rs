//! A node whose route table hostile peers fill to the brim: its memory, and
//! how long it takes to check everything they announced.
//!
//!   cargo build --release --bins && cargo bench --bench full_table
//!
//! One node (`atmosphere start`, model loaded, open mesh) and, in this
//! process, two bare gossipsub peers connected to it. Each relays 256
//! origins (fresh keys, each update validly signed) of 16 capabilities, the
//! most one relay may bring: 512 origins and 8,192 capabilities together,
//! the table's limits. Every capability is as large as the limits allow (a
//! 1,024-byte description, 32 topics of 64 bytes, 16 examples of 256 bytes,
//! 8 prototypes) and announces the vector its texts give, so the node keeps
//! it. The node's embedder cache is off (`cache_entries = 0`): the texts are
//! the same in every capability, and a cache would answer all but the first
//! from memory, where distinct texts (what a real flood of fresh keys brings)
//! each cost the model's time. The node's RSS is read idle, once the updates
//! are in, and once every capability has been checked and entered in its
//! table.

mod support;

use std::time::{Duration, Instant};

use atmosphere::capability::{Capability, Kind, Source};
use atmosphere::config::EmbedderConfig;
use atmosphere::embed::Embedder;
use atmosphere::routing::capability_vector;
use atmosphere::wire::Message;
use atmosphere::wire::route::{
    CapabilityRecord, RouteBody, RouteUpdate, SignedRouteUpdate, VERSION, WireVector,
};
use futures::StreamExt;
use libp2p::identity::{Keypair, ed25519};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, gossipsub, noise, tcp, yamux};
use serde_json::Value;
use support::*;

const RELAYS: usize = 2;
const ORIGINS_PER_RELAY: usize = 256;
const CAPABILITIES: usize = 16;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

fn key(a: u8, b: u16) -> Keypair {
    let mut seed = [a; 32];
    seed[..2].copy_from_slice(&b.to_le_bytes());
    ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(seed).expect("32")).into()
}

type Relay = libp2p::Swarm<gossipsub::Behaviour>;

async fn relay(seed: u8, addr: &Multiaddr) -> Relay {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key(seed, 0))
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|k| {
            // No IHAVE gossip: the relays' history is short, and promises
            // they cannot keep cost them score at the node (broken promises)
            // until it ignores them.
            let config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(2 * 1024 * 1024)
                .gossip_lazy(0)
                .gossip_factor(0.0)
                .build()
                .expect("config");
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(k.clone()), config)
                .expect("gossipsub")
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    let topic = gossipsub::IdentTopic::new(atmosphere::wire::ROUTES_TOPIC);
    swarm.behaviour_mut().subscribe(&topic).expect("subscribe");
    swarm.dial(addr.clone()).expect("dial");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { .. }) =
                swarm.select_next_some().await
            {
                return;
            }
        }
    })
    .await
    .expect("the node subscribes to the route topic");
    swarm
}

fn text(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_owned();
    let words = ["llama", "alpaca", "hay", "fence", "shearing", "pasture"];
    let mut i = 0;
    while s.len() + 10 < len {
        s.push(' ');
        s.push_str(words[i % words.len()]);
        i += 1;
    }
    s
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

async fn metric(client: &reqwest::Client, port: u16, line: &str) -> f64 {
    let text = async {
        client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }
    .await
    .unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn bench() {
    // One capability's texts, as large as the limits allow, and the vector
    // they give (the node checks it; every capability carries the same).
    let description = text("Expert on raising llamas and alpacas.", 1024);
    let topics: Vec<String> = (0..32).map(|i| text(&format!("t{i}"), 64)).collect();
    let examples: Vec<String> = (0..16)
        .map(|i| text(&format!("Question {i} about my herd:"), 256))
        .collect();
    let profile_text = Capability {
        domain: "camelids".into(),
        topics: topics.clone(),
        description: description.clone(),
        ..Capability::new(
            "x/y".parse().expect("id"),
            Kind::chat(),
            Source::Remote,
            "",
            "",
        )
    }
    .profile_text();
    let embedder =
        Embedder::load(&EmbedderConfig::default()).expect("embedder: run scripts/fetch-model.sh");
    let profile = embedder.embed_one(&profile_text).await.expect("embed");
    let ex = embedder
        .embed(examples.clone())
        .await
        .expect("embed")
        .vectors;
    let vector = WireVector::quantize(&capability_vector(&ex, &profile, 0.2));
    drop(embedder);

    let client = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("atmosphere-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let port = free_port();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"full\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[embedder]\nthreads = 1\ncache_entries = 0\n[mesh]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n",
            dir.display()
        ),
    )
    .expect("config");
    let node = atmosphere(&config);
    wait_ready(&client, &format!("http://127.0.0.1:{port}/health")).await;
    let peers: Value = client
        .get(format!("http://127.0.0.1:{port}/v1/mesh/peers"))
        .send()
        .await
        .expect("peers")
        .json()
        .await
        .expect("json");
    let addr: Multiaddr = format!(
        "{}/p2p/{}",
        peers["listen"][0].as_str().expect("listen"),
        peers["peer_id"].as_str().expect("peer id")
    )
    .parse()
    .expect("addr");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(node.0.id());

    let topic = gossipsub::IdentTopic::new(atmosphere::wire::ROUTES_TOPIC);
    let mut relays = Vec::new();
    for r in 0..RELAYS {
        relays.push(relay(100 + r as u8, &addr).await);
    }
    let started = Instant::now();
    let mut bytes = 0usize;
    for (r, relay) in relays.iter_mut().enumerate() {
        for o in 0..ORIGINS_PER_RELAY {
            let records = (0..CAPABILITIES)
                .map(|c| CapabilityRecord {
                    id: format!("o{r}x{o}/cap-{c}"),
                    kind: "llm/chat".into(),
                    domain: "camelids".into(),
                    topics: topics.clone(),
                    description: description.clone(),
                    vector: vector.clone(),
                    prototypes: vec![vector.clone(); 8],
                    available: true,
                    in_flight: 0,
                    reference: Some(0.5),
                    examples: examples.clone(),
                    input_schema: None,
                    inputs: Vec::new(),
                })
                .collect();
            let update = RouteUpdate {
                version: VERSION,
                seq: unix_ms(),
                ttl_secs: 3600,
                node_name: format!("sybil-{r}-{o}"),
                addrs: Vec::new(),
                dim: vector.values.len() as u16,
                body: RouteBody::Full(records),
                certificate: None,
            };
            let signed = SignedRouteUpdate::sign(&update, &key(200 + r as u8, o as u16 + 1))
                .expect("sign")
                .encode()
                .expect("encode");
            bytes += signed.len();
            relay
                .behaviour_mut()
                .publish(topic.clone(), signed)
                .expect("publish");
            // Let the swarm send it before the next one.
            let pause = tokio::time::Instant::now() + Duration::from_millis(20);
            while tokio::time::timeout_at(pause, relay.select_next_some())
                .await
                .is_ok()
            {}
        }
    }
    let want = RELAYS * ORIGINS_PER_RELAY * CAPABILITIES;
    let mut received = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last = 0;
    loop {
        for relay in relays.iter_mut() {
            let _ = tokio::time::timeout(Duration::from_millis(50), relay.select_next_some()).await;
        }
        if received.is_none()
            && metric(&client, port, "atmosphere_remote_origins ").await as usize
                >= RELAYS * ORIGINS_PER_RELAY
        {
            received = Some((started.elapsed(), rss_kib(node.0.id())));
        }
        // The table's size as a gauge: listing 8,192 capabilities as JSON
        // twice a second would weigh on what is measured.
        let n = metric(&client, port, "atmosphere_capabilities ").await as usize;
        if n != last {
            last = n;
        }
        if n >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let checked = started.elapsed();
    let full = rss_kib(node.0.id());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = rss_kib(node.0.id());
    let builds = metric(&client, port, "atmosphere_route_table_builds_total").await;
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "## A full route table from hostile relays ({RELAYS} relays x {ORIGINS_PER_RELAY} origins x {CAPABILITIES} capabilities of maximum size)"
    );
    println!();
    println!("| state | RSS MiB | after s |");
    println!("|---|---|---|");
    println!("| idle, model loaded, empty table | {:.1} | |", mib(idle));
    if let Some((t, rss)) = received {
        println!(
            "| every origin held ({} updates, {:.1} MiB on the wire) | {:.1} | {:.1} |",
            RELAYS * ORIGINS_PER_RELAY,
            bytes as f64 / 1048576.0,
            mib(rss),
            t.as_secs_f64()
        );
    }
    println!(
        "| {last} of {want} capabilities checked and in the table | {:.1} | {:.1} |",
        mib(full),
        checked.as_secs_f64()
    );
    println!("| 5 s later | {:.1} | |", mib(settled));
    println!();
    println!("Route table builds meanwhile: {builds}.");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
