# Steps every study's make.sh shares (sourced; PY, SWEEP and DEST set by the caller).
# study_analyse: the finished runs' small files into $DEST/runs, the tidy table, the report for
# both gaps (200 seed-bootstrap replicates), the same correlations without the values a
# PAC-Bayes σ search left undecided (decided_*) and without the runs that hit the epoch cap
# (reached_*), and the sensitivity study of SRR, path-norm, path-norm/margin and sharpness,
# each against the others at their defaults.
study_analyse() {
  $PY -m sweeps.status "$SWEEP" --keep-light "$DEST/runs"
  $PY -m analysis.cli collect "$DEST/runs" -o "$DEST/results.csv"
  for gap in gap_acc gap_loss; do
    $PY -m analysis.cli report "$DEST/results.csv" --gap "gen.$gap" --out "$DEST/report_$gap" --bootstrap 200 \
      > "$DEST/report_$gap.log" 2>&1
    $PY -m analysis.cli correlate "$DEST/results.csv" --gap "gen.$gap" --out "$DEST/decided_$gap" --bootstrap 200 \
      --drop-undecided > "$DEST/decided_$gap.log" 2>&1
    $PY -m analysis.cli correlate "$DEST/results.csv" --gap "gen.$gap" --out "$DEST/reached_$gap" --bootstrap 200 \
      --drop-nonconverged > "$DEST/reached_$gap.log" 2>&1
  done
  for m in srr path_norm path_norm_over_margin sharpness; do
    against=$(echo srr,path_norm,sharpness | tr , '\n' | grep -vx "$m" | paste -sd,)
    $PY -m analysis.cli sensitivity "$DEST/results.csv" --measure "$m" --against "$against" \
      --out "$DEST/sensitivity/$m" --bootstrap 200 > "$DEST/sensitivity_$m.log" 2>&1
  done
}

# study_runs_md: one Markdown row per run of $DEST/results.csv (its settings, epochs, gaps, status);
# a setting that is the same in every run is not a column.
study_runs_md() {
  $PY - "$DEST/results.csv" <<'PY'
import sys
import pandas as pd
df = pd.read_csv(sys.argv[1])
cols = {"hp.variant": "variant", "hp.n_train": "n_train", "hp.width": "width", "hp.lr": "lr",
        "hp.batch_size": "batch", "hp.dropout": "dropout", "hp.seed": "seed", "gen.epochs": "epochs",
        "is.converged": "converged", "gen.train_loss": "train CE", "gen.test_acc": "test acc",
        "gen.gap_acc": "gap (acc)", "gen.gap_loss": "gap (loss)", "status": "status"}
cols = {k: v for k, v in cols.items() if k in df and (not k.startswith("hp.") or df[k].nunique() > 1)}
order = [v for v in ("n_train", "dropout", "width", "lr", "batch", "seed", "variant") if v in cols.values()]
t = df[list(cols)].rename(columns=cols).sort_values(order)
print("| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns))
for row in t.itertuples(index=False):
    print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
PY
}

# study_resume RUNS SWEEP: copy a study's committed runs (small files, no weights) into the
# sweep directory, so that a relaunch there trains only the runs not yet finished.
study_resume() {
  mkdir -p "$2"
  [ -d "$1" ] || return 0
  for run in "$1"/*/; do
    [ -e "$2/$(basename "$run")" ] || cp -r "$run" "$2/"
  done
}
