#include "writer/qdq_plan.h"

#include <algorithm>
#include <climits>

namespace onnx2fx {
namespace {

constexpr QuantTypeInfo kQuantTypeInfos[] = {
    {"uint8", DataType::Uint8, 0, 255, 8, 10},          {"int8", DataType::Int8, -128, 127, 8, 10},
    {"uint16", DataType::Uint16, 0, 65535, 16, 21},     {"int16", DataType::Int16, -32768, 32767, 16, 21},
    {"uint4", DataType::Uint4, 0, 15, 4, 21},           {"int4", DataType::Int4, -8, 7, 4, 21},
};
static_assert(std::size(kQuantTypeInfos) == std::size(kQuantTypes));

constexpr std::int64_t kPerAxisOpset = 13;  // DequantizeLinear's axis

}  // namespace

const QuantTypeInfo& quant_type_info(QuantType type) { return kQuantTypeInfos[static_cast<std::size_t>(type)]; }

std::optional<QuantType> parse_quant_type(std::string_view name) {
  for (QuantType type : kQuantTypes)
    if (quant_type_info(type).name == name) return type;
  return std::nullopt;
}

std::int64_t required_opset(const QdqPlan& plan) {
  std::int64_t opset = plan.min_opset;
  const auto require = [&](std::int64_t needed) { opset = std::max(opset, needed); };
  for (const QdqActivation& activation : plan.activations) require(quant_type_info(activation.dtype).min_opset);
  for (const QdqWeight& weight : plan.weights) {
    require(quant_type_info(weight.dtype).min_opset);
    if (weight.axis) require(kPerAxisOpset);
  }
  for (const QdqBias& bias : plan.biases) {
    require(kInt32Info.min_opset);
    if (bias.axis) require(kPerAxisOpset);
  }
  return opset;
}

}  // namespace onnx2fx
