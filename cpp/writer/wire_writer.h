// A protobuf wire-format encoder, the counterpart of wire::Reader:
//
//   wire::Writer node;
//   node.string(1, "x");                       // input
//   node.string(4, "Relu");                    // op_type
//   graph.message(1, std::move(node));         // length-delimited, header written by the parent
//   graph.view(reader.field_bytes());          // an unchanged field of the source, not copied
//
// A Writer is a list of chunks: bytes it encoded itself, buffers it took over, and views of bytes
// that live elsewhere (a memory-mapped model). Nesting a message splices its chunks into the
// parent, so nothing is copied until the whole message is written out chunk by chunk. Views must
// stay valid until then.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "onnx/wire.h"

namespace onnx2fx::wire {

static_assert(std::endian::native == std::endian::little, "fixed-width fields are written by memcpy");

// Bytes of the varint encoding of `value` (1 to 10).
constexpr std::size_t varint_size(std::uint64_t value) {
  std::size_t size = 1;
  for (; value >= 0x80; value >>= 7) ++size;
  return size;
}

// The key of a field: its number and wire type.
constexpr std::uint64_t field_key(std::uint32_t field, WireType type) {
  return (std::uint64_t{field} << 3) | static_cast<std::uint64_t>(type);
}

class Writer {
 public:
  Writer() = default;
  Writer(Writer&&) = default;
  Writer& operator=(Writer&&) = default;
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // --- fields -------------------------------------------------------------------------------------

  // A varint field: uint64, uint32, bool, enum, and int32/int64 through int64() below.
  void varint(std::uint32_t field, std::uint64_t value) {
    raw_varint(field_key(field, WireType::Varint));
    raw_varint(value);
  }
  // int32 and int64 as protobuf encodes them: negative values take 10 bytes (two's complement).
  void int64(std::uint32_t field, std::int64_t value) { varint(field, static_cast<std::uint64_t>(value)); }

  void fixed32(std::uint32_t field, std::uint32_t value) {
    raw_varint(field_key(field, WireType::Fixed32));
    raw_fixed(value);
  }
  void fixed64(std::uint32_t field, std::uint64_t value) {
    raw_varint(field_key(field, WireType::Fixed64));
    raw_fixed(value);
  }
  void float32(std::uint32_t field, float value) { fixed32(field, std::bit_cast<std::uint32_t>(value)); }
  void float64(std::uint32_t field, double value) { fixed64(field, std::bit_cast<std::uint64_t>(value)); }

  // A string or bytes field, copied.
  void string(std::uint32_t field, std::string_view text) {
    length_header(field, text.size());
    raw(std::as_bytes(std::span(text)));
  }
  // A bytes field whose payload is viewed, not copied: it must outlive the writer's output.
  void bytes_view(std::uint32_t field, std::span<const std::byte> payload) {
    length_header(field, payload.size());
    view(payload);
  }
  // A bytes field whose payload buffer the writer takes over (no copy).
  void bytes(std::uint32_t field, std::vector<std::byte>&& payload) {
    length_header(field, payload.size());
    adopt(std::move(payload));
  }

  // An embedded message; its chunks move into this writer.
  void message(std::uint32_t field, Writer&& body) {
    length_header(field, body.size());
    append(std::move(body));
  }

  // A packed repeated varint field (int32, int64, uint64, bool, enum).
  template <class T>
  void packed_varints(std::uint32_t field, std::span<const T> values) {
    std::size_t length = 0;
    for (T value : values) length += varint_size(static_cast<std::uint64_t>(static_cast<std::int64_t>(value)));
    length_header(field, length);
    for (T value : values) raw_varint(static_cast<std::uint64_t>(static_cast<std::int64_t>(value)));
  }
  // A packed repeated fixed-width field (float, double, fixed32, fixed64).
  template <class T>
  void packed_fixed(std::uint32_t field, std::span<const T> values) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8);
    length_header(field, values.size_bytes());
    raw(std::as_bytes(values));
  }

  // The key and length of a length-delimited field whose `length` payload bytes follow.
  void length_header(std::uint32_t field, std::uint64_t length) {
    raw_varint(field_key(field, WireType::LengthDelimited));
    raw_varint(length);
  }

  // --- raw bytes ----------------------------------------------------------------------------------

  void raw_varint(std::uint64_t value) {
    std::byte buffer[10];
    std::size_t size = 0;
    for (; value >= 0x80; value >>= 7) buffer[size++] = static_cast<std::byte>((value & 0x7f) | 0x80);
    buffer[size++] = static_cast<std::byte>(value);
    raw({buffer, size});
  }

  template <class T>
  void raw_fixed(T value) {
    std::byte buffer[sizeof(T)];
    std::memcpy(buffer, &value, sizeof(T));
    raw(buffer);
  }

  // Copies `bytes`.
  void raw(std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    if (chunks_.empty() || !chunks_.back().open) chunks_.emplace_back().open = true;
    auto& owned = chunks_.back().owned;
    owned.insert(owned.end(), bytes.begin(), bytes.end());
    size_ += bytes.size();
  }

  // Refers to `bytes` without copying them; views of adjacent bytes merge into one chunk.
  void view(std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    if (!chunks_.empty() && chunks_.back().is_view() &&
        chunks_.back().viewed.data() + chunks_.back().viewed.size() == bytes.data()) {
      auto& last = chunks_.back().viewed;
      last = {last.data(), last.size() + bytes.size()};
    } else {
      chunks_.emplace_back().viewed = bytes;
    }
    size_ += bytes.size();
  }

  // Takes over `buffer`; later writes do not grow it.
  void adopt(std::vector<std::byte>&& buffer) {
    if (buffer.empty()) return;
    size_ += buffer.size();
    chunks_.emplace_back().owned = std::move(buffer);
  }

  // Moves the chunks of `other` to the end of this writer.
  void append(Writer&& other) {
    for (Chunk& chunk : other.chunks_) {
      if (chunk.is_view()) {
        view(chunk.viewed);  // may merge with the last view
      } else {
        size_ += chunk.owned.size();
        chunks_.push_back(std::move(chunk));
      }
    }
    other.chunks_.clear();
    other.size_ = 0;
  }

  // --- output -------------------------------------------------------------------------------------

  // Bytes written so far.
  std::uint64_t size() const { return size_; }

  // Calls `sink(std::span<const std::byte>)` for each chunk, in order.
  template <class Sink>
  void for_each_chunk(Sink&& sink) const {
    for (const Chunk& chunk : chunks_) sink(chunk.bytes());
  }

  // All bytes joined (for tests and small messages).
  std::vector<std::byte> to_bytes() const {
    std::vector<std::byte> out;
    out.reserve(size_);
    for_each_chunk([&](std::span<const std::byte> bytes) { out.insert(out.end(), bytes.begin(), bytes.end()); });
    return out;
  }

 private:
  struct Chunk {
    std::vector<std::byte> owned;
    std::span<const std::byte> viewed;  // non-empty for a view
    bool open = false;                  // small writes may be appended to `owned`

    bool is_view() const { return !viewed.empty(); }
    std::span<const std::byte> bytes() const { return is_view() ? viewed : std::span<const std::byte>(owned); }
  };

  std::vector<Chunk> chunks_;
  std::uint64_t size_ = 0;
};

}  // namespace onnx2fx::wire
