// Runs graph passes in order, naming the failing pass in errors.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ir/ir.h"

namespace onnx2fx {

// A pass transforms or checks a graph and returns whether it changed it.
using GraphPass = std::function<bool(Graph&)>;

class PassManager {
 public:
  PassManager& add(std::string name, GraphPass pass);

  // Runs the passes in the order added; returns whether any changed the graph. An onnx2fx::Error
  // thrown by a pass is rethrown with the same type and "pass '<name>': " before its message.
  bool run(Graph& graph) const;

 private:
  std::vector<std::pair<std::string, GraphPass>> passes_;
};

}  // namespace onnx2fx
