"""The two numerical pieces of TRPO (Schulman et al. 2015): conjugate gradient and a backtracking line search.

TRPO maximises a surrogate L(theta) subject to a trust region on the policy change,

    max_d  g^T d   s.t.  1/2 d^T F d <= delta        (g = grad L, F = Hessian of the mean KL at theta_old)

whose solution is the natural-gradient direction x = F^{-1} g scaled to the boundary,
d = sqrt(2 delta / (x^T F x)) x. F is never formed: :func:`conjugate_gradient` solves F x = g with
Fisher-vector products only, and :func:`backtracking_line_search` shrinks d (d, beta d, beta^2 d, ...)
until the surrogate improves and the *measured* KL is within delta (the quadratic model of the KL is
only an approximation).

Parameters are handled as one flat vector here (:func:`flatten`, :func:`unflatten`), shape (P,).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


def flatten(tensors: Mapping[str, Tensor] | list[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector (P,)."""
    values = list(tensors.values()) if isinstance(tensors, Mapping) else list(tensors)
    return torch.cat([t.reshape(-1) for t in values])


def unflatten(flat: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Split a flat vector (P,) back into tensors shaped like ``like`` (same names, same order)."""
    out, start = {}, 0
    for name, ref in like.items():
        out[name] = flat[start : start + ref.numel()].view_as(ref)
        start += ref.numel()
    if start != flat.numel():
        raise ValueError(f"flat has {flat.numel()} entries but the parameters need {start}")
    return out


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, *, iterations: int = 10, tolerance: float = 1e-10
) -> Tensor:
    """Approximately solve A x = b for a symmetric positive-definite A given only x -> A x.

    The classic CG recursion from x_0 = 0: r_0 = p_0 = b;
    alpha_k = r_k^T r_k / p_k^T A p_k,  x_{k+1} = x_k + alpha_k p_k,  r_{k+1} = r_k - alpha_k A p_k,
    p_{k+1} = r_{k+1} + (r_{k+1}^T r_{k+1} / r_k^T r_k) p_k; stops after ``iterations`` steps or when
    r^T r < ``tolerance``. Exact after P steps for a P x P matrix (in exact arithmetic).

    Args:
        matvec: (P,) -> (P,), the product with A (for TRPO, the damped Fisher-vector product).
        b: (P,) right-hand side (the policy gradient g).

    Returns:
        x: (P,).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r.dot(r)
    for _ in range(iterations):
        if rr < tolerance:
            break
        ap = matvec(p)
        alpha = rr / p.dot(ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def trust_region_step(direction: Tensor, fisher_direction: Tensor, max_kl: float) -> Tensor:
    """Scale the natural-gradient ``direction`` x to the trust-region boundary: sqrt(2 delta / x^T F x) x.

    Args:
        direction: (P,) x ~= F^{-1} g.
        fisher_direction: (P,) F x.
        max_kl: delta > 0.
    """
    curvature = direction.dot(fisher_direction)  # x^T F x
    if not torch.isfinite(curvature) or curvature <= 0:
        return torch.zeros_like(direction)  # no curvature information: take no step
    return direction * torch.sqrt(2.0 * max_kl / curvature)


@dataclass
class LineSearchResult:
    """What the line search accepted: the step fraction (0.0 when nothing was accepted) and its measurements."""

    fraction: float
    improvement: float  # L(theta_new) - L(theta_old), > 0 when accepted
    kl: float  # the measured mean KL at the accepted point
    tries: int


def backtracking_line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    full_step: Tensor,
    surrogate_before: float,
    *,
    max_kl: float,
    backtrack: float = 0.8,
    max_tries: int = 15,
) -> LineSearchResult:
    """Try steps beta^k * ``full_step`` for k = 0, 1, ... and keep the first that improves and stays in the region.

    Accepts fraction beta^k when L(theta_old + beta^k d) > L(theta_old) and KL(theta_old, theta_old + beta^k d)
    <= ``max_kl``. ``evaluate(step)`` returns (surrogate, mean KL) at theta_old + step (and may leave the
    parameters there); when nothing is accepted the caller must restore theta_old (fraction 0.0).
    """
    if not 0.0 < backtrack < 1.0:
        raise ValueError(f"backtrack must be in (0, 1), got {backtrack!r}")
    for k in range(max_tries):
        fraction = backtrack**k
        surrogate, kl = evaluate(fraction * full_step)
        improvement = surrogate - surrogate_before
        if improvement > 0 and kl <= max_kl:
            return LineSearchResult(fraction, improvement, kl, k + 1)
    return LineSearchResult(0.0, 0.0, 0.0, max_tries)


__all__ = [
    "LineSearchResult",
    "backtracking_line_search",
    "conjugate_gradient",
    "flatten",
    "trust_region_step",
    "unflatten",
]
