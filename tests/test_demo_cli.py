"""Fast checks of nnUNetv2_asyco_demo (the full demo takes minutes and is not run here)."""
import os

from conftest import run_cli


def test_demo_help():
    proc = run_cli(["nnUNetv2_asyco_demo", "--help"], timeout=60)
    assert "--output" in proc.stdout and "--use-env" in proc.stdout


def test_demo_refuses_foreign_output_folder(tmp_path):
    foreign = tmp_path / "my_data"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    proc = run_cli(["nnUNetv2_asyco_demo", "--output", foreign], check=False, timeout=60)
    assert proc.returncode != 0
    assert "not a folder created by nnUNetv2_asyco_demo" in proc.stderr
    assert "refusing" in proc.stderr
    assert sorted(os.listdir(foreign)) == ["important.txt"]
    assert (foreign / "important.txt").read_text() == "keep me"


def test_demo_refuses_existing_file(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    proc = run_cli(["nnUNetv2_asyco_demo", "--output", target], check=False, timeout=60)
    assert proc.returncode != 0 and "not a folder" in proc.stderr
    assert target.read_text() == "x"
