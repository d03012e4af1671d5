//! The OpenAI parameters beyond a plain answer, end to end through an
//! attested client: log-probabilities in both shapes, `n` choices, and
//! answers constrained to JSON and to a schema.

use super::*;

/// The bytes of each reported token, concatenated, are the answer's text.
fn text_of_tokens(content: &[Value]) -> String {
    let bytes: Vec<u8> = content
        .iter()
        .flat_map(|e| e["bytes"].as_array().unwrap().clone())
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    String::from_utf8(bytes).unwrap()
}

pub fn logprobs_in_both_shapes_and_n_choices(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    whole: &str,
) {
    // Chat: each token with its text, bytes and three alternatives; greedy
    // chooses the likeliest, and asking for logprobs changes no answer.
    let mut req = chat_request("What is the capital of France?", 16);
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(3);
    let v = rt.block_on(client.chat(&req)).unwrap();
    assert_eq!(content(&v), whole);
    let entries = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        entries.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(text_of_tokens(entries), whole);
    for e in entries {
        let lp = e["logprob"].as_f64().unwrap();
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{e}");
        assert!(
            lp <= 0.0 && (lp - top[0]["logprob"].as_f64().unwrap()).abs() < 1e-6,
            "{e}"
        );
        assert_eq!(top[0]["token"], e["token"]);
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]), "{e}");
    }
    // Without: null, as OpenAI answers.
    let plain = rt
        .block_on(client.chat(&chat_request("What is the capital of France?", 4)))
        .unwrap();
    assert_eq!(plain["choices"][0]["logprobs"], Value::Null);

    // Completions: the legacy parallel lists.
    let v = rt
        .block_on(
            client.completions(
                &json!({"prompt": "One, two, three,", "max_tokens": 6, "logprobs": 2}),
            ),
        )
        .unwrap();
    let choice = &v["choices"][0];
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.concat(), choice["text"].as_str().unwrap());
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{lp}");
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(top.len() <= 3 && top.contains_key(tokens[i]), "{lp}");
    }

    // n choices, each its own draw; the same seed draws the same choices.
    let mut req = chat_request("Name a colour.", 8);
    req["n"] = json!(3);
    req["temperature"] = json!(1.5);
    req["seed"] = json!(7);
    let a = rt.block_on(client.chat(&req)).unwrap();
    let b = rt.block_on(client.chat(&req)).unwrap();
    let answers = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                assert_eq!(c["index"], i);
                c["message"]["content"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(answers(&a).len(), 3);
    assert_eq!(answers(&a), answers(&b));
    let first = {
        let mut one = req.clone();
        one["n"] = json!(1);
        content(&rt.block_on(client.chat(&one)).unwrap())
    };
    assert_eq!(answers(&a)[0], first, "choice 0 is the request's own seed");

    // Refusals name the field.
    let err = |body: Value| match rt.block_on(client.chat(&body)) {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    };
    let base = chat_request("x", 2);
    for (field, value) in [("n", json!(9)), ("n", json!(0)), ("top_logprobs", json!(2))] {
        let mut body = base.clone();
        body[field] = value;
        let (status, msg) = err(body);
        assert_eq!(status, 400, "{msg}");
        assert!(msg.contains(field), "{msg}");
    }
    let mut body = base.clone();
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(21);
    let (status, msg) = err(body);
    assert_eq!(status, 400);
    assert!(msg.contains("top_logprobs"), "{msg}");
}

pub fn answers_in_json_and_to_a_schema(rt: &tokio::runtime::Runtime, client: &Client) {
    // A schema the answer must match: bounded, so greedy decoding ends.
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"enum": ["Paris", "London", "Rome"]},
            "sure": {"type": "boolean"}
        },
        "required": ["city", "sure"],
        "additionalProperties": false
    });
    let mut req = chat_request("Where is the Eiffel Tower? Answer in JSON.", 200);
    req["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}});
    let v = rt.block_on(client.chat(&req)).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let answer: Value = serde_json::from_str(&content(&v)).unwrap_or_else(|e| panic!("{e}: {v}"));
    let o = answer.as_object().unwrap();
    assert_eq!(o.len(), 2, "{answer}");
    assert!(
        ["Paris", "London", "Rome"].contains(&o["city"].as_str().unwrap()),
        "{answer}"
    );
    assert!(o["sure"].is_boolean(), "{answer}");

    // Any JSON object; streamed, the same constraint holds.
    let mut req = chat_request("Describe the Eiffel Tower as a JSON object.", 48);
    req["response_format"] = json!({"type": "json_object"});
    let whole = rt.block_on(client.chat(&req)).unwrap();
    let text = content(&whole);
    assert!(text.trim_start().starts_with('{'), "{text}");
    if whole["choices"][0]["finish_reason"] == "stop" {
        assert!(
            serde_json::from_str::<Value>(&text).unwrap().is_object(),
            "{text}"
        );
    }
    let mut streamed = String::new();
    rt.block_on(client.chat_stream(&req, |t| streamed.push_str(t)))
        .unwrap();
    assert_eq!(streamed, text);

    // A schema keyword it does not build is a 400 naming where it is.
    let mut req = chat_request("x", 8);
    req["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "s",
        "schema": {"type": "string", "pattern": "^a+$"}}});
    match rt.block_on(client.chat(&req)) {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, 400, "{message}");
            assert!(
                message.contains("response_format") && message.contains("#/pattern"),
                "{message}"
            );
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    req["response_format"] = json!({"type": "xml"});
    match rt.block_on(client.chat(&req)) {
        Err(ClientError::Api { status, message }) => {
            assert_eq!(status, 400, "{message}");
            assert!(message.contains("response_format"), "{message}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}
