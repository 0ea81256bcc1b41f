// Reads a serialized ModelProto into the IR without the protobuf library.
//
// Limits against hostile files: graphs nest at most kMaxGraphDepth deep and types kMaxTypeDepth deep,
// tensors and shapes have at most kMaxRank dimensions, a model has at most kMaxNodes nodes in
// all its graphs and functions, and opset versions lie in 1..kMaxOpsetVersion. Tensor sizes are
// checked against the bytes that could hold them before anything is allocated. External data must
// stay inside the model folder (external_file.h) and two tensors' external ranges must not overlap
// (their views would alias: writing one parameter would change the other).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>

#include "ir/ir.h"

namespace onnx2fx {

inline constexpr int kMaxGraphDepth = 64;
inline constexpr int kMaxTypeDepth = 64;
inline constexpr std::size_t kMaxRank = 64;
inline constexpr std::size_t kMaxNodes = std::size_t{1} << 22;
inline constexpr std::int64_t kMaxOpsetVersion = 1000;  // ONNX's default domain is at 25 in 2026

// Maps `path` and reads it; external data resolves relative to the file's folder.
// Throws std::system_error if the file cannot be opened, ParseError / ExternalDataError if it is invalid.
std::unique_ptr<Model> load_model(const std::filesystem::path& path);

// As above, and hands back the map of the model file in `file` (the bytes that Tensor::proto_offset
// and data_offset of embedded tensors refer to), for callers that copy parts of it verbatim.
std::unique_ptr<Model> load_model(const std::filesystem::path& path, std::shared_ptr<const MappedFile>& file);

// Copies `bytes` once and reads them; external data resolves relative to `base_dir`, and without
// one any tensor with external data is an ExternalDataError.
std::unique_ptr<Model> load_model_from_bytes(std::span<const std::byte> bytes,
                                             std::optional<std::filesystem::path> base_dir);

}  // namespace onnx2fx
