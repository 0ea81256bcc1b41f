// The calibration histogram kernel: torch.histc's binning, the zero count, and the thread split.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "quant/histogram.h"
#include "tests/check.h"

namespace {

using onnx2fx::add_to_histogram;

void edges_and_range() {
  // Bins of width 0.25 over [0, 1]: an edge value opens its bin, 1.0 closes the last one, values
  // outside the range and NaN are skipped, zeros are counted.
  const std::vector<float> values = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, -0.1f, 1.5f, std::nanf(""), 0.0f, 0.3f};
  std::vector<double> counts(4, 1.0);  // added to, not overwritten
  const std::int64_t zeros = add_to_histogram(values, 0.0f, 1.0f, counts);
  CHECK(zeros == 2);
  CHECK((counts == std::vector<double>{3.0, 3.0, 2.0, 3.0}));
}

void threads_do_not_change_the_result() {
  std::vector<float> values(1 << 20);
  std::uint32_t state = 12345;
  for (float& v : values) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(static_cast<std::int32_t>(state >> 8) % 2001 - 1000) / 300.0f;
  }
  std::vector<double> one(2048, 0.0), four(2048, 0.0);
  const std::int64_t zeros_one = add_to_histogram(values, -3.5f, 3.5f, one, 1);
  const std::int64_t zeros_four = add_to_histogram(values, -3.5f, 3.5f, four, 4);
  CHECK(one == four);
  CHECK(zeros_one == zeros_four);
  double total = 0.0;
  for (double c : one) total += c;
  CHECK(total == static_cast<double>(values.size()));
}

void matches_one_value_at_a_time() {
  // Thousands of values: long runs of one bin (the zeros), values on and off the range.
  std::vector<float> values(5000);
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = i % 3 == 0 ? 0.0f : static_cast<float>(static_cast<int>(i % 97) - 10) / 37.0f;
  const float lo = -0.2f, hi = 2.0f;
  std::vector<double> counts(64, 0.0), expected(64, 0.0);
  const std::int64_t zeros = add_to_histogram(values, lo, hi, counts);
  std::int64_t expected_zeros = 0;
  for (const float v : values) {
    expected_zeros += v == 0.0f;
    if (!(v >= lo && v <= hi)) continue;
    auto bin = static_cast<std::size_t>((v - lo) * 64.0f / (hi - lo));
    ++expected[bin == 64 ? 63 : bin];
  }
  CHECK(zeros == expected_zeros);
  CHECK(counts == expected);
}

void bad_arguments() {
  std::vector<double> counts(8, 0.0), none;
  const std::vector<float> values = {1.0f};
  CHECK_THROWS(std::invalid_argument, add_to_histogram(values, 1.0f, 1.0f, counts), "lo < hi");
  CHECK_THROWS(std::invalid_argument, add_to_histogram(values, 0.0f, 1.0f, none), "at least one bin");
}

}  // namespace

int main() {
  edges_and_range();
  threads_do_not_change_the_result();
  matches_one_value_at_a_time();
  bad_arguments();
  return onnx2fx::testing::report();
}
