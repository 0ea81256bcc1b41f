// Fuzz target (b): model bytes whose tensors may name external data, read against a scratch folder
// that holds the cases an attacker would aim at: a good file, a file in a subfolder, symlinks to
// inside and outside the folder, a hard link, a directory, a FIFO and an empty file. The dictionary
// (onnx.dict) has their names, so the fuzzer finds them. The reader must refuse every hostile one
// with ExternalDataError and never map more than the file holds.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <span>

#include "fuzz/fuzz_support.h"
#include "onnx/errors.h"
#include "onnx/model_reader.h"

namespace {

namespace fs = std::filesystem;

// Every byte of the file outside the model folder; files inside never hold it.
constexpr char kSecretByte = static_cast<char>(0xEE);

// Aborts if a tensor's external data came from outside the folder.
void check_no_secret(const onnx2fx::Graph& graph) {
  for (const onnx2fx::Tensor& tensor : graph.initializers)
    if (!tensor.external_location.empty())
      for (const std::byte b : tensor.data)
        if (b == static_cast<std::byte>(kSecretByte)) std::abort();
}

const fs::path& model_folder() {
  static const fs::path folder = [] {
    const fs::path root = onnx2fx::fuzz::scratch_folder();
    const fs::path model = root / "model";
    fs::create_directories(model / "sub");
    fs::create_directories(model / "dir");
    const auto write = [](const fs::path& path, std::size_t bytes, char fill = 0) {
      std::ofstream out(path, std::ios::binary);
      for (std::size_t i = 0; i < bytes; ++i) out.put(fill ? fill : static_cast<char>(i % 100));
    };
    write(model / "w.bin", 64);
    write(model / "sub" / "x.bin", 16);
    write(model / "empty.bin", 0);
    write(model / "linked.bin", 32);
    write(root / "secret.bin", 64, kSecretByte);
    fs::create_symlink("w.bin", model / "inside.bin");
    fs::create_symlink(root / "secret.bin", model / "outside.bin");
    fs::create_directory_symlink(root, model / "up");
    fs::create_hard_link(model / "linked.bin", model / "hard.bin");
    if (::mkfifo((model / "fifo").c_str(), 0600) != 0) std::abort();
    return model;
  }();
  return folder;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace onnx2fx;
  try {
    auto model = load_model_from_bytes(std::as_bytes(std::span(data, size)), model_folder());
    check_no_secret(*model->graph);
    fuzz::run_load_passes(*model);
    volatile std::uint64_t sum = fuzz::touch(*model->graph);
    (void)sum;
  } catch (const Error&) {
  }
  return 0;
}
