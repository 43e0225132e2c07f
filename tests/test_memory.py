"""Properties of the EBMM memory core: shapes, writing, reading, masking, batching, gradients, bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ebmm_rl.memory import (
    EBMM,
    ConvEnergy,
    EnergyNet,
    GatedHops,
    IndexedPatterns,
    MemoryState,
    MLPEnergy,
    flip_bits,
    make_optimizer,
    meta_train_step,
)

DIM = 16


def tiny_memory(dtype: torch.dtype = torch.float32, **kwargs) -> EBMM:
    energy = MLPEnergy(DIM, hidden=16, fast_units=8, hops=2, hop_dim=16).to(dtype)
    return EBMM(energy, write_steps=2, read_steps=3, projection=(-1.0, 1.0), **kwargs).to(dtype)


def random_bits(batch: int, n: int, dim: int = DIM, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (batch, n, dim), generator=generator).float() * 2 - 1


def test_shapes_and_memory_size():
    memory = tiny_memory()
    assert memory.memory_size == 8 * (16 + 1)
    state = memory.init_state(batch_size=3)
    assert state.weights.shape == (3, memory.memory_size)
    patterns = random_bits(3, 4)
    state = memory.write(state, patterns)
    state = memory.write_step(state, patterns[:, 0])
    assert state.weights.shape == (3, memory.memory_size)
    assert memory.read(state, patterns[:, :2]).shape == (3, 2, DIM)
    iterates = memory.read(state, patterns[:, :2], return_iterates=True)
    assert iterates.shape == (memory.read_steps, 3, 2, DIM)
    assert torch.equal(iterates[-1], memory.read(state, patterns[:, :2]))


def test_conv_energy_memory_size_matches_paper_accounting():
    energy = ConvEnergy((1, 16, 16), fast_channels=3, width=8, bottleneck=64, static_channels=4, blocks=2, hop_dim=16)
    assert energy.memory_size == 1154 * 3


def test_read_step_sizes_are_non_increasing_and_projection_holds():
    memory = tiny_memory()
    with torch.no_grad():
        memory.read_decay_logits.copy_(torch.tensor([-1.0, 2.0]))
    lrs = memory.read_lr
    assert torch.all(lrs[1:] <= lrs[:-1])
    state = memory.write(memory.init_state(2), random_bits(2, 3))
    retrieved = memory.read(state, 5 * random_bits(2, 3, seed=1), return_iterates=True)
    assert retrieved.min() >= -1 and retrieved.max() <= 1


@pytest.mark.parametrize("masked", [False, True])
def test_meta_train_step_in_chunks_of_memories_takes_the_same_step(masked):
    patterns = random_bits(5, 4).double()
    queries = flip_bits(patterns, 4, generator=torch.Generator().manual_seed(1))
    # Memories with 4, 3, 1, 2 and 4 written patterns: chunks must weigh by scored queries, not by memories.
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.bool)
    results = []
    for chunk in (None, 2, 1):
        torch.manual_seed(0)
        memory = tiny_memory(torch.float64)
        optimizer = torch.optim.SGD(memory.parameters(), lr=1.0)
        stats = meta_train_step(
            memory, optimizer, patterns, queries, mask=mask if masked else None, max_grad_norm=1e9, chunk=chunk
        )
        results.append((stats, memory.state_dict()))
    (whole, whole_state), *chunked = results
    for stats, state in chunked:
        assert stats["loss"] == pytest.approx(whole["loss"], rel=1e-12)
        assert stats["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-10)
        for name, value in state.items():
            torch.testing.assert_close(value, whole_state[name], rtol=1e-10, atol=1e-12, msg=name)
    memory = tiny_memory(torch.float64)
    with pytest.raises(ValueError, match="chunk must be a positive"):
        meta_train_step(memory, make_optimizer(memory), patterns, queries, chunk=0)


def test_fit_steps_continues_a_trained_memory_with_more_or_fewer_steps():
    torch.manual_seed(0)
    source = tiny_memory()  # 2 write steps, 3 read steps
    optimizer = make_optimizer(source, lr=1e-2)
    for seed in range(3):  # move every step size away from its initial value
        patterns = random_bits(4, 3, seed=seed)
        meta_train_step(source, optimizer, patterns, flip_bits(patterns, 4), write="batch")
    energy = MLPEnergy(DIM, hidden=16, fast_units=8, hops=2, hop_dim=16)
    longer = EBMM(energy, write_steps=2, read_steps=5, projection=(-1.0, 1.0))
    longer.load_state_dict(longer.fit_steps(source.state_dict()))
    patterns = random_bits(2, 3, seed=5)
    queries = flip_bits(patterns, 4, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = source.read(source.write(source.init_state(2), patterns), queries, return_iterates=True)
        iterates = longer.read(longer.write(longer.init_state(2), patterns), queries, return_iterates=True)
        torch.testing.assert_close(iterates[:3], expected)  # the source's read, then two more steps
        lrs, source_lrs = longer.read_lr, source.read_lr
        torch.testing.assert_close(lrs[:3], source_lrs)
        torch.testing.assert_close(lrs[3:] / lrs[2:4], (source_lrs[2] / source_lrs[1]).expand(2))  # the last decay
    energy = MLPEnergy(DIM, hidden=16, fast_units=8, hops=2, hop_dim=16)
    other = EBMM(energy, write_steps=4, read_steps=1, projection=(-1.0, 1.0))
    other.load_state_dict(other.fit_steps(source.state_dict()))
    with torch.no_grad():
        torch.testing.assert_close(other.write_lr, torch.cat([source.write_lr, source.write_lr[-1:].expand(2, -1, -1)]))
        torch.testing.assert_close(other.read_lr, source.read_lr[:1])
        torch.testing.assert_close(other.theta_bar, source.theta_bar)


def test_write_count_floor_keeps_each_pattern_s_weight_below_the_floor():
    torch.manual_seed(0)
    energy = MLPEnergy(DIM, hidden=16, fast_units=8, hops=2, hop_dim=16)
    plain = EBMM(energy, write_steps=1, read_steps=2, projection=(-1.0, 1.0))
    floored = EBMM(energy, write_steps=1, read_steps=2, projection=(-1.0, 1.0), write_count_floor=4)
    floored.load_state_dict(plain.state_dict())
    few, many = random_bits(3, 2), random_bits(3, 5, seed=1)
    with torch.no_grad():
        theta_bar = plain.theta_bar
        plain_step = plain.write(plain.init_state(3), few).weights - theta_bar
        floored_step = floored.write(floored.init_state(3), few).weights - theta_bar
        torch.testing.assert_close(floored_step, plain_step * 2 / 4)  # one step from theta-bar: weight 1/4, not 1/2
        at_or_above = floored.write(floored.init_state(3), many).weights  # 5 patterns >= 4: the plain mean
        torch.testing.assert_close(at_or_above, plain.write(plain.init_state(3), many).weights)
        padded = torch.cat([few, many[:, :3]], dim=1)  # 2 valid patterns, 3 masked ones
        mask = torch.tensor([[True, True, False, False, False]]).expand(3, -1)
        torch.testing.assert_close(floored.write(floored.init_state(3), padded, mask).weights, theta_bar + floored_step)
        stream = floored.write_stream(floored.init_state(3), few).weights
        torch.testing.assert_close(stream, plain.write_stream(plain.init_state(3), few).weights)
    with pytest.raises(ValueError, match="write_count_floor must be >= 1"):
        EBMM(energy, write_count_floor=0)


def test_writing_makes_stored_patterns_low_energy_attractors():
    torch.manual_seed(0)
    memory = EBMM(MLPEnergy(DIM, hidden=32, fast_units=16, hops=2, hop_dim=32), write_steps=3, read_steps=3)
    patterns = random_bits(8, 4)
    others = random_bits(8, 4, seed=1)
    empty = memory.init_state(8)
    state = memory.write(empty, patterns)
    with torch.no_grad():
        drop_stored = memory.energy_of(empty, patterns) - memory.energy_of(state, patterns)
        drop_others = memory.energy_of(empty, others) - memory.energy_of(state, others)
        assert memory.energy_of(state, patterns).mean() < memory.energy_of(state, others).mean() - 0.5
    assert drop_stored.mean() > 2 * drop_others.mean().clamp(min=0)

    def input_gradient_norm(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(memory.energy_of(state, x).sum(), x)
        return gradient.norm(dim=-1)

    assert input_gradient_norm(patterns).mean() < input_gradient_norm(others).mean()


@pytest.fixture(scope="module")
def bit_task():
    """Random +-1 strings with a quarter of their bits flipped, and a function measuring wrong bits after a read."""
    dim, n, batch = 16, 4, 32

    def sample(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        patterns = random_bits(batch, n, dim, seed=seed)
        return patterns, flip_bits(patterns, dim // 4, generator=torch.Generator().manual_seed(seed))

    def wrong_bits(memory: EBMM, write: str) -> float:
        patterns, queries = sample(seed=10_000)
        with torch.no_grad():
            state = memory.init_state(batch)
            state = memory.write(state, patterns) if write == "batch" else memory.write_stream(state, patterns)
            retrieved = memory.read(state, queries)
        return (torch.sign(retrieved) != patterns).float().sum(-1).mean().item()

    return dim, sample, wrong_bits


@pytest.mark.parametrize("write", ["batch", "stream"])
def test_meta_training_teaches_retrieval(bit_task, write):
    dim, sample, wrong_bits = bit_task
    torch.manual_seed(0)
    memory = EBMM(
        MLPEnergy(dim, hidden=32, fast_units=16, hops=2, hop_dim=32), write_steps=3, read_steps=3, projection=(-1, 1)
    )
    optimizer = make_optimizer(memory, lr=1e-2)
    before = wrong_bits(memory, write)
    for step in range(200):
        patterns, queries = sample(seed=step)
        meta_train_step(memory, optimizer, patterns, queries, write=write, max_grad_norm=1.0)
    after = wrong_bits(memory, write)
    corrupted = dim // 4
    assert after < 0.8 * corrupted, f"{write}: {after:.2f} wrong bits after reading, {corrupted} in the queries"
    assert after < 0.8 * before, f"{write}: {after:.2f} wrong bits after meta-training, {before:.2f} before"


def test_streaming_write_is_incremental():
    memory = tiny_memory()
    patterns = random_bits(2, 3)
    state = memory.init_state(2)
    steps = [state]
    for i in range(3):
        steps.append(memory.write_step(steps[-1], patterns[:, i]))
    streamed = memory.write_stream(state, patterns)
    assert torch.allclose(streamed.weights, steps[-1].weights)
    assert not torch.allclose(steps[1].weights, steps[2].weights)
    assert not torch.allclose(memory.write(state, patterns).weights, streamed.weights)


def test_masked_patterns_have_no_effect():
    memory = tiny_memory()
    patterns = random_bits(3, 5)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    written = memory.write(memory.init_state(3), patterns, mask)
    for row in range(3):
        kept = patterns[row : row + 1, mask[row]]
        if kept.shape[1] == 0:
            expected = memory.init_state(1).weights
        else:
            expected = memory.write(memory.init_state(1), kept).weights
        assert torch.allclose(written.weights[row : row + 1], expected, atol=1e-6)

    valid = torch.tensor([True, False, True])
    state = memory.write_step(written, patterns[:, 0], valid=valid)
    assert torch.equal(state.weights[1], written.weights[1])
    assert not torch.allclose(state.weights[0], written.weights[0])
    streamed = memory.write_stream(memory.init_state(3), patterns, mask)
    assert torch.equal(streamed.weights[2], memory.init_state(1).weights[0])


def test_masked_memory_written_from_a_written_state_stays_unchanged():
    # From theta-bar an empty memory's write steps are exactly zero; from any other state the prior term would move
    # it, so the write must keep it as it was.
    memory = tiny_memory()
    written = memory.write(memory.init_state(2), random_bits(2, 3))
    mask = torch.tensor([[True, False, True], [False, False, False]])
    again = memory.write(written, random_bits(2, 3, seed=1), mask)
    assert torch.equal(again.weights[1], written.weights[1])
    assert not torch.allclose(again.weights[0], written.weights[0])


@pytest.mark.parametrize("start", ["theta_bar", "written"])
@pytest.mark.parametrize("grad_mode", ["second_order", "first_order"])
def test_indexed_patterns_write_like_their_dense_form(start, grad_mode):
    torch.manual_seed(0)
    memory = tiny_memory(dtype=torch.float64, grad_mode=grad_mode)
    rows = random_bits(1, 4)[0].double().requires_grad_(True)  # [distinct, dim]
    index = torch.tensor([[0, 1, 1, 3], [2, 2, 0, 0], [3, 3, 3, 3]])  # [batch, n]: repeats, within and across memories
    mask = torch.tensor([[True, True, False, True], [True, True, True, True], [False, False, False, False]])
    queries = flip_bits(rows.detach()[index], 4, generator=torch.Generator().manual_seed(1))

    def start_state() -> MemoryState:
        state = memory.init_state(3)
        return state if start == "theta_bar" else memory.write(state, random_bits(3, 2, seed=2).double())

    results = {}
    for form, patterns in (("indexed", IndexedPatterns(rows, index)), ("dense", rows[index])):
        written = memory.write(start_state(), patterns, mask)
        retrieved = memory.read(written, queries)
        loss = retrieved.pow(2).sum() + memory.meta_loss(patterns, queries, mask=mask)
        gradients = torch.autograd.grad(loss, [rows, *memory.parameters()], allow_unused=True)
        results[form] = (written.weights, retrieved, gradients)
    assert torch.allclose(results["indexed"][0], results["dense"][0], atol=1e-12)
    assert torch.allclose(results["indexed"][1], results["dense"][1], atol=1e-12)
    for indexed, dense in zip(results["indexed"][2], results["dense"][2], strict=True):
        assert (indexed is None) == (dense is None)
        if indexed is not None:
            assert torch.allclose(indexed, dense, atol=1e-10)
    streamed = memory.write_stream(start_state(), IndexedPatterns(rows, index), mask)
    assert torch.allclose(streamed.weights, memory.write_stream(start_state(), rows[index], mask).weights, atol=1e-12)


def test_batch_of_memories_equals_one_by_one():
    memory = tiny_memory()
    patterns = random_bits(4, 3)
    queries = flip_bits(patterns, 3, generator=torch.Generator().manual_seed(1))
    state = memory.write(memory.init_state(4), patterns)
    retrieved = memory.read(state, queries)
    for row in range(4):
        single = memory.write(memory.init_state(1), patterns[row : row + 1])
        assert torch.allclose(single.weights, state.weights[row : row + 1], atol=1e-5)
        assert torch.allclose(memory.read(single, queries[row : row + 1]), retrieved[row : row + 1], atol=1e-5)


def test_conv_energy_batch_of_memories_equals_one_by_one():
    torch.manual_seed(0)
    energy = ConvEnergy((1, 8, 8), fast_channels=2, width=4, bottleneck=4, static_channels=2, blocks=2, hop_dim=8)
    memory = EBMM(energy, write_steps=1, read_steps=2, projection=(0, 1))
    images = torch.rand(3, 2, 64)
    state = memory.write(memory.init_state(3), images)
    energies = memory.energy_of(state, images)
    retrieved = memory.read(state, images)
    assert retrieved.shape == (3, 2, 64)
    for row in range(3):
        single = memory.write(memory.init_state(1), images[row : row + 1])
        assert torch.allclose(single.weights, state.weights[row : row + 1], atol=1e-5)
        assert torch.allclose(memory.energy_of(single, images[row : row + 1]), energies[row : row + 1], atol=1e-5)


@pytest.mark.parametrize("write", ["batch", "stream"])
def test_gradcheck_write_and_read_float64(write):
    torch.manual_seed(0)
    energy = MLPEnergy(3, hidden=4, fast_units=2, hops=1, hop_dim=3).double()
    memory = EBMM(energy, write_steps=1, read_steps=2, stream_steps=1).double()
    patterns = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    queries = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    theta_bar = memory.theta_bar

    def write_then_read(patterns, queries, theta_bar):
        state = memory.as_state(theta_bar.expand(2, -1))
        state = memory.write(state, patterns) if write == "batch" else memory.write_stream(state, patterns)
        return memory.read(state, queries)

    inputs = (patterns, queries, theta_bar)
    assert torch.autograd.gradcheck(write_then_read, inputs, eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(write_then_read, inputs, eps=1e-6, atol=1e-4)


@pytest.mark.parametrize("hops", [1, 3])
def test_mlp_energy_closed_form_gradients_match_autograd(hops):
    torch.manual_seed(0)
    energy = MLPEnergy(5, hidden=6, fast_units=3, hops=hops, hop_dim=4).double()
    with torch.no_grad():
        for parameter in energy.parameters():  # away from the initial unit LayerNorm gain and zero biases
            parameter.add_(0.3 * torch.randn_like(parameter))
    fast = energy.initial_fast_weights().double() + 0.3 * torch.randn(2, energy.memory_size, dtype=torch.float64)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    pattern_weights = torch.rand(2, 4, dtype=torch.float64)

    closed = energy.input_gradient(x, fast)
    assert torch.allclose(closed, EnergyNet.input_gradient(energy, x, fast), atol=1e-12)
    assert closed.abs().max() > 1e-3
    closed = energy.fast_gradient(x, fast, pattern_weights)
    assert torch.allclose(closed, EnergyNet.fast_gradient(energy, x, fast, pattern_weights), atol=1e-12)
    # The gradient-penalty term of the write differentiates grad_x E once more.
    penalty = {
        name: torch.func.grad(lambda weights, gradient=gradient: gradient(energy, x, weights).pow(2).sum())(fast)
        for name, gradient in (("closed", MLPEnergy.input_gradient), ("autograd", EnergyNet.input_gradient))
    }
    assert torch.allclose(penalty["closed"], penalty["autograd"], atol=1e-12)


def test_gated_hops_compute_the_gated_recurrence():
    # The hops compute the input's share of the pre-activations once; the energy is that of the plain recurrence.
    torch.manual_seed(0)
    hops = GatedHops(in_features=5, hop_dim=4, hops=3).double()
    z = torch.randn(2, 3, 5, dtype=torch.float64)
    state = torch.zeros(2, 3, 4, dtype=torch.float64)
    for _ in range(3):
        joint = torch.cat([z, state], dim=-1)
        gate, candidate = torch.sigmoid(hops.gate(joint)), torch.tanh(hops.candidate(joint))
        state = (1 - gate) * state + gate * candidate
    assert torch.allclose(hops(z), hops.head(state).squeeze(-1), atol=1e-14)


class AutogradMLPEnergy(MLPEnergy):
    """MLPEnergy whose gradients are autograd's through its forward (EnergyNet's defaults), not its closed forms."""

    input_gradient = EnergyNet.input_gradient
    fast_gradient = EnergyNet.fast_gradient


@pytest.mark.parametrize("gradient_penalty", [False, True])
@pytest.mark.parametrize("write", ["batch", "stream"])
def test_meta_gradient_of_the_closed_forms_equals_autograd_through_the_energy(gradient_penalty, write):
    torch.manual_seed(0)
    kwargs = {"write_steps": 2, "read_steps": 2, "projection": (-1.0, 1.0), "gradient_penalty": gradient_penalty}
    closed = EBMM(MLPEnergy(6, hidden=5, fast_units=3, hops=2, hop_dim=4), **kwargs).double()
    with torch.no_grad():
        for parameter in closed.parameters():  # away from the initial unit gains and zero biases
            parameter.add_(0.2 * torch.randn_like(parameter))
    reference = EBMM(AutogradMLPEnergy(6, hidden=5, fast_units=3, hops=2, hop_dim=4), **kwargs).double()
    reference.load_state_dict(closed.state_dict())
    patterns = random_bits(2, 3, dim=6).double()
    queries = flip_bits(patterns, 2)
    gradients = {}
    for name, memory in (("closed", closed), ("autograd", reference)):
        loss = memory.meta_loss(patterns, queries, write=write)
        gradients[name] = torch.autograd.grad(loss, list(memory.parameters()), allow_unused=True)
    assert any(gradient is not None and gradient.abs().max() > 1e-3 for gradient in gradients["closed"])
    for mine, theirs in zip(gradients["closed"], gradients["autograd"], strict=True):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert torch.allclose(mine, theirs, rtol=1e-9, atol=1e-12)


def test_mlp_energy_fast_gradient_of_shared_weights_is_per_memory():
    # Memories written from theta-bar share its one row (init_state expands it); the energy's shortcut for that case
    # must give each memory the gradient of its own patterns, and theta-bar the sum over memories.
    torch.manual_seed(0)
    energy = MLPEnergy(5, hidden=6, fast_units=3, hops=2, hop_dim=4).double()
    theta_bar = energy.initial_fast_weights().double().requires_grad_(True)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    pattern_weights = torch.rand(3, 4, dtype=torch.float64)
    shared = energy.fast_gradient(x, theta_bar.expand(3, -1), pattern_weights)
    copies = energy.fast_gradient(x, theta_bar.expand(3, -1).clone(), pattern_weights)
    assert torch.allclose(shared, copies, atol=1e-12)
    assert not torch.allclose(shared[0], shared[1])
    (shared_meta,) = torch.autograd.grad(shared.pow(2).sum(), theta_bar)
    (copies_meta,) = torch.autograd.grad(copies.pow(2).sum(), theta_bar)
    assert torch.allclose(shared_meta, copies_meta, atol=1e-12)


@pytest.mark.parametrize("grad_mode", ["second_order", "first_order"])
def test_meta_gradients_are_finite_at_theta_bar(grad_mode):
    memory = tiny_memory(grad_mode=grad_mode)
    patterns = random_bits(4, 3)
    queries = flip_bits(patterns, 4)
    for write in ("batch", "stream"):
        memory.meta_loss(patterns, queries, write=write).backward()
    for name, parameter in memory.named_parameters():
        assert parameter.grad is not None, f"{name} got no meta-gradient ({grad_mode})"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite meta-gradient ({grad_mode})"
    assert memory.theta_bar.grad.abs().sum() > 0


@pytest.mark.slow
def test_compiled_meta_loss_trains_like_the_eager_one():
    # recall train --compile: torch.compile(memory.meta_loss) compiles in about a minute here.
    patterns = random_bits(2, 4)
    queries = flip_bits(patterns, 4)
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        memory = tiny_memory()
        optimizer = make_optimizer(memory, lr=1e-3)
        meta_loss = torch.compile(memory.meta_loss) if compiled else None
        steps = [meta_train_step(memory, optimizer, patterns, queries, meta_loss=meta_loss) for _ in range(3)]
        losses[compiled] = [step["loss"] for step in steps]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_second_order_gradient_differs_from_first_order():
    torch.manual_seed(0)
    patterns = random_bits(4, 3)
    queries = flip_bits(patterns, 4)
    gradients = {}
    for mode in ("second_order", "first_order"):
        torch.manual_seed(0)
        memory = tiny_memory(grad_mode=mode)
        memory.meta_loss(patterns, queries).backward()
        gradients[mode] = memory.theta_bar.grad.clone()
    assert not torch.allclose(gradients["second_order"], gradients["first_order"])


def test_acting_under_no_grad_or_inference_mode_builds_no_graph():
    memory = tiny_memory()
    patterns = random_bits(2, 3)

    def write_and_read() -> tuple[torch.Tensor, torch.Tensor]:
        state = memory.write_step(memory.init_state(2), patterns[:, 0])
        state = memory.write(state, patterns)
        return state.weights, memory.read(state, patterns)

    with torch.no_grad():
        weights, retrieved = write_and_read()
    assert not weights.requires_grad and not retrieved.requires_grad
    with torch.inference_mode():  # also with the gradient-penalty term, which differentiates the energy while writing
        assert memory.gradient_penalty
        _, in_inference_mode = write_and_read()
    assert torch.equal(in_inference_mode, retrieved)
    _, with_graph = write_and_read()
    assert torch.allclose(with_graph, retrieved, atol=1e-5)
    assert with_graph.requires_grad


@pytest.mark.parametrize("grad_mode", ["second_order", "first_order", "none"])
def test_write_without_gradient_penalty_is_the_write_with_alpha_zero(grad_mode):
    patterns = random_bits(2, 3)
    torch.manual_seed(0)
    with_penalty = tiny_memory(grad_mode=grad_mode if grad_mode != "none" else "first_order")
    torch.manual_seed(0)
    without = tiny_memory(grad_mode=with_penalty.grad_mode, gradient_penalty=False)

    def write(memory: EBMM) -> torch.Tensor:
        with torch.set_grad_enabled(grad_mode != "none"):
            state = memory.write_step(memory.write(memory.init_state(2), patterns), patterns[:, 0])
            return state.weights

    assert not torch.allclose(write(with_penalty), write(without))  # the term matters at the default alpha
    with torch.no_grad():
        with_penalty.alpha_raw.fill_(-60.0)  # softplus(-60) ~ 1e-26
    assert torch.allclose(write(with_penalty), write(without), atol=1e-6)


def test_without_gradient_penalty_alpha_gets_no_meta_gradient():
    memory = tiny_memory(gradient_penalty=False)
    patterns = random_bits(4, 3)
    memory.meta_loss(patterns, flip_bits(patterns, 4)).backward()
    assert memory.alpha_raw.grad is None
    assert memory.theta_bar.grad.abs().sum() > 0 and torch.isfinite(memory.theta_bar.grad).all()
    assert "alpha" not in memory.parameter_summary()  # nothing to watch: it is not used
    assert "alpha" in tiny_memory().parameter_summary()


def test_gradient_reaches_pattern_encoder():
    memory = tiny_memory()
    encoder = torch.nn.Linear(4, DIM)
    patterns = encoder(torch.randn(2, 3, 4))
    state = memory.write(memory.init_state(2), patterns)
    memory.read(state, patterns.detach()).sum().backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, s: m.write(s, torch.zeros(2, 3, DIM + 1)), "must be a tensor"),
        (lambda m, s: m.write(s, torch.zeros(2, DIM)), "must be a tensor"),
        (lambda m, s: m.write(s, torch.zeros(5, 3, DIM)), "5 memories"),
        (lambda m, s: m.write(s, torch.zeros(2, 3, DIM, dtype=torch.float64)), "convert"),
        (lambda m, s: m.write(s, torch.full((2, 3, DIM), float("nan"))), "NaN"),
        (lambda m, s: m.write(s, IndexedPatterns(torch.zeros(4, DIM), torch.zeros(2, 3))), "long tensor"),
        (lambda m, s: m.write(s, IndexedPatterns(torch.zeros(4, DIM + 1), torch.zeros(2, 3).long())), "rows"),
        (lambda m, s: m.write(s, IndexedPatterns(torch.zeros(4, DIM), torch.zeros(5, 3).long())), "5 memories"),
        (
            lambda m, s: m.write(s, IndexedPatterns(torch.zeros(4, DIM), torch.zeros(2, 3, dtype=torch.long, device="meta"))),
            "on cpu",
        ),
        (lambda m, s: m.read(s, IndexedPatterns(torch.zeros(4, DIM), torch.zeros(2, 3).long())), "must be a tensor"),
        (lambda m, s: m.write(s, torch.zeros(2, 3, DIM), mask=torch.ones(2, 4, dtype=torch.bool)), "mask"),
        (lambda m, s: m.write_step(s, torch.zeros(2, 3, DIM)), "one pattern per memory"),
        (lambda m, s: m.read(s, torch.full((2, 1, DIM), float("inf"))), "inf"),
        (lambda m, s: m.read(m.as_state(torch.zeros(2, 7)), torch.zeros(2, 1, DIM)), "another configuration"),
        (lambda m, s: m.read(s.weights, torch.zeros(2, 1, DIM)), "MemoryState"),
        (lambda m, s: m.meta_loss(torch.zeros(2, 3, DIM), torch.zeros(2, 2, DIM)), "targets"),
        (lambda m, s: m.meta_loss(torch.zeros(2, 3, DIM), torch.zeros(2, 3, DIM), write="online"), "write must be"),
        (lambda m, s: m.read(s, torch.zeros(2, 1, DIM), grad_mode="third_order"), "grad_mode"),
    ],
)
def test_bad_input_raises_value_error_naming_the_fix(call, message):
    memory = tiny_memory()
    with pytest.raises(ValueError, match=message):
        call(memory, memory.init_state(2))


def test_a_state_is_refused_by_a_memory_of_another_configuration_even_of_the_same_size():
    written = tiny_memory().write(tiny_memory().init_state(2), random_bits(2, 3))  # fast layer 8 x 16 + 8: 136 floats
    queries = random_bits(2, 3)
    same_size = EBMM(MLPEnergy(DIM, hidden=33, fast_units=4, hops=2, hop_dim=16), write_steps=2, read_steps=3)  # 4 x 33 + 4
    same_fast_layer = EBMM(MLPEnergy(DIM, hidden=16, fast_units=8, hops=2, hop_dim=24), write_steps=2, read_steps=3)
    for other in (same_size, same_fast_layer):
        assert other.memory_size == written.weights.shape[1]
        with pytest.raises(ValueError, match="another configuration"):
            other.read(written, queries)
        with pytest.raises(ValueError, match="another configuration"):
            other.write(written, queries)
    torch.manual_seed(1)
    tiny_memory().read(written, queries)  # the same configuration with other weights reads it


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_state_is_refused_at_read_and_write_blaming_the_state(bad):
    memory = tiny_memory()
    state = memory.write(memory.init_state(2), random_bits(2, 3))
    state = state._replace(weights=state.weights.clone().index_fill_(1, torch.tensor([5]), bad))
    for call in (
        lambda: memory.read(state, random_bits(2, 1)),
        lambda: memory.write(state, random_bits(2, 3)),
        lambda: memory.write_step(state, random_bits(2, 1)[:, 0]),
    ):
        with pytest.raises(ValueError, match="the state holds NaN or inf"):
            call()


def test_masks_must_be_bool_and_true_marks_the_patterns_written():
    memory = tiny_memory()
    patterns = random_bits(2, 3)
    first_only = torch.tensor([[True, False, False]]).expand(2, -1)
    written = memory.write(memory.init_state(2), patterns, first_only)
    torch.testing.assert_close(written.weights, memory.write(memory.init_state(2), patterns[:, :1]).weights)
    for call in (
        lambda: memory.write(memory.init_state(2), patterns, first_only.float()),
        lambda: memory.write_stream(memory.init_state(2), patterns, first_only.long()),
        lambda: memory.write_step(memory.init_state(2), patterns[:, 0], torch.ones(2)),
        lambda: memory.meta_loss(patterns, patterns, mask=first_only.float()),
    ):
        with pytest.raises(ValueError, match="must be a bool tensor"):
            call()


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="projection"):
        EBMM(MLPEnergy(DIM), projection=(1.0, -1.0))
    with pytest.raises(ValueError, match="write_steps"):
        EBMM(MLPEnergy(DIM), write_steps=0)
    with pytest.raises(TypeError, match="EnergyNet"):
        EBMM(torch.nn.Linear(DIM, 1))


def test_finite_patterns_whose_sum_overflows_are_accepted():
    # The finite check sums the patterns first; a sum that overflows float32 must not be taken for an inf pattern.
    memory = EBMM(MLPEnergy(DIM, hidden=8, fast_units=2, hops=1, hop_dim=8), write_steps=1, read_steps=1)
    huge = torch.full((2, 3, DIM), 3e37)
    assert not torch.isfinite(huge.sum())
    memory.read(memory.init_state(2), huge)
    huge[1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        memory.read(memory.init_state(2), huge)


def test_non_finite_write_raises_instead_of_returning_weights():
    memory = tiny_memory()
    with torch.no_grad():
        memory.write_lr_raw.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        memory.write(memory.init_state(2), random_bits(2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    memory = tiny_memory()
    patterns = random_bits(3, 4)
    queries = flip_bits(patterns, 4, generator=torch.Generator().manual_seed(0))
    expected = memory.read(memory.write(memory.init_state(3), patterns), queries)
    gpu = memory.to("cuda")
    retrieved = gpu.read(gpu.write(gpu.init_state(3), patterns.cuda()), queries.cuda())
    assert torch.allclose(retrieved.cpu(), expected, atol=1e-4)
    for write in ("batch", "stream"):  # each trains its own step sizes
        gpu.meta_loss(patterns.cuda(), queries.cuda(), write=write).backward()
    for name, parameter in gpu.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_memory_core_imports_neither_sb3_nor_gymnasium():
    script = "import sys, ebmm_rl.memory; print(sorted(m for m in ('stable_baselines3', 'gymnasium') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
