//! Tool arguments checked against the tool's input schema (JSON Schema; the
//! 2020-12 draft unless the schema names another). No reference is ever
//! fetched: a schema that points outside itself is not valid here.

use std::sync::Arc;

use serde_json::{Map, Value};

/// Most problems reported for one call's arguments.
const MAX_PROBLEMS: usize = 8;

/// A compiled input schema; cheap to clone.
#[derive(Clone)]
pub struct Schema(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Compiles a schema; the error says why it is not one.
    pub fn compile(schema: &Map<String, Value>) -> Result<Self, String> {
        let value = Value::Object(schema.clone());
        jsonschema::validator_for(&value)
            .map(|v| Self(Arc::new(v)))
            .map_err(|e| format!("not a valid JSON Schema: {e}"))
    }

    /// `Ok` when the arguments satisfy the schema, else what is wrong with
    /// them (where, and why), at most [`MAX_PROBLEMS`].
    pub fn check(&self, arguments: &Map<String, Value>) -> Result<(), Vec<String>> {
        // The arguments are an object: checked as one without copying them
        // when the schema holds (the common case).
        let value = Value::Object(arguments.clone());
        if self.0.is_valid(&value) {
            return Ok(());
        }
        let problems: Vec<String> = self
            .0
            .iter_errors(&value)
            .take(MAX_PROBLEMS)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn arguments_are_checked_with_where_and_why() {
        let schema = Schema::compile(&object(json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        })))
        .expect("compiles");
        assert!(schema.check(&object(json!({"a": 1, "b": 2}))).is_ok());
        let problems = schema
            .check(&object(json!({"a": "one"})))
            .expect_err("invalid");
        let text = problems.join("; ");
        assert!(text.contains("/a"), "{text}");
        assert!(text.contains("\"b\""), "{text}");
    }

    #[test]
    fn a_schema_that_is_not_one_is_refused() {
        for bad in [
            json!({"type": "no-such-type"}),
            json!({"type": "object", "properties": {"a": {"minimum": "zero"}}}),
            json!({"$ref": "http://127.0.0.1:1/remote.json"}),
        ] {
            assert!(Schema::compile(&object(bad.clone())).is_err(), "{bad}");
        }
    }
}
