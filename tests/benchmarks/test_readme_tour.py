"""The README tour script reads the README's own commands, and knows every one of them."""

from __future__ import annotations

import pytest

from tests.benchmarks.scripts import BENCHMARKS, load_benchmark

tour = load_benchmark("readme_tour")


def test_every_command_of_the_readme_tour_is_a_known_step():
    commands = tour.tour_commands((BENCHMARKS.parent / "README.md").read_text())
    steps = [tour.kind(c) for c in commands]
    assert steps[:2] == ["demo", "second run"] and {"compare", "compare two", "serve", "query"} <= set(steps)
    assert all(step in tour.STEPS for step in steps)


def test_continuations_are_joined_and_comments_dropped():
    readme = (
        "# x\n\n## A five-minute tour\n\ntext\n\n```bash\nmake demo   # trains\n"
        "curl -s localhost:8000/recommend \\\n     -d '{\"items\": [1]}'\n```\n\n```bash\nls\n```\n"
    )
    assert tour.tour_commands(readme) == [
        "make demo",
        "curl -s localhost:8000/recommend -d '{\"items\": [1]}'",
    ]


def test_an_unknown_tour_command_fails_the_script():
    with pytest.raises(SystemExit, match="does not know the command 'rm -rf outputs'"):
        tour.kind("rm -rf outputs")
    assert tour.kind(".venv/bin/shopformer-compare RUN_A RUN_B") == "compare two"
    assert tour.kind(".venv/bin/shopformer-compare") == "compare"


def test_library_noise_counts_warnings_after_the_install_only():
    out = (
        "pip install -e .\nWARNING: Location 'file:///opt/x' is ignored\n"
        ".venv/bin/shopformer-data check_batches=false\nitems 1,000\n"
        "UserWarning: something deprecated\n💡 Tip: try litlogger\nepoch 0 | loss 3.2\n"
    )
    assert tour.library_noise(out) == ["UserWarning: something deprecated", "💡 Tip: try litlogger"]
