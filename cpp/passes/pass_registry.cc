#include "passes/pass_registry.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace onnx2fx {
namespace {

// A function-local static: registrations from other files' initializers may run before this
// file's own, and the first call constructs it whatever the order.
std::vector<PassInfo>& registry() {
  static std::vector<PassInfo> passes;
  return passes;
}

}  // namespace

std::span<const PassInfo> registered_passes() { return registry(); }

const PassInfo& registered_pass(std::string_view name) {
  const auto found = std::ranges::find(registry(), name, &PassInfo::name);
  if (found == registry().end()) throw std::out_of_range("no graph pass is registered as '" + std::string(name) + "'");
  return *found;
}

PassRegistration::PassRegistration(PassInfo pass) {
  std::vector<PassInfo>& passes = registry();
  for (const PassInfo& other : passes)
    if (other.name == pass.name || other.method == pass.method)
      throw std::logic_error("graph pass '" + std::string(pass.name) + "' takes the name or method of pass '" +
                             std::string(other.name) + "'");
  const auto position = std::ranges::upper_bound(passes, pass.name, {}, &PassInfo::name);
  passes.insert(position, std::move(pass));
}

}  // namespace onnx2fx
