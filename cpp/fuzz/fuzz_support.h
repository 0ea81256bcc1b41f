// What the fuzz targets share: the passes a load runs, and a read of every byte a tensor views so
// AddressSanitizer sees any view that points outside its owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "ir/ir.h"
#include "passes/pass_manager.h"

namespace onnx2fx::fuzz {

// The passes `_core.load_model(run_passes=True)` runs, then dead-code elimination.
inline void run_load_passes(Model& model) {
  PassManager().add("topological_sort").add("check_graph").add("dead_code_elimination").run(*model.graph);
}

// Sums every byte of every tensor of `graph` and its subgraphs (the result only defeats the optimizer).
inline std::uint64_t touch(const Graph& graph, int depth = 0) {
  std::uint64_t sum = 0;
  const auto touch_tensor = [&](const Tensor& tensor) {
    for (const std::byte b : tensor.data) sum += static_cast<std::uint64_t>(b);
    for (const std::string& s : tensor.strings) sum += s.size();
  };
  for (const Tensor& tensor : graph.initializers) touch_tensor(tensor);
  for (const auto& node : graph.nodes)
    for (const Attribute& attribute : node->attributes) {
      if (attribute.t) touch_tensor(*attribute.t);
      for (const Tensor& tensor : attribute.tensors) touch_tensor(tensor);
      if (attribute.g) sum += touch(*attribute.g, depth + 1);
      for (const auto& g : attribute.graphs) sum += touch(*g, depth + 1);
    }
  return sum;
}

// A private scratch folder, created once per process and removed at exit.
inline const std::filesystem::path& scratch_folder() {
  static const std::filesystem::path folder = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "onnx2fx_fuzz_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    std::atexit([] { std::error_code ignored; std::filesystem::remove_all(scratch_folder(), ignored); });
    return std::filesystem::path(pattern);
  }();
  return folder;
}

}  // namespace onnx2fx::fuzz
