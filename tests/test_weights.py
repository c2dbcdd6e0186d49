import argparse
import collections
import os
import pickle
import re
import warnings
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import mobilezoo
from mobilezoo import create_model, save_weights
from mobilezoo.train.checkpoint import atomic_save_weights, load_checkpoint, save_checkpoint
from mobilezoo.weights import (
    WeightsAdaptedWarning,
    WeightsMismatchError,
    WeightsUnavailableError,
    read_state_dict,
    torchvision_pretrained_info,
)


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


# --- checkpoint containers that PyTorch training tools write (issue #13) -------------------------------------------

TINY_NET = "mobilenet_v1_x0_25"


def _trained(num_classes: int = 10) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A tiny model after one SGD step, so the optimizer holds momentum tensors as a real checkpoint's does."""
    model = mobilezoo.create_model(TINY_NET, num_classes=num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    return model, opt


def _shifted(state: dict, prefix: str = "") -> dict:
    """Another set of tensors under the same keys (an EMA copy that must not be the one loaded)."""
    return {prefix + k: v + 1 if v.is_floating_point() else v for k, v in state.items()}


def _torchvision_reference(tmp_path: Path, model, opt) -> Path:
    # torchvision references/classification/train.py: model, optimizer, lr_scheduler, epoch, args (+ model_ema, scaler)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=5)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cosine], milestones=[5])
    ema = {"n_averaged": torch.tensor(3), **_shifted(model.state_dict(), "module.")}  # AveragedModel's keys
    ckpt = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "epoch": 4,
        "args": argparse.Namespace(model="mobilenet_v2", lr=0.5, weights=None, output_dir="out", amp=False),
        "model_ema": ema,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
    }
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    return tmp_path / "checkpoint.pth"


def _timm_train(tmp_path: Path, model, opt) -> Path:
    # timm's CheckpointSaver (train.py): checkpoint-N.pth.tar / model_best.pth.tar
    ckpt = {
        "epoch": 4,
        "arch": "mobilenetv1_025",
        "state_dict": model.state_dict(),
        "optimizer": opt.state_dict(),
        "version": 2,
        "args": argparse.Namespace(model="mobilenetv1_025", lr=0.5, device="cpu", mean=None),
        "state_dict_ema": _shifted(model.state_dict()),
        "metric": 71.25,
        "saver": {"checkpoint_files": [["./checkpoint-4.pth.tar", 71.25]]},
    }
    torch.save(ckpt, tmp_path / "model_best.pth.tar")
    return tmp_path / "model_best.pth.tar"


def _lightning(tmp_path: Path, model, opt) -> Path:
    # a LightningModule holding the net as self.model (keys "model.*") and a weighted loss ("criterion.weight")
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["criterion.weight"] = torch.ones(10)
    ckpt = {
        "epoch": 0,
        "global_step": 2,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1, "completed": 0}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.5), "dirpath": "x"}
        },
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [{"step_size": 1, "gamma": 0.1, "last_epoch": 2, "_last_lr": [0.01]}],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.1, "args": argparse.Namespace(batch=4)},
    }
    torch.save(ckpt, tmp_path / "epoch=0-step=2.ckpt")
    return tmp_path / "epoch=0-step=2.ckpt"


def _prefixed(prefix: str, name: str):
    def write(tmp_path: Path, model, opt) -> Path:
        torch.save({f"{prefix}{k}": v for k, v in model.state_dict().items()}, tmp_path / name)
        return tmp_path / name

    return write


def _tutorial(tmp_path: Path, model, opt) -> Path:
    # the PyTorch tutorial "Saving and loading a general checkpoint"
    ckpt = {"epoch": 4, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(), "loss": 0.3}
    torch.save(ckpt, tmp_path / "model.tar")
    return tmp_path / "model.tar"


def _deepspeed(tmp_path: Path, model, opt) -> Path:
    shapes = [collections.OrderedDict((k, p.shape) for k, p in model.named_parameters())]
    ckpt = {"module": model.state_dict(), "optimizer": None, "param_shapes": shapes, "ds_version": "0.14.0"}
    torch.save(ckpt, tmp_path / "mp_rank_00_model_states.pt")
    return tmp_path / "mp_rank_00_model_states.pt"


def _safetensors_compiled(tmp_path: Path, model, opt) -> Path:
    state = {f"_orig_mod.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    return tmp_path / "model.safetensors"


def _mobilezoo_run(tmp_path: Path, model, opt) -> Path:
    run = tmp_path / "run"
    save_checkpoint(run, 6, model, {"optimizer": opt.state_dict(), "epoch": 1})
    atomic_save_weights(model, run / "best.safetensors", {"epoch": "1"})
    resumed = mobilezoo.create_model(TINY_NET, num_classes=10)
    assert load_checkpoint(run, resumed)["step"] == 6  # the resume state still loads
    assert _same_state(model, resumed)
    return run / "checkpoints" / "ckpt-00000006.safetensors"


CONTAINERS = {
    "torchvision_reference": _torchvision_reference,
    "timm_train": _timm_train,
    "lightning": _lightning,
    "dataparallel": _prefixed("module.", "ddp.pth"),
    "torch_compile": _prefixed("_orig_mod.", "compiled.pt"),
    "ddp_of_compiled": _prefixed("module._orig_mod.", "ddp_compiled.pth"),
    "plain_without_suffix": _prefixed("", "weights"),
    "huggingface_bin": _prefixed("", "pytorch_model.bin"),
    "pytorch_tutorial": _tutorial,
    "deepspeed": _deepspeed,
    "safetensors_compiled": _safetensors_compiled,
    "mobilezoo_run": _mobilezoo_run,
}


@pytest.mark.parametrize("tool", list(CONTAINERS))
def test_checkpoint_containers_of_training_tools_load(tmp_path: Path, tool: str) -> None:
    model, opt = _trained()
    path = CONTAINERS[tool](tmp_path, model, opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = mobilezoo.create_model(TINY_NET, num_classes=10, weights=path)
    assert _same_state(model, loaded)  # the raw model's tensors, not the EMA copy stored beside them
    notes = [str(w.message) for w in caught if issubclass(w.category, WeightsAdaptedWarning)]
    if tool == "lightning":  # the LightningModule's loss weight is left out, and said so
        assert len(notes) == 1 and "'model.'" in notes[0] and "criterion.weight" in notes[0]
    else:
        assert notes == []


def test_prefix_is_removed_only_when_it_makes_the_keys_match(tmp_path: Path) -> None:
    wrapper = torch.nn.Module()
    wrapper.module = mobilezoo.create_model(TINY_NET, num_classes=10)  # a model whose own keys start with "module."
    torch.save(wrapper.state_dict(), tmp_path / "w.pth")
    other = torch.nn.Module()
    other.module = mobilezoo.create_model(TINY_NET, num_classes=10)
    mobilezoo.load_weights(other, tmp_path / "w.pth")
    assert _same_state(wrapper, other)
    net = mobilezoo.create_model(TINY_NET, num_classes=10)  # and the bare net takes the same file, prefix removed
    mobilezoo.load_weights(net, tmp_path / "w.pth")
    assert _same_state(wrapper.module, net)


def test_a_load_that_matches_nothing_is_an_error_even_not_strict(tmp_path: Path) -> None:
    model = mobilezoo.create_model(TINY_NET, num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    foreign = mobilezoo.create_model("shufflenet_v2_x0_5").state_dict()
    torch.save({"model": foreign, "epoch": 1}, tmp_path / "other.pth")
    for source in (tmp_path / "other.pth", foreign, {"encoder.weight": torch.zeros(3)}):
        with pytest.raises(WeightsMismatchError, match="matches no tensor of the model"):
            mobilezoo.load_weights(model, source, strict=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _single_line(message: str) -> None:
    assert "\n" not in message and "\x1b" not in message, repr(message)


@pytest.mark.parametrize("protocol", [2, 4])
def test_code_running_pickles_refused_in_one_line(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {"features.0.0.weight": _Exploit()}}, f, protocol=protocol)
    with pytest.raises(ValueError, match=r"refusing to load .*evil.pth.*not a plain weights file") as info:
        mobilezoo.create_model(TINY_NET, weights=path)
    _single_line(str(info.value))
    if protocol == 2:
        assert re.search(r"\(it needs (posix|os|nt)\.system\)", str(info.value))
    else:
        assert "(Unsupported operand" in str(info.value)
    assert not Path("pwned").exists()


def test_whole_pickled_module_refused_in_one_line(tmp_path: Path) -> None:
    torch.save(mobilezoo.create_model(TINY_NET), tmp_path / "whole.pth")
    with pytest.raises(ValueError, match=r"refusing to load .*whole.pth.*it needs mobilezoo.models") as info:
        read_state_dict(tmp_path / "whole.pth")
    _single_line(str(info.value))


def test_truncated_empty_and_misplaced_files(tmp_path: Path) -> None:
    model, opt = _trained()
    torch.save(model.state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("cut.pth", "empty.pth"):
        with pytest.raises(ValueError, match=rf"{name}' is not a readable PyTorch file .*truncated") as info:
            read_state_dict(tmp_path / name)
        _single_line(str(info.value))
    run = tmp_path / "run"
    save_checkpoint(run, 6, model, {"optimizer": opt.state_dict()})
    atomic_save_weights(model, run / "best.safetensors")
    state_file = run / "checkpoints" / "ckpt-00000006.state.pt"
    with pytest.raises(ValueError, match=r"holds no model state_dict.*optimizer.*the .safetensors file beside"):
        read_state_dict(state_file)
    with pytest.raises(ValueError, match=r"is a folder: pass a weights file; it holds best.safetensors"):
        read_state_dict(run)


def test_torchvision_offline_names_url_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    requests = []

    def offline(request, *args, **kwargs):
        requests.append(getattr(request, "full_url", request))
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    info = torchvision_pretrained_info("MobileNet_V2_Weights")
    with pytest.raises(WeightsUnavailableError) as err:
        mobilezoo.create_model("mobilenet_v2", weights="torchvision")
    message = str(err.value)
    _single_line(message)
    cache = tmp_path / "hub" / "checkpoints" / info["file_name"]
    assert requests == [info["url"]] and info["url"] in message and str(cache) in message
    assert "machine with internet" in message and "local weights file" in message
    assert not cache.exists()  # nothing half-written left in the cache
    assert isinstance(err.value, OSError)


def test_torchvision_truncated_cache_names_the_file(torchvision_cache, tmp_path: Path) -> None:
    torchvision_cache("MobileNet_V2_Weights", "mobilenet_v2")
    cached = tmp_path / "hub" / "checkpoints" / torchvision_pretrained_info("MobileNet_V2_Weights")["file_name"]
    cached.write_bytes(cached.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="interrupted download: delete it and run again") as err:
        mobilezoo.create_model("mobilenet_v2", weights="torchvision")
    message = str(err.value)
    _single_line(message)
    assert f"cached checkpoint {str(cached)!r} is unreadable" in message


def test_a_model_without_classifier_leaves_the_checkpoints_out(tmp_path: Path) -> None:
    source = mobilezoo.create_model("shufflenet_v2_x0_5", num_classes=10)
    pooled = mobilezoo.create_model("shufflenet_v2_x0_5")
    pooled.fc = torch.nn.Identity()  # what num_classes=0 builds: the model returns its pooled features
    head = [k for k in source.state_dict() if k.startswith("fc.")]  # ShuffleNet V2's fc: with or without bias
    with pytest.raises(WeightsMismatchError, match=rf"unexpected keys \({len(head)}\): {', '.join(head)}"):
        mobilezoo.load_weights(pooled, source.state_dict())
    with pytest.warns(WeightsAdaptedWarning, match=rf"classifier {', '.join(head)} left out \(the model has no class"):
        report = mobilezoo.load_weights(pooled, source.state_dict(), adapt=True)
    assert report["reinitialized"] == head and report["unexpected"] == []
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in pooled.state_dict().items())


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("mobilenet_v3_small", {"padding": "tf", "bn_eps": 1e-3}), ("shufflenet_v2_x0_5", {"shuffle": "megvii"})],
)
def test_a_saved_port_reloads_with_the_arguments_it_was_built_with(tmp_path, name: str, kwargs: dict) -> None:
    # a model built for a TF or megvii checkpoint, saved (e.g. after fine-tuning) and reloaded by name alone, must
    # compute what it computed: before, it came back with the default padding / shuffle and gave other outputs
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    path = save_weights(model, tmp_path / "m.safetensors")
    again = create_model(name, weights=path).eval()
    x = torch.randn(2, 3, 96, 96)  # even: TF "same" pads 0 before and 1 after a stride-2 conv, torch 1 and 1
    assert torch.equal(model(x), again(x))
    assert again.build_kwargs == kwargs
    key, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=rf"holds {name} built with {key}={value!r}, got {key}="):
        create_model(name, weights=path, **{key: "same" if key == "padding" else "paper"})
    # fine-tuning it to another class count keeps the arguments too
    assert create_model(name, weights=path, num_classes=5).build_kwargs == kwargs
