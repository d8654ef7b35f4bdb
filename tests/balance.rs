//! Several providers of one capability share its requests: copies on other
//! nodes, and the backends of one capability on this node. A session key
//! keeps a conversation on one provider; `POST /v1/route` shows the group.

mod common;

use std::collections::HashMap;

use atmosphere::config::BackendKind;
use atmosphere::echo::{Echo, Flavour};
use atmosphere::node::Node;
use serde_json::{Value, json};

use common::*;

/// Sends `n` chats for `model` from `clients` clients at once, `headers` on
/// each; counts who answered (`x-atmosphere-node`, and the backend's name
/// from the reply), and fails on any error.
async fn spread(
    node: &Node,
    body: Value,
    headers: &[(&str, &str)],
    clients: usize,
    n: usize,
) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", node.http_addr);
    let tasks = (0..clients).map(|_| {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        async move {
            let mut out = Vec::new();
            for _ in 0..n / clients {
                let mut req = http.post(&url).json(&body);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let resp = req.send().await.expect("send");
                let status = resp.status();
                let node = resp
                    .headers()
                    .get("x-atmosphere-node")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let reply: Value = resp.json().await.expect("json");
                assert_eq!(status, 200, "{reply}");
                let content = reply["choices"][0]["message"]["content"]
                    .as_str()
                    .expect("content");
                let backend = content[1..].split(']').next().expect("name").to_owned();
                out.push((node, backend));
            }
            out
        }
    });
    let mut nodes = HashMap::new();
    let mut backends = HashMap::new();
    for (node, backend) in futures::future::join_all(tasks).await.into_iter().flatten() {
        *nodes.entry(node).or_default() += 1;
        *backends.entry(backend).or_default() += 1;
    }
    (nodes, backends)
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Reverse a string in Rust."}]})
}

async fn route(node: &Node, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("http://{}/v1/route", node.http_addr))
        .json(&body)
        .send()
        .await
        .expect("route")
        .json()
        .await
        .expect("json")
}

/// Nodes bravo and charlie (data in `dirs[0]`, `dirs[1]`), each offering
/// `farm/coder` on its own echo backend that answers after `latency`.
async fn bravo_and_charlie(dirs: &[tempfile::TempDir], latency: std::time::Duration) -> Vec<Node> {
    let mut providers = Vec::new();
    for (i, name) in ["bravo", "charlie"].into_iter().enumerate() {
        let mut echo = Echo::new(&format!("{name}-gpu"), Flavour::Openai, &["qwen2.5-coder"]);
        echo.latency = latency;
        let echo = spawn_echo(echo).await;
        let mut config = mesh_config(
            vec![backend("gpu", BackendKind::Openai, echo, false)],
            vec![farm_capabilities("gpu").remove(1)],
            dirs[i].path(),
            Vec::new(),
        );
        config.node.name = name.into();
        // An echo that answers at once lets 8 clients send far more than
        // the default 100 requests/s one peer may send, which is not what
        // is tested here.
        config.mesh.as_mut().expect("mesh").peer_rate = 100_000;
        providers.push(start(config).await);
    }
    providers
}

#[tokio::test]
async fn copies_on_two_nodes_share_the_requests_and_a_session_stays_on_one() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let providers = bravo_and_charlie(&dirs, std::time::Duration::ZERO).await;
    let mut through = Vec::new();
    for p in &providers {
        through.push(mesh_addr(p).await);
    }
    let alpha = start(mesh_config(Vec::new(), Vec::new(), dirs[2].path(), through)).await;
    eventually("alpha lists both copies", || async {
        get_json(&alpha, "/v1/mesh/capabilities").await["data"]
            .as_array()
            .is_some_and(|d| d.iter().filter(|c| c["id"] == "farm/coder").count() == 2)
    })
    .await;

    // 8 clients at once, 200 requests: both nodes answer a fair part (before
    // load-aware routing, one of them answered all 200).
    let (nodes, _) = spread(&alpha, chat("farm/coder"), &[], 8, 200).await;
    for p in &providers {
        let n = nodes.get(&p.peer_id.to_base58()).copied().unwrap_or(0);
        assert!(n >= 40, "{nodes:?}");
    }

    // The group and its numbers.
    let shown = route(&alpha, json!({"model": "farm/coder"})).await;
    let group = &shown["group"];
    assert_eq!(group["strategy"], "least_cost", "{shown}");
    let members = group["members"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{shown}");
    let sent: u64 = members
        .iter()
        .map(|m| m["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sent, 200, "{shown}");
    assert!(
        members.iter().all(|m| m["ttfb_ms"].as_f64().is_some()),
        "{shown}"
    );
    // By meaning too: the coder's copies form the group of `auto`.
    let shown = route(
        &alpha,
        json!({"input": "Why does my Python script raise a KeyError?"}),
    )
    .await;
    assert_eq!(shown["decision"]["chosen"]["id"], "farm/coder", "{shown}");
    assert_eq!(
        shown["group"]["members"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );

    // A session key keeps the conversation on one node, by header or by the
    // body's `user`; different sessions may land on either.
    for headers in [
        [("x-session-id", "conversation-1")],
        [("x-session-id", "conversation-2")],
    ] {
        let (nodes, _) = spread(&alpha, chat("farm/coder"), &headers, 4, 40).await;
        assert_eq!(nodes.len(), 1, "{nodes:?}");
    }
    let mut body = chat("farm/coder");
    body["user"] = json!("alice");
    let (nodes, _) = spread(&alpha, body, &[], 4, 40).await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let homes: std::collections::HashSet<String> = {
        let mut homes = std::collections::HashSet::new();
        for i in 0..16 {
            let header = format!("user-{i}");
            let (nodes, _) = spread(
                &alpha,
                chat("farm/coder"),
                &[("x-session-id", &header)],
                1,
                2,
            )
            .await;
            homes.extend(nodes.into_keys());
        }
        homes
    };
    assert_eq!(homes.len(), 2, "16 sessions all on one node");

    alpha.shutdown().await;
    for p in providers {
        p.shutdown().await;
    }
}

#[tokio::test]
async fn one_capability_on_several_backends_of_a_node_uses_each_skips_a_dead_one_and_takes_it_back()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let gpu0 = spawn_echo(Echo::new("gpu0", Flavour::Openai, &["qwen2.5-coder"])).await;
    let gpu1 = spawn_echo(Echo::new("gpu1", Flavour::Openai, &["qwen2.5-coder"])).await;
    let gone = dead_addr().await;
    let mut coder = farm_capabilities("gpu0").remove(1);
    coder.backend = vec!["gpu0".into(), "gpu1".into(), "gone".into()];
    let node = start(config(
        vec![
            backend("gpu0", BackendKind::Openai, gpu0, false),
            backend("gpu1", BackendKind::Openai, gpu1, false),
            backend("gone", BackendKind::Openai, gone, false),
        ],
        vec![coder],
        dir.path(),
    ))
    .await;
    let (_, backends) = spread(&node, chat("farm/coder"), &[], 8, 160).await;
    assert!(
        backends.get("gpu0").is_some_and(|n| *n >= 30),
        "{backends:?}"
    );
    assert!(
        backends.get("gpu1").is_some_and(|n| *n >= 30),
        "{backends:?}"
    );
    assert_eq!(backends.len(), 2, "{backends:?}");

    let shown = route(&node, json!({"model": "farm/coder"})).await;
    let backends_shown: Vec<&str> = shown["group"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .chain(shown["group"]["fallbacks"].as_array().expect("fallbacks"))
        .filter_map(|m| m["backend"].as_str())
        .collect();
    assert_eq!(backends_shown.len(), 3, "{shown}");

    // The dead backend comes back: it gets requests again.
    spawn_echo_at(
        Echo::new("revived", Flavour::Openai, &["qwen2.5-coder"]),
        gone,
    )
    .await;
    eventually("the revived backend answers a share", || async {
        let (_, backends) = spread(&node, chat("farm/coder"), &[], 4, 40).await;
        backends.contains_key("revived")
    })
    .await;
    node.shutdown().await;
}

/// Delta keeps bravo busy with requests pinned to it; bravo says so in its
/// route updates, and alpha, which sent bravo nothing yet, sends its own
/// requests to charlie (both equally fast otherwise). The updates that
/// carry only load do not rebuild alpha's route table.
#[tokio::test]
async fn a_provider_busy_with_another_node_s_requests_gets_fewer_of_this_one_s() {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let providers = bravo_and_charlie(&dirs, std::time::Duration::from_millis(300)).await;
    let bravo_id = providers[0].peer_id.to_base58();
    let charlie_id = providers[1].peer_id.to_base58();
    let to_bravo = mesh_addr(&providers[0]).await;
    let delta = start(mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[2].path(),
        vec![to_bravo.clone()],
    ))
    .await;
    let alpha = start(mesh_config(
        Vec::new(),
        Vec::new(),
        dirs[3].path(),
        vec![to_bravo, mesh_addr(&providers[1]).await],
    ))
    .await;
    // Delta is joined to bravo only (it may hear of charlie through it).
    for (node, providers) in [(&alpha, 2), (&delta, 1)] {
        eventually("the providers are listed", || async {
            let listed = get_json(node, "/v1/mesh/capabilities").await;
            listed["data"].as_array().is_some_and(|d| {
                d.iter()
                    .filter(|c| c["id"] == "farm/coder" && c["available"] == true)
                    .count()
                    >= providers
            })
        })
        .await;
    }
    eventually("alpha's route table holds both copies", || async {
        let v = route(&alpha, json!({"model": "farm/coder"})).await;
        v["group"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    })
    .await;
    let builds = metric(&alpha, "atmosphere_route_table_builds_total").await;

    // Delta: 8 clients back to back, every request for bravo's copy.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = (0..8).map(|_| {
        let (delta_addr, stop) = (delta.http_addr, stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.is_cancelled() {
                let resp = http
                    .post(format!("http://{delta_addr}/v1/chat/completions"))
                    .json(&chat("farm/coder@bravo"))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(resp.status(), 200);
            }
        })
    });
    let load: Vec<_> = load.collect();
    let member = |v: &Value, node: &str| {
        v["group"]["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["node"] == node).cloned())
            .unwrap_or(Value::Null)
    };
    eventually("alpha hears that bravo is busy", || async {
        let v = route(&alpha, json!({"model": "farm/coder"})).await;
        member(&v, &bravo_id)["advertised"].as_u64().unwrap_or(0) >= 6
    })
    .await;
    let (nodes, _) = spread(&alpha, chat("farm/coder"), &[], 1, 12).await;
    let v = route(&alpha, json!({"model": "farm/coder"})).await;
    stop.cancel();
    for task in load {
        task.await.expect("delta's client");
    }
    assert_eq!(
        nodes.get(&charlie_id),
        Some(&12),
        "alpha's requests went to the busy provider too: {nodes:?}; {v}"
    );
    assert!(
        member(&v, &bravo_id)["cost"].as_f64() > member(&v, &charlie_id)["cost"].as_f64(),
        "{v}"
    );
    assert_eq!(
        metric(&alpha, "atmosphere_route_table_builds_total").await,
        builds,
        "alpha rebuilt its table for updates that changed only load"
    );
}
