// The values a node reads, including those its subgraphs capture from enclosing scopes.
#pragma once

#include <string_view>
#include <vector>

#include "ir/ir.h"

namespace onnx2fx {

// The non-empty inputs of `node` and the names its subgraphs use without defining them
// (implicit inputs). Views into the graph, valid while it is unchanged; may repeat names.
std::vector<std::string_view> used_names(const Node& node);

}  // namespace onnx2fx
