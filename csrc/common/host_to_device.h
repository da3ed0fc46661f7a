// Copy a host vector of int64 (or double) into a 1-D tensor on the device of `like`.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstring>
#include <vector>

namespace uvireid {

template <typename V>
inline torch::stable::Tensor host_to_device(const std::vector<V>& v, const torch::stable::Tensor& like,
                                            torch::headeronly::ScalarType dtype) {
  torch::stable::Tensor h = torch::stable::empty({static_cast<int64_t>(v.size())}, dtype, std::nullopt,
                                                 torch::stable::Device(torch::headeronly::DeviceType::CPU));
  if (!v.empty()) std::memcpy(h.mutable_data_ptr(), v.data(), v.size() * sizeof(V));
  return torch::stable::to(h, like.device());
}

}  // namespace uvireid
