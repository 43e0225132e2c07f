"""The online EBMM as the recurrent state of an sb3-contrib ``RecurrentPPO`` policy: :class:`EBMMRecurrentPolicy`.

Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020, with the streaming write
(:class:`ebmm_rl.memory.EBMMCell`) carried across environment steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from ebmm_rl.memory import EBMM, EBMMCell, MemoryState, add_noise
from ebmm_rl.sb3.extractor import default_encoder_class
from ebmm_rl.sb3.memory_spec import build_memory, memory_spec

RecurrentState = tuple[Tensor, Tensor]
"""sb3-contrib's (hidden, cell) pair, each ``[1, batch, state_half]``."""


@dataclass(frozen=True)
class StateLayout:
    """What ``RecurrentPPO`` reads from ``policy.lstm_actor`` to size its state buffers: ``(num_layers, n_envs,
    hidden_size)`` per tensor of the (hidden, cell) pair."""

    num_layers: int
    hidden_size: int


class EBMMRecurrentPolicy(RecurrentActorCriticPolicy):
    """Actor-critic policy whose recurrent state is an EBMM's fast weights, for sb3-contrib's ``RecurrentPPO``.

    At every step each environment's observation is encoded (``features_extractor_class``, by default SB3's own for
    the observation space: ``FlattenExtractor``, ``NatureCNN`` or ``CombinedExtractor``; e.g.
    :class:`~ebmm_rl.sb3.extractor.MiniGridEncoder` for MiniGrid) and projected to a pattern in ``(-1, 1)^pattern_dim``; an
    :class:`~ebmm_rl.memory.EBMMCell` resets the memory of environments whose episode starts (to the learned theta_bar),
    writes the pattern with one streaming write and reads with queries computed from it. The pattern and the
    retrievals feed the actor and critic MLPs (``net_arch``). Work per step does not grow with the episode's length.

    The state RecurrentPPO stores is only the fast weights, as their offset from theta_bar (so that sb3-contrib's
    all-zero initial state and its ``(1 - episode_start)`` masking both mean "reset to theta_bar"): the offset, padded
    to an even length, is split into the (hidden, cell) pair, each ``[1, n_envs, ceil(memory_size / 2)]``. Actor and
    critic share the memory, so the rollout buffer keeps it twice per step: ``2 * memory_size * 4`` bytes per env step.

    Rollouts run under ``torch.no_grad``; the memory still takes the write's and read's inner gradients
    (:class:`~ebmm_rl.memory.EBMM` does so with its own ``enable_grad``). Training replays each stored sequence from
    its stored first state, so the PPO loss reaches the memory through every write and read inside the sequence.

    :param memory: the memory, the same specification as :class:`~ebmm_rl.sb3.extractor.EBMMExtractor`'s
        (:func:`ebmm_rl.sb3.memory_spec.build_memory`: ``pattern_dim``, ``hidden``, ``fast_units``, ``hops``,
        ``hop_dim``, ``stream_steps`` (gradient steps of each step's write), ``read_steps``, ``grad_mode``,
        ``gradient_penalty``, ``beta_init`` (weight of the writing loss's prior term, which pulls the weights back to
        theta_bar at every write and so sets how fast old patterns are forgotten), ...); None:
        :data:`~ebmm_rl.sb3.memory_spec.MEMORY_DEFAULTS`
    :param n_queries: reads per step
    :param transition_patterns: compute each step's pattern from this step's and the previous step's features (zeros
        before an episode's first step), so that what is stored and recalled is a transition rather than a state: what
        a task whose observations hide their own rate of change needs (e.g. CartPole without velocities, where content
        recall of states returns the state just written). The previous features then travel in the recurrent state
        beside the fast weights.
    :param memory_noise_std: std of the Gaussian noise that turns stored patterns into queries in :meth:`memory_loss`
    The other parameters are :class:`~stable_baselines3.common.policies.ActorCriticPolicy`'s.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        memory: dict[str, Any] | None = None,
        n_queries: int = 1,
        transition_patterns: bool = False,
        memory_noise_std: float = 0.5,
    ) -> None:
        self.memory_kwargs = dict(
            memory=memory, n_queries=n_queries, transition_patterns=transition_patterns, memory_noise_std=memory_noise_std
        )
        self.transition_patterns = transition_patterns
        self.memory_noise_std = memory_noise_std
        # The actor and critic MLPs (built by ActorCriticPolicy.__init__) read the cell's output.
        pattern_dim = memory_spec(memory)["pattern_dim"]
        self.lstm_output_dim = pattern_dim * (1 + n_queries)
        # RecurrentActorCriticPolicy.__init__ would build LSTMs: its parent builds everything but the recurrence.
        ActorCriticPolicy.__init__(
            self,
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            ortho_init,
            use_sde,
            log_std_init,
            full_std,
            use_expln,
            squash_output,
            features_extractor_class or default_encoder_class(observation_space),
            features_extractor_kwargs,
            share_features_extractor=True,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        # The features carried from the previous step: [batch, carried_dim].
        self.carried_dim = self.features_dim if transition_patterns else 0
        self.pattern_head = nn.Sequential(nn.Linear(self.features_dim + self.carried_dim, pattern_dim), nn.Tanh())
        # Built after ActorCriticPolicy.__init__, so SB3's orthogonal init (ortho_init) never reaches the memory.
        self.memory_cell = EBMMCell(build_memory(memory), n_queries=n_queries)
        self.state_half = (self.memory.memory_size + self.carried_dim + 1) // 2
        self.lstm_actor = StateLayout(num_layers=1, hidden_size=self.state_half)
        self.lstm_hidden_state_shape = (1, 1, self.state_half)
        # Built again now that the memory exists (as RecurrentActorCriticPolicy does after adding its LSTMs).
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    @property
    def memory(self) -> EBMM:
        return self.memory_cell.memory

    @property
    def memory_size(self) -> int:
        """Floats in one environment's memory."""
        return self.memory.memory_size

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("share_features_extractor", None)
        return {**data, **self.memory_kwargs}

    # ------------------------------------------------------------------ state conversion
    def to_memory_state(self, states: RecurrentState) -> tuple[MemoryState, Tensor]:
        """sb3-contrib's (hidden, cell) pair ``[1, batch, state_half]`` each -> the memories ``[batch, memory_size]``
        and the features carried from the previous step ``[batch, carried_dim]``."""
        hidden, cell = states
        flat = torch.cat([hidden[0], cell[0]], dim=-1)  # [batch, 2 * state_half]
        offset, carried = flat[:, : self.memory_size], flat[:, self.memory_size : self.memory_size + self.carried_dim]
        return self.memory.as_state(self.memory.theta_bar + offset), carried

    def to_recurrent_state(self, state: MemoryState, carried: Tensor | None = None) -> RecurrentState:
        """The memories ``[batch, memory_size]`` and the carried features ``[batch, carried_dim]`` (None: zeros) ->
        sb3-contrib's (hidden, cell) pair ``[1, batch, state_half]`` each."""
        offset = state.weights - self.memory.theta_bar  # [batch, memory_size]
        if carried is None:
            carried = offset.new_zeros(offset.shape[0], self.carried_dim)
        flat = torch.cat([offset, carried], dim=-1)  # [batch, memory_size + carried_dim]
        flat = nn.functional.pad(flat, (0, 2 * self.state_half - flat.shape[-1]))  # [batch, 2 * state_half]
        hidden, cell = flat.reshape(flat.shape[0], 2, self.state_half).unbind(dim=1)  # [batch, state_half] each
        return hidden[None], cell[None]

    # ------------------------------------------------------------------ the recurrence
    def make_patterns(self, features: Tensor, carried: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        """Each step's pattern, from its features and, with ``transition_patterns``, the previous step's.

        :param features: ``[time, n_seq, features_dim]``
        :param carried: ``[n_seq, carried_dim]`` the features of the step before each sequence
        :param starts: ``[time, n_seq]`` bool; an episode's first step has no previous step (zeros)
        :return: patterns ``[time, n_seq, pattern_dim]`` and the features to carry past the last step
        """
        if not self.transition_patterns:
            return self.pattern_head(features), carried
        previous = torch.cat([carried[None], features[:-1]], dim=0)  # [time, n_seq, features_dim]
        previous = previous.masked_fill(starts[..., None], 0.0)
        return self.pattern_head(torch.cat([features, previous], dim=-1)), features[-1]

    def _process_memory(
        self, features: Tensor, states: RecurrentState, episode_starts: Tensor
    ) -> tuple[Tensor, RecurrentState]:
        """Run the memory over each sequence.

        :param features: ``[n_seq * time, features_dim]``, sequence-major (as RecurrentPPO lays out a minibatch;
            time is 1 when acting)
        :param states: the (hidden, cell) pair at each sequence's start, ``[1, n_seq, state_half]`` each
        :param episode_starts: ``[n_seq * time]``
        :return: latent ``[n_seq * time, lstm_output_dim]`` and the states after each sequence
        """
        n_seq = states[0].shape[1]
        features = features.reshape(n_seq, -1, features.shape[-1]).swapaxes(0, 1)  # [time, n_seq, features_dim]
        starts = episode_starts.reshape(n_seq, -1).swapaxes(0, 1) > 0.5  # [time, n_seq]
        memory_state, carried = self.to_memory_state(states)
        patterns, carried = self.make_patterns(features, carried, starts)  # [time, n_seq, pattern_dim]
        outputs, memory_state = self.memory_cell.forward_sequence(patterns, memory_state, starts)
        latent = outputs.swapaxes(0, 1).flatten(0, 1)  # [time, n_seq, out] -> [n_seq * time, out]
        return latent, self.to_recurrent_state(memory_state, carried)

    def forward(
        self, obs: Tensor, lstm_states: RNNStates, episode_starts: Tensor, deterministic: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, RNNStates]:
        latent, states = self._process_memory(self.extract_features(obs), lstm_states.pi, episode_starts)
        values = self.value_net(self.mlp_extractor.forward_critic(latent))
        distribution = self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent))
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))
        return actions, values, log_prob, RNNStates(states, states)

    def get_distribution(
        self, obs: Tensor, lstm_states: RecurrentState, episode_starts: Tensor
    ) -> tuple[Distribution, RecurrentState]:
        latent, states = self._process_memory(self.extract_features(obs), lstm_states, episode_starts)
        return self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent)), states

    def predict_values(self, obs: Tensor, lstm_states: RecurrentState, episode_starts: Tensor) -> Tensor:
        latent, _ = self._process_memory(self.extract_features(obs), lstm_states, episode_starts)
        return self.value_net(self.mlp_extractor.forward_critic(latent))

    def evaluate_actions(
        self, obs: Tensor, actions: Tensor, lstm_states: RNNStates, episode_starts: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        latent, _ = self._process_memory(self.extract_features(obs), lstm_states.pi, episode_starts)
        distribution = self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(latent))
        values = self.value_net(self.mlp_extractor.forward_critic(latent))
        return values, distribution.log_prob(actions), distribution.entropy()

    # ------------------------------------------------------------------ the memory's own objective
    def memory_loss(self, obs: Tensor, mask: Tensor, n_seq: int) -> Tensor:
        """The EBMM objective on the agent's own sequences: stream each sequence's patterns into a fresh memory, read
        noisy copies of them, and score the reconstruction (sum over read steps of the mean squared error of valid
        steps).

        Patterns are detached: this loss trains the memory to store what the encoder produces, and must not teach the
        encoder to make patterns trivially easy to store (e.g. all equal).

        :param obs: a RecurrentPPO minibatch's observations, ``n_seq * time`` of them, sequence-major
        :param mask: ``[n_seq * time]``, 1 for real steps, 0 for padding
        :param n_seq: number of sequences in the minibatch
        """
        features = self.extract_features(obs)  # [n_seq * time, features_dim]
        features = features.reshape(n_seq, -1, features.shape[-1]).swapaxes(0, 1)  # [time, n_seq, features_dim]
        # Each sequence's first step counts as an episode start: the step before it is not in the minibatch.
        starts = torch.zeros(features.shape[:2], dtype=torch.bool, device=features.device)  # [time, n_seq]
        starts[0] = True
        carried = features.new_zeros(n_seq, self.carried_dim)
        patterns, _ = self.make_patterns(features, carried, starts)
        patterns = patterns.detach().swapaxes(0, 1)  # [n_seq, time, pattern_dim]
        valid = mask.reshape(n_seq, -1) > 0.5  # [n_seq, time]
        queries = add_noise(patterns, self.memory_noise_std)
        return self.memory.meta_loss(patterns, queries, write="stream", mask=valid)
