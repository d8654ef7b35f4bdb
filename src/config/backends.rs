//! `[[backend]]` and `[[capability]]`: the servers that run requests and
//! the capabilities this node offers on them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capability::{CapabilityId, Inputs, Kind, Share};

/// The protocol a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// OpenAI-compatible: vLLM, llama.cpp server, LM Studio, OpenAI.
    Openai,
    /// Ollama (`/api/tags`, chat through its `/v1`).
    Ollama,
    /// LlamaFarm (projects under `/v1/projects/{namespace}`).
    Llamafarm,
    /// Anthropic's Messages API (`/v1/messages`), translated to and from
    /// OpenAI's chat shape.
    Anthropic,
}

/// `[[backend]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Name capabilities refer to.
    pub name: String,
    /// Protocol spoken by the backend.
    pub kind: BackendKind,
    /// Base URL, e.g. `http://127.0.0.1:11434`.
    pub url: String,
    /// Turn the backend's models (or projects) into capabilities.
    #[serde(default)]
    pub discover: bool,
    /// Bearer token sent to the backend; `env:NAME` reads it from the environment.
    #[serde(default)]
    pub api_key: Option<String>,
    /// LlamaFarm namespace to list.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// How often models are listed again (also the health probe).
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// Time to connect.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the response head, and between two streamed chunks.
    #[serde(default = "default_backend_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl BackendConfig {
    /// A backend with the defaults of every optional key.
    pub fn new(name: &str, kind: BackendKind, url: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            url: url.to_owned(),
            discover: false,
            api_key: None,
            namespace: default_namespace(),
            refresh: default_refresh(),
            connect_timeout: default_connect_timeout(),
            timeout: default_backend_timeout(),
        }
    }
}

impl BackendKind {
    /// The name used in the config (`kind = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Openai => "openai",
            BackendKind::Ollama => "ollama",
            BackendKind::Llamafarm => "llamafarm",
            BackendKind::Anthropic => "anthropic",
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}
fn default_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_backend_timeout() -> Duration {
    Duration::from_secs(120)
}

/// `[[capability]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityConfig {
    /// `namespace/name`, unique on this node.
    pub id: CapabilityId,
    /// What it does, e.g. `llm/chat`.
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// Subject area, e.g. `camelids`.
    #[serde(default)]
    pub domain: String,
    /// Keywords.
    #[serde(default)]
    pub topics: Vec<String>,
    /// One or two sentences on what it is good at.
    #[serde(default)]
    pub description: String,
    /// Requests it should receive; the strongest routing signal.
    #[serde(default)]
    pub examples: Vec<String>,
    /// Name of the `[[backend]]` that runs it, or a list of them (the same
    /// model on several backends: requests are spread over them).
    #[serde(deserialize_with = "one_or_many")]
    pub backend: Vec<String>,
    /// Model name at the backend; defaults to the id's name part.
    #[serde(default)]
    pub model: Option<String>,
    /// Who else may run it: `"mesh"` (every peer, the default), `"local"`
    /// (this node's clients only; not announced) or a list of PeerIds.
    #[serde(default)]
    pub share: Share,
    /// What its requests may carry: `["text", "image"]` for a model that
    /// sees; unless set, what its kind takes (`vision/*` text and image,
    /// `audio/*` audio, others text).
    #[serde(default)]
    pub inputs: Option<Inputs>,
}

fn default_kind() -> Kind {
    Kind::chat()
}

/// A backend name, or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a backend name or a list of backend names")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(name) = seq.next_element::<String>()? {
                out.push(name);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Names)
}

/// Backend names used once, with URLs; capabilities defined once, each on
/// backends that exist, none named twice.
pub(super) fn validate(
    backends: &[BackendConfig],
    capabilities: &[CapabilityConfig],
) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for b in backends {
        if !names.insert(b.name.as_str()) {
            return Err(format!("backend name {:?} is used twice", b.name));
        }
        if reqwest::Url::parse(&b.url).is_err() {
            return Err(format!(
                "backend {:?}: url {:?} is not a URL",
                b.name, b.url
            ));
        }
    }
    let mut ids = std::collections::HashSet::new();
    for c in capabilities {
        if !ids.insert(&c.id) {
            return Err(format!("capability {} is defined twice", c.id));
        }
        if c.backend.is_empty() {
            return Err(format!("capability {} names no backend", c.id));
        }
        for (i, b) in c.backend.iter().enumerate() {
            if c.backend[..i].contains(b) {
                return Err(format!("capability {} names backend {b:?} twice", c.id));
            }
            if !names.contains(b.as_str()) {
                return Err(format!(
                    "capability {} names backend {b:?}, which no [[backend]] defines",
                    c.id
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn capability(backend: &str) -> Result<Config, String> {
        let text = format!(
            "[[backend]]\nname = \"a\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:1\"\n\
             [[backend]]\nname = \"b\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:2\"\n\
             [[capability]]\nid = \"farm/x\"\nbackend = {backend}\n"
        );
        let config: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn a_capability_names_one_backend_or_several() {
        assert_eq!(
            capability("\"a\"").expect("one").capabilities[0].backend,
            ["a"]
        );
        assert_eq!(
            capability("[\"a\", \"b\"]").expect("two").capabilities[0].backend,
            ["a", "b"]
        );
        for (bad, says) in [
            ("[]", "names no backend"),
            ("[\"a\", \"a\"]", "twice"),
            ("[\"a\", \"c\"]", "\"c\", which no [[backend]] defines"),
            ("3", "a backend name or a list of backend names"),
        ] {
            let err = capability(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
