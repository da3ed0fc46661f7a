// Host version of the one cub::DeviceRadixSort call the launchers make (emulated-CUDA test build
// only), with CUB's ordering: a stable sort by the key bits [begin_bit, end_bit) (signed keys with
// the sign bit flipped first, as CUB's radix order does); bits outside the range do not order.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <type_traits>
#include <vector>

namespace cub {

struct DeviceRadixSort {
  template <class Key, class Value, class NumItems>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const Key* keys_in, Key* keys_out,
                               const Value* values_in, Value* values_out, NumItems num_items, int begin_bit = 0,
                               int end_bit = static_cast<int>(sizeof(Key) * 8), cudaStream_t = nullptr) {
    static_assert(std::is_integral_v<Key>, "the emulated SortPairs orders integer keys");
    if (temp == nullptr) {
      temp_bytes = 1;
      return cudaSuccess;
    }
    if (begin_bit < 0 || end_bit > static_cast<int>(sizeof(Key) * 8) || begin_bit > end_bit) return cudaErrorInvalidValue;
    using U = std::make_unsigned_t<Key>;
    const U flip = std::is_signed_v<Key> ? U(U(1) << (sizeof(Key) * 8 - 1)) : U(0);
    const int bits = end_bit - begin_bit;
    const U mask = bits >= static_cast<int>(sizeof(Key) * 8) ? U(~U(0)) : U((U(1) << bits) - 1);
    auto digit = [&](Key k) { return U((U(static_cast<U>(k) ^ flip) >> begin_bit) & mask); };
    std::vector<size_t> order(static_cast<size_t>(num_items));
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return digit(keys_in[a]) < digit(keys_in[b]); });
    std::vector<Key> k(order.size());
    std::vector<Value> v(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
      k[i] = keys_in[order[i]];
      v[i] = values_in[order[i]];
    }
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
    return cudaSuccess;
  }
};

}  // namespace cub
