#include "quant/rounding_error.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <thread>
#include <vector>

namespace onnx2fx {
namespace {

// Below this many weight-candidate pairs per thread, starting a thread costs more than it saves.
constexpr std::size_t kMinWorkPerThread = std::size_t{1} << 18;

// `when` ? `a` : `b` for a mask of all ones or all zeros, in bit operations: a float select written
// as a branch is not vectorised unless FP exceptions may be ignored, which this file does not assume.
inline float select(std::int32_t when, float a, float b) {
  return std::bit_cast<float>((std::bit_cast<std::int32_t>(a) & when) | (std::bit_cast<std::int32_t>(b) & ~when));
}

inline std::int32_t mask(bool condition) { return -static_cast<std::int32_t>(condition); }

// Round half to even of a float32, as nearbyint does in the default rounding mode, written so that
// the loop vectorises: adding and removing 1.5 * 2^23 leaves no fraction bits. That holds below
// 2^22 in magnitude; above it the value goes through unchanged, and whatever its rounding it then
// lies far outside any grid of up to 16 bits (qmin and qmax are below 2^17), so the clamp gives the
// same level either way. Infinities pass through too; the compiler may not reassociate (no
// -ffast-math here).
inline float round_even(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  constexpr float kExact = 4194304.0f;   // 2^22
  return select(mask((x < kExact) & (x > -kExact)), (x + kMagic) - kMagic, x);
}

// torch.div(w, s).round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s).sub_(w), one value.
inline float rounding_error(float w, float s, float z, float qmin, float qmax) {
  float q = round_even(w / s) + z;
  q = select(mask(q < qmin), qmin, q);
  q = select(mask(q > qmax), qmax, q);
  return (q - z) * s - w;
}

// Errors are computed a block at a time (plain arithmetic that the compiler turns into SIMD, the
// division included), then summed in independent lanes added up at the end: a single running sum
// would have to be added to in order, one value at a time.
constexpr std::size_t kBlock = 256;
constexpr std::size_t kLanes = 8;

// One candidate on one row. GCC compiles an AVX2 copy too and picks it on CPUs that have it.
__attribute__((target_clones("avx2", "default"))) double row_error(const float* w, std::size_t width, float s,
                                                                    float z, float qmin, float qmax,
                                                                    const float* mean, const float* var) {
  double weighted[kLanes] = {}, projected[kLanes] = {};
  float e[kBlock];
  for (std::size_t start = 0; start < width; start += kBlock) {
    const std::size_t count = std::min(kBlock, width - start);
    const float* block = w + start;
    for (std::size_t i = 0; i < count; ++i) e[i] = rounding_error(block[i], s, z, qmin, qmax);
    const std::size_t padded = (count + kLanes - 1) / kLanes * kLanes;  // within kBlock: a multiple of kLanes
    for (std::size_t i = count; i < padded; ++i) e[i] = 0.0f;
    if (mean == nullptr) {
      for (std::size_t i = 0; i < padded; i += kLanes) {
        for (std::size_t lane = 0; lane < kLanes; ++lane)
          weighted[lane] += static_cast<double>(e[i + lane] * e[i + lane]);
      }
      continue;
    }
    // the products first (elementwise: SIMD), then their sums in lanes, as for the plain error
    const float* m = mean + start;
    const float* v = var + start;
    float by_var[kBlock], by_mean[kBlock];
    for (std::size_t i = 0; i < count; ++i) {
      by_var[i] = e[i] * e[i] * v[i];
      by_mean[i] = e[i] * m[i];
    }
    for (std::size_t i = count; i < padded; ++i) by_var[i] = by_mean[i] = 0.0f;
    for (std::size_t i = 0; i < padded; i += kLanes) {
      for (std::size_t lane = 0; lane < kLanes; ++lane) {
        weighted[lane] += static_cast<double>(by_var[i + lane]);
        projected[lane] += static_cast<double>(by_mean[i + lane]);
      }
    }
  }
  double total = 0.0, along = 0.0;
  for (std::size_t lane = 0; lane < kLanes; ++lane) {
    total += weighted[lane];
    along += projected[lane];
  }
  return mean == nullptr ? total : total + along * along;
}

}  // namespace

void rounding_errors(std::span<const float> rows, std::size_t width, std::span<const float> scale,
                     std::span<const float> zero_point, float qmin, float qmax, std::span<const float> mean,
                     std::span<const float> var, std::span<double> out, int threads) {
  if (width == 0 || rows.size() % width) throw std::invalid_argument("rows must be whole rows of `width` values");
  const std::size_t count = rows.size() / width;
  if (count == 0 || scale.size() % count || scale.size() != zero_point.size() || out.size() != scale.size())
    throw std::invalid_argument("scale, zero_point and out must be candidates x rows");
  const std::size_t candidates = scale.size() / count;
  if (mean.size() != var.size() || mean.size() % width)
    throw std::invalid_argument("mean and var must both be groups x width, or both empty");
  const std::size_t groups = mean.size() / width;
  if (groups != 0 && count % groups) throw std::invalid_argument("the groups must divide the rows");
  const std::size_t per_group = groups ? count / groups : count;
  if (!(qmin <= qmax)) throw std::invalid_argument("qmin must not exceed qmax");

  auto run = [&](std::size_t begin, std::size_t end) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* w = rows.data() + r * width;
      const float* m = groups ? mean.data() + (r / per_group) * width : nullptr;
      const float* v = groups ? var.data() + (r / per_group) * width : nullptr;
      for (std::size_t k = 0; k < candidates; ++k) {
        const std::size_t at = k * count + r;
        out[at] = row_error(w, width, scale[at], zero_point[at], qmin, qmax, m, v);
      }
    }
  };
  const std::size_t parts = std::clamp<std::size_t>(rows.size() * candidates / kMinWorkPerThread, 1,
                                                    std::min<std::size_t>(count, std::max(threads, 1)));
  if (parts == 1) {
    run(0, count);
    return;
  }
  const std::size_t chunk = (count + parts - 1) / parts;
  {
    std::vector<std::jthread> workers;
    workers.reserve(parts - 1);
    for (std::size_t part = 1; part < parts; ++part)
      workers.emplace_back(run, std::min(part * chunk, count), std::min((part + 1) * chunk, count));
    run(0, std::min(chunk, count));
  }  // the jthreads join here
}

}  // namespace onnx2fx
