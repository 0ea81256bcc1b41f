// The graph passes by name. Each pass registers itself in its own file, so adding one is a new .cc
// in cpp/passes/ (the build globs the folder) and nothing else: the pass manager runs it by name,
// the Python module adds it to `_core.Graph` as a method, and its test finds it here, so it needs a
// header only when other code calls it directly.
//
//   namespace {
//   const PassRegistration registration({
//       .name = "dead_code_elimination",
//       .method = "eliminate_dead_code",
//       .kind = PassKind::Transform,
//       .summary = "Removes the nodes whose results never reach a graph output; returns whether any went.",
//       .run = eliminate_dead_code,
//   });
//   }  // namespace
#pragma once

#include <functional>
#include <span>
#include <string_view>

#include "ir/ir.h"

namespace onnx2fx {

// A pass transforms or checks a graph and returns whether it changed it.
using GraphPass = std::function<bool(Graph&)>;

enum class PassKind {
  Transform,  // may change the graph; its Python method returns whether it did
  Check,      // never changes the graph and throws on what it rejects; its Python method returns None
};

// The strings are literals: they live as long as the program, and Python keeps pointers to them.
struct PassInfo {
  std::string_view name;     // in the pass manager and its errors: "pass '<name>': ..."
  std::string_view method;   // the `_core.Graph` method that runs it
  PassKind kind = PassKind::Transform;
  std::string_view summary;  // that method's docstring
  GraphPass run;
};

// Every registered pass, sorted by name. Complete once static initialization is over, which is
// before main() and before the Python module is initialized.
std::span<const PassInfo> registered_passes();

// The registered pass called `name`; throws std::out_of_range naming it when there is none.
const PassInfo& registered_pass(std::string_view name);

// Registers a pass from a namespace-scope object of its file. Two passes of the same name, or
// with the same method, are a programming error that stops the program during initialization.
class PassRegistration {
 public:
  explicit PassRegistration(PassInfo pass);
};

}  // namespace onnx2fx
