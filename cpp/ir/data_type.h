// The element types of ONNX tensors (TensorProto.DataType) and their storage sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace onnx2fx {

enum class DataType : std::int32_t {
  Undefined = 0,
  Float = 1,
  Uint8 = 2,
  Int8 = 3,
  Uint16 = 4,
  Int16 = 5,
  Int32 = 6,
  Int64 = 7,
  String = 8,
  Bool = 9,
  Float16 = 10,
  Double = 11,
  Uint32 = 12,
  Uint64 = 13,
  Complex64 = 14,
  Complex128 = 15,
  BFloat16 = 16,
  Float8E4M3FN = 17,
  Float8E4M3FNUZ = 18,
  Float8E5M2 = 19,
  Float8E5M2FNUZ = 20,
  Uint4 = 21,
  Int4 = 22,
  Float4E2M1 = 23,
  Float8E8M0 = 24,
  Uint2 = 25,
  Int2 = 26,
  Float6E2M3 = 27,
  Float6E3M2 = 28,
};

struct DataTypeInfo {
  std::string_view name;       // as in onnx.proto, e.g. "FLOAT16"
  unsigned bits_per_element;   // 0 for STRING
};

// Null for a value that is not a known element type (UNDEFINED included).
const DataTypeInfo* data_type_info(std::int32_t data_type);

// Bytes per element; 0 for STRING and for the packed sub-byte types (4-, 2- and 6-bit).
// Throws std::invalid_argument for an unknown type.
std::size_t elem_size(std::int32_t data_type);

// Whether elements are packed several to a byte (sub-byte types).
bool is_packed(const DataTypeInfo& info);

// The bytes `count` elements occupy (sub-byte types packed, rounded up); nullopt on overflow.
std::optional<std::uint64_t> storage_bytes(const DataTypeInfo& info, std::uint64_t count);

}  // namespace onnx2fx
