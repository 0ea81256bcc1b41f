// Copying weights over threads: every byte arrives, whatever the size and the thread count.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include "onnx/parallel_copy.h"
#include "tests/check.h"

namespace {

using onnx2fx::parallel_copy;

std::vector<std::byte> pattern(std::size_t size) {
  std::vector<std::byte> bytes(size);
  std::uint32_t state = 2463534242u;
  for (std::byte& b : bytes) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    b = static_cast<std::byte>(state);
  }
  return bytes;
}

void copies_every_byte() {
  // Small (one thread), at the split threshold, and large sizes that do not divide evenly;
  // the source starts one byte into its buffer, as misaligned weights do.
  for (const std::size_t size : {std::size_t{0}, std::size_t{7}, std::size_t{4} << 20,
                                 (std::size_t{8} << 20) + 3, (std::size_t{17} << 20) + 1}) {
    const std::vector<std::byte> buffer = pattern(size + 1);
    const std::span<const std::byte> source(buffer.data() + 1, size);
    for (const int threads : {0, 1, 2, 3, 4}) {
      std::vector<std::byte> destination(size, std::byte{0});
      parallel_copy(destination, source, threads);
      CHECK(std::equal(destination.begin(), destination.end(), source.begin()));
    }
  }
}

void sizes_must_match() {
  std::vector<std::byte> source(16), destination(15);
  CHECK_THROWS(std::invalid_argument, parallel_copy(destination, source, 2), "destination of the source's size");
}

}  // namespace

int main() {
  copies_every_byte();
  sizes_must_match();
  return onnx2fx::testing::report();
}
