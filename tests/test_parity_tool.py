"""The replay command itself: output format, exit status, skipped and failing stages."""
import subprocess
import sys

import numpy as np

from conftest import GOLDEN, REPO


def run_parity(ckpt, *files):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "parity.py"), "--checkpoint", str(ckpt),
                           *map(str, files)], capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout


def test_passing_files_exit_zero(fake_ckpt):
    code, out = run_parity(fake_ckpt, *sorted(GOLDEN.glob("b_*.npz")))
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "parity: 12 passed, 0 failed, 0 skipped"
    assert "max|err|" in out or "mismatches" in out


def test_a_wrong_golden_fails(fake_ckpt, tmp_path):
    data = dict(np.load(GOLDEN / "b_text_en.npz"))
    data["token_ids"] = data["token_ids"].copy()
    data["token_ids"][3] += 1
    bad = tmp_path / "renamed_case.npz"  # stage found from the fields, not the name
    np.savez(bad, **data)
    code, out = run_parity(fake_ckpt, bad)
    assert code == 1
    assert "FAIL" in out and "token_ids" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("parity: ") and " 0 failed" not in last


def test_unknown_file_is_skipped_not_passed(fake_ckpt, tmp_path):
    odd = tmp_path / "x.npz"
    np.savez(odd, something=np.zeros(3))
    code, out = run_parity(fake_ckpt, odd)
    assert code == 0
    assert out.strip().splitlines()[-1] == "parity: 0 passed, 0 failed, 1 skipped"
