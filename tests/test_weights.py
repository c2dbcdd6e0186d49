import os
import pickle
from pathlib import Path

import pytest
import torch
import torchvision

import mobilezoo
from mobilezoo.weights import WeightsMismatchError, read_state_dict, torchvision_pretrained_info


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_roundtrip_through_create_model(tmp_path: Path) -> None:
    model = mobilezoo.create_model("mobilenet_v2_x0_35", num_classes=10)
    path = mobilezoo.save_weights(model, tmp_path / "m.safetensors")
    again = mobilezoo.create_model("mobilenet_v2_x0_35", num_classes=10, weights=path)
    assert _same_state(model, again)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_pth_files_plain_wrapped_and_ddp_prefixed(tmp_path: Path, wrap: str | None) -> None:
    model = mobilezoo.create_model("mobilenet_v2_x0_35", num_classes=10)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, tmp_path / "m.pth")
    other = mobilezoo.create_model("mobilenet_v2_x0_35", num_classes=10)
    mobilezoo.load_weights(other, tmp_path / "m.pth")
    assert _same_state(model, other)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickle_that_executes_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"features.0.0.weight": _Exploit()}, f)
    with pytest.raises(ValueError, match="refusing to load .*evil.pth.*not a plain weights file"):
        read_state_dict(path)
    assert not Path("pwned").exists()


def test_other_architecture_lists_missing_unexpected_and_shapes(tmp_path: Path) -> None:
    small = mobilezoo.create_model("mobilenet_v2_x0_35")
    path = mobilezoo.save_weights(small, tmp_path / "small.safetensors")
    big = mobilezoo.create_model("mobilenet_v2")
    with pytest.raises(WeightsMismatchError, match="shape mismatches") as info:
        mobilezoo.load_weights(big, path)
    assert ("features.0.0.weight", (16, 3, 3, 3), (32, 3, 3, 3)) in info.value.mismatched
    assert isinstance(info.value, ValueError)
    state = dict(small.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.1.bias"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): classifier.1.bias") as info:
        mobilezoo.load_weights(mobilezoo.create_model("mobilenet_v2_x0_35"), state)
    assert info.value.unexpected == ["extra.weight"]
    report = mobilezoo.load_weights(mobilezoo.create_model("mobilenet_v2_x0_35"), state, strict=False)
    assert report["missing"] == ["classifier.1.bias"] and report["unexpected"] == ["extra.weight"]


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown weights format '.npz'"):
        read_state_dict(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="expected a path ending in .safetensors"):
        mobilezoo.save_weights(torch.nn.Linear(1, 1), tmp_path / "w.pth")


@pytest.fixture
def torchvision_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A torch hub cache holding a (random-init) torchvision checkpoint under the real file name: no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)

    def place(enum_name: str, builder: str, **kwargs) -> torch.nn.Module:
        tv = getattr(torchvision.models, builder)(**kwargs).eval()
        torch.save(tv.state_dict(), checkpoints / torchvision_pretrained_info(enum_name)["file_name"])
        return tv

    return place


def test_torchvision_weights_from_cache(torchvision_cache) -> None:
    tv = torchvision_cache("MobileNet_V2_Weights", "mobilenet_v2")
    ours = mobilezoo.create_model("mobilenet_v2", weights="torchvision").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


WITH_TORCHVISION_CHECKPOINT = [
    n
    for n in mobilezoo.list_models()
    if (ref := mobilezoo.model_card(n).torchvision) and ref.weights and n != "vgg16"  # vgg16: a 528 MB file
]


@pytest.mark.parametrize("name", WITH_TORCHVISION_CHECKPOINT)
def test_every_torchvision_checkpoint_loads_and_matches(torchvision_cache, name: str) -> None:
    ref = mobilezoo.model_card(name).torchvision
    tv = torchvision_cache(ref.weights, ref.builder, **ref.builder_kwargs)
    ours = mobilezoo.create_model(name, weights="torchvision").eval()  # shufflenet_v2: torchvision_compat implied
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


def test_torchvision_weights_new_head_and_grayscale(torchvision_cache) -> None:
    tv = torchvision_cache("MobileNet_V2_Weights", "mobilenet_v2")
    ours = mobilezoo.create_model("mobilenet_v2", weights="torchvision", num_classes=5, in_chans=1).eval()
    assert ours.get_classifier().out_features == 5
    stem = tv.state_dict()["features.0.0.weight"]
    torch.testing.assert_close(ours.state_dict()["features.0.0.weight"], stem.sum(1, keepdim=True))
    torch.testing.assert_close(
        ours.state_dict()["features.1.conv.1.weight"], tv.state_dict()["features.1.conv.1.weight"]
    )
    assert ours(torch.randn(1, 1, 64, 64)).shape == (1, 5)


def test_torchvision_weights_unavailable() -> None:
    with pytest.raises(ValueError, match="torchvision has no checkpoint for 'mobilenet_v2_x0_5'"):
        mobilezoo.create_model("mobilenet_v2_x0_5", weights="torchvision")
    with pytest.raises(ValueError, match="torchvision has no weights MobileNet_V2_Weights.IMAGENET9K"):
        mobilezoo.create_model("mobilenet_v2", weights="torchvision:IMAGENET9K")
