// Reading tensors and sparse tensors: sizes checked against the bytes that could hold them before
// anything is allocated, data viewed in the file map (raw_data), decoded from the typed fields, or
// mapped from an external file inside the model folder whose ranges must not overlap.

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <iterator>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "ir/data_type.h"
#include "onnx/errors.h"
#include "onnx/external_file.h"
#include "onnx/model_parser.h"
#include "onnx/model_reader.h"
#include "onnx/schema.h"
#include "onnx/wire.h"

namespace onnx2fx::reader_detail {

using wire::Reader;
using namespace onnx_schema;  // the message types of onnx.proto

namespace {

std::string format_dims(const std::vector<std::int64_t>& dims) {
  std::string text = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

// Copies each value's low `value_bytes` bytes (little-endian narrowing) into `out`.
template <class T>
void store_values(const std::vector<T>& values, std::size_t value_bytes, bool as_bool, std::byte* out) {
  if (as_bool) {
    std::ranges::transform(values, out, [](T value) { return std::byte{value != 0}; });
  } else if (value_bytes == sizeof(T)) {
    if (!values.empty()) std::memcpy(out, values.data(), values.size() * sizeof(T));
  } else {
    for (std::size_t i = 0; i < values.size(); ++i) std::memcpy(out + i * value_bytes, &values[i], value_bytes);
  }
}

}  // namespace

SparseTensor ModelReader::read_sparse_tensor(Reader reader) {
  SparseTensor sparse;
  while (reader.next()) switch (reader.tag()) {
      case SparseTensorProto::values: sparse.values = read_tensor(reader.get_message(kTensorProto)); break;
      case SparseTensorProto::indices: sparse.indices = read_tensor(reader.get_message(kTensorProto)); break;
      case SparseTensorProto::dims: reader.get_repeated_varints(sparse.dims); break;
      default: reader.skip();
    }
  if (std::ranges::any_of(sparse.dims, [](std::int64_t dim) { return dim < 0; }))
    throw ParseError("sparse tensor '" + sparse.values.name + "' has negative dims " + format_dims(sparse.dims) +
                     " at " + reader.where());
  return sparse;
}

Tensor ModelReader::read_tensor(Reader reader) {
  Tensor tensor;
  TensorData data;
  tensor.proto_offset = static_cast<std::int64_t>(reader.offset_of(reader.message_bytes().data()));
  tensor.proto_size = reader.message_bytes().size();
  while (reader.next()) switch (reader.tag()) {
      case TensorProto::dims: reader.get_repeated_varints(tensor.dims); break;
      case TensorProto::data_type: tensor.data_type = reader.get_int32(); break;
      case TensorProto::segment: reader.fail("unsupported", "segmented tensors are not supported");
      case TensorProto::float_data: reader.get_repeated_fixed(data.float_data); break;
      case TensorProto::int32_data: reader.get_repeated_varints(data.int32_data); break;
      case TensorProto::string_data: tensor.strings.push_back(reader.get_byte_string()); break;
      case TensorProto::int64_data: reader.get_repeated_varints(data.int64_data); break;
      case TensorProto::name: tensor.name = reader.get_string(); break;
      case TensorProto::raw_data: data.raw_data = reader.get_bytes(); break;
      case TensorProto::double_data: reader.get_repeated_fixed(data.double_data); break;
      case TensorProto::uint64_data: reader.get_repeated_varints(data.uint64_data); break;
      case TensorProto::doc_string: tensor.doc_string = reader.get_string(); break;
      case TensorProto::external_data:
        add_external_entry(read_entry(reader.get_message(kStringStringEntryProto)), data);
        break;
      case TensorProto::data_location: data.data_location = reader.get_int32(); break;
      default: reader.skip();
    }
  attach_data(tensor, data, reader);
  return tensor;
}

void ModelReader::add_external_entry(std::pair<std::string, std::string> entry, TensorData& data) {
  auto& [key, value] = entry;
  if (key == "location") data.location = std::move(value);
  if (key == "offset") data.offset = std::move(value);
  if (key == "length") data.length = std::move(value);
}

// Validates the tensor's size and points its data at the bytes that hold it.
void ModelReader::attach_data(Tensor& tensor, const TensorData& data, const Reader& reader) {
  const auto error = [&](const std::string& detail) {
    return ParseError("tensor '" + tensor.name + "'" + detail + " (" + reader.where() + ")");
  };
  const DataTypeInfo* info = data_type_info(tensor.data_type);
  if (!info) throw error(" has unknown data type " + std::to_string(tensor.data_type));
  if (tensor.dims.size() > kMaxRank)
    throw error(" has " + std::to_string(tensor.dims.size()) + " dimensions, more than " + std::to_string(kMaxRank));
  std::uint64_t count = 1;
  for (std::int64_t dim : tensor.dims) {
    if (dim < 0)
      throw error(" has negative dimension " + std::to_string(dim) + " in dims " + format_dims(tensor.dims));
    if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(dim), &count))
      throw error(": dims " + format_dims(tensor.dims) + " overflow the element count");
  }
  const std::optional<std::uint64_t> storage = storage_bytes(*info, count);
  if (!storage) throw error(": dims " + format_dims(tensor.dims) + " overflow the byte size");
  const std::uint64_t byte_size = *storage;
  const std::string need = "dims " + format_dims(tensor.dims) + " of " + std::string(info->name) + " need ";
  const bool is_string = tensor.data_type == static_cast<std::int32_t>(DataType::String);

  const std::array<std::pair<std::string_view, std::size_t>, 6> typed_fields{{
      {"float_data", data.float_data.size()},
      {"int32_data", data.int32_data.size()},
      {"string_data", tensor.strings.size()},
      {"int64_data", data.int64_data.size()},
      {"double_data", data.double_data.size()},
      {"uint64_data", data.uint64_data.size()},
  }};
  const auto typed = std::ranges::find_if(typed_fields, [](const auto& field) { return field.second > 0; });
  const bool has_typed = typed != typed_fields.end();

  if (data.data_location == kDataLocationExternal) {
    if (data.raw_data || has_typed) throw error(" has both external and embedded data");
    if (is_string) throw error(" is a STRING tensor, which cannot use external data");
    return attach_external_data(tensor, data, byte_size, need, reader);
  }
  if (data.raw_data) {
    if (has_typed) throw error(" has data in both raw_data and " + std::string(typed->first));
    if (is_string) throw error(" is a STRING tensor, which cannot use raw_data");
    if (byte_size > file_->size())
      throw error(": " + need + std::to_string(byte_size) + " bytes but the whole file has only " +
                  std::to_string(file_->size()));
    if (data.raw_data->size() != byte_size)
      throw error(": raw_data has " + std::to_string(data.raw_data->size()) + " bytes but " + need +
                  std::to_string(byte_size));
    const std::size_t offset = reader.offset_of(data.raw_data->data());
    if (byte_size > 0) tensor.data = {file_->bytes().data() + offset, data.raw_data->size()};
    tensor.owner = file_;
    tensor.source = file_.get();
    tensor.data_offset = static_cast<std::int64_t>(offset);
    return;
  }

  // Typed fields: each data type has one field, whose values each fill `value_bytes` of storage.
  const auto decode = [&]<class T>(const std::vector<T>& values, std::string_view field, std::size_t value_bytes) {
    for (const auto& [other, size] : typed_fields)
      if (size > 0 && other != field)
        throw error(" of type " + std::string(info->name) + " has values in " + std::string(other) + ", expected " +
                    std::string(field));
    const std::uint64_t expected = value_bytes ? byte_size / value_bytes : count;
    if (values.size() != expected) {
      if (values.empty()) throw error(" has no data but " + need + std::to_string(expected) + " values");
      throw error(": " + std::string(field) + " has " + std::to_string(values.size()) + " values but " + need +
                  std::to_string(expected));
    }
    if constexpr (!std::is_same_v<T, std::string>) {
      if (expected == 0) return;
      auto buffer = std::make_shared_for_overwrite<std::byte[]>(byte_size);
      store_values(values, value_bytes, tensor.data_type == static_cast<std::int32_t>(DataType::Bool), buffer.get());
      tensor.data = {buffer.get(), byte_size};
      tensor.owner = std::move(buffer);
    }
  };
  const std::size_t element_bytes = info->bits_per_element / 8;
  switch (static_cast<DataType>(tensor.data_type)) {
    case DataType::Float:
    case DataType::Complex64: return decode(data.float_data, "float_data", sizeof(float));
    case DataType::Double:
    case DataType::Complex128: return decode(data.double_data, "double_data", sizeof(double));
    case DataType::Int64: return decode(data.int64_data, "int64_data", sizeof(std::int64_t));
    case DataType::Uint32:
    case DataType::Uint64: return decode(data.uint64_data, "uint64_data", element_bytes);
    case DataType::String: return decode(tensor.strings, "string_data", 0);
    case DataType::Float6E2M3:
    case DataType::Float6E3M2:
      if (!data.int32_data.empty()) throw error(": int32_data is not supported for " + std::string(info->name));
      return decode(data.int32_data, "raw_data", 1);
    default:  // int32_data holds the narrower types, packed sub-byte types one byte per value
      return decode(data.int32_data, "int32_data", is_packed(*info) ? 1 : element_bytes);
  }
}

void ModelReader::attach_external_data(Tensor& tensor, const TensorData& data, std::uint64_t byte_size,
                                       const std::string& need, const Reader& reader) {
  const std::string at = " (" + reader.where() + ")";
  const std::string of_tensor = " of tensor '" + tensor.name + "'";
  if (!data.location || data.location->empty())
    throw ExternalDataError("external data" + of_tensor + " has no location" + at);
  tensor.external_location = *data.location;
  const std::shared_ptr<MappedFile> file = open_external_file(*data.location, tensor.name, at);
  const auto parse_number = [&](const std::string& text, std::string_view key) {
    std::uint64_t value = 0;
    const auto [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (status != std::errc{} || end != text.data() + text.size())
      throw ExternalDataError("external data " + std::string(key) + " '" + text + "'" + of_tensor +
                              " is not a number" + at);
    return value;
  };
  const std::uint64_t offset = data.offset ? parse_number(*data.offset, "offset") : 0;
  const std::uint64_t available = offset <= file->size() ? file->size() - offset : 0;
  const std::uint64_t length = data.length ? parse_number(*data.length, "length") : available;
  if (offset > file->size() || length > available)
    throw ExternalDataError("external data" + of_tensor + " (offset " + std::to_string(offset) + ", length " +
                            std::to_string(length) + ") runs past the end of '" + *data.location + "' (" +
                            std::to_string(file->size()) + " bytes)" + at);
  if (length != byte_size)
    throw ExternalDataError("tensor '" + tensor.name + "': external data has " + std::to_string(length) +
                            " bytes but " + need + std::to_string(byte_size) + at);
  if (length > 0) {
    claim_external_range(*file, offset, length, tensor.name, *data.location, at);
    tensor.data = {file->bytes().data() + offset, length};
  }
  tensor.owner = file;
  tensor.source = file.get();
  tensor.data_offset = static_cast<std::int64_t>(offset);
}

// Records [offset, offset + length) of `file` for `tensor_name`, refusing a range that overlaps
// one claimed before.
void ModelReader::claim_external_range(const MappedFile& file, std::uint64_t offset, std::uint64_t length,
                                       const std::string& tensor_name, const std::string& location,
                                       const std::string& at) {
  auto& ranges = external_ranges_[&file];
  const auto overlap = [&](const auto& other) {
    const auto& [other_offset, claim] = other;
    throw ExternalDataError("external data of tensor '" + tensor_name + "' (offset " + std::to_string(offset) +
                            ", length " + std::to_string(length) + ") overlaps that of tensor '" + claim.second +
                            "' (offset " + std::to_string(other_offset) + ", length " +
                            std::to_string(claim.first - other_offset) + ") in '" + location + "'" + at);
  };
  auto next = ranges.lower_bound(offset);
  if (next != ranges.end() && next->first < offset + length) overlap(*next);
  if (next != ranges.begin() && std::prev(next)->second.first > offset) overlap(*std::prev(next));
  ranges.emplace_hint(next, offset, std::pair{offset + length, tensor_name});
}

// Maps an external data file once per model, refusing locations outside the model folder
// (external_file.h: containment, no symlinks, O_NOFOLLOW, one hard link).
std::shared_ptr<MappedFile> ModelReader::open_external_file(const std::string& location,
                                                            const std::string& tensor_name, const std::string& at) {
  namespace fs = std::filesystem;
  if (!base_dir_)
    throw ExternalDataError("tensor '" + tensor_name +
                            "' has external data but the model was loaded from bytes without a base_dir" + at);
  if (!canonical_base_dir_) {
    std::error_code error;
    canonical_base_dir_ = fs::canonical(*base_dir_, error);
    if (error)
      throw ExternalDataError("model folder '" + base_dir_->string() + "' cannot be resolved: " + error.message());
  }
  const fs::path key = canonical_base_dir_->native() + "/" + fs::path(location).lexically_normal().native();
  auto& file = external_files_[key];
  if (!file) {
    try {
      file = map_external_file(*canonical_base_dir_, location,
                               "external data location '" + location + "' of tensor '" + tensor_name + "'", at);
    } catch (...) {
      external_files_.erase(key);
      throw;
    }
  }
  return file;
}

}  // namespace onnx2fx::reader_detail
