"""normgen simulation: bit-exact golden model, exact reference, test vectors, cocotb benches."""
