"""slime-style plugins written the way slime users write them: they import `slime.*` only.

Loaded by dotted path by `rollout-runtime run` in tests/slime/test_slime_code_runs.py; none of them
imports rollout_runtime.
"""
