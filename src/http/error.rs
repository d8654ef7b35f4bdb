//! Errors as HTTP answers: the core's [`ApiError`] rendered as its status and
//! OpenAI's error JSON, and JSON body extractors whose rejections are such
//! errors. Handlers return `Result<_, ApiError>` and use `?`.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use crate::exec::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// A JSON body extractor whose rejections are OpenAI-shaped errors.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(&body_bytes(req, state).await?)
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes).map(ApiJson).map_err(|e| {
            ApiError::invalid(
                "body",
                format!("We could not parse the JSON body of your request: {e}"),
            )
            .code("invalid_json")
        })
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|r: BytesRejection| {
            let status = r.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "invalid_request_error",
                    "The request body is too large.",
                )
                .code("request_too_large")
            } else {
                ApiError::new(status, "invalid_request_error", r.body_text())
            }
        })
}

/// A JSON object body, and its bytes as the client sent them (a forwarded
/// request carries them unchanged).
pub struct ApiObject {
    pub body: Map<String, Value>,
    pub raw: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for ApiObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = body_bytes(req, state).await?;
        let ApiJson(value) = ApiJson::<Value>::parse(&raw)?;
        match value {
            Value::Object(body) => Ok(Self { body, raw }),
            _ => Err(ApiError::invalid(
                "body",
                "The request body must be a JSON object.",
            )),
        }
    }
}
