"""Meta-gradients against finite differences, the linear-regression closed form, and each other."""

import pytest
import torch
from torch import nn

from metalearn_edu.functional import Learner, adapt, make_mlp, mse, params_of
from metalearn_edu.maml import hessian_vector_term, meta_gradient, task_query_loss
from metalearn_edu.tasks import LinearRegressionTasks, SinusoidTasks, linear_maml_meta_gradient


def small_problem(seed=0, tasks=3, hidden=(8, 8)):
    torch.manual_seed(seed)
    model = make_mlp(1, hidden, 1, activation="tanh").double()  # smooth, so finite differences are exact to O(h²)
    batch = SinusoidTasks().sample(tasks, 5, 7, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return model, params_of(model), batch


def meta_loss(model, params, batch, lr, steps, first_order=False):
    losses = [
        task_query_loss(model, params, batch.x_support[i], batch.y_support[i], batch.x_query[i], batch.y_query[i], lr=lr, steps=steps, first_order=first_order)
        for i in range(batch.num_tasks)
    ]
    return torch.stack(losses).mean()


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads.values()])


def finite_difference_gradient(fn, params, h=1e-5):
    """Central differences of the scalar fn(params) with respect to every parameter entry."""
    out = []
    for name, p in params.items():
        g = torch.zeros_like(p)
        for idx in range(p.numel()):
            def shifted(delta):
                q = {n: v.detach().clone() for n, v in params.items()}
                q[name].view(-1)[idx] += delta
                return float(fn({n: v.requires_grad_(True) for n, v in q.items()}).detach())
            g.view(-1)[idx] = (shifted(h) - shifted(-h)) / (2 * h)
        out.append(g.reshape(-1))
    return torch.cat(out)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("batched", [False, True])
def test_maml_meta_gradient_matches_central_finite_differences(steps, batched):
    model, params, batch = small_problem()
    lr = 0.1  # large enough that the Hessian term matters
    mg = meta_gradient(model, params, batch, algo="maml", lr=lr, steps=steps, batched=batched)
    fd = finite_difference_gradient(lambda p: meta_loss(model, p, batch, lr, steps), params)
    torch.testing.assert_close(flat(mg.grads), fd, rtol=1e-6, atol=1e-8)
    # FOMAML is a different function's gradient: it must NOT match the finite differences of the MAML loss.
    fo = meta_gradient(model, params, batch, algo="fomaml", lr=lr, steps=steps, batched=batched)
    assert (flat(fo.grads) - fd).abs().max() > 1e-4


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("batched", [False, True])
def test_maml_equals_closed_form_on_linear_regression(steps, batched):
    family = LinearRegressionTasks(dim=4)
    batch = family.sample(6, 5, 8, torch.Generator().manual_seed(3))
    model = nn.Linear(4, 1, bias=False).double()
    torch.nn.init.normal_(model.weight, generator=torch.Generator().manual_seed(4))
    params = params_of(model)
    lr = 0.05
    mg = meta_gradient(model, params, batch, algo="maml", lr=lr, steps=steps, batched=batched)
    theta = model.weight.detach()[0]
    exact = torch.stack([
        linear_maml_meta_gradient(theta, batch.x_support[i], batch.y_support[i], batch.x_query[i], batch.y_query[i], lr, steps)
        for i in range(batch.num_tasks)
    ]).mean(0)
    torch.testing.assert_close(mg.grads["weight"][0], exact, rtol=1e-10, atol=1e-12)


def test_fomaml_is_maml_minus_the_hessian_term():
    model, params, batch = small_problem(seed=1)
    lr = 0.2
    maml = meta_gradient(model, params, batch, algo="maml", lr=lr)
    fomaml = meta_gradient(model, params, batch, algo="fomaml", lr=lr)
    hessian_term = hessian_vector_term(model, params, batch, lr=lr)
    torch.testing.assert_close(flat(maml.grads), flat(fomaml.grads) + flat(hessian_term), rtol=1e-9, atol=1e-12)
    assert flat(hessian_term).abs().max() > 1e-4  # the term is not trivially zero here


@pytest.mark.parametrize("algo", ["maml", "fomaml", "reptile", "pretrain"])
@pytest.mark.parametrize("steps", [1, 3])
def test_vmap_batched_and_loop_agree(algo, steps):
    torch.manual_seed(0)
    model = make_mlp().double()
    params = params_of(model)
    batch = SinusoidTasks().sample(7, 10, 10, torch.Generator().manual_seed(2), dtype=torch.float64)
    a = meta_gradient(model, params, batch, algo=algo, lr=0.01, steps=steps, batched=False)
    b = meta_gradient(model, params, batch, algo=algo, lr=0.01, steps=steps, batched=True)
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(flat(a.grads), flat(b.grads), rtol=1e-9, atol=1e-12)


def test_reptile_with_one_step_is_the_scaled_joint_gradient():
    """θ − φ = α ∇L(θ) after one SGD step, so Reptile(1 step) = α · pretrain gradient."""
    model, params, batch = small_problem(seed=2)
    rep = meta_gradient(model, params, batch, algo="reptile", lr=0.03, steps=1)
    pre = meta_gradient(model, params, batch, algo="pretrain", lr=0.03)
    torch.testing.assert_close(flat(rep.grads), 0.03 * flat(pre.grads), rtol=1e-9, atol=1e-13)


def test_first_order_adaptation_builds_no_second_order_graph():
    model, params, batch = small_problem()
    xs, ys = batch.x_support[0], batch.y_support[0]
    w = "0.weight"
    first = adapt(model, params, xs, ys, lr=0.1, first_order=True)
    second = adapt(model, params, xs, ys, lr=0.1, first_order=False)
    # dθ′/dθ is the identity when the inner gradient is detached ...
    d_first = torch.autograd.grad(first[w].sum(), params[w])[0]
    torch.testing.assert_close(d_first, torch.ones_like(d_first))
    # ... and carries the Hessian when it is not.
    d_second = torch.autograd.grad(second[w].sum(), params[w])[0]
    assert (d_second - 1).abs().max() > 1e-3
    # The detached step's graph never reaches the support loss: no second-order path exists.
    assert "PowBackward0" not in _graph_node_names(first[w].grad_fn)
    assert "PowBackward0" in _graph_node_names(second[w].grad_fn)


def _graph_node_names(fn) -> set[str]:
    names, stack, seen = set(), [fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return names


def test_learner_clone_adapt_matches_adapt():
    model, params, batch = small_problem()
    xs, ys = batch.x_support[0], batch.y_support[0]
    learner = Learner(model)
    clone = learner.clone()
    clone.adapt(mse(clone(xs), ys), lr=0.05)
    expected = adapt(model, params, xs, ys, lr=0.05)
    for name in params:
        torch.testing.assert_close(clone.params[name], expected[name])
    assert learner.params[name] is params[name]  # the original still holds θ
    with pytest.raises(TypeError, match="scalar tensor"):
        clone.adapt(mse(clone(xs), ys).item(), lr=0.05)  # a .item()'d loss cannot be meta-differentiated


@pytest.mark.parametrize(
    "kwargs, argument",
    [({"lr": 0.0}, "lr"), ({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr"), ({"steps": 0}, "steps"), ({"algo": "maml2"}, "algo")],
)
def test_bad_meta_gradient_arguments_name_the_argument(kwargs, argument):
    model, params, batch = small_problem()
    with pytest.raises(ValueError, match=argument):
        meta_gradient(model, params, batch, **({"algo": "maml", "lr": 0.01, "steps": 1} | kwargs))


def test_mismatched_shapes_and_zero_shots_are_rejected():
    model, params, batch = small_problem()
    batch.y_support = batch.y_support[:, :3]
    with pytest.raises(ValueError, match="shapes do not match"):
        meta_gradient(model, params, batch)
    with pytest.raises(ValueError, match="shots"):
        SinusoidTasks().sample(4, 0, 5)
    with pytest.raises(ValueError, match="prediction and target"):
        mse(torch.zeros(3, 1), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="activation"):
        make_mlp(activation="sigmoid")


def test_sinusoid_tasks_follow_finn_et_al():
    b = SinusoidTasks().sample(2000, 10, 10, torch.Generator().manual_seed(0))
    amp, phase = b.info["amplitude"], b.info["phase"]
    assert 0.1 <= amp.min() and amp.max() <= 5.0 and 0 <= phase.min() and phase.max() <= torch.pi
    assert b.x_support.abs().max() <= 5.0
    torch.testing.assert_close(b.y_query, amp[:, None, None] * torch.sin(b.x_query - phase[:, None, None]))
    again = SinusoidTasks().sample(2000, 10, 10, torch.Generator().manual_seed(0))
    assert torch.equal(b.x_support, again.x_support)
