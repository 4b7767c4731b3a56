// Helpers shared by the CUDA C kernels (scan_cuda.cu, ssd_cuda.cu); cuda_c.py puts this text ahead of each
// kernel file before NVRTC compiles it (NVRTC has no include path of ours).
//
// Macro, set by cuda_c.py's callers: HALF_BF16 (the model dtype's elements are bf16, else fp16).
constexpr float LOG2E = 1.4426950408889634f;  // exp(x) = exp2(x log2 e)
typedef unsigned short bits16;                 // an fp16 or bf16 element, converted by the helpers below

__device__ __forceinline__ float half_to_float(bits16 x) {
#if HALF_BF16
    return __uint_as_float((unsigned)x << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
#endif
}
__device__ __forceinline__ bits16 float_to_half(float f) {
    bits16 x;
#if HALF_BF16
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(x) : "f"(f));
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(x) : "f"(f));
#endif
    return x;
}
// approximate exp2 and reciprocal (relative errors ~2^-22 and one ulp), as fastmath.py uses in the Triton kernels
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ float rcp(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) where !pred
__device__ __forceinline__ void copy16(void* smem, const void* gmem, bool pred) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void copies_issued() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void wait_all_copies() { asm volatile("cp.async.wait_all;\n" ::); }
