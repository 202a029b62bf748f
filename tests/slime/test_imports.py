"""The `slime` import layer: slime names resolve to the runtime's own module objects, and step aside for a real slime."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from rollout_runtime import slime_imports
from tests.conftest import REPO


@pytest.fixture
def layer():
    assert slime_imports.install()
    yield
    slime_imports.uninstall()


def test_slime_names_are_the_runtime_modules(layer):
    for slime_name, runtime_name in slime_imports.MODULES.items():
        assert importlib.import_module(slime_name) is importlib.import_module(runtime_name), slime_name
    from slime.rollout.filter_hub.dynamic_sampling_filters import check_reward_nonzero_std
    from slime.rollout.rm_hub.math_dapo_utils import compute_score
    from slime.utils.types import Sample

    import rollout_runtime.types
    from rollout_runtime.filter_hub import dynamic_sampling_filters
    from rollout_runtime.rm_hub import math_dapo_utils

    assert Sample is rollout_runtime.types.Sample and isinstance(Sample(), rollout_runtime.types.Sample)
    assert check_reward_nonzero_std is dynamic_sampling_filters.check_reward_nonzero_std
    assert compute_score is math_dapo_utils.compute_score
    # the runtime modules keep their own identity (spec, name) after being aliased
    assert rollout_runtime.types.__spec__.name == "rollout_runtime.types"
    assert rollout_runtime.types.__name__ == "rollout_runtime.types"
    import slime.utils

    assert slime.utils.types is rollout_runtime.types


def test_unknown_slime_module_names_what_is_provided(layer):
    with pytest.raises(ModuleNotFoundError, match=r"slime\.ray.*provides the rollout modules.*slime\.utils\.types"):
        importlib.import_module("slime.ray.rollout")
    with pytest.raises(ModuleNotFoundError, match="slime.rollout.rm_hub.ifbench"):
        importlib.import_module("slime.rollout.rm_hub.ifbench")


def test_load_function_installs_the_layer(tmp_path, monkeypatch):
    slime_imports.uninstall()
    (tmp_path / "my_slime_plugin.py").write_text(textwrap.dedent("""
        from slime.utils.types import Sample

        def make():
            return Sample(prompt="hi")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from rollout_runtime.misc import load_function
    from rollout_runtime.types import Sample

    try:
        assert isinstance(load_function("my_slime_plugin.make")(), Sample)
    finally:
        slime_imports.uninstall()
        sys.modules.pop("my_slime_plugin", None)


def test_a_real_slime_is_not_shadowed(tmp_path):
    pkg = tmp_path / "slime" / "utils"
    pkg.mkdir(parents=True)
    (tmp_path / "slime" / "__init__.py").write_text("REAL = True\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "types.py").write_text("class Sample:\n    real = True\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from rollout_runtime import slime_imports
        assert slime_imports.install()
        import slime
        from slime.utils.types import Sample
        assert slime.REAL and Sample.real, "the real slime must win"
        import rollout_runtime.types
        assert Sample is not rollout_runtime.types.Sample
        # and once a real slime is imported, installing again reports it steps aside
        slime_imports.uninstall()
        assert not slime_imports.install()
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
