// The fixed-point and QOperator writers on a small hand-encoded model, read back with the model reader.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ir/data_type.h"
#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "passes/check_graph.h"
#include "tests/check.h"
#include "writer/integer_writer.h"
#include "tests/model_builder.h"
#include "writer/wire_writer.h"

namespace {

using namespace onnx2fx;
using namespace onnx2fx::onnx_schema;
using namespace onnx2fx::test_models;
namespace fs = std::filesystem;

// y = `last`(Relu(MatMul(x, w))) with w = [[0.5, -1.0], [2.0, 0.25]] (float32), opset 17.
std::vector<std::byte> matmul_model(std::string_view last) {
  const float weights[] = {0.5f, -1.0f, 2.0f, 0.25f};
  wire::Writer tensor;
  tensor.int64(TensorProto::dims, 2);
  tensor.int64(TensorProto::dims, 2);
  tensor.varint(TensorProto::data_type, 1);
  tensor.string(TensorProto::name, "w");
  tensor.string(TensorProto::raw_data, std::string_view(reinterpret_cast<const char*>(weights), sizeof weights));
  wire::Writer graph;
  graph.message(GraphProto::node, node("MatMul", {"x", "w"}, "m"));
  graph.message(GraphProto::node, node("Relu", {"m"}, last.empty() ? "y" : "r"));
  if (!last.empty()) graph.message(GraphProto::node, node(last, {"r"}, "y"));
  graph.string(GraphProto::name, "g");
  graph.message(GraphProto::initializer, std::move(tensor));
  graph.message(GraphProto::input, value_info("x"));
  graph.message(GraphProto::output, value_info("y"));
  wire::Writer opset;
  opset.int64(OperatorSetIdProto::version, 17);
  wire::Writer model;
  model.int64(ModelProto::ir_version, 8);
  model.message(ModelProto::graph, std::move(graph));
  model.message(ModelProto::opset_import, std::move(opset));
  return model.to_bytes();
}

struct Folder {
  fs::path path = fs::temp_directory_path() / ("onnx2fx_integer_writer_test_" + std::to_string(::getpid()));
  Folder() { fs::create_directories(path); }
  ~Folder() { fs::remove_all(path); }
  std::size_t entries() const { return static_cast<std::size_t>(std::distance(fs::directory_iterator(path), {})); }
};

// x: uint8 scale 0.02 zp 128; w: int8 per column, scales 0.02, 0.01; relu output y: uint8 scale 0.05 zp 0.
QdqPlan plan(std::string_view output = "y") {
  QdqPlan plan;
  plan.activations.push_back({"x", {0.02}, {128}, QuantType::Uint8});
  plan.activations.push_back({std::string(output), {0.05}, {0}, QuantType::Uint8});
  QdqWeight weight;
  weight.initializer = "w";
  weight.scale = {0.02, 0.01};
  weight.zero_point = {0, 0};
  weight.dtype = QuantType::Int8;
  weight.axis = 1;
  plan.weights.push_back(weight);
  return plan;
}

void lowers_matmul_relu_to_integer_ops() {
  Folder folder;
  write_file(folder.path / "model.onnx", matmul_model(""));
  const IntegerStats stats = write_integer_model(folder.path / "model.onnx", folder.path / "out.onnx", plan(),
                                                 IntegerFormat::FixedPoint, false);
  CHECK(stats.bytes_written == fs::file_size(folder.path / "out.onnx"));
  const auto model = load_model(folder.path / "out.onnx");
  check_graph(*model->graph);
  CHECK((op_types(*model->graph) ==
         std::vector<std::string>{"QuantizeLinear", "MatMulInteger", "Cast", "Mul", "Add", "Mod", "Sub", "Div", "Clip",
                                  "Cast", "DequantizeLinear"}));
  CHECK(model->graph->nodes.back()->outputs[0] == "y");
  // rescale per column: 0.02 x 0.02 / 0.05 = 0.008 and 0.02 x 0.01 / 0.05 = 0.004 (float32 scales)
  CHECK(stats.requantizations.size() == 1);
  if (stats.requantizations.size() == 1) {
    const IntegerRequantization& row = stats.requantizations[0];
    CHECK(row.node.empty() && row.tensor == "y");  // the nodes have no names; the fused Relu ends the group
    CHECK(row.multiplier.size() == 2 && row.shift.size() == 2);
    const double expected = static_cast<double>(0.02f) * static_cast<double>(0.02f) / static_cast<double>(0.05f);
    CHECK(row.shift[0] == 37 && row.multiplier[0] == std::llround(std::ldexp(expected, 37)));
    CHECK(row.shift[1] == 38);  // half the rescale: one more bit of shift
    CHECK(row.max_relative_error < 1e-9);
  }
  CHECK((model->metadata_props ==
         std::vector<std::pair<std::string, std::string>>{{"onnx2fx.quantized", "fixed-point"}}));
}

void writes_qoperator() {
  Folder folder;
  write_file(folder.path / "model.onnx", matmul_model(""));
  const IntegerStats stats = write_integer_model(folder.path / "model.onnx", folder.path / "out.onnx", plan(),
                                                 IntegerFormat::QOperator, false);
  CHECK(stats.requantizations.empty());
  const auto model = load_model(folder.path / "out.onnx");
  CHECK((op_types(*model->graph) == std::vector<std::string>{"QuantizeLinear", "QLinearMatMul", "DequantizeLinear"}));
}

void stops_at_an_op_without_integer_form() {
  Folder folder;
  write_file(folder.path / "model.onnx", matmul_model("Softmax"));
  QdqPlan softmax = plan("r");
  softmax.activations.push_back({"y", {1.0 / 255}, {0}, QuantType::Uint8});
  CHECK_THROWS(IntegerLoweringError,
               write_integer_model(folder.path / "model.onnx", folder.path / "out.onnx", softmax,
                                   IntegerFormat::FixedPoint, false),
               "node '' (Softmax): the operator has no integer form in the fixed-point format");
  CHECK(folder.entries() == 1);  // no output, no temporary file
  const IntegerStats stats = write_integer_model(folder.path / "model.onnx", folder.path / "out.onnx", softmax,
                                                 IntegerFormat::FixedPoint, true);
  CHECK((stats.float_islands == std::vector<std::string>{" (Softmax)"}));
  const auto model = load_model(folder.path / "out.onnx");
  const auto ops = op_types(*model->graph);
  CHECK(ops.size() == 14 && ops[10] == "DequantizeLinear" && ops[11] == "Softmax" && ops[12] == "QuantizeLinear");
  QdqPlan bad = plan();
  bad.activations[0].dtype = QuantType::Int16;
  CHECK_THROWS(QdqPlanError,
               write_integer_model(folder.path / "model.onnx", folder.path / "out2.onnx", bad,
                                   IntegerFormat::FixedPoint, false),
               "activation 'x': the integer writers need 8-bit activations, got 'int16'");
}

}  // namespace

int main() {
  lowers_matmul_relu_to_integer_ops();
  writes_qoperator();
  stops_at_an_op_without_integer_form();
  return onnx2fx::testing::report();
}
