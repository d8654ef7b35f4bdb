//! Capability lookup over Kademlia when gossip has not reached a node.
//!
//! The two Atmosphere nodes share one bootstrap peer that runs nothing but the
//! DHT (a bare libp2p Kademlia node, as a public bootstrap peer built on any
//! libp2p implementation could be). It never learns the nodes' addresses from
//! them, so it cannot introduce them to each other: neither gossip nor sync
//! carries the provider's routes to the asker. Only the provider record does.

mod common;

use std::time::Duration;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};
use futures::StreamExt;
use libp2p::identity::{Keypair, PeerId, ed25519};
use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{self, RecordKey};
use libp2p::{Multiaddr, StreamProtocol, noise, tcp, yamux};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use common::*;

enum Ask {
    Providers(RecordKey, oneshot::Sender<Vec<PeerId>>),
}

/// A DHT-only peer on `/atmosphere/kad/1.0.0`; answers who provides a key.
async fn dht_peer(seed: u8) -> (Multiaddr, mpsc::Sender<Ask>) {
    let key: Keypair =
        ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes([seed; 32]).expect("32 bytes"))
            .into();
    let peer_id = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| {
            let config = kad::Config::new(StreamProtocol::new(atmosphere::wire::KAD_PROTOCOL));
            kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), config)
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.behaviour_mut().set_mode(Some(kad::Mode::Server));
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
            swarm.select_next_some().await
        {
            break address;
        }
    };
    let (tx, mut rx) = mpsc::channel::<Ask>(8);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ask = rx.recv() => match ask {
                    Some(Ask::Providers(key, reply)) => {
                        let found = swarm
                            .behaviour_mut()
                            .store_mut()
                            .providers(&key)
                            .into_iter()
                            .map(|r| r.provider)
                            .collect();
                        let _ = reply.send(found);
                    }
                    None => return,
                },
                _ = swarm.select_next_some() => {}
            }
        }
    });
    (format!("{addr}/p2p/{peer_id}").parse().expect("addr"), tx)
}

/// A `model: auto` chat request with one user message.
async fn ask(node: &atmosphere::node::Node, text: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": text}]}))
        .timeout(WAIT)
        .send()
        .await
        .expect("answered")
}

async fn providers(dht: &mpsc::Sender<Ask>, key: RecordKey) -> Vec<PeerId> {
    let (reply, rx) = oneshot::channel();
    dht.send(Ask::Providers(key, reply))
        .await
        .expect("dht peer");
    rx.await.expect("answer")
}

#[tokio::test]
async fn a_node_that_gossip_has_not_reached_finds_the_provider_in_the_dht() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let (boot, dht) = dht_peer(42).await;

    // The asker joins first and knows only the DHT peer.
    let dir_asker = tempfile::tempdir().expect("tempdir");
    let asker = start(mesh_config(
        Vec::new(),
        Vec::new(),
        dir_asker.path(),
        vec![boot.to_string()],
    ))
    .await;
    let asker_net = asker.network.clone().expect("mesh");
    eventually("the asker is connected to the DHT peer", || {
        let net = asker_net.clone();
        async move { net.peers().await.is_ok_and(|p| p.len() == 1) }
    })
    .await;

    // The provider joins through the same DHT peer and announces its kind
    // and domain there.
    let farm = spawn_echo(Echo::new("farm-backend", Flavour::Openai, &["llama3.2"])).await;
    let mut llama = farm_capabilities("farm")[0].clone();
    llama.backend = vec!["farm".into()];
    llama.domain = "Camelids".into();
    let dir_provider = tempfile::tempdir().expect("tempdir");
    let provider = start(mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![llama.clone()],
        dir_provider.path(),
        vec![boot.to_string()],
    ))
    .await;
    let kind_key = atmosphere::wire::kad::kind_key("llm/chat");
    let domain_key = atmosphere::wire::kad::domain_key("camelids");
    eventually("the DHT peer holds the provider's records", || {
        let dht = dht.clone();
        let (k, d) = (kind_key.clone(), domain_key.clone());
        let want = provider.peer_id;
        async move {
            providers(&dht, k).await.contains(&want) && providers(&dht, d).await.contains(&want)
        }
    })
    .await;

    // Nothing has told the asker about the provider.
    let peers = asker_net.peers().await.expect("peers");
    assert!(
        !peers
            .iter()
            .any(|p| p.peer_id == provider.peer_id.to_base58()),
        "the asker met the provider some other way: {peers:?}"
    );
    assert!(asker.catalog.table().is_empty());

    // A request that nothing known fits: the asker looks the kind up, fetches
    // the provider's routes and forwards the request there.
    let resp = ask(&asker, "What should I feed my alpacas in winter?").await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["x-atmosphere-route"], "farm/llama-expert");
    assert_eq!(
        resp.headers()["x-atmosphere-node"],
        provider.peer_id.to_base58().as_str()
    );
    let v: Value = resp.json().await.expect("json");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(content.starts_with("[farm-backend]"), "{content}");
    assert_eq!(
        metric(
            &asker,
            "atmosphere_capability_lookups_total{result=\"found\"}"
        )
        .await,
        1
    );

    // Questions nothing fits, asked right after: the first looks up what it
    // has not looked up yet (the near miss's domain) and finds nothing new; the
    // second finds every key looked up moments ago and skips the DHT.
    for _ in 0..2 {
        let resp = ask(&asker, "Quarterly revenue forecast for a semiconductor fab").await;
        assert_eq!(resp.status(), 404);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "no_capability_fits");
    }
    let lookups = |r: &'static str| {
        let asker = &asker;
        async move {
            metric(
                asker,
                &format!("atmosphere_capability_lookups_total{{result=\"{r}\"}}"),
            )
            .await
        }
    };
    assert_eq!(lookups("found").await, 1);
    assert_eq!(lookups("nothing_new").await, 1);
    assert_eq!(lookups("skipped").await, 1);

    asker.shutdown().await;
    provider.shutdown().await;
}

#[tokio::test]
async fn a_lone_node_with_nothing_fitting_gets_a_clear_error_and_asks_no_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(mesh_config(Vec::new(), Vec::new(), dir.path(), Vec::new())).await;
    let resp = ask(&node, "hello").await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "no_capability_fits");
    // The DHT had no peer to ask.
    assert_eq!(
        metric(
            &node,
            "atmosphere_capability_lookups_total{result=\"no_providers\"}"
        )
        .await,
        1
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_chat_with_an_image_looks_up_the_kind_that_sees() {
    let (boot, dht) = dht_peer(43).await;
    let vision = |id: &str, backend: &str, domain: &str, examples: &[&str]| {
        let mut c = capability(id, backend, "eye", "Looks at photos.", examples);
        c.kind = "vision/classify".parse().expect("kind");
        c.domain = domain.into();
        c
    };
    // The asker sees insects only; the camera trap is found in the DHT.
    let bugs = spawn_echo(Echo::new("bugs-backend", Flavour::Openai, &["eye"])).await;
    let dir_asker = tempfile::tempdir().expect("tempdir");
    let asker = start(mesh_config(
        vec![backend("bugs", BackendKind::Openai, bugs, false)],
        vec![vision(
            "insects/eye",
            "bugs",
            "insects",
            &["Which beetle is this?", "Is this moth rare?"],
        )],
        dir_asker.path(),
        vec![boot.to_string()],
    ))
    .await;
    let trap = spawn_echo(Echo::new("trap-backend", Flavour::Openai, &["eye"])).await;
    let dir_provider = tempfile::tempdir().expect("tempdir");
    let provider = start(mesh_config(
        vec![backend("trap", BackendKind::Openai, trap, false)],
        vec![vision(
            "wildlife/camera-trap",
            "trap",
            "wildlife",
            &[
                "What animal is in this photo?",
                "How many deer are in this picture?",
            ],
        )],
        dir_provider.path(),
        vec![boot.to_string()],
    ))
    .await;
    let kind_key = atmosphere::wire::kad::kind_key("vision/classify");
    eventually("the DHT peer holds the provider's kind", || {
        let (dht, k, want) = (dht.clone(), kind_key.clone(), provider.peer_id);
        async move { providers(&dht, k).await.contains(&want) }
    })
    .await;
    let png = "data:image/png;base64,iVBORw0KGgo=";
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", asker.http_addr))
        .json(
            &json!({"model": "auto", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Which animal left these tracks by the river?"},
                {"type": "image_url", "image_url": {"url": png}},
            ]}]}),
        )
        .timeout(WAIT)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["x-atmosphere-route"], "wildlife/camera-trap");
    assert_eq!(
        resp.headers()["x-atmosphere-node"],
        provider.peer_id.to_base58().as_str()
    );
    asker.shutdown().await;
    provider.shutdown().await;
}
