"""Meta-train an EBMM (or the MemoryNetwork baseline) on a recall dataset's train split.

Every step draws fresh memories of ``n_stored`` patterns, corrupts them into queries and takes one meta-gradient step
through the write and read (:func:`ebmm_rl.memory.meta_train_step`). Each memory size of ``--memory-sizes`` gets its
own run directory ``<run-dir>/recall__<dataset>__<model>__m<memory>__<seed>__<time>/`` holding

- ``config.yml``: the resolved config (every default filled in); ``args.yml``: the run settings (steps, limits);
- ``command.txt``: the command line (one line per start or resume); ``seed``: the seed;
- ``checkpoint.pt``: model, optimiser and data-generator state at the latest step, written atomically every
  ``--checkpoint-every`` steps, on Ctrl-C and at the end; ``--resume RUN_DIR`` continues it;
- ``tensorboard/``: ``train/`` (loss, gradient norm, error of the batch after the step), ``memory/`` (EBMM's
  alpha, beta, momentum, step sizes) and ``time/`` scalars (meta-steps per second, peak memory in MiB).

The last line says where the run got to, its meta-steps per second and the process's peak memory (the resident set
on the CPU, torch's allocations on CUDA). ``--memory-chunk`` bounds the peak: the meta-gradient of a batch is summed
over chunks of that many memories (the same step; see :func:`ebmm_rl.memory.meta_train_step`).
"""

from __future__ import annotations

import argparse
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from ebmm_rl.runs import arguments
from ebmm_rl.runs.directory import new_run_dir
from ebmm_rl.memory import EBMM, GRAD_MODES, meta_train_step, peak_memory_mb
from ebmm_rl.recall import distributed
from ebmm_rl.recall.datasets import OMNIGLOT_VARIANTS
from ebmm_rl.recall.models import (
    BIT_CORRUPTIONS,
    CHECKPOINT_FILE,
    DATASET_DEFAULTS,
    DATASETS,
    ENERGIES,
    MODELS,
    Task,
    UsageError,
    build_model,
    check_choice,
    load_checkpoint,
    load_task,
    model_spec,
    recall_view,
    save_checkpoint,
)

PROGRAM = "python -m ebmm_rl.recall train"
TRAIN_DEFAULTS: dict[str, Any] = {
    "model": "ebmm",
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 1e-6,
    "grad_clip": 0.05,
    "write_steps": 5,
    "read_steps": 5,
    "grad_mode": "second_order",
    "gradient_penalty": True,
    "write": "batch",
    "seed": 0,
    "data_root": None,
    "augment": False,
    "random_memories": 0.0,
}
"""Defaults of the config keys that do not depend on the dataset (those are in ``DATASET_DEFAULTS``). The paper
uses lr 5e-5 over 2e6 updates; 1e-3 suits runs of a few thousand steps."""
CONFIG_KEYS = ("dataset", *TRAIN_DEFAULTS, *DATASET_DEFAULTS["binary"])
EBMM_ONLY_KEYS = ("energy", "hop_dim", "hops", "write_steps", "read_steps", "grad_mode", "gradient_penalty", "write")
SETTINGS_DEFAULTS: dict[str, Any] = {
    "steps": 1000,
    "time_limit": None,
    "checkpoint_every": 100,
    "log_every": 10,
    "device": "cpu",
    "run_dir": "runs",
    "init_from": None,
    "memory_chunk": None,
    "compile": False,
}
"""Run settings: they may change when a run is resumed (``init_from`` acts only when a run starts). ``memory_chunk``
None takes :func:`default_memory_chunk`."""
CONV_MEMORY_CHUNK = 1
"""Memories meta-differentiated at once with the conv energy by default. The default conv EBMM (64 32x32 images per
memory, 5 write and 5 read steps, second order) peaks at 7.4 GiB on the CPU one memory at a time, and each memory
more adds about 7 GiB, so two would be close to 16 GiB and the default batch of 8 at once needs about 55 GiB (it ran
out of 24). Smaller chunks cost some time (at 16 images per memory: 55 s a meta-step in chunks of 1, 38 s in chunks
of 2 or 4); ``results/recall_peak_memory/``."""
RESUMABLE_CONFIG_KEYS = ("lr",)
"""Config keys that a resumed run may change: the learning rate, to go on at a lower one."""
INIT_FROM_CHANGES = ("write_steps", "read_steps", "grad_mode", "gradient_penalty", "write_count_floor")
"""Model options in which an ``--init-from`` run may differ from its source: none changes a weight's shape (new steps
repeat the source's last, see :meth:`EBMM.fit_steps`; runs from before ``write_count_floor`` existed have none)."""
ARGS_FILE = "args.yml"
"""The run settings of a run directory, read back by ``--resume``."""


@dataclass(frozen=True)
class TrainResult:
    """One trained model.

    :param run_dir: its run directory
    :param checkpoint: its checkpoint (what ``evaluate --checkpoints`` takes)
    :param step: meta-training steps done, over all resumes
    :param memory_size: floats in one memory (at ``n_stored`` patterns)
    :param loss: meta-loss of the last step
    :param error: error of the last step's batch after the step (the task's metric)
    :param interrupted: stopped by Ctrl-C (resume with ``--resume run_dir``)
    """

    run_dir: Path
    checkpoint: Path
    step: int
    memory_size: int
    loss: float
    error: float
    interrupted: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``train`` (config options default to None so that ``--resume`` can tell which were given)."""
    config = parser.add_argument_group("config (saved in config.yml; defaults depend on the dataset)")
    config.add_argument("--dataset", help="binary, digits, omniglot or cifar10")
    config.add_argument("--model", choices=MODELS, help="ebmm (default) or the memnet baseline")
    config.add_argument(
        "--memory-sizes",
        type=arguments.positive_int,
        nargs="+",
        metavar="FLOATS",
        help="memory budgets in floats, one model each (default: binary 8256, digits 2064, omniglot/cifar10 4616); "
        "EBMM takes the largest fast layer that fits, memnet slots of memory // n_stored",
    )
    config.add_argument("--n-stored", type=arguments.positive_int, help="patterns written per memory (default 64)")
    config.add_argument(
        "--batch-size", type=arguments.positive_int, help=f"memories per step (default {TRAIN_DEFAULTS['batch_size']})"
    )
    config.add_argument("--lr", type=arguments.positive_float, help=f"AdamW learning rate (default {TRAIN_DEFAULTS['lr']})")
    config.add_argument(
        "--weight-decay", type=arguments.non_negative_float, help="AdamW weight decay (default 1e-6, the paper's)"
    )
    config.add_argument(
        "--grad-clip", type=arguments.positive_float, help="global gradient-norm clip (default 0.05, the paper's)"
    )
    config.add_argument("--energy", choices=ENERGIES, help="EBMM energy (default: mlp; conv for omniglot/cifar10)")
    config.add_argument(
        "--hidden", type=arguments.positive_int, help="EBMM mlp encoder / memnet width (default 128; 256 for 32x32)"
    )
    config.add_argument(
        "--hop-dim", type=arguments.positive_int, help="width of the EBMM's gated hops (default 128; 256 for 32x32)"
    )
    config.add_argument("--hops", type=arguments.positive_int, help="number of gated hops (default 3)")
    config.add_argument("--write-steps", type=arguments.positive_int, help="EBMM write steps (default 5)")
    config.add_argument("--read-steps", type=arguments.positive_int, help="EBMM read steps (default 5, the paper's)")
    config.add_argument("--grad-mode", choices=GRAD_MODES[:2], help="meta-gradient (default second_order, the paper's)")
    config.add_argument(
        "--gradient-penalty",
        action=argparse.BooleanOptionalAction,
        help="include alpha ||grad_x E||^2 in the EBMM's writing loss (default: on, the paper's); "
        "--no-gradient-penalty makes a meta-step about 2x cheaper",
    )
    config.add_argument("--write", choices=("batch", "stream"), help="EBMM write rule (default batch, the paper's)")
    config.add_argument(
        "--corruption",
        help=f"binary: {', '.join(BIT_CORRUPTIONS)} (default erase; see models.BIT_CORRUPTIONS); images: occlude",
    )
    config.add_argument(
        "--corrupt-bits", type=arguments.non_negative_int, help="corrupted bits of a binary query (default 64 of 128)"
    )
    config.add_argument("--block", type=arguments.positive_int, help="side of the occluded square (default image size // 2)")
    config.add_argument("--image-size", type=arguments.positive_int, help="image side (default: digits 8, omniglot 32)")
    config.add_argument("--seed", type=arguments.seed, help="seed of the model and the training data (default 0)")
    config.add_argument(
        "--augment",
        action="store_true",
        default=None,
        help="train on images under random rotations, mirrors and shifts (the test split stays as is)",
    )
    config.add_argument(
        "--random-memories",
        type=arguments.fraction,
        metavar="FRACTION",
        help="fraction of training memories that hold random binary images instead of the split's (default 0); "
        "they can only be recalled by storing, not completed from what the model knows of the data",
    )
    config.add_argument(
        "--omniglot-split",
        choices=OMNIGLOT_VARIANTS,
        help="Omniglot's archives: full (default; images_background trains, images_evaluation tests) or small "
        "(images_background_small1 trains, 2,720 images; images_background_small2 without the alphabets it shares "
        "with small1 tests, 2,120 images)",
    )
    config.add_argument("--data-root", help="directory of the Omniglot/CIFAR-10 archives (default ~/.cache/ebmm_rl)")

    run = parser.add_argument_group("run settings")
    run.add_argument(
        "--steps", type=arguments.positive_int, help=f"total meta-training steps (default {SETTINGS_DEFAULTS['steps']})"
    )
    run.add_argument(
        "--time-limit", type=arguments.non_negative_float, metavar="SECONDS", help="stop (and save) after this long"
    )
    run.add_argument("--checkpoint-every", type=arguments.positive_int, help="steps between checkpoints (default 100)")
    run.add_argument("--log-every", type=arguments.positive_int, help="steps between TensorBoard scalars (default 10)")
    run.add_argument("--device", type=arguments.device, help="torch device: cpu or cuda (default cpu)")
    run.add_argument(
        "--memory-chunk",
        type=arguments.positive_int,
        metavar="N",
        help=f"memories meta-differentiated at once: the same step, with the peak memory of N memories (default: "
        f"{CONV_MEMORY_CHUNK} with the conv energy, the whole batch otherwise; on a large GPU give the batch size)",
    )
    run.add_argument("--run-dir", metavar="DIR", help="parent of the run directories (default runs)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its checkpoint, with its config; --lr may change (e.g. to fine-tune at a lower "
        "rate): config.yml then holds the new rate and command.txt every start",
    )
    run.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from the trained model of another run (a new run: step 0, a fresh optimiser); the model options "
        "must match it except --write-steps, --read-steps (new steps repeat the source's last), --grad-mode and "
        "--[no-]gradient-penalty, e.g. to go on with --read-steps 10",
    )
    run.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the meta-loss: the same training, each step about 2x faster after a compilation of 1-3 "
        "minutes (cached on disk for later runs; worth it from about 1,500 steps on)",
    )
    run.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard events")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, argv: list[str]) -> list[TrainResult]:
    """Train the models the parsed options ask for (one per memory size), or resume one run; data-parallel over the
    processes of ``torchrun`` when it started this one (:mod:`ebmm_rl.recall.distributed`)."""
    workers, device = distributed.join(args.device or SETTINGS_DEFAULTS["device"])
    try:
        return _run(args, argv, workers, device)
    finally:
        distributed.leave()


def _run(args: argparse.Namespace, argv: list[str], workers: distributed.Workers, device: str) -> list[TrainResult]:
    given = {key: getattr(args, key) for key in SETTINGS_DEFAULTS if getattr(args, key) is not None}
    flags = {"tensorboard": not args.no_tensorboard, "progress": not args.no_progress and workers.is_main}
    if workers.world_size > 1:
        given["device"] = device
    command = shlex.join([*shlex.split(PROGRAM), *argv])
    if args.resume is not None:
        if args.init_from is not None:
            raise UsageError("--init-from starts a new run; a resumed run continues its own model: drop one of them")
        return [_resume(args, given, flags, command, workers)]
    settings = {**SETTINGS_DEFAULTS, **given, **flags}
    if args.dataset is None:
        raise UsageError("--dataset is required (binary, digits, omniglot or cifar10), unless you --resume a run")
    check_choice(args.dataset, DATASETS, "dataset")
    configs = [_resolve_config(args, memory) for memory in args.memory_sizes or [DATASET_DEFAULTS[args.dataset]["memory"]]]
    task = _train_task(configs[0])  # the memory size changes no task option
    specs = [model_spec(task, config) for config in configs]  # every size is checked before any run starts
    source = None if settings["init_from"] is None else _initial_model(settings["init_from"], configs, specs)
    results = []
    for config, spec in zip(configs, specs, strict=True):
        run_name = f"recall__{config['dataset']}__{config['model']}__m{config['memory']}__{config['seed']}"
        if config["batch_size"] % workers.world_size:
            raise UsageError(
                f"--batch-size {config['batch_size']} does not split over {workers.world_size} processes; "
                "give a multiple of the process count"
            )
        run_dir = None
        if workers.is_main:
            run_dir = new_run_dir(Path(settings["run_dir"]), run_name)
            (run_dir / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
            (run_dir / "seed").write_text(f"{config['seed']}\n")
        run_dir = workers.broadcast(run_dir)
        results.append(_train(run_dir, task, config, spec, settings, command, None, source, workers))
        if results[-1].interrupted:
            break
    return results


def default_memory_chunk(config: dict[str, Any]) -> int | None:
    """Memories meta-differentiated at once unless ``--memory-chunk`` says: :data:`CONV_MEMORY_CHUNK` for a conv
    EBMM, None (the whole batch) otherwise."""
    return CONV_MEMORY_CHUNK if config["model"] == "ebmm" and config.get("energy") == "conv" else None


# ---------------------------------------------------------------------------------------------- internals
def _resolve_config(args: argparse.Namespace, memory: int) -> dict[str, Any]:
    config = {"dataset": args.dataset, **TRAIN_DEFAULTS, **DATASET_DEFAULTS[args.dataset], "memory": memory}
    config.update({key: getattr(args, key) for key in CONFIG_KEYS if getattr(args, key, None) is not None})
    if config["model"] == "memnet":
        given = [key for key in EBMM_ONLY_KEYS if getattr(args, key) is not None]
        if given:
            raise UsageError(f"{', '.join('--' + key.replace('_', '-') for key in given)}: EBMM options; memnet has none")
        for key in EBMM_ONLY_KEYS:  # the slot memory has no energy; keep its config free of them
            config.pop(key)
    for key in ("n_stored", "batch_size", "memory"):
        if config[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {config[key]}")
    return config


def _resume(
    args: argparse.Namespace, given: dict[str, Any], flags: dict[str, bool], command: str, workers: distributed.Workers
) -> TrainResult:
    """Continue a run with its config and its saved run settings (``args.yml``), the ones ``given`` on this command
    line replacing them: a time-limited run resumed without ``--steps`` goes on towards its own ``--steps``."""
    run_dir = Path(args.resume)
    payload = load_checkpoint(run_dir)
    saved_file = run_dir / ARGS_FILE
    saved = yaml.safe_load(saved_file.read_text()) if saved_file.exists() else {}
    settings = {**SETTINGS_DEFAULTS, **{key: saved[key] for key in SETTINGS_DEFAULTS if key in saved}, **given, **flags}
    config = payload["config"]
    given_config = {key: getattr(args, key) for key in CONFIG_KEYS if getattr(args, key, None) is not None}
    if args.memory_sizes is not None:
        given_config["memory"] = args.memory_sizes[0] if len(args.memory_sizes) == 1 else args.memory_sizes
    changed = [
        f"--{key.replace('_', '-')} {value} (run: {config.get(key)})"
        for key, value in given_config.items()
        if config.get(key) != value and key not in RESUMABLE_CONFIG_KEYS
    ]
    if changed:
        raise UsageError(f"a resumed run keeps its config; drop {', '.join(changed)} or start a new run")
    if payload["step"] >= settings["steps"]:
        raise UsageError(
            f"{run_dir} is at step {payload['step']}, which already reaches its --steps {settings['steps']}; pass "
            f"--steps N with N > {payload['step']} to train it further"
        )
    new_values = {key: given_config[key] for key in RESUMABLE_CONFIG_KEYS if key in given_config}
    if new_values:
        config = {**config, **new_values}
        if workers.is_main:
            (run_dir / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return _train(run_dir, _train_task(config), config, payload["spec"], settings, command, payload, None, workers)


def _initial_model(path: str, configs: list[dict[str, Any]], specs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The model state of ``--init-from``'s checkpoint, checked against the one run it may start."""
    if len(configs) > 1:
        raise UsageError("--init-from starts one model from another run's: pass one --memory-sizes value")
    payload = load_checkpoint(path)

    def options(config: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        return {"dataset": config["dataset"], "model": spec["model"], "energy": spec["energy"], **spec["energy_kwargs"],
                **spec["kwargs"]}  # fmt: skip

    source, target = options(payload["config"], payload["spec"]), options(configs[0], specs[0])
    differing = [
        f"{key}: {source.get(key)!r} there, {target.get(key)!r} here"
        for key in dict.fromkeys([*source, *target])
        if key not in INIT_FROM_CHANGES and source.get(key) != target.get(key)
    ]
    if differing:
        raise UsageError(
            f"--init-from {path}: that run's model differs from this one ({'; '.join(differing)}); pass its options "
            "(only --write-steps, --read-steps, --grad-mode and --[no-]gradient-penalty may change)"
        )
    return payload["model"]


def _train_task(config: dict[str, Any]) -> Task:
    options = ("image_size", "corruption", "corrupt_bits", "block", "data_root", "omniglot_split")
    # Runs from before these options have no key.
    augment, random_memories = bool(config.get("augment")), config.get("random_memories", 0.0)
    return load_task(
        config["dataset"], "train", **{key: config.get(key) for key in options}, augment=augment,
        random_memories=random_memories,
    )  # fmt: skip


def _train(
    run_dir: Path,
    task: Task,
    config: dict[str, Any],
    spec: dict[str, Any],
    settings: dict[str, Any],
    command: str,
    checkpoint: dict[str, Any] | None,
    initial: dict[str, torch.Tensor] | None = None,
    workers: distributed.Workers | None = None,
) -> TrainResult:
    """Meta-train one model (of :func:`model_spec` ``spec``) from scratch, from ``checkpoint`` (a resume) or from the
    model state ``initial`` (``--init-from``), up to ``settings["steps"]``; each of ``workers`` on its share of every
    batch, process 0 alone writing files."""
    workers = workers or distributed.Workers()
    if workers.is_main:
        (run_dir / ARGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
        with open(run_dir / "command.txt", "a") as file:
            file.write(command + "\n")
    device = torch.device(settings["device"])
    if device.type == "cuda":  # the peak reported is this model's (on the CPU it is the process's)
        torch.cuda.reset_peak_memory_stats(device)
    chunk = settings["memory_chunk"] or default_memory_chunk(config)
    torch.manual_seed(config["seed"])
    model = build_model(spec).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    generator = torch.Generator().manual_seed(config["seed"])
    step, elapsed_before = 0, 0.0
    if initial is not None:  # run() passes it; a resume passes its checkpoint instead
        model.load_state_dict(model.fit_steps(initial) if isinstance(model, EBMM) else initial)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        for group in optimizer.param_groups:  # a resume may change the rate (RESUMABLE_CONFIG_KEYS)
            group["lr"] = config["lr"]
        generator.set_state(checkpoint["generator"])
        step, elapsed_before = checkpoint["step"], checkpoint["elapsed"]
    view = recall_view(model, config.get("write", "batch"))
    memory_size = view.memory_size(config["n_stored"])
    checkpoint_file = run_dir / CHECKPOINT_FILE
    tensorboard = settings["tensorboard"] and workers.is_main
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step) if tensorboard else None
    # Compiled on its first call, so its compilation counts in the run's time and speed.
    meta_loss = torch.compile(model.meta_loss) if settings["compile"] else None
    start_step, started = step, time.perf_counter()

    def save() -> None:
        if not workers.is_main:
            return
        payload = {
            "step": step,
            "config": config,
            "spec": spec,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "elapsed": elapsed_before + time.perf_counter() - started,
        }
        save_checkpoint(checkpoint_file, payload)

    loss = error = float("nan")
    interrupted = timed_out = False
    bar = tqdm(total=settings["steps"], initial=step, disable=not settings["progress"], desc=run_dir.name)
    try:
        while step < settings["steps"]:
            over_time = settings["time_limit"] is not None and time.perf_counter() - started > settings["time_limit"]
            if workers.any(over_time):  # on any process's clock, so that all stop at the same step
                timed_out = True
                break
            # Every process draws the whole batch, so the data and the generator's state are one process's.
            patterns = task.sample(config["batch_size"], config["n_stored"], generator)  # [batch, n, dim]
            queries = task.corrupt(patterns, generator).to(device)
            patterns = patterns.to(device)
            stats = meta_train_step(
                model,
                optimizer,
                workers.shard(patterns),
                workers.shard(queries),
                write=config.get("write", "batch"),
                max_grad_norm=config["grad_clip"],
                chunk=chunk,
                reduce_gradients=workers.average_gradients,
                meta_loss=meta_loss,
            )
            step += 1
            loss = workers.mean(stats["loss"])
            if workers.is_main and (step % settings["log_every"] == 0 or step == settings["steps"]):
                with torch.no_grad():
                    error = task.error(view.read(view.write(patterns), queries), patterns).mean().item()
                if writer is not None:
                    speed = (step - start_step) / (time.perf_counter() - started)
                    _log(writer, model, stats, error, step, speed, peak_memory_mb(device))
                bar.set_postfix(loss=f"{loss:.3g}", error=f"{error:.3g}")
            if step % settings["checkpoint_every"] == 0:
                save()
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        save()
        if writer is not None:
            writer.close()
    speed = (step - start_step) / max(time.perf_counter() - started, 1e-9)
    peak = peak_memory_mb(device)
    rate = f"{speed:.2f} steps/s" + (f" ({1 / speed:.1f} s per meta-step)" if 0 < speed < 1 else "")
    status = "done"
    if interrupted or timed_out:
        status = f"{'interrupted' if interrupted else 'time limit'}; continue with `{PROGRAM} --resume {run_dir}`"
    if not workers.is_main:
        return TrainResult(run_dir, checkpoint_file, step, memory_size, loss, error, interrupted)
    measured = [f"loss {loss:.4g}"] if step > start_step else ["no meta-step in this start"]
    if not math.isnan(error):  # a batch is scored every --log-every steps and at the last step
        measured.append(f"{task.metric} {error:.4g}")
    print(
        f"{config['model']} on {config['dataset']} (memory {memory_size} floats): step {step}/{settings['steps']}, "
        f"{', '.join(measured)}, {rate}; {status}; peak memory {peak / 1024:.2f} GiB; checkpoint "
        f"{checkpoint_file}"
    )
    return TrainResult(run_dir, checkpoint_file, step, memory_size, loss, error, interrupted)


def _log(
    writer: SummaryWriter,
    model: torch.nn.Module,
    stats: dict[str, float],
    error: float,
    step: int,
    speed: float,
    peak_mb: float,
) -> None:
    writer.add_scalar("train/loss", stats["loss"], step)
    writer.add_scalar("train/grad_norm", stats["grad_norm"], step)
    writer.add_scalar("train/error", error, step)
    writer.add_scalar("time/steps_per_second", speed, step)
    writer.add_scalar("time/peak_memory_mb", peak_mb, step)
    if isinstance(model, EBMM):
        writer.add_scalar("memory/alpha", model.alpha.item(), step)
        writer.add_scalar("memory/beta", model.beta.item(), step)
        writer.add_scalar("memory/momentum", model.momentum.item(), step)
        read_lr = model.read_lr
        writer.add_scalar("memory/read_lr_first", read_lr[0].item(), step)
        writer.add_scalar("memory/read_lr_last", read_lr[-1].item(), step)
        writer.add_scalar("memory/write_lr_mean", model.write_lr.mean().item(), step)
    else:
        writer.add_scalar("memory/inverse_temperature", model.log_inverse_temperature.exp().item(), step)
