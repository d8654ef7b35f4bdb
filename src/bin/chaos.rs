//! `chaos`: a hostile peer and client for the benches and the testnet test
//! (README "Budgets"). It attacks one node with what an idle or trickling
//! holder would do, each attack from fresh keys, renewed as the node cuts
//! it off, until it is stopped (or `--seconds` pass):
//!
//! - `idle-streams`: 9 fresh keys open 8 `/atmosphere/stream/1.0.0` streams
//!   each and send nothing;
//! - `upload-trickle`: 3 fresh keys announce 32 MiB uploads of
//!   `--capability`, then send a byte every 5 s;
//! - `body-trickle`: 5 HTTP connections declare 32 MiB chat bodies and send a
//!   byte every 5 s.
//!
//! Every 10 s it prints what it holds. Only for meshes and machines of your
//! own: it sends to the addresses it is given.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use tokio::io::AsyncWriteExt as _;

use atmosphere::network::frames;
use atmosphere::wire::Message;
use atmosphere::wire::intent::{self, Operation, UploadRequest};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Attack {
    IdleStreams,
    UploadTrickle,
    BodyTrickle,
}

#[derive(Parser)]
#[command(about = "Attacks one node as idle and trickling holders would")]
struct Args {
    /// The node's mesh address (`/dns4/host/tcp/11450`; `/p2p/<id>` not needed).
    #[arg(long)]
    mesh: Option<Multiaddr>,
    /// The node's HTTP address (`host:port`).
    #[arg(long)]
    http: Option<String>,
    /// Attacks to run together; repeat or separate by commas.
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    attack: Vec<Attack>,
    /// The capability uploads announce (one the node offers the mesh).
    #[arg(long, default_value = "farm/llama-expert")]
    capability: String,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

/// What the attacks hold now.
#[derive(Default)]
struct Held {
    streams: AtomicUsize,
    uploads: AtomicUsize,
    bodies: AtomicUsize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let needs_mesh = args
        .attack
        .iter()
        .any(|a| matches!(a, Attack::IdleStreams | Attack::UploadTrickle));
    let mesh = match (&args.mesh, needs_mesh) {
        (Some(m), _) => Some(m.clone()),
        (None, false) => None,
        (None, true) => fail("idle-streams and upload-trickle need --mesh"),
    };
    let http = match (&args.http, args.attack.contains(&Attack::BodyTrickle)) {
        (Some(h), _) => Some(h.clone()),
        (None, false) => None,
        (None, true) => fail("body-trickle needs --http"),
    };
    let held = Arc::new(Held::default());
    let mut tasks = Vec::new();
    for attack in &args.attack {
        let held = held.clone();
        tasks.push(match attack {
            Attack::IdleStreams => {
                tokio::spawn(idle_streams(mesh.clone().expect("checked above"), held))
            }
            Attack::UploadTrickle => tokio::spawn(upload_trickle(
                mesh.clone().expect("checked above"),
                args.capability.clone(),
                held,
            )),
            Attack::BodyTrickle => {
                tokio::spawn(body_trickle(http.clone().expect("checked above"), held))
            }
        });
    }
    let report = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            println!(
                "chaos: holding {} idle streams, {} trickled uploads, {} trickled bodies",
                held.streams.load(Ordering::Relaxed),
                held.uploads.load(Ordering::Relaxed),
                held.bodies.load(Ordering::Relaxed)
            );
        }
    };
    if args.seconds > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(args.seconds), report).await;
    } else {
        report.await;
    }
    for t in tasks {
        t.abort();
    }
}

fn fail(why: &str) -> ! {
    eprintln!("chaos: {why}");
    std::process::exit(2);
}

/// A bare libp2p peer with a fresh key, connected to `addr`: its stream
/// control and the node's PeerId (learnt on connecting). Retries until the
/// node answers.
async fn connect(addr: &Multiaddr) -> (libp2p_stream::Control, PeerId) {
    loop {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp")
            .with_dns()
            .expect("dns")
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        if swarm.dial(addr.clone()).is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => return Some(peer_id),
                    SwarmEvent::OutgoingConnectionError { .. } => return None,
                    _ => {}
                }
            }
        })
        .await;
        let Ok(Some(peer)) = connected else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let control = swarm.behaviour().new_control();
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        return (control, peer);
    }
}

/// Nine fresh keys holding 8 silent stream-protocol streams each, opened
/// again a little before the node closes them.
async fn idle_streams(addr: Multiaddr, held: Arc<Held>) {
    let mut peers = Vec::new();
    for _ in 0..9 {
        peers.push(connect(&addr).await);
    }
    let protocol = StreamProtocol::new(atmosphere::wire::STREAM_PROTOCOL);
    loop {
        let mut streams = Vec::new();
        for (control, node) in &mut peers {
            for _ in 0..8 {
                let opened = tokio::time::timeout(
                    Duration::from_secs(2),
                    control.open_stream(*node, protocol.clone()),
                )
                .await;
                if let Ok(Ok(s)) = opened {
                    streams.push(s);
                }
            }
        }
        held.streams.store(streams.len(), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(8)).await;
        drop(streams);
    }
}

/// Three fresh keys announcing 32 MiB uploads of `capability`, then a byte
/// every 5 s, announced again as they are cut off.
async fn upload_trickle(addr: Multiaddr, capability: String, held: Arc<Held>) {
    let tasks = (0..3).map(|_| {
        let (addr, capability, held) = (addr.clone(), capability.clone(), held.clone());
        tokio::spawn(async move {
            let (mut control, node) = connect(&addr).await;
            loop {
                let protocol = StreamProtocol::new(atmosphere::wire::UPLOAD_PROTOCOL);
                let Ok(mut io) = control.open_stream(node, protocol).await else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                let head = UploadRequest {
                    version: intent::VERSION,
                    capability: capability.clone(),
                    operation: Operation::Chat,
                    stream: false,
                    body_len: 32 << 20,
                    deadline_ms: 60_000,
                    hops: 0,
                };
                let Ok(head) = head.encode() else {
                    return;
                };
                let mut prefix = unsigned_varint::encode::usize_buffer();
                let prefix = unsigned_varint::encode::usize(1 << 20, &mut prefix).to_vec();
                if frames::write(&mut io, &head).await.is_err()
                    || frames::read(&mut io, intent::MAX_FRAME_BYTES)
                        .await
                        .is_err()
                    || io.write_all(&prefix).await.is_err()
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                held.uploads.fetch_add(1, Ordering::Relaxed);
                while io.write_all(b"x").await.is_ok() && io.flush().await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                held.uploads.fetch_sub(1, Ordering::Relaxed);
            }
        })
    });
    futures::future::join_all(tasks).await;
}

/// Five HTTP connections declaring 32 MiB bodies, a byte every 5 s, opened
/// again as the node answers them.
async fn body_trickle(addr: String, held: Arc<Held>) {
    let tasks = (0..5).map(|_| {
        let (addr, held) = (addr.clone(), held.clone());
        tokio::spawn(async move {
            loop {
                let Ok(mut s) = tokio::net::TcpStream::connect(addr.as_str()).await else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let head = format!(
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    32 << 20
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                held.bodies.fetch_add(1, Ordering::Relaxed);
                while s.write_all(b" ").await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                held.bodies.fetch_sub(1, Ordering::Relaxed);
            }
        })
    });
    futures::future::join_all(tasks).await;
}
