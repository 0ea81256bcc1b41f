// The weight search's scoring kernel: torch's float32 rounding chain value by value, the optional
// diagonal-and-mean weighting, groups, the thread split and the size checks.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "quant/rounding_error.h"
#include "tests/check.h"

namespace {

using onnx2fx::rounding_errors;

// The same chain one value at a time with the C library's rounding (half to even by default).
float reference_error(float w, float s, float z, float qmin, float qmax) {
  float q = std::nearbyint(w / s) + z;
  q = std::fmin(std::fmax(q, qmin), qmax);
  return (q - z) * s - w;
}

std::vector<float> pseudo_random(std::size_t count, float spread, std::uint32_t seed) {
  std::vector<float> values(count);
  for (float& v : values) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<float>(static_cast<std::int32_t>(seed >> 8) % 20001 - 10000) / 10000.0f * spread;
  }
  return values;
}

void each_value_rounds_like_the_reference() {
  // one value per row, at every position of a row of two vectors and a scalar tail (the other values
  // are zeros, exact on every grid that holds zero): each score is that value's squared error;
  // halves of a step are ties (to even)
  constexpr std::size_t kWidth = 19;
  std::vector<float> values = pseudo_random(4096, 0.05f, 1);
  for (std::size_t i = 0; i < 64; ++i) values[i] = static_cast<float>(static_cast<int>(i) - 32) * 0.0005f;
  std::vector<float> w(values.size() * kWidth, 0.0f);
  for (std::size_t i = 0; i < values.size(); ++i) w[i * kWidth + i % kWidth] = values[i];
  std::vector<float> s(values.size(), 0.001f), z(values.size());
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(i % 16);
  std::vector<double> out(values.size());
  rounding_errors(w, kWidth, s, z, 0.0f, 15.0f, {}, {}, out);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float e = reference_error(values[i], s[i], z[i], 0.0f, 15.0f);
    CHECK(out[i] == static_cast<double>(e * e));
  }
}

void weighted_rows_by_group_and_threads() {
  constexpr std::size_t kRows = 6, kWidth = 1000, kCandidates = 3, kGroups = 2;
  const std::vector<float> w = pseudo_random(kRows * kWidth, 0.2f, 2);
  std::vector<float> mean = pseudo_random(kGroups * kWidth, 1.0f, 3), var = pseudo_random(kGroups * kWidth, 1.0f, 4);
  for (float& v : var) v = std::fabs(v);
  std::vector<float> s(kCandidates * kRows), z(kCandidates * kRows);
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = 0.002f + 0.001f * static_cast<float>(i);
    z[i] = static_cast<float>(i % 7) - 3.0f;
  }
  std::vector<double> one(s.size()), two(s.size());
  rounding_errors(w, kWidth, s, z, -8.0f, 7.0f, mean, var, one, 1);
  rounding_errors(w, kWidth, s, z, -8.0f, 7.0f, mean, var, two, 4);
  CHECK(one == two);
  for (std::size_t k = 0; k < kCandidates; ++k) {
    for (std::size_t r = 0; r < kRows; ++r) {
      const std::size_t at = k * kRows + r, group = r / (kRows / kGroups);
      double weighted = 0.0, projected = 0.0;
      for (std::size_t i = 0; i < kWidth; ++i) {
        const double e = reference_error(w[r * kWidth + i], s[at], z[at], -8.0f, 7.0f);
        weighted += e * e * var[group * kWidth + i];
        projected += e * mean[group * kWidth + i];
      }
      const double expected = weighted + projected * projected;
      CHECK(std::fabs(one[at] - expected) <= 1e-5 * expected);
    }
  }
}

void sizes_are_checked() {
  const std::vector<float> w(10, 0.1f), s(4, 0.01f), z(4, 0.0f), m(5, 0.0f);
  std::vector<double> out(4);
  CHECK_THROWS(std::invalid_argument, rounding_errors(w, 3, s, z, 0.0f, 15.0f, {}, {}, out), "whole rows");
  CHECK_THROWS(std::invalid_argument, rounding_errors(w, 5, s, z, 0.0f, 15.0f, m, {}, out), "both empty");
  CHECK_THROWS(std::invalid_argument, rounding_errors(w, 5, s, z, 15.0f, 0.0f, {}, {}, out), "qmin");
}

}  // namespace

int main() {
  each_value_rounds_like_the_reference();
  weighted_rows_by_group_and_threads();
  sizes_are_checked();
  return onnx2fx::testing::report();
}
