// The QDQ writer on a small hand-encoded model, read back with the model reader.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ir/data_type.h"
#include "onnx/errors.h"
#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "passes/check_graph.h"
#include "tests/check.h"
#include "writer/qdq_writer.h"
#include "tests/model_builder.h"
#include "writer/wire_writer.h"

namespace {

using namespace onnx2fx;
using namespace onnx2fx::onnx_schema;
using namespace onnx2fx::test_models;
namespace fs = std::filesystem;

// y = Relu(Mul(x, w)) with w = [0.5, -1.0, 2.0] (float32), opset 11, IR 6, a doc string.
std::vector<std::byte> mul_relu_model() {
  const float weights[] = {0.5f, -1.0f, 2.0f};
  wire::Writer tensor;
  tensor.int64(TensorProto::dims, 3);
  tensor.varint(TensorProto::data_type, 1);
  tensor.string(TensorProto::name, "w");
  tensor.string(TensorProto::raw_data, std::string_view(reinterpret_cast<const char*>(weights), sizeof weights));
  wire::Writer graph;
  graph.message(GraphProto::node, node("Mul", {"x", "w"}, "m"));
  graph.message(GraphProto::node, node("Relu", {"m"}, "y"));
  graph.string(GraphProto::name, "g");
  graph.message(GraphProto::initializer, std::move(tensor));
  graph.message(GraphProto::input, value_info("x"));
  graph.message(GraphProto::output, value_info("y"));
  wire::Writer opset;
  opset.int64(OperatorSetIdProto::version, 11);
  wire::Writer model;
  model.int64(ModelProto::ir_version, 6);
  model.string(ModelProto::doc_string, "keep me");
  model.message(ModelProto::graph, std::move(graph));
  model.message(ModelProto::opset_import, std::move(opset));
  return model.to_bytes();
}

struct Folder {
  fs::path path = fs::temp_directory_path() / ("onnx2fx_qdq_writer_test_" + std::to_string(::getpid()));
  Folder() { fs::create_directories(path); }
  ~Folder() { fs::remove_all(path); }
  std::size_t entries() const { return static_cast<std::size_t>(std::distance(fs::directory_iterator(path), {})); }
};

const Tensor* initializer(const Graph& graph, std::string_view name) {
  for (const Tensor& tensor : graph.initializers)
    if (tensor.name == name) return &tensor;
  return nullptr;
}

QdqPlan mul_plan() {
  QdqPlan plan;
  plan.activations.push_back({"m", {0.05}, {128}, QuantType::Uint8});
  QdqWeight weight;
  weight.initializer = "w";
  weight.scale = {0.01, 0.02, 0.03};
  weight.zero_point = {0, 0, 0};
  weight.dtype = QuantType::Int8;
  weight.axis = 0;
  plan.weights.push_back(weight);
  return plan;
}

void quantizes_activation_and_weight() {
  Folder folder;
  write_file(folder.path / "model.onnx", mul_relu_model());
  const QdqStats stats = write_qdq_model(folder.path / "model.onnx", folder.path / "out.onnx", mul_plan());
  CHECK(stats.quantized_activations == 1);
  CHECK(stats.quantized_weights == 1);
  CHECK(stats.bytes_written == fs::file_size(folder.path / "out.onnx"));

  const auto model = load_model(folder.path / "out.onnx");
  check_graph(*model->graph);
  const Graph& graph = *model->graph;
  CHECK((op_types(graph) ==
         std::vector<std::string>{"DequantizeLinear", "Mul", "QuantizeLinear", "DequantizeLinear", "Relu"}));
  CHECK((graph.nodes[0]->outputs == std::vector<std::string>{"w"}));
  CHECK((graph.nodes[1]->inputs == std::vector<std::string>{"x", "w"}));
  CHECK((graph.nodes[2]->inputs == std::vector<std::string>{"m", "m_scale", "m_zero_point"}));
  CHECK((graph.nodes[4]->inputs == std::vector<std::string>{"m_dequantized"}));
  CHECK(graph.nodes[0]->attributes.size() == 1 && graph.nodes[0]->attributes[0].i == 0);

  const Tensor* quantized = initializer(graph, "w_quantized");
  CHECK(quantized && quantized->data_type == static_cast<std::int32_t>(DataType::Int8));
  if (quantized && quantized->data.size() == 3) {
    std::int8_t values[3];
    std::memcpy(values, quantized->data.data(), 3);
    CHECK(values[0] == 50 && values[1] == -50 && values[2] == 67);  // 0.5/0.01, -1/0.02, 2/0.03
  }
  CHECK(initializer(graph, "w") == nullptr);
  const Tensor* zero_point = initializer(graph, "m_zero_point");
  CHECK(zero_point && zero_point->dims.empty() && zero_point->data.size() == 1 &&
        zero_point->data[0] == std::byte{128});
  CHECK(model->ir_version == 7);  // raised with the opset
  CHECK(model->opset_imports.size() == 1 && model->opset_imports[0].version == 13);
  CHECK(model->doc_string == "keep me");
  CHECK((model->metadata_props ==
         std::vector<std::pair<std::string, std::string>>{{"onnx2fx.quantized", "qdq"}}));
}

void keeps_graph_output_names() {
  Folder folder;
  write_file(folder.path / "model.onnx", mul_relu_model());
  QdqPlan plan;
  plan.activations.push_back({"y", {0.1}, {-3}, QuantType::Int4});
  write_qdq_model(folder.path / "model.onnx", folder.path / "model.onnx", plan);  // in place
  const auto model = load_model(folder.path / "model.onnx");
  check_graph(*model->graph);
  const Graph& graph = *model->graph;
  CHECK((op_types(graph) == std::vector<std::string>{"Mul", "Relu", "QuantizeLinear", "DequantizeLinear"}));
  CHECK((graph.nodes[1]->outputs == std::vector<std::string>{"y_float"}));
  CHECK((graph.nodes[3]->outputs == std::vector<std::string>{"y"}));
  CHECK(graph.outputs.size() == 1 && graph.outputs[0].name == "y");
  const Tensor* zero_point = initializer(graph, "y_zero_point");
  CHECK(zero_point && zero_point->data_type == static_cast<std::int32_t>(DataType::Int4) &&
        zero_point->data.size() == 1 && zero_point->data[0] == std::byte{0x0d});
  CHECK(model->ir_version == 10 && model->opset_imports[0].version == 21);
}

void rejects_bad_plans_without_writing() {
  Folder folder;
  write_file(folder.path / "model.onnx", mul_relu_model());
  const auto attempt = [&](const QdqPlan& plan) {
    write_qdq_model(folder.path / "model.onnx", folder.path / "out.onnx", plan);
  };
  QdqPlan plan;
  plan.activations.push_back({"nowhere", {0.1}, {0}, QuantType::Uint8});
  CHECK_THROWS(QdqPlanError, attempt(plan), "'nowhere' is not produced or consumed");
  plan.activations[0] = {"m", {0.0}, {0}, QuantType::Uint8};
  CHECK_THROWS(QdqPlanError, attempt(plan), "activation 'm': scale 0 is not a finite float32 > 0");
  plan.activations[0] = {"m", {0.1}, {256}, QuantType::Uint8};
  CHECK_THROWS(QdqPlanError, attempt(plan), "zero point 256 is outside the range of uint8 [0, 255]");
  plan = mul_plan();
  plan.weights[0].scale.pop_back();
  CHECK_THROWS(QdqPlanError, attempt(plan), "weight 'w': 2 scales given, expected 3");
  plan = mul_plan();
  const float values[] = {1, 2};
  plan.weights[0].values = FloatValues{values, {2}, nullptr};
  CHECK_THROWS(QdqPlanError, attempt(plan), "weight 'w': values have shape [2] but the initializer has dims [3]");
  // Found by cpp/fuzz/qdq_writer_fuzzer.cc: a shape that matches but a span of another length was
  // written as raw_data of the wrong size, so the output did not read back.
  const float eight[] = {1, 2, 3, 4, 5, 6, 7, 8};
  plan.weights[0].values = FloatValues{eight, {3}, nullptr};
  CHECK_THROWS(QdqPlanError, attempt(plan), "weight 'w': values hold 8 floats but dims [3] need 3");
  CHECK(folder.entries() == 1);  // no output, no temporary file
  CHECK_THROWS(std::filesystem::filesystem_error,
               write_qdq_model(folder.path / "model.onnx", folder.path / "missing" / "out.onnx", mul_plan()),
               "cannot create the output");
}

void replaces_float_initializer_data() {
  Folder folder;
  write_file(folder.path / "model.onnx", mul_relu_model());
  QdqPlan plan;
  const float values[] = {4, 5, 6};
  plan.floats.push_back({"w", {values, {3}, nullptr}});
  const QdqStats stats = write_qdq_model(folder.path / "model.onnx", folder.path / "out.onnx", plan);
  CHECK(stats.quantized_weights == 0 && stats.quantized_activations == 0);
  const auto model = load_model(folder.path / "out.onnx");
  const Tensor* w = initializer(*model->graph, "w");
  CHECK(w && w->data_type == static_cast<std::int32_t>(DataType::Float) && w->dims == std::vector<std::int64_t>{3});
  if (w && w->data.size() == sizeof(values)) CHECK(std::memcmp(w->data.data(), values, sizeof(values)) == 0);
  CHECK((op_types(*model->graph) == std::vector<std::string>{"Mul", "Relu"}));

  plan.floats[0].values.shape = {1, 3};
  CHECK_THROWS(QdqPlanError, write_qdq_model(folder.path / "model.onnx", folder.path / "bad.onnx", plan),
               "float initializer 'w': values have shape [1, 3] but the initializer has dims [3]");
  plan = mul_plan();
  plan.floats.push_back({"w", {values, {3}, nullptr}});
  CHECK_THROWS(QdqPlanError, write_qdq_model(folder.path / "model.onnx", folder.path / "bad.onnx", plan),
               "initializer 'w' appears more than once in the plan");
  CHECK(!fs::exists(folder.path / "bad.onnx"));
}

}  // namespace

int main() {
  quantizes_activation_and_weight();
  keeps_graph_output_names();
  rejects_bad_plans_without_writing();
  replaces_float_initializer_data();
  return onnx2fx::testing::report();
}
