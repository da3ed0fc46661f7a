// The dispatch keys the two backends register their kernels under. Normally CPU kernels (csrc/cpu)
// under CPU and CUDA launchers (csrc/cuda) under CUDA. In the emulated-CUDA test build
// (UVIREID_EMULATION, tools/test_cuda_on_cpu.sh) the CUDA launchers run on CPU tensors and take the
// CPU key; the CPU kernels are compiled (the launchers share their checks) but not registered.
#pragma once

#include <torch/csrc/stable/library.h>

// The extra level expands the key macro before STABLE_TORCH_LIBRARY_IMPL pastes it into names.
#define UVIREID_LIBRARY_IMPL_(ns, key, m) STABLE_TORCH_LIBRARY_IMPL(ns, key, m)
#define UVIREID_LIBRARY_IMPL_UNUSED_(line, m) UVIREID_LIBRARY_IMPL_UNUSED2_(line, m)
#define UVIREID_LIBRARY_IMPL_UNUSED2_(line, m) \
  [[maybe_unused]] static void uvireid_unregistered_##line(torch::stable::detail::StableLibrary& m)

#ifdef UVIREID_EMULATION
#define UVIREID_CUDA_LIBRARY_IMPL(m) UVIREID_LIBRARY_IMPL_(uvireid_ext, CPU, m)
#define UVIREID_CPU_LIBRARY_IMPL(m) UVIREID_LIBRARY_IMPL_UNUSED_(__LINE__, m)
#else
#define UVIREID_CUDA_LIBRARY_IMPL(m) UVIREID_LIBRARY_IMPL_(uvireid_ext, CUDA, m)
#define UVIREID_CPU_LIBRARY_IMPL(m) UVIREID_LIBRARY_IMPL_(uvireid_ext, CPU, m)
#endif
