// Mamba2 prefill: the SSD's chunk scan (the last of ssd_triton.py's five kernels) in CUDA C, compiled at run time
// by NVRTC (`ssd_cuda.py`); the same contract as `ssd_triton._chunk_scan`:
//   y_l = exp(cum_l) C_l h_in + sum_{s <= l} CB_ls exp(cum_l - cum_s) dt_s x_s + D x_l
//
// A block owns one chunk of one group's heads (grid: rows x chunks, groups x head slices) and runs
// `heads_per_block` heads of the group one after another, a warp per 16 rows of the chunk. The Triton kernel's
// programs (one 64-row tile of one head each) wait on a chain of dependent loads at 2-3 programs an SM and read
// C, C.Bᵀ, the state and x again for every row tile and head (GPU_NOTES.md v10, v23, v30). Here C sits in
// registers and C.Bᵀ in shared memory for all of the block's heads, and each head's state and x land in shared
// memory (cp.async) while the head before it runs; the products run on mma.sync.
//
// Layout of the products (m16n8k16, fp32 accumulators): a warp owns 16 rows of the chunk (`row_block`) and all
// 64 head-dim columns, as 8 accumulator tiles of 16 x 8; thread (lane) holds rows lane / 4 and lane / 4 + 8,
// columns 8j + 2 tq and 8j + 2 tq + 1 of tile j, tq = lane % 4. A operands (C, and C.Bᵀ times its decay) come
// from rows of shared memory, the B operands (the state, x) through ldmatrix; every shared row is padded by 16
// bytes so that the 8 rows an ldmatrix or a fragment load touches fall on distinct banks.
//
// Macros, set by ssd_cuda.py: HALF_BF16 (x, C, C.Bᵀ, the state and y are bf16, else fp16), CHUNK (tokens a
// chunk: 64, 128 or 256). Fixed shapes: head dim 64, d_state 128 (every Mamba2 model this project runs).
constexpr int P = 64, NSTATE = 128;  // head dim, d_state
constexpr int TILE = 64;             // positions of a tile below or on the diagonal
constexpr int TILES = CHUNK / TILE;
constexpr int NT = CHUNK * 2;        // threads a block: a warp per 16 rows
constexpr int XS = P + 8;            // halves in a padded shared row of x
constexpr int HS = NSTATE + 8;       // halves in a padded shared row of the state and of C

// Row tile t's rows of C.Bᵀ reach column 64 (t + 1): packed tile after tile, each row padded by 8 halves
__host__ __device__ constexpr int cb_pad(int t) { return TILE * (t + 1) + 8; }
__host__ __device__ constexpr int cb_offset(int t) { return t == 0 ? 0 : cb_offset(t - 1) + TILE * cb_pad(t - 1); }

struct HeadInputs {            // one head's inputs, double-buffered over the block's heads
    bits16 h_in[P * HS];       // the state entering the chunk (P, NSTATE)
    bits16 x[CHUNK * XS];      // the chunk's x (positions, P)
    float cum[CHUNK];          // cumsum of dt A over the chunk
    float dt[CHUNK];
    bits16 below[TILES][CHUNK];  // row tile t's column weights below its diagonal, exp(cum[64 t] - cum[s]) dt[s],
                                 // in the model dtype: one packed multiply a pair of C.Bᵀ elements
};
struct Shared {                // dynamic shared memory, `ssd_cuda.shared_bytes` of it
    bits16 cb[cb_offset(TILES)];  // the chunk's C.Bᵀ on and below the diagonal tiles, shared by the group's heads
    union {
        bits16 c_rows[CHUNK * HS];  // the chunk's C on its way into registers, then
        HeadInputs head[2];
    };
};

#if HALF_BF16
#define MMA_KIND "bf16"
#else
#define MMA_KIND "f16"
#endif

// two floats -> one register of two halves, lo at the lower address (cvt packs its first source high)
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    unsigned d;
#if HALF_BF16
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
#endif
    return d;
}
// two pairs of halves multiplied elementwise, rounded once
__device__ __forceinline__ unsigned mul2(unsigned a, unsigned b) {
    unsigned d;
    asm("mul.rn." MMA_KIND "x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}
__device__ __forceinline__ float low_half(unsigned v) { return half_to_float((bits16)(v & 0xffffu)); }
__device__ __forceinline__ float high_half(unsigned v) { return half_to_float((bits16)(v >> 16)); }

__device__ __forceinline__ void load_matrices(unsigned (&r)[4], const bits16* p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void load_matrices_transposed(unsigned (&r)[4], const bits16* p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
// d += a (16 x 16) . b (16 x 8), fp32 accumulators
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32." MMA_KIND "." MMA_KIND ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void copy4(void* smem, const void* gmem) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}

// A (ROWS_, WIDTH) tile of halves, global rows `stride` elements apart -> padded shared rows `pad` apart,
// in 16-byte pieces spread over the block
template <int ROWS_, int WIDTH>
__device__ __forceinline__ void load_tile(bits16* dst, int pad, const bits16* src, long long stride) {
    constexpr int PIECES = WIDTH / 8, TOTAL = ROWS_ * PIECES;
#pragma unroll
    for (int i = 0; i < TOTAL / NT; ++i) {
        const int p = threadIdx.x + i * NT, r = p / PIECES, col = (p % PIECES) * 8;
        copy16(dst + r * pad + col, src + r * stride + col, true);
    }
}

// acc (8 tiles of 16 x 8) += a . b over the 64 columns, b's (k 16, n 64) slice read from shared rows
// k-major (x: positions are rows, transposed by ldmatrix) or n-major (the state: head-dim rows)
template <bool K_MAJOR>
__device__ __forceinline__ void mma_row(float (&acc)[8][4], const unsigned (&a)[4], const bits16* b, int pad,
                                        int lane) {
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {  // two accumulator tiles (16 columns) a step
        unsigned r[4];
        if (K_MAJOR)
            load_matrices_transposed(r, b + (((lane >> 3) & 1) * 8 + (lane & 7)) * pad + jj * 16 + (lane >> 4) * 8);
        else
            load_matrices(r, b + (jj * 16 + (lane >> 4) * 8 + (lane & 7)) * pad + ((lane >> 3) & 1) * 8);
        mma(acc[2 * jj], a, r[0], r[1]);
        mma(acc[2 * jj + 1], a, r[2], r[3]);
    }
}

// The A operand of one 16-column step (m16n8k16's a0..a3) from shared rows `pad` halves apart: rows (row, row + 8),
// columns (col, col + 1) and (col + 8, col + 9), from `top` at (row, col)
__device__ __forceinline__ void load_a(unsigned (&v)[4], const bits16* top, int pad) {
    v[0] = *(const unsigned*)top, v[1] = *(const unsigned*)(top + 8 * pad);
    v[2] = *(const unsigned*)(top + 8), v[3] = *(const unsigned*)(top + 8 * pad + 8);
}

// C.Bᵀ's A operand times the weight of each element's column (w0, w1 for col, col + 1; w2, w3 for col + 8, col + 9),
// separately for the two rows
__device__ __forceinline__ void weighted_a(unsigned (&a)[4], const unsigned (&v)[4], const float (&w_top)[4],
                                           const float (&w_bottom)[4]) {
    a[0] = pack2(low_half(v[0]) * w_top[0], high_half(v[0]) * w_top[1]);
    a[1] = pack2(low_half(v[1]) * w_bottom[0], high_half(v[1]) * w_bottom[1]);
    a[2] = pack2(low_half(v[2]) * w_top[2], high_half(v[2]) * w_top[3]);
    a[3] = pack2(low_half(v[3]) * w_bottom[2], high_half(v[3]) * w_bottom[3]);
}

// The 16-row block of the chunk that warp w computes: warps 4k .. 4k + 3 take row tile k, in an order that gives
// each of an SM's schedulers (warps k, k + 4, ..) a warp of every diagonal position (1-4 column steps of the
// diagonal tile) instead of four warps with the same one.
__device__ __forceinline__ int row_block(int warp) { return (warp & ~3) + ((warp + (warp >> 2)) & 3); }

// One head's inputs into `in`, asynchronously (one commit group)
__device__ __forceinline__ void load_head(HeadInputs& in, const bits16* x, const float* dt, const float* cum,
                                          const bits16* carried, int b, int c, int h, int H, int n_chunks, int s_xb,
                                          int s_xl, int s_xh, int s_dtb, int s_dtl, int s_dth) {
    const long long pos0 = (long long)c * CHUNK;
    load_tile<P, NSTATE>(in.h_in, HS, carried + (((long long)b * n_chunks + c) * H + h) * P * NSTATE, NSTATE);
    load_tile<CHUNK, P>(in.x, XS, x + b * (long long)s_xb + pos0 * s_xl + h * (long long)s_xh, s_xl);
    const float* cum_chunk = cum + (((long long)b * H + h) * n_chunks + c) * CHUNK;
    for (int p = threadIdx.x; p < CHUNK / 4; p += NT) copy16(&in.cum[4 * p], cum_chunk + 4 * p, true);
    for (int p = threadIdx.x; p < CHUNK; p += NT)
        copy4(&in.dt[p], dt + b * (long long)s_dtb + (pos0 + p) * s_dtl + h * (long long)s_dth);
    copies_issued();
}

// acc += the products of row block rb with the `tiles` tiles below its diagonal tile, each C.Bᵀ element times its
// column's weight (the row scale comes later)
__device__ __forceinline__ void below_tiles(float (&acc)[8][4], const HeadInputs& in, const bits16* cb, int rb,
                                            int tiles, int lane) {
    const int lb = rb / 4, tq = lane % 4, pad = cb_pad(lb);
    const bits16* cb_top = cb + cb_offset(lb) + (rb % 4 * 16 + lane / 4) * pad + 2 * tq;  // the thread's first row
    for (int st = 0; st < tiles; ++st) {
#pragma unroll
        for (int ks = 0; ks < TILE / 16; ++ks) {
            const int col = st * TILE + ks * 16 + 2 * tq;  // chunk positions col, col + 1, col + 8, col + 9
            unsigned v[4], a[4];
            load_a(v, cb_top + st * TILE + ks * 16, pad);
            const unsigned w01 = *(const unsigned*)&in.below[lb][col], w89 = *(const unsigned*)&in.below[lb][col + 8];
            a[0] = mul2(v[0], w01), a[1] = mul2(v[1], w01), a[2] = mul2(v[2], w89), a[3] = mul2(v[3], w89);
            mma_row<true>(acc, a, &in.x[(st * TILE + ks * 16) * XS], XS, lane);
        }
    }
}

// y's 16 rows of row block rb for one head: C.h_in (C in registers), the tiles below the block's diagonal tile,
// the diagonal tile, the D skip
__device__ __forceinline__ void head_rows(const HeadInputs& in, const bits16* cb, const unsigned (&c_frag)[8][4],
                                          float d_skip, bits16* y_top, long long row_step, int rb, int lane) {
    const int tq = lane % 4, r0 = rb * 16 + lane / 4, lb = rb / 4, l0 = lb * TILE;
    float acc[8][4] = {};
#pragma unroll
    for (int ks = 0; ks < NSTATE / 16; ++ks) mma_row<false>(acc, c_frag[ks], &in.h_in[ks * 16], HS, lane);
    // cum never increases (dt >= 0, A < 0): below the diagonal tile exp(cum_l - cum_s) = exp(cum_l - cum_ref)
    // exp(cum_ref - cum_s), both factors in (0, 1], so those tiles take a column weight and one row scale, which
    // the carried-in term's exp(cum_l) shares
    const float cum_ref = in.cum[l0], carried_scale = ex2(cum_ref * LOG2E);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] *= carried_scale;
    below_tiles(acc, in, cb, rb, lb, lane);
    const float cum_top = in.cum[r0], cum_bottom = in.cum[r0 + 8];
    const float scale_top = ex2((cum_top - cum_ref) * LOG2E), scale_bottom = ex2((cum_bottom - cum_ref) * LOG2E);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        acc[j][0] *= scale_top, acc[j][1] *= scale_top;
        acc[j][2] *= scale_bottom, acc[j][3] *= scale_bottom;
    }
    // the diagonal tile: the full decay, zero above the diagonal; the block's rows see its column steps 0 .. rb % 4
    const bits16* cb_top = cb + cb_offset(lb) + (r0 - l0) * cb_pad(lb) + 2 * tq;
#pragma unroll
    for (int ks = 0; ks < TILE / 16; ++ks) {
        if (ks > rb % 4) break;
        float w_top[4], w_bottom[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int sp = l0 + ks * 16 + 2 * tq + (e & 1) + (e >> 1) * 8;  // a chunk position
            const float cs = in.cum[sp], step = in.dt[sp];
            w_top[e] = sp <= r0 ? ex2((cum_top - cs) * LOG2E) * step : 0.f;
            w_bottom[e] = sp <= r0 + 8 ? ex2((cum_bottom - cs) * LOG2E) * step : 0.f;
        }
        unsigned v[4], a[4];
        load_a(v, cb_top + l0 + ks * 16, cb_pad(lb));
        weighted_a(a, v, w_top, w_bottom);
        mma_row<true>(acc, a, &in.x[(l0 + ks * 16) * XS], XS, lane);
    }
    // the D skip from x's rows, and y in the model dtype
    bits16* y_bottom = y_top + 8 * row_step;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const unsigned xt = *(const unsigned*)&in.x[r0 * XS + 8 * j + 2 * tq];
        const unsigned xb = *(const unsigned*)&in.x[(r0 + 8) * XS + 8 * j + 2 * tq];
        *(unsigned*)(y_top + 8 * j) = pack2(acc[j][0] + d_skip * low_half(xt), acc[j][1] + d_skip * high_half(xt));
        *(unsigned*)(y_bottom + 8 * j) = pack2(acc[j][2] + d_skip * low_half(xb), acc[j][3] + d_skip * high_half(xb));
    }
}

// Grid (rows x chunks, groups x head slices): y (B, L, H, P) over one chunk for heads_per_block heads of one group,
// one after another. L is whole chunks.
extern "C" __global__ void __launch_bounds__(NT, 1) chunk_scan(
    const bits16* x, const float* dt, const bits16* C, const float* D, const float* cum, const bits16* cb,
    const bits16* carried, bits16* y, int L, int H, int G, int n_chunks, int heads_per_block, int s_xb, int s_xl,
    int s_xh, int s_dtb, int s_dtl, int s_dth, int s_cb, int s_cl, int s_cg) {
    extern __shared__ __align__(16) unsigned char smem[];
    Shared& s = *reinterpret_cast<Shared*>(smem);
    const int b = blockIdx.x / n_chunks, c = blockIdx.x % n_chunks, slices = H / G / heads_per_block;
    const int g = blockIdx.y / slices, h_first = g * (H / G) + blockIdx.y % slices * heads_per_block;
    const int lane = threadIdx.x % 32, rb = row_block(threadIdx.x / 32);
    const long long pos0 = (long long)c * CHUNK;
    load_tile<CHUNK, NSTATE>(s.c_rows, HS, C + b * (long long)s_cb + pos0 * s_cl + g * (long long)s_cg, s_cl);
    const bits16* cb_chunk = cb + (((long long)b * n_chunks + c) * G + g) * CHUNK * CHUNK;
#pragma unroll
    for (int t = 0; t < TILES; ++t)  // row tile t: 64 rows of 64 (t + 1) columns, 16-byte pieces over the block
        for (int p = threadIdx.x; p < TILE * 8 * (t + 1); p += NT) {
            const int r = p / (8 * (t + 1)), col = p % (8 * (t + 1)) * 8;
            copy16(&s.cb[cb_offset(t) + r * cb_pad(t) + col], cb_chunk + (long long)(t * TILE + r) * CHUNK + col, true);
        }
    copies_issued();
    wait_all_copies();
    __syncthreads();
    unsigned c_frag[NSTATE / 16][4];  // the warp's rows of C as the A operand of C.h_in
#pragma unroll
    for (int ks = 0; ks < NSTATE / 16; ++ks)
        load_matrices(c_frag[ks],
                      &s.c_rows[(rb * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * HS + ks * 16 + (lane >> 4) * 8]);
    __syncthreads();  // C's staging area becomes the head buffers
    load_head(s.head[0], x, dt, cum, carried, b, c, h_first, H, n_chunks, s_xb, s_xl, s_xh, s_dtb, s_dtl, s_dth);
    for (int i = 0; i < heads_per_block; ++i) {
        HeadInputs& in = s.head[i & 1];
        wait_all_copies();
        __syncthreads();  // head i has landed; every warp is done with head i - 1 and its buffer
        if (i + 1 < heads_per_block)
            load_head(s.head[(i + 1) & 1], x, dt, cum, carried, b, c, h_first + i + 1, H, n_chunks, s_xb, s_xl,
                      s_xh, s_dtb, s_dtl, s_dth);
        for (int e = threadIdx.x; e < TILES * CHUNK; e += NT) {
            const int t = e / CHUNK, sp = e % CHUNK;
            if (sp < t * TILE)
                in.below[t][sp] = float_to_half(ex2((in.cum[t * TILE] - in.cum[sp]) * LOG2E) * in.dt[sp]);
        }
        __syncthreads();
        const int h = h_first + i, r0 = rb * 16 + lane / 4;
        head_rows(in, s.cb, c_frag, D[h], y + (((long long)b * L + pos0 + r0) * H + h) * P + 2 * (lane % 4),
                  (long long)H * P, rb, lane);
    }
}
