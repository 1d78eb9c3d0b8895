# Steps every study's make.sh shares (sourced; PY, SWEEP and DEST set by the caller).
# study_analyse: the finished runs' small files into $DEST/runs, the tidy table, the report for
# both gaps (200 seed-bootstrap replicates) and the sensitivity study of SRR, path-norm,
# path-norm/margin and sharpness, each against the others at their defaults.
study_analyse() {
  $PY -m sweeps.status "$SWEEP" --keep-light "$DEST/runs"
  $PY -m analysis.cli collect "$DEST/runs" -o "$DEST/results.csv"
  for gap in gap_acc gap_loss; do
    $PY -m analysis.cli report "$DEST/results.csv" --gap "gen.$gap" --out "$DEST/report_$gap" --bootstrap 200 \
      > "$DEST/report_$gap.log" 2>&1
  done
  for m in srr path_norm path_norm_over_margin sharpness; do
    against=$(echo srr,path_norm,sharpness | tr , '\n' | grep -vx "$m" | paste -sd,)
    $PY -m analysis.cli sensitivity "$DEST/results.csv" --measure "$m" --against "$against" \
      --out "$DEST/sensitivity/$m" --bootstrap 200 > "$DEST/sensitivity_$m.log" 2>&1
  done
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
