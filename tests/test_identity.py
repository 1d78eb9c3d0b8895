"""Run identity (srr_bench.identity): everything that changes what a run computes enters the id,
what does not is listed in one place, and no committed run's id moves."""
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
import yaml

from srr_bench.config import compose
from srr_bench.identity import CONDITIONAL_KEYS, NON_RESULT_KEYS, SRR_BASELINE, SRR_NON_RESULT, run_id
from srr_bench.settings import SRRSettings

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "sweeps" / "conf" / "experiment").glob("*.yaml"))


def leaves(d: Mapping[str, Any], prefix: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every leaf of a nested config, an empty mapping included (``measure.settings: {}``)."""
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def changed(v: Any) -> Any:
    """Another value of the same kind (numbers doubled, so that widths stay divisible by heads)."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v * 2 if v else 1
    if isinstance(v, str):
        return v + "_other"
    if isinstance(v, list):
        return v + (v[-1:] or [1])
    if isinstance(v, Mapping):
        return {"other": 1}
    return 1  # None


def with_leaf(cfg: Mapping[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    out = dict(cfg)
    out[path[0]] = with_leaf(cfg[path[0]], path[1:], value) if path[1:] else value
    return out


def covered(key: str, cfg: Mapping[str, Any]) -> bool:
    """The key is listed as not changing results here (``NON_RESULT_KEYS``, or an inactive conditional)."""
    under = lambda prefixes: any(key == p or key.startswith(p + ".") for p in prefixes)  # noqa: E731
    if under(NON_RESULT_KEYS):
        return True
    regularised = bool((cfg.get("reg") or {}).get("alpha"))
    if key.startswith("reg.") and key != "reg.alpha":
        return not regularised
    if key.startswith("srr."):
        return not regularised or key[len("srr."):] in SRR_NON_RESULT
    return False


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
@pytest.mark.parametrize("regulariser", ["off", "on"])
def test_every_leaf_changes_the_id_or_is_listed(experiment, regulariser):
    """Walks every leaf of the composed config: changing it changes the run id exactly when it is not
    listed as result-neutral (for this config: the regulariser's sections count only when it is on)."""
    args = [f"experiment={experiment}"] if experiment else []
    cfg = compose(args + (["reg.alpha=0.001"] if regulariser == "on" else ["reg.alpha=0"]), validate=False)
    base = run_id(cfg)
    wrong = []
    for path, value in leaves(cfg):
        key = ".".join(path)
        moved = run_id(with_leaf(cfg, path, changed(value))) != base
        if moved == covered(key, cfg):
            wrong.append(f"{key}: id {'changed' if moved else 'unchanged'}")
    assert not wrong, wrong


def test_the_lists_name_keys_that_exist():
    """No stale entry: each listed key is in some shipped config (or is a loader option / Hydra's node)."""
    keys = {".".join(p) for e in [None, *EXPERIMENTS]
            for p, _ in leaves(compose([f"experiment={e}"] if e else [], validate=False))}
    for listed in [*NON_RESULT_KEYS, *CONDITIONAL_KEYS]:
        exists = any(k == listed or k.startswith(listed + ".") for k in keys)
        assert exists or listed.startswith("data.options.") or listed in ("hydra", "model.dropout_placement"), listed
    assert set(SRR_BASELINE) == set(SRRSettings.model_fields)  # a new SRR setting must be added to the baseline


def test_regularised_runs_that_differ_in_an_srr_setting_are_different_runs():
    """The silent collision: the regulariser reads ε, so ε is part of a regularised run's identity."""
    on = ["reg.alpha=0.001"]
    assert run_id(compose(on + ["srr.eps=0.05"])) != run_id(compose(on))
    assert run_id(compose(on + ["srr.normalize=head"])) != run_id(compose(on))
    assert run_id(compose(on + ["srr.eps=0.1"])) == run_id(compose(on))  # the default, spelt out
    assert run_id(compose(on + ["srr.chunk=8"])) == run_id(compose(on))  # memory only
    assert run_id(compose(["srr.eps=0.05"])) == run_id(compose([]))  # cross-entropy: ε is never read


def test_a_sweep_over_eps_with_the_regulariser_gives_one_run_directory_per_value():
    from sweeps import grid
    from tests.test_sweeps import master_config

    master, loader = master_config("reg.alpha=0.001", "hydra.sweeper.params={srr.eps: '0.05,0.1,0.5'}")
    jobs = grid.jobs(master, loader)
    assert len(jobs) == 3 and len({j.run_id for j in jobs}) == 3


COMMITTED = sorted(ROOT.glob("results/*/runs/*/config.yaml"))


def test_committed_runs_keep_their_ids():
    """The light files of every committed run: the id computed from its config.yaml today is the one
    in its directory name and its metrics.json, so a relaunch finds it and never retrains it."""
    import json

    assert len(COMMITTED) >= 103
    moved = []
    for path in COMMITTED:
        rid = run_id(yaml.safe_load(path.read_text()))
        metrics = json.loads((path.parent / "metrics.json").read_text())
        if not (path.parent.name.endswith("-" + rid) and metrics.get("run_id") in (None, rid)):
            moved.append(path.parent.name)
    assert not moved, moved


def test_an_experiment_grid_keeps_the_ids_of_its_committed_runs():
    """The converged study's grid, composed today, names the directories committed under results/."""
    from tests.test_sweeps import experiment_jobs

    ids = {j.run_dir.name for j in experiment_jobs("experiment=converged_cifar10_cpu")}
    committed = {p.parent.name for p in COMMITTED if p.parts[-4] == "converged_cifar10_cpu"}
    assert len(ids) == 128 and committed and committed <= ids


def test_the_ntrain_grid_holds_the_converged_configs_at_1000_images():
    """experiment=ntrain_cifar10_cpu: 5 sizes x 4 variants x 2 seeds; its runs at 1,000 images
    are 8 configurations of the converged grid (same ids: the nested subsets and the measure
    settings change no run id), trained again in the study's own sweep directory."""
    from sweeps import grid
    from tests.test_sweeps import master_config

    master, loader = master_config("experiment=ntrain_cifar10_cpu")
    ids = {j.run_dir.name for j in grid.jobs(master, loader)}
    committed = {p.parent.name for p in COMMITTED if p.parts[-4] == "converged_cifar10_cpu"}
    assert len(ids) == 40 and len(ids & committed) == 8
