//! LlamaFarm: projects from `GET /v1/projects/{namespace}`; each project is a
//! capability `namespace/name`, chatted with at
//! `POST /v1/projects/{namespace}/{name}/chat/completions` (OpenAI-shaped).

use reqwest::Url;
use serde_json::Value;

use super::{Adapter, Discovered, Op, join};
use crate::capability::{CapabilityId, Kind};

pub struct LlamaFarm {
    pub namespace: String,
}

fn text_at(project: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| project.pointer(k).and_then(Value::as_str))
        .map(str::to_owned)
}

impl Adapter for LlamaFarm {
    fn discovery_url(&self, base: &Url) -> Url {
        join(base, &format!("v1/projects/{}", self.namespace))
    }

    fn parse_discovery(&self, _backend: &str, body: &Value) -> Result<Vec<Discovered>, String> {
        let projects = body
            .get("projects")
            .and_then(Value::as_array)
            .or_else(|| body.as_array())
            .ok_or("expected {\"projects\": [...]} from /v1/projects/{namespace}")?;
        let mut out = Vec::new();
        for p in projects {
            let Some(name) = p.get("name").and_then(Value::as_str) else {
                continue;
            };
            let ns = p
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(&self.namespace);
            let Ok(id) = CapabilityId::sanitized(ns, name) else {
                continue;
            };
            let description = text_at(p, &["/description", "/config/description"])
                .unwrap_or_else(|| format!("LlamaFarm project {name}"));
            let domain = text_at(p, &["/domain", "/config/domain"]).unwrap_or_default();
            let topics = ["/topics", "/config/topics"]
                .iter()
                .find_map(|k| p.pointer(k).and_then(Value::as_array))
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            out.push(Discovered {
                // The model field carries `namespace/name`; `endpoint` splits it.
                model: format!("{ns}/{name}"),
                id,
                kind: Kind::chat(),
                description,
                domain,
                topics,
                revision: String::new(),
            });
        }
        Ok(out)
    }

    fn endpoint(&self, base: &Url, op: Op, model: &str) -> Option<Url> {
        let (ns, name) = model
            .split_once('/')
            .unwrap_or((self.namespace.as_str(), model));
        match op {
            Op::Chat => Some(join(
                base,
                &format!("v1/projects/{ns}/{name}/chat/completions"),
            )),
            Op::Completions | Op::Embeddings | Op::Transcribe => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_projects_and_builds_chat_url() {
        let lf = LlamaFarm {
            namespace: "default".into(),
        };
        let body = serde_json::json!({"total": 2, "projects": [
            {"namespace": "default", "name": "llama-expert-14",
             "config": {"description": "Llama care", "domain": "camelids", "topics": ["llamas"]}},
            {"namespace": "default"}
        ]});
        let found = lf.parse_discovery("lf", &body).expect("parses");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id.as_str(), "default/llama-expert-14");
        assert_eq!(found[0].domain, "camelids");
        assert_eq!(found[0].topics, vec!["llamas".to_owned()]);
        let base = Url::parse("http://h:14345").expect("url");
        let url = lf.endpoint(&base, Op::Chat, &found[0].model).expect("chat");
        assert_eq!(
            url.path(),
            "/v1/projects/default/llama-expert-14/chat/completions"
        );
        assert!(lf.endpoint(&base, Op::Embeddings, "x").is_none());
    }
}
