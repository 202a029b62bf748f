"""SGLang-protocol engines for development, tests and benchmarks: stand-ins for real SGLang 0.5.23.

* :mod:`.sim`: the simulated engine (no model) and a router-style cluster front; CLI
  ``rollout-runtime sim-engine``.
* :mod:`.dev`: a real transformers causal LM on CPU (torch imported lazily); CLI
  ``rollout-runtime dev-engine``.
* :mod:`.protocol`: the shared aiohttp server (``EngineServer``) over a :class:`.backend.Backend`,
  with its routes in ``routes_*`` and its state in :mod:`.core`.

Import from the submodules (``from rollout_runtime.engines.sim import SimEngine``): importing this
package imports nothing else, so it stays cheap.
"""
