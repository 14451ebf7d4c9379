"""C source of the CPU selective scan, built once per machine by `kernels.selective_scan.cpu`.

Forward and backward fuse everything: softplus(delta + bias), the scan, the D skip and the SiLU(z)
gate (PyTorch's separate element-wise passes over (batch, D, L) cost as much as the scan itself).

One OpenMP task per (batch, group, block of VB channels); inside a task the scan runs in order
over L with the state h[N][VB] in L1, and the innermost loop runs over the VB channels so that gcc
vectorises exp through glibc's vector math (libmvec). The backward takes the state at the start of
every K-step chunk from the forward, recomputes the K states of a chunk, then walks the chunk
backwards: memory is O(batch * D * L) plus per-task scratch, never (batch, D, L, N).

Layouts (contiguous): u, delta, z, y, gout, du, ddelta, dz (batch, D, L); bias, Dsk (D,);
A (D, N); Bm, Cm (batch, G, L, N); ckpt (batch, D, ceil(L / K) + 1, N). Partial sums, one per
task: dA (batch, D, N); dD, dbias (batch, D); per thread: dBm, dCm (threads, batch, G, L, N).
The Python side includes the source twice, with REAL/EXP/LOG1P/FN set for float, then double.
"""

SOURCE = r"""
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef VB
#define VB 16
#define K 64
#endif

/* Task geometry shared by forward and backward. */
#define TASK_SETUP                                                                    \
    const int64_t b = task / (G * nblk), g = (task / nblk) % G, blk = task % nblk;    \
    const int64_t d0 = g * Dg + blk * VB;                                             \
    const int nv = (int)((Dg - blk * VB) < VB ? (Dg - blk * VB) : VB);                \
    const int64_t base = (b * D + d0) * L;                                            \
    const REAL* Bg = Bm + (b * G + g) * L * N;                                        \
    const REAL* Cg = Cm + (b * G + g) * L * N;

static inline void FN(load_A)(const REAL* A, int64_t d0, int64_t N, int nv, REAL (*a)[VB]) {
    for (int64_t n = 0; n < N; n++)
        for (int v = 0; v < VB; v++) a[n][v] = v < nv ? A[(d0 + v) * N + n] : 0;
}

/* h <- exp(dt A) h + dt u B for one step; stores the decays and new states when asked. */
static inline void FN(step)(REAL (*h)[VB], REAL (*a)[VB], const REAL* dtv, const REAL* uv,
                            const REAL* Bs, int64_t N, REAL (*das)[VB], REAL (*hs)[VB]) {
    REAL du[VB];
    for (int v = 0; v < VB; v++) du[v] = dtv[v] * uv[v];
    for (int64_t n = 0; n < N; n++) {
        const REAL bn = Bs[n];
        #pragma omp simd
        for (int v = 0; v < VB; v++) {
            const REAL e = EXP(dtv[v] * a[n][v]);
            h[n][v] = e * h[n][v] + du[v] * bn;
            if (das) { das[n][v] = e; hs[n][v] = h[n][v]; }
        }
    }
}

typedef REAL FN(vec) __attribute__((vector_size(VB * sizeof(REAL))));
typedef IREAL FN(ivec) __attribute__((vector_size(VB * sizeof(REAL))));

#if VB == 16
/* Shuffle masks for 16-lane pairs (a, b): in every block of 2W lanes, LO_W takes the first W
   lanes of a then of b, HI_W the last W lanes of a then of b. */
#define FN_MASKS                                                                           \
    const FN(ivec) lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},          \
                   hi8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},    \
                   lo4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},        \
                   hi4 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},      \
                   lo2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},        \
                   hi2 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},      \
                   lo1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},       \
                   hi1 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31};

/* In-place 16 x 16 transpose (x[r][c] <- x[c][r]): swap 8 x 8 blocks, then 4 x 4 inside, ... */
static inline void FN(transpose16)(FN(vec)* x) {
    FN_MASKS
#define SWAP_BLOCKS(W, LO, HI)                                                             \
    for (int r = 0; r < 16; r++)                                                          \
        if (!(r & W)) {                                                                   \
            const FN(vec) p = x[r], q = x[r + W];                                         \
            x[r] = __builtin_shuffle(p, q, LO);                                           \
            x[r + W] = __builtin_shuffle(p, q, HI);                                       \
        }
    SWAP_BLOCKS(8, lo8, hi8)
    SWAP_BLOCKS(4, lo4, hi4)
    SWAP_BLOCKS(2, lo2, hi2)
    SWAP_BLOCKS(1, lo1, hi1)
#undef SWAP_BLOCKS
}

static inline FN(vec) FN(reversed)(FN(vec) x) {
    const FN(ivec) rev = {15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    return __builtin_shuffle(x, rev);
}
#endif

/* dst[j] += sum_v p[j][v] for j < nn. With nn == VB == 16: a transpose-add (15 vector adds for
   the 16 sums instead of 16 horizontal reductions); rows enter in bit-reversed order so that lane
   j of the result is row j. */
static inline void FN(lane_sums)(REAL (*p)[VB], int nn, REAL* dst) {
#if VB == 16
    if (nn == 16) {
        static const int rev[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
        FN(vec) x[16], r;
        FN_MASKS
        for (int j = 0; j < 16; j++) memcpy(&x[j], p[rev[j]], sizeof(x[j]));
#define HALVES(W, LO, HI)                                                                  \
        for (int j = 0; j < W; j++)                                                       \
            x[j] = __builtin_shuffle(x[2 * j], x[2 * j + 1], LO) +                        \
                   __builtin_shuffle(x[2 * j], x[2 * j + 1], HI);
        HALVES(8, lo8, hi8)
        HALVES(4, lo4, hi4)
        HALVES(2, lo2, hi2)
        HALVES(1, lo1, hi1)
#undef HALVES
        memcpy(&r, dst, sizeof(r));
        r += x[0];
        memcpy(dst, &r, sizeof(r));
        return;
    }
#endif
    for (int j = 0; j < nn; j++) {
        REAL acc = 0;
        #pragma omp simd reduction(+ : acc)
        for (int v = 0; v < VB; v++) acc += p[j][v];
        dst[j] += acc;
    }
}

/* Tiles of K steps x VB channels, so the (batch, D, L) rows are read and written contiguously
   (per-step strided access to 16 rows costs more than the scan when N is small). */
#define T_OF(i) (reverse ? L - 1 - (s0 + (i)) : s0 + (i))

static inline void FN(tile_in)(const REAL* src, int64_t base, int64_t L, int nv, int64_t s0,
                               int64_t len, int reverse, REAL (*tile)[VB]) {
    for (int64_t i = 0; i < K; i++)
        for (int v = 0; v < VB; v++) tile[i][v] = 0;
    if (!src) return;
#if VB == 16 && K % 16 == 0
    if (nv == 16 && len == K) {  /* full tile: 16 x 16 blocks transposed in registers */
        for (int64_t k = 0; k < K; k += 16) {
            FN(vec) x[16];
            const int64_t t0 = reverse ? L - s0 - k - 16 : s0 + k;
            for (int v = 0; v < 16; v++) {
                memcpy(&x[v], src + base + v * L + t0, sizeof(x[v]));
                if (reverse) x[v] = FN(reversed)(x[v]);
            }
            FN(transpose16)(x);
            for (int r = 0; r < 16; r++) memcpy(tile[k + r], &x[r], sizeof(x[r]));
        }
        return;
    }
#endif
    for (int v = 0; v < nv; v++)
        for (int64_t i = 0; i < len; i++) tile[i][v] = src[base + v * L + T_OF(i)];
}

static inline void FN(tile_out)(REAL* dst, int64_t base, int64_t L, int nv, int64_t s0,
                                int64_t len, int reverse, REAL (*tile)[VB]) {
    if (!dst) return;
#if VB == 16 && K % 16 == 0
    if (nv == 16 && len == K) {
        for (int64_t k = 0; k < K; k += 16) {
            FN(vec) x[16];
            const int64_t t0 = reverse ? L - s0 - k - 16 : s0 + k;
            for (int r = 0; r < 16; r++) memcpy(&x[r], tile[k + r], sizeof(x[r]));
            FN(transpose16)(x);
            for (int v = 0; v < 16; v++) {
                if (reverse) x[v] = FN(reversed)(x[v]);
                memcpy(dst + base + v * L + t0, &x[v], sizeof(x[v]));
            }
        }
        return;
    }
#endif
    for (int v = 0; v < nv; v++)
        for (int64_t i = 0; i < len; i++) dst[base + v * L + T_OF(i)] = tile[i][v];
}

/* Prefetch the rows of chunk c (the next one a task will read or write: 16 rows of 256 bytes a
   stride of L apart; the backward walks the chunks downwards). No gain measurable above the noise
   on the 2-core Zen 4 it was written on; cheap (about 300 prefetches per 64 x 16 x N chunk). */
static inline void FN(tile_prefetch)(const REAL* src, int64_t base, int64_t L, int nv, int64_t c,
                                     int reverse, int write) {
    const int64_t s0 = c * K, len = (L - s0) < K ? (L - s0) : K;
    if (!src || c < 0 || len <= 0) return;
    const int64_t t0 = reverse ? L - s0 - len : s0;
    const int64_t step = 64 / sizeof(REAL);
    for (int v = 0; v < nv; v++) {
        const REAL* row = src + base + v * L + t0;
        for (int64_t i = 0; i < len + step; i += step) {
            const REAL* p = row + (i < len ? i : len - 1);
            if (write) __builtin_prefetch(p, 1, 3); else __builtin_prefetch(p, 0, 3);
        }
    }
}

/* r = delta + bias; dt <- softplus(r) (or r), 0 on padded lanes; raw <- d dt / d delta, which the
   backward needs (sigmoid(r), or 1). One exp: softplus(r) = max(r, 0) + log1p(exp(-|r|)). */
static inline void FN(tile_dt)(REAL (*raw)[VB], REAL (*dt)[VB], const REAL* bv, int softplus,
                               int nv) {
    for (int64_t i = 0; i < K; i++) {
        #pragma omp simd
        for (int v = 0; v < VB; v++) {
            const REAL r = raw[i][v] + bv[v];
            const REAL e = softplus ? EXP(r < 0 ? r : -r) : 0;
            const REAL sp = r > 20 ? r : (r > 0 ? r : 0) + LOG1P(e);
            raw[i][v] = softplus ? (r > 0 ? 1 : e) / (1 + e) : 1;
            dt[i][v] = v < nv ? (softplus ? sp : r) : 0;
        }
    }
}

/* Per-task setup shared by forward and backward: A, bias and D for the block's lanes. */
#define BLOCK_PARAMS                                                                  \
    REAL (*a)[VB] = malloc(sizeof(REAL) * N * VB);                                    \
    REAL (*h)[VB] = calloc(N * VB, sizeof(REAL));                                     \
    REAL bv[VB], dv[VB];                                                              \
    FN(load_A)(A, d0, N, nv, a);                                                      \
    for (int v = 0; v < VB; v++) {                                                    \
        bv[v] = (bias && v < nv) ? bias[d0 + v] : 0;                                  \
        dv[v] = (Dsk && v < nv) ? Dsk[d0 + v] : 0;                                    \
    }

#define CKPT(c) (ckpt + (((b * D + d0 + v) * (nchunk + 1)) + (c)) * N + n)

/* Forward with softplus(delta + bias), the D skip and the SiLU(z) gate fused (vectorised over
   the VB channels: per step they cost 1/N of the state update). */
void FN(scan_fwd)(const REAL* u, const REAL* dl, const REAL* bias, const REAL* A, const REAL* Bm,
                  const REAL* Cm, const REAL* Dsk, const REAL* z, int64_t Bt, int64_t D,
                  int64_t L, int64_t N, int64_t G, int softplus, int reverse, REAL* y,
                  REAL* ckpt, int nthreads) {
    const int64_t Dg = D / G, nblk = (Dg + VB - 1) / VB, ntask = Bt * G * nblk;
    const int64_t nchunk = (L + K - 1) / K;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t task = 0; task < ntask; task++) {
        TASK_SETUP
        BLOCK_PARAMS
        REAL (*ut)[VB] = malloc(sizeof(REAL) * 5 * K * VB);
        REAL (*rawt)[VB] = ut + K, (*dtt)[VB] = ut + 2 * K, (*zt)[VB] = ut + 3 * K;
        REAL (*yt)[VB] = ut + 4 * K;
        for (int64_t c = 0; c < nchunk; c++) {
            const int64_t s0 = c * K, len = (L - s0) < K ? (L - s0) : K;
            for (int64_t n = 0; n < N; n++)  /* the state before chunk c, for the backward */
                for (int v = 0; v < nv; v++) *CKPT(c) = h[n][v];
            FN(tile_in)(u, base, L, nv, s0, len, reverse, ut);
            FN(tile_in)(dl, base, L, nv, s0, len, reverse, rawt);
            FN(tile_in)(z, base, L, nv, s0, len, reverse, zt);
            if (c + 1 < nchunk) {
                FN(tile_prefetch)(u, base, L, nv, c + 1, reverse, 0);
                FN(tile_prefetch)(dl, base, L, nv, c + 1, reverse, 0);
                FN(tile_prefetch)(z, base, L, nv, c + 1, reverse, 0);
            }
            FN(tile_prefetch)(y, base, L, nv, c, reverse, 1);
            FN(tile_dt)(rawt, dtt, bv, softplus, nv);
            for (int64_t i = 0; i < len; i++) {
                const int64_t t = T_OF(i);
                REAL acc[VB];
                FN(step)(h, a, dtt[i], ut[i], Bg + t * N, N, NULL, NULL);
                const REAL* Cs = Cg + t * N;
                for (int v = 0; v < VB; v++) acc[v] = 0;
                for (int64_t n = 0; n < N; n++) {
                    const REAL cn = Cs[n];
                    #pragma omp simd
                    for (int v = 0; v < VB; v++) acc[v] += h[n][v] * cn;
                }
                #pragma omp simd
                for (int v = 0; v < VB; v++) {
                    REAL out = acc[v] + dv[v] * ut[i][v];
                    if (z) out *= zt[i][v] / (1 + EXP(-zt[i][v]));
                    yt[i][v] = out;
                }
            }
            FN(tile_out)(y, base, L, nv, s0, len, reverse, yt);
        }
        for (int64_t n = 0; n < N; n++)  /* last slot: the final state */
            for (int v = 0; v < nv; v++) *CKPT(nchunk) = h[n][v];
        free(a); free(h); free(ut);
    }
}

/* Backward, everything fused (softplus, D skip, gate). Partial sums per task: dA (batch, D, N),
   dD and dbias (batch, D); per thread: dBm and dCm (threads, batch, G, L, N). */
void FN(scan_bwd)(const REAL* u, const REAL* dl, const REAL* bias, const REAL* A, const REAL* Bm,
                  const REAL* Cm, const REAL* Dsk, const REAL* z, const REAL* ckpt,
                  const REAL* gout, const REAL* glast, int64_t Bt, int64_t D, int64_t L,
                  int64_t N, int64_t G, int softplus, int reverse, REAL* du_out,
                  REAL* ddl_out, REAL* dz_out, REAL* dA_out, REAL* dD_out, REAL* dbias_out,
                  REAL* dBm, REAL* dCm, int nthreads) {
    const int64_t Dg = D / G, nblk = (Dg + VB - 1) / VB, ntask = Bt * G * nblk;
    const int64_t nchunk = (L + K - 1) / K;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t task = 0; task < ntask; task++) {
        TASK_SETUP
        BLOCK_PARAMS
        /* one partial sum per thread: tasks of a group run on several threads at once */
        const int64_t part = (omp_get_thread_num() * Bt + b) * G + g;
        REAL* dBg = dBm + part * L * N;
        REAL* dCg = dCm + part * L * N;
        REAL (*h0)[VB] = malloc(sizeof(REAL) * N * VB);
        REAL (*gh)[VB] = malloc(sizeof(REAL) * N * VB);
        REAL (*dA)[VB] = calloc(N * VB, sizeof(REAL));
        REAL (*hs)[VB] = malloc(sizeof(REAL) * K * N * VB);
        REAL (*das)[VB] = malloc(sizeof(REAL) * K * N * VB);
        REAL (*ut)[VB] = malloc(sizeof(REAL) * 8 * K * VB);
        REAL (*rawt)[VB] = ut + K, (*dtt)[VB] = ut + 2 * K, (*zt)[VB] = ut + 3 * K;
        REAL (*gt)[VB] = ut + 4 * K, (*dut)[VB] = ut + 5 * K, (*ddtt)[VB] = ut + 6 * K;
        REAL (*dzt)[VB] = ut + 7 * K;
        REAL dD[VB], dbias[VB];
        REAL pb[VB][VB] __attribute__((aligned(64))), pc[VB][VB] __attribute__((aligned(64)));
        for (int v = 0; v < VB; v++) { dD[v] = 0; dbias[v] = 0; }
        for (int64_t n = 0; n < N; n++)
            for (int v = 0; v < VB; v++)
                gh[n][v] = (glast && v < nv) ? glast[(b * D + d0 + v) * N + n] : 0;
        for (int64_t c = nchunk - 1; c >= 0; c--) {
            const int64_t s0 = c * K, len = (L - s0) < K ? (L - s0) : K;
            for (int64_t n = 0; n < N; n++)
                for (int v = 0; v < VB; v++) h0[n][v] = v < nv ? *CKPT(c) : 0;
            memcpy(h, h0, sizeof(REAL) * N * VB);
            FN(tile_in)(u, base, L, nv, s0, len, reverse, ut);
            FN(tile_in)(dl, base, L, nv, s0, len, reverse, rawt);
            FN(tile_in)(z, base, L, nv, s0, len, reverse, zt);
            FN(tile_in)(gout, base, L, nv, s0, len, reverse, gt);
            FN(tile_prefetch)(u, base, L, nv, c - 1, reverse, 0);
            FN(tile_prefetch)(dl, base, L, nv, c - 1, reverse, 0);
            FN(tile_prefetch)(z, base, L, nv, c - 1, reverse, 0);
            FN(tile_prefetch)(gout, base, L, nv, c - 1, reverse, 0);
            FN(tile_prefetch)(du_out, base, L, nv, c, reverse, 1);
            FN(tile_prefetch)(ddl_out, base, L, nv, c, reverse, 1);
            FN(tile_prefetch)(z ? dz_out : NULL, base, L, nv, c, reverse, 1);
            FN(tile_dt)(rawt, dtt, bv, softplus, nv);
            for (int64_t i = 0; i < len; i++)  /* the chunk's states and decays again */
                FN(step)(h, a, dtt[i], ut[i], Bg + T_OF(i) * N, N, das + i * N, hs + i * N);
            for (int64_t i = len - 1; i >= 0; i--) {
                const int64_t t = T_OF(i);
                const REAL *dtv = dtt[i], *uv = ut[i];
                REAL gy[VB], ys[VB], ddt[VB], du[VB], dtu[VB], sb[VB], sg[VB];
                const REAL* Bs = Bg + t * N;
                const REAL* Cs = Cg + t * N;
                REAL (*hp)[VB] = i > 0 ? hs + (i - 1) * N : h0;
                REAL (*hc)[VB] = hs + i * N;
                REAL (*ec)[VB] = das + i * N;
                #pragma omp simd
                for (int v = 0; v < VB; v++) {
                    REAL g = gt[i][v];
                    if (z) {
                        const REAL zz = zt[i][v];
                        sg[v] = 1 / (1 + EXP(-zz));
                        g *= zz * sg[v];
                    }
                    gy[v] = g; /* dLoss/d(scan output + D u) */
                    dD[v] += g * uv[v];
                    du[v] = g * dv[v];
                    dtu[v] = dtv[v] * uv[v];
                    ys[v] = 0;
                    ddt[v] = 0;
                }
                /* Per state: the adjoint step and the lane sums over n that du and ddt need
                   (gg B summed once for both); dB and dC are sums over the lanes, kept as
                   per-lane products and reduced 16 states at a time by a transpose-add. */
                for (int v = 0; v < VB; v++) sb[v] = 0;
                for (int64_t n0 = 0; n0 < N; n0 += VB) {
                    const int nn = (N - n0) < VB ? (int)(N - n0) : VB;
                    for (int j = 0; j < nn; j++) {
                        const int64_t n = n0 + j;
                        const REAL bn = Bs[n], cn = Cs[n];
                        #pragma omp simd
                        for (int v = 0; v < VB; v++) {
                            const REAL gg = gh[n][v] + gy[v] * cn; /* dLoss/dh_t */
                            const REAL q = gg * ec[n][v] * hp[n][v]; /* gg e h_{t-1} */
                            pc[j][v] = gy[v] * hc[n][v];
                            ys[v] += hc[n][v] * cn; /* the output before D and the gate */
                            pb[j][v] = gg * dtu[v];
                            sb[v] += gg * bn;
                            ddt[v] += a[n][v] * q;
                            dA[n][v] += dtv[v] * q;
                            gh[n][v] = gg * ec[n][v]; /* dLoss/dh_{t-1} */
                        }
                    }
                    FN(lane_sums)(pb, nn, dBg + t * N + n0);
                    FN(lane_sums)(pc, nn, dCg + t * N + n0);
                }
                #pragma omp simd
                for (int v = 0; v < VB; v++) {
                    du[v] += dtv[v] * sb[v];
                    ddt[v] += uv[v] * sb[v];
                    if (z) {
                        const REAL zz = zt[i][v];
                        dzt[i][v] = gt[i][v] * (ys[v] + dv[v] * uv[v]) * sg[v] *
                                    (1 + zz * (1 - sg[v]));
                    }
                }
                #pragma omp simd
                for (int v = 0; v < VB; v++) {
                    const REAL d = ddt[v] * rawt[i][v]; /* d dt / d delta */
                    ddtt[i][v] = d;
                    dut[i][v] = du[v];
                    dbias[v] += v < nv ? d : 0;
                }
            }
            FN(tile_out)(du_out, base, L, nv, s0, len, reverse, dut);
            FN(tile_out)(ddl_out, base, L, nv, s0, len, reverse, ddtt);
            if (z) FN(tile_out)(dz_out, base, L, nv, s0, len, reverse, dzt);
        }
        for (int64_t n = 0; n < N; n++)
            for (int v = 0; v < nv; v++) dA_out[(b * D + d0 + v) * N + n] = dA[n][v];
        for (int v = 0; v < nv; v++) {
            dD_out[b * D + d0 + v] = dD[v];
            dbias_out[b * D + d0 + v] = dbias[v];
        }
        free(a); free(h); free(h0); free(gh); free(dA); free(hs); free(das); free(ut);
    }
}
"""
