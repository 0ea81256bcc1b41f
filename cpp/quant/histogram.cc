#include "quant/histogram.h"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace onnx2fx {
namespace {

// Below this many values per thread, starting a thread costs more than it saves.
constexpr std::size_t kMinValuesPerThread = std::size_t{1} << 16;

// Values are binned a block at a time: first every bin index of the block (plain arithmetic that the
// compiler turns into SIMD, the division included), then the counts. A run of equal values (the
// zeros of a ReLU) would make each increment wait for the previous one to the same counter, so
// neighbouring values go to four count arrays, added up at the end.
constexpr std::size_t kBlock = 512;

// torch.histc's linear bin selection (aten/src/ATen/native/cpu/HistogramKernel.cpp, without the
// local edge search that histc does not use), with its float32 arithmetic kept operation by
// operation so that values close to a bin edge land in the same bin. Values outside [lo, hi] and
// NaN go to the extra slot `bins`, which is not a bin. GCC compiles an AVX2 copy too and picks it
// on CPUs that have it (eight values per instruction instead of four: a quarter less time per value).
__attribute__((target_clones("avx2", "default"))) void bin_indices(const float* values, std::size_t count, float lo,
                                                                   float hi, std::int32_t bins, std::int32_t* out) {
  const float width = hi - lo;
  const auto scale = static_cast<float>(bins);
  for (std::size_t i = 0; i < count; ++i) {
    const float v = values[i];
    // masks instead of branches, so that the loop vectorises: outside values (NaN too) become lo
    const std::int32_t inside = -static_cast<std::int32_t>((v >= lo) & (v <= hi));
    const float kept = std::bit_cast<float>((std::bit_cast<std::int32_t>(v) & inside) |
                                            (std::bit_cast<std::int32_t>(lo) & ~inside));
    const float position = (kept - lo) * scale / width;  // in [0, bins]: the cast is defined
    auto bin = static_cast<std::int32_t>(position);
    bin -= static_cast<std::int32_t>(bin == bins);  // the last bin includes its right edge
    out[i] = (bin & inside) | (bins & ~inside);
  }
}

std::int64_t bin_part(std::span<const float> values, float lo, float hi, std::span<std::int64_t> counts) {
  const auto bins = static_cast<std::int32_t>(counts.size());
  // four lanes of 32-bit counts (with the slot for outside values), flushed into `counts` before any
  // could overflow: a quarter of the cache that 64-bit counts would take
  constexpr std::size_t kLanes = 4;
  constexpr std::size_t kFlushEvery = std::size_t{1} << 30;
  const std::size_t stride = counts.size() + 1;
  std::vector<std::uint32_t> lanes(kLanes * stride, 0);
  const auto flush = [&] {
    for (std::size_t bin = 0; bin < counts.size(); ++bin) {
      for (std::size_t lane = 0; lane < kLanes; ++lane) counts[bin] += lanes[lane * stride + bin];
    }
    std::fill(lanes.begin(), lanes.end(), 0u);
  };
  std::int32_t index[kBlock];
  std::int64_t zeros = 0;
  std::size_t since_flush = 0;
  for (std::size_t start = 0; start < values.size(); start += kBlock) {
    const std::size_t count = std::min(kBlock, values.size() - start);
    const float* block = values.data() + start;
    bin_indices(block, count, lo, hi, bins, index);
    std::int32_t block_zeros = 0;
    for (std::size_t i = 0; i < count; ++i) block_zeros += block[i] == 0.0f;
    zeros += block_zeros;
    std::size_t i = 0;
    for (; i + kLanes <= count; i += kLanes) {
      for (std::size_t lane = 0; lane < kLanes; ++lane) ++lanes[lane * stride + static_cast<std::size_t>(index[i + lane])];
    }
    for (; i < count; ++i) ++lanes[static_cast<std::size_t>(index[i])];
    since_flush += count;
    if (since_flush >= kFlushEvery) {
      flush();
      since_flush = 0;
    }
  }
  flush();
  return zeros;
}

}  // namespace

std::int64_t add_to_histogram(std::span<const float> values, float lo, float hi, std::span<double> counts,
                              int threads) {
  if (counts.empty()) throw std::invalid_argument("the histogram needs at least one bin");
  if (!(lo < hi)) throw std::invalid_argument("the histogram range must have lo < hi");
  // bin indices are int32, and float32 must hold every bin count exactly
  if (counts.size() > (std::size_t{1} << 24)) throw std::invalid_argument("the histogram has at most 2^24 bins");
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
