#include "quant/histogram.h"

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <thread>
#include <vector>

namespace onnx2fx {
namespace {

// Below this many values per thread, starting a thread costs more than it saves.
constexpr std::size_t kMinValuesPerThread = std::size_t{1} << 16;

// torch.histc's linear bin selection (aten/src/ATen/native/cpu/HistogramKernel.cpp, without the
// local edge search that histc does not use), with its float32 arithmetic kept operation by
// operation so that values close to a bin edge land in the same bin.
std::int64_t bin_part(std::span<const float> values, float lo, float hi, std::span<std::int64_t> counts) {
  const auto bins = static_cast<std::int64_t>(counts.size());
  const float width = hi - lo;
  const auto scale = static_cast<float>(bins);
  std::int64_t zeros = 0;
  for (const float v : values) {
    zeros += v == 0.0f;
    if (!(v >= lo && v <= hi)) continue;
    auto bin = static_cast<std::int64_t>((v - lo) * scale / width);
    if (bin == bins) bin = bins - 1;  // the last bin includes its right edge
    ++counts[static_cast<std::size_t>(bin)];
  }
  return zeros;
}

}  // namespace

std::int64_t add_to_histogram(std::span<const float> values, float lo, float hi, std::span<double> counts,
                              int threads) {
  if (counts.empty()) throw std::invalid_argument("the histogram needs at least one bin");
  if (!(lo < hi)) throw std::invalid_argument("the histogram range must have lo < hi");
  const std::size_t parts = std::clamp<std::size_t>(values.size() / kMinValuesPerThread, 1,
                                                    static_cast<std::size_t>(std::max(threads, 1)));
  std::vector<std::int64_t> local(parts * counts.size(), 0);
  std::vector<std::int64_t> zeros(parts, 0);
  const std::size_t chunk = (values.size() + parts - 1) / parts;
  auto run = [&](std::size_t part) {
    const std::size_t begin = std::min(part * chunk, values.size());
    const std::size_t end = std::min(begin + chunk, values.size());
    zeros[part] = bin_part(values.subspan(begin, end - begin), lo, hi,
                           std::span(local).subspan(part * counts.size(), counts.size()));
  };
  if (parts == 1) {
    run(0);
  } else {
    std::vector<std::jthread> workers;
    workers.reserve(parts - 1);
    for (std::size_t part = 1; part < parts; ++part) workers.emplace_back(run, part);
    run(0);
  }  // the jthreads join here
  std::int64_t total_zeros = 0;
  for (std::size_t part = 0; part < parts; ++part) {
    total_zeros += zeros[part];
    for (std::size_t bin = 0; bin < counts.size(); ++bin)
      counts[bin] += static_cast<double>(local[part * counts.size() + bin]);
  }
  return total_zeros;
}

}  // namespace onnx2fx
