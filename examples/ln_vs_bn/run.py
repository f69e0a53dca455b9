"""LayerNorm versus BatchNorm on the generated cores: writes docs/ln_vs_bn.png and docs/ln_vs_bn.md.

    python examples/ln_vs_bn/run.py
"""
import os
import sys

import numpy as np

from examples.ln_vs_bn.compare import compare, make_configs


def main(out_dir="docs"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ln, bn = make_configs()
    result = compare(ln, bn)
    lsb = ln.out_format.lsb
    channels = np.arange(ln.features)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for size, y in zip(result.batch_sizes, result.layernorm):
        left.plot(channels, y * lsb, marker="o", ms=3, label=f"in a batch of {size}")
    left.set_title("LayerNorm core: the same output in every batch")
    for size, y in zip(result.batch_sizes, result.batchnorm):
        right.plot(channels, y * lsb, marker="o", ms=3, label=f"batch of {size}")
    right.plot(channels, result.beta_out * lsb, "k--", lw=1, label="β")
    right.set_title("BatchNorm core (batch statistics): depends on the batch")
    for axis in (left, right):
        axis.set_xlabel("feature / channel")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylabel("output for the same input sample")
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(os.path.join(out_dir, "ln_vs_bn.png"), dpi=110)

    rows = ["| batch size | LayerNorm: max change vs batch of 1 (LSB) | BatchNorm: max change vs batch of 1 (LSB) "
            "| BatchNorm output == β |", "|---|---|---|---|"]
    for size, y_ln, y_bn in zip(result.batch_sizes, result.layernorm, result.batchnorm):
        rows.append(f"| {size} | {int(np.abs(y_ln - result.layernorm[0]).max())} "
                    f"| {int(np.abs(y_bn - result.batchnorm[0]).max())} | {bool(np.array_equal(y_bn, result.beta_out))} |")
    text = ["# LayerNorm versus BatchNorm on the generated cores", "",
            "Written by `python examples/ln_vs_bn/run.py`: one sample, placed in batches of different sizes with "
            "different batch-mates, through the LayerNorm core and the batch-statistics BatchNorm core (both as "
            f"gateware in Amaranth's simulator; every output bit-exact with the golden model: {result.golden_match}).",
            "", f"LayerNorm: {ln.describe()}  ", f"BatchNorm: {bn.describe()}", "", *rows, "",
            "![LayerNorm versus BatchNorm](ln_vs_bn.png)", ""]
    with open(os.path.join(out_dir, "ln_vs_bn.md"), "w") as file:
        file.write("\n".join(text))
    print("\n".join(rows))
    return 0 if result.golden_match else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
