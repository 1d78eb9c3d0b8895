"""``srr-analyze``: collect sweep results, correlate measures with the gap, write a report.

    srr-analyze collect SWEEP_DIR... -o results.csv [--drop-nonconverged] [--drop-diverged]
                        [--min-train-acc X]
    srr-analyze correlate results.csv --gap gen.gap_acc --out DIR [--bootstrap N] [--seed S]
                          [--include-diverged] [--drop-nonconverged] [--min-train-acc X]
                          [--drop-undecided]
    srr-analyze report SWEEP_DIR_or_CSV... --out DIR [--gap ...] [--bootstrap N]
                       [--include-diverged] [--drop-nonconverged] [--min-train-acc X]
                       [--drop-undecided]
    srr-analyze regularization SWEEP_DIR_or_CSV... --out DIR [--drop-diverged]
    srr-analyze retest TEST RETEST --out DIR [--gap gen.gap_acc]
    srr-analyze sensitivity SWEEP_DIR_or_CSV... --out DIR [--measure srr] [--gaps gap_acc,gap_loss]
                            [--against path_norm,sharpness]
                            [--values last] [--bootstrap N] [--seed S] [filters as correlate]

``correlate`` and ``report`` leave diverged, failed and unfinished runs (and with the
filters non-converged and low-accuracy ones) out of the correlations and print, on stderr,
how many runs were left out per reason, how many values each measure lost (NaN, ±inf, and
with ``--drop-undecided`` the values its own search left undecided; otherwise those are
used and counted),
and a warning for every hyperparameter axis that lost a value; measures that are
constant, nearly constant, NaN or ±inf on part of the runs are flagged, not ranked
(:mod:`analysis.exclusions`, :mod:`analysis.flags`).

``sensitivity`` scores every specification of one measure (``measure.srr`` and every
``measure.srr[key=value,...]`` column, see measures.specs; SRR's layer aggregation is the
column ``.last`` against the main value, the mean) against each gap: τ and Ψ with
seed-bootstrap intervals, written as sensitivity_<measure>.csv|.md and one specification
curve per gap (figures/spec_curve_<measure>_<gap>.png) into DIR (:mod:`analysis.sensitivity`).

``retest`` matches two result tables (or sweep directories) of the same runs, the second
retrained under a float-level perturbation (another CPU or kernel choice, another thread
count), and gives each measure's agreement with itself (τ_b between the two, the retest
noise against the seed-to-seed spread) beside its τ with the gap: retest.csv|.md in DIR
(:mod:`analysis.retest`).

``regularization`` compares CE+SRR runs with their cross-entropy baselines (test accuracy,
95% intervals; see analysis.regularization): it writes regularization.csv|.md|.tex and the
figures into DIR and prints the Markdown table.

Bad input (missing file, a table without ``measure.*`` columns or without the gap column,
a malformed table, no regularized run or no CE baseline) prints one line
``srr-analyze: error: ...`` on stderr and exits 2. An operating-system error while writing
(a full disk, a read-only or unwritable ``--out``, a name too long) prints one line
``srr-analyze: error: PATH: CAUSE (FIX)`` and exits 1; a closed pipe (``srr-analyze ... |
head``) ends quietly with status 141 (128 + SIGPIPE), the output files already written.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from analysis.schema import DEFAULT_GAP, AnalysisError
from srr_bench.io import closed_pipe_exit, os_error_line

PROG = "srr-analyze"


def _filters(p: argparse.ArgumentParser, correlations: bool = False) -> None:
    p.add_argument("--drop-nonconverged", action="store_true", help="drop runs not flagged converged")
    if correlations:
        p.add_argument("--include-diverged", action="store_true",
                       help="keep diverged runs in the correlations (default: left out and counted)")
        p.add_argument("--drop-diverged", action="store_true", help=argparse.SUPPRESS)  # the default
        p.add_argument("--drop-undecided", action="store_true",
                       help="leave out of a measure the values its own search left undecided (PAC-Bayes "
                            "σ searches with converged: false; default: used as they are, and counted)")
    else:
        p.add_argument("--drop-diverged", action="store_true", help="drop runs whose status is 'diverged'")
    p.add_argument("--min-train-acc", type=float, default=None, metavar="X",
                   help="drop runs with gen.train_acc below X (a fraction)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Collect sweep results, correlate measures "
                                "with the generalization gap, write tables, figures and a report.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("collect", help="build the tidy table from sweep directories")
    c.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR")
    c.add_argument("-o", "--output", required=True, help="results.csv or results.parquet")
    _filters(c)

    r = sub.add_parser("correlate", help="tau, Psi, K and sign-error of every measure")
    r.add_argument("table", help="tidy table (.csv or .parquet)")
    r.add_argument("--gap", default=DEFAULT_GAP, help=f"gap column (default {DEFAULT_GAP})")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory")
    r.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="seed-bootstrap replicates for CIs of tau and Psi (default 0: none)")
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap generator")
    _filters(r, correlations=True)

    m = sub.add_parser("report", help="tables, figures and report.md")
    m.add_argument("source", nargs="+", metavar="SWEEP_DIR_or_CSV")
    m.add_argument("--out", required=True, metavar="DIR")
    m.add_argument("--gap", default=DEFAULT_GAP)
    m.add_argument("--bootstrap", type=int, default=100, metavar="N",
                   help="seed-bootstrap replicates (default 100; 0 to skip)")
    m.add_argument("--seed", type=int, default=0)
    _filters(m, correlations=True)

    s = sub.add_parser("sensitivity", help="tau and Psi of every specification of a measure: table and figure")
    s.add_argument("source", nargs="+", metavar="SWEEP_DIR_or_CSV")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory")
    s.add_argument("--measure", default="srr", help="the measure whose specifications are compared (default srr)")
    s.add_argument("--gaps", default="gap_acc,gap_loss", help="comma-separated gap columns (default gap_acc,gap_loss)")
    s.add_argument("--values", default=None, metavar="SUFFIXES",
                   help="comma-separated value suffixes scored per specification ('main' = the main value); "
                        "default: mean and last when the measure stores both, else the main value")
    s.add_argument("--bootstrap", type=int, default=200, metavar="N", help="seed-bootstrap replicates (default 200)")
    s.add_argument("--seed", type=int, default=0, help="seed of the bootstrap generator")
    s.add_argument("--against", default=None, metavar="MEASURES",
                   help="comma-separated measures scored at their defaults on the same runs and resamples, "
                        "e.g. path_norm,sharpness: how many specifications beat each")
    _filters(s, correlations=True)

    t = sub.add_parser("retest", help="each measure's agreement with itself on the same runs retrained")
    t.add_argument("test", metavar="TEST", help="table (.csv or .parquet) or sweep directory")
    t.add_argument("retest", metavar="RETEST", help="the same runs retrained: table or sweep directory")
    t.add_argument("--out", required=True, metavar="DIR", help="output directory")
    t.add_argument("--gap", default=DEFAULT_GAP, help=f"gap column (default {DEFAULT_GAP})")

    g = sub.add_parser("regularization", help="CE vs CE+SRR test accuracy: tables and figures")
    g.add_argument("source", nargs="+", metavar="SWEEP_DIR_or_CSV")
    g.add_argument("--out", required=True, metavar="DIR", help="output directory")
    g.add_argument("--drop-diverged", action="store_true",
                   help="drop runs whose status is 'diverged' (default: count them per row)")
    return p


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if args.command == "collect":
        from analysis.collect import collect, write_table
        df = collect(args.sweep_dirs, args.drop_nonconverged, args.drop_diverged,
                     args.min_train_acc, log=_log)
        path = write_table(df, args.output)
        _log(f"wrote {len(df)} rows x {df.shape[1]} columns to {path}")
    elif args.command == "correlate":
        from analysis.collect import read_table
        from analysis.correlate import correlate
        from analysis.tables import notes, to_markdown, write_tables
        corr = correlate(read_table(args.table), gap=args.gap, n_boot=args.bootstrap, seed=args.seed,
                         include_diverged=args.include_diverged, converged_only=args.drop_nonconverged,
                         min_train_acc=args.min_train_acc, drop_undecided=args.drop_undecided)
        for line in notes(corr):
            _log(line)
        paths = write_tables(corr, args.out)
        print(to_markdown(corr))
        _log(f"wrote {paths['csv']}, {paths['md'].name}, {paths['tex'].name}")
    elif args.command == "regularization":
        from analysis.regularization import (format_table, plot_layerwise, plot_regularization,
                                             regularization_table, write_regularization)
        from analysis.report import load_source
        src = args.source[0] if len(args.source) == 1 else args.source
        df, _ = load_source(src, drop_diverged=args.drop_diverged, log=_log)
        table = regularization_table(df)
        paths = [*write_regularization(table, args.out).values(), *plot_regularization(table, args.out),
                 *plot_layerwise(df, args.out)]
        print(format_table(table, "md"), end="")
        _log("wrote " + ", ".join(str(p) for p in paths))
    elif args.command == "sensitivity":
        _sensitivity(args)
    elif args.command == "retest":
        from analysis.report import load_source
        from analysis.retest import retest, to_markdown, write_retest
        table = retest(load_source(args.test, log=_log)[0], load_source(args.retest, log=_log)[0], gap=args.gap)
        paths = write_retest(table, args.out)
        print(to_markdown(table), end="")
        _log("wrote " + ", ".join(str(p) for p in paths.values()))
    else:
        from analysis.report import report
        src = args.source[0] if len(args.source) == 1 else args.source
        path = report(src, args.out, gap=args.gap, n_boot=args.bootstrap, seed=args.seed,
                      drop_nonconverged=args.drop_nonconverged, drop_diverged=not args.include_diverged,
                      min_train_acc=args.min_train_acc, drop_undecided=args.drop_undecided, log=_log)
        _log(f"wrote {path}")
    return 0


def _sensitivity(args: argparse.Namespace) -> None:
    from pathlib import Path

    from analysis.plots import plot_spec_curve
    from analysis.report import load_source
    from analysis.sensitivity import gap_column, sensitivity, to_markdown, write_sensitivity
    src = args.source[0] if len(args.source) == 1 else args.source
    df, _ = load_source(src, log=_log)
    gaps = [gap_column(g) for g in args.gaps.split(",") if g.strip()]
    values = None if args.values is None else ["" if v.strip() == "main" else v.strip()
                                               for v in args.values.split(",") if v.strip()]
    table = sensitivity(df, args.measure, gaps, values, n_boot=args.bootstrap, seed=args.seed,
                        include_diverged=args.include_diverged, converged_only=args.drop_nonconverged,
                        min_train_acc=args.min_train_acc, drop_undecided=args.drop_undecided,
                        against=[a.strip() for a in (args.against or "").split(",") if a.strip()])
    for gap in gaps:
        for line in table.attrs["notes"][gap]:
            _log(f"{gap}: {line}")
    paths = [*write_sensitivity(table, args.out).values()]
    paths += [p for g in gaps if (p := plot_spec_curve(table, g, Path(args.out) / "figures")) is not None]
    print(to_markdown(table), end="")
    _log("wrote " + ", ".join(str(p) for p in paths))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``srr-analyze``; returns the exit code (2 on bad input, 1 on an
    operating-system error, 141 when the reader of stdout has gone)."""
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _warning_line
            return _run(args)
    except (AnalysisError, FileNotFoundError, IsADirectoryError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # srr-analyze ... | head: the reader went away, the files are written
        return closed_pipe_exit()
    except OSError as e:  # a full disk, a read-only or unwritable --out, a name too long
        print(f"{PROG}: error: {os_error_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
