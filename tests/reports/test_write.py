"""report.md renders: every table row has as many cells as its header (pipes in cells escaped)."""

from __future__ import annotations

import re

from medsr.reports.evaluate import evaluate


def _cells(line: str) -> int:
    """Cells of a Markdown table row, an escaped pipe (``\\|``) staying inside its cell."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def test_report_md_tables_render(tmp_path, corpus):
    evaluate([corpus("CT_small.dcm")], models=["lanczos"], out_dir=tmp_path, progress=False,
             figures=False)  # fmt: skip
    text = (tmp_path / "report.md").read_text()
    assert "## Fidelity to the input" in text
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            assert {_cells(row) for row in table} == {_cells(table[0])}, table
            table = []
    markdown = __import__("pytest").importorskip("markdown")
    html = markdown.markdown(text, extensions=["tables"])
    fidelity = html.split("Fidelity to the input")[1].split("</table>")[0]
    head = re.findall(r"<th[^>]*>(.*?)</th>", fidelity)
    assert head[:3] == ["model", "mean |D(SR) − LR|", "max |D(SR) − LR|"], head
    first_row = fidelity.split("<tbody>")[1].split("</tr>")[0]
    assert len(re.findall(r"<td", first_row)) == len(head)
