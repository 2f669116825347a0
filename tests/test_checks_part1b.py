"""The graded checks of notebooks 02 and 03 accept correct answers and catch the classic mistakes.

Every check must pass on a correct implementation and raise ``CheckFailed`` (with a hint that names
the mistake) on a blank, a crash, and each specific wrong implementation below.
"""

import copy
import math

import pytest
import torch

from metalearn_edu.course.checks import first_order as fo
from metalearn_edu.course.checks import sinusoid as sn
from metalearn_edu.functional import adapt, forward, make_mlp, mse, params_of
from metalearn_edu.maml import meta_gradient
from metalearn_edu.tasks import SinusoidTasks, TaskBatch
from check_helpers import blank, fails


# --- 02: sample_sinusoid_tasks --------------------------------------------------------------------


def make_sampler(amp=(0.1, 5.0), phase=(0.0, math.pi), sign=-1.0, use_generator=True, split_x=False):
    def sample(num_tasks, shots, query, generator):
        g = generator if use_generator else None
        a = torch.empty(num_tasks).uniform_(*amp, generator=g)
        p = torch.empty(num_tasks).uniform_(*phase, generator=g)
        if split_x:
            x = torch.cat([torch.empty(num_tasks, shots, 1).uniform_(-5, 5, generator=g),
                           torch.empty(num_tasks, query, 1).uniform_(-5, 5, generator=g)], dim=1)
        else:
            x = torch.empty(num_tasks, shots + query, 1).uniform_(-5, 5, generator=g)
        y = a[:, None, None] * torch.sin(x + sign * p[:, None, None])
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], {"amplitude": a, "phase": p})
    return sample


def test_sample_check_passes_on_the_library_and_a_student_version():
    sn.check_sample_sinusoid_tasks(lambda t, k, q, g: SinusoidTasks().sample(t, k, q, g))
    sn.check_sample_sinusoid_tasks(make_sampler())


@pytest.mark.parametrize("wrong, match", [
    (blank, "NotImplementedError"),
    (make_sampler(sign=+1.0), "sign of the phase"),
    (make_sampler(phase=(0.0, 2 * math.pi)), "phase"),
    (make_sampler(amp=(1.0, 5.0)), "amplitude"),
    (make_sampler(use_generator=False), "generator"),
    (make_sampler(split_x=True), "order"),
    (lambda t, k, q, g: SinusoidTasks().sample(t, k, q, g).x_support, "TaskBatch"),
])
def test_sample_check_catches(wrong, match):
    fails(sn.check_sample_sinusoid_tasks, wrong, match=match)


# --- 02: maml_step --------------------------------------------------------------------------------


def make_maml_step(create_graph=True, item=False, reinit=False, zero_grad=True, reduce="mean", step_per_task=False):
    def maml_step(model, optimizer, batch, inner_lr):
        if zero_grad:
            optimizer.zero_grad()
        theta = params_of(model)
        losses = []
        for i in range(batch.num_tasks):
            net, start = model, theta
            if reinit:
                net = copy.deepcopy(model)
                start = params_of(net)
            xs, ys, xq, yq = batch.x_support[i], batch.y_support[i], batch.x_query[i], batch.y_query[i]
            support = mse(forward(net, start, xs), ys)
            grads = torch.autograd.grad(support, list(start.values()), create_graph=create_graph)
            adapted = {n: p - inner_lr * g for (n, p), g in zip(start.items(), grads)}
            loss = mse(forward(net, adapted, xq), yq)
            if step_per_task:
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            losses.append(loss.item() if item else loss)
        if item:
            meta = torch.tensor(sum(losses) / len(losses), requires_grad=True)
        else:
            stacked = torch.stack(losses)
            meta = stacked.mean() if reduce == "mean" else stacked.sum()
        if not step_per_task:
            meta.backward()
            optimizer.step()
        return meta.item()
    return maml_step


def test_maml_step_check_passes():
    sn.check_maml_step(make_maml_step())


@pytest.mark.parametrize("wrong, match", [
    (blank, "NotImplementedError"),
    (make_maml_step(create_graph=False), "create_graph=True"),
    (make_maml_step(item=True), ".item()"),
    (make_maml_step(reinit=True), "deepcopy"),
    (make_maml_step(zero_grad=False), "zero_grad"),
    (make_maml_step(reduce="sum"), "summed"),
    (make_maml_step(step_per_task=True), "exactly once"),
])
def test_maml_step_check_catches(wrong, match):
    fails(sn.check_maml_step, wrong, match=match)


# --- 02: evaluate_after_steps ---------------------------------------------------------------------


def make_evaluate(reset=True, fresh=False, inplace=False):
    def evaluate_after_steps(model, batch, inner_lr, max_steps):
        theta = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
        if fresh:
            theta = {n: p.detach().requires_grad_(True) for n, p in make_mlp().named_parameters()}
        curves, carried = [], theta
        for i in range(batch.num_tasks):
            p = theta if reset else carried
            row = []
            for s in range(max_steps + 1):
                with torch.no_grad():
                    row.append(float(mse(forward(model, p, batch.x_query[i]), batch.y_query[i])))
                if s < max_steps:
                    p = adapt(model, p, batch.x_support[i], batch.y_support[i], lr=inner_lr, first_order=True)
                    p = {n: v.detach().requires_grad_(True) for n, v in p.items()}
            carried = p
            curves.append(row)
        if inplace:
            with torch.no_grad():
                for param in model.parameters():
                    param.mul_(1.0001)
        return torch.tensor(curves).mean(0)
    return evaluate_after_steps


def test_evaluate_check_passes():
    sn.check_evaluate_after_steps(make_evaluate())


@pytest.mark.parametrize("wrong, match", [
    (blank, "NotImplementedError"),
    (make_evaluate(reset=False), "single task"),
    (make_evaluate(fresh=True), "fresh initialisation"),
    (make_evaluate(inplace=True), "unchanged"),
    (lambda m, b, lr, s: make_evaluate()(m, b, lr, s)[:-1], "max_steps"),
])
def test_evaluate_check_catches(wrong, match):
    fails(sn.check_evaluate_after_steps, wrong, match=match)


# --- 02: interpreting the table -------------------------------------------------------------------


def test_one_step_ratio():
    from metalearn_edu.evaluate import evaluate_sinusoid

    torch.manual_seed(0)
    a, b = make_mlp(), make_mlp()
    ea, eb = (evaluate_sinusoid(m, tasks=20, max_steps=10) for m in (a, b))
    ratio = eb.mean[1] / ea.mean[1]
    sn.check_one_step_ratio(ratio, a, b, tasks=20)
    sn.check_one_step_ratio(round(ratio, 2), a, b, tasks=20)
    fails(sn.check_one_step_ratio, None, maml_model=a, pretrained_model=b, tasks=20, match="NotImplementedError")
    fails(sn.check_one_step_ratio, "big", maml_model=a, pretrained_model=b, tasks=20)
    fails(sn.check_one_step_ratio, 2 * ratio + 1, maml_model=a, pretrained_model=b, tasks=20)


# --- 03: silent FOMAML, .item() loop, FOMAML ------------------------------------------------------


def make_meta_gradient(create_graph=True, reduce="mean"):
    def maml_meta_gradient(model, params, batch, lr):
        losses = []
        for i in range(batch.num_tasks):
            support = mse(forward(model, params, batch.x_support[i]), batch.y_support[i])
            grads = torch.autograd.grad(support, list(params.values()), create_graph=create_graph)
            adapted = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
            losses.append(mse(forward(model, adapted, batch.x_query[i]), batch.y_query[i]))
        meta = torch.stack(losses).mean() if reduce == "mean" else torch.stack(losses).sum()
        return dict(zip(params, torch.autograd.grad(meta, list(params.values()))))
    return maml_meta_gradient


def test_maml_meta_gradient_check():
    fo.check_maml_meta_gradient(make_meta_gradient())
    fails(fo.check_maml_meta_gradient, make_meta_gradient(create_graph=False), match="silent-FOMAML")
    fails(fo.check_maml_meta_gradient, make_meta_gradient(reduce="sum"), match="summed")
    fails(fo.check_maml_meta_gradient, blank, match="NotImplementedError")
    fails(fo.check_maml_meta_gradient, lambda m, p, b, lr: list(make_meta_gradient()(m, p, b, lr).values()), match="dict")


def make_outer_loss(item=False, first_order=False, as_float=False):
    def outer_loss(model, params, batch, lr):
        losses = []
        for i in range(batch.num_tasks):
            adapted = adapt(model, params, batch.x_support[i], batch.y_support[i], lr=lr, first_order=first_order)
            loss = mse(forward(model, adapted, batch.x_query[i]), batch.y_query[i])
            losses.append(loss.item() if item or as_float else loss)
        if as_float:
            return sum(losses) / len(losses)
        if item:
            return torch.tensor(sum(losses) / len(losses), requires_grad=True)
        return torch.stack(losses).mean()
    return outer_loss


def test_outer_loss_check():
    fo.check_outer_loss(make_outer_loss())
    fails(fo.check_outer_loss, make_outer_loss(item=True), match="new leaf")
    fails(fo.check_outer_loss, make_outer_loss(as_float=True), match=".item()")
    fails(fo.check_outer_loss, make_outer_loss(first_order=True), match="silent-FOMAML")
    fails(fo.check_outer_loss, blank, match="NotImplementedError")


def make_fomaml(adapt_first=True, second_order=False, reduce="mean"):
    def fomaml_meta_gradient(model, params, batch, lr):
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        for i in range(batch.num_tasks):
            p = params
            if adapt_first:
                p = adapt(model, params, batch.x_support[i], batch.y_support[i], lr=lr, first_order=not second_order)
            loss = mse(forward(model, p, batch.x_query[i]), batch.y_query[i])
            for n, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
                total[n] = total[n] + g
        scale = batch.num_tasks if reduce == "mean" else 1
        return {n: g / scale for n, g in total.items()}
    return fomaml_meta_gradient


def test_fomaml_check():
    fo.check_fomaml_meta_gradient(make_fomaml())
    fo.check_fomaml_meta_gradient(lambda m, p, b, lr: meta_gradient(m, p, b, algo="fomaml", lr=lr).grads)
    fails(fo.check_fomaml_meta_gradient, make_fomaml(second_order=True), match="full MAML")
    fails(fo.check_fomaml_meta_gradient, make_fomaml(adapt_first=False), match="without adapting")
    fails(fo.check_fomaml_meta_gradient, make_fomaml(reduce="sum"), match="summed")
    fails(fo.check_fomaml_meta_gradient, blank, match="NotImplementedError")

    def with_graph(model, params, batch, lr):
        return {n: g.clone().requires_grad_(True) for n, g in make_fomaml()(model, params, batch, lr).items()}
    fails(fo.check_fomaml_meta_gradient, with_graph, match="graph")


# --- 03: speed-up and multiple choice -------------------------------------------------------------


def test_speedup_check():
    fo.check_speedup(0.02 / 0.014, 0.02, 0.014)
    fo.check_speedup(torch.tensor(1.5), 0.003, 0.002)
    fails(fo.check_speedup, 0.014 / 0.02, t_maml=0.02, t_fomaml=0.014, match="inverted")
    fails(fo.check_speedup, 0.5, t_maml=0.01, t_fomaml=0.02, match="not slower")
    fails(fo.check_speedup, 1.4, t_maml=14.0, t_fomaml=10.0, match="plausible")
    fails(fo.check_speedup, 2.0, t_maml=0.02, t_fomaml=0.014)
    fails(fo.check_speedup, None, t_maml=None, t_fomaml=None, match="None")


def test_choice_check():
    fo.check_choice("c", question="q")
    fo.check_choice(" C ", question="q", correct="c")
    fails(fo.check_choice, None, question="q", match="None")
    fails(fo.check_choice, "e", question="q")
    fails(fo.check_choice, 3, question="q")
    fails(fo.check_choice, "a", question="q", correct="c")
