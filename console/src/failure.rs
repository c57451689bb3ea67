//! A handler's failure as a page with the status it means.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coordkit::Error;

/// What a handler returns when it cannot answer with its page.
pub(crate) struct Failure {
    status: StatusCode,
    message: String,
}

/// A handler's answer.
pub(crate) type Answer<T = Response> = Result<T, Failure>;

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::VersionConflict { .. } => StatusCode::CONFLICT,
            Error::InvalidArgument { .. } | Error::Codec { .. } => StatusCode::BAD_REQUEST,
            Error::Compacted { .. } => StatusCode::GONE,
            Error::OutcomeUnknown { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        let message = match &e {
            Error::OutcomeUnknown { .. } => {
                format!("{e} — the change may still apply: reload to see the store as it is")
            }
            _ => e.to_string(),
        };
        Failure { status, message }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, crate::page::bare(self.status, &self.message)).into_response()
    }
}
