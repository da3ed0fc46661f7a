// Stand-in for <cuda_runtime.h> in the emulated-CUDA test build (tools/test_cuda_on_cpu.sh): the
// kernels of csrc/kernels and the launchers of csrc/cuda compile with g++ and run on the CPU. Each
// CUDA thread is a fiber (emulation/simt.h); barriers and warp shuffles wait until every
// participating thread has arrived, so lanes of a warp do not run in lockstep, and a barrier or
// shuffle that cannot complete is reported (with where each thread waits) instead of hanging.
// Only what the project's kernels use is here; never part of the installed extension.
#pragma once

#ifndef UVIREID_EMULATION
#error "csrc/emulation is the emulated-CUDA test build only (define UVIREID_EMULATION)"
#endif

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "simt.h"

// ---------------------------------------------------------------- qualifiers
#define __host__
#define __device__
// Kernels are defined in headers that several translation units include: inline keeps one copy.
#define __global__ inline
#define __forceinline__ inline __attribute__((always_inline))
// Blocks of a launch run one after another on this OS thread, so one static copy per variable is
// one block's shared memory (thread_local: launches from different OS threads stay apart).
#define __shared__ static thread_local
#define __restrict__ __restrict

using std::isfinite;

// ---------------------------------------------------------------- built-in variables
#define threadIdx (::uvireid::emu::thread_index())
#define blockIdx (::uvireid::emu::block_index())
#define blockDim (::uvireid::emu::block_dim())
#define gridDim (::uvireid::emu::grid_dim())
constexpr int warpSize = ::uvireid::emu::kWarpSize;

// ---------------------------------------------------------------- barriers and warp intrinsics
// The trailing defaults record the call site, so a barrier or shuffle that cannot complete names it.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::uvireid::emu::block_barrier(::uvireid::emu::BlockOp::Sync, 0, file, line);
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::uvireid::emu::block_barrier(::uvireid::emu::BlockOp::Or, pred, file, line);
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::uvireid::emu::block_barrier(::uvireid::emu::BlockOp::And, pred, file, line);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::uvireid::emu::block_barrier(::uvireid::emu::BlockOp::Count, pred, file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::uvireid::emu::warp_exchange(::uvireid::emu::WarpOp::Sync, mask, 0, 0, ::uvireid::emu::kWarpSize, file, line);
}

namespace uvireid {
namespace emu {
template <class T>
T warp_shuffle(WarpOp op, unsigned mask, T v, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of an 8-byte value at most");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(op, mask, bits, arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace emu
}  // namespace uvireid

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = warpSize, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return ::uvireid::emu::warp_shuffle(::uvireid::emu::WarpOp::Idx, mask, v, src, width, file, line);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                 int line = __builtin_LINE()) {
  return ::uvireid::emu::warp_shuffle(::uvireid::emu::WarpOp::Up, mask, v, static_cast<int>(delta), width, file, line);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize, const char* file = __builtin_FILE(),
                   int line = __builtin_LINE()) {
  return ::uvireid::emu::warp_shuffle(::uvireid::emu::WarpOp::Down, mask, v, static_cast<int>(delta), width, file,
                                      line);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  return ::uvireid::emu::warp_shuffle(::uvireid::emu::WarpOp::Xor, mask, v, lane_mask, width, file, line);
}

// ---------------------------------------------------------------- atomics
// Device atomics are relaxed; the CAS loops give the operations the builtins lack (float add, min, max).
namespace uvireid {
namespace emu {
template <class T, class F>
T atomic_update(T* addr, F f) {
  T old = __atomic_load_n(addr, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(addr, &old, f(old), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
T atomic_update_float(T* addr, T v) {  // float/double add through their bits
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* b = reinterpret_cast<Bits*>(addr);
  return std::bit_cast<T>(atomic_update(b, [v](Bits old) { return std::bit_cast<Bits>(std::bit_cast<T>(old) + v); }));
}
}  // namespace emu
}  // namespace uvireid

#define UVIREID_EMU_INT_ATOMICS(T)                                                                           \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }                      \
  inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }                      \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }                        \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }                      \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }                      \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }                    \
  inline T atomicMin(T* a, T v) {                                                                           \
    return ::uvireid::emu::atomic_update(a, [v](T o) { return v < o ? v : o; });                            \
  }                                                                                                         \
  inline T atomicMax(T* a, T v) {                                                                           \
    return ::uvireid::emu::atomic_update(a, [v](T o) { return v > o ? v : o; });                            \
  }                                                                                                         \
  inline T atomicCAS(T* a, T expected, T desired) {                                                         \
    __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);          \
    return expected;                                                                                        \
  }
UVIREID_EMU_INT_ATOMICS(int)
UVIREID_EMU_INT_ATOMICS(unsigned int)
UVIREID_EMU_INT_ATOMICS(unsigned long long)
UVIREID_EMU_INT_ATOMICS(long long)
#undef UVIREID_EMU_INT_ATOMICS
inline float atomicAdd(float* a, float v) { return ::uvireid::emu::atomic_update_float(a, v); }
inline double atomicAdd(double* a, double v) { return ::uvireid::emu::atomic_update_float(a, v); }

// ---------------------------------------------------------------- device math
inline unsigned int __float_as_uint(float v) { return std::bit_cast<unsigned int>(v); }
inline float __uint_as_float(unsigned int v) { return std::bit_cast<float>(v); }
inline float __double2float_rd(double v) {  // round toward -Inf: nearest, stepped down when above
  float f = static_cast<float>(v);
  if (static_cast<double>(f) > v) f = std::nextafter(f, -INFINITY);
  return f;
}
inline float __double2float_ru(double v) {
  float f = static_cast<float>(v);
  if (static_cast<double>(f) < v) f = std::nextafter(f, INFINITY);
  return f;
}

// ---------------------------------------------------------------- runtime API (streams are synchronous)
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind);
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t = nullptr) {
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
// The last launch's configuration error (kernels that cannot complete throw from the launch).
inline cudaError_t cudaGetLastError() { return static_cast<cudaError_t>(::uvireid::emu::take_last_error()); }
inline const char* cudaGetErrorString(cudaError_t e) { return ::uvireid::emu::error_string(static_cast<int>(e)); }

namespace uvireid {
namespace emu {
// Runs kernel(args...) over grid x block threads; returns after every thread has finished.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args&&... args) {
  struct Call {
    void (*kernel)(Params...);
    std::tuple<std::decay_t<Params>...> params;
    static void run(void* self) {
      Call* c = static_cast<Call*>(self);
      std::apply(c->kernel, c->params);  // each thread gets its own copies of the parameters
    }
  };
  Call call{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  run_grid(&Call::run, &call, reinterpret_cast<const void*>(kernel), grid, block);
}
}  // namespace emu
}  // namespace uvireid
