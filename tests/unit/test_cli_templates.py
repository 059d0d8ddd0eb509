"""-o jsonpath / custom-columns and --sort-by: kubectl's forms on our JSON."""

from __future__ import annotations

from typing import Any

import pytest

from cli.templates import (
    TemplateError,
    column_rows,
    parse_columns,
    render_jsonpath,
    sort_key,
)

LIST = {
    "kind": "ProjectList",
    "items": [
        {"metadata": {"name": "b", "generation": 10},
         "status": {"phase": "Running", "conditions": [{"type": "Phase", "status": "True"}]}},
        {"metadata": {"name": "a", "generation": 9}, "status": {}},
    ],
}


def test_jsonpath_fields_ranges_literals_and_filters() -> None:
    assert render_jsonpath("{.items[*].metadata.name}", LIST) == "b a"
    assert render_jsonpath(
        '{range .items[*]}{.metadata.name}{"\\t"}{.status.phase}{"\\n"}{end}', LIST
    ) == "b\tRunning\na\t\n"
    assert render_jsonpath(
        'phase={.items[0].status.conditions[?(@.type=="Phase")].status}', LIST
    ) == "phase=True"
    # Non-strings print as JSON.
    assert render_jsonpath("{.items[0].status.conditions[0]}", LIST) == (
        '{"type":"Phase","status":"True"}'
    )


@pytest.mark.parametrize("bad", ["{.items[", "{range .items[*]}{.a}", "{.a}{end}", "{.a"])
def test_bad_templates_are_errors(bad: str) -> None:
    with pytest.raises(TemplateError):
        render_jsonpath(bad, LIST)


def test_custom_columns() -> None:
    cols = parse_columns("NAME:.metadata.name,PHASE:.status.phase")
    assert column_rows(cols, LIST["items"]) == [["b", "Running"], ["a", "<none>"]]
    with pytest.raises(TemplateError):
        parse_columns("NAME")


def test_sort_by_numbers_as_numbers_and_missing_last() -> None:
    items: list[Any] = [*LIST["items"], {"metadata": {"name": "c"}}]
    by_gen = sorted(items, key=sort_key(".metadata.generation"))
    assert [i["metadata"]["name"] for i in by_gen] == ["a", "b", "c"]  # 9 < 10, then none
    by_name = sorted(items, key=sort_key("{.metadata.name}"))
    assert [i["metadata"]["name"] for i in by_name] == ["a", "b", "c"]
