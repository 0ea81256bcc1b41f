// The plan's quantized types and the opset rule both writers and Python share.
#include <string>

#include "tests/check.h"
#include "writer/qdq_plan.h"

namespace {

using namespace onnx2fx;

void names_and_ranges_of_quantized_types() {
  for (QuantType type : kQuantTypes) CHECK(parse_quant_type(quant_type_info(type).name) == type);
  CHECK(!parse_quant_type("int32") && !parse_quant_type("float") && !parse_quant_type(""));
  const QuantTypeInfo& int4 = quant_type_info(QuantType::Int4);
  CHECK(int4.name == "int4" && int4.type == DataType::Int4 && int4.min == -8 && int4.max == 7 && int4.bits == 4);
  CHECK(quant_type_info(QuantType::Uint16).max == 65535 && quant_type_info(QuantType::Uint16).min_opset == 21);
  CHECK(kInt32Info.type == DataType::Int32 && kInt32Info.min_opset == 10);
}

void required_opset_is_the_highest_need() {
  QdqPlan plan;
  CHECK(required_opset(plan) == 0);  // nothing to insert: the opset stays
  plan.min_opset = 7;
  CHECK(required_opset(plan) == 7);
  plan.activations.push_back({"x", {0.1}, {0}, QuantType::Uint8});
  CHECK(required_opset(plan) == 10);
  plan.biases.push_back({"b", {0.01, 0.02}, 0, std::nullopt});
  CHECK(required_opset(plan) == 13);  // per-axis DequantizeLinear
  plan.weights.push_back({"w", {0.1}, {0}, QuantType::Int4, std::nullopt, std::nullopt});
  CHECK(required_opset(plan) == 21);
  plan.weights[0].dtype = QuantType::Int8;
  plan.activations[0].dtype = QuantType::Int16;
  CHECK(required_opset(plan) == 21);
  plan.activations[0].dtype = QuantType::Int8;
  plan.min_opset = 17;
  CHECK(required_opset(plan) == 17);
}

}  // namespace

int main() {
  names_and_ranges_of_quantized_types();
  required_opset_is_the_highest_need();
  return onnx2fx::testing::report();
}
