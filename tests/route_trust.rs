//! Route trust in an open mesh, tried as a hostile peer would: validly signed
//! updates that copy honest capabilities, announce vectors their texts do not
//! explain, or flood the table with fresh keys. Honest traffic stays with the
//! honest nodes, liars are dropped and counted, and a node that joins after a
//! flood is still listed.

mod common;

use std::time::Duration;

use atmosphere::config::{BackendKind, EmbedderConfig};
use atmosphere::echo::{Echo, Flavour};
use atmosphere::embed::Embedder;
use atmosphere::routing::{capability_vector, fit};
use atmosphere::wire::Message;
use atmosphere::wire::route::{
    CapabilityRecord, RouteBody, RouteUpdate, SignedRouteUpdate, VERSION, WireVector,
};
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use serde_json::json;

use common::hostile::*;
use common::*;

const LLAMA_QUESTIONS: [&str; 4] = [
    "How much hay does a llama need each day?",
    "My alpaca is limping, what should I do?",
    "How often should I trim my llama's toenails?",
    "What fencing keeps alpacas safe from dogs?",
];
const CODE_QUESTIONS: [&str; 4] = [
    "Write a Python function that sorts a list of tuples.",
    "How do I fix a segmentation fault in my C program?",
    "Why does the Rust borrow checker reject my loop?",
    "How do I read a CSV file in Go?",
];

/// A capability record as an honest origin builds it: vectors from its own
/// texts, with the description weight of the defaults.
async fn honest_record(
    embedder: &Embedder,
    id: &str,
    description: &str,
    examples: &[&str],
) -> CapabilityRecord {
    let profile = embedder.embed_one(description).await.expect("embed");
    let ex = embedder
        .embed(examples.iter().map(|e| (*e).to_owned()).collect())
        .await
        .expect("embed")
        .vectors;
    CapabilityRecord {
        id: id.into(),
        kind: "llm/chat".into(),
        domain: String::new(),
        topics: Vec::new(),
        description: description.into(),
        vector: WireVector::quantize(&capability_vector(&ex, &profile, 0.2)),
        prototypes: Vec::new(),
        available: true,
        in_flight: 0,
        reference: fit::reference(&ex, &profile, 0.2),
        examples: examples.iter().map(|e| (*e).to_owned()).collect(),
        input_schema: None,
        inputs: Vec::new(),
    }
}

fn signed(origin: &Keypair, records: Vec<CapabilityRecord>) -> Vec<u8> {
    let update = RouteUpdate {
        version: VERSION,
        seq: unix_ms(),
        ttl_secs: 60,
        node_name: "mallory".into(),
        addrs: Vec::new(),
        dim: 384,
        body: RouteBody::Full(records),
        certificate: None,
    };
    SignedRouteUpdate::sign(&update, origin)
        .expect("sign")
        .encode()
        .expect("encode")
}

/// The node `auto` chooses for `input`, per `POST /v1/route`.
async fn routed_to(node: &atmosphere::node::Node, input: &str) -> (String, String) {
    let d = route_decision(node, input).await;
    let chosen = &d["chosen"];
    (
        chosen["id"].as_str().unwrap_or("none").to_owned(),
        chosen["node"].as_str().unwrap_or("none").to_owned(),
    )
}

/// Runs a chat for `model` on `node`; the node that served it (the
/// `x-atmosphere-node` header of a 200 answer).
async fn served_by(node: &atmosphere::node::Node, model: &str, question: &str) -> String {
    let chat = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", node.http_addr))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": question}]}))
        .send()
        .await
        .expect("chat");
    assert_eq!(chat.status(), 200);
    chat.headers()["x-atmosphere-node"]
        .to_str()
        .expect("header")
        .to_owned()
}

async fn listed(node: &atmosphere::node::Node) -> Vec<(String, String)> {
    get_json(node, "/v1/mesh/capabilities").await["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_owned(),
                c["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn copied_and_crafted_capabilities_get_none_of_the_honest_traffic() {
    let embedder = Embedder::load(&EmbedderConfig {
        threads: 1,
        ..Default::default()
    })
    .expect("model fetched by scripts/fetch-model.sh");
    let farm = spawn_echo(Echo::new(
        "farm",
        Flavour::Openai,
        &["llama3.2", "qwen2.5-coder"],
    ))
    .await;
    let [mut llama, coder] = <[_; 2]>::try_from(farm_capabilities("farm")).expect("two");
    // More examples than a route update carries: B announces the first 16,
    // and the vector it announces is theirs, so A does not refute it.
    llama
        .examples
        .extend((0..17).map(|i| format!("Question {i} on shearing, feeding and housing llamas")));

    // A serves the coder itself; B, joined to A, the llama expert.
    let dir_a = tempfile::tempdir().expect("tempdir");
    let a = start(mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![coder.clone()],
        dir_a.path(),
        Vec::new(),
    ))
    .await;
    let a_addr = mesh_addr(&a).await;
    let dir_b = tempfile::tempdir().expect("tempdir");
    let b = start(mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![llama.clone()],
        dir_b.path(),
        vec![a_addr.clone()],
    ))
    .await;
    let (a_id, b_id) = (a.peer_id.to_base58(), b.peer_id.to_base58());
    eventually("A routes to B's llama expert", || async {
        listed(&a)
            .await
            .contains(&("farm/llama-expert".into(), b_id.clone()))
    })
    .await;

    fn examples(c: &atmosphere::config::CapabilityConfig) -> Vec<&str> {
        c.examples
            .iter()
            .take(atmosphere::wire::route::MAX_EXAMPLES)
            .map(String::as_str)
            .collect()
    }
    let llama_copy = honest_record(
        &embedder,
        "farm/llama-expert",
        &llama.description,
        &examples(&llama),
    )
    .await;
    let coder_copy = honest_record(
        &embedder,
        "farm/coder",
        &coder.description,
        &examples(&coder),
    )
    .await;
    let mut llama_renamed = llama_copy.clone();
    llama_renamed.id = "mallory/llamas".into();
    // A liar: gardening texts under the llama expert's vector.
    let mut liar = honest_record(
        &embedder,
        "mallory/garden",
        "Tips for growing tomatoes and roses.",
        &["When should I plant tomatoes?", "How do I prune roses?"],
    )
    .await;
    liar.vector = llama_copy.vector.clone();
    // A crafter: a vector at the centre of the questions users ask, under
    // bland texts.
    let questions: Vec<String> = LLAMA_QUESTIONS
        .iter()
        .chain(&CODE_QUESTIONS)
        .map(|q| (*q).to_owned())
        .collect();
    let qv = embedder.embed(questions).await.expect("embed").vectors;
    let mut crafted = honest_record(
        &embedder,
        "mallory/helper",
        "A helpful assistant.",
        &["Hello"],
    )
    .await;
    crafted.vector = WireVector::quantize(&capability_vector(&qv, &qv[0], 0.0));

    let addr: Multiaddr = a_addr.parse().expect("addr");
    let mut relay = hostile(90, &addr, true).await;
    let (copier, lying, crafting) = (key(91), key(92), key(93));
    send(
        &mut relay,
        vec![
            signed(&copier, vec![llama_copy, coder_copy, llama_renamed]),
            signed(&lying, vec![liar]),
            signed(&crafting, vec![crafted]),
        ],
    )
    .await;
    let mut swarms = [relay];
    wait_lines(
        &a,
        &mut swarms,
        &[(
            "atmosphere_remote_refusals_total{result=\"vector_mismatch\"}".to_owned(),
            2,
        )],
    )
    .await;
    let copier_id = copier.public().to_peer_id().to_base58();
    eventually("A lists the copies", || async {
        listed(&a)
            .await
            .contains(&("mallory/llamas".into(), copier_id.clone()))
    })
    .await;
    assert_eq!(
        metric(
            &a,
            "atmosphere_remote_refusals_total{result=\"vector_mismatch\"}"
        )
        .await,
        2,
        "only the two lies are refuted"
    );
    let nodes: Vec<String> = listed(&a).await.into_iter().map(|(_, n)| n).collect();
    for liar in [&lying, &crafting] {
        let id = liar.public().to_peer_id().to_base58();
        assert!(!nodes.contains(&id), "a refuted origin is still routed to");
    }

    // Every question goes where it went before the hostile peer came.
    for q in LLAMA_QUESTIONS {
        assert_eq!(
            routed_to(&a, q).await,
            ("farm/llama-expert".into(), b_id.clone()),
            "{q}"
        );
    }
    for q in CODE_QUESTIONS {
        assert_eq!(
            routed_to(&a, q).await,
            ("farm/coder".into(), a_id.clone()),
            "{q}"
        );
    }
    // Explicit ids too, and chats really run on B: the relayed copies are
    // no part of the group that shares the requests (only fallbacks), by id
    // or by meaning.
    for _ in 0..20 {
        assert_eq!(
            served_by(&a, "farm/llama-expert", LLAMA_QUESTIONS[0]).await,
            b_id
        );
        assert_eq!(served_by(&a, "auto", LLAMA_QUESTIONS[1]).await, b_id);
    }
    let shown = reqwest::Client::new()
        .post(format!("http://{}/v1/route", a.http_addr))
        .json(&json!({"input": LLAMA_QUESTIONS[0]}))
        .send()
        .await
        .expect("route")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    let members: Vec<&str> = shown["group"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["node"].as_str())
        .collect();
    assert_eq!(members, [b_id.as_str()], "{shown}");
}

#[tokio::test]
async fn a_node_joining_after_a_sybil_flood_is_listed() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let a = start(mesh_config(
        Vec::new(),
        Vec::new(),
        dir_a.path(),
        Vec::new(),
    ))
    .await;
    let a_addr = mesh_addr(&a).await;
    let addr: Multiaddr = a_addr.parse().expect("addr");

    // One peer relays 512 fresh origins, one valid capability each.
    let embedder = Embedder::load(&EmbedderConfig {
        threads: 1,
        ..Default::default()
    })
    .expect("model fetched by scripts/fetch-model.sh");
    let record = honest_record(&embedder, "sybil/x", "Answers anything at all.", &[]).await;
    let mut relay = hostile(94, &addr, true).await;
    let flood: Vec<Vec<u8>> = (0..512u32)
        .map(|n| {
            let mut seed = [3u8; 32];
            seed[..4].copy_from_slice(&n.to_le_bytes());
            let secret = libp2p::identity::ed25519::SecretKey::try_from_bytes(seed).expect("32");
            let k: Keypair = libp2p::identity::ed25519::Keypair::from(secret).into();
            signed(&k, vec![record.clone()])
        })
        .collect();
    for m in flood {
        relay.behaviour_mut().publish(topic(), m).expect("publish");
    }
    let mut swarms = [relay];
    wait_counts(&a, &mut swarms, &[("accepted", 256), ("relay_full", 200)]).await;

    // An honest node joins later, through A.
    let farm = spawn_echo(Echo::new("farm", Flavour::Openai, &["llama3.2"])).await;
    let dir_c = tempfile::tempdir().expect("tempdir");
    let c = start(mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![farm_capabilities("farm")[0].clone()],
        dir_c.path(),
        vec![a_addr.clone()],
    ))
    .await;
    let c_id = c.peer_id.to_base58();
    let check = async {
        loop {
            for s in swarms.iter_mut() {
                let _ = tokio::time::timeout(
                    Duration::from_millis(20),
                    futures::StreamExt::select_next_some(s),
                )
                .await;
            }
            if listed(&a)
                .await
                .contains(&("farm/llama-expert".into(), c_id.clone()))
            {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, check)
        .await
        .expect("the honest node is listed after the flood");
    let held = metric(&a, "atmosphere_remote_origins").await;
    assert!(held <= 257, "{held} origins held");
}

/// `mesh.trusted`: a copy of an id on a trusted node goes before the copy of a
/// node known longer, ranks above it for `auto`, and shows as `allowed`;
/// `routing.auto_origins = "trusted"` keeps `auto` off strangers.
#[tokio::test]
async fn trusted_nodes_go_before_strangers() {
    let farm = spawn_echo(Echo::new("farm", Flavour::Openai, &["llama3.2"])).await;
    let llama = farm_capabilities("farm")[0].clone();
    let provider = |dir: &std::path::Path, bootstrap: Vec<String>| {
        mesh_config(
            vec![backend("farm", BackendKind::Openai, farm, false)],
            vec![llama.clone()],
            dir,
            bootstrap,
        )
    };
    // The stranger joins first (known longest), the trusted node later;
    // the stranger has taken the trusted node's name.
    let dir_s = tempfile::tempdir().expect("tempdir");
    let mut s = provider(dir_s.path(), Vec::new());
    s.node.name = "barn".into();
    let stranger = start(s).await;
    let s_addr = mesh_addr(&stranger).await;
    let dir_t = tempfile::tempdir().expect("tempdir");
    let mut t = provider(dir_t.path(), vec![s_addr.clone()]);
    t.node.name = "barn".into();
    let trusted = start(t).await;
    let dir_a = tempfile::tempdir().expect("tempdir");
    let mut config = mesh_config(Vec::new(), Vec::new(), dir_a.path(), vec![s_addr]);
    config.mesh.as_mut().expect("mesh").trusted = vec![trusted.peer_id.to_base58()];
    let a = start(config).await;
    let (s_id, t_id) = (stranger.peer_id.to_base58(), trusted.peer_id.to_base58());
    eventually("A lists both copies", || async {
        let l = listed(&a).await;
        l.contains(&("farm/llama-expert".into(), s_id.clone()))
            && l.contains(&("farm/llama-expert".into(), t_id.clone()))
    })
    .await;
    let d = route_decision(&a, LLAMA_QUESTIONS[0]).await;
    assert_eq!(d["chosen"]["node"], t_id.as_str(), "{d}");
    assert_eq!(d["chosen"]["trust"], "allowed");
    let other = d["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| c["node"] == s_id.as_str())
        .expect("the stranger's copy is listed");
    assert_eq!(other["trust"], "stranger");
    assert_eq!(
        served_by(&a, "farm/llama-expert", LLAMA_QUESTIONS[1]).await,
        t_id
    );
    // A name pin goes to the trusted node that uses the name: a stranger
    // (even one connected to A) that takes it does not make it ambiguous.
    assert_eq!(
        served_by(&a, "farm/llama-expert@barn", LLAMA_QUESTIONS[1]).await,
        t_id
    );

    // Only trusted nodes for auto: once the trusted node is gone, auto
    // refuses rather than use the stranger; the explicit id still works.
    trusted.shutdown().await;
    eventually("the trusted node's routes are withdrawn", || async {
        !listed(&a)
            .await
            .contains(&("farm/llama-expert".into(), t_id.clone()))
    })
    .await;
    let dir_b = tempfile::tempdir().expect("tempdir");
    let mut config = mesh_config(
        Vec::new(),
        Vec::new(),
        dir_b.path(),
        vec![mesh_addr(&a).await],
    );
    config.routing.auto_origins = atmosphere::config::AutoOrigins::Trusted;
    let b = start(config).await;
    eventually("B lists the stranger's copy", || async {
        listed(&b)
            .await
            .contains(&("farm/llama-expert".into(), s_id.clone()))
    })
    .await;
    let d = route_decision(&b, LLAMA_QUESTIONS[0]).await;
    assert!(d["chosen"].is_null(), "{d}");
    assert_eq!(d["candidates"][0]["eligible"], false);
    assert_eq!(
        served_by(&b, "farm/llama-expert", LLAMA_QUESTIONS[1]).await,
        s_id
    );
}
