// Fuzz target (a): model bytes -> reader -> the load passes. Typed errors are the expected outcome
// of bad input; anything else (a crash, a sanitizer report, another exception) is a finding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz/fuzz_support.h"
#include "onnx/errors.h"
#include "onnx/model_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onnx2fx;
  try {
    auto model = load_model_from_bytes(std::as_bytes(std::span(data, size)), std::nullopt);
    fuzz::run_load_passes(*model);
    volatile std::uint64_t sum = fuzz::touch(*model->graph);
    (void)sum;
  } catch (const Error&) {
  }
  return 0;
}
