"""The golden set: results recorded before a refactor must come out the same after it (1e-9 relative).

Cases are in ``tests/golden/cases.py``; ``python -m tests.golden.record`` records them (only when a change of
results is intended). The language-model-scale cases take about a minute each and are marked slow
(``RMSIM_SLOW=1``); ``python -m tests.golden.record --compare`` runs every case.
"""

from __future__ import annotations

import pytest

from tests.golden.cases import CASES
from tests.golden.record import RUNS, differences, run_case

SLOW = {name for name, overrides in CASES.items() if "env=large" in overrides}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES], ids=str)
def test_golden_run_unchanged(name, tmp_path):
    run_case(CASES[name], tmp_path)
    diff = differences(RUNS / name, tmp_path)
    assert not diff, f"{name} changed:\n" + "\n".join(diff)


def test_differences_detects_a_changed_metric(tmp_path):
    golden = RUNS / "readme_default"
    (tmp_path / "metrics.json").write_text((golden / "metrics.json").read_text().replace('"seed": 0', '"seed": 1'))
    assert differences(golden, tmp_path) == ["metrics.json: seed = 1, golden 0"]
