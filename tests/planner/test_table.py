"""The corrected VRAM table: every row of the planning document, recomputed."""

from __future__ import annotations

from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import count_params
from deepfleet.planner.table import BLOG_TABLE, table_rows


def test_rows_cover_the_document_and_correct_it() -> None:
    rows = table_rows()
    assert [r.blog_gb for r in rows] == [b for _, _, b in BLOG_TABLE]
    for row, (name, nominal, blog) in zip(rows, BLOG_TABLE, strict=True):
        m = load_model_facts(name)
        assert row.params == count_params(m).total
        # The document's figure is params x 2 bytes x an overhead of 1.15-1.3.
        assert 2.2 < blog * 1e9 / (nominal * 1e9) < 2.7
        assert row.trace_kv_bytes == row.kv_bytes_per_token * 32_768
        assert all(s != "> 128" for s in row.smallest)
    r1 = rows[-1]
    assert r1.weight_format == "fp8" and r1.weight_bytes < r1.blog_gb * 1e9 / 2
    assert r1.bf16_bytes == 2 * r1.params


def test_more_traces_never_need_fewer_devices() -> None:
    for row in table_rows():
        for one, eight in zip(row.smallest, row.smallest_8, strict=True):
            assert int(one.split()[0]) <= int(eight.split()[0])
