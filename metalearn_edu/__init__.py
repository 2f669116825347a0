"""metalearn_edu: a small reference library for MAML, FOMAML, Reptile and PPO-MAML.

The library behind the metalearn-edu course. Modules have one job each:

- ``functional``: parameters as dicts, functional forward, inner-loop ``adapt``.
- ``tasks``: supervised task families (Finn et al. sinusoids, linear regression).
- ``maml``: MAML / FOMAML / Reptile meta-gradients, per-task loop and ``vmap`` batched.
- ``train`` / ``evaluate`` / ``bench``: the supervised meta-training loop, evaluation, speed benchmark.
- ``rl``, ``envs``: meta-reinforcement learning (policies, sampler, estimators, PPO-MAML) and meta-environments.
- ``course``: exercise generation, checks that teach, the autograder.
"""

__version__ = "0.1.0"
