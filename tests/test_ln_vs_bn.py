"""The reason LayerNorm exists, shown on the generated cores: the same sample in different batches."""
import numpy as np

from examples.ln_vs_bn.compare import compare, make_configs


def test_batchnorm_depends_on_the_batch_and_layernorm_does_not():
    ln, bn = make_configs(channels=8, max_batch=8)
    result = compare(ln, bn, batch_sizes=(1, 2, 8))
    assert result.golden_match
    # LayerNorm: identical output for the sample whatever batch it travels in
    for y in result.layernorm[1:]:
        np.testing.assert_array_equal(y, result.layernorm[0])
    # BatchNorm: collapses to beta at batch size 1, and changes with the batch-mates
    np.testing.assert_array_equal(result.batchnorm[0], result.beta_out)
    assert not np.array_equal(result.batchnorm[1], result.batchnorm[2])
    assert not np.array_equal(result.batchnorm[1], result.beta_out)
