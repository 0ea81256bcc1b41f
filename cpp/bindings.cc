// The Python module onnx2fx._core: the model reader, the IR, the graph passes (every registered
// pass is a method of Graph), the writers of quantized models and their plan (bindings/qdq_plan.cc).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <span>
#include <system_error>
#include <thread>

#include "bindings/qdq_plan.h"
#include "ir/data_type.h"
#include "ir/ir.h"
#include "onnx/errors.h"
#include "onnx/mapped_file.h"
#include "onnx/model_reader.h"
#include "onnx/parallel_copy.h"
#include "passes/pass_manager.h"
#include "passes/pass_registry.h"
#include "quant/histogram.h"
#include "quant/rounding_error.h"
#include "writer/integer_writer.h"
#include "writer/qdq_writer.h"

namespace nb = nanobind;
using namespace onnx2fx;

namespace {

// Sorts and checks the main graph and, recursively, its subgraphs.
void run_load_passes(Model& model) { PassManager().add("topological_sort").add("check_graph").run(*model.graph); }

// Runs `load` without the GIL; an unreadable model file raises the matching OSError.
template <class Load>
std::unique_ptr<Model> load_released(Load&& load, const std::filesystem::path& path, bool run_passes) {
  std::unique_ptr<Model> model;
  std::error_code open_error;
  {
    nb::gil_scoped_release release;
    try {
      model = load();
    } catch (const std::system_error& error) {
      open_error = error.code();
    }
    if (model && run_passes) run_load_passes(*model);
  }
  if (open_error) {
    errno = open_error.value();
    PyErr_SetFromErrnoWithFilename(PyExc_OSError, path.c_str());
    throw nb::python_error();
  }
  return model;
}

nb::bytes to_bytes(const std::string& text) { return nb::bytes(text.data(), text.size()); }

nb::str py_str(const std::string& text) { return nb::str(text.data(), text.size()); }

nb::list to_bytes_list(const std::vector<std::string>& texts) {
  nb::list list;
  for (const std::string& text : texts) list.append(to_bytes(text));
  return list;
}

// Opset imports by domain, "ai.onnx" written as "" like the default domain it names.
nb::dict opset_dict(const std::vector<OperatorSetId>& opsets) {
  nb::dict dict;
  for (const OperatorSetId& opset : opsets)
    dict[opset.domain == "ai.onnx" ? nb::str("") : py_str(opset.domain)] = opset.version;
  return dict;
}

nb::dict attribute_dict(const std::vector<Attribute>& attributes) {
  nb::dict dict;
  for (const Attribute& attribute : attributes) dict[py_str(attribute.name)] = nb::cast(attribute);
  return dict;
}

template <class T>
nb::object optional_value(const std::optional<T>& value) {
  return value ? nb::cast(*value) : nb::none();
}

nb::object attribute_value(const Attribute& attribute) {
  switch (attribute.type) {
    case AttributeType::Float: return nb::float_(attribute.f);
    case AttributeType::Int: return nb::int_(attribute.i);
    case AttributeType::String: return to_bytes(attribute.s);
    case AttributeType::Tensor: return optional_value(attribute.t);
    case AttributeType::Graph: return attribute.g ? nb::cast(attribute.g) : nb::none();
    case AttributeType::Floats: return nb::cast(attribute.floats);
    case AttributeType::Ints: return nb::cast(attribute.ints);
    case AttributeType::Strings: return to_bytes_list(attribute.strings);
    case AttributeType::Tensors: return nb::cast(attribute.tensors);
    case AttributeType::Graphs: return nb::cast(attribute.graphs);
    case AttributeType::SparseTensor: return optional_value(attribute.sparse_tensor);
    case AttributeType::SparseTensors: return nb::cast(attribute.sparse_tensors);
    case AttributeType::TypeProto: return optional_value(attribute.tp);
    case AttributeType::TypeProtos: return nb::cast(attribute.type_protos);
    case AttributeType::Undefined: break;
  }
  return nb::none();
}

nb::object shape_list(const std::optional<std::vector<Dimension>>& shape) {
  if (!shape) return nb::none();
  nb::list list;
  for (const Dimension& dim : *shape) {
    if (const auto* value = std::get_if<std::int64_t>(&dim))
      list.append(nb::int_(*value));
    else if (const auto* param = std::get_if<std::string>(&dim))
      list.append(py_str(*param));
    else
      list.append(nb::none());
  }
  return list;
}

// The numpy dtype of a data type; packed sub-byte types and float8 are raw uint8, bfloat16 raw uint16.
nb::dlpack::dtype numpy_dtype(DataType type) {
  using Code = nb::dlpack::dtype_code;
  const auto make = [](Code code, int bits) {
    return nb::dlpack::dtype{static_cast<std::uint8_t>(code), static_cast<std::uint8_t>(bits), 1};
  };
  switch (type) {
    case DataType::Float: return make(Code::Float, 32);
    case DataType::Double: return make(Code::Float, 64);
    case DataType::Float16: return make(Code::Float, 16);
    case DataType::Int8: return make(Code::Int, 8);
    case DataType::Int16: return make(Code::Int, 16);
    case DataType::Int32: return make(Code::Int, 32);
    case DataType::Int64: return make(Code::Int, 64);
    case DataType::Uint16:
    case DataType::BFloat16: return make(Code::UInt, 16);
    case DataType::Uint32: return make(Code::UInt, 32);
    case DataType::Uint64: return make(Code::UInt, 64);
    case DataType::Bool: return make(Code::Bool, 8);
    case DataType::Complex64: return make(Code::Complex, 64);
    case DataType::Complex128: return make(Code::Complex, 128);
    default: return make(Code::UInt, 8);
  }
}

// A writable view of the tensor's bytes that keeps their memory (map or buffer) alive.
nb::object tensor_numpy(const Tensor& tensor) {
  const DataTypeInfo* info = data_type_info(tensor.data_type);
  if (tensor.data_type == static_cast<std::int32_t>(DataType::String))
    throw nb::type_error(("STRING tensor '" + tensor.name + "' has no numpy form; use .strings()").c_str());
  if (!info) throw nb::type_error(("tensor '" + tensor.name + "' has an unknown data type").c_str());
  std::vector<std::size_t> shape(tensor.dims.begin(), tensor.dims.end());
  if (is_packed(*info)) shape = {tensor.data.size()};
  nb::capsule owner(new std::shared_ptr<const void>(tensor.owner),
                    [](void* owner) noexcept { delete static_cast<std::shared_ptr<const void>*>(owner); });
  static std::byte empty_buffer{};
  std::byte* data = tensor.data.empty() ? &empty_buffer : tensor.data.data();
  return nb::cast(nb::ndarray<nb::numpy>(data, shape.size(), shape.data(), owner, nullptr,
                                         numpy_dtype(static_cast<DataType>(tensor.data_type))));
}

// Threads for copying weights out of the file: beyond a few, memory bandwidth is the limit. Asked
// once: the count is read from /sys on every call, which costs more than copying a small tensor.
int copy_threads() {
  static const int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
  return threads;
}

// The tensor's elements at an address aligned for their type: the zero-copy view when the bytes
// already are, else a copy (torch kernels may assume alignment). After copying, the file pages
// that held only this tensor are dropped from memory, so the copy costs no memory twice.
nb::object tensor_aligned_numpy(const Tensor& tensor) {
  const DataTypeInfo* info = data_type_info(tensor.data_type);
  const std::size_t element_bytes = info ? std::max<std::size_t>(info->bits_per_element / 8, 1) : 1;
  const std::size_t alignment = std::min<std::size_t>(element_bytes, alignof(std::max_align_t));
  if (tensor.data.empty() || reinterpret_cast<std::uintptr_t>(tensor.data.data()) % alignment == 0)
    return tensor_numpy(tensor);
  auto copy = std::make_shared_for_overwrite<std::byte[]>(tensor.data.size());
  {
    nb::gil_scoped_release unlocked;
    parallel_copy({copy.get(), tensor.data.size()}, tensor.data, copy_threads());
  }
  if (tensor.source) tensor.source->release(tensor.data);
  Tensor aligned = tensor;
  aligned.data = {copy.get(), tensor.data.size()};
  aligned.owner = std::move(copy);
  aligned.source = nullptr;
  return tensor_numpy(aligned);
}

std::size_t tensor_nbytes(const Tensor& tensor) {
  return std::accumulate(tensor.strings.begin(), tensor.strings.end(), tensor.data.size(),
                         [](std::size_t total, const std::string& text) { return total + text.size(); });
}

// Raises the Python exception matching each core exception: a class of onnx2fx.errors for the
// reader's and the passes' errors, ValueError for a plan or size the writers refuse, and
// NotImplementedError for a node without an integer form.
void translate_error(const std::exception_ptr& exception, void*) {
  // Messages quote names from the file and paths, so undecodable bytes are escaped, not fatal.
  const auto set_error = [](PyObject* error_class, const char* message) {
    nb::object text = nb::steal(PyUnicode_DecodeUTF8(message, std::strlen(message), "backslashreplace"));
    if (text.is_valid()) PyErr_SetObject(error_class, text.ptr());
  };
  const auto raise = [&](const char* class_name, const char* message) {
    try {
      set_error(nb::module_::import_("onnx2fx.errors").attr(class_name).ptr(), message);
    } catch (nb::python_error& error) {
      error.restore();
    }
  };
  try {
    std::rethrow_exception(exception);
  } catch (const ExternalDataError& error) {
    raise("ExternalDataError", error.what());
  } catch (const ParseError& error) {
    raise("ModelFormatError", error.what());
  } catch (const GraphError& error) {
    raise("GraphStructureError", error.what());
  } catch (const QdqPlanError& error) {
    set_error(PyExc_ValueError, error.what());
  } catch (const QdqSizeError& error) {
    set_error(PyExc_ValueError, error.what());
  } catch (const IntegerLoweringError& error) {
    set_error(PyExc_NotImplementedError, error.what());
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  }
}

// Raises the OSError matching `code` for `path`.
[[noreturn]] void raise_os_error(const std::error_code& code, const std::filesystem::path& path) {
  errno = code.value();
  PyErr_SetFromErrnoWithFilename(PyExc_OSError, path.c_str());
  throw nb::python_error();
}

nb::dict write_qdq_model_binding(const std::filesystem::path& source, const std::filesystem::path& output,
                                 nb::handle plan) {
  std::optional<QdqPlan> converted;
  const QdqPlan& parsed = bindings::plan_argument(plan, converted);
  QdqStats stats;
  std::error_code source_error, output_error;
  std::filesystem::path output_path;
  {
    nb::gil_scoped_release release;
    try {
      stats = write_qdq_model(source, output, parsed);
    } catch (const std::filesystem::filesystem_error& error) {
      output_error = error.code();
      output_path = error.path1();
    } catch (const std::system_error& error) {
      source_error = error.code();
    }
  }
  if (output_error) raise_os_error(output_error, output_path);
  if (source_error) raise_os_error(source_error, source);
  nb::dict result;
  result["quantized_activations"] = stats.quantized_activations;
  result["quantized_weights"] = stats.quantized_weights;
  result["quantized_biases"] = stats.quantized_biases;
  result["bytes_written"] = stats.bytes_written;
  return result;
}

// The fixed-point / QOperator writer: the QDQ plan (every encoded tensor under activations), the
// format and whether unsupported nodes may stay in float. A node without an integer form raises
// NotImplementedError naming it; a plan that does not fit raises ValueError.
nb::dict write_integer_model_binding(const std::filesystem::path& source, const std::filesystem::path& output,
                                     nb::handle plan, const std::string& format, bool float_islands) {
  if (format != "fixed-point" && format != "qoperator")
    throw QdqPlanError("format '" + format + "' is not 'fixed-point' or 'qoperator'");
  std::optional<QdqPlan> converted;
  const QdqPlan& parsed = bindings::plan_argument(plan, converted);
  IntegerStats stats;
  std::error_code source_error, output_error;
  std::filesystem::path output_path;
  {
    nb::gil_scoped_release release;
    try {
      stats = write_integer_model(source, output, parsed,
                                  format == "fixed-point" ? IntegerFormat::FixedPoint : IntegerFormat::QOperator,
                                  float_islands);
    } catch (const std::filesystem::filesystem_error& error) {
      output_error = error.code();
      output_path = error.path1();
    } catch (const std::system_error& error) {
      source_error = error.code();
    }
  }
  if (output_error) raise_os_error(output_error, output_path);
  if (source_error) raise_os_error(source_error, source);
  nb::list rows;
  for (const IntegerRequantization& row : stats.requantizations) {
    nb::dict entry;
    entry["node"] = py_str(row.node);
    entry["tensor"] = py_str(row.tensor);
    entry["rescale"] = row.rescale;
    entry["multiplier"] = row.multiplier;
    entry["shift"] = row.shift;
    entry["max_relative_error"] = row.max_relative_error;
    rows.append(entry);
  }
  nb::list islands;
  for (const std::string& island : stats.float_islands) islands.append(py_str(island));
  nb::dict result;
  result["requantizations"] = rows;
  result["float_islands"] = islands;
  result["nodes_written"] = stats.nodes_written;
  result["bytes_written"] = stats.bytes_written;
  return result;
}

// The calibration observers' histogram update, without the GIL (see quant/histogram.h).
std::int64_t add_to_histogram_binding(nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu> values,
                                      double lo, double hi,
                                      nb::ndarray<double, nb::ndim<1>, nb::c_contig, nb::device::cpu> counts,
                                      int threads) {
  const std::span<const float> in(values.data(), values.shape(0));
  const std::span<double> out(counts.data(), counts.shape(0));
  nb::gil_scoped_release release;
  return add_to_histogram(in, static_cast<float>(lo), static_cast<float>(hi), out, threads);
}

// The weight range search's scores of candidate grids, without the GIL (see quant/rounding_error.h).
void rounding_errors_binding(nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> rows,
                             nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> scale,
                             nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> zero_point,
                             double qmin, double qmax,
                             std::optional<nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>> mean,
                             std::optional<nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>> var,
                             nb::ndarray<double, nb::ndim<2>, nb::c_contig, nb::device::cpu> out, int threads) {
  const std::span<const float> w(rows.data(), rows.size());
  const std::span<const float> s(scale.data(), scale.size());
  const std::span<const float> z(zero_point.data(), zero_point.size());
  const std::span<const float> m = mean ? std::span<const float>(mean->data(), mean->size()) : std::span<const float>();
  const std::span<const float> v = var ? std::span<const float>(var->data(), var->size()) : std::span<const float>();
  if (mean && mean->shape(1) != rows.shape(1)) throw std::invalid_argument("mean must have a value per row position");
  const std::span<double> o(out.data(), out.size());
  const std::size_t width = rows.shape(1);
  nb::gil_scoped_release release;
  rounding_errors(w, width, s, z, static_cast<float>(qmin), static_cast<float>(qmax), m, v, o, threads);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "Native core of onnx2fx: reads ONNX files into a graph IR, runs graph passes, writes QDQ models.";
  nb::register_exception_translator(translate_error);
  bindings::bind_qdq_plan(m);

  nb::class_<Tensor>(m, "Tensor")
      .def_ro("name", &Tensor::name)
      .def_ro("doc_string", &Tensor::doc_string)
      .def_ro("data_type", &Tensor::data_type)
      .def_ro("dims", &Tensor::dims)
      .def_prop_ro("nbytes", tensor_nbytes)
      .def_prop_ro("data_location",
                   [](const Tensor& tensor) { return tensor.is_external() ? "external" : "default"; })
      .def_ro("external_location", &Tensor::external_location)
      .def_ro("data_offset", &Tensor::data_offset)
      .def("numpy", tensor_numpy)
      .def("aligned_numpy", tensor_aligned_numpy)
      .def("strings", [](const Tensor& tensor) { return to_bytes_list(tensor.strings); })
      .def("__repr__", [](const Tensor& tensor) {
        const DataTypeInfo* info = data_type_info(tensor.data_type);
        return nb::str("Tensor(name={!r}, data_type={}, dims={})")
            .format(tensor.name, info ? info->name.data() : "?", tensor.dims);
      });

  nb::class_<SparseTensor>(m, "SparseTensor")
      .def_ro("values", &SparseTensor::values)
      .def_ro("indices", &SparseTensor::indices)
      .def_ro("dims", &SparseTensor::dims);

  nb::class_<TypeInfo>(m, "TypeInfo")
      .def_ro("kind", &TypeInfo::kind)
      .def_ro("elem_type", &TypeInfo::elem_type)
      .def_prop_ro("shape", [](const TypeInfo& type) { return shape_list(type.shape); })
      .def_prop_ro("element",
                   [](const TypeInfo& type) { return type.element ? nb::cast(TypeInfo(*type.element)) : nb::none(); });

  nb::class_<ValueInfo>(m, "ValueInfo")
      .def_ro("name", &ValueInfo::name)
      .def_ro("doc_string", &ValueInfo::doc_string)
      .def_ro("type", &ValueInfo::type)
      .def("__repr__", [](const ValueInfo& info) { return nb::str("ValueInfo({!r})").format(info.name); });

  nb::class_<Attribute>(m, "Attribute")
      .def_ro("name", &Attribute::name)
      .def_prop_ro("type", [](const Attribute& attribute) { return std::string(attribute_type_name(attribute.type)); })
      .def_prop_ro("value", attribute_value)
      .def_ro("ref_attr_name", &Attribute::ref_attr_name)
      .def_ro("doc_string", &Attribute::doc_string);

  nb::class_<Node>(m, "Node")
      .def_ro("name", &Node::name)
      .def_ro("op_type", &Node::op_type)
      .def_ro("domain", &Node::domain)
      .def_ro("overload", &Node::overload)
      .def_ro("doc_string", &Node::doc_string)
      .def_ro("inputs", &Node::inputs)
      .def_ro("outputs", &Node::outputs)
      .def_prop_ro("attributes", [](const Node& node) { return attribute_dict(node.attributes); })
      .def("__repr__", [](const Node& node) {
        return nb::str("Node(name={!r}, op_type={!r})").format(node.name, node.op_type);
      });

  nb::class_<Graph> graph_class(m, "Graph");
  graph_class.def_ro("name", &Graph::name)
      .def_ro("doc_string", &Graph::doc_string)
      .def_ro("nodes", &Graph::nodes)
      .def_ro("inputs", &Graph::inputs)
      .def_ro("outputs", &Graph::outputs)
      .def_ro("value_info", &Graph::value_info)
      .def_ro("initializers", &Graph::initializers)
      .def_ro("sparse_initializers", &Graph::sparse_initializers);
  for (const PassInfo& pass : registered_passes()) {
    if (pass.kind == PassKind::Check)
      graph_class.def(pass.method.data(), [run = pass.run](Graph& graph) { run(graph); }, pass.summary.data());
    else
      graph_class.def(pass.method.data(), [run = pass.run](Graph& graph) { return run(graph); }, pass.summary.data());
  }

  nb::class_<Function>(m, "Function")
      .def_ro("name", &Function::name)
      .def_ro("domain", &Function::domain)
      .def_ro("overload", &Function::overload)
      .def_ro("doc_string", &Function::doc_string)
      .def_ro("inputs", &Function::inputs)
      .def_ro("outputs", &Function::outputs)
      .def_ro("attributes", &Function::attributes)
      .def_prop_ro("attribute_defaults",
                   [](const Function& function) { return attribute_dict(function.attribute_defaults); })
      .def_ro("nodes", &Function::nodes)
      .def_prop_ro("opset_imports", [](const Function& function) { return opset_dict(function.opset_imports); });

  nb::class_<Model>(m, "Model")
      .def_ro("ir_version", &Model::ir_version)
      .def_ro("producer_name", &Model::producer_name)
      .def_ro("producer_version", &Model::producer_version)
      .def_ro("domain", &Model::domain)
      .def_ro("model_version", &Model::model_version)
      .def_ro("doc_string", &Model::doc_string)
      .def_prop_ro("opset_imports", [](const Model& model) { return opset_dict(model.opset_imports); })
      .def_prop_ro("metadata_props",
                   [](const Model& model) {
                     nb::dict dict;
                     for (const auto& [key, value] : model.metadata_props) dict[py_str(key)] = py_str(value);
                     return dict;
                   })
      .def_ro("graph", &Model::graph)
      .def_ro("functions", &Model::functions)
      .def_ro("path", &Model::path);

  m.def(
      "load_model",
      [](const std::filesystem::path& path, bool run_passes) {
        return load_released([&] { return load_model(path); }, path, run_passes);
      },
      nb::arg("path"), nb::kw_only(), nb::arg("run_passes") = true);

  m.def(
      "load_model_from_bytes",
      [](nb::bytes data, std::optional<std::filesystem::path> base_dir, bool run_passes) {
        const std::span bytes(reinterpret_cast<const std::byte*>(data.data()), data.size());
        return load_released([&] { return load_model_from_bytes(bytes, base_dir); }, {}, run_passes);
      },
      nb::arg("data"), nb::kw_only(), nb::arg("base_dir") = nb::none(), nb::arg("run_passes") = true);

  m.def("elem_size", elem_size, nb::arg("data_type"));

  m.def("write_qdq_model", write_qdq_model_binding, nb::arg("source_path"), nb::arg("output_path"), nb::arg("plan"));

  m.def("write_integer_model", write_integer_model_binding, nb::arg("source_path"), nb::arg("output_path"),
        nb::arg("plan"), nb::arg("format"), nb::arg("float_islands") = false);

  m.def("rounding_errors", rounding_errors_binding, nb::arg("rows"), nb::arg("scale"), nb::arg("zero_point"),
        nb::arg("qmin"), nb::arg("qmax"), nb::arg("mean").none(), nb::arg("var").none(), nb::arg("out"),
        nb::arg("threads") = 1);

  m.def("add_to_histogram", add_to_histogram_binding, nb::arg("values"), nb::arg("lo"), nb::arg("hi"),
        nb::arg("counts"), nb::arg("threads") = 1);
}
