//! Errors as HTTP answers: the core's [`ApiError`] rendered as its status and
//! OpenAI's error JSON, and JSON body extractors whose rejections are such
//! errors. Handlers return `Result<_, ApiError>` and use `?`.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::AppState;
use super::body::Held;
pub use crate::exec::ApiError;
use crate::lean::Spans;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// A JSON body extractor whose rejections are OpenAI-shaped errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Self::parse(&state.gates.read(req).await?.bytes)
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes)
            .map(ApiJson)
            .map_err(unparsable)
    }
}

fn unparsable(e: serde_json::Error) -> ApiError {
    ApiError::invalid(
        "body",
        format!("We could not parse the JSON body of your request: {e}"),
    )
    .code("invalid_json")
}

/// A JSON object body, and its bytes as the client sent them (a forwarded
/// request carries them unchanged).
pub struct ApiObject {
    pub body: Map<String, Value>,
    pub raw: Bytes,
    /// Where the long media strings of a chat are in `raw` ([`ChatObject`]).
    pub spans: Spans,
    /// The body's room in the node's budget, kept while the request runs.
    pub held: Held,
}

impl FromRequest<AppState> for ApiObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let read = state.gates.read(req).await?;
        let ApiJson(value) = ApiJson::<Value>::parse(&read.bytes)?;
        object(value, read, Spans::default())
    }
}

/// A chat's body: an [`ApiObject`] whose images and audio are not copied
/// out of the bytes the client sent ([`crate::lean`]).
pub struct ChatObject(pub ApiObject);

impl FromRequest<AppState> for ChatObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let read = state.gates.read(req).await?;
        let (value, spans) = crate::lean::parse(&read.bytes).map_err(unparsable)?;
        object(value, read, spans).map(ChatObject)
    }
}

fn object(value: Value, read: super::body::Body, spans: Spans) -> Result<ApiObject, ApiError> {
    match value {
        Value::Object(body) => Ok(ApiObject {
            body,
            raw: read.bytes,
            spans,
            held: read.held,
        }),
        _ => Err(ApiError::invalid(
            "body",
            "The request body must be a JSON object.",
        )),
    }
}
