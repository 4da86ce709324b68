//! Bidirectional multi-head attention over one packed sequence (no padding inside it):
//! `softmax(q k^T / sqrt(head_dim)) v` per head, softmax in f32.

/// Scratch floats [`attention_rows`] needs for a sequence of `t` tokens and head size `hd`.
pub fn scratch_len(t: usize, hd: usize) -> usize {
    t.div_ceil(16) * 16 * (hd + 1)
}

/// Computes output rows `row0..row0+rows` of one sequence of length `t`.
///
/// `q`, `k`, `v`: the whole sequence, (t, d) row-major; heads are consecutive
/// `head_dim`-channel slices of a row. `out`: (rows, d). `scratch`: at least
/// [`scratch_len`]`(t, head_dim)` floats.
///
/// Built for the short sequences of this model (tens of tokens): per head, the keys are
/// transposed once into a zero-padded `head_dim x t16` block, so a query's scores are
/// `head_dim` vector multiply-adds across 16 keys at a time, and the output is `t` vector
/// multiply-adds across the head's channels. Vectorized for AVX-512 / AVX2 where present;
/// every path gives the same bits (no fused operations, same order).
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
    scratch: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { rows_avx512(out, q, k, v, t, d, n_head, row0, scratch) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { rows_avx2(out, q, k, v, t, d, n_head, row0, scratch) };
        }
    }
    rows_generic(out, q, k, v, t, d, n_head, row0, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx512(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    d: usize,
    n_head: usize,
    row0: usize,
    scratch: &mut [f32],
) {
    rows_generic(out, q, k, v, t, d, n_head, row0, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    d: usize,
    n_head: usize,
    row0: usize,
    scratch: &mut [f32],
) {
    rows_generic(out, q, k, v, t, d, n_head, row0, scratch)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_generic(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    d: usize,
    n_head: usize,
    row0: usize,
    scratch: &mut [f32],
) {
    let hd = d / n_head;
    let tp = t.div_ceil(16) * 16;
    let scale = 1.0 / (hd as f32).sqrt();
    let (scores, kt) = scratch[..tp * (hd + 1)].split_at_mut(tp);
    for h in 0..n_head {
        // kt[c][j] = k[j][h*hd + c], zero for the padding keys j >= t.
        for (c, row) in kt.chunks_exact_mut(tp).enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = if j < t { k[j * d + h * hd + c] } else { 0.0 };
            }
        }
        for (r, orow) in out.chunks_exact_mut(d).enumerate() {
            let i = row0 + r;
            let qh = &q[i * d + h * hd..i * d + (h + 1) * hd];
            scores.fill(0.0);
            for (qc, row) in qh.iter().zip(kt.chunks_exact(tp)) {
                for (s, kv) in scores.iter_mut().zip(row) {
                    *s += *qc * *kv;
                }
            }
            let sc = &mut scores[..t];
            let mut max = f32::NEG_INFINITY;
            for s in sc.iter_mut() {
                *s *= scale;
                max = max.max(*s);
            }
            let inv = 1.0 / crate::activation::exp_sub_sum(sc, max);
            let oh = &mut orow[h * hd..(h + 1) * hd];
            oh.fill(0.0);
            for (j, s) in sc.iter().enumerate() {
                let p = *s * inv;
                let vh = &v[j * d + h * hd..j * d + (h + 1) * hd];
                for (o, x) in oh.iter_mut().zip(vh) {
                    *o += p * *x;
                }
            }
        }
    }
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
        for (t, d, nh) in [
            (1usize, 8usize, 2usize),
            (2, 8, 1),
            (7, 12, 3),
            (16, 128, 2),
            (33, 64, 4),
            (100, 96, 3),
        ] {
            let gen = |s: usize| -> Vec<f32> {
                (0..t * d)
                    .map(|i| (((i * 31 + s * 17) % 23) as f32 - 11.0) * 0.1)
                    .collect()
            };
            let (q, k, v) = (gen(1), gen(2), gen(3));
            let mut out = vec![0.0; t * d];
            let mut scratch = vec![0.0; scratch_len(t, d / nh)];
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
            // The generic path gives the dispatched path's bits.
            let mut g = vec![0.0; t * d];
            rows_generic(&mut g, &q, &k, &v, t, d, nh, 0, &mut scratch);
            assert_eq!(g, out, "t={t}");
        }
    }
}
