// Fuzz target (c): QDQ writer plans decoded from the fuzzer's bytes, applied to a small valid model
// (y = Relu(Add(Mul(x, w), b)) with a Loop whose body captures `m`). A plan the writer accepts must
// produce a model that the reader and the load passes accept again; a plan it refuses must be
// refused with QdqPlanError before anything is written (the scratch folder stays empty).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "onnx/errors.h"
#include "onnx/model_reader.h"
#include "writer/qdq_writer.h"
#include "tests/model_builder.h"
#include "writer/wire_writer.h"

namespace {

using namespace onnx2fx;
using namespace onnx2fx::test_models;
namespace fs = std::filesystem;

wire::Writer float_tensor(std::string_view name, std::initializer_list<std::int64_t> dims, const std::vector<float>& values) {
  wire::Writer tensor;
  for (std::int64_t dim : dims) tensor.int64(1, dim);
  tensor.varint(2, 1);
  tensor.string(8, name);
  tensor.string(9, std::string_view(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return tensor;
}

// The source model, written once into the scratch folder.
const fs::path& source_model() {
  static const fs::path path = [] {
    wire::Writer body;  // Loop body: (i, cond) -> (cond, m + 1 captured from the outer graph)
    body.message(1, node("Identity", {"cond_in"}, "cond_out"));
    body.message(1, node("Identity", {"m"}, "scan_out"));
    body.string(2, "body");
    body.message(11, value_info("i"));
    body.message(11, value_info("cond_in"));
    body.message(12, value_info("cond_out"));
    body.message(12, value_info("scan_out"));
    wire::Writer attribute;
    attribute.string(1, "body");
    attribute.message(6, std::move(body));
    attribute.varint(20, 5);  // GRAPH
    wire::Writer loop = node("Loop", {"trip", "cond"}, "loop_out");
    loop.message(5, std::move(attribute));

    wire::Writer graph;
    graph.message(1, node("Mul", {"x", "w"}, "m"));
    graph.message(1, node("Add", {"m", "b"}, "a"));
    graph.message(1, node("Relu", {"a"}, "y"));
    graph.message(1, std::move(loop));
    graph.string(2, "g");
    graph.message(5, float_tensor("w", {2, 3}, {0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.75f}));
    graph.message(5, float_tensor("b", {3}, {0.1f, -0.2f, 0.3f}));
    graph.message(11, value_info("x"));
    graph.message(11, value_info("trip"));
    graph.message(11, value_info("cond"));
    graph.message(12, value_info("y"));
    graph.message(12, value_info("loop_out"));
    wire::Writer opset;
    opset.int64(2, 13);
    wire::Writer model;
    model.int64(1, 7);
    model.message(7, std::move(graph));
    model.message(8, std::move(opset));
    const std::vector<std::byte> bytes = model.to_bytes();
    const fs::path file = fuzz::scratch_folder() / "source.onnx";
    std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
    fs::create_directories(fuzz::scratch_folder() / "out");
    return file;
  }();
  return path;
}

const char* const kNames[] = {"x", "w", "b", "m", "a", "y", "trip", "cond", "loop_out", "cond_out", "scan_out",
                              "missing", "", "w_scale", "m_quantized", "y_float"};
const char* const kTypes[] = {"uint8", "int8", "uint16", "int16", "uint4", "int4", "int32", "float", ""};

std::string pick_name(FuzzedDataProvider& in) { return in.PickValueInArray(kNames); }
std::string pick_type(FuzzedDataProvider& in) { return in.PickValueInArray(kTypes); }

std::vector<double> pick_scales(FuzzedDataProvider& in) {
  std::vector<double> scales(in.ConsumeIntegralInRange<std::size_t>(0, 4));
  for (double& scale : scales)
    scale = in.ConsumeBool() ? in.ConsumeFloatingPointInRange<double>(1e-6, 10.0) : in.ConsumeFloatingPoint<double>();
  return scales;
}

std::vector<std::int64_t> pick_zero_points(FuzzedDataProvider& in, std::size_t count) {
  std::vector<std::int64_t> points(in.ConsumeBool() ? count : in.ConsumeIntegralInRange<std::size_t>(0, 4));
  for (std::int64_t& point : points)
    point = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(-8, 255) : in.ConsumeIntegral<std::int64_t>();
  return points;
}

std::optional<std::int64_t> pick_axis(FuzzedDataProvider& in) {
  if (!in.ConsumeBool()) return std::nullopt;
  return in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(-3, 3) : in.ConsumeIntegral<std::int64_t>();
}

// New values with a shape that is usually, but not always, the initializer's.
void pick_values(FuzzedDataProvider& in, std::vector<float>& storage, std::optional<std::span<const float>>& values,
                 std::vector<std::int64_t>& shape) {
  if (!in.ConsumeBool()) return;
  shape.resize(in.ConsumeIntegralInRange<std::size_t>(0, 3));
  std::size_t count = 1;
  for (std::int64_t& dim : shape) {
    dim = in.ConsumeIntegralInRange<std::int64_t>(-1, 4);
    count *= static_cast<std::size_t>(dim < 0 ? 0 : dim);
  }
  if (in.ConsumeBool()) count = in.ConsumeIntegralInRange<std::size_t>(0, 8);
  storage.resize(count);
  for (float& value : storage) value = in.ConsumeFloatingPoint<float>();
  values = std::span<const float>(storage);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  QdqPlan plan;
  std::vector<std::vector<float>> storage;  // the values the plan's spans view
  storage.reserve(16);
  plan.min_opset = in.ConsumeIntegralInRange<std::int64_t>(0, 25);
  for (std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 4); n > 0; --n) {
    QdqActivation activation{pick_name(in), pick_scales(in), {}, pick_type(in)};
    activation.zero_point = pick_zero_points(in, activation.scale.size());
    plan.activations.push_back(std::move(activation));
  }
  for (std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 3); n > 0; --n) {
    QdqWeight weight{pick_name(in), pick_scales(in), {}, pick_type(in), std::nullopt, std::nullopt, {}};
    weight.zero_point = pick_zero_points(in, weight.scale.size());
    weight.axis = pick_axis(in);
    pick_values(in, storage.emplace_back(), weight.values, weight.values_shape);
    plan.weights.push_back(std::move(weight));
  }
  for (std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 2); n > 0; --n) {
    QdqBias bias{pick_name(in), pick_scales(in), pick_axis(in), std::nullopt, {}};
    pick_values(in, storage.emplace_back(), bias.values, bias.values_shape);
    plan.biases.push_back(std::move(bias));
  }
  if (in.ConsumeBool()) {
    QdqFloat replaced{pick_name(in), {}, {}};
    std::optional<std::span<const float>> values;
    pick_values(in, storage.emplace_back(), values, replaced.values_shape);
    if (values) replaced.values = *values;
    plan.floats.push_back(std::move(replaced));
  }

  const fs::path output = fuzz::scratch_folder() / "out" / "quantized.onnx";
  try {
    write_qdq_model(source_model(), output, plan);
  } catch (const QdqPlanError&) {
    if (!fs::is_empty(output.parent_path())) std::abort();  // a refused plan wrote something
    return 0;
  }
  // What the writer wrote must read back and pass the load passes.
  auto model = load_model(output);
  fuzz::run_load_passes(*model);
  volatile std::uint64_t sum = fuzz::touch(*model->graph);
  (void)sum;
  fs::remove(output);
  return 0;
}
