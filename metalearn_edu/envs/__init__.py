"""Meta-RL environments, registered with gymnasium as ``metalearn_edu/<Name>-v0`` on import.

>>> import gymnasium, metalearn_edu.envs
>>> env = gymnasium.make("metalearn_edu/Navigation2D-v0")
>>> tasks = env.unwrapped.sample_tasks(40, rng=0)
>>> env.unwrapped.set_task(tasks[0])

Every meta-env provides ``sample_tasks(n, rng=None)`` and ``set_task(task)`` on ``env.unwrapped``
(the pytorch-maml-rl / Meta-World convention). Short names are the lower-cased ``<Name>``:
``resolve_env_id("navigation2d") == "metalearn_edu/Navigation2D-v0"``.

Fast paths: an env may also have a *batched* implementation that steps T tasks x B episodes as tensors;
``register_batched(env_id, factory)`` declares it and the sampler uses it when asked (``backend="auto"``).
A factory is called as ``factory(tasks, episodes_per_task, device=..., generator=..., **env_kwargs)`` and
returns an object with ``observation_space``, ``action_space`` (of one env), ``reset() -> obs (T, B, ...)`` and
``step(actions (T, B, ...)) -> (obs, rewards (T, B), terminated (T, B) bool, truncated (T, B) bool)``.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym

from metalearn_edu.envs.bandit import BatchedBernoulliBandit, BernoulliBanditEnv
from metalearn_edu.envs.navigation import BatchedNavigation2D, Navigation2DEnv

NAMESPACE = "metalearn_edu"

# env id -> (entry point, default kwargs); the env truncates itself at its ``horizon``.
_ENVS: dict[str, tuple[str, dict[str, Any]]] = {
    f"{NAMESPACE}/Bandit5-v0": ("metalearn_edu.envs.bandit:BernoulliBanditEnv", {"num_arms": 5}),
    f"{NAMESPACE}/Bandit10-v0": ("metalearn_edu.envs.bandit:BernoulliBanditEnv", {"num_arms": 10}),
    f"{NAMESPACE}/Navigation2D-v0": ("metalearn_edu.envs.navigation:Navigation2DEnv", {}),
}

BatchedFactory = Callable[..., Any]
_BATCHED: dict[str, tuple[BatchedFactory, dict[str, Any]]] = {}


def register_batched(env_id: str, factory: BatchedFactory, **default_kwargs: Any) -> None:
    """Declare ``factory`` as the batched implementation of ``env_id`` (see the module docstring).

    ``default_kwargs`` are passed to the factory before the env kwargs of the sampler (for example the
    number of arms that the registered env id fixes).
    """
    _BATCHED[env_id] = (factory, dict(default_kwargs))


def batched_factory(env_id: str) -> tuple[BatchedFactory, dict[str, Any]] | None:
    """The batched implementation registered for ``env_id`` and its default kwargs, or None."""
    return _BATCHED.get(env_id)


def register_envs() -> None:
    """Register this package's meta-envs with gymnasium; calling it again does nothing."""
    for env_id, (entry_point, kwargs) in _ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)
    register_batched(f"{NAMESPACE}/Navigation2D-v0", BatchedNavigation2D)
    register_batched(f"{NAMESPACE}/Bandit5-v0", BatchedBernoulliBandit, num_arms=5)
    register_batched(f"{NAMESPACE}/Bandit10-v0", BatchedBernoulliBandit, num_arms=10)
    try:  # the tabular MDPs live in their own module, written separately
        from metalearn_edu.envs.tabular import register_tabular
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.tabular":
            raise
    else:
        register_tabular()
    from metalearn_edu.envs.locomotion import register_locomotion  # HalfCheetah/Ant families (imports no MuJoCo)

    register_locomotion()


def meta_env_ids() -> list[str]:
    """Every registered env id in the ``metalearn_edu`` namespace, sorted."""
    return sorted(env_id for env_id in gym.registry if env_id.startswith(f"{NAMESPACE}/"))


def short_name(env_id: str) -> str:
    """``"metalearn_edu/Navigation2D-v0"`` -> ``"navigation2d"``."""
    name = env_id.split("/", 1)[-1]
    return name.rsplit("-v", 1)[0].lower()


def resolve_env_id(name: str, *, argument: str = "env") -> str:
    """A registered gymnasium id for ``name``: a full id, or the short name of a ``metalearn_edu`` env
    (case and hyphens ignored: ``halfcheetah-vel`` is ``halfcheetahvel``).

    Raises a ValueError naming ``argument`` and listing the accepted short names when nothing matches.
    """
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a str (an env id or short name), got {type(name).__name__}")
    if name in gym.registry:
        return name
    wanted = name.lower().replace("-", "")  # "halfcheetah-vel", the course's spelling, is "halfcheetahvel"
    matches = [env_id for env_id in meta_env_ids() if short_name(env_id) == wanted]
    if not matches:
        accepted = ", ".join(sorted({short_name(env_id) for env_id in meta_env_ids()}))
        raise ValueError(f"{argument} must be one of {accepted} (or a registered gymnasium id), got {name!r}")
    return max(matches, key=lambda env_id: int(env_id.rsplit("-v", 1)[1]))  # the latest version


def check_meta_env(env: gym.Env, *, argument: str = "env") -> None:
    """Raise a ValueError naming ``argument`` unless ``env.unwrapped`` has ``sample_tasks`` and ``set_task``."""
    missing = [name for name in ("set_task", "sample_tasks") if not callable(getattr(env.unwrapped, name, None))]
    if missing:
        raise ValueError(
            f"{argument} must be a meta-environment whose env.unwrapped has sample_tasks(n) and set_task(task); "
            f"{type(env.unwrapped).__name__} lacks {', '.join(missing)}"
        )


def make_meta_env(name: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` of a meta-env by id or short name, checked to have ``sample_tasks``/``set_task``."""
    env = gym.make(resolve_env_id(name), **kwargs)
    check_meta_env(env)
    return env


register_envs()

__all__ = [
    "BatchedBernoulliBandit",
    "BatchedNavigation2D",
    "BernoulliBanditEnv",
    "Navigation2DEnv",
    "batched_factory",
    "check_meta_env",
    "make_meta_env",
    "meta_env_ids",
    "register_batched",
    "register_envs",
    "resolve_env_id",
    "short_name",
]
