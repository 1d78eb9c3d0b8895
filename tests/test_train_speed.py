"""The training side's shortcuts compute what the plain paths compute (benchmarks/train_levers.py
measures what they save): the foreach AdamW on a CPU, chunked evaluation, and the final
train-set figures taken from the last epoch's evaluation."""
import pytest
import torch

import srr_bench.train as train_module
from srr_bench.data import load_data
from srr_bench.models import build_model
from srr_bench.optim import build_optimizer
from srr_bench.train import evaluate, train, train_step


def _model(cfg, data):
    torch.manual_seed(0)
    return build_model(cfg["model"], image_size=data.image_size, channels=data.channels, num_classes=data.num_classes)


def test_cpu_adamw_is_foreach_and_takes_the_single_tensor_steps(small_cfg):
    """Both updates in one process on the same batches: foreach runs the single-tensor update's
    operations in the same order, so parameters and moments come out the same."""
    cfg = small_cfg()
    data = load_data(cfg["data"])
    runs = []
    for foreach in (True, None):
        model = _model(cfg, data)
        opt = build_optimizer(model, dict(name="adamw", lr=3e-3, weight_decay=0.05))
        assert all(g["foreach"] for g in opt.param_groups)  # what the suite asks for on a CPU
        for g in opt.param_groups:
            g["foreach"] = foreach  # None: torch's CPU default, the single-tensor update
        for epoch in range(2):
            gen = torch.Generator().manual_seed(epoch)
            for x, y in data.batches("train", 64, generator=gen, shuffle=True):
                train_step(model, model, opt, x, y, 3e-3, bf16=False)
        runs.append((model, opt))
    (a, opt_a), (b, opt_b) = runs
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    for p, q in zip(a.parameters(), b.parameters()):
        sa, sb = opt_a.state[p], opt_b.state[q]
        assert sa["step"] == sb["step"] > 0
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_chunked_evaluation_runs_small_forward_passes_and_gives_the_whole_batch_figures(small_cfg):
    cfg = small_cfg()
    data = load_data(cfg["data"])
    model = _model(cfg, data)
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    whole = evaluate(model, data, "train", chunk=1024)
    assert seen == [1024, len(data.train) - 1024]  # one forward pass per batch of 1,024 images
    seen.clear()
    chunked = evaluate(model, data, "train", chunk=100)
    assert max(seen) == 100 and sum(seen) == len(data.train)
    assert chunked[0] == pytest.approx(whole[0], rel=1e-6) and chunked[1] == whole[1]
    assert model.training  # evaluation leaves the mode as it found it


def _count_train_evaluations(monkeypatch) -> list[str]:
    calls: list[str] = []
    plain = train_module.evaluate

    def counting(model, data, split, *args, **kwargs):
        calls.append(split)
        return plain(model, data, split, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", counting)
    return calls


def test_final_train_figures_are_the_last_epochs_evaluation_of_the_same_weights(small_cfg, tmp_path, monkeypatch):
    calls = _count_train_evaluations(monkeypatch)
    m = train(small_cfg("train.epochs=3", "train.eval_train_every_epoch=true"), tmp_path)
    assert calls.count("train") == m["train_evals"] == 4  # initialisation and 3 epochs; none at the end
    last = (tmp_path / "history.csv").read_text().splitlines()[-1].split(",")
    assert last[0] == "3" and float(last[2]) == m["train_loss"] and float(last[3]) == m["train_acc"]
    from srr_bench.checkpoints import load_model
    from srr_bench.rundir import FINAL

    loss, acc = evaluate(load_model(tmp_path / FINAL), load_data(small_cfg()["data"]), "train")
    assert loss == pytest.approx(m["train_loss"], rel=1e-6) and acc == m["train_acc"]


def test_final_train_set_is_evaluated_when_the_last_epoch_did_not(small_cfg, tmp_path, monkeypatch):
    calls = _count_train_evaluations(monkeypatch)
    # stop=epochs without per-epoch evaluation: the gate opens only near a CE milestone, which two
    # digits epochs do not reach, so only the initialisation is evaluated during training
    m = train(small_cfg("train.epochs=2", "train.eval_train_every_epoch=false", "train.stop=epochs"), tmp_path)
    assert m["train_evals"] == 1 and calls.count("train") == 2
    header, *rows = (tmp_path / "history.csv").read_text().splitlines()
    assert header.split(",")[2] == "train_loss" and rows[-1].split(",")[2] == ""  # the last epoch: not evaluated
    from srr_bench.checkpoints import load_model
    from srr_bench.rundir import FINAL

    loss, acc = evaluate(load_model(tmp_path / FINAL), load_data(small_cfg()["data"]), "train")
    assert loss == pytest.approx(m["train_loss"], rel=1e-6) and acc == m["train_acc"]
