"""Layer-normalized RNN with the normgen LayerNorm core in the loop (see docs/rnn.md)."""
