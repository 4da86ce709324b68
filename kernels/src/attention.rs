//! Bidirectional multi-head attention over one packed sequence (no padding inside it):
//! `softmax(q k^T / sqrt(head_dim)) v` per head, softmax in f32.

/// Computes output rows `row0..row0+rows` of one sequence of length `t`.
///
/// `q`, `k`, `v`: the whole sequence, (t, d) row-major; heads are consecutive
/// `head_dim`-channel slices of a row. `out`: (rows, d). `scores`: scratch of at least `t`.
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    d: usize,
    n_head: usize,
    row0: usize,
    scores: &mut [f32],
) {
    let hd = d / n_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let scores = &mut scores[..t];
    for (r, orow) in out.chunks_exact_mut(d).enumerate() {
        let i = row0 + r;
        for h in 0..n_head {
            let qh = &q[i * d + h * hd..i * d + (h + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                let kh = &k[j * d + h * hd..j * d + (h + 1) * hd];
                *s = dot(qh, kh) * scale;
                max = max.max(*s);
            }
            let inv = 1.0 / crate::activation::exp_sub_sum(scores, max);
            let oh = &mut orow[h * hd..(h + 1) * hd];
            oh.fill(0.0);
            for (j, s) in scores.iter().enumerate() {
                let p = *s * inv;
                let vh = &v[j * d + h * hd..j * d + (h + 1) * hd];
                for (o, x) in oh.iter_mut().zip(vh) {
                    *o += p * *x;
                }
            }
        }
    }
}

/// Dot product with 8 independent f32 accumulators (vectorizes; fixed summation order).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// Scalar reference: the whole sequence, in f64.
pub fn reference_attention(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    d: usize,
    n_head: usize,
) {
    let hd = d / n_head;
    for i in 0..t {
        for h in 0..n_head {
            let s: Vec<f64> = (0..t)
                .map(|j| {
                    (0..hd)
                        .map(|c| q[i * d + h * hd + c] as f64 * k[j * d + h * hd + c] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..hd {
                let o: f64 = (0..t)
                    .map(|j| e[j] / z * v[j * d + h * hd + c] as f64)
                    .sum();
                out[i * d + h * hd + c] = o as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference() {
        for (t, d, nh) in [(1usize, 8usize, 2usize), (2, 8, 1), (7, 12, 3), (33, 64, 4)] {
            let gen = |s: usize| -> Vec<f32> {
                (0..t * d)
                    .map(|i| (((i * 31 + s * 17) % 23) as f32 - 11.0) * 0.1)
                    .collect()
            };
            let (q, k, v) = (gen(1), gen(2), gen(3));
            let mut out = vec![0.0; t * d];
            let mut scratch = vec![0.0; t];
            // two halves, as the engine splits rows across threads
            let split = t / 2;
            let (a, b) = out.split_at_mut(split * d);
            attention_rows(a, &q, &k, &v, t, d, nh, 0, &mut scratch);
            attention_rows(b, &q, &k, &v, t, d, nh, split, &mut scratch);
            let mut refo = vec![0.0; t * d];
            reference_attention(&mut refo, &q, &k, &v, t, d, nh);
            for (x, y) in out.iter().zip(&refo) {
                assert!(
                    (x - y).abs() <= 1e-5 * y.abs().max(1.0),
                    "t={t}: {x} vs {y}"
                );
            }
        }
    }
}
