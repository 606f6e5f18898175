"""The README's Core API snippet runs as written and gives the results its comments promise."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def core_api_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Core API") :]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "no python block under ## Core API"
    return match.group(1)


def test_core_api_snippet_runs_and_matches_its_comments():
    snippet = core_api_snippet()
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # The README's own code, run as a reader pastes it.
        exec(compile(snippet, f"{README}:Core API", "exec"), namespace)  # noqa: S102
    tj = namespace["tj"]
    # "QTensor: packed uint8 codes + per-group scale/zero point"; "float32, shape (256, 512)"
    assert isinstance(namespace["q"], tj.QTensor)
    assert namespace["q"].codes.dtype == np.uint8
    w_hat = namespace["w_hat"]
    assert w_hat.dtype == np.float32 and w_hat.shape == (256, 512)
    cosine, stored, fp32 = printed.getvalue().split()
    assert float(cosine) == float(tj.cosine_similarity(namespace["w"], w_hat))
    assert int(stored) == tj.storage_bytes(namespace["q"]) and int(fp32) == 256 * 512 * 4
    assert int(stored) < int(fp32)
    # "[0, 250, 500, 750, 1000]", "[8, 4] each", "[8]", "(16, 8, 3)"
    assert namespace["edges"].tolist() == [0, 250, 500, 750, 1000]
    assert namespace["scales"].shape == namespace["zps"].shape == (8, 4)
    m = namespace["m"]
    assert m.smoothness_score.shape == (8,)
    assert m.violations.shape == (16, 8, 3)
    # Constant ranges: perfectly smooth, no violation at any threshold.
    np.testing.assert_array_equal(np.asarray(m.smoothness_score), 1.0)
    assert not np.asarray(m.violations).any()


def test_snippet_comments_state_the_shapes_checked_here():
    """The test above checks what the comments say; a changed comment must change the test."""
    snippet = core_api_snippet()
    for comment in ("[0, 250, 500, 750, 1000]", "[8, 4] each", "# [8]", "(16, 8, 3)"):
        assert comment in snippet, comment
