"""Curricula: one run that trains one model through stages, each on its own env and settings.

A config section may hold ``curriculum``, a mapping from stage names to stages, in order::

    MiniGrid-Memory-v0:
      n_timesteps: 4300000          # the whole run
      curriculum:
        s13tmaze:                   # stage 1
          env: EBMM-MemoryS13TMaze  # default: the run's env
          n_timesteps: 500000       # the stage's budget
          advance: {success_rate: 0.95, evaluations: 3}
          learning_rate: lin_5.0e-4 # over the section's keys, for this stage only
          gamma: 0.95
        memory:                     # the last stage: the run's env, until the run's n_timesteps
          novelty_bonus: 0.01
          novelty_bonus_steps: 2400000

Each stage trains on the section's config with its own keys over it (:data:`STAGE_KEYS`: what SB3 reads during
training, so the model, its spaces and its optimiser carry over). A stage ends at its budget, or, with ``advance``, at
the first rollout start after its evaluations reached ``success_rate`` in ``evaluations`` evaluations in a row; the last
stage ends with the run, which its own ``advance`` ends early (the task is solved: SB3's ``StopTrainingOnRewardThreshold``
on success, held). Schedules count from their stage's start: ``lin_`` learning rates and clip ranges decay to 0
over the stage, the novelty bonus over ``novelty_bonus_steps`` from the stage's start. ``--set curriculum=null`` trains
on the run's env alone; dotted keys reach into stages (``--set curriculum.s13tmaze.n_timesteps=300000``).

Stages change only at a rollout's start, after an update, where a checkpoint is exact
(:mod:`ebmm_rl.runs.checkpoints`), and every checkpoint holds its :class:`StagePosition`, so a resumed run continues
mid-stage or across a stage's end exactly as it would have run.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import FloatSchedule

from ebmm_rl import envs
from ebmm_rl.agents import Agent
from ebmm_rl.runs.config import check_arguments, merge, split_config, valid_keys, validate

CURRICULUM_KEY = "curriculum"
STAGE_CONTROL_KEYS: dict[str, str] = {
    "env": "the stage's env id or alias (default: the run's env; the last stage trains on the run's env)",
    "n_timesteps": "the stage's step budget (every stage but the last, which ends with the run)",
    "advance": "{success_rate: S, evaluations: K}: end the stage once K evaluations in a row reach S (the last stage's: "
    "end the run, the task solved)",
}
STAGE_KEYS = (
    "env_kwargs",
    "novelty_bonus",
    "novelty_bonus_steps",
    "learning_rate",
    "n_steps",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "clip_range",
    "clip_range_vf",
    "normalize_advantage",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
    "target_kl",
    "memory_loss_weight",
    "memory_loss_batches",
)
"""Config keys a stage may set over its section's: the env's arguments, the exploration bonus and what the algorithm
reads while it trains (never the policy, its memory or ``n_envs``, which the model keeps from stage to stage)."""
SCHEDULED_ATTRIBUTES = ("clip_range", "clip_range_vf")
ROLLOUT_BUFFER_KEYS = ("n_steps", "gamma", "gae_lambda")


@dataclass(frozen=True)
class Stage:
    """One stage of a run: a run without a curriculum is one stage with no name.

    :param index: its position, from 0.
    :param name: its name in the config (``None`` without a curriculum).
    :param env_id: the env it trains on.
    :param config: the run's config with the stage's keys over it, without ``curriculum``.
    :param budget: its step budget (``None``: until the run ends).
    :param success_rate: the evaluation success that advances it (``None``: only the budget does).
    :param evaluations: evaluations in a row that must reach ``success_rate``.
    """

    index: int
    name: str | None
    env_id: str
    config: dict[str, Any]
    budget: int | None = None
    success_rate: float | None = None
    evaluations: int = 1

    def describe(self, count: int) -> str:
        """``stage 2 of 2 (memory, MiniGrid-Memory-v0)``; empty without a curriculum."""
        return "" if self.name is None else f"stage {self.index + 1} of {count} ({self.name}, {self.env_id})"


@dataclass
class StagePosition:
    """Where a run is in its curriculum; every checkpoint holds it (:class:`ebmm_rl.runs.checkpoints.TrainingState`).

    :param index: the stage.
    :param start: the step the stage started at.
    :param held: the stage's last evaluations in a row that reached its ``success_rate``.
    """

    index: int = 0
    start: int = 0
    held: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, int] | None) -> StagePosition:
        return cls(**{key: int(value) for key, value in (values or {}).items() if key in ("index", "start", "held")})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def stages(config: Mapping[str, Any], env_id: str, agent: Agent) -> list[Stage]:
    """The stages of a resolved config, each checked: its keys, its advance condition and its merged config's values.

    :param config: a resolved config (:func:`ebmm_rl.runs.config.load_config` or a run's ``config.yml``).
    :param env_id: the run's env id (resolved).
    :param agent: the run's agent.
    :return: the stages in order; one stage without a name when the config has no ``curriculum``.
    :raises ValueError: one line naming the stage, the key and the fix.
    """
    base = {key: value for key, value in config.items() if key != CURRICULUM_KEY}
    curriculum = config.get(CURRICULUM_KEY)
    if curriculum is None:
        return [Stage(0, None, env_id, base)]
    if not isinstance(curriculum, Mapping) or not curriculum:
        raise ValueError(
            f"curriculum must map stage names to their settings (e.g. {{tmaze: {{env: EBMM-MemoryS13TMaze, n_timesteps: "
            f"300000}}, memory: {{}}}}), got {curriculum!r}; --set curriculum=null trains without one."
        )
    result = []
    names = list(curriculum)
    agent_keys = set(valid_keys(agent))
    for index, name in enumerate(names):
        source = f"curriculum stage {name!r}"
        last = index == len(names) - 1
        settings = curriculum[name] or {}
        if not isinstance(settings, Mapping):
            raise ValueError(f"{source}: expected a mapping of settings, got {settings!r}.")
        allowed = [*STAGE_CONTROL_KEYS, *(key for key in STAGE_KEYS if key in agent_keys)]
        for key in settings:
            if key not in allowed:
                suggestions = difflib.get_close_matches(str(key), allowed, n=3)
                hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
                raise ValueError(
                    f"{source}: {key!r} cannot change within a run (every stage trains the same model).{hint} A stage "
                    f"may set: {', '.join(allowed)}."
                )
        stage_env = envs.resolve_env_id(str(settings.get("env", env_id)))
        if last and stage_env != env_id:
            raise ValueError(
                f"{source}: the last stage trains on the run's env {env_id}, not {stage_env}; put {stage_env} in an "
                "earlier stage or train with --env " + stage_env + "."
            )
        budget = settings.get("n_timesteps")
        if last and budget is not None:
            raise ValueError(f"{source}: the last stage runs until the run's n_timesteps; drop its n_timesteps.")
        if not last and not _is_count(budget):
            raise ValueError(f"{source}: n_timesteps (the stage's step budget) must be a positive integer, got {budget!r}.")
        success_rate, evaluations = _advance(settings.get("advance"), source)
        overrides = {key: value for key, value in settings.items() if key not in STAGE_CONTROL_KEYS}
        validate(overrides, agent, source)
        merged = merge(base, overrides)
        if merged.get("novelty_bonus") and merged.get("novelty_bonus_steps") is None:
            raise ValueError(f"{source}: novelty_bonus needs novelty_bonus_steps, the steps over which it decays to 0.")
        check_arguments(merged, agent, source)
        result.append(Stage(index, str(name), stage_env, merged, budget, success_rate, evaluations))
    return result


def _advance(advance: Any, source: str) -> tuple[float | None, int]:
    if advance is None:
        return None, 1
    example = "e.g. advance: {success_rate: 0.95, evaluations: 3}"
    if not isinstance(advance, Mapping) or set(advance) - {"success_rate", "evaluations"}:
        raise ValueError(f"{source}: advance takes success_rate and evaluations, {example}; got {advance!r}.")
    success_rate, evaluations = advance.get("success_rate"), advance.get("evaluations", 1)
    if not _is_number(success_rate) or not 0 <= success_rate <= 1:
        raise ValueError(f"{source}: advance.success_rate must be a number in [0, 1], {example}; got {success_rate!r}.")
    if not _is_count(evaluations):
        raise ValueError(f"{source}: advance.evaluations must be a positive integer, {example}; got {evaluations!r}.")
    return float(success_rate), evaluations


def check_spaces(run_stages: list[Stage], agent: Agent) -> None:
    """Check that every stage's env gives the first stage's observation and action spaces (one model trains on all).

    :raises ValueError: naming the stage whose spaces differ, or whose ``env_kwargs`` its env does not take.
    """
    first = None
    for stage in run_stages:
        try:
            env = envs.make_env(stage.env_id, **agent.env_options(stage.config))
        except TypeError as error:  # gymnasium.make passes env_kwargs on to the env's constructor
            raise ValueError(
                f"curriculum stage {stage.name!r}: env_kwargs {stage.config.get('env_kwargs', {})!r} do not fit "
                f"{stage.env_id}: {' '.join(str(error).split())}"
            ) from None
        spaces = (env.observation_space, env.action_space)
        env.close()
        if first is None:
            first = (stage, spaces)
        elif spaces != first[1]:
            raise ValueError(
                f"curriculum stage {stage.name!r}: {stage.env_id} gives observations {_describe(spaces[0])} and actions "
                f"{_describe(spaces[1])}, stage {first[0].name!r} ({first[0].env_id}) {_describe(first[1][0])} and "
                f"{_describe(first[1][1])}; one model trains through every stage, so their envs (and env_kwargs such as "
                "agent_view_size) must match."
            )


def _describe(space: gymnasium.Space) -> str:
    """A space in a few words: a Box by its shape, a Dict by its members'."""
    if isinstance(space, gymnasium.spaces.Dict):
        return "{" + ", ".join(f"{key}: {_describe(member)}" for key, member in space.spaces.items()) + "}"
    if isinstance(space, gymnasium.spaces.Box):
        return f"Box{space.shape}"
    return str(space)


def stage_end(stage: Stage, start: int, n_timesteps: int) -> int:
    """The step a stage that started at ``start`` ends at, at the latest: its budget or the run's end."""
    return n_timesteps if stage.budget is None else min(start + stage.budget, n_timesteps)


class StageSchedule:
    """A schedule over one stage: SB3 gives ``progress_remaining`` over the stage's ``learn()`` call, which runs from the
    run's start (progress 1 at step 0) to the stage's end; this maps it to the progress within the stage.

    :param schedule: the stage's schedule of its own progress remaining (1 at its start, 0 at its end).
    :param start: the stage's first step.
    :param end: its last step (the ``learn()`` call's total).
    """

    def __init__(self, schedule: FloatSchedule, start: int, end: int) -> None:
        self.schedule = schedule
        self.start = start
        self.end = end

    def __call__(self, progress_remaining: float) -> float:
        if self.start == 0:  # the call's progress is the stage's
            return self.schedule(progress_remaining)
        return self.schedule(min(1.0, progress_remaining * self.end / max(self.end - self.start, 1)))

    def __repr__(self) -> str:
        return f"StageSchedule({self.schedule}, start={self.start}, end={self.end})"


def apply_stage(model: BaseAlgorithm, stage: Stage, agent: Agent, start: int, end: int) -> None:
    """Set a model's training settings to a stage's (:data:`STAGE_KEYS`), its schedules over the stage's steps.

    :param model: the model (its envs already the stage's).
    :param stage: the stage.
    :param agent: the run's agent.
    :param start: the stage's first step.
    :param end: the stage's last step.
    """
    _, kwargs = split_config(stage.config, agent)
    for key in STAGE_KEYS:
        if key in kwargs and hasattr(model, key):
            setattr(model, key, kwargs[key])
    model.lr_schedule = StageSchedule(FloatSchedule(model.learning_rate), start, end)
    for key in SCHEDULED_ATTRIBUTES:
        value = kwargs.get(key, getattr(model, key, None))
        if isinstance(value, StageSchedule):  # a setting the config leaves to the algorithm's default
            value = value.schedule
        if value is not None:
            setattr(model, key, StageSchedule(FloatSchedule(value), start, end))
    # The rollout buffer is SB3's (or sb3-contrib's); it allocates its arrays from these at every rollout's start.
    buffer = model.rollout_buffer
    buffer.buffer_size, buffer.gamma, buffer.gae_lambda = model.n_steps, model.gamma, model.gae_lambda
    if hasattr(buffer, "hidden_state_shape"):  # sb3-contrib's recurrent buffers: [n_steps, layers, n_envs, hidden]
        buffer.hidden_state_shape = (model.n_steps, *buffer.hidden_state_shape[1:])
    buffer.reset()


class StageAdvance(Exception):
    """Raised out of ``learn()`` at a rollout's start when the stage's advance condition holds."""


class StageGate(BaseCallback):
    """Count a stage's evaluations that reach its ``success_rate`` (:meth:`record`, after each evaluation) and end its
    ``learn()`` call at the next rollout's start once ``evaluations`` in a row have (:class:`StageAdvance`). Must come
    first in the callback list, so nothing else sees a rollout start that does not happen. Logs ``rollout/stage``.

    :param stage: the stage.
    :param position: the run's position, updated in place (checkpoints read it).
    """

    def __init__(self, stage: Stage, position: StagePosition) -> None:
        super().__init__()
        self.stage = stage
        self.position = position

    @property
    def due(self) -> bool:
        """Whether the stage's advance condition holds."""
        return self.stage.success_rate is not None and self.position.held >= self.stage.evaluations

    def record(self, success_rate: float) -> None:
        """Count one evaluation of the stage."""
        if self.stage.success_rate is not None:
            self.position.held = self.position.held + 1 if success_rate >= self.stage.success_rate else 0

    def _on_rollout_start(self) -> None:
        if self.due:
            raise StageAdvance
        if self.stage.name is not None:
            self.logger.record("rollout/stage", self.stage.index + 1)

    def _on_step(self) -> bool:
        return True
