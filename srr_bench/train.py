"""Training one model into its run directory (spec §3).

``train(cfg, run_dir)`` is the whole job: the Hydra entry point only calls it. It is
deterministic on CPU for a given seed, resumes from ``checkpoint.pt`` after a crash
(ending with the same metrics as an uninterrupted run), returns the stored metrics of a
finished run without touching it, and ends a diverging run (non-finite loss) as
``status: diverged`` instead of crashing.
"""
from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import safe_load, save_model
from .data import Dataset, load_data
from .io import atomic_write, read_json, write_csv, write_json
from .models import build_model, count_parameters
from .optim import build_optimizer, learning_rate
from .regularizer import SRRRegularizer, layer_record
from .runs import hparams, run_id

CE_MILESTONES = (0.1, 0.01)  # steps to reach these train cross-entropies are recorded


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on a GPU when asked; plain fp32 elsewhere."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str, batch_size: int = 1024, bf16: bool = False) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy on a whole split, no augmentation."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for x, y in data.batches(split, batch_size):
        with autocast(device, bf16):
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(-1) == y).sum()
    model.train(was_training)
    n = len(getattr(data, split))
    return loss.item() / n, correct.item() / n


def _progress(total: int, initial: int, enabled: Optional[bool], desc: str):
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else (not enabled)
    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", disable=disable, dynamic_ncols=True)


def _stop_reached(rule: str, target: Optional[float], train_loss: float, train_acc: float) -> bool:
    if rule == "epochs":
        return False
    if rule == "ce":
        return train_loss <= target
    if rule == "acc":
        return train_acc >= target
    raise ValueError(f"unknown train.stop {rule!r}; use epochs, ce or acc")


def train(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Train the model described by ``cfg`` into ``run_dir``; returns metrics.json's content."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists():
        return read_json(run_dir / "metrics.json")  # finished: never retrain
    cfg = {**cfg, "data": {**cfg["data"], "root": str(Path(cfg["data"].get("root", "data")).resolve())}}
    # ^ an absolute data root in config.yaml lets measures reload the data from anywhere
    t_cfg, o_cfg = cfg["train"], cfg["optim"]
    rule = t_cfg.get("stop", "epochs")
    _stop_reached(rule, t_cfg.get("target"), math.inf, 0.0)  # validates the rule before any work
    from omegaconf import OmegaConf

    atomic_write(run_dir / "config.yaml", lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(cfg)).encode()))
    write_json(run_dir / "hparams.json", hparams(cfg))

    if t_cfg.get("threads"):  # several small runs at once: one thread each beats oversubscription
        torch.set_num_threads(int(t_cfg["threads"]))
    device = resolve_device(t_cfg.get("device", "auto"))
    bf16 = bool(t_cfg.get("bf16", True))
    seed = int(cfg["seed"])
    torch.manual_seed(seed)  # model initialisation and dropout draw from the global generator
    data = load_data(cfg["data"]).to(device)
    model = build_model(cfg["model"], image_size=data.image_size, channels=data.channels, num_classes=data.num_classes)
    model.to(device)
    opt = build_optimizer(model, o_cfg)
    measure_settings = (cfg.get("measure") or {}).get("settings")
    reg = SRRRegularizer.from_config(cfg.get("reg"), measure_settings, model.depth, seed)
    forward = model.forward_intermediates if reg else model  # the regulariser reads every layer's Z
    if t_cfg.get("compile", False):
        forward = torch.compile(forward)
    record = _LayerRecording(t_cfg.get("record_layers"), model, data, measure_settings)

    bs = int(t_cfg["batch_size"])
    steps_per_epoch = math.ceil(len(data.train) / bs)
    max_epochs = int(t_cfg["epochs"])
    total_steps = max_epochs * steps_per_epoch
    warmup = int(round(float(o_cfg.get("warmup_epochs", 0)) * steps_per_epoch))
    min_lr = float(o_cfg["lr"]) * float(o_cfg.get("min_lr_ratio", 0.0))
    smoothing = float(t_cfg.get("label_smoothing", 0.0))
    clip = o_cfg.get("grad_clip")

    state: dict[str, Any] = dict(epoch=0, step=0, history=[], sum_train_loss=0.0, wall_s=0.0,
                                 steps_to={str(m): None for m in CE_MILESTONES}, stopped=False)
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        ckpt = safe_load(ckpt_path)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"])
        if device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
    else:
        save_model(model, run_dir / "init.pt", meta=dict(run_id=run_id(cfg), epoch=0))
        if record.due(0, max_epochs):
            state["history"].append(dict(epoch=0, step=0, **record()))

    status, t0 = "done", time.perf_counter() - state["wall_s"]
    bar = _progress(max_epochs, state["epoch"], t_cfg.get("progress"), run_dir.name)
    model.train()
    while state["epoch"] < max_epochs and not state["stopped"]:
        epoch = state["epoch"]
        gen = torch.Generator(device).manual_seed(seed * 1_000_003 + epoch)  # epoch's shuffling and augmentation
        epoch_loss = torch.zeros((), device=device, dtype=torch.float64)
        epoch_correct = torch.zeros((), device=device, dtype=torch.int64)
        step_losses = torch.zeros((), device=device, dtype=torch.float64)
        epoch_reg = torch.zeros((), device=device, dtype=torch.float64)
        for x, y in data.batches("train", bs, generator=gen, shuffle=True, augment=True):
            lr = learning_rate(state["step"], total_steps, warmup, float(o_cfg["lr"]), min_lr)
            loss, logits, srr = train_step(forward, model, opt, x, y, lr, smoothing, clip, bf16, reg, state["step"])
            state["step"] += 1
            epoch_loss += loss.detach().double() * len(y)
            step_losses += loss.detach().double()
            epoch_correct += (logits.detach().argmax(-1) == y).sum()
            if srr is not None:
                epoch_reg += srr.detach().double() * len(y)
        batch_loss = epoch_loss.item() / len(data.train)  # cross-entropy only, regulariser or not
        state["sum_train_loss"] += step_losses.item()  # Σ over optimisation steps of the batch loss
        row = dict(epoch=epoch + 1, step=state["step"], lr=lr, batch_loss=batch_loss,
                   batch_acc=epoch_correct.item() / len(data.train))
        if reg is not None:  # Σ_{ℓ∈S} SRR_ℓ (without α), mean over the epoch's images
            row["batch_srr"] = epoch_reg.item() / len(data.train)
        if not (math.isfinite(batch_loss) and math.isfinite(row.get("batch_srr", 0.0))):
            status = "diverged"
            state["history"].append(row)
            break
        if t_cfg.get("eval_train_every_epoch", True) or rule != "epochs":
            row["train_loss"], row["train_acc"] = evaluate(model, data, "train", bf16=bf16)
            for m in CE_MILESTONES:
                if state["steps_to"][str(m)] is None and row["train_loss"] <= m:
                    state["steps_to"][str(m)] = state["step"]
            state["stopped"] = _stop_reached(rule, t_cfg.get("target"), row["train_loss"], row["train_acc"])
        if t_cfg.get("eval_test_every_epoch", False):
            row["test_loss"], row["test_acc"] = evaluate(model, data, "test", bf16=bf16)
        state["epoch"] += 1
        state["wall_s"] = time.perf_counter() - t0
        row["wall_s"] = state["wall_s"]  # training time: the recording below is not counted
        if record.due(state["epoch"], max_epochs, state["stopped"]):
            row.update(record())
        state["history"].append(row)
        bar.set_postfix(loss=f"{batch_loss:.3f}", acc=f"{row['batch_acc']:.3f}")
        bar.update(1)
        if state["epoch"] % int(t_cfg.get("checkpoint_every", 1)) == 0 or state["stopped"]:
            _checkpoint(ckpt_path, model, opt, state, device)
    bar.close()
    return _finish(cfg, run_dir, model, data, state, status, rule, bf16, t0)


def train_step(forward: Callable, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               lr: float, smoothing: float = 0.0, clip: Optional[float] = None, bf16: bool = True,
               reg: Optional[SRRRegularizer] = None, step: int = 0):
    """One optimisation step on CE (+ α·Σ SRR_ℓ with ``reg``); returns (CE, logits, Σ SRR_ℓ or None).

    ``forward`` is the model (or its compiled form); with ``reg`` it is
    ``model.forward_intermediates`` (or its compiled form). The regulariser's rates are
    computed outside autocast, in its own dtype.
    """
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast(x.device, bf16):
        out = forward(x)
    logits = out.logits if reg is not None else out
    loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
    srr = reg.terms(model, out, step) if reg is not None else None
    total = loss if srr is None else loss + reg.alpha * srr
    opt.zero_grad(set_to_none=True)
    total.backward()
    if clip:
        nn.utils.clip_grad_norm_(model.parameters(), float(clip))
    opt.step()
    return loss, logits, srr


class _LayerRecording:
    """``train.record_layers``: the srr measure's per-layer values into history.csv (``layer.<ℓ>.<q>``).

    ``every: N`` records at initialisation (epoch 0) and every N epochs, ``epochs: [..]`` at
    those epochs; either way also at the last epoch. ``n_images`` (default: the measure's
    256) is a fixed seeded subset of the training set.
    """

    def __init__(self, spec: Optional[dict], model: nn.Module, data: Dataset, measure_settings: Optional[dict]):
        spec = dict(spec or {})
        self.every = int(spec.get("every") or 0)
        self.epochs = {int(e) for e in spec.get("epochs") or []}
        self.n_images = spec.get("n_images", 256)
        self.model, self.data, self.settings = model, data, measure_settings

    @property
    def enabled(self) -> bool:
        return bool(self.every or self.epochs)

    def due(self, epoch: int, max_epochs: int, stopped: bool = False) -> bool:
        if not self.enabled:
            return False
        return epoch in self.epochs or (self.every and epoch % self.every == 0) or epoch == max_epochs or stopped

    def __call__(self) -> dict[str, float]:
        return layer_record(self.model, (self.data.train.x, self.data.train.y), self.settings, self.n_images)


def _checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    obj = dict(model=model.state_dict(), optim=opt.state_dict(), state=state, rng=torch.get_rng_state())
    if device.type == "cuda":
        obj["cuda_rng"] = torch.cuda.get_rng_state(device)
    atomic_write(path, lambda f: torch.save(obj, f))


def _finish(cfg: dict, run_dir: Path, model: nn.Module, data: Dataset, state: dict, status: str, rule: str,
            bf16: bool, t0: float) -> dict[str, Any]:
    write_csv(run_dir / "history.csv", state["history"])
    nan = float("nan")
    if status == "done":
        save_model(model, run_dir / "final.pt", meta=dict(run_id=run_id(cfg), epoch=state["epoch"]))
        tr_loss, tr_acc = evaluate(model, data, "train", bf16=bf16)
        te_loss, te_acc = evaluate(model, data, "test", bf16=bf16)
    else:
        tr_loss = tr_acc = te_loss = te_acc = nan
    steps_to = state["steps_to"]
    metrics = {
        "run_id": run_id(cfg), "status": status,
        "converged": status == "done" and (rule == "epochs" or state["stopped"]),
        "train_acc": tr_acc, "test_acc": te_acc, "train_loss": tr_loss, "test_loss": te_loss,
        "gap_acc": tr_acc - te_acc, "gap_loss": te_loss - tr_loss,
        "epochs": state["epoch"], "steps": state["step"],
        "steps_to_ce_0.1": steps_to["0.1"], "steps_to_ce_0.01": steps_to["0.01"],
        "sum_train_loss": state["sum_train_loss"], "wall_s": time.perf_counter() - t0,
        "n_train": len(data.train), "n_test": len(data.test), "num_params": count_parameters(model),
        "device": str(next(model.parameters()).device),
    }
    write_json(run_dir / "metrics.json", metrics)  # last: its presence marks the run finished
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    return metrics
