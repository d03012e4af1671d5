//! Log-probabilities of generated tokens, as OpenAI's `logprobs` reports
//! them: the model's own distribution (the log-softmax of its logits, before
//! temperature, top-k or top-p shape the draw, as vLLM and llama.cpp report
//! them), for the chosen token and the most likely alternatives.

/// The most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP: usize = 20;

/// One generated token's log-probability and its likeliest alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    /// The `top` likeliest tokens, most likely first (ties by id).
    pub top: Vec<(u32, f32)>,
    /// Where the token's text starts in the completion, in characters.
    pub text_offset: usize,
}

/// `chosen`'s log-probability under `logits` and the `top` likeliest tokens
/// (at most [`MAX_TOP`]). Non-finite logits have probability zero.
pub fn token_logprob(logits: &[f32], chosen: u32, top: usize) -> TokenLogprob {
    let finite = || logits.iter().copied().filter(|l| l.is_finite());
    let max = finite().fold(f32::NEG_INFINITY, f32::max);
    // log Σ exp(l) computed around the maximum, in f64.
    let sum: f64 = finite().map(|l| f64::from(l - max).exp()).sum();
    let log_norm = f64::from(max) + sum.ln();
    let logprob = |l: f32| -> f32 {
        if l.is_finite() {
            (f64::from(l) - log_norm) as f32
        } else {
            f32::NEG_INFINITY
        }
    };
    let top = top.min(MAX_TOP);
    // The `top` largest, kept sorted in a small vector (k ≤ 20).
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
    if top > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if !l.is_finite() || (best.len() == top && best.last().is_some_and(|b| l <= b.1)) {
                continue;
            }
            let at = best.partition_point(|b| b.1 >= l);
            best.insert(at, (i as u32, l));
            best.truncate(top);
        }
    }
    TokenLogprob {
        id: chosen,
        logprob: logits
            .get(chosen as usize)
            .map_or(f32::NEG_INFINITY, |&l| logprob(l)),
        top: best.into_iter().map(|(i, l)| (i, logprob(l))).collect(),
        text_offset: 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_the_logits_with_the_likeliest_first() {
        // Probabilities 1/2, 1/4, 1/8, 1/8 (logits ln p + 3).
        let logits: Vec<f32> = [0.5f32, 0.25, 0.125, 0.125]
            .iter()
            .map(|p| p.ln() + 3.0)
            .collect();
        let t = token_logprob(&logits, 1, 3);
        assert!((t.logprob - 0.25f32.ln()).abs() < 1e-6, "{t:?}");
        let ids: Vec<u32> = t.top.iter().map(|p| p.0).collect();
        // Equal logits keep the lower id first.
        assert_eq!(ids, [0, 1, 2]);
        for (id, lp) in &t.top {
            assert!((lp - logits[*id as usize] + 3.0).abs() < 1e-6);
        }
        // The probabilities of all tokens sum to one.
        let all = token_logprob(&logits, 0, MAX_TOP);
        let total: f32 = all.top.iter().map(|p| p.1.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
    }

    #[test]
    fn masked_and_huge_logits_stay_finite_where_they_should() {
        let logits = [f32::NEG_INFINITY, 1000.0, 999.0, f32::NAN];
        let t = token_logprob(&logits, 1, 4);
        assert!(t.logprob.is_finite() && t.logprob < 0.0, "{t:?}");
        assert_eq!(token_logprob(&logits, 0, 0).logprob, f32::NEG_INFINITY);
        assert_eq!(t.top.len(), 2, "{t:?}");
        assert_eq!(token_logprob(&logits, 9, 0).logprob, f32::NEG_INFINITY);
    }
}
