// Copying a tensor's bytes out of a mapped model file on several threads.
//
// Weights stored inside the .onnx file (not as external data) sit wherever protobuf put them, so
// most float tensors start at an address torch may not accept and are copied once on load. For a
// model of a gigabyte that copy is a large part of conversion time, and most of it is the kernel
// servicing page faults: on the file map being read and on the fresh buffer being written, one
// page at a time. Faults on different pages proceed in parallel, so splitting a large copy over
// threads shortens it nearly in proportion (CLIP ViT-L/14's conversion time in docs/benchmarks.md
// includes this copy).
#pragma once

#include <cstddef>
#include <span>

namespace onnx2fx {

// Copies `source` into `destination` (same size, not overlapping), on up to `threads` threads
// for copies large enough to gain from it; one thread otherwise.
void parallel_copy(std::span<std::byte> destination, std::span<const std::byte> source, int threads);

}  // namespace onnx2fx
