//! Reading llama.cpp reference files (`scripts/llamacpp-reference.py`).
#![allow(clippy::unwrap_used, dead_code)]

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A greedy case's top-1 margins, one per step.
pub fn margins(case: &serde_json::Value) -> Vec<f64> {
    case["top1_margin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect()
}
