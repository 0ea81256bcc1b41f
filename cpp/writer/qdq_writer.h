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

#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "onnx/errors.h"
#include "writer/qdq_plan.h"

namespace onnx2fx {

struct QdqStats {
  std::size_t quantized_activations = 0;
  std::size_t quantized_weights = 0;
  std::size_t quantized_biases = 0;
  std::uint64_t bytes_written = 0;
};

// Writes the quantized model to `output` (which may be `source` itself).
// Throws QdqPlanError / QdqSizeError (onnx/errors.h) before anything is written, the reader's
// errors (ParseError, ExternalDataError, GraphError, std::system_error) for an unreadable source,
// and std::filesystem::filesystem_error naming the output when it cannot be written.
QdqStats write_qdq_model(const std::filesystem::path& source, const std::filesystem::path& output,
                         const QdqPlan& plan);

}  // namespace onnx2fx
