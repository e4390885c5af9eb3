//! Multinomial logistic regression: the learned layers' classifier (the
//! harm check's head over a model's question embedding).
//!
//! Inputs are standardised with the training set's mean and spread, kept in
//! the model so that prediction needs nothing else. Fitting is full-batch
//! gradient descent with Nesterov momentum on the weighted cross-entropy
//! plus an L2 penalty: the loss is convex, so the result does not depend on
//! the order of the data, and a few hundred steps over a few thousand
//! examples of a few hundred features take seconds. The step size is
//! 1/L for the loss's curvature bound L (Böhning: half the largest
//! eigenvalue of the inputs' weighted second moment, found by power
//! iteration, plus the penalty), so no learning rate needs tuning and
//! strongly correlated features (as embeddings are) cannot make it diverge.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Softmax {
    /// Class names, in the order of `weights` and `bias`.
    pub classes: Vec<String>,
    /// Per feature: subtracted before scaling.
    pub mean: Vec<f32>,
    /// Per feature: the standardised input is `(x - mean) * scale`.
    pub scale: Vec<f32>,
    /// One row of weights per class, one weight per feature.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// L2 penalty on the weights (not the biases), per example.
    pub l2: f32,
    pub steps: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            steps: 400,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SoftmaxError {
    #[error("no training examples")]
    Empty,
    #[error("example {index} has {got} features, the first has {want}")]
    Ragged {
        index: usize,
        got: usize,
        want: usize,
    },
    #[error("example {index} has class {class}, but there are {classes} classes")]
    BadLabel {
        index: usize,
        class: usize,
        classes: usize,
    },
    #[error("{0}")]
    Shape(String),
    #[error("feature {0} is not a finite number")]
    NotFinite(usize),
}

impl Softmax {
    /// Fits a model to `x` (one row per example) and labels `y` (indices into
    /// `classes`), each example counted `w[i]` times.
    pub fn fit(
        classes: Vec<String>,
        x: &[Vec<f32>],
        y: &[usize],
        w: &[f32],
        opts: FitOptions,
    ) -> Result<Self, SoftmaxError> {
        let n = x.len();
        if n == 0 {
            return Err(SoftmaxError::Empty);
        }
        if y.len() != n || w.len() != n {
            return Err(SoftmaxError::Shape(format!(
                "{n} examples but {} labels and {} weights",
                y.len(),
                w.len()
            )));
        }
        let d = x[0].len();
        let k = classes.len();
        for (index, row) in x.iter().enumerate() {
            if row.len() != d {
                return Err(SoftmaxError::Ragged {
                    index,
                    got: row.len(),
                    want: d,
                });
            }
        }
        if let Some((index, &class)) = y.iter().enumerate().find(|(_, &c)| c >= k) {
            return Err(SoftmaxError::BadLabel {
                index,
                class,
                classes: k,
            });
        }
        let total_w: f64 = w.iter().map(|&v| v as f64).sum();
        let mut mean = vec![0f64; d];
        for row in x {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64 / n as f64;
            }
        }
        let mut var = vec![0f64; d];
        for row in x {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2) / n as f64;
            }
        }
        let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let scale: Vec<f32> = var
            .iter()
            .map(|&v| {
                if v > 1e-12 {
                    (1.0 / v.sqrt()) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let z: Vec<Vec<f32>> = x
            .iter()
            .map(|row| standardise(row, &mean, &scale))
            .collect();

        let w_norm: Vec<f32> = w.iter().map(|&v| (v as f64 / total_w) as f32).collect();
        let step = 1.0 / (0.5 * top_eigenvalue(&z, &w_norm) + opts.l2 + 0.5);

        // Nesterov accelerated gradient on (weights, bias).
        let mut weights = vec![vec![0f32; d]; k];
        let mut bias = vec![0f32; k];
        let mut vel_w = vec![vec![0f32; d]; k];
        let mut vel_b = vec![0f32; k];
        let momentum = 0.9f32;
        for _ in 0..opts.steps {
            let look_w: Vec<Vec<f32>> = weights
                .iter()
                .zip(&vel_w)
                .map(|(wr, vr)| wr.iter().zip(vr).map(|(a, b)| a + momentum * b).collect())
                .collect();
            let look_b: Vec<f32> = bias
                .iter()
                .zip(&vel_b)
                .map(|(a, b)| a + momentum * b)
                .collect();
            let mut grad_w = vec![vec![0f32; d]; k];
            let mut grad_b = vec![0f32; k];
            for ((zi, &yi), &wi) in z.iter().zip(y).zip(&w_norm) {
                let p = probabilities(&look_w, &look_b, zi);
                for c in 0..k {
                    let g = (p[c] - if c == yi { 1.0 } else { 0.0 }) * wi;
                    if g == 0.0 {
                        continue;
                    }
                    grad_b[c] += g;
                    for (gw, &zv) in grad_w[c].iter_mut().zip(zi) {
                        *gw += g * zv;
                    }
                }
            }
            for c in 0..k {
                for j in 0..d {
                    let g = grad_w[c][j] + opts.l2 * look_w[c][j];
                    vel_w[c][j] = momentum * vel_w[c][j] - step * g;
                    weights[c][j] += vel_w[c][j];
                }
                vel_b[c] = momentum * vel_b[c] - step * grad_b[c];
                bias[c] += vel_b[c];
            }
        }
        Ok(Self {
            classes,
            mean,
            scale,
            weights,
            bias,
        })
    }

    pub fn features(&self) -> usize {
        self.mean.len()
    }

    /// Class probabilities for one input, in the order of `classes`.
    pub fn predict(&self, x: &[f32]) -> Vec<f32> {
        probabilities(
            &self.weights,
            &self.bias,
            &standardise(x, &self.mean, &self.scale),
        )
    }

    /// Checks that the shapes agree and every number is finite: a model read
    /// from a file is refused rather than trusted.
    pub fn check(&self) -> Result<(), SoftmaxError> {
        let d = self.mean.len();
        let k = self.classes.len();
        if k < 2 {
            return Err(SoftmaxError::Shape(format!(
                "{k} classes: at least 2 are needed"
            )));
        }
        if self.scale.len() != d
            || self.weights.len() != k
            || self.bias.len() != k
            || self.weights.iter().any(|r| r.len() != d)
        {
            return Err(SoftmaxError::Shape(format!(
                "{k} classes and {d} features, but scale has {}, weights {}x{}, bias {}",
                self.scale.len(),
                self.weights.len(),
                self.weights.first().map_or(0, Vec::len),
                self.bias.len()
            )));
        }
        let all = self
            .mean
            .iter()
            .chain(&self.scale)
            .chain(self.weights.iter().flatten())
            .chain(&self.bias);
        if let Some(i) = all.into_iter().position(|v| !v.is_finite()) {
            return Err(SoftmaxError::NotFinite(i));
        }
        Ok(())
    }
}

/// The largest eigenvalue of `sum_i w_i z_i z_i^T` (power iteration).
fn top_eigenvalue(z: &[Vec<f32>], w: &[f32]) -> f32 {
    let d = z.first().map_or(0, Vec::len);
    let mut v = vec![1.0 / (d.max(1) as f32).sqrt(); d];
    let mut lambda = 0.0;
    for _ in 0..50 {
        let mut next = vec![0f32; d];
        for (zi, &wi) in z.iter().zip(w) {
            let along = dot(zi, &v);
            for (n, &a) in next.iter_mut().zip(zi) {
                *n += wi * along * a;
            }
        }
        lambda = next.iter().map(|x| x * x).sum::<f32>().sqrt();
        if lambda == 0.0 {
            break;
        }
        v = next.into_iter().map(|x| x / lambda).collect();
    }
    lambda
}

fn standardise(x: &[f32], mean: &[f32], scale: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(mean)
        .zip(scale)
        .map(|((v, m), s)| (v - m) * s)
        .collect()
}

/// The dot product of two equally long rows, summed in eight lanes: a
/// single running sum cannot be vectorised (float addition is not
/// associative), and this is where fitting a head on a few thousand
/// features spends its time.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn probabilities(weights: &[Vec<f32>], bias: &[f32], z: &[f32]) -> Vec<f32> {
    let logits: Vec<f32> = weights
        .iter()
        .zip(bias)
        .map(|(row, b)| b + dot(row, z))
        .collect();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    /// Three well separated clusters in 2-D, with a constant third feature.
    fn clusters() -> (Vec<Vec<f32>>, Vec<usize>) {
        let centres = [(0.0, 0.0), (5.0, 0.0), (0.0, 5.0)];
        let mut x = vec![];
        let mut y = vec![];
        for (c, (cx, cy)) in centres.iter().enumerate() {
            for i in 0..20 {
                let dx = (i % 5) as f32 * 0.2 - 0.4;
                let dy = (i / 5) as f32 * 0.2 - 0.3;
                x.push(vec![cx + dx, cy + dy, 1.0]);
                y.push(c);
            }
        }
        (x, y)
    }

    #[test]
    fn fits_a_separable_set_and_predicts_it() {
        let (x, y) = clusters();
        let w = vec![1.0; x.len()];
        let m = Softmax::fit(names(3), &x, &y, &w, FitOptions::default()).unwrap();
        m.check().unwrap();
        for (xi, &yi) in x.iter().zip(&y) {
            let p = m.predict(xi);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            let best = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            assert_eq!(best, yi, "{xi:?} -> {p:?}");
            assert!(p[yi] > 0.8, "{xi:?} -> {p:?}");
        }
        // A constant feature gets no weight and no division by zero.
        assert_eq!(m.scale[2], 0.0);
    }

    #[test]
    fn example_weights_move_the_boundary() {
        // One feature; class 0 at -1, class 1 at +1; the midpoint 0 tips
        // towards the class whose examples weigh more.
        let x = vec![vec![-1.0], vec![1.0]];
        let y = vec![0, 1];
        let even = Softmax::fit(names(2), &x, &y, &[1.0, 1.0], FitOptions::default()).unwrap();
        let heavy1 = Softmax::fit(names(2), &x, &y, &[1.0, 4.0], FitOptions::default()).unwrap();
        assert!((even.predict(&[0.0])[1] - 0.5).abs() < 0.02);
        assert!(heavy1.predict(&[0.0])[1] > 0.55);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let opts = FitOptions::default();
        assert_eq!(
            Softmax::fit(names(2), &[], &[], &[], opts),
            Err(SoftmaxError::Empty)
        );
        assert!(matches!(
            Softmax::fit(
                names(2),
                &[vec![1.0], vec![1.0, 2.0]],
                &[0, 1],
                &[1.0, 1.0],
                opts
            ),
            Err(SoftmaxError::Ragged { index: 1, .. })
        ));
        assert!(matches!(
            Softmax::fit(names(2), &[vec![1.0]], &[2], &[1.0], opts),
            Err(SoftmaxError::BadLabel { class: 2, .. })
        ));
    }

    #[test]
    fn a_model_with_wrong_shapes_or_numbers_fails_its_check() {
        let (x, y) = clusters();
        let w = vec![1.0; x.len()];
        let good = Softmax::fit(names(3), &x, &y, &w, FitOptions::default()).unwrap();
        let mut short = good.clone();
        short.weights[1].pop();
        assert!(matches!(short.check(), Err(SoftmaxError::Shape(_))));
        let mut nan = good.clone();
        nan.bias[0] = f32::NAN;
        assert!(matches!(nan.check(), Err(SoftmaxError::NotFinite(_))));
        let mut one = good;
        one.classes.truncate(1);
        assert!(one.check().is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let (x, y) = clusters();
        let w = vec![1.0; x.len()];
        let m = Softmax::fit(names(3), &x, &y, &w, FitOptions::default()).unwrap();
        let back: Softmax = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    proptest! {
        #[test]
        fn probabilities_are_a_distribution(
            z in proptest::collection::vec(-50f32..50.0, 3),
            b in proptest::collection::vec(-50f32..50.0, 4),
        ) {
            let weights = vec![vec![1.0, -2.0, 0.5]; 4];
            let p = probabilities(&weights, &b, &z);
            prop_assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
            prop_assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
    }
}
