// The SIMT scheduler behind emulation/cuda_runtime.h: blocks of a grid run one after another; the
// threads of a block are fibers, resumed in the order UVIREID_EMU_SCHEDULE names (forward,
// reverse or random, seeded by UVIREID_EMU_SEED), each running until it waits at a barrier or a
// warp intrinsic or finishes. A barrier releases when every thread of the block waits at the same
// one; a warp intrinsic when every lane of its mask waits at the same one with the same mask. When
// no thread can run and some have not finished, the launch throws, naming where each thread waits.
#pragma once

#include <bit>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace uvireid {
namespace emu {

constexpr int kWarpSize = 32;

enum class BlockOp : uint8_t { Sync, Or, And, Count };
enum class WarpOp : uint8_t { Sync, Idx, Up, Down, Xor };

const uint3& thread_index();
const uint3& block_index();
const dim3& block_dim();
const dim3& grid_dim();

// Called by the intrinsics from inside a kernel: wait for the block / the lanes of `mask`, then
// return the barrier's reduction / the value this lane receives.
int block_barrier(BlockOp op, int pred, const char* file, int line);
uint64_t warp_exchange(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);

// Runs body(ctx) as every thread of the grid; `kernel` only names the kernel in error messages.
// A bad configuration sets the error cudaGetLastError returns; a kernel that cannot complete throws.
void run_grid(void (*body)(void*), void* ctx, const void* kernel, dim3 grid, dim3 block);

int take_last_error();
const char* error_string(int error);

}  // namespace emu
}  // namespace uvireid
