// The wire encoder, read back with the wire reader.
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "onnx/wire.h"
#include "tests/check.h"
#include "writer/wire_writer.h"

namespace {

using namespace onnx2fx::wire;

constexpr FieldName kFields[] = {{1, "a"}, {2, "b"}, {3, "c"}, {4, "d"}, {5, "e"}};
constexpr MessageSchema kSchema{"Test", kFields};

std::vector<std::byte> bytes(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int value : values) out.push_back(static_cast<std::byte>(value));
  return out;
}

void varints_round_trip() {
  const std::uint64_t values[] = {0,          1,          127,        128,        300,        16383,
                                  16384,      (1u << 21) - 1,         1u << 21,   0xffffffffu,
                                  1ull << 32, 1ull << 56, 1ull << 63, std::numeric_limits<std::uint64_t>::max()};
  for (std::uint64_t value : values) {
    Writer writer;
    writer.varint(1, value);
    const auto data = writer.to_bytes();
    CHECK(data.size() == 1 + varint_size(value));
    CHECK(writer.size() == data.size());
    Reader reader(data, data.data(), kSchema);
    CHECK(reader.next());
    CHECK(reader.tag() == 1);
    CHECK(reader.wire_type() == WireType::Varint);
    CHECK(reader.get_varint() == value);
    CHECK(!reader.next());
  }
  for (std::int64_t value : {std::int64_t{0}, std::int64_t{-1}, std::int64_t{-300},
                             std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()}) {
    Writer writer;
    writer.int64(5, value);
    const auto data = writer.to_bytes();
    if (value < 0) CHECK(data.size() == 11);  // negative values take 10 bytes, as protobuf writes them
    Reader reader(data, data.data(), kSchema);
    CHECK(reader.next() && reader.tag() == 5);
    CHECK(reader.get_int64() == value);
  }
}

void encodes_like_protobuf() {
  Writer writer;
  writer.varint(1, 150);
  writer.string(2, "hi");
  writer.float32(3, 1.0f);
  CHECK((writer.to_bytes() == bytes({0x08, 0x96, 0x01, 0x12, 0x02, 'h', 'i', 0x1d, 0x00, 0x00, 0x80, 0x3f})));

  Writer large_field;  // field numbers past 15 take two bytes of key
  large_field.varint(20, 2);
  CHECK((large_field.to_bytes() == bytes({0xa0, 0x01, 0x02})));
}

void nests_and_packs() {
  Writer child;
  child.string(1, "label");
  Writer root;
  root.varint(1, 7);
  root.message(2, std::move(child));
  CHECK(child.size() == 0);
  const std::int64_t ints[] = {1, 300, -2};
  root.packed_varints(3, std::span<const std::int64_t>(ints));
  const float floats[] = {1.5f, -2.0f};
  root.packed_fixed(4, std::span<const float>(floats));
  root.float64(5, 0.25);
  const auto data = root.to_bytes();
  CHECK(root.size() == data.size());

  Reader reader(data, data.data(), kSchema);
  std::uint64_t a = 0;
  std::string label;
  std::vector<std::int64_t> c;
  std::vector<float> d;
  std::vector<double> e;
  while (reader.next()) switch (reader.tag()) {
      case 1: a = reader.get_varint(); break;
      case 2: {
        Reader nested = reader.get_message(kSchema);
        while (nested.next()) {
          if (nested.tag() == 1)
            label = nested.get_string();
          else
            nested.skip();
        }
        break;
      }
      case 3: reader.get_repeated_varints(c); break;
      case 4: reader.get_repeated_fixed(d); break;
      case 5: reader.get_repeated_fixed(e); break;
      default: reader.skip();
    }
  CHECK(a == 7);
  CHECK(label == "label");
  CHECK((c == std::vector<std::int64_t>{1, 300, -2}));
  CHECK((d == std::vector<float>{1.5f, -2.0f}));
  CHECK((e == std::vector<double>{0.25}));
}

// Unchanged fields copied with field_bytes() rebuild the message byte for byte, and views of
// adjacent bytes merge into one chunk that points into the source.
void copies_fields_verbatim() {
  const auto source = bytes({0x08, 0x96, 0x01, 0x12, 0x02, 'h', 'i', 0x1a, 0x02, 0x08, 0x01, 0x20, 0x7f});
  Reader reader(source, source.data(), kSchema);
  Writer copy;
  while (reader.next()) {
    reader.skip();
    copy.view(reader.field_bytes());
  }
  CHECK(copy.to_bytes() == source);
  int chunks = 0;
  copy.for_each_chunk([&](std::span<const std::byte> chunk) {
    ++chunks;
    CHECK(chunk.data() == source.data());
    CHECK(chunk.size() == source.size());
  });
  CHECK(chunks == 1);
}

void views_and_adopted_buffers_are_not_copied() {
  const std::vector<std::byte> payload(1000, std::byte{7});
  std::vector<std::byte> buffer(500, std::byte{9});
  const std::byte* buffer_data = buffer.data();
  Writer tensor;
  tensor.string(8, "w");
  tensor.bytes_view(9, payload);
  tensor.bytes(10, std::move(buffer));
  tensor.varint(2, 1);
  Writer model;
  model.message(5, std::move(tensor));
  bool saw_payload = false, saw_buffer = false;
  model.for_each_chunk([&](std::span<const std::byte> chunk) {
    saw_payload |= chunk.data() == payload.data() && chunk.size() == payload.size();
    saw_buffer |= chunk.data() == buffer_data && chunk.size() == 500;
  });
  CHECK(saw_payload);
  CHECK(saw_buffer);

  const auto data = model.to_bytes();
  CHECK(data.size() == model.size());
  Reader reader(data, data.data(), kSchema);
  CHECK(reader.next() && reader.tag() == 5);
  Reader inner = reader.get_message(kSchema);
  std::vector<std::size_t> sizes;
  std::uint64_t type = 0;
  while (inner.next()) {
    if (inner.tag() == 2)
      type = inner.get_varint();
    else
      sizes.push_back(inner.get_bytes().size());
  }
  CHECK((sizes == std::vector<std::size_t>{1, 1000, 500}));
  CHECK(type == 1);
}

void empty_fields() {
  Writer writer;
  writer.string(1, "");
  writer.bytes(2, {});
  writer.message(3, Writer());
  CHECK((writer.to_bytes() == bytes({0x0a, 0x00, 0x12, 0x00, 0x1a, 0x00})));
}

}  // namespace

int main() {
  varints_round_trip();
  encodes_like_protobuf();
  nests_and_packs();
  copies_fields_verbatim();
  views_and_adopted_buffers_are_not_copied();
  empty_fields();
  return onnx2fx::testing::report();
}
