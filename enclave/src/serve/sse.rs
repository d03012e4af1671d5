//! Streamed answers: server-sent events in OpenAI's chunk format.

use super::api::{Route, finish_reason};
use super::worker::Event;
use axum::response::sse::{Event as SseEvent, Sse};
use ciel_engine::generate::Completion;
use serde_json::json;
use std::convert::Infallible;

/// Server-sent events in OpenAI's chunk format, ending with `[DONE]`; with
/// `include_usage`, the chunk before `[DONE]` has no choices and the usage.
pub(super) fn stream(
    events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    kind: Route,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let object = match kind {
        Route::Chat => "chat.completion.chunk",
        Route::Text => "text_completion",
    };
    // Chat streams open with the assistant's role, as OpenAI's do.
    let first = (kind == Route::Chat).then(|| {
        SseEvent::default().data(
            json!({"id": id, "object": object, "created": created, "model": model,
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
            .to_string(),
        )
    });
    let usage_names = (id.clone(), model.clone());
    let chunk = move |delta: Option<&str>, finish: Option<&str>| {
        let choice = match kind {
            Route::Chat => json!({
                "index": 0,
                "delta": match delta { Some(t) => json!({"content": t}), None => json!({}) },
                "finish_reason": finish,
            }),
            Route::Text => {
                json!({"index": 0, "text": delta.unwrap_or(""), "finish_reason": finish})
            }
        };
        SseEvent::default().data(
            json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]})
                .to_string(),
        )
    };
    let usage_chunk = {
        let (id, model) = usage_names;
        move |done: &Completion| {
            let usage = json!({
                "prompt_tokens": done.prompt_tokens,
                "completion_tokens": done.ids.len(),
                "total_tokens": done.prompt_tokens + done.ids.len(),
            });
            SseEvent::default().data(
                json!({"id": id, "object": object, "created": created, "model": model,
                       "choices": [], "usage": usage})
                .to_string(),
            )
        }
    };
    // State: the events, whether the stream has ended, and a chunk due
    // before the next event (the usage, after the finish chunk).
    let body = futures_util::stream::unfold(
        (events, false, None::<SseEvent>),
        move |(mut events, finished, due)| {
            let (chunk, usage_chunk) = (chunk.clone(), usage_chunk.clone());
            async move {
                if let Some(e) = due {
                    return Some((Ok(e), (events, false, None)));
                }
                if finished {
                    return None;
                }
                match events.recv().await {
                    Some(Event::Text(t)) => {
                        Some((Ok(chunk(Some(&t), None)), (events, false, None)))
                    }
                    Some(Event::Done(done)) => {
                        let due = include_usage.then(|| usage_chunk(&done));
                        Some((
                            Ok(chunk(None, Some(finish_reason(done.finish)))),
                            (events, false, due),
                        ))
                    }
                    Some(Event::Failed(e)) => Some((
                        Ok(SseEvent::default().data(
                            json!({"error": {"message": e, "type": "server_error"}}).to_string(),
                        )),
                        (events, true, None),
                    )),
                    None => Some((Ok(SseEvent::default().data("[DONE]")), (events, true, None))),
                }
            }
        },
    );
    let head = futures_util::stream::iter(first.map(Ok));
    Sse::new(futures_util::StreamExt::chain(head, body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use ciel_engine::generate::Finish;
    use http_body_util::BodyExt;

    async fn body(include_usage: bool) -> String {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Event::Text("Hi".into())).unwrap();
        tx.send(Event::Done(Completion {
            ids: vec![7, 8],
            text: "Hi".into(),
            finish: Finish::Stop,
            prompt_tokens: 5,
        }))
        .unwrap();
        drop(tx);
        let resp =
            stream(rx, Route::Chat, "id-1".into(), "m".into(), 0, include_usage).into_response();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_usage_chunk_comes_last_before_done_only_when_asked() {
        let with = body(true).await;
        let events: Vec<&str> = with.split("\n\n").filter(|e| !e.is_empty()).collect();
        // Role, text, finish, usage, [DONE].
        assert_eq!(events.len(), 5, "{with}");
        let usage: serde_json::Value =
            serde_json::from_str(events[3].trim_start_matches("data: ")).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
        );
        assert_eq!(events[4], "data: [DONE]");
        let without = body(false).await;
        assert!(!without.contains("usage"), "{without}");
        assert!(without.ends_with("data: [DONE]\n\n"), "{without}");
    }
}
