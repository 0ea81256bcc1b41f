#include "quant/rounding_error.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

namespace onnx2fx {
namespace {

// Below this many weight-candidate pairs per thread, starting a thread costs more than it saves.
constexpr std::size_t kMinWorkPerThread = std::size_t{1} << 18;

// torch.div(w, s).round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s).sub_(w), one value, as
// round(clamp(w / s, qmin - z, qmax - z)) * s - w: with integer bounds, clamping before rounding gives
// the same integer, and integers below 2^24 add and subtract exactly, so the value is the same float.
// Clamped first, the quotient lies within 2^17 of zero, where adding and removing 1.5 * 2^23 rounds
// half to even (nearbyint's default mode) and leaves no fraction bits; the compiler may not
// reassociate that (no -ffast-math here).
constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23

inline float rounding_error(float w, float s, float low, float high) {
  float x = w / s;
  x = x < low ? low : x;
  x = x > high ? high : x;
  return ((x + kMagic) - kMagic) * s - w;
}

// Eight floats: one AVX2 register (two SSE registers in the default copy), in the vector extension
// GCC and Clang share. Written this way, the loop below runs the same operations side by side on
// eight values; given the same loop in scalars, GCC's vectoriser sometimes spent more instructions
// shuffling lanes than computing.
using Floats = float __attribute__((vector_size(32)));
constexpr std::size_t kLanes = sizeof(Floats) / sizeof(float);
// Each lane sums this many values in float before the block's lanes are added to double sums: the
// scores only rank candidate ranges, and float lanes keep the loop to single-precision arithmetic.
constexpr std::size_t kBlockVectors = 16;

__attribute__((target_clones("avx2", "default"))) double row_error(const float* w, std::size_t width, float s,
                                                                    float z, float qmin, float qmax,
                                                                    const float* mean, const float* var) {
  const float low = qmin - z, high = qmax - z;  // exact: integers well below 2^24
  const Floats sv = Floats{} + s, lowv = Floats{} + low, highv = Floats{} + high, magic = Floats{} + kMagic;
  double weighted = 0.0, projected = 0.0;
  const std::size_t vectors = width / kLanes;
  for (std::size_t first = 0; first < vectors; first += kBlockVectors) {
    const std::size_t count = std::min(vectors, first + kBlockVectors) - first;
    Floats errors[kBlockVectors];
    for (std::size_t k = 0; k < count; ++k) {  // rounding_error() on eight values at a time
      Floats x;
      std::memcpy(&x, w + (first + k) * kLanes, sizeof x);
      Floats q = x / sv;
      q = q < lowv ? lowv : q;
      q = q > highv ? highv : q;
      errors[k] = ((q + magic) - magic) * sv - x;
    }
    Floats by_var{}, by_mean{};
    if (mean == nullptr) {
      for (std::size_t k = 0; k < count; ++k) by_var += errors[k] * errors[k];
    } else {
      for (std::size_t k = 0; k < count; ++k) {
        Floats v, m;
        std::memcpy(&v, var + (first + k) * kLanes, sizeof v);
        std::memcpy(&m, mean + (first + k) * kLanes, sizeof m);
        by_var += errors[k] * errors[k] * v;
        by_mean += errors[k] * m;
      }
    }
    for (std::size_t lane = 0; lane < kLanes; ++lane) {
      weighted += by_var[lane];
      projected += by_mean[lane];
    }
  }
  for (std::size_t i = vectors * kLanes; i < width; ++i) {
    const float e = rounding_error(w[i], s, low, high);
    weighted += static_cast<double>(e * e * (mean == nullptr ? 1.0f : var[i]));
    if (mean != nullptr) projected += static_cast<double>(e * mean[i]);
  }
  return mean == nullptr ? weighted : weighted + projected * projected;
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
