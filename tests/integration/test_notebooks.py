"""Every notebook under ``notebooks/`` runs top to bottom, without a cell error.

The kernel is isolated from the user's real data: it inherits an environment that points the
engine at the test server, on an index and key prefix of its own, which is dropped afterwards.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest
import redis

pytestmark = pytest.mark.integration

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))

# Appended to the in-memory copy only: which interpreter did the kernel really run?
_PROBE = "import sys\nprint('KERNEL_EXECUTABLE=' + sys.executable)"

# What a notebook must have printed or drawn, beyond running without an error.
_EXPECTED_TEXT: dict[str, list[re.Pattern[str]]] = {
    "01_quickstart.ipynb": [
        re.compile(r"^uncached .*p50 = \d+\.\d+ ms\s+p99 = \d+\.\d+ ms$", re.MULTILINE),
        re.compile(r"^cached .*p50 = \d+\.\d+ ms\s+p99 = \d+\.\d+ ms$", re.MULTILINE),
        re.compile(r"^isolation holds", re.MULTILINE),
        re.compile(r"^deleted [1-9]\d* memories of alice$", re.MULTILINE),
    ],
    "02_recall_and_decay.ipynb": [
        re.compile(r"^keyword finds LX1846 by its code; hybrid ranks it first$", re.MULTILINE),
        re.compile(r"^vector finds the phobia by meaning; keyword finds nothing$", re.MULTILINE),
        re.compile(r"^hybrid finds both: Ines by name \(keyword\) and the diet by meaning",
                   re.MULTILINE),
        re.compile(r"^recalled 3 times: access_count 0 -> 3, "
                   r"last_accessed \d{4}-\d\d-\d\d -> \d{4}-\d\d-\d\d$", re.MULTILINE),
        re.compile(r"^with decay: recalled house key \d\.\d+ > not recalled shed key \d\.\d+$",
                   re.MULTILINE),
        re.compile(r"^deleted 13 memories of nb_user$", re.MULTILINE),
    ],
    "03_lifecycle.ipynb": [
        re.compile(r"^nb_user: 49 memories from 2024-01-06 to 2024-06-22 \(13 sessions, 4 facts\); "
                   r"maintenance at 2024-08-21$", re.MULTILINE),
        re.compile(r"^dry run: 1 to expire, 42 to consolidate into 13 summaries, 0 to prune$",
                   re.MULTILINE),
        re.compile(r"^the border collie turn is found through its summary$", re.MULTILINE),
        re.compile(r"^the pinned fact survived: ", re.MULTILINE),
        re.compile(r"^undid [0-9a-f]{32}: 4 memories back exactly as they were, summary deleted$",
                   re.MULTILINE),
        re.compile(r"^budget 10: 22 memories -> 10 \(4 consolidated into 1, 9 pruned\)$",
                   re.MULTILINE),
        re.compile(r"^deleted 10 memories of nb_user$", re.MULTILINE),
    ],
    "04_privacy_and_backups.ipynb": [
        re.compile(r"^stored text is ciphertext; every mode finds it$", re.MULTILINE),
        re.compile(r"^alice's memory: \d+ digests; bob's: \d+; shared: 0 ", re.MULTILINE),
        re.compile(r"^tampered value refused: DecryptionError$", re.MULTILINE),
        re.compile(r"^snapshot \S+: 2 users, 3 memories, \d+ bytes, encrypted=True$",
                   re.MULTILINE),
        re.compile(r"^restored: \['bob'\]$", re.MULTILINE),
        re.compile(r"^not restored: alice: .*cannot be decrypted$", re.MULTILINE),
        re.compile(r"^alice now has 0 memories; bob has 1$", re.MULTILINE),
        re.compile(r"^deleted 1 memory of bob$", re.MULTILINE),
    ],
}
_EXPECTED_IMAGES = {
    "01_quickstart.ipynb": 1, "02_recall_and_decay.ipynb": 2, "03_lifecycle.ipynb": 3,
    "04_privacy_and_backups.ipynb": 0,
}
# Notebooks that must have written to the engine (so the test index must exist after them).
_USES_ENGINE = {"01_quickstart.ipynb", "02_recall_and_decay.ipynb", "03_lifecycle.ipynb",
                "04_privacy_and_backups.ipynb"}


def _stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "stream" and out.get("name") == "stdout"
    )


def _png_outputs(nb: nbformat.NotebookNode) -> list[Any]:
    return [
        out.data["image/png"]
        for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type in ("display_data", "execute_result") and "image/png" in out.data
    ]


def test_notebooks_exist() -> None:
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOKS_DIR}"


def test_every_notebook_has_expectations() -> None:
    """A new notebook must say what it prints and draws (0 images is an answer), or its output
    would go unchecked; and no expectation may name a notebook that is gone."""
    names = {p.name for p in NOTEBOOKS}
    for required in (set(_EXPECTED_TEXT), set(_EXPECTED_IMAGES)):
        assert names <= required, f"no expectations for {sorted(names - required)}"
    for named in (set(_EXPECTED_TEXT), set(_EXPECTED_IMAGES), _USES_ENGINE):
        assert named <= names, f"expectations for missing notebooks {sorted(named - names)}"


def test_committed_notebooks_have_no_outputs() -> None:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3", path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, path.name
                assert cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(
    path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"nb{uuid.uuid4().hex[:10]}"
    for var in [v for v in os.environ if v.startswith("MEMORY_ENGINE_")]:
        monkeypatch.delenv(var)  # nothing of the user's own configuration leaks in
    monkeypatch.setenv("MEMORY_ENGINE_REDIS_URL", redis_url)
    monkeypatch.setenv("MEMORY_ENGINE_INDEX", name)
    monkeypatch.setenv("MEMORY_ENGINE_KEY_PREFIX", name)
    monkeypatch.setenv("MEMORY_ENGINE_HOME", str(tmp_path / "home"))  # never the user's home
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
        text = _stream_text(nb)
        assert f"KERNEL_EXECUTABLE={sys.executable}\n" in text, (
            f"the kernel did not run {sys.executable}: {text[-500:]}"
        )
        for pattern in _EXPECTED_TEXT.get(path.name, []):
            assert pattern.search(text), f"{path.name} printed nothing matching {pattern.pattern}"
        images = _png_outputs(nb)
        assert len(images) >= _EXPECTED_IMAGES.get(path.name, 0), (
            f"{path.name} drew {len(images)} image/png outputs"
        )
        assert all(isinstance(img, str) and len(img) > 1000 for img in images)
        # The kernel wrote to this test's index (so it was isolated) and cleaned up after itself.
        if path.name in _USES_ENGINE or name.encode() in redis_client.execute_command("FT._LIST"):
            info = redis_client.execute_command("FT.INFO", name)
            num_docs = int(info[info.index(b"num_docs") + 1])
            assert num_docs == 0, f"{path.name} left {num_docs} memories behind"
        # Nothing of the notebook's users is left either: no memory, recall or session key.
        left = sorted(redis_client.scan_iter(match=f"{name}:*", count=1000))
        assert left in ([], [f"{name}:meta".encode()]), f"{path.name} left {left[:5]} behind"
    finally:
        try:
            redis_client.execute_command("FT.DROPINDEX", name, "DD")
        except redis.ResponseError as exc:
            if "unknown index" not in str(exc).lower() and "no such index" not in str(exc).lower():
                raise
        redis_client.delete(f"{name}:meta")
