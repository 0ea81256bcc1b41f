#include "passes/pass_manager.h"

#include "onnx/errors.h"

namespace onnx2fx {

PassManager& PassManager::add(std::string name, GraphPass pass) {
  passes_.emplace_back(std::move(name), std::move(pass));
  return *this;
}

PassManager& PassManager::add(std::string_view name) {
  const PassInfo& pass = registered_pass(name);
  return add(std::string(pass.name), pass.run);
}

bool PassManager::run(Graph& graph) const {
  bool changed = false;
  for (const auto& [name, pass] : passes_) {
    try {
      changed |= pass(graph);
    } catch (const Error& error) {
      error.rethrow_with_context("pass '" + name + "': ");
    }
  }
  return changed;
}

}  // namespace onnx2fx
