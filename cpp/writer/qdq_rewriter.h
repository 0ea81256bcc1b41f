// The rewriter behind write_qdq_model (qdq_writer.h): one class that streams the source model to
// the output, its members defined by concept in
//   qdq_writer.cc      the model and the main graph: Q/DQ nodes inserted after their producers,
//                      the prologue and the new scale and zero-point initializers
//   qdq_plan_check.cc  the plan checked against the model, and the names and entries it becomes
//   qdq_tensors.cc     weights and biases encoded as integers, replaced float data, external data
//                      embedded
//   qdq_renames.cc     nodes, attributes, subgraphs and functions: renamed inputs and outputs,
//                      raised opsets
// Internal to the writer: nothing outside cpp/writer/qdq_*.cc includes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "ir/ir.h"
#include "onnx/mapped_file.h"
#include "onnx/wire.h"
#include "writer/qdq_plan.h"
#include "writer/qdq_writer.h"
#include "writer/wire_writer.h"
#include "writer/writer_common.h"

namespace onnx2fx::qdq_detail {

using Renames = std::unordered_map<std::string, std::string>;

// Tensors with external data, by the offset of their TensorProto in the model file.
class ExternalTensors {
 public:
  explicit ExternalTensors(const Model& model);

  const Tensor* find(std::int64_t proto_offset) const {
    const auto found = by_offset_.find(proto_offset);
    return found != by_offset_.end() ? found->second : nullptr;
  }
  bool empty() const { return by_offset_.empty(); }

  static bool in_node(const Node& node);

 private:
  static bool in_sparse(const SparseTensor& tensor);
  static bool in_graph(const Graph& graph);

  void add(const Tensor& tensor);
  void add_sparse(const SparseTensor& tensor);
  void add_graph(const Graph& graph);
  void add_attributes(const std::vector<Attribute>& attributes);

  std::unordered_map<std::int64_t, const Tensor*> by_offset_;
};

// --- the checked plan ----------------------------------------------------------------------------

struct ActivationEntry {
  std::string tensor;
  const QuantTypeInfo* type = nullptr;
  float scale = 0;
  std::int64_t zero_point = 0;
  bool has_producer = false;
  std::string source;       // what QuantizeLinear reads: the tensor, or its renamed producer output
  std::string quantized;    // QuantizeLinear's output
  std::string dequantized;  // DequantizeLinear's output: what consumers read (the tensor for a graph output)
  std::string scale_name, zero_point_name, quantize_node, dequantize_node;
};

// A weight or a bias.
struct InitializerEntry {
  std::string_view kind;  // "weight" or "bias", for messages
  const Tensor* tensor = nullptr;
  const QuantTypeInfo* type = nullptr;
  std::vector<float> scales;
  std::vector<std::int64_t> zero_points;
  std::optional<std::int64_t> axis;  // normalized
  std::span<const std::byte> values;  // float32, C order
  std::string quantized, scale_name, zero_point_name, dequantize_node;
};

// A FLOAT initializer whose data is replaced, staying in float.
struct FloatEntry {
  const Tensor* tensor = nullptr;
  std::span<const std::byte> values;  // float32, C order
};

// --- the rewriter --------------------------------------------------------------------------------

// Builds the body of a message field by field: unchanged fields as views of the source, the others
// re-encoded. `changed` tells whether anything differs from the source.
struct MessageBuilder {
  wire::Writer out;
  bool changed = false;

  // The field `reader` just read or skipped, unchanged.
  void keep(const wire::Reader& reader) { out.view(reader.field_bytes()); }
  // The message field `reader` just read: rewritten as `body`, or unchanged when `body` is empty.
  void put(const wire::Reader& reader, std::optional<wire::Writer> body) {
    if (!body) return keep(reader);
    out.message(reader.tag(), std::move(*body));
    changed = true;
  }
  std::optional<wire::Writer> result() {
    if (!changed) return std::nullopt;
    return std::optional<wire::Writer>(std::move(out));
  }
};

class QdqRewriter {
 public:
  QdqRewriter(const Model& model, const MappedFile& file, const QdqPlan& plan);

  wire::Writer rewrite_model();
  QdqStats stats() const;

 private:
  // --- checking the plan against the model (qdq_plan_check.cc) ---------------------------------
  void prepare(const QdqPlan& plan);
  static std::span<const std::byte> replacement(const std::string& what, const Tensor& tensor,
                                                const FloatValues& values);
  static float check_scale(const std::string& what, double scale);
  static std::int64_t check_zero_point(const std::string& what, const QuantTypeInfo& type, std::int64_t zero_point);
  static void fill_scales(InitializerEntry& entry, const std::string& what, const std::vector<double>& scales,
                          const std::vector<std::int64_t>& zero_points, std::optional<std::int64_t> axis);

  // --- the main graph (qdq_writer.cc) ----------------------------------------------------------
  wire::Writer rewrite_main_graph(wire::Reader&& reader);
  bool needs_rewrite(const Node& node) const;
  void write_prologue(wire::Writer& out);
  void write_qdq_nodes(wire::Writer& out, const ActivationEntry& entry);
  void write_new_initializers(wire::Writer& out);

  // --- tensors (qdq_tensors.cc) ----------------------------------------------------------------
  std::optional<wire::Writer> rewrite_quantized_initializer(wire::Reader& reader, const InitializerEntry& entry);
  static std::optional<wire::Writer> rewrite_float_initializer(wire::Reader& reader, const FloatEntry& entry);
  std::optional<wire::Writer> rewrite_tensor(wire::Reader&& reader);
  std::optional<wire::Writer> rewrite_sparse_tensor(wire::Reader&& reader);

  // --- nodes, attributes, subgraphs (qdq_renames.cc) -------------------------------------------
  std::optional<wire::Writer> rewrite_node(wire::Reader&& reader, const Renames& inputs, const Renames* outputs);
  std::optional<wire::Writer> rewrite_attribute(wire::Reader&& reader, const Renames& renames);
  std::optional<wire::Writer> rewrite_subgraph(wire::Reader&& reader, const Renames& outer);
  std::unordered_set<std::string> local_names(std::span<const std::byte> graph) const;
  std::optional<wire::Writer> rewrite_value_info(wire::Reader&& reader, const Renames& renames);
  std::optional<wire::Writer> rewrite_opset(wire::Reader&& reader, bool& saw_default);
  std::optional<wire::Writer> rewrite_function(wire::Reader& reader);
  wire::Writer opset_message(std::string_view domain, std::int64_t version);

  inline static const Renames kNoRenames;

  const Model& model_;
  const MappedFile& file_;
  quant_writer::NameTable names_;
  ExternalTensors external_;
  std::vector<ActivationEntry> activations_;
  std::vector<InitializerEntry> initializers_;
  Renames consumer_renames_;  // activation -> its DequantizeLinear output
  Renames output_renames_;    // graph output activation -> its producer's new output name
  std::unordered_map<std::string, const ActivationEntry*> after_producer_;  // by the activation's name
  std::unordered_map<std::int64_t, const InitializerEntry*> by_offset_;     // by TensorProto offset
  std::vector<FloatEntry> floats_;  // reserved up front: float_by_offset_ points into it
  std::unordered_map<std::int64_t, const FloatEntry*> float_by_offset_;     // by TensorProto offset
  std::int64_t target_opset_ = 0;
  std::int64_t target_ir_version_ = 0;
  bool main_graph_seen_ = false;
  bool prologue_written_ = false;
  std::size_t main_node_index_ = 0;
};

}  // namespace onnx2fx::qdq_detail
