// Mamba1 prefill scan in CUDA C, compiled at run time by NVRTC (`scan_cuda.py`); twin of `ops.selective_scan`.
//
// Same split as the Triton kernels in scan.py: `segment_end` runs every time segment but the last from a zero
// state to its end state, then `scan` folds the earlier segments' ends into its start state and walks its
// segment. A block owns BD channels of one row; a channel's 16 states sit 4 a lane on 4 lanes, so a thread's
// recurrence is 4 independent in-register FMA chains. What Triton could not express: each chunk's inputs go
// global -> shared memory by cp.async one chunk ahead (no registers held for them), every token reads its inputs
// from shared memory with immediate offsets, and the per-token sums C.h cross the 4 lanes as one reduce-scatter per
// chunk. That keeps a thread at ~80 registers (Triton's kernel: 126-160), so more warps share an SM to hide the
// exp2 and FMA latencies (GPU_NOTES.md v29). `segment_end` widens each chunk's B to fp32 once, by the whole block;
// `scan`, whose shared-memory reads bound it, reads its B and C as halves, one 16-byte load a token (`interleave`).
//
// Macros, set by scan_cuda.py: SCAN_T tokens a chunk, SCAN_BD channels a block, HALF_BF16 (u, z, B, C, y are
// bf16, else fp16), DT_HALF (step sizes fp16, else fp32), STATE_KIND (final states fp32 0, fp16 1, bf16 2).
#define NS 16  // states a channel
#define SPT 4  // states a thread
constexpr int T = SCAN_T, BD = SCAN_BD, LPC = NS / SPT, NT = BD * LPC;  // LPC lanes a channel, NT threads a block

__device__ __forceinline__ float fp16_to_float(bits16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
}
#if DT_HALF
typedef bits16 step_t;  // fp16 whatever the model dtype (prefill.dt_proj_softplus)
__device__ __forceinline__ float step_to_float(step_t x) { return fp16_to_float(x); }
#else
typedef float step_t;
__device__ __forceinline__ float step_to_float(step_t x) { return x; }
#endif
#if STATE_KIND == 0
typedef float state_t;
__device__ __forceinline__ state_t to_state(float f) { return f; }
#else
typedef bits16 state_t;
__device__ __forceinline__ state_t to_state(float f) {
    bits16 x;
#if STATE_KIND == 2
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(x) : "f"(f));
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(x) : "f"(f));
#endif
    return x;
}
#endif
__device__ __forceinline__ void wait_all_but_last_copies() { asm volatile("cp.async.wait_group 1;\n" ::); }

// One chunk's inputs in shared memory, as they are in global memory (tokens are rows)
struct Chunk {
    bits16 u[T][BD];
    step_t dt[T][BD];
    bits16 z[T][BD];
    bits16 B[T][NS];
    bits16 C[T][NS];
};

// T rows of WIDTH elements of ESZ bytes from token t0 into dst, in 16-byte pieces spread over the block's threads
// (the loop is unrolled: its counts are constants); tokens past L are zero-filled, so dt = 0 keeps the state.
template <int WIDTH, int ESZ>
__device__ __forceinline__ void load_rows(void* dst, const char* src, long long stride_bytes, int t0, int L) {
    constexpr int PIECES = WIDTH * ESZ / 16, TOTAL = T * PIECES;
#pragma unroll
    for (int i = 0; i < (TOTAL + NT - 1) / NT; ++i) {
        const int p = threadIdx.x + i * NT;
        if (TOTAL % NT == 0 || p < TOTAL) {
            const int r = p / PIECES, col = (p % PIECES) * 16, t = t0 + r;
            copy16((char*)dst + r * WIDTH * ESZ + col, src + (long long)min(t, L - 1) * stride_bytes + col, t < L);
        }
    }
}

// Four halves (two 32-bit words, the lower half first) -> fp32
__device__ __forceinline__ float4 widen4(unsigned lo, unsigned hi) {
    return make_float4(half_to_float((bits16)(lo & 0xffffu)), half_to_float((bits16)(lo >> 16)),
                       half_to_float((bits16)(hi & 0xffffu)), half_to_float((bits16)(hi >> 16)));
}

// (T, NS) half -> fp32, four elements a thread a step
__device__ __forceinline__ void widen(float* dst, const bits16* src) {
    constexpr int QUADS = T * NS / 4;
#pragma unroll
    for (int i = 0; i < (QUADS + NT - 1) / NT; ++i) {
        const int p = threadIdx.x + i * NT;
        if (QUADS % NT == 0 || p < QUADS) {
            const uint2 v = *(const uint2*)&src[4 * p];
            *(float4*)&dst[4 * p] = widen4(v.x, v.y);
        }
    }
}

// (T, NS) B and C -> per token and lane of a channel, that lane's 4 states of B then of C (8 halves, 16 bytes), so
// a token's step reads its B and C in one 16-byte load: half the shared-memory wavefronts of two fp32 float4 loads
// (a warp's 16-byte load is 4 wavefronts, whatever it broadcasts), for 8 conversions a token a thread. Those loads
// bound `scan` (GPU_NOTES.md v33: ncu, L1 throughput 90 % before, 62 % after); in the MUFU-bound `segment_end` the
// conversions cost more than they save.
__device__ __forceinline__ void interleave(uint4 (*dst)[LPC], const bits16 (*B)[NS], const bits16 (*C)[NS]) {
#pragma unroll
    for (int i = 0; i < (T * LPC + NT - 1) / NT; ++i) {
        const int p = threadIdx.x + i * NT, t = p / LPC, q = p % LPC;
        if ((T * LPC) % NT == 0 || p < T * LPC) {
            const uint2 b = *(const uint2*)&B[t][SPT * q], c = *(const uint2*)&C[t][SPT * q];
            dst[t][q] = make_uint4(b.x, b.y, c.x, c.y);
        }
    }
}

// A row's chunk inputs: pointers at the row's first token and the block's first channel, token strides in bytes
struct Rows {
    const char *u, *dt, *z, *B, *C;
    long long su, sdt, sz, sB, sC;  // token strides in bytes
};

__device__ __forceinline__ void load_chunk(Chunk& c, const Rows& r, int t0, int L, bool outputs) {
    load_rows<BD, 2>(c.u, r.u, r.su, t0, L);
    load_rows<BD, sizeof(step_t)>(c.dt, r.dt, r.sdt, t0, L);
    load_rows<NS, 2>(c.B, r.B, r.sB, t0, L);
    if (outputs) {
        load_rows<BD, 2>(c.z, r.z, r.sz, t0, L);
        load_rows<NS, 2>(c.C, r.C, r.sC, t0, L);
    }
    copies_issued();
}

// h = exp(dt A) h + x for this thread's states (A log2 e in a): a token's step (x = dt u B), or a whole segment's
// decay and end state when folding segments (dt = the segment's summed step sizes)
__device__ __forceinline__ void decay_add(float* h, const float* a, float dt, float4 x) {
    h[0] = ex2(dt * a[0]) * h[0] + x.x;
    h[1] = ex2(dt * a[1]) * h[1] + x.y;
    h[2] = ex2(dt * a[2]) * h[2] + x.z;
    h[3] = ex2(dt * a[3]) * h[3] + x.w;
}
__device__ __forceinline__ float4 scaled(float4 v, float s) { return make_float4(s * v.x, s * v.y, s * v.z, s * v.w); }

// This thread's channel c and its lane q within the channel; A log2 e for its states (SPT,)
__device__ __forceinline__ void channel_of_thread(const float* A, int d0, int& c, int& q, float* a) {
    c = threadIdx.x / LPC;
    q = threadIdx.x % LPC;
    const float4 Aq = *(const float4*)&A[(d0 + c) * NS + SPT * q];
    a[0] = Aq.x * LOG2E, a[1] = Aq.y * LOG2E, a[2] = Aq.z * LOG2E, a[3] = Aq.w * LOG2E;
}

// Grid (channel blocks, segments but the last, rows): each segment's end state from a zero start (rows, segments
// - 1, Di, NS) and its summed dt (rows, segments - 1, Di), for `scan` to fold.
extern "C" __global__ void __launch_bounds__(NT) segment_end(
    const bits16* u, const step_t* dt, const float* A, const bits16* Bm, float* end, float* dt_sum,
    int L, int Di, int seg_len, int sub, int sul, int sdb, int sdl, int sbb, int sbl) {
    __shared__ __align__(16) Chunk chunks[2];
    __shared__ __align__(16) float Bf[T][NS];
    const int d0 = blockIdx.x * BD, seg = blockIdx.y, row = blockIdx.z;
    int c, q;
    float a[SPT], h[SPT] = {}, dsum = 0.f;
    channel_of_thread(A, d0, c, q, a);
    const Rows r = {(const char*)(u + (long long)row * sub + d0), (const char*)(dt + (long long)row * sdb + d0),
                    nullptr, (const char*)(Bm + (long long)row * sbb), nullptr,
                    2LL * sul, (long long)sizeof(step_t) * sdl, 0, 2LL * sbl, 0};
    const int t_start = seg * seg_len, t_end = min(t_start + seg_len, L);
    load_chunk(chunks[0], r, t_start, L, false);
    for (int t0 = t_start, k = 0; t0 < t_end; t0 += T, ++k) {
        Chunk& ck = chunks[k & 1];
        __syncthreads();  // the other buffer's last readers are done
        load_chunk(chunks[(k & 1) ^ 1], r, t0 + T, L, false);
        wait_all_but_last_copies();
        __syncthreads();  // this chunk has landed, every thread's copies
        widen(&Bf[0][0], &ck.B[0][0]);
        __syncthreads();
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float dtv = step_to_float(ck.dt[t][c]), dtu = dtv * half_to_float(ck.u[t][c]);
            const float4 b = *(const float4*)&Bf[t][SPT * q];
            dsum += dtv;
            decay_add(h, a, dtv, scaled(b, dtu));
        }
    }
    wait_all_copies();
    const long long at = ((long long)row * gridDim.y + seg) * Di + d0 + c;
    *(float4*)&end[at * NS + SPT * q] = make_float4(h[0], h[1], h[2], h[3]);
    if (q == 0) dt_sum[at] = dsum;
}

// One round of the reduce-scatter of the per-token partial sums over a channel's lanes: lanes with bit M keep
// the upper half of the LEN tokens left, the others the lower, each adding its partner's copy of its half.
template <int M, int LEN>
__device__ __forceinline__ void reduce_scatter(float* partial, int q, int& first) {
    const bool upper = q & M;
#pragma unroll
    for (int i = 0; i < LEN / 2; ++i) {
        const float send = upper ? partial[i] : partial[i + LEN / 2];
        const float keep = upper ? partial[i + LEN / 2] : partial[i];
        partial[i] = keep + __shfl_xor_sync(0xffffffffu, send, M);
    }
    if (upper) first += LEN / 2;
    if constexpr (M > 1) reduce_scatter<M / 2, LEN / 2>(partial, q, first);
}

// Grid (channel blocks, segments, rows): y (rows, L, Di) = (C.h + D u) silu(z) over one segment; the last
// segment's block stores the final state into states[slots[row]] (use_slots) or states[row], in state_t.
extern "C" __global__ void __launch_bounds__(NT) scan(
    const bits16* u, const step_t* dt, const float* A, const bits16* Bm, const bits16* Cm, const float* Dskip,
    const bits16* z, bits16* y, state_t* states, const long long* slots, int use_slots, const float* end,
    const float* dt_sum, int L, int Di, int seg_len, int sub, int sul, int sdb, int sdl, int sbb, int sbl, int scb,
    int scl, int szb, int szl, int syb, int syl, int sstate) {
    __shared__ __align__(16) Chunk chunks[2];
    __shared__ __align__(16) uint4 bc[T][LPC];  // B and C by token and lane (`interleave`)
    // C.h per (token, channel); token t's channel c at column c ^ (SWIZZLE (t / (T / LPC))): a channel's lanes write
    // T / LPC tokens apart, which without the swizzle puts them on one bank (LPC-way conflicts)
    __shared__ __align__(16) float ys[T][BD];
    constexpr int SWIZZLE = 32 / LPC;  // a warp's channels
    static_assert(BD % 32 == 0, "the swizzle keeps a channel within its 32-column group");
    const int d0 = blockIdx.x * BD, seg = blockIdx.y, row = blockIdx.z;
    int c, q;
    float a[SPT], h[SPT] = {};
    channel_of_thread(A, d0, c, q, a);
    for (int j = 0; j < seg; ++j) {  // the end states of the segments before this one, carried through the later ones
        const long long at = ((long long)row * (gridDim.y - 1) + j) * Di + d0 + c;
        const float4 e = *(const float4*)&end[at * NS + SPT * q];
        decay_add(h, a, dt_sum[at], e);
    }
    // the output stage: each thread one token row of 8 channels a step (16-byte stores)
    constexpr int PIECES = BD / 8;
    float Dl[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) Dl[j] = Dskip[d0 + (threadIdx.x % PIECES) * 8 + j];
    const Rows r = {(const char*)(u + (long long)row * sub + d0), (const char*)(dt + (long long)row * sdb + d0),
                    (const char*)(z + (long long)row * szb + d0), (const char*)(Bm + (long long)row * sbb),
                    (const char*)(Cm + (long long)row * scb),
                    2LL * sul, (long long)sizeof(step_t) * sdl, 2LL * szl, 2LL * sbl, 2LL * scl};
    bits16* y_row = y + (long long)row * syb + d0;
    const int t_start = seg * seg_len, t_end = min(t_start + seg_len, L);
    load_chunk(chunks[0], r, t_start, L, true);
    for (int t0 = t_start, k = 0; t0 < t_end; t0 += T, ++k) {
        Chunk& ck = chunks[k & 1];
        __syncthreads();  // the other buffer's last readers (the previous output stage) are done
        load_chunk(chunks[(k & 1) ^ 1], r, t0 + T, L, true);
        wait_all_but_last_copies();
        __syncthreads();
        interleave(bc, ck.B, ck.C);
        __syncthreads();
        float partial[T];  // this lane's 4 states' share of C.h, per token
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float dtv = step_to_float(ck.dt[t][c]), dtu = dtv * half_to_float(ck.u[t][c]);
            const uint4 v = bc[t][q];
            const float4 b = widen4(v.x, v.y), cc = widen4(v.z, v.w);
            decay_add(h, a, dtv, scaled(b, dtu));
            partial[t] = cc.x * h[0] + cc.y * h[1] + cc.z * h[2] + cc.w * h[3];
        }
        int first = 0;  // this lane ends with the whole sums of tokens first .. first + T / LPC - 1
        reduce_scatter<LPC / 2, T>(partial, q, first);
#pragma unroll
        for (int i = 0; i < T / LPC; ++i) ys[first + i][c ^ (SWIZZLE * q)] = partial[i];  // first = q T / LPC
        __syncthreads();
#pragma unroll
        for (int i = 0; i < (T * PIECES + NT - 1) / NT; ++i) {
            const int p = threadIdx.x + i * NT, tr = p / PIECES, col = (p % PIECES) * 8, t = t0 + tr;
            if ((T * PIECES % NT == 0 || p < T * PIECES) && t < L) {
                const uint4 uu = *(const uint4*)&ck.u[tr][col], zz = *(const uint4*)&ck.z[tr][col];
                const bits16 *uh = (const bits16*)&uu, *zh = (const bits16*)&zz;
                const int at = col ^ (SWIZZLE * (tr / (T / LPC)));  // the writer's swizzle
                const float4 s0 = *(const float4*)&ys[tr][at], s1 = *(const float4*)&ys[tr][at + 4];
                const float sums[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
                uint4 out;
                bits16* oh = (bits16*)&out;
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const float zv = half_to_float(zh[j]), gate = zv * rcp(1.f + ex2(-LOG2E * zv));  // silu(z)
                    oh[j] = float_to_half((sums[j] + Dl[j] * half_to_float(uh[j])) * gate);
                }
                *(uint4*)&y_row[(long long)t * syl + col] = out;
            }
        }
    }
    wait_all_copies();
    if (seg == gridDim.y - 1) {
        const long long dst = use_slots ? slots[row] : row;
        state_t* s = states + dst * sstate + (long long)(d0 + c) * NS + SPT * q;
#pragma unroll
        for (int j = 0; j < SPT; ++j) s[j] = to_state(h[j]);
    }
}
