// Typed exceptions of the core. The Python bindings translate each to a Python exception: the
// reader's and the passes' to classes of onnx2fx.errors, the writers' to ValueError (a plan or a
// size that does not fit) and NotImplementedError (an operator without an integer form).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace onnx2fx {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;

  // Throws a copy of this error, of the same dynamic type, with `context` prepended to the message.
  [[noreturn]] virtual void rethrow_with_context(std::string_view context) const = 0;
};

// Implements rethrow_with_context for the concrete error type `Self` deriving from `Base`.
template <class Self, class Base>
class ErrorOf : public Base {
 public:
  explicit ErrorOf(const std::string& message) : Base(message) {}

  [[noreturn]] void rethrow_with_context(std::string_view context) const override {
    throw Self(std::string(context) + this->what());
  }
};

// The bytes are not a valid ONNX model.
class ParseError : public ErrorOf<ParseError, Error> {
 public:
  using ErrorOf::ErrorOf;
};

// A tensor's external data is missing, escapes the model folder, or is out of range.
class ExternalDataError : public ErrorOf<ExternalDataError, ParseError> {
 public:
  using ErrorOf::ErrorOf;
};

// The graph is valid protobuf but not a valid dataflow graph.
class GraphError : public ErrorOf<GraphError, Error> {
 public:
  using ErrorOf::ErrorOf;
};

class CycleError : public ErrorOf<CycleError, GraphError> {
 public:
  using ErrorOf::ErrorOf;
};

class UndefinedValueError : public ErrorOf<UndefinedValueError, GraphError> {
 public:
  using ErrorOf::ErrorOf;
};

// A quantization plan does not fit the model: a name it lacks, a bad scale or zero point, a shape
// mismatch. The writers check the whole plan before they write anything.
class QdqPlanError : public ErrorOf<QdqPlanError, Error> {
 public:
  using ErrorOf::ErrorOf;
};

// A quantized model would not fit in one protobuf message (2 GiB).
class QdqSizeError : public ErrorOf<QdqSizeError, Error> {
 public:
  using ErrorOf::ErrorOf;
};

// A node has no integer form in the requested format (or its operands are not quantized).
class IntegerLoweringError : public ErrorOf<IntegerLoweringError, Error> {
 public:
  using ErrorOf::ErrorOf;
};

}  // namespace onnx2fx
