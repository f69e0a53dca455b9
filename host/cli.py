"""Command-line interface: ``normgen SUBCOMMAND [options]``.

Subcommands
-----------
``model``
    Run the bit-exact golden model on a ``.npy`` file of float vectors and write the outputs
    (float64, exactly on the output grid) to another ``.npy`` file.
``verilog``
    Emit the Verilog of one core (and, with ``--core-file``, its FuseSoC core description:
    :mod:`normgen.host.fusesoc`).
``sweep``
    Measure a grid of configurations on a Dask cluster (:mod:`normgen.host.sweep`).

Every subcommand that describes a core takes the same options, built by
:func:`add_core_options` and turned into a :class:`~normgen.hw.config.CoreConfig` by
:func:`core_config_from_args`; a new subcommand reuses both.

User errors (a bad option, a bad file, a wrong shape, an impossible configuration) print one line
``normgen: error: ...`` on stderr and nothing else, and exit with status 2; nothing is written
then.  Output files are written to a temporary file next to the target and renamed into place, so
a reader never sees a partial file; an output path that names something other than a regular file
(a directory, a device, a FIFO, a socket) or one of the command's input files is refused, and a
symbolic link is followed, its target replaced.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import stat
import sys
import tempfile

import numpy as np

from normgen.host.npyfile import NpyError, load_npy
from normgen.hw import core_latency, generate_verilog
from normgen.hw.config import ROUNDINGS, RSQRT_FORMS, SCALAR_MULS, ConfigError, CoreConfig
from normgen.hw.kinds import KINDS, NORMS, kind_for

__all__ = ["main", "build_parser", "add_core_options", "core_config_from_args", "CliError", "OneLineParser"]

PROG = "normgen"

#: Defaults of the core options; the same numbers as :class:`CoreConfig`'s own defaults.
DEFAULTS = {field.name: field.default for field in dataclasses.fields(CoreConfig)}

_NPY_MAGIC = b"\x93NUMPY"
_VERILOG_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class CliError(Exception):
    """A user error: reported as ``normgen: error: <message>`` with exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``normgen: error: ...``, like every other
    user error (argparse's own print the usage block first).  Subcommand parsers inherit it."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("normgen")
    except PackageNotFoundError:                                      # pragma: no cover
        return "unknown"


def _note(message: str):
    print(f"{PROG}: {message}", file=sys.stderr)


# ---- input and output files -----------------------------------------------------------------

def load_array(path: str, what: str) -> np.ndarray:
    """Load a ``.npy`` file of real numbers as float64; :class:`CliError` on any problem."""
    if not os.path.exists(path):
        raise CliError(f"{what} file {path!r} does not exist")
    if os.path.isdir(path):
        raise CliError(f"{what} file {path!r} is a directory")
    try:
        with open(path, "rb") as file:
            magic = file.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise CliError(f"cannot read {what} file {path!r}: {exc.strerror or exc}") from None
    if magic != _NPY_MAGIC:
        kind = "an .npz archive" if magic.startswith(b"PK") else "not a .npy file"
        raise CliError(f"{what} file {path!r} is {kind}; expected one array saved with numpy.save")
    try:
        array = load_npy(path)            # header checked first: no pickles, no forged sizes
    except NpyError as exc:
        raise CliError(f"{what} file {path!r}: {exc}") from None
    if array.dtype.kind not in "iuf":
        raise CliError(f"{what} file {path!r} must hold real numbers, not dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise CliError(f"{what} file {path!r} holds {bad} NaN or infinite value(s)")
    return array


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _check_output_path(path: str, what: str, inputs=()):
    """Refuse an output path that exists and is not a regular file (following symbolic links),
    or that is the same file as one of ``inputs`` (``(option, path)`` pairs)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:             # nothing there yet (or a dangling link): it is created
        return
    except OSError as exc:
        raise CliError(f"cannot write {what} {path!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise CliError(f"{what} {path!r} is {kind}; the output must be a regular file")
    for option, source in inputs:
        try:
            same = source is not None and os.path.samefile(path, source)
        except OSError:
            same = False
        if same:
            raise CliError(f"{what} {path!r} is the same file as {option} {source!r}; "
                           f"refusing to overwrite an input")


def _input_paths(args) -> list:
    """The ``(option, path)`` pairs of the input files a command reads."""
    names = ("input", "gamma", "beta", "mean", "var", "from_torch")
    return [(f"--{name.replace('_', '-')}", getattr(args, name)) for name in names
            if getattr(args, name, None) is not None]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str, write, *, binary: bool):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    A symbolic link is followed: its target is replaced and the link stays.  A path that exists
    and is not a regular file is refused (:class:`CliError`)."""
    _check_output_path(path, "output")
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".normgen-", suffix=".tmp")
    except OSError as exc:
        raise CliError(f"cannot write {path!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w") as file:
            write(file)
        os.chmod(temp, 0o666 & ~_umask())             # mkstemp's 0600 is not what `>` would give
        os.replace(temp, target)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CliError(f"cannot write {path!r}: {exc.strerror or exc}") from None
        raise


# ---- the shared core options ------------------------------------------------------------------

def add_core_options(parser: argparse.ArgumentParser, *, norms=NORMS):
    """Add the options that describe one core (norm, sizes, formats, ε, γ/β) to ``parser``."""
    group = parser.add_argument_group("core configuration")
    group.add_argument("--norm", choices=norms, default=None,
                       help=f"normalization (default: from --from-torch, else {DEFAULTS['norm']})")
    group.add_argument("--features", type=int, default=None, metavar="N_MAX",
                       help=f"longest vector N_max, or BatchNorm channels C (default: from --from-torch, "
                            f"else {DEFAULTS['features']})")
    group.add_argument("--lanes", type=int, default=DEFAULTS["lanes"], metavar="P",
                       help="elements per stream beat; must divide N_max (default: %(default)s)")
    for name, help_ in (("in", "input"), ("out", "output"), ("param", "gamma/beta")):
        group.add_argument(f"--{name}-format", default=DEFAULTS[f"{name}_format"], metavar="sI.F",
                           help=f"{help_} fixed-point format: I integer bits with the sign, F fraction "
                                f"bits (default: %(default)s)")
    group.add_argument("--eps", type=float, default=None,
                       help=f"epsilon added to the variance; LayerNorm/RMSNorm round it to the "
                            f"input-squared grid 2**(-2F_in) (default: from --from-torch, else {DEFAULTS['eps']:g})")
    group.add_argument("--gamma", metavar="GAMMA.npy",
                       help="N_max scale factors, quantized to the param format (default: all 1)")
    group.add_argument("--beta", metavar="BETA.npy",
                       help="N_max offsets, quantized to the param format (default: all 0)")
    group.add_argument("--no-affine", dest="affine", action="store_false",
                       help="no gamma/beta stage: the output is the normalized value itself")
    group.add_argument("--mean", metavar="MEAN.npy", help="BatchNorm inference: C running means")
    group.add_argument("--var", metavar="VAR.npy", help="BatchNorm inference: C running variances")
    group.add_argument("--max-batch", type=int, default=None, metavar="M_MAX",
                       help="BatchNorm with batch statistics (training forward): the largest batch; "
                            "without it BatchNorm uses running statistics (--mean/--var)")
    group.add_argument("--momentum", type=float, default=DEFAULTS["momentum"],
                       help="BatchNorm with batch statistics: running-statistics momentum (default: %(default)g)")
    group.add_argument("--from-torch", metavar="FILE",
                       help="take norm, size, eps and parameters from a saved nn.LayerNorm / nn.RMSNorm / "
                            "nn.BatchNorm1d (.pt/.pth, needs torch) or an .npz of its state dict")
    group.add_argument("--from-onnx", metavar="FILE",
                       help="take norm, size, eps and parameters from a LayerNormalization, "
                            "BatchNormalization (inference) or RMSNormalization node of an ONNX model "
                            "(needs onnx)")
    group.add_argument("--onnx-node", metavar="NAME",
                       help="with --from-onnx: the node to take when the model has several")
    group.add_argument("--vector-interval", type=int, default=None, metavar="C",
                       help="LayerNorm/RMSNorm: the per-vector stage takes a new vector every C cycles "
                            "(replicated scalar units), so vectors of >= C beats stream at full rate "
                            "(default: one unit)")
    group.add_argument("--rounding", choices=ROUNDINGS, default=DEFAULTS["rounding"],
                       help="output rounding: faithful (error < 1 LSB) or nearest-even (the exact "
                            "result rounded half to even, every output) (default: %(default)s)")
    group.add_argument("--scalar-mul", choices=SCALAR_MULS, default=DEFAULTS["scalar_mul"],
                       help="per-vector multiplier: parallel (fast) or serial (few DSP blocks) "
                            "(default: %(default)s)")
    group.add_argument("--rsqrt-form", choices=RSQRT_FORMS, default=None,
                       help="reciprocal square root: lookahead (fast clock), compact (fewer logic cells) "
                            "or radix4 (fewest cycles, more logic, slower clock) "
                            "(default: compact with --scalar-mul serial, else lookahead)")
    group.add_argument("--lane-dsp", type=int, default=None, metavar="N",
                       help="at most N 18x18 multiplier blocks per lane: the low bits of gamma*v, then "
                            "of x*A, are multiplied in logic (more LUTs and latency) (default: 3 from 16 "
                            "lanes on, else every product in blocks)")
    return group


def _layer_from_torch(path):
    from normgen.host.torch_import import ImportError_, load_layer
    try:
        return load_layer(path)
    except ImportError_ as exc:
        raise CliError(f"--from-torch: {exc}") from None


def _layer_from_onnx(path, node):
    from normgen.host.onnx_import import load_onnx_layer
    from normgen.host.torch_import import ImportError_
    try:
        return load_onnx_layer(path, node)
    except ImportError_ as exc:
        raise CliError(f"--from-onnx: {exc}") from None


def _imported_layer(args):
    """The layer ``--from-torch`` or ``--from-onnx`` names, or None."""
    from_torch, from_onnx = getattr(args, "from_torch", None), getattr(args, "from_onnx", None)
    if from_torch and from_onnx:
        raise CliError("--from-torch and --from-onnx cannot be used together: choose one source")
    if getattr(args, "onnx_node", None) is not None and not from_onnx:
        raise CliError("--onnx-node selects a node of the --from-onnx model; give --from-onnx FILE")
    if from_torch:
        return _layer_from_torch(from_torch)
    return _layer_from_onnx(from_onnx, getattr(args, "onnx_node", None)) if from_onnx else None


def _pick(option: str, given, imported, default):
    """An explicit option, else the imported value, else the default; a conflict is an error."""
    if given is not None and imported is not None and given != imported:
        raise CliError(f"--{option} {given} contradicts the imported layer's {imported}")
    return given if given is not None else imported if imported is not None else default


def core_config_from_args(args: argparse.Namespace) -> CoreConfig:
    """The :class:`CoreConfig` the options of :func:`add_core_options` describe.

    Raises :class:`CliError` for bad γ/β files and :class:`ConfigError` for impossible
    configurations."""
    if not args.affine and (args.gamma or args.beta):
        raise CliError("--gamma/--beta cannot be used with --no-affine")
    layer = _imported_layer(args)
    norm = _pick("norm", args.norm, layer and layer.norm, DEFAULTS["norm"])
    features = _pick("features", args.features, layer and layer.features, DEFAULTS["features"])
    eps = _pick("eps", args.eps, layer and layer.eps, DEFAULTS["eps"])
    affine = args.affine and (layer is None or layer.affine)
    max_batch = getattr(args, "max_batch", None)
    given = {name for name in ("max_batch", "mean", "var") if getattr(args, name, None) is not None}
    try:
        kind = kind_for(norm, given)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    for name in sorted(given - set(kind.options)):
        owners = " or ".join(f"--norm {k.norm} ({k.summary})" for k in KINDS.values() if name in k.options)
        raise CliError(f"--{name.replace('_', '-')} belongs to {owners}; it does not apply to {kind.summary}")
    if max_batch is not None and layer is not None:
        layer.arrays.pop("mean", None)                 # training forward: batch statistics instead
        layer.arrays.pop("var", None)
    params = dict(layer.arrays) if layer is not None else {}
    if not affine:
        params.pop("gamma", None)
        params.pop("beta", None)
    for name in ("gamma", "beta", "mean", "var"):
        path = getattr(args, name, None)
        if path is None:
            continue
        values = load_array(path, f"--{name}")
        if values.ndim != 1 or values.shape[0] != features:
            raise CliError(f"--{name} file {path!r} must hold a 1-D array of {features} "
                           f"values (features), not shape {values.shape}")
        params[name] = values
    common = dict(norm=norm, features=features, lanes=args.lanes, in_format=args.in_format,
                  out_format=args.out_format, param_format=args.param_format, eps=eps, affine=affine,
                  scalar_mul=getattr(args, "scalar_mul", DEFAULTS["scalar_mul"]),
                  rounding=getattr(args, "rounding", DEFAULTS["rounding"]),
                  vector_interval=getattr(args, "vector_interval", None),
                  lane_dsp=getattr(args, "lane_dsp", None), rsqrt_form=getattr(args, "rsqrt_form", None))
    if max_batch is not None:
        common.update(max_batch=max_batch, momentum=args.momentum)
    try:
        if kind.folded:          # the parameters are folded with the statistics: one step
            return CoreConfig(**common, **params)
        # the sizes and formats first, so that γ/β errors make sense
        cfg = CoreConfig(**common)
        return cfg.with_params(**params) if params else cfg
    except OverflowError:                # ε·2**(2F_in) beyond the float range
        raise CliError(f"--eps {eps!r} is too large for in_format {args.in_format}") from None


# ---- subcommands ------------------------------------------------------------------------------

def _run_model(args) -> int:
    from normgen.sim import golden

    cfg = core_config_from_args(args)
    _check_output_path(args.output, "--output", _input_paths(args))
    if args.batch_size is not None:
        if cfg.kind.statistics != "batch":
            raise CliError("--batch-size is an option of BatchNorm with batch statistics "
                           "(--norm batchnorm --max-batch M_MAX)")
        if not 1 <= args.batch_size <= cfg.max_batch:
            raise CliError(f"--batch-size must be in 1..{cfg.max_batch} (max_batch), not {args.batch_size}")
    x = load_array(args.input, "--input")
    if x.ndim != 2:
        raise CliError(f"--input file {args.input!r} must hold a 2-D array (vectors, N), "
                       f"not shape {x.shape}")
    vectors, n = x.shape
    if not 1 <= n <= cfg.features:
        raise CliError(f"--input vectors have N = {n} elements; N must be in 1..{cfg.features} (N_max)")
    if n % cfg.lanes:
        raise CliError(f"--input vectors have N = {n} elements, not a multiple of lanes = {cfg.lanes}")
    if cfg.kind.statistics == "batch" and n != cfg.features:
        raise CliError(f"--input samples have {n} channels; this BatchNorm core takes exactly C = {cfg.features}")

    x_int, saturated = cfg.in_format.quantize(x)
    fmt = cfg.in_format
    # the notes are printed once the output is written: after an error, its line is the only one
    notes = [f"{cfg.describe()}"]
    if cfg.kind.folded:
        notes.append(f"eps = {cfg.eps!r} (exact: folded with the running statistics)")
    else:
        notes.append(f"effective eps = {cfg.eps_effective!r} (e = {cfg.eps_int} steps of 2**-{2 * fmt.frac_bits})")
    notes.append(f"input: {vectors} vector(s) of {n} values quantized to {fmt}; {saturated} value(s) saturated "
                 f"to [{fmt.min_int * fmt.lsb}, {fmt.max_int * fmt.lsb}]")
    if cfg.kind.statistics == "batch":
        size = args.batch_size or max(1, min(vectors, cfg.max_batch))
        batches = [x_int[start:start + size] for start in range(0, vectors, size)]
        notes.append(f"{len(batches)} batch(es) of up to {size} samples, normalized with their own statistics")
        y_int = [golden.normalize_batch(cfg, b) for b in batches]
        y = cfg.out_format.to_float(np.concatenate(y_int) if y_int else np.zeros((0, n), np.int64))
    else:
        y = cfg.out_format.to_float(golden.normalize(cfg, x_int))
    write_atomically(args.output, lambda f: np.save(f, y, allow_pickle=False), binary=True)
    for note in notes:
        _note(note)
    _note(f"wrote {args.output} ({vectors} x {n}, {cfg.out_format})")
    return 0


def _run_verilog(args) -> int:
    if not _VERILOG_IDENTIFIER.match(args.module_name):
        raise CliError(f"--module-name must be a Verilog identifier ([A-Za-z_][A-Za-z0-9_$]*), "
                       f"not {args.module_name!r}")
    cfg = core_config_from_args(args)
    if args.output != "-":
        _check_output_path(args.output, "--output", _input_paths(args))
    if args.core_file is not None:
        _check_core_file(args)
    text = generate_verilog(cfg, module_name=args.module_name)
    if args.output == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:                   # `normgen verilog | head`: not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        where = "stdout"
    else:
        write_atomically(args.output, lambda f: f.write(text), binary=False)
        where = args.output
    summary = f"{cfg.describe()}, latency {core_latency(cfg)} cycles"
    _note(f"wrote {where}: module {args.module_name}: {summary}")
    if args.core_file is not None:
        _write_core_file(args, summary)
    return 0


def _check_core_file(args):
    if args.output == "-":
        raise CliError("--core-file needs the Verilog in a file (-o CORE.v), not on stdout")
    if not args.core_file.endswith(".core"):
        raise CliError(f"--core-file must end in .core (FuseSoC finds cores by that suffix), "
                       f"not {args.core_file!r}")
    _check_output_path(args.core_file, "--core-file")
    if os.path.abspath(args.core_file) == os.path.abspath(args.output):
        raise CliError("--core-file and --output name the same file")
    core_dir = os.path.dirname(os.path.abspath(args.core_file))
    if os.path.commonpath([core_dir, os.path.abspath(args.output)]) != core_dir:
        raise CliError(f"--core-file {args.core_file!r} must be in the directory of the Verilog file "
                       f"{args.output!r} or above it (FuseSoC takes a core's files from below the core file)")


def _write_core_file(args, description: str):
    from normgen.host.fusesoc import core_description, vlnv

    version = _version()
    version = version if version[:1].isdigit() else "0"
    text = core_description(module_name=args.module_name, verilog_path=args.output,
                            core_path=args.core_file, version=version, description=description)
    write_atomically(args.core_file, lambda f: f.write(text), binary=False)
    _note(f"wrote {args.core_file}: FuseSoC core {vlnv(args.module_name, version)}")


def _run_sweep(args) -> int:
    from normgen.host.sweep import SweepError, load_spec, run_sweep

    if args.workers is not None and args.cluster is not None:
        raise CliError("--workers sizes the local cluster; with --cluster the cluster's own workers run the sweep")
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be >= 1, not {args.workers}")
    try:
        spec = load_spec(args.spec)
        counts = run_sweep(spec, args.output, cluster=args.cluster, workers=args.workers)
    except SweepError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        _note(f"interrupted: the points measured so far are in {os.path.join(args.output, 'results.csv')}; "
              f"the same command resumes the sweep")
        return 130
    _note(f"{counts['points']} point(s): {counts['computed']} measured now ({counts['failed']} of them with an "
          f"error), {counts['skipped']} already in {os.path.join(args.output, 'results.csv')}")
    _note(f"wrote {os.path.join(args.output, 'summary.md')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Generator of fixed-point LayerNorm / RMSNorm / BatchNorm hardware and its bit-exact model.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    model = commands.add_parser(
        "model", help="run the bit-exact golden model on a .npy file",
        description="Quantize float vectors to the input format, normalize them exactly as the "
                    "hardware does, and write the outputs as float64 on the output grid.")
    add_core_options(model)
    files = model.add_argument_group("files")
    files.add_argument("--input", required=True, metavar="X.npy",
                       help="float array of shape (vectors, N), N <= N_max and a multiple of lanes")
    files.add_argument("--output", required=True, metavar="Y.npy", help="where to write the outputs")
    files.add_argument("--batch-size", type=int, default=None, metavar="M",
                       help="BatchNorm with batch statistics: rows per batch (default: all rows, up to M_max)")
    model.set_defaults(run=_run_model)

    verilog = commands.add_parser(
        "verilog", help="emit the Verilog of one core",
        description="Emit the Verilog of one core (see docs/interface.md for its ports).")
    add_core_options(verilog)
    out = verilog.add_argument_group("output")
    out.add_argument("-o", "--output", default="-", metavar="CORE.v",
                     help="Verilog file to write, '-' for stdout (default: %(default)s)")
    out.add_argument("--module-name", default="normgen_core", metavar="NAME",
                     help="name of the top module (default: %(default)s)")
    out.add_argument("--core-file", default=None, metavar="CORE.core",
                     help="also write a FuseSoC (CAPI2) core description of the Verilog file, VLNV "
                          "normgen:cores:NAME:VERSION, with lint and sim targets")
    verilog.set_defaults(run=_run_verilog)

    sweep = commands.add_parser(
        "sweep", help="measure a grid of core configurations on a Dask cluster",
        description="Measure every point of the grid in SPEC.toml (accuracy, cycles, place and route), one "
                    "Dask task per point; rows go to OUTDIR/results.csv as they finish, and a rerun skips "
                    "the points already there.  Then OUTDIR/pareto.png and OUTDIR/summary.md.")
    sweep.add_argument("spec", metavar="SPEC.toml", help="[grid] of CoreConfig fields (lists), [measure] booleans")
    sweep.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="directory of the results")
    sweep.add_argument("--cluster", default=None, metavar="ADDRESS",
                       help="the scheduler of a running Dask cluster (e.g. tcp://10.0.0.5:8786); default: a "
                            "local cluster on this machine's cores")
    sweep.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker processes of the local cluster (default: one per core)")
    sweep.set_defaults(run=_run_sweep)

    from normgen.boards.cli import add_board_parser
    add_board_parser(commands)
    return parser


def main(argv=None) -> int:
    """Run the CLI; returns 0 on success, raises :class:`SystemExit` (status 2) on user errors."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (CliError, ConfigError) as exc:
        message = " ".join(str(exc).split())             # always one line
        parser.exit(2, f"{PROG}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
