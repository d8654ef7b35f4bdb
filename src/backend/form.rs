//! The form a transcription is sent to its backend as: OpenAI's
//! `multipart/form-data`, built from the body the request core carries.

use base64::Engine;
use reqwest::multipart::{Form, Part};
use serde_json::{Map, Value};

/// The form for `model`: the file (`body.file`: `filename`, `content_type`,
/// `data` in base64) and every other field as text (a list as the field
/// repeated).
pub(super) fn transcription(model: &str, body: Map<String, Value>) -> Result<Form, String> {
    let mut form = Form::new().text("model", model.to_owned());
    for (name, value) in body {
        match value {
            _ if name == "model" || name == "stream" => {}
            Value::Object(file) if name == "file" => {
                let data = file
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or("the file has no data")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| format!("the file is not base64: {e}"))?;
                let text = |key: &str, default: &str| {
                    file.get(key)
                        .and_then(Value::as_str)
                        .unwrap_or(default)
                        .to_owned()
                };
                let part = Part::bytes(bytes)
                    .file_name(text("filename", "audio"))
                    .mime_str(&text("content_type", "application/octet-stream"))
                    .map_err(|e| format!("the file's content type: {e}"))?;
                form = form.part("file", part);
            }
            Value::Null => {}
            Value::String(s) => form = form.text(name, s),
            Value::Array(items) => {
                for item in items {
                    let text = match item {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    form = form.text(name.clone(), text);
                }
            }
            other => form = form.text(name, other.to_string()),
        }
    }
    Ok(form)
}
