//! The command line: `atmosphere start | id | route | capabilities | peers |
//! health | mesh`. Client subcommands talk to a running node's HTTP API
//! (`--node`).

mod mesh;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::{Config, Overrides};
use crate::identity;
use crate::node::Node;

#[derive(Debug, Parser)]
#[command(
    name = "atmosphere",
    version,
    about = "A peer-to-peer capability mesh that routes OpenAI requests by meaning"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing syntax, e.g. `info,atmosphere=debug`); RUST_LOG when unset.
    #[arg(long, global = true)]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Start(StartArgs),
    /// Print this node's PeerId (creates the identity if missing).
    Id {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Ask a running node how it would route a text.
    Route {
        /// The text to route.
        text: String,
        /// Consider every capability kind, not only those that answer chat.
        #[arg(long)]
        any_kind: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the capabilities a running node knows.
    Capabilities {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a running node's mesh peers.
    Peers {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check that a running node answers (exit 0) or say why not (exit 1);
    /// for container health checks.
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Close a mesh to all but admitted nodes: its key, certificates and
    /// revocations.
    Mesh {
        #[command(subcommand)]
        command: mesh::MeshCommand,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// TOML config file (see examples/config/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HTTP API address, e.g. 127.0.0.1:8000.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Data directory (identity key).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Mesh listen address (multiaddr); repeat for several.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Peer to join through (multiaddr with /p2p/<id>); repeat for several.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// Address other nodes should dial to reach this one (multiaddr, e.g. a
    /// published port); repeat for several. Default: the listen addresses.
    #[arg(long)]
    pub external: Vec<String>,
    /// Do not discover peers on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// Without --config, do not look for model servers (Ollama, LlamaFarm,
    /// llama.cpp, LM Studio, vLLM) on their default local ports.
    #[arg(long)]
    pub no_discover: bool,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The node's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8000", env = "ATMOSPHERE_NODE")]
    pub node: String,
    /// Bearer token, when the node requires one.
    #[arg(long, env = "ATMOSPHERE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

/// The data dir a config file and `--data-dir` name together.
fn data_dir(config: Option<&PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let mut config = load_config(config)?;
    Overrides {
        data_dir,
        ..Default::default()
    }
    .apply(&mut config);
    Ok(config.data_dir())
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Start(args) => {
            let mut config = load_config(args.config.as_ref())?;
            Overrides {
                http: args.http,
                data_dir: args.data_dir,
                listen: args.listen,
                bootstrap: args.bootstrap,
                external: args.external,
                no_mdns: args.no_mdns,
            }
            .apply(&mut config);
            if args.config.is_none() && !args.no_discover {
                config.backends = crate::backend::local::probe(
                    crate::backend::local::well_known(),
                    Some(config.http.listen.port()),
                )
                .await;
            }
            config.validate()?;
            let node = Node::start(config).await?;
            shutdown_signal().await;
            node.shutdown().await;
            Ok(())
        }
        Command::Id { config, data_dir } => {
            let dir = self::data_dir(config.as_ref(), data_dir)?;
            let keypair = identity::load_or_create(&dir)?;
            emit(&format!("{}\n", identity::peer_id(&keypair)))?;
            Ok(())
        }
        Command::Route {
            text,
            any_kind,
            client,
        } => {
            let mut body = serde_json::json!({"input": text});
            if any_kind {
                body["need"] = "any".into();
            }
            let v = request(&client, reqwest::Method::POST, "/v1/route", Some(body)).await?;
            if client.json {
                emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
            } else {
                emit(&print_decision(&v))?;
            }
            Ok(())
        }
        Command::Peers { client } => {
            let v = request(&client, reqwest::Method::GET, "/v1/mesh/peers", None).await?;
            if client.json {
                emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
            } else {
                emit(&print_peers(&v))?;
            }
            Ok(())
        }
        Command::Health { client } => {
            let v = request(&client, reqwest::Method::GET, "/health", None).await?;
            if client.json {
                emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
            } else {
                emit(&format!(
                    "ok: {} ({}), {} capabilities, up {} s\n",
                    v["node"].as_str().unwrap_or("?"),
                    v["peer_id"].as_str().unwrap_or("?"),
                    v["capabilities"],
                    v["uptime_secs"]
                ))?;
            }
            Ok(())
        }
        Command::Mesh { command } => mesh::run(command).await,
        Command::Capabilities { client } => {
            let v = request(&client, reqwest::Method::GET, "/v1/mesh/capabilities", None).await?;
            if client.json {
                emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
            } else {
                emit(&print_capabilities(&v))?;
            }
            Ok(())
        }
    }
}

async fn request(
    client: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", client.node.trim_end_matches('/'));
    let http = reqwest::Client::new();
    let mut req = http.request(method, &url);
    if let Some(key) = &client.api_key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.with_context(|| {
        format!(
            "cannot reach the node at {} (is `atmosphere start` running?)",
            client.node
        )
    })?;
    let status = resp.status();
    let v: Value = resp.json().await.context("the node's answer is not JSON")?;
    if !status.is_success() {
        let msg = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        bail!("{status}: {msg}");
    }
    Ok(v)
}

/// Writes to stdout; a reader that went away (`| head`) ends the output quietly.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn print_decision(v: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let d = &v["decision"];
    let outcome = d["outcome"].as_str().unwrap_or("?");
    let rule = match d["rule"]["kind"].as_str() {
        Some("threshold") => format!(
            "threshold {:.2}",
            d["rule"]["threshold"].as_f64().unwrap_or(f64::NAN)
        ),
        _ => format!(
            "fit >= {:.2}",
            d["rule"]["min_fit"].as_f64().unwrap_or(f64::NAN)
        ),
    };
    match d["chosen"]["id"].as_str() {
        Some(id) => {
            let _ = writeln!(s, "route: {id} ({outcome}, {rule})");
        }
        None => {
            let _ = writeln!(s, "route: none fits ({rule})");
        }
    }
    let _ = writeln!(
        s,
        "{:>3}  {:>6}  {:>6}  {:>5}  {:<32} {:<16} {:<10} note",
        "#", "score", "cutoff", "fit", "capability", "kind", "node"
    );
    let num = |x: &Value, width: usize, places: usize| match x.as_f64() {
        Some(x) => format!("{x:>width$.places$}"),
        None => format!("{:>width$}", "-"),
    };
    for (i, c) in d["candidates"].as_array().into_iter().flatten().enumerate() {
        let node = c["node"].as_str().unwrap_or("");
        let short = if c["local"].as_bool() == Some(true) {
            "local"
        } else {
            &node[node.len().saturating_sub(8)..]
        };
        let _ = writeln!(
            s,
            "{:>3}  {}  {}  {}  {:<32} {:<16} {:<10} {}",
            i + 1,
            num(&c["score"], 6, 3),
            num(&c["cutoff"], 6, 3),
            num(&c["fit"], 5, 2),
            c["id"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            short,
            c["note"].as_str().unwrap_or("")
        );
    }
    s.push_str(&print_group(&v["group"]));
    s
}

/// The providers that would share the request, when there are several.
fn print_group(g: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let members = g["members"].as_array().map_or(&[][..], Vec::as_slice);
    if members.len() < 2 {
        return s;
    }
    let _ = writeln!(
        s,
        "shared by {} providers ({}, first by {}):",
        members.len(),
        g["strategy"].as_str().unwrap_or("?"),
        g["reason"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        s,
        "     {:<32} {:<10} {:<10} {:>9}  {:>10}  {:>8}  {:>6}  {:>8}  {:>8}  backed off",
        "capability",
        "node",
        "backend",
        "in flight",
        "advertised",
        "ttfb ms",
        "errors",
        "cost",
        "requests"
    );
    for m in members {
        let node = m["node"].as_str().unwrap_or("");
        let _ = writeln!(
            s,
            "     {:<32} {:<10} {:<10} {:>9}  {:>10}  {:>8}  {:>6.2}  {:>8.1}  {:>8}  {}",
            m["capability"].as_str().unwrap_or(""),
            &node[node.len().saturating_sub(8)..],
            m["backend"].as_str().unwrap_or("-"),
            m["in_flight"].as_u64().unwrap_or(0),
            m["advertised"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            m["ttfb_ms"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |t| format!("{t:.1}")),
            m["error_rate"].as_f64().unwrap_or(0.0),
            m["cost"].as_f64().unwrap_or(f64::NAN),
            m["requests"].as_u64().unwrap_or(0),
            m["backed_off_ms"]
                .as_u64()
                .map_or_else(String::new, |ms| format!("{ms} ms")),
        );
    }
    s
}

fn print_capabilities(v: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<32} {:<16} {:<14} {:<6} {:<9} node",
        "capability", "kind", "domain", "local", "available"
    );
    for c in v["data"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<32} {:<16} {:<14} {:<6} {:<9} {}",
            c["id"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            c["domain"].as_str().unwrap_or(""),
            c["local"].as_bool().unwrap_or(false),
            c["available"].as_bool().unwrap_or(false),
            c["node"].as_str().unwrap_or("")
        );
    }
    s
}

fn print_peers(v: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if v["mesh"] == false {
        s.push_str("this node is not part of a mesh ([mesh] enabled = false)\n");
        return s;
    }
    let _ = writeln!(s, "node {}", v["peer_id"].as_str().unwrap_or(""));
    for a in v["listen"].as_array().into_iter().flatten() {
        let _ = writeln!(s, "  listening on {}", a.as_str().unwrap_or(""));
    }
    let _ = writeln!(s, "{:<54} {:>8} {:>8}  agent", "peer", "rtt ms", "score");
    for p in v["data"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<54} {:>8} {:>8}  {}",
            p["peer_id"].as_str().unwrap_or(""),
            p["rtt_ms"]
                .as_f64()
                .map_or("-".into(), |r| format!("{r:.2}")),
            p["score"]
                .as_f64()
                .map_or("-".into(), |r| format!("{r:.1}")),
            p["agent"].as_str().unwrap_or("")
        );
    }
    s
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
