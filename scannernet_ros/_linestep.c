/* ScannerNet's per-line step as one compiled call: both ConvLSTM1d layers and the 1x1 head.
 *
 * Why it exists: in numpy a line costs an im2col copy, two BLAS products and about twenty small
 * ufunc calls, each reading and writing whole gate arrays.  Here each layer's convolution runs
 * block by block (BLOCK pixels) in Winograd's F(4, 3) form (see layer_run), half the
 * multiply-adds of the direct sum; the gate sums of one hidden channel stay in vector
 * registers while the LSTM gate math uses them.  No im2col, no gate arrays, one call per line.
 * A line of THREAD_MIN_WIDTH pixels or more runs without the GIL and may be split into pixel
 * ranges over threads; a narrower one keeps the GIL, since giving it up and taking it back costs
 * more than such a line (in a process with other busy Python threads, a wait of up to the
 * interpreter's switch interval).
 *
 * Portable C (GCC/Clang vector extensions): the vector width and register blocking follow the
 * instruction set the compiler targets (AVX-512, AVX, SSE, NEON).
 *
 * The line comes in as the sensor gave it (uint8, uint16 or float32, any strides) with a gain and
 * an offset per band; standardising it is the first thing the call does.
 *
 * Layout (set up by scannernet_ros/stepper.py, checked here):
 *   buf      (bands + F1 + F2, S) rows [x; h1; h2], S = Wp + pad_columns(k), Wp = width rounded up
 *            to BLOCK; row column p + w holds pixel w (p = k / 2); everything else stays zero.
 *   c1, c2   (F, width) cell states.
 *   scratch  (max(F1, F2) + 1, Wp): new h rows before they replace the old ones, then the logits.
 *   w1, w2   transformed gate weights (F, channels, taps / 3, TERMS, 4): per hidden channel, input
 *            channel and group of three taps (zeros past k), the Winograd terms u0..u5 of its gate
 *            rows i, f, o, g; the i, f, o rows pre-halved so that sigmoid(z) = (1 + tanh(z')) / 2.
 *   b1, b2   biases (F, 4), halved likewise.
 *   head     F2 weights then the bias.
 *   out      (width,) logits, or probabilities when asked.
 * The call returns whether the new cell states and the output are all finite.
 */
#ifndef LINESTEP_CORE_ONLY   /* the core alone (no Python) is what test/linestep_harness.c builds */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#if defined(__aarch64__)
#include <arm_neon.h>
#elif defined(__SSE__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#define ISA "AVX-512"
#elif defined(__AVX2__)
#define VL 8
#define ISA "AVX2"
#elif defined(__AVX__)
#define VL 8
#define ISA "AVX"
#elif defined(__aarch64__)
#define VL 4
#define ISA "NEON"
#elif defined(__SSE__)
#define VL 4
#define ISA "SSE"
#else
#define VL 4
#define ISA "generic vectors"
#endif
/* Register blocking of the gate sums (gate_sums): RP gate rows x JP Winograd terms x NB vectors of
 * pixels per pass, RP x JP x NB accumulators (JP divides TERMS).  Each multiply-add needs one weight
 * in every lane and one vector of inputs; the blocking sets how many multiply-adds share each: with
 * 32 vector registers (AVX-512, NEON) 4 x 3 x 1, a weight per multiply-add that AVX-512 broadcasts
 * inside it; with 16 (AVX2) 4 x 1 x 3, each broadcast serving three multiply-adds (12 accumulators, 3
 * inputs, 1 weight): llvm-mca puts it at 2 multiply-adds per cycle on Zen 2/3, Haswell and
 * Skylake, where 2 x 4 x 1 gave 1.3 to 1.5 (broadcasts take the pipes the multiply-adds need on
 * Zen 2).  Any blocking gives the same sums in the same order; -DRP=.. -DJP=.. -DNB=.. (all three)
 * overrides it for experiments. */
#ifndef RP
#if defined(__AVX512F__) || defined(__aarch64__)
#define RP 4
#define JP 3
#define NB 1
#elif defined(__AVX__)
#define RP 4
#define JP 1
#define NB 3
#else
#define RP 2
#define JP 3
#define NB 1
#endif
#endif
/* Region markers for llvm-mca's static throughput model (scannernet_ros/tools/predict.py compiles
 * the kernel to assembly with LINESTEP_MCA defined); nothing at all in a normal build. */
#ifdef LINESTEP_MCA
#define MCA(mark) __asm__ volatile("# LLVM-MCA-" mark)   /* '#' starts a comment in both assemblers */
#else
#define MCA(mark) ((void)0)
#endif
/* Loops over registers of a register block, unrolled so that the block stays in registers */
#if defined(__clang__)
#define UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 16")
#else
#define UNROLL
#endif
#define TERMS 6            /* Winograd F(4, 3): six terms per group of three taps and four output pixels */
#define QUAD_PIXELS (4 * VL)    /* pixels per vector of output quads: pixels 4l + e of them in vector e */
#define BLOCK (QUAD_PIXELS * NB)     /* pixels per block: NB vectors of VL output quads */
#define TILE_MAX 512       /* input channels x tap groups a layer may have (the block's tile is on the stack) */
#define MAX_THREADS 64
#define THREAD_MIN_WIDTH 2048   /* narrower lines stay on one thread: starting one costs more */

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int vi __attribute__((vector_size(VL * sizeof(float))));

/* a in every lane (a - 0 is a for every a, -0 and NaN included, so the compiler drops it) */
static inline vf splat(float a) { return a - (vf){0}; }

static inline vf loadu(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

static inline void storeu(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* Lane lists for SHUFFLE.  A group is 4 lanes (128 bits); the block's pixels come in quads, one
 * quad of 4 consecutive pixels per group of a loaded vector. */
#if VL == 16
#define UNPACK_LOW 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29
#define UNPACK_HIGH 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31
#define GROUP_LOW_HALVES 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define GROUP_HIGH_HALVES 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define EVEN_GROUPS 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define ODD_GROUPS 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LOW_HALVES 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HIGH_HALVES 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define SHIFT_LANES 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
#elif VL == 8
#define UNPACK_LOW 0, 8, 1, 9, 4, 12, 5, 13
#define UNPACK_HIGH 2, 10, 3, 11, 6, 14, 7, 15
#define GROUP_LOW_HALVES 0, 1, 8, 9, 4, 5, 12, 13
#define GROUP_HIGH_HALVES 2, 3, 10, 11, 6, 7, 14, 15
#define LOW_HALVES 0, 1, 2, 3, 8, 9, 10, 11
#define HIGH_HALVES 4, 5, 6, 7, 12, 13, 14, 15
#define SHIFT_LANES 1, 2, 3, 4, 5, 6, 7, 8
#elif VL == 4
#define UNPACK_LOW 0, 4, 1, 5
#define UNPACK_HIGH 2, 6, 3, 7
#define GROUP_LOW_HALVES 0, 1, 4, 5
#define GROUP_HIGH_HALVES 2, 3, 6, 7
#define SHIFT_LANES 1, 2, 3, 4
#endif

/* Lanes of the concatenation [a, b]: Clang's and GCC 12's builtin, or older GCC's (the same code). */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define SHUFFLE(a, b, lanes) __builtin_shufflevector(a, b, lanes)
#endif
#endif
#ifndef SHUFFLE
#define SHUFFLE(a, b, lanes) __builtin_shuffle(a, b, (vi){lanes})
#endif

/* Keeps the compiler from merging the shuffles before and after it: merged, the two rounds of a
 * quad split became 16 two-source permutes per vector on AVX2 (each a pair of lane-crossing
 * permutes and a blend), which llvm-mca put at 10x the cycles of the split below on Zen 2. */
static inline void opaque(vf *v)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+v"(*v));
#elif defined(__aarch64__)
    __asm__("" : "+w"(*v));
#else
    (void)v;
#endif
}

/* Each group of the four vectors x transposed as a 4 x 4 matrix (row r = x[r]): unpacks inside
 * groups, no lane crossing.  Its own inverse. */
static inline void transpose_groups(vf x[4])
{
    const vf t0 = SHUFFLE(x[0], x[1], UNPACK_LOW), t1 = SHUFFLE(x[2], x[3], UNPACK_LOW);
    const vf t2 = SHUFFLE(x[0], x[1], UNPACK_HIGH), t3 = SHUFFLE(x[2], x[3], UNPACK_HIGH);
    x[0] = SHUFFLE(t0, t1, GROUP_LOW_HALVES);
    x[1] = SHUFFLE(t0, t1, GROUP_HIGH_HALVES);
    x[2] = SHUFFLE(t2, t3, GROUP_LOW_HALVES);
    x[3] = SHUFFLE(t2, t3, GROUP_HIGH_HALVES);
}

/* (a, b) -> ([a's low half, b's low half], [a's high half, b's high half]): its own inverse. */
static inline void swap_halves(vf *a, vf *b)
{
#if VL >= 8
    const vf low = SHUFFLE(*a, *b, LOW_HALVES), high = SHUFFLE(*a, *b, HIGH_HALVES);
    *a = low;
    *b = high;
#else
    (void)a, (void)b;
#endif
}

#if VL == 16
/* (a, b) -> ([a0, b0, a2, b2], [a1, b1, a3, b3]) in groups: its own inverse. */
static inline void swap_groups(vf *a, vf *b)
{
    const vf even = SHUFFLE(*a, *b, EVEN_GROUPS), odd = SHUFFLE(*a, *b, ODD_GROUPS);
    *a = even;
    *b = odd;
}
#endif

/* The second stage of quads_to_rows, its own inverse: with 4 groups a swap of groups inside each
 * pair, with 2 the middle rows exchanged, with 1 nothing. */
static inline void second_stage(vf x[4])
{
#if VL == 16
    swap_groups(&x[0], &x[1]);
    swap_groups(&x[2], &x[3]);
#elif VL == 8
    const vf t = x[1];
    x[1] = x[2];
    x[2] = t;
#else
    (void)x;
#endif
}

/* Four loaded vectors (pixel quads 0 .. VL - 1, one per group) rearranged by whole groups so that
 * x[r]'s group j holds quad 4j + r, ready for transpose_groups (a transpose of groups: halves
 * first, then groups inside halves); rows_to_quads undoes it. */
static inline void quads_to_rows(vf x[4])
{
    swap_halves(&x[0], &x[2]);
    swap_halves(&x[1], &x[3]);
    second_stage(x);
}

static inline void rows_to_quads(vf x[4])
{
    second_stage(x);
    swap_halves(&x[0], &x[2]);
    swap_halves(&x[1], &x[3]);
}

/* Pixels 4l + e of the 4 VL floats at p as four vectors q[e] (whole-group moves, then a transpose
 * inside groups), and back: the layout of an F(4, 3) block's output quads. */
static inline void load_split4(const float *p, vf q[4])
{
    for (int i = 0; i < 4; i++)
        q[i] = loadu(p + i * VL);
    quads_to_rows(q);
    for (int i = 0; i < 4; i++)
        opaque(&q[i]);
    transpose_groups(q);
}

static inline void store_merged4(float *p, const vf q[4])
{
    vf x[4] = {q[0], q[1], q[2], q[3]};
    transpose_groups(x);
    for (int i = 0; i < 4; i++)
        opaque(&x[i]);
    rows_to_quads(x);
    for (int i = 0; i < 4; i++)
        storeu(p + i * VL, x[i]);
}

/* v's lanes moved down by one and x into the last: from the pixels 4l + e of a split, 4l + 4 + e. */
static inline vf shift_in(vf v, float x) { return SHUFFLE(v, splat(x), SHIFT_LANES); }

/* a where mask, else b (mask lanes are all ones or all zeros) */
static inline vf select_(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

/* x limited to [-limit, limit], NaN kept: the instruction set's min and max where it has them
 * (x86 min/max return their second operand when one is NaN, NEON's return NaN), else selects. */
static inline vf clamp(vf x, float limit)
{
#if defined(__AVX512F__)
    return (vf)_mm512_max_ps(_mm512_set1_ps(-limit), _mm512_min_ps(_mm512_set1_ps(limit), (__m512)x));
#elif defined(__aarch64__)
    return (vf)vmaxq_f32(vdupq_n_f32(-limit), vminq_f32(vdupq_n_f32(limit), (float32x4_t)x));
#elif defined(__AVX__)
    return (vf)_mm256_max_ps(_mm256_set1_ps(-limit), _mm256_min_ps(_mm256_set1_ps(limit), (__m256)x));
#elif defined(__SSE__)
    return (vf)_mm_max_ps(_mm_set1_ps(-limit), _mm_min_ps(_mm_set1_ps(limit), (__m128)x));
#else
    const vf hi = splat(limit), lo = splat(-limit);
    x = select_(x > hi, hi, x);
    return select_(x < lo, lo, x);
#endif
}

/* tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= 9 (tanh(9) = 1 - 3e-8), P and Q of degree 4, Q(0) = 1:
 * a least-squares fit of x P - tanh(x) Q, reweighted towards equal ripple.  In float32 the
 * absolute error stays below 4e-7 over the whole line, the relative error below 3e-7 near 0
 * (against double-precision tanh); it costs 13 vector operations and one division, against ~25
 * for tanh through expm1, and the division can be shared: tanh_ratio returns n and d = Q, in
 * [1, 420], and the LSTM update divides once for several ratios (cell_update).  The steps'
 * agreement with torch (test_streaming, test_linestep) bounds what it does to the state.  NaN
 * stays NaN (the clamp keeps it), which is how a poisoned state is noticed. */
typedef struct { vf n, d; } ratio;   /* n / d */

static inline ratio tanh_ratio(vf x)
{
    x = clamp(x, 9.0f);
    vf s = x * x;
    vf p = splat(1.3183354247706522e-08f);
    p = p * s + splat(2.04712893457333e-05f);
    p = p * s + splat(0.003486554130203991f);
    p = p * s + splat(0.1337317643989956f);
    p = p * s + splat(0.9999999068123455f);
    vf q = splat(7.702330712577073e-07f);
    q = q * s + splat(0.00032713361101574116f);
    q = q * s + splat(0.025841879914100505f);
    q = q * s + splat(0.46706473438506024f);
    q = q * s + splat(1.0f);
    return (ratio){x * p, q};
}

static inline vf v_tanh(vf x)
{
    ratio t = tanh_ratio(x);
    return t.n / t.d;
}

static inline vf v_sigmoid_halved(vf z) { return splat(0.5f) + splat(0.5f) * v_tanh(z); }

/* The first m (0 to QUAD_PIXELS) of a vector's pixels at p, split as load_split4 does (the others read as 0). */
static inline void load_split4_part(const float *p, int m, vf q[4])
{
    if (m == QUAD_PIXELS) {
        load_split4(p, q);
        return;
    }
    float tmp[QUAD_PIXELS] = {0};
    memcpy(tmp, p, (size_t)m * sizeof(float));
    load_split4(tmp, q);
}

static inline void store_merged4_part(float *p, int m, const vf q[4])
{
    if (m == QUAD_PIXELS) {
        store_merged4(p, q);
        return;
    }
    float tmp[QUAD_PIXELS];
    store_merged4(tmp, q);
    memcpy(p, tmp, (size_t)m * sizeof(float));
}

static inline void store_part(float *p, vf v, int m)
{
    if (m == VL) {
        storeu(p, v);
        return;
    }
    float tmp[VL];
    storeu(tmp, v);
    memcpy(p, tmp, (size_t)m * sizeof(float));
}

/* Lanes of v that are NaN or infinite (x - x is 0 only for finite x). */
static inline vi nonfinite(vf v) { return (vi)((v - v) != splat(0.0f)); }

/* Whether no lane of an accumulated nonfinite() mask is set. */
static inline int none_set(vi bad)
{
    for (int l = 0; l < VL; l++)
        if (bad[l])
            return 0;
    return 1;
}

/* One ConvLSTM1d layer over the pixels [begin, end) (whole blocks).  src: first input row,
 * column 0 = pixel -p.  Writes h into hout (stride wp, whole blocks); updates c (stride width,
 * valid pixels only).  With head != NULL also writes head . h + bias to logits (stride wp).  Sets finite
 * to whether every new c is finite (h is bounded by |tanh| when c is), so the caller needs no
 * second pass over the state.  Pixel ranges share nothing but their inputs: threads may take
 * one each.
 *
 * The convolution is Winograd's F(4, 3), nested over groups of three taps: for four output pixels
 * y0..y3 and three taps g over the inputs d0..d5, six terms m = (G g) * (B d) (G in stepper.py),
 *     B d = (0.5 (d0 + d4) - d2 + 0.75 (d3 - d1),  5 d2 - 2 (d1 + d4) - d3,  d2 + 5 d3 - 2 (d1 - d4),
 *            d1 - d3 + 0.5 (d2 - d4),  d4 - d2 + 0.5 (d1 - d3),  0.5 (d1 + d5) - d3 + 0.75 (d4 - d2)),
 *     y0 = m0 + m1 + m2 + m3 + m4,       y1 = m2 - m1 + m3 / 2 - 2 m4,
 *     y2 = m2 + m1 + m3 / 4 + 4 m4,      y3 = m2 - m1 + m3 / 8 - 8 m4 + m5:
 * six multiply-adds where the direct sum takes twelve (F(2, 3) takes eight).  The interpolation
 * points are 0, -1, 1, 1/2, -2 and infinity, and B's rows are scaled to be exact in binary: in
 * float32 this order of points rounds about a third less than the usual 0, 1, -1, 2, -2 (a
 * simulated 36-term gate sum: 5e-6 against 7e-6 at the 99.9th percentile, twice F(2, 3)'s).  The
 * sums m are linear, so each is summed over every input channel and tap group first and
 * transformed to the four pixels once.  The transformed inputs of a block (its tile, TERMS
 * vectors per channel and tap group) are made once and serve every hidden channel; the
 * transformed weights come packed from stepper.py. */
typedef struct {
    const float *src, *w, *b, *head;
    float *c, *hout, *logits;
    ptrdiff_t stride, wp;
    int channels, k, hidden, width, begin, end, finite;
} Layer;

/* Groups of three taps a k-tap convolution takes (k >= 1); a padded row has 3 groups - 1 columns
 * beyond Wp, so that the last group of the last block reads zeros. */
static inline int tap_groups(int k) { return (k - 1) / 3 + 1; }

static inline int pad_columns(int k) { return 3 * tap_groups(k) - 1; }

/* The block's tile: the Winograd-transformed inputs of its NB vectors of pixel quads, for each input
 * row and tap group (the quad at w0 + 4l reads row columns w0 + 4l + 3s .. + 5), laid out in the
 * order gate_sums reads them: [term / JP][row x group][term % JP][vector]. */
static inline ptrdiff_t tile_index(int j, int t, int v, int terms)
{
    return ((ptrdiff_t)(j / JP) * terms + t) * (JP * NB) + (j % JP) * NB + v;
}

static void make_tile(const Layer *L, int w0, vf *tile)
{
    const int groups = tap_groups(L->k), terms = L->channels * groups;
    for (int ch = 0; ch < L->channels; ch++) {
        const float *row = L->src + ch * L->stride + w0;
        for (int s = 0; s < groups; s++) {
            const int t = ch * groups + s;
            MCA("BEGIN tile");
            for (int v = 0; v < NB; v++) {
                const float *q = row + 3 * s + QUAD_PIXELS * v;
                vf d[4];
                load_split4(q, d);
                const vf d4 = shift_in(d[0], q[QUAD_PIXELS]), d5 = shift_in(d[1], q[QUAD_PIXELS + 1]);
                const vf half = splat(0.5f), three_quarters = splat(0.75f), two = splat(2.0f), five = splat(5.0f);
                const vf d13 = d[1] - d[3], d42 = d4 - d[2];
                tile[tile_index(0, t, v, terms)] = half * (d[0] + d4) - d[2] - three_quarters * d13;
                tile[tile_index(1, t, v, terms)] = five * d[2] - two * (d[1] + d4) - d[3];
                tile[tile_index(2, t, v, terms)] = d[2] + five * d[3] - two * (d[1] - d4);
                tile[tile_index(3, t, v, terms)] = d13 - half * d42;
                tile[tile_index(4, t, v, terms)] = d42 + half * d13;
                tile[tile_index(5, t, v, terms)] = half * (d[1] + d5) - d[3] + three_quarters * d42;
            }
            MCA("END tile");
        }
    }
}

/* Keeps v in a register for its uses that follow.  Where AVX has no embedded broadcast, GCC folds
 * the tile load into each multiply-add, so that a term costs as many loads as multiply-adds
 * (the weights are broadcast loads too) and the loads, not the arithmetic, set the pace: 1.2x
 * slower on an AVX2 build here.  With AVX-512 the weight rides in the multiply-add and the tile
 * is loaded once anyway. */
static inline void in_register(vf *v)
{
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__AVX512F__)
    __asm__("" : "+x"(*v));
#else
    (void)v;
#endif
}

/* Gate sums (i, f, o, g; pixels 4l + e of each vector) of hidden channel n over the block's tile.
 * Each pass sums RP gate rows x JP Winograd terms x NB pixel vectors over every input row and tap
 * group, in registers.  Never inlined: inside layer_run the compiler keeps the shuffles' lane
 * indices in a register across the passes, and with 16 registers (AVX2) an accumulator then lives
 * on the stack (a store and a load per multiply-add chain: 1.1x slower there). */
static __attribute__((noinline)) void gate_sums(const Layer *L, const vf *tile, int n, vf z[4][4][NB])
{
    const int terms = L->channels * tap_groups(L->k);
    vf m[TERMS][4][NB];   /* [term][gate row][vector] */
    for (int r0 = 0; r0 < 4; r0 += RP)
        for (int j0 = 0; j0 < TERMS; j0 += JP) {
            const float *w = L->w + (ptrdiff_t)n * terms * 4 * TERMS + 4 * j0 + r0;
            const vf *in = tile + tile_index(j0, 0, 0, terms);
            vf acc[RP][JP][NB];
            UNROLL
            for (int r = 0; r < RP; r++)
                UNROLL
                for (int j = 0; j < JP; j++)
                    UNROLL
                    for (int v = 0; v < NB; v++)   /* m2 reaches all four pixels with sign + */
                        acc[r][j][v] = splat(j0 + j == 2 ? L->b[n * 4 + r0 + r] : 0.0f);
            for (int t = 0; t < terms; t++, w += 4 * TERMS, in += JP * NB) {
                MCA("BEGIN terms");
                vf x[JP][NB];
                UNROLL
                for (int j = 0; j < JP; j++)
                    UNROLL
                    for (int v = 0; v < NB; v++) {
                        x[j][v] = in[j * NB + v];
                        in_register(&x[j][v]);
                    }
                UNROLL
                for (int r = 0; r < RP; r++)
                    UNROLL
                    for (int j = 0; j < JP; j++) {
                        const vf weight = splat(w[4 * j + r]);
                        UNROLL
                        for (int v = 0; v < NB; v++)
                            acc[r][j][v] += weight * x[j][v];
                    }
                MCA("END terms");
            }
            UNROLL
            for (int r = 0; r < RP; r++)
                UNROLL
                for (int j = 0; j < JP; j++)
                    UNROLL
                    for (int v = 0; v < NB; v++)
                        m[j0 + j][r0 + r][v] = acc[r][j][v];
        }
    UNROLL
    for (int r = 0; r < 4; r++)
        UNROLL
        for (int v = 0; v < NB; v++) {
            const vf sum = m[2][r][v] + m[1][r][v], difference = m[2][r][v] - m[1][r][v];
            const vf m3 = m[3][r][v], m4 = m[4][r][v];
            z[r][0][v] = m[0][r][v] + sum + m3 + m4;
            z[r][1][v] = difference + splat(0.5f) * m3 - splat(2.0f) * m4;
            z[r][2][v] = sum + splat(0.25f) * m3 + splat(4.0f) * m4;
            z[r][3][v] = difference + splat(0.125f) * m3 - splat(8.0f) * m4 + m[5][r][v];
        }
}

/* n / d for the LSTM's denominators (1 <= d < 2e8, or NaN).  With AVX2 the reciprocal estimate
 * and one Newton step (relative error below 3e-7, against float32's 6e-8 for the division): a
 * 256-bit division holds the divider for 5 (Zen 3, Skylake) to 14 (Haswell) cycles, and the LSTM
 * update has two per vector; llvm-mca puts the update at 129 cycles with divisions and 74 with
 * this on Zen 2.  With AVX-512 (Zen 4 measured: the division was 1.1x faster) and elsewhere the
 * division.  NaN stays NaN. */
static inline vf divide(vf n, vf d)
{
#if defined(__AVX__) && !defined(__AVX512F__)
    vf r = (vf)_mm256_rcp_ps((__m256)d);
    r = r * (splat(2.0f) - d * r);
    return n * r;
#else
    return n / d;
#endif
}

/* The LSTM update c' = f c + i g with i, f = (1 + tanh(halved z)) / 2 and g = tanh(z), over one
 * common denominator: one division where the three ratios take three (the denominators are at
 * least 1 and at most ~420, so their product stays far inside float32). */
static inline vf cell_update(vf zi, vf zf, vf zg, vf c)
{
    const ratio i = tanh_ratio(zi), f = tanh_ratio(zf), g = tanh_ratio(zg);
    const vf dig = i.d * g.d;
    return divide((f.d + f.n) * dig * c + (i.d + i.n) * g.n * f.d, splat(2.0f) * f.d * dig);
}

/* h = o tanh(c) with o = (1 + tanh(halved z)) / 2: one division for the two ratios. */
static inline vf hidden_output(vf zo, vf c)
{
    const ratio o = tanh_ratio(zo), t = tanh_ratio(c);
    return divide((o.d + o.n) * t.n, splat(2.0f) * o.d * t.d);
}

/* Valid pixels of vector v of a block that holds m (0 to BLOCK). */
static inline int vector_pixels(int m, int v)
{
    const int left = m - QUAD_PIXELS * v;
    return left < 0 ? 0 : left < QUAD_PIXELS ? left : QUAD_PIXELS;
}

static void layer_run(Layer *L)
{
    const int width = L->width, end = L->end < width ? L->end : width;
    vf tile[TILE_MAX * TERMS * NB];
    vi bad = {0};
    for (int w0 = L->begin; w0 < end; w0 += BLOCK) {
        const int m = width - w0 < BLOCK ? width - w0 : BLOCK;
        make_tile(L, w0, tile);
        vf out[NB][4];
        for (int v = 0; v < NB; v++)
            for (int e = 0; e < 4; e++)
                out[v][e] = splat(0.0f);
        for (int n = 0; n < L->hidden; n++) {
            vf z[4][4][NB];
            gate_sums(L, tile, n, z);
            float *cp = L->c + (ptrdiff_t)n * width + w0;
            float *hp = L->hout + (ptrdiff_t)n * L->wp + w0;
            for (int v = 0; v < NB; v++) {
                const int mv = vector_pixels(m, v);
                vf c[4], h[4];
                load_split4_part(cp + QUAD_PIXELS * v, mv, c);
                MCA("BEGIN lstm");
                for (int e = 0; e < 4; e++) {
                    c[e] = cell_update(z[0][e][v], z[1][e][v], z[3][e][v], c[e]);
                    bad |= nonfinite(c[e]);
                    h[e] = hidden_output(z[2][e][v], c[e]);
                    if (L->head)
                        out[v][e] += splat(L->head[n]) * h[e];
                }
                MCA("END lstm");
                store_merged4_part(cp + QUAD_PIXELS * v, mv, c);
                store_merged4(hp + QUAD_PIXELS * v, h);
            }
        }
        if (L->head) {
            const vf bias = splat(L->head[L->hidden]);
            for (int v = 0; v < NB; v++) {
                for (int e = 0; e < 4; e++)
                    out[v][e] += bias;
                store_merged4(L->logits + w0 + QUAD_PIXELS * v, out[v]);
            }
        }
    }
    L->finite = none_set(bad);
}

static void *layer_thread(void *job)
{
    layer_run(job);
    return NULL;
}

/* The layer split into `threads` pixel ranges of whole blocks, the calling thread taking the first.
 * Threads are started per call: at the widths where a split pays (THREAD_MIN_WIDTH and up) a
 * layer takes hundreds of microseconds, starting one tens.  A thread that cannot be started is
 * run here instead.  Returns whether every new c is finite. */
static int layer(const Layer *proto, int threads)
{
    Layer jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    const int blocks = (proto->width + BLOCK - 1) / BLOCK;
    if (threads > blocks)
        threads = blocks;
    for (int t = 0; t < threads; t++) {
        jobs[t] = *proto;
        jobs[t].begin = (int)((long long)blocks * t / threads) * BLOCK;
        jobs[t].end = (int)((long long)blocks * (t + 1) / threads) * BLOCK;
    }
    /* The block's tile lives on the stack (up to TILE_MAX x TERMS x NB vectors, 295 kB on AVX2): ask
     * for room for it rather than trust the C library's default (128 kB on musl). */
    if (threads > 1) {
        pthread_attr_t attr;
        const int sized = pthread_attr_init(&attr) == 0;
        if (sized)
            pthread_attr_setstacksize(&attr, sizeof(vf) * TILE_MAX * TERMS * NB + ((size_t)1 << 20));
        for (int t = 1; t < threads; t++)
            started[t] = pthread_create(&tid[t], sized ? &attr : NULL, layer_thread, &jobs[t]) == 0;
        if (sized)
            pthread_attr_destroy(&attr);
    }
    layer_run(&jobs[0]);
    int finite = jobs[0].finite;
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            layer_run(&jobs[t]);
        finite &= jobs[t].finite;
    }
    return finite;
}

/* The new h rows replace the old ones in the padded buffer, valid pixels only (the padding
 * columns must stay zero). */
static void commit(float *rows, ptrdiff_t stride, const float *h, ptrdiff_t wp, int hidden, int width)
{
    for (int n = 0; n < hidden; n++)
        memcpy(rows + n * stride, h + n * wp, (size_t)width * sizeof(float));
}

/* Standardise a raw line into the x rows of buf: x = gain[b] * sample + offset[b].  kind: 'B' uint8,
 * 'H' uint16, 'f' float32 (native byte order); strides in bytes. */
static void standardise(const char *samples, char kind, ptrdiff_t band_stride, ptrdiff_t step, const float *gain,
                        const float *offset, float *rows, ptrdiff_t stride, int bands, int width)
{
    for (int b = 0; b < bands; b++) {
        const char *src = samples + b * band_stride;
        float *dst = rows + b * stride;
        const float g = gain[b], o = offset[b];
        if (kind == 'H')
            for (int w = 0; w < width; w++) {
                unsigned short v;
                memcpy(&v, src + w * step, sizeof v);
                dst[w] = g * (float)v + o;
            }
        else if (kind == 'B')
            for (int w = 0; w < width; w++)
                dst[w] = g * (float)(unsigned char)src[w * step] + o;
        else
            for (int w = 0; w < width; w++) {
                float v;
                memcpy(&v, src + w * step, sizeof v);
                dst[w] = g * v + o;
            }
    }
}

#ifndef LINESTEP_CORE_ONLY
static int load_line(Py_buffer *in, const float *gain, const float *offset, float *rows, ptrdiff_t stride,
                     int bands, int width)
{
    const char *fmt = in->format ? in->format : "B";
    if (*fmt == '@' || *fmt == '=' || (*fmt == '<' && PY_LITTLE_ENDIAN))
        fmt++;
    char kind = fmt[1] == '\0' ? fmt[0] : '?';
    if (in->ndim != 2 || in->shape[0] != bands || in->shape[1] != width
        || !((kind == 'B' && in->itemsize == 1) || (kind == 'H' && in->itemsize == 2) || (kind == 'f' && in->itemsize == 4))) {
        PyErr_Format(PyExc_ValueError, "samples: expected (%d, %d) uint8, uint16 or float32 in native byte order",
                     bands, width);
        return 0;
    }
    standardise(in->buf, kind, in->strides[0], in->strides[1], gain, offset, rows, stride, bands, width);
    return 1;
}
#endif

/* What one line's step reads and writes (see the layout at the top). */
typedef struct {
    const float *w1, *b1, *w2, *b2, *head;
    float *c1, *c2, *rows, *h, *logits, *out;
    int bands, f1, f2, k, width, probabilities;
    ptrdiff_t wp;
} Step;

/* Both layers, the head and the output of a line whose x rows are in place; returns whether the
 * new states and the output are all finite.  Touches no Python object (it may run without the GIL). */
static int run_line(const Step *s, int threads)
{
    const int bands = s->bands, f1 = s->f1, f2 = s->f2, k = s->k, p = k / 2, width = s->width;
    const ptrdiff_t wp = s->wp, stride = wp + pad_columns(k);
    float *rows = s->rows, *logits = s->logits;
    Layer one = {.src = rows, .w = s->w1, .b = s->b1, .head = NULL, .c = s->c1, .hout = s->h, .logits = NULL,
                 .stride = stride, .wp = wp, .channels = bands + f1, .k = k, .hidden = f1, .width = width};
    int finite = layer(&one, threads);
    commit(rows + bands * stride + p, stride, s->h, wp, f1, width);
    Layer two = {.src = rows + bands * stride, .w = s->w2, .b = s->b2, .head = s->head, .c = s->c2, .hout = s->h,
                 .logits = logits, .stride = stride, .wp = wp, .channels = f1 + f2, .k = k, .hidden = f2,
                 .width = width};
    finite &= layer(&two, threads);
    commit(rows + (bands + f1) * stride + p, stride, s->h, wp, f2, width);
    vi bad = {0};
    for (ptrdiff_t i = 0; i < wp; i += VL)   /* lanes past the width hold finite values from zeros */
        bad |= nonfinite(loadu(logits + i));
    finite &= none_set(bad);
    if (s->probabilities) {
        for (int w0 = 0; w0 < width; w0 += VL) {
            int m = width - w0 < VL ? width - w0 : VL;
            store_part(s->out + w0, v_sigmoid_halved(splat(0.5f) * loadu(logits + w0)), m);
        }
    } else {
        memcpy(s->out, logits, (size_t)width * sizeof(float));
    }
    return finite;
}

#ifdef LINESTEP_MCA
/* Keeps the kernel's code in an assembly-only build (its functions are static). */
int linestep_mca_entry(const Step *s) { return run_line(s, 1); }
#endif

#ifndef LINESTEP_CORE_ONLY
static int expect(Py_buffer *view, Py_ssize_t floats, const char *name)
{
    if (view->len != floats * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd float32 values, got %zd bytes", name, floats, view->len);
        return 0;
    }
    return 1;
}

static PyObject *step(PyObject *self, PyObject *args)
{
    Py_buffer buf, c1, c2, scratch, w1, b1, w2, b2, head, out, gain, offset, in = {0};
    PyObject *samples;
    int bands, f1, f2, k, width, probabilities, threads = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*w*w*w*w*y*y*y*y*y*w*iiiiip|i", &samples, &gain, &offset, &buf, &c1, &c2,
                          &scratch, &w1, &b1, &w2, &b2, &head, &out, &bands, &f1, &f2, &k, &width, &probabilities,
                          &threads))
        return NULL;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(samples, &in, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        goto done;
    if (bands < 1 || f1 < 1 || f2 < 1 || k < 1 || k % 2 == 0 || width < 1
        || ((long long)(bands > f2 ? bands : f2) + f1) * tap_groups(k) > TILE_MAX) {
        PyErr_SetString(PyExc_ValueError, "step: bad dimensions");
        goto done;
    }
    const Py_ssize_t wp = ((Py_ssize_t)width + BLOCK - 1) / BLOCK * BLOCK, stride = wp + pad_columns(k);
    const int p = k / 2, fmax = f1 > f2 ? f1 : f2, groups = tap_groups(k);
    int finite = 0;
    if (threads < 1 || threads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "step: threads must be 1 to %d, got %d", MAX_THREADS, threads);
        goto done;
    }
    if (!(expect(&buf, (bands + f1 + f2) * stride, "buf") && expect(&c1, (Py_ssize_t)f1 * width, "c1")
          && expect(&c2, (Py_ssize_t)f2 * width, "c2") && expect(&scratch, (fmax + 1) * wp, "scratch")
          && expect(&w1, (Py_ssize_t)4 * TERMS * f1 * (bands + f1) * groups, "w1") && expect(&b1, 4 * f1, "b1")
          && expect(&w2, (Py_ssize_t)4 * TERMS * f2 * (f1 + f2) * groups, "w2") && expect(&b2, 4 * f2, "b2")
          && expect(&head, f2 + 1, "head") && expect(&out, width, "out") && expect(&gain, bands, "gain")
          && expect(&offset, bands, "offset")))
        goto done;
    float *rows = buf.buf, *h = scratch.buf, *logits = h + fmax * wp;
    if (!load_line(&in, gain.buf, offset.buf, rows + p, stride, bands, width))
        goto done;
    const Step one_line = {.w1 = w1.buf, .b1 = b1.buf, .w2 = w2.buf, .b2 = b2.buf, .head = head.buf,
                           .c1 = c1.buf, .c2 = c2.buf, .rows = rows, .h = h, .logits = logits, .out = out.buf,
                           .bands = bands, .f1 = f1, .f2 = f2, .k = k, .width = width, .wp = wp,
                           .probabilities = probabilities};
    if (width >= THREAD_MIN_WIDTH) {  /* long enough for other Python threads to use the wait */
        Py_BEGIN_ALLOW_THREADS
        finite = run_line(&one_line, threads);
        Py_END_ALLOW_THREADS
    } else {                          /* releasing the GIL and taking it back would cost more */
        finite = run_line(&one_line, 1);
    }
    result = PyBool_FromLong(finite);
done:
    PyBuffer_Release(&buf); PyBuffer_Release(&c1); PyBuffer_Release(&c2); PyBuffer_Release(&scratch);
    PyBuffer_Release(&w1); PyBuffer_Release(&b1); PyBuffer_Release(&w2); PyBuffer_Release(&b2);
    PyBuffer_Release(&head); PyBuffer_Release(&out); PyBuffer_Release(&gain); PyBuffer_Release(&offset);
    if (in.obj)
        PyBuffer_Release(&in);
    return result;
}

static PyMethodDef methods[] = {
    {"step", step, METH_VARARGS,
     "step(samples, gain, offset, buf, c1, c2, scratch, w1, b1, w2, b2, head, out, bands, f1, f2, k, width,\n"
     "     probabilities, threads=1)\n"
     "One ScannerNet line: standardises samples into buf, updates h1, h2 (in buf), c1, c2; writes out.\n"
     "Returns whether the new cell states and out are all finite."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_linestep", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__linestep(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddStringConstant(m, "ISA", ISA) < 0 || PyModule_AddIntConstant(m, "BLOCK", BLOCK) < 0
              || PyModule_AddIntConstant(m, "TILE_MAX", TILE_MAX) < 0
              || PyModule_AddIntConstant(m, "LANES", VL) < 0 || PyModule_AddIntConstant(m, "MAX_THREADS", MAX_THREADS) < 0
              || PyModule_AddIntConstant(m, "THREAD_MIN_WIDTH", THREAD_MIN_WIDTH) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
#endif  /* LINESTEP_CORE_ONLY */
