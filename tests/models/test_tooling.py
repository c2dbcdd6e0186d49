"""PyTorch's model tooling on every registered model: torch.fx tracing, torchvision's feature extraction, FX
quantization (post-training and QAT), torch.compile, TorchScript and torch.export of the feature extractor.

The input check (``check_input``) is Python control flow on the input's shape; torch.fx keeps it as one call in its
graphs, so a traced model still raises the eager model's ValueErrors. TorchScript and torch.export of the models are
tested in ``test_contract.py``.
"""

from __future__ import annotations

import typing
import warnings

import pytest
import torch
from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torch.fx import symbolic_trace
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import mobilezoo
from mobilezoo.models.base import FeatureExtractor
from mobilezoo.registry import _BUILDERS
from tests.models.representatives import REPRESENTATIVES

# torch.ao.quantization's notice that FX quantization is deprecated in favour of torchao (still what users run)
pytestmark = pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")

MODELS = mobilezoo.list_models()
X = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))


def _model_class(name: str) -> type:
    return typing.get_type_hints(_BUILDERS[name])["return"]


def _bad_inputs_raise_the_eager_errors(module: torch.nn.Module, min_size: int = 32) -> None:
    """``min_size``: the model's ``min_input_size`` (32 for the nets that reduce by 32; SqueezeNet's is smaller)."""
    small = min_size - 1
    with pytest.raises(ValueError, match=f"input {small}x48 is too small: this network needs at least {min_size}x"):
        module(torch.zeros(1, 3, small, 48))
    with pytest.raises(ValueError, match="expected 3 input channels, got 1"):
        module(torch.zeros(1, 1, 64, 48))


def test_representatives_cover_every_model_class() -> None:
    assert {_model_class(n) for n in REPRESENTATIVES} == {_model_class(n) for n in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_fx_symbolic_trace_keeps_the_input_check(name: str) -> None:
    model = mobilezoo.create_model(name, num_classes=10).eval()
    traced = symbolic_trace(model)
    assert [n.target.__name__ for n in traced.graph.nodes if n.op == "call_function"][:1] == ["check_input"]
    with torch.no_grad():
        torch.testing.assert_close(traced(X), model(X), atol=0, rtol=0)
    _bad_inputs_raise_the_eager_errors(traced, model.min_input_size)


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_feature_extraction(name: str) -> None:
    model = mobilezoo.create_model(name, num_classes=10).eval()
    info = model.feature_info
    taps = {info[-2].module: "c4", info[-1].module: "c5"}
    nodes = get_graph_node_names(model)[1]  # a module's name means its last node (GoogLeNet's inception4e.cat)
    assert all(any(n == t or n.startswith(f"{t}.") for n in nodes) for t in taps)
    extractor = create_feature_extractor(model, taps)
    with torch.no_grad():
        got, want = extractor(X), FeatureExtractor(model, (-2, -1))(X)  # mobilezoo's own, on the same modules
    assert list(got) == ["c4", "c5"]
    for fmap, ref, i in zip(got.values(), want, info[-2:]):
        assert fmap.shape[:2] == (2, i.num_chs)
        torch.testing.assert_close(fmap, ref, atol=0, rtol=0)
    _bad_inputs_raise_the_eager_errors(extractor, model.min_input_size)


def test_feature_extraction_as_in_the_issue() -> None:
    model = mobilezoo.create_model("mobilenet_v2").eval()
    out = create_feature_extractor(model, {"features.12": "c4"})(torch.randn(1, 3, 224, 224))
    assert out["c4"].shape == (1, 96, 14, 14)


@pytest.mark.parametrize("name", MODELS)
def test_fx_quantization_prepare(name: str) -> None:
    model = mobilezoo.create_model(name, num_classes=10).eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping("fbgemm"), (X,))
    observers = [m for m in prepared.modules() if "Observer" in type(m).__name__]
    assert len(observers) > 10
    with torch.no_grad():
        assert prepared(X).shape == (2, 10)  # calibration
    _bad_inputs_raise_the_eager_errors(prepared, model.min_input_size)


@pytest.fixture
def fbgemm():
    # torch's default "x86" engine cannot prepack some of ShuffleNet V1's grouped 1x1 convs (oneDNN: "could not create
    # a primitive descriptor for the reorder primitive"); fbgemm and qnnpack can
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = previous


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_fx_quantization_convert(name: str, fbgemm) -> None:
    model = mobilezoo.create_model(name, num_classes=10).eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping("fbgemm"), (X,))
    with torch.no_grad():
        prepared(X)
        quantized = convert_fx(prepared)
        out = quantized(X)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized.modules())
    _bad_inputs_raise_the_eager_errors(quantized, model.min_input_size)


# VGG-16 is left out: its 120M fake-quantized FC weights take ~10 s, and it has no layer type the others lack
@pytest.mark.parametrize("name", [n for n in REPRESENTATIVES if n != "vgg16"])
def test_fx_quantization_aware_training(name: str) -> None:
    trainable = mobilezoo.create_model(name, num_classes=10).train()
    qat = prepare_qat_fx(trainable, get_default_qat_qconfig_mapping("fbgemm"), (X,))
    qat(X).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in qat.parameters() if p.requires_grad)


# torch.compile with the aot_eager backend: dynamo and AOTAutograd trace the model's Python exactly as with inductor
# (the default backend), without inductor's code generation, which takes ~15 s a model on 2 cores and does not depend
# on the model's code. fullgraph=True: no graph break anywhere, the input check included.
@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_torch_compile(name: str) -> None:
    model = mobilezoo.create_model(name, num_classes=10).eval()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(X), model(X), atol=1e-5, rtol=1e-5)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo's note about the graph break of the raise
        _bad_inputs_raise_the_eager_errors(torch.compile(model, backend="aot_eager"), model.min_input_size)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "googlenet", "squeezenet1_1"])
def test_feature_extractor_everywhere(name: str) -> None:
    features = mobilezoo.create_model(name, features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        want = features(X)
        runs = {
            "fx": symbolic_trace(features),
            "script": torch.jit.script(features),
            "export": torch.export.export(
                features, (X,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)
            ).module(),
            "compile": torch.compile(features, backend="aot_eager", fullgraph=True),
        }
        for how, run in runs.items():
            got = run(X)
            assert len(got) == 2, how
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=how)
    _bad_inputs_raise_the_eager_errors(runs["fx"], features.min_input_size)
    prepared = prepare_fx(features, get_default_qconfig_mapping("fbgemm"), (X,))
    assert [f.shape for f in prepared(X)] == [w.shape for w in want]
