//! Rotary position embedding, interleaved pairs (GPT-J / `rotary-embedding-torch` convention).
//!
//! For pair `(2i, 2i+1)`, `i < rot_dim/2`, angle `t * freqs[i]`:
//! `out[2i] = x[2i] cos - x[2i+1] sin`, `out[2i+1] = x[2i+1] cos + x[2i] sin`.
//! Channels at and beyond `rot_dim` pass through.

/// Fills the cos/sin tables for positions `0..t_max`: `cos`, `sin` are (t_max, rot_dim/2).
/// Angles are computed in f32 as `t * freqs[i]`, like the reference.
pub fn rope_tables(cos: &mut [f32], sin: &mut [f32], freqs: &[f32], t_max: usize) {
    let half = freqs.len();
    for t in 0..t_max {
        for (i, f) in freqs.iter().enumerate() {
            let angle = t as f32 * *f;
            cos[t * half + i] = angle.cos();
            sin[t * half + i] = angle.sin();
        }
    }
}

/// Rotates one head vector `x` (head_dim,) in place at the position whose table rows are
/// `cos`, `sin` (rot_dim/2,).
#[inline]
pub fn rope_apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for ((pair, c), s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (a, b) = (pair[0], pair[1]);
        pair[0] = a * *c - b * *s;
        pair[1] = b * *c + a * *s;
    }
}

/// Applies RoPE to every head of `rows` consecutive token rows of width `d` (row r is at
/// position `pos0 + r`), heads of `head_dim` channels.
pub fn rope_rows(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    half: usize,
    pos0: usize,
    d: usize,
    head_dim: usize,
) {
    for (r, row) in x.chunks_exact_mut(d).enumerate() {
        let t = pos0 + r;
        let (c, s) = (
            &cos[t * half..(t + 1) * half],
            &sin[t * half..(t + 1) * half],
        );
        for head in row.chunks_exact_mut(head_dim) {
            rope_apply(&mut head[..2 * half], c, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_matches_definition_and_passes_tail_through() {
        let freqs = [1.0f32, 0.1];
        let (mut cos, mut sin) = (vec![0.0; 3 * 2], vec![0.0; 3 * 2]);
        rope_tables(&mut cos, &mut sin, &freqs, 3);
        let x0: Vec<f32> = (0..6).map(|i| i as f32 + 1.0).collect(); // head_dim 6, rot_dim 4
        let mut x = x0.clone();
        rope_rows(&mut x, &cos, &sin, 2, 2, 6, 6);
        for i in 0..2 {
            let a = 2.0 * freqs[i];
            let (c, s) = ((a as f64).cos(), (a as f64).sin());
            let (p, q) = (x0[2 * i] as f64, x0[2 * i + 1] as f64);
            assert!((x[2 * i] as f64 - (p * c - q * s)).abs() < 1e-5);
            assert!((x[2 * i + 1] as f64 - (q * c + p * s)).abs() < 1e-5);
        }
        assert_eq!(&x[4..], &x0[4..]);
    }
}
