// A zero-copy, bounds-checked protobuf wire-format reader in the style of protozero:
//
//   while (reader.next()) switch (reader.tag()) {
//     case 1: name = reader.get_string(); break;
//     default: reader.skip();
//   }
//
// Every read checks bounds and throws ParseError naming the field path (from the schemas given by
// the caller) and the absolute byte offset in the file.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "onnx/errors.h"

namespace onnx2fx::wire {

static_assert(std::endian::native == std::endian::little, "fixed-width fields are read by memcpy");

enum class WireType : std::uint8_t {
  Varint = 0,
  Fixed64 = 1,
  LengthDelimited = 2,
  StartGroup = 3,
  EndGroup = 4,
  Fixed32 = 5,
};

inline std::string_view wire_type_name(WireType type) {
  constexpr std::string_view names[] = {"varint", "64-bit", "length-delimited", "start-group", "end-group", "32-bit"};
  return names[static_cast<int>(type)];
}

// Strict UTF-8 as Python decodes it: no overlong forms, surrogates, or code points past U+10FFFF.
inline bool is_valid_utf8(std::string_view text) {
  const auto* byte = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = byte + text.size();
  while (byte != end) {
    const unsigned char lead = *byte++;
    if (lead < 0x80) continue;
    int continuation;
    unsigned char low = 0x80, high = 0xbf;  // allowed range of the first continuation byte
    if (lead >= 0xc2 && lead <= 0xdf) {
      continuation = 1;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      continuation = 2;
      if (lead == 0xe0) low = 0xa0;
      if (lead == 0xed) high = 0x9f;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      continuation = 3;
      if (lead == 0xf0) low = 0x90;
      if (lead == 0xf4) high = 0x8f;
    } else {
      return false;
    }
    if (end - byte < continuation || *byte < low || *byte > high) return false;
    for (int i = 1; i < continuation; ++i)
      if ((byte[i] & 0xc0) != 0x80) return false;
    byte += continuation;
  }
  return true;
}

struct FieldName {
  std::uint32_t number;
  std::string_view name;
};

// A message type as far as error messages need it: its name and the names of its fields.
struct MessageSchema {
  std::string_view type_name;
  std::span<const FieldName> fields;

  std::string field_name(std::uint32_t number) const {
    const auto found = std::ranges::find(fields, number, &FieldName::number);
    return found != fields.end() ? std::string(found->name) : "#" + std::to_string(number);
  }
};

// Where a message lies: a chain of fields from the root message, e.g. ModelProto.graph.node[2].
struct MessagePath {
  const MessagePath* parent = nullptr;  // null for the root message
  const MessageSchema* schema = nullptr;
  std::uint32_t field = 0;              // field number within the parent
  std::optional<std::size_t> index = {};  // element index when that field is repeated

  std::string to_string() const {
    if (!parent) return std::string(schema->type_name);
    std::string text = parent->to_string() + "." + parent->schema->field_name(field);
    if (index) text += "[" + std::to_string(*index) + "]";
    return text;
  }
};

class Reader {
 public:
  // Reads the root message `data`; `file_start` is the first byte of its file, for offsets.
  Reader(std::span<const std::byte> data, const std::byte* file_start, const MessageSchema& schema)
      : Reader(data, file_start, MessagePath{.schema = &schema}) {}

  // A reader holds the path its sub-readers point to, so it stays where it was made.
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Advances to the next field; false at the end of the message.
  bool next() {
    if (pos_ == end_) return false;
    field_start_ = pos_;
    field_ = 0;
    const std::uint64_t key = read_varint();
    if (key >> 32) fail("invalid", "tag " + std::to_string(key) + " overflows 32 bits");
    field_ = static_cast<std::uint32_t>(key >> 3);
    const auto type = static_cast<std::uint8_t>(key & 7);
    if (field_ == 0) fail("invalid", "field number 0");
    if (type > 5) fail("invalid", "unknown wire type " + std::to_string(type));
    wire_type_ = static_cast<WireType>(type);
    if (wire_type_ == WireType::EndGroup) fail("invalid", "end-group without a start-group");
    return true;
  }

  std::uint32_t tag() const { return field_; }
  WireType wire_type() const { return wire_type_; }

  // The bytes of the field last read or skipped, from its tag to the end of its value, so that a
  // writer can copy an unchanged field verbatim. Call it after reading or skipping the value.
  std::span<const std::byte> field_bytes() const { return {field_start_, pos_}; }

  // The bytes of this whole message (the payload of the field that holds it).
  std::span<const std::byte> message_bytes() const { return {begin_, end_}; }

  std::uint64_t get_varint() {
    expect(WireType::Varint);
    return read_varint();
  }
  std::int64_t get_int64() { return static_cast<std::int64_t>(get_varint()); }
  std::int32_t get_int32() { return static_cast<std::int32_t>(get_varint()); }  // protobuf truncates
  float get_float() { return read_fixed<float>(WireType::Fixed32); }

  // The payload of a length-delimited field, viewing the underlying buffer.
  std::span<const std::byte> get_bytes() {
    expect(WireType::LengthDelimited);
    return read_length_delimited();
  }
  std::string_view get_view() {
    const auto bytes = get_bytes();
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  // A protobuf `string`: must be valid UTF-8.
  std::string get_string() {
    const std::string_view text = get_view();
    if (!is_valid_utf8(text)) fail("invalid", "string is not valid UTF-8");
    return std::string(text);
  }
  // A protobuf `bytes` field, copied.
  std::string get_byte_string() { return std::string(get_view()); }

  // A reader for the embedded message in the current field, of type `schema`; `index` is its
  // position when the field is repeated. It must not outlive this reader.
  Reader get_message(const MessageSchema& schema, std::optional<std::size_t> index = {}) {
    const auto payload = get_bytes();
    return Reader(payload, file_start_, MessagePath{&path_, &schema, field_, index});
  }

  // Appends a repeated varint field (int32/int64/uint64) given packed or one value at a time.
  template <class T>
  void get_repeated_varints(std::vector<T>& out) {
    if (wire_type_ != WireType::LengthDelimited) {
      out.push_back(static_cast<T>(get_varint()));
      return;
    }
    const auto payload = read_length_delimited();
    const auto count = std::ranges::count_if(payload, [](std::byte b) { return (b & std::byte{0x80}) == std::byte{}; });
    out.reserve(out.size() + static_cast<std::size_t>(count));
    const auto* saved_end = end_;
    pos_ = payload.data();
    end_ = payload.data() + payload.size();
    while (pos_ != end_) out.push_back(static_cast<T>(read_varint()));
    end_ = saved_end;
  }

  // Appends a repeated float or double field given packed or one value at a time.
  template <class T>
  void get_repeated_fixed(std::vector<T>& out) {
    constexpr auto type = sizeof(T) == 4 ? WireType::Fixed32 : WireType::Fixed64;
    if (wire_type_ != WireType::LengthDelimited) {
      out.push_back(read_fixed<T>(type));
      return;
    }
    const auto payload = read_length_delimited();
    if (payload.size() % sizeof(T) != 0)
      fail("invalid", "packed length " + std::to_string(payload.size()) + " is not a multiple of " +
                          std::to_string(sizeof(T)));
    if (payload.empty()) return;  // memcpy from an empty span's null pointer is undefined
    const std::size_t old_size = out.size();
    out.resize(old_size + payload.size() / sizeof(T));
    std::memcpy(out.data() + old_size, payload.data(), payload.size());
  }

  // Skips the current field according to its wire type (groups included).
  void skip() {
    if (wire_type_ != WireType::StartGroup) return skip_value(wire_type_);
    for (int open_groups = 1; open_groups > 0;) {
      if (pos_ == end_) fail("truncated", "group runs past the end of the message");
      const std::uint64_t key = read_varint();
      const auto type = static_cast<std::uint8_t>(key & 7);
      if (type > 5) fail("invalid", "unknown wire type " + std::to_string(type) + " inside a group");
      if (type == static_cast<std::uint8_t>(WireType::StartGroup))
        ++open_groups;
      else if (type == static_cast<std::uint8_t>(WireType::EndGroup))
        --open_groups;
      else
        skip_value(static_cast<WireType>(type));
    }
  }

  // Throws ParseError "<problem> field <path> at byte <offset of the field>: <detail>".
  [[noreturn]] void fail(std::string_view problem, const std::string& detail) const {
    std::string field = path_.to_string();
    if (field_ != 0) field += "." + path_.schema->field_name(field_);
    throw ParseError(std::string(problem) + " field " + field + " at byte " + std::to_string(offset_of(field_start_)) +
                     ": " + detail);
  }

  // "<path> at byte <offset of the message>", for errors about the message as a whole.
  std::string where() const { return path_.to_string() + " at byte " + std::to_string(offset_of(begin_)); }

  // The absolute offset in the file of a byte this reader views.
  std::size_t offset_of(const std::byte* byte) const { return static_cast<std::size_t>(byte - file_start_); }

 private:
  Reader(std::span<const std::byte> data, const std::byte* file_start, MessagePath path)
      : begin_(data.data()),
        pos_(data.data()),
        end_(data.data() + data.size()),
        field_start_(data.data()),
        file_start_(file_start),
        path_(path) {}

  void expect(WireType type) const {
    if (wire_type_ != type)
      fail("invalid", "wire type " + std::string(wire_type_name(wire_type_)) + ", expected " +
                          std::string(wire_type_name(type)));
  }

  std::size_t remaining() const { return static_cast<std::size_t>(end_ - pos_); }

  std::uint64_t read_varint() {
    std::uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
      if (pos_ == end_) fail("truncated", "varint runs past the end of the message");
      const auto byte = static_cast<std::uint8_t>(*pos_++);
      if (shift == 63 && byte > 1)
        fail("invalid", (byte & 0x80) ? "varint longer than 10 bytes" : "varint overflows 64 bits");
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
  }

  std::span<const std::byte> read_length_delimited() {
    const std::uint64_t length = read_varint();
    if (length > remaining())
      fail("truncated", "length " + std::to_string(length) + " exceeds remaining " + std::to_string(remaining()) +
                            " bytes");
    const std::span<const std::byte> payload(pos_, static_cast<std::size_t>(length));
    pos_ += length;
    return payload;
  }

  template <class T>
  T read_fixed(WireType type) {
    expect(type);
    return read_raw_fixed<T>();
  }

  template <class T>
  T read_raw_fixed() {
    if (remaining() < sizeof(T))
      fail("truncated", std::to_string(sizeof(T)) + "-byte value exceeds remaining " + std::to_string(remaining()) +
                            " bytes");
    T value;
    std::memcpy(&value, pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  void skip_value(WireType type) {
    switch (type) {
      case WireType::Varint: read_varint(); break;
      case WireType::Fixed64: read_raw_fixed<std::uint64_t>(); break;
      case WireType::LengthDelimited: read_length_delimited(); break;
      case WireType::Fixed32: read_raw_fixed<std::uint32_t>(); break;
      case WireType::StartGroup:
      case WireType::EndGroup: break;
    }
  }

  const std::byte* begin_;
  const std::byte* pos_;
  const std::byte* end_;
  const std::byte* field_start_;
  const std::byte* file_start_;
  MessagePath path_;
  std::uint32_t field_ = 0;
  WireType wire_type_ = WireType::Varint;
};

}  // namespace onnx2fx::wire
