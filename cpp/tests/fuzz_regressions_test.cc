// Inputs the fuzz targets in cpp/fuzz/ found to crash or to trip a sanitizer, kept as regression
// tests: each must now load to a typed error (or a model). Run under ONNX2FX_SANITIZE by
// tests/test_core_sanitizers.py, so undefined behaviour fails here too.
#include <span>
#include <string>
#include <string_view>

#include "onnx/errors.h"
#include "onnx/model_reader.h"
#include "tests/check.h"

namespace {

using namespace onnx2fx;

std::span<const std::byte> bytes_of(std::string_view text) { return std::as_bytes(std::span(text)); }

// ModelProto{graph{initializer{data_type: FLOAT, float_data: <packed, 0 bytes>}}}: memcpy was
// called with the null data pointer of the empty payload (UBSan: nonnull argument).
void empty_packed_float_data() {
  const std::string model("\x3a\x06\x2a\x04\x10\x01\x22\x00", 8);
  onnx2fx::testing::check_throws<ParseError>(
      [&] { load_model_from_bytes(bytes_of(model), std::nullopt); }, "tensor '' has no data but dims [] of FLOAT need 1 values",
      __FILE__, __LINE__);
}

}  // namespace

int main() {
  empty_packed_float_data();
  return onnx2fx::testing::report();
}
