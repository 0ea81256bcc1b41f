#include "bindings/qdq_plan.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "onnx/errors.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace onnx2fx::bindings {
namespace {

// --- values from Python ---------------------------------------------------------------------------
// Every conversion names what it converts (`what`) in the QdqPlanError it raises, as the writers do.

std::string plan_string(nb::handle value, const std::string& what) {
  if (!nb::isinstance<nb::str>(value)) throw QdqPlanError(what + " must be a str");
  return nb::cast<std::string>(value);
}

std::int64_t plan_int(nb::handle value, const std::string& what) {
  const nb::object index = nb::steal(PyNumber_Index(value.ptr()));
  const long long number = index.is_valid() ? PyLong_AsLongLong(index.ptr()) : -1;
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw QdqPlanError(what + " must be an integer that fits in 64 bits, got " +
                       nb::cast<std::string>(nb::repr(value)));
  }
  return number;
}

double plan_float(nb::handle value, const std::string& what) {
  const double number = PyFloat_AsDouble(value.ptr());
  if (number == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw QdqPlanError(what + " must be a number, got " + nb::cast<std::string>(nb::repr(value)));
  }
  return number;
}

// A sequence or array of numbers (or a single number) converted element by element by `convert`:
// a float where an integer is expected is an error, not a truncation.
template <class T, class Convert>
std::vector<T> plan_numbers(nb::handle value, const std::string& what, Convert convert) {
  std::vector<T> numbers;
  const nb::object iterator = nb::steal(PyObject_GetIter(value.ptr()));
  if (!iterator.is_valid()) {
    PyErr_Clear();
    numbers.push_back(convert(value, what));
    return numbers;
  }
  while (true) {
    const nb::object element = nb::steal(PyIter_Next(iterator.ptr()));
    if (!element.is_valid()) break;
    numbers.push_back(convert(element, what + "[" + std::to_string(numbers.size()) + "]"));
  }
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw QdqPlanError(what + " cannot be iterated");
  }
  return numbers;
}

std::vector<double> plan_scales(nb::handle value, const std::string& what) {
  return plan_numbers<double>(value, what + ": scale", plan_float);
}

std::vector<std::int64_t> plan_zero_points(nb::handle value, const std::string& what) {
  return plan_numbers<std::int64_t>(value, what + ": zero_point", plan_int);
}

std::optional<std::int64_t> plan_axis(nb::handle value, const std::string& what) {
  if (value.is_none()) return std::nullopt;
  return plan_int(value, what + ": axis");
}

// A QuantType, or its name.
QuantType plan_quant_type(nb::handle value, const std::string& what) {
  if (nb::isinstance<QuantType>(value)) return nb::cast<QuantType>(value);
  const std::string name = plan_string(value, what + ": dtype");
  if (const std::optional<QuantType> type = parse_quant_type(name)) return *type;
  throw QdqPlanError(what + ": unknown dtype '" + name + "' (expected uint8, int8, uint16, int16, uint4 or int4)");
}

// Keeps a Python object alive from C++; the last owner may let it go without holding the GIL.
std::shared_ptr<const void> python_owner(nb::object object) {
  return std::shared_ptr<const void>(new nb::object(std::move(object)), [](const void* owned) {
    nb::gil_scoped_acquire gil;
    delete static_cast<const nb::object*>(owned);
  });
}

// A C-order float32 view of `values` (converted by numpy.asarray when needed), which it keeps alive.
FloatValues plan_values(nb::handle values, const std::string& what) {
  nb::object array;
  try {
    const nb::module_ numpy = nb::module_::import_("numpy");
    array = numpy.attr("asarray")(values, "dtype"_a = numpy.attr("float32"), "order"_a = "C");
  } catch (const nb::python_error& error) {
    throw QdqPlanError(what + ": values cannot be converted to a float32 array: " + error.what());
  }
  const auto view = nb::cast<nb::ndarray<const float, nb::c_contig, nb::device::cpu>>(array);
  FloatValues result;
  for (std::size_t d = 0; d < view.ndim(); ++d) result.shape.push_back(static_cast<std::int64_t>(view.shape(d)));
  result.data = {view.data(), view.size()};
  result.owner = python_owner(std::move(array));
  return result;
}

std::optional<FloatValues> plan_optional_values(nb::handle values, const std::string& what) {
  if (values.is_none()) return std::nullopt;
  return plan_values(values, what);
}

// --- values to Python ------------------------------------------------------------------------------

// A read-only numpy array holding a copy of `values`.
template <class T>
nb::object read_only_array(const std::vector<T>& values) {
  auto* copy = new std::vector<T>(values);
  nb::capsule owner(copy, [](void* owned) noexcept { delete static_cast<std::vector<T>*>(owned); });
  const std::size_t shape[1] = {copy->size()};
  return nb::cast(nb::ndarray<nb::numpy, const T, nb::ndim<1>>(copy->data(), 1, shape, owner));
}

// A read-only view of the values, which keeps their owner (the array they came from) alive.
nb::object values_array(const FloatValues& values) {
  nb::capsule owner(new std::shared_ptr<const void>(values.owner),
                    [](void* owned) noexcept { delete static_cast<std::shared_ptr<const void>*>(owned); });
  std::vector<std::size_t> shape(values.shape.begin(), values.shape.end());
  return nb::cast(nb::ndarray<nb::numpy, const float>(values.data.data(), shape.size(), shape.data(), owner));
}

nb::object optional_values_array(const std::optional<FloatValues>& values) {
  return values ? values_array(*values) : nb::none();
}

// --- the entries -------------------------------------------------------------------------------------
// Their names in messages are the writers': "activation 'x'", "weight 'w'", ...

std::string activation_label(const std::string& tensor) { return "activation '" + tensor + "'"; }
std::string weight_label(const std::string& name) { return "weight '" + name + "'"; }
std::string bias_label(const std::string& name) { return "bias '" + name + "'"; }
std::string float_label(const std::string& name) { return "float initializer '" + name + "'"; }

QdqActivation make_activation(std::string tensor, nb::handle scale, nb::handle zero_point, nb::handle dtype) {
  const std::string what = activation_label(tensor);
  return {std::move(tensor), plan_scales(scale, what), plan_zero_points(zero_point, what),
          plan_quant_type(dtype, what)};
}

QdqWeight make_weight(std::string initializer, nb::handle scale, nb::handle zero_point, nb::handle dtype,
                      nb::handle axis, nb::handle values) {
  const std::string what = weight_label(initializer);
  return {std::move(initializer), plan_scales(scale, what), plan_zero_points(zero_point, what),
          plan_quant_type(dtype, what), plan_axis(axis, what), plan_optional_values(values, what)};
}

QdqBias make_bias(std::string initializer, nb::handle scale, nb::handle axis, nb::handle values) {
  const std::string what = bias_label(initializer);
  return {std::move(initializer), plan_scales(scale, what), plan_axis(axis, what), plan_optional_values(values, what)};
}

QdqFloat make_float(std::string initializer, nb::handle values) {
  const std::string what = float_label(initializer);
  return {std::move(initializer), plan_values(values, what)};
}

// --- the dict form -----------------------------------------------------------------------------------
// The keys of each entry are the keyword arguments of its class.

nb::dict as_dict(nb::handle value, const std::string& what) {
  if (!nb::isinstance<nb::dict>(value)) throw QdqPlanError(what + " must be a dict");
  return nb::borrow<nb::dict>(value);
}

void check_keys(const nb::dict& dict, std::initializer_list<std::string_view> allowed, const std::string& what) {
  for (const auto& [key, value] : dict) {
    const bool known = nb::isinstance<nb::str>(key) &&
                       std::ranges::find(allowed, std::string_view(nb::cast<std::string>(key))) != allowed.end();
    if (known) continue;
    std::string expected;
    for (std::string_view name : allowed) expected += (expected.empty() ? "" : ", ") + std::string(name);
    throw QdqPlanError(what + ": unknown key " + nb::cast<std::string>(nb::repr(key)) + " (expected " + expected + ")");
  }
}

// dict[key]; None when absent and optional.
nb::object item(const nb::dict& dict, const char* key, const std::string& what, bool required = true) {
  if (dict.contains(key)) return dict[key];
  if (required) throw QdqPlanError(what + " lacks '" + key + "'");
  return nb::none();
}

// The entries of plan[key], each read by `read(entry_dict, label)`.
template <class Entry, class Read>
std::vector<Entry> entries_from_dict(const nb::dict& plan, const char* key, Read read) {
  std::vector<Entry> entries;
  const nb::object value = item(plan, key, "plan", false);
  if (value.is_none()) return entries;
  if (!nb::isinstance<nb::list>(value) && !nb::isinstance<nb::tuple>(value))
    throw QdqPlanError(std::string("plan['") + key + "'] must be a list");
  for (nb::handle entry : value) {
    const std::string label = std::string("plan['") + key + "'][" + std::to_string(entries.size()) + "]";
    entries.push_back(read(as_dict(entry, label), label));
  }
  return entries;
}

// Each entry's items are looked up before any is converted, so a missing key is reported first.

QdqActivation activation_from_dict(const nb::dict& entry, const std::string& label) {
  check_keys(entry, {"tensor", "scale", "zero_point", "dtype"}, label);
  const std::string tensor = plan_string(item(entry, "tensor", label), label + "['tensor']");
  const std::string what = activation_label(tensor);
  const nb::object scale = item(entry, "scale", what), zero_point = item(entry, "zero_point", what),
                   dtype = item(entry, "dtype", what);
  return make_activation(tensor, scale, zero_point, dtype);
}

QdqWeight weight_from_dict(const nb::dict& entry, const std::string& label) {
  check_keys(entry, {"initializer", "scale", "zero_point", "dtype", "axis", "values"}, label);
  const std::string name = plan_string(item(entry, "initializer", label), label + "['initializer']");
  const std::string what = weight_label(name);
  const nb::object scale = item(entry, "scale", what), zero_point = item(entry, "zero_point", what),
                   dtype = item(entry, "dtype", what), axis = item(entry, "axis", what, false),
                   values = item(entry, "values", what, false);
  return make_weight(name, scale, zero_point, dtype, axis, values);
}

QdqBias bias_from_dict(const nb::dict& entry, const std::string& label) {
  check_keys(entry, {"initializer", "scale", "axis", "values"}, label);
  const std::string name = plan_string(item(entry, "initializer", label), label + "['initializer']");
  const std::string what = bias_label(name);
  const nb::object scale = item(entry, "scale", what), axis = item(entry, "axis", what, false),
                   values = item(entry, "values", what, false);
  return make_bias(name, scale, axis, values);
}

QdqFloat float_from_dict(const nb::dict& entry, const std::string& label) {
  check_keys(entry, {"initializer", "values"}, label);
  const std::string name = plan_string(item(entry, "initializer", label), label + "['initializer']");
  return make_float(name, item(entry, "values", float_label(name)));
}

QdqPlan plan_from_dict(nb::handle plan_object) {
  const nb::dict plan = as_dict(plan_object, "plan");
  check_keys(plan, {"min_opset", "activations", "weights", "biases", "floats"}, "plan");
  QdqPlan parsed;
  if (const nb::object opset = item(plan, "min_opset", "plan", false); !opset.is_none())
    parsed.min_opset = plan_int(opset, "plan['min_opset']");
  parsed.activations = entries_from_dict<QdqActivation>(plan, "activations", activation_from_dict);
  parsed.weights = entries_from_dict<QdqWeight>(plan, "weights", weight_from_dict);
  parsed.biases = entries_from_dict<QdqBias>(plan, "biases", bias_from_dict);
  parsed.floats = entries_from_dict<QdqFloat>(plan, "floats", float_from_dict);
  return parsed;
}

// --- lists of entries --------------------------------------------------------------------------------
// A plan's lists are read as tuples of copies (so that appending to one cannot silently do nothing)
// and replaced whole.

template <class Entry>
nb::tuple entry_tuple(const std::vector<Entry>& entries) {
  nb::list list;
  for (const Entry& entry : entries) list.append(nb::cast(entry));
  return nb::tuple(list);
}

template <class Entry>
std::vector<Entry> entry_vector(nb::handle sequence, const char* what) {
  std::vector<Entry> entries;
  for (nb::handle entry : sequence) {
    if (!nb::isinstance<Entry>(entry))
      throw nb::type_error((std::string("QdqPlan.") + what + " holds " + nb::type_name(entry.type()).c_str() +
                            "; expected " + nb::type_name(nb::type<Entry>()).c_str())
                               .c_str());
    entries.push_back(nb::cast<const Entry&>(entry));
  }
  return entries;
}

template <class Entry>
void def_entry_list(nb::class_<QdqPlan>& plan, const char* name, std::vector<Entry> QdqPlan::*member) {
  plan.def_prop_rw(
      name, [member](const QdqPlan& self) { return entry_tuple(self.*member); },
      [member, name](QdqPlan& self, nb::handle entries) { self.*member = entry_vector<Entry>(entries, name); });
}

std::string format_doubles(const std::vector<double>& values) {
  std::string text = "[";
  for (std::size_t i = 0; i < values.size(); ++i)
    text += (i ? ", " : "") + nb::cast<std::string>(nb::repr(nb::float_(values[i])));
  return text + "]";
}

std::string format_ints(const std::vector<std::int64_t>& values) {
  std::string text = "[";
  for (std::size_t i = 0; i < values.size(); ++i) text += (i ? ", " : "") + std::to_string(values[i]);
  return text + "]";
}

std::string format_axis(const std::optional<std::int64_t>& axis) { return axis ? std::to_string(*axis) : "None"; }

std::string_view type_name(QuantType type) { return quant_type_info(type).name; }

}  // namespace

const QdqPlan& plan_argument(nb::handle plan, std::optional<QdqPlan>& converted) {
  if (nb::isinstance<QdqPlan>(plan)) return nb::cast<const QdqPlan&>(plan);
  return converted.emplace(plan_from_dict(plan));
}

void bind_qdq_plan(nb::module_& module) {
  nb::enum_<QuantType> quant_type(module, "QuantType",
                                  "The integer types the QDQ writer quantizes to (QuantizeLinear's output type).");
  for (QuantType type : kQuantTypes) quant_type.value(type_name(type).data(), type);

  nb::class_<QdqActivation>(module, "QdqActivation")
      .def(
          "__init__",
          [](QdqActivation* self, std::string tensor, nb::handle scale, nb::handle zero_point, nb::handle dtype) {
            new (self) QdqActivation(make_activation(std::move(tensor), scale, zero_point, dtype));
          },
          "tensor"_a, "scale"_a, "zero_point"_a, "dtype"_a)
      .def_rw("tensor", &QdqActivation::tensor)
      .def_prop_rw(
          "scale", [](const QdqActivation& self) { return read_only_array(self.scale); },
          [](QdqActivation& self, nb::handle value) { self.scale = plan_scales(value, activation_label(self.tensor)); })
      .def_prop_rw(
          "zero_point", [](const QdqActivation& self) { return read_only_array(self.zero_point); },
          [](QdqActivation& self, nb::handle value) {
            self.zero_point = plan_zero_points(value, activation_label(self.tensor));
          })
      .def_prop_rw(
          "dtype", [](const QdqActivation& self) { return self.dtype; },
          [](QdqActivation& self, nb::handle value) {
            self.dtype = plan_quant_type(value, activation_label(self.tensor));
          })
      .def("__repr__", [](const QdqActivation& self) {
        return "QdqActivation(tensor=" + nb::cast<std::string>(nb::repr(nb::str(self.tensor.c_str()))) +
               ", scale=" + format_doubles(self.scale) + ", zero_point=" + format_ints(self.zero_point) + ", dtype=" +
               std::string(type_name(self.dtype)) + ")";
      });

  nb::class_<QdqWeight>(module, "QdqWeight")
      .def(
          "__init__",
          [](QdqWeight* self, std::string initializer, nb::handle scale, nb::handle zero_point, nb::handle dtype,
             nb::handle axis, nb::handle values) {
            new (self) QdqWeight(make_weight(std::move(initializer), scale, zero_point, dtype, axis, values));
          },
          "initializer"_a, "scale"_a, "zero_point"_a, "dtype"_a, "axis"_a.none() = nb::none(),
          "values"_a.none() = nb::none())
      .def_rw("initializer", &QdqWeight::initializer)
      .def_prop_rw(
          "scale", [](const QdqWeight& self) { return read_only_array(self.scale); },
          [](QdqWeight& self, nb::handle value) { self.scale = plan_scales(value, weight_label(self.initializer)); })
      .def_prop_rw(
          "zero_point", [](const QdqWeight& self) { return read_only_array(self.zero_point); },
          [](QdqWeight& self, nb::handle value) {
            self.zero_point = plan_zero_points(value, weight_label(self.initializer));
          })
      .def_prop_rw(
          "dtype", [](const QdqWeight& self) { return self.dtype; },
          [](QdqWeight& self, nb::handle value) {
            self.dtype = plan_quant_type(value, weight_label(self.initializer));
          })
      .def_prop_rw(
          "axis", [](const QdqWeight& self) { return self.axis; },
          [](QdqWeight& self, nb::handle value) { self.axis = plan_axis(value, weight_label(self.initializer)); },
          nb::for_setter(nb::arg("value").none()))
      .def_prop_rw(
          "values", [](const QdqWeight& self) { return optional_values_array(self.values); },
          [](QdqWeight& self, nb::handle value) {
            self.values = plan_optional_values(value, weight_label(self.initializer));
          },
          nb::for_setter(nb::arg("value").none()))
      .def("__repr__", [](const QdqWeight& self) {
        return "QdqWeight(initializer=" + nb::cast<std::string>(nb::repr(nb::str(self.initializer.c_str()))) +
               ", scale=" + format_doubles(self.scale) + ", zero_point=" + format_ints(self.zero_point) + ", dtype=" +
               std::string(type_name(self.dtype)) + ", axis=" + format_axis(self.axis) +
               (self.values ? ", values=<" + format_ints(self.values->shape) + " float32>" : "") + ")";
      });

  nb::class_<QdqBias>(module, "QdqBias")
      .def(
          "__init__",
          [](QdqBias* self, std::string initializer, nb::handle scale, nb::handle axis, nb::handle values) {
            new (self) QdqBias(make_bias(std::move(initializer), scale, axis, values));
          },
          "initializer"_a, "scale"_a, "axis"_a.none() = nb::none(), "values"_a.none() = nb::none())
      .def_rw("initializer", &QdqBias::initializer)
      .def_prop_rw(
          "scale", [](const QdqBias& self) { return read_only_array(self.scale); },
          [](QdqBias& self, nb::handle value) { self.scale = plan_scales(value, bias_label(self.initializer)); })
      .def_prop_rw(
          "axis", [](const QdqBias& self) { return self.axis; },
          [](QdqBias& self, nb::handle value) { self.axis = plan_axis(value, bias_label(self.initializer)); },
          nb::for_setter(nb::arg("value").none()))
      .def_prop_rw(
          "values", [](const QdqBias& self) { return optional_values_array(self.values); },
          [](QdqBias& self, nb::handle value) {
            self.values = plan_optional_values(value, bias_label(self.initializer));
          },
          nb::for_setter(nb::arg("value").none()))
      .def("__repr__", [](const QdqBias& self) {
        return "QdqBias(initializer=" + nb::cast<std::string>(nb::repr(nb::str(self.initializer.c_str()))) +
               ", scale=" + format_doubles(self.scale) + ", axis=" + format_axis(self.axis) +
               (self.values ? ", values=<" + format_ints(self.values->shape) + " float32>" : "") + ")";
      });

  nb::class_<QdqFloat>(module, "QdqFloat")
      .def(
          "__init__",
          [](QdqFloat* self, std::string initializer, nb::handle values) {
            new (self) QdqFloat(make_float(std::move(initializer), values));
          },
          "initializer"_a, "values"_a)
      .def_rw("initializer", &QdqFloat::initializer)
      .def_prop_rw(
          "values", [](const QdqFloat& self) { return values_array(self.values); },
          [](QdqFloat& self, nb::handle value) { self.values = plan_values(value, float_label(self.initializer)); })
      .def("__repr__", [](const QdqFloat& self) {
        return "QdqFloat(initializer=" + nb::cast<std::string>(nb::repr(nb::str(self.initializer.c_str()))) +
               ", values=<" + format_ints(self.values.shape) + " float32>)";
      });

  nb::class_<QdqPlan> plan(module, "QdqPlan");
  plan.def(
          "__init__",
          [](QdqPlan* self, nb::handle activations, nb::handle weights, nb::handle biases, nb::handle floats,
             std::int64_t min_opset) {
            new (self) QdqPlan{min_opset, entry_vector<QdqActivation>(activations, "activations"),
                               entry_vector<QdqWeight>(weights, "weights"), entry_vector<QdqBias>(biases, "biases"),
                               entry_vector<QdqFloat>(floats, "floats")};
          },
          "activations"_a = nb::tuple(), "weights"_a = nb::tuple(), "biases"_a = nb::tuple(),
          "floats"_a = nb::tuple(), "min_opset"_a = 0)
      .def_static(
          "from_dict", [](nb::handle plan) { return plan_from_dict(plan); }, "plan"_a)
      .def_rw("min_opset", &QdqPlan::min_opset)
      .def_prop_ro("required_opset", [](const QdqPlan& self) { return required_opset(self); })
      .def("__repr__", [](const QdqPlan& self) {
        return "QdqPlan(" + std::to_string(self.activations.size()) + " activations, " +
               std::to_string(self.weights.size()) + " weights, " + std::to_string(self.biases.size()) + " biases, " +
               std::to_string(self.floats.size()) + " floats, min_opset=" + std::to_string(self.min_opset) + ")";
      });
  def_entry_list(plan, "activations", &QdqPlan::activations);
  def_entry_list(plan, "weights", &QdqPlan::weights);
  def_entry_list(plan, "biases", &QdqPlan::biases);
  def_entry_list(plan, "floats", &QdqPlan::floats);
}

}  // namespace onnx2fx::bindings
