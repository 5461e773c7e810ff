"""torch zip checkpoints read without unpickling (issue 18): the tensor table from a symbolic
evaluation of data.pkl, so a torch re-publication takes part in lineage, and a hostile pickle
is read as data and never run."""

from __future__ import annotations

import contextlib
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate.errors import FormatError
from gate.formats import torch_zip
from gate.lineage import models
from gate.lineage import relation as relate
from tests.formats.test_pickles import build, payloads
from tests.lineage.test_relation import RNG, layered, model

torch = pytest.importorskip("torch")


def _values(path: Path, t: torch_zip.TorchTensor) -> np.ndarray:
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": np.uint16}
    raw = path.read_bytes()[t.offset : t.offset + t.nbytes]
    return np.frombuffer(raw, dtypes[t.dtype]).reshape(t.shape)


def test_the_table_is_what_torch_load_returns(tmp_path: Path) -> None:
    base = torch.randn(6, 4)
    state = {
        "w": base,
        "half": torch.randn(3, 5).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "ids": torch.arange(7),
        "param": torch.nn.Parameter(torch.ones(3)),
        "row": base[2],  # a view sharing w's storage, at an offset
        "nested": {"deep": [torch.full((2,), 5.0)]},
        "cols": base[:, 1:],  # strided: not placed, said
        "scalar": torch.tensor(3.5),
    }
    torch.save(state, tmp_path / "m.pt")
    ckpt = torch_zip.read(str(tmp_path / "m.pt"))
    got = {t.name: t for t in ckpt.tensors}
    assert set(got) == {"w", "half", "bf16", "ids", "param", "row", "nested.deep.0", "scalar"}
    assert ckpt.problems == ("tensor cols: a strided view of its storage, not read",)
    loaded = torch.load(tmp_path / "m.pt", weights_only=True)
    for name, t in got.items():
        want = loaded
        for part in name.split("."):
            want = want[int(part)] if isinstance(want, list) else want[part]
        want = want.detach()
        view = want.view(torch.uint16) if want.dtype == torch.bfloat16 else want
        assert t.shape == tuple(want.shape) and np.array_equal(
            _values(tmp_path / "m.pt", t), view.numpy()
        )


def test_a_hostile_checkpoint_is_read_as_data_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for attack in ("os.system", "builtins.exec", "subprocess"):
        path = build("torch-zip", payloads(marker)[attack][0], tmp_path / f"{attack}.pt")
        ckpt = torch_zip.read(str(path))
        assert [t.name for t in ckpt.tensors] == ["weight"]
    assert not marker.exists()


def _zip(
    path: Path, pickled: bytes, storages: dict[str, bytes] | None = None, **kw: object
) -> Path:
    with zipfile.ZipFile(path, "w", compression=kw.get("compression", zipfile.ZIP_STORED)) as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", kw.get("byteorder", "little"))
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
    return path


def _tensor_pickle(offset: int, shape: tuple[int, ...], numel: int, key: str = "0") -> bytes:
    """data.pkl for {"t": tensor}, written opcode by opcode as torch.save writes it."""

    def tup(*items: bytes) -> bytes:
        return b"(" + b"".join(items) + b"t"

    def i(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    def s(text: str) -> bytes:
        return b"X" + struct.pack("<I", len(text)) + text.encode()

    stride = tuple(int(np.prod(shape[k + 1 :])) for k in range(len(shape)))
    pid = tup(s("storage"), b"ctorch\nFloatStorage\n", s(key), s("cpu"), i(numel)) + b"Q"
    args = tup(pid, i(offset), tup(*map(i, shape)), tup(*map(i, stride)), b"\x89",
               b"ccollections\nOrderedDict\n)R")  # fmt: skip
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    return b"\x80\x02}(" + s("t") + rebuild + b"u."


def test_ranges_are_checked_against_the_storage(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float32).tobytes()
    ok = torch_zip.read(str(_zip(tmp_path / "ok.pt", _tensor_pickle(4, (2, 4), 12), {"0": data})))
    (t,) = ok.tensors
    assert np.array_equal(_values(tmp_path / "ok.pt", t), np.arange(4, 12).reshape(2, 4))
    past = _zip(tmp_path / "past.pt", _tensor_pickle(8, (2, 4), 12), {"0": data})
    assert torch_zip.read(str(past)).problems == ("tensor t: runs past the end of storage 0",)
    missing = _zip(tmp_path / "missing.pt", _tensor_pickle(0, (2,), 12), {})
    assert "storage 0 is missing" in torch_zip.read(str(missing)).problems[0]
    squeezed = _zip(tmp_path / "packed.pt", _tensor_pickle(0, (2,), 12), {"0": data},
                    compression=zipfile.ZIP_DEFLATED)  # fmt: skip
    with pytest.raises(FormatError, match="compressed"):
        torch_zip.read(str(squeezed))


@pytest.mark.parametrize(
    ("pickled", "match"),
    [
        (b"\x80\x02}(", "not a pickle this reader follows"),  # truncated
        (b"\x80\x02\x82\x01.", "EXT1 is not one torch.save writes"),
        (b"\x80\x02t.", "not a pickle this reader follows"),  # TUPLE without MARK
        (b"\x80\x02\x86.", "not a pickle"),  # TUPLE2 on an empty stack
        (b"\x80\x02h\x05.", "not a pickle"),  # memo entry never stored
    ],
)
def test_malformed_pickles_are_format_errors(tmp_path: Path, pickled: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        torch_zip.read(str(_zip(tmp_path / "m.pt", pickled)))


def test_shared_references_cannot_blow_up_the_walk(tmp_path: Path) -> None:
    """A list holding one list twice, 40 levels deep: 2^40 paths from a 300-byte pickle."""
    body = b"]q\x00"  # an empty list, memo 0
    for k in range(1, 41):
        body += b"(h" + bytes([k - 1]) + b"h" + bytes([k - 1]) + b"lq" + bytes([k])
    with pytest.raises(FormatError, match="values to visit"):
        torch_zip.read(str(_zip(tmp_path / "m.pt", b"\x80\x02" + body + b".")))


def test_other_files_are_not_torch_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(FormatError, match="legacy"):
        torch_zip.read(str(tmp_path / "legacy.bin"))
    with zipfile.ZipFile(tmp_path / "other.pt", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(FormatError, match="no single"):
        torch_zip.read(str(tmp_path / "other.pt"))
    big = _zip(tmp_path / "big.pt", _tensor_pickle(0, (1,), 1), {"0": b"\0" * 4}, byteorder="big")
    with pytest.raises(FormatError, match="big-endian"):
        torch_zip.read(str(big))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_random_pickles_parse_or_fail_cleanly(tmp_path: Path, data: bytes) -> None:
    path = _zip(tmp_path / "r.pt", b"\x80\x02" + data)
    with contextlib.suppress(FormatError):
        torch_zip.read(str(path))


# ---------------------------------------------------------------------- lineage
def test_a_torch_republication_is_a_copy_and_a_fine_tune_a_fine_tune(tmp_path: Path) -> None:
    base = layered()
    ref = model(tmp_path / "base", base)
    (tmp_path / "pt").mkdir()
    torch.save(
        {k: torch.from_numpy(v) for k, v in base.items()}, tmp_path / "pt" / "pytorch_model.bin"
    )
    opened = models.open_model(str(tmp_path / "pt"), "pt")
    assert opened.problems == [] and set(opened.tensors) == set(base)
    (v,) = relate.compare(opened, [ref]).verdicts
    assert v.relation == "copy" and {e.test for e in v.tensors} == {"exact"}
    (tmp_path / "tuned").mkdir()
    tuned = {k: torch.from_numpy(v + 0.2 * RNG.standard_normal(v.shape).astype(np.float32))
             for k, v in base.items()}  # fmt: skip
    torch.save(tuned, tmp_path / "tuned" / "model.pt")
    (v,) = relate.compare(models.open_model(str(tmp_path / "tuned"), "t"), [ref]).verdicts
    assert v.relation == "finetune" and v.dependent
    (v,) = relate.compare(ref, [models.open_model(str(tmp_path / "pt"), "pt")]).verdicts
    assert v.relation == "copy"  # as a reference too


def test_a_folder_with_both_formats_reads_the_tensor_table_files(tmp_path: Path) -> None:
    """Hub repositories often hold model.safetensors and pytorch_model.bin, the same weights:
    only the first is read (else every tensor would be "stored twice"); a training run's
    optimizer.pt is never a model's weights."""
    base = layered()
    folder = tmp_path / "both"
    model(folder, base)
    torch.save({k: torch.from_numpy(v) for k, v in base.items()}, folder / "pytorch_model.bin")
    torch.save({"state": {0: {"exp_avg": torch.ones(3)}}}, folder / "optimizer.pt")
    files, _ = models.model_files(str(folder), "both")
    assert [Path(f).name for f in files] == ["model.safetensors"]
    (folder / "model.safetensors").unlink()
    files, _ = models.model_files(str(folder), "both")
    assert [Path(f).name for f in files] == ["pytorch_model.bin"]


@pytest.mark.slow  # transformers' import and save_pretrained: 5 s
def test_a_transformers_bin_checkpoint_lines_up_with_its_safetensors(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    torch.manual_seed(0)
    net = LlamaForCausalLM(cfg)
    net.save_pretrained(tmp_path / "st")
    net.save_pretrained(tmp_path / "bin", safe_serialization=False)
    opened = models.open_model(str(tmp_path / "bin"), "bin")
    assert opened.problems == [] and {t.role for t in opened.tensors.values()} >= {
        "blk.*.attn_q.weight", "token_embd.weight"}  # fmt: skip
    (v,) = relate.compare(opened, [models.open_model(str(tmp_path / "st"), "st")]).verdicts
    assert v.relation == "copy"


def test_pickled_bytes_inside_a_storage_are_only_bytes(tmp_path: Path) -> None:
    """A storage entry holding a pickle is tensor bytes to this reader: nothing reads it as a
    pickle, so nothing in it runs."""
    marker = tmp_path / "pwned"
    evil = pickle.dumps(payloads(marker)["os.system"][0], protocol=2)
    evil += b"\0" * (-len(evil) % 4)
    path = _zip(tmp_path / "m.pt", _tensor_pickle(0, (len(evil) // 4,), len(evil) // 4),
                {"0": evil})  # fmt: skip
    (t,) = torch_zip.read(str(path)).tensors
    assert t.nbytes == len(evil) and not marker.exists()
