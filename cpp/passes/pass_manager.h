// Runs graph passes in order, naming the failing pass in errors.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ir/ir.h"
#include "passes/pass_registry.h"

namespace onnx2fx {

class PassManager {
 public:
  PassManager& add(std::string name, GraphPass pass);
  // Adds the registered pass called `name` (std::out_of_range when there is none).
  PassManager& add(std::string_view name);

  // Runs the passes in the order added; returns whether any changed the graph. An onnx2fx::Error
  // thrown by a pass is rethrown with the same type and "pass '<name>': " before its message.
  bool run(Graph& graph) const;

 private:
  std::vector<std::pair<std::string, GraphPass>> passes_;
};

}  // namespace onnx2fx
