// A tiny assertion helper for the C++ unit tests: failed checks are printed and counted.
#pragma once

#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

namespace onnx2fx::testing {

inline int failures = 0;

inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what.c_str());
  ++failures;
}

// Runs `statement`, which must throw `Exception` with `fragment` in its message.
template <class Exception, class Statement>
void check_throws(Statement&& statement, std::string_view fragment, const char* file, int line) {
  try {
    statement();
  } catch (const Exception& error) {
    if (std::string_view(error.what()).find(fragment) == std::string_view::npos)
      fail(file, line, "message \"" + std::string(error.what()) + "\" lacks \"" + std::string(fragment) + "\"");
    return;
  } catch (const std::exception& error) {
    return fail(file, line, "unexpected exception: " + std::string(error.what()));
  }
  fail(file, line, "no exception thrown");
}

// The exit status of a test program.
inline int report() {
  if (failures) std::fprintf(stderr, "%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}

}  // namespace onnx2fx::testing

#define CHECK(condition) \
  ((condition) ? void() : ::onnx2fx::testing::fail(__FILE__, __LINE__, #condition))

#define CHECK_THROWS(Exception, statement, fragment) \
  ::onnx2fx::testing::check_throws<Exception>([&] { statement; }, fragment, __FILE__, __LINE__)
