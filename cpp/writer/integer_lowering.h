// The lowering behind write_integer_model (integer_writer.h): one class that rebuilds the graph
// node by node, its members defined by concept in
//   integer_writer.cc      the driver: the node walk, the choice of lowering by op and format, float islands
//   integer_source.cc      the source model's raw fields and the plan checked against its initializers
//   integer_emit.cc        new nodes, constants, copied nodes and initializers, the model message
//   integer_requantize.cc  the fixed-point requantization (31-bit multiplier and rounding shift), regridding
//   integer_linear.cc      Conv, Gemm and MatMul with a planned weight, with the bias Add and ReLU they absorb
//   integer_elementwise.cc Relu, Add, Mul and the 256-entry tables of element-wise functions
//   integer_pooling.cc     AveragePool, GlobalAveragePool, Concat and data movement on the 8-bit tensors
//   integer_qoperator.cc   the com.microsoft / QLinear operators of the QOperator form
// Internal to the writer: nothing outside cpp/writer/integer_*.cc includes it.
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
#include "writer/integer_writer.h"
#include "writer/qdq_plan.h"
#include "writer/wire_writer.h"
#include "writer/writer_common.h"

namespace onnx2fx::integer_detail {

inline constexpr std::string_view kMicrosoft = "com.microsoft";

// A tensor's integer grid.
struct Grid {
  float scale = 0;
  std::int64_t zero_point = 0;
  const QuantTypeInfo* type = nullptr;
  bool same_as(const Grid& other) const {
    return scale == other.scale && zero_point == other.zero_point && type == other.type;
  }
};

// An integer tensor of the new graph.
struct IntegerValue {
  std::string name;
  Grid grid;
};

// What follows a linear op inside its fused group: an Add of a planned bias, then a Relu, up to
// the first tensor with an encoding.
struct Tail {
  const QdqBias* bias = nullptr;  // from a following Add
  bool relu = false;
  std::string tensor;
  std::string node;
};

wire::Writer int_attribute(std::string_view name, std::int64_t value);
wire::Writer float_attribute(std::string_view name, float value);

// One int8 or uint8 value (every grid of the integer writers is 8 bits wide).
inline std::byte eight_bits(std::int64_t value) { return static_cast<std::byte>(static_cast<std::uint8_t>(value)); }

const Attribute* find_attribute(const Node& node, std::string_view name);
std::int64_t int_or(const Node& node, std::string_view name, std::int64_t fallback);
float float_or(const Node& node, std::string_view name, float fallback);
std::string string_or(const Node& node, std::string_view name, std::string fallback);

class IntegerLowering {
 public:
  IntegerLowering(const Model& model, const MappedFile& file, const QdqPlan& plan, IntegerFormat format,
                  bool allow_float_islands);

  wire::Writer write();
  IntegerStats stats() const;

 private:
  // --- the source (integer_source.cc) ----------------------------------------------------------
  void index_source();
  void index_plan(const QdqPlan& plan);
  const Tensor* float_initializer(std::string_view kind, const std::string& name) const;
  std::vector<float> float_values(const Tensor& tensor, const std::optional<FloatValues>& values) const;
  std::int64_t input_rank(const std::string& tensor) const;

  // --- the walk, errors and look-ups (integer_writer.cc) ---------------------------------------
  void lower_graph();
  void lower_node(std::size_t index);
  void float_island(std::size_t index);
  void quantize_float(const std::string& tensor, const std::string& float_name);
  std::string format_name() const;
  [[noreturn]] void unsupported(const Node& node, const std::string& why) const;
  const Grid* grid_of(const std::string& tensor) const;
  const Node* single_consumer(const std::string& tensor) const;
  const IntegerValue& quantized_input(const Node& node, std::size_t index) const;
  bool has_quantized_input(const Node& node) const;
  bool all_inputs_quantized(const Node& node) const;

  // --- emitting (integer_emit.cc) --------------------------------------------------------------
  static std::vector<wire::Writer> vec(wire::Writer attribute);
  void emit(std::string_view op, const std::vector<std::string>& inputs, const std::vector<std::string>& outputs,
            std::vector<wire::Writer> attributes = {}, std::string_view domain = "",
            std::span<const std::span<const std::byte>> attribute_views = {}, std::string name = "");
  std::string constant(const std::string& base, DataType type, std::vector<std::int64_t> dims,
                       std::vector<std::byte> bytes);
  std::string int64_constant(const std::string& base, const std::vector<std::int64_t>& values,
                             std::vector<std::int64_t> dims = {});
  std::string scale_constant(const std::string& base, float scale);
  std::string zero_point_constant(const std::string& base, const QuantTypeInfo& type, std::int64_t zero_point);
  void use_source_initializer(const std::string& name);
  void copy_node(std::size_t index, const std::unordered_map<std::string, std::string>& inputs,
                 const std::unordered_map<std::string, std::string>& outputs);
  wire::Writer model_message();

  // --- requantization (integer_requantize.cc) --------------------------------------------------
  std::string requantize(const std::string& acc, bool acc_int64, const std::vector<double>& rescale,
                         const std::vector<std::int64_t>& channel_dims, const Grid& y, bool relu,
                         const std::string& node_name, const std::string& tensor, const std::string& base);
  std::string requantize_by(const std::string& acc, bool acc_int64, const std::vector<double>& rescale,
                            const std::vector<std::pair<std::int64_t, std::int64_t>>& factors,
                            const std::vector<std::int64_t>& channel_dims, const Grid& y, bool relu,
                            const std::string& node_name, const std::string& tensor, const std::string& base);
  static std::pair<std::int64_t, std::int64_t> decompose(double rescale, const std::string& node_name);
  std::string centred(const IntegerValue& x, const std::string& base);
  std::string regrid(const IntegerValue& x, const Grid& y, bool relu, const std::string& node_name,
                     const std::string& tensor);

  // --- linear ops (integer_linear.cc) ----------------------------------------------------------
  Tail fused_tail(const Node& node, bool add_bias_allowed);
  void absorb(const Node& node);
  void lower_linear(std::size_t index);

  // --- element-wise ops (integer_elementwise.cc) -----------------------------------------------
  void lower_relu(const Node& node);
  void lower_add(std::size_t index);
  void lower_mul(const Node& node);
  void lower_table(const Node& node);

  // --- pooling and data movement (integer_pooling.cc) ------------------------------------------
  void lower_average_pool(std::size_t index);
  void lower_global_average_pool(const Node& node);
  void lower_concat(std::size_t index);
  void lower_data_movement(std::size_t index);

  // --- QOperator (integer_qoperator.cc) --------------------------------------------------------
  void lower_qlinear(const Node& node, std::size_t index, const IntegerValue& x, const QdqWeight& weight,
                     const QuantTypeInfo& w_type, const std::vector<std::int64_t>& w_dims,
                     const std::vector<std::int64_t>& w_int, const std::vector<std::int64_t>& bias_int, const Tail& tail,
                     const Grid& y, const std::string& base, std::size_t channels);
  void lower_qlinear_pool(const Node& node);
  void lower_qlinear_activation(const Node& node);
  void lower_qlinear_softmax(std::size_t index);

  const Model& model_;
  const MappedFile& file_;
  IntegerFormat format_;
  bool allow_islands_;
  quant_writer::NameTable names_;
  std::unordered_map<std::string, const Tensor*> initializers_;
  std::unordered_map<std::string, std::span<const std::byte>> initializer_fields_;
  std::vector<std::vector<std::span<const std::byte>>> attribute_views_;
  std::vector<std::span<const std::byte>> graph_fields_;
  std::unordered_map<std::string, std::size_t> uses_;
  std::unordered_map<std::string, std::vector<std::size_t>> consumers_;
  std::unordered_map<std::string, const TypeInfo*> types_;
  std::unordered_map<std::string, Grid> grids_;
  std::unordered_map<std::string, const QdqWeight*> weights_;
  std::unordered_map<std::string, const QdqBias*> biases_;
  std::unordered_map<std::string, const QdqFloat*> floats_;
  std::unordered_map<std::string, IntegerValue> values_;  // source tensor -> its integer form
  std::unordered_set<std::string> float_values_;          // float tensors of the new graph
  std::unordered_set<std::size_t> absorbed_;              // nodes lowered with an earlier one
  std::unordered_set<std::string> copied_;
  std::vector<wire::Writer> nodes_;
  std::vector<wire::Writer> initializers_out_;
  std::unordered_set<std::size_t> raw_initializer_fields_;
  bool uses_microsoft_ = false;
  IntegerStats stats_;
};

}  // namespace onnx2fx::integer_detail
