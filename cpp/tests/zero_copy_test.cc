// Tensors view the model's memory map: a tensor kept after its model is destroyed still reads
// valid memory (its owner holds the map), and writing through the view never reaches the file
// (private copy-on-write map). Run under AddressSanitizer by tests/test_core_sanitizers.py, where a
// view outliving its memory would be a use-after-free report.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "tests/check.h"
#include "writer/wire_writer.h"

namespace {

using namespace onnx2fx;
using namespace onnx2fx::onnx_schema;
namespace fs = std::filesystem;

// Identity(w) with w = float32 [1, 2, 3, 4] in raw_data.
std::vector<std::byte> model_bytes() {
  const float weights[] = {1, 2, 3, 4};
  wire::Writer tensor;
  tensor.int64(TensorProto::dims, 4);
  tensor.varint(TensorProto::data_type, 1);
  tensor.string(TensorProto::name, "w");
  tensor.string(TensorProto::raw_data, std::string_view(reinterpret_cast<const char*>(weights), sizeof weights));
  wire::Writer node;
  node.string(NodeProto::input, "w");
  node.string(NodeProto::output, "y");
  node.string(NodeProto::op_type, "Identity");
  wire::Writer output;
  output.string(ValueInfoProto::name, "y");
  wire::Writer graph;
  graph.message(GraphProto::node, std::move(node));
  graph.message(GraphProto::initializer, std::move(tensor));
  graph.message(GraphProto::output, std::move(output));
  wire::Writer opset;
  opset.int64(OperatorSetIdProto::version, 18);
  wire::Writer model;
  model.int64(ModelProto::ir_version, 8);
  model.message(ModelProto::graph, std::move(graph));
  model.message(ModelProto::opset_import, std::move(opset));
  return model.to_bytes();
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void a_tensor_outlives_its_model_and_writes_stay_private() {
  const fs::path path = fs::temp_directory_path() / ("onnx2fx_zero_copy_test_" + std::to_string(::getpid()) + ".onnx");
  const std::vector<std::byte> bytes = model_bytes();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
  const std::string original = read_file(path);

  Tensor kept;
  {
    auto model = load_model(path);
    kept = model->graph->initializers.at(0);
    CHECK(kept.data_offset > 0);  // a view into the map, not a copy
  }  // the model, its graph and its reference to the map are gone
  float values[4];
  CHECK(kept.data.size() == sizeof values);
  std::memcpy(values, kept.data.data(), sizeof values);
  CHECK(values[0] == 1 && values[3] == 4);

  // Write through the view: the map is private, the file keeps its bytes.
  const float written = -7;
  std::memcpy(kept.data.data(), &written, sizeof written);
  std::memcpy(values, kept.data.data(), sizeof values);
  CHECK(values[0] == -7);
  CHECK(read_file(path) == original);
  float fresh = 0;
  std::memcpy(&fresh, load_model(path)->graph->initializers.at(0).data.data(), sizeof fresh);
  CHECK(fresh == 1);  // a new map reads the file, not the private copy
  fs::remove(path);
}

}  // namespace

int main() {
  a_tensor_outlives_its_model_and_writes_stay_private();
  return onnx2fx::testing::report();
}
