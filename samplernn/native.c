/* SampleRNN incremental sampling on the CPU: the whole per-sample loop in C.
 *
 * The arithmetic is the same as samplernn/sampler/loop.py's (which is the reference):
 * each frame tier steps once per frame, and the sample-level MLP's first layer is a
 * sum of lookup-table rows kept in `acc`. Each code is drawn from softmax(logits / T)
 * by the inverse CDF at one uniform number per sample, which Python draws from the
 * seed; T = 0 takes the argmax.
 *
 * Weights are stored as float32, bfloat16 or int8 with one float32 scale per output
 * column (`Mat`); every product sums in float32. At batch 1 a paper-size model reads
 * all its weights for every sample or frame, so storage is what sets the speed.
 *
 * Threads: the streams are split between teams (one team per thread where there are
 * at least as many streams as threads); a team's threads share out the output columns
 * of every product and meet at a barrier after each layer, so one stream uses every
 * core. Each output column is summed by one thread in one order, so the codes do not
 * depend on the number of threads.
 *
 * Built by samplernn/native.py with the machine's C compiler; GCC/Clang vector
 * extensions give 8-wide float arithmetic on any target (AVX2, NEON, ...).
 */

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef int32_t m8 __attribute__((vector_size(32)));
typedef uint16_t bf16x8 __attribute__((vector_size(16), aligned(2)));
typedef int8_t i8x8 __attribute__((vector_size(8), aligned(1)));

#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, v) (*(v8u *)(p) = (v))

/* Lane-wise mask ? a : b (C has no vector ?:). */
static inline v8 v_select(m8 mask, v8 a, v8 b) { return (v8)(((m8)a & mask) | ((m8)b & ~mask)); }

enum { F32 = 0, BF16 = 1, I8 = 2 };  /* how a Mat's weights are stored */

/* Mirrored by ctypes structures in native.py: keep the field order. A matrix is stored
 * for x @ w in panels of 16 output columns, each panel [n_in][16] contiguous, the last
 * zero-padded; bias and scale are padded to whole panels. */
typedef struct {
    const void *w;                     /* [panels, n_in, 16] float, bfloat16 bits or int8; NULL: no matrix */
    const float *bias;                 /* [panels * 16] or NULL */
    const float *scale;                /* [panels * 16]: what an int8 column is multiplied by; NULL otherwise */
    int n_in, n_out, type;
} Mat;

typedef struct {
    int frame_size, ratio, n_in;       /* n_in: the RNN stack's input size (frame_size or d) */
    Mat in;                            /* [frame_size, d]; in.w NULL: the frame goes straight in */
    Mat up;                            /* [n_top * d, ratio * d] */
    const Mat *ih, *hh;                /* per layer: [n_in (layer 0), d (+ n_in with skip), G * d], [d, G * d] */
    float **state;                     /* n_state arrays [B, d]: h per layer, then c (LSTM) */
    float *cond;                       /* [B, ratio * d]: this tier's output for the tier below */
    const float *label;                /* [B, n_in]: what each stream's label adds to the stack's input; NULL: none */
} Tier;

typedef struct {
    int n_tiers, n_rnn, lstm, skip, dim, q_levels, batch, n_hidden, first_relu;
    Tier *tiers;                       /* bottom-up */
    const float *lut;                  /* [q, fs0, d]: what a code adds k + 1 steps after it */
    const Mat *hidden;                 /* [d, d] each */
    Mat out;                           /* [d, q] */
    const float *frame_values;         /* [q]: what each code is fed to the frame tiers as */
    float *acc;                        /* [B, 2 * fs0, d]: first-layer inputs of this frame and the next */
    const float *label;                /* [B, d]: what each stream's label adds to the sample level's input; NULL: none */
} Net;

/* ---- exp, sigmoid, tanh: 8 lanes at a time ------------------------------------------ */

static inline v8 v_exp(v8 x)
{
    const v8 hi = (v8){0} + 88.0f, lo = (v8){0} - 87.0f;
    x = v_select(x > hi, hi, x);
    x = v_select(x < lo, lo, x);
    v8 n = x * 1.44269504088896341f + 12582912.0f;   /* round to nearest through the magic */
    n = n - 12582912.0f;
    v8 r = x - n * 0.693359375f + n * 2.12194440e-4f;
    v8 p = 1.9875691500e-4f * r + 1.3981999507e-3f;   /* Cephes expf polynomial */
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    m8 e = (__builtin_convertvector(n, m8) + 127) << 23;
    return p * (v8)e;
}

static inline v8 v_sigmoid(v8 x) { return 1.0f / (1.0f + v_exp(-x)); }
static inline v8 v_tanh(v8 x) { return 2.0f / (1.0f + v_exp(-2.0f * x)) - 1.0f; }

/* ---- y = bias + scale * (x @ w): rows x n_in times n_in x n_out ---------------------- */

/* 8 int8 weights as floats: one sign extension and one conversion where the target has
 * them (the generic conversion of a char vector goes lane by lane on GCC 12). */
#if defined(__AVX2__)
#include <immintrin.h>
static inline v8 i8_to_v8(const int8_t *p)
{
    return (v8)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
#else
static inline v8 i8_to_v8(const int8_t *p)
{
    return __builtin_convertvector(*(const i8x8 *)p, v8);
}
#endif

/* 16 weights (one panel row) as two float vectors, by storage. */
#define WEIGHTS_f32(w, k, a, b) do { const float *p_ = (const float *)(w) + (k) * 16;           \
        a = LOAD(p_); b = LOAD(p_ + 8); } while (0)
#define WEIGHTS_bf16(w, k, a, b) do { const uint16_t *p_ = (const uint16_t *)(w) + (k) * 16;    \
        a = (v8)(__builtin_convertvector(*(const bf16x8 *)p_, m8) << 16);                       \
        b = (v8)(__builtin_convertvector(*(const bf16x8 *)(p_ + 8), m8) << 16); } while (0)
#define WEIGHTS_i8(w, k, a, b) do { const int8_t *p_ = (const int8_t *)(w) + (k) * 16;          \
        a = i8_to_v8(p_); b = i8_to_v8(p_ + 8); } while (0)
#define BYTES_f32 4
#define BYTES_bf16 2
#define BYTES_i8 1

/* A tile keeps R rows x NP panels of sums in registers across the whole n_in loop,
 * streaming its panels front to back; the scale and the bias come in at the end. */
#define TILE(T, R, NP)                                                                       \
    static void tile_##T##_##R##_##NP(const float *x, int ldx, const char *w, int n_in,      \
                                      const float *bias, const float *scale, float *y,       \
                                      int ldy)                                               \
    {                                                                                        \
        v8 acc[R][NP][2];                                                                    \
        for (int r = 0; r < R; r++)                                                          \
            for (int p = 0; p < NP; p++) acc[r][p][0] = acc[r][p][1] = (v8){0};              \
        for (int i = 0; i < n_in; i++)                                                       \
            for (int p = 0; p < NP; p++) {                                                   \
                v8 w0, w1;                                                                   \
                WEIGHTS_##T(w, (size_t)p * n_in + i, w0, w1);                                \
                for (int r = 0; r < R; r++) {                                                \
                    float xi = x[r * ldx + i];                                               \
                    acc[r][p][0] += xi * w0;                                                 \
                    acc[r][p][1] += xi * w1;                                                 \
                }                                                                            \
            }                                                                                \
        for (int r = 0; r < R; r++)                                                          \
            for (int p = 0; p < NP; p++)                                                     \
                for (int v = 0; v < 2; v++) {                                                \
                    v8 s = acc[r][p][v];                                                     \
                    if (scale) s *= LOAD(scale + 16 * p + 8 * v);                            \
                    if (bias) s += LOAD(bias + 16 * p + 8 * v);                              \
                    STORE(y + r * ldy + 16 * p + 8 * v, s);                                  \
                }                                                                            \
    }

/* One panel (`w`: [n_in][16] as stored) for `rows` rows, BIG (8 with AVX-512's 32
 * vector registers, else 6) at a time. An if chain, not a choice of function pointer:
 * from that choice GCC 12.2 (-O2 and up, -march=native) made a cmov that read the flags
 * of a later `inc`, so the 2-row tile ran on the last of an odd number of rows, one row
 * past both arrays. */
#if defined(__AVX512VL__)
#define BIG 8
#else
#define BIG 6
#endif
#define ROWS(T)                                                                              \
    static void rows_##T(const float *x, int ldx, int rows, const char *w, int n_in,         \
                         const float *bias, const float *scale, float *y, int ldy)           \
    {                                                                                        \
        for (int r = 0; r < rows;) {                                                         \
            int R = rows - r >= BIG ? BIG : rows - r >= 4 ? 4 : rows - r >= 2 ? 2 : 1;       \
            const float *xr = x + (size_t)r * ldx;                                           \
            float *yr = y + (size_t)r * ldy;                                                 \
            if (R == BIG) tile_##T##_##BIG##_1(xr, ldx, w, n_in, bias, scale, yr, ldy);      \
            else if (R == 4) tile_##T##_4_1(xr, ldx, w, n_in, bias, scale, yr, ldy);         \
            else if (R == 2) tile_##T##_2_1(xr, ldx, w, n_in, bias, scale, yr, ldy);         \
            else tile_##T##_1_1(xr, ldx, w, n_in, bias, scale, yr, ldy);                     \
            r += R;                                                                          \
        }                                                                                    \
    }

/* Output panels [p0, p1) of y = x @ m for `rows` rows: one row 4 panels at a time (8
 * sums in flight), more rows panel by panel (each panel read once). The last panel,
 * padded, goes through a buffer. */
#define LINEAR(T)                                                                            \
    TILE(T, BIG, 1) TILE(T, 4, 1) TILE(T, 2, 1) TILE(T, 1, 1) TILE(T, 1, 4) ROWS(T)          \
    static void linear_##T(const float *x, int ldx, int rows, const Mat *m, float *y,        \
                           int ldy, int p0, int p1)                                          \
    {                                                                                        \
        int n_in = m->n_in, full = m->n_out / 16, end = p1 < full ? p1 : full, p = p0;     \
        size_t step = (size_t)n_in * 16 * BYTES_##T;                                         \
        const char *w = m->w;                                                                \
        const float *b = m->bias, *s = m->scale;                                             \
        if (rows == 1)                                                                       \
            for (; p + 4 <= end; p += 4)                                                     \
                tile_##T##_1_4(x, ldx, w + p * step, n_in, b ? b + 16 * p : NULL,            \
                               s ? s + 16 * p : NULL, y + 16 * p, ldy);                      \
        for (; p < end; p++)                                                                 \
            rows_##T(x, ldx, rows, w + p * step, n_in, b ? b + 16 * p : NULL,                \
                     s ? s + 16 * p : NULL, y + 16 * p, ldy);                                \
        int rest = m->n_out - 16 * full;                                                     \
        if (rest && p1 > full) {                                                             \
            float out[16];                                                                   \
            for (int r = 0; r < rows; r++) {                                                 \
                tile_##T##_1_1(x + (size_t)r * ldx, ldx, w + full * step, n_in,             \
                               b ? b + 16 * full : NULL, s ? s + 16 * full : NULL, out, 16); \
                memcpy(y + (size_t)r * ldy + 16 * full, out, rest * sizeof(float));          \
            }                                                                                \
        }                                                                                    \
    }

LINEAR(f32) LINEAR(bf16) LINEAR(i8)

static void linear(const float *x, int ldx, int rows, const Mat *m, float *y, int ldy,
                   int p0, int p1)
{
    (m->type == I8 ? linear_i8 : m->type == BF16 ? linear_bf16 : linear_f32)(
        x, ldx, rows, m, y, ldy, p0, p1);
}

/* ---- element-wise pieces ------------------------------------------------------------ */

static void add(float *y, const float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) STORE(y + i, LOAD(y + i) + LOAD(x + i));
    for (; i < n; i++) y[i] += x[i];
}

static void relu(float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8 v = LOAD(y + i);
        STORE(y + i, (v8)((m8)v & (v > 0.0f)));
    }
    for (; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

static inline float s_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* GRU, n units whose gates lie d apart: r, z, n (PyTorch's order); h <- n + z * (h - n). */
static void gru_update(float *h, const float *gi, const float *gh, int d, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8 r = v_sigmoid(LOAD(gi + i) + LOAD(gh + i));
        v8 z = v_sigmoid(LOAD(gi + d + i) + LOAD(gh + d + i));
        v8 c = v_tanh(LOAD(gi + 2 * d + i) + r * LOAD(gh + 2 * d + i));
        STORE(h + i, c + z * (LOAD(h + i) - c));
    }
    for (; i < n; i++) {
        float r = s_sigmoid(gi[i] + gh[i]), z = s_sigmoid(gi[d + i] + gh[d + i]);
        float c = tanhf(gi[2 * d + i] + r * gh[2 * d + i]);
        h[i] = c + z * (h[i] - c);
    }
}

/* LSTM, n units: g = gi + gh holds gates i, f, g, o (PyTorch's order) d apart;
 * c <- f c + i g, h <- o tanh(c). */
static void lstm_update(float *h, float *c, const float *gi, const float *gh, int d, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8 ig = v_sigmoid(LOAD(gi + i) + LOAD(gh + i));
        v8 fg = v_sigmoid(LOAD(gi + d + i) + LOAD(gh + d + i));
        v8 gg = v_tanh(LOAD(gi + 2 * d + i) + LOAD(gh + 2 * d + i));
        v8 og = v_sigmoid(LOAD(gi + 3 * d + i) + LOAD(gh + 3 * d + i));
        v8 cn = fg * LOAD(c + i) + ig * gg;
        STORE(c + i, cn);
        STORE(h + i, og * v_tanh(cn));
    }
    for (; i < n; i++) {
        float ig = s_sigmoid(gi[i] + gh[i]), fg = s_sigmoid(gi[d + i] + gh[d + i]);
        float gg = tanhf(gi[2 * d + i] + gh[2 * d + i]);
        float og = s_sigmoid(gi[3 * d + i] + gh[3 * d + i]);
        c[i] = fg * c[i] + ig * gg;
        h[i] = og * tanhf(c[i]);
    }
}

/* ---- a team of threads -------------------------------------------------------------- */

/* Where every thread of a team waits for the others: spinning (a layer takes
 * microseconds), then yielding the core where a thread waits long (more threads than
 * free cores). What a thread wrote before it is seen by all after it. */
typedef struct {
    atomic_int arrived, phase;
    int n;
} Barrier;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void meet(Barrier *b)
{
    if (b->n == 1) return;
    int phase = atomic_load_explicit(&b->phase, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == b->n - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&b->phase, phase + 1, memory_order_release);
        return;
    }
    for (int spins = 0; atomic_load_explicit(&b->phase, memory_order_acquire) == phase; spins++)
        if (spins < 2000) cpu_relax(); else sched_yield();
}

/* A team: its streams, its barrier and the products its threads share. */
typedef struct {
    int r0, r1, size;                  /* rows [r0, r1), threads */
    Barrier barrier;
    float *x, *gi, *gh, *top, *cat;    /* a tier step's: [n, d], [n, G d] x 2, [n, n_rnn d], [n, 2 d + lookback] */
    float *m1, *m2, *logits;           /* the sample level's: [n, d] x 2, [n, q] */
} Team;

typedef struct {
    const Net *net;
    int64_t *hist;                     /* [lookback + n_steps, B], time-major */
    int lookback, n_steps;
    const double *uniform;             /* [n_steps, B] in [0, 1), or NULL: greedy */
    float inv_temperature;
    Team *team;
    int id;                            /* this thread's place in its team */
    float *local;                      /* its own: acc [n, 2 fs0, d], frame [n, lookback], weights [q] */
    atomic_int *go;                    /* 0: wait, 1: run, -1: leave without running */
} Job;

/* This thread's output panels of a product with n_out columns: the team's share, in
 * groups of 4 panels (what one row's tile takes). */
static void span(const Job *job, int n_out, int *p0, int *p1)
{
    int panels = (n_out + 15) / 16, groups = (panels + 3) / 4;
    int size = job->team->size, a = 4 * (groups * job->id / size);
    int b = 4 * (groups * (job->id + 1) / size);
    *p0 = a < panels ? a : panels;
    *p1 = b < panels ? b : panels;
}

/* The columns [c0, c1) of an n-wide element-wise step that follow this thread's panels. */
static void columns(const Job *job, int n, int *c0, int *c1)
{
    int p0, p1;
    span(job, n, &p0, &p1);
    *c0 = 16 * p0 < n ? 16 * p0 : n;
    *c1 = 16 * p1 < n ? 16 * p1 : n;
}

/* ---- one step of a frame tier, one team ----------------------------------------------- */

static void tier_step(const Job *job, int k, int t, int pos, float *frame)
{
    const Net *net = job->net;
    const Tier *tier = &net->tiers[k];
    int d = net->dim, f = tier->frame_size, B = net->batch, G = net->lstm ? 4 : 3;
    const Team *team = job->team;
    int n = team->r1 - team->r0, r0 = team->r0, n0 = tier->n_in, n_cat = d + n0, p0, p1, c0, c1;
    float *x = team->x, *gi = team->gi, *gh = team->gh, *top = team->top, *cat = team->cat;
    for (int r = 0; r < n; r++)        /* every thread its own copy of the frame */
        for (int i = 0; i < f; i++)
            frame[r * f + i] = net->frame_values[__atomic_load_n(
                &job->hist[(size_t)(pos - f + i) * B + r0 + r], __ATOMIC_RELAXED)];
    const float *x0 = frame;           /* the stack's input [n, n0] */
    if (tier->in.w) {
        span(job, d, &p0, &p1);
        columns(job, d, &c0, &c1);
        linear(frame, f, n, &tier->in, x, d, p0, p1);
        if (k + 1 < net->n_tiers) {    /* the conditioning from the tier above, for this frame */
            const Tier *above = &net->tiers[k + 1];
            int slot = (t % above->frame_size) / f;
            for (int r = 0; r < n; r++)
                add(x + r * d + c0, above->cond + ((size_t)(r0 + r) * above->ratio + slot) * d + c0,
                    c1 - c0);
        }
        if (tier->label)               /* each stream's label, the same every frame */
            for (int r = 0; r < n; r++)
                add(x + r * d + c0, tier->label + (size_t)(r0 + r) * n0 + c0, c1 - c0);
        x0 = x;
        meet(&job->team->barrier);
    } else if (tier->label) {
        for (int r = 0; r < n; r++) add(frame + r * n0, tier->label + (size_t)(r0 + r) * n0, n0);
    }
    const float *in = x0;
    int ld_in = n0, n_in = n0;
    columns(job, d, &c0, &c1);
    for (int l = 0; l < net->n_rnn; l++) {
        float *h = tier->state[l] + (size_t)r0 * d;
        if (l && net->skip) {          /* later layers also read the stack's input */
            if (job->id == 0)
                for (int r = 0; r < n; r++) {
                    memcpy(cat + (size_t)r * n_cat, in + (size_t)r * ld_in, d * sizeof(float));
                    memcpy(cat + (size_t)r * n_cat + d, x0 + (size_t)r * n0, n0 * sizeof(float));
                }
            meet(&job->team->barrier);
            in = cat, ld_in = n_in = n_cat;
        }
        span(job, G * d, &p0, &p1);
        linear(in, ld_in, n, &tier->ih[l], gi, G * d, p0, p1);
        linear(h, d, n, &tier->hh[l], gh, G * d, p0, p1);
        meet(&job->team->barrier);
        for (int r = 0; r < n; r++) {  /* this thread's units */
            if (net->lstm)
                lstm_update(h + r * d + c0, tier->state[net->n_rnn + l] + (size_t)(r0 + r) * d + c0,
                            gi + r * G * d + c0, gh + r * G * d + c0, d, c1 - c0);
            else
                gru_update(h + r * d + c0, gi + r * G * d + c0, gh + r * G * d + c0, d, c1 - c0);
            if (net->skip)
                memcpy(top + ((size_t)r * net->n_rnn + l) * d + c0, h + r * d + c0,
                       (c1 - c0) * sizeof(float));
        }
        meet(&job->team->barrier);
        in = h, ld_in = n_in = d;
    }
    int n_top = net->skip ? net->n_rnn * d : d;
    if (!net->skip) top = (float *)in;
    span(job, tier->ratio * d, &p0, &p1);
    linear(top, n_top, n, &tier->up, tier->cond + (size_t)r0 * tier->ratio * d, tier->ratio * d,
           p0, p1);
    meet(&job->team->barrier);
}

/* ---- one thread of a team: its rows [r0, r1) for n_steps samples ---------------------- */

/* A draw from softmax(logits / T) by the inverse CDF: the first code whose cumulative
 * weight passes u times the total. p is scratch for q weights. */
static int draw(const float *logits, int q, float inv_t, double u, float *p)
{
    float top = logits[0];
    for (int c = 1; c < q; c++) top = logits[c] > top ? logits[c] : top;
    v8 sums = {0};
    int c = 0;
    for (; c + 8 <= q; c += 8) {
        v8 e = v_exp((LOAD(logits + c) - top) * inv_t);
        STORE(p + c, e);
        sums += e;
    }
    double total = 0;
    for (int v = 0; v < 8; v++) total += sums[v];
    for (; c < q; c++) total += p[c] = expf((logits[c] - top) * inv_t);
    double target = u * total, cum = 0;
    for (c = 0; c < q; c++)
        if ((cum += p[c]) > target) return c;
    for (c = q - 1; c > 0 && p[c] == 0; c--) {}  /* rounding left u past the end */
    return c;
}

static int argmax(const float *logits, int q)
{
    int best = 0;
    for (int c = 1; c < q; c++)
        if (logits[c] > logits[best]) best = c;
    return best;
}

static void *run_rows(void *arg)
{
    const Job *job = arg;
    int go;
    while ((go = atomic_load_explicit(job->go, memory_order_acquire)) == 0) sched_yield();
    if (go < 0) return NULL;
    const Net *net = job->net;
    const Team *team = job->team;
    int d = net->dim, q = net->q_levels, B = net->batch, n = team->r1 - team->r0, r0 = team->r0;
    int fs0 = net->tiers[0].frame_size, p0, p1;
    size_t ld_acc = (size_t)2 * fs0 * d;
    /* every thread keeps its own acc (adding every code's lookup rows), so the next
     * sample's first layer waits for no one */
    float *acc = job->local, *frame = acc + n * ld_acc, *weights = frame + (size_t)n * job->lookback;
    float *m1 = team->m1, *m2 = team->m2, *logits = team->logits;
    memcpy(acc, net->acc + (size_t)r0 * ld_acc, (size_t)n * ld_acc * sizeof(float));
    for (int t = 0; t < job->n_steps; t += fs0) {
        int pos = job->lookback + t;
        for (int k = net->n_tiers - 1; k >= 0; k--)
            if (t % net->tiers[k].frame_size == 0) tier_step(job, k, t, pos, frame);
        const float *cond = net->tiers[0].cond + (size_t)r0 * fs0 * d;
        for (int r = 0; r < n; r++) {
            add(acc + r * ld_acc, cond + (size_t)r * fs0 * d, fs0 * d);
            if (net->label)            /* the label's share of every step's conditioning */
                for (int j = 0; j < fs0; j++)
                    add(acc + r * ld_acc + (size_t)j * d, net->label + (size_t)(r0 + r) * d, d);
        }
        for (int j = 0; j < fs0; j++) {
            float *x = acc + (size_t)j * d;
            if (net->first_relu)
                for (int r = 0; r < n; r++) relu(x + r * ld_acc, d);
            const float *in = x;
            int ld_in = (int)ld_acc, c0, c1;
            float *outs[2] = {m1, m2};
            span(job, d, &p0, &p1);
            columns(job, d, &c0, &c1);
            for (int l = 0; l < net->n_hidden; l++) {
                float *y = outs[l % 2];
                linear(in, ld_in, n, &net->hidden[l], y, d, p0, p1);
                for (int r = 0; r < n; r++) relu(y + r * d + c0, c1 - c0);
                meet(&job->team->barrier);
                in = y, ld_in = d;
            }
            span(job, q, &p0, &p1);
            linear(in, ld_in, n, &net->out, logits, q, p0, p1);
            meet(&job->team->barrier);
            int64_t *row = job->hist + (size_t)(pos + j) * B + r0;
            const double *u = job->uniform ? job->uniform + (size_t)(t + j) * B + r0 : NULL;
            for (int r = 0; r < n; r++) {  /* every thread draws the same code */
                const float *l = logits + (size_t)r * q;
                int code = u ? draw(l, q, job->inv_temperature, u[r], weights) : argmax(l, q);
                __atomic_store_n(&row[r], code, __ATOMIC_RELAXED);
                add(acc + r * ld_acc + (size_t)(j + 1) * d, net->lut + (size_t)code * fs0 * d, fs0 * d);
            }
            if (net->n_hidden == 0) meet(&job->team->barrier);  /* logits are read before rewritten */
        }
        for (int r = 0; r < n; r++) {   /* the next frame's inputs move to the front */
            float *a = acc + r * ld_acc;
            memcpy(a, a + (size_t)fs0 * d, (size_t)fs0 * d * sizeof(float));
            memset(a + (size_t)fs0 * d, 0, (size_t)fs0 * d * sizeof(float));
        }
    }
    if (job->id == 0) memcpy(net->acc + (size_t)r0 * ld_acc, acc, (size_t)n * ld_acc * sizeof(float));
    return NULL;
}

/* Generate n_steps codes per stream (a multiple of the top frame size) into
 * hist[lookback:], whose first lookback rows hold the codes before them, drawing
 * each from softmax(logits / temperature) with uniform[t, b] (NULL: argmax). The
 * tiers' states, their conditioning and acc carry over to the next call.
 * Returns 0, or -1 when memory could not be had. Threads that cannot be started
 * leave the work to one thread. */
int srnn_generate(const Net *net, int64_t *hist, int lookback, int n_steps, const double *uniform,
                  float temperature, int n_threads)
{
    enum { MAX = 64 };
    int B = net->batch, d = net->dim, q = net->q_levels, G = net->lstm ? 4 : 3;
    int fs0 = net->tiers[0].frame_size;
    n_threads = n_threads < 1 ? 1 : n_threads > MAX ? MAX : n_threads;
    /* as few teams as the products' columns allow: a team's threads need 4 panels each */
    int most = d / 64 > 1 ? d / 64 : 1, n_teams = (n_threads + most - 1) / most;
    n_teams = n_teams < B ? n_teams : B;
    Team teams[MAX];
    Job jobs[MAX];
    pthread_t threads[MAX];
    float *memory[2 * MAX] = {0};
    int n_memory = 0, failed = 0;
    atomic_int go;
    atomic_init(&go, 0);
    for (int g = 0; g < n_teams; g++) {
        Team *team = &teams[g];
        int first = n_threads * g / n_teams, last = n_threads * (g + 1) / n_teams;
        team->r0 = B * g / n_teams, team->r1 = B * (g + 1) / n_teams, team->size = last - first;
        size_t n = team->r1 - team->r0;
        atomic_init(&team->barrier.arrived, 0);
        atomic_init(&team->barrier.phase, 0);
        team->barrier.n = team->size;
        float *s = memory[n_memory++] = malloc(
            n * (d + 2 * G * d + net->n_rnn * d + 2 * d + lookback + 2 * d + q) * sizeof(float));
        failed |= !s;
        if (s) {
            team->x = s, team->gi = s + n * d, team->gh = team->gi + n * G * d;
            team->top = team->gh + n * G * d, team->cat = team->top + n * net->n_rnn * d;
            team->m1 = team->cat + n * (2 * d + lookback), team->m2 = team->m1 + n * d;
            team->logits = team->m2 + n * d;
        }
        for (int i = first; i < last; i++) {
            float *local = memory[n_memory++] = malloc(
                (n * 2 * fs0 * d + n * lookback + q) * sizeof(float));
            failed |= !local;
            jobs[i] = (Job){net, hist, lookback, n_steps, uniform,
                            temperature > 0 ? 1.0f / temperature : 0.0f, team, i - first,
                            local, &go};
        }
    }
    int started = 0;
    if (!failed)
        for (int i = 1; i < n_threads; i++, started++)
            if (pthread_create(&threads[i], NULL, run_rows, &jobs[i])) break;
    int all = !failed && started == n_threads - 1;
    atomic_store_explicit(&go, all ? 1 : -1, memory_order_release);
    if (all) run_rows(&jobs[0]);
    for (int i = 1; i <= started; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < n_memory; i++) free(memory[i]);
    if (failed) return -1;
    if (!all) return srnn_generate(net, hist, lookback, n_steps, uniform, temperature, 1);
    return 0;
}
