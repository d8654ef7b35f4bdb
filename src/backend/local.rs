//! The first minute: a node started without a config looks for the model
//! servers people usually run on their own machine, on their default ports,
//! and serves what it finds.

use std::time::Duration;

use super::Backend;
use crate::config::{BackendConfig, BackendKind};

/// A model server and where it listens unless told otherwise.
#[derive(Debug, Clone)]
pub struct WellKnown {
    /// Backend name in the config (and capability namespace).
    pub name: &'static str,
    /// What people call it, for the log.
    pub label: &'static str,
    pub kind: BackendKind,
    pub url: String,
}

/// The servers probed by default: Ollama, LlamaFarm, llama.cpp's server,
/// LM Studio and vLLM, on their default ports on this machine.
pub fn well_known() -> Vec<WellKnown> {
    let at = |port: u16| format!("http://127.0.0.1:{port}");
    vec![
        WellKnown {
            name: "ollama",
            label: "Ollama",
            kind: BackendKind::Ollama,
            url: at(11434),
        },
        WellKnown {
            name: "llamafarm",
            label: "LlamaFarm",
            kind: BackendKind::Llamafarm,
            url: at(14345),
        },
        WellKnown {
            name: "llamacpp",
            label: "llama.cpp server",
            kind: BackendKind::Openai,
            url: at(8080),
        },
        WellKnown {
            name: "lmstudio",
            label: "LM Studio",
            kind: BackendKind::Openai,
            url: at(1234),
        },
        WellKnown {
            name: "vllm",
            label: "vLLM",
            kind: BackendKind::Openai,
            url: at(8000),
        },
    ]
}

/// Longest a probe may take: the node's start waits for all of them at once.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Probes `candidates` at once and returns a discovering backend config for
/// each that answers its model list. Logs one line per candidate: found
/// (with how many models), or not found with the config that would add it.
/// `own_port` is this node's HTTP port: a candidate there is ourselves.
pub async fn probe(candidates: Vec<WellKnown>, own_port: Option<u16>) -> Vec<BackendConfig> {
    let probes = candidates.into_iter().map(|known| async move {
        let config = BackendConfig {
            discover: true,
            ..BackendConfig::new(known.name, known.kind, &known.url)
        };
        let port = reqwest::Url::parse(&known.url)
            .ok()
            .and_then(|u| u.port_or_known_default());
        if port.is_some() && port == own_port {
            tracing::info!(
                backend = known.label,
                url = %known.url,
                "not probed: this node's own HTTP port"
            );
            return None;
        }
        let hint = format!(
            "[[backend]] name = \"{}\", kind = \"{}\", url = \"{}\", discover = true",
            known.name,
            known.kind.as_str(),
            known.url
        );
        let probing = BackendConfig {
            connect_timeout: PROBE_TIMEOUT,
            timeout: PROBE_TIMEOUT,
            ..config.clone()
        };
        let found = match Backend::new(probing) {
            // Only the listing: details come with the node's first discovery round.
            Ok(backend) => tokio::time::timeout(PROBE_TIMEOUT, backend.list(false))
                .await
                .map_err(|_| "no answer in time".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(e),
        };
        match found {
            Ok(models) => {
                tracing::info!(
                    backend = known.label,
                    url = %known.url,
                    models = models.len(),
                    "found a local model server; serving its models (config: {hint})"
                );
                Some(config)
            }
            Err(why) => {
                tracing::info!(
                    backend = known.label,
                    url = %known.url,
                    "not found ({why}); where it runs elsewhere, add: {hint}"
                );
                None
            }
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}
