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
#include "onnx/schema.h"
#include "writer/qdq_writer.h"
#include "tests/model_builder.h"
#include "writer/wire_writer.h"

namespace {

using namespace onnx2fx;
using namespace onnx2fx::onnx_schema;
using namespace onnx2fx::test_models;
namespace fs = std::filesystem;

wire::Writer float_tensor(std::string_view name, std::initializer_list<std::int64_t> dims, const std::vector<float>& values) {
  wire::Writer tensor;
  for (std::int64_t dim : dims) tensor.int64(TensorProto::dims, dim);
  tensor.varint(TensorProto::data_type, 1);
  tensor.string(TensorProto::name, name);
  tensor.string(TensorProto::raw_data, std::string_view(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return tensor;
}

// The source model, written once into the scratch folder.
const fs::path& source_model() {
  static const fs::path path = [] {
    wire::Writer body;  // Loop body: (i, cond) -> (cond, m + 1 captured from the outer graph)
    body.message(GraphProto::node, node("Identity", {"cond_in"}, "cond_out"));
    body.message(GraphProto::node, node("Identity", {"m"}, "scan_out"));
    body.string(GraphProto::name, "body");
    body.message(GraphProto::input, value_info("i"));
    body.message(GraphProto::input, value_info("cond_in"));
    body.message(GraphProto::output, value_info("cond_out"));
    body.message(GraphProto::output, value_info("scan_out"));
    wire::Writer attribute;
    attribute.string(AttributeProto::name, "body");
    attribute.message(AttributeProto::g, std::move(body));
    attribute.varint(AttributeProto::type, 5);  // GRAPH
    wire::Writer loop = node("Loop", {"trip", "cond"}, "loop_out");
    loop.message(NodeProto::attribute, std::move(attribute));

    wire::Writer graph;
    graph.message(GraphProto::node, node("Mul", {"x", "w"}, "m"));
    graph.message(GraphProto::node, node("Add", {"m", "b"}, "a"));
    graph.message(GraphProto::node, node("Relu", {"a"}, "y"));
    graph.message(GraphProto::node, std::move(loop));
    graph.string(GraphProto::name, "g");
    graph.message(GraphProto::initializer, float_tensor("w", {2, 3}, {0.5f, -1.0f, 2.0f, 0.25f, 3.0f, -0.75f}));
    graph.message(GraphProto::initializer, float_tensor("b", {3}, {0.1f, -0.2f, 0.3f}));
    graph.message(GraphProto::input, value_info("x"));
    graph.message(GraphProto::input, value_info("trip"));
    graph.message(GraphProto::input, value_info("cond"));
    graph.message(GraphProto::output, value_info("y"));
    graph.message(GraphProto::output, value_info("loop_out"));
    wire::Writer opset;
    opset.int64(OperatorSetIdProto::version, 13);
    wire::Writer model;
    model.int64(ModelProto::ir_version, 7);
    model.message(ModelProto::graph, std::move(graph));
    model.message(ModelProto::opset_import, std::move(opset));
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

std::string pick_name(FuzzedDataProvider& in) { return in.PickValueInArray(kNames); }
QuantType pick_type(FuzzedDataProvider& in) { return in.PickValueInArray(kQuantTypes); }

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
std::optional<FloatValues> pick_values(FuzzedDataProvider& in, std::vector<float>& storage) {
  if (!in.ConsumeBool()) return std::nullopt;
  std::vector<std::int64_t> shape(in.ConsumeIntegralInRange<std::size_t>(0, 3));
  std::size_t count = 1;
  for (std::int64_t& dim : shape) {
    dim = in.ConsumeIntegralInRange<std::int64_t>(-1, 4);
    count *= static_cast<std::size_t>(dim < 0 ? 0 : dim);
  }
  if (in.ConsumeBool()) count = in.ConsumeIntegralInRange<std::size_t>(0, 8);
  storage.resize(count);
  for (float& value : storage) value = in.ConsumeFloatingPoint<float>();
  return FloatValues{storage, std::move(shape), nullptr};
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
    QdqWeight weight{pick_name(in), pick_scales(in), {}, pick_type(in), std::nullopt, std::nullopt};
    weight.zero_point = pick_zero_points(in, weight.scale.size());
    weight.axis = pick_axis(in);
    weight.values = pick_values(in, storage.emplace_back());
    plan.weights.push_back(std::move(weight));
  }
  for (std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 2); n > 0; --n) {
    QdqBias bias{pick_name(in), pick_scales(in), pick_axis(in), std::nullopt};
    bias.values = pick_values(in, storage.emplace_back());
    plan.biases.push_back(std::move(bias));
  }
  if (in.ConsumeBool()) {
    QdqFloat replaced{pick_name(in), {}};
    if (auto values = pick_values(in, storage.emplace_back())) replaced.values = std::move(*values);
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
