"""Design-space sweep: ``normgen sweep SPEC.toml -o OUTDIR [--cluster ADDRESS] [--workers N]``.

A spec is a TOML file with two tables::

    [grid]                      # CoreConfig fields, each a list of values: the grid is their product
    norm = ["layernorm", "rmsnorm"]
    features = [64, 256]
    out_format = ["s4.8", "s4.12"]

    [measure]                   # what to measure at every point
    accuracy = true             # golden model against the exact reference
    cycles = true               # latency and throughput in the cycle-accurate simulation
    ecp5 = false                # place and route of the bare core (the benchmark's harness)
    ice40 = false
    # data = "x.npy"            # accuracy on these float vectors instead of the test-vector classes
    # per_class = 3             # accuracy: vectors per test-vector class and parameter set
    # seed = 1
    # pnr_timeout = 3600        # seconds per place and route

A grid value ``"default"`` leaves that field at :class:`~normgen.hw.config.CoreConfig`'s default
(TOML has no null: ``vector_interval = ["default", 4]``).

Every grid point is one task on a Dask distributed cluster (a local one on this machine's cores
unless ``--cluster`` names the scheduler of a running one).  A task builds ``CoreConfig(**point)``
and measures it; a :class:`~normgen.hw.config.ConfigError` (or a failed measurement) becomes the
text of the row's ``error`` column, never the end of the sweep.  Rows are appended to
``OUTDIR/results.csv`` as tasks finish (the axes, then the measures, then ``error``), so a sweep
that is stopped resumes where it stopped: a point that already has a row is not measured again.
At the end ``OUTDIR/pareto.png`` plots the error against each measured cost and speed with the
Pareto front marked, and ``OUTDIR/summary.md`` lists the Pareto points.

Columns
-------
accuracy
    ``max_err_lsb``, ``mean_err_lsb``: the largest and the mean ``|y - Y|`` in output LSB, ``Y``
    the exact real result (:func:`normgen.sim.reference.output_errors`); ``max_err_abs`` the
    largest in real units (``max_err_lsb * 2**-F_out``, comparable across output formats);
    ``faithful_pct``, ``rne_pct``: the percentage of outputs that are faithful and that equal
    the correctly rounded (round half to even) result (:func:`normgen.sim.reference.check_vector`).
    The inputs are the standard test-vector classes (:func:`normgen.sim.vectors.class_vectors`,
    with the configuration's γ/β and with random γ/β), or the rows of ``data``.
cycles
    ``latency_cycles``: the core's latency (the meaning of its ``latency``) measured in Amaranth's
    simulation of the gateware with the core idle; ``elements_per_cycle``: the sustained rate of
    back-to-back vectors of N_max elements, no idle input, no backpressure
    (:func:`normgen.sim.amaranth_bench.run_core`).  The simulated outputs must equal the golden
    model's.
ecp5, ice40
    ``<family>_status`` (``routed``, ``does not fit``, ``timeout``, ``failed``),
    ``<family>_fmax_mhz`` and the ``lut``, ``ff``, ``dsp``, ``bram`` counts used, from
    :func:`normgen.sim.pnr.place_and_route` of the registered harness.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from normgen.hw.config import ConfigError, CoreConfig

if sys.version_info >= (3, 11):
    import tomllib
else:                                                                      # pragma: no cover
    import tomli as tomllib

__all__ = ["SweepError", "Spec", "load_spec", "parse_spec", "GRID_KEYS", "MEASURES", "columns_of",
           "measure_point", "measure_rng", "accuracy_inputs", "run_sweep", "read_results",
           "pareto_mask", "write_report"]

#: The fields a ``[grid]`` key may name: every field of CoreConfig, whatever it grows.
GRID_KEYS = tuple(f.name for f in dataclasses.fields(CoreConfig) if f.init)

#: The measures, in column order.
MEASURES = ("accuracy", "cycles", "ecp5", "ice40")
FAMILIES = ("ecp5", "ice40")

#: ``[measure]`` keys that are not measures, with their meaning.
OPTIONS = {
    "data": "a .npy file of float vectors (rows) for the accuracy measure",
    "per_class": "accuracy: vectors per test-vector class and parameter set (integer >= 1)",
    "seed": "seed of the test vectors (integer >= 0)",
    "pnr_timeout": "seconds per place and route (number > 0)",
}

#: A grid value that leaves the field at CoreConfig's default.
DEFAULT = "default"

ACCURACY_COLUMNS = ("max_err_lsb", "mean_err_lsb", "max_err_abs", "faithful_pct", "rne_pct")
CYCLE_COLUMNS = ("latency_cycles", "elements_per_cycle")
PNR_COLUMNS = ("status", "fmax_mhz", "lut", "ff", "dsp", "bram")
ERROR = "error"

#: cycles: back-to-back vectors of N_max elements, at least this many beats in all ...
CYCLE_MIN_BEATS = 256
#: ... and between these many vectors
CYCLE_VECTORS = (8, 32)


class SweepError(ValueError):
    """A bad spec, data file or output directory, or no cluster: one line for the user."""


# ---- the spec -----------------------------------------------------------------------------------

@dataclass
class Spec:
    """A parsed sweep spec: the grid's axes in spec order, the selected measures and options."""
    axes: dict
    measures: tuple
    data: str | None = None
    per_class: int = 3
    seed: int = 1
    pnr_timeout: float = 3600.0
    path: str | None = None
    _points: list = field(default=None, init=False, repr=False, compare=False)

    def points(self) -> list[dict]:
        """Every grid point (a dict axis -> value), the first axis varying slowest; duplicates
        (the same cells) once."""
        if self._points is None:
            seen, points = set(), []
            for values in itertools.product(*self.axes.values()):
                point = dict(zip(self.axes, values))
                key = self.key(point)
                if key not in seen:
                    seen.add(key)
                    points.append(point)
            self._points = points
        return self._points

    def key(self, point: dict) -> tuple:
        """The point's axis cells, as its row in results.csv holds them."""
        return tuple(cell(point[axis]) for axis in self.axes)

    def columns(self) -> list[str]:
        return columns_of(self.axes, self.measures)

    def varying(self) -> list[str]:
        """The axes with more than one value (all of them when none has)."""
        many = [axis for axis, values in self.axes.items() if len(values) > 1]
        return many or list(self.axes)

    def options(self) -> dict:
        return {"per_class": self.per_class, "seed": self.seed, "pnr_timeout": self.pnr_timeout}


def columns_of(axes, measures) -> list[str]:
    """results.csv's header: the axes, the columns of each measure, ``error``."""
    columns = list(axes)
    for measure in MEASURES:
        if measure not in measures:
            continue
        if measure == "accuracy":
            columns += ACCURACY_COLUMNS
        elif measure == "cycles":
            columns += CYCLE_COLUMNS
        else:
            columns += [f"{measure}_{name}" for name in PNR_COLUMNS]
    return columns + [ERROR]


def cell(value) -> str:
    """A value as a results.csv cell (also the key by which a resumed sweep finds a point)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def _toml(value) -> str:
    """A value as a spec would write it, for messages."""
    return json.dumps(value) if isinstance(value, str) else cell(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_spec(path) -> Spec:
    """Read and check a spec file; :class:`SweepError` names what is wrong."""
    path = str(path)
    if not os.path.exists(path):
        raise SweepError(f"spec file {path!r} does not exist")
    if os.path.isdir(path):
        raise SweepError(f"spec file {path!r} is a directory")
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except OSError as exc:
        raise SweepError(f"cannot read spec file {path!r}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SweepError(f"spec file {path!r} is not valid TOML: {exc}") from None
    return parse_spec(table, base=os.path.dirname(os.path.abspath(path)), path=path)


def parse_spec(table: dict, *, base: str = ".", path: str | None = None) -> Spec:
    """A :class:`Spec` from the parsed TOML ``table``; relative ``data`` paths are taken from
    ``base`` (the spec file's directory)."""
    where = f"spec {path!r}" if path else "spec"
    unknown = sorted(set(table) - {"grid", "measure"})
    if unknown:
        raise SweepError(f"{where}: unknown table or key {unknown[0]!r}; a spec has a [grid] and a [measure] table")
    grid = table.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{where} needs a [grid] table: CoreConfig fields, each a list of values "
                         f"(e.g. features = [64, 256])")
    axes = {}
    for key, values in grid.items():
        if key not in GRID_KEYS:
            raise SweepError(f"[grid] key {key!r} is not a CoreConfig field; allowed keys: {', '.join(GRID_KEYS)}")
        if not isinstance(values, list):
            raise SweepError(f"[grid] {key} must be a list of values (e.g. {key} = [{_toml(values)}]), "
                             f"not {_toml(values)}")
        if not values:
            raise SweepError(f"[grid] {key} is an empty list: give at least one value")
        axes[key] = values
    measure = table.get("measure")
    if not isinstance(measure, dict):
        raise SweepError(f"{where} needs a [measure] table: {' / '.join(MEASURES)} = true or false")
    for key, value in measure.items():
        if key not in MEASURES and key not in OPTIONS:
            raise SweepError(f"[measure] key {key!r} is unknown; allowed keys: {', '.join(MEASURES + tuple(OPTIONS))}")
        if key in MEASURES and not isinstance(value, bool):
            raise SweepError(f"[measure] {key} must be true or false, not {_toml(value)}")
    selected = tuple(m for m in MEASURES if measure.get(m, False))
    if not selected:
        raise SweepError(f"[measure] selects nothing: set at least one of {', '.join(MEASURES)} to true")
    spec = Spec(axes=axes, measures=selected, path=path)
    if "data" in measure:
        if not isinstance(measure["data"], str) or not measure["data"]:
            raise SweepError(f"[measure] data must be the path of a .npy file, not {_toml(measure['data'])}")
        if "accuracy" not in selected:
            raise SweepError("[measure] data is the input of the accuracy measure: set accuracy = true")
        spec.data = os.path.join(base, measure["data"])
    if "per_class" in measure:
        if not _is_int(measure["per_class"]) or measure["per_class"] < 1:
            raise SweepError(f"[measure] per_class must be an integer >= 1, not {_toml(measure['per_class'])}")
        spec.per_class = measure["per_class"]
    if "seed" in measure:
        if not _is_int(measure["seed"]) or measure["seed"] < 0:
            raise SweepError(f"[measure] seed must be an integer >= 0, not {_toml(measure['seed'])}")
        spec.seed = measure["seed"]
    if "pnr_timeout" in measure:
        value = measure["pnr_timeout"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise SweepError(f"[measure] pnr_timeout must be a number of seconds > 0, not {_toml(value)}")
        spec.pnr_timeout = float(value)
    return spec


def load_data(path: str) -> np.ndarray:
    """The ``data`` file: a 2-D float array (vectors or samples, N)."""
    from normgen.host.cli import CliError, load_array
    try:
        data = load_array(path, "[measure] data")
    except CliError as exc:
        raise SweepError(str(exc)) from None
    if data.ndim != 2 or data.shape[0] == 0:
        raise SweepError(f"[measure] data file {path!r} must hold a 2-D array (vectors, N) with at least one row, "
                         f"not shape {data.shape}")
    return data


# ---- one grid point (runs on a worker) ------------------------------------------------------------

def config_kwargs(point: dict) -> dict:
    """CoreConfig's keyword arguments of a point (``"default"`` values left out)."""
    return {k: v for k, v in point.items() if not (isinstance(v, str) and v == DEFAULT)}


def measure_rng(seed: int, point: dict, measure: str) -> np.random.Generator:
    """The random numbers of one measure of one point: fixed by the seed and the point itself,
    so that a resumed or reordered sweep draws the same vectors."""
    text = json.dumps({k: cell(v) for k, v in point.items()}, sort_keys=True)
    return np.random.default_rng([seed, zlib.crc32(text.encode()), MEASURES.index(measure)])


def accuracy_inputs(cfg: CoreConfig, rng: np.random.Generator, per_class: int, data=None) -> list:
    """The ``(configuration, input integers)`` pairs the accuracy measure runs: 1-D vectors, or for
    BatchNorm with batch statistics 2-D batches (samples, C).

    Without ``data``: every test-vector class, with the configuration's γ/β and (when the core
    has the γ/β stage) with random ones.  With ``data`` (floats, one vector or sample a row):
    its rows quantized to the input format."""
    from normgen.sim import vectors

    batch = cfg.kind.statistics == "batch"
    if data is not None:
        data = np.asarray(data, dtype=np.float64)
        n = data.shape[1]
        if batch or cfg.kind.folded:
            if n != cfg.features:
                raise ConfigError(f"data rows have {n} values; this BatchNorm core takes C = {cfg.features} channels")
        elif not 1 <= n <= cfg.features or n % cfg.lanes:
            raise ConfigError(f"data vectors have N = {n} elements; N must be in 1..{cfg.features} (features) "
                              f"and a multiple of lanes = {cfg.lanes}")
        x = cfg.in_format.quantize(data)[0]
        if batch:
            return [(cfg, x[start:start + cfg.max_batch]) for start in range(0, len(x), cfg.max_batch)]
        return [(cfg, row) for row in x]
    configs = [cfg]
    if cfg.affine_stage:
        configs.append(cfg.with_params(*vectors.random_params(cfg, rng)))
    out = []
    for c in configs:
        if batch:
            sizes = [cfg.max_batch, 2] + [int(m) for m in rng.integers(1, cfg.max_batch + 1, max(0, per_class - 2))]
            for kind in vectors.CLASSES:
                for m in sizes[:per_class]:
                    out.append((c, np.stack([vectors.make_vector(c, kind, c.features, rng) for _ in range(m)])))
        else:
            out += [(c, x) for _, x in vectors.class_vectors(c, rng, per_class)]
    return out


def measure_accuracy(cfg: CoreConfig, rng, per_class: int, data=None) -> dict:
    from normgen.sim import golden, reference

    total = reference.AccuracyReport()
    errors = []
    for c, x in accuracy_inputs(cfg, rng, per_class, data):
        if c.kind.statistics == "batch":
            y = golden.normalize_batch(c, x)
            total.add(reference.check_batch(c, x, y))
            gamma, beta = c.gamma_beta_int()
            m = x.shape[0]
            for ch in range(x.shape[1]):
                errors.append(reference.output_errors(c, x[:, ch], y[:, ch], gamma=np.full(m, gamma[ch]),
                                                      beta=np.full(m, beta[ch]))[0])
        else:
            y = golden.normalize(c, x[None, :])[0]
            total.add(reference.check_vector(c, x, y))
            if not c.kind.folded:                  # the exact error needs the vector formula
                errors.append(reference.output_errors(c, x, y)[0])
    result = {"faithful_pct": 100.0 * (total.elements - total.unfaithful) / total.elements,
              "rne_pct": 100.0 * (total.elements - total.unfaithful - total.not_rounded) / total.elements}
    if errors:
        magnitude = np.abs(np.concatenate(errors))
        result["max_err_lsb"] = float(magnitude.max())
        result["mean_err_lsb"] = float(magnitude.mean())
        result["max_err_abs"] = result["max_err_lsb"] * cfg.out_format.lsb
    return result


def measure_cycles(cfg: CoreConfig, rng) -> dict:
    from normgen.sim import vectors
    from normgen.sim.amaranth_bench import (Packet, expected_batches, expected_outputs, run_batches,
                                            run_core)

    if cfg.kind.statistics == "batch":            # one batch of M_max samples: its latency
        batch = np.stack([vectors.make_vector(cfg, "uniform", cfg.features, rng) for _ in range(cfg.max_batch)])
        run = run_batches(cfg, [batch])
        expected = expected_batches(cfg, [batch])
        if len(run.outputs) != 1 or not np.array_equal(run.outputs[0][0], expected[0][0]):
            raise RuntimeError("the simulated core's outputs differ from the golden model")
        return {"latency_cycles": run.latencies[0]}
    count = min(max(-(-CYCLE_MIN_BEATS // cfg.beats_max), CYCLE_VECTORS[0]), CYCLE_VECTORS[1])
    packets = [Packet(vectors.make_vector(cfg, "uniform", cfg.features, rng)) for _ in range(count)]
    run = run_core(cfg, packets)
    expected = expected_outputs(cfg, packets)
    if len(run.outputs) != len(expected) or not all(
            np.array_equal(got, want) and gu == wu for (got, gu), (want, wu) in zip(run.outputs, expected)):
        raise RuntimeError("the simulated core's outputs differ from the golden model")
    return {"latency_cycles": run.latencies[0], "elements_per_cycle": run.sustained_rate}


def measure_pnr(cfg: CoreConfig, family: str, seed: int, timeout: float) -> tuple[dict, str]:
    """Place and route in a temporary directory of the worker: (columns, error text or "")."""
    from normgen.sim.pnr import place_and_route

    with tempfile.TemporaryDirectory(prefix=f"normgen-sweep-{family}-") as workdir:
        result = place_and_route(cfg, family, seed=seed, workdir=workdir, timeout=timeout)
    out = {f"{family}_status": result["status"]}
    if result["status"] == "routed" and result.get("fmax_mhz") is not None:
        out[f"{family}_fmax_mhz"] = result["fmax_mhz"]
    for group in ("LUT", "FF", "DSP", "BRAM"):
        entry = result.get("utilization", {}).get(group)
        if entry is not None:
            out[f"{family}_{group.lower()}"] = entry["used"]
    error = "" if result["status"] in ("routed", "does not fit") else result.get("error", result["status"])
    return out, error


def _one_line(text) -> str:
    return " ".join(str(text).split())


def measure_point(point: dict, measures, options: dict, data=None) -> dict:
    """Build ``CoreConfig(**point)`` and take the ``measures``: ``{column: value}``.  An invalid
    point or a failed measurement is the text of ``error``; this never raises."""
    try:
        cfg = CoreConfig(**config_kwargs(point))
    except ConfigError as exc:
        return {ERROR: _one_line(exc)}
    except Exception as exc:                       # a TOML value CoreConfig cannot take at all
        return {ERROR: _one_line(f"{type(exc).__name__}: {exc}")}
    row, errors = {}, []
    for measure in MEASURES:
        if measure not in measures:
            continue
        rng = measure_rng(options.get("seed", 1), point, measure)
        try:
            if measure == "accuracy":
                row.update(measure_accuracy(cfg, rng, options.get("per_class", 3), data))
            elif measure == "cycles":
                row.update(measure_cycles(cfg, rng))
            else:
                found, error = measure_pnr(cfg, measure, options.get("seed", 1), options.get("pnr_timeout", 3600))
                row.update(found)
                if error:
                    errors.append(f"{measure}: {error}")
        except Exception as exc:
            errors.append(f"{measure}: {exc if isinstance(exc, ConfigError) else f'{type(exc).__name__}: {exc}'}")
    if errors:
        row[ERROR] = _one_line("; ".join(errors))
    return row


# ---- results.csv ----------------------------------------------------------------------------------

def _write_csv(path: Path, columns, rows):
    """Write ``rows`` (lists of cells) under the header, atomically."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def read_results(path, columns) -> list[dict]:
    """The rows of results.csv (dicts of cells), after repairing what an interruption can leave:
    an empty file gets the header, a last row cut short is dropped.  No file: no rows.  A file
    with other columns is another sweep's: :class:`SweepError`."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        _write_csv(path, columns, [])
        return []
    complete = text[:text.rfind("\n") + 1] if not text.endswith("\n") else text
    records = list(csv.reader(complete.splitlines()))
    if not records or records[0] != list(columns):
        header = ", ".join(records[0]) if records else "(none)"
        raise SweepError(f"{path} holds the results of another sweep (columns: {header}); this spec writes "
                         f"{', '.join(columns)}: use another output directory or move that file away")
    rows = [r for r in records[1:] if len(r) == len(columns)]
    if complete != text or len(rows) != len(records) - 1:
        _write_csv(path, columns, rows)
    return [dict(zip(columns, r)) for r in rows]


# ---- the sweep ------------------------------------------------------------------------------------

@contextlib.contextmanager
def dask_client(cluster: str | None = None, workers: int | None = None):
    """A Dask client of the scheduler at ``cluster``, or of a local cluster of ``workers``
    processes (default: this machine's cores), closed afterwards."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SweepError("normgen sweep runs on Dask distributed: pip install 'normgen[sweep]'") from None
    if cluster is not None:
        try:
            client = Client(cluster, timeout=15, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(f"cannot reach the Dask scheduler at {cluster!r}: {_one_line(exc)}") from None
        try:
            yield client
        finally:
            client.close()
        return
    local = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                         dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = Client(local, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        local.close()


def _running(client, keys) -> int:
    """Tasks of this sweep on the workers (at most one per worker thread: the scheduler may hand
    a worker a few more than it runs at once)."""
    try:
        processing = sum(1 for tasks in client.processing().values() for key in tasks if key in keys)
        return min(processing, sum(client.nthreads().values()))
    except Exception:                                                      # pragma: no cover
        return 0


def run_sweep(spec: Spec, outdir, *, cluster: str | None = None, workers: int | None = None,
              progress: bool = True) -> dict:
    """Measure every point of ``spec`` that ``OUTDIR/results.csv`` does not hold yet, one Dask task
    each, appending a row as each finishes; then write ``pareto.png`` and ``summary.md``.

    Returns counts: ``points`` (of the grid), ``skipped`` (already in results.csv), ``computed``,
    ``failed`` (rows of this run with an ``error``)."""
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise SweepError(f"output directory {str(outdir)!r} is not a directory")
    data = load_data(spec.data) if spec.data else None
    columns = spec.columns()
    csv_path = outdir / "results.csv"
    done = {tuple(row[axis] for axis in spec.axes) for row in read_results(csv_path, columns)}
    todo = [point for point in spec.points() if spec.key(point) not in done]
    counts = {"points": len(spec.points()), "skipped": len(spec.points()) - len(todo), "computed": 0, "failed": 0}
    if todo:
        with dask_client(cluster, workers) as client:     # nothing is written before it connects
            try:
                outdir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SweepError(f"cannot create output directory {str(outdir)!r}: {exc.strerror or exc}") from None
            if not csv_path.exists():
                _write_csv(csv_path, columns, [])
            _stream(client, spec, todo, data, csv_path, columns, counts, progress)
    write_report(outdir, spec, read_results(csv_path, columns))
    return counts


def _stream(client, spec, todo, data, csv_path, columns, counts, progress):
    from distributed import as_completed
    from tqdm import tqdm

    data_ref = client.scatter(data, broadcast=True) if data is not None else None
    run = uuid.uuid4().hex[:8]
    futures = {}
    for index, point in enumerate(todo):
        future = client.submit(measure_point, point, spec.measures, spec.options(), data_ref,
                               key=f"normgen-sweep-{run}-{index}", pure=False)
        futures[future] = point
    keys = {future.key for future in futures}
    pending = as_completed(futures, loop=client.loop)
    with open(csv_path, "a", newline="", encoding="utf-8") as file, \
            tqdm(total=counts["points"], initial=counts["skipped"], unit="point", desc="sweep",
                 disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        writer = csv.writer(file, lineterminator="\n")
        bar.set_postfix(running=0, failed=0)
        last = 0.0
        while not pending.is_empty():
            batch = pending.next_batch(block=False)
            for future in batch:
                try:
                    result = future.result()
                except Exception as exc:              # the task itself failed (e.g. its worker died)
                    result = {ERROR: _one_line(f"task failed: {type(exc).__name__}: {exc}")}
                point = futures[future]
                keys.discard(future.key)
                future.release()
                row = {**dict(zip(spec.axes, spec.key(point))), **{k: cell(v) for k, v in result.items()}}
                writer.writerow([row.get(column, "") for column in columns])
                file.flush()
                counts["computed"] += 1
                counts["failed"] += bool(result.get(ERROR))
                bar.update(1)
            if batch or time.monotonic() - last > 1:
                bar.set_postfix(running=_running(client, keys), failed=counts["failed"])
                last = time.monotonic()
            if not batch:
                time.sleep(0.2)


# ---- Pareto front, plot and summary ----------------------------------------------------------------

def pareto_mask(values, senses) -> list[bool]:
    """Which of ``values`` (tuples of numbers) no other one dominates; ``senses`` per coordinate:
    ``"min"`` or ``"max"``.  A point dominates another when it is at least as good in every
    coordinate and better in one."""
    signs = np.array([1.0 if s == "min" else -1.0 for s in senses])
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(senses)) * signs
    mask = []
    for i in range(len(v)):
        better_eq = np.all(v <= v[i], axis=1)
        strictly = np.any(v < v[i], axis=1)
        mask.append(not bool(np.any(better_eq & strictly)))
    return mask


ERROR_OBJECTIVE = ("max_err_abs", "min", "largest |y − Y| (output units)")


def objectives(measures) -> list[tuple]:
    """(column, sense, label) of the costs and speeds the error is traded against."""
    out = []
    for family in FAMILIES:
        if family in measures:
            out += [(f"{family}_lut", "min", f"{family.upper()} LUTs"),
                    (f"{family}_fmax_mhz", "max", f"{family.upper()} fmax (MHz)")]
    if "cycles" in measures:
        out += [("latency_cycles", "min", "latency (cycles)"), ("elements_per_cycle", "max", "elements per cycle")]
    return out


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _usable(row, column) -> bool:
    if _number(row.get(column)) is None:
        return False
    family = column.split("_")[0]
    return family not in FAMILIES or row.get(f"{family}_status") == "routed"


def _label(spec, row) -> str:
    return ", ".join(f"{axis}={row[axis]}" for axis in spec.varying())


def write_report(outdir, spec: Spec, rows: list[dict]):
    """``pareto.png`` (the error against each measured cost and speed, fronts marked) and
    ``summary.md`` (the Pareto points, numbered as in the plot) from the rows of the spec's
    points."""
    outdir = Path(outdir)
    wanted = {spec.key(point) for point in spec.points()}
    rows = [row for row in rows if tuple(row[axis] for axis in spec.axes) in wanted]
    failed = [row for row in rows if row.get(ERROR)]
    lines = ["# normgen sweep", "",
             f"Spec `{spec.path or '-'}`: {len(wanted)} points, {len(rows)} in `results.csv`, "
             f"{len(failed)} with an error; measured: {', '.join(spec.measures)}.", ""]
    panels = objectives(spec.measures) if "accuracy" in spec.measures else []
    error = ERROR_OBJECTIVE[0]
    fronts, on_2d, chosen = {}, {id(r): [] for r in rows}, []
    for column, sense, label in panels:
        usable = [row for row in rows if _usable(row, error) and _usable(row, column)]
        mask = pareto_mask([(float(r[error]), float(r[column])) for r in usable], (ERROR_OBJECTIVE[1], sense))
        fronts[column] = (usable, mask)
        for row, on_front in zip(usable, mask):
            if on_front:
                on_2d[id(row)].append(label)
    if "accuracy" in spec.measures:
        objective_columns = [error] + [c for c, _, _ in panels]
        complete = [r for r in rows if all(_usable(r, c) for c in objective_columns)]
        mask = pareto_mask([tuple(float(r[c]) for c in objective_columns) for r in complete],
                           ["min"] + [s for _, s, _ in panels])
        chosen = [r for r, m in zip(complete, mask) if m]
        taken = {id(r) for r in chosen}
        chosen += [r for r in rows if on_2d[id(r)] and id(r) not in taken]
        chosen.sort(key=lambda r: float(r[error]))
    numbers = {id(r): index + 1 for index, r in enumerate(chosen)}

    if "accuracy" not in spec.measures:
        plot_note = "No accuracy measure: no error to trade, no Pareto front."
    elif not panels:
        plot_note = "Accuracy only: nothing to trade the error against (measure cycles, ecp5 or ice40)."
    else:
        plot_note = _plot(outdir / "pareto.png", panels, fronts, numbers)
    if plot_note:
        (outdir / "pareto.png").unlink(missing_ok=True)            # none is stale
        lines += [plot_note, ""]
    else:
        lines += ["![Error against cost and speed, Pareto fronts marked](pareto.png)", ""]
    if "accuracy" in spec.measures:
        lines += ["The error is `max_err_abs`, the largest |y − Y| over the accuracy inputs in real output "
                  "units (`max_err_lsb` · 2^-F_out), so that points with different output formats compare.", ""]
        shown = ["max_err_abs", "max_err_lsb", "faithful_pct", "rne_pct"] + [c for c, _, _ in panels]
        lines += [f"## Pareto points ({len(chosen)})", "",
                  "Not dominated in the error and every measured cost and speed together"
                  + (", or on one of the plot's fronts (last column); # is the number in the plot." if panels else "."),
                  "", "| # | point | " + " | ".join(shown) + (" | on the fronts of |" if panels else " |"),
                  "|---|---|" + "---|" * (len(shown) + bool(panels))]
        for r in chosen:
            cells = [str(numbers[id(r)]), _label(spec, r)] + [_short(r.get(c, "")) for c in shown]
            if panels:
                cells.append(", ".join(on_2d[id(r)]) or "—")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if failed:
        lines += [f"## Points with an error ({len(failed)})", ""]
        for r in failed[:20]:
            lines.append(f"- {_label(spec, r)}: {r[ERROR]}")
        if len(failed) > 20:
            lines.append(f"- … and {len(failed) - 20} more (see `results.csv`)")
        lines.append("")
    (outdir / "summary.md").write_text("\n".join(lines), encoding="utf-8")


def _short(text: str) -> str:
    value = _number(text)
    if value is None:
        return text or "—"
    return f"{value:.4g}" if not float(value).is_integer() else str(int(value))


def _plot(path: Path, panels, fronts, numbers) -> str:
    """Draw pareto.png, the front points labelled by ``numbers`` (summary.md's); returns a note
    instead when it cannot."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "matplotlib is not installed (pip install 'normgen[bench]'): no plot."
    columns = min(len(panels), 2)
    rows_ = -(-len(panels) // columns)
    fig = Figure(figsize=(6.0 * columns, 4.5 * rows_), layout="constrained")
    FigureCanvasAgg(fig)
    for index, (column, sense, label) in enumerate(panels):
        ax = fig.add_subplot(rows_, columns, index + 1)
        usable, mask = fronts[column]
        if not usable:
            ax.text(0.5, 0.5, "no point measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(label)
            continue
        xs = np.array([float(r[column]) for r in usable])
        ys = np.array([float(r[ERROR_OBJECTIVE[0]]) for r in usable])
        on = np.array(mask)
        ax.scatter(xs[~on], ys[~on], color="0.6", s=18, label="measured points")
        order = np.argsort(xs[on])
        ax.plot(xs[on][order], ys[on][order], color="C3", marker="o", markersize=6, linewidth=1.2,
                drawstyle="steps-post" if sense == "min" else "steps-pre", label="Pareto front")
        for r, x, y, m in zip(usable, xs, ys, mask):
            if m:
                ax.annotate(str(numbers[id(r)]), (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points",
                            color="C3", annotation_clip=False).set_in_layout(False)
        if np.all(ys > 0):
            ax.set_yscale("log")
        ax.set_xlabel(label + (" — lower is better" if sense == "min" else " — higher is better"))
        ax.set_ylabel(ERROR_OBJECTIVE[2])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    measured = len({id(r) for usable, _ in fronts.values() for r in usable})
    fig.suptitle(f"normgen sweep: {measured} points, error against cost and speed "
                 f"(front points numbered as in summary.md)")
    fig.savefig(path, dpi=110)
    return ""
