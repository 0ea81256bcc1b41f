"""Protobuf wire encoding for tests that write bytes onnx.save never would (truncations, varint
overflow, conflicting fields): one encoder shared by the reader tests and the hostile corpus."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """Base-128 varint of ``value`` as a 64-bit two's-complement number (negatives take 10 bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def field_varint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload
