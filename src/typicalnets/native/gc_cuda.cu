/* CUDA kernel for fast, exact Guess & Check of LeNet-5 (typicalnets.native.cuda builds and loads it).
 *
 * It draws and checks in one pass, like the CPU kernel gc_kernel.c, and draws the same networks:
 * network (key, id) comes from the same counter-seeded xoshiro128+ stream of 16 interleaved lanes,
 * in the same parameter order (hidden dense layers column by column), so its verdicts and
 * tn_lenet_draw's parameters can be compared with the CPU kernel's. The convolutions and hidden
 * dense layers also add their terms in the CPU kernel's order with fused multiply-adds, so their
 * activations are bitwise the same; only the head's sum runs in another order.
 *
 * Layout: a half-warp (16 threads) per network, thread l running lane l of the stream, so the
 * parameters are generated in parallel and never stored except the convolutions' (686 floats at
 * width 0.5, in shared memory): each dense weight is drawn, used once and dropped. A half-warp
 * takes mirrored pairs from a global counter (persistent blocks) and runs one forward per loop:
 * the pair on example 0, then the survivor on examples 1, 2, ... until its first mistake, each
 * forward regenerating the dense weights from a saved stream state. The 8 networks of a block are
 * independent; no half-warp waits for another.
 *
 * The same source compiles as C++ for the CPU (TN_EMULATE, typicalnets.native.cuda.emulator): a
 * half-warp's 16 threads then run one after another inside each FOR_LANES block, which the CUDA
 * build ends with a half-warp barrier. So between barriers a thread touches only its own lane's
 * values and shared memory no other thread writes, and the emulation computes what the GPU does.
 * The shapes are compile-time constants (-D C0, H, W, C1, C2, F1, F2, OUT); F1, F2 >= 16, so the
 * 16 weights of a group feed 16 different units and the 16 threads never add into one sum at once.
 *
 * Verdicts: 1 accepted, 0 rejected, 2 uncertain (|f| <= margin * scale, or a quantized draw that
 * rejection sampling redraws: Python re-checks those from tn_lenet_draw's exact parameters).
 */
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define DEVICE __device__ __forceinline__
#define LANE_SLOTS 1 /* a thread's own values: scalars (registers) */
#define LANE 0
#define FOR_LANES {                            \
        const int l = (int)(threadIdx.x & 15u);
#define END_LANES                               \
    }                                          \
    __syncwarp(0xFFFFu << (threadIdx.x & 16u));
#define LEADER ((threadIdx.x & 15u) == 0u)
DEVICE uint64_t claim(unsigned long long *counter) { return atomicAdd(counter, 1ull); }
DEVICE void tally(unsigned long long *counter, uint64_t v) { atomicAdd(counter, (unsigned long long)v); }
DEVICE uint32_t mul_hi(uint32_t a, uint32_t b) { return __umulhi(a, b); }
DEVICE float bits_float(uint32_t b) { return __uint_as_float(b); }
#else
#include <math.h>
#define DEVICE static inline
#define LANE_SLOTS 16 /* each lane's values, the lanes run one after another */
#define LANE l
#define FOR_LANES for (int l = 0; l < 16; l++) {
#define END_LANES }
#define LEADER 1
DEVICE uint64_t claim(unsigned long long *counter) { return (*counter)++; }
DEVICE void tally(unsigned long long *counter, uint64_t v) { *counter += v; }
DEVICE uint32_t mul_hi(uint32_t a, uint32_t b) { return (uint32_t)(((uint64_t)a * b) >> 32); }
DEVICE float bits_float(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}
#endif

enum { PRIOR_UNIFORM = 0, PRIOR_QUANTIZED = 1 };
enum { REJECTED = 0, ACCEPTED = 1, UNCERTAIN = 2 };

/* ---- shapes (compile-time) and parameter offsets in stream order ---- */
#define PH1 ((H - 4) / 2)
#define PW1 ((W - 4) / 2)
#define PH2 ((PH1 - 4) / 2)
#define PW2 ((PW1 - 4) / 2)
#define FLAT (C2 * PH2 * PW2)
#define OFF_B1 (C1 * C0 * 25)
#define OFF_W2 (OFF_B1 + C1)
#define OFF_B2 (OFF_W2 + C2 * C1 * 25)
#define OFF_W3 (OFF_B2 + C2) /* the first dense parameter */
#define OFF_B3 (OFF_W3 + FLAT * F1)
#define OFF_W4 (OFF_B3 + F1)
#define OFF_B4 (OFF_W4 + F1 * F2)
#define OFF_W5 (OFF_B4 + F2)
#define OFF_B5 (OFF_W5 + OUT * F2)
#define TOTAL (OFF_B5 + OUT)
#define GROUPS ((TOTAL + 15) / 16)  /* stream steps: 16 parameters each */
#define G_DENSE (OFF_W3 / 16)       /* the step that draws the first dense parameter */
#define G_LAST_B3 ((OFF_W4 - 1) / 16) /* the step that completes b3: fc1's outputs are then final */
#define G_LAST_B4 ((OFF_W5 - 1) / 16)
#if F1 < 16 || F2 < 16
#error "the CUDA kernel needs F1, F2 >= 16"
#endif

/* Shared memory of one network, in floats (each region a multiple of 4 floats). */
#define PAD4(n) (((n) + 3) / 4 * 4)
#define S_W1 0                                  /* conv1 weights, [ic * 25 + tap][oc] */
#define S_B1 (S_W1 + PAD4(C1 * C0 * 25))
#define S_W2 (S_B1 + PAD4(C1))                  /* conv2 weights, [ic * 25 + tap][oc] */
#define S_B2 (S_W2 + PAD4(C2 * C1 * 25))
#define S_A1 (S_B2 + PAD4(C2))                  /* pooled conv1 output, c1 x ph1 x pw1 */
#define S_A2 (S_A1 + PAD4(C1 * PH1 * PW1))      /* pooled conv2 output, flattened */
#define S_Z3 (S_A2 + PAD4(FLAT))                /* fc1 sums, then relu(sum + b3) */
#define S_B3 (S_Z3 + PAD4(F1))
#define S_Z4 (S_B3 + PAD4(F1))
#define S_B4 (S_Z4 + PAD4(F2))
#define S_B5 (S_B4 + PAD4(F2))
#define S_PART (S_B5 + 4)                       /* the head's per-lane partial sums, 16 x 4 */
#define S_CTRL (S_PART + 64)                    /* [0] claimed stream (as 2 words), [2] biased flag */
#define NET_FLOATS (S_CTRL + 4)

typedef struct {
    int kind;
    float a;
    const float *levels;
    uint32_t q, threshold; /* threshold = 2^32 mod q (Lemire) */
} prior_t;

typedef struct {
    uint32_t s0, s1, s2, s3;
} lane_rng;

DEVICE uint64_t splitmix_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Lane l of stream (key, id): the CPU kernel seeds lane l from splitmix64 outputs 2l + 1 and 2l + 2. */
DEVICE void lane_seed(lane_rng *r, uint64_t key, int64_t id, int l) {
    const uint64_t seed = key ^ ((uint64_t)id * 0xD1342543DE82EF95ull);
    const uint64_t a = splitmix_mix(seed + (uint64_t)(2 * l + 1) * 0x9E3779B97F4A7C15ull);
    const uint64_t b = splitmix_mix(seed + (uint64_t)(2 * l + 2) * 0x9E3779B97F4A7C15ull);
    r->s0 = (uint32_t)a, r->s1 = (uint32_t)(a >> 32), r->s2 = (uint32_t)b, r->s3 = (uint32_t)(b >> 32) | 1u;
}

DEVICE uint32_t lane_next(lane_rng *r) {
    const uint32_t out = r->s0 + r->s3, t = r->s1 << 9;
    r->s2 ^= r->s0;
    r->s3 ^= r->s1;
    r->s1 ^= r->s2;
    r->s0 ^= r->s3;
    r->s2 ^= t;
    r->s3 = (r->s3 << 11) | (r->s3 >> 21);
    return out;
}

/* One parameter from one 32-bit output, the CPU kernel's value. Uniform: a (2 (r >> 8) + 1 - 2^24)
 * 2^-24, formed without an int-to-float conversion (a quarter-rate instruction): x = 1 + (r >> 9)
 * 2^-23 from the bits, then 2x - 3 + (2 bit8 + 1) 2^-24, exact in float32 at every step.
 * Quantized: level (r q) >> 32, and *biased set when (r q) mod 2^32 < 2^32 mod q. */
DEVICE float draw_value(uint32_t r, const prior_t *p, uint32_t *biased) {
    if (p->kind == PRIOR_UNIFORM) {
        const float x = bits_float(0x3F800000u | (r >> 9));
        const float low = bits_float(0x33800000u + (r & 0x100u) * 0xC000u); /* 2^-24 or 3 2^-24 */
        return (fmaf(x, 2.0f, -3.0f) + low) * p->a;
    }
    *biased |= r * p->q < p->threshold;
    return p->levels[mul_hi(r, p->q)];
}

DEVICE float relu(float z) { return z > 0.0f ? z : 0.0f; }

/* Valid 5x5 convolution, 2x2 max-pool, + bias, relu, for the pooled positions of thread l; the
 * terms in the CPU kernel's order (input channel, row, column), one fused multiply-add each. */
template <int CIN, int COUT, int HIN, int WIN>
DEVICE void conv_pool(int l, const float *__restrict__ in, const float *__restrict__ wt, const float *__restrict__ bias,
                      float *__restrict__ out) {
    const int ph = (HIN - 4) / 2, pw = (WIN - 4) / 2;
    for (int p = l; p < ph * pw; p += 16) {
        const int py = p / pw, px = p % pw;
        float acc[COUT][4];
#pragma unroll
        for (int oc = 0; oc < COUT; oc++)
#pragma unroll
            for (int m = 0; m < 4; m++) acc[oc][m] = 0.0f;
#pragma unroll 1 /* unrolled further, the compiler hoists every weight load and spills */
        for (int ic = 0; ic < CIN; ic++)
#pragma unroll 1
            for (int ky = 0; ky < 5; ky++) {
                float row[2][6];
#pragma unroll
                for (int dy = 0; dy < 2; dy++)
#pragma unroll
                    for (int c = 0; c < 6; c++) row[dy][c] = in[(ic * HIN + 2 * py + dy + ky) * WIN + 2 * px + c];
#pragma unroll
                for (int kx = 0; kx < 5; kx++)
#pragma unroll
                    for (int oc = 0; oc < COUT; oc++) {
                        const float w = wt[((ic * 5 + ky) * 5 + kx) * COUT + oc];
#pragma unroll
                        for (int m = 0; m < 4; m++) acc[oc][m] = fmaf(w, row[m >> 1][(m & 1) + kx], acc[oc][m]);
                    }
            }
#pragma unroll
        for (int oc = 0; oc < COUT; oc++) {
            const float top = acc[oc][0] > acc[oc][1] ? acc[oc][0] : acc[oc][1];
            const float bottom = acc[oc][2] > acc[oc][3] ? acc[oc][2] : acc[oc][3];
            out[(oc * ph + py) * pw + px] = relu((top > bottom ? top : bottom) + bias[oc]);
        }
    }
}

/* A thread's own values across barriers (LANE_SLOTS of each: one per thread on the GPU). */
typedef struct {
    lane_rng rng[LANE_SLOTS], saved[LANE_SLOTS]; /* saved: the state after the conv parameters */
    float pending[LANE_SLOTS];                    /* dense values drawn by the last conv step */
    float value[LANE_SLOTS];
    float z0[LANE_SLOTS], z1[LANE_SLOTS], mag[LANE_SLOTS];
    uint32_t biased[LANE_SLOTS];
} lanes_t;

/* Stores conv parameter k (k < OFF_W3) at its shared place (weights [ic * 25 + tap][oc]). */
DEVICE void store_conv(float *S, int k, float v) {
    if (k < OFF_B1) S[S_W1 + (k % (C0 * 25)) * C1 + k / (C0 * 25)] = v;
    else if (k < OFF_W2) S[S_B1 + k - OFF_B1] = v;
    else if (k < OFF_B2) S[S_W2 + ((k - OFF_W2) % (C1 * 25)) * C2 + (k - OFF_W2) / (C1 * 25)] = v;
    else S[S_B2 + k - OFF_B2] = v;
}

/* Dense parameter k >= OFF_W3 with value v: a weight is multiplied into its unit's sum (the
 * head's into the thread's partial sums), a bias is stored. */
DEVICE int is_bias(int k) { return (k >= OFF_B3 && k < OFF_W4) || (k >= OFF_B4 && k < OFF_W5) || k >= OFF_B5; }

#define use_dense(S, t, k, v) use_dense_(S, t, LANE, k, v) /* with the calling thread's slot */
DEVICE void use_dense_(float *S, lanes_t *t, int lane, int k, float v) {
    if (k < OFF_B3) {
        const int i = (k - OFF_W3) / F1, j = (k - OFF_W3) % F1;
        S[S_Z3 + j] = fmaf(S[S_A2 + i], v, S[S_Z3 + j]);
    } else if (k < OFF_W4) {
        S[S_B3 + k - OFF_B3] = v;
    } else if (k < OFF_B4) {
        const int i = (k - OFF_W4) / F2, j = (k - OFF_W4) % F2;
        S[S_Z4 + j] = fmaf(S[S_Z3 + i], v, S[S_Z4 + j]);
    } else if (k < OFF_W5) {
        S[S_B4 + k - OFF_B4] = v;
    } else if (k < OFF_B5) {
        const int o = (k - OFF_W5) / F2;
        const float h = S[S_Z4 + (k - OFF_W5) % F2], term = v * h;
        if (o == 0) t->z0[lane] = fmaf(v, h, t->z0[lane]);
        else t->z1[lane] = fmaf(v, h, t->z1[lane]);
        t->mag[lane] += fabsf(term);
    } else if (k < TOTAL) {
        S[S_B5 + k - OFF_B5] = v;
    }
}

/* relu(sum + bias) in place for a dense layer's units. */
DEVICE void finish_layer(float *S, int sums, int biases, int units) {
    FOR_LANES
    for (int j = l; j < units; j += 16) S[sums + j] = relu(S[sums + j] + S[biases + j]);
    END_LANES
}

/* One forward of stream ``id``'s network (before mirroring) on example x: f (z1 - z0 for two
 * logits) and its scale; *biased is set when a quantized draw was biased. ``fresh``: draw and store
 * the conv parameters (the first forward of a stream); else reuse them and the saved stream. */
DEVICE float forward(float *S, lanes_t *t, const prior_t *prior, uint64_t key, int64_t id, const float *x, int fresh,
                     float *scale, int *biased) {
    if (fresh) {
        // 1. Draw the conv parameters (and the first dense values of the last step).
        FOR_LANES
        lane_seed(&t->rng[LANE], key, id, l);
        t->biased[LANE] = 0;
        for (int g = 0; g * 16 < OFF_W3; g++) {
            const int k = g * 16 + l;
            const float v = draw_value(lane_next(&t->rng[LANE]), prior, &t->biased[LANE]);
            if (k < OFF_W3) store_conv(S, k, v);
            else t->pending[LANE] = v;
        }
        t->saved[LANE] = t->rng[LANE];
        END_LANES
    }
    // 2. The two convolutions (pooled, relu); the dense sums start at 0.
    FOR_LANES
    conv_pool<C0, C1, H, W>(l, x, S + S_W1, S + S_B1, S + S_A1);
    t->rng[LANE] = t->saved[LANE];
    t->z0[LANE] = t->z1[LANE] = t->mag[LANE] = 0.0f;
    for (int j = l; j < F1; j += 16) S[S_Z3 + j] = 0.0f;
    for (int j = l; j < F2; j += 16) S[S_Z4 + j] = 0.0f;
    END_LANES
    FOR_LANES
    conv_pool<C1, C2, PH1, PW1>(l, S + S_A1, S + S_W2, S + S_B2, S + S_A2);
    END_LANES
    // 3. The dense layers: each step draws 16 parameters and uses each at once. The steps that
    // complete b3 and b4 first store the biases, then finish the layer, then go on.
    for (int g = G_DENSE; g < GROUPS; g++) {
        const int boundary = g == G_LAST_B3 || g == G_LAST_B4;
        FOR_LANES
        const int k = g * 16 + l;
        const float v = (g * 16 < OFF_W3) ? t->pending[LANE]
                                          : draw_value(lane_next(&t->rng[LANE]), prior, &t->biased[LANE]);
        if (k >= OFF_W3) {
            if (!boundary || is_bias(k)) use_dense(S, t, k, v);
            else t->value[LANE] = v;
        }
        END_LANES
        if (boundary) {
            if (g == G_LAST_B3) finish_layer(S, S_Z3, S_B3, F1);
            if (g == G_LAST_B4) finish_layer(S, S_Z4, S_B4, F2);
            FOR_LANES
            const int k = g * 16 + l;
            if (k >= OFF_W3 && !is_bias(k)) use_dense(S, t, k, t->value[LANE]);
            END_LANES
        }
    }
    // 4. The head: the threads' partial sums, added in lane order.
    FOR_LANES
    S[S_PART + 4 * l] = t->z0[LANE], S[S_PART + 4 * l + 1] = t->z1[LANE], S[S_PART + 4 * l + 2] = t->mag[LANE];
    if (t->biased[LANE]) S[S_CTRL + 2] = 1.0f;
    END_LANES
    float z0 = 0.0f, z1 = 0.0f, mag = 0.0f;
    for (int i = 0; i < 16; i++) z0 += S[S_PART + 4 * i], z1 += S[S_PART + 4 * i + 1], mag += S[S_PART + 4 * i + 2];
    *biased = S[S_CTRL + 2] != 0.0f;
    z0 += S[S_B5];
    if (OUT == 2) {
        z1 += S[S_B5 + 1];
        *scale = mag + fabsf(S[S_B5]) + fabsf(S[S_B5 + 1]);
        return z1 - z0;
    }
    *scale = mag + fabsf(S[S_B5]);
    return z0;
}

/* Verdicts of stream j's draw (status[0]) or mirrored pair (status[0], status[1]): examples in
 * order, stopping at the first mistake, as judge() in gc_kernel.c; returns forwards evaluated. */
DEVICE int judge_stream(float *S, lanes_t *t, const prior_t *prior, uint64_t key, int64_t j, const float *x,
                        const int8_t *y, int n, float margin, int mirror, int8_t *status) {
    int survivor = 0, sign = 1;
    for (int e = 0; e < n; e++) {
        float scale;
        int biased;
        const float f = forward(S, t, prior, key, j, x + (int64_t)e * C0 * H * W, e == 0, &scale, &biased);
        if (biased || (scale > 0.0f && fabsf(f) <= margin * scale)) { /* both members share |f| and the scale */
            if (LEADER) {
                status[survivor] = UNCERTAIN;
                if (mirror && e == 0) status[1] = UNCERTAIN;
            }
            return e + 1;
        }
        const int predicted = f > 0.0f ? 1 : (f < 0.0f ? -1 : 0);
        if (mirror && e == 0) {
            if (predicted == 0) {
                if (LEADER) status[0] = status[1] = REJECTED;
                return 1;
            }
            survivor = predicted == y[0] ? 0 : 1;
            sign = survivor ? -1 : 1;
            if (LEADER) status[1 - survivor] = REJECTED;
        } else if (sign * predicted != y[e]) {
            if (LEADER) status[survivor] = REJECTED;
            return e + 1;
        }
    }
    if (LEADER) status[survivor] = ACCEPTED;
    return n;
}

DEVICE prior_t make_prior(int kind, float a, const float *levels, int q) {
    prior_t p;
    p.kind = kind, p.a = a, p.levels = levels, p.q = (uint32_t)q;
    p.threshold = q > 0 ? (uint32_t)(0u - (uint32_t)q) % (uint32_t)q : 0u;
    return p;
}

/* One half-warp's work: claim streams first_stream + counter[0] ++ until ``streams`` are done. */
DEVICE void check_streams(float *S, const float *x, const int8_t *y, int n, const prior_t *prior, uint64_t key,
                          int64_t first_stream, int64_t streams, float margin, int mirror, int8_t *status,
                          unsigned long long *counters) {
    lanes_t t;
    uint64_t evaluated = 0;
    const int per = mirror ? 2 : 1;
    for (;;) {
        FOR_LANES
        if (l == 0) {
            const uint64_t j = claim(&counters[0]);
            S[S_CTRL] = bits_float((uint32_t)j), S[S_CTRL + 1] = bits_float((uint32_t)(j >> 32));
            S[S_CTRL + 2] = 0.0f;
        }
        END_LANES
        uint32_t low, high;
        memcpy(&low, &S[S_CTRL], 4), memcpy(&high, &S[S_CTRL + 1], 4);
        const int64_t j = (int64_t)(((uint64_t)high << 32) | low);
        FOR_LANES
        (void)l;
        END_LANES /* every thread has read the claim before the leader writes the next */
        if (j >= streams) break;
        evaluated += judge_stream(S, &t, prior, key, first_stream + j, x, y, n, margin, mirror, status + j * per);
    }
    if (LEADER) tally(&counters[1], evaluated);
}

/* Parameters of networks ids[0 .. count - 1] (stream id / 2 with mirror, the head mirrored for odd
 * ids), TOTAL floats each in stream order, as tn_draw in gc_kernel.c; biased quantized draws are
 * redrawn from the continuing stream. S: 4 floats of shared memory for this half-warp. */
DEVICE void draw_network(float *S, uint64_t key, int64_t id, int mirror, const prior_t *prior, float *out) {
    lane_rng rng[LANE_SLOTS];
    const int odd = mirror && (id & 1);
    FOR_LANES
    lane_seed(&rng[LANE], key, mirror ? id >> 1 : id, l);
    END_LANES
    for (;;) {
        FOR_LANES
        if (l == 0) S[0] = 0.0f;
        END_LANES
        FOR_LANES
        uint32_t biased = 0;
        for (int g = 0; g < GROUPS; g++) {
            const int k = g * 16 + l;
            float v = draw_value(lane_next(&rng[LANE]), prior, &biased);
            if (k >= TOTAL) continue;
            int to = k;
            if (odd && k >= OFF_W5) { /* the mirrored head: logits swapped, or a scalar head negated */
                if (OUT == 2) to = k < OFF_B5 ? OFF_W5 + ((k - OFF_W5) + F2) % (2 * F2) : OFF_B5 + 1 - (k - OFF_B5);
                else v = -v;
            }
            out[to] = v;
        }
        if (biased) S[0] = 1.0f;
        END_LANES
        if (S[0] == 0.0f) return;
    }
}

#if defined(__CUDACC__)
extern "C" __global__ void __launch_bounds__(128) tn_lenet_check(const float *x, const int8_t *y, int n, int prior_kind,
                                                                  float prior_a, const float *levels, int q, uint64_t key,
                                                                  int64_t first_stream, int64_t streams, float margin,
                                                                  int mirror, int8_t *status,
                                                                  unsigned long long *counters) {
    extern __shared__ float shared[];
    const prior_t prior = make_prior(prior_kind, prior_a, levels, q);
    check_streams(shared + (threadIdx.x / 16) * NET_FLOATS, x, y, n, &prior, key, first_stream, streams, margin, mirror,
                  status, counters);
}

extern "C" __global__ void __launch_bounds__(128) tn_lenet_draw(uint64_t key, const int64_t *ids, int64_t count,
                                                                 int prior_kind, float prior_a, const float *levels,
                                                                 int q, int mirror, float *out) {
    __shared__ float flags[8 * 4];
    const int64_t j = (int64_t)blockIdx.x * 8 + threadIdx.x / 16;
    if (j >= count) return; /* a whole half-warp leaves together */
    const prior_t prior = make_prior(prior_kind, prior_a, levels, q);
    draw_network(flags + (threadIdx.x / 16) * 4, key, ids[j], mirror, &prior, out + j * TOTAL);
}
#else
/* The emulation: one half-warp does all the work, its threads one after another. */
extern "C" int64_t tn_lenet_check(const float *x, const int8_t *y, int n, int prior_kind, float prior_a,
                                  const float *levels, int q, uint64_t key, int64_t first_stream, int64_t streams,
                                  float margin, int mirror, int8_t *status) {
    float S[NET_FLOATS];
    unsigned long long counters[2] = {0, 0};
    const prior_t prior = make_prior(prior_kind, prior_a, levels, q);
    check_streams(S, x, y, n, &prior, key, first_stream, streams, margin, mirror, status, counters);
    return (int64_t)counters[1];
}

extern "C" void tn_lenet_draw(uint64_t key, const int64_t *ids, int64_t count, int prior_kind, float prior_a,
                              const float *levels, int q, int mirror, float *out) {
    float S[4];
    const prior_t prior = make_prior(prior_kind, prior_a, levels, q);
    for (int64_t j = 0; j < count; j++) draw_network(S, key, ids[j], mirror, &prior, out + j * TOTAL);
}
#endif

/* The compiled shape, the parameters per network and the shared floats per network, for Python. */
#if defined(__CUDACC__)
extern "C" __device__ const int tn_lenet_layout[10] = {C0, H, W, C1, C2, F1, F2, OUT, TOTAL, NET_FLOATS};
#else
extern "C" const int tn_lenet_layout[10] = {C0, H, W, C1, C2, F1, F2, OUT, TOTAL, NET_FLOATS};
#endif
