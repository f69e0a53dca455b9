"""The formal proofs of :mod:`normgen.sim.formal`, one test each: every property set must be
proven, and every mutation must make its proof fail."""
import shutil

import pytest

from normgen.sim import formal

pytestmark = pytest.mark.skipif(
    not all(formal.tool_available(name) for name in formal.TOOLS),
    reason="formal tools missing: pip install -e '.[formal]'")


def _cases(proofs):
    return [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.slow else []) for p in proofs]


@pytest.mark.parametrize("proof", _cases(formal.all_proofs()))
def test_proof(proof, tmp_path):
    result = formal.run_proof(proof, tmp_path)
    assert result.status == "PASS", result.line()


@pytest.mark.parametrize("proof", _cases(formal.negative_proofs()))
def test_mutation_fails(proof, tmp_path):
    result = formal.run_proof(proof, tmp_path)
    assert result.status == "FAIL", result.line()


def test_rsqrt_spec_matches_golden():
    """The proofs' rsqrt specification is written from the definition; the golden model's is a
    closed form.  They agree on every radicand of the proven widths."""
    from normgen.sim import golden
    for kind in ("layernorm", "rmsnorm"):
        cfg = formal.config(kind)
        for d in range(1, 1 << cfg.d_width):
            assert formal.rsqrt_spec(cfg, d) == golden.rsqrt(cfg, d), d
