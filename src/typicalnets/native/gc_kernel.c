/* Native CPU kernel for fast, exact Guess & Check (typicalnets.native loads it with ctypes).
 *
 * Each network is identified by (key, id). Its parameters are generated on the fly from a
 * counter-seeded xoshiro128+ stream (16 interleaved lanes, so the loop vectorizes), in the order
 * of Population.params except that hidden dense layers are filled column by column (the kernel
 * reads them transposed; Python transposes them back), and it is evaluated one example at a time,
 * stopping at its first mistake (early rejection). Nothing but the verdict leaves the kernel;
 * tn_draw regenerates the parameters of any id for the full-precision re-check.
 *
 * Verdicts: 1 accepted, 0 rejected, 2 uncertain (some |f| <= margin * scale, where scale is
 * sum |w_i h_i| + |b| of the head: the sign could depend on rounding order, so Python re-checks).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* The n parameters of network (key, id): U[-a, a) on a 2^-23 * a grid (24 random bits each,
 * like torch.rand), or exactly uniform over q levels. */
static void generate(uint64_t key, int64_t id, const prior_t *prior, float *out, int64_t n) {
    stream_t st;
    uint32_t r[LANES];
    stream_seed(&st, key, id);
    if (prior->kind == PRIOR_UNIFORM) {
        const float a = prior->a, step = 1.0f / 8388608.0f; /* 2^-23 */
        int64_t i = 0;
        for (; i + LANES <= n; i += LANES) {
            stream_next(&st, r);
#pragma omp simd
            for (int l = 0; l < LANES; l++) out[i + l] = ((float)(r[l] >> 8) * step - 1.0f) * a;
        }
        if (i < n) {
            stream_next(&st, r);
            for (int l = 0; i + l < n; l++) out[i + l] = ((float)(r[l] >> 8) * step - 1.0f) * a;
        }
        return;
    }
    /* Quantized: code = (r * q) >> 32 (Lemire's multiply-shift). It is exactly uniform once draws
     * with (r * q) mod 2^32 < 2^32 mod q are rejected; such a draw (probability < q / 2^32 each)
     * rejects the whole network, which is redrawn from the continuing stream: rejection sampling of
     * the whole parameter vector, so the accepted vector is exactly uniform over the levels. */
    const uint32_t q = (uint32_t)prior->q, threshold = (uint32_t)(-q) % q;
    for (;;) {
        uint32_t biased = 0;
        for (int64_t i = 0; i < n; i += LANES) {
            stream_next(&st, r);
            const int64_t take = n - i < LANES ? n - i : LANES;
            for (int l = 0; l < take; l++) {
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

static void dense_t(const float *wt, const float *b, const float *in, int k, int units, int act, float *out) {
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

/* Direct convolution tile: NB output channels x the 2 conv rows of one pooling pair x NC chunks
 * of 8 columns, in registers over all taps (2 NB NC <= 12 accumulators), from shifted copies. */
static inline __attribute__((always_inline)) void direct_tile(const int NB, const int NC, const float *S, int cin,
                                                              int h, int stride, const float *wt, int oc0, int oy,
                                                              int ox0, float *conv) {
    v8 acc[6][2][4];
    for (int b = 0; b < NB; b++)
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < NC; c++) acc[b][r][c] = (v8){0};
    for (int ic = 0; ic < cin; ic++)
        for (int ky = 0; ky < 5; ky++) {
            const float *taps = wt + ((int64_t)oc0 * cin + ic) * 25 + ky * 5;
            for (int kx = 0; kx < 5; kx++) {
                const float *line = S + (((int64_t)kx * cin + ic) * h + oy + ky) * stride + ox0;
                v8 v[2][4];
                for (int c = 0; c < NC; c++) v[0][c] = load8(line + 8 * c), v[1][c] = load8(line + stride + 8 * c);
                for (int b = 0; b < NB; b++) {
                    const float t = taps[(int64_t)b * cin * 25 + kx];
                    for (int c = 0; c < NC; c++) acc[b][0][c] += t * v[0][c], acc[b][1][c] += t * v[1][c];
                }
            }
        }
    for (int b = 0; b < NB; b++)
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < NC; c++) memcpy(conv + ((int64_t)b * 2 + r) * 40 + 8 * c, &acc[b][r][c], sizeof(v8));
}

#define DIRECT_CASE(nc, nb) \
    case (nc) * 8 + (nb): direct_tile(nb, nc, S, cin, h, stride, wt, oc0, 2 * py, ox0, conv); break

/* Valid 5x5 convolution, 2x2 max-pool (floor), + bias, relu; one example of one network, from the
 * shifted copies S of its input (c x h x w). out is (cout, ph * pw); conv is scratch (6 x 2 x 40). */
static void direct_conv_pool(const float *restrict S, int cin, int h, int w, const float *restrict wt,
                             const float *restrict bias, int cout, float *restrict conv, float *restrict out) {
    const int ph = (h - 4) / 2, pw = (w - 4) / 2, stride = (w - 4 + 7) / 8 * 8;
    for (int ox0 = 0; ox0 < 2 * pw; ox0 += 32) {
        const int span = 2 * pw - ox0 < 32 ? 2 * pw - ox0 : 32, nc = (span + 7) / 8, nb_max = 12 / (2 * nc);
        for (int oc0 = 0; oc0 < cout; oc0 += nb_max) {
            const int nb = cout - oc0 < nb_max ? cout - oc0 : nb_max;
            for (int py = 0; py < ph; py++) {
                switch (nc * 8 + nb) {
                    DIRECT_CASE(1, 1); DIRECT_CASE(1, 2); DIRECT_CASE(1, 3);
                    DIRECT_CASE(1, 4); DIRECT_CASE(1, 5); DIRECT_CASE(1, 6);
                    DIRECT_CASE(2, 1); DIRECT_CASE(2, 2); DIRECT_CASE(2, 3);
                    DIRECT_CASE(3, 1); DIRECT_CASE(3, 2);
                    DIRECT_CASE(4, 1);
                }
                for (int b = 0; b < nb; b++) {
                    const float *rows = conv + (int64_t)b * 2 * 40;
                    float *pooled = out + ((int64_t)(oc0 + b) * ph + py) * pw + ox0 / 2;
                    for (int px = 0; px < span / 2; px++) {
                        const float m = MAX(MAX(rows[2 * px], rows[2 * px + 1]),
                                            MAX(rows[40 + 2 * px], rows[40 + 2 * px + 1])) + bias[oc0 + b];
                        pooled[px] = MAX(m, 0.0f); /* relu and + bias commute with max */
                    }
                }
            }
        }
    }
}

static inline int64_t shifted_size(int cin, int h, int w) { return (int64_t)5 * cin * h * ((w - 4 + 7) / 8 * 8); }

typedef struct {
    int c0, h, w, c1, c2, f1, f2, outputs;
} lenet_t;

static int64_t lenet_param_count(const lenet_t *a, int64_t *flat) {
    const int p2h = ((a->h - 4) / 2 - 4) / 2, p2w = ((a->w - 4) / 2 - 4) / 2;
    *flat = (int64_t)a->c2 * p2h * p2w;
    return (int64_t)a->c1 * a->c0 * 25 + a->c1 + (int64_t)a->c2 * a->c1 * 25 + a->c2 + *flat * a->f1 + a->f1 +
           (int64_t)a->f1 * a->f2 + a->f2 + (int64_t)a->outputs * a->f2 + a->outputs;
}

/* Verdicts for networks first_id .. first_id + count - 1 of LeNet-5 on n examples (x, y). */
int64_t tn_lenet_check(const float *x, const int8_t *y, int n, int c0, int h, int w, int c1, int c2, int f1, int f2,
                       int outputs, int prior_kind, float prior_a, const float *levels, int q, uint64_t key,
                       int64_t first_id, int64_t count, float margin, int8_t *status) {
    const lenet_t a = {c0, h, w, c1, c2, f1, f2, outputs};
    const prior_t prior = {prior_kind, prior_a, levels, q};
    int64_t flat;
    const int64_t total = lenet_param_count(&a, &flat);
    const int ph1 = (h - 4) / 2, pw1 = (w - 4) / 2, taps1 = c0 * 25, taps2 = c1 * 25;
    /* The first layer's input is shared by all networks: shift each example once. */
    const int64_t s1 = shifted_size(c0, h, w), s2 = shifted_size(c1, ph1, pw1);
    float *S1 = aligned_alloc(32, sizeof(float) * ((s1 * n + 7) / 8 * 8));
    for (int e = 0; e < n; e++) shifted_copies(x + (int64_t)e * c0 * h * w, c0, h, w, (w - 4 + 7) / 8 * 8, S1 + e * s1);
    int64_t evaluated = 0;
#pragma omp parallel reduction(+ : evaluated)
    {
        float *p = malloc(sizeof(float) * (total + 64 + LANES)); /* slack for 8-wide reads */
        float *conv = malloc(sizeof(float) * 6 * 2 * 40);
        float *S2 = aligned_alloc(32, sizeof(float) * ((s2 + 7) / 8 * 8));
        float *a1 = malloc(sizeof(float) * (int64_t)c1 * ph1 * pw1);
        float *a2 = malloc(sizeof(float) * flat);
        float *a3 = malloc(sizeof(float) * f1);
        float *a4 = malloc(sizeof(float) * f2);
        const float *w1p = p, *b1p = w1p + (int64_t)c1 * taps1, *w2p = b1p + c1, *b2p = w2p + (int64_t)c2 * taps2;
        const float *w3p = b2p + c2, *b3p = w3p + flat * f1, *w4p = b3p + f1, *b4p = w4p + (int64_t)f1 * f2;
        const float *w5p = b4p + f2, *b5p = w5p + (int64_t)outputs * f2;
#pragma omp for schedule(dynamic, 16)
        for (int64_t j = 0; j < count; j++) {
            generate(key, first_id + j, &prior, p, total);
            int8_t verdict = ACCEPTED;
            for (int e = 0; e < n; e++) {
                direct_conv_pool(S1 + e * s1, c0, h, w, w1p, b1p, c1, conv, a1);
                shifted_copies(a1, c1, ph1, pw1, (pw1 - 4 + 7) / 8 * 8, S2);
                direct_conv_pool(S2, c1, ph1, pw1, w2p, b2p, c2, conv, a2);
                dense_t(w3p, b3p, a2, (int)flat, f1, ACT_RELU, a3);
                dense_t(w4p, b4p, a3, f1, f2, ACT_RELU, a4);
                float scale, f = head(w5p, b5p, outputs, a4, f2, &scale);
                evaluated++;
                if (scale > 0.0f && fabsf(f) <= margin * scale) { verdict = UNCERTAIN; break; }
                if ((f > 0.0f ? 1 : (f < 0.0f ? -1 : 0)) != y[e]) { verdict = REJECTED; break; }
            }
            status[j] = verdict;
        }
        free(p), free(conv), free(S2), free(a1), free(a2), free(a3), free(a4);
    }
    free(S1);
    return evaluated;
}

/* Verdicts for FCNs: widths[0] = input d, widths[1..depth-1] hidden, readout 1 unit. */
int64_t tn_fcn_check(const float *x, const int8_t *y, int n, const int *widths, int depth, int bias, int scaled,
                     int act, int prior_kind, float prior_a, const float *levels, int q, uint64_t key,
                     int64_t first_id, int64_t count, float margin, int8_t *status) {
    const prior_t prior = {prior_kind, prior_a, levels, q};
    int64_t total = 0;
    int widest = 1;
    for (int l = 1; l <= depth; l++) {
        const int units = l == depth ? 1 : widths[l];
        total += (int64_t)units * widths[l - 1] + (bias ? units : 0) + (scaled && l < depth ? units : 0);
        if (widths[l - 1] > widest) widest = widths[l - 1];
    }
    int64_t evaluated = 0;
#pragma omp parallel reduction(+ : evaluated)
    {
        float *p = malloc(sizeof(float) * (total + 64 + LANES)); /* slack for 8-wide reads */
        float *cur = malloc(sizeof(float) * widest), *next = malloc(sizeof(float) * widest);
#pragma omp for schedule(dynamic, 64)
        for (int64_t j = 0; j < count; j++) {
            generate(key, first_id + j, &prior, p, total);
            int8_t verdict = ACCEPTED;
            for (int e = 0; e < n; e++) {
                const float *in = x + (int64_t)e * widths[0];
                const float *wp = p;
                float f = 0.0f, scale = 0.0f;
                for (int l = 1; l <= depth; l++) {
                    const int k = widths[l - 1];
                    const float *weights = wp, *b = bias ? wp + (int64_t)(l == depth ? 1 : widths[l]) * k : NULL;
                    const int units = l == depth ? 1 : widths[l];
                    wp += (int64_t)units * k + (bias ? units : 0);
                    if (l == depth) {
                        f = head(weights, b, 1, in, k, &scale);
                        break;
                    }
                    dense_t(weights, b, in, k, units, act, next);
                    if (scaled) {
                        for (int u = 0; u < units; u++) next[u] *= wp[u];
                        wp += units;
                    }
                    memcpy(cur, next, sizeof(float) * units);
                    in = cur;
                }
                evaluated++;
                if (scale > 0.0f && fabsf(f) <= margin * scale) { verdict = UNCERTAIN; break; }
                if ((f > 0.0f ? 1 : (f < 0.0f ? -1 : 0)) != y[e]) { verdict = REJECTED; break; }
            }
            status[j] = verdict;
        }
        free(p), free(cur), free(next);
    }
    return evaluated;
}

/* Parameters of networks first_id .. first_id + count - 1, each n_params floats, into out. */
void tn_draw(uint64_t key, int64_t first_id, int64_t count, int64_t n_params, int prior_kind, float prior_a,
             const float *levels, int q, float *out) {
    const prior_t prior = {prior_kind, prior_a, levels, q};
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < count; j++) generate(key, first_id + j, &prior, out + j * n_params, n_params);
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

/* The rows of a move that shifts unit j's pre-activations by delta * row[e] (row = x_i, or ones for
 * the bias): new z, f, s into tz, tf, ts; returns 1 iff every seen example stays correct. Chunks of
 * 16 examples are checked branch-free (they vectorize), and a chunk with a mistake ends the move. */
static inline __attribute__((always_inline)) int shift_unit(const int act, const double *zj, const double *row,
                                                            double delta, double wj, const double *fp,
                                                            const double *sp, const int8_t *y, int seen, double tie,
                                                            double *tz, double *tf, double *ts) {
    for (int e = 0; e < seen; e += 16) {
        const int end = e + 16 < seen ? e + 16 : seen;
        int bad = 0;
        for (int k = e; k < end; k++) {
            const double zo = zj[k], zn = zo + delta * row[k];
            const double ao = wj * activate64(zo, act), an = wj * activate64(zn, act);
            tz[k] = zn, tf[k] = fp[k] + an - ao, ts[k] = sp[k] + fabs(an) - fabs(ao);
            bad |= !((double)y[k] * tf[k] > tie * ts[k]);
        }
        if (bad) return 0;
    }
    return 1;
}

/* The rows of a move that changes unit j's output weight from wo to wn (a = act(z_j)). */
static inline __attribute__((always_inline)) int reweigh_unit(const int act, const double *zj, double wo, double wn,
                                                              const double *fp, const double *sp, const int8_t *y,
                                                              int seen, double tie, double *tf, double *ts) {
    for (int e = 0; e < seen; e += 16) {
        const int end = e + 16 < seen ? e + 16 : seen;
        int bad = 0;
        for (int k = e; k < end; k++) {
            const double a = activate64(zj[k], act), ao = wo * a, an = wn * a;
            tf[k] = fp[k] + an - ao, ts[k] = sp[k] + fabs(an) - fabs(ao);
            bad |= !((double)y[k] * tf[k] > tie * ts[k]);
        }
        if (bad) return 0;
    }
    return 1;
}

#define BY_ACTIVATION(call)                   \
    (act == ACT_RELU    ? call(ACT_RELU)      \
     : act == ACT_SIGN  ? call(ACT_SIGN)      \
     : act == ACT_LEAKY ? call(ACT_LEAKY)     \
                        : call(ACT_TANH))

/* Proposals per particle; returns accepted moves per particle in accepted[]. */
void tn_fcn1_moves(int64_t particles, int64_t n_params, int d, int h, int bias, int scaled, int act,
                   const double *xt, int ld, const int8_t *y, int seen, float *flat, double *z, double *f,
                   double *scale, const float *levels, int q, int64_t proposals, double tail_share, uint64_t key,
                   int64_t first_id, double tie, int64_t *accepted) {
    const int64_t b1 = (int64_t)h * d, s1 = b1 + (bias ? h : 0), w2 = s1 + (scaled ? h : 0), b2 = w2 + h;
    const int64_t tail = n_params - b1;
    const uint32_t all_threshold = (uint32_t)(-(uint32_t)n_params) % (uint32_t)n_params,
                   tail_threshold = (uint32_t)(-(uint32_t)tail) % (uint32_t)tail,
                   level_threshold = (uint32_t)(-(uint32_t)(q - 1)) % (uint32_t)(q - 1);
#pragma omp parallel
    {
        double *tz = malloc(sizeof(double) * (seen + 1)), *tf = malloc(sizeof(double) * (seen + 1)),
               *ts = malloc(sizeof(double) * (seen + 1)), *ones = malloc(sizeof(double) * (seen + 1));
        for (int e = 0; e < seen; e++) ones[e] = 1.0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < particles; p++) {
            uint64_t rng = key ^ ((uint64_t)(first_id + p) * 0xD1342543DE82EF95ull);
            float *th = flat + p * n_params;
            double *zp = z + p * (int64_t)h * ld, *fp = f + p * (int64_t)ld, *sp = scale + p * (int64_t)ld;
            int64_t kept = 0;
            for (int64_t t = 0; t < proposals; t++) {
                const int pick_tail = (double)(splitmix64(&rng) >> 11) * 0x1.0p-53 < tail_share;
                const int64_t c = pick_tail ? b1 + (int64_t)bounded(&rng, (uint32_t)tail, tail_threshold)
                                            : (int64_t)bounded(&rng, (uint32_t)n_params, all_threshold);
                const float old = th[c];
                int level = -1;
                for (int k = 0; k < q; k++)
                    if (levels[k] == old) level = k;
                if (level < 0) continue; /* not on the grid: never happens for prior draws */
                int other = level + 1 + (int)bounded(&rng, (uint32_t)(q - 1), level_threshold);
                const float new = levels[other >= q ? other - q : other];
                int ok = 1;
                if (c < s1) { /* w1[j, i] or b1[j]: column j of z moves by delta * x_i (or delta) */
                    const int j = c < b1 ? (int)(c / d) : (int)(c - b1);
                    const double *row = c < b1 ? xt + (c % d) * (int64_t)ld : ones;
                    const double delta = (double)new - (double)old;
                    const double wj = (double)th[w2 + j] * (scaled ? (double)th[s1 + j] : 1.0);
                    double *zj = zp + (int64_t)j * ld;
                    if (wj == 0.0) { /* the unit does not reach the output: always valid */
                        for (int e = 0; e < seen; e++) zj[e] += delta * row[e];
                    } else {
#define SHIFT(a) shift_unit(a, zj, row, delta, wj, fp, sp, y, seen, tie, tz, tf, ts)
                        ok = BY_ACTIVATION(SHIFT);
#undef SHIFT
                        if (ok) {
                            memcpy(zj, tz, sizeof(double) * seen);
                            memcpy(fp, tf, sizeof(double) * seen);
                            memcpy(sp, ts, sizeof(double) * seen);
                        }
                    }
                } else if (c < b2) { /* s1[j] or w2[j]: unit j's output weight w2_j s1_j changes */
                    const int j = c < w2 ? (int)(c - s1) : (int)(c - w2);
                    const double w2j = c < w2 ? (double)th[w2 + j] : (double)new;
                    const double sj = scaled ? (c < w2 ? (double)new : (double)th[s1 + j]) : 1.0;
                    const double wo = (double)th[w2 + j] * (scaled ? (double)th[s1 + j] : 1.0), wn = w2j * sj;
                    const double *zj = zp + (int64_t)j * ld;
#define REWEIGH(a) reweigh_unit(a, zj, wo, wn, fp, sp, y, seen, tie, tf, ts)
                    ok = BY_ACTIVATION(REWEIGH);
#undef REWEIGH
                    if (ok) {
                        memcpy(fp, tf, sizeof(double) * seen);
                        memcpy(sp, ts, sizeof(double) * seen);
                    }
                } else { /* b2: every output moves by the same amount */
                    const double bo = (double)old, bn = (double)new;
                    for (int e = 0; e < seen && ok; e++) {
                        tf[e] = fp[e] + (bn - bo), ts[e] = sp[e] + fabs(bn) - fabs(bo);
                        ok = y[e] * tf[e] > tie * ts[e];
                    }
                    if (ok) {
                        memcpy(fp, tf, sizeof(double) * seen);
                        memcpy(sp, ts, sizeof(double) * seen);
                    }
                }
                if (ok) th[c] = new, kept++;
            }
            accepted[p] = kept;
        }
        free(tz), free(tf), free(ts), free(ones);
    }
}
