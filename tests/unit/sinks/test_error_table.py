"""The README's error tables are generated from the code's tables: one source."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.sinks import error_table
from streams.sinks.data_manager.errors import RETRYABLE_REASONS
from streams.sinks.google_ads.errors import CODES

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_error_tables_are_up_to_date() -> None:
    text = README.read_text(encoding="utf-8")
    assert error_table.render(text) == text, (
        "README.md's error tables differ from the code's: run python -m streams.sinks.error_table"
    )


def test_every_code_and_its_doc_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for code, rule in CODES.items():
        assert f"| `{code}` |" in text
        assert rule.doc in text
    for reason, doc in RETRYABLE_REASONS.items():
        assert f"| `{reason}` |" in text
        assert doc in text


def test_a_stale_readme_is_rewritten_and_check_fails(tmp_path: Path) -> None:
    stale = README.read_text(encoding="utf-8").replace("| `INTERNAL_ERROR` |", "| `GONE` |")
    readme = tmp_path / "README.md"
    readme.write_text(stale, encoding="utf-8")
    assert error_table.main(["--readme", str(readme), "--check"]) == 1
    assert readme.read_text(encoding="utf-8") == stale, "--check changes nothing"
    assert error_table.main(["--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")
    assert error_table.main(["--readme", str(readme), "--check"]) == 0


def test_missing_markers_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="google-ads-errors"):
        error_table.render("# a README without the markers\n")
