// The external-data defences of external_file.h, including the ones a Python test cannot reach:
// a component that is swapped for a symlink after the checks (O_NOFOLLOW refuses it at open), and
// a file renamed over after it was mapped (the map keeps the bytes that were checked).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "onnx/errors.h"
#include "onnx/external_file.h"
#include "tests/check.h"

namespace {

using namespace onnx2fx;
namespace fs = std::filesystem;

struct Folder {
  fs::path path = fs::temp_directory_path() / ("onnx2fx_external_file_test_" + std::to_string(::getpid()));
  Folder() {
    fs::remove_all(path);
    fs::create_directories(path / "model" / "sub");
  }
  ~Folder() { fs::remove_all(path); }
};

void write(const fs::path& path, std::string_view text) { std::ofstream(path, std::ios::binary) << text; }

#define CHECK_REFUSED(statement, fragment) \
  onnx2fx::testing::check_throws<ExternalDataError>([&] { statement; }, fragment, __FILE__, __LINE__)

void open_beneath_refuses_what_the_path_checks_would_miss() {
  const Folder folder;
  const fs::path model = folder.path / "model";
  write(model / "w.bin", "0123456789abcdef");
  write(folder.path / "secret.bin", "secret");
  const int fd = ::open(model.c_str(), O_RDONLY | O_DIRECTORY);
  CHECK(fd >= 0);

  const int good = open_beneath(fd, "w.bin", "w.bin", "");
  CHECK(good >= 0);
  ::close(good);

  // A final component that became a symlink between the checks and the open (O_NOFOLLOW).
  fs::create_symlink(folder.path / "secret.bin", model / "swapped.bin");
  CHECK_REFUSED(open_beneath(fd, "swapped.bin", "location 'swapped.bin'", ""),
                "location 'swapped.bin': 'swapped.bin' is a symbolic link");
  // A folder on the way that became a symlink (O_DIRECTORY | O_NOFOLLOW).
  fs::create_directory_symlink(folder.path, model / "up");
  CHECK_REFUSED(open_beneath(fd, "up/secret.bin", "location 'up/secret.bin'", ""), "'up' is a symbolic link");
  // A symlink to a file inside the folder is refused too.
  fs::create_symlink("w.bin", model / "inside.bin");
  CHECK_REFUSED(open_beneath(fd, "inside.bin", "location", ""), "is a symbolic link");

  // A hard link, both names.
  write(folder.path / "outside.bin", "0123456789abcdef");
  fs::create_hard_link(folder.path / "outside.bin", model / "hard.bin");
  CHECK_REFUSED(open_beneath(fd, "hard.bin", "location 'hard.bin'", ""),
                "location 'hard.bin' has 2 hard links; external data files with more than one link are refused");

  // Not regular files: a directory, a FIFO (opened without blocking), a file used as a folder.
  CHECK_REFUSED(open_beneath(fd, "sub", "location 'sub'", ""), "location 'sub' is a directory, not a file");
  CHECK(::mkfifo((model / "fifo").c_str(), 0600) == 0);
  CHECK_REFUSED(open_beneath(fd, "fifo", "location 'fifo'", ""), "location 'fifo' is not a regular file");
  CHECK_REFUSED(open_beneath(fd, "w.bin/x", "location 'w.bin/x'", ""), "'w.bin' is not a folder");
  CHECK_REFUSED(open_beneath(fd, ".", "location '.'", ""), "names the model folder itself");
  ::close(fd);
}

void the_map_keeps_the_bytes_that_were_checked() {
  const Folder folder;
  const fs::path model = fs::canonical(folder.path / "model");
  write(model / "w.bin", "0123456789abcdef");
  const auto file = map_external_file(model, "w.bin", "location 'w.bin'", "");
  CHECK(file->size() == 16);
  // The file is replaced by another one (rename over it) after the checks and the map.
  write(model / "other.bin", "XXXXXXXXXXXXXXXXXXXXXXXX");
  fs::rename(model / "other.bin", model / "w.bin");
  CHECK(std::string(reinterpret_cast<const char*>(file->bytes().data()), file->size()) == "0123456789abcdef");
}

void map_external_file_checks_the_path_first() {
  const Folder folder;
  const fs::path model = fs::canonical(folder.path / "model");
  write(folder.path / "secret.bin", "secret");
  fs::create_symlink(folder.path / "secret.bin", model / "outside.bin");
  CHECK_REFUSED(map_external_file(model, "outside.bin", "location 'outside.bin'", ""), "outside the model folder");
  CHECK_REFUSED(map_external_file(model, "../secret.bin", "location", ""), "leaves the model folder");
  CHECK_REFUSED(map_external_file(model, "/etc/passwd", "location", ""), "is an absolute path");
  CHECK_REFUSED(map_external_file(model, "missing.bin", "location", ""), "not found");
}

}  // namespace

int main() {
  open_beneath_refuses_what_the_path_checks_would_miss();
  the_map_keeps_the_bytes_that_were_checked();
  map_external_file_checks_the_path_first();
  return onnx2fx::testing::report();
}
