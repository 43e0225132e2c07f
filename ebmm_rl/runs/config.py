"""Agent configs: rl-zoo-style YAML files keyed by env id, merged, validated and turned into constructor arguments.

``configs/<agent>.yml`` maps ``default`` and env ids (or their aliases, see :func:`ebmm_rl.envs.resolve_env_id`) to settings.
A config is resolved for one agent and env by merging, each layer over the previous one (nested mappings merge key by
key):

1. the agent's defaults (``policy``, unless the policy follows the observation space, and for agents with a window,
   ``window``);
2. the file's ``default`` section, then the section of the env;
3. ``--config FILE``: a flat mapping (e.g. a run's saved ``config.yml``) or a file keyed by env id like those in
   ``configs/``;
4. ``--set key=value`` overrides: values are YAML (``1e-4``, ``[64, 64]``, ``true``), dotted keys reach into mappings
   (``policy_kwargs.features_extractor_kwargs.write=stream``).

Keys are the algorithm constructor's argument names (``n_steps``, ``learning_rate``, ``policy_kwargs``...) plus the
run-level keys :data:`RUN_KEYS` and the agent's own (:attr:`ebmm_rl.agents.Agent.run_defaults`), which
:func:`split_config` strips before the constructor sees the rest. Strings under keys ending in ``_class`` or ``_fn``
(at any depth, e.g. ``policy_kwargs.activation_fn: torch.nn.Tanh``) and a dotted ``policy`` are imported with
importlib; ``learning_rate``, ``clip_range`` and ``clip_range_vf`` accept ``lin_<value>`` for a linear decay to 0.
"""

from __future__ import annotations

import collections.abc
import difflib
import importlib
import importlib.resources
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule

from ebmm_rl.agents import Agent
from ebmm_rl.envs import resolve_env_id
from ebmm_rl.memory import EBMM, MLPEnergy
from ebmm_rl.sb3.memory_spec import EBMM_KEYS, ENERGY_KEYS, memory_spec

CONFIG_PACKAGE = "ebmm_rl.configs"
"""The package whose data files are the ``<agent>.yml`` configs (the repository's ``configs/`` folder)."""

DEFAULT_SECTION = "default"

RUN_KEYS: dict[str, str] = {
    "n_envs": "number of parallel training envs",
    "n_timesteps": "total environment steps to train for",
    "env_kwargs": "keyword arguments of ebmm_rl.envs.make_env and gymnasium.make (e.g. agent_view_size, three_actions)",
    "normalize": "normalise observations and rewards with SB3's VecNormalize (rl-zoo's key; true or VecNormalize kwargs)",
    "novelty_bonus": "training reward per pose new in the episode (ebmm_rl.sb3.exploration); 0 or absent: none",
    "novelty_bonus_steps": "environment steps over which novelty_bonus decays linearly to 0",
    "curriculum": "stages the run trains through, each on its own env and settings (ebmm_rl.runs.curriculum)",
    "eval_deterministic": "evaluate greedy actions (true) or sampled ones (false, the default); --eval-deterministic: true",
}
"""Run-level keys every agent accepts; not passed to the algorithm."""

CLI_KEYS: dict[str, str] = {
    "env": "the --env option",
    "seed": "the --seed option",
    "device": "the --device option",
    "tensorboard_log": "the run directory (--run-dir)",
    "_init_setup_model": "SB3 itself",
}
"""Constructor arguments that the training CLI sets itself, so a config may not."""

CLASS_KEY_SUFFIXES = ("_class", "_fn")
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
LINEAR_SCHEDULE_PREFIX = "lin_"


class ConfigLoader(yaml.SafeLoader):
    """YAML safe loader that also reads ``1e-4`` and ``2e6`` as floats (YAML 1.1 wants ``1.0e-4``)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with :class:`ConfigLoader`.

    :param path: the file.
    :return: its content.
    """
    with open(path, encoding="utf-8") as file:
        return yaml.load(file, Loader=ConfigLoader)  # a SafeLoader


def parse_override(item: str) -> tuple[str, Any]:
    """Parse one ``--set key=value`` item.

    :param item: ``key=value``; the key may be dotted, the value is YAML.
    :return: the (dotted) key and the parsed value.
    :raises ValueError: if the item has no ``=``, an empty key or key part, or a value that is not valid YAML.
    """
    key, separator, text = item.partition("=")
    key = key.strip()
    if not separator or not key or not all(key.split(".")):
        raise ValueError(
            f"Bad override {item!r}: write key=value, e.g. --set learning_rate=3e-4 or "
            "--set policy_kwargs.net_arch=[64,64] (dotted keys reach into mappings)."
        )
    try:
        value = yaml.load(text, Loader=ConfigLoader)  # a SafeLoader
    except yaml.YAMLError as error:
        raise ValueError(f"Bad override {item!r}: the value is not valid YAML ({error}); quote strings if needed.") from None
    return key, value


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two configs: mappings merge key by key (recursively), anything else in ``override`` replaces.

    :param base: the lower layer (not modified).
    :param override: the upper layer (not modified).
    :return: a new merged mapping.
    """
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` items to a config.

    :param config: the config (not modified).
    :param overrides: ``key=value`` items, see :func:`parse_override`; later items win.
    :return: a new config.
    :raises ValueError: for bad syntax or a dotted key that passes through a value that is not a mapping.
    """
    result = merge({}, config)
    for item in overrides:
        key, value = parse_override(item)
        *parents, leaf = key.split(".")
        update: dict[str, Any] = {leaf: value}
        for parent in reversed(parents):
            update = {parent: update}
        node: Any = result
        for depth, parent in enumerate(parents):
            node = node.get(parent)
            if node is None:  # created by the merge
                break
            if not isinstance(node, Mapping):
                prefix = ".".join(parents[: depth + 1])
                raise ValueError(f"Bad override {item!r}: {prefix!r} is {node!r}, not a mapping, so it has no keys.")
        result = merge(result, update)
    return result


def constructor_parameters(cls: type) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """The keyword arguments of a class's constructor, following ``**kwargs`` to its base classes.

    :param cls: the class.
    :return: name -> parameter, in signature order, without ``self``, ``*args`` and ``**kwargs``; and name -> annotation
        (``Any`` where it cannot be evaluated, e.g. a name imported only for type checkers).
    """
    parameters: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        init = vars(klass)["__init__"]
        signature = inspect.signature(init).parameters.values()
        for parameter in signature:
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) or parameter.name == "self":
                continue
            if parameter.name not in parameters:
                parameters[parameter.name] = parameter
                hints[parameter.name] = _evaluated_annotation(parameter.annotation, init)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in signature):
            break
    return parameters, hints


def _evaluated_annotation(annotation: Any, function: Callable) -> Any:
    if annotation is inspect.Parameter.empty:
        return Any
    if not isinstance(annotation, str):
        return annotation
    holder = types.SimpleNamespace(__annotations__={"value": annotation}, __globals__=getattr(function, "__globals__", {}))
    try:
        return typing.get_type_hints(holder)["value"]
    except Exception:  # any failure to evaluate leaves the value unchecked, as an unannotated one
        return Any


def algorithm_arguments(algorithm: type[BaseAlgorithm]) -> list[str]:
    """Names of the constructor arguments of an algorithm, following ``**kwargs`` to its base classes.

    :param algorithm: an SB3 algorithm class.
    :return: the argument names, in signature order, without ``self`` and ``**kwargs``.
    """
    return list(constructor_parameters(algorithm)[0])


def valid_keys(agent: Agent) -> list[str]:
    """Keys a config of this agent may hold.

    :param agent: the agent.
    :return: the algorithm's constructor arguments (less :data:`CLI_KEYS`), then the run-level keys.
    """
    arguments = [name for name in algorithm_arguments(agent.algorithm) if name not in CLI_KEYS]
    return [*arguments, *RUN_KEYS, *agent.run_defaults]


def validate(config: Mapping[str, Any], agent: Agent, source: str) -> None:
    """Check a config layer's keys and run-level values.

    :param config: one layer or a merged config.
    :param agent: the agent it is for.
    :param source: where the layer comes from, for the error message.
    :raises ValueError: for an unknown key (with the valid keys and a suggestion) or a bad run-level value.
    """
    keys = valid_keys(agent)
    for key in config:
        if key in CLI_KEYS:
            raise ValueError(f"{source}: {key!r} cannot be set in a config; it is set by {CLI_KEYS[key]}.")
        if key not in keys:
            suggestions = difflib.get_close_matches(str(key), keys, n=3)
            hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
            raise ValueError(
                f"{source}: unknown key {key!r} for agent {agent.name!r} ({agent.algorithm.__name__}).{hint} "
                f"Valid keys: {', '.join(keys)}."
            )
    for key in ("n_envs", "n_timesteps", "window"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{source}: {key} must be a positive integer, got {value!r}.")
    bonus, bonus_steps = config.get("novelty_bonus"), config.get("novelty_bonus_steps")
    if bonus is not None and (isinstance(bonus, bool) or not isinstance(bonus, (int, float)) or bonus < 0):
        raise ValueError(f"{source}: novelty_bonus must be a number >= 0 (0: no bonus), got {bonus!r}.")
    if bonus_steps is not None and (isinstance(bonus_steps, bool) or not isinstance(bonus_steps, int) or bonus_steps < 1):
        raise ValueError(f"{source}: novelty_bonus_steps must be a positive integer, got {bonus_steps!r}.")
    env_kwargs = config.get("env_kwargs", {})
    if not isinstance(env_kwargs, Mapping):
        raise ValueError(f"{source}: env_kwargs must be a mapping of keyword arguments, got {env_kwargs!r}.")
    for key, fix in (("window", "the run-level key 'window' of an agent with a window"), ("oracle", "the ppo_oracle agent")):
        if key in env_kwargs:
            raise ValueError(f"{source}: env_kwargs may not set {key!r}; the agent decides it (use {fix}).")


def env_sections(data: Any, env_id: str, source: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``default`` section and the section of one env from an env-keyed config.

    :param data: the file's content, a mapping from ``default`` and env ids (or aliases) to mappings.
    :param env_id: a registered env id (already resolved).
    :param source: the file, for error messages.
    :return: ``(name, section)`` pairs, ``default`` first; missing sections are left out.
    :raises ValueError: if a top-level key is neither ``default`` nor an env id (with a suggestion), or a section is
        not a mapping.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping from 'default' and env ids to settings, got {type(data).__name__}.")
    sections = []
    for key, section in data.items():
        if key != DEFAULT_SECTION:
            try:
                resolved = resolve_env_id(str(key))
            except ValueError as error:
                raise ValueError(f"{source}: top-level key {key!r} is neither 'default' nor an env id. {error}") from None
            if resolved != env_id:
                continue
        if not isinstance(section, Mapping):
            raise ValueError(f"{source}: section {key!r} must be a mapping of settings, got {section!r}.")
        sections.append((str(key), dict(section)))
    return sorted(sections, key=lambda pair: pair[0] != DEFAULT_SECTION)


def _is_env_keyed(data: Mapping[str, Any]) -> bool:
    for key in data:
        if key == DEFAULT_SECTION:
            return True
        try:
            resolve_env_id(str(key))
        except ValueError:
            continue
        return True
    return False


def config_path(agent: Agent) -> Path:
    """The YAML file of an agent: ``<name>.yml`` among the package data of :data:`CONFIG_PACKAGE`."""
    return Path(str(importlib.resources.files(CONFIG_PACKAGE) / f"{agent.name}.yml"))


def load_config(
    agent: Agent,
    env_id: str,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> dict[str, Any]:
    """Resolve the config of an agent on an env (see the module docstring for the layers).

    :param agent: the agent.
    :param env_id: a registered env id or alias.
    :param config_file: an extra YAML file (flat, or keyed by env id).
    :param overrides: ``key=value`` items.
    :return: the resolved config: plain YAML types (class paths still strings), ready to save as ``config.yml`` and to
        pass to :func:`split_config`.
    :raises ValueError: for an unknown env id, an unknown key, a bad override or a bad value, naming its source.
    :raises FileNotFoundError: if the agent has no ``configs/<name>.yml``.
    """
    env_id = resolve_env_id(env_id)
    path = config_path(agent)
    if not path.is_file():
        raise FileNotFoundError(
            f"Agent {agent.name!r} has no config file {path}; add configs/{agent.name}.yml (see configs/ppo.yml)."
        )
    config: dict[str, Any] = {**({"policy": agent.policy} if agent.policy else {}), **agent.run_defaults}
    layers = [(f"{path} [{name}]", section) for name, section in env_sections(load_yaml(path), env_id, str(path))]
    if config_file is not None:
        data = load_yaml(config_file) or {}
        if isinstance(data, Mapping) and _is_env_keyed(data):
            layers += [(f"{config_file} [{name}]", section) for name, section in env_sections(data, env_id, str(config_file))]
        elif isinstance(data, Mapping):
            layers.append((str(config_file), dict(data)))
        else:
            raise ValueError(f"{config_file}: expected a mapping of settings, got {type(data).__name__}.")
    for source, layer in layers:
        validate(layer, agent, source)
        config = merge(config, layer)
    overrides = list(overrides)
    config = apply_overrides(config, overrides)
    validate(config, agent, "--set " + " ".join(overrides) if overrides else "config")
    for key in ("n_envs", "n_timesteps"):
        if config.get(key) is None:
            raise ValueError(f"The config of {agent.name!r} on {env_id} sets no {key}; add it to {path} [default].")
    if config.get("novelty_bonus") and config.get("novelty_bonus_steps") is None:
        raise ValueError(
            f"The config of {agent.name!r} on {env_id} sets novelty_bonus but not novelty_bonus_steps, the steps over "
            "which it decays to 0; set both, e.g. --set novelty_bonus_steps=2400000."
        )
    return config


def import_object(path: str, key: str = "") -> Any:
    """Import ``package.module.Name`` (attributes may be nested: ``package.module.Class.attr``).

    :param path: the dotted path.
    :param key: the config key it came from, for the error message.
    :return: the object.
    :raises ValueError: if nothing can be imported at that path.
    """
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            break
        return obj
    where = f" (config key {key!r})" if key else ""
    raise ValueError(f"Cannot import {path!r}{where}: write a dotted path to an importable object, e.g. torch.nn.Tanh.")


def resolve_objects(value: Any, key: str = "") -> Any:
    """Replace class paths (strings under keys ending in ``_class`` or ``_fn``) by the imported objects, recursively.

    :param value: a config value.
    :param key: its dotted key.
    :return: the value with the paths imported; other values unchanged.
    """
    if isinstance(value, Mapping):
        return {name: resolve_objects(item, f"{key}.{name}" if key else str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [resolve_objects(item, key) for item in value]
    if isinstance(value, str) and key.rsplit(".", 1)[-1].endswith(CLASS_KEY_SUFFIXES):
        return import_object(value, key)
    return value


def split_config(config: Mapping[str, Any], agent: Agent) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate the run-level keys from the algorithm's constructor arguments and import class paths.

    :param config: a resolved config (:func:`load_config` or a run's ``config.yml``).
    :param agent: its agent.
    :return: ``(run, algorithm_kwargs)``: the run-level keys (``n_envs``, ``n_timesteps``, ``env_kwargs`` and the
        agent's) and the keyword arguments for ``agent.algorithm`` (with ``policy``), objects imported.
    """
    run_keys = {*RUN_KEYS, *agent.run_defaults}
    run = {key: value for key, value in config.items() if key in run_keys}
    kwargs = resolve_objects({key: value for key, value in config.items() if key not in run_keys})
    if isinstance(kwargs.get("policy"), str) and "." in kwargs["policy"]:
        kwargs["policy"] = import_object(kwargs["policy"], "policy")
    for key in SCHEDULE_KEYS:
        value = kwargs.get(key)
        if isinstance(value, str) and value.startswith(LINEAR_SCHEDULE_PREFIX):
            try:
                start = float(value.removeprefix(LINEAR_SCHEDULE_PREFIX))
            except ValueError:
                raise ValueError(f"{key}: {value!r} is not lin_<number>, e.g. lin_3e-4.") from None
            kwargs[key] = LinearSchedule(start, 0.0, 1.0)
    return run, kwargs


RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "n_steps": (lambda value: value >= 1, "an integer >= 1"),
    "batch_size": (lambda value: value >= 2, "an integer >= 2 (SB3 normalises advantages over a minibatch)"),
    "n_epochs": (lambda value: value >= 1, "an integer >= 1"),
    "learning_rate": (lambda value: value >= 0, "a number >= 0 or lin_<number>"),
    "gamma": (lambda value: 0 <= value <= 1, "a number in [0, 1]"),
    "gae_lambda": (lambda value: 0 <= value <= 1, "a number in [0, 1]"),
    "clip_range": (lambda value: value > 0, "a number > 0 or lin_<number>"),
    "clip_range_vf": (lambda value: value > 0, "a number > 0, lin_<number> or null"),
    "ent_coef": (lambda value: value >= 0, "a number >= 0"),
    "vf_coef": (lambda value: value >= 0, "a number >= 0"),
    "max_grad_norm": (lambda value: value > 0, "a number > 0"),
    "target_kl": (lambda value: value > 0, "a number > 0 or null"),
    "stats_window_size": (lambda value: value >= 1, "an integer >= 1"),
    "memory_loss_weight": (lambda value: value >= 0, "a number >= 0 (0: no memory objective)"),
    "memory_loss_batches": (lambda value: value >= 1, "an integer >= 1 or null (every minibatch)"),
}
"""Ranges of the algorithms' numeric arguments; the type comes from the constructor's annotation. Arguments of the
policy, features extractor and optimiser are checked by their classes when the model is built, before a run starts."""
NESTED_KWARGS = {
    "features_extractor_kwargs": "features_extractor_class",
    "optimizer_kwargs": "optimizer_class",
    "encoder_kwargs": "encoder_class",  # EBMMExtractor's observation encoder
}
"""Keyword-argument mappings of a policy (or of its features extractor) and the argument naming the class they are passed
to."""
OWN_ARGUMENTS = {"policy_kwargs": ("observation_space", "action_space", "lr_schedule"), "features_extractor_kwargs": (
    "observation_space",), "encoder_kwargs": ("observation_space",), "optimizer_kwargs": ("params", "lr")}  # fmt: skip
"""Arguments the consumer of a mapping gets from SB3 itself, so a config may not set them."""


def check_arguments(
    config: Mapping[str, Any], agent: Agent, source: str = "config", default_policy: str | None = None
) -> None:
    """Check every value of a resolved config against the type its consumer declares and, for the algorithm's numeric
    arguments, against :data:`RANGES`; nested mappings (``policy_kwargs`` and the policy's ``features_extractor_kwargs``
    and ``optimizer_kwargs``) against the constructors of the classes they go to, unknown keys included.

    :param config: a resolved config (:func:`load_config`).
    :param agent: its agent.
    :param source: where the values come from, for the error message.
    :param default_policy: the policy the run gets when the config names none (the algorithm's for the env's
        observation space, :func:`ebmm_rl.runs.experiment.default_policy`); ``None``: ``policy_kwargs`` go unchecked then.
    :raises ValueError: one line naming the key, the value and what is expected.
    """
    _, kwargs = split_config(config, agent)
    _, hints = constructor_parameters(agent.algorithm)
    for key, value in kwargs.items():
        if key == "policy":
            continue
        _check_value(key, value, hints.get(key, Any), source)
        if key in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            accepts, expected = RANGES[key]
            if not accepts(value):
                raise ValueError(f"{source}: {key}={value!r} is out of range; expected {expected}.")
    policy = kwargs.get("policy") or default_policy
    if isinstance(policy, str):
        policy = agent.algorithm.policy_aliases.get(policy)
    if isinstance(policy, type) and kwargs.get("policy_kwargs") is not None:
        _check_mapping("policy_kwargs", "policy_kwargs", kwargs["policy_kwargs"], policy, source)


def _check_mapping(path: str, kind: str, values: Mapping[str, Any], consumer: type, source: str) -> None:
    """Check the keyword arguments ``values`` (at ``path`` in the config) of ``consumer``'s constructor."""
    parameters, hints = constructor_parameters(consumer)
    settable = [name for name in parameters if name not in OWN_ARGUMENTS.get(kind, ())]
    for name, value in values.items():
        dotted = f"{path}.{name}"
        if name not in settable:
            suggestions = difflib.get_close_matches(str(name), settable, n=3)
            hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
            raise ValueError(
                f"{source}: unknown key {dotted!r}: {consumer.__name__} takes no argument {name!r}.{hint} "
                f"Valid keys: {', '.join(settable)}."
            )
        _check_value(dotted, value, hints.get(name, Any), source)
    if isinstance(values.get("memory"), Mapping) and "memory" in parameters:
        _check_memory(f"{path}.memory", values["memory"], source)
    for name, class_argument in NESTED_KWARGS.items():
        if values.get(name) is None or class_argument not in parameters:
            continue
        nested_consumer = values.get(class_argument, parameters[class_argument].default)
        if isinstance(nested_consumer, type):
            _check_mapping(f"{path}.{name}", name, values[name], nested_consumer, source)


def _check_memory(path: str, values: Mapping[str, Any], source: str) -> None:
    """Check a memory specification (:func:`ebmm_rl.sb3.memory_spec.memory_spec`) against the constructors it goes to."""
    try:
        memory_spec(values)
    except ValueError as error:
        raise ValueError(f"{source}: {path}: {error}") from None
    energy_hints, ebmm_hints = constructor_parameters(MLPEnergy)[1], constructor_parameters(EBMM)[1]
    hints = {key: energy_hints.get("dim" if key == "pattern_dim" else key, Any) for key in ENERGY_KEYS}
    hints |= {key: ebmm_hints.get(key, Any) for key in EBMM_KEYS}
    for name, value in values.items():
        _check_value(f"{path}.{name}", value, hints[name], source)


def _check_value(key: str, value: Any, hint: Any, source: str) -> None:
    if not conforms(value, hint):
        raise ValueError(f"{source}: {key}={value!r} is not {describe(hint)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{source}: {key}={value!r} is not a finite number.")


def conforms(value: Any, hint: Any) -> bool:
    """Whether a config value fits a type annotation. YAML has no tuples, so lists fit tuple types; integers fit
    ``float``; a type it cannot check (a type variable, a forward reference) accepts anything.

    :param value: the value (class paths already imported, ``lin_`` schedules already built).
    :param hint: the annotation.
    """
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(conforms(value, argument) for argument in arguments)
    if origin is Literal:
        return value in arguments
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is type:
        return isinstance(value, type) and (
            not arguments or not isinstance(arguments[0], type) or issubclass(value, arguments[0])
        )
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return all(conforms(item, arguments[0]) for item in value)
        return not arguments or (len(value) == len(arguments) and all(map(conforms, value, arguments)))
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable):
        return isinstance(value, (list, tuple)) and all(conforms(item, arguments[0]) for item in value if arguments)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping) and (not arguments or all(conforms(item, arguments[1]) for item in value.values()))
    if isinstance(hint, type) and origin is None:
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """What an annotation asks for, in words (for error messages)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(argument) for argument in arguments))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, arguments))
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if origin is type:
        return f"a dotted path to a subclass of {getattr(arguments[0], '__name__', arguments[0])}" if arguments else "a class"
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return "a schedule (lin_<number>)"
    if origin is tuple and arguments and arguments[-1] is not Ellipsis:
        return f"a list of {len(arguments)} values ({', '.join(describe(argument) for argument in arguments)})"
    if origin in (tuple, list, collections.abc.Sequence, collections.abc.Iterable):
        return f"a list of values each {describe(arguments[0])}" if arguments else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))
