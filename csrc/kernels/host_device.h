// UVIREID_HD marks the torch-free helpers both backends share (host and device under nvcc, plain
// inline functions for the C++ compiler). UVIREID_DEVICE_CODE is defined where kernels compile:
// under nvcc, and in the emulated-CUDA test build (csrc/emulation), which includes <cuda_runtime.h>.
#pragma once

#if defined(__CUDACC__)
#define UVIREID_HD __host__ __device__ __forceinline__
#else
#define UVIREID_HD inline
#endif

// Host helpers that must inline into each CPU target clone of their caller (else the clone calls
// the baseline build of the helper).
#if defined(_MSC_VER)
#define UVIREID_ALWAYS_INLINE __forceinline
#else
#define UVIREID_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

#if defined(__CUDACC__) || defined(UVIREID_EMULATION)
#define UVIREID_DEVICE_CODE 1
#include <cuda_runtime.h>
#endif
