"""Lane packing of stream words: lane k of a beat at bits [k·W + W − 1 : k·W], two's complement
(docs/interface.md).  Shared by every testbench and the host-side tools."""
from __future__ import annotations

__all__ = ["pack_lanes", "unpack_lanes"]


def pack_lanes(values, width: int) -> int:
    """One word from signed integers, lane k at bits [k·width + width − 1 : k·width]."""
    mask = (1 << width) - 1
    word = 0
    for k, value in enumerate(values):
        word |= (int(value) & mask) << (k * width)
    return word


def unpack_lanes(word: int, width: int, lanes: int) -> list[int]:
    """Inverse of :func:`pack_lanes`: the two's-complement lanes of one word."""
    mask, sign = (1 << width) - 1, 1 << (width - 1)
    out = []
    for k in range(lanes):
        lane = (int(word) >> (k * width)) & mask
        out.append(lane - (1 << width) if lane & sign else lane)
    return out
