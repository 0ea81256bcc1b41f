// The quantization plan that both writers of quantized models take (write_qdq_model and
// write_integer_model): which activations get QuantizeLinear/DequantizeLinear, which FLOAT
// initializers become integer weights and int32 biases, which stay float with new data, and the
// encodings of each. Python builds the same types through the bindings (`_core.QdqPlan`).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/data_type.h"

namespace onnx2fx {

// The integer types values are quantized to (Python: `_core.QuantType`).
enum class QuantType : std::uint8_t { Uint8, Int8, Uint16, Int16, Uint4, Int4 };

// What a quantized type is: its name in plans and messages, its TensorProto type, its range, its
// width, and the first opset whose QuantizeLinear/DequantizeLinear accept it.
struct QuantTypeInfo {
  std::string_view name;
  DataType type;
  std::int64_t min, max;
  unsigned bits;
  std::int64_t min_opset;
};

// Every QuantType, in declaration order.
inline constexpr QuantType kQuantTypes[] = {QuantType::Uint8,  QuantType::Int8, QuantType::Uint16,
                                            QuantType::Int16,  QuantType::Uint4, QuantType::Int4};

const QuantTypeInfo& quant_type_info(QuantType type);

// The QuantType named `name` ("uint8", ...); nullopt for any other name.
std::optional<QuantType> parse_quant_type(std::string_view name);

// Biases are int32 with zero point 0; they are never a plan's choice, so int32 is not a QuantType.
inline constexpr QuantTypeInfo kInt32Info{"int32", DataType::Int32, INT32_MIN, INT32_MAX, 32, 10};

// Float32 values in C order with their shape. `owner`, when set, keeps `data` alive (the bindings
// put the Python array there); without it the caller keeps `data` alive while the plan is used.
struct FloatValues {
  std::span<const float> data;
  std::vector<std::int64_t> shape;
  std::shared_ptr<const void> owner;
};

// Quantize an activation per tensor: QuantizeLinear then DequantizeLinear right after its producer.
struct QdqActivation {
  std::string tensor;
  std::vector<double> scale;             // one value
  std::vector<std::int64_t> zero_point;  // one value
  QuantType dtype = QuantType::Uint8;
};

// Replace a FLOAT initializer by its quantized form read through DequantizeLinear.
struct QdqWeight {
  std::string initializer;
  std::vector<double> scale;             // one value, or dims[axis] values along `axis`
  std::vector<std::int64_t> zero_point;  // as many as `scale`
  QuantType dtype = QuantType::Int8;
  std::optional<std::int64_t> axis;      // per-axis quantization; may be negative
  // New values to quantize instead of the initializer's own data; their shape must be its dims.
  std::optional<FloatValues> values;
};

// Replace a FLOAT bias by INT32 with zero point 0.
struct QdqBias {
  std::string initializer;
  std::vector<double> scale;
  std::optional<std::int64_t> axis;
  std::optional<FloatValues> values;  // as for QdqWeight
};

// Replace the data of a FLOAT initializer that stays in float (a parameter changed by a
// transformation of the float model, such as a normalization that follows an equalized layer).
struct QdqFloat {
  std::string initializer;
  FloatValues values;  // of the initializer's shape
};

struct QdqPlan {
  std::int64_t min_opset = 0;  // the default-domain opset import is raised to at least this
  std::vector<QdqActivation> activations;
  std::vector<QdqWeight> weights;
  std::vector<QdqBias> biases;
  std::vector<QdqFloat> floats;
};

// The default-domain opset the QDQ model of `plan` imports at least: `min_opset`, and what its
// QuantizeLinear/DequantizeLinear nodes need (10; 13 for per-axis encodings; 21 for 16- and
// 4-bit types). 0 when the plan asks for neither.
std::int64_t required_opset(const QdqPlan& plan);

}  // namespace onnx2fx
