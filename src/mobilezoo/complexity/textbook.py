"""The rows of the textbook's complexity tables 5-2, 5-3, 5-10, 5-11 and 5-12 and of the papers' errata.

Each row names the registered model that regenerates it, the ``paper_numbers.csv`` variant holding the paper's figures
and the reference count, the convention (FC included or not), and, where the paper or the textbook is inconsistent,
a flag that explains the inconsistency and names the paper table or public source it rests on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONVENTION_FC = "FC included (whole network), as the papers count it"
CONVENTION_NO_FC = "FC excluded (MAdds of every layer but the nn.Linear ones), as the paper's Table 1"
CONVENTION_CONV_ONLY = "convolutions only (FC layers excluded), as the quoted 15300M"


@dataclass(frozen=True)
class RowSpec:
    """One row of a textbook table: the model that regenerates it and the figures to compare with."""

    label: str
    model: str
    variant: str  # paper_numbers.csv variant
    textbook_madds: float | None  # None: a row the textbook does not have
    textbook_params: float | None = None
    textbook_top1: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    resolution: int = 224
    counted_on: str = ""  # picks the paper_numbers.csv row whose counted_on contains this
    exclude_fc: bool = False
    conv_only: bool = False
    reference_madds: float | None = None  # overrides the CSV count (e.g. ShuffleNet V1 Table 1's FC-excluded counts)
    paper_madds: float | None = None  # overrides the CSV paper figure (e.g. a figure quoted by another paper)
    channels: tuple[int, ...] | None = None  # textbook stage output channels (Tables 5-11, 5-12)
    flag: str | None = None  # a known inconsistency of the paper or the textbook, explained with its source
    note: str = ""


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    convention: str
    rows: tuple[RowSpec, ...]
    channel_labels: tuple[str, ...] = ()


def _spec(
    label: str, model: str, variant: str, madds: float | None, params: float | None, top1: float | None, **kw: Any
) -> RowSpec:
    return RowSpec(label, model, variant, madds, params, top1, **kw)


_V1_IN_V2 = (
    "MobileNetV2's Table 4 (Sandler et al. 2018) quotes MobileNet V1 at 575M, reproducible by neither MobileNet V1's "
    "own paper (Howard et al. 2017, Table 8: 569M) nor the count (568.74M)"
)
_SNV1_FLAG = (
    "ShuffleNet V1 (Zhang et al. 2018) is inconsistent about the FC layer: Table 1's 143/140/137/133/137M are "
    "reproduced exactly only without it (142.50/140.04/136.50/133.25/136.83M), while Table 5's 292/524M (1.5x/2x) "
    "match the count with it (official code, megvii-model/ShuffleNet-Series); with the FC g=1..8 count "
    "143.1/140.8/137.5/134.3/138.4M"
)
_SNV1 = ((1, 144, 288, 576, 143, 142.50), (2, 200, 400, 800, 140, 140.04), (3, 240, 480, 960, 137, 136.50),
         (4, 272, 544, 1088, 133, 133.25), (8, 384, 768, 1536, 137, 136.83))  # fmt: skip
_SNV2 = (("0.5x", "x0_5", "0.5x", 48, 1024, 41, 1.4), ("1x", "x1_0", "1.0x", 116, 1024, 146, 2.3),
         ("1.5x", "x1_5", "1.5x", 176, 1024, 299, 3.5), ("2x", "x2_0", "2.0x", 244, 2048, 591, 7.4))  # fmt: skip

TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "5-2",
        "MobileNet V1 width multiplier (224x224); MobileNets Table 6",
        CONVENTION_FC,
        (
            _spec("1.0 MobileNet-224", "mobilenet_v1", "mobilenet_v1_1.0_224", 569, 4.2, 70.6),
            _spec("0.75 MobileNet-224", "mobilenet_v1_x0_75", "mobilenet_v1_0.75_224", 325, 2.6, 68.4),
            _spec("0.5 MobileNet-224", "mobilenet_v1_x0_5", "mobilenet_v1_0.5_224", 149, 1.3, 63.7),
            _spec("0.25 MobileNet-224", "mobilenet_v1_x0_25", "mobilenet_v1_0.25_224", 41, 0.5, 50.6),
        ),
    ),
    TableSpec(
        "5-3",
        "MobileNet V1 resolution multiplier (width 1.0); MobileNets Table 7",
        CONVENTION_FC,
        (
            _spec("1.0 MobileNet-224", "mobilenet_v1", "mobilenet_v1_1.0_224", 569, 4.2, 70.6),
            _spec("1.0 MobileNet-192", "mobilenet_v1", "mobilenet_v1_1.0_192", 418, 4.2, 69.1, resolution=192),
            _spec("1.0 MobileNet-160", "mobilenet_v1", "mobilenet_v1_1.0_160", 290, 4.2, 67.2, resolution=160),
            _spec(
                "1.0 MobileNet-128",
                "mobilenet_v1",
                "mobilenet_v1_1.0_128",
                186,
                4.2,
                64.6,
                resolution=128,
                flag="the textbook prints 64.6% top-1; the paper's Table 7 says 64.4%",
            ),
        ),
    ),
    TableSpec(
        "5-10",
        "MobileNet vs other DCNNs; MobileNets Table 8, MobileNetV2 Table 4, MobileNetV3 Table 3",
        CONVENTION_FC + " (VGG-16: convolutions only)",
        (
            _spec(
                "VGG-16",
                "vgg16",
                "vgg16",
                15300,
                138,
                71.5,
                conv_only=True,
                reference_madds=15346.6,
                note="MobileNets Table 8's 15300M counts the convolutions only (15,346.6M); with the 3 FC layers "
                "(123.6M) 15,470.3M, torchvision's VGG-16 figure (its metadata's 15.47 'GFLOPS' are multiply-adds)",
            ),
            _spec(
                "GoogleNet",
                "googlenet",
                "googlenet",
                1550,
                6.8,
                69.8,
                counted_on="paper-faithful",
                flag="MobileNets Table 8's 1550M / 6.8M are not reproducible: the published network (Szegedy et al. "
                "2015, Table 1: true 5x5 branches, no BN) counts 1,582.7M / 7.00M; 6,990,272 weights / 1024 / 1000 = "
                "6.83 may be how 6.8 arose (a guess). torchvision's googlenet differs (3x3 in place of 5x5, with BN: "
                "1,498M / 6.62M)",
            ),
            _spec("MobileNet V1", "mobilenet_v1", "mobilenet_v1_1.0_224", 569, 4.2, 70.6, flag=_V1_IN_V2),
            _spec(
                "MobileNet V2",
                "mobilenet_v2",
                "mobilenet_v2_1.0_224",
                326,
                3.4,
                72.0,
                flag="the textbook prints 326M; the paper's Table 4 says 300M (counted 300.77M)",
            ),
            _spec(
                "MobileNet V3-Large",
                "mobilenet_v3_large",
                "mobilenet_v3_large_1.0_224",
                219,
                5.4,
                75.2,
                note="paper Table 3 says 219M, the TF-slim README (tensorflow/models, research/slim/nets/mobilenet) "
                "217M, and the same architecture counts 216.6M here, in torchvision and in timm: a ~1% counting "
                "convention",
            ),
            _spec(
                "MobileNet V3-Small",
                "mobilenet_v3_small",
                "mobilenet_v3_small_1.0_224_pre_v5_1280head",
                66,
                2.9,
                67.4,
                model_kwargs={"last_channel": 1280},
                flag="66M is not reproducible with either head (ours ~56.9M with the pre-v5 1280 head the textbook "
                "prints; 2.9M params do need it); the final paper (arXiv:1905.02244v5, Tables 2 and 3) says 56M / "
                "2.5M with a 1024 head",
            ),
        ),
    ),
    TableSpec(
        "5-11",
        "ShuffleNet V1 stage channels and complexity per groups g (1.0x); ShuffleNet Table 1",
        CONVENTION_NO_FC,
        tuple(
            RowSpec(
                f"g={g}",
                f"shufflenet_v1_g{g}_x1_0",
                f"shufflenet_v1_g{g}_1.0x",
                mf,
                exclude_fc=True,
                reference_madds=ref,
                channels=(24, s2, s3, s4),
                flag=_SNV1_FLAG,
            )
            for g, s2, s3, s4, mf, ref in _SNV1
        ),
        channel_labels=("Conv1 / MaxPool", "Stage2", "Stage3", "Stage4"),
    ),
    TableSpec(
        "5-12",
        "ShuffleNet V2 stage channels, FLOPs (= MAdds) and weights per width; ShuffleNet V2 Table 5",
        CONVENTION_FC + "; the official (megvii) architecture",
        tuple(
            RowSpec(
                width,
                f"shufflenet_v2_{suffix}",
                f"shufflenet_v2_{variant}",
                mf,
                params,
                counted_on="official",
                channels=(24, s2, 2 * s2, 4 * s2, c5),
                note="paper Table 5 says 41M; the official architecture (megvii-model/ShuffleNet-Series) counts "
                "40.48M here and in torchvision: a 0.5M counting-convention gap"
                if width == "0.5x"
                else "",
            )
            for width, suffix, variant, s2, c5, mf, params in _SNV2
        ),
        channel_labels=("Conv1 / MaxPool", "Stage2", "Stage3", "Stage4", "Conv5"),
    ),
)

# Inconsistencies of the papers that the textbook's tables do not show; regenerated with ``include_errata=True``.
ERRATA = TableSpec(
    "errata",
    "Paper figures that no count reproduces (not a textbook table)",
    CONVENTION_FC,
    (
        _spec(
            "MobileNet V1 in MobileNetV2's Table 4",
            "mobilenet_v1",
            "mobilenet_v1_1.0_224",
            None,
            None,
            None,
            paper_madds=575,
            flag=_V1_IN_V2,
        ),
        _spec(
            "MobileNetV2 1.4",
            "mobilenet_v2_x1_4",
            "mobilenet_v2_1.4_224",
            None,
            None,
            None,
            reference_madds=582.20,
            flag="paper Table 4 (Sandler et al. 2018) says 6.9M / 585M; the released checkpoint (TF-slim README, "
            "tensorflow/models) and the architecture (here, torchvision, timm) are 6.06M (no BN) / 582.2M, and no "
            "configuration gives 6.9M",
        ),
        _spec(
            "MobileNet V3-Small (final paper, 1024 head)",
            "mobilenet_v3_small",
            "mobilenet_v3_small_1.0_224",
            None,
            None,
            None,
            note="arXiv:1905.02244v5 (Table 3) corrected the pre-v5 66M / 2.9M to 56M / 2.5M",
        ),
    ),
)
