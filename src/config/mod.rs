//! The node's configuration: a TOML file, overridden by CLI flags in one place
//! ([`Overrides::apply`]). `Config::default()` is a working single-node setup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod agent;
mod backends;
mod mcp;
mod mesh;
mod routing;

use serde::{Deserialize, Serialize};

pub use agent::{AgentConfig, AgentTools, MAX_STEPS, MAX_TURN_ARGUMENT_BYTES};
pub use backends::{BackendConfig, BackendKind, CapabilityConfig};
pub use mcp::{McpConfig, McpTransport, ToolConfig};
pub use mesh::{MeshConfig, authority_text, parse_authority};
pub use routing::{AutoOrigins, BalanceConfig, RoutingConfig, Strategy};

/// Everything a node reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Who this node is.
    pub node: NodeConfig,
    /// The OpenAI-compatible HTTP API.
    pub http: HttpConfig,
    /// The local sentence embedder.
    pub embedder: EmbedderConfig,
    /// How `model: "auto"` is decided.
    pub routing: RoutingConfig,
    /// How requests are spread over providers of one service.
    pub balance: BalanceConfig,
    /// The peer-to-peer mesh; `None` for a standalone node (`enabled = false`
    /// in the file's `[mesh]`).
    #[serde(deserialize_with = "mesh::section")]
    pub mesh: Option<MeshConfig>,
    /// Backends that run requests (`[[backend]]`).
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
    /// Capabilities offered by this node (`[[capability]]`).
    #[serde(rename = "capability")]
    pub capabilities: Vec<CapabilityConfig>,
    /// MCP servers whose tools this node offers (`[[mcp]]`).
    pub mcp: Vec<McpConfig>,
    /// Agents this node runs (`[[agent]]`).
    #[serde(rename = "agent")]
    pub agents: Vec<AgentConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node: NodeConfig::default(),
            http: HttpConfig::default(),
            embedder: EmbedderConfig::default(),
            routing: RoutingConfig::default(),
            balance: BalanceConfig::default(),
            mesh: Some(MeshConfig::default()),
            backends: Vec::new(),
            capabilities: Vec::new(),
            mcp: Vec::new(),
            agents: Vec::new(),
        }
    }
}

/// `[node]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Name shown to peers and in `owned_by`; defaults to the host name.
    pub name: String,
    /// Where the identity key and state live (`~` is expanded).
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: gethostname::gethostname().to_string_lossy().into_owned(),
            data_dir: PathBuf::from("~/.local/share/atmosphere"),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Bearer tokens accepted by the API; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Largest request body accepted, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Bytes of request bodies the node holds at once, over all requests
    /// being read; further bodies wait for room (until `body_timeout`).
    pub max_body_bytes_held: usize,
    /// Deadline for a request's head (its line and headers), from its first
    /// byte; a connection that takes longer is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Deadline for reading a request's whole body (408 after it).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Deadline for a whole non-streaming request, and for the first byte of a
    /// streaming one.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests run at once by this node, over all routes (counted once their
    /// body is read); more wait in line until `request_timeout`.
    pub max_concurrent_requests: usize,
    /// Largest image or audio clip a chat may carry, decoded (within
    /// `max_body_bytes` for the whole body).
    pub max_media_bytes: usize,
    /// Whether chats may carry links (images, video, audio, files: any
    /// part's `*url` field) to private, loopback or link-local hosts, which
    /// the model's server would fetch; off by default. Off, a link's host
    /// name is resolved here and refused when any address it resolves to is
    /// private, or when it resolves to none.
    pub private_image_links: bool,
    /// `/mcp` sessions open at once (each holds its client's state, about
    /// 50 KB); an `initialize` past them is answered 429.
    pub mcp_sessions: usize,
    /// `/mcp` sessions one client address may hold (an IPv6 client by its
    /// /64).
    pub mcp_sessions_per_client: usize,
    /// An `/mcp` session that sees no request for this long is closed.
    #[serde(with = "humantime_serde")]
    pub mcp_session_idle: Duration,
    /// Whether `/mcp` serves clients beyond loopback when `api_keys` is
    /// empty. Off by default: `/mcp` calls every tool this node can call,
    /// its `share = "local"` tools included, so a node listening beyond
    /// loopback without keys serves it to loopback clients only (403
    /// `mcp_needs_key` to others).
    pub open_mcp: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            api_keys: Vec::new(),
            // A chat with an image of `max_media_bytes` (20 MiB) in base64.
            max_body_bytes: 32 * 1024 * 1024,
            max_body_bytes_held: 128 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
            max_concurrent_requests: 1024,
            max_media_bytes: 20 * 1024 * 1024,
            private_image_links: false,
            mcp_sessions: 256,
            mcp_sessions_per_client: 32,
            mcp_session_idle: Duration::from_secs(600),
            open_mcp: false,
        }
    }
}

/// `[embedder]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// Directory holding `model.onnx` and `tokenizer.json`.
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library; `ORT_DYLIB_PATH` wins when set.
    pub runtime: PathBuf,
    /// Intra-op threads per inference (2 is fastest on a 2-core machine).
    pub threads: usize,
    /// Most texts run through the model in one batch.
    pub max_batch: usize,
    /// Longer inputs are truncated to this many tokens (the model's limit is 512).
    pub max_tokens: usize,
    /// Texts whose vectors are kept, most recently used first, so that a
    /// repeated request is not embedded again (about 1.6 KiB each); 0: none.
    pub cache_entries: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from("~/.cache/atmosphere/models/all-MiniLM-L6-v2"),
            runtime: PathBuf::from("~/.cache/atmosphere/onnxruntime/libonnxruntime.so"),
            threads: 2,
            max_batch: 32,
            max_tokens: 256,
            cache_entries: 4096,
        }
    }
}

/// A config that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The values contradict each other.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: references between sections and value ranges.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |m: String| Err(Error::Invalid(m));
        backends::validate(&self.backends, &self.capabilities).map_err(Error::Invalid)?;
        mcp::validate(&self.mcp, &self.backends).map_err(Error::Invalid)?;
        agent::validate(&self.agents, &self.capabilities).map_err(Error::Invalid)?;
        if !(0.0..=1.0).contains(&self.balance.margin) {
            return invalid("balance.margin must be between 0 and 1".into());
        }
        if ::http::HeaderName::from_bytes(self.balance.session_header.as_bytes()).is_err() {
            return invalid(format!(
                "balance.session_header {:?} is not a valid header name",
                self.balance.session_header
            ));
        }
        if let Some(t) = self.routing.threshold
            && !(-1.0..=1.0).contains(&t)
        {
            return invalid("routing.threshold must be between -1 and 1".into());
        }
        if !(0.0..=2.0).contains(&self.routing.min_fit) {
            return invalid("routing.min_fit must be between 0 and 2".into());
        }
        if !(0.0..=1.0).contains(&self.routing.stranger_margin) {
            return invalid("routing.stranger_margin must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.routing.description_weight) {
            return invalid("routing.description_weight must be between 0 and 1".into());
        }
        if self.embedder.threads == 0 || self.embedder.max_batch == 0 {
            return invalid("embedder.threads and embedder.max_batch must be at least 1".into());
        }
        if !(8..=512).contains(&self.embedder.max_tokens) {
            return invalid("embedder.max_tokens must be between 8 and 512".into());
        }
        if let Some(mesh) = &self.mesh {
            MeshConfig::addrs(&mesh.listen)?;
            MeshConfig::addrs(&mesh.bootstrap)?;
            MeshConfig::addrs(&mesh.external)?;
            let ttl = mesh.ttl.as_secs();
            if !(5..=3600).contains(&ttl) {
                return invalid("mesh.ttl must be between 5s and 1h".into());
            }
            if mesh.peer_requests == 0 {
                return invalid("mesh.peer_requests must be at least 1".into());
            }
            if mesh.peer_rate == 0 {
                return invalid("mesh.peer_rate must be at least 1".into());
            }
            if let Some(bad) = mesh
                .trusted
                .iter()
                .find(|p| p.parse::<libp2p::PeerId>().is_err())
            {
                return invalid(format!("mesh.trusted: {bad:?} is not a PeerId"));
            }
            if mesh.swarm_key.is_some()
                && MeshConfig::tcp_only(MeshConfig::addrs(&mesh.listen)?).is_empty()
            {
                return invalid(
                    "mesh.swarm_key works over TCP only, and mesh.listen has no TCP address".into(),
                );
            }
            if let Some(authority) = &mesh.authority {
                parse_authority(authority).map_err(Error::Invalid)?;
            } else if mesh.certificate.is_some() {
                return invalid(
                    "mesh.certificate is set without mesh.authority (the mesh key it is checked against)"
                        .into(),
                );
            }
        }
        if self.http.mcp_sessions == 0
            || self.http.mcp_sessions_per_client == 0
            || self.http.mcp_sessions_per_client > self.http.mcp_sessions
        {
            return invalid(
                "http.mcp_sessions and http.mcp_sessions_per_client must be at least 1, per client at most the whole"
                    .into(),
            );
        }
        if self.http.mcp_session_idle < Duration::from_secs(1) {
            return invalid("http.mcp_session_idle must be at least 1 s".into());
        }
        if self.http.max_concurrent_requests == 0 {
            return invalid("http.max_concurrent_requests must be at least 1".into());
        }
        if self.http.max_body_bytes_held < self.http.max_body_bytes {
            return invalid("http.max_body_bytes_held must be at least http.max_body_bytes".into());
        }
        if self.http.max_body_bytes > u32::MAX as usize {
            return invalid("http.max_body_bytes must be under 4 GiB".into());
        }
        if self.http.header_timeout.is_zero() || self.http.body_timeout.is_zero() {
            return invalid("http.header_timeout and http.body_timeout must be over 0".into());
        }
        Ok(())
    }

    /// The data directory with `~` expanded.
    pub fn data_dir(&self) -> PathBuf {
        expand_home(&self.node.data_dir)
    }
}

/// CLI flags that override the file; `None` leaves the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub http: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// Replaces `mesh.listen` when not empty.
    pub listen: Vec<String>,
    /// Replaces `mesh.bootstrap` when not empty.
    pub bootstrap: Vec<String>,
    /// Replaces `mesh.external` when not empty.
    pub external: Vec<String>,
    pub no_mdns: bool,
}

impl Overrides {
    /// The one place flags are applied.
    pub fn apply(self, config: &mut Config) {
        if let Some(http) = self.http {
            config.http.listen = http;
        }
        if let Some(dir) = self.data_dir {
            config.node.data_dir = dir;
        }
        // Mesh flags on a standalone node have nothing to change.
        let Some(mesh) = &mut config.mesh else {
            return;
        };
        if !self.listen.is_empty() {
            mesh.listen = self.listen;
        }
        if !self.bootstrap.is_empty() {
            mesh.bootstrap = self.bootstrap;
        }
        if !self.external.is_empty() {
            mesh.external = self.external;
        }
        if self.no_mdns {
            mesh.mdns = false;
        }
    }
}

/// Expands a leading `~` to `$HOME`.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

/// The cache `scripts/fetch-model.sh` fills: `$ATMOSPHERE_CACHE` or `~/.cache/atmosphere`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ATMOSPHERE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| expand_home(Path::new("~/.cache/atmosphere")))
}

impl EmbedderConfig {
    /// Paths with `~` expanded; defaults follow `$ATMOSPHERE_CACHE` when it is set.
    pub fn resolved(&self) -> (PathBuf, PathBuf) {
        let defaults = EmbedderConfig::default();
        let cache = cache_dir();
        let model_dir = if self.model_dir == defaults.model_dir {
            cache.join("models/all-MiniLM-L6-v2")
        } else {
            expand_home(&self.model_dir)
        };
        let runtime = if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
            PathBuf::from(p)
        } else if self.runtime == defaults.runtime {
            cache.join("onnxruntime/libonnxruntime.so")
        } else {
            expand_home(&self.runtime)
        };
        (model_dir, runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::Share;

    #[test]
    fn default_is_valid() {
        Config::default()
            .validate()
            .expect("default config is valid");
    }

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/config exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected example configs in {}", dir.display());
    }

    #[test]
    fn unknown_backend_is_rejected() {
        let text = r#"
            [[capability]]
            id = "farm/x"
            backend = "nope"
        "#;
        let config: Config = toml::from_str(text).expect("parses");
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = toml::from_str::<Config>("[http]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn overrides_win() {
        let mut config = Config::default();
        Overrides {
            http: Some("127.0.0.1:9999".parse().expect("addr")),
            data_dir: Some("/tmp/x".into()),
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: Vec::new(),
            external: vec!["/dns4/node.example/tcp/11450".into()],
            no_mdns: true,
        }
        .apply(&mut config);
        assert_eq!(config.http.listen.port(), 9999);
        assert_eq!(config.data_dir(), PathBuf::from("/tmp/x"));
        let mesh = config.mesh.expect("a mesh by default");
        assert_eq!(mesh.listen, vec!["/ip4/127.0.0.1/tcp/0".to_owned()]);
        assert_eq!(mesh.external.len(), 1);
        assert!(!mesh.mdns);
    }

    #[test]
    fn share_is_local_mesh_or_peers_and_roles() {
        let cap = |share: &str| {
            format!("[[capability]]\nid = \"farm/x\"\nbackend = \"b\"\nshare = {share}\n")
        };
        let parsed = |share: &str| {
            toml::from_str::<Config>(&cap(share)).map(|c| c.capabilities[0].share.clone())
        };
        assert_eq!(parsed("\"local\"").expect("local"), Share::Local);
        assert_eq!(parsed("\"mesh\"").expect("mesh"), Share::Mesh);
        let peer = "12D3KooWEEwzsW6nmHmWPMnqFpvBbiiMLXdbEYGLrCHUTQzE7CU9";
        assert_eq!(
            parsed(&format!("[\"{peer}\", \"gpu\"]")).expect("peers"),
            Share::Peers(vec![peer.into(), "gpu".into()])
        );
        let absent: Config =
            toml::from_str("[[capability]]\nid = \"farm/x\"\nbackend = \"b\"\n").expect("parses");
        assert_eq!(
            absent.capabilities[0].share,
            Share::Mesh,
            "shared by default"
        );
        for bad in ["\"everyone\"", "[\"not a peer\"]", "[\"\"]", "3"] {
            let err = parsed(bad).unwrap_err().to_string();
            assert!(err.contains("share"), "{bad}: {err}");
        }
    }

    #[test]
    fn mesh_section_enabled_or_not() {
        let on: Config = toml::from_str("[mesh]\nttl = \"10s\"\n").expect("parses");
        assert_eq!(on.mesh.expect("mesh").ttl, Duration::from_secs(10));
        let absent: Config = toml::from_str("").expect("parses");
        assert!(absent.mesh.is_some(), "a node joins a mesh by default");
        let off: Config =
            toml::from_str("[mesh]\nenabled = false\nttl = \"10s\"\n").expect("parses");
        assert!(off.mesh.is_none());
        for (text, says) in [
            ("[mesh]\nenabled = \"no\"\n", "mesh.enabled"),
            ("[mesh]\nenabled = true\nlisen = []\n", "lisen"),
        ] {
            let err = toml::from_str::<Config>(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
