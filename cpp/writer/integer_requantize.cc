// Fixed-point requantization: a rescale as a 31-bit multiplier and a rounding right shift, applied
// with int64 Mul, Add, Mod, Sub, Div, Clip and Cast; and moving an integer tensor to another grid.

#include <algorithm>
#include <cmath>
#include <string_view>

#include "ir/data_type.h"
#include "writer/integer_lowering.h"

namespace onnx2fx::integer_detail {

using namespace onnx_schema;
using namespace quant_writer;

namespace {

constexpr int kMultiplierBits = 31;  // multipliers in [2^30, 2^31]: |int32 acc x multiplier| < 2^62

}  // namespace

// int64 (acc x M0 + 2^(n-1)) floor-divided by 2^n, plus the zero point, clamped, cast to 8 bits.
std::string IntegerLowering::requantize(const std::string& acc, bool acc_int64, const std::vector<double>& rescale,
                                        const std::vector<std::int64_t>& channel_dims, const Grid& y, bool relu,
                                        const std::string& node_name, const std::string& tensor,
                                        const std::string& base) {
  std::vector<std::pair<std::int64_t, std::int64_t>> factors;
  for (double r : rescale) factors.push_back(decompose(r, node_name));
  return requantize_by(acc, acc_int64, rescale, factors, channel_dims, y, relu, node_name, tensor, base);
}

// The same with the multipliers and shifts given (per channel, or one).
std::string IntegerLowering::requantize_by(const std::string& acc, bool acc_int64, const std::vector<double>& rescale,
                                           const std::vector<std::pair<std::int64_t, std::int64_t>>& factors,
                                           const std::vector<std::int64_t>& channel_dims, const Grid& y, bool relu,
                                           const std::string& node_name, const std::string& tensor,
                                           const std::string& base) {
  IntegerRequantization row{node_name, tensor, rescale, {}, {}, 0};
  std::vector<std::int64_t> halves, divisors;
  for (std::size_t c = 0; c < factors.size(); ++c) {
    const auto [multiplier, shift] = factors[c];
    const double r = rescale[std::min(c, rescale.size() - 1)];
    row.multiplier.push_back(multiplier);
    row.shift.push_back(shift);
    row.max_relative_error = std::max(
        row.max_relative_error, std::abs(std::ldexp(static_cast<double>(multiplier), -static_cast<int>(shift)) - r) / r);
    halves.push_back(std::int64_t{1} << (shift - 1));
    divisors.push_back(std::int64_t{1} << shift);
  }
  const bool unit = std::ranges::all_of(row.multiplier, [](std::int64_t m) { return m == 1; });
  std::string x = acc;
  if (!acc_int64) {
    x = names_.fresh(base + "_acc64");
    emit("Cast", {acc}, {x}, vec(int_attribute("to", static_cast<std::int64_t>(DataType::Int64))));
  }
  const auto step = [&](std::string_view op, const std::string& a, const std::string& b, std::string_view what) {
    const std::string out = names_.fresh(base + "_" + std::string(what));
    emit(op, {a, b}, {out});
    return out;
  };
  const std::string scaled =
      unit ? x : step("Mul", x, int64_constant(base + "_multiplier", row.multiplier, channel_dims), "scaled");
  const std::string rounded = step("Add", scaled, int64_constant(base + "_half", halves, channel_dims), "rounded");
  const std::string divisor = int64_constant(base + "_divisor", divisors, channel_dims);
  const std::string remainder = step("Mod", rounded, divisor, "remainder");  // fmod=0: sign of the divisor, >= 0
  const std::string exact = step("Sub", rounded, remainder, "floored");
  std::string shifted = step("Div", exact, divisor, "shifted");  // exact division: floor((acc M0 + 2^(n-1)) / 2^n)
  if (y.zero_point != 0) shifted = step("Add", shifted, int64_constant(base + "_zp", {y.zero_point}), "shifted_zp");
  const std::string clamped = names_.fresh(base + "_clamped");
  emit("Clip", {shifted, int64_constant(base + "_min", {relu ? std::max(y.zero_point, y.type->min) : y.type->min}),
                int64_constant(base + "_max", {y.type->max})}, {clamped});
  const std::string out = names_.fresh(base);
  emit("Cast", {clamped}, {out}, vec(int_attribute("to", static_cast<std::int64_t>(y.type->type))));
  stats_.requantizations.push_back(std::move(row));
  return out;
}

// rescale ~ multiplier x 2^-shift, multiplier in [2^30, 2^31], 1 <= shift <= 62.
std::pair<std::int64_t, std::int64_t> IntegerLowering::decompose(double rescale, const std::string& node_name) {
  if (!(std::isfinite(rescale) && rescale > 0))
    throw IntegerLoweringError("node '" + node_name + "': rescale " + format_number(rescale) + " is not finite and > 0");
  int exponent = 0;
  const double fraction = std::frexp(rescale, &exponent);  // rescale = fraction x 2^exponent, fraction in [0.5, 1)
  std::int64_t multiplier = std::llround(std::ldexp(fraction, kMultiplierBits));
  const std::int64_t shift = kMultiplierBits - exponent;
  if (shift < 1 || shift > 62)
    throw IntegerLoweringError("node '" + node_name + "': rescale " + format_number(rescale) +
                               " is outside the range a 31-bit multiplier and a shift of 1 to 62 bits can express");
  return {multiplier, shift};
}

// Centred int64 copy of an integer tensor: x - zero point.
std::string IntegerLowering::centred(const IntegerValue& x, const std::string& base) {
  const std::string wide = names_.fresh(base + "_i64");
  emit("Cast", {x.name}, {wide}, vec(int_attribute("to", static_cast<std::int64_t>(DataType::Int64))));
  if (x.grid.zero_point == 0) return wide;
  const std::string out = names_.fresh(base + "_centred");
  emit("Sub", {wide, int64_constant(base + "_in_zp", {x.grid.zero_point})}, {out});
  return out;
}

// `x` on the grid `y` (the same integers when the grids are equal).
std::string IntegerLowering::regrid(const IntegerValue& x, const Grid& y, bool relu, const std::string& node_name,
                                    const std::string& tensor) {
  if (x.grid.same_as(y) && !relu) return x.name;
  const std::string base = names_.fresh(tensor + "_int");
  if (x.grid.same_as(y)) {  // ReLU on the same grid: an integer clamp at the zero point
    const std::string out = names_.fresh(base);
    const std::string lo = constant(base + "_min", y.type->type, {}, {eight_bits(y.zero_point)});
    const std::string hi = constant(base + "_max", y.type->type, {}, {eight_bits(y.type->max)});
    emit("Clip", {x.name, lo, hi}, {out});
    return out;
  }
  if (format_ == IntegerFormat::QOperator) {  // dequantize and quantize again: what onnxruntime does
    const std::string f = names_.fresh(base + "_float");
    emit("DequantizeLinear", {x.name, scale_constant(f, x.grid.scale),
                              zero_point_constant(f, *x.grid.type, x.grid.zero_point)}, {f});
    std::string source = f;
    if (relu) {
      source = names_.fresh(base + "_relu");
      emit("Relu", {f}, {source});
    }
    const std::string out = names_.fresh(base);
    emit("QuantizeLinear", {source, scale_constant(out, y.scale), zero_point_constant(out, *y.type, y.zero_point)}, {out});
    return out;
  }
  return requantize(centred(x, base), true,
                    {static_cast<double>(x.grid.scale) / static_cast<double>(y.scale)}, {}, y, relu, node_name,
                    tensor, base);
}

}  // namespace onnx2fx::integer_detail
