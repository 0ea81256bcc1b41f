#include "onnx/external_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

#include "onnx/errors.h"

namespace onnx2fx {
namespace {

namespace fs = std::filesystem;

// Closes a descriptor when leaving scope unless released.
class Descriptor {
 public:
  explicit Descriptor(int fd) : fd_(fd) {}
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  ~Descriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// The components of a lexically normal relative path, without empty and "." entries.
std::vector<std::string> components_of(const fs::path& relative) {
  std::vector<std::string> parts;
  for (const fs::path& part : relative)
    if (!part.empty() && part != ".") parts.push_back(part.string());
  return parts;
}

bool is_within(const fs::path& path, const fs::path& folder) {
  return std::ranges::mismatch(folder, path).in1 == folder.end();
}

}  // namespace

int open_beneath(int folder_fd, const fs::path& relative, const std::string& subject, const std::string& at) {
  const std::vector<std::string> parts = components_of(relative);
  if (parts.empty()) throw ExternalDataError(subject + " names the model folder itself, not a file" + at);
  Descriptor current(::dup(folder_fd));
  if (current.get() < 0) throw ExternalDataError(subject + " cannot be opened: " + std::strerror(errno) + at);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const bool last = i + 1 == parts.size();
    // O_NOFOLLOW refuses a symlink in the final position (ELOOP); O_DIRECTORY|O_NOFOLLOW on the
    // folders above it refuses a symlinked folder (ELOOP or ENOTDIR). O_NONBLOCK: opening a FIFO
    // for reading would otherwise wait for a writer.
    const int flags = O_CLOEXEC | O_NOFOLLOW | (last ? O_RDONLY | O_NONBLOCK : O_RDONLY | O_DIRECTORY);
    const int next = ::openat(current.get(), parts[i].c_str(), flags);
    if (next < 0) {
      const int error = errno;
      if (error == ELOOP || (error == ENOTDIR && !last)) {
        struct stat link {};
        if (::fstatat(current.get(), parts[i].c_str(), &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode))
          throw ExternalDataError(subject + ": '" + parts[i] +
                                  "' is a symbolic link; symbolic links in external data paths are refused" + at);
      }
      if (error == ENOTDIR)
        throw ExternalDataError(subject + ": '" + parts[i] + "' is not a folder" + at);
      throw ExternalDataError(subject + " cannot be opened: " + std::strerror(error) + at);
    }
    current.reset(next);
  }
  struct stat info {};
  if (::fstat(current.get(), &info) != 0)
    throw ExternalDataError(subject + " cannot be examined: " + std::strerror(errno) + at);
  if (S_ISDIR(info.st_mode)) throw ExternalDataError(subject + " is a directory, not a file" + at);
  if (!S_ISREG(info.st_mode))
    throw ExternalDataError(subject + " is not a regular file (a FIFO, socket or device)" + at);
  if (info.st_nlink != 1)
    throw ExternalDataError(subject + " has " + std::to_string(info.st_nlink) +
                            " hard links; external data files with more than one link are refused" + at);
  return current.release();
}

std::shared_ptr<MappedFile> map_external_file(const fs::path& canonical_folder, const std::string& location,
                                              const std::string& subject, const std::string& at) {
  const fs::path relative(location);
  if (relative.has_root_path())
    throw ExternalDataError(subject + " is an absolute path; it must be relative to the model folder" + at);
  const fs::path normal = relative.lexically_normal();
  if (!normal.empty() && *normal.begin() == "..") throw ExternalDataError(subject + " leaves the model folder" + at);

  // 1. Canonical-path containment.
  const fs::path full = canonical_folder / normal;
  std::error_code error;
  const fs::path resolved = fs::canonical(full, error);
  if (error == std::errc::no_such_file_or_directory)
    throw ExternalDataError(subject + " not found (looked for " + full.string() + ")" + at);
  if (error) throw ExternalDataError(subject + " cannot be resolved: " + error.message() + at);
  if (!is_within(resolved, canonical_folder))
    throw ExternalDataError(subject + " resolves to '" + resolved.string() + "', outside the model folder" + at);

  // 2. No symbolic link on the way, even one that stays inside the folder.
  fs::path walked = canonical_folder;
  for (const std::string& part : components_of(normal)) {
    walked /= part;
    if (fs::is_symlink(fs::symlink_status(walked, error)))
      throw ExternalDataError(subject + ": '" + part +
                              "' is a symbolic link; symbolic links in external data paths are refused" + at);
  }

  // 3 and 4. Open without following links, check the descriptor, map the same descriptor.
  const Descriptor folder(::open(canonical_folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (folder.get() < 0)
    throw ExternalDataError("model folder '" + canonical_folder.string() + "' cannot be opened: " +
                            std::strerror(errno) + at);
  const Descriptor file(open_beneath(folder.get(), normal, subject, at));
  try {
    return MappedFile::map_descriptor(file.get(), resolved);
  } catch (const std::system_error& failure) {
    throw ExternalDataError(subject + " cannot be read: " + failure.code().message() + at);
  }
}

}  // namespace onnx2fx
