"""timm's checkpoints through ``weights="timm:..."``: logits equal to timm's, the hub cache, files, errors.

timm is a test dependency (the ``dev`` extra). Its models are built with random weights (``pretrained=False``): no
download anywhere; a hub download is simulated by a Hugging Face cache folder written in ``tmp_path``.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import mobilezoo
from mobilezoo.layers import Conv2dSame
from mobilezoo.weights import WeightsAdaptedWarning, WeightsMismatchError, WeightsUnavailableError
from mobilezoo.weights.keymaps import families, timm_arch

timm = pytest.importorskip("timm")

ARCHS = [arch for fw in families().values() for arch in fw.timm]
# timm models of the families here without a counterpart (checked against timm's list below, so new ones show up)
NO_COUNTERPART = {
    "mobilenetv1_100h": "an extra 1x1 head conv",
    "mobilenetv2_110d": "a depth multiplier, fixed stem and head",
    "mobilenetv2_120d": "a depth multiplier, fixed stem and head",
    "mobilenetv3_large_150d": "a depth multiplier",
    "mobilenetv3_rw": "an early timm variant (other head, BN before the head)",
    "mobilenetv3_small_050": "its stem is not narrowed (16 at width 0.5)",
    "efficientnet_b0_gn": "GroupNorm",
    "efficientnet_b0_g8_gn": "GroupNorm, grouped convs",
    "efficientnet_b0_g16_evos": "EvoNorm, grouped convs",
    "mobilenetv4_conv_small_035": "a width multiplier",
    "mobilenetv4_conv_small_050": "a width multiplier",
    "mobilenetv4_conv_blur_medium": "blur-pool anti-aliased downsampling",
    "mobilenetv4_conv_aa_medium": "blur-pool anti-aliased downsampling",
    "mobilenetv4_conv_aa_large": "blur-pool anti-aliased downsampling",
    "mobilenetv4_hybrid_medium": "Mobile MQA attention (not built)",
    "mobilenetv4_hybrid_medium_075": "Mobile MQA attention (not built)",
    "mobilenetv4_hybrid_large": "Mobile MQA attention (not built)",
    "mobilenetv4_hybrid_large_075": "Mobile MQA attention (not built)",
}
# the timm model names of the families here (test_the_catalogue_is_timms)
PATTERNS = (
    "mobilenetv1_*",
    "mobilenetv2_*",
    "mobilenetv3_*",
    "tf_mobilenetv3_*",
    "mnasnet_*",
    "semnasnet_*",
    "ghostnet_*",
    "efficientnet_lite*",
    "tf_efficientnet_lite*",
    "efficientnet_b0*",
    "tf_efficientnet_b0*",
    "mobilenetv4_*",
)
RESOLUTIONS = (96, 97)  # an even side (TF pads its odd pixel bottom/right) and an odd one (symmetric)


def timm_model(name: str) -> torch.nn.Module:
    """timm's model with random weights, BatchNorm statistics of a random batch and a classifier scaled to give
    logits of standard deviation 1 (so that 1e-5 is a tolerance of float32 rounding, not of the logits' size)."""
    model = timm.create_model(name, pretrained=False)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the statistics of the calibration batch exactly
            torch.nn.init.normal_(m.weight, 1.0, 0.2)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
    batch = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.train()(batch)
        model.eval()
        head = model.get_classifier()
        std = model(batch).std()
        head.weight /= std
        head.bias /= std
    return model


def timm_file(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def hub_cache(root: Path, name: str, model: torch.nn.Module, revision: str = "0123abcd") -> Path:
    """What huggingface_hub leaves for ``timm/<name>``: refs/main naming a snapshot folder holding the file."""
    folder = root / f"models--timm--{name}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    return timm_file(model, snapshot / "model.safetensors")


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "hf"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded here
    return root


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert theirs.std() > 0.05, "degenerate logits"
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.name)
def test_every_timm_counterpart_gives_timms_logits(tmp_path: Path, arch) -> None:
    theirs = timm_model(arch.name)
    path = timm_file(theirs, tmp_path / "w.safetensors")
    ours = mobilezoo.create_model(arch.model, weights=f"timm:{arch.name}@{path}", **arch.arch).eval()
    # float64: what is left is the mapping, not float32 rounding (1e-6 of the logits in 15 blocks summed differently)
    ours, theirs = ours.double(), theirs.double()
    for size in RESOLUTIONS:
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        with torch.no_grad():
            _close(ours(x), theirs(x))


def test_the_catalogue_is_timms() -> None:
    """Every timm model of these families is listed (or has no counterpart), with timm's preprocessing per tag."""
    from timm.models._registry import get_pretrained_cfg

    listed = {a.name for a in ARCHS}
    for pattern in PATTERNS:
        for name in timm.list_models(pattern):
            assert name in listed or name in NO_COUNTERPART, name
    assert not listed & set(NO_COUNTERPART)
    for arch in ARCHS:
        published = {n.partition(".")[2] for n in timm.list_pretrained(f"{arch.name}.*")}
        assert {t.tag for t in arch.tags} == published, arch.name
        if arch.tags:  # timm's default tag first
            assert arch.tags[0].tag == get_pretrained_cfg(arch.name).tag, arch.name
        for t in arch.tags or (arch.default_cfg,):
            cfg = get_pretrained_cfg(f"{arch.name}.{t.tag}" if t.tag else arch.name)
            assert (t.input_size, t.crop_pct, t.interpolation) == (cfg.input_size[-1], cfg.crop_pct, cfg.interpolation)
            assert (t.mean, t.std, t.num_classes) == (tuple(cfg.mean), tuple(cfg.std), cfg.num_classes), arch.name


def test_hub_cache_default_tag_tf_padding_and_preprocessing(hf_cache: Path) -> None:
    theirs = timm_model("tf_mobilenetv3_small_minimal_100")
    hub_cache(hf_cache, "tf_mobilenetv3_small_minimal_100.in1k", theirs)
    ours = mobilezoo.create_model("mobilenet_v3_small_minimal", weights="timm:tf_mobilenetv3_small_minimal_100").eval()
    assert isinstance(ours.features[0][0], Conv2dSame) and ours.features[0][1].eps == 1e-3
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        _close(ours(x), theirs(x))
    pre = ours.preprocessing
    assert pre.source == "timm:tf_mobilenetv3_small_minimal_100.in1k"
    assert (pre.mean, pre.std, pre.interpolation, pre.crop_pct) == ((0.5,) * 3, (0.5,) * 3, "bilinear", 0.875)


def test_offline_or_unavailable_names_repository_and_cache(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        mobilezoo.create_model("mobilenet_v2", weights="timm:mobilenetv2_100")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, OSError)
    assert "https://huggingface.co/timm/mobilenetv2_100.ra_in1k/resolve/main/model.safetensors" in message
    assert str(hf_cache) in message and "HF_HUB_OFFLINE" in message and "timm:mobilenetv2_100.ra_in1k@<file>" in message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(WeightsUnavailableError, match=r"cannot download timm's mobilenetv2_100.ra_in1k weights "
                       r"\(OSError: \[Errno -3\] Temporary failure"):  # fmt: skip
        mobilezoo.create_model("mobilenet_v2", weights="timm:mobilenetv2_100")


def test_truncated_hub_file_is_named(hf_cache: Path) -> None:
    cached = hub_cache(hf_cache, "mobilenetv2_050.lamb_in1k", timm_model("mobilenetv2_050"))
    cached.write_bytes(cached.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"the cached timm mobilenetv2_050.lamb_in1k weights .* are unreadable .* "
                       r"delete .*models--timm--mobilenetv2_050.lamb_in1k' and run again") as info:  # fmt: skip
        mobilezoo.create_model("mobilenet_v2_x0_5", weights="timm:mobilenetv2_050")
    assert "\n" not in str(info.value)


def test_files_that_say_what_they_hold(tmp_path: Path) -> None:
    theirs = timm_model("mobilenetv2_050")
    x = torch.randn(1, 3, 64, 64)
    # timm's train.py: the state_dict beside its arch and args (an argparse.Namespace)
    ckpt = tmp_path / "model_best.pth.tar"
    args = argparse.Namespace(model="mobilenetv2_050", lr=0.1)
    torch.save({"arch": "mobilenetv2_050", "state_dict": theirs.state_dict(), "args": args, "epoch": 3}, ckpt)
    ours = mobilezoo.create_model("mobilenet_v2_x0_5", weights=f"timm:{ckpt}").eval()
    with torch.no_grad():
        _close(ours(x), theirs(x))
    assert ours.preprocessing.source == "timm:mobilenetv2_050.lamb_in1k"  # timm's default for the arch
    # a hub download copied elsewhere: config.json beside the weights
    folder = tmp_path / "download"
    folder.mkdir()
    path = timm_file(theirs, folder / "model.safetensors")
    cfg = {"crop_pct": 0.95, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3, "tag": "lamb_in1k"}
    config = {"architecture": "mobilenetv2_050", "num_classes": 1000, "pretrained_cfg": cfg}
    (folder / "config.json").write_text(json.dumps(config))
    ours = mobilezoo.create_model("mobilenet_v2_x0_5", weights=f"timm:{path}").eval()
    with torch.no_grad():
        _close(ours(x), theirs(x))
    assert ours.preprocessing.crop_pct == 0.95 and ours.preprocessing.mean == (0.5, 0.5, 0.5)
    # a bare state_dict says nothing: the error asks for the architecture
    bare = timm_file(theirs, tmp_path / "bare.safetensors")
    with pytest.raises(ValueError, match=r"cannot tell which timm model .*bare.safetensors' holds .* pass "
                       r"weights='timm:<timm model>@.*bare.safetensors'"):  # fmt: skip
        mobilezoo.create_model("mobilenet_v2_x0_5", weights=f"timm:{bare}")
    # and a plain path to it, without "timm:", says what it is
    with pytest.raises(WeightsMismatchError, match=r"matches no tensor of the model \(its keys are timm's: load it "
                       r"with weights='timm:<timm model>@.*bare.safetensors'\)"):  # fmt: skip
        mobilezoo.create_model("mobilenet_v2_x0_5", weights=bare)


def test_other_family_width_layout_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"timm's mobilenetv2_100 is a MobileNetV2 that loads into mobilenet_v2, "
                       r"not into mobilenet_v3_large \(MobileNetV3\)"):  # fmt: skip
        mobilezoo.create_model("mobilenet_v3_large", weights="timm:mobilenetv2_100")
    with pytest.raises(ValueError, match="loads into mobilenet_v2_x0_5, not into mobilenet_v2 "):
        mobilezoo.create_model("mobilenet_v2", weights="timm:mobilenetv2_050")
    half = timm_file(timm_model("mobilenetv2_050"), tmp_path / "half.safetensors")
    with pytest.raises(WeightsMismatchError) as info:  # the file is not the model it is said to be
        mobilezoo.create_model("mobilenet_v2", weights=f"timm:mobilenetv2_100@{half}")
    message = str(info.value)
    assert f"timm checkpoint {str(half)!r} does not fit mobilenet_v2 (it fits mobilenet_v2_x0_5)" in message
    assert "conv_stem.weight -> features.0.0.weight checkpoint (16, 3, 3, 3) vs model (32, 3, 3, 3)" in message
    v3 = timm_file(timm_model("mobilenetv3_small_100"), tmp_path / "v3.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"is not in timm MobileNetV2's layout: missing keys \(36\): "
                       r"blocks.3.2.conv_pw.\*.* unexpected keys \(37\): blocks.0.0.se.conv_expand.bias"):  # fmt: skip
        mobilezoo.create_model("mobilenet_v2", weights=f"timm:mobilenetv2_100@{v3}")
    with pytest.raises(
        ValueError, match="timm's resnet50 has no counterpart in mobilezoo; the timm models that load: "
    ):
        mobilezoo.create_model("mobilenet_v2", weights="timm:resnet50")
    with pytest.raises(ValueError, match=r"timm has no weights mobilenetv2_100.in22k; published for mobilenetv2_100: "
                       r"mobilenetv2_100.ra_in1k"):  # fmt: skip
        mobilezoo.create_model("mobilenet_v2", weights="timm:mobilenetv2_100.in22k")
    with pytest.raises(ValueError, match=r"timm publishes no weights for mobilenetv2_035: pass a file of your own"):
        mobilezoo.create_model("mobilenet_v2_x0_35", weights="timm:mobilenetv2_035")
    with pytest.raises(ValueError, match=r"is for width_mult=1.25; mobilenet_v1 was built with width_mult=1.0"):
        mobilezoo.create_model("mobilenet_v1", weights=f"timm:mobilenetv1_125@{half}")
    with pytest.raises(ValueError, match=r"checkpoint needs padding='tf', got 'symmetric'"):
        mobilezoo.create_model("mobilenet_v3_small", padding="symmetric", weights=f"timm:tf_mobilenetv3_small_100@{v3}")


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_code_running_pickle_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"arch": "mobilenetv2_050", "state_dict": {"conv_stem.weight": _Exploit()}}, 2))
    with pytest.raises(ValueError, match=r"refusing to load .*evil.pth.*not a plain weights file") as info:
        mobilezoo.create_model("mobilenet_v2_x0_5", weights=f"timm:{evil}")
    assert "\n" not in str(info.value)


def test_other_class_count_gets_a_new_head_and_cards_list_the_checkpoints(tmp_path: Path) -> None:
    theirs = timm_model("mobilenetv3_small_100")
    path = timm_file(theirs, tmp_path / "w.safetensors")
    with pytest.warns(WeightsAdaptedWarning, match=r"classifier classifier.3.weight, classifier.3.bias re-initialised"):
        ours = mobilezoo.create_model("mobilenet_v3_small", num_classes=7, weights=f"timm:mobilenetv3_small_100@{path}")
    assert ours.get_classifier().out_features == 7 and ours.features[1].block[0][1].eps == 1e-5
    with pytest.raises(WeightsMismatchError, match="shape mismatches"):  # eval/predict/export never swap a head in
        mobilezoo.create_model(
            "mobilenet_v3_small", num_classes=7, adapt_weights=False, weights=f"timm:mobilenetv3_small_100@{path}"
        )
    card = mobilezoo.model_card("mobilenet_v3_small")
    entries = {c["weights"]: c for c in card.checkpoints}
    tf = entries["timm:tf_mobilenetv3_small_100.in1k"]
    assert tf["model_kwargs"] == {"padding": "tf"} and tf["preprocessing"]["interpolation"] == "bilinear"
    assert entries["timm:mobilenetv3_small_100.lamb_in1k"]["model_kwargs"] == {"bn_eps": 1e-5}
    assert "torchvision:IMAGENET1K_V1" in entries
    assert timm_arch("mobilenetv1_125").arch == {"width_mult": 1.25}
    v1 = {c["weights"]: c for c in mobilezoo.model_card("mobilenet_v1").checkpoints}
    assert v1["timm:mobilenetv1_125.ra4_e3600_r224_in1k"]["requires"] == {"width_mult": 1.25}
    assert "megvii:<file>" in {c["weights"] for c in mobilezoo.model_card("shufflenet_v1_g8_x1_0").checkpoints}


def test_cli_list_shows_the_checkpoints(capsys: pytest.CaptureFixture) -> None:
    from mobilezoo.cli import main

    assert main(["list", "mobilenet_v3_small*"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints" in out and "torchvision, timm x2" in out
    assert main(["list", "shufflenet_v1_g8_x1_0", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)[0]
    assert card["checkpoints"][0]["weights"] == "megvii:<file>"
    assert card["checkpoints"][0]["preprocessing"]["channel_order"] == "BGR"


def test_mnasnet_ghostnet_efficientnet_mobilenetv4_cards_and_ports(tmp_path: Path) -> None:
    """The cards list each family's timm checkpoints with the arguments their port sets (and those they require)."""

    def checkpoints(model: str) -> dict[str, dict]:
        return {c["weights"]: c for c in mobilezoo.model_card(model).checkpoints}

    lite0 = checkpoints("efficientnet_lite0")
    assert lite0["timm:tf_efficientnet_lite0.in1k"]["model_kwargs"] == {"bn": "paper", "padding": "tf"}
    assert lite0["timm:tf_efficientnet_lite0.in1k"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert lite0["timm:efficientnet_lite0.ra_in1k"]["model_kwargs"] == {"bn": "torchvision"}
    b0 = checkpoints("efficientnet_b0")
    assert {"torchvision:IMAGENET1K_V1", "timm:efficientnet_b0.ra_in1k", "timm:tf_efficientnet_b0.in1k"} <= set(b0)
    b1 = checkpoints("mnasnet_b1_x1_0")
    assert b1["timm:mnasnet_100.rmsp_in1k"]["model_kwargs"] == {"bn_eps": 1e-5}
    assert b1["timm:mnasnet_140@<file>"]["requires"] == {"width_mult": 1.4}
    small = checkpoints("mnasnet_small")["timm:mnasnet_small.lamb_in1k"]
    assert small["model_kwargs"] == {"bn_eps": 1e-5, "sepconv_skip": True}
    assert "timm:ghostnet_100.in1k" in checkpoints("ghostnet_x1_0")
    medium = checkpoints("mobilenet_v4_conv_medium")
    assert medium["timm:mobilenetv4_conv_medium.e500_r256_in1k"]["preprocessing"]["input_size"] == 256
    assert medium["timm:mobilenetv4_conv_medium.e180_r384_in12k"]["preprocessing"]["num_classes"] == 11821
    # the port's arguments are set by create_model, and contradicting them is refused
    path = timm_file(timm_model("mnasnet_small"), tmp_path / "small.safetensors")
    model = mobilezoo.create_model("mnasnet_small", weights=f"timm:mnasnet_small@{path}")
    assert model.layers[1].eps == 1e-5 and model.preprocessing.source == "timm:mnasnet_small.lamb_in1k"
    with pytest.raises(ValueError, match=r"checkpoint needs sepconv_skip=True, got False"):
        mobilezoo.create_model("mnasnet_small", sepconv_skip=False, weights=f"timm:mnasnet_small@{path}")
    with pytest.raises(ValueError, match=r"timm's ghostnet_100 is a GhostNet that loads into ghostnet_x1_0, not into "):
        mobilezoo.create_model("mnasnet_small", weights=f"timm:ghostnet_100@{path}")
