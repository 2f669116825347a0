"""The graded checks of notebooks 00 and 01 accept correct answers and reject the usual mistakes.

For each check: a correct implementation passes; specific wrong ones (missing create_graph, a loss
turned into a float with .item(), a step uphill, parameters re-initialised per task ...) raise
CheckFailed with a hint that names the mistake; a blank answer's NotImplementedError propagates.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from metalearn_edu.course.checks import objective, start
from metalearn_edu.functional import adapt, forward, make_mlp, mse, params_of
from metalearn_edu.runtime import seed_everything
from metalearn_edu.tasks import SinusoidTasks
from check_helpers import blank, fails


# ------------------------------------------------------------------------------------------------
# notebook 00


def sample_tasks(seed):
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    return SinusoidTasks().sample(start.NUM_TASKS, start.SHOTS, start.QUERY, generator=generator)


def test_sample_tasks_passes_and_keeps_global_state(capsys):
    torch.manual_seed(123)
    expected = torch.rand(2)
    torch.manual_seed(123)
    start.check_sample_tasks(sample_tasks)
    start.check_sample_tasks(sample_tasks, seed=5)
    assert torch.equal(torch.rand(2), expected)  # the check put the global state back
    assert "✔" in capsys.readouterr().out


def test_sample_tasks_mistakes():
    fails(start.check_sample_tasks, lambda s: sample_tasks(s).x_support, "TaskBatch")
    no_generator = lambda s: (seed_everything(s), SinusoidTasks().sample(4, 5, 10))[1]  # noqa: E731
    seed_everything(0)
    fails(start.check_sample_tasks, lambda s: SinusoidTasks().sample(4, 5, 10), "same tasks")
    hard_coded = lambda s: sample_tasks(0)  # noqa: E731
    fails(start.check_sample_tasks, hard_coded, "hard-coded")
    fails(start.check_sample_tasks, lambda s: SinusoidTasks().sample(4, 5, 10, torch.Generator().manual_seed(s)), "seed_everything")
    fails(start.check_sample_tasks, lambda s: SinusoidTasks().sample(4, 10, 5, torch.Generator().manual_seed(s)), "shots=5")
    fails(start.check_sample_tasks, lambda s: (seed_everything(s), SinusoidTasks().sample(4, 5, 10, torch.Generator().manual_seed(s + 7)))[1])
    # drawing from the global generator after seeding is reproducible but not the batch that was asked for
    fails(start.check_sample_tasks, no_generator)
    with pytest.raises(NotImplementedError):
        start.check_sample_tasks(blank)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def test_count_parameters():
    start.check_count_parameters(count_parameters)
    start.check_count_parameters(count_parameters, extra=True)
    assert count_parameters(make_mlp()) == 1761
    fails(start.check_count_parameters, lambda m: len(list(m.parameters())), "p.numel()")
    fails(start.check_count_parameters, lambda m: sum(p.numel() for n, p in m.named_parameters() if "weight" in n), "biases")
    fails(start.check_count_parameters, lambda m: torch.tensor(count_parameters(m)), "int(")
    fails(start.check_count_parameters, lambda m: 1761, "expected 63")
    with pytest.raises(NotImplementedError):
        start.check_count_parameters(blank)


def support_mse(model, params, batch, i):
    return mse(forward(model, params, batch.x_support[i]), batch.y_support[i])


def test_support_mse():
    start.check_support_mse(support_mse)
    start.check_support_mse(support_mse, seed=3, tasks=(0,))
    fails(start.check_support_mse, lambda m, p, b, i: support_mse(m, p, b, i).item(), ".item()")
    fails(start.check_support_mse, lambda m, p, b, i: mse(m(b.x_support[i]), b.y_support[i]), "forward(model, params, x)")
    fails(start.check_support_mse, lambda m, p, b, i: mse(forward(m, p, b.x_query[i]), b.y_query[i]), "query-set")
    fails(start.check_support_mse, lambda m, p, b, i: mse(forward(m, p, b.x_support), b.y_support), "every task")
    fails(start.check_support_mse, lambda m, p, b, i: ((forward(m, p, b.x_support[i]) - b.y_support[i]) ** 2).sum(), "sum of squares")
    fails(start.check_support_mse, lambda m, p, b, i: support_mse(m, p, b, i).detach(), "grad_fn")
    fails(start.check_support_mse, lambda m, p, b, i: (forward(m, p, b.x_support[i]) - b.y_support[i]) ** 2, "shape")
    with pytest.raises(NotImplementedError):
        start.check_support_mse(blank)


# ------------------------------------------------------------------------------------------------
# notebook 01: inner step


def inner_step(model, params, x, y, lr, create_graph):
    loss = mse(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, tuple(params.values()), create_graph=create_graph)
    return {name: p - lr * g for (name, p), g in zip(params.items(), grads)}


def inner_step_always_second_order(model, params, x, y, lr, create_graph):
    return inner_step(model, params, x, y, lr, True)


def inner_step_no_create_graph(model, params, x, y, lr, create_graph):
    return inner_step(model, params, x, y, lr, False)


def inner_step_uphill(model, params, x, y, lr, create_graph):
    return inner_step(model, params, x, y, -lr, create_graph)


def inner_step_own_params(model, params, x, y, lr, create_graph):
    return inner_step(model, params_of(model), x, y, lr, create_graph)


def inner_step_detached(model, params, x, y, lr, create_graph):
    return {n: p.detach() for n, p in inner_step(model, params, x, y, lr, create_graph).items()}


def inner_step_item(model, params, x, y, lr, create_graph):
    loss = mse(forward(model, params, x), y).item()
    grads = torch.autograd.grad(loss, tuple(params.values()), create_graph=create_graph)
    return {name: p - lr * g for (name, p), g in zip(params.items(), grads)}


def inner_step_in_place(model, params, x, y, lr, create_graph):
    loss = mse(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, tuple(params.values()))
    with torch.no_grad():
        for p, g in zip(params.values(), grads):
            p -= lr * g
    return params


def test_inner_step():
    objective.check_inner_step(inner_step)
    objective.check_inner_step(inner_step, seed=4, hidden=(40, 40), activation="relu", dtype=torch.float32, lr=0.01)
    fails(objective.check_inner_step, inner_step_no_create_graph, "create_graph")
    fails(objective.check_inner_step, inner_step_always_second_order, "pass the create_graph argument")
    fails(objective.check_inner_step, inner_step_uphill, "uphill")
    fails(objective.check_inner_step, inner_step_own_params, "params argument")
    fails(objective.check_inner_step, inner_step_detached, "do not detach")
    fails(objective.check_inner_step, inner_step_item, ".item()")
    fails(objective.check_inner_step, inner_step_in_place, "in place")
    fails(objective.check_inner_step, lambda m, p, x, y, lr, cg: dict(p), "not applied")
    fails(objective.check_inner_step, lambda m, p, x, y, lr, cg: list(p.values()), "dict")
    with pytest.raises(NotImplementedError):
        objective.check_inner_step(blank)


# ------------------------------------------------------------------------------------------------
# notebook 01: MAML and FOMAML gradients


def maml_meta_gradient_one_task(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    adapted = params
    for _ in range(steps):
        adapted = inner_step(model, adapted, x_s, y_s, lr, create_graph=True)
    loss = mse(forward(model, adapted, x_q), y_q)
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()))))


def fomaml_gradient(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    adapted = adapt(model, params, x_s, y_s, lr=lr, steps=steps, first_order=True)
    loss = mse(forward(model, adapted, x_q), y_q)
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()))))


def maml_item_loss(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    adapted = adapt(model, params, x_s, y_s, lr=lr, steps=steps)
    loss = mse(forward(model, adapted, x_q), y_q).item()
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()))))


def maml_reinitialised(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    fresh = params_of(make_mlp(1, (8,), 1, "tanh").double())  # a new network per task: θ is never used
    adapted = adapt(model, fresh, x_s, y_s, lr=lr, steps=steps)
    loss = mse(forward(model, adapted, x_q), y_q)
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()))))


def maml_reinitialised_allow_unused(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    fresh = params_of(make_mlp(1, (8,), 1, "tanh").double())
    adapted = adapt(model, fresh, x_s, y_s, lr=lr, steps=steps)
    loss = mse(forward(model, adapted, x_q), y_q)
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()), allow_unused=True)))


def maml_own_params(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    own = params_of(model)
    grads = maml_meta_gradient_one_task(model, own, x_s, y_s, x_q, y_q, lr, steps)
    return {n: grads[n] for n in params}


def maml_one_step_only(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    return maml_meta_gradient_one_task(model, params, x_s, y_s, x_q, y_q, lr, 1)


def maml_no_adaptation(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    loss = mse(forward(model, params, x_q), y_q)
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()))))


def maml_uphill(model, params, x_s, y_s, x_q, y_q, lr, steps=1):
    return maml_meta_gradient_one_task(model, params, x_s, y_s, x_q, y_q, -lr, steps)


def test_maml_meta_gradient():
    objective.check_maml_meta_gradient(maml_meta_gradient_one_task)
    objective.check_maml_meta_gradient(maml_meta_gradient_one_task, steps=3, seed=2)
    objective.check_maml_meta_gradient(maml_meta_gradient_one_task, seed=9, hidden=(40, 40), activation="relu",
                                       dtype=torch.float32, lr=0.01, steps=2)
    fails(objective.check_maml_meta_gradient, fomaml_gradient, "FOMAML")
    fails(objective.check_maml_meta_gradient, maml_item_loss, ".item()")
    fails(objective.check_maml_meta_gradient, maml_reinitialised, "fresh")
    fails(objective.check_maml_meta_gradient, maml_reinitialised_allow_unused, "None")
    fails(objective.check_maml_meta_gradient, maml_own_params, "params argument")
    fails(objective.check_maml_meta_gradient, maml_one_step_only, "one inner step", steps=2)
    fails(objective.check_maml_meta_gradient, maml_no_adaptation, "before adaptation")
    fails(objective.check_maml_meta_gradient, maml_uphill, "uphill")
    with pytest.raises(NotImplementedError):
        objective.check_maml_meta_gradient(blank)


def test_fomaml_gradient():
    objective.check_fomaml_gradient(fomaml_gradient)
    objective.check_fomaml_gradient(fomaml_gradient, steps=3, seed=1)
    fails(objective.check_fomaml_gradient, maml_meta_gradient_one_task, "second-order")
    fails(objective.check_fomaml_gradient, maml_no_adaptation, "before adaptation")
    fails(objective.check_fomaml_gradient,
          lambda m, p, xs, ys, xq, yq, lr, steps=1: fomaml_gradient(m, p, xs, ys, xq, yq, lr, steps + 1), "expected")
    with pytest.raises(NotImplementedError):
        objective.check_fomaml_gradient(blank)


# ------------------------------------------------------------------------------------------------
# notebook 01: closed form on linear regression


def linear_meta_gradient(theta, x_s, y_s, x_q, y_q, lr, steps=1):
    k, d = x_s.shape
    q = x_q.shape[0]
    theta_prime = theta
    for _ in range(steps):
        theta_prime = theta_prime - lr * (2 / k) * x_s.T @ (x_s @ theta_prime - y_s[:, 0])
    grad_q = (2 / q) * x_q.T @ (x_q @ theta_prime - y_q[:, 0])
    jacobian = torch.eye(d, dtype=theta.dtype) - lr * (2 / k) * x_s.T @ x_s
    return torch.linalg.matrix_power(jacobian, steps) @ grad_q


def test_linear_meta_gradient():
    objective.check_linear_meta_gradient(linear_meta_gradient)
    objective.check_linear_meta_gradient(linear_meta_gradient, steps=3, seed=4, dim=5)

    def fomaml(theta, x_s, y_s, x_q, y_q, lr, steps=1):
        k, q = x_s.shape[0], x_q.shape[0]
        tp = theta
        for _ in range(steps):
            tp = tp - lr * (2 / k) * x_s.T @ (x_s @ tp - y_s[:, 0])
        return (2 / q) * x_q.T @ (x_q @ tp - y_q[:, 0])

    def one_jacobian(theta, x_s, y_s, x_q, y_q, lr, steps=1):
        return linear_meta_gradient(theta, x_s, y_s, x_q, y_q, lr, 1) if steps == 1 else (
            (torch.eye(theta.shape[0], dtype=theta.dtype) - lr * (2 / x_s.shape[0]) * x_s.T @ x_s)
            @ fomaml(theta, x_s, y_s, x_q, y_q, lr, steps))

    def float32_result(theta, x_s, y_s, x_q, y_q, lr, steps=1):
        return linear_meta_gradient(theta, x_s, y_s, x_q, y_q, lr, steps).float()

    def autograd_version(theta, x_s, y_s, x_q, y_q, lr, steps=1):
        theta = theta.clone().requires_grad_(True)
        tp = theta - lr * torch.autograd.grad(((x_s @ theta - y_s[:, 0]) ** 2).mean(), theta, create_graph=True)[0]
        return torch.autograd.grad(((x_q @ tp - y_q[:, 0]) ** 2).mean(), theta)[0]

    fails(objective.check_linear_meta_gradient, fomaml, "FOMAML")
    fails(objective.check_linear_meta_gradient, one_jacobian, "product of 3", steps=3)
    fails(objective.check_linear_meta_gradient, lambda t, *a, steps=1: linear_meta_gradient(t, *a, steps=1), "one-step", steps=3)
    fails(objective.check_linear_meta_gradient, lambda t, xs, ys, xq, yq, lr, steps=1: linear_meta_gradient(t, xs, ys, xq, yq, -lr, steps), "uphill")
    fails(objective.check_linear_meta_gradient, lambda t, xs, ys, xq, yq, lr, steps=1: linear_meta_gradient(t, xs, ys, xq, yq, lr, steps)[:, None], "shape")
    fails(objective.check_linear_meta_gradient, float32_result, "dtype")
    fails(objective.check_linear_meta_gradient, autograd_version, "closed-form")
    with pytest.raises(NotImplementedError):
        objective.check_linear_meta_gradient(blank)


# ------------------------------------------------------------------------------------------------
# notebook 01: Reptile


def reptile_direction(model, params, x, y, lr, steps):
    phi = adapt(model, params, x, y, lr=lr, steps=steps, first_order=True)
    return {n: (params[n] - phi[n]).detach() for n in params}


def test_reptile_direction():
    objective.check_reptile_direction(reptile_direction)
    objective.check_reptile_direction(reptile_direction, steps=1, seed=3)
    fails(objective.check_reptile_direction,
          lambda m, p, x, y, lr, steps: {n: -v for n, v in reptile_direction(m, p, x, y, lr, steps).items()}, "wrong sign")
    fails(objective.check_reptile_direction,
          lambda m, p, x, y, lr, steps: reptile_direction(m, p, x, y, lr, 1), "one SGD step")
    fails(objective.check_reptile_direction,
          lambda m, p, x, y, lr, steps: adapt(m, p, x, y, lr=lr, steps=steps, first_order=True), "φ itself")
    fails(objective.check_reptile_direction,
          lambda m, p, x, y, lr, steps: reptile_direction(m, params_of(m), x, y, lr, steps), "params argument")
    with pytest.raises(NotImplementedError):
        objective.check_reptile_direction(blank)


def test_checks_leave_global_random_state_alone():
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    expected = (torch.rand(2), np.random.rand(), random.random())
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    objective.check_inner_step(inner_step)
    objective.check_maml_meta_gradient(maml_meta_gradient_one_task)
    start.check_support_mse(support_mse)
    start.check_count_parameters(count_parameters)
    got = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
