// Opening a tensor's external data file without letting the model reach outside its folder.
//
// The four defences of the onnx package (docs/Security.md, after CVE-2022-25882, CVE-2024-27318,
// CVE-2026-27489, CVE-2026-34447 and CVE-2026-34446), in the order they apply:
//   1. canonical-path containment: the location, with every symlink resolved, lies inside the
//      canonical model folder (besides the lexical checks: relative, no `..`);
//   2. symlink rejection: no component of the location below the model folder is a symbolic link,
//      not even one that points inside the folder;
//   3. O_NOFOLLOW: the file is opened one component at a time from a descriptor of the model folder
//      (openat with O_NOFOLLOW), so a component swapped for a symlink after the checks above fails
//      to open instead of being followed;
//   4. hard-link count: the opened file must have exactly one link, since a hard link is
//      indistinguishable from the file it aliases, which may lie outside the folder.
// The file is also required to be a regular file (not a directory, FIFO or device; it is opened
// with O_NONBLOCK so a FIFO cannot block the open), and it is mapped from the same descriptor that
// was checked, so a rename after the checks cannot substitute another file.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "onnx/mapped_file.h"

namespace onnx2fx {

// Checks `location` (defences 1 and 2), opens it (3, 4) and maps it. `subject` names the location
// and the tensor in messages ("external data location 'w.bin' of tensor 'w'"), `at` is appended.
// Throws ExternalDataError naming what is wrong.
std::shared_ptr<MappedFile> map_external_file(const std::filesystem::path& canonical_folder,
                                              const std::string& location, const std::string& subject,
                                              const std::string& at);

// Defences 3 and 4 alone: opens `relative` (lexically normal, no `..`) below the folder descriptor
// `folder_fd` one component at a time with O_NOFOLLOW and checks the result is a regular file with a
// single link. Returns the descriptor (the caller closes it). Throws ExternalDataError.
int open_beneath(int folder_fd, const std::filesystem::path& relative, const std::string& subject,
                 const std::string& at);

}  // namespace onnx2fx
