"""docs/QUICKSTART.md, followed command by command in a fresh directory.

The commands are parsed out of the document (``$ `` lines in console blocks),
so the page and this test cannot drift apart: every `meterline` command runs as
a real subprocess and must succeed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from pypdf import PdfReader

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "QUICKSTART.md"
SETUP = "mkdir try && cp examples/catalog.yaml examples/events.ndjson examples/late-events.ndjson try/ && cd try"


def commands() -> list[str]:
    text = DOC.read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, re.S)
    return [ln[2:].strip() for b in blocks for ln in b.splitlines() if ln.startswith("$ ")]


def test_quickstart_commands_in_a_fresh_directory(tmp_path: Path) -> None:
    cmds = commands()
    assert cmds[0] == SETUP, "the setup line changed: update this test"
    (tmp_path / "try").mkdir()
    for name in ("catalog.yaml", "events.ndjson", "late-events.ndjson"):
        shutil.copy(ROOT / "examples" / name, tmp_path / "try" / name)
    cwd = tmp_path / "try"
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    meterline = [sys.executable, "-m", "meterline"]
    outputs: dict[str, str] = {}
    ran = 0
    for cmd in cmds[1:]:
        words = shlex.split(cmd)
        if words[0] == "export":
            key, _, value = words[1].partition("=")
            env[key] = value
            continue
        assert words[0] == "meterline", f"unexpected command in QUICKSTART: {cmd}"
        proc = subprocess.run(
            [*meterline, *words[1:]], cwd=cwd, env=env, capture_output=True, timeout=300
        )
        assert proc.returncode == 0, f"{cmd}: {proc.stderr.decode()}"
        assert proc.stderr.decode().strip() == "", f"{cmd}: {proc.stderr.decode()}"
        outputs[cmd] = proc.stdout.decode()
        ran += 1
    assert ran >= 10
    # The five commands end in an issued invoice with what finance needs.
    shown = outputs["meterline invoice show INV-000001"]
    assert "due: 2024-02-16 (net 14)" in shown
    assert "period:   2024-01: 2024-01-01 to 2024-01-31 (Europe/Berlin)" in shown
    assert "tax 19%" in shown and "€0.50 per 1,000" in shown
    assert "2024-02  2024-03-01T02:00:00Z  open: the watermark is" in outputs["meterline status"]
    assert "issued DN-000001" in outputs["meterline rerate"]
    assert "tax: The tax on this note" in outputs["meterline invoice show DN-000001"]
    pdf = PdfReader(cwd / "INV-000001.pdf")
    page1 = pdf.pages[0].extract_text()
    assert "Example Metering GmbH" in page1 and "Due date" in page1
    # no store file anywhere but the working directory
    assert (cwd / "meterline.db").exists()
