//! Ollama: models from `GET /api/tags`, each described further by
//! `POST /api/show` (its system prompt, and whether it embeds or reads
//! images); chat, completions and embeddings through its OpenAI-compatible
//! `/v1` routes, so bodies and streams keep OpenAI's shape.

use reqwest::Url;
use serde_json::Value;

use super::names::{describe_model, kind_from_model_name};
use super::{Adapter, Discovered, Op, join};
use crate::capability::{CapabilityId, Kind};

/// Longest part of a model's system prompt taken into its description.
const MAX_SYSTEM_CHARS: usize = 400;

pub struct Ollama;

impl Adapter for Ollama {
    fn discovery_url(&self, base: &Url) -> Url {
        join(base, "api/tags")
    }

    fn parse_discovery(&self, backend: &str, body: &Value) -> Result<Vec<Discovered>, String> {
        let models = body
            .get("models")
            .and_then(Value::as_array)
            .ok_or("expected {\"models\": [...]} from /api/tags")?;
        let mut out = Vec::new();
        for model in models {
            let Some(name) = model
                .get("name")
                .or_else(|| model.get("model"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let Ok(id) = CapabilityId::sanitized(backend, name.trim_end_matches(":latest")) else {
                continue;
            };
            let family = model.pointer("/details/family").and_then(Value::as_str);
            let (description, domain, topics) = describe_model(name, backend, family);
            out.push(Discovered {
                id,
                model: name.to_owned(),
                kind: kind_from_model_name(name),
                description,
                domain,
                topics,
                revision: model
                    .get("digest")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(out)
    }

    fn endpoint(&self, base: &Url, op: Op, _model: &str) -> Option<Url> {
        Some(match op {
            Op::Chat => join(base, "v1/chat/completions"),
            Op::Completions => join(base, "v1/completions"),
            Op::Embeddings => join(base, "v1/embeddings"),
            Op::Transcribe => return None,
        })
    }

    fn detail_request(&self, base: &Url, found: &Discovered) -> Option<(Url, Value)> {
        Some((
            join(base, "api/show"),
            serde_json::json!({"model": found.model}),
        ))
    }

    fn apply_detail(&self, found: &mut Discovered, detail: &Value) {
        let can = |what: &str| {
            detail
                .get("capabilities")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|x| x.as_str() == Some(what)))
        };
        if can("embedding") && !can("completion") {
            found.kind = Kind::embed();
        }
        if can("vision") && !found.topics.iter().any(|t| t == "images") {
            found
                .topics
                .extend(["images", "photos", "pictures"].map(str::to_owned));
            found.description.push_str(", reads images");
        }
        // A model made with its own system prompt says in it what it is for.
        if let Some(system) = detail
            .get("system")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let system: String = system.chars().take(MAX_SYSTEM_CHARS).collect();
            found.description = format!("{system} ({})", found.description);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags() {
        let body = serde_json::json!({"models": [
            {"name": "llama3.2:latest", "model": "llama3.2:latest", "details": {"family": "llama"}},
            {"name": "nomic-embed-text:latest"}
        ]});
        let found = Ollama.parse_discovery("ollama", &body).expect("parses");
        assert_eq!(found[0].id.as_str(), "ollama/llama3.2");
        assert_eq!(found[0].model, "llama3.2:latest");
        assert!(found[0].description.contains("llama family"));
        assert_eq!(found[1].kind.as_str(), "llm/embed");
    }

    #[test]
    fn details_say_what_a_model_is_for_and_what_it_reads() {
        let body = serde_json::json!({"models": [{"name": "helper:latest", "digest": "abc"}]});
        let mut found = Ollama.parse_discovery("ollama", &body).expect("parses");
        assert_eq!(found[0].revision, "abc");
        Ollama.apply_detail(
            &mut found[0],
            &serde_json::json!({
                "system": "You answer questions about personal income tax.",
                "capabilities": ["completion", "vision"]
            }),
        );
        let d = &found[0];
        assert!(
            d.description
                .starts_with("You answer questions about personal income tax. (helper")
        );
        assert!(d.topics.contains(&"images".to_owned()));
        assert_eq!(d.kind, Kind::chat());
        let mut embedder = found[0].clone();
        Ollama.apply_detail(
            &mut embedder,
            &serde_json::json!({"capabilities": ["embedding"]}),
        );
        assert_eq!(embedder.kind, Kind::embed());
    }
}
