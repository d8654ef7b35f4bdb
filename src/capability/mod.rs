//! What a node can do: capability ids, kinds and records.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod inputs;
pub use inputs::{Input, Inputs};

/// `namespace/name`: lowercase-insensitive ASCII letters, digits and `-_.:`,
/// each part 1..=128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CapabilityId(String);

/// Why a capability id or kind is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 128
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl CapabilityId {
    /// Builds an id from its two parts, replacing characters that are not allowed.
    pub fn sanitized(namespace: &str, name: &str) -> Result<Self, ParseError> {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        };
        format!("{}/{}", clean(namespace), clean(name)).parse()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, n)| n)
    }
}

impl FromStr for CapabilityId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if valid_part(ns) && valid_part(name) => Ok(Self(s.to_owned())),
            _ => Err(ParseError(format!(
                "capability id {s:?} must be namespace/name (letters, digits, - _ . :)"
            ))),
        }
    }
}

impl TryFrom<String> for CapabilityId {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CapabilityId> for String {
    fn from(id: CapabilityId) -> Self {
        id.0
    }
}

impl fmt::Display for CapabilityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A typed capability kind, `category/name`, e.g. `llm/chat`, `vision/classify`,
/// `agent/research`, `tool/camera`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Kind(String);

/// The pseudo-model that asks the node to route by meaning (and, for an
/// agent's model or tools, to find them so).
pub const AUTO: &str = "auto";

/// The categories a kind may start with.
pub const KIND_CATEGORIES: &[&str] = &["llm", "vision", "audio", "ml", "agent", "tool"];

impl Kind {
    pub fn chat() -> Self {
        Self("llm/chat".into())
    }

    pub fn embed() -> Self {
        Self("llm/embed".into())
    }

    /// What an MCP server's tools are unless the config says more.
    pub fn tool() -> Self {
        Self("tool/mcp".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn category(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(c, _)| c)
    }

    /// Whether a chat or completion request can be sent to it: language models
    /// and agents answer text with text; `llm/embed` does not.
    pub fn answers_text(&self) -> bool {
        (self.category() == "llm" && self.0 != "llm/embed") || self.category() == "agent"
    }
}

impl FromStr for Kind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((cat, name)) if KIND_CATEGORIES.contains(&cat) && valid_part(name) => {
                Ok(Self(s.to_owned()))
            }
            _ => Err(ParseError(format!(
                "kind {s:?} must be category/name with category one of {}",
                KIND_CATEGORIES.join(", ")
            ))),
        }
    }
}

impl TryFrom<String> for Kind {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> Self {
        k.0
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a capability came from on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A `[[capability]]` in the config.
    Config,
    /// Listed by a backend with `discover = true`.
    Discovered,
    /// Announced by another node.
    Remote,
    /// A tool of one of this node's MCP servers (`[[mcp]]`): its backend is
    /// the server's name, its model the tool's name there.
    Tool,
    /// An agent of this node (`[[agent]]`): its backend and model are its id.
    Agent,
}

/// Who besides this node may run a capability (`share` in its config).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "ShareText", into = "ShareText")]
pub enum Share {
    /// This node's own clients only: not announced, refused to peers.
    Local,
    /// Any peer of the mesh.
    #[default]
    Mesh,
    /// These peers only, named by PeerId (base58) or, in a closed mesh, by
    /// a role their certificate gives them: announced, refused to others.
    Peers(Vec<String>),
}

impl Share {
    /// Whether `peer` (a PeerId, base58) may run it, holding `roles`.
    pub fn allows(&self, peer: &str, roles: &[String]) -> bool {
        match self {
            Share::Local => false,
            Share::Mesh => true,
            Share::Peers(peers) => peers.iter().any(|p| p == peer || roles.contains(p)),
        }
    }
}

/// Longest role name (bytes).
pub const MAX_ROLE: usize = 32;

/// Whether `s` is a well-formed role name (what a closed mesh's certificates
/// give and `share` lists name): 1 to 32 letters, digits, `-` or `_`.
pub fn is_role(s: &str) -> bool {
    (1..=MAX_ROLE).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `share` as written: `"local"`, `"mesh"` or a list of PeerIds.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ShareText {
    Word(String),
    Peers(Vec<String>),
}

impl TryFrom<ShareText> for Share {
    type Error = String;
    fn try_from(text: ShareText) -> Result<Self, String> {
        match text {
            ShareText::Word(w) if w == "local" => Ok(Share::Local),
            ShareText::Word(w) if w == "mesh" => Ok(Share::Mesh),
            ShareText::Word(w) => Err(format!(
                "share {w:?}: expected \"local\", \"mesh\" or a list of PeerIds and roles"
            )),
            // PeerIds kept in the form peers are compared in (base58),
            // however written; anything else must be a role name.
            ShareText::Peers(peers) => peers
                .iter()
                .map(|p| match p.parse::<libp2p::PeerId>() {
                    Ok(id) => Ok(id.to_base58()),
                    Err(_) if is_role(p) => Ok(p.clone()),
                    Err(_) => Err(format!(
                        "share: {p:?} is neither a PeerId nor a role (letters, digits, `-`, `_`)"
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Share::Peers),
        }
    }
}

impl From<Share> for ShareText {
    fn from(share: Share) -> Self {
        match share {
            Share::Local => ShareText::Word("local".into()),
            Share::Mesh => ShareText::Word("mesh".into()),
            Share::Peers(p) => ShareText::Peers(p),
        }
    }
}

/// A capability this node offers, with the text it is routed by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub id: CapabilityId,
    pub kind: Kind,
    pub domain: String,
    pub topics: Vec<String>,
    pub description: String,
    pub examples: Vec<String>,
    /// Names of the backends that run it (one or more; requests are spread
    /// over them).
    pub backends: Vec<String>,
    /// Model name at the backend.
    pub model: String,
    pub source: Source,
    /// Who else may run it (for another node's capability: `Mesh`, what it
    /// announced).
    pub share: Share,
    /// For a tool: the JSON Schema its arguments must satisfy (as its MCP
    /// server lists it, or as its node announced it).
    pub input_schema: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// What its requests may carry (a chat with an image goes only where
    /// `image` is taken).
    pub inputs: Inputs,
}

impl Capability {
    /// A capability of `backend`'s `model` with no texts yet, shared with the
    /// mesh: the fields a caller does not set.
    pub fn new(id: CapabilityId, kind: Kind, source: Source, backend: &str, model: &str) -> Self {
        Self {
            id,
            domain: String::new(),
            topics: Vec::new(),
            description: String::new(),
            examples: Vec::new(),
            backends: vec![backend.into()],
            model: model.into(),
            source,
            share: Share::Mesh,
            input_schema: None,
            inputs: Inputs::of_kind(&kind),
            kind,
        }
    }

    /// The text that stands for the capability when it has no examples, and is
    /// blended with them when it has: description, domain and topics.
    pub fn profile_text(&self) -> String {
        let mut text = String::new();
        if !self.description.is_empty() {
            text.push_str(&self.description);
        }
        if !self.domain.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&format!("Domain: {}.", self.domain));
        }
        if !self.topics.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&format!("Topics: {}.", self.topics.join(", ")));
        }
        if text.is_empty() {
            text = self.id.name().replace(['-', '_', '.', ':'], " ");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_reject() {
        let id: CapabilityId = "farm/llama-expert".parse().expect("valid");
        assert_eq!(id.namespace(), "farm");
        assert_eq!(id.name(), "llama-expert");
        for bad in ["", "farm", "/x", "x/", "a b/c", "a/b/c"] {
            assert!(bad.parse::<CapabilityId>().is_err(), "{bad:?} accepted");
        }
        let s = CapabilityId::sanitized("ollama", "llama3.2:latest").expect("sanitized");
        assert_eq!(s.as_str(), "ollama/llama3.2:latest");
        let s = CapabilityId::sanitized("lm studio", "org/model").expect("sanitized");
        assert_eq!(s.as_str(), "lm-studio/org-model");
    }

    #[test]
    fn kinds() {
        let k: Kind = "vision/classify".parse().expect("valid");
        assert_eq!(k.category(), "vision");
        assert!(!k.answers_text());
        assert!(Kind::chat().answers_text());
        assert!(!Kind::embed().answers_text());
        assert!(
            "agent/research"
                .parse::<Kind>()
                .expect("valid")
                .answers_text()
        );
        assert!("robot/walk".parse::<Kind>().is_err());
    }
}
