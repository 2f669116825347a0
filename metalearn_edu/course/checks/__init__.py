"""Graded checks for the course notebooks, one module per notebook.

Each check compares a student's function with the library's reference implementation on seeded
random inputs, checks structure (shapes, dtypes, second order keeps ``create_graph``, first order
detaches) and, on failure, raises :class:`metalearn_edu.course.feedback.CheckFailed` saying what was
expected, what came back and a hint.

    00_start_here            -> checks.start
    01_maml_objective        -> checks.objective
    02_maml_sinusoid         -> checks.sinusoid
    03_first_order           -> checks.first_order
    04_policy_gradients      -> checks.policy_gradients
    05_rl_meta_gradients     -> checks.rl_meta_gradients
    06_ppo_maml              -> checks.ppo_maml
    07_locomotion            -> checks.locomotion
    08_limits                -> checks.limits
"""
