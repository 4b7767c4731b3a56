// Mamba2 prefill: the SSD's chunk scan (the last of ssd_triton.py's five kernels) in CUDA C, compiled at run time
// by NVRTC for sm_90a (`ssd_cuda.py`); the same contract as `ssd_triton._chunk_scan`:
//   y_l = exp(cum_l) C_l h_in + sum_{s <= l} CB_ls exp(cum_l - cum_s) dt_s x_s + D x_l
//
// A block owns one chunk of one group's heads (grid: rows x chunks, groups x head slices) and runs
// `heads_per_block` heads of the group one after another, a warpgroup (4 warps) per 64-row tile of the chunk.
// The Triton kernel's programs (one 64-row tile of one head each) wait on a chain of dependent loads at 2-3
// programs an SM and read C, C.Bᵀ, the state and x again for every row tile and head (GPU_NOTES.md v10, v23,
// v30). Here C sits in registers and C.Bᵀ in shared memory for all of the block's heads, and each head's state
// and x land in shared memory (cp.async) while the head before it runs.
//
// The products run on Hopper's warpgroup MMA (wgmma m64n64k16, fp32 accumulators): the A operands (C, and C.Bᵀ
// times its decay) from registers, the B operands (the state, x) straight from shared memory through matrix
// descriptors, so a warpgroup reads each B tile once where mma.sync had each of its warps load it (v31). A warp
// holds 16 rows of its warpgroup's tile and all 64 head-dim columns as 8 accumulator tiles of 16 x 8: thread
// (lane) holds rows lane / 4 and lane / 4 + 8, columns 8j + 2 tq and 8j + 2 tq + 1 of tile j, tq = lane % 4
// (the A fragments have mma.sync's m16n8k16 layout). The state and x sit in shared memory as 128-byte rows with
// the 128-byte swizzle the descriptors name (16-byte piece j of row r at piece j ^ (r % 8)); C.Bᵀ's rows, read
// into registers, are padded by 16 bytes so that a fragment load's 8 rows fall on distinct banks.
//
// Macros, set by ssd_cuda.py: HALF_BF16 (x, C, C.Bᵀ, the state and y are bf16, else fp16), CHUNK (tokens a
// chunk: 64, 128 or 256). Fixed shapes: head dim 64, d_state 128 (every Mamba2 model this project runs).
constexpr int P = 64, NSTATE = 128;  // head dim, d_state
constexpr int TILE = 64;             // rows of a warpgroup's tile; positions of a tile below or on the diagonal
constexpr int TILES = CHUNK / TILE;
constexpr int NT = CHUNK * 2;        // threads a block: a warpgroup per 64 rows
constexpr int ROW = 64;              // halves in a swizzled 128-byte shared row
constexpr int HS = NSTATE + 8;       // halves in a padded shared row of C (its staging area)

// Row tile t's rows of C.Bᵀ reach column 64 (t + 1): packed tile after tile, each row padded by 8 halves
__host__ __device__ constexpr int cb_pad(int t) { return TILE * (t + 1) + 8; }
__host__ __device__ constexpr int cb_offset(int t) { return t == 0 ? 0 : cb_offset(t - 1) + TILE * cb_pad(t - 1); }

struct alignas(1024) HeadInputs {  // one head's inputs, double-buffered over the block's heads; the swizzle
                                   // repeats every 1024 bytes, so the swizzled tiles start on such a boundary
    bits16 h_in[2][P * ROW];       // the state entering the chunk (P, NSTATE) as its two (P, 64) column halves
    bits16 x[CHUNK * ROW];         // the chunk's x (positions, P)
    float cum[CHUNK];              // cumsum of dt A over the chunk
    float dt[CHUNK];
    bits16 below[TILES][CHUNK];  // row tile t's column weights below its diagonal, exp(cum[64 t] - cum[s]) dt[s],
                                 // in the model dtype (one packed multiply a pair of C.Bᵀ elements), written and
                                 // read by warpgroup t alone
};
struct Shared {                  // dynamic shared memory from a 1024-byte boundary, `ssd_cuda.shared_bytes` of it
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

// The descriptor of a B operand whose 8-row groups of 128-byte swizzled rows lie 1024 bytes apart from `tile`:
// 16 positions of x (n-major, rows of head-dim columns) or 16 state columns of the state's (P, 64) half (k-major,
// rows of state columns). Both byte offsets are 1024: an operand 64 columns wide is one swizzle atom across,
// so only the offset between its 8-row groups is read, whichever of the two fields the major order reads.
__device__ __forceinline__ unsigned long long operand(const bits16* tile) {
    const unsigned long long at = (unsigned)__cvta_generic_to_shared(tile), groups = 1024 >> 4;
    return ((at & 0x3FFFF) >> 4) | groups << 16 | groups << 32 | 1ull << 62;  // 1 << 62: the 128-byte swizzle
}
// acc (64 x 64 over the warpgroup) += a (64 x 16, this warp's 16 rows in registers) . b (16 x 64 in shared memory,
// n-major: x's rows, or k-major: the state's rows)
template <int N_MAJOR>
__device__ __forceinline__ void wgmma(float (&d)[8][4], const unsigned (&a)[4], unsigned long long b) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_KIND "." MMA_KIND " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "
        "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, 1, 1, 1, %37;\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]),
          "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]),
          "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]),
          "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]),
          "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(N_MAJOR));
}
// Registers written by ordinary instructions (the A operands, acc) become visible to the next wgmmas
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Wait until at most PENDING committed groups are in flight; acc's registers are then the wgmmas' results (the
// empty asm keeps the compiler from reading them earlier)
template <int PENDING>
__device__ __forceinline__ void wgmma_wait(float (&acc)[8][4]) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(PENDING) : "memory");
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(acc[j][e])::"memory");
}
// Shared-memory writes of the generic proxy (cp.async, st.shared) become visible to wgmma's reads (async proxy)
__device__ __forceinline__ void async_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void copy4(void* smem, const void* gmem) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}

// A (ROWS_, WIDTH) tile of halves, global rows `stride` elements apart -> shared rows `pad` halves apart, in 16-byte
// pieces spread over the block; SWIZZLED: 64-half rows whose piece j of row r lands at piece j ^ (r % 8) (the
// 128-byte swizzle the wgmma descriptors name)
template <int ROWS_, int WIDTH, bool SWIZZLED>
__device__ __forceinline__ void load_tile(bits16* dst, int pad, const bits16* src, long long stride) {
    static_assert(!SWIZZLED || WIDTH == ROW, "a swizzled row is one 128-byte atom");
    constexpr int PIECES = WIDTH / 8, TOTAL = ROWS_ * PIECES;
#pragma unroll
    for (int i = 0; i < TOTAL / NT; ++i) {
        const int p = threadIdx.x + i * NT, r = p / PIECES, j = p % PIECES;
        copy16(dst + r * pad + (SWIZZLED ? j ^ (r % 8) : j) * 8, src + r * stride + j * 8, true);
    }
}

// The A operand of one 16-column step (a0..a3) from shared rows `pad` halves apart: rows (row, row + 8),
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

// One head's inputs into `in`, asynchronously (one commit group)
__device__ __forceinline__ void load_head(HeadInputs& in, const bits16* x, const float* dt, const float* cum,
                                          const bits16* carried, int b, int c, int h, int H, int n_chunks, int s_xb,
                                          int s_xl, int s_xh, int s_dtb, int s_dtl, int s_dth) {
    const long long pos0 = (long long)c * CHUNK;
    const bits16* state = carried + (((long long)b * n_chunks + c) * H + h) * P * NSTATE;
    load_tile<P, ROW, true>(in.h_in[0], ROW, state, NSTATE);
    load_tile<P, ROW, true>(in.h_in[1], ROW, state + ROW, NSTATE);
    load_tile<CHUNK, ROW, true>(in.x, ROW, x + b * (long long)s_xb + pos0 * s_xl + h * (long long)s_xh, s_xl);
    const float* cum_chunk = cum + (((long long)b * H + h) * n_chunks + c) * CHUNK;
    for (int p = threadIdx.x; p < CHUNK / 4; p += NT) copy16(&in.cum[4 * p], cum_chunk + 4 * p, true);
    for (int p = threadIdx.x; p < CHUNK; p += NT)
        copy4(&in.dt[p], dt + b * (long long)s_dtb + (pos0 + p) * s_dtl + h * (long long)s_dth);
    copies_issued();
}

// The A operands of one tile below row tile lb's diagonal (4 column steps): this warp's rows of C.Bᵀ from `cb_top`,
// each element times its column's weight (the row scale comes later)
__device__ __forceinline__ void below_operands(unsigned (&a)[4][4], const HeadInputs& in, const bits16* cb_top,
                                               int lb, int st, int lane) {
#pragma unroll
    for (int ks = 0; ks < TILE / 16; ++ks) {
        const int col = st * TILE + ks * 16 + 2 * (lane % 4);  // chunk positions col, col + 1, col + 8, col + 9
        unsigned v[4];
        load_a(v, cb_top + st * TILE + ks * 16, cb_pad(lb));
        const unsigned w01 = *(const unsigned*)&in.below[lb][col], w89 = *(const unsigned*)&in.below[lb][col + 8];
        a[ks][0] = mul2(v[0], w01), a[ks][1] = mul2(v[1], w01), a[ks][2] = mul2(v[2], w89), a[ks][3] = mul2(v[3], w89);
    }
}

// The diagonal tile's A operands: the full decay, zero above the diagonal (this warp's rows r0, r0 + 8 see column
// steps 0 .. sub; its later steps are zero, run because the warpgroup's other rows need them)
__device__ __forceinline__ void diagonal_operands(unsigned (&a)[4][4], const HeadInputs& in, const bits16* cb_top,
                                                  int l0, int r0, int sub, int lane, float cum_top, float cum_bottom) {
#pragma unroll
    for (int ks = 0; ks < TILE / 16; ++ks) {
        if (ks > sub) {
            a[ks][0] = a[ks][1] = a[ks][2] = a[ks][3] = 0u;
            continue;
        }
        float w_top[4], w_bottom[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int sp = l0 + ks * 16 + 2 * (lane % 4) + (e & 1) + (e >> 1) * 8;  // a chunk position
            const float cs = in.cum[sp], step = in.dt[sp];
            w_top[e] = sp <= r0 ? ex2((cum_top - cs) * LOG2E) * step : 0.f;
            w_bottom[e] = sp <= r0 + 8 ? ex2((cum_bottom - cs) * LOG2E) * step : 0.f;
        }
        unsigned v[4];
        load_a(v, cb_top + l0 + ks * 16, cb_pad(l0 / TILE));
        weighted_a(a[ks], v, w_top, w_bottom);
    }
}

__device__ __forceinline__ void scale(float (&acc)[8][4], float top, float bottom) {
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j][0] *= top, acc[j][1] *= top, acc[j][2] *= bottom, acc[j][3] *= bottom;
}

// y's rows of warp `sub` of warpgroup lb (16 rows of row tile lb) for one head: C.h_in (C in registers), the tiles
// below the tile's diagonal, the diagonal tile, the D skip. Every wgmma of the warpgroup runs on all four warps.
__device__ __forceinline__ void head_rows(const HeadInputs& in, const bits16* cb, const unsigned (&c_frag)[8][4],
                                          float d_skip, bits16* y_top, long long row_step, int lb, int sub, int lane) {
    const int tq = lane % 4, l0 = lb * TILE, r0 = l0 + sub * 16 + lane / 4;
    const bits16* cb_top = cb + cb_offset(lb) + (r0 - l0) * cb_pad(lb) + 2 * tq;  // the thread's first C.Bᵀ row
    float acc[8][4] = {};
    unsigned a[4][4];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < NSTATE / 16; ++ks) wgmma<0>(acc, c_frag[ks], operand(&in.h_in[ks / 4][ks % 4 * 16]));
    wgmma_commit();
    if (lb > 0) below_operands(a, in, cb_top, lb, 0, lane);
    // cum never increases (dt >= 0, A < 0): below the diagonal tile exp(cum_l - cum_s) = exp(cum_l - cum_ref)
    // exp(cum_ref - cum_s), both factors in (0, 1], so those tiles take a column weight and one row scale, which
    // the carried-in term's exp(cum_l) shares
    const float cum_ref = in.cum[l0], carried_scale = ex2(cum_ref * LOG2E);
    wgmma_wait<0>(acc);
    scale(acc, carried_scale, carried_scale);
#pragma unroll
    for (int st = 0; st < TILES - 1; ++st) {
        if (st >= lb) break;  // the same for the whole warpgroup
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < TILE / 16; ++ks) wgmma<1>(acc, a[ks], operand(&in.x[(st * TILE + ks * 16) * ROW]));
        wgmma_commit();
        if (st + 1 < lb) {
            wgmma_wait<0>(acc);  // a is free again
            below_operands(a, in, cb_top, lb, st + 1, lane);
        }
    }
    const float cum_top = in.cum[r0], cum_bottom = in.cum[r0 + 8];
    wgmma_wait<0>(acc);  // a is free: the diagonal's operands reuse it (a second set spilled at 128 registers)
    diagonal_operands(a, in, cb_top, l0, r0, sub, lane, cum_top, cum_bottom);
    scale(acc, ex2((cum_top - cum_ref) * LOG2E), ex2((cum_bottom - cum_ref) * LOG2E));
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < TILE / 16; ++ks) wgmma<1>(acc, a[ks], operand(&in.x[(l0 + ks * 16) * ROW]));
    wgmma_commit();
    wgmma_wait<0>(acc);
    // the D skip from x's (swizzled) rows, and y in the model dtype
    bits16* y_bottom = y_top + 8 * row_step;
    const bits16 *x_top = &in.x[r0 * ROW + 2 * tq], *x_bottom = &in.x[(r0 + 8) * ROW + 2 * tq];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const unsigned xt = *(const unsigned*)&x_top[(j ^ (r0 % 8)) * 8];
        const unsigned xb = *(const unsigned*)&x_bottom[(j ^ ((r0 + 8) % 8)) * 8];
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
    const unsigned misalign = (unsigned)__cvta_generic_to_shared(smem) % 1024;
    Shared& s = *reinterpret_cast<Shared*>(smem + (1024 - misalign) % 1024);
    const int b = blockIdx.x / n_chunks, c = blockIdx.x % n_chunks, slices = H / G / heads_per_block;
    const int g = blockIdx.y / slices, h_first = g * (H / G) + blockIdx.y % slices * heads_per_block;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, lb = warp / 4, sub = warp % 4;
    const long long pos0 = (long long)c * CHUNK;
    load_tile<CHUNK, NSTATE, false>(s.c_rows, HS, C + b * (long long)s_cb + pos0 * s_cl + g * (long long)s_cg, s_cl);
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
    const int row = warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
#pragma unroll
    for (int ks = 0; ks < NSTATE / 16; ++ks) load_matrices(c_frag[ks], &s.c_rows[row * HS + ks * 16 + (lane >> 4) * 8]);
    __syncthreads();  // C's staging area becomes the head buffers
    load_head(s.head[0], x, dt, cum, carried, b, c, h_first, H, n_chunks, s_xb, s_xl, s_xh, s_dtb, s_dtl, s_dth);
    for (int i = 0; i < heads_per_block; ++i) {
        HeadInputs& in = s.head[i & 1];
        wait_all_copies();
        async_proxy_fence();
        __syncthreads();  // head i has landed; every warp is done with head i - 1 and its buffer
        if (i + 1 < heads_per_block)
            load_head(s.head[(i + 1) & 1], x, dt, cum, carried, b, c, h_first + i + 1, H, n_chunks, s_xb, s_xl,
                      s_xh, s_dtb, s_dtl, s_dth);
        if (lb > 0) {  // warpgroup lb's own row of the table, behind a barrier of its 4 warps alone (id lb: 1 .. 3)
            for (int sp = threadIdx.x % 128; sp < lb * TILE; sp += 128)
                in.below[lb][sp] = float_to_half(ex2((in.cum[lb * TILE] - in.cum[sp]) * LOG2E) * in.dt[sp]);
            asm volatile("bar.sync %0, 128;\n" ::"r"(lb) : "memory");
        }
        const int h = h_first + i, r0 = warp * 16 + lane / 4;
        head_rows(in, s.cb, c_frag, D[h], y + (((long long)b * L + pos0 + r0) * H + h) * P + 2 * (lane % 4),
                  (long long)H * P, lb, sub, lane);
    }
}
