//! Why a request could not be resolved: what fits cannot serve now, what
//! it carries no capability takes, or nothing fits. Each is the refusal a
//! client reads.

use ::http::StatusCode;

use super::{ApiError, Core};
use crate::capability::Input;
use crate::routing::{self, Decision, Need};

/// Why an `auto` decision chose nothing: what fits cannot serve now, what
/// the request carries no capability takes, or nothing fits.
pub(super) fn refusal(core: &Core, decision: &Decision, need: &Need) -> ApiError {
    down(decision, need)
        .or_else(|| none_takes(core, need))
        .unwrap_or_else(|| no_fit(decision))
}

/// When what fits the request is there but cannot serve now (its backend is
/// down, or its node says so), that is the answer: 503, not "nothing fits".
fn down(decision: &Decision, need: &Need) -> Option<ApiError> {
    let fitting = decision.candidates.iter().find(|c| {
        c.fits
            && !c.available
            && c.entry
                .as_ref()
                .is_some_and(|e| routing::kind_fits(e, need))
    })?;
    Some(
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "`{}` fits this request (score {:.3}) but cannot serve it now; try again later or name another model.",
                fitting.id, fitting.score
            ),
        )
        .code("capability_unavailable"),
    )
}

fn no_fit(decision: &Decision) -> ApiError {
    let best = decision
        .candidates
        .iter()
        .find(|c| c.eligible)
        .map(|c| match c.cutoff {
            Some(cutoff) => format!(
                " The closest was `{}` at {:.3}, below the {cutoff:.3} it needs.",
                c.id, c.score
            ),
            None => format!(" The closest was `{}` at {:.3}.", c.id, c.score),
        })
        .unwrap_or_default();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "No capability fits this request well enough.{best} Name a model explicitly, or configure routing.default."
        ),
    )
    .param("model")
    .code("no_capability_fits")
}

/// The refusal of a chat carrying images or audio that no capability
/// this node knows of takes, whatever its words.
fn none_takes(core: &Core, need: &Need) -> Option<ApiError> {
    let Need::Text(carries) = need else {
        return None;
    };
    let extra = carries.without(Input::Text);
    if extra.is_empty()
        || core
            .catalog
            .table()
            .entries()
            .iter()
            .any(|e| need.accepts(&e.capability))
    {
        return None;
    }
    Some(
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "No capability this node knows of takes {extra}: a chat carrying it goes only to capabilities whose inputs name it. Send text alone, or offer such a capability (`inputs` in its config)."
            ),
        )
        .param("messages")
        .code("no_capability_takes_input"),
    )
}
