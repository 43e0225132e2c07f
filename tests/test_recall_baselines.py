"""Baselines of the image-recall suite: retrieval under capacity, memory accounting, masks, and MemoryNetwork
training through the same loop as EBMM."""

from __future__ import annotations

import pytest
import torch

from ebmm_rl.memory import flip_bits, make_optimizer, meta_train_step
from ebmm_rl.recall import (
    HOPFIELD_RULES,
    HopfieldNetwork,
    MemoryNetwork,
    ModernHopfield,
    RecallMemory,
    binary_strings,
)
from ebmm_rl.recall.baselines import storkey_weights

DIM = 128


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("rule", HOPFIELD_RULES)
def test_hopfield_stored_patterns_are_fixed_points(rule, update, generator):
    hopfield = HopfieldNetwork(DIM, rule=rule, update=update)
    patterns = binary_strings(4, 5, DIM, generator=generator)
    assert torch.equal(hopfield.read(hopfield.write(patterns), patterns), patterns)


@pytest.mark.parametrize("update", ["async", "sync"])
@pytest.mark.parametrize("rule", HOPFIELD_RULES)
def test_hopfield_restores_corrupted_queries(rule, update, generator):
    hopfield = HopfieldNetwork(DIM, rule=rule, update=update)
    patterns = binary_strings(8, 5, DIM, generator=generator)
    queries = flip_bits(patterns, 16, generator)
    assert torch.equal(hopfield.read(hopfield.write(patterns), queries), patterns)


@pytest.mark.parametrize("rule", HOPFIELD_RULES)
def test_hopfield_weights_are_symmetric_without_self_connections(rule, generator):
    weights, thresholds = HopfieldNetwork(DIM, rule=rule).write(binary_strings(2, 10, DIM, generator=generator))
    assert weights.shape == (2, DIM, DIM) and thresholds.shape == (2, DIM)
    torch.testing.assert_close(weights, weights.transpose(1, 2))
    assert torch.all(torch.diagonal(weights, dim1=1, dim2=2) == 0)
    assert torch.all(thresholds == 0)


def test_storkey_matches_the_rule_written_elementwise(generator):
    dim, n_patterns = 6, 3
    patterns = binary_strings(1, n_patterns, dim, generator=generator)
    expected = torch.zeros(dim, dim)
    for x in patterns[0]:
        update = torch.zeros(dim, dim)
        for i in range(dim):
            for j in range(dim):
                if i != j:
                    h_ij = sum(expected[i, k] * x[k] for k in range(dim) if k not in (i, j))
                    h_ji = sum(expected[j, k] * x[k] for k in range(dim) if k not in (i, j))
                    update[i, j] = (x[i] * x[j] - x[i] * h_ji - h_ij * x[j]) / dim
        expected = expected + update
    written = torch.ones(1, n_patterns, dtype=torch.bool)
    torch.testing.assert_close(storkey_weights(patterns, written)[0], expected)


def test_pseudo_inverse_stores_beyond_hebb_capacity(generator):
    patterns = binary_strings(4, 48, DIM, generator=generator)  # load 0.375, far above Hebb's 0.138
    hopfield = HopfieldNetwork(DIM, rule="pseudo_inverse")
    assert torch.equal(hopfield.read(hopfield.write(patterns), patterns), patterns)


@pytest.mark.parametrize("rule", HOPFIELD_RULES)
def test_hopfield_masked_patterns_have_no_effect(rule, generator):
    hopfield = HopfieldNetwork(DIM, rule=rule)
    patterns = binary_strings(3, 6, DIM, generator=generator)
    mask = torch.tensor([True, False, True, True, False, True]).expand(3, -1)
    masked_state = hopfield.write(patterns, mask)
    kept_state = hopfield.write(patterns[:, mask[0]])
    torch.testing.assert_close(masked_state.weights, kept_state.weights)


def test_hopfield_empty_memory_returns_queries(generator):
    hopfield = HopfieldNetwork(DIM)
    patterns = binary_strings(2, 3, DIM, generator=generator)
    state = hopfield.write(patterns, torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(hopfield.read(state, patterns), patterns)


def test_hopfield_rejects_non_binary_patterns_with_a_fix():
    with pytest.raises(ValueError, match="2 \\* x - 1"):
        HopfieldNetwork(DIM).write(torch.rand(1, 3, DIM))


def test_modern_hopfield_retrieves_stored_and_corrupted_patterns(generator):
    hopfield = ModernHopfield(DIM)
    patterns = binary_strings(4, 32, DIM, generator=generator)
    state = hopfield.write(patterns)
    torch.testing.assert_close(hopfield.read(state, patterns), patterns)
    torch.testing.assert_close(hopfield.read(state, flip_bits(patterns, 32, generator)), patterns)


def test_modern_hopfield_masks_and_empty_memories(generator):
    hopfield = ModernHopfield(DIM)
    patterns = binary_strings(2, 4, DIM, generator=generator)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    retrieved = hopfield.read(hopfield.write(patterns, mask), patterns)
    torch.testing.assert_close(retrieved[0, :2], patterns[0, :2])
    torch.testing.assert_close(retrieved[0], hopfield.read(hopfield.write(patterns[:1, :2]), patterns[:1])[0])
    torch.testing.assert_close(retrieved[1], patterns[1])  # nothing written: queries come back unchanged


def test_capped_modern_hopfield_keeps_the_last_written_patterns(generator):
    capped = ModernHopfield(DIM, slots=2)
    patterns = binary_strings(2, 4, DIM, generator=generator)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    state = capped.write(patterns, mask)
    assert state.written.tolist() == [[False, False, True, True], [True, True, False, False]]
    retrieved = capped.read(state, patterns)
    torch.testing.assert_close(retrieved[0, 2:], patterns[0, 2:])  # kept: exact
    torch.testing.assert_close(retrieved[1, :2], patterns[1, :2])  # masked slots do not push kept ones out
    forgotten = retrieved[0, :2]
    assert not any(torch.equal(forgotten[i], patterns[0, i]) for i in range(2))
    assert capped.memory_size(4) == 2 * DIM and capped.memory_size(1) == DIM
    with pytest.raises(ValueError, match="slots must be >= 1"):
        ModernHopfield(DIM, slots=0)


def test_memory_accounting():
    assert HopfieldNetwork(DIM).memory_size() == 8256  # the paper's budget for 128-bit strings
    assert all(HopfieldNetwork(DIM, rule=rule).memory_size(96) == 8256 for rule in HOPFIELD_RULES)
    assert HopfieldNetwork(10).memory_size() == 10 * 9 // 2 + 10
    assert ModernHopfield(DIM).memory_size(64) == 64 * DIM
    assert MemoryNetwork(DIM, code_size=48).memory_size(64) == 64 * 48
    network = MemoryNetwork(DIM, code_size=48, hidden=16)
    codes = network.write(torch.zeros(2, 64, DIM)).slots
    assert codes.shape[1:].numel() == network.memory_size(64)


def test_every_baseline_follows_the_recall_interface():
    for memory in (HopfieldNetwork(DIM), ModernHopfield(DIM), MemoryNetwork(DIM, hidden=16)):
        assert isinstance(memory, RecallMemory)


def test_memory_network_trains_with_the_ebmm_training_step(generator):
    torch.manual_seed(0)
    dim = 32
    network = MemoryNetwork(dim, code_size=16, hidden=32, projection=(-1, 1))
    optimizer = make_optimizer(network, lr=1e-2)
    patterns = binary_strings(8, 4, dim, generator=generator)
    queries = flip_bits(patterns, 4, generator)
    losses = [meta_train_step(network, optimizer, patterns, queries, max_grad_norm=10.0)["loss"] for _ in range(40)]
    assert losses[-1] < 0.25 * losses[0]
    retrieved = network.read(network.write(patterns), queries)
    assert retrieved.shape == patterns.shape and retrieved.abs().max() <= 1


def test_memory_network_meta_loss_masks_and_write_kinds(generator):
    torch.manual_seed(0)
    network = MemoryNetwork(DIM, code_size=8, hidden=16, projection=(0, 1))
    patterns = torch.rand(2, 5, DIM, generator=generator)
    mask = torch.tensor([True, True, False, True, False]).expand(2, -1)
    masked = network.read(network.write(patterns, mask), patterns)
    kept = network.read(network.write(patterns[:, mask[0]]), patterns)
    torch.testing.assert_close(masked, kept)
    assert torch.all((masked >= 0) & (masked <= 1))
    batch_loss = network.meta_loss(patterns, patterns)
    torch.testing.assert_close(batch_loss, network.meta_loss(patterns, patterns, write="stream"))
    retrieved = network.read(network.write(patterns), patterns)
    torch.testing.assert_close(batch_loss, (retrieved - patterns).pow(2).sum(-1).mean())
    empty = torch.zeros(2, 5, dtype=torch.bool)
    network.meta_loss(patterns, patterns[:, :3], mask=empty, targets=patterns[:, :3]).backward()
    assert all(torch.isfinite(parameter.grad).all() for parameter in network.parameters())
    with pytest.raises(ValueError, match="targets"):
        network.meta_loss(patterns, patterns[:, :2])
