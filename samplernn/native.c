/* SampleRNN incremental sampling on the CPU: the whole per-sample loop in C.
 *
 * The arithmetic is the same as samplernn/sampler.py's (which is the reference):
 * each frame tier steps once per frame, and the sample-level MLP's first layer is
 * a sum of lookup-table rows kept in `acc`. Each code is drawn from
 * softmax(logits / T) by the inverse CDF at one uniform number per sample, which
 * Python draws from the seed (the Python loop's Gumbel-max needs q numbers per
 * sample); T = 0 takes the argmax. Streams are independent: the rows of the batch
 * are split between threads that never wait for each other.
 *
 * Built by samplernn/native.py with the machine's C compiler; GCC/Clang vector
 * extensions give 8-wide float arithmetic on any target (AVX2, NEON, ...).
 */

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef int32_t i8v __attribute__((vector_size(32)));

#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, v) (*(v8u *)(p) = (v))

/* Lane-wise mask ? a : b (C has no vector ?:). */
static inline v8 v_select(i8v mask, v8 a, v8 b) { return (v8)(((i8v)a & mask) | ((i8v)b & ~mask)); }

/* Mirrored by ctypes structures in native.py: keep the field order. Matrices are
 * stored for x @ w and packed in column panels (see linear). */
typedef struct {
    int frame_size, ratio, n_in;       /* n_in: the RNN stack's input size (frame_size or d) */
    const float *w_in, *b_in;          /* [frame_size, d], [d]; NULL: the frame goes straight in */
    const float *w_up, *b_up;          /* [n_top * d, ratio * d], [ratio * d] */
    const float **w_ih, **b_ih;        /* per layer: [n_in (layer 0), d (+ n_in with skip), G * d] */
    const float **w_hh, **b_hh;
    float **state;                     /* n_state arrays [B, d]: h per layer, then c (LSTM) */
    float *cond;                       /* [B, ratio * d]: this tier's output for the tier below */
    const float *label;                /* [B, n_in]: what each stream's label adds to the stack's input; NULL: none */
} Tier;

typedef struct {
    int n_tiers, n_rnn, lstm, skip, dim, q_levels, batch, n_hidden, first_relu;
    Tier *tiers;                       /* bottom-up */
    const float *lut;                  /* [q, fs0, d]: what a code adds k + 1 steps after it */
    const float **w_hidden, **b_hidden;/* [d, d], [d] */
    const float *w_out, *b_out;        /* [d, q], [q] */
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
    i8v e = (__builtin_convertvector(n, i8v) + 127) << 23;
    return p * (v8)e;
}

static inline v8 v_sigmoid(v8 x) { return 1.0f / (1.0f + v_exp(-x)); }
static inline v8 v_tanh(v8 x) { return 2.0f / (1.0f + v_exp(-2.0f * x)) - 1.0f; }

/* ---- y = init + x @ w: rows x n_in times n_in x n_out ------------------------------- */

/* Weights come packed by native.py in panels of 16 columns, each panel [n_in][16]
 * contiguous, the last one zero-padded: a tile streams its panels front to back.
 * Every row starts from the bias (or zero where it is NULL). A tile keeps R rows x
 * NP panels of sums in registers across the whole n_in loop. */
#define TILE(R, NP)                                                                          \
    static void tile_##R##_##NP(const float *x, int ldx, const float *w, int n_in,           \
                                const float *bias, float *y, int ldy)                        \
    {                                                                                        \
        v8 acc[R][NP][2];                                                                    \
        for (int r = 0; r < R; r++)                                                          \
            for (int p = 0; p < NP; p++)                                                     \
                for (int v = 0; v < 2; v++)                                                  \
                    acc[r][p][v] = bias ? LOAD(bias + 16 * p + 8 * v) : (v8){0};            \
        for (int i = 0; i < n_in; i++)                                                       \
            for (int p = 0; p < NP; p++) {                                                   \
                const float *wi = w + ((size_t)p * n_in + i) * 16;                           \
                v8 w0 = LOAD(wi), w1 = LOAD(wi + 8);                                         \
                for (int r = 0; r < R; r++) {                                                \
                    float xi = x[r * ldx + i];                                               \
                    acc[r][p][0] += xi * w0;                                                 \
                    acc[r][p][1] += xi * w1;                                                 \
                }                                                                            \
            }                                                                                \
        for (int r = 0; r < R; r++)                                                          \
            for (int p = 0; p < NP; p++)                                                     \
                for (int v = 0; v < 2; v++) STORE(y + r * ldy + 16 * p + 8 * v, acc[r][p][v]); \
    }

TILE(6, 1) TILE(4, 1) TILE(2, 1) TILE(1, 1) TILE(1, 4)

static void linear(const float *x, int ldx, int rows, const float *w, int n_in, int n_out,
                   const float *bias, float *y, int ldy)
{
    int full = n_out / 16, p = 0;
    size_t panel = (size_t)n_in * 16;
    if (rows == 1)                              /* one row: 4 panels at a time, 8 sums in flight */
        for (; p + 4 <= full; p += 4)
            tile_1_4(x, ldx, w + p * panel, n_in, bias ? bias + 16 * p : NULL, y + 16 * p, ldy);
    for (; p < full; p++)                       /* rows 6 at a time: each panel read once */
        for (int r = 0; r < rows;) {
            int R = rows - r >= 6 ? 6 : rows - r >= 4 ? 4 : rows - r >= 2 ? 2 : 1;
            (R == 6 ? tile_6_1 : R == 4 ? tile_4_1 : R == 2 ? tile_2_1 : tile_1_1)(
                x + (size_t)r * ldx, ldx, w + p * panel, n_in, bias ? bias + 16 * p : NULL,
                y + (size_t)r * ldy + 16 * p, ldy);
            r += R;
        }
    int rest = n_out - 16 * full;
    if (rest) {                                 /* the padded last panel, through a buffer */
        float b[16] = {0}, out[16];
        if (bias) memcpy(b, bias + 16 * full, rest * sizeof(float));
        for (int r = 0; r < rows; r++) {
            tile_1_1(x + (size_t)r * ldx, ldx, w + full * panel, n_in, b, out, 16);
            memcpy(y + (size_t)r * ldy + 16 * full, out, rest * sizeof(float));
        }
    }
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
        STORE(y + i, (v8)((i8v)v & (v > 0.0f)));
    }
    for (; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

static inline float s_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* GRU: gates r, z, n (PyTorch's order); h <- n + z * (h - n). */
static void gru_update(float *h, const float *gi, const float *gh, int d)
{
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        v8 r = v_sigmoid(LOAD(gi + i) + LOAD(gh + i));
        v8 z = v_sigmoid(LOAD(gi + d + i) + LOAD(gh + d + i));
        v8 n = v_tanh(LOAD(gi + 2 * d + i) + r * LOAD(gh + 2 * d + i));
        STORE(h + i, n + z * (LOAD(h + i) - n));
    }
    for (; i < d; i++) {
        float r = s_sigmoid(gi[i] + gh[i]), z = s_sigmoid(gi[d + i] + gh[d + i]);
        float n = tanhf(gi[2 * d + i] + r * gh[2 * d + i]);
        h[i] = n + z * (h[i] - n);
    }
}

/* LSTM: g = gi + gh holds gates i, f, g, o (PyTorch's order); c <- f c + i g, h <- o tanh(c). */
static void lstm_update(float *h, float *c, const float *gi, const float *gh, int d)
{
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        v8 ig = v_sigmoid(LOAD(gi + i) + LOAD(gh + i));
        v8 fg = v_sigmoid(LOAD(gi + d + i) + LOAD(gh + d + i));
        v8 gg = v_tanh(LOAD(gi + 2 * d + i) + LOAD(gh + 2 * d + i));
        v8 og = v_sigmoid(LOAD(gi + 3 * d + i) + LOAD(gh + 3 * d + i));
        v8 cn = fg * LOAD(c + i) + ig * gg;
        STORE(c + i, cn);
        STORE(h + i, og * v_tanh(cn));
    }
    for (; i < d; i++) {
        float ig = s_sigmoid(gi[i] + gh[i]), fg = s_sigmoid(gi[d + i] + gh[d + i]);
        float gg = tanhf(gi[2 * d + i] + gh[2 * d + i]);
        float og = s_sigmoid(gi[3 * d + i] + gh[3 * d + i]);
        c[i] = fg * c[i] + ig * gg;
        h[i] = og * tanhf(c[i]);
    }
}

/* ---- one thread: rows [r0, r1) for n_steps samples ------------------------------------ */

typedef struct {
    const Net *net;
    int64_t *hist;                     /* [lookback + n_steps, B], time-major */
    int lookback, n_steps, r0, r1;
    const double *uniform;             /* [n_steps, B] in [0, 1), or NULL: greedy */
    float inv_temperature;
} Job;

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

static void tier_step(const Net *net, int k, int t, int pos, const int64_t *hist, int r0, int n,
                      float *scratch)
{
    const Tier *tier = &net->tiers[k];
    int d = net->dim, f = tier->frame_size, B = net->batch, G = net->lstm ? 4 : 3;
    int n0 = tier->n_in, n_cat = d + n0;
    float *frame = scratch, *x = frame + n * f, *gi = x + n * d, *gh = gi + n * G * d;
    float *top = gh + n * G * d, *cat = top + n * net->n_rnn * d;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < f; i++)
            frame[r * f + i] = net->frame_values[hist[(size_t)(pos - f + i) * B + r0 + r]];
    const float *x0 = frame;           /* the stack's input [n, n0] */
    if (tier->w_in) {
        linear(frame, f, n, tier->w_in, f, d, tier->b_in, x, d);
        x0 = x;
    }
    if (k + 1 < net->n_tiers) {        /* the conditioning from the tier above, for this frame */
        const Tier *above = &net->tiers[k + 1];
        int slot = (t % above->frame_size) / f;
        for (int r = 0; r < n; r++)
            add(x + r * d, above->cond + ((size_t)(r0 + r) * above->ratio + slot) * d, d);
    }
    if (tier->label)                   /* each stream's label, the same every frame */
        for (int r = 0; r < n; r++)
            add((float *)x0 + (size_t)r * n0, tier->label + (size_t)(r0 + r) * n0, n0);
    const float *in = x0;
    int ld_in = n0, n_in = n0;
    for (int l = 0; l < net->n_rnn; l++) {
        float *h = tier->state[l] + (size_t)r0 * d;
        if (l && net->skip) {          /* later layers also read the stack's input */
            for (int r = 0; r < n; r++) {
                memcpy(cat + (size_t)r * n_cat, in + (size_t)r * ld_in, d * sizeof(float));
                memcpy(cat + (size_t)r * n_cat + d, x0 + (size_t)r * n0, n0 * sizeof(float));
            }
            in = cat, ld_in = n_in = n_cat;
        }
        linear(in, ld_in, n, tier->w_ih[l], n_in, G * d, tier->b_ih[l], gi, G * d);
        linear(h, d, n, tier->w_hh[l], d, G * d, tier->b_hh[l], gh, G * d);
        for (int r = 0; r < n; r++) {
            if (net->lstm)
                lstm_update(h + r * d, tier->state[net->n_rnn + l] + (size_t)(r0 + r) * d,
                            gi + r * G * d, gh + r * G * d, d);
            else
                gru_update(h + r * d, gi + r * G * d, gh + r * G * d, d);
            if (net->skip) memcpy(top + ((size_t)r * net->n_rnn + l) * d, h + r * d, d * sizeof(float));
        }
        in = h, ld_in = n_in = d;
    }
    int n_top = net->skip ? net->n_rnn * d : d;
    if (!net->skip) top = (float *)in;
    linear(top, n_top, n, tier->w_up, n_top, tier->ratio * d, tier->b_up,
           tier->cond + (size_t)r0 * tier->ratio * d, tier->ratio * d);
}

static void *run_rows(void *arg)
{
    const Job *job = arg;
    const Net *net = job->net;
    int d = net->dim, q = net->q_levels, B = net->batch, n = job->r1 - job->r0, r0 = job->r0;
    int fs0 = net->tiers[0].frame_size, G = net->lstm ? 4 : 3, maxf = job->lookback;
    size_t tier_floats = (size_t)n * (maxf + d + 2 * G * d + net->n_rnn * d + 2 * d + maxf);
    size_t mlp_floats = (size_t)n * (2 * d + q) + q;
    float *scratch = malloc((tier_floats > mlp_floats ? tier_floats : mlp_floats) * sizeof(float));
    if (!scratch) return (void *)1;
    float *m1 = scratch, *m2 = m1 + n * d, *logits = m2 + n * d, *weights = logits + n * q;
    size_t ld_acc = (size_t)2 * fs0 * d;
    float *acc = net->acc + r0 * ld_acc;
    for (int t = 0; t < job->n_steps; t += fs0) {
        int pos = job->lookback + t;
        for (int k = net->n_tiers - 1; k >= 0; k--)
            if (t % net->tiers[k].frame_size == 0) tier_step(net, k, t, pos, job->hist, r0, n, scratch);
        float *cond = net->tiers[0].cond + (size_t)r0 * fs0 * d;
        if (net->label)                 /* the label's share of every step's conditioning */
            for (int r = 0; r < n; r++)
                for (int j = 0; j < fs0; j++)
                    add(cond + ((size_t)r * fs0 + j) * d, net->label + (size_t)(r0 + r) * d, d);
        for (int r = 0; r < n; r++) add(acc + r * ld_acc, cond + (size_t)r * fs0 * d, fs0 * d);
        for (int j = 0; j < fs0; j++) {
            float *x = acc + (size_t)j * d;
            if (net->first_relu)
                for (int r = 0; r < n; r++) relu(x + r * ld_acc, d);
            const float *in = x;
            int ld_in = (int)ld_acc;
            float *outs[2] = {m1, m2};
            for (int l = 0; l < net->n_hidden; l++) {
                float *y = outs[l % 2];
                linear(in, ld_in, n, net->w_hidden[l], d, d, net->b_hidden[l], y, d);
                relu(y, n * d);
                in = y, ld_in = d;
            }
            linear(in, ld_in, n, net->w_out, d, q, net->b_out, logits, q);
            int64_t *row = job->hist + (size_t)(pos + j) * B + r0;
            const double *u = job->uniform ? job->uniform + (size_t)(t + j) * B + r0 : NULL;
            for (int r = 0; r < n; r++) {
                const float *l = logits + (size_t)r * q;
                int code = u ? draw(l, q, job->inv_temperature, u[r], weights) : argmax(l, q);
                row[r] = code;
                add(acc + r * ld_acc + (size_t)(j + 1) * d, net->lut + (size_t)code * fs0 * d, fs0 * d);
            }
        }
        for (int r = 0; r < n; r++) {   /* the next frame's inputs move to the front */
            float *a = acc + r * ld_acc;
            memcpy(a, a + (size_t)fs0 * d, (size_t)fs0 * d * sizeof(float));
            memset(a + (size_t)fs0 * d, 0, (size_t)fs0 * d * sizeof(float));
        }
    }
    free(scratch);
    return NULL;
}

/* Generate n_steps codes per stream (a multiple of the top frame size) into
 * hist[lookback:], whose first lookback rows hold the codes before them, drawing
 * each from softmax(logits / temperature) with uniform[t, b] (NULL: argmax). The
 * tiers' states, their conditioning and acc carry over to the next call.
 * Returns 0, or -1 when memory or threads could not be had. */
int srnn_generate(const Net *net, int64_t *hist, int lookback, int n_steps, const double *uniform,
                  float temperature, int n_threads)
{
    int B = net->batch;
    if (n_threads > B) n_threads = B;
    if (n_threads < 1) n_threads = 1;
    Job jobs[64];
    pthread_t threads[64];
    if (n_threads > 64) n_threads = 64;
    for (int i = 0; i < n_threads; i++)
        jobs[i] = (Job){net, hist, lookback, n_steps, B * i / n_threads, B * (i + 1) / n_threads,
                        uniform, temperature > 0 ? 1.0f / temperature : 0.0f};
    int started = 0, failed = 0;
    for (int i = 1; i < n_threads; i++, started++)
        if (pthread_create(&threads[i], NULL, run_rows, &jobs[i])) break;
    failed |= run_rows(&jobs[0]) != NULL;
    for (int i = started + 1; i < n_threads; i++)   /* threads that could not start: run here */
        failed |= run_rows(&jobs[i]) != NULL;
    for (int i = 1; i <= started; i++) {
        void *ret;
        pthread_join(threads[i], &ret);
        failed |= ret != NULL;
    }
    return failed ? -1 : 0;
}
