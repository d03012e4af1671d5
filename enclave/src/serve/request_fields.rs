//! The request fields the API honours, and a 400 naming any other: a
//! parameter this server does not implement (penalties, `logit_bias`, the
//! legacy `functions`, …) is refused, never silently ignored, so a client never takes
//! an answer for one it did not get.

use super::api::ApiError;
use super::request::Route;
use axum::http::StatusCode;

/// Fields both completion routes take.
const COMMON: &[&str] = &[
    "model",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "response_format",
];

/// OpenAI parameters known but not implemented here (named as such).
const NOT_YET: &[&str] = &[
    "functions",
    "function_call",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "suffix",
    "echo",
    "best_of",
];

/// The first field of a JSON object body that `route` does not take, as a
/// 400 naming it. A body that is not a JSON object passes through (the
/// typed parse reports it).
pub(super) fn refuse_unknown(route: Route, body: &serde_json::Value) -> Result<(), ApiError> {
    let serde_json::Value::Object(fields) = body else {
        return Ok(());
    };
    let own: &[&str] = match route {
        Route::Chat => &[
            "messages",
            "logprobs",
            "top_logprobs",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
        ],
        Route::Text => &["prompt", "logprobs"],
    };
    match fields
        .keys()
        .find(|k| !own.contains(&k.as_str()) && !COMMON.contains(&k.as_str()))
    {
        None => Ok(()),
        Some(k) => {
            let why = if NOT_YET.contains(&k.as_str()) {
                "is not supported by this server yet"
            } else {
                "is not a parameter of this endpoint"
            };
            Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "invalid_request_error",
                param: Some(k.clone()),
                message: format!("{k}: {why}"),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Route;

    fn refuse_unknown(route: Route, body: &[u8]) -> Result<(), super::ApiError> {
        super::refuse_unknown(route, &serde_json::from_slice(body).unwrap())
    }

    #[test]
    fn unknown_and_unimplemented_fields_are_refused_by_name() {
        let ok = br#"{"model":"m","messages":[],"max_tokens":3,"stream":true}"#;
        assert!(refuse_unknown(Route::Chat, ok).is_ok());
        assert!(refuse_unknown(Route::Chat, br#"{"messages":[],"tools":[]}"#).is_ok());
        let e = refuse_unknown(Route::Chat, br#"{"messages":[],"functions":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("functions"));
        assert!(e.message.contains("not supported"), "{}", e.message);
        let e = refuse_unknown(Route::Chat, br#"{"messages":[],"temprature":1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temprature"));
        // Each route's own field belongs to it alone.
        let e = refuse_unknown(Route::Text, br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(refuse_unknown(Route::Text, br#"{"prompt":"x","seed":1,"logprobs":2}"#).is_ok());
        let e = refuse_unknown(Route::Text, br#"{"prompt":"x","top_logprobs":2}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        // Not an object: left to the typed parse and its error.
        assert!(refuse_unknown(Route::Text, b"[1]").is_ok());
    }
}
