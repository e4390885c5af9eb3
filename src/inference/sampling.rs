//! Choosing the next token and measuring the model's certainty about it.
//! Pure code, called once per generated token with the raw logits.
//!
//! One pass over the vocabulary gives the chosen token, the softmax
//! normaliser and the entropy together (H = ln Z - E[l - m] with
//! Z = sum exp(l - m), m the largest logit). It runs block by block: a block's
//! maximum, then its exponentials while the block is still in the L1 cache,
//! then a merge into the running sums. Three sweeps over the whole vocabulary
//! (maximum, exponentials, position of the maximum) read a 262k vocabulary's
//! 1 MiB of logits from beyond the L2 cache each time and took 2 to 3% of a
//! Gemma 3 270M decode step; one sweep takes under 1%.

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
    let sums = scan(logits);
    let entropy = sums.z.ln() - sums.w / sums.z;
    let token = if temperature > 0.0 {
        draw(logits, sums.max, temperature, rng)
    } else {
        sums.argmax
    };
    let prob = fast_exp(logits[token] - sums.max) / sums.z;
    Step {
        token,
        prob,
        entropy,
    }
}

/// Logits per block: 4 KiB, so a block read for its maximum is still in the
/// L1 cache when its exponentials are summed.
const BLOCK: usize = 1024;

/// The largest logit, where it first occurs, Z = sum e^(l-max) and
/// W = sum e^(l-max) (l-max).
#[derive(Debug, Clone, Copy)]
struct Sums {
    max: f32,
    argmax: usize,
    z: f32,
    w: f32,
}

fn scan(logits: &[f32]) -> Sums {
    let mut total: Option<Sums> = None;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        let max = max_logit(block);
        if max == f32::NEG_INFINITY {
            continue; // adds nothing to the sums (also a block of NaNs)
        }
        let (z, w) = exp_sums(block, max);
        let here = Sums {
            max,
            argmax: 0, // found below, only for a block that leads
            z,
            w,
        };
        total = Some(match total {
            // Only a strictly larger maximum moves the argmax, so a tie keeps
            // the first occurrence, as a scan from the start would.
            Some(t) if max <= t.max => merge(t, here),
            led => {
                let at = block.iter().position(|&l| l == max);
                let here = Sums {
                    argmax: b * BLOCK + at.expect("the block's maximum is one of its logits"),
                    ..here
                };
                led.map_or(here, |t| merge(here, t))
            }
        });
    }
    total.expect("no logit is a number")
}

/// Sums over both parts, relative to `high`'s maximum (>= `low`'s): with
/// d = low.max - high.max <= 0, sum e^(l-high)(l-high) over `low` is
/// e^d (low.w + d low.z).
fn merge(high: Sums, low: Sums) -> Sums {
    let d = low.max - high.max;
    let scale = d.exp();
    Sums {
        z: high.z + scale * low.z,
        w: high.w + scale * (low.w + d * low.z),
        ..high
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
            // Clamped as fast_exp clamps, so that a masked token's
            // e^d * d is 0 * -87 and not 0 * -inf = NaN.
            let d = (c[k] - max).max(MIN_EXPONENT);
            let e = fast_exp(d);
            z[k] += e;
            w[k] = mul_add(e, d, w[k]);
        }
    }
    let (mut zs, mut ws) = (z.iter().sum::<f32>(), w.iter().sum::<f32>());
    for &l in rest {
        let d = (l - max).max(MIN_EXPONENT);
        let e = fast_exp(d);
        zs += e;
        ws += e * d;
    }
    (zs, ws)
}

/// Below this, e^x is under f32's smallest normal number: fast_exp's
/// result stays there (about 1.6e-38, as good as 0 in any sum here).
const MIN_EXPONENT: f32 = -87.0;

/// e^x for x <= 0, to about 1e-5 relative: 2^(x log2 e) split into the
/// nearest integer power (put straight into the exponent bits) and a degree-4
/// polynomial for the fraction in [-0.5, 0.5] (interpolating 2^f at the
/// Chebyshev nodes: 3.5e-6 off at most). Rounding with the 1.5 * 2^23
/// constant instead of `floor` and a float-to-int cast keeps every step a
/// plain SIMD instruction, so the loop vectorises.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let t = x.max(MIN_EXPONENT) * std::f32::consts::LOG2_E;
    let shifted = t + ROUND;
    let i = shifted - ROUND; // t rounded to the nearest integer
    let f = t - i;
    let p = mul_add(
        f,
        mul_add(
            f,
            mul_add(f, mul_add(f, 0.009_666_368, 0.055_921_976), 0.240_223_5),
            0.693_121,
        ),
        1.0,
    );
    // The low mantissa bits of `shifted` hold i (two's complement); move them to the exponent.
    let exponent = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32) << 23;
    f32::from_bits((p.to_bits() as i32).wrapping_add(exponent) as u32)
}

/// a * b + c, fused where the CPU has the instruction (x86-64 with FMA, as
/// the host-tuned build has; every aarch64 board). Elsewhere `mul_add` would
/// call the C library's software fma, dozens of times slower.
#[inline(always)]
fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(any(target_feature = "fma", target_arch = "aarch64"))]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(any(target_feature = "fma", target_arch = "aarch64")))]
    {
        a * b + c
    }
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

    /// The greedy step's answer computed directly, in f64: (first argmax,
    /// its probability, the entropy).
    fn exact(logits: &[f32]) -> (usize, f64, f64) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let at = logits.iter().position(|&l| l == max).unwrap();
        let z: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let h: f64 = logits
            .iter()
            .map(|&l| {
                let p = ((l - max) as f64).exp() / z;
                if p > 0.0 {
                    -p * p.ln()
                } else {
                    0.0
                }
            })
            .sum();
        (at, 1.0 / z, h)
    }

    #[test]
    fn the_maximum_in_a_later_block_and_ties_across_blocks() {
        let mut logits = vec![0.0f32; 3 * BLOCK + 5];
        logits[2 * BLOCK + 7] = 9.0; // a later block holds the maximum
        logits[3 * BLOCK + 2] = 9.0; // and the remainder ties it
        logits[5] = 8.0; // the first block's own maximum is lower
        let s = step(&logits, 0.0, &mut rng());
        let (at, p, h) = exact(&logits);
        assert_eq!((s.token, at), (2 * BLOCK + 7, 2 * BLOCK + 7));
        assert!((s.prob as f64 - p).abs() < 1e-5 * p, "{} vs {p}", s.prob);
        assert!(
            (s.entropy as f64 - h).abs() < 1e-4 * h,
            "{} vs {h}",
            s.entropy
        );
    }

    #[test]
    fn masked_tokens_count_for_nothing() {
        // A whole block at minus infinity (tokens a grammar or bias rules
        // out) and some among the rest: no NaN, the same as without them.
        let mut logits = vec![f32::NEG_INFINITY; BLOCK];
        logits.extend([1.0, f32::NEG_INFINITY, 2.0, 0.5]);
        let s = step(&logits, 0.0, &mut rng());
        let t = step(&[1.0, 2.0, 0.5], 0.0, &mut rng());
        assert_eq!(s.token, BLOCK + 2);
        assert!((s.prob - t.prob).abs() < 1e-6 && (s.entropy - t.entropy).abs() < 1e-5);
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_matches_the_direct_computation(
            logits in proptest::collection::vec(-40.0f32..40.0, 1..(3 * BLOCK + 40)),
        ) {
            let s = step(&logits, 0.0, &mut rng());
            let (at, p, h) = exact(&logits);
            proptest::prop_assert_eq!(s.token, at);
            proptest::prop_assert!((s.prob as f64 - p).abs() <= 1e-4 * p + 1e-7, "{} vs {}", s.prob, p);
            proptest::prop_assert!((s.entropy as f64 - h).abs() <= 1e-4 * h + 1e-5, "{} vs {}", s.entropy, h);
        }
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
