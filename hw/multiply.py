"""Products built from DSP-sized partial products, one DSP block or one adder between registers.

Operands are split into unsigned low chunks and a signed top chunk (an unsigned operand is widened
by a zero bit first), so every partial product is an 18x18 signed multiplication at most (ECP5
MULT18X18D, Xilinx DSP48 and most FPGAs' multipliers).  The chunks are 15 bits wide (16x16 signed
partial products, one iCE40 SB_MAC16 each) unless 17-bit chunks need fewer of them::

    a, b --chunks--*--reg--> partial products --+--reg--> ... (one adder level per register) --> p

:func:`product_tree` adds these registers to the current module, under whatever ``m.If`` context
the caller has open (a stalling pipeline passes its enable that way).
"""
from amaranth import *

__all__ = ["DSP_CHUNK", "NARROW_CHUNK", "split_chunks", "product_latency", "product_tree"]

#: Widest unsigned chunk of the partial products: 17-bit unsigned chunks (signed top chunks) fit the
#: 18x18 signed multipliers of ECP5 (MULT18X18D) and most FPGAs.
DSP_CHUNK = 17

#: The chunk width used when it needs no more chunks than ``DSP_CHUNK``: 16x16 signed partial
#: products also fit the iCE40's SB_MAC16 (an 18x18 one takes four of those).
NARROW_CHUNK = 15


def _chunk_count(width: int, chunk: int) -> int:
    return max(1, -(-(width - 1) // chunk))


def split_chunks(width: int) -> list[tuple[int, int]]:
    """(low bit, width) of each chunk of a signed ``width``-bit operand; the last is the signed
    top chunk (at most one bit wider than the others)."""
    count = _chunk_count(width, DSP_CHUNK)
    chunk = NARROW_CHUNK if _chunk_count(width, NARROW_CHUNK) == count else DSP_CHUNK
    bounds = [(k * chunk, chunk) for k in range(count - 1)]
    return bounds + [((count - 1) * chunk, width - (count - 1) * chunk)]


def _signed_width(shape) -> int:
    shape = Shape.cast(shape)
    return shape.width if shape.signed else shape.width + 1


def product_latency(a_shape, b_shape, *, operand_registers: bool = False) -> int:
    """Cycles from the operands to the product of :func:`product_tree`: [the operands'
    register,] the partial products' register, then one register per adder level."""
    products = len(split_chunks(_signed_width(a_shape))) * len(split_chunks(_signed_width(b_shape)))
    return int(operand_registers) + 1 + (products - 1).bit_length()


def product_tree(m: Module, a, b, *, name: str, operand_registers: bool = False):
    """The exact product ``a*b`` of two values (signed or unsigned), ``product_latency`` cycles
    after them; returns the (signed) product value.  Its registers have no reset (data only: a
    reset would put logic in front of every one, and block registers take none).  With ``operand_registers`` the operands are
    registered first, where the placer can put them next to the multipliers (the DSP blocks'
    own input registers, which the open ECP5 flow does not use)."""
    a, b = Value.cast(a), Value.cast(b)
    a_width, b_width = _signed_width(a.shape()), _signed_width(b.shape())
    a = a.as_signed() if a.shape().signed else Cat(a, C(0, 1)).as_signed()
    b = b.as_signed() if b.shape().signed else Cat(b, C(0, 1)).as_signed()
    width = a_width + b_width
    if operand_registers:
        a_reg = Signal.like(a, name=f"{name}_a", reset_less=True)
        b_reg = Signal.like(b, name=f"{name}_b", reset_less=True)
        m.d.sync += [a_reg.eq(a), b_reg.eq(b)]
        a, b = a_reg, b_reg

    def chunks(value, bits):
        split = split_chunks(bits)
        parts = [value[low:low + size] for low, size in split[:-1]]
        low, size = split[-1]
        return [(p, low) for p, (low, _) in zip(parts + [value[low:low + size].as_signed()], split)]

    terms = []
    for ca, sa in chunks(a, a_width):
        for cb, sb in chunks(b, b_width):
            product = Signal(signed(len(ca) + len(cb) + 1), name=f"{name}_pp_{sa}_{sb}", reset_less=True)
            m.d.sync += product.eq(ca * cb)
            terms.append((product, sa + sb))
    level = 0
    while len(terms) > 1:
        summed = []
        for (x, sx), (y, sy) in zip(terms[0::2], terms[1::2]):
            low = min(sx, sy)
            total = Signal(signed(width - low + 1), name=f"{name}_sum{level}_{low}", reset_less=True)
            m.d.sync += total.eq((x << (sx - low)) + (y << (sy - low)))
            summed.append((total, low))
        for x, sx in terms[len(terms) & ~1:]:       # an odd term waits a cycle with the others
            delayed = Signal.like(x, name=f"{name}_sum{level}_{sx}", reset_less=True)
            m.d.sync += delayed.eq(x)
            summed.append((delayed, sx))
        terms = summed
        level += 1
    (total, shift), = terms
    return (total << shift)[:width].as_signed()
