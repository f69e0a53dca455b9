"""``normgen board run|build|prog|report``: the dev-board images from the command line.

Hook into the main CLI (``normgen.host.cli.build_parser``)::

    from normgen.boards.cli import add_board_parser
    add_board_parser(commands)

Standalone: ``python -m normgen.boards.cli board run ...``.

Exit status: 0 on success; 1 when ``--check`` finds mismatches, the link fails, the build fails
or misses timing, or the programmer fails; 2 on usage errors (as the main CLI).
"""
from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np

__all__ = ["add_board_parser", "main"]

PROG = "normgen"


def _note(message: str):
    print(f"{PROG}: {message}", file=sys.stderr)


def _cli_error():
    from normgen.host.cli import CliError
    return CliError


def _boards():
    from .images import BOARDS
    return BOARDS


# ---- run ----------------------------------------------------------------------------------------
def _open_port(args, image):
    try:
        import serial
    except ImportError:
        raise _cli_error()("pyserial is not installed (pip install pyserial)") from None
    baud = args.baud or image.baud
    try:        # a device path, or a pyserial URL (e.g. rfc2217://host:port for a remote board)
        return serial.serial_for_url(args.port, baudrate=baud, timeout=0.5)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise _cli_error()(f"cannot open {args.port} at {baud} baud: {exc}") from None


def _run_run(args) -> int:
    from normgen.host.cli import _check_output_path, _input_paths, load_array, write_atomically
    from normgen.sim import golden

    from .host import BoardError, BoardLink

    CliError = _cli_error()
    image = _boards()[args.board]
    cfg = image.core_config()
    if args.output:
        _check_output_path(args.output, "--output", _input_paths(args))
    x = load_array(args.input, "--input")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise CliError(f"--input file {args.input!r} must hold a 2-D array (vectors, N), not shape {x.shape}")
    vectors, n = x.shape
    if not 1 <= n <= cfg.features or n % cfg.lanes:
        raise CliError(f"--input vectors have N = {n} elements; the {args.board} image takes 1..{cfg.features} "
                       f"(N_max), a multiple of P = {cfg.lanes}")
    params = None
    if args.gamma or args.beta:
        if not cfg.affine:
            raise CliError(f"the {args.board} image has no affine stage: --gamma/--beta cannot be used")
        gamma = load_array(args.gamma, "--gamma") if args.gamma else np.ones(cfg.features)
        beta = load_array(args.beta, "--beta") if args.beta else np.zeros(cfg.features)
        for name, values in (("--gamma", gamma), ("--beta", beta)):
            if values.shape != (cfg.features,):
                raise CliError(f"{name} must hold {cfg.features} values (N_max), not shape {values.shape}")
        from normgen.hw.config import ConfigError
        try:
            cfg = cfg.with_params(gamma, beta)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        params = (cfg.gamma_int, cfg.beta_int)

    x_int, saturated = cfg.in_format.quantize(x)
    port = _open_port(args, image)              # a user error: before any status line
    _note(f"{image.title}: {cfg.describe()}")
    _note(f"input: {vectors} vector(s) of {n} values quantized to {cfg.in_format}; {saturated} saturated")
    try:
        try:
            link = BoardLink(port, expected=image.identity, retries=args.retries, margin_s=args.margin,
                             window=args.window)
            _note(f"board: {link.identity.describe()}")
            if params is not None:
                link.load_params(*params)
                _note("loaded gamma/beta")
            y_int = link.normalize_int(list(x_int), progress=not args.no_progress and vectors > 1)
        except BoardError as exc:
            _note(f"error: {exc}")
            return 1
        finally:
            if "link" in locals():
                _note(f"link: {link.stats.summary()}")
    finally:
        port.close()
    y_int = np.stack(y_int)
    y = cfg.out_format.to_float(y_int)
    if args.output:
        write_atomically(args.output, lambda f: np.save(f, y, allow_pickle=False), binary=True)
        _note(f"wrote {args.output} ({vectors} x {n}, {cfg.out_format})")
    if args.check:
        expected = golden.normalize(cfg, x_int)
        bad = np.argwhere(y_int != expected)
        if len(bad):
            _note(f"check: {len(bad)} of {y_int.size} outputs differ from the golden model "
                  f"in {len(set(bad[:, 0]))} vector(s)")
            for vec, idx in bad[:10]:
                _note(f"  vector {vec} element {idx}: board {y_int[vec, idx]}, golden {expected[vec, idx]}")
            return 1
        _note(f"check: all {y_int.size} outputs bit-exact with the golden model")
    return 0


# ---- build, prog, report -------------------------------------------------------------------------
def _run_build(args) -> int:
    from .build import BuildError, build_board
    try:
        build_board(args.board, toolchain=args.toolchain, seed=args.seed,
                    log=lambda text: print(text, file=sys.stderr))
    except BuildError as exc:
        _note(f"error: {exc}")
        return 1
    return 0


def _run_prog(args) -> int:
    from .build import BuildError, program_board
    try:
        command = program_board(args.board, bitstream=args.bitstream, flash=args.flash, dry_run=args.dry_run,
                                log=lambda text: print(text))
    except BuildError as exc:
        _note(f"error: {exc}")
        return 1
    if args.dry_run:
        _note(f"dry run: not executed ({shlex.join(command)})")
    return 0


def _run_report(args) -> int:
    import json
    from pathlib import Path

    from .build import BuildError, board_build_dir, report_markdown, update_docs
    reports = []
    for board in args.board or sorted(_boards()):
        path = board_build_dir(board) / "report.json"
        if not path.exists():
            _note(f"no report for {board} ({path}): run `normgen board build --board {board}`")
            return 1
        reports.append(json.loads(path.read_text()))
    print(report_markdown(reports), end="")
    if args.update_docs:
        try:
            changed = update_docs(Path(args.update_docs), reports)
        except (BuildError, OSError) as exc:
            _note(f"error: {exc}")
            return 1
        _note(f"{args.update_docs}: {'updated' if changed else 'already up to date'}")
    return 0


def add_board_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``board`` with its subcommands to an argparse subparsers object."""
    boards = sorted(_boards())
    board = subparsers.add_parser(
        "board", help="dev-board images: run vectors on a board, build and program bitstreams",
        description="Dev-board images of the core behind a UART host link "
                    "(iCEBreaker: iCE40UP5K, ULX3S: ECP5-85F). See docs/boards.md.")
    commands = board.add_subparsers(dest="board_command", metavar="BOARD_COMMAND", required=True)

    run = commands.add_parser(
        "run", help="normalize vectors on a board over its USB UART",
        description="Quantize float vectors to the image's input format, normalize them on the board "
                    "and write the outputs (float64 on the output grid). The board must answer IDENTIFY "
                    "with the image's configuration.")
    run.add_argument("--board", required=True, choices=boards)
    run.add_argument("--port", required=True, help="serial port of the board's USB UART (e.g. /dev/ttyUSB1)")
    run.add_argument("--input", required=True, metavar="X.npy", help="float array (vectors, N) or (N,)")
    run.add_argument("--output", metavar="Y.npy", help="where to write the outputs")
    run.add_argument("--check", action="store_true",
                     help="compare every output with the golden model; exit 1 on any mismatch")
    run.add_argument("--gamma", metavar="GAMMA.npy", help="load N_max scale factors first (LOAD_PARAMS)")
    run.add_argument("--beta", metavar="BETA.npy", help="load N_max offsets first (LOAD_PARAMS)")
    run.add_argument("--baud", type=int, help="override the image's baud rate")
    run.add_argument("--retries", type=int, default=5, help="further attempts per frame (default: %(default)s)")
    run.add_argument("--margin", type=float, default=0.25,
                     help="seconds allowed per reply on top of its wire time (default: %(default)s)")
    run.add_argument("--window", type=int, choices=(1, 2), default=2,
                     help="NORMALIZE requests in flight (default: %(default)s)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(run=_run_run)

    build = commands.add_parser(
        "build", help="build a board's bitstream and its utilization/timing report",
        description="Build the bitstream (Yosys, nextpnr, icepack/ecppack) into build/<board>/ and write "
                    "report.json and report.md (utilization, fmax against the clock constraint). Exit 1 if "
                    "timing is not met.")
    build.add_argument("--board", required=True, choices=boards)
    build.add_argument("--toolchain", choices=("yowasp", "system"), default="yowasp",
                       help="yowasp: the YoWASP Python packages (default); system: yosys/nextpnr/... on PATH")
    build.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default: %(default)s)")
    build.set_defaults(run=_run_build)

    prog = commands.add_parser(
        "prog", help="program a board (iceprog / openFPGALoader)",
        description="Load the built bitstream into the board's FPGA (SRAM, or flash with --flash).")
    prog.add_argument("--board", required=True, choices=boards)
    prog.add_argument("--bitstream", help="bitstream file (default: build/<board>/normgen_<board>.bin|.bit)")
    prog.add_argument("--flash", action="store_true", help="write the configuration flash instead of SRAM")
    prog.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    prog.set_defaults(run=_run_prog)

    report = commands.add_parser(
        "report", help="print the resource/timing table of the built boards",
        description="Print the markdown table from build/<board>/report.json; --update-docs rewrites "
                    "the generated table in docs/boards.md.")
    report.add_argument("--board", action="append", choices=boards, help="(default: all)")
    report.add_argument("--update-docs", metavar="DOCS.md", help="rewrite the generated table in this file")
    report.set_defaults(run=_run_report)
    return board


def main(argv=None) -> int:
    """Standalone entry: ``python -m normgen.boards.cli board ...``."""
    from normgen.host.cli import OneLineParser
    parser = OneLineParser(prog=PROG)
    add_board_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    from normgen.host.cli import CliError
    from normgen.hw.config import ConfigError
    try:
        return args.run(args)
    except (CliError, ConfigError) as exc:
        parser.exit(2, f"{PROG}: error: {' '.join(str(exc).split())}\n")


if __name__ == "__main__":
    sys.exit(main())
