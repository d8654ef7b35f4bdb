//! OpenAI-compatible servers: vLLM, llama.cpp server, LM Studio, OpenAI itself.
//! Models from `GET /v1/models`; operations at `/v1/chat/completions`,
//! `/v1/completions`, `/v1/embeddings`. A base URL may or may not end in `/v1`.

use reqwest::Url;
use serde_json::Value;

use super::names::{describe_model, kind_from_model_name};
use super::{Adapter, Discovered, Op, join};
use crate::capability::CapabilityId;

pub struct OpenAi;

/// The API root: the base itself if it ends in `/v1`, else `base/v1`.
pub(super) fn api_root(base: &Url) -> Url {
    if base.path().trim_end_matches('/').ends_with("/v1") {
        base.clone()
    } else {
        join(base, "v1")
    }
}

impl Adapter for OpenAi {
    fn discovery_url(&self, base: &Url) -> Url {
        join(&api_root(base), "models")
    }

    fn parse_discovery(&self, backend: &str, body: &Value) -> Result<Vec<Discovered>, String> {
        let data = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or("expected {\"data\": [...]} from /v1/models")?;
        let mut out = Vec::new();
        for model in data {
            let Some(name) = model.get("id").and_then(Value::as_str) else {
                continue;
            };
            let Ok(id) = CapabilityId::sanitized(backend, name) else {
                continue;
            };
            let (description, domain, topics) = describe_model(name, backend, None);
            out.push(Discovered {
                id,
                model: name.to_owned(),
                kind: kind_from_model_name(name),
                description,
                domain,
                topics,
                revision: String::new(),
            });
        }
        Ok(out)
    }

    fn endpoint(&self, base: &Url, op: Op, _model: &str) -> Option<Url> {
        let root = api_root(base);
        Some(match op {
            Op::Chat => join(&root, "chat/completions"),
            Op::Completions => join(&root, "completions"),
            Op::Embeddings => join(&root, "embeddings"),
            Op::Transcribe => join(&root, "audio/transcriptions"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_v1() {
        for base in ["http://h:1", "http://h:1/v1", "http://h:1/v1/"] {
            let base = Url::parse(base).expect("url");
            assert_eq!(OpenAi.discovery_url(&base).path(), "/v1/models");
            assert_eq!(
                OpenAi.endpoint(&base, Op::Chat, "m").expect("chat").path(),
                "/v1/chat/completions"
            );
        }
    }

    #[test]
    fn parses_model_list_and_skips_junk() {
        let body = serde_json::json!({"object": "list", "data": [
            {"id": "qwen2.5-coder", "object": "model"},
            {"object": "model"},
            {"id": "text-embedding-3-small"}
        ]});
        let found = OpenAi.parse_discovery("vllm", &body).expect("parses");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id.as_str(), "vllm/qwen2.5-coder");
        assert_eq!(found[1].kind.as_str(), "llm/embed");
        assert!(
            OpenAi
                .parse_discovery("x", &serde_json::json!([1]))
                .is_err()
        );
    }
}
