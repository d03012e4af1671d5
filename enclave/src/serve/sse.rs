//! Streamed answers: server-sent events in OpenAI's chunk format.

use super::request::Route;
use super::worker::Event;
use axum::response::sse::{Event as SseEvent, Sse};
use ciel_engine::logprobs::TokenLogprob;
use ciel_engine::tokenizer::Tokenizer;
use ciel_engine::tools::ToolSyntax;
use futures_util::StreamExt;
use serde_json::Value;
use serde_json::json;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// What every chunk of one streamed answer repeats, and what it carries.
#[derive(Debug)]
pub(super) struct StreamHead {
    pub kind: Route,
    pub id: String,
    pub model: String,
    pub created: u64,
    /// A last chunk with no choices carries the usage.
    pub include_usage: bool,
    /// Set when the request asked for log-probabilities: the tokenizer
    /// that names their tokens.
    pub logprobs: Option<Arc<Tokenizer>>,
    /// The answer may end in tool calls, in this syntax: the engine streams
    /// the text before them, and they go out whole at the end.
    pub tools: Option<ToolSyntax>,
}

/// Server-sent events in OpenAI's chunk format, ending with `[DONE]`: the
/// events of each choice (`n` of them) interleaved as they come, each chunk
/// naming its choice's index. With `include_usage`, the chunk before
/// `[DONE]` has no choices and the usage of them all.
pub(super) fn stream(
    choices: Vec<UnboundedReceiver<Event>>,
    head: StreamHead,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let StreamHead {
        kind,
        id,
        model,
        created,
        include_usage,
        logprobs,
        tools,
    } = head;
    let object = match kind {
        Route::Chat => "chat.completion.chunk",
        Route::Text => "text_completion",
    };
    let n = choices.len();
    let event = move |choices: Value, usage: Option<Value>| {
        let mut body = json!({"id": id, "object": object, "created": created, "model": model,
                              "choices": choices});
        if let Some(u) = usage {
            body["usage"] = u;
        }
        SseEvent::default().data(body.to_string())
    };
    let chunk = move |index: usize,
                      delta: Option<&str>,
                      tokens: &[TokenLogprob],
                      finish: Option<&str>| {
        let lp = match (&logprobs, delta) {
            (Some(t), Some(_)) => super::logprobs::to_json(kind, t, tokens),
            _ => Value::Null,
        };
        match kind {
            Route::Chat => json!({
                "index": index,
                "delta": match delta { Some(t) => json!({"content": t}), None => json!({}) },
                "logprobs": lp,
                "finish_reason": finish,
            }),
            Route::Text => {
                json!({"index": index, "text": delta.unwrap_or(""), "logprobs": lp, "finish_reason": finish})
            }
        }
    };
    // Chat streams open with the assistant's role, as OpenAI's do.
    let mut due = VecDeque::new();
    if kind == Route::Chat {
        for index in 0..n {
            due.push_back(event(
                json!([{"index": index, "delta": {"role": "assistant", "content": ""},
                        "logprobs": null, "finish_reason": null}]),
                None,
            ));
        }
    }
    let merged =
        futures_util::stream::select_all(choices.into_iter().enumerate().map(|(index, rx)| {
            futures_util::stream::unfold(rx, move |mut rx| async move {
                rx.recv().await.map(|e| ((index, e), rx))
            })
            .boxed()
        }));
    let state = Streaming {
        merged,
        due,
        streamed: vec![0; n],
        prompt_tokens: 0,
        completion_tokens: 0,
        ended: false,
    };
    Sse::new(futures_util::stream::unfold(state, move |mut st| {
        let (chunk, event) = (chunk.clone(), event.clone());
        async move {
            loop {
                if let Some(e) = st.due.pop_front() {
                    return Some((Ok(e), st));
                }
                if st.ended {
                    return None;
                }
                match st.merged.next().await {
                    Some((i, Event::Text { text, logprobs })) => {
                        if let Some(s) = st.streamed.get_mut(i) {
                            *s += text.len();
                        }
                        let c = chunk(i, Some(&text), &logprobs, None);
                        st.due.push_back(event(json!([c]), None));
                    }
                    Some((i, Event::Done(done))) => {
                        st.prompt_tokens = done.prompt_tokens;
                        st.completion_tokens += done.ids.len();
                        let (calls, finish) =
                            super::tools::read_calls(&done.text, done.finish, tools);
                        let streamed = st.streamed.get(i).copied().unwrap_or(0);
                        if let Some(calls) = &calls {
                            let delta = json!({"tool_calls": super::tools::to_json(calls, true)});
                            st.due.push_back(event(
                                json!([{"index": i, "delta": delta, "logprobs": null, "finish_reason": null}]),
                                None,
                            ));
                        } else if let Some(rest) =
                            done.text.get(streamed..).filter(|r| !r.is_empty())
                        {
                            // Text the engine held back for calls that did
                            // not come (an answer cut short): it is text.
                            let c = chunk(i, Some(rest), &[], None);
                            st.due.push_back(event(json!([c]), None));
                        }
                        let c = chunk(i, None, &[], Some(finish));
                        st.due.push_back(event(json!([c]), None));
                    }
                    Some((_, Event::Failed(e))) => {
                        // The other choices are dropped with the stream.
                        let error = json!({"error": {"message": e, "type": "server_error"}});
                        st.due
                            .push_back(SseEvent::default().data(error.to_string()));
                        st.ended = true;
                    }
                    None => {
                        if include_usage {
                            let usage = json!({
                                "prompt_tokens": st.prompt_tokens,
                                "completion_tokens": st.completion_tokens,
                                "total_tokens": st.prompt_tokens + st.completion_tokens,
                            });
                            st.due.push_back(event(json!([]), Some(usage)));
                        }
                        st.due.push_back(SseEvent::default().data("[DONE]"));
                        st.ended = true;
                    }
                }
            }
        }
    }))
}

/// A stream in progress: the choices' events, chunks due before the next
/// event, the text streamed, the usage so far, and whether it has ended.
struct Streaming<S> {
    merged: S,
    due: VecDeque<SseEvent>,
    /// Bytes of text streamed, per choice.
    streamed: Vec<usize>,
    prompt_tokens: usize,
    completion_tokens: usize,
    ended: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use ciel_engine::generate::{Completion, Finish};
    use http_body_util::BodyExt;

    async fn body(include_usage: bool) -> String {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Event::Text {
            text: "Hi".into(),
            logprobs: vec![],
        })
        .unwrap();
        tx.send(Event::Done(Completion {
            ids: vec![7, 8],
            text: "Hi".into(),
            finish: Finish::Stop,
            prompt_tokens: 5,
            logprobs: vec![],
        }))
        .unwrap();
        drop(tx);
        let head = StreamHead {
            kind: Route::Chat,
            id: "id-1".into(),
            model: "m".into(),
            created: 0,
            include_usage,
            logprobs: None,
            tools: None,
        };
        let resp = stream(vec![rx], head).into_response();
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
