// The bytes of a model or external-data file: a private copy-on-write memory map of a file, or an
// owned copy of an in-memory buffer. Tensors view into it and share ownership of it.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>

namespace onnx2fx {

class MappedFile {
 public:
  // Maps `path` read/write but private, so writes through views never reach the file.
  // Throws std::system_error (with the errno of the failure) if the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> map(const std::filesystem::path& path);

  // Maps the regular file open on `fd` the same way (the caller keeps and closes `fd`); `path`
  // only names it in errors. Mapping the descriptor that was checked means a rename of the path
  // afterwards cannot substitute another file.
  static std::shared_ptr<MappedFile> map_descriptor(int fd, const std::filesystem::path& path);

  // Copies `bytes` once into an owned buffer.
  static std::shared_ptr<MappedFile> copy_of(std::span<const std::byte> bytes);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<std::byte> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  bool is_mapped() const { return is_mapped_; }

  // How pages of the map are read ahead: `Random` while parsing touches only headers (so the
  // weights between them are not read in), `Normal` afterwards. No effect on copies.
  enum class Access { Random, Normal };
  void advise(Access access) const;

  // Drops the resident pages lying entirely inside `range` (a part of this map that was only read,
  // never written: the kernel re-reads them from the file if they are touched again). Lets a
  // caller that copied a tensor out of the map give back the memory the original occupied.
  void release(std::span<const std::byte> range) const;

 private:
  MappedFile() = default;

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool is_mapped_ = false;                // data_ is an mmap region to unmap on destruction
  std::unique_ptr<std::byte[]> owned_;    // the buffer behind data_ for copies
};

}  // namespace onnx2fx
