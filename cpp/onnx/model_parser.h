// The parser behind load_model (model_reader.h): one class that walks the ModelProto, its
// members defined by concept in
//   model_reader.cc             the model, graphs, nodes, functions, opset imports (and load_model)
//   model_reader_attributes.cc  attributes, value infos and types
//   model_reader_tensors.cc     tensors and sparse tensors: their data checked against dims and type,
//                               embedded or in external files inside the model folder
// Internal to the reader: nothing outside cpp/onnx/model_reader*.cc includes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ir/ir.h"
#include "onnx/mapped_file.h"
#include "onnx/wire.h"

namespace onnx2fx::reader_detail {

// The data fields of a TensorProto, gathered before the dims and type they depend on are known.
struct TensorData {
  std::optional<std::span<const std::byte>> raw_data;
  std::vector<float> float_data;
  std::vector<std::int32_t> int32_data;
  std::vector<std::int64_t> int64_data;
  std::vector<double> double_data;
  std::vector<std::uint64_t> uint64_data;
  std::int32_t data_location = 0;
  std::optional<std::string> location, offset, length;  // external_data entries
};

class ModelReader {
 public:
  ModelReader(std::shared_ptr<MappedFile> file, std::optional<std::filesystem::path> base_dir)
      : file_(std::move(file)), base_dir_(std::move(base_dir)) {}

  std::unique_ptr<Model> read();

 private:
  using Reader = wire::Reader;

  // --- the model and its graphs (model_reader.cc) ----------------------------------------------
  void read_model(Reader reader, Model& model);
  OperatorSetId read_opset(Reader reader);
  std::pair<std::string, std::string> read_entry(Reader reader);
  static Graph& merge_into(std::shared_ptr<Graph>& graph);
  void read_graph(Reader reader, Graph& graph, int depth);
  std::shared_ptr<Node> read_node(Reader reader, int depth);
  Function read_function(Reader reader);

  // --- attributes and types (model_reader_attributes.cc) ---------------------------------------
  Attribute read_attribute(Reader reader, int depth);
  static AttributeType infer_attribute_type(const Attribute& a, bool has_f, bool has_i, bool has_s);
  ValueInfo read_value_info(Reader reader);
  TypeInfo read_type(Reader reader, int depth);
  void read_tensor_type(Reader reader, TypeInfo& type);
  std::shared_ptr<const TypeInfo> read_element_type(Reader reader, int depth);
  void read_map_type(Reader reader, TypeInfo& type, int depth);
  std::vector<Dimension> read_shape(Reader reader);
  Dimension read_dimension(Reader reader);

  // --- tensors (model_reader_tensors.cc) -------------------------------------------------------
  SparseTensor read_sparse_tensor(Reader reader);
  Tensor read_tensor(Reader reader);
  static void add_external_entry(std::pair<std::string, std::string> entry, TensorData& data);
  void attach_data(Tensor& tensor, const TensorData& data, const Reader& reader);
  void attach_external_data(Tensor& tensor, const TensorData& data, std::uint64_t byte_size, const std::string& need,
                            const Reader& reader);
  void claim_external_range(const MappedFile& file, std::uint64_t offset, std::uint64_t length,
                            const std::string& tensor_name, const std::string& location, const std::string& at);
  std::shared_ptr<MappedFile> open_external_file(const std::string& location, const std::string& tensor_name,
                                                 const std::string& at);

  std::shared_ptr<MappedFile> file_;
  std::optional<std::filesystem::path> base_dir_;
  std::optional<std::filesystem::path> canonical_base_dir_;
  std::map<std::filesystem::path, std::shared_ptr<MappedFile>> external_files_;  // by normalised location
  // Per external file: offset -> (end, tensor name) of every range a tensor views.
  std::map<const MappedFile*, std::map<std::uint64_t, std::pair<std::uint64_t, std::string>>> external_ranges_;
  std::size_t node_count_ = 0;
};

}  // namespace onnx2fx::reader_detail
