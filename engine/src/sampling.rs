//! Choosing the next token: greedy, or temperature with top-k and top-p
//! (nucleus) filtering, from a seeded generator so a request with a seed
//! is reproducible.

/// Sampling parameters (OpenAI-style; 0 temperature means greedy).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Why parameters were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    #[error("temperature {0} must be between 0 and 2")]
    Temperature(f32),
    #[error("top_p {0} must be in (0, 1]")]
    TopP(f32),
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(0.0..=2.0).contains(&self.temperature) || self.temperature.is_nan() {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        Ok(())
    }
}

/// SplitMix64: small, fast, and good enough to draw sampling decisions
/// (nothing secret depends on it).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws tokens according to its parameters.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        let seed = params.seed;
        Ok(Sampler {
            params,
            rng: SplitMix64(seed),
        })
    }

    /// Whether it always takes the likeliest token.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature == 0.0 || self.params.top_k == 1
    }

    /// The next token for `logits`: softmax at the temperature over the
    /// finite logits, within the `top_k` likeliest and then the smallest
    /// set of likeliest whose probability reaches `top_p`. Nothing sorts
    /// the whole vocabulary (262,144 tokens for Gemma: a full sort was
    /// milliseconds a token): the top k are selected, the nucleus found by
    /// sorting only as many of the likeliest as it needs. Deterministic for
    /// a seed (ties go to the lower id).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return super::model::argmax(logits).0;
        }
        let t = f64::from(self.params.temperature);
        let mut cand: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, f64::from(l) / t))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        // Likeliest first; ties to the lower id (a total order).
        let likelier = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let top_k = self.params.top_k;
        if top_k > 0 && top_k < cand.len() {
            cand.select_nth_unstable_by(top_k - 1, likelier);
            cand.truncate(top_k);
            cand.sort_unstable_by(likelier);
        }
        let max = cand.iter().fold(f64::NEG_INFINITY, |m, c| m.max(c.1));
        for c in cand.iter_mut() {
            c.1 = (c.1 - max).exp();
        }
        let sum: f64 = cand.iter().map(|c| c.1).sum();
        let kept = if self.params.top_p < 1.0 {
            nucleus(&mut cand, f64::from(self.params.top_p) * sum, likelier)
        } else {
            cand.len()
        };
        let total = match kept == cand.len() {
            true => sum,
            false => cand[..kept].iter().map(|c| c.1).sum::<f64>(),
        };
        let kept = &cand[..kept];
        let mut r = self.rng.next_f64() * total;
        for (id, p) in kept {
            if r < *p {
                return *id;
            }
            r -= p;
        }
        kept.last().map_or(0, |p| p.0)
    }
}

/// How many of the likeliest of `cand` (weights, unnormalised) it takes
/// for their weights to reach `need`, those put first in order: sorts the
/// likeliest 64, then 256, … until they reach it (a nucleus is usually a
/// few dozen tokens), never the rest.
fn nucleus(
    cand: &mut [(u32, f64)],
    need: f64,
    likelier: impl Fn(&(u32, f64), &(u32, f64)) -> std::cmp::Ordering + Copy,
) -> usize {
    let mut m = cand.len().min(64);
    loop {
        if m < cand.len() {
            cand.select_nth_unstable_by(m - 1, likelier);
        }
        cand[..m].sort_unstable_by(likelier);
        let mut acc = 0.0;
        if let Some(i) = cand[..m].iter().position(|c| {
            acc += c.1;
            acc >= need
        }) {
            return i + 1;
        }
        if m == cand.len() {
            return m;
        }
        m = cand.len().min(m * 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(params: SamplingParams, logits: &[f32], n: usize) -> Vec<usize> {
        let mut s = Sampler::new(params).unwrap_or_else(|e| panic!("{e}"));
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[s.sample(logits) as usize] += 1;
        }
        c
    }

    #[test]
    fn greedy_and_top_k_1_are_argmax() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        assert_eq!(
            counts(SamplingParams::default(), &logits, 10),
            vec![0, 10, 0, 0]
        );
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        assert_eq!(counts(p, &logits, 10), vec![0, 10, 0, 0]);
    }

    #[test]
    fn temperature_follows_softmax_and_filters_apply() {
        // ln(3): token 1 is three times as likely as token 0.
        let logits = [0.0f32, 3f32.ln(), f32::NEG_INFINITY];
        let p = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let c = counts(p, &logits, 40_000);
        let ratio = c[1] as f64 / c[0] as f64;
        assert!((2.8..3.2).contains(&ratio), "ratio {ratio}");
        assert_eq!(c[2], 0);
        // top_p 0.5 keeps only the top token (0.75 ≥ 0.5).
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
            ..Default::default()
        };
        assert_eq!(counts(p, &logits, 100)[0], 0);
        // top_k 2 of 4 never picks the last two.
        let p = SamplingParams {
            temperature: 1.5,
            top_k: 2,
            seed: 1,
            ..Default::default()
        };
        let c = counts(p, &[1.0, 1.1, 0.9, 0.8], 1000);
        assert_eq!(c[2] + c[3], 0);
    }

    /// Over a large vocabulary the nucleus and the top k are found without
    /// a full sort and hold exactly the tokens they should.
    #[test]
    fn nucleus_and_top_k_over_a_large_vocabulary() {
        // 10,000 tokens: the last has logit 10, token 7 logit 9, the rest
        // 0. At temperature 1 the top two weigh 1 and e⁻¹ ≈ 0.368 against
        // 9,998 · e⁻¹⁰ ≈ 0.454 for the rest (1.822 in all).
        const N: usize = 10_000;
        let mut logits = vec![0f32; N];
        (logits[N - 1], logits[7]) = (10.0, 9.0);
        let p = |top_p: f32, top_k: usize| SamplingParams {
            temperature: 1.0,
            top_p,
            top_k,
            seed: 3,
        };
        // Nucleus 0.1: the likeliest alone reaches it.
        assert_eq!(counts(p(0.1, 0), &logits, 200)[N - 1], 200);
        // Nucleus 0.6: the two likeliest (1.368 of 1.822), in the ratio e.
        let c = counts(p(0.6, 0), &logits, 4_000);
        assert_eq!(c[N - 1] + c[7], 4_000);
        let ratio = c[N - 1] as f64 / c[7] as f64;
        assert!((2.4..3.1).contains(&ratio), "ratio {ratio}");
        // Nucleus 0.9: the two and ~6,000 of the ties (past the first 64
        // sorted, so the search widens), the lowest ids first.
        let c = counts(p(0.9, 0), &logits, 4_000);
        let others: usize = c.iter().sum::<usize>() - c[N - 1] - c[7];
        assert!(others > 300, "{others}");
        assert!(c[6_100..N - 1].iter().all(|&n| n == 0));
        // Top k 3 (the ties closer): the two likeliest and the lowest id of
        // the ties (0), nothing else.
        let mut close = vec![0f32; N];
        (close[N - 1], close[7]) = (1.0, 0.5);
        let c = counts(p(1.0, 3), &close, 4_000);
        let picked: Vec<usize> = (0..N).filter(|&i| c[i] > 0).collect();
        assert_eq!(picked, vec![0, 7, N - 1]);
        // No filter: every token can come (a quarter of the draws spread
        // over the ties).
        let c = counts(p(1.0, 0), &logits, 4_000);
        assert!(c.iter().filter(|&&n| n > 0).count() > 500);
    }

    #[test]
    fn seeds_reproduce_and_bad_parameters_are_refused() {
        let p = SamplingParams {
            temperature: 0.8,
            seed: 42,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<u32> = {
            let mut s = Sampler::new(p.clone()).unwrap_or_else(|e| panic!("{e}"));
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(p).unwrap_or_else(|e| panic!("{e}"));
            (0..20).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        assert!(
            Sampler::new(SamplingParams {
                temperature: 3.0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Sampler::new(SamplingParams {
                top_p: 0.0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            Sampler::new(SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            })
            .is_err()
        );
    }
}
