"""ShuffleNet V1: the official checkpoints of megvii-model/ShuffleNet-Series (``ShuffleNetV1/``, g=3 and g=8).

Their layout: ``first_conv.{0,1}``; ``features.<n>`` numbering the 16 units across stages; a unit's
``branch_main_1`` (grouped 1x1 ``.0``, BN ``.1``, ReLU, depthwise 3x3 ``.3``, BN ``.4``) and ``branch_main_2``
(grouped 1x1 ``.0``, BN ``.1``); ``classifier.0`` (no bias). Their unit shuffles after the depthwise conv with the
channels viewed as (C/g, g); the model built with ``shuffle="megvii"`` shuffles the same way before its depthwise
conv, so the depthwise conv's and its BN's channels are permuted here (``shuffle_index``).
"""

from __future__ import annotations

from mobilezoo.models.shufflenet_v1 import SHUFFLENET_V1, ShuffleNetV1
from mobilezoo.weights.keymap import KeyMap, permute, shuffle_index
from mobilezoo.weights.keymaps import FamilyWeights, MegviiModels, register_family


def megvii_keymap(model: ShuffleNetV1) -> KeyMap:
    """The official ShuffleNet V1 layout onto ``model`` (built with ``shuffle="megvii"``)."""
    km = KeyMap("megvii ShuffleNetV1")
    km.add("first_conv.0", "conv1.0")
    km.add("first_conv.1", "conv1.1")
    n = 0
    for stage in SHUFFLENET_V1:
        for u, unit in enumerate(getattr(model, stage.name)):
            src, dst = f"features.{n}", f"{stage.name}.{u}.branch"
            km.add(f"{src}.branch_main_1.0", f"{dst}.0.0")
            km.add(f"{src}.branch_main_1.1", f"{dst}.0.1")
            mid = unit.branch[2][0].out_channels
            # here the shuffle comes before the depthwise conv: its channel c is their channel index[c]
            moved = permute(0, shuffle_index(mid, mid // model.groups)) if model.groups > 1 else None
            km.add(f"{src}.branch_main_1.3", f"{dst}.2.0", moved, "channels in the shuffled order")
            km.add(f"{src}.branch_main_1.4", f"{dst}.2.1", moved, "channels in the shuffled order")
            km.add(f"{src}.branch_main_2.0", f"{dst}.3.0")
            km.add(f"{src}.branch_main_2.1", f"{dst}.3.1")
            n += 1
    km.add("classifier.0", "fc")
    return km


register_family(
    FamilyWeights(
        family="ShuffleNetV1",
        megvii_keymap=megvii_keymap,
        megvii=MegviiModels(
            models=tuple(f"shufflenet_v1_g{g}_x{w}" for g in (3, 8) for w in ("0_5", "1_0", "1_5", "2_0")),
            port={"shuffle": "megvii"},
            marker="branch_main_1",
        ),
    )
)
