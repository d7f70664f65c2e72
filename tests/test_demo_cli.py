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


def test_demo_picture_shows_image_reference_and_every_method(tmp_path):
    import numpy as np
    import SimpleITK as sitk
    from PIL import Image
    from nnunetv2_asyco.demo.figure import write_comparison

    def write(name, array):
        path = str(tmp_path / name)
        sitk.WriteImage(sitk.GetImageFromArray(array[None]), path)
        return path

    rng = np.random.default_rng(0)
    images = [write(f"img{i}.nii.gz", rng.normal(size=(16, 16)).astype(np.float32)) for i in range(2)]
    labels = [write(f"ref{i}.nii.gz", rng.integers(0, 4, (16, 16)).astype(np.uint8)) for i in range(2)]
    predictions = {m: [write(f"{m}{i}.nii.gz", rng.integers(0, 4, (16, 16)).astype(np.uint8)) for i in range(2)]
                   for m in ("a", "b", "c")}
    png = write_comparison(str(tmp_path / "cases.png"), images, labels, predictions, num_classes=3)
    width, height = Image.open(png).size
    assert width > 2 * height  # five columns, two rows
    assert not any(f.endswith(".part.png") for f in os.listdir(tmp_path))
