"""Evaluate a trained run: ``python -m ebmm_rl.evaluate RUN_DIR --episodes 100 [--model best] [--gif out.gif]``.

Loads one of the run's models, by default ``best_model.zip`` (the best evaluation of the curriculum stage the run
reached; ``--model final``: ``final_model.zip``, ``--model latest``: the newest checkpoint), or, if it is missing or
damaged, the final model or newest readable checkpoint, saying so. It rebuilds the run's env from the saved
``config.yml`` and ``args.yml`` (with a curriculum: its last stage, the run's task) and reports the success rate
(episode return > 0) and the mean return. ``--gif`` records a few episodes with ``render_mode="rgb_array"`` (written
with Pillow).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy

from ebmm_rl import envs
from ebmm_rl.agents import Agent
from ebmm_rl.runs import arguments
from ebmm_rl.runs.config import parse_override
from ebmm_rl.runs.curriculum import stages
from ebmm_rl.runs.experiment import EVAL_SEED_OFFSET, MODEL_CHOICES, load_normalization, load_run, make_vec_env
from ebmm_rl.runs.training import success_note

PROGRAM = "python -m ebmm_rl.evaluate"
GIF_FRAME_MS = 150
GIF_END_FRAMES = 4
"""Extra copies of an episode's last frame, so the outcome stays visible for a moment."""


@dataclass(frozen=True)
class EvalResult:
    """What :func:`main` returns.

    :param model_path: the evaluated model.
    :param env_id: the env it was evaluated on.
    :param episodes: number of episodes.
    :param success_rate: fraction of episodes with a return > 0 on an env that pays only on success (MiniGrid's),
        else ``nan`` (see :func:`ebmm_rl.envs.pays_on_success`).
    :param mean_reward: mean episode return.
    :param std_reward: standard deviation of the episode returns.
    :param mean_ep_length: mean episode length.
    :param gif_path: the GIF, if one was recorded.
    """

    model_path: Path
    env_id: str
    episodes: int
    success_rate: float
    mean_reward: float
    std_reward: float
    mean_ep_length: float
    gif_path: Path | None = None


def record_gif(
    model: BaseAlgorithm,
    agent: Agent,
    env_id: str,
    config: dict[str, Any],
    model_path: Path,
    path: str | Path,
    episodes: int,
    seed: int,
    deterministic: bool,
) -> Path:
    """Play episodes with the model and save them as an animated GIF.

    :param model: the model.
    :param agent: its agent (how the env is wrapped).
    :param env_id: the env.
    :param config: the run's config (``window``, ``env_kwargs``, ``normalize``).
    :param model_path: the model's file (its ``VecNormalize`` statistics are beside it).
    :param path: the GIF file.
    :param episodes: number of episodes to record.
    :param seed: seed of the first episode.
    :param deterministic: act greedily.
    :return: the path.
    """
    config = {**config, "env_kwargs": {**config.get("env_kwargs", {}), "render_mode": "rgb_array"}}
    env = make_vec_env(agent, env_id, config, 1, seed, training=False)
    load_normalization(env, model_path)
    frames: list[Image.Image] = []
    try:
        for episode in range(episodes):
            env.seed(seed + episode)
            observation = env.reset()
            state, episode_start, done = None, np.ones((1,), dtype=bool), False
            while not done:
                frames.append(Image.fromarray(env.render()))
                action, state = model.predict(
                    observation, state=state, episode_start=episode_start, deterministic=deterministic
                )
                observation, _, dones, _ = env.step(action)
                episode_start, done = dones, bool(dones[0])
            frames += frames[-1:] * GIF_END_FRAMES  # the env has started the next episode: hold its last frame
    finally:
        env.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
    return path


def build_parser() -> arguments.ArgumentParser:
    """The command-line parser."""
    parser = arguments.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by ebmm_rl.train")
    parser.add_argument(
        "--model",
        choices=list(MODEL_CHOICES),
        default="best",
        help="which model: " + "; ".join(f"{name}: {what}" for name, what in MODEL_CHOICES.items()) + " (default best)",
    )
    parser.add_argument("--episodes", type=arguments.positive_int, default=100, help="episodes to evaluate (default 100)")
    parser.add_argument("--deterministic", action="store_true", help="act greedily (default: sample actions)")
    parser.add_argument("--env", help="evaluate on another env id or alias (default: the run's env)")
    parser.add_argument(
        "--env-kwargs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one of the env's keyword arguments (repeatable), e.g. corridor_length=200 to test at another delay",
    )
    parser.add_argument("--seed", type=arguments.seed, help="seed of the evaluation envs (default: the run's evaluation seed)")
    parser.add_argument("--n-envs", type=arguments.positive_int, default=8, help="parallel evaluation envs (default 8)")
    parser.add_argument(
        "--device", default="auto", type=arguments.device, help="torch device: auto, cpu or cuda (default auto)"
    )
    parser.add_argument("--gif", metavar="FILE", help="also record episodes to this GIF")
    parser.add_argument("--gif-episodes", type=arguments.positive_int, default=3, help="episodes in the GIF (default 3)")
    return parser


def main(argv: list[str] | None = None) -> EvalResult:
    """Evaluate one run; see ``python -m ebmm_rl.evaluate --help``.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: the :class:`EvalResult`.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        env_kwargs = dict(map(parse_override, args.env_kwargs))
        agent, settings, config, model, model_path = load_run(args.run_dir, args.device, args.model)
        config = stages(config, settings["env"], agent)[-1].config  # a curriculum's last stage: the run's task
        env_id = envs.resolve_env_id(args.env or settings["env"])
        config = {**config, "env_kwargs": {**config.get("env_kwargs", {}), **env_kwargs}}
        seed = settings["seed"] + EVAL_SEED_OFFSET if args.seed is None else args.seed
        eval_env = make_vec_env(agent, env_id, config, min(args.n_envs, args.episodes), seed, training=False)
        load_normalization(eval_env, model_path)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    except TypeError as error:  # gymnasium.make passes env_kwargs on to the env's constructor
        parser.error(f"--env-kwargs {env_kwargs}: {error}")
    try:
        returns, lengths = evaluate_policy(
            model, eval_env, n_eval_episodes=args.episodes, deterministic=args.deterministic, return_episode_rewards=True
        )
    finally:
        eval_env.close()
    returns = np.asarray(returns, dtype=np.float64)
    gif_path = None
    if args.gif:
        gif_path = record_gif(model, agent, env_id, config, model_path, args.gif, args.gif_episodes, seed, args.deterministic)
    result = EvalResult(
        model_path=model_path,
        env_id=env_id,
        episodes=len(returns),
        success_rate=float(np.mean(returns > 0)) if envs.pays_on_success(env_id) else float("nan"),
        mean_reward=float(np.mean(returns)),
        std_reward=float(np.std(returns)),
        mean_ep_length=float(np.mean(lengths)),
        gif_path=gif_path,
    )
    gif_note = f"; GIF saved to {gif_path}" if gif_path else ""
    print(
        f"{agent.name} on {env_id}: {success_note(result.success_rate)}mean return {result.mean_reward:.3f} "
        f"± {result.std_reward:.3f}, mean length {result.mean_ep_length:.1f} ({result.episodes} episodes, "
        f"{'greedy' if args.deterministic else 'sampled'} actions) with {model_path}{gif_note}"
    )
    return result


def cli() -> int:
    """Console-script entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
