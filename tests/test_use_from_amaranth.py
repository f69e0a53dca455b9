"""The README's "Use from Amaranth" example: a user design connects a core with wiring.connect and
gets the golden model's outputs bit for bit, under random idle cycles and backpressure."""
import numpy as np
import pytest

from examples.use_from_amaranth import Accelerator, random_vectors, simulate
from normgen.hw import CoreConfig, build_core
from normgen.sim import golden


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_user_design_matches_golden(norm, lanes):
    rng = np.random.default_rng(lanes)
    features = 32
    cfg = CoreConfig(norm=norm, features=features, lanes=lanes, in_format="s4.12", out_format="s4.12",
                     param_format="s3.9", gamma=rng.uniform(-3, 3, features), beta=rng.uniform(-2, 2, features))
    lengths = [lanes, 5 * lanes, features, 2 * lanes, features - lanes]
    vectors = random_vectors(cfg, lengths, seed=lanes)
    outputs = simulate(cfg, vectors, idle=0.3, stall=0.4, seed=lanes)
    assert [len(y) for y in outputs] == lengths
    for x, y in zip(vectors, outputs):
        np.testing.assert_array_equal(y, golden.normalize(cfg, x[None, :])[0])


def test_core_streams_are_the_documented_layouts():
    """A user stream of the documented field order connects; one of another order does not."""
    from amaranth.hdl import signed
    from amaranth.lib import data, stream, wiring

    cfg = CoreConfig(features=8, lanes=2)
    core = build_core(cfg)
    theirs = stream.Signature(data.StructLayout({"data": data.ArrayLayout(signed(16), 2), "last": 1}))
    assert core.i.signature == theirs.flip()
    swapped = stream.Signature(data.StructLayout({"last": 1, "data": data.ArrayLayout(signed(16), 2)}))
    assert core.i.signature != swapped.flip()
    assert list(core.signature.members.keys()) == ["i", "o", "params", "overlong"]
    assert isinstance(Accelerator(cfg), wiring.Component)
