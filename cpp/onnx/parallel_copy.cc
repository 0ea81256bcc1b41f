#include "onnx/parallel_copy.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

namespace onnx2fx {
namespace {

// Below this many bytes per thread, starting a thread costs more than the faults it shares out.
constexpr std::size_t kMinBytesPerThread = std::size_t{4} << 20;

}  // namespace

void parallel_copy(std::span<std::byte> destination, std::span<const std::byte> source, int threads) {
  if (destination.size() != source.size())
    throw std::invalid_argument("parallel_copy needs a destination of the source's size");
  const std::size_t parts = std::clamp<std::size_t>(source.size() / kMinBytesPerThread, 1,
                                                    static_cast<std::size_t>(std::max(threads, 1)));
  const std::size_t chunk = (source.size() + parts - 1) / parts;
  auto run = [&](std::size_t part) {
    const std::size_t begin = std::min(part * chunk, source.size());
    const std::size_t end = std::min(begin + chunk, source.size());
    if (end > begin) std::memcpy(destination.data() + begin, source.data() + begin, end - begin);
  };
  if (parts == 1) {
    run(0);
    return;
  }
  std::vector<std::jthread> workers;
  workers.reserve(parts - 1);
  for (std::size_t part = 1; part < parts; ++part) workers.emplace_back(run, part);
  run(0);
}  // the jthreads join here

}  // namespace onnx2fx
