// Pieces shared by the writers of quantized models (QDQ, fixed-point, QOperator): integers stored
// in quantized types, unique names, raw tensor messages, and the atomic output file.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include "ir/data_type.h"
#include "ir/ir.h"
#include "onnx/schema.h"
#include "writer/qdq_plan.h"
#include "writer/wire_writer.h"

namespace onnx2fx::quant_writer {

namespace fs = std::filesystem;

// The lowest IR version that allows opset `opset` of the default domain.
inline std::int64_t min_ir_version(std::int64_t opset) {
  constexpr std::pair<std::int64_t, std::int64_t> kTable[] = {  // {first opset, IR version}
      {25, 13}, {24, 12}, {23, 11}, {21, 10}, {19, 9}, {15, 8}, {12, 7}, {11, 6}, {10, 5}, {9, 4}};
  for (const auto& [first, ir] : kTable)
    if (opset >= first) return ir;
  return 3;
}

inline bool is_default_domain(std::string_view domain) { return domain.empty() || domain == "ai.onnx"; }

inline std::string format_list(const std::vector<std::int64_t>& values) {
  std::string text = "[";
  for (std::size_t i = 0; i < values.size(); ++i) text += (i ? ", " : "") + std::to_string(values[i]);
  return text + "]";
}

inline std::string format_number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

// --- names ---------------------------------------------------------------------------------------

// Every name used anywhere in the model, so that new ones can be made unique.
class NameTable {
 public:
  explicit NameTable(const Model& model) {
    add_graph(*model.graph);
    for (const Function& function : model.functions) {
      used_.insert(function.inputs.begin(), function.inputs.end());
      used_.insert(function.outputs.begin(), function.outputs.end());
      for (const auto& node : function.nodes) add_node(*node);
    }
  }

  // `base`, or `base_1`, `base_2`, ... whichever is free first; reserved from then on.
  std::string fresh(const std::string& base) {
    if (used_.insert(base).second) return base;
    for (std::size_t n = 1;; ++n) {
      std::string candidate = base + "_" + std::to_string(n);
      if (used_.insert(candidate).second) return candidate;
    }
  }

 private:
  void add_graph(const Graph& graph) {
    for (const ValueInfo& info : graph.inputs) used_.insert(info.name);
    for (const ValueInfo& info : graph.outputs) used_.insert(info.name);
    for (const ValueInfo& info : graph.value_info) used_.insert(info.name);
    for (const Tensor& tensor : graph.initializers) used_.insert(tensor.name);
    for (const SparseTensor& tensor : graph.sparse_initializers) used_.insert(tensor.values.name);
    for (const auto& node : graph.nodes) add_node(*node);
  }

  void add_node(const Node& node) {
    used_.insert(node.name);
    used_.insert(node.inputs.begin(), node.inputs.end());
    used_.insert(node.outputs.begin(), node.outputs.end());
    for_each_subgraph(node, [&](const Graph& subgraph) { add_graph(subgraph); });
  }

  std::unordered_set<std::string> used_;
};

// Bytes of `count` elements of `type` (4-bit types packed two to a byte).
inline std::size_t storage_size(const QuantTypeInfo& type, std::size_t count) {
  return type.bits == 4 ? (count + 1) / 2 : count * (type.bits / 8);
}

// Stores `value` (within the range of `type`) as element `index` of `out`, little-endian.
inline void store(const QuantTypeInfo& type, std::byte* out, std::size_t index, std::int64_t value) {
  switch (type.bits) {
    case 4: out[index / 2] |= static_cast<std::byte>((value & 0xf) << (4 * (index % 2))); break;
    case 8: out[index] = static_cast<std::byte>(static_cast<std::uint8_t>(value)); break;
    case 16: {
      const auto bits = static_cast<std::uint16_t>(value);
      std::memcpy(out + 2 * index, &bits, 2);
      break;
    }
    default: {
      const auto bits = static_cast<std::uint32_t>(value);
      std::memcpy(out + 4 * index, &bits, 4);
    }
  }
}

inline std::vector<std::byte> encode_integers(const QuantTypeInfo& type, const std::vector<std::int64_t>& values) {
  std::vector<std::byte> out(storage_size(type, values.size()));
  for (std::size_t i = 0; i < values.size(); ++i) store(type, out.data(), i, values[i]);
  return out;
}

inline std::vector<std::byte> encode_floats(const std::vector<float>& values) {
  std::vector<std::byte> out(values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

inline wire::Writer tensor_message(std::string_view name, DataType type, std::span<const std::int64_t> dims,
                            std::vector<std::byte> raw_data) {
  using onnx_schema::TensorProto;
  wire::Writer tensor;
  for (std::int64_t dim : dims) tensor.int64(TensorProto::dims, dim);  // unpacked, as onnx.proto (proto2) has it
  tensor.varint(TensorProto::data_type, static_cast<std::uint64_t>(type));
  tensor.string(TensorProto::name, name);
  tensor.bytes(TensorProto::raw_data, std::move(raw_data));
  return tensor;
}

// --- output --------------------------------------------------------------------------------------

[[noreturn]] inline void throw_output_error(const std::string& what, const fs::path& path, int error) {
  throw fs::filesystem_error(what, path, std::error_code(error, std::generic_category()));
}

// Writes `content` to a new file beside `output`, then renames it over `output`.
inline void write_atomically(const fs::path& output, const wire::Writer& content) {
  static std::atomic<unsigned> counter{0};  // unique per process
  const fs::path folder = output.has_parent_path() ? output.parent_path() : fs::path(".");
  fs::path temp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    temp = folder / ("." + output.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                     std::to_string(counter++));
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt == 100)) throw_output_error("cannot create the output", output, errno);
  }
  try {
    content.for_each_chunk([&](std::span<const std::byte> bytes) {
      while (!bytes.empty()) {
        const ssize_t written = ::write(fd, bytes.data(), std::min<std::size_t>(bytes.size(), std::size_t{1} << 30));
        if (written < 0) {
          if (errno == EINTR) continue;
          throw_output_error("cannot write the output", output, errno);
        }
        bytes = bytes.subspan(static_cast<std::size_t>(written));
      }
    });
    if (::fsync(fd) != 0) throw_output_error("cannot write the output", output, errno);
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) throw_output_error("cannot write the output", output, errno);
    std::error_code error;
    fs::rename(temp, output, error);
    if (error) throw fs::filesystem_error("cannot replace the output", output, error);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    std::error_code ignored;
    fs::remove(temp, ignored);
    throw;
  }
}


}  // namespace onnx2fx::quant_writer
