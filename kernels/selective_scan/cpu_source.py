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

/* Tiles of K steps x VB channels, so the (batch, D, L) rows are read and written contiguously
   (per-step strided access to 16 rows costs more than the scan when N is small). */
#define T_OF(i) (reverse ? L - 1 - (s0 + (i)) : s0 + (i))

static inline void FN(tile_in)(const REAL* src, int64_t base, int64_t L, int nv, int64_t s0,
                               int64_t len, int reverse, REAL (*tile)[VB]) {
    for (int64_t i = 0; i < K; i++)
        for (int v = 0; v < VB; v++) tile[i][v] = 0;
    if (!src) return;
    for (int v = 0; v < nv; v++)
        for (int64_t i = 0; i < len; i++) tile[i][v] = src[base + v * L + T_OF(i)];
}

static inline void FN(tile_out)(REAL* dst, int64_t base, int64_t L, int nv, int64_t s0,
                                int64_t len, int reverse, REAL (*tile)[VB]) {
    if (!dst) return;
    for (int v = 0; v < nv; v++)
        for (int64_t i = 0; i < len; i++) dst[base + v * L + T_OF(i)] = tile[i][v];
}

/* raw <- delta + bias; dt <- softplus(raw) (or raw); dt = 0 on padded lanes. */
static inline void FN(tile_dt)(REAL (*raw)[VB], REAL (*dt)[VB], const REAL* bv, int softplus,
                               int nv) {
    for (int64_t i = 0; i < K; i++) {
        #pragma omp simd
        for (int v = 0; v < VB; v++) {
            const REAL r = raw[i][v] + bv[v];
            const REAL sp = softplus ? (r > 20 ? r : LOG1P(EXP(r < 20 ? r : 20))) : r;
            raw[i][v] = r;
            dt[i][v] = v < nv ? sp : 0;
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
            FN(tile_dt)(rawt, dtt, bv, softplus, nv);
            for (int64_t i = 0; i < len; i++)  /* the chunk's states and decays again */
                FN(step)(h, a, dtt[i], ut[i], Bg + T_OF(i) * N, N, das + i * N, hs + i * N);
            for (int64_t i = len - 1; i >= 0; i--) {
                const int64_t t = T_OF(i);
                const REAL *dtv = dtt[i], *uv = ut[i];
                REAL gy[VB], ys[VB], ddt[VB], du[VB], dtu[VB];
                const REAL* Bs = Bg + t * N;
                const REAL* Cs = Cg + t * N;
                REAL (*hp)[VB] = i > 0 ? hs + (i - 1) * N : h0;
                REAL (*hc)[VB] = hs + i * N;
                REAL (*ec)[VB] = das + i * N;
                for (int v = 0; v < VB; v++) { ys[v] = 0; ddt[v] = 0; }
                if (z) {  /* the gate needs the output before it: recompute y */
                    for (int64_t n = 0; n < N; n++) {
                        const REAL cn = Cs[n];
                        #pragma omp simd
                        for (int v = 0; v < VB; v++) ys[v] += hc[n][v] * cn;
                    }
                }
                #pragma omp simd
                for (int v = 0; v < VB; v++) {
                    REAL g = gt[i][v];
                    if (z) {
                        const REAL zz = zt[i][v], sg = 1 / (1 + EXP(-zz));
                        dzt[i][v] = g * (ys[v] + dv[v] * uv[v]) * sg * (1 + zz * (1 - sg));
                        g *= zz * sg;
                    }
                    gy[v] = g; /* dLoss/d(scan output + D u) */
                    dD[v] += g * uv[v];
                    du[v] = g * dv[v];
                    dtu[v] = dtv[v] * uv[v];
                }
                for (int64_t n = 0; n < N; n++) {
                    const REAL bn = Bs[n], cn = Cs[n];
                    REAL dbn = 0, dcn = 0;
                    #pragma omp simd reduction(+ : dbn, dcn)
                    for (int v = 0; v < VB; v++) {
                        const REAL gg = gh[n][v] + gy[v] * cn; /* dLoss/dh_t */
                        const REAL eh = ec[n][v] * hp[n][v];   /* e h_{t-1} */
                        dcn += gy[v] * hc[n][v];
                        dbn += gg * dtu[v];
                        du[v] += gg * dtv[v] * bn;
                        ddt[v] += gg * (a[n][v] * eh + bn * uv[v]);
                        dA[n][v] += gg * dtv[v] * eh;
                        gh[n][v] = gg * ec[n][v]; /* dLoss/dh_{t-1} */
                    }
                    dBg[t * N + n] += dbn;
                    dCg[t * N + n] += dcn;
                }
                #pragma omp simd
                for (int v = 0; v < VB; v++) {
                    const REAL d = softplus ? ddt[v] / (1 + EXP(-rawt[i][v])) : ddt[v];
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
