// The CUDA kernels of emcoder: everything of the forward pass but the matrix products
// (cuBLAS), and the statistics. CUDA C compiled at load with NVRTC for the device's
// architecture (HEAD_DIM defined by the loader from the model's config).
//
// Layout conventions (the same as the CPU engine, runtime/src/engine/forward.rs):
// - activations are row-major f32, one row per token of a packed batch (no padding);
//   `ld` is a buffer's row stride in elements (a row may be a slice of a wider row, e.g.
//   q inside q|k|v);
// - a packed batch of sequences is described by `offsets` (n_seqs + 1 row indices: sequence
//   s owns rows offsets[s] .. offsets[s+1]);
// - per-row metadata of an MC batch: `row_pos` (the token's position in its own text, 0 =
//   [CLS]) and `row_sample` (its MC sample).
//
// Outputs first, shapes last (llm.c). No atomics: every reduction has one fixed order, so a
// row's result does not depend on what else is in the batch (the invariance contract within
// the CUDA kernel family).
//
// The same file compiles as C++ on the CPU with kernels/cuda/emulate/cuda_emu.hpp (blocks run
// one after another, the threads of a block as OS threads), which the kernels' tests use to
// check every kernel here against the Rust scalar references on machines without a GPU.

#ifndef HEAD_DIM
#error "HEAD_DIM (the attention head width) must be defined by the loader"
#endif

// ---------------------------------------------------------------------------------------
// Philox4x32-10 and the dropout masks (docs/dropout-masks.md; kernels/src/philox.rs).
// ---------------------------------------------------------------------------------------

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// Four random words for the counter c (in place), key (k0, k1).
__device__ __forceinline__ void philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        unsigned int hi0 = __umulhi(PHILOX_M0, c[0]), lo0 = PHILOX_M0 * c[0];
        unsigned int hi1 = __umulhi(PHILOX_M1, c[2]), lo1 = PHILOX_M1 * c[2];
        unsigned int n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// Test hook: the generator itself, one counter per thread (Random123's known answers).
extern "C" __global__ void philox_words(unsigned int* out, const unsigned int* ctr, int n,
                                        unsigned int k0, unsigned int k1) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int c[4] = {ctr[4 * i], ctr[4 * i + 1], ctr[4 * i + 2], ctr[4 * i + 3]};
    philox4x32_10(c, k0, k1);
    for (int j = 0; j < 4; ++j) out[4 * i + j] = c[j];
}

// Residual add through dropout over `rows` rows of width d: for row r (token position
// row_pos[r] of MC sample row_sample[r]) and channel c, h[r][c] += a[r][c] * scale when the
// mask keeps c (Philox word c % 4 of counter (c / 4, pos, sample, site) >= thr), and h is
// left as it is when it drops c. thr = floor(p * 2^32), scale = 1 / (1 - p) in f32, key =
// the 64-bit seed's halves. dropout == 0: a plain h += a (deterministic mode). The product
// and the sum are rounded separately (no FMA contraction), as on the CPU, so the bits are the
// CPU engine's. One thread per 4 channels (one Philox block).
extern "C" __global__ void dropout_residual_add(float* h, const float* a, const unsigned int* row_pos,
                                                const unsigned int* row_sample, int rows, int d,
                                                int ld_h, int ld_a, unsigned int k0, unsigned int k1,
                                                unsigned int site, unsigned int thr, float scale,
                                                int dropout) {
    int blocks = (d + 3) / 4;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * blocks) return;
    int r = (int)(i / blocks), b = (int)(i % blocks);
    float* hr = h + (long long)r * ld_h;
    const float* ar = a + (long long)r * ld_a;
    if (!dropout) {
        for (int j = 0; j < 4 && 4 * b + j < d; ++j) hr[4 * b + j] = __fadd_rn(hr[4 * b + j], ar[4 * b + j]);
        return;
    }
    unsigned int w[4] = {(unsigned int)b, row_pos[r], row_sample[r], site};
    philox4x32_10(w, k0, k1);
    for (int j = 0; j < 4 && 4 * b + j < d; ++j) {
        int c = 4 * b + j;
        if (w[j] >= thr) hr[c] = __fadd_rn(hr[c], __fmul_rn(ar[c], scale));
    }
}

// Dropout in place (the classifier head's site, one pooled row per (text, sample): position
// 0): x[r][c] = x[r][c] * scale when kept, 0 when dropped.
extern "C" __global__ void dropout_inplace(float* x, const unsigned int* row_sample, int rows, int d,
                                           unsigned int k0, unsigned int k1, unsigned int site,
                                           unsigned int thr, float scale) {
    int blocks = (d + 3) / 4;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * blocks) return;
    int r = (int)(i / blocks), b = (int)(i % blocks);
    unsigned int w[4] = {(unsigned int)b, 0u, row_sample[r], site};
    philox4x32_10(w, k0, k1);
    for (int j = 0; j < 4 && 4 * b + j < d; ++j) {
        long long c = (long long)r * d + 4 * b + j;
        x[c] = w[j] >= thr ? __fmul_rn(x[c], scale) : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------
// Row copies: the embedding lookup and the fan-out of stage A's rows to the MC samples.
// ---------------------------------------------------------------------------------------

// out[r] = table[idx[r]] for rows of width d (f32 table). Grid: rows x ceil(d / blockDim).
extern "C" __global__ void gather_rows(float* out, const float* table, const unsigned int* idx, int rows,
                                       int d) {
    int r = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows || c >= d) return;
    out[(long long)r * d + c] = table[(long long)idx[r] * d + c];
}

// The same from a bf16 table (the upper 16 bits of an f32), widened exactly.
extern "C" __global__ void gather_rows_bf16(float* out, const unsigned short* table,
                                            const unsigned int* idx, int rows, int d) {
    int r = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows || c >= d) return;
    out[(long long)r * d + c] = __uint_as_float((unsigned int)table[(long long)idx[r] * d + c] << 16);
}

// f32 -> bf16, rounding to nearest even (NaN stays a quiet NaN): the operands of the tensor
// core products, as the CPU engine rounds its bf16 activations.
extern "C" __global__ void f32_to_bf16(unsigned short* out, const float* x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int u = __float_as_uint(x[i]);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        out[i] = (unsigned short)((u >> 16) | 0x40u);
    } else {
        out[i] = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

// ---------------------------------------------------------------------------------------
// RMSNorm: one block per row; the sum of squares in a fixed-order tree over the block (the
// order depends on the block size, fixed per backend).
// ---------------------------------------------------------------------------------------

#define NORM_MAX_THREADS 1024

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, rows of width d (out may be x). One block
// per row; blockDim.x a power of two up to NORM_MAX_THREADS (256 on a GPU; the CPU
// emulation uses fewer).
extern "C" __global__ void rmsnorm(float* out, const float* x, const float* w, int rows, int d, float eps) {
    __shared__ float part[NORM_MAX_THREADS];
    int r = blockIdx.x, t = threadIdx.x, nt = blockDim.x;
    if (r >= rows) return;  // whole block: no thread of it reaches the barrier
    const float* xr = x + (long long)r * d;
    float s = 0.0f;
    for (int c = t; c < d; c += nt) s = fmaf(xr[c], xr[c], s);
    part[t] = s;
    __syncthreads();
    for (int half = nt / 2; half > 0; half /= 2) {
        if (t < half) part[t] += part[t + half];
        __syncthreads();
    }
    float inv = 1.0f / sqrtf(part[0] / (float)(d > 0 ? d : 1) + eps);
    float* orow = out + (long long)r * d;
    for (int c = t; c < d; c += nt) orow[c] = xr[c] * inv * w[c];
}

// ---------------------------------------------------------------------------------------
// RoPE (interleaved pairs): in place on the q and k parts of rows, at each row's position.
// ---------------------------------------------------------------------------------------

// For every row r, head and pair i < half: angle = row_pos[r] * freqs[i] (f32),
// (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) on channels (2i, 2i+1) of the head, for the
// `n_heads` heads of head_dim channels that start at column col0 of a row of stride ld (call
// once for q and once for k, or once over both when they are adjacent). Channels from 2*half
// to head_dim pass through. Grid: rows x ceil(n_heads * half / blockDim).
extern "C" __global__ void rope(float* x, const unsigned int* row_pos, const float* freqs, int rows,
                                int ld, int col0, int n_heads, int head_dim, int half) {
    int r = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows || j >= n_heads * half) return;
    int head = j / half, i = j % half;
    float angle = (float)row_pos[r] * freqs[i];
    float cs = cosf(angle), sn = sinf(angle);
    float* p = x + (long long)r * ld + col0 + head * head_dim + 2 * i;
    float a = p[0], b = p[1];
    p[0] = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn));
    p[1] = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
}

// ---------------------------------------------------------------------------------------
// Attention over packed sequences (bidirectional, no padding, so no mask).
// ---------------------------------------------------------------------------------------

#define NEG_INF __int_as_float(0xff800000)  // NVRTC has no INFINITY macro
#define ATT_QUERIES 64  // query rows per block (one thread each)
#define ATT_KEYS 32     // keys per shared-memory tile

// out[i] (head h) = softmax_j(q_i . k_j / sqrt(HEAD_DIM)) v_j over the keys j of i's own
// sequence. Grid: (ceil(longest / ATT_QUERIES), n_heads, n_seqs); blockDim = ATT_QUERIES.
// Each thread owns one query row: its scores for a tile of keys, then one rescale of its
// running sum and accumulator per tile (the online softmax), so memory does not grow with the
// length. q, k, v are at columns q_col, k_col, v_col of rows of stride ld (q|k|v in one
// buffer); out has rows of stride ld_out.
extern "C" __global__ void attention(float* out, const float* qkv, const int* offsets, int n_heads, int ld,
                                     int q_col, int k_col, int v_col, int ld_out) {
    __shared__ float ks[ATT_KEYS][HEAD_DIM];
    __shared__ float vs[ATT_KEYS][HEAD_DIM];
    int s = blockIdx.z, h = blockIdx.y;
    if (h >= n_heads) return;
    int start = offsets[s], len = offsets[s + 1] - start;
    int qi = blockIdx.x * ATT_QUERIES + threadIdx.x;
    if ((int)(blockIdx.x * ATT_QUERIES) >= len) return;  // whole block past the sequence
    bool active = qi < len;
    const float scale = 1.0f / sqrtf((float)HEAD_DIM);
    float q[HEAD_DIM], acc[HEAD_DIM];
    for (int c = 0; c < HEAD_DIM; ++c) {
        q[c] = active ? qkv[(long long)(start + qi) * ld + q_col + h * HEAD_DIM + c] * scale : 0.0f;
        acc[c] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int j0 = 0; j0 < len; j0 += ATT_KEYS) {
        int nk = len - j0 < ATT_KEYS ? len - j0 : ATT_KEYS;
        __syncthreads();  // the previous tile is no longer read
        for (int e = threadIdx.x; e < nk * HEAD_DIM; e += ATT_QUERIES) {
            int j = e / HEAD_DIM, c = e % HEAD_DIM;
            const float* row = qkv + (long long)(start + j0 + j) * ld + h * HEAD_DIM + c;
            ks[j][c] = row[k_col];
            vs[j][c] = row[v_col];
        }
        __syncthreads();
        if (!active) continue;
        // sc is indexed by a loop of variable length: it lives in local memory (128 B per
        // thread, cached); unrolling the tile made NVRTC take minutes (measured).
        float sc[ATT_KEYS];
        float tile_max = NEG_INF;
        for (int j = 0; j < nk; ++j) {
            float dot = 0.0f;
            for (int c = 0; c < HEAD_DIM; ++c) dot = fmaf(q[c], ks[j][c], dot);
            sc[j] = dot;
            tile_max = fmaxf(tile_max, dot);
        }
        float m_new = fmaxf(m, tile_max);
        float corr = expf(m - m_new);  // 0 on the first tile (m = -inf)
        l *= corr;
        for (int c = 0; c < HEAD_DIM; ++c) acc[c] *= corr;
        for (int j = 0; j < nk; ++j) {
            float p = expf(sc[j] - m_new);
            l += p;
            for (int c = 0; c < HEAD_DIM; ++c) acc[c] = fmaf(p, vs[j][c], acc[c]);
        }
        m = m_new;
    }
    if (!active) return;
    float inv = 1.0f / l;
    float* o = out + (long long)(start + qi) * ld_out + h * HEAD_DIM;
    for (int c = 0; c < HEAD_DIM; ++c) o[c] = acc[c] * inv;
}

// ---------------------------------------------------------------------------------------
// Pointwise: SwiGLU, the head's GELU, bias.
// ---------------------------------------------------------------------------------------

// out[r][c] = silu(g[r][c]) * u[r][c] for c < f, where g and u are columns g_col and u_col
// of rows of stride ld (gate|up in one buffer); out has rows of width f.
extern "C" __global__ void swiglu(float* out, const float* gu, int rows, int f, int ld, int g_col,
                                  int u_col) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * f) return;
    long long r = i / f;
    int c = (int)(i % f);
    float g = gu[r * ld + g_col + c], u = gu[r * ld + u_col + c];
    out[i] = g / (1.0f + expf(-g)) * u;
}

// x[r][c] += b[c] (b may be null: nothing to add), then the activation when act != 0:
// 1 = exact GELU 0.5 x (1 + erf(x / sqrt 2)), 2 = its tanh approximation.
extern "C" __global__ void bias_act(float* x, const float* b, int rows, int n, int act) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * n) return;
    float v = x[i];
    if (b) v += b[i % n];
    if (act == 1) {
        v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    } else if (act == 2) {
        v = 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)));
    }
    x[i] = v;
}

// ---------------------------------------------------------------------------------------
// Pooling and the statistics.
// ---------------------------------------------------------------------------------------

// out[s][c] = mean of h over the rows of sequence s (summed in f64 in row order, like the
// CPU engine: the same bits), rows of width d.
// Grid: (ceil(d / blockDim), n_seqs).
extern "C" __global__ void mean_pool(float* out, const float* h, const int* offsets, int n_seqs, int d) {
    int s = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n_seqs || c >= d) return;
    int a = offsets[s], b = offsets[s + 1];
    double sum = 0.0;  // f64 in row order, as the CPU engine sums
    for (int r = a; r < b; ++r) sum += (double)h[(long long)r * d + c];
    double count = (double)(b - a);
    out[(long long)s * d + c] = (float)(sum / (count > 1e-9 ? count : 1e-9));
}

// sigmoid in f32, in the two-branch form of kernels/src/activation.rs (no overflow of e^-x).
__device__ __forceinline__ float sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ double bernoulli_entropy(double p) {
    double e = 0.0;
    if (p > 0.0) e -= p * log(p);
    if (1.0 - p > 0.0) e -= (1.0 - p) * log(1.0 - p);
    return e;
}

// Per (text, label): out[(t * labels + c) * 5 + {0..4}] = mean probability, std (N-1; 0 for
// one sample), total entropy H(mean), aleatoric mean_s H(p_s), epistemic max(total -
// aleatoric, 0) (0 for one sample), in f64 like runtime/src/engine/stats.rs; the
// probabilities are sigmoid(logit) in f32. Sample s of text t has its logits at row
// t * n_samples + s of `logits` (rows of width labels). One thread per (text, label).
extern "C" __global__ void label_stats(float* out, const float* logits, int n_texts, int n_samples,
                                       int labels) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_texts * labels) return;
    int t = i / labels, c = i % labels;
    const float* z = logits + (long long)t * n_samples * labels + c;
    double sum = 0.0, ale = 0.0;
    for (int s = 0; s < n_samples; ++s) {
        double p = (double)sigmoid(z[(long long)s * labels]);
        sum += p;
        ale += bernoulli_entropy(p);
    }
    double n = (double)n_samples;
    double mean = sum / n;
    double var = 0.0;
    for (int s = 0; s < n_samples; ++s) {
        double p = (double)sigmoid(z[(long long)s * labels]);
        var += (p - mean) * (p - mean);
    }
    double std = n_samples > 1 ? sqrt(var / (n - 1.0)) : 0.0;
    double total = bernoulli_entropy(mean);
    ale /= n;
    double epi = n_samples > 1 ? (total - ale > 0.0 ? total - ale : 0.0) : 0.0;
    float* o = out + (long long)i * 5;
    o[0] = (float)mean;
    o[1] = (float)std;
    o[2] = (float)total;
    o[3] = (float)ale;
    o[4] = (float)epi;
}
