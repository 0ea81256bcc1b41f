#include "ir/data_type.h"

#include <array>
#include <stdexcept>
#include <string>

namespace onnx2fx {
namespace {

constexpr std::array<DataTypeInfo, 29> kDataTypes{{
    {"UNDEFINED", 0},      {"FLOAT", 32},          {"UINT8", 8},          {"INT8", 8},
    {"UINT16", 16},        {"INT16", 16},          {"INT32", 32},         {"INT64", 64},
    {"STRING", 0},         {"BOOL", 8},            {"FLOAT16", 16},       {"DOUBLE", 64},
    {"UINT32", 32},        {"UINT64", 64},         {"COMPLEX64", 64},     {"COMPLEX128", 128},
    {"BFLOAT16", 16},      {"FLOAT8E4M3FN", 8},    {"FLOAT8E4M3FNUZ", 8}, {"FLOAT8E5M2", 8},
    {"FLOAT8E5M2FNUZ", 8}, {"UINT4", 4},           {"INT4", 4},           {"FLOAT4E2M1", 4},
    {"FLOAT8E8M0", 8},     {"UINT2", 2},           {"INT2", 2},           {"FLOAT6E2M3", 6},
    {"FLOAT6E3M2", 6},
}};

}  // namespace

const DataTypeInfo* data_type_info(std::int32_t data_type) {
  if (data_type <= 0 || data_type >= static_cast<std::int32_t>(kDataTypes.size())) return nullptr;
  return &kDataTypes[static_cast<std::size_t>(data_type)];
}

std::size_t elem_size(std::int32_t data_type) {
  const DataTypeInfo* info = data_type_info(data_type);
  if (!info) throw std::invalid_argument("unknown ONNX data type " + std::to_string(data_type));
  return is_packed(*info) ? 0 : info->bits_per_element / 8;
}

bool is_packed(const DataTypeInfo& info) { return info.bits_per_element % 8 != 0; }

std::optional<std::uint64_t> storage_bytes(const DataTypeInfo& info, std::uint64_t count) {
  std::uint64_t bits = 0;
  if (__builtin_mul_overflow(count, info.bits_per_element, &bits)) return std::nullopt;
  return bits / 8 + (bits % 8 != 0);
}

}  // namespace onnx2fx
