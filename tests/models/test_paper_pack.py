"""The `paper` pack: `reenact models import paper`, loading, and the CLI end to end.

The reference files (``shared/reference/paper``) are the authors' model classes with
synthetic weights (not faces): these tests check the plumbing, the refusals and that the
pipeline and image tools run with the pack; the numbers are checked module by module in
test_stylegan1.py and test_paper_encoders.py.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from reenact.cli import main
from reenact.errors import InputError, ModelError, UnsafeModelFileError, WeightsMissingError
from reenact.models import stylegan1
from reenact.packs import PackSettings, check_pack_serves, load_pack
from reenact.packs.paper_import import find_paper_files, import_paper
from testing.media import cut_clip

PRETRAINED = ("vggface2.h5", "stylegan_G_256x256_synthesis.index", "stylegan_G_256x256_synthesis.data-00000-of-00001")
CHECKPOINT = ("AttrEncoder.h5", "LatentMappingNetwork.h5")


@pytest.fixture(scope="module")
def paper(paper_reference: Path) -> Path:
    return paper_reference


def _copy(paper: Path, dest: Path, names: tuple[str, ...]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(paper / name, dest / name)
    return dest


@pytest.fixture
def one_folder(paper: Path, tmp_path: Path) -> Path:
    return _copy(paper, tmp_path / "all", PRETRAINED + CHECKPOINT)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REENACT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _frames(path: Path) -> int:
    with av.open(str(path)) as f:
        return sum(1 for _ in f.decode(video=0))


# --- import, load -------------------------------------------------------------------------


def test_import_one_folder_loads_a_runnable_pack(one_folder: Path, home: Path) -> None:
    stored = import_paper([one_folder])
    assert sorted(stored) == ["attribute_encoder", "generator", "identity", "mapper"]
    assert all(p.is_file() and p.is_relative_to(home) for p in stored.values())
    pack = load_pack(PackSettings(pack="paper"))
    G = pack.generator
    assert (G.img_resolution, G.num_ws, G.w_dim) == (256, 14, 512)
    assert pack.identity.name == "vggface2-paper" and pack.identity.dim == 512
    assert pack.recogniser is not None and pack.recogniser.name == "dlib-resnet"
    assert not pack.can_draw_identities
    with pytest.raises(WeightsMissingError, match=r"\.pkl"):
        pack.require_identity_drawing()
    # the pipeline's trained path: attribute features + identity code -> one w -> image
    crops = torch.rand(2, 3, 256, 256) * 2 - 1
    attr = pack.attribute_encoder(crops)
    code = pack.identity.embed_aligned(crops)
    assert attr.shape == (2, 2048) and code.shape == (2, 512)
    assert torch.allclose(code.norm(dim=1), torch.ones(2), atol=1e-5)
    w = pack.mapper.map(code, attr)
    img = G.synthesis(w[:, None].repeat(1, G.num_ws, 1), noise_mode="const")
    assert img.shape == (2, 3, 256, 256) and torch.isfinite(img).all()
    # the converted generator is the authors' network: same image as reading their checkpoint
    direct = stylegan1.load_stylegan1_synthesis(one_folder / "stylegan_G_256x256_synthesis", 256)
    ws = torch.randn(1, 14, 512)
    assert torch.equal(direct(ws), G.synthesis(ws))


def test_import_authors_layout_through_the_cli_then_grid_and_interpolate(
    paper: Path, tmp_path: Path, home: Path, fixtures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pretrained = _copy(paper, tmp_path / "pretrained_models", PRETRAINED)
    checkpoint = _copy(paper, tmp_path / "checkpoint", CHECKPOINT)
    assert main(["models", "import", "paper", str(pretrained), str(checkpoint)]) == 0
    assert "imported paper/mapper" in capsys.readouterr().out
    assert main(["models", "verify", "paper"]) == 0

    # the authors' infer_on_dirs and interpolate, with this pack
    ids, attrs = tmp_path / "ids", tmp_path / "attrs"
    ids.mkdir(), attrs.mkdir()
    photo = fixtures / "images" / "deepface" / "img1.jpg"
    shutil.copyfile(photo, ids / "a.jpg")
    for k, name in enumerate(("img2.jpg", "img3.jpg")):
        shutil.copyfile(fixtures / "images" / "deepface" / name, attrs / f"{k}.jpg")
    assert main(["grid", "--id-dir", str(ids), "--attr-dir", str(attrs), "-o", str(tmp_path / "grid.png"),
                 "--pack", "paper", "--device", "cpu"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert main(["interpolate", "--identity", str(photo), "--attr", str(attrs / "0.jpg"), "--attr",
                 str(attrs / "1.jpg"), "--steps", "2", "-o", str(tmp_path / "i.gif"), "--pack", "paper",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "i.gif").stat().st_size > 0


def test_reenact_video_with_the_paper_pack_through_the_cli(one_folder: Path, tmp_path: Path, home: Path,
                                                          fixtures: Path) -> None:
    assert main(["models", "--quiet", "import", "paper", str(one_folder)]) == 0
    clip = cut_clip(fixtures / "videos" / "liveportrait_d0.mp4", tmp_path / "clip.mp4", 3)
    photo = fixtures / "images" / "deepface" / "img1.jpg"
    out = tmp_path / "out.mp4"
    assert main([str(clip), "--identity", str(photo), "--pack", "paper", "-o", str(out), "--device", "cpu",
                 "--quiet"]) == 0
    assert _frames(out) == 3
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["models"]["pack"] == "paper"
    assert report["models"]["generator"].startswith("StyleGAN v1 256px, 14 ws")
    assert report["models"]["identity"] == "vggface2-paper"
    assert report["counts"]["frames"] == 3


# --- deidentify needs a mapping network ------------------------------------------------------


def test_deidentify_without_mapping_refuses_before_work(one_folder: Path, home: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match=r"karras2019stylegan-ffhq-\*\.pkl"):
        check_pack_serves("paper", draws_identities=True)  # nothing imported yet: refused from the registry alone
    check_pack_serves("paper", draws_identities=False)
    check_pack_serves("tiny", draws_identities=True)
    import_paper([one_folder])
    with pytest.raises(WeightsMissingError, match="mapping network"):
        check_pack_serves("paper", draws_identities=True)


def _v1_pickle(path: Path, monkeypatch: pytest.MonkeyPatch, extra_global: bool = False) -> Path:
    """A StyleGAN v1 network pickle in the documented dnnlib layout (mapping network only used)."""
    import sys
    import types

    class Network:
        def __init__(self, state: dict) -> None:
            self._state = state

        def __getstate__(self) -> dict:
            return self._state

    class EasyDict(dict):
        pass

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    for name, attrs in (("dnnlib", {}), ("dnnlib.tflib", {}), ("dnnlib.tflib.network", {"Network": Network}),
                        ("dnnlib.util", {"EasyDict": EasyDict})):
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, name, mod)
    rng = np.random.default_rng(1)

    def state(name: str, variables: dict, components: dict) -> dict:
        return {"version": 3, "name": name, "static_kwargs": {}, "components": EasyDict(components),
                "build_module_src": "", "build_func_name": "training.networks_stylegan." + name,
                "variables": list(variables.items())}

    mvars = {}
    for k in range(8):
        mvars[f"Dense{k}/weight"] = rng.standard_normal([512, 512]).astype(np.float32)
        mvars[f"Dense{k}/bias"] = np.zeros([512], np.float32)
    mapping = Network(state("G_mapping", mvars, {}))
    syn = Network(state("G_synthesis", {}, {}))
    payload: dict = {"dlatent_avg": np.zeros([512], np.float32)}
    if extra_global:
        payload["evil"] = np.float32(0.0)  # replaced below by a global outside the allow-list
    Gs = Network(state("G_style", payload, {"G_mapping": mapping, "G_synthesis": syn}))
    data = pickle.dumps((Gs, Gs, Gs), protocol=3)
    if extra_global:
        data = pickle.dumps((Gs, Gs, Gs, print), protocol=3)  # `builtins.print`: not allowed
    path.write_bytes(data)
    return path


def test_mapping_from_the_official_pickle_enables_deidentify(
    one_folder: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _v1_pickle(one_folder / "karras2019stylegan-ffhq-1024x1024.pkl", monkeypatch)
    stored = import_paper([one_folder])
    assert "mapping" in stored
    check_pack_serves("paper", draws_identities=True)
    pack = load_pack(PackSettings(pack="paper"))
    assert pack.can_draw_identities
    img = pack.generator(torch.randn(1, 512))
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()


# --- bad input -------------------------------------------------------------------------------


def _no_cache(home: Path) -> None:
    assert not list((home / "models").glob("*.safetensors")) if (home / "models").exists() else True


@pytest.mark.parametrize("missing", ["vggface2.h5", "AttrEncoder.h5", "LatentMappingNetwork.h5",
                                     "stylegan_G_256x256_synthesis.index"])
def test_missing_file_is_named_with_its_source(one_folder: Path, home: Path, missing: str) -> None:
    (one_folder / missing).unlink()
    source = "1OgLvUhd9FX9" if "stylegan" in missing else "1I_JyR7LH" if "vgg" in missing else "1lVizq4hCq"
    with pytest.raises(InputError, match=f"{missing.split('.')[0]}.*{source}"):
        import_paper([one_folder])
    _no_cache(home)


def test_missing_file_through_the_cli_exits_with_a_message(
    one_folder: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (one_folder / "AttrEncoder.h5").unlink()
    assert main(["models", "import", "paper", str(one_folder)]) == 2
    assert "AttrEncoder.h5" in capsys.readouterr().err


def test_truncated_data_shard_is_refused(one_folder: Path, home: Path) -> None:
    shard = one_folder / "stylegan_G_256x256_synthesis.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ModelError, match="data-00000-of-00001"):
        import_paper([one_folder])
    _no_cache(home)


def test_index_that_is_not_a_checkpoint_table_is_refused(one_folder: Path, home: Path) -> None:
    (one_folder / "stylegan_G_256x256_synthesis.index").write_bytes(b"not a table" * 100)
    with pytest.raises(ModelError, match="index"):
        import_paper([one_folder])


def test_hdf5_of_another_network_is_refused(one_folder: Path, home: Path) -> None:
    shutil.copyfile(one_folder / "AttrEncoder.h5", one_folder / "vggface2.h5")
    with pytest.raises(ModelError, match="vggface2.h5.*(VGGFace2|another network)"):
        import_paper([one_folder])


def test_checkpoint_at_another_resolution_is_refused(paper: Path, one_folder: Path, home: Path) -> None:
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copyfile(paper / f"stylegan_G_32x32_synthesis{suffix}", one_folder / f"stylegan_G_256x256_synthesis{suffix}")
    with pytest.raises(ModelError, match="32x32.*256x256"):
        import_paper([one_folder])
    _no_cache(home)


def test_only_another_resolution_present_is_named(paper: Path, one_folder: Path, home: Path) -> None:
    for suffix in (".index", ".data-00000-of-00001"):
        (one_folder / f"stylegan_G_256x256_synthesis{suffix}").rename(one_folder / f"stylegan_G_32x32_synthesis{suffix}")
    with pytest.raises(InputError, match="stylegan_G_32x32_synthesis.*256x256"):
        find_paper_files([one_folder])


def test_pickle_naming_a_global_outside_the_allow_list_is_refused(
    one_folder: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _v1_pickle(one_folder / "karras2019stylegan-ffhq-1024x1024.pkl", monkeypatch, extra_global=True)
    with pytest.raises(UnsafeModelFileError, match="builtins.*print"):
        import_paper([one_folder])
    assert not (home / "models" / "paper-stylegan1-mapping.safetensors").exists()


def test_links_out_of_the_folder_are_not_followed(paper: Path, one_folder: Path, home: Path) -> None:
    (one_folder / "vggface2.h5").unlink()
    (one_folder / "vggface2.h5").symlink_to(paper / "vggface2.h5")
    with pytest.raises(InputError, match="outside"):
        import_paper([one_folder])
    _no_cache(home)
