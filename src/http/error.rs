//! The one HTTP error type: a status and OpenAI's error JSON
//! `{"error": {"message", "type", "param", "code"}}`. Handlers return
//! `Result<_, ApiError>` and use `?`; 500s never carry internal details.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::backend;

/// An error answered in OpenAI's shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// 400: the request is malformed; `param` names the offending field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).param(param)
    }

    /// 404 for a model id nobody offers.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or is not offered by any known node. GET /v1/models lists what is."),
        )
        .param("model")
        .code("model_not_found")
    }

    /// 500 whose details stay in the log.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(context, %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The node had an internal error while handling the request.",
        )
    }

    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<backend::Error> for ApiError {
    fn from(e: backend::Error) -> Self {
        let (status, code) = match &e {
            backend::Error::Unreachable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable")
            }
            backend::Error::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "backend_timeout"),
            backend::Error::BadResponse { .. } => (StatusCode::BAD_GATEWAY, "backend_bad_response"),
            backend::Error::Unsupported { .. } => {
                (StatusCode::BAD_REQUEST, "unsupported_operation")
            }
        };
        let kind = if status == StatusCode::BAD_REQUEST {
            "invalid_request_error"
        } else {
            "api_error"
        };
        ApiError::new(status, kind, e.to_string()).code(code)
    }
}

impl From<crate::embed::Error> for ApiError {
    fn from(e: crate::embed::Error) -> Self {
        match e {
            crate::embed::Error::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "The node is shutting down.",
            ),
            other => ApiError::internal("embedder", other),
        }
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
        let bytes = Bytes::from_request(req, state)
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
            })?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            ApiError::invalid(
                "body",
                format!("We could not parse the JSON body of your request: {e}"),
            )
            .code("invalid_json")
        })
    }
}
