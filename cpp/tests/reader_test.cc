// The model reader on hand-encoded models, from bytes and from files.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <string_view>

#include "ir/data_type.h"
#include "onnx/errors.h"
#include "onnx/model_reader.h"
#include "tests/check.h"

namespace {

using namespace onnx2fx;
namespace fs = std::filesystem;

std::string varint(std::uint64_t value) {
  std::string out;
  for (; value >= 0x80; value >>= 7) out += static_cast<char>((value & 0x7f) | 0x80);
  return out += static_cast<char>(value);
}
std::string field_varint(std::uint32_t number, std::uint64_t value) { return varint(number << 3) + varint(value); }
std::string field_bytes(std::uint32_t number, std::string_view payload) {
  return varint(number << 3 | 2) + varint(payload.size()) + std::string(payload);
}

const std::string kWeights("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // float32 [1, 2]

std::string value_info(std::string_view name) { return field_bytes(1, name); }

// A model computing y = Add(x, w) with w = [1, 2] given by `tensor`.
std::string add_model(const std::string& tensor) {
  const std::string node = field_bytes(1, "x") + field_bytes(1, "w") + field_bytes(2, "y") + field_bytes(3, "add") +
                           field_bytes(4, "Add");
  const std::string graph = field_bytes(1, node) + field_bytes(2, "g") + field_bytes(5, tensor) +
                            field_bytes(11, value_info("x")) + field_bytes(12, value_info("y"));
  return field_varint(1, 8) + field_bytes(7, graph) + field_bytes(8, field_varint(2, 18));
}

std::string raw_tensor(std::string_view raw, std::uint64_t dim = 2) {
  return field_varint(1, dim) + field_varint(2, 1) + field_bytes(8, "w") + field_bytes(9, raw);
}

std::unique_ptr<Model> load(const std::string& data, std::optional<fs::path> base_dir = {}) {
  return load_model_from_bytes(std::as_bytes(std::span(data)), std::move(base_dir));
}

fs::path temp_folder() {
  const fs::path folder = fs::temp_directory_path() / ("onnx2fx_reader_test_" + std::to_string(::getpid()));
  fs::create_directories(folder);
  return folder;
}

void write_file(const fs::path& path, const std::string& data) { std::ofstream(path, std::ios::binary) << data; }

std::string read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), {}};
}

void reads_model_from_bytes() {
  const std::string data = add_model(raw_tensor(kWeights));
  const auto model = load(data);
  CHECK(model->ir_version == 8);
  CHECK(model->opset_imports.size() == 1 && model->opset_imports[0].version == 18);
  CHECK(model->path.empty());
  const Graph& graph = *model->graph;
  CHECK(graph.name == "g");
  CHECK(graph.nodes.size() == 1 && graph.nodes[0]->op_type == "Add" && graph.nodes[0]->name == "add");
  CHECK((graph.nodes[0]->inputs == std::vector<std::string>{"x", "w"}));
  const Tensor& weights = graph.initializers.at(0);
  CHECK(weights.data_offset == static_cast<std::int64_t>(data.find(kWeights)));
  CHECK(weights.data.size() == 8 && std::memcmp(weights.data.data(), kWeights.data(), 8) == 0);
}

void reads_typed_fields() {
  // FLOAT16 and BOOL from int32_data: narrowed to 2 bytes, normalised to 0/1.
  const std::string half = field_varint(1, 2) + field_varint(2, 10) + field_bytes(8, "w") +
                           field_bytes(5, varint(0x3c00) + varint(0xc000));
  const std::string flags = field_varint(1, 3) + field_varint(2, 9) + field_bytes(8, "w") +
                            field_varint(5, 0) + field_varint(5, 7) + field_varint(5, 1);
  const auto half_model = load(add_model(half));
  const Tensor& h = half_model->graph->initializers[0];
  const std::uint16_t expected_half[] = {0x3c00, 0xc000};
  CHECK(h.data_offset == -1 && h.data.size() == 4 && std::memcmp(h.data.data(), expected_half, 4) == 0);
  const auto bool_model = load(add_model(flags));
  const Tensor& b = bool_model->graph->initializers[0];
  CHECK(b.data.size() == 3 && b.data[0] == std::byte{0} && b.data[1] == std::byte{1} && b.data[2] == std::byte{1});
}

void maps_files_copy_on_write() {
  const fs::path folder = temp_folder();
  const fs::path path = folder / "model.onnx";
  const std::string data = add_model(raw_tensor(kWeights));
  write_file(path, data);
  const auto model = load_model(path);
  CHECK(model->path == path.string());
  Tensor& weights = model->graph->initializers[0];
  CHECK(weights.data_offset == static_cast<std::int64_t>(data.find(kWeights)));
  weights.data[0] = std::byte{0x55};  // private mapping: the file does not change
  CHECK(read_file(path) == data);
  fs::remove_all(folder);
}

void reads_external_data() {
  const fs::path folder = temp_folder();
  write_file(folder / "w.bin", "padding!" + kWeights);
  const std::string external = field_varint(1, 2) + field_varint(2, 1) + field_bytes(8, "w") + field_varint(14, 1) +
                               field_bytes(13, field_bytes(1, "location") + field_bytes(2, "w.bin")) +
                               field_bytes(13, field_bytes(1, "offset") + field_bytes(2, "8"));
  const auto model = load(add_model(external), folder);
  const Tensor& weights = model->graph->initializers[0];
  CHECK(weights.external_location == "w.bin" && weights.data_offset == 8);
  CHECK(weights.data.size() == 8 && std::memcmp(weights.data.data(), kWeights.data(), 8) == 0);
  CHECK_THROWS(ExternalDataError, load(add_model(external)), "without a base_dir");
  fs::remove_all(folder);
}

void rejects_bad_models() {
  CHECK_THROWS(ParseError, load(""), "model has no graph");
  CHECK_THROWS(ParseError, load(add_model(raw_tensor(kWeights, 3))),
               "tensor 'w': raw_data has 8 bytes but dims [3] of FLOAT need 12");
  CHECK_THROWS(ParseError, load(add_model(raw_tensor(kWeights, std::uint64_t{1} << 40))), "the whole file has only");
  const std::string data = add_model(raw_tensor(kWeights));
  for (std::size_t length = 0; length < data.size(); ++length)
    CHECK_THROWS(ParseError, load(data.substr(0, length)), "");
  CHECK_THROWS(std::system_error, load_model("/nonexistent/model.onnx"), "/nonexistent/model.onnx");
}

void data_type_sizes() {
  CHECK(elem_size(1) == 4 && elem_size(16) == 2 && elem_size(15) == 16 && elem_size(8) == 0 && elem_size(22) == 0);
  CHECK(storage_bytes(*data_type_info(22), 3) == 2u);
  CHECK(storage_bytes(*data_type_info(26), 5) == 2u);
  CHECK(!storage_bytes(*data_type_info(11), std::uint64_t{1} << 62));
  CHECK_THROWS(std::invalid_argument, elem_size(0), "unknown ONNX data type 0");
}

}  // namespace

int main() {
  reads_model_from_bytes();
  reads_typed_fields();
  maps_files_copy_on_write();
  reads_external_data();
  rejects_bad_models();
  data_type_sizes();
  return onnx2fx::testing::report();
}
