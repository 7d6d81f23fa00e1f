"""The committed protobuf code must be what scripts/gen_protos.py makes from proto/ today."""

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    gen = runpy.run_path(str(ROOT / "scripts" / "gen_protos.py"))
    fresh = gen["generate"](tmp_path)
    assert fresh, "the generator wrote nothing"
    stale = []
    for path in fresh:
        rel = path.relative_to(tmp_path)
        committed = ROOT / rel
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(rel))
    assert not stale, f"regenerate with `python scripts/gen_protos.py`: {stale}"


def test_no_generated_file_without_its_proto() -> None:
    protos = {p.relative_to(ROOT / "proto").with_suffix("") for p in (ROOT / "proto").rglob("*.proto")}
    for path in (ROOT / "choreo").rglob("*_pb2*.py"):
        stem = path.name.split("_pb2")[0]
        assert path.parent.relative_to(ROOT) / stem in protos, f"{path} has no proto source"
