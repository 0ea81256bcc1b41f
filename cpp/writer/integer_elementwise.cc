// Element-wise ops on quantized tensors: Relu as a clamp or regrid, Add and Mul of two quantized
// inputs, and one-input functions as 256-entry lookup tables (Gather).

#include <algorithm>
#include <cmath>
#include <functional>

#include "ir/data_type.h"
#include "writer/integer_lowering.h"

namespace onnx2fx::integer_detail {

using namespace onnx_schema;
using namespace quant_writer;

namespace {

// The float function a table op computes, in double precision.
std::function<double(double)> table_function(const Node& node) {
  const std::string& op = node.op_type;
  if (op == "Sigmoid") return [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  if (op == "Tanh") return [](double x) { return std::tanh(x); };
  if (op == "Exp") return [](double x) { return std::exp(x); };
  if (op == "Erf") return [](double x) { return std::erf(x); };
  if (op == "Softplus") return [](double x) { return std::log1p(std::exp(x)); };
  if (op == "HardSigmoid") {
    const double alpha = float_or(node, "alpha", 0.2f), beta = float_or(node, "beta", 0.5f);
    return [=](double x) { return std::clamp(alpha * x + beta, 0.0, 1.0); };
  }
  if (op == "HardSwish") return [](double x) { return x * std::clamp(x / 6.0 + 0.5, 0.0, 1.0); };
  if (op == "QuickGelu") {  // x * sigmoid(alpha x); alpha 1 is SiLU
    const double alpha = float_or(node, "alpha", 1.702f);
    return [=](double x) { return x / (1.0 + std::exp(-alpha * x)); };
  }
  if (op == "FastGelu")
    return [](double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); };
  if (op == "LeakyRelu") {
    const double alpha = float_or(node, "alpha", 0.01f);
    return [=](double x) { return x >= 0 ? x : alpha * x; };
  }
  if (op == "Elu") {
    const double alpha = float_or(node, "alpha", 1.0f);
    return [=](double x) { return x >= 0 ? x : alpha * (std::exp(x) - 1.0); };
  }
  if (string_or(node, "approximate", "none") == "tanh")  // Gelu
    return [](double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); };
  return [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); };
}

}  // namespace

void IntegerLowering::lower_relu(const Node& node) {
  const IntegerValue& x = quantized_input(node, 0);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  const Grid grid = y ? *y : x.grid;
  values_.emplace(output, IntegerValue{regrid(x, grid, true, node.name, output), grid});
}

void IntegerLowering::lower_add(std::size_t index) {
  const Node& node = *model_.graph->nodes[index];
  if (node.inputs.size() != 2 || !values_.contains(node.inputs[0]) || !values_.contains(node.inputs[1]))
    unsupported(node, "an Add needs two quantized inputs");
  const IntegerValue a = quantized_input(node, 0), b = quantized_input(node, 1);
  Tail tail{nullptr, false, node.outputs.at(0), node.name};
  if (!grid_of(tail.tensor))
    if (const Node* relu = single_consumer(tail.tensor); relu && relu->op_type == "Relu") {
      tail.relu = true;
      absorb(*relu);
      tail.tensor = relu->outputs.at(0);
      tail.node = relu->name;
    }
  if (!grid_of(tail.tensor)) unsupported(node, "output '" + tail.tensor + "' has no encoding");
  const Grid y = *grid_of(tail.tensor);
  const std::string base = names_.fresh(tail.tensor + "_int");
  if (format_ == IntegerFormat::QOperator) {
    std::string out = names_.fresh(base);
    emit("QLinearAdd", {a.name, scale_constant(base + "_a", a.grid.scale), zero_point_constant(base + "_a", *a.grid.type, a.grid.zero_point),
                        b.name, scale_constant(base + "_b", b.grid.scale), zero_point_constant(base + "_b", *b.grid.type, b.grid.zero_point),
                        scale_constant(base, y.scale), zero_point_constant(base, *y.type, y.zero_point)},
         {out}, {}, kMicrosoft);
    if (tail.relu && y.zero_point != y.type->min) out = regrid(IntegerValue{out, y}, y, true, tail.node, tail.tensor);
    values_.emplace(tail.tensor, IntegerValue{out, y});
    return;
  }
  // One shift for both terms: the larger rescale sets it, the other multiplier has fewer bits.
  const double ra = static_cast<double>(a.grid.scale) / y.scale, rb = static_cast<double>(b.grid.scale) / y.scale;
  const std::int64_t shift = decompose(std::max(ra, rb), node.name).second;
  const std::int64_t ma = std::llround(std::ldexp(ra, static_cast<int>(shift)));
  const std::int64_t mb = std::llround(std::ldexp(rb, static_cast<int>(shift)));
  const std::string sa = names_.fresh(base + "_a_scaled"), sb = names_.fresh(base + "_b_scaled");
  emit("Mul", {centred(a, base + "_a"), int64_constant(base + "_a_multiplier", {ma})}, {sa});
  emit("Mul", {centred(b, base + "_b"), int64_constant(base + "_b_multiplier", {mb})}, {sb});
  const std::string sum = names_.fresh(base + "_sum");
  emit("Add", {sa, sb}, {sum});
  // The sum needs only the rounding shift, zero point and clamp (multiplier 1).
  const std::string out = requantize_by(sum, true, {std::ldexp(1.0, -static_cast<int>(shift))}, {{1, shift}}, {}, y,
                                        tail.relu, tail.node, tail.tensor, base);
  IntegerRequantization& row = stats_.requantizations.back();
  row.rescale = {ra, rb};
  row.multiplier = {ma, mb};
  row.shift = {shift, shift};
  row.max_relative_error = std::max(std::abs(std::ldexp(static_cast<double>(ma), -static_cast<int>(shift)) - ra) / ra,
                                    std::abs(std::ldexp(static_cast<double>(mb), -static_cast<int>(shift)) - rb) / rb);
  values_.emplace(tail.tensor, IntegerValue{out, y});
}

// y = zp_y + round(s_a s_b / s_y (a - zp_a)(b - zp_b)): both inputs quantized.
void IntegerLowering::lower_mul(const Node& node) {
  if (node.inputs.size() != 2 || !values_.contains(node.inputs[0]) || !values_.contains(node.inputs[1]))
    unsupported(node, "a Mul needs two quantized inputs");
  const IntegerValue a = quantized_input(node, 0), b = quantized_input(node, 1);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  const std::string base = names_.fresh(output + "_int");
  if (format_ == IntegerFormat::QOperator) {
    const std::string out = names_.fresh(base);
    emit("QLinearMul", {a.name, scale_constant(base + "_a", a.grid.scale), zero_point_constant(base + "_a", *a.grid.type, a.grid.zero_point),
                        b.name, scale_constant(base + "_b", b.grid.scale), zero_point_constant(base + "_b", *b.grid.type, b.grid.zero_point),
                        scale_constant(base, y->scale), zero_point_constant(base, *y->type, y->zero_point)},
         {out}, {}, kMicrosoft);
    values_.emplace(output, IntegerValue{out, *y});
    return;
  }
  const std::string product = names_.fresh(base + "_product");
  emit("Mul", {centred(a, base + "_a"), centred(b, base + "_b")}, {product});
  const double rescale = static_cast<double>(a.grid.scale) * static_cast<double>(b.grid.scale) / static_cast<double>(y->scale);
  values_.emplace(output, IntegerValue{requantize(product, true, {rescale}, {}, *y, false, node.name, output, base), *y});
}

// y[q] for every input integer q: the float function between the two grids, rounded half to even.
void IntegerLowering::lower_table(const Node& node) {
  const IntegerValue& x = quantized_input(node, 0);
  const std::string& output = node.outputs.at(0);
  const Grid* y = grid_of(output);
  if (!y) unsupported(node, "output '" + output + "' has no encoding");
  const auto f = table_function(node);
  std::vector<std::byte> table(256);
  for (std::int64_t q = x.grid.type->min; q <= x.grid.type->max; ++q) {
    const float input = static_cast<float>(q - x.grid.zero_point) * x.grid.scale;  // DequantizeLinear, float32
    const float value = static_cast<float>(f(static_cast<double>(input)));
    const double level = std::clamp(static_cast<double>(std::nearbyint(value / y->scale)) + static_cast<double>(y->zero_point),
                                    static_cast<double>(y->type->min), static_cast<double>(y->type->max));
    table[static_cast<std::size_t>(q - x.grid.type->min)] = eight_bits(static_cast<std::int64_t>(level));
  }
  const std::string base = names_.fresh(output + "_int");
  const std::string table_name = constant(base + "_table", y->type->type, {256}, std::move(table));
  std::string index = names_.fresh(base + "_index");
  emit("Cast", {x.name}, {index}, vec(int_attribute("to", static_cast<std::int64_t>(DataType::Int32))));
  if (x.grid.type->min != 0) {
    std::vector<std::byte> offset(4);
    store(kInt32Info, offset.data(), 0, -x.grid.type->min);
    const std::string shifted = names_.fresh(base + "_index_offset");
    emit("Add", {index, constant(base + "_offset", DataType::Int32, {}, std::move(offset))}, {shifted});
    index = shifted;
  }
  const std::string out = names_.fresh(base);
  emit("Gather", {table_name, index}, {out}, vec(int_attribute("axis", 0)));
  values_.emplace(output, IntegerValue{out, *y});
}

}  // namespace onnx2fx::integer_detail
