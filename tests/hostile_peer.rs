//! A peer that sends garbage, forged and replayed route updates, or a valid
//! update in an unsigned gossipsub envelope: every one is dropped and counted,
//! the peer's gossip score goes negative, and the node keeps serving. The hostile peer is a bare libp2p gossipsub swarm, as a
//! peer built on any libp2p implementation could be.

mod common;

use std::time::Duration;

use atmosphere::wire::Message;
use atmosphere::wire::route::{RouteBody, RouteUpdate, SignedRouteUpdate, VERSION};
use libp2p::Multiaddr;

use common::hostile::*;
use common::*;

fn update(seq: u64) -> RouteUpdate {
    RouteUpdate {
        version: VERSION,
        seq,
        ttl_secs: 30,
        node_name: "mallory".into(),
        addrs: Vec::new(),
        dim: 384,
        body: RouteBody::Full(Vec::new()),
        certificate: None,
    }
}

#[tokio::test]
async fn garbage_forgeries_and_replays_are_dropped_counted_and_penalised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(mesh_config(Vec::new(), Vec::new(), dir.path(), Vec::new())).await;
    let addr: Multiaddr = mesh_addr(&node).await.parse().expect("addr");
    let origin = key(67);
    // Sequence numbers are the origin's clock in ms: these are from now on.
    let now_ms = unix_ms();
    let signed = |seq| SignedRouteUpdate::sign(&update(now_ms + seq), &origin).expect("sign");

    // A replay: a valid update, then an older one of the same origin.
    let mut replayer = hostile(66, &addr, true).await;
    send(
        &mut replayer,
        vec![
            signed(2_000).encode().expect("e"),
            signed(1_000).encode().expect("e"),
        ],
    )
    .await;
    // Bytes that are no route update at all.
    let mut garbler = hostile(68, &addr, true).await;
    send(&mut garbler, vec![b"\x00\xffnot a route update".to_vec()]).await;
    // A forgery: a valid update with its payload altered after signing.
    let mut forger = hostile(69, &addr, true).await;
    let mut forged = signed(3_000);
    forged.payload[3] ^= 0x55;
    send(&mut forger, vec![forged.encode().expect("e")]).await;
    // A valid, newer update in an envelope without a gossipsub signature:
    // gossipsub drops it before the node sees it, and counts it.
    let mut unsigned = hostile(70, &addr, false).await;
    send(&mut unsigned, vec![signed(4_000).encode().expect("e")]).await;

    let mut swarms = [replayer, garbler, forger, unsigned];
    wait_counts(
        &node,
        &mut swarms,
        &[("accepted", 1), ("stale", 1), ("invalid", 2)],
    )
    .await;
    // Gossipsub counts the unsigned envelope it dropped, beside the three
    // updates the node rejected.
    let topic = "{hash=\"atmosphere/routes/1\"}";
    wait_lines(
        &node,
        &mut swarms,
        &[
            (
                format!("atmosphere_libp2p_gossipsub_invalid_messages_per_topic_total{topic}"),
                1,
            ),
            (
                format!("atmosphere_libp2p_gossipsub_rejected_messages_per_topic_total{topic}"),
                3,
            ),
        ],
    )
    .await;
    assert_eq!(
        metric(
            &node,
            "atmosphere_gossip_updates_total{result=\"accepted\"}"
        )
        .await,
        1,
        "the unsigned envelope's update was applied"
    );

    // Each sender of a bad update is scored down (graylisting ignores its
    // messages but keeps the connection, so it is still listed).
    let peers = get_json(&node, "/v1/mesh/peers").await;
    for seed in [66u8, 68, 69, 70] {
        let id = key(seed).public().to_peer_id().to_base58();
        let p = peers["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|p| p["peer_id"] == id.as_str())
            .unwrap_or_else(|| panic!("peer {seed} not listed: {peers}"));
        let score = p["score"].as_f64().expect("scored");
        assert!(
            score < 0.0,
            "peer {seed} sent a bad update but scores {score}"
        );
    }
    let health = reqwest::get(format!("http://{}/health", node.http_addr))
        .await
        .expect("health");
    assert_eq!(health.status(), 200, "the node keeps serving");
}

/// An origin that withdrew stays withdrawn: a replay of its earlier update,
/// sent after the withdrawal's TTL has passed, is refused as stale.
#[tokio::test]
async fn a_withdrawn_origin_is_not_replayed_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(mesh_config(Vec::new(), Vec::new(), dir.path(), Vec::new())).await;
    let addr: Multiaddr = mesh_addr(&node).await.parse().expect("addr");
    let origin = key(71);
    let now_ms = unix_ms();
    let at = |seq: u64, body: RouteBody| {
        let mut u = update(now_ms + seq);
        u.ttl_secs = 5;
        u.body = body;
        SignedRouteUpdate::sign(&u, &origin)
            .expect("sign")
            .encode()
            .expect("encode")
    };
    let full = at(1, RouteBody::Full(Vec::new()));
    let mut relay = hostile(72, &addr, true).await;
    send(&mut relay, vec![full.clone(), at(2, RouteBody::Withdraw)]).await;
    let mut swarms = [relay];
    wait_counts(&node, &mut swarms, &[("accepted", 1), ("withdrawn", 1)]).await;
    // Past the withdrawal's 5 s TTL, the first update comes again (a new
    // gossip message: another relay's envelope).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut replayer = hostile(73, &addr, true).await;
    send(&mut replayer, vec![full]).await;
    let mut swarms = [replayer];
    wait_counts(&node, &mut swarms, &[("stale", 1)]).await;
    assert_eq!(
        metric(
            &node,
            "atmosphere_gossip_updates_total{result=\"accepted\"}"
        )
        .await,
        1,
        "the withdrawn origin came back"
    );
}
