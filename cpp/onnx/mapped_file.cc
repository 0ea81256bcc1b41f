#include "onnx/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cerrno>
#include <system_error>

namespace onnx2fx {
namespace {

[[noreturn]] void throw_errno(int error, const std::filesystem::path& path) {
  throw std::system_error(error, std::generic_category(), path.string());
}

// Closes a file descriptor when leaving scope; the map stays valid after close.
struct FileDescriptor {
  int fd;
  ~FileDescriptor() { ::close(fd); }
};

}  // namespace

std::shared_ptr<MappedFile> MappedFile::map(const std::filesystem::path& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (it is then refused).
  const FileDescriptor file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};
  if (file.fd < 0) throw_errno(errno, path);
  return map_descriptor(file.fd, path);
}

std::shared_ptr<MappedFile> MappedFile::map_descriptor(int fd, const std::filesystem::path& path) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) throw_errno(errno, path);
  if (S_ISDIR(info.st_mode)) throw_errno(EISDIR, path);
  if (!S_ISREG(info.st_mode)) throw_errno(EINVAL, path);
  std::shared_ptr<MappedFile> mapped(new MappedFile);
  if (info.st_size == 0) return mapped;  // mmap rejects empty ranges
  const auto size = static_cast<std::size_t>(info.st_size);
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (data == MAP_FAILED) throw_errno(errno, path);
  mapped->data_ = static_cast<std::byte*>(data);
  mapped->size_ = size;
  mapped->is_mapped_ = true;
  return mapped;
}

std::shared_ptr<MappedFile> MappedFile::copy_of(std::span<const std::byte> bytes) {
  std::shared_ptr<MappedFile> copy(new MappedFile);
  if (bytes.empty()) return copy;
  copy->owned_ = std::make_unique_for_overwrite<std::byte[]>(bytes.size());
  std::ranges::copy(bytes, copy->owned_.get());
  copy->data_ = copy->owned_.get();
  copy->size_ = bytes.size();
  return copy;
}

void MappedFile::advise(Access access) const {
  if (!is_mapped_) return;
  ::madvise(data_, size_, access == Access::Random ? MADV_RANDOM : MADV_NORMAL);  // a hint: failure is harmless
}

void MappedFile::release(std::span<const std::byte> range) const {
  if (!is_mapped_ || range.empty()) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(range.data());
  const auto end = begin + range.size();
  const auto map_begin = reinterpret_cast<std::uintptr_t>(data_);
  if (begin < map_begin || end > map_begin + size_) return;
  const std::uintptr_t first = (begin + page - 1) / page * page;
  const std::uintptr_t last = end / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

MappedFile::~MappedFile() {
  if (is_mapped_) ::munmap(data_, size_);
}

}  // namespace onnx2fx
