// Mamba2 prefill: the SSD's chunk scan (the last of ssd_triton.py's five kernels) in CUDA C, compiled at run time
// by NVRTC (`ssd_cuda.py`); the same contract and arithmetic as `ssd_triton._chunk_scan`:
//   y_l = exp(cum_l) C_l h_in + sum_{s <= l} CB_ls exp(cum_l - cum_s) dt_s x_s + D x_l
// for one chunk of one head per block (grid: rows x chunks, heads), a warp per 16 rows of the chunk.
//
// Why CUDA C was tried: the Triton kernel's program is a chain of dependent load rounds (C.h_in, then each tile
// below the diagonal) at 2-3 programs an SM (GPU_NOTES.md v10, v23), and its programs of one chunk and head read
// the state entering the chunk and the x tiles again and again. Here a block copies every input of its chunk and
// head into shared memory at once (cp.async, two groups: what the carried-in term needs, then x and C.Bᵀ), so L2
// serves each byte once a chunk and head, and runs the products on mma.sync from shared memory. Measured slower
// than the Triton kernel (GPU_NOTES.md v30): one block an SM (207 KB of shared memory), whose loads no other
// block's products overlap.
//
// Layout of the products (m16n8k16, fp32 accumulators): warp w owns rows 16w..16w+15 of the chunk and all 64
// head-dim columns, as 8 accumulator tiles of 16 x 8; thread (lane) holds rows gr = lane / 4 and gr + 8, columns
// 8j + 2 tq and 8j + 2 tq + 1 of tile j, tq = lane % 4. A operands (C, and C.Bᵀ times its decay) come from rows of
// shared memory, the B operands (the state, x) through ldmatrix; every shared row is padded by 16 bytes so that
// the 8 rows an ldmatrix or a fragment load touches fall on distinct banks.
//
// Macros, set by ssd_cuda.py: HALF_BF16 (x, C, C.Bᵀ, the state and y are bf16, else fp16), CHUNK (tokens a
// chunk, a multiple of 64). Fixed shapes: head dim 64, d_state 128 (every Mamba2 model this project runs).
constexpr int P = 64, NSTATE = 128;  // head dim, d_state
constexpr int TILE = 64;             // positions of a tile below or on the diagonal
constexpr int TILES = CHUNK / TILE;
constexpr int NT = CHUNK * 2;        // threads a block: a warp per 16 rows of the chunk
constexpr int XS = P + 8;            // halves in a padded shared row of x
constexpr int HS = NSTATE + 8;       // halves in a padded shared row of the state and of C

// Row tile t's rows of C.Bᵀ reach column 64 (t + 1): packed tile after tile, each row padded by 8 halves
__host__ __device__ constexpr int cb_pad(int t) { return TILE * (t + 1) + 8; }
__host__ __device__ constexpr int cb_offset(int t) { return t == 0 ? 0 : cb_offset(t - 1) + TILE * cb_pad(t - 1); }

struct Shared {                        // dynamic shared memory, `ssd_cuda.shared_bytes` of it
    bits16 h_in[P * HS];               // the state entering the chunk (P, NSTATE)
    bits16 c_rows[CHUNK * HS];         // the chunk's C (positions, NSTATE)
    bits16 cb[cb_offset(TILES)];       // the chunk's C.Bᵀ on and below the diagonal tiles
    bits16 x[CHUNK * XS];              // the chunk's x (positions, P)
    float cum[CHUNK];                  // cumsum of dt A over the chunk
    float dt[CHUNK];
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

// Grid (rows x chunks, heads): y (B, L, H, P) over one chunk of one head; warp w computes rows 16w .. 16w + 15 of
// the chunk, from the tiles at and below its 64-row tile. L is whole chunks.
extern "C" __global__ void __launch_bounds__(NT, 1) chunk_scan(
    const bits16* x, const float* dt, const bits16* C, const float* D, const float* cum, const bits16* cb,
    const bits16* carried, bits16* y, int L, int H, int G, int n_chunks, int s_xb, int s_xl, int s_xh, int s_dtb,
    int s_dtl, int s_dth, int s_cb, int s_cl, int s_cg) {
    extern __shared__ __align__(16) unsigned char smem[];
    Shared& s = *reinterpret_cast<Shared*>(smem);
    const int b = blockIdx.x / n_chunks, c = blockIdx.x % n_chunks, h = blockIdx.y, g = h / (H / G);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tq = lane % 4;
    const int r0 = warp * 16 + lane / 4;  // this thread's rows of the chunk: r0 and r0 + 8
    const int lb = warp / 4, l0 = lb * TILE;  // the warp's 64-row tile, its diagonal tile
    const long long pos0 = (long long)c * CHUNK;
    // every input into shared memory in two groups: what the carried-in term needs, then the rest
    load_tile<P, NSTATE>(s.h_in, HS, carried + (((long long)b * n_chunks + c) * H + h) * P * NSTATE, NSTATE);
    load_tile<CHUNK, NSTATE>(s.c_rows, HS, C + b * (long long)s_cb + pos0 * s_cl + g * (long long)s_cg, s_cl);
    const float* cum_chunk = cum + (((long long)b * H + h) * n_chunks + c) * CHUNK;
    for (int p = threadIdx.x; p < CHUNK / 4; p += NT) copy16(&s.cum[4 * p], cum_chunk + 4 * p, true);
    for (int p = threadIdx.x; p < CHUNK; p += NT)
        copy4(&s.dt[p], dt + b * (long long)s_dtb + (pos0 + p) * s_dtl + h * (long long)s_dth);
    copies_issued();
    load_tile<CHUNK, P>(s.x, XS, x + b * (long long)s_xb + pos0 * s_xl + h * (long long)s_xh, s_xl);
    const bits16* cb_chunk = cb + (((long long)b * n_chunks + c) * G + g) * CHUNK * CHUNK;
#pragma unroll
    for (int t = 0; t < TILES; ++t)  // row tile t: 64 rows of 64 (t + 1) columns, 16-byte pieces over the block
        for (int p = threadIdx.x; p < TILE * 8 * (t + 1); p += NT) {
            const int r = p / (8 * (t + 1)), col = p % (8 * (t + 1)) * 8;
            copy16(&s.cb[cb_offset(t) + r * cb_pad(t) + col], cb_chunk + (long long)(t * TILE + r) * CHUNK + col, true);
        }
    copies_issued();
    asm volatile("cp.async.wait_group 1;\n" ::);
    __syncthreads();

    float acc[8][4] = {};
    // C_l . h_in over the 128 states, then times exp(cum_ref): the carried-in term's share of the row scale
#pragma unroll
    for (int ks = 0; ks < NSTATE / 16; ++ks) {
        unsigned a[4];
        load_matrices(a, &s.c_rows[(warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * HS + ks * 16 + (lane >> 4) * 8]);
        mma_row<false>(acc, a, &s.h_in[ks * 16], HS, lane);
    }
    // cum never increases (dt >= 0, A < 0): below the diagonal tile exp(cum_l - cum_s) = exp(cum_l - cum_ref)
    // exp(cum_ref - cum_s), both factors in (0, 1], so those tiles take a column weight and one row scale
    const float cum_ref = s.cum[l0], carried_scale = ex2(cum_ref * LOG2E);
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] *= carried_scale;
    wait_all_copies();
    __syncthreads();
    const int pad = cb_pad(lb);
    const bits16* cb_top = &s.cb[cb_offset(lb) + (r0 - l0) * pad + 2 * tq];  // row r0 of the warp's C.Bᵀ rows
    for (int st = 0; st < lb; ++st) {
#pragma unroll
        for (int ks = 0; ks < TILE / 16; ++ks) {
            const int col = st * TILE + ks * 16 + 2 * tq;  // chunk positions col, col + 1, col + 8, col + 9
            float w[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int sp = col + (e & 1) + (e >> 1) * 8;
                w[e] = ex2((cum_ref - s.cum[sp]) * LOG2E) * s.dt[sp];
            }
            unsigned v[4], a[4];
            load_a(v, cb_top + st * TILE + ks * 16, pad);
            weighted_a(a, v, w, w);
            mma_row<true>(acc, a, &s.x[(st * TILE + ks * 16) * XS], XS, lane);
        }
    }
    const float cum_top = s.cum[r0], cum_bottom = s.cum[r0 + 8];
    const float scale_top = ex2((cum_top - cum_ref) * LOG2E), scale_bottom = ex2((cum_bottom - cum_ref) * LOG2E);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        acc[j][0] *= scale_top, acc[j][1] *= scale_top;
        acc[j][2] *= scale_bottom, acc[j][3] *= scale_bottom;
    }
    // the diagonal tile: the full decay, zero above the diagonal; the warp's rows see its column steps 0 .. w % 4
#pragma unroll
    for (int ks = 0; ks < TILE / 16; ++ks) {
        if (ks > warp % 4) break;
        float w_top[4], w_bottom[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int sp = l0 + ks * 16 + 2 * tq + (e & 1) + (e >> 1) * 8;  // a chunk position
            const float cs = s.cum[sp], step = s.dt[sp];
            w_top[e] = sp <= r0 ? ex2((cum_top - cs) * LOG2E) * step : 0.f;
            w_bottom[e] = sp <= r0 + 8 ? ex2((cum_bottom - cs) * LOG2E) * step : 0.f;
        }
        unsigned v[4], a[4];
        load_a(v, cb_top + l0 + ks * 16, pad);
        weighted_a(a, v, w_top, w_bottom);
        mma_row<true>(acc, a, &s.x[(l0 + ks * 16) * XS], XS, lane);
    }
    // the D skip from x's rows, and y in the model dtype
    const float d_skip = D[h];
    bits16* y_top = y + (((long long)b * L + pos0 + r0) * H + h) * P + 2 * tq;
    bits16* y_bottom = y_top + 8LL * H * P;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const unsigned xt = *(const unsigned*)&s.x[r0 * XS + 8 * j + 2 * tq];
        const unsigned xb = *(const unsigned*)&s.x[(r0 + 8) * XS + 8 * j + 2 * tq];
        *(unsigned*)(y_top + 8 * j) = pack2(acc[j][0] + d_skip * low_half(xt), acc[j][1] + d_skip * high_half(xt));
        *(unsigned*)(y_bottom + 8 * j) = pack2(acc[j][2] + d_skip * low_half(xb), acc[j][3] + d_skip * high_half(xb));
    }
}
