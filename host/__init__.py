"""normgen host side: the command line, PyTorch import and the exact BatchNorm folding.

Nothing here is gateware: :mod:`normgen.hw` holds the Amaranth components."""
