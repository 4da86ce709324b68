//! Bidirectional multi-head attention over one packed sequence (no padding inside it):
//! `softmax(q k^T / sqrt(head_dim)) v` per head, softmax in f32.

/// Query rows the AVX-512 path computes together (scores and outputs in registers).
const QR: usize = 4;

/// Scratch floats [`attention_rows`] needs for a sequence of `t` tokens and head size `hd`.
pub fn scratch_len(t: usize, hd: usize) -> usize {
    t.div_ceil(16) * 16 * (hd + QR)
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
/// multiply-adds across the head's channels. With AVX-512 (and `head_dim` a multiple of 16)
/// the transposition runs in 16 x 16 register blocks and 4 query rows go together, their
/// scores (up to 64 keys at a time) and outputs (up to 64 channels) held in registers.
/// Every path gives the same bits (no fused operations; each sum in the same order).
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

/// Calls `$f::<R, V>(args)` for the block shape `(R, V)` = `($r, $v)`, each 1..=4 (rows of
/// a query block, vectors of 16 keys or channels).
#[cfg(target_arch = "x86_64")]
macro_rules! by_shape {
    ($r:expr, $v:expr, $f:ident($($a:expr),*)) => {
        match ($r, $v) {
            (4, 4) => $f::<4, 4>($($a),*),
            (4, 3) => $f::<4, 3>($($a),*),
            (4, 2) => $f::<4, 2>($($a),*),
            (4, _) => $f::<4, 1>($($a),*),
            (3, 4) => $f::<3, 4>($($a),*),
            (3, 3) => $f::<3, 3>($($a),*),
            (3, 2) => $f::<3, 2>($($a),*),
            (3, _) => $f::<3, 1>($($a),*),
            (2, 4) => $f::<2, 4>($($a),*),
            (2, 3) => $f::<2, 3>($($a),*),
            (2, 2) => $f::<2, 2>($($a),*),
            (2, _) => $f::<2, 1>($($a),*),
            (_, 4) => $f::<1, 4>($($a),*),
            (_, 3) => $f::<1, 3>($($a),*),
            (_, 2) => $f::<1, 2>($($a),*),
            _ => $f::<1, 1>($($a),*),
        }
    };
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
    use std::arch::x86_64::*;
    let hd = d / n_head;
    if !hd.is_multiple_of(16) || t == 0 {
        return rows_generic(out, q, k, v, t, d, n_head, row0, scratch);
    }
    let tp = t.div_ceil(16) * 16;
    let scale = 1.0 / (hd as f32).sqrt();
    let rows = out.len() / d;
    assert!(
        scratch.len() >= tp * (hd + QR) && k.len() >= t * d && v.len() >= t * d,
        "attention: scratch or keys/values too small"
    );
    assert!(q.len() >= (row0 + rows) * d, "attention: queries too small");
    let (scores, kt) = scratch[..tp * (hd + QR)].split_at_mut(tp * QR);
    for h in 0..n_head {
        // kt[c][j] = k[j][h*hd + c], zero for the padding keys j >= t: 16 x 16 blocks.
        for jb in 0..tp / 16 {
            for cb in 0..hd / 16 {
                let mut blk = [_mm512_setzero_ps(); 16];
                for (r, b) in blk.iter_mut().enumerate() {
                    let j = jb * 16 + r;
                    if j < t {
                        // SAFETY: j < t and h*hd + cb*16 + 16 <= d: inside k.
                        *b = _mm512_loadu_ps(k.as_ptr().add(j * d + h * hd + cb * 16));
                    }
                }
                crate::gemm_f32::transpose16(&mut blk);
                for (c, b) in blk.iter().enumerate() {
                    // SAFETY: row cb*16 + c < hd of kt, columns jb*16.. < tp.
                    _mm512_storeu_ps(kt.as_mut_ptr().add((cb * 16 + c) * tp + jb * 16), *b);
                }
            }
        }
        for r0 in (0..rows).step_by(QR) {
            let nr = QR.min(rows - r0);
            let qrow = |r: usize| q.as_ptr().add((row0 + r0 + r) * d + h * hd);
            // Scores: rows r0.. x keys, 64 keys (4 vectors) per pass.
            for kc in (0..tp).step_by(64) {
                let nv = ((tp - kc) / 16).min(4);
                let sc = scores.as_mut_ptr().add(kc);
                let ktc = kt.as_ptr().add(kc);
                // SAFETY: nr query rows exist; kt holds hd x tp; scores QR x tp.
                by_shape!(nr, nv, qk(qrow, ktc, tp, hd, sc));
            }
            // Softmax per row, as the generic path; the row becomes the probabilities.
            for r in 0..nr {
                let sc = &mut scores[r * tp..r * tp + t];
                let inv = softmax_numerators(sc, scale);
                for s in sc.iter_mut() {
                    *s *= inv;
                }
            }
            // Outputs: rows r0.. x the head's channels, 64 (4 vectors) per pass.
            for cc in (0..hd).step_by(64) {
                let nv = ((hd - cc) / 16).min(4);
                let vb = v.as_ptr().add(h * hd + cc);
                let ob = out.as_mut_ptr().add(r0 * d + h * hd + cc);
                let p = scores.as_ptr();
                // SAFETY: v holds t rows of d; out holds rows x d; p QR x tp.
                by_shape!(nr, nv, pv(p, tp, vb, d, t, ob));
            }
        }
    }
}

/// Scores of `R` query rows against `16 V` keys: `sc[r * tp + j] = sum_c q_r[c] kt[c][j]`,
/// summed in channel order from 0 with separate multiplies and adds (the generic bits).
///
/// # Safety
/// The CPU has AVX-512F; `q(r)` points at `hd` floats for `r < R`; `kt` at an `hd x tp`
/// block (offset to the first key); `sc` at `R` rows of `tp` (offset likewise).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn qk<const R: usize, const V: usize>(
    q: impl Fn(usize) -> *const f32,
    kt: *const f32,
    tp: usize,
    hd: usize,
    sc: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let qp: [*const f32; R] = std::array::from_fn(&q);
    for c in 0..hd {
        let kv: [__m512; V] = std::array::from_fn(|u| _mm512_loadu_ps(kt.add(c * tp + 16 * u)));
        for (r, ar) in acc.iter_mut().enumerate() {
            let qb = _mm512_set1_ps(*qp[r].add(c));
            for (a, k) in ar.iter_mut().zip(&kv) {
                *a = _mm512_add_ps(*a, _mm512_mul_ps(qb, *k));
            }
        }
    }
    for (r, ar) in acc.iter().enumerate() {
        for (u, a) in ar.iter().enumerate() {
            _mm512_storeu_ps(sc.add(r * tp + 16 * u), *a);
        }
    }
}

/// Outputs of `R` rows over `16 V` channels: `o[r * d + c] = sum_j p[r * tp + j] v[j * d + c]`,
/// summed in key order from 0 with separate multiplies and adds (the generic bits).
///
/// # Safety
/// The CPU has AVX-512F; `p` holds `R` rows of `tp >= t`; `v` `t` rows of stride `d` with
/// `16 V` channels from it; `o` `R` rows of stride `d` likewise.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pv<const R: usize, const V: usize>(
    p: *const f32,
    tp: usize,
    v: *const f32,
    d: usize,
    t: usize,
    o: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for j in 0..t {
        let vv: [__m512; V] = std::array::from_fn(|u| _mm512_loadu_ps(v.add(j * d + 16 * u)));
        for (r, ar) in acc.iter_mut().enumerate() {
            let pb = _mm512_set1_ps(*p.add(r * tp + j));
            for (a, x) in ar.iter_mut().zip(&vv) {
                *a = _mm512_add_ps(*a, _mm512_mul_ps(pb, *x));
            }
        }
    }
    for (r, ar) in acc.iter().enumerate() {
        for (u, a) in ar.iter().enumerate() {
            _mm512_storeu_ps(o.add(r * d + 16 * u), *a);
        }
    }
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
            let inv = softmax_numerators(sc, scale);
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

/// One row of scores becomes the softmax's numerators `e^(s * scale - max)`; returns the
/// reciprocal of their sum (every path shares it, so the same bits).
#[inline(always)]
fn softmax_numerators(sc: &mut [f32], scale: f32) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for s in sc.iter_mut() {
        *s *= scale;
        max = max.max(*s);
    }
    1.0 / crate::activation::exp_sub_sum(sc, max)
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
            (64, 768, 12),
            (130, 256, 2),
            (5, 80, 1),
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
