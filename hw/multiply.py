"""Products built from DSP-sized partial products, one DSP block or one adder between registers.

Operands are split into unsigned low chunks and a signed top chunk (an unsigned operand is widened
by a zero bit first), so every partial product is an 18x18 signed multiplication at most (ECP5
MULT18X18D, Xilinx DSP48 and most FPGAs' multipliers).  The chunks are 15 bits wide (16x16 signed
partial products, one iCE40 SB_MAC16 each) unless 17-bit chunks need fewer of them::

    a, b --chunks--*--reg--> partial products --+--reg--> ... (one adder level per register) --> p

With ``fabric_bits = f`` the low ``f`` bits of ``b`` take no multiplier block: each pair of them
is a row in logic, ``a * b[2i:2i+2]`` (0, a, 2a or 3a, the multiple ``3a`` registered beside the
operands), summed in the same registered tree as the blocks' partial products, so ``a*b`` needs
the blocks of ``a * b[f:]`` only (:func:`product_blocks`) and ``ceil(log2(blocks + ceil(f/2)))``
adder levels.

With ``product_registers = 2`` every partial product (and row) is registered twice: the first
register goes into the multiplier block (its output register), the second stays in the fabric,
where the placer can put it midway between a block and an adder that sums blocks from across the
die.

:func:`product_tree` adds these registers to the current module, under whatever ``m.If`` context
the caller has open (a stalling pipeline passes its enable that way).
"""
from amaranth import *

__all__ = ["saturate", "constant_product", "DSP_CHUNK", "NARROW_CHUNK", "split_chunks", "product_blocks", "least_blocks",
           "fabric_bits_for", "product_latency", "product_tree"]

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


def least_blocks(a_shape) -> int:
    """Multiplier blocks of ``a*b`` with all but the top chunk of ``b`` in logic: the chunks of ``a``."""
    return len(split_chunks(_signed_width(a_shape)))


def product_blocks(a_shape, b_shape, fabric_bits: int = 0) -> int:
    """Multiplier blocks (DSP-sized partial products) of :func:`product_tree`."""
    b_width = _signed_width(b_shape)
    assert 0 <= fabric_bits < b_width, (fabric_bits, b_width)
    return least_blocks(a_shape) * len(split_chunks(b_width - fabric_bits))


def fabric_bits_for(a_shape, b_shape, blocks: int) -> int:
    """The fewest low bits of ``b`` to multiply in logic so that ``a*b`` takes at most ``blocks``
    multiplier blocks (at least the chunks of ``a``: ``b`` keeps one chunk)."""
    b_width = _signed_width(b_shape)
    for fabric_bits in range(b_width):
        if product_blocks(a_shape, b_shape, fabric_bits) <= blocks:
            return fabric_bits
    raise ValueError(f"a*b takes at least {product_blocks(a_shape, b_shape, b_width - 1)} blocks")


def _rows(fabric_bits: int) -> int:
    return -(-fabric_bits // 2)


def product_latency(a_shape, b_shape, *, operand_registers: bool = False, fabric_bits: int = 0,
                    product_registers: int = 1, addend: bool = False, arity: int = 2, also=None,
                    extra_terms: int = 0) -> int:
    """Cycles from the operands to the product of :func:`product_tree`: [the operands'
    register,] the partial products' register(s), then one register per adder level (``arity``
    values each; with an ``addend``, at least one: the addend joins the last level) [``also``:
    the shapes of a second product whose partial products join the same tree; ``extra_terms``:
    how many values join them]."""
    terms = extra_terms + product_blocks(a_shape, b_shape, fabric_bits) + _rows(fabric_bits)
    if also is not None:
        terms += product_blocks(*also)
    levels = 0
    while terms > (2 if addend else 1):
        terms, levels = -(-terms // arity), levels + 1
    return int(operand_registers) + product_registers + levels + int(addend)


def product_tree(m: Module, a, b, *, name: str, operand_registers: bool = False, fabric_bits: int = 0,
                 product_registers: int = 1, addend=None, carry_in=None, arity: int = 2,
                 result_bits: int | None = None, also=None, extra_terms=()):
    """The exact product ``a*b`` of two values (signed or unsigned), ``product_latency`` cycles
    after them; returns the (signed) product value.  With ``addend`` (a value the caller sets in
    the cycle before the product's, i.e. ``product_latency - 1`` cycles after the operands) it
    returns ``a*b + addend``: the last adder level takes three values, reduced to two by a
    carry-save layer (one LUT per bit) in front of its one carry chain; ``carry_in`` (1 bit,
    with ``addend``) is added too (``addend = ~v`` and ``carry_in = 1`` subtract ``v``).  With
    ``arity = 3`` every adder level sums three values that way, not two (fewer levels).  With
    ``result_bits`` only the result's low bits are formed (every level modulo ``2**result_bits``,
    shorter carry chains), for a caller whose result fits that width as a signed value.  Its registers have no reset (data only: a
    reset would put logic in front of every one, and block registers take none).  With
    ``operand_registers`` the operands are registered first, where the placer can put them next to
    the multipliers (the DSP blocks' own input registers).  With ``fabric_bits`` (which needs
    ``operand_registers``) the low bits of ``b`` are rows in logic; with ``product_registers = 2``
    the partial products are registered twice (the module docstring).  With ``also = (c, d)``
    the tree returns ``a*b + c*d``: the partial products of ``c*d`` join those of ``a*b`` in
    the same levels (``c`` and ``d`` registered as ``a`` and ``b`` are; no rows in logic); with
    ``extra_terms`` (``(value, shift)`` pairs, set with the operands) it adds ``value << shift`` of
    each, registered beside the partial products."""
    assert product_registers in (1, 2), product_registers

    def operand(value, suffix):
        value = Value.cast(value)
        width = _signed_width(value.shape())
        value = _as_signed(value)
        if operand_registers:
            reg = Signal.like(value, name=f"{name}_{suffix}", reset_less=True)
            m.d.sync += reg.eq(value)
            value = reg
        return value, width

    a_raw = Value.cast(a)
    (a, a_width), (b, b_width) = operand(a_raw, "a"), operand(b, "b")
    width = a_width + b_width
    assert operand_registers or not fabric_bits, "rows in logic take 3a from the operand register stage"
    if fabric_bits:
        a3 = Signal(signed(a_width + 2), name=f"{name}_a3", reset_less=True)
        a_signed = _as_signed(a_raw)
        m.d.sync += a3.eq(a_signed + (a_signed << 1))
    if also is not None:
        (c, c_width), (d, d_width) = operand(also[0], "c"), operand(also[1], "d")
        width = max(width, c_width + d_width) + 1

    def chunks(value, bits, low_bit=0):
        split = split_chunks(bits)
        parts = [value[low:low + size] for low, size in split[:-1]]
        low, size = split[-1]
        return [(p, low + low_bit)
                for p, (low, _) in zip(parts + [value[low:low + size].as_signed()], split)]

    def block_products(x, x_width, y, y_width, tag, y_low_bit=0):
        """The DSP-sized partial products of ``x*y``, each registered, at their weights."""
        for cx, sx in chunks(x, x_width):
            for cy, sy in chunks(y, y_width, y_low_bit):
                product = Signal(signed(len(cx) + len(cy) + 1), name=f"{name}_{tag}_{sx}_{sy}", reset_less=True)
                m.d.sync += product.eq(cx * cy)
                terms.append((product, sx + sy))

    terms = []
    for bit in range(0, fabric_bits, 2):    # rows in logic: a * (two bits of b), at their weight
        row = Signal(signed(a_width + 2), name=f"{name}_row_{bit}", reset_less=True)
        digit = Cat(b[bit], b[bit + 1] if bit + 1 < fabric_bits else C(0, 1))
        with m.Switch(digit):
            with m.Case(0):
                m.d.sync += row.eq(0)
            with m.Case(1):
                m.d.sync += row.eq(a)
            with m.Case(2):
                m.d.sync += row.eq(a << 1)
            with m.Case(3):
                m.d.sync += row.eq(a3)
        terms.append((row, bit))
    block_products(a, a_width, b[fabric_bits:].as_signed(), b_width - fabric_bits, "pp", fabric_bits)
    for k, (value, shift) in enumerate(extra_terms):    # (the operand register and the products')
        value = _as_signed(Value.cast(value))           # (the sums are signed)
        for step in range(int(operand_registers) + 1):
            reg = Signal.like(value, name=f"{name}_term{k}_{step}", reset_less=True)
            m.d.sync += reg.eq(value)
            value = reg
        terms.append((value, shift))
    if also is not None:
        block_products(c, c_width, d, d_width, "cd")
    for step in range(1, product_registers):     # the partial products' fabric registers
        held = []
        for x, sx in terms:
            reg = Signal.like(x, name=f"{x.name}_q{step}", reset_less=True)
            m.d.sync += reg.eq(x)
            held.append((reg, sx))
        terms = held
    level = 0
    if addend is not None:
        addend = Value.cast(addend)
        width = max(width, len(addend) if addend.shape().signed else len(addend) + 1) + 1
        addend = addend.as_signed() if addend.shape().signed else Cat(addend, C(0, 1)).as_signed()
    if result_bits is not None:
        width = min(width, result_bits)
    carry_in = C(0, 1) if carry_in is None else carry_in
    final = 1 if addend is None else 2        # terms the last level takes besides the addend
    while len(terms) > final:
        summed = []
        for start in range(0, len(terms), arity):
            group = terms[start:start + arity]
            low = min(sx for _, sx in group)
            # (every sum modulo 2**(width - low): the product's bits above ``width`` never matter)
            bits = min(width - low, max(len(x) + sx for x, sx in group) - low + len(group) - 1)
            total = Signal(signed(bits), name=f"{name}_sum{level}_{low}", reset_less=True)
            m.d.sync += total.eq(_sum(m, [(x, sx - low) for x, sx in group], bits, f"{name}_l{level}_{low}"))
            summed.append((total, low))
        terms = summed
        level += 1
    if addend is not None:                  # the last level: the terms, the addend, the carry in
        total = Signal(signed(width), name=f"{name}_sum{level}_0", reset_less=True)
        m.d.sync += total.eq(_sum(m, terms + [(addend, 0)], width, f"{name}_last", carry_in))
        return total
    (total, shift), = terms
    return (total << shift)[:width].as_signed()


def _as_signed(value: Value) -> Value:
    """A value as a signed one of the same magnitude (an unsigned one widened by a zero bit)."""
    return value.as_signed() if value.shape().signed else Cat(value, C(0, 1)).as_signed()


def _sum(m: Module, values, width: int, name: str, carry_in=C(0, 1)):
    """The sum of one to three ``(value, shift)`` [and a 1-bit ``carry_in``], ``width`` bits: one
    value as it is (a delay), two through one carry chain, three through a carry-save layer (one
    LUT per bit, the carry in taking the free low bit of its carry word) and one carry chain."""
    if len(values) == 1 and isinstance(carry_in, Const) and carry_in.value == 0:
        x, sx = values[0]
        return x << sx
    if len(values) < 3:
        return sum((x << sx for x, sx in values), start=C(0, 1)) + carry_in
    wide = [Signal(signed(width), name=f"{name}_csa_{k}") for k in range(3)]
    m.d.comb += [w.eq(x << sx) for w, (x, sx) in zip(wide, values)]
    x, y, z = wide
    save = Signal(width, name=f"{name}_csa_sum")
    carry = Signal(width, name=f"{name}_csa_carry")
    m.d.comb += [save.eq(x ^ y ^ z), carry.eq(Cat(carry_in, ((x & y) | (x & z) | (y & z))[:width - 1]))]
    return save + carry


def constant_product(value, constant: int):
    """``value * constant`` (an unsigned value, a constant >= 0) as shifts and adds of its
    canonical signed digits, so it stays in logic: Yosys would otherwise give a ``*`` a
    multiplier block, wherever the placer puts it (at P = 32 the scalar stage's e*N block sat
    7 ns of routing from the statistics FIFO that feeds it).  Digits ±1, no two adjacent: at
    most ``ceil((bits + 1) / 2)`` terms."""
    assert constant >= 0
    value = Value.cast(value)
    total, bit = None, 0
    while constant:
        if constant & 1:
            digit = 2 - (constant & 3)          # +1 when ...01, -1 when ...11
            constant -= digit
            term = value << bit
            if total is None:
                total = term if digit > 0 else -term
            else:
                total = total + term if digit > 0 else total - term
        constant >>= 1
        bit += 1
    return C(0, 1) if total is None else total


def saturate(value, width: int):
    """A signed ``value`` clamped to ``width`` bits (two's complement), as a ``width``-bit value.

    It fits exactly when its bits from ``width - 1`` up are all equal (all ones or all zeros):
    one LUT-level reduction instead of two comparisons' carry chains; otherwise its sign chooses
    the least or the greatest value."""
    value = Value.cast(value)
    assert value.shape().signed
    if len(value) <= width:
        return Cat(value, value[-1].replicate(width - len(value)))
    top = value[width - 1:]
    least, greatest = C(1 << (width - 1), width), C((1 << (width - 1)) - 1, width)
    return Mux(top.all() | ~top.any(), value[:width], Mux(value[-1], least, greatest))
