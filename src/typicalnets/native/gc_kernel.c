/* Native CPU kernel for fast, exact Guess & Check (typicalnets.native loads it with ctypes).
 *
 * Each network is identified by (key, id). Its parameters are generated on the fly from a
 * counter-seeded xoshiro128+ stream (16 interleaved lanes, so the loop vectorizes), in the order
 * of Population.params except that hidden dense layers are filled column by column (the kernel
 * reads them transposed; Python transposes them back), and it is evaluated one example at a time,
 * stopping at its first mistake (early rejection). Nothing but the verdict leaves the kernel;
 * tn_draw regenerates the parameters of any id for the full-precision re-check.
 *
 * Mirrored pairs (antithetic draws): with mirror on, networks 2i and 2i + 1 share stream i, and
 * 2i + 1 is 2i with its head mirrored (two logits swapped, or a scalar head negated), which the
 * prior gives the same probability. Its output is exactly -f (IEEE rounding is symmetric), so
 * one forward decides both on the first example, where exactly one of the two can survive.
 *
 * Verdicts: 1 accepted, 0 rejected, 2 uncertain (some |f| <= margin * scale, where scale is
 * sum |w_i h_i| + |b| of the head: the sign could depend on rounding order, so Python re-checks).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

enum { PRIOR_UNIFORM = 0, PRIOR_QUANTIZED = 1 };
enum { ACT_RELU = 0, ACT_SIGN = 1, ACT_LEAKY = 2, ACT_TANH = 3 };
enum { REJECTED = 0, ACCEPTED = 1, UNCERTAIN = 2 };
#define LANES 16
#define LEAKY_SLOPE 0.01f
#define MAX(a, b) ((a) > (b) ? (a) : (b)) /* unlike fmaxf, compiles to one vector max */

typedef struct {
    int kind;
    float a;             /* uniform half-width */
    const float *levels; /* quantized levels */
    int q;
} prior_t;

static inline uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint32_t rotl32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

typedef struct {
    uint32_t s0[LANES], s1[LANES], s2[LANES], s3[LANES];
} stream_t;

static void stream_seed(stream_t *st, uint64_t key, int64_t id) {
    uint64_t seed = key ^ ((uint64_t)id * 0xD1342543DE82EF95ull);
    for (int l = 0; l < LANES; l++) {
        uint64_t a = splitmix64(&seed), b = splitmix64(&seed);
        st->s0[l] = (uint32_t)a;
        st->s1[l] = (uint32_t)(a >> 32);
        st->s2[l] = (uint32_t)b;
        st->s3[l] = (uint32_t)(b >> 32) | 1u; /* never the all-zero state */
    }
}

/* Next LANES 32-bit outputs of xoshiro128+ (Blackman and Vigna); only the top 24 bits, whose
 * quality is full, are used for uniforms, and codes use a 32-bit multiply-shift of the whole word. */
static inline void stream_next(stream_t *st, uint32_t *out) {
#pragma omp simd
    for (int l = 0; l < LANES; l++) {
        uint32_t s0 = st->s0[l], s1 = st->s1[l], s2 = st->s2[l], s3 = st->s3[l];
        out[l] = s0 + s3;
        uint32_t t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = rotl32(s3, 11);
        st->s0[l] = s0, st->s1[l] = s1, st->s2[l] = s2, st->s3[l] = s3;
    }
}

/* The n parameters of network (key, id): U(-a, a) on the grid of odd multiples of 2^-24 a (24
 * random bits each, like torch.rand, but symmetric about 0 so that negation maps the grid onto
 * itself), or exactly uniform over q levels. */
static void generate(uint64_t key, int64_t id, const prior_t *prior, float *out, int64_t n) {
    stream_t st;
    uint32_t r[LANES];
    stream_seed(&st, key, id);
    if (prior->kind == PRIOR_UNIFORM) {
        /* (2k + 1 - 2^24) is odd with |.| < 2^24, so it converts to float exactly. */
        const float step = prior->a / 16777216.0f; /* a 2^-24 */
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            stream_next(&st, r);
#pragma omp simd
            for (int l = 0; l < LANES; l++) out[i + l] = (float)((int32_t)((r[l] >> 7) | 1u) - (1 << 24)) * step;
        }
        if (i < n) {
            stream_next(&st, r);
            for (int l = 0; i + l < n; l++) out[i + l] = (float)((int32_t)((r[l] >> 7) | 1u) - (1 << 24)) * step;
        }
        return;
    }
    /* Quantized: code = (r * q) >> 32 (Lemire's multiply-shift). It is exactly uniform once draws
     * with (r * q) mod 2^32 < 2^32 mod q are rejected; such a draw (probability < q / 2^32 each)
     * rejects the whole network, which is redrawn from the continuing stream: rejection sampling of
     * the whole parameter vector, so the accepted vector is exactly uniform over the levels. */
    const uint32_t q = (uint32_t)prior->q, threshold = (uint32_t)(-q) % q;
#if defined(__AVX2__)
    /* The same codes 8 lanes at a time: two 32x32 -> 64-bit multiplies (even and odd lanes), and
     * the levels looked up by a lane permute (q <= 8) instead of a scalar gather per weight, which
     * measured 6x slower than uniform weights. */
    float padded[8] = {0};
    for (uint32_t k = 0; k < q && k < 8; k++) padded[k] = prior->levels[k];
    const __m256 level_vector = _mm256_loadu_ps(padded);
    const __m256i qv = _mm256_set1_epi32((int)q), sign = _mm256_set1_epi32((int)0x80000000u);
    const __m256i limit = _mm256_xor_si256(_mm256_set1_epi32((int)threshold), sign);
#endif
    for (;;) {
        uint32_t biased = 0;
        for (int64_t i = 0; i < n; i += LANES) {
            stream_next(&st, r);
            const int64_t take = n - i < LANES ? n - i : LANES;
            int l = 0;
#if defined(__AVX2__)
            if (q <= 8)
                for (; l + 8 <= take; l += 8) {
                    const __m256i word = _mm256_loadu_si256((const __m256i *)(r + l));
                    const __m256i even = _mm256_mul_epu32(word, qv), odd = _mm256_mul_epu32(_mm256_srli_epi64(word, 32), qv);
                    const __m256i code = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
                    const __m256i fraction = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
                    /* unsigned fraction < threshold, as a signed compare of both shifted by 2^31 */
                    biased |= (uint32_t)_mm256_movemask_ps(
                        _mm256_castsi256_ps(_mm256_cmpgt_epi32(limit, _mm256_xor_si256(fraction, sign))));
                    _mm256_storeu_ps(out + i + l, _mm256_permutevar8x32_ps(level_vector, code));
                }
#endif
            for (; l < take; l++) {
                const uint64_t m = (uint64_t)r[l] * q;
                biased |= (uint32_t)m < threshold;
                out[i + l] = prior->levels[m >> 32];
            }
        }
        if (!biased) return;
    }
}

static inline float activate(float z, int act) {
    switch (act) {
        case ACT_RELU: return z > 0.0f ? z : 0.0f;
        case ACT_SIGN: return (float)((z > 0.0f) - (z < 0.0f));
        case ACT_LEAKY: return z > 0.0f ? z : LEAKY_SLOPE * z;
        default: return tanhf(z);
    }
}

/* Head: out units (1 or 2) over k inputs. Returns f (z1 - z0 for two logits) and its scale. */
static inline float head(const float *w, const float *b, int outputs, const float *h, int k, float *scale) {
    float z[2] = {0.0f, 0.0f}, s = 0.0f;
    for (int o = 0; o < outputs; o++) {
        float acc = 0.0f, mag = 0.0f;
        const float *row = w + (int64_t)o * k;
#pragma omp simd reduction(+ : acc, mag)
        for (int i = 0; i < k; i++) {
            acc += row[i] * h[i];
            mag += fabsf(row[i] * h[i]);
        }
        z[o] = acc + (b ? b[o] : 0.0f);
        s += mag + (b ? fabsf(b[o]) : 0.0f);
    }
    *scale = s;
    return outputs == 2 ? z[1] - z[0] : z[0];
}

/* 8 floats as one SIMD value (GCC/Clang vector extension: AVX on x86, NEON pairs on ARM). */
typedef float v8 __attribute__((vector_size(32)));
static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Dense layer from transposed weights wt[i, j] (k x units, the order the stream fills them in):
 * out[j] = act(b[j] + sum_i in[i] wt[i, j]), NV vectors of 8 outputs in registers, no horizontal
 * sums. Rows are read 8-wide past ``units``: the parameter buffer carries slack. */
static inline __attribute__((always_inline)) void dense_tile(const int NV, const float *wt, const float *in, int k,
                                                             int units, int j0, v8 *acc) {
    for (int c = 0; c < NV; c++) acc[c] = (v8){0};
    for (int i = 0; i < k; i++) {
        const float x = in[i];
        const float *row = wt + (int64_t)i * units + j0;
        for (int c = 0; c < NV; c++) acc[c] += x * load8(row + 8 * c);
    }
}

#define DENSE_CASE(nv) \
    case nv: dense_tile(nv, wt, in, k, units, j0, acc); break

static inline __attribute__((always_inline)) void dense_t(const float *wt, const float *b, const float *in, int k,
                                                          int units, const int act, float *out) {
    for (int j0 = 0; j0 < units; j0 += 64) {
        const int left = units - j0 < 64 ? units - j0 : 64, nv = (left + 7) / 8;
        v8 acc[8];
        switch (nv) {
            DENSE_CASE(1); DENSE_CASE(2); DENSE_CASE(3); DENSE_CASE(4);
            DENSE_CASE(5); DENSE_CASE(6); DENSE_CASE(7); DENSE_CASE(8);
        }
        float z[64];
        memcpy(z, acc, sizeof(v8) * nv);
        for (int j = 0; j < left; j++) out[j0 + j] = activate(z[j] + (b ? b[j0 + j] : 0.0f), act);
    }
}

/* call(A) with the runtime activation act as the compile-time constant A, so that the code inside
 * is specialised per activation. */
#define BY_ACTIVATION(call)                   \
    (act == ACT_RELU    ? call(ACT_RELU)      \
     : act == ACT_SIGN  ? call(ACT_SIGN)      \
     : act == ACT_LEAKY ? call(ACT_LEAKY)     \
                        : call(ACT_TANH))

/* dense_t with the activation fixed at compile time (a switch per unit measured as a visible share
 * of small FCNs' forward). */
static void dense_by_activation(const float *wt, const float *b, const float *in, int k, int units, int act,
                                float *out) {
#define DENSE(a) dense_t(wt, b, in, k, units, a, out)
    BY_ACTIVATION(DENSE);
#undef DENSE
}

/* The input of a valid 5x5 convolution as 5 copies shifted by kx = 0..4 columns, each row padded
 * to a multiple of 8 floats: every 8-wide load of the convolution is then aligned (unaligned
 * loads that straddle cache lines measured to halve its speed). S[kx][ic][row][col] = in[ic][row][col + kx]. */
static void shifted_copies(const float *restrict in, int cin, int h, int w, int stride, float *restrict S) {
    const int wo = w - 4;
    for (int kx = 0; kx < 5; kx++)
        for (int ic = 0; ic < cin; ic++)
            for (int row = 0; row < h; row++) {
                const float *src = in + ((int64_t)ic * h + row) * w + kx;
                float *dst = S + (((int64_t)kx * cin + ic) * h + row) * stride;
                for (int col = 0; col < stride; col++) dst[col] = col < wo ? src[col] : 0.0f;
            }
}

/* Two-input lane shuffle (lanes 0-7 of a, then 8-15 of b) in the compiler's own spelling. */
#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int v8i __attribute__((vector_size(32)));
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif

static inline v8 vmax(v8 a, v8 b) {
#if defined(__AVX__)
    return (v8)_mm256_max_ps((__m256)a, (__m256)b); /* GCC leaves the lane loop below scalar */
#else
    v8 m;
    for (int i = 0; i < 8; i++) m[i] = MAX(a[i], b[i]);
    return m;
#endif
}

/* 2x2 max-pool of two conv rows over 16 columns (chunks c0 and c1 of each row), + bias, relu:
 * the 8 pooled values, of which the first ``valid`` are stored (relu and + bias commute with max). */
static inline void pool16(v8 top0, v8 top1, v8 bottom0, v8 bottom1, float bias, int valid, float *out) {
    const v8 m0 = vmax(top0, bottom0), m1 = vmax(top1, bottom1);
    const v8 even = SHUFFLE(m0, m1, 0, 2, 4, 6, 8, 10, 12, 14), odd = SHUFFLE(m0, m1, 1, 3, 5, 7, 9, 11, 13, 15);
    const v8 pooled = vmax(vmax(even, odd) + bias, (v8){0});
    if (valid >= 8) /* constant sizes inline to plain stores; a variable size calls memcpy */
        memcpy(out, &pooled, sizeof pooled);
    else if (valid == 4)
        memcpy(out, &pooled, sizeof(float) * 4);
    else
        memcpy(out, &pooled, sizeof(float) * valid);
}

/* Direct convolution tile: NB output channels x R conv rows x NC chunks of 8 columns, in
 * registers over all taps, from shifted copies, then pooled. R = 2: both rows of pooling row py;
 * R = 1: called for row 2 py (slot 0, parked in ``conv``) and then 2 py + 1 (slot 1, pools).
 * Tiles keep NB R NC <= 12 accumulators and >= 8 where the shape allows (FMA latency 4 x 2 pipes),
 * and accumulators plus the R NC loaded vectors within the 16 AVX registers (spills measured to
 * cost the first layer 40% of its speed). */
static inline __attribute__((always_inline)) void direct_tile(const int NB, const int NC, const int R, const float *S,
                                                              int cin, int h, int stride, const float *wt,
                                                              const float *bias, int oc0, int py, const int slot, int ox0,
                                                              int span, int ph, int pw, float *conv, float *out) {
    v8 acc[12]; /* acc[(b R + r) NC + c]; one flat array of at most 12 is kept in registers */
#define ACC(b, r, c) acc[((b) * R + (r)) * NC + (c)]
    for (int i = 0; i < NB * R * NC; i++) acc[i] = (v8){0};
    for (int ic = 0; ic < cin; ic++)
        for (int ky = 0; ky < 5; ky++) {
            const float *taps = wt + ((int64_t)oc0 * cin + ic) * 25 + ky * 5;
            for (int kx = 0; kx < 5; kx++) {
                const float *line = S + (((int64_t)kx * cin + ic) * h + 2 * py + slot + ky) * stride + ox0;
                v8 v[2][4];
                for (int r = 0; r < R; r++)
                    for (int c = 0; c < NC; c++) v[r][c] = load8(line + r * stride + 8 * c);
                for (int b = 0; b < NB; b++) {
                    const float t = taps[(int64_t)b * cin * 25 + kx];
                    for (int r = 0; r < R; r++)
                        for (int c = 0; c < NC; c++) ACC(b, r, c) += t * v[r][c];
                }
            }
        }
    if (R == 1 && slot == 0) { /* park the top row until the bottom one is done */
        for (int b = 0; b < NB; b++)
            for (int c = 0; c < NC; c++) memcpy(conv + (int64_t)b * 32 + 8 * c, &ACC(b, 0, c), sizeof(v8));
        return;
    }
    for (int b = 0; b < NB; b++) {
        v8 top[4];
        for (int c = 0; c < NC; c++) top[c] = R == 2 ? ACC(b, 0, c) : load8(conv + (int64_t)b * 32 + 8 * c);
        float *pooled = out + ((int64_t)(oc0 + b) * ph + py) * pw + ox0 / 2;
        for (int c = 0; c < NC; c += 2) {
            const int last = c + 1 < NC ? c + 1 : c; /* an odd chunk pools with itself; its copy is not stored */
            pool16(top[c], top[last], ACC(b, R - 1, c), ACC(b, R - 1, last), bias[oc0 + b], span / 2 - 4 * c,
                   pooled + 4 * c);
        }
    }
}
#undef ACC

/* Tile shapes: R = 2 rows when the span is one chunk, else R = 1 (each row of the pooling pair
 * separately); the most channels per tile that fit, split evenly over the tiles. */
static inline int tile_channels(int nc, int cout) {
    const int most = nc == 1 ? 6 : 12 / nc, tiles = (cout + most - 1) / most;
    return (cout + tiles - 1) / tiles;
}

#define DIRECT_TILE(nc, nb, r, slot) \
    direct_tile(nb, nc, r, S, cin, h, stride, wt, bias, oc0, py, slot, ox0, span, ph, pw, conv, out)
#define DIRECT_CASE(nc, nb, r)                         \
    case (nc) * 8 + (nb):                              \
        DIRECT_TILE(nc, nb, r, 0);                     \
        if ((r) == 1) DIRECT_TILE(nc, nb, r, 1);       \
        break

/* Valid 5x5 convolution, 2x2 max-pool (floor), + bias, relu; one example of one network, from the
 * shifted copies S of its input (c x h x w). out is (cout, ph * pw); conv is scratch (6 x 32). */
static void direct_conv_pool(const float *restrict S, int cin, int h, int w, const float *restrict wt,
                             const float *restrict bias, int cout, float *restrict conv, float *restrict out) {
    const int ph = (h - 4) / 2, pw = (w - 4) / 2, stride = (w - 4 + 7) / 8 * 8;
    for (int ox0 = 0; ox0 < 2 * pw; ox0 += 32) {
        const int span = 2 * pw - ox0 < 32 ? 2 * pw - ox0 : 32, nc = (span + 7) / 8, nb_max = tile_channels(nc, cout);
        for (int oc0 = 0; oc0 < cout; oc0 += nb_max) {
            const int nb = cout - oc0 < nb_max ? cout - oc0 : nb_max;
            for (int py = 0; py < ph; py++) {
                switch (nc * 8 + nb) {
                    DIRECT_CASE(1, 1, 2); DIRECT_CASE(1, 2, 2); DIRECT_CASE(1, 3, 2);
                    DIRECT_CASE(1, 4, 2); DIRECT_CASE(1, 5, 2); DIRECT_CASE(1, 6, 2);
                    DIRECT_CASE(2, 1, 1); DIRECT_CASE(2, 2, 1); DIRECT_CASE(2, 3, 1);
                    DIRECT_CASE(2, 4, 1); DIRECT_CASE(2, 5, 1); DIRECT_CASE(2, 6, 1);
                    DIRECT_CASE(3, 1, 1); DIRECT_CASE(3, 2, 1); DIRECT_CASE(3, 3, 1); DIRECT_CASE(3, 4, 1);
                    DIRECT_CASE(4, 1, 1); DIRECT_CASE(4, 2, 1); DIRECT_CASE(4, 3, 1);
                }
            }
        }
    }
}

static inline int64_t shifted_size(int cin, int h, int w) { return (int64_t)5 * cin * h * ((w - 4 + 7) / 8 * 8); }

/* One network's output f and its scale on training example e (see head). */
typedef float (*forward_fn)(void *net, int e, float *scale);

/* Verdicts of one draw (status[0]) or, with mirror, of a mirrored pair (status[0], status[1]),
 * examples in order, each network stopping at its first mistake; returns forwards evaluated. */
static int64_t judge(forward_fn forward, void *net, const int8_t *y, int n, float margin, int mirror,
                     int8_t *status) {
    int survivor = 0, sign = 1; /* the pair member still alive, and the sign of its output */
    for (int e = 0; e < n; e++) {
        float scale, f = forward(net, e, &scale);
        if (scale > 0.0f && fabsf(f) <= margin * scale) { /* both members share |f| and the scale */
            status[survivor] = UNCERTAIN;
            if (mirror && e == 0) status[1] = UNCERTAIN;
            return e + 1;
        }
        const int predicted = f > 0.0f ? 1 : (f < 0.0f ? -1 : 0);
        if (mirror && e == 0) { /* the member that gets example 0 right goes on (f = 0: neither) */
            if (predicted == 0) { status[0] = status[1] = REJECTED; return 1; }
            survivor = predicted == y[0] ? 0 : 1;
            sign = survivor ? -1 : 1;
            status[1 - survivor] = REJECTED;
        } else if (sign * predicted != y[e]) {
            status[survivor] = REJECTED;
            return e + 1;
        }
    }
    status[survivor] = ACCEPTED;
    return n;
}

/* The mirrored head: two logits swapped (rows of w and entries of b), or a scalar head negated.
 * w is outputs x k, followed by the outputs biases when bias is set. */
static void mirror_head(float *w, int outputs, int k, int bias) {
    if (outputs == 2) {
        for (int i = 0; i < k; i++) {
            const float t = w[i];
            w[i] = w[k + i], w[k + i] = t;
        }
        if (bias) {
            const float t = w[2 * k];
            w[2 * k] = w[2 * k + 1], w[2 * k + 1] = t;
        }
    } else {
        for (int i = 0; i < k + (bias ? 1 : 0); i++) w[i] = -w[i];
    }
}

typedef struct {
    int c0, h, w, c1, c2, f1, f2, outputs;
} lenet_t;

static int64_t lenet_param_count(const lenet_t *a, int64_t *flat) {
    const int p2h = ((a->h - 4) / 2 - 4) / 2, p2w = ((a->w - 4) / 2 - 4) / 2;
    *flat = (int64_t)a->c2 * p2h * p2w;
    return (int64_t)a->c1 * a->c0 * 25 + a->c1 + (int64_t)a->c2 * a->c1 * 25 + a->c2 + *flat * a->f1 + a->f1 +
           (int64_t)a->f1 * a->f2 + a->f2 + (int64_t)a->outputs * a->f2 + a->outputs;
}

/* One thread's LeNet: its parameters p (in stream order) and scratch for one example. */
typedef struct {
    lenet_t a;
    int64_t flat, s1;
    const float *S1; /* shifted copies of every example's input, s1 floats each */
    float *p, *conv, *S2, *a1, *a2, *a3, *a4;
    const float *w1, *b1, *w2, *b2, *w3, *b3, *w4, *b4, *w5, *b5;
} lenet_net;

static void lenet_open(lenet_net *net, const lenet_t *a, const float *S1, int64_t s1) {
    const int ph1 = (a->h - 4) / 2, pw1 = (a->w - 4) / 2;
    net->a = *a, net->S1 = S1, net->s1 = s1;
    const int64_t total = lenet_param_count(a, &net->flat);
    net->p = malloc(sizeof(float) * (total + 64 + LANES)); /* slack for 8-wide reads */
    net->conv = malloc(sizeof(float) * 6 * 32);
    net->S2 = aligned_alloc(32, sizeof(float) * ((shifted_size(a->c1, ph1, pw1) + 7) / 8 * 8));
    net->a1 = malloc(sizeof(float) * (int64_t)a->c1 * ph1 * pw1);
    net->a2 = malloc(sizeof(float) * net->flat);
    net->a3 = malloc(sizeof(float) * a->f1);
    net->a4 = malloc(sizeof(float) * a->f2);
    net->w1 = net->p, net->b1 = net->w1 + (int64_t)a->c1 * a->c0 * 25;
    net->w2 = net->b1 + a->c1, net->b2 = net->w2 + (int64_t)a->c2 * a->c1 * 25;
    net->w3 = net->b2 + a->c2, net->b3 = net->w3 + net->flat * a->f1;
    net->w4 = net->b3 + a->f1, net->b4 = net->w4 + (int64_t)a->f1 * a->f2;
    net->w5 = net->b4 + a->f2, net->b5 = net->w5 + (int64_t)a->outputs * a->f2;
}

static void lenet_close(lenet_net *net) {
    free(net->p), free(net->conv), free(net->S2), free(net->a1), free(net->a2), free(net->a3), free(net->a4);
}

static float lenet_forward(void *opaque, int e, float *scale) {
    lenet_net *net = opaque;
    const lenet_t *a = &net->a;
    const int ph1 = (a->h - 4) / 2, pw1 = (a->w - 4) / 2;
    direct_conv_pool(net->S1 + e * net->s1, a->c0, a->h, a->w, net->w1, net->b1, a->c1, net->conv, net->a1);
    shifted_copies(net->a1, a->c1, ph1, pw1, (pw1 - 4 + 7) / 8 * 8, net->S2);
    direct_conv_pool(net->S2, a->c1, ph1, pw1, net->w2, net->b2, a->c2, net->conv, net->a2);
    dense_t(net->w3, net->b3, net->a2, (int)net->flat, a->f1, ACT_RELU, net->a3);
    dense_t(net->w4, net->b4, net->a3, a->f1, a->f2, ACT_RELU, net->a4);
    return head(net->w5, net->b5, a->outputs, net->a4, a->f2, scale);
}

/* Verdicts for networks first_id .. first_id + count - 1 of LeNet-5 on n examples (x, y); with
 * mirror, first_id and count are even. */
int64_t tn_lenet_check(const float *x, const int8_t *y, int n, int c0, int h, int w, int c1, int c2, int f1, int f2,
                       int outputs, int prior_kind, float prior_a, const float *levels, int q, uint64_t key,
                       int64_t first_id, int64_t count, float margin, int mirror, int8_t *status) {
    const lenet_t a = {c0, h, w, c1, c2, f1, f2, outputs};
    const prior_t prior = {prior_kind, prior_a, levels, q};
    int64_t flat;
    const int64_t total = lenet_param_count(&a, &flat), per = mirror ? 2 : 1;
    /* The first layer's input is shared by all networks: shift each example once. */
    const int64_t s1 = shifted_size(c0, h, w);
    float *S1 = aligned_alloc(32, sizeof(float) * ((s1 * n + 7) / 8 * 8));
    for (int e = 0; e < n; e++) shifted_copies(x + (int64_t)e * c0 * h * w, c0, h, w, (w - 4 + 7) / 8 * 8, S1 + e * s1);
    int64_t evaluated = 0;
#pragma omp parallel reduction(+ : evaluated)
    {
        lenet_net net;
        lenet_open(&net, &a, S1, s1);
#pragma omp for schedule(dynamic, 16)
        for (int64_t j = 0; j < count / per; j++) {
            generate(key, first_id / per + j, &prior, net.p, total);
            evaluated += judge(lenet_forward, &net, y, n, margin, mirror, status + j * per);
        }
        lenet_close(&net);
    }
    free(S1);
    return evaluated;
}

/* One thread's FCN: widths[0] = input d, widths[1..depth-1] hidden, readout 1 unit. */
typedef struct {
    const float *x, *p;
    const int *widths;
    int depth, bias, scaled, act;
    float *cur, *next;
} fcn_net;

static int64_t fcn_param_count(const int *widths, int depth, int bias, int scaled, int *widest) {
    int64_t total = 0;
    *widest = 1;
    for (int l = 1; l <= depth; l++) {
        const int units = l == depth ? 1 : widths[l];
        total += (int64_t)units * widths[l - 1] + (bias ? units : 0) + (scaled && l < depth ? units : 0);
        if (widths[l - 1] > *widest) *widest = widths[l - 1];
    }
    return total;
}

static float fcn_forward(void *opaque, int e, float *scale) {
    fcn_net *net = opaque;
    const int *widths = net->widths;
    const float *in = net->x + (int64_t)e * widths[0], *wp = net->p;
    for (int l = 1; l < net->depth; l++) {
        const int k = widths[l - 1], units = widths[l];
        const float *b = net->bias ? wp + (int64_t)units * k : NULL;
        dense_by_activation(wp, b, in, k, units, net->act, net->next);
        wp += (int64_t)units * k + (net->bias ? units : 0);
        if (net->scaled) {
            for (int u = 0; u < units; u++) net->next[u] *= wp[u];
            wp += units;
        }
        in = net->next;
        float *swap = net->cur; /* the next layer writes the other buffer */
        net->cur = net->next, net->next = swap;
    }
    const int k = widths[net->depth - 1];
    return head(wp, net->bias ? wp + k : NULL, 1, in, k, scale);
}

/* Verdicts for FCNs on n examples (x, y); with mirror, first_id and count are even. */
int64_t tn_fcn_check(const float *x, const int8_t *y, int n, const int *widths, int depth, int bias, int scaled,
                     int act, int prior_kind, float prior_a, const float *levels, int q, uint64_t key,
                     int64_t first_id, int64_t count, float margin, int mirror, int8_t *status) {
    const prior_t prior = {prior_kind, prior_a, levels, q};
    int widest;
    const int64_t total = fcn_param_count(widths, depth, bias, scaled, &widest), per = mirror ? 2 : 1;
    int64_t evaluated = 0;
#pragma omp parallel reduction(+ : evaluated)
    {
        float *p = malloc(sizeof(float) * (total + 64 + LANES)); /* slack for 8-wide reads */
        fcn_net net = {x, p, widths, depth, bias, scaled, act, malloc(sizeof(float) * widest),
                       malloc(sizeof(float) * widest)};
#pragma omp for schedule(dynamic, 64)
        for (int64_t j = 0; j < count / per; j++) {
            generate(key, first_id / per + j, &prior, p, total);
            evaluated += judge(fcn_forward, &net, y, n, margin, mirror, status + j * per);
        }
        free(p), free(net.cur), free(net.next);
    }
    return evaluated;
}

/* Parameters of networks ids[0 .. count - 1], each n_params floats, into out. With mirror,
 * network i is stream i / 2, its head (the last outputs x head_k weights, then the biases if
 * head_bias) mirrored when i is odd. */
void tn_draw(uint64_t key, const int64_t *ids, int64_t count, int64_t n_params, int prior_kind, float prior_a,
             const float *levels, int q, int mirror, int outputs, int head_k, int head_bias, float *out) {
    const prior_t prior = {prior_kind, prior_a, levels, q};
    const int64_t head_size = (int64_t)outputs * head_k + (head_bias ? outputs : 0);
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < count; j++) {
        const int64_t id = ids[j];
        float *params = out + j * n_params;
        generate(key, mirror ? id >> 1 : id, &prior, params, n_params);
        if (mirror && (id & 1)) mirror_head(params + n_params - head_size, outputs, head_k, head_bias);
    }
}

void tn_set_threads(int threads) { omp_set_num_threads(threads); }

/* ---- SMC moves for one-hidden-layer FCN particles (typicalnets.samplers.smc.FCNCache) ----------
 *
 * Each particle keeps, in float64, its hidden pre-activations z (h x ld, examples contiguous), its
 * outputs f and output scales s = sum_j |w2_j s1_j act(z_j)| + |b2| on the seen examples. A move
 * re-draws one parameter c to a different level, uniformly among the other q - 1 levels (a
 * symmetric proposal; the coordinate's choice does not depend on the state), and keeps it iff
 * every seen example stays correct, y f > tie * s: Metropolis-Hastings for the flat prior times
 * the constraint indicator. It updates z, f and s in O(seen) and stops at the first violation. */

static inline double activate64(double z, int act) {
    switch (act) {
        case ACT_RELU: return z > 0.0 ? z : 0.0;
        case ACT_SIGN: return (double)((z > 0.0) - (z < 0.0));
        case ACT_LEAKY: return z > 0.0 ? z : 0.01 * z;
        default: return tanh(z);
    }
}

/* Uniform integer in [0, range), exactly (Lemire's multiply-shift with rejection); threshold is
 * 2^32 mod range, computed once per range (a division per draw measured as a large share of a move). */
static inline uint32_t bounded(uint64_t *state, uint32_t range, uint32_t threshold) {
    for (;;) {
        const uint64_t m = (uint64_t)(uint32_t)(splitmix64(state) >> 32) * range;
        if ((uint32_t)m >= threshold) return (uint32_t)(m >> 32);
    }
}

enum { MOVE_SHIFT, MOVE_WEIGHT, MOVE_BIAS };

/* Example k of a move that shifts unit j's pre-activation by delta * row[k]: 1 iff it stays
 * correct; with apply, z, f and s take their new values (the same arithmetic as the check). */
static inline __attribute__((always_inline)) int shift_one(const int act, double *restrict zj,
                                                           const float *restrict row, double delta, double wj,
                                                           double *restrict fp, double *restrict sp,
                                                           const double *restrict y, double tie, const int apply,
                                                           int k) {
    const double zo = zj[k], zn = zo + delta * (double)row[k];
    const double ao = wj * activate64(zo, act), an = wj * activate64(zn, act);
    const double fn = fp[k] + an - ao, sn = sp[k] + fabs(an) - fabs(ao);
    if (apply) zj[k] = zn, fp[k] = fn, sp[k] = sn;
    return y[k] * fn > tie * sn;
}

/* Example k of a move that changes unit j's output weight from wo to wn (a = act(z_j)). */
static inline __attribute__((always_inline)) int reweigh_one(const int act, const double *restrict zj, double wo,
                                                             double wn, double *restrict fp, double *restrict sp,
                                                             const double *restrict y, double tie, const int apply,
                                                             int k) {
    const double a = activate64(zj[k], act), ao = wo * a, an = wn * a;
    const double fn = fp[k] + an - ao, sn = sp[k] + fabs(an) - fabs(ao);
    if (apply) fp[k] = fn, sp[k] = sn;
    return y[k] * fn > tie * sn;
}

/* Example k of a move that changes the output bias from bo to bn. */
static inline __attribute__((always_inline)) int rebias_one(double bo, double bn, double *restrict fp,
                                                            double *restrict sp, const double *restrict y,
                                                            double tie, const int apply, int k) {
    const double fn = fp[k] + (bn - bo), sn = sp[k] + fabs(bn) - fabs(bo);
    if (apply) fp[k] = fn, sp[k] = sn;
    return y[k] * fn > tie * sn;
}

/* Whether a move keeps every seen example correct, checked without writing, in chunks of
 * MOVE_CHUNK branch-free and the rest; a chunk with a mistake ends the check. The labels are float64
 * (converting int8 ones in the check measured half its time). An accepted move then writes its rows
 * in a second pass: recomputing them measured faster than keeping them in scratch rows and copying
 * those back. */
#define MOVE_CHUNK 16
static inline __attribute__((always_inline)) int keeps_all(const int act, const int kind, double *restrict zj,
                                                           const float *restrict row, double a, double b,
                                                           double *restrict fp, double *restrict sp,
                                                           const double *restrict y, int seen, double tie) {
#define ONE(apply, k)                                                         \
    (kind == MOVE_SHIFT    ? shift_one(act, zj, row, a, b, fp, sp, y, tie, apply, k) \
     : kind == MOVE_WEIGHT ? reweigh_one(act, zj, a, b, fp, sp, y, tie, apply, k)   \
                           : rebias_one(a, b, fp, sp, y, tie, apply, k))
    int e = 0;
    for (; e + MOVE_CHUNK <= seen; e += MOVE_CHUNK) {
        int good = 1;
        for (int k = e; k < e + MOVE_CHUNK; k++) good &= ONE(0, k);
        if (!good) return 0;
    }
    int good = 1;
    for (int k = e; k < seen; k++) good &= ONE(0, k);
    if (!good) return 0;
    for (int k = 0; k < seen; k++) (void)ONE(1, k);
    return 1;
#undef ONE
}

/* Proposals are drawn LOOKAHEAD at a time (in the order a one-at-a-time loop would draw them, so
 * the stream is the same), and the first PREFETCH_LINES cache lines of each one's input row are
 * prefetched: a random row of the (d, n) inputs is seldom in the core's own caches (measured 6%
 * faster at n = 16 to 480). */
#define LOOKAHEAD 16
#define PREFETCH_LINES 4

/* ``proposals`` single-parameter moves of each particle; the accepted ones per particle go to
 * accepted[]. xt: the (d, ld) float32 inputs, transposed; y: the float64 labels. */
void tn_fcn1_moves(int64_t particles, int64_t n_params, int d, int h, int bias, int scaled, int act,
                   const float *xt, int ld, const double *y, int seen, float *flat, double *z, double *f,
                   double *scale, const float *levels, int q, int64_t proposals, double tail_share, uint64_t key,
                   int64_t first_id, double tie, int64_t *accepted) {
    const int64_t b1 = (int64_t)h * d, s1 = b1 + (bias ? h : 0), w2 = s1 + (scaled ? h : 0), b2 = w2 + h;
    const int64_t tail = n_params - b1;
    const uint32_t all_threshold = (uint32_t)(-(uint32_t)n_params) % (uint32_t)n_params,
                   tail_threshold = (uint32_t)(-(uint32_t)tail) % (uint32_t)tail,
                   level_threshold = (uint32_t)(-(uint32_t)(q - 1)) % (uint32_t)(q - 1);
#pragma omp parallel
    {
        float *ones = malloc(sizeof(float) * (seen + 1));
        for (int e = 0; e < seen; e++) ones[e] = 1.0f;
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < particles; p++) {
            uint64_t rng = key ^ ((uint64_t)(first_id + p) * 0xD1342543DE82EF95ull);
            float *th = flat + p * n_params;
            double *zp = z + p * (int64_t)h * ld, *fp = f + p * (int64_t)ld, *sp = scale + p * (int64_t)ld;
            int64_t kept = 0, picks[LOOKAHEAD];
            uint32_t offsets[LOOKAHEAD];
            for (int64_t t = 0; t < proposals; t++) {
                const int slot = (int)(t % LOOKAHEAD);
                if (slot == 0) { /* draw the next proposals in stream order and prefetch what they read */
                    for (int u = 0; u < LOOKAHEAD && t + u < proposals; u++) {
                        const int pick_tail = (double)(splitmix64(&rng) >> 11) * 0x1.0p-53 < tail_share;
                        picks[u] = pick_tail ? b1 + (int64_t)bounded(&rng, (uint32_t)tail, tail_threshold)
                                             : (int64_t)bounded(&rng, (uint32_t)n_params, all_threshold);
                        offsets[u] = bounded(&rng, (uint32_t)(q - 1), level_threshold);
                        __builtin_prefetch(th + picks[u], 0, 3);
                        if (picks[u] < b1) {
                            const float *row = xt + (picks[u] % d) * (int64_t)ld;
                            for (int line = 0; line < PREFETCH_LINES && line * 16 < seen; line++)
                                __builtin_prefetch(row + line * 16, 0, 3);
                        }
                    }
                }
                const int64_t c = picks[slot];
                const float old = th[c];
                int level = -1;
                for (int k = 0; k < q; k++)
                    if (levels[k] == old) level = k;
                if (level < 0) continue; /* not on the grid: never happens for prior draws */
                int other = level + 1 + (int)offsets[slot];
                const float new = levels[other >= q ? other - q : other];
                int ok = 1;
                if (c < s1) { /* w1[j, i] or b1[j]: column j of z moves by delta * x_i (or delta) */
                    const int j = c < b1 ? (int)(c / d) : (int)(c - b1);
                    const float *row = c < b1 ? xt + (c % d) * (int64_t)ld : ones;
                    const double delta = (double)new - (double)old;
                    const double wj = (double)th[w2 + j] * (scaled ? (double)th[s1 + j] : 1.0);
                    double *zj = zp + (int64_t)j * ld;
                    if (wj == 0.0) { /* the unit does not reach the output: always valid */
                        for (int e = 0; e < seen; e++) zj[e] += delta * (double)row[e];
                    } else {
#define SHIFT(a) keeps_all(a, MOVE_SHIFT, zj, row, delta, wj, fp, sp, y, seen, tie)
                        ok = BY_ACTIVATION(SHIFT);
#undef SHIFT
                    }
                } else if (c < b2) { /* s1[j] or w2[j]: unit j's output weight w2_j s1_j changes */
                    const int j = c < w2 ? (int)(c - s1) : (int)(c - w2);
                    const double w2j = c < w2 ? (double)th[w2 + j] : (double)new;
                    const double sj = scaled ? (c < w2 ? (double)new : (double)th[s1 + j]) : 1.0;
                    const double wo = (double)th[w2 + j] * (scaled ? (double)th[s1 + j] : 1.0), wn = w2j * sj;
                    double *zj = zp + (int64_t)j * ld;
#define REWEIGH(a) keeps_all(a, MOVE_WEIGHT, zj, NULL, wo, wn, fp, sp, y, seen, tie)
                    ok = BY_ACTIVATION(REWEIGH);
#undef REWEIGH
                } else { /* b2: every output moves by the same amount */
                    ok = keeps_all(ACT_RELU, MOVE_BIAS, NULL, NULL, (double)old, (double)new, fp, sp, y, seen, tie);
                }
                if (ok) th[c] = new, kept++;
            }
            accepted[p] = kept;
        }
        free(ones);
    }
}
