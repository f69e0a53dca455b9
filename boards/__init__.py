"""normgen dev-board images and host driver (see docs/boards.md).

- :mod:`.protocol` — frame format, commands, error codes, the IDENTIFY record (plain Python)
- :mod:`.uart` — 8N1 UART receiver (oversampled, framing errors) and transmitter
- :mod:`.link` — frame parser, γ/β staging and checksum, replier, :class:`~.link.LinkEngine` (bytes in,
  bytes out) and :class:`~.link.NormLink` (the image without PLL/IO)
- :mod:`.images` — the boards, the core each carries, the top level with PLL and reset
- :mod:`.pll` — iCE40 / ECP5 PLL settings and instances
- :mod:`.build` — bitstreams, utilization/timing reports, programming commands
- :mod:`.host` — the host driver (pyserial-like ports)
- :mod:`.cli` — ``normgen board run|build|prog|report``
- :mod:`.sim`, :mod:`.cocotb_link`, :mod:`.simserial` — full-system simulation
"""
