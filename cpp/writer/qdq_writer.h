// Writes a post-training-quantized copy of an ONNX model in QDQ form: the original graph with
// QuantizeLinear/DequantizeLinear pairs after the chosen activations, and float weights and biases
// replaced by integer initializers read through DequantizeLinear.
//
// The source is read once into the IR (headers only: tensor data stays in the file map) to check
// the plan, then its bytes are walked again and streamed to the output: every message the plan does
// not touch is copied verbatim from the map, only the messages on the path to a change are
// re-encoded, and tensors with external data are embedded. The output goes to a temporary file
// beside `output` that is renamed over it at the end, so nothing is written when anything fails.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace onnx2fx {

// Quantize an activation per tensor: QuantizeLinear then DequantizeLinear right after its producer.
struct QdqActivation {
  std::string tensor;
  std::vector<double> scale;            // one value
  std::vector<std::int64_t> zero_point; // one value
  std::string dtype;                    // "uint8", "int8", "uint16", "int16", "uint4", "int4"
};

// Replace a FLOAT initializer by its quantized form read through DequantizeLinear.
struct QdqWeight {
  std::string initializer;
  std::vector<double> scale;            // one value, or dims[axis] values along `axis`
  std::vector<std::int64_t> zero_point; // as many as `scale`
  std::string dtype;
  std::optional<std::int64_t> axis;     // per-axis quantization; may be negative
  // New float values to quantize instead of the initializer's own data, in C order, with their
  // shape (which must equal the initializer's dims). They must stay valid during the call.
  std::optional<std::span<const float>> values;
  std::vector<std::int64_t> values_shape;
};

// Replace a FLOAT bias by INT32 with zero point 0.
struct QdqBias {
  std::string initializer;
  std::vector<double> scale;
  std::optional<std::int64_t> axis;
  // New float values to quantize instead of the stored data, as for QdqWeight.
  std::optional<std::span<const float>> values;
  std::vector<std::int64_t> values_shape;
};

// Replace the data of a FLOAT initializer that stays in float (a parameter changed by a
// transformation of the float model, such as a normalization that follows an equalized layer).
struct QdqFloat {
  std::string initializer;
  std::span<const float> values;  // C order; must stay valid during the call
  std::vector<std::int64_t> values_shape;  // must equal the initializer's dims
};

struct QdqPlan {
  std::int64_t min_opset = 0;  // the default-domain opset import is raised to at least this
  std::vector<QdqActivation> activations;
  std::vector<QdqWeight> weights;
  std::vector<QdqBias> biases;
  std::vector<QdqFloat> floats;
};

struct QdqStats {
  std::size_t quantized_activations = 0;
  std::size_t quantized_weights = 0;
  std::size_t quantized_biases = 0;
  std::uint64_t bytes_written = 0;
};

// The plan does not fit the model: a name it lacks, a bad scale or zero point, a shape mismatch.
class QdqPlanError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The quantized model would not fit in one protobuf message (2 GiB).
class QdqSizeError : public std::length_error {
 public:
  using std::length_error::length_error;
};

// Writes the quantized model to `output` (which may be `source` itself).
// Throws QdqPlanError / QdqSizeError before anything is written, the reader's errors (ParseError,
// ExternalDataError, GraphError, std::system_error) for an unreadable source, and
// std::filesystem::filesystem_error naming the output when it cannot be written.
QdqStats write_qdq_model(const std::filesystem::path& source, const std::filesystem::path& output,
                         const QdqPlan& plan);

}  // namespace onnx2fx
