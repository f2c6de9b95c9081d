"""The wheel holds both packages, the manifest, the sample data and the console script."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("napari_btunet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("btunet/__init__.py", "btunet/models/unet.py", "btunet/cli/commands.py",
                     "napari_btunet/__init__.py", "napari_btunet/napari.yaml",
                     "btunet/data/bbbc007/README.md"):
        assert required in names, required
    assert sum(n.startswith("btunet/data/bbbc007/images/") for n in names) == 14
    assert sum(n.startswith("btunet/data/bbbc007/masks/") for n in names) == 14
    assert "btunet/data/encoders/unet.safetensors" in names  # the built-in encoder
    # one manifest: the wheel's is the top-level napari.yaml, byte for byte
    assert zipfile.ZipFile(wheel).read("napari_btunet/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
    assert any(n.endswith("licenses/LICENSE") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "btunet = btunet.cli:main" in entry_points
    assert "napari-btunet = napari_btunet:napari.yaml" in entry_points


def test_top_level_manifest_is_a_link_to_the_package_copy():
    link = ROOT / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari_btunet" / "napari.yaml").resolve()


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "btunet"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("btunet ")
