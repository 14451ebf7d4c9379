/* C source of the CPU selective scan, built once per machine by `kernels.ops.selective_scan.cpu`.

   Forward and backward fuse everything: softplus(delta + bias), the scan, the D skip and the SiLU(z)
   gate (PyTorch's separate element-wise passes over (batch, D, L) cost as much as the scan itself).

   One OpenMP task per (batch, group, block of VB channels); inside a task the scan runs in order
   over L with the state h[N][VB] in L1, and the innermost loop runs over the VB channels so that gcc
   vectorises exp through glibc's vector math (libmvec). Inputs and outputs move through tiles of
   SC chunks of K steps x VB channels, read and written in increasing address order. The backward
   takes the state at the start of every K-step chunk from the forward and, NB states at a time,
   recomputes a chunk's decays and states, then walks them backwards: memory is O(batch * D * L)
   plus per-task scratch, never (batch, D, L, N).

   Layouts. u, delta, z (batch, D, L) with any strides (`st`: u, delta, z, each (batch, channel,
   step) in elements): the views the models hold (a chunk of in_proj's output, a transposed
   projection, a channels-last map) are read in place; unit stride along L is the fast path,
   unit channel stride (channels-last) reads each step's channels at once. Contiguous: y, gout, du, ddelta,
   dz (batch, D, L); bias, Dsk (D,); A (D, N); ckpt (batch, D, ceil(L / K) + 1, N); Bm, Cm
   (batch, G, L, N) in *scan order* (the Python side stores them flipped for a reverse scan, so
   both directions read them, and write dBm and dCm, upwards). Partial sums, one per task: dA
   (batch, D, N); dD, dbias (batch, D); per thread: dBm, dCm (threads, batch, G, L, N).
   `cpu.py` includes this file twice, with REAL/EXP/LOG1P/FN set for float, then double. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef VB
#define VB 16
#define K 64
#endif

/* Task geometry shared by forward and backward: tasks of VB channels, chunks of K steps. */
#define GRID_SETUP                                                                    \
    const int64_t Dg = D / G, nblk = (Dg + VB - 1) / VB, ntask = Bt * G * nblk;       \
    const int64_t nchunk = (L + K - 1) / K, SK = SC * K;
#define TASK_SETUP                                                                    \
    const int64_t b = task / (G * nblk), g = (task / nblk) % G, blk = task % nblk;    \
    const int64_t d0 = g * Dg + blk * VB;                                             \
    const int nv = (int)((Dg - blk * VB) < VB ? (Dg - blk * VB) : VB);                \
    const int64_t base = (b * D + d0) * L;                                            \
    const REAL* Bg = Bm + (b * G + g) * L * N;                                        \
    const REAL* Cg = Cm + (b * G + g) * L * N;                                        \
    const REAL* u_row = u + b * st[0] + d0 * st[1];                                   \
    const REAL* dl_row = dl + b * st[3] + d0 * st[4];                                 \
    const REAL* z_row = z ? z + b * st[6] + d0 * st[7] : NULL;

static inline void FN(load_A)(const REAL* A, int64_t d0, int64_t N, int nv, REAL (*a)[VB]) {
    for (int64_t n = 0; n < N; n++)
        for (int v = 0; v < VB; v++) a[n][v] = v < nv ? A[(d0 + v) * N + n] : 0;
}

/* h <- exp(dt A) h + dt u B for one step (the forward). */
static inline void FN(step)(REAL (*h)[VB], REAL (*a)[VB], const REAL* dtv, const REAL* uv,
                            const REAL* Bs, int64_t N) {
    REAL du[VB];
    for (int v = 0; v < VB; v++) du[v] = dtv[v] * uv[v];
    for (int64_t n = 0; n < N; n++) {
        const REAL bn = Bs[n];
        #pragma omp simd
        for (int v = 0; v < VB; v++) h[n][v] = EXP(dtv[v] * a[n][v]) * h[n][v] + du[v] * bn;
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
#elif VB == 8
/* The same for 8 lanes (VB = 8: one AVX2 register of floats). */
#define FN_MASKS                                                                           \
    const FN(ivec) lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15},     \
                   lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15},     \
                   lo1 = {0, 8, 2, 10, 4, 12, 6, 14}, hi1 = {1, 9, 3, 11, 5, 13, 7, 15};
#endif

#if VB == 16 || VB == 8
#define FAST_TILES 1
/* In-place VB x VB transpose (x[r][c] <- x[c][r]): swap VB/2 x VB/2 blocks, then inside, ... */
static inline void FN(transpose)(FN(vec)* x) {
    FN_MASKS
#define SWAP_BLOCKS(W, LO, HI)                                                             \
    for (int r = 0; r < VB; r++)                                                          \
        if (!(r & W)) {                                                                   \
            const FN(vec) p = x[r], q = x[r + W];                                         \
            x[r] = __builtin_shuffle(p, q, LO);                                           \
            x[r + W] = __builtin_shuffle(p, q, HI);                                       \
        }
#if VB == 16
    SWAP_BLOCKS(8, lo8, hi8)
#endif
    SWAP_BLOCKS(4, lo4, hi4)
    SWAP_BLOCKS(2, lo2, hi2)
    SWAP_BLOCKS(1, lo1, hi1)
#undef SWAP_BLOCKS
}
#else
#define FAST_TILES 0
#endif

/* Tiles of steps x VB channels, so the (batch, D, L) rows are read and written contiguously
   (per-step strided access to 16 rows costs more than the scan when N is small). A task moves SC
   chunks at a time (a "span"), always in increasing address order: the backward walks the chunks
   downwards, and reading each span upwards keeps the hardware prefetchers streaming (measured on
   the backward's inputs: 41 -> 24 Mcycles against chunk-by-chunk downwards reads). */
#define SC 8
#define T_OF(i) (reverse ? L - 1 - (s0 + (i)) : s0 + (i))
#ifndef PF
#define PF 16  /* strided rows: prefetch this many steps ahead */
#endif

/* tile[i] <- steps s0 + i of the VB rows (in scan order), i < len; element (v, t) at
   src[v * ld + t * sl]. Padding (steps up to a whole chunk past len, lanes from nv) is 0. */
static inline void FN(tile_in)(const REAL* src, int64_t ld, int64_t sl, int64_t L, int nv,
                               int64_t s0, int64_t len, int reverse, REAL (*tile)[VB]) {
    const int64_t rows = (len + K - 1) / K * K;
    for (int64_t i = 0; i < rows; i++)
        for (int v = 0; v < VB; v++) tile[i][v] = 0;
    if (!src) return;
    if (sl != 1) {  /* e.g. a channels-last map (ld == 1): a step's channels are one row */
        if (ld == 1 && nv == VB) {  /* a fixed-size copy (inlined), next rows prefetched */
            for (int64_t i = 0; i < len; i++) {
                if (i + PF < len) __builtin_prefetch(src + T_OF(i + PF) * sl);
                memcpy(tile[i], src + T_OF(i) * sl, sizeof(tile[i]));
            }
            return;
        }
        for (int64_t i = 0; i < len; i++) {
            const REAL* p = src + T_OF(i) * sl;
            if (ld == 1) {
                memcpy(tile[i], p, nv * sizeof(REAL));
            } else {
                for (int v = 0; v < nv; v++) tile[i][v] = p[v * ld];
            }
        }
        return;
    }
    int64_t done = 0;  /* steps copied by the VB x VB blocks (a prefix in scan order) */
#if FAST_TILES
    if (nv == VB) {  /* VB x VB blocks transposed in registers, in increasing address order */
        const int64_t nfull = len / VB;
        for (int64_t j = 0; j < nfull; j++) {
            const int64_t k = VB * (reverse ? nfull - 1 - j : j);
            const int64_t t0 = reverse ? L - s0 - k - VB : s0 + k;
            FN(vec) x[VB];
            for (int v = 0; v < VB; v++) memcpy(&x[v], src + v * ld + t0, sizeof(x[v]));
            FN(transpose)(x);  /* x[r]: step t0 + r of the VB rows */
            for (int r = 0; r < VB; r++)  /* reversed: scan step k + VB - 1 - r */
                memcpy(tile[k + (reverse ? VB - 1 - r : r)], &x[r], sizeof(x[r]));
        }
        done = VB * nfull;
    }
#endif
    for (int v = 0; v < nv; v++)
        for (int64_t i = done; i < len; i++) tile[i][v] = src[v * ld + T_OF(i)];
}

static inline void FN(tile_out)(REAL* dst, int64_t ld, int64_t L, int nv, int64_t s0,
                                int64_t len, int reverse, REAL (*tile)[VB]) {
    if (!dst) return;
    int64_t done = 0;
#if FAST_TILES
    if (nv == VB) {
        const int64_t nfull = len / VB;
        for (int64_t j = 0; j < nfull; j++) {
            const int64_t k = VB * (reverse ? nfull - 1 - j : j);
            const int64_t t0 = reverse ? L - s0 - k - VB : s0 + k;
            FN(vec) x[VB];
            for (int r = 0; r < VB; r++)
                memcpy(&x[r], tile[k + (reverse ? VB - 1 - r : r)], sizeof(x[r]));
            FN(transpose)(x);
            for (int v = 0; v < VB; v++) memcpy(dst + v * ld + t0, &x[v], sizeof(x[v]));
        }
        done = VB * nfull;
    }
#endif
    for (int v = 0; v < nv; v++)
        for (int64_t i = done; i < len; i++) dst[v * ld + T_OF(i)] = tile[i][v];
}

/* r = delta + bias; dt <- softplus(r) (or r), 0 on padded lanes; raw <- d dt / d delta, which the
   backward needs (sigmoid(r), or 1). One exp: softplus(r) = max(r, 0) + log1p(exp(-|r|)). */
static inline void FN(tile_dt)(REAL (*raw)[VB], REAL (*dt)[VB], const REAL* bv, int softplus,
                               int nv, int64_t rows) {
    for (int64_t i = 0; i < rows; i++) {
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
    REAL bv[VB], dv[VB];                                                              \
    FN(load_A)(A, d0, N, nv, a);                                                      \
    for (int v = 0; v < VB; v++) {                                                    \
        bv[v] = (bias && v < nv) ? bias[d0 + v] : 0;                                  \
        dv[v] = (Dsk && v < nv) ? Dsk[d0 + v] : 0;                                    \
    }

/* A span's inputs as tiles: u, delta (then d dt / d delta), z, and dt = softplus(delta + bias). */
#define SPAN_IN(U, RAW, Z, DT)                                                        \
    FN(tile_in)(u_row, st[1], st[2], L, nv, s0, slen, reverse, U);                    \
    FN(tile_in)(dl_row, st[4], st[5], L, nv, s0, slen, reverse, RAW);                 \
    FN(tile_in)(z_row, st[7], st[8], L, nv, s0, slen, reverse, Z);                    \
    FN(tile_dt)(RAW, DT, bv, softplus, nv, (ce - cs) * K)

#define CKPT(c) (ckpt + (((b * D + d0 + v) * (nchunk + 1)) + (c)) * N + n)

/* Forward with softplus(delta + bias), the D skip and the SiLU(z) gate fused (vectorised over
   the VB channels: per step they cost 1/N of the state update). */
void FN(scan_fwd)(const REAL* u, const REAL* dl, const REAL* bias, const REAL* A, const REAL* Bm,
                  const REAL* Cm, const REAL* Dsk, const REAL* z, const int64_t* st, int64_t Bt,
                  int64_t D, int64_t L, int64_t N, int64_t G, int softplus, int reverse, REAL* y,
                  REAL* ckpt, int nthreads) {
    GRID_SETUP
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t task = 0; task < ntask; task++) {
        TASK_SETUP
        BLOCK_PARAMS
        REAL (*h)[VB] = calloc(N * VB, sizeof(REAL));  /* the state, carried across chunks */
        REAL (*ut)[VB] = aligned_alloc(64, sizeof(REAL) * 5 * SK * VB);
        REAL (*rawt)[VB] = ut + SK, (*dtt)[VB] = ut + 2 * SK, (*zt)[VB] = ut + 3 * SK;
        REAL (*yt)[VB] = ut + 4 * SK;
        for (int64_t cs = 0; cs < nchunk; cs += SC) {  /* one span of SC chunks */
            const int64_t s0 = cs * K, slen = (L - s0) < SK ? (L - s0) : SK;
            const int64_t ce = cs + SC < nchunk ? cs + SC : nchunk;
            SPAN_IN(ut, rawt, zt, dtt);
            for (int64_t c = cs; c < ce; c++) {
                for (int64_t n = 0; n < N; n++)  /* the state before chunk c, for the backward */
                    for (int v = 0; v < nv; v++) *CKPT(c) = h[n][v];
                const int64_t i0 = (c - cs) * K, i1 = i0 + ((L - c * K) < K ? (L - c * K) : K);
                for (int64_t i = i0; i < i1; i++) {
                    const int64_t t = s0 + i;  /* the step in scan order: B and C are stored so */
                    REAL acc[VB];
                    FN(step)(h, a, dtt[i], ut[i], Bg + t * N, N);
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
            }
            FN(tile_out)(y + base, L, L, nv, s0, slen, reverse, yt);
        }
        for (int64_t n = 0; n < N; n++)  /* last slot: the final state */
            for (int v = 0; v < nv; v++) *CKPT(nchunk) = h[n][v];
        free(a); free(h); free(ut);
    }
}

/* dst[j] += sum_v x[j][v] for j < nn (nn <= NB = 4): with VB == 16 and nn == 4, two rounds of
   pairwise half-swaps and two in-vector rounds (14 vector ops for the 4 sums); VB == 8 alike. */
static inline void FN(sum_rows)(const FN(vec)* x, int nn, REAL* dst) {
#if VB == 16
    if (nn == 4) {
        FN_MASKS
        const FN(ivec) sw2 = {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13},
                       sw1 = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
        const FN(vec) y0 = __builtin_shuffle(x[0], x[1], lo8) + __builtin_shuffle(x[0], x[1], hi8);
        const FN(vec) y1 = __builtin_shuffle(x[2], x[3], lo8) + __builtin_shuffle(x[2], x[3], hi8);
        FN(vec) w = __builtin_shuffle(y0, y1, lo4) + __builtin_shuffle(y0, y1, hi4);
        w += __builtin_shuffle(w, sw2);
        w += __builtin_shuffle(w, sw1);  /* lanes 0, 4, 8, 12: rows 0, 2, 1, 3 */
        dst[0] += w[0];
        dst[1] += w[8];
        dst[2] += w[4];
        dst[3] += w[12];
        return;
    }
#elif VB == 8
    if (nn == 4) {  /* the same with 8 lanes: 10 vector ops for the 4 sums */
        FN_MASKS
        const FN(ivec) sw1 = {1, 0, 3, 2, 5, 4, 7, 6};
        const FN(vec) y0 = __builtin_shuffle(x[0], x[1], lo4) + __builtin_shuffle(x[0], x[1], hi4);
        const FN(vec) y1 = __builtin_shuffle(x[2], x[3], lo4) + __builtin_shuffle(x[2], x[3], hi4);
        FN(vec) w = __builtin_shuffle(y0, y1, lo2) + __builtin_shuffle(y0, y1, hi2);
        w += __builtin_shuffle(w, sw1);  /* lanes 0, 2, 4, 6: rows 0, 2, 1, 3 */
        dst[0] += w[0];
        dst[1] += w[4];
        dst[2] += w[2];
        dst[3] += w[6];
        return;
    }
#endif
    for (int j = 0; j < nn; j++) {
        REAL acc = 0;
        for (int v = 0; v < VB; v++) acc += x[j][v];
        dst[j] += acc;
    }
}

#define NB 4 /* states per block in the backward */

/* Tiles of the backward: SC chunks of K steps x VB lanes each. */
typedef struct {
    REAL (*u)[VB], (*raw)[VB], (*dt)[VB], (*z)[VB], (*g)[VB];  /* inputs; raw: d dt / d delta */
    REAL (*gy)[VB], (*sg)[VB];                                  /* gated gradient, sigmoid(z) */
    REAL (*ddt)[VB], (*sb)[VB], (*ys)[VB];                      /* per-step sums over states */
    REAL (*du)[VB], (*dz)[VB];                                  /* outputs (ddelta: in ddt) */
} FN(tiles);

/* The walk of one block of nn states down one chunk (tile rows i0 .. i0 + len - 1): the adjoint
   states adj (dLoss/dh), dA and A of the block stay in registers; the per-step sums over the
   states (ddt, the B-weighted sum for du, the output before the gate) go through tiles. The first
   block also gates the output gradient (and sums dD), the last one finishes du, ddelta and dz. */
static inline __attribute__((always_inline)) void FN(walk)(
    const int first, const int last, const int nn, int64_t n0, int64_t i0, int64_t len,
    int64_t s0, int64_t N, int has_z, const REAL* Bg, const REAL* Cg,
    REAL (*es)[NB][VB], REAL (*hs)[NB][VB], REAL (*h0)[VB], REAL (*a)[VB], REAL (*gh)[VB],
    REAL (*dA)[VB],
    const FN(tiles)* tl, const REAL* dv, int nv, REAL* dD, REAL* dbias, REAL* dBg, REAL* dCg) {
    FN(vec) adj[NB], dAv[NB], av[NB], dDv, dbv;
    for (int j = 0; j < nn; j++) {
        memcpy(&adj[j], gh[n0 + j], sizeof(adj[j]));
        memcpy(&dAv[j], dA[n0 + j], sizeof(dAv[j]));
        memcpy(&av[j], a[n0 + j], sizeof(av[j]));
    }
    memcpy(&dDv, dD, sizeof(dDv));
    memcpy(&dbv, dbias, sizeof(dbv));
    for (int64_t k = len - 1; k >= 0; k--) {
        const int64_t i = i0 + k, t = s0 + i; /* scan order, as B and C are stored */
        const REAL* Bs = Bg + t * N + n0;
        const REAL* Cs = Cg + t * N + n0;
        FN(vec) gy, dt, uu, sddt = {0}, ssb = {0}, sys = {0}, pb[NB], pc[NB];
        memcpy(&dt, tl->dt[i], sizeof(dt));
        memcpy(&uu, tl->u[i], sizeof(uu));
        if (first) {  /* dLoss/d(scan output + D u): through the gate */
            if (has_z) {
                #pragma omp simd
                for (int v = 0; v < VB; v++) {
                    const REAL zz = tl->z[i][v];
                    tl->sg[i][v] = 1 / (1 + EXP(-zz));
                    tl->gy[i][v] = tl->g[i][v] * zz * tl->sg[i][v];
                }
                memcpy(&gy, tl->gy[i], sizeof(gy));
            } else {
                memcpy(&gy, tl->g[i], sizeof(gy));
                memcpy(tl->gy[i], &gy, sizeof(gy));
            }
            dDv += gy * uu;
        } else {
            memcpy(&gy, tl->gy[i], sizeof(gy));
        }
        const FN(vec) dtu = dt * uu;
        for (int j = 0; j < nn; j++) {
            const REAL bn = Bs[j], cn = Cs[j];
            FN(vec) hc, hp, e;
            memcpy(&hc, hs[k][j], sizeof(hc));
            memcpy(&hp, k > 0 ? hs[k - 1][j] : h0[n0 + j], sizeof(hp));
            memcpy(&e, es[k][j], sizeof(e));
            const FN(vec) gg = adj[j] + gy * cn; /* dLoss/dh_t */
            const FN(vec) q = gg * e * hp;       /* not gg (h_t - dt u B): that cancels */
            pc[j] = gy * hc;
            sys += hc * cn; /* the output before D and the gate */
            pb[j] = gg * dtu;
            ssb += gg * bn;
            sddt += av[j] * q;
            dAv[j] += dt * q;
            adj[j] = gg * e; /* dLoss/dh_{t-1} */
        }
        FN(sum_rows)(pb, nn, dBg + t * N + n0);
        FN(sum_rows)(pc, nn, dCg + t * N + n0);
        if (!first) {
            FN(vec) acc;
            memcpy(&acc, tl->ddt[i], sizeof(acc));
            sddt += acc;
            memcpy(&acc, tl->sb[i], sizeof(acc));
            ssb += acc;
            memcpy(&acc, tl->ys[i], sizeof(acc));
            sys += acc;
        }
        if (!last) {
            memcpy(tl->ddt[i], &sddt, sizeof(sddt));
            memcpy(tl->sb[i], &ssb, sizeof(ssb));
            memcpy(tl->ys[i], &sys, sizeof(sys));
            continue;
        }
        FN(vec) raw, du, d; /* every state summed: du and ddelta (ddt times d dt / d delta) */
        memcpy(&raw, tl->raw[i], sizeof(raw));
        memcpy(&du, dv, sizeof(du));
        du = gy * du + dt * ssb;
        d = (sddt + uu * ssb) * raw;
        memcpy(tl->du[i], &du, sizeof(du));
        memcpy(tl->ddt[i], &d, sizeof(d));
        dbv += d;
        if (has_z) {
            #pragma omp simd
            for (int v = 0; v < VB; v++) {
                const REAL zz = tl->z[i][v], sg = tl->sg[i][v];
                tl->dz[i][v] = tl->g[i][v] * (sys[v] + dv[v] * uu[v]) * sg * (1 + zz * (1 - sg));
            }
        }
    }
    for (int j = 0; j < nn; j++) {
        memcpy(gh[n0 + j], &adj[j], sizeof(adj[j]));
        memcpy(dA[n0 + j], &dAv[j], sizeof(dAv[j]));
    }
    memcpy(dD, &dDv, sizeof(dDv));
    memcpy(dbias, &dbv, sizeof(dbv));
}

/* Backward, everything fused (softplus, D skip, gate). The states are independent recurrences
   coupled only through per-step sums, so each chunk is done NB states at a time: recompute the
   block's decays and states over the chunk (scratch of 2 x K x NB x VB, L1-sized), then walk
   them backwards (`walk`). Spans of SC chunks are read and written as in the forward, the chunks
   inside a span walked downwards. Partial sums per task: dA (batch, D, N), dD and dbias (batch,
   D); per thread: dBm and dCm (threads, batch, G, L, N). */
void FN(scan_bwd)(const REAL* u, const REAL* dl, const REAL* bias, const REAL* A, const REAL* Bm,
                  const REAL* Cm, const REAL* Dsk, const REAL* z, const int64_t* st,
                  const REAL* ckpt, const REAL* gout, const REAL* glast, int64_t Bt, int64_t D,
                  int64_t L,
                  int64_t N, int64_t G, int softplus, int reverse, REAL* du_out,
                  REAL* ddl_out, REAL* dz_out, REAL* dA_out, REAL* dD_out, REAL* dbias_out,
                  REAL* dBm, REAL* dCm, int nthreads) {
    GRID_SETUP
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
        REAL (*es)[NB][VB] = aligned_alloc(64, sizeof(REAL) * 2 * K * NB * VB);
        REAL (*hs)[NB][VB] = es + K;
        REAL (*ut)[VB] = aligned_alloc(64, sizeof(REAL) * 12 * SK * VB);
        const FN(tiles) tl = {.u = ut, .raw = ut + SK, .dt = ut + 2 * SK, .z = ut + 3 * SK,
                              .g = ut + 4 * SK, .gy = ut + 5 * SK, .sg = ut + 6 * SK,
                              .ddt = ut + 7 * SK, .sb = ut + 8 * SK, .ys = ut + 9 * SK,
                              .du = ut + 10 * SK, .dz = ut + 11 * SK};
        REAL dD[VB] __attribute__((aligned(64))), dbias[VB] __attribute__((aligned(64)));
        for (int v = 0; v < VB; v++) { dD[v] = 0; dbias[v] = 0; }
        for (int64_t n = 0; n < N; n++)
            for (int v = 0; v < VB; v++)
                gh[n][v] = (glast && v < nv) ? glast[(b * D + d0 + v) * N + n] : 0;
        for (int64_t cs = (nchunk - 1) / SC * SC; cs >= 0; cs -= SC) {  /* spans, downwards */
            const int64_t s0 = cs * K, slen = (L - s0) < SK ? (L - s0) : SK;
            const int64_t ce = cs + SC < nchunk ? cs + SC : nchunk;
            SPAN_IN(tl.u, tl.raw, tl.z, tl.dt);
            FN(tile_in)(gout + base, L, 1, L, nv, s0, slen, reverse, tl.g);
            for (int64_t c = ce - 1; c >= cs; c--) {  /* chunks of the span, downwards */
                const int64_t i0 = (c - cs) * K, len = (L - c * K) < K ? (L - c * K) : K;
                for (int64_t n = 0; n < N; n++)
                    for (int v = 0; v < VB; v++) h0[n][v] = v < nv ? *CKPT(c) : 0;
                for (int64_t n0 = 0; n0 < N; n0 += NB) {
                    const int nn = (N - n0) < NB ? (int)(N - n0) : NB;
                    for (int64_t k = 0; k < len; k++) {  /* the block's decays and states again */
                        const int64_t i = i0 + k;
                        const REAL* Bs = Bg + (s0 + i) * N + n0;
                        REAL dtl[VB] __attribute__((aligned(64)));
                        REAL dtu[VB] __attribute__((aligned(64)));
                        #pragma omp simd
                        for (int v = 0; v < VB; v++) {
                            dtl[v] = tl.dt[i][v];
                            dtu[v] = tl.dt[i][v] * tl.u[i][v];
                        }
                        for (int j = 0; j < nn; j++) {
                            #pragma omp simd
                            for (int v = 0; v < VB; v++) es[k][j][v] = EXP(dtl[v] * a[n0 + j][v]);
                        }
                        for (int j = 0; j < nn; j++) {
                            const REAL bn = Bs[j];
                            const REAL* hp = k > 0 ? hs[k - 1][j] : h0[n0 + j];
                            #pragma omp simd
                            for (int v = 0; v < VB; v++)
                                hs[k][j][v] = es[k][j][v] * hp[v] + dtu[v] * bn;
                        }
                    }
                    const int first = n0 == 0, last = n0 + NB >= N;
#define WALK(F, LAST, NN) FN(walk)(F, LAST, NN, n0, i0, len, s0, N, z != NULL, Bg, \
                                   Cg, es, hs, h0, a, gh, dA, &tl, dv, nv, dD, dbias, dBg, \
                                   dCg)
                    if (nn == NB) {
                        if (first && last) WALK(1, 1, NB);
                        else if (first) WALK(1, 0, NB);
                        else if (last) WALK(0, 1, NB);
                        else WALK(0, 0, NB);
                    } else if (first) {  /* N < NB: a single block (N = 1: VMamba) */
                        if (nn == 1) WALK(1, 1, 1);
                        else WALK(1, 1, nn);
                    } else {
                        WALK(0, 1, nn);
                    }
#undef WALK
                }
            }
            FN(tile_out)(du_out + base, L, L, nv, s0, slen, reverse, tl.du);
            FN(tile_out)(ddl_out + base, L, L, nv, s0, slen, reverse, tl.ddt);
            if (z) FN(tile_out)(dz_out + base, L, L, nv, s0, slen, reverse, tl.dz);
        }
        for (int64_t n = 0; n < N; n++)
            for (int v = 0; v < nv; v++) dA_out[(b * D + d0 + v) * N + n] = dA[n][v];
        for (int v = 0; v < nv; v++) {
            dD_out[b * D + d0 + v] = dD[v];
            dbias_out[b * D + d0 + v] = v < nv ? dbias[v] : 0;
        }
        free(a); free(h0); free(gh); free(dA); free(es); free(ut);
    }
}
#undef NB
#undef SC
