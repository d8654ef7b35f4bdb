//! Interoperation with another libp2p implementation: py-libp2p (installed
//! into the test venv by scripts/test.sh; `ATMOSPHERE_PYTHON` names the
//! interpreter that has it) runs `tests/interop/peer.py`, a peer written from
//! `protocols/*.md` alone.
//!
//! Two nodes: the entry (no capabilities) and the provider, joined through the
//! entry. The foreign peer is told only the entry's address; it has to learn
//! the provider from signed gossip, find it through the DHT and dial it at the
//! addresses its provider record carries.

mod common;

use std::time::Duration;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};
use serde_json::Value;

use common::*;

const CAPABILITY: &str = "farm/llama-expert";

/// The gossipsub protocol ids `protocols/README.md` says the node speaks.
fn documented_gossipsub_versions() -> Vec<String> {
    let readme = include_str!("../protocols/README.md");
    let line = readme
        .lines()
        .find(|l| l.contains("gossipsub `/meshsub/"))
        .expect("the README names the gossipsub versions");
    line.split('`')
        .filter(|s| s.starts_with("/meshsub/"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_py_libp2p_peer_written_from_the_specs_uses_the_mesh() {
    let farm = spawn_echo(Echo::new("farm-backend", Flavour::Openai, &["llama3.2"])).await;
    let dir_entry = tempfile::tempdir().expect("tempdir");
    let mut entry_config = mesh_config(Vec::new(), Vec::new(), dir_entry.path(), Vec::new());
    // Refreshes every 2 s, so that the foreign peer, once in the gossip mesh,
    // hears the provider's next update soon.
    entry_config.mesh.as_mut().expect("mesh").ttl = Duration::from_secs(6);
    let entry = start(entry_config).await;
    let entry_addr = mesh_addr(&entry).await;

    let mut llama = farm_capabilities("farm")[0].clone();
    llama.domain = "camelids".into();
    let llama_examples = llama.examples.clone();
    let dir_provider = tempfile::tempdir().expect("tempdir");
    let mut provider_config = mesh_config(
        vec![backend("farm", BackendKind::Openai, farm, false)],
        vec![llama],
        dir_provider.path(),
        vec![entry_addr.clone()],
    );
    let mesh = provider_config.mesh.as_mut().expect("mesh");
    mesh.ttl = Duration::from_secs(6);
    // Two transports, so that the provider record has more than one address.
    mesh.listen.push("/ip4/127.0.0.1/udp/0/quic-v1".into());
    let provider = start(provider_config).await;
    eventually("the entry holds the provider's routes", || {
        let entry = &entry;
        async move {
            get_json(entry, "/v1/models").await["data"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["id"] == CAPABILITY))
        }
    })
    .await;

    let seen = run_python(
        "interop/peer.py",
        &[&entry_addr, "llm/chat", CAPABILITY],
        Duration::from_secs(240),
        "py-libp2p",
    )
    .await;
    let provider_id = provider.peer_id.to_base58();

    // Identify: the node says what it is and which protocols it serves, and
    // the gossipsub versions among them are the ones the README lists.
    let id = &seen["identify_entry"];
    assert!(
        id["agent_version"]
            .as_str()
            .is_some_and(|a| a.starts_with("atmosphere/")),
        "{id}"
    );
    let protocols: Vec<String> = id["protocols"]
        .as_array()
        .expect("protocols")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    for p in [
        "/atmosphere/sync/1.0.0",
        "/atmosphere/kad/1.0.0",
        "/atmosphere/intent/1.0.0",
        "/atmosphere/stream/1.0.0",
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
    ] {
        assert!(protocols.iter().any(|q| q == p), "{p} not in {protocols:?}");
    }
    let mut meshsub: Vec<String> = protocols
        .iter()
        .filter(|p| p.starts_with("/meshsub/"))
        .cloned()
        .collect();
    meshsub.sort();
    let mut documented = documented_gossipsub_versions();
    documented.sort();
    assert_eq!(meshsub, documented, "protocols/README.md is out of date");

    // Gossip: the provider's update reached the foreign peer through the
    // entry, signed by the provider (envelope and payload), and decoded as
    // route-gossip.md describes.
    let update = &seen["gossip"];
    assert_eq!(update["origin"], provider_id.as_str(), "{update}");
    assert_eq!(update["envelope_from"], provider_id.as_str());
    assert_eq!(update["envelope_signed"], true);
    assert_eq!(update["version"], 6);
    // An open mesh: no membership certificate.
    assert!(update.get("certificate").is_none(), "{update}");
    assert_eq!(update["ttl_secs"], 6);
    assert_eq!(update["dim"], 384);
    let cap = &update["capabilities"][0];
    assert_eq!(cap["id"], CAPABILITY);
    assert_eq!(cap["kind"], "llm/chat");
    assert_eq!(cap["domain"], "camelids");
    assert_eq!(cap["available"], true);
    assert!(cap["reference"].is_f64(), "{cap}");
    // Not a tool: no input schema (route-gossip.md, version 5).
    assert!(cap["input_schema"].is_null(), "{cap}");
    // A chat model takes text (version 6).
    assert_eq!(cap["inputs"], serde_json::json!(["text"]), "{cap}");
    let examples: Vec<&str> = cap["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    let configured: Vec<&str> = llama_examples.iter().map(String::as_str).collect();
    assert_eq!(
        examples, configured,
        "the capability's examples travel with it"
    );

    // Sync: the entry's table holds the provider's signed update.
    let table = seen["sync"].as_array().expect("sync");
    assert!(
        table.iter().any(
            |u| u["origin"] == provider_id.as_str() && u["capabilities"][0]["id"] == CAPABILITY
        ),
        "{table:?}"
    );

    // DHT: the provider record names the provider once, with addresses
    // that each appear once (the peer dialled one of them to get this far).
    let record = seen["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .find(|p| p["peer"] == provider_id.as_str())
        .expect("the provider is in the DHT");
    let addrs: Vec<&str> = record["addrs"]
        .as_array()
        .expect("addrs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut unique = addrs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), addrs.len(), "duplicate addresses: {addrs:?}");
    assert!(
        seen["identify_provider"]["agent_version"]
            .as_str()
            .is_some_and(|a| a.starts_with("atmosphere/"))
    );

    // Intent: the chat ran on the provider's backend; refusals are answers.
    assert_eq!(seen["intent"]["status"], 200, "{}", seen["intent"]);
    let content = seen["intent"]["body"]["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(content.starts_with("[farm-backend]"), "{content}");
    assert!(content.contains("model=llama3.2"), "{content}");
    for (answer, status, code) in [
        ("refused_hops", 400, "invalid_forwarded_request"),
        ("refused_unknown", 404, "model_not_found"),
        ("refused_kind", 400, "wrong_capability_kind"),
    ] {
        assert_eq!(seen[answer]["status"], status, "{answer}: {}", seen[answer]);
        assert_eq!(seen[answer]["body"]["error"]["code"], code, "{answer}");
    }

    // Stream: Head 200, events, End, then a clean end of stream, never a
    // reset, so a library that drops buffered data on reset loses nothing.
    let stream = &seen["stream"];
    assert_eq!(stream["status"], 200, "{stream}");
    assert!(stream["failed"].is_null(), "{stream}");
    assert!(stream["frames"].as_u64().expect("frames") > 3, "{stream}");
    assert!(
        stream["text"]
            .as_str()
            .is_some_and(|t| t.contains("model=llama3.2")),
        "{stream}"
    );
    assert_eq!(stream["end"], "eof", "{stream}");
    let refused = &seen["stream_refused"];
    assert_eq!(refused["status"], 404, "{refused}");
    assert_eq!(refused["frames"], 3, "Head, the error, End: {refused}");
    assert_eq!(refused["end"], "eof", "{refused}");
}
