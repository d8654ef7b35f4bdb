//! The one error of the request core: an HTTP status and OpenAI's error JSON
//! `{"error": {"message", "type", "param", "code"}}`, whichever transport
//! carries it (an HTTP answer, an intent answer's body, a stream's head).
//! 500s never carry internal details.

use ::http::StatusCode;
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

    /// The JSON body, encoded.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(self.body().to_string())
    }
}

impl From<backend::Error> for ApiError {
    fn from(e: backend::Error) -> Self {
        let (status, code) = match &e {
            backend::Error::Unreachable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable")
            }
            backend::Error::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "backend_timeout"),
            backend::Error::BadResponse { .. } | backend::Error::Status { .. } => {
                (StatusCode::BAD_GATEWAY, "backend_bad_response")
            }
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
