//! Ollama: models from `GET /api/tags`; chat, completions and embeddings through
//! its OpenAI-compatible `/v1` routes, so bodies and streams keep OpenAI's shape.

use reqwest::Url;
use serde_json::Value;

use super::names::{describe_model, kind_from_model_name};
use super::{Adapter, Discovered, Op, join};
use crate::capability::CapabilityId;

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
            });
        }
        Ok(out)
    }

    fn endpoint(&self, base: &Url, op: Op, _model: &str) -> Option<Url> {
        Some(match op {
            Op::Chat => join(base, "v1/chat/completions"),
            Op::Completions => join(base, "v1/completions"),
            Op::Embeddings => join(base, "v1/embeddings"),
        })
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
}
