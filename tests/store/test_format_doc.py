"""docs/store-format.md holds exactly the tables generated from store/schema.py."""

from pathlib import Path

from pathsegdiff.store.format_doc import format_markdown

DOC = Path(__file__).parents[2] / "docs" / "store-format.md"


def test_format_doc_matches_schema():
    assert format_markdown() in DOC.read_text(), "run: python -m pathsegdiff.store.format_doc and paste it"
