"""Training one model into its run directory (spec §3).

``train(cfg, run_dir)`` is the whole job: the Hydra entry point only calls it. It reads
the typed config (``srr_bench.config.RunConfig``: defaults live in the YAML tree, nowhere
here), is deterministic on CPU for a given seed, resumes from its checkpoint (``srr_bench.rundir``) after a
crash (ending with the same metrics as an uninterrupted run), and returns the stored
metrics of a finished run without touching it.

Status and convergence, as metrics.json records them:

- ``status: diverged`` with ``diverged_reason`` when (checked in this order)
  1. the epoch's training loss (or the SRR term) is not finite: training stops there;
  2. a step raises ``torch.linalg.LinAlgError`` (e.g. the regulariser's Cholesky of a
     singular Gram matrix), or any error while a parameter is not finite: training stops;
  3. after the budget the full-train-set cross-entropy is not finite or above
     ``DIVERGED_LOSS_FACTOR`` (2) times its value at initialisation (``init_train_loss``,
     evaluated before the first step and kept in history.csv's epoch-0 row);
  4. after the budget the train accuracy is at chance: at most ``p + 3·√(p(1−p)/n)``, p
     the largest class frequency of the n training images (what a constant prediction
     reaches, plus three binomial standard errors).
  Train and test metrics are kept when they are finite (rules 3 and 4 always have them).
- ``status: done`` otherwise. ``converged`` says whether the stopping target was reached:
  true or false under ``train.stop=ce|acc`` (false for a diverged run), and null under
  ``train.stop=epochs``, which has no target.

CE milestones (``steps_to_ce_0.1`` / ``0.01``): the step count at the end of the first
epoch whose full-train-set CE is at most the milestone. With ``eval_train_every_epoch``
off, the train set is evaluated only in epochs whose running batch CE is within
``EVAL_GATE`` (3×) of an unreached milestone or of the ``stop=ce`` target, so milestones
and the stopping epoch are found at a fraction of the cost as long as the end-of-epoch CE
is not below a third of the running batch CE, which holds without dropout (the running CE
lags the model it averages over). With dropout (``model.dropout`` or ``emb_dropout`` > 0)
the batch CE is that of thinned networks and the gate is off: every epoch is evaluated.
Measured on the converged CIFAR grid, a dropout-0.1 CRATE reached train CE 0.0093 with a
running batch CE of 0.048 (5×), so the gate would never have opened and the run would have
trained to its epoch cap. :func:`replay_gate` replays the gate on a run that evaluated every
epoch (``python -m benchmarks.grid_cost`` does so over a sweep).
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

from .checkpoints import load_model, load_training_state, save_model, save_training_state
from .config import RunConfig, TrainConfig
from .device import DeviceError, kernel_facts, resolve_device  # noqa: F401  (DeviceError: old import path)
from .data import Dataset, load_data
from .io import atomic_write, write_csv, write_json
from .models import build_model, count_parameters
from .optim import build_optimizer, learning_rate
from .regularizer import SRRRegularizer, layer_record
from .rundir import CHECKPOINT, CONFIG, CONFIG_END, CONFIG_HEAD, HISTORY, HPARAMS, LEGACY, METRICS, RunDir
from .identity import hparams

CE_MILESTONES = (0.1, 0.01)  # steps to reach these train cross-entropies are recorded
DIVERGED_LOSS_FACTOR = 2.0  # final train CE above this multiple of its initial value: diverged
CHANCE_SE = 3.0  # train accuracy within this many binomial standard errors of chance: diverged
EVAL_GATE = 3.0  # without per-epoch evaluation: evaluate when the batch CE is within this factor of a target
EVAL_CHUNK = 128  # images per forward pass of an evaluation on a CPU (see evaluate)


class RunDirectoryGone(RuntimeError):
    """The run directory was deleted while training; nothing more is written into it."""


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on a GPU when asked; plain fp32 elsewhere."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset, split: str, batch_size: int = 1024, bf16: bool = False,
             chunk: Optional[int] = None) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy on a whole split, no augmentation.

    The loss is summed per ``batch_size`` images; on a CPU the forward passes run ``chunk``
    images at a time (default ``EVAL_CHUNK``) and their logits are joined before the sum, so
    the sum is that of whole batches while no activation outgrows the caches (measured:
    the same bits on this CPU, a fifth less time; ``benchmarks/train_levers.py``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if chunk is None:
        chunk = EVAL_CHUNK if device.type == "cpu" else batch_size  # a GPU wants its large batches
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for x, y in data.batches(split, batch_size):
        with autocast(device, bf16):
            logits = model(x) if len(x) <= chunk else torch.cat([model(part) for part in x.split(chunk)])
        loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(-1) == y).sum()
    model.train(was_training)
    n = len(getattr(data, split))
    return loss.item() / n, correct.item() / n


def _progress(total: int, initial: int, enabled: Optional[bool], desc: str):
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else (not enabled)
    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", disable=disable, dynamic_ncols=True)


def _stop_reached(t: TrainConfig, train_loss: float, train_acc: float) -> bool:
    if t.stop == "ce":
        return train_loss <= t.target
    if t.stop == "acc":
        return train_acc >= t.target
    return False  # epochs: no target


def uses_dropout(model: dict[str, Any]) -> bool:
    """Whether a model config trains with dropout (its running batch CE is then that of thinned
    networks, which the evaluation gate cannot read; see the module docstring)."""
    model = model.model_dump() if hasattr(model, "model_dump") else model  # a ModelSection or a plain dict
    return any(float(model.get(k) or 0.0) > 0.0 for k in ("dropout", "emb_dropout"))


def evaluate_train_now(t: TrainConfig, batch_loss: float, steps_to: dict[str, Optional[int]],
                       dropout: bool = False) -> bool:
    """Whether to evaluate the whole train set after this epoch (see the module docstring)."""
    if t.eval_train_every_epoch or t.stop == "acc" or dropout:
        return True
    targets = [m for m in CE_MILESTONES if steps_to[str(m)] is None] + ([t.target] if t.stop == "ce" else [])
    return any(batch_loss <= EVAL_GATE * m for m in targets)


def _record_train_eval(t: TrainConfig, steps_to: dict[str, Optional[int]], step: int, loss: float,
                       acc: float) -> bool:
    """Record the CE milestones a full train-set evaluation reached; whether the run stops."""
    for m in CE_MILESTONES:
        if steps_to[str(m)] is None and loss <= m:
            steps_to[str(m)] = step
    return _stop_reached(t, loss, acc)


def replay_gate(history: list[dict[str, Any]], t: TrainConfig, dropout: bool = False) -> dict[str, Any]:
    """What :func:`evaluate_train_now` would have done on a run that evaluated the train set
    after every epoch: its ``history`` rows (``epoch``, ``step``, ``batch_loss``,
    ``train_loss``; the epoch-0 row included or not) replayed under ``t`` with
    ``eval_train_every_epoch`` false (``dropout``: the run's model trains with dropout, see
    :func:`uses_dropout`). Returns the stopping epoch (None: not within the
    history), the steps to each CE milestone and the number of full train-set evaluations
    (the one at initialisation included), all as the gated run records them."""
    gated = t.model_copy(update=dict(eval_train_every_epoch=False))
    steps_to: dict[str, Optional[int]] = {str(m): None for m in CE_MILESTONES}
    evals, stop = 1, None
    for row in history:
        if int(row["epoch"]) == 0:
            continue
        if not evaluate_train_now(gated, float(row["batch_loss"]), steps_to, dropout):
            continue
        evals += 1
        if _record_train_eval(gated, steps_to, int(row["step"]), float(row["train_loss"]),
                              float(row.get("train_acc", float("nan")))):
            stop = int(row["epoch"])
            break
    return {"stop_epoch": stop, "steps_to": steps_to, "train_evals": evals}


def _timed_train_eval(model: nn.Module, data: Dataset, t: TrainConfig, state: dict) -> tuple[float, float]:
    """The full train-set evaluation of the stopping rule and the CE milestones, its count and
    its time kept in ``state`` (``train_evals``, ``train_eval_wall_s``: part of ``wall_s``)."""
    start = time.perf_counter()
    loss_acc = evaluate(model, data, "train", bf16=t.bf16)
    if "train_evals" in state:  # absent from checkpoints written before they were counted
        state["train_evals"] += 1
        state["train_eval_wall_s"] += time.perf_counter() - start
    return loss_acc


def resolved(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with an absolute data root, so that measures reload the data from anywhere."""
    return {**cfg, "data": {**cfg["data"], "root": str(Path(cfg["data"].get("root", "data")).resolve())}}


def write_run_config(cfg: dict[str, Any], run_dir: Path) -> None:
    """config.yaml (the resolved config) and hparams.json: both derived from the config alone."""
    from omegaconf import OmegaConf

    cfg = resolved(cfg)
    body = OmegaConf.to_yaml(OmegaConf.create(cfg))
    text = CONFIG_HEAD + body + ("" if body.endswith("\n") else "\n") + CONFIG_END
    atomic_write(run_dir / CONFIG, lambda f: f.write(text.encode()))
    write_json(run_dir / HPARAMS, hparams(cfg))


def _intact(run_dir: Path) -> None:
    """Before writing into the run directory: it must still be the one this run created."""
    if not (run_dir / CONFIG).exists():
        raise RunDirectoryGone(f"{run_dir}: deleted while training (config.yaml is gone); nothing more is written "
                               "there; relaunch the sweep to train the run again")


def train(cfg: RunConfig | dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Train the model described by ``cfg`` (the typed ``RunConfig`` a sweep job built, or a plain
    composed config, read here) into ``run_dir``; returns metrics.json's content."""
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    if rd.has(METRICS):
        return rd.read_metrics()  # finished: never retrain (an unreadable record is a repair's to fix)
    run = cfg if isinstance(cfg, RunConfig) else RunConfig.read(cfg, where=str(run_dir))
    cfg = resolved(run.plain)  # config.yaml: an absolute data root, so measures reload the data from anywhere
    t, o = run.train, run.optim
    device = resolve_device(t.device)
    write_run_config(cfg, run_dir)
    if t.threads:  # several small runs at once: one thread each beats oversubscription
        torch.set_num_threads(t.threads)
    torch.manual_seed(run.seed)  # model initialisation and dropout draw from the global generator
    data = load_data(run.data.model_dump()).to(device)
    model = build_model(run.model_dict, image_size=data.image_size, channels=data.channels, num_classes=data.num_classes)
    model.to(device)
    opt = build_optimizer(model, o.model_dump())
    reg = SRRRegularizer.from_config(run.reg, run.srr.model_dump(), model.depth, run.seed)
    forward = model.forward_intermediates if reg else model  # the regulariser reads every layer's Z
    dropout = uses_dropout(run.model_dict)  # the evaluation gate is off: every epoch is evaluated
    if t.compile:
        forward = torch.compile(forward)
    record = _LayerRecording(t.record_layers, model, data, run)

    steps_per_epoch = math.ceil(len(data.train) / t.batch_size)
    total_steps = t.epochs * steps_per_epoch
    warmup = int(round(o.warmup_epochs * steps_per_epoch))
    min_lr = o.lr * o.min_lr_ratio

    ckpt_path = rd.checkpoint  # an older run's checkpoint.pt is resumed too, and rewritten as safetensors
    if ckpt_path.exists():
        state = _resume(ckpt_path, model, opt, device)
    else:
        state = dict(epoch=0, step=0, history=[], sum_train_loss=0.0, wall_s=0.0, stopped=False,
                     steps_to={str(m): None for m in CE_MILESTONES}, diverged_reason=None,
                     train_evals=0, train_eval_wall_s=0.0)
        save_model(model, rd.weights("init"), meta=dict(run_id=run.run_id, epoch=0))
        row = dict(epoch=0, step=0)
        row["train_loss"], row["train_acc"] = _timed_train_eval(model, data, t, state)
        state["init_train_loss"] = row["train_loss"]
        if record.due(0, t.epochs):
            row.update(record())
        state["history"].append(row)
    if state.get("init_train_loss") is None:  # a checkpoint from before the initial loss was kept
        state["init_train_loss"] = evaluate(load_model(rd.weights("init")).to(device), data, "train")[0]

    t0 = time.perf_counter() - state["wall_s"]
    bar = _progress(t.epochs, state["epoch"], t.progress, run_dir.name)
    model.train()
    while state["epoch"] < t.epochs and not state["stopped"] and not state.get("diverged_reason"):
        epoch = state["epoch"]
        gen = torch.Generator(device).manual_seed(run.seed * 1_000_003 + epoch)  # epoch's shuffling and augmentation
        epoch_loss = torch.zeros((), device=device, dtype=torch.float64)
        epoch_correct = torch.zeros((), device=device, dtype=torch.int64)
        step_losses = torch.zeros((), device=device, dtype=torch.float64)
        epoch_reg = torch.zeros((), device=device, dtype=torch.float64)
        lr = o.lr
        for x, y in data.batches("train", t.batch_size, generator=gen, shuffle=True, augment=True):
            lr = learning_rate(state["step"], total_steps, warmup, o.lr, min_lr)
            try:
                loss, logits, srr = train_step(forward, model, opt, x, y, lr, t.label_smoothing, o.grad_clip, t.bf16,
                                               reg, state["step"])
            except Exception as e:
                reason = _step_failure(e, model, epoch + 1)
                if reason is None:
                    raise
                state["diverged_reason"] = reason
                break
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
        if not state.get("diverged_reason") and not (math.isfinite(batch_loss) and math.isfinite(row.get("batch_srr", 0.0))):
            state["diverged_reason"] = f"non-finite training loss in epoch {epoch + 1}"
        if state.get("diverged_reason"):
            state["history"].append(row)
            break
        if evaluate_train_now(t, batch_loss, state["steps_to"], dropout):
            row["train_loss"], row["train_acc"] = _timed_train_eval(model, data, t, state)
            state["stopped"] = _record_train_eval(t, state["steps_to"], state["step"], row["train_loss"],
                                                  row["train_acc"])
        if t.eval_test_every_epoch:
            row["test_loss"], row["test_acc"] = evaluate(model, data, "test", bf16=t.bf16)
        state["epoch"] += 1
        state["wall_s"] = time.perf_counter() - t0
        row["wall_s"] = state["wall_s"]  # training time: the recording below is not counted
        if record.due(state["epoch"], t.epochs, state["stopped"]):
            row.update(record())
        state["history"].append(row)
        bar.set_postfix(loss=f"{batch_loss:.3f}", acc=f"{row['batch_acc']:.3f}")
        bar.update(1)
        if state["epoch"] % t.checkpoint_every == 0 or state["stopped"]:
            _intact(run_dir)
            _checkpoint(rd, model, opt, state, device)
    bar.close()
    _intact(run_dir)
    return _finish(run, run_dir, model, data, state, t0)


def _step_failure(e: Exception, model: nn.Module, epoch: int) -> Optional[str]:
    """The divergence reason for an exception raised by a training step, or None (a real error)."""
    what = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    if isinstance(e, torch.linalg.LinAlgError):
        return f"singular or non-finite state in epoch {epoch} ({what})"
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        return f"non-finite parameters in epoch {epoch} ({what})"
    return None


def _resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device) -> dict[str, Any]:
    ckpt = load_training_state(path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optim"])
    torch.set_rng_state(ckpt["rng"])
    if device.type == "cuda" and "cuda_rng" in ckpt:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
    return ckpt["state"]


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
    those epochs; either way also at the last epoch. ``n_images`` (the measure's 256 in the
    shipped tree) is a fixed seeded subset of the training set.
    """

    def __init__(self, spec: Any, model: nn.Module, data: Dataset, run: RunConfig):
        self.every = int(spec.every or 0)
        self.epochs = {int(e) for e in spec.epochs or []}
        self.n_images = spec.n_images
        self.model, self.data, self.srr = model, data, run.srr.model_dump()
        self.seed = int(((run.measure.settings if run.measure else None) or {}).get("seed", 0))  # the measure's subset

    @property
    def enabled(self) -> bool:
        return bool(self.every or self.epochs)

    def due(self, epoch: int, max_epochs: int, stopped: bool = False) -> bool:
        if not self.enabled:
            return False
        return epoch in self.epochs or (self.every and epoch % self.every == 0) or epoch == max_epochs or stopped

    def __call__(self) -> dict[str, float]:
        return layer_record(self.model, (self.data.train.x, self.data.train.y), self.srr, self.n_images, self.seed)


def _checkpoint(rd: RunDir, model: nn.Module, opt: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    """The resumable state as safetensors (``srr_bench.checkpoints``); an older run's checkpoint.pt,
    once resumed, is replaced by it."""
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    save_training_state(rd / CHECKPOINT, model, opt, state, torch.get_rng_state(), cuda_rng)
    (rd / LEGACY[CHECKPOINT]).unlink(missing_ok=True)


def chance_level(labels: torch.Tensor) -> tuple[float, float]:
    """(p, threshold): p the largest class frequency (a constant prediction's accuracy) and
    p + CHANCE_SE·√(p(1−p)/n), the train accuracy at or below which a run counts as at chance."""
    n = len(labels)
    p = torch.bincount(labels.cpu()).max().item() / n
    return p, p + CHANCE_SE * math.sqrt(p * (1 - p) / n)


def divergence(init_loss: Optional[float], train_loss: float, train_acc: float, labels: torch.Tensor) -> Optional[str]:
    """Rules 3 and 4 of the module docstring on the final full-train-set evaluation; None = not diverged."""
    if not math.isfinite(train_loss):
        return f"non-finite train loss ({train_loss}) at the end"
    if init_loss is not None and train_loss > DIVERGED_LOSS_FACTOR * init_loss:
        return (f"train loss {train_loss:.4g} at the end, above {DIVERGED_LOSS_FACTOR:g}x its initial value "
                f"{init_loss:.4g}")
    p, threshold = chance_level(labels)
    if train_acc <= threshold:
        return f"train accuracy {train_acc:.4f} at chance level (<= {threshold:.4f}; largest class {p:.4f})"
    return None


def _last_train_eval(state: dict) -> Optional[tuple[float, float]]:
    """The full train-set loss and accuracy of the final weights when the last epoch already
    evaluated them (the same evaluation, so the same numbers); None otherwise."""
    last = state["history"][-1] if state["history"] else {}
    if last.get("epoch") != state["epoch"] or "train_loss" not in last or state.get("diverged_reason"):
        return None
    return last["train_loss"], last["train_acc"]


def _finish(run: RunConfig, run_dir: Path, model: nn.Module, data: Dataset, state: dict, t0: float) -> dict[str, Any]:
    rd = RunDir(run_dir)
    write_csv(rd / HISTORY, state["history"])
    nan = float("nan")
    reason = state.get("diverged_reason")
    tr_loss = tr_acc = te_loss = te_acc = nan
    final_start = time.perf_counter()
    if all(torch.isfinite(p).all() for p in model.parameters()):
        tr_loss, tr_acc = _last_train_eval(state) or evaluate(model, data, "train", bf16=run.train.bf16)
        te_loss, te_acc = evaluate(model, data, "test", bf16=run.train.bf16)
        save_model(model, rd.weights("final"), meta=dict(run_id=run.run_id, epoch=state["epoch"]))
    reason = reason or divergence(state.get("init_train_loss"), tr_loss, tr_acc, data.train.y)
    status = "diverged" if reason else "done"
    steps_to = state["steps_to"]
    metrics = {
        "run_id": run.run_id, "status": status, "diverged_reason": reason,
        "converged": None if run.train.stop == "epochs" else (status == "done" and bool(state["stopped"])),
        "train_acc": tr_acc, "test_acc": te_acc, "train_loss": tr_loss, "test_loss": te_loss,
        "gap_acc": tr_acc - te_acc, "gap_loss": te_loss - tr_loss, "init_train_loss": state.get("init_train_loss"),
        "epochs": state["epoch"], "steps": state["step"],
        "steps_to_ce_0.1": steps_to["0.1"], "steps_to_ce_0.01": steps_to["0.01"],
        "sum_train_loss": state["sum_train_loss"], "wall_s": time.perf_counter() - t0,
        # Where the time went (seconds): the full train-set evaluations that the stopping rule and
        # the CE milestones read (train_evals of them; part of wall_s but for the one at
        # initialisation, which precedes its clock; None after a resume from a checkpoint written
        # before they were counted) and the final evaluation (train and test sets, final.pt; the
        # train set's is the last epoch's when that epoch evaluated the final weights).
        "train_evals": state.get("train_evals"), "train_eval_wall_s": state.get("train_eval_wall_s"),
        "final_eval_wall_s": time.perf_counter() - final_start,
        "n_train": len(data.train), "n_test": len(data.test), "num_params": count_parameters(model),
        "device": str(next(model.parameters()).device),
        # What decides the float kernels (runs of one config agree bit for bit only where these
        # agree); read at the end, so a run resumed elsewhere records the machine that finished it.
        "kernels": kernel_facts(next(model.parameters()).device),
    }
    write_json(rd / METRICS, metrics)  # last: its presence marks the run finished
    rd.checkpoint.unlink(missing_ok=True)
    return metrics
