//! Choosing the next token and measuring the model's certainty about it.
//! Pure code, called once per generated token with the raw logits.
//!
//! One pass over the vocabulary gives the maximum logit; a second gives the
//! softmax normaliser and the entropy together (H = ln Z - E[l - m] with
//! Z = sum exp(l - m)), so recording the chosen token's probability and the
//! entropy of the distribution costs about as much as a softmax: well under a
//! millisecond for a 150k vocabulary, against tens of milliseconds a decode step.

use rand::Rng;

/// The token picked at one step and what the distribution looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub token: usize,
    /// Probability the model (at temperature 1) gave the chosen token.
    pub prob: f32,
    /// Entropy of the model's next-token distribution, in nats.
    pub entropy: f32,
}

/// Picks the next token: the most likely one when `temperature` is 0 (greedy),
/// else a draw from softmax(logits / temperature). The recorded probability and
/// entropy are those of the untempered distribution, so signals do not depend
/// on the sampling setting.
pub fn step(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> Step {
    assert!(!logits.is_empty(), "empty logits");
    let max = max_logit(logits);
    let (z, weighted) = exp_sums(logits, max);
    let entropy = z.ln() - weighted / z;
    let token = if temperature > 0.0 {
        draw(logits, max, temperature, rng)
    } else {
        logits
            .iter()
            .position(|&l| l == max)
            .expect("the maximum is one of the logits")
    };
    let prob = fast_exp(logits[token] - max) / z;
    Step {
        token,
        prob,
        entropy,
    }
}

/// Lanes for the reductions below: independent accumulators let the compiler
/// use the full SIMD width (AVX-512, AVX2 or NEON) instead of a serial chain.
const LANES: usize = 16;

fn max_logit(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
        }
    }
    rest.iter()
        .chain(lanes.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Returns (Z, sum e^(l-m) (l-m)) with Z = sum e^(l-m).
fn exp_sums(logits: &[f32], max: f32) -> (f32, f32) {
    let mut z = [0.0f32; LANES];
    let mut w = [0.0f32; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            let d = c[k] - max;
            let e = fast_exp(d);
            z[k] += e;
            w[k] += e * d;
        }
    }
    let (mut zs, mut ws) = (z.iter().sum::<f32>(), w.iter().sum::<f32>());
    for &l in rest {
        let d = l - max;
        let e = fast_exp(d);
        zs += e;
        ws += e * d;
    }
    (zs, ws)
}

/// e^x for x <= 0, to about 2e-5 relative: 2^(x log2 e) split into the
/// nearest integer power (put straight into the exponent bits) and a degree-6
/// polynomial for the fraction in [-0.5, 0.5]. Rounding with the 1.5 * 2^23
/// constant instead of `floor` and a float-to-int cast keeps every step a
/// plain SIMD instruction, so the loop vectorises: the per-token statistics
/// stay a small fraction of a decode step even for a 262k vocabulary.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let shifted = t + ROUND;
    let i = shifted - ROUND; // t rounded to the nearest integer
    let f = t - i;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355 + f * 0.000_154_035_3)))));
    // The low mantissa bits of `shifted` hold i (two's complement); move them to the exponent.
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32) << 23;
    f32::from_bits((p.to_bits() as i32).wrapping_add(exponent) as u32)
}

fn draw(logits: &[f32], max: f32, temperature: f32, rng: &mut impl Rng) -> usize {
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return i;
        }
    }
    logits.len() - 1
}

/// Finds the earliest configured stop string in `text`; returns where to cut.
pub fn stop_at(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter_map(|s| text.find(s.as_str())).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn greedy_picks_the_largest_logit_with_its_softmax_probability() {
        let logits = [1.0f32, 3.0, 2.0];
        let s = step(&logits, 0.0, &mut rng());
        assert_eq!(s.token, 1);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((s.prob - 3.0f32.exp() / z).abs() < 1e-4);
    }

    #[test]
    fn entropy_matches_the_definition() {
        let logits = [0.5f32, -1.0, 2.0, 0.0];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let h: f64 = logits
            .iter()
            .map(|&l| {
                let p = (l as f64).exp() / z;
                -p * p.ln()
            })
            .sum();
        assert!((step(&logits, 0.0, &mut rng()).entropy as f64 - h).abs() < 1e-4);
    }

    #[test]
    fn uniform_distribution_has_maximal_entropy_and_certain_one_none() {
        let s = step(&[0.0; 8], 0.0, &mut rng());
        assert!((s.entropy - 8f32.ln()).abs() < 1e-4);
        assert!((s.prob - 0.125).abs() < 1e-4);
        let s = step(&[0.0, 100.0, 0.0], 0.0, &mut rng());
        assert!(s.entropy < 1e-4 && (s.prob - 1.0).abs() < 1e-4);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let s = step(&[1.0e4, 1.0e4 - 1.0], 0.0, &mut rng());
        assert!(s.prob.is_finite() && s.entropy.is_finite());
    }

    #[test]
    fn fast_exp_is_accurate_over_the_range_it_serves() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.004; // 0 down to -80
            let (got, want) = (fast_exp(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= 3e-5 * want, "x={x}: {got} vs {want}");
        }
        assert!(fast_exp(-1.0e4) >= 0.0 && fast_exp(-1.0e4) < 1e-37);
    }

    #[test]
    fn a_large_vocabulary_matches_the_exact_computation() {
        let mut r = rng();
        let logits: Vec<f32> = (0..150_001)
            .map(|_| r.random_range(-20.0f32..15.0))
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        let h: f64 = logits
            .iter()
            .map(|&l| {
                let p = (l as f64 - max).exp() / z;
                -p * p.ln()
            })
            .sum();
        let s = step(&logits, 0.0, &mut r);
        assert_eq!(logits[s.token] as f64, max);
        assert!(
            (s.entropy as f64 - h).abs() < 1e-3 * h,
            "{} vs {h}",
            s.entropy
        );
        assert!((s.prob as f64 - 1.0 / z).abs() < 1e-3 / z);
    }

    #[test]
    fn sampling_follows_the_tempered_distribution() {
        let mut r = rng();
        let logits = [0.0f32, 1.0];
        let ones = (0..4000)
            .filter(|_| step(&logits, 1.0, &mut r).token == 1)
            .count() as f64
            / 4000.0;
        let want = 1f64.exp() / (1.0 + 1f64.exp());
        assert!((ones - want).abs() < 0.03, "{ones} vs {want}");
    }

    #[test]
    fn stop_strings_cut_at_the_earliest() {
        let stops = vec!["\n".to_string(), "Question:".to_string()];
        assert_eq!(stop_at("Canberra\nQuestion: x", &stops), Some(8));
        assert_eq!(stop_at("Canberra Question:", &stops), Some(9));
        assert_eq!(stop_at("Canberra", &stops), None);
    }
}
