// The wire reader on hand-made byte buffers.
#include <initializer_list>
#include <string>
#include <vector>

#include "onnx/errors.h"
#include "onnx/wire.h"
#include "tests/check.h"

namespace {

using onnx2fx::ParseError;
using namespace onnx2fx::wire;

constexpr FieldName kRootFields[] = {{1, "count"}, {2, "name"}, {3, "child"}, {4, "values"}, {5, "weights"}};
constexpr MessageSchema kRoot{"Root", kRootFields};
constexpr FieldName kChildFields[] = {{1, "label"}};
constexpr MessageSchema kChild{"Child", kChildFields};

std::vector<std::byte> bytes(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int value : values) out.push_back(static_cast<std::byte>(value));
  return out;
}

// Reads every field of a Root message the way a schema-aware reader would.
struct Root {
  std::uint64_t count = 0;
  std::string name;
  std::vector<std::string> labels;
  std::vector<std::int64_t> values;
  std::vector<float> weights;
};

Root read_root(const std::vector<std::byte>& data) {
  Root root;
  Reader reader(data, data.data(), kRoot);
  while (reader.next()) switch (reader.tag()) {
      case 1: root.count = reader.get_varint(); break;
      case 2: root.name = reader.get_string(); break;
      case 3: {
        Reader child = reader.get_message(kChild, root.labels.size());
        while (child.next()) switch (child.tag()) {
            case 1: root.labels.push_back(child.get_string()); break;
            default: child.skip();
          }
        break;
      }
      case 4:
        CHECK(reader.wire_type() == WireType::Varint || reader.wire_type() == WireType::LengthDelimited);
        reader.get_repeated_varints(root.values);
        break;
      case 5: reader.get_repeated_fixed(root.weights); break;
      default: reader.skip();
    }
  return root;
}

void reads_fields() {
  const auto data = bytes({0x08, 0x96, 0x01,                    // count = 150
                           0x12, 0x02, 'h', 'i',                // name = "hi"
                           0x1a, 0x03, 0x0a, 0x01, 'a',         // child { label: "a" }
                           0x22, 0x03, 0x01, 0xac, 0x02,        // values packed [1, 300]
                           0x20, 0x7f,                          // values unpacked 127
                           0x2d, 0x00, 0x00, 0x80, 0x3f,        // weights unpacked 1.0f
                           0x2a, 0x04, 0x00, 0x00, 0x00, 0x40,  // weights packed [2.0f]
                           0x30, 0x05,                          // unknown varint field 6
                           0x39, 1, 2, 3, 4, 5, 6, 7, 8,        // unknown fixed64 field 7
                           0x43, 0x08, 0x01, 0x44});            // unknown group 8 { 1: 1 }
  const Root root = read_root(data);
  CHECK(root.count == 150);
  CHECK(root.name == "hi");
  CHECK((root.labels == std::vector<std::string>{"a"}));
  CHECK((root.values == std::vector<std::int64_t>{1, 300, 127}));
  CHECK((root.weights == std::vector<float>{1.0f, 2.0f}));
}

void reads_max_varint() {
  const auto data = bytes({0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01});
  CHECK(read_root(data).count == ~std::uint64_t{0});
}

void rejects_truncated_varint() {
  CHECK_THROWS(ParseError, read_root(bytes({0x08, 0x96})),
               "truncated field Root.count at byte 0: varint runs past the end");
  CHECK_THROWS(ParseError, read_root(bytes({0x08, 0x01, 0x80})), "truncated field Root at byte 2");
}

void rejects_length_past_end() {
  CHECK_THROWS(ParseError, read_root(bytes({0x08, 0x01, 0x12, 0x32, 'a', 'b'})),
               "truncated field Root.name at byte 2: length 50 exceeds remaining 2 bytes");
  CHECK_THROWS(ParseError, read_root(bytes({0x1a, 0x04, 0x0a, 0x05, 'a', 'b'})),
               "truncated field Root.child[0].label at byte 2: length 5 exceeds remaining 2 bytes");
  CHECK_THROWS(ParseError, read_root(bytes({0x2d, 0x00, 0x00})), "4-byte value exceeds remaining 2 bytes");
}

void rejects_overlong_varint() {
  CHECK_THROWS(ParseError, read_root(bytes({0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00})),
               "varint longer than 10 bytes");
  CHECK_THROWS(ParseError, read_root(bytes({0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02})),
               "varint overflows 64 bits");
}

void rejects_bad_tags_and_wire_types() {
  CHECK_THROWS(ParseError, read_root(bytes({0x12, 0x01})), "length 1 exceeds remaining 0 bytes");
  CHECK_THROWS(ParseError, read_root(bytes({0x10, 0x01})), "wire type varint, expected length-delimited");
  CHECK_THROWS(ParseError, read_root(bytes({0x0a, 0x00})), "wire type length-delimited, expected varint");
  CHECK_THROWS(ParseError, read_root(bytes({0x0f})), "unknown wire type 7");
  CHECK_THROWS(ParseError, read_root(bytes({0x00})), "field number 0");
  CHECK_THROWS(ParseError, read_root(bytes({0x0c})), "end-group without a start-group");
  CHECK_THROWS(ParseError, read_root(bytes({0x43, 0x08, 0x01})), "group runs past the end");
  CHECK_THROWS(ParseError, read_root(bytes({0x2a, 0x03, 0, 0, 0})), "packed length 3 is not a multiple of 4");
}

void validates_utf8() {
  CHECK(read_root(bytes({0x12, 0x02, 0xc3, 0xa9})).name == "\xc3\xa9");                  // é
  CHECK(read_root(bytes({0x12, 0x04, 0xf0, 0x9f, 0x98, 0x80})).name.size() == 4);        // U+1F600
  CHECK_THROWS(ParseError, read_root(bytes({0x12, 0x02, 0xc3, 0x28})), "Root.name at byte 0: string is not valid UTF-8");
  CHECK_THROWS(ParseError, read_root(bytes({0x12, 0x02, 0xc0, 0xaf})), "not valid UTF-8");        // overlong
  CHECK_THROWS(ParseError, read_root(bytes({0x12, 0x03, 0xed, 0xa0, 0x80})), "not valid UTF-8");  // surrogate
  CHECK_THROWS(ParseError, read_root(bytes({0x12, 0x02, 0xe2, 0x82})), "not valid UTF-8");        // cut short
}

void reads_empty_message() {
  const std::vector<std::byte> empty;
  Reader reader(empty, empty.data(), kRoot);
  CHECK(!reader.next());
}

}  // namespace

int main() {
  reads_fields();
  reads_max_varint();
  rejects_truncated_varint();
  rejects_length_past_end();
  rejects_overlong_varint();
  rejects_bad_tags_and_wire_types();
  validates_utf8();
  reads_empty_message();
  return onnx2fx::testing::report();
}
