// The quantization plan in Python: `_core.QuantType`, `_core.QdqActivation`, `_core.QdqWeight`,
// `_core.QdqBias`, `_core.QdqFloat` and `_core.QdqPlan` are the C++ types of writer/qdq_plan.h.
#pragma once

#include <nanobind/nanobind.h>

#include <optional>

#include "writer/qdq_plan.h"

namespace onnx2fx::bindings {

// Adds the plan's classes to the module.
void bind_qdq_plan(nanobind::module_& module);

// The plan a writer binding was given: a `_core.QdqPlan`, used as it is, or a dict with the same
// fields (`QdqPlan.from_dict`), converted into `converted`. Raises QdqPlanError (ValueError in
// Python) naming what does not fit.
const QdqPlan& plan_argument(nanobind::handle plan, std::optional<QdqPlan>& converted);

}  // namespace onnx2fx::bindings
